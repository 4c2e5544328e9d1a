//! BIP39/BIP32 key derivation with caches, and secp256k1 signing.
//!
//! Derivation is `entropy → BIP39 mnemonic → seed (PBKDF2, empty
//! passphrase) → BIP32 m/44'/60'/0'` (the *account root*, cached per
//! wallet) `→ /<change>/<index>` (cached per path), so repeated signing
//! with one key does no derivation at all.

use crate::records::WalletRecord;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use alloy_primitives::keccak256;
use bip32::{ChildNumber, XPrv};
use k256::ecdsa::SigningKey;
use kms_proto::{AddressInfo, HdPath, TaError, WalletId};
use zeroize::Zeroizing;

/// Most account roots kept in memory.
const ROOT_CACHE_CAP: usize = 256;
/// Most derived keys kept in memory.
const KEY_CACHE_CAP: usize = 4096;

/// A derived key with its public facts precomputed.
pub(crate) struct DerivedKey {
    pub signing_key: SigningKey,
    pub address: [u8; 20],
    pub public_key: [u8; 33],
}

impl DerivedKey {
    pub(crate) fn from_signing_key(signing_key: SigningKey) -> Self {
        let vk = signing_key.verifying_key();
        let uncompressed = vk.to_encoded_point(false);
        let compressed = vk.to_encoded_point(true);
        let mut public_key = [0u8; 33];
        public_key.copy_from_slice(compressed.as_bytes());
        DerivedKey {
            address: address_of_uncompressed(uncompressed.as_bytes()),
            public_key,
            signing_key,
        }
    }

    pub(crate) fn info(&self, path: HdPath) -> AddressInfo {
        AddressInfo {
            path,
            address: self.address,
            public_key: self.public_key.to_vec(),
        }
    }

    /// Sign a 32-byte digest: RFC 6979, low-S, returns `r ‖ s ‖ v` with
    /// `v ∈ {27, 28}`.
    pub(crate) fn sign_digest(&self, digest: &[u8; 32]) -> Result<[u8; 65], TaError> {
        let (sig, recid) = self
            .signing_key
            .sign_prehash_recoverable(digest)
            .map_err(|_| TaError::Internal)?;
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&sig.to_bytes());
        out[64] = 27 + recid.is_y_odd() as u8;
        Ok(out)
    }
}

/// The address of an uncompressed SEC1 secp256k1 point (`04 ‖ x ‖ y`).
pub(crate) fn address_of_uncompressed(point: &[u8]) -> [u8; 20] {
    let h = keccak256(&point[1..]);
    let mut a = [0u8; 20];
    a.copy_from_slice(&h[12..]);
    a
}

/// EIP-191 personal-message hash: `keccak256("\x19Ethereum Signed Message:\n" ‖ len ‖ msg)`.
pub(crate) fn eip191_hash(message: &[u8]) -> [u8; 32] {
    let mut buf = Vec::with_capacity(message.len() + 40);
    buf.extend_from_slice(b"\x19Ethereum Signed Message:\n");
    let mut len = itoa(message.len());
    buf.append(&mut len);
    buf.extend_from_slice(message);
    keccak256(&buf).0
}

fn itoa(mut n: usize) -> Vec<u8> {
    let mut digits = Vec::new();
    loop {
        digits.push(b'0' + (n % 10) as u8);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    digits
}

/// The account root `m/44'/60'/0'` of a wallet.
pub(crate) fn account_root(wallet: &WalletRecord) -> Result<XPrv, TaError> {
    let mnemonic = bip39::Mnemonic::from_entropy(&wallet.entropy).map_err(|_| TaError::Internal)?;
    let seed = Zeroizing::new(mnemonic.to_seed_normalized(""));
    let mut key = XPrv::new(&seed[..]).map_err(|_| TaError::Internal)?;
    for (n, hardened) in [(44, true), (60, true), (0, true)] {
        let child = ChildNumber::new(n, hardened).map_err(|_| TaError::Internal)?;
        key = key.derive_child(child).map_err(|_| TaError::Internal)?;
    }
    Ok(key)
}

/// The mnemonic of a wallet (development builds only).
#[cfg(feature = "export-secrets")]
pub(crate) fn mnemonic_of(wallet: &WalletRecord) -> Result<alloc::string::String, TaError> {
    use alloc::string::ToString;
    bip39::Mnemonic::from_entropy(&wallet.entropy)
        .map(|m| m.to_string())
        .map_err(|_| TaError::Internal)
}

/// Derive `m/44'/60'/0'/<change>/<index>` below an account root.
pub(crate) fn derive_below(root: &XPrv, path: HdPath) -> Result<DerivedKey, TaError> {
    if !path.is_valid() {
        return Err(TaError::InvalidPath);
    }
    let c = ChildNumber::new(path.change, false).map_err(|_| TaError::InvalidPath)?;
    let i = ChildNumber::new(path.index, false).map_err(|_| TaError::InvalidPath)?;
    let child = root
        .derive_child(c)
        .and_then(|k| k.derive_child(i))
        .map_err(|_| TaError::Internal)?;
    Ok(DerivedKey::from_signing_key(child.private_key().clone()))
}

/// Caches of account roots and derived keys. Bounded; on overflow the
/// oldest entry (by insertion) goes.
#[derive(Default)]
pub(crate) struct KeyCache {
    roots: BTreeMap<WalletId, (u64, XPrv)>,
    keys: BTreeMap<(WalletId, HdPath), (u64, DerivedKey)>,
    tick: u64,
}

impl KeyCache {
    /// The derived key for `(wallet, path)`, deriving (and caching) it if
    /// needed. `load` gives the wallet record on a root-cache miss.
    pub(crate) fn get_or_derive(
        &mut self,
        wallet_id: &WalletId,
        path: HdPath,
        load: impl FnOnce() -> Result<WalletRecord, TaError>,
    ) -> Result<&DerivedKey, TaError> {
        if !path.is_valid() {
            return Err(TaError::InvalidPath);
        }
        let k = (*wallet_id, path);
        if !self.keys.contains_key(&k) {
            self.tick += 1;
            let tick = self.tick;
            if !self.roots.contains_key(wallet_id) {
                let record = load()?;
                let root = account_root(&record)?;
                evict_oldest(&mut self.roots, ROOT_CACHE_CAP);
                self.roots.insert(*wallet_id, (tick, root));
            }
            let (_, root) = self.roots.get(wallet_id).ok_or(TaError::Internal)?;
            let derived = derive_below(root, path)?;
            evict_oldest(&mut self.keys, KEY_CACHE_CAP);
            self.keys.insert(k, (tick, derived));
        }
        self.keys.get(&k).map(|(_, d)| d).ok_or(TaError::Internal)
    }

    /// Forget everything about a wallet (removal, passkey change is not
    /// needed since keys do not depend on the passkey).
    pub(crate) fn forget_wallet(&mut self, wallet_id: &WalletId) {
        self.roots.remove(wallet_id);
        self.keys.retain(|(w, _), _| w != wallet_id);
    }
}

fn evict_oldest<K: Ord + Clone, V>(map: &mut BTreeMap<K, (u64, V)>, cap: usize) {
    if map.len() < cap {
        return;
    }
    if let Some(oldest) = map
        .iter()
        .min_by_key(|(_, (t, _))| *t)
        .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eip191_matches_a_known_vector() {
        // keccak256("\x19Ethereum Signed Message:\n5hello")
        let h = eip191_hash(b"hello");
        assert_eq!(
            crate::records::hex_for_tests(&h),
            "50b2c43fd39106bafbba0da34fc430e1f91e3c96ea2acee2bc34119f92b37750"
        );
    }

    #[test]
    fn itoa_formats_lengths() {
        assert_eq!(itoa(0), b"0");
        assert_eq!(itoa(32), b"32");
        assert_eq!(itoa(65536), b"65536");
    }
}
