//! The JWT secret store, credential minting and verification.
//!
//! The store holds one current secret and at most one verify-only secret.
//! Normal rotation retires the current one for
//! [`VERIFY_ONLY_OVERLAP_SECS`]; forced rotation removes every old kid at
//! once. Minting builds header and payload here and MACs them with the
//! current kid in the same call, so there is no kid-probe-then-sign race and
//! no way to MAC caller-chosen bytes.

use crate::records::{address_hex, JwtSecret, JwtStore, RECORD_VERSION};
use alloc::string::String;
use alloc::vec::Vec;
use hmac::{Hmac, Mac};
use kms_proto::jwt::{
    self, AgentClaims, JwtHeader, ParsedJwt, MAX_CLOCK_SKEW_SECS, MAX_TTL_SECS,
    VERIFY_ONLY_OVERLAP_SECS,
};
use kms_proto::{
    AgentCredential, JwtError, JwtRotation, JwtSecretInfo, KidStatus, RotationMode, TaError,
    WalletId,
};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

impl JwtStore {
    /// The current secret.
    pub(crate) fn current(&self) -> Option<&JwtSecret> {
        self.entries.iter().find(|e| e.retire_at.is_none())
    }

    /// Public view of the store.
    pub(crate) fn info(&self) -> Vec<JwtSecretInfo> {
        self.entries
            .iter()
            .map(|e| JwtSecretInfo {
                kid: e.kid.clone(),
                status: if e.retire_at.is_none() {
                    KidStatus::Current
                } else {
                    KidStatus::VerifyOnly
                },
                created_at: e.created_at,
                retire_at: e.retire_at,
            })
            .collect()
    }

    /// Apply a rotation. `fresh` is the new secret (unused by
    /// `PurgeExpired`).
    pub(crate) fn rotate(&mut self, mode: RotationMode, fresh: JwtSecret, now: u64) -> JwtRotation {
        self.version = RECORD_VERSION;
        let mut retired = Vec::new();
        let mut removed = Vec::new();
        match mode {
            RotationMode::Force => {
                removed.extend(self.entries.iter().map(|e| e.kid.clone()));
                self.entries.clear();
                self.entries.push(fresh);
            }
            RotationMode::Normal => {
                // Drop the previous verify-only secret: at most one is kept.
                self.entries.retain(|e| {
                    if e.retire_at.is_some() {
                        removed.push(e.kid.clone());
                        false
                    } else {
                        true
                    }
                });
                for e in &mut self.entries {
                    e.retire_at = Some(now + VERIFY_ONLY_OVERLAP_SECS);
                    retired.push(e.kid.clone());
                }
                self.entries.push(fresh);
            }
            RotationMode::PurgeExpired => {
                self.entries.retain(|e| match e.retire_at {
                    Some(t) if t <= now => {
                        removed.push(e.kid.clone());
                        false
                    }
                    _ => true,
                });
            }
        }
        JwtRotation {
            current_kid: self.current().map(|e| e.kid.clone()),
            retired,
            removed,
            secrets: self.info(),
        }
    }

    /// Check a parsed credential's MAC against the secret of its kid, in
    /// constant time.
    pub(crate) fn verify_mac(&self, parsed: &ParsedJwt<'_>, now: u64) -> Result<(), JwtError> {
        let entry = self
            .entries
            .iter()
            .find(|e| e.kid == parsed.header.kid)
            .ok_or(JwtError::UnknownKid)?;
        if matches!(entry.retire_at, Some(t) if t <= now) {
            return Err(JwtError::RetiredKid);
        }
        let mut mac =
            HmacSha256::new_from_slice(&entry.secret).map_err(|_| JwtError::BadSignature)?;
        mac.update(parsed.signing_input.as_bytes());
        mac.verify_slice(&parsed.mac)
            .map_err(|_| JwtError::BadSignature)
    }
}

/// A new secret from 32 random bytes for the key and 8 for the kid.
pub(crate) fn new_secret(random: &[u8; 40], now: u64) -> JwtSecret {
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&random[..32]);
    let mut kid = String::from("k");
    for b in &random[32..] {
        kid.push_str(&alloc::format!("{b:02x}"));
    }
    JwtSecret {
        kid,
        secret,
        created_at: now,
        retire_at: None,
    }
}

/// What a credential is minted for.
pub(crate) struct MintInput<'a> {
    pub wallet_id: &'a WalletId,
    pub agent_index: u32,
    pub address: [u8; 20],
    pub public_key: [u8; 33],
    pub generation: u32,
    pub ttl_secs: u64,
    pub now: u64,
}

/// Check a requested lifetime.
pub(crate) fn check_ttl(ttl_secs: u64) -> Result<(), TaError> {
    if ttl_secs == 0 || ttl_secs > MAX_TTL_SECS {
        return Err(TaError::InvalidTtl);
    }
    Ok(())
}

/// Build and MAC a credential with the current secret.
pub(crate) fn mint(current: &JwtSecret, input: MintInput<'_>) -> Result<AgentCredential, TaError> {
    check_ttl(input.ttl_secs)?;
    let header = JwtHeader {
        alg: "HS256".into(),
        typ: "JWT".into(),
        kid: current.kid.clone(),
    };
    let claims = AgentClaims {
        sub: jwt::key_id(input.wallet_id, input.agent_index),
        wallet_id: input.wallet_id.to_uuid_string(),
        agent_index: input.agent_index,
        agent_address: address_hex(&input.address),
        gen: input.generation,
        iat: input.now,
        exp: input.now + input.ttl_secs,
    };
    let header_b64 = jwt::encode_json_b64(&header);
    let payload_b64 = jwt::encode_json_b64(&claims);
    let mut mac = HmacSha256::new_from_slice(&current.secret).map_err(|_| TaError::Internal)?;
    mac.update(header_b64.as_bytes());
    mac.update(b".");
    mac.update(payload_b64.as_bytes());
    let hmac: [u8; 32] = mac.finalize().into_bytes().into();
    Ok(AgentCredential {
        agent_index: input.agent_index,
        address: input.address,
        public_key: input.public_key.to_vec(),
        generation: input.generation,
        kid: current.kid.clone(),
        header_b64,
        payload_b64,
        hmac,
        iat: claims.iat,
        exp: claims.exp,
    })
}

/// Check the time claims of a credential.
pub(crate) fn check_lifetime(claims: &AgentClaims, now: u64) -> Result<(), JwtError> {
    if claims.exp <= claims.iat
        || claims.exp - claims.iat > MAX_TTL_SECS
        || claims.iat > now + MAX_CLOCK_SKEW_SECS
    {
        return Err(JwtError::InvalidLifetime);
    }
    if now >= claims.exp {
        return Err(JwtError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(n: u8, now: u64) -> JwtSecret {
        new_secret(&[n; 40], now)
    }

    #[test]
    fn normal_rotation_keeps_exactly_one_verify_only() {
        let mut s = JwtStore::default();
        s.rotate(RotationMode::Normal, secret(1, 0), 0);
        assert_eq!(s.entries.len(), 1);
        let r = s.rotate(RotationMode::Normal, secret(2, 10), 10);
        assert_eq!(r.retired, [secret(1, 0).kid.clone()]);
        assert!(r.removed.is_empty());
        let r = s.rotate(RotationMode::Normal, secret(3, 20), 20);
        assert_eq!(r.removed, [secret(1, 0).kid.clone()]);
        assert_eq!(s.entries.len(), 2);
        assert_eq!(s.current().unwrap().kid, secret(3, 0).kid);
        let verify_only: Vec<_> = s.entries.iter().filter(|e| e.retire_at.is_some()).collect();
        assert_eq!(verify_only.len(), 1);
        assert_eq!(
            verify_only[0].retire_at,
            Some(20 + VERIFY_ONLY_OVERLAP_SECS)
        );
    }

    #[test]
    fn forced_rotation_removes_every_old_kid() {
        let mut s = JwtStore::default();
        s.rotate(RotationMode::Normal, secret(1, 0), 0);
        s.rotate(RotationMode::Normal, secret(2, 0), 0);
        let r = s.rotate(RotationMode::Force, secret(3, 0), 0);
        assert_eq!(r.removed.len(), 2);
        assert_eq!(s.entries.len(), 1);
        assert_eq!(r.current_kid, Some(secret(3, 0).kid.clone()));
    }

    #[test]
    fn purge_removes_only_ended_overlaps() {
        let mut s = JwtStore::default();
        s.rotate(RotationMode::Normal, secret(1, 0), 0);
        s.rotate(RotationMode::Normal, secret(2, 0), 0);
        let r = s.rotate(RotationMode::PurgeExpired, secret(9, 0), 5);
        assert!(r.removed.is_empty());
        let r = s.rotate(
            RotationMode::PurgeExpired,
            secret(9, 0),
            VERIFY_ONLY_OVERLAP_SECS,
        );
        assert_eq!(r.removed, [secret(1, 0).kid.clone()]);
        assert_eq!(s.entries.len(), 1);
    }

    #[test]
    fn lifetime_checks() {
        let mut c = AgentClaims {
            sub: String::new(),
            wallet_id: String::new(),
            agent_index: 0,
            agent_address: String::new(),
            gen: 1,
            iat: 100,
            exp: 200,
        };
        assert_eq!(check_lifetime(&c, 150), Ok(()));
        assert_eq!(check_lifetime(&c, 200), Err(JwtError::Expired));
        c.exp = c.iat + MAX_TTL_SECS + 1;
        assert_eq!(check_lifetime(&c, 150), Err(JwtError::InvalidLifetime));
        c.exp = 50;
        assert_eq!(check_lifetime(&c, 40), Err(JwtError::InvalidLifetime));
        c.iat = 1000;
        c.exp = 2000;
        assert_eq!(check_lifetime(&c, 100), Err(JwtError::InvalidLifetime));
    }
}
