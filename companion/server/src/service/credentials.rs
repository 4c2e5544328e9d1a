//! Agent credentials: issued with the owner's passkey ([`AgentCredentials::create`]),
//! re-issued ([`AgentCredentials::refresh`]), revoked in every layer
//! ([`AgentCredentials::revoke`]), and checked when an agent presents one
//! ([`AgentCredentials::authenticate`]).
//!
//! The host's checks come before any TEE call: the credential names this companion's TA (its
//! `iss` claim, checked before anything else), the agent exists and is active, the JWT is its
//! current credential (constant-time comparison of SHA-256 hashes, cached a few seconds), and it
//! has not expired. The TA checks the HMAC and the claims itself when it signs; only the hash of
//! a credential is ever stored.

use alloy::primitives::Address;
use kms_db::{AgentActivation, AgentKey, AgentStatus, DbError};
use kms_proto::jwt::AgentClaims;
use kms_proto::{
    AgentCredential, CreateAgentKey, JwtSignPayload, MintAgentBody, PasskeyAssertion,
    RefreshAgentBody, WalletId,
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::audit::{AuditMode, Audited};
use crate::error::{ApiError, ErrorCode};
use crate::revocation::{AccountRevocation, CompanionChain, Revocation};
use crate::state::{AppState, CachedCredential};

/// Why a presented agent credential is refused (each maps to one code, see
/// [`crate::error`]).
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// No `Authorization: Bearer` header.
    #[error("Authorization: Bearer <agent credential> is required")]
    Missing,
    /// An `Authorization` header that is not a Bearer credential.
    #[error("Authorization must be a Bearer credential")]
    NotBearer,
    /// An `Authorization` header that is not visible ASCII.
    #[error("malformed Authorization header")]
    MalformedHeader,
    /// A Bearer that is not a JWT of the companion's shape.
    #[error("invalid credential: {0}")]
    Malformed(String),
    /// The request names another agent than the credential.
    #[error("keyId does not match the credential")]
    KeyIdMismatch,
    /// No such agent (or one whose creation did not complete).
    #[error("unknown agent key")]
    AgentNotFound,
    /// The agent key is revoked.
    #[error("the agent key is revoked")]
    Revoked,
    /// An earlier credential of the agent (refreshed or revoked since).
    #[error(
        "this credential was superseded (by a refresh or a revoke): it is not the key's current \
         credential"
    )]
    Superseded,
    /// Not a credential the companion issued for this key (forged or tampered).
    #[error(
        "invalid credential: it is not a credential the companion issued for this key (forged or \
         tampered)"
    )]
    Invalid,
    /// The credential has expired.
    #[error("the credential has expired")]
    Expired,
    /// The agent's wallet is held by another TA than this companion's, or the credential was
    /// minted by another TA (its `iss` claim; 421 `wallet_on_other_ta`): the credential is
    /// never sent to this TA.
    #[error(transparent)]
    WrongTa(#[from] crate::replicas::WrongTa),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A Bearer credential as presented: the compact JWT and its (unverified) claims.
#[derive(Clone)]
pub struct Presented {
    /// The compact JWT.
    pub jwt: String,
    /// Its claims, parsed but not verified (the TA verifies the HMAC).
    pub claims: AgentClaims,
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presented")
            .field("wallet_id", &self.claims.wallet_id)
            .field("agent_index", &self.claims.agent_index)
            .finish_non_exhaustive()
    }
}

impl Presented {
    /// Parses a compact JWT (its shape only).
    pub fn parse(jwt: &str) -> Result<Self, CredentialError> {
        let parsed =
            kms_proto::jwt::parse(jwt).map_err(|e| CredentialError::Malformed(e.to_string()))?;
        Ok(Presented {
            jwt: jwt.to_owned(),
            claims: parsed.claims,
        })
    }

    /// The agent the credential names.
    pub fn agent(&self) -> Result<(WalletId, u32), CredentialError> {
        let wallet = self
            .claims
            .wallet_id
            .parse()
            .map_err(|_| CredentialError::Malformed("wallet_id".into()))?;
        Ok((wallet, self.claims.agent_index))
    }

    /// The TA that minted the credential (its `iss` claim: the TA's operator address), `None`
    /// for a credential minted before the claim existed. A claim that is not `0x` + 40
    /// lowercase hex (the only spelling a TA writes) is malformed.
    pub fn issuer(&self) -> Result<Option<&str>, CredentialError> {
        let Some(iss) = self.claims.iss.as_deref() else {
            return Ok(None);
        };
        let well_formed = iss.len() == 42
            && iss.starts_with("0x")
            && iss[2..]
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
        if !well_formed {
            return Err(CredentialError::Malformed(
                "iss is not a TA's operator address (0x + 40 lowercase hex)".into(),
            ));
        }
        Ok(Some(iss))
    }

    /// Refuses a credential minted by another TA than this companion's (421
    /// `wallet_on_other_ta` naming both, [`crate::replicas::NamedBy::Credential`]) from its
    /// `iss` claim alone: before any database read or TA call, so it never reaches this TA.
    pub async fn require_this_ta(&self, s: &AppState) -> Result<(), CredentialError> {
        if let Some(iss) = self.issuer()? {
            if let Some(w) =
                crate::replicas::credential_elsewhere(s, &self.claims.wallet_id, iss).await
            {
                return Err(w.into());
            }
        }
        Ok(())
    }

    /// Refuses a credential for another agent than `(wallet, index)` (403 `key_id_mismatch`).
    pub fn require_agent(&self, wallet: WalletId, index: u32) -> Result<(), CredentialError> {
        match self.agent() {
            Ok(named) if named == (wallet, index) => Ok(()),
            _ if self.claims.agent_index != index => Err(CredentialError::KeyIdMismatch),
            Ok(_) => Err(CredentialError::KeyIdMismatch),
            Err(e) => Err(e),
        }
    }
}

/// An agent authenticated by its Bearer credential (host checks done; the TA checks again when
/// it signs).
#[derive(Clone)]
pub struct AgentAuth {
    /// Canonical `"{wallet}:{index}"`.
    pub key_id: String,
    /// Wallet.
    pub wallet: WalletId,
    /// Agent index.
    pub index: u32,
    /// The presented JWT (for the TA).
    pub jwt: String,
    /// The agent key address.
    pub agent_address: Address,
}

impl std::fmt::Debug for AgentAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentAuth")
            .field("key_id", &self.key_id)
            .field("agent_address", &self.agent_address)
            .finish_non_exhaustive()
    }
}

/// The hex SHA-256 of a credential: the only form in which one is stored.
pub fn credential_hash(jwt: &str) -> String {
    hex::encode(Sha256::digest(jwt.as_bytes()))
}

fn activation<'a>(
    c: &'a AgentCredential,
    hash: &'a str,
    public_key: &'a str,
) -> AgentActivation<'a> {
    AgentActivation {
        agent_address: Address::from(c.address),
        public_key,
        credential_hash: hash,
        kid: &c.kid,
        generation: c.generation,
        issued_at: i64::try_from(c.iat).unwrap_or(i64::MAX),
        expires_at: i64::try_from(c.exp).unwrap_or(i64::MAX),
        now: kms_db::now_secs(),
    }
}

/// The stored spelling of a credential's public key (`0x` hex).
fn public_key_hex(c: &AgentCredential) -> String {
    format!("0x{}", hex::encode(&c.public_key))
}

/// Why a presented credential that is not the agent's current one is refused: one of an earlier
/// generation, for the agent's own address, was superseded (by a refresh or a revoke); anything
/// else (the current generation or a later one, another address: a forged or tampered token) is
/// invalid. The host cannot check the HMAC (its secret is in the TA), so a tampered copy of an
/// earlier credential still reads as superseded; it is refused all the same.
fn not_current(
    claims: &AgentClaims,
    current_generation: u32,
    agent_address: Address,
) -> CredentialError {
    let same_key = claims.agent_address.parse::<Address>().ok() == Some(agent_address);
    if claims.gen < current_generation && same_key {
        CredentialError::Superseded
    } else {
        CredentialError::Invalid
    }
}

/// The agent credentials of one companion.
#[derive(Clone, Copy)]
pub struct AgentCredentials<'a>(pub &'a AppState);

impl<'a> AgentCredentials<'a> {
    /// The host's checks of `presented` for agent `(wallet, index)` (see the module docs).
    /// Returns the credential facts (cached).
    pub async fn check(
        &self,
        wallet: WalletId,
        index: u32,
        presented: &Presented,
    ) -> Result<CachedCredential, CredentialError> {
        let s = self.0;
        presented.require_this_ta(s).await?;
        let key_id = kms_proto::jwt::key_id(&wallet, index);
        let current = match s.credentials.get(&key_id) {
            Some(c) => c,
            None => {
                let row =
                    s.db.get_agent(&wallet.to_uuid_string(), index)
                        .await?
                        .ok_or(CredentialError::AgentNotFound)?;
                if let Some(w) =
                    crate::replicas::wallet_elsewhere(s, &wallet.to_uuid_string()).await?
                {
                    return Err(w.into());
                }
                match row.status {
                    AgentStatus::Active => {}
                    AgentStatus::Revoked => return Err(CredentialError::Revoked),
                    AgentStatus::Pending | AgentStatus::Failed => {
                        return Err(CredentialError::AgentNotFound)
                    }
                }
                // An active row carries every credential field (activation writes them
                // together): a missing one is a corrupt row, refused rather than read as empty.
                let corrupt =
                    |field: &str| DbError::Invalid(format!("active agent {key_id} has no {field}"));
                let c = CachedCredential {
                    hash: row
                        .credential_hash
                        .ok_or_else(|| corrupt("credential hash"))?,
                    expires_at: row.expires_at.ok_or_else(|| corrupt("expiry"))?,
                    agent_address: row.agent_address.ok_or_else(|| corrupt("address"))?,
                    generation: row.generation.ok_or_else(|| corrupt("generation"))?,
                    cached_at: std::time::Instant::now(),
                };
                s.credentials.put(&key_id, c.clone());
                c
            }
        };
        let presented_hash = credential_hash(&presented.jwt);
        if !bool::from(presented_hash.as_bytes().ct_eq(current.hash.as_bytes())) {
            return Err(not_current(
                &presented.claims,
                current.generation,
                current.agent_address,
            ));
        }
        let now = kms_db::now_secs();
        if presented.claims.exp <= u64::try_from(now).unwrap_or(0) || current.expires_at <= now {
            return Err(CredentialError::Expired);
        }
        Ok(current)
    }

    /// Authenticates `presented` as the current credential of the agent it names (or of
    /// `expected`, when the request names one: another agent is `key_id_mismatch`).
    pub async fn authenticate(
        &self,
        presented: &Presented,
        expected: Option<(WalletId, u32)>,
    ) -> Result<AgentAuth, CredentialError> {
        let (wallet, index) = match expected {
            Some((w, i)) => {
                presented.require_agent(w, i)?;
                (w, i)
            }
            None => presented.agent()?,
        };
        let c = self.check(wallet, index, presented).await?;
        let agent_address = c.agent_address;
        Ok(AgentAuth {
            key_id: kms_proto::jwt::key_id(&wallet, index),
            wallet,
            index,
            jwt: presented.jwt.clone(),
            agent_address,
        })
    }

    /// Creates agent key `body` of the wallet and its first credential, authorised by
    /// `assertion`: the agent index is reserved in the database, the TA derives the key and mints
    /// the credential, the database records it (or the failure). `on_index` learns the index as
    /// soon as it is reserved (for the audit trail).
    pub async fn create(
        &self,
        body: &MintAgentBody,
        assertion: PasskeyAssertion,
        on_index: impl FnOnce(u32),
    ) -> Result<AgentCredential, ApiError> {
        let s = self.0;
        let wallet = body.wallet_id.to_uuid_string();
        let index =
            s.db.reserve_agent_index(&wallet, &body.label, kms_db::now_secs())
                .await?;
        on_index(index);
        match s
            .tee
            .call(&CreateAgentKey {
                agent_index: index,
                body: body.clone(),
                assertion,
            })
            .await
        {
            Ok(c) => {
                let hash = credential_hash(&c.to_jwt());
                let public_key = public_key_hex(&c);
                s.db.activate_agent(&wallet, index, &activation(&c, &hash, &public_key))
                    .await?;
                Ok(c)
            }
            Err(e) => {
                s.db.fail_agent(&wallet, index, e.code(), kms_db::now_secs())
                    .await?;
                Err(e)
            }
        }
    }

    /// Checks that agent `(wallet, index)` can be re-issued a credential: it exists, it is not
    /// revoked, and `presented` (when the request carries one; possibly expired) is its current
    /// credential.
    pub async fn check_refreshable(
        &self,
        wallet: WalletId,
        index: u32,
        presented: Option<&Presented>,
    ) -> Result<(), CredentialError> {
        if let Some(p) = presented {
            p.require_this_ta(self.0).await?;
        }
        let row: AgentKey = self
            .0
            .db
            .get_agent(&wallet.to_uuid_string(), index)
            .await?
            .ok_or(CredentialError::AgentNotFound)?;
        if row.status == AgentStatus::Revoked {
            return Err(CredentialError::Revoked);
        }
        if let Some(p) = presented {
            let (Some(stored), Some(generation), Some(address)) = (
                row.credential_hash.as_deref(),
                row.generation,
                row.agent_address,
            ) else {
                // No credential was ever issued: none can be presented.
                return Err(CredentialError::Invalid);
            };
            if !bool::from(credential_hash(&p.jwt).as_bytes().ct_eq(stored.as_bytes())) {
                return Err(not_current(&p.claims, generation, address));
            }
        }
        Ok(())
    }

    /// Re-issues the credential of `body`'s agent (the next generation; the previous one is dead
    /// in the TA and in the database), authorised by `assertion`.
    pub async fn refresh(
        &self,
        body: &RefreshAgentBody,
        assertion: PasskeyAssertion,
    ) -> Result<AgentCredential, ApiError> {
        let s = self.0;
        let c = s
            .tee
            .call(&JwtSignPayload {
                body: body.clone(),
                assertion,
            })
            .await?;
        let hash = credential_hash(&c.to_jwt());
        let public_key = public_key_hex(&c);
        let wallet = body.wallet_id.to_uuid_string();
        s.db.refresh_agent(
            &wallet,
            body.agent_index,
            &activation(&c, &hash, &public_key),
        )
        .await?;
        s.credentials
            .invalidate(&kms_proto::jwt::key_id(&body.wallet_id, body.agent_index));
        Ok(c)
    }

    /// Revokes agent `(wallet, index)` in every layer: the database first (the host refuses at
    /// once even if the TEE is unreachable), then the TA's generation bump, then every live
    /// session's account on chain (the one revocation path, `kms-admin`'s too). The caller has
    /// checked the owner's authorisation. Fails before doing anything only when the agent is
    /// unknown; what each layer did is in the [`Revocation`] ([`revoked_generation`]).
    pub async fn revoke(&self, wallet: WalletId, index: u32) -> Result<Revocation, ApiError> {
        let s = self.0;
        let key_id = kms_proto::jwt::key_id(&wallet, index);
        let row =
            s.db.get_agent(&wallet.to_uuid_string(), index)
                .await?
                .ok_or(CredentialError::AgentNotFound)?;
        let done = crate::revocation::revoke_agent(
            &s.db,
            &s.tee,
            Some(&CompanionChain(s)),
            wallet,
            &row,
            || s.credentials.invalidate(&key_id),
        )
        .await;
        if done.database.failure().is_none() && done.tee.failure().is_some() {
            // Revoked in the database but perhaps not in the TA (unreachable, even before the
            // call left): the background reconciliation revokes it there once the TA answers,
            // without waiting for a restart.
            s.reconcile.mark_dirty();
        }
        Ok(done)
    }
}

/// Records the operator's on-chain revocation of one account in the audit log (already done: a
/// failure to record it is logged by the writer).
pub async fn audit_account_revocation(s: &AppState, key_id: &str, a: &AccountRevocation) {
    let detail = format!(
        "account={:#x} status={} {}",
        a.account,
        a.outcome.status(),
        crate::revocation::describe(&a.outcome)
    );
    let outcome = match a.outcome.failure() {
        Some(f) => Err(ApiError::detailed(
            axum::http::StatusCode::BAD_GATEWAY,
            ErrorCode::ChainRevokeFailed,
            f.to_string(),
            serde_json::json!({}),
        )),
        None => Ok(()),
    };
    let _ = s
        .audited(
            Audited::new("operator", "RevokeSessionOnChain")
                .key_id(key_id)
                .detail(detail.as_str()),
            AuditMode::Durable,
            outcome,
        )
        .await;
}

/// The TA's generation after a revocation, or the failure of its database or TA layer (the
/// on-chain layer is reported per account, not as the revocation's error).
pub fn revoked_generation(done: &Revocation) -> Result<u32, ApiError> {
    match (
        done.database.failure().or(done.tee.failure()),
        done.generation,
    ) {
        (Some(f), _) => Err(f.clone().into()),
        (None, Some(g)) => Ok(g),
        (None, None) => Err(ApiError::internal("the TA reported no generation")),
    }
}
