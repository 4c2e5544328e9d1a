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

use alloc::collections::BTreeMap;
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
/// Most nonces pending per wallet; the oldest goes when a new one is issued.
pub(crate) const MAX_NONCES_PER_WALLET: usize = 64;
/// Most wallets with pending nonces.
pub(crate) const MAX_WALLETS_WITH_NONCES: usize = 4096;

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

/// Pending nonces, per wallet.
#[derive(Default)]
pub(crate) struct Nonces {
    pending: BTreeMap<WalletId, Vec<([u8; 32], u64)>>,
}

impl Nonces {
    /// Record a fresh nonce for `wallet`, expiring at `now + NONCE_TTL_SECS`.
    pub(crate) fn issue(
        &mut self,
        wallet: WalletId,
        nonce: [u8; 32],
        now: u64,
    ) -> Result<u64, TaError> {
        self.sweep(now);
        if !self.pending.contains_key(&wallet) && self.pending.len() >= MAX_WALLETS_WITH_NONCES {
            return Err(TaError::LimitReached);
        }
        let list = self.pending.entry(wallet).or_default();
        if list.len() >= MAX_NONCES_PER_WALLET {
            list.remove(0);
        }
        let expires_at = now + NONCE_TTL_SECS;
        list.push((nonce, expires_at));
        Ok(expires_at)
    }

    fn sweep(&mut self, now: u64) {
        self.pending.retain(|_, list| {
            list.retain(|(_, exp)| *exp > now);
            !list.is_empty()
        });
    }

    /// Forget a wallet's nonces.
    pub(crate) fn forget_wallet(&mut self, wallet: &WalletId) {
        self.pending.remove(wallet);
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
        let slot = self
            .pending
            .get(wallet)
            .and_then(|list| {
                list.iter().position(|(nonce, exp)| {
                    *exp > now
                        && bool::from(authz::challenge(nonce, payload_digest).ct_eq(&challenge))
                })
            })
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

        if let Some(list) = self.pending.get_mut(wallet) {
            list.remove(slot);
            if list.is_empty() {
                self.pending.remove(wallet);
            }
        }
        Ok(())
    }
}
