//! The JWT secret store, credential minting and verification.
//!
//! The store holds one current secret and up to [`MAX_VERIFY_ONLY_KIDS`]
//! verify-only secrets. Normal rotation retires the current one for
//! [`VERIFY_ONLY_OVERLAP_SECS`] and keeps every other verify-only secret until
//! its own retire time; forced rotation removes every old kid at once.
//! Minting builds header and payload here and MACs them with the current kid
//! in the same call, so there is no kid-probe-then-sign race and no way to MAC
//! caller-chosen bytes.
//!
//! # Why normal rotation keeps several verify-only kids, and refuses at a bound
//!
//! A credential signed by kid K is minted while K is current, so it expires at
//! most [`MAX_TTL_SECS`] after K is rotated out, and K verifies for
//! [`VERIFY_ONLY_OVERLAP_SECS`] (≥ [`MAX_TTL_SECS`]) after that. Dropping K
//! any earlier can kill a live credential: with "one verify-only kid" two
//! rotations a day apart dropped the first kid while its credentials had two
//! more days to live. So a normal rotation drops only kids past their retire
//! time. Left unbounded, a rotation loop would grow the sealed record and the
//! verification scan for a week; at [`MAX_VERIFY_ONLY_KIDS`] live verify-only
//! kids a normal rotation is therefore refused with the time it can run
//! ([`TaError::JwtRotationRefused`]) and changes nothing. Refusing every
//! rotation while any verify-only kid is live would have been simpler, but it
//! would block an operator's second planned rotation for a week; the bound
//! keeps that possible and costs a few hundred bytes. Forced rotation is the
//! tool for a suspected leak and still kills everything at once.

use crate::records::{address_hex, JwtSecret, JwtStore, RECORD_VERSION};
use alloc::string::String;
use alloc::vec::Vec;
use hmac::{Hmac, Mac};
use kms_proto::jwt::{
    self, AgentClaims, JwtHeader, ParsedJwt, MAX_CLOCK_SKEW_SECS, MAX_TTL_SECS,
    MAX_VERIFY_ONLY_KIDS, VERIFY_ONLY_OVERLAP_SECS,
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
    /// `PurgeExpired`). A refused normal rotation leaves the store as it was.
    pub(crate) fn rotate(
        &mut self,
        mode: RotationMode,
        fresh: JwtSecret,
        now: u64,
    ) -> Result<JwtRotation, TaError> {
        let mut retired = Vec::new();
        let mut removed = Vec::new();
        match mode {
            RotationMode::Force => {
                removed.extend(self.entries.iter().map(|e| e.kid.clone()));
                self.entries.clear();
                self.entries.push(fresh);
            }
            RotationMode::Normal => {
                if let Some(retry_at) = self.normal_rotation_blocked_until(now) {
                    return Err(TaError::JwtRotationRefused { retry_at });
                }
                // Only kids past their retire time go; every other
                // verify-only kid keeps verifying until its own.
                self.purge_expired(now, &mut removed);
                for e in &mut self.entries {
                    if e.retire_at.is_none() {
                        e.retire_at = Some(now.saturating_add(VERIFY_ONLY_OVERLAP_SECS));
                        retired.push(e.kid.clone());
                    }
                }
                self.entries.push(fresh);
            }
            RotationMode::PurgeExpired => self.purge_expired(now, &mut removed),
        }
        self.version = RECORD_VERSION;
        Ok(JwtRotation {
            current_kid: self.current().map(|e| e.kid.clone()),
            retired,
            removed,
            secrets: self.info(),
        })
    }

    /// Remove the verify-only kids whose retire time has come.
    fn purge_expired(&mut self, now: u64, removed: &mut Vec<String>) {
        self.entries.retain(|e| match e.retire_at {
            Some(t) if t <= now => {
                removed.push(e.kid.clone());
                false
            }
            _ => true,
        });
    }

    /// When a normal rotation at `now` would leave more than
    /// [`MAX_VERIFY_ONLY_KIDS`] verify-only kids within their overlap: the
    /// first time it would not (enough of them retired).
    fn normal_rotation_blocked_until(&self, now: u64) -> Option<u64> {
        let mut live: Vec<u64> = self
            .entries
            .iter()
            .filter_map(|e| e.retire_at.filter(|&t| t > now))
            .collect();
        let after = live.len() + usize::from(self.current().is_some());
        if after <= MAX_VERIFY_ONLY_KIDS {
            return None;
        }
        // `after - MAX` of them must retire first: the earliest such time is
        // the retire time of the (after - MAX)-th to go.
        live.sort_unstable();
        live.get(after - MAX_VERIFY_ONLY_KIDS - 1).copied()
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
    /// This TA's operator address: the `iss` claim.
    pub issuer: [u8; 20],
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
        iss: Some(address_hex(&input.issuer)),
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

    const DAY: u64 = 24 * 3600;

    fn verify_only(s: &JwtStore) -> Vec<(String, u64)> {
        s.entries
            .iter()
            .filter_map(|e| e.retire_at.map(|t| (e.kid.clone(), t)))
            .collect()
    }

    #[test]
    fn normal_rotation_keeps_every_verify_only_kid_until_its_retire_time() {
        let mut s = JwtStore::default();
        s.rotate(RotationMode::Normal, secret(1, 0), 0).unwrap();
        assert_eq!(s.entries.len(), 1);
        let r = s.rotate(RotationMode::Normal, secret(2, 0), 0).unwrap();
        assert_eq!(r.retired, [secret(1, 0).kid.clone()]);
        assert!(r.removed.is_empty());
        // A day later: the first kid is still within its overlap and stays.
        let r = s.rotate(RotationMode::Normal, secret(3, DAY), DAY).unwrap();
        assert_eq!(r.retired, [secret(2, 0).kid.clone()]);
        assert!(r.removed.is_empty(), "{:?}", r.removed);
        assert_eq!(s.current().unwrap().kid, secret(3, 0).kid);
        assert_eq!(
            verify_only(&s),
            [
                (secret(1, 0).kid.clone(), VERIFY_ONLY_OVERLAP_SECS),
                (secret(2, 0).kid.clone(), DAY + VERIFY_ONLY_OVERLAP_SECS),
            ]
        );
        // Once the first kid's overlap has ended, the next rotation drops it
        // (and only it).
        let r = s
            .rotate(
                RotationMode::Normal,
                secret(4, VERIFY_ONLY_OVERLAP_SECS),
                VERIFY_ONLY_OVERLAP_SECS,
            )
            .unwrap();
        assert_eq!(r.removed, [secret(1, 0).kid.clone()]);
        assert_eq!(verify_only(&s).len(), 2);
    }

    #[test]
    fn normal_rotation_at_the_bound_is_refused_with_the_retry_time_and_changes_nothing() {
        let mut s = JwtStore::default();
        s.rotate(RotationMode::Normal, secret(0, 0), 0).unwrap();
        for n in 1..=MAX_VERIFY_ONLY_KIDS as u8 {
            let t = u64::from(n) * 60;
            s.rotate(RotationMode::Normal, secret(n, t), t).unwrap();
        }
        assert_eq!(verify_only(&s).len(), MAX_VERIFY_ONLY_KIDS);
        let before = s.info();
        let now = 3 * DAY;
        let err = s
            .rotate(RotationMode::Normal, secret(99, now), now)
            .unwrap_err();
        // The oldest verify-only kid (retired at t = 60) frees the slot.
        let retry_at = 60 + VERIFY_ONLY_OVERLAP_SECS;
        assert_eq!(err, TaError::JwtRotationRefused { retry_at });
        assert_eq!(s.info(), before);
        // One second early: still refused; at the retry time: it runs.
        assert!(s
            .rotate(RotationMode::Normal, secret(99, 0), retry_at - 1)
            .is_err());
        let r = s
            .rotate(RotationMode::Normal, secret(99, retry_at), retry_at)
            .unwrap();
        assert_eq!(r.removed, [secret(0, 0).kid.clone()]);
        assert_eq!(verify_only(&s).len(), MAX_VERIFY_ONLY_KIDS);
        // Forced rotation is never refused.
        let r = s
            .rotate(RotationMode::Force, secret(100, 0), retry_at)
            .unwrap();
        assert_eq!(r.removed.len(), MAX_VERIFY_ONLY_KIDS + 1);
        assert_eq!(s.entries.len(), 1);
    }

    #[test]
    fn forced_rotation_removes_every_old_kid() {
        let mut s = JwtStore::default();
        s.rotate(RotationMode::Normal, secret(1, 0), 0).unwrap();
        s.rotate(RotationMode::Normal, secret(2, 0), 0).unwrap();
        s.rotate(RotationMode::Normal, secret(3, 0), 0).unwrap();
        let r = s.rotate(RotationMode::Force, secret(4, 0), 0).unwrap();
        assert_eq!(r.removed.len(), 3);
        assert_eq!(s.entries.len(), 1);
        assert_eq!(r.current_kid, Some(secret(4, 0).kid.clone()));
    }

    #[test]
    fn purge_removes_only_ended_overlaps() {
        let mut s = JwtStore::default();
        s.rotate(RotationMode::Normal, secret(1, 0), 0).unwrap();
        s.rotate(RotationMode::Normal, secret(2, 0), 0).unwrap();
        s.rotate(RotationMode::Normal, secret(3, DAY), DAY).unwrap();
        let r = s
            .rotate(RotationMode::PurgeExpired, secret(9, 0), 5)
            .unwrap();
        assert!(r.removed.is_empty());
        let r = s
            .rotate(
                RotationMode::PurgeExpired,
                secret(9, 0),
                VERIFY_ONLY_OVERLAP_SECS,
            )
            .unwrap();
        assert_eq!(r.removed, [secret(1, 0).kid.clone()]);
        assert_eq!(s.entries.len(), 2);
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
            iss: None,
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
