//! Passkey (WebAuthn) assertions verified inside the TA, and the one-time
//! nonces their challenges are bound to.
//!
//! An assertion authorises a payload when all of these hold:
//! * authenticatorData is at least 37 bytes and its rpIdHash equals the one
//!   bound to the wallet;
//! * its flags have UP (0x01) and UV (0x04);
//! * clientDataJSON has `type == "webauthn.get"` and a `challenge` equal to
//!   `SHA-256(nonce ‖ payload digest)` for a nonce this TA issued for this
//!   wallet, not yet used and not expired;
//! * the DER signature verifies under the wallet's P-256 key over
//!   `authenticatorData ‖ SHA-256(clientDataJSON)`.
//!
//! Only then is the nonce consumed, so a wrong or stale assertion cannot
//! burn a nonce someone else is using, and a good one works exactly once.
//!
//! # The nonce table's bound
//!
//! `GetChallenge` needs no passkey (it starts the ceremony), so whoever may
//! call the TA can ask for nonces for every wallet, as fast as it likes. The
//! table of pending nonces is therefore bounded in *total*, not only per
//! wallet, and never refuses a new nonce (a refusal would let a flood lock
//! every owner out for as long as it lasts); it evicts instead:
//!
//! * at most [`MAX_NONCES_PER_WALLET`] per wallet (the companion may hold
//!   that many ceremonies of one owner at once, e.g. a batch of parallel
//!   agent creations); a new one evicts that wallet's oldest, so a flood for
//!   one wallet only displaces that wallet's own nonces;
//! * at most [`MAX_PENDING_NONCES`] in all; when full, a new nonce evicts the
//!   oldest nonce of the wallet holding the *most* (the oldest overall among
//!   equals), so a flood spread over a few wallets displaces its own nonces
//!   before a single one of an owner with one ceremony running. Only a flood
//!   spread over [`MAX_PENDING_NONCES`] wallets, one nonce each, reaches
//!   those: then the oldest goes, after [`MAX_PENDING_NONCES`] - 1 newer ones.
//!
//! Expired nonces ([`NONCE_TTL_SECS`]) are swept before each issue. The
//! table is one vector of fixed-size entries kept sorted by (wallet, issue
//! order), so it holds at most [`NONCE_TABLE_MAX_BYTES`] = 4096 × 64 bytes =
//! 256 KiB, 6 % of the OP-TEE TA's 4 MiB heap (`ta/optee/build.rs`); while it
//! grows to that the vector doubles, so 384 KiB for a moment at most. Every
//! operation is a binary search or one pass over it, with no other allocation.

use alloc::string::String;
use alloc::vec::Vec;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kms_proto::{authz, PasskeyAssertion, PasskeyError, TaError, WalletId};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How long a nonce is accepted.
pub(crate) const NONCE_TTL_SECS: u64 = 300;
/// Most nonces pending per wallet; the wallet's oldest goes when a new one is issued.
pub const MAX_NONCES_PER_WALLET: usize = 64;
/// Most nonces pending in all (see the module docs for which one goes when a
/// new one is issued): one ceremony for each of 4096 wallets at once.
pub const MAX_PENDING_NONCES: usize = 4096;
/// The most memory the table's entries take: [`MAX_PENDING_NONCES`] entries
/// of 64 bytes (wallet id 16, issue number 8, expiry 8, nonce 32).
pub const NONCE_TABLE_MAX_BYTES: usize = MAX_PENDING_NONCES * core::mem::size_of::<Pending>();
const _: () = assert!(core::mem::size_of::<Pending>() == 64);
const _: () = assert!(NONCE_TABLE_MAX_BYTES <= 256 * 1024);

const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;

/// Validate a passkey public key: 65-byte uncompressed SEC1, on the curve,
/// not the identity.
pub(crate) fn validate_public_key(bytes: &[u8]) -> Result<VerifyingKey, TaError> {
    if bytes.len() != 65 || bytes[0] != 0x04 {
        return Err(TaError::InvalidPasskeyKey);
    }
    VerifyingKey::from_sec1_bytes(bytes).map_err(|_| TaError::InvalidPasskeyKey)
}

/// SHA-256 of a relying party id, after checking it is plausible.
pub(crate) fn rp_id_hash(rp_id: &str) -> Result<[u8; 32], TaError> {
    if rp_id.is_empty() || rp_id.len() > 253 || !rp_id.is_ascii() {
        return Err(TaError::InvalidRpId);
    }
    Ok(Sha256::digest(rp_id.as_bytes()).into())
}

#[derive(Deserialize)]
struct ClientData {
    #[serde(rename = "type")]
    typ: String,
    challenge: String,
}

/// One pending nonce.
#[derive(Clone, Copy)]
pub(crate) struct Pending {
    wallet: WalletId,
    /// Issue order (higher is newer).
    seq: u64,
    expires_at: u64,
    nonce: [u8; 32],
}

/// How much the nonce table holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonceTableUsage {
    /// Pending nonces.
    pub entries: usize,
    /// Wallets with at least one.
    pub wallets: usize,
    /// Bytes allocated for entries (the vector's capacity × 64); never above
    /// [`NONCE_TABLE_MAX_BYTES`].
    pub bytes: usize,
}

/// Pending nonces, sorted by (wallet, issue order).
#[derive(Default)]
pub(crate) struct Nonces {
    pending: Vec<Pending>,
    next_seq: u64,
    /// No entry expires before this (a lower bound: sweeping is skipped until then).
    next_expiry: u64,
}

impl Nonces {
    /// The index range of `wallet`'s nonces (oldest first).
    fn run(&self, wallet: &WalletId) -> core::ops::Range<usize> {
        let lo = self.pending.partition_point(|p| p.wallet < *wallet);
        let hi = lo + self.pending[lo..].partition_point(|p| p.wallet == *wallet);
        lo..hi
    }

    /// Record a fresh nonce for `wallet`, expiring at `now + NONCE_TTL_SECS`,
    /// evicting one if a bound is reached (never refused).
    pub(crate) fn issue(&mut self, wallet: WalletId, nonce: [u8; 32], now: u64) -> u64 {
        self.sweep(now);
        let run = self.run(&wallet);
        if run.len() >= MAX_NONCES_PER_WALLET {
            self.pending.remove(run.start);
        } else if self.pending.len() >= MAX_PENDING_NONCES {
            self.evict_from_largest();
        }
        let expires_at = now.saturating_add(NONCE_TTL_SECS);
        self.next_expiry = self.next_expiry.min(expires_at);
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        // After the wallet's others: the run stays in issue order.
        let at = self.pending.partition_point(|p| p.wallet <= wallet);
        self.pending.insert(
            at,
            Pending {
                wallet,
                seq,
                expires_at,
                nonce,
            },
        );
        expires_at
    }

    /// Remove the oldest nonce of the wallet holding the most (among equals,
    /// the oldest of them).
    fn evict_from_largest(&mut self) {
        let mut best: Option<(usize, u64, usize)> = None; // (run length, oldest seq, index)
        let mut start = 0;
        while start < self.pending.len() {
            let wallet = self.pending[start].wallet;
            let len = self.pending[start..].partition_point(|p| p.wallet == wallet);
            let oldest = self.pending[start].seq;
            let better = match best {
                None => true,
                Some((l, s, _)) => len > l || (len == l && oldest < s),
            };
            if better {
                best = Some((len, oldest, start));
            }
            start += len;
        }
        if let Some((_, _, index)) = best {
            self.pending.remove(index);
        }
    }

    fn sweep(&mut self, now: u64) {
        if now < self.next_expiry {
            return;
        }
        self.pending.retain(|p| p.expires_at > now);
        self.next_expiry = self
            .pending
            .iter()
            .map(|p| p.expires_at)
            .min()
            .unwrap_or(u64::MAX);
    }

    /// Forget a wallet's nonces.
    pub(crate) fn forget_wallet(&mut self, wallet: &WalletId) {
        let run = self.run(wallet);
        self.pending.drain(run);
    }

    /// How much the table holds.
    pub(crate) fn usage(&self) -> NonceTableUsage {
        let mut wallets = 0;
        let mut start = 0;
        while start < self.pending.len() {
            let wallet = self.pending[start].wallet;
            start += self.pending[start..].partition_point(|p| p.wallet == wallet);
            wallets += 1;
        }
        NonceTableUsage {
            entries: self.pending.len(),
            wallets,
            bytes: self.pending.capacity() * core::mem::size_of::<Pending>(),
        }
    }

    /// Verify `assertion` for `payload_digest` under the wallet's passkey and
    /// consume the nonce it used.
    pub(crate) fn verify_and_consume(
        &mut self,
        wallet: &WalletId,
        passkey: &[u8],
        rp_id_hash: &[u8; 32],
        payload_digest: &[u8; 32],
        assertion: &PasskeyAssertion,
        now: u64,
    ) -> Result<(), PasskeyError> {
        let ad = &assertion.authenticator_data;
        if ad.len() < 37 {
            return Err(PasskeyError::MalformedAuthenticatorData);
        }
        if !bool::from(ad[..32].ct_eq(rp_id_hash)) {
            return Err(PasskeyError::RpIdMismatch);
        }
        let flags = ad[32];
        if flags & FLAG_UP == 0 {
            return Err(PasskeyError::UserPresenceMissing);
        }
        if flags & FLAG_UV == 0 {
            return Err(PasskeyError::UserVerificationMissing);
        }
        let client: ClientData = serde_json::from_slice(&assertion.client_data_json)
            .map_err(|_| PasskeyError::MalformedClientData)?;
        if client.typ != "webauthn.get" {
            return Err(PasskeyError::WrongType);
        }
        let challenge = URL_SAFE_NO_PAD
            .decode(client.challenge.trim_end_matches('='))
            .map_err(|_| PasskeyError::MalformedClientData)?;
        if challenge.len() != 32 {
            return Err(PasskeyError::ChallengeMismatch);
        }
        let run = self.run(wallet);
        let slot = self.pending[run.clone()]
            .iter()
            .position(|p| {
                p.expires_at > now
                    && bool::from(authz::challenge(&p.nonce, payload_digest).ct_eq(&challenge))
            })
            .map(|i| run.start + i)
            .ok_or(PasskeyError::ChallengeMismatch)?;

        let key = VerifyingKey::from_sec1_bytes(passkey).map_err(|_| PasskeyError::BadSignature)?;
        let sig = Signature::from_der(&assertion.signature)
            .map_err(|_| PasskeyError::MalformedSignature)?;
        // Authenticators may produce high-S signatures; WebAuthn accepts
        // both forms.
        let sig = sig.normalize_s().unwrap_or(sig);
        let mut signed = Vec::with_capacity(ad.len() + 32);
        signed.extend_from_slice(ad);
        signed.extend_from_slice(&Sha256::digest(&assertion.client_data_json));
        key.verify(&signed, &sig)
            .map_err(|_| PasskeyError::BadSignature)?;

        self.pending.remove(slot);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(i: u32) -> WalletId {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&i.to_be_bytes());
        WalletId(id)
    }

    fn has(n: &Nonces, wallet: u32, nonce: u8) -> bool {
        n.pending
            .iter()
            .any(|p| p.wallet == w(wallet) && p.nonce == [nonce; 32])
    }

    #[test]
    fn a_full_table_evicts_from_the_wallet_holding_the_most() {
        let mut n = Nonces::default();
        // Wallet 1 holds 3, the rest one each, until the table is full.
        for k in 0..3 {
            n.issue(w(1), [k; 32], 0);
        }
        for i in 2..(MAX_PENDING_NONCES as u32 - 1) {
            n.issue(w(i), [0; 32], 0);
        }
        assert_eq!(n.pending.len(), MAX_PENDING_NONCES);
        // A newcomer takes wallet 1's oldest, then its next oldest.
        n.issue(w(100_000), [7; 32], 0);
        assert!(!has(&n, 1, 0) && has(&n, 1, 1) && has(&n, 2, 0));
        n.issue(w(100_001), [7; 32], 0);
        assert!(!has(&n, 1, 1) && has(&n, 1, 2));
        // All at one each: the oldest overall goes (wallet 1's last, then wallet 2's).
        n.issue(w(100_002), [7; 32], 0);
        assert!(!has(&n, 1, 2) && has(&n, 2, 0));
        n.issue(w(100_003), [7; 32], 0);
        assert!(!has(&n, 2, 0) && has(&n, 3, 0));
        assert_eq!(n.pending.len(), MAX_PENDING_NONCES);
        assert!(n.usage().bytes <= NONCE_TABLE_MAX_BYTES);
    }

    #[test]
    fn a_wallet_at_its_cap_loses_its_own_oldest() {
        let mut n = Nonces::default();
        n.issue(w(9), [9; 32], 0);
        for k in 0..=MAX_NONCES_PER_WALLET as u8 {
            n.issue(w(1), [k; 32], 0);
        }
        assert!(!has(&n, 1, 0) && has(&n, 1, 1) && has(&n, 9, 9));
        assert_eq!(n.run(&w(1)).len(), MAX_NONCES_PER_WALLET);
        // The run stays in issue order, after the wallets before it and before those after.
        let run = n.run(&w(1));
        assert!(n.pending[run].windows(2).all(|p| p[0].seq < p[1].seq));
        n.forget_wallet(&w(1));
        assert_eq!(n.usage().entries, 1);
    }

    #[test]
    fn churn_never_grows_the_table_past_its_bound() {
        let mut n = Nonces::default();
        for i in 0..(MAX_PENDING_NONCES as u32 + 1024) {
            n.issue(w(i % 5000), [0; 32], u64::from(i / 4096));
            if i % 64 == 0 {
                let u = n.usage();
                assert!(u.entries <= MAX_PENDING_NONCES);
                assert!(u.bytes <= NONCE_TABLE_MAX_BYTES);
            }
        }
        assert!(n.usage().bytes <= NONCE_TABLE_MAX_BYTES);
    }
}
