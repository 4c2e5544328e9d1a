//! The one way to the TA: [`Tee`], the TEE client with latency metrics, the rollback guard and
//! the reconciliation trigger, and the signing steps built on it whose answers are checked before
//! anything leaves: the operator key ([`TaOperator`], the chain layer's
//! [`OperatorSigner`]), the agent's 106-byte session signature
//! ([`Tee::sign_agent_user_op`]), the owner's UserOperation signature
//! ([`Tee::sign_owner_user_op`]) and the owner's EIP-7702 delegation with the delegated
//! account's first UserOperation ([`Tee::sign_eip7702_delegation`]). The chain crate never
//! reaches the TA itself. Agent signatures, the hot path, go to the TA in batches when several
//! wait at once ([`Tee::agent_signature`], module [`batch`]).

use std::sync::Arc;
use std::time::Instant;

use alloy::eips::eip7702::{Authorization, SignedAuthorization};
use alloy::primitives::{Address, Bytes, B256, U256};
use kms_chain::operator::{
    owner_sign_body, verify_eip191, verify_raw, OperatorSigner, OperatorSignerError,
    RevokeSessionTx, SignedRevoke,
};
use kms_chain::signature::SessionSignature;
use kms_proto::{
    AgentSignature, Authorized, Command, Eip7702DelegationBody, Eip7702Signatures, OperatorKey,
    OperatorSignRevokeSession, PasskeyAssertion, SignAgentUserOp, SignEip7702Delegation, WalletId,
    MAX_AGENT_SIGNATURES_PER_CALL,
};
use kms_tee_client::{TeeClient, TeeError};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::reconcile::Reconcile;

mod batch;

/// The TEE client with latency metrics and the one error mapping.
#[derive(Clone)]
pub struct Tee {
    client: TeeClient,
    metrics: Arc<Metrics>,
    reconcile: Arc<Reconcile>,
    /// The queue of agent signatures ([`Tee::agent_signature`]).
    batch: Arc<batch::SignBatcher>,
}

impl Tee {
    /// Wrap a client. A call that fails as unavailable after its request
    /// may have reached the TA marks `reconcile` dirty.
    pub fn new(client: TeeClient, metrics: Arc<Metrics>, reconcile: Arc<Reconcile>) -> Self {
        Self {
            client,
            metrics,
            reconcile,
            batch: Arc::new(batch::SignBatcher::new(MAX_AGENT_SIGNATURES_PER_CALL, 0)),
        }
    }

    /// This client with agent signatures batched by at most `max` per TA call (1: each alone)
    /// with at most `parallel` calls at the TA at once (0: one per core, at least 2); see
    /// [`batch`]. The default is the most the TA takes per call, one call per core.
    pub fn with_sign_batching(mut self, max: usize, parallel: usize) -> Self {
        self.batch = Arc::new(batch::SignBatcher::new(max, parallel));
        self
    }

    /// A handle for a tool outside the companion's server (`kms-admin`, test harnesses): its own
    /// metrics and reconciliation flags, which nothing reads.
    pub fn standalone(client: TeeClient) -> Self {
        Self::new(client, Arc::default(), Arc::default())
    }

    /// A call for the reconciliation itself ([`crate::reconcile`]): no rollback guard (the
    /// reconciliation is what finds and clears it) and no reconciliation trigger; metered.
    pub async fn reconcile_call<C>(&self, req: &C) -> Result<C::Output, TeeError>
    where
        C: Command,
        C::Output: Send + 'static,
    {
        let started = Instant::now();
        let r = self.client.call_async(req).await;
        let outcome = if r.is_ok() { "ok" } else { "error" };
        self.metrics
            .observe_tee(C::ID.name(), outcome, started.elapsed());
        r
    }

    /// Why the TA is found rolled back, while it is (every TA call but `TaInfo` is then refused).
    pub fn rolled_back(&self) -> Option<String> {
        self.reconcile.rolled_back()
    }

    /// Call a TA command on the blocking pool; TA refusals and transport
    /// failures become [`ApiError`]s.
    pub async fn call<C>(&self, req: &C) -> Result<C::Output, ApiError>
    where
        C: Command,
        C::Output: Send + 'static,
    {
        // While the TA is found rolled back, nothing but TaInfo reaches it
        // from a request (see `reconcile`).
        if let Some(reason) = self.reconcile.rolled_back() {
            if C::ID != kms_proto::CommandId::TaInfo {
                return Err(crate::reconcile::rolled_back_error(&reason));
            }
        }
        self.try_call(req).await.map_err(ApiError::from)
    }

    /// [`Tee::call`] keeping the client's error, for a caller that handles a
    /// particular TA refusal itself (metrics and reconciliation as for `call`).
    pub async fn try_call<C>(&self, req: &C) -> Result<C::Output, kms_tee_client::TeeError>
    where
        C: Command,
        C::Output: Send + 'static,
    {
        let started = Instant::now();
        let r = self.client.call_async(req).await;
        if let Err(e) = &r {
            self.react(e);
        }
        self.observe(C::ID, &r, started.elapsed());
        r
    }

    /// What a failed call tells the reconciliation: a rolled-back state, or a command that may
    /// have reached the TA without an answer.
    fn react(&self, e: &TeeError) {
        match e {
            TeeError::Ta(e @ kms_proto::TaError::StateRolledBack { .. }) => {
                self.reconcile.set_rolled_back(e.to_string());
            }
            TeeError::Unavailable {
                maybe_executed: true,
                ..
            } => self.reconcile.mark_dirty(),
            _ => {}
        }
    }

    /// Count a call of `cmd` and its latency under its outcome.
    fn observe<T>(
        &self,
        cmd: kms_proto::CommandId,
        r: &Result<T, TeeError>,
        elapsed: std::time::Duration,
    ) {
        let outcome = match r {
            Ok(_) => "ok",
            Err(TeeError::Ta(_)) => "ta_error",
            Err(TeeError::Unavailable { .. }) => "unavailable",
            Err(_) => "error",
        };
        self.metrics.observe_tee(cmd.name(), outcome, elapsed);
    }

    /// `SignAgentUserOp` through the batcher ([`batch`]): gathered with the other agent
    /// signatures waiting at the same moment into one TA call. Refused while the TA is found
    /// rolled back (as [`Tee::call`]).
    pub async fn agent_signature(&self, req: SignAgentUserOp) -> Result<AgentSignature, SignError> {
        if let Some(reason) = self.reconcile.rolled_back() {
            return Err(SignError::RolledBack(reason));
        }
        let unbatched = || Tee {
            client: self.client.clone(),
            metrics: self.metrics.clone(),
            reconcile: self.reconcile.clone(),
            batch: Arc::new(batch::SignBatcher::new(1, 1)),
        };
        Ok(self.batch.sign(unbatched, req, self).await?)
    }
}

/// The TA's failure inside a chain-layer signing error, when that is what it is.
pub fn tee_failure(e: OperatorSignerError) -> Result<TeeError, OperatorSignerError> {
    match e {
        OperatorSignerError::Signer(f) => match f.downcast::<TeeError>() {
            Ok(t) => Ok(*t),
            Err(other) => Err(OperatorSignerError::Signer(other)),
        },
        other => Err(other),
    }
}

fn signer(e: TeeError) -> OperatorSignerError {
    OperatorSignerError::Signer(Box::new(e))
}

/// The TA's operator key: the session revoker, which signs only `revokeSession` transactions
/// (the TA builds their call data itself, within its ceilings).
#[derive(Clone)]
pub struct TaOperator {
    tee: Tee,
    address: Address,
}

impl std::fmt::Debug for TaOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaOperator")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl TaOperator {
    /// Reads the operator key from the TA, creating it first if `create_if_missing` (at
    /// start-up of the companion).
    pub async fn open(tee: Tee, create_if_missing: bool) -> Result<Self, TeeError> {
        let info = tee.try_call(&OperatorKey { create_if_missing }).await?;
        Ok(Self {
            tee,
            address: Address::from(info.address),
        })
    }
}

impl OperatorSigner for TaOperator {
    fn address(&self) -> Address {
        self.address
    }

    async fn sign_revoke_session(
        &self,
        tx: RevokeSessionTx,
    ) -> Result<SignedRevoke, OperatorSignerError> {
        let signed = self
            .tee
            .try_call(&OperatorSignRevokeSession {
                chain_id: tx.chain_id,
                nonce: tx.nonce,
                max_priority_fee_per_gas: tx.max_priority_fee_per_gas,
                max_fee_per_gas: tx.max_fee_per_gas,
                gas_limit: tx.gas_limit,
                validator: tx.validator.into(),
                account: tx.account.into(),
                agent_key: tx.agent_key.into(),
            })
            .await
            .map_err(signer)?;
        let from = Address::from(signed.from);
        if from != self.address {
            return Err(OperatorSignerError::WrongSigner {
                expected: self.address,
                got: from,
            });
        }
        Ok(SignedRevoke {
            raw: signed.raw.into(),
            tx_hash: signed.tx_hash.into(),
            from,
        })
    }
}

/// What the TA needs to sign a userOpHash with an agent key.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentSigningRequest<'a> {
    /// The wallet the credential is for.
    pub wallet_id: WalletId,
    /// The agent index the credential is for.
    pub agent_index: u32,
    /// The agent's JWT as presented (the TA verifies it).
    pub jwt: &'a str,
    /// The userOpHash.
    pub user_op_hash: B256,
    /// The account the operation is for (`sender`).
    pub account: Address,
    /// The agent key address the caller expects (from the DB), checked against the TA's answer.
    pub expected_key: Option<Address>,
}

impl std::fmt::Debug for AgentSigningRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSigningRequest")
            .field("wallet_id", &self.wallet_id)
            .field("agent_index", &self.agent_index)
            .field("jwt", &"<redacted>")
            .field("user_op_hash", &self.user_op_hash)
            .field("account", &self.account)
            .finish()
    }
}

/// Why a checked signing step failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The TA is found rolled back: nothing but `TaInfo` reaches it (see [`crate::reconcile`]).
    #[error("the TA is found rolled back: {0}")]
    RolledBack(String),
    /// The TA refused, or the way to it failed.
    #[error(transparent)]
    Tee(#[from] TeeError),
    /// The TA's answer failed its checks (layout, signer, recovery).
    #[error("the TA's signature failed its checks: {0}")]
    Check(#[from] OperatorSignerError),
}

/// The owner's EIP-7702 delegation and, when asked, the delegated account's first UserOperation
/// signature, both checked against the owner ([`Tee::sign_eip7702_delegation`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eip7702Signed {
    /// The authorisation list item (chain id, delegate, nonce of the request; `y_parity` 0/1),
    /// whose authority recovers to the owner.
    pub authorization: SignedAuthorization,
    /// The owner's 65-byte raw signature over the userOpHash (`r ‖ s ‖ v`, `v` = 27/28), exactly
    /// when the request carried one.
    pub user_op_signature: Option<Bytes>,
}

impl From<SignError> for ApiError {
    fn from(e: SignError) -> Self {
        match e {
            SignError::RolledBack(reason) => crate::reconcile::rolled_back_error(&reason),
            SignError::Tee(t) => t.into(),
            SignError::Check(c) => ApiError::internal(c.to_string()),
        }
    }
}

impl Tee {
    /// [`Tee::try_call`], refused while the TA is found rolled back (as [`Tee::call`]).
    async fn guarded_call<C>(&self, req: &C) -> Result<C::Output, SignError>
    where
        C: Command,
        C::Output: Send + 'static,
    {
        if let Some(reason) = self.reconcile.rolled_back() {
            return Err(SignError::RolledBack(reason));
        }
        Ok(self.try_call(req).await?)
    }

    /// Has the TA sign `req.user_op_hash` with the agent key (`SignAgentUserOp`, the TA checks
    /// the JWT) and checks the 106-byte answer: its layout, the account it names, the key it
    /// names (against `req.expected_key` when given), and that the signature recovers to that
    /// key over the EIP-191 hash of the userOpHash. Returns the signature and the agent key.
    pub async fn sign_agent_user_op(
        &self,
        req: &AgentSigningRequest<'_>,
    ) -> Result<(Bytes, Address), SignError> {
        let out = self
            .agent_signature(SignAgentUserOp {
                wallet_id: req.wallet_id,
                agent_index: req.agent_index,
                jwt: req.jwt.to_owned(),
                user_op_hash: req.user_op_hash.0,
                account: req.account.into(),
            })
            .await?;
        let bad = |what| SignError::Check(OperatorSignerError::BadSignature(what));
        let parsed = SessionSignature::parse(&out.signature)
            .ok_or(bad("not the 106-byte session layout"))?;
        if parsed.account != req.account {
            return Err(bad("names another account than requested"));
        }
        let key = Address::from(out.agent_address);
        if parsed.key != key {
            return Err(bad("names another key than the TA reported"));
        }
        if let Some(expected) = req.expected_key {
            if key != expected {
                return Err(OperatorSignerError::WrongSigner { expected, got: key }.into());
            }
        }
        verify_eip191(&parsed.rsv, req.user_op_hash, key)?;
        Ok((Bytes::from(out.signature), key))
    }

    /// Has the TA sign `user_op_hash` with the owner key (`SignHash`, raw ECDSA), authorised by
    /// `assertion` (whose challenge must bind [`owner_sign_body`]), and checks that the 65-byte
    /// signature recovers to `expected_owner`.
    pub async fn sign_owner_user_op(
        &self,
        wallet_id: WalletId,
        user_op_hash: B256,
        assertion: PasskeyAssertion,
        expected_owner: Address,
    ) -> Result<Bytes, SignError> {
        let out = self
            .guarded_call(&Authorized {
                body: owner_sign_body(wallet_id, user_op_hash),
                assertion,
            })
            .await?;
        let from = Address::from(out.address);
        if from != expected_owner {
            return Err(OperatorSignerError::WrongSigner {
                expected: expected_owner,
                got: from,
            }
            .into());
        }
        verify_raw(&out.bytes, user_op_hash, expected_owner)?;
        Ok(Bytes::from(out.bytes))
    }

    /// Has the TA sign the EIP-7702 authorisation of `body` (chain id, delegate, nonce) with the
    /// owner key and, when `body.user_op_hash` is set, that userOpHash raw
    /// (`SignEip7702Delegation`, one command), authorised by `assertion` (whose challenge must
    /// bind `body`); then checks the answer: the authorisation's authority recovers to
    /// `expected_owner` (and its `s` is low), the userOp signature is there exactly when asked
    /// and recovers to `expected_owner` over the hash. The TA refuses chain id 0 and nonce
    /// `u64::MAX` (`TaError::InvalidAuthorization`).
    pub async fn sign_eip7702_delegation(
        &self,
        body: Eip7702DelegationBody,
        assertion: PasskeyAssertion,
        expected_owner: Address,
    ) -> Result<Eip7702Signed, SignError> {
        let out = self
            .guarded_call(&SignEip7702Delegation {
                body: body.clone(),
                assertion,
            })
            .await?;
        Ok(check_eip7702(&body, out, expected_owner)?)
    }
}

/// The checks of [`Tee::sign_eip7702_delegation`] on the TA's answer `out` to `body`.
fn check_eip7702(
    body: &Eip7702DelegationBody,
    out: Eip7702Signatures,
    expected_owner: Address,
) -> Result<Eip7702Signed, OperatorSignerError> {
    let bad = OperatorSignerError::BadSignature;
    for signer in std::iter::once(&out.authorization).chain(&out.user_op) {
        let got = Address::from(signer.address);
        if got != expected_owner {
            return Err(OperatorSignerError::WrongSigner {
                expected: expected_owner,
                got,
            });
        }
    }
    let rsv: &[u8; 65] = out
        .authorization
        .bytes
        .as_slice()
        .try_into()
        .map_err(|_| bad("authorization signature is not 65 bytes"))?;
    let y_parity = match rsv[64] {
        27 => 0,
        28 => 1,
        _ => return Err(bad("authorization signature's v is not 27 or 28")),
    };
    let authorization = SignedAuthorization::new_unchecked(
        Authorization {
            chain_id: U256::from(body.chain_id),
            address: Address::from(body.delegate),
            nonce: body.nonce,
        },
        y_parity,
        U256::from_be_slice(&rsv[..32]),
        U256::from_be_slice(&rsv[32..64]),
    );
    let authority = authorization
        .recover_authority()
        .map_err(|_| bad("authorization does not recover (or has a high s)"))?;
    if authority != expected_owner {
        return Err(bad("authorization does not recover to the owner"));
    }
    let user_op_signature = match (body.user_op_hash, out.user_op) {
        (Some(hash), Some(sig)) => {
            verify_raw(&sig.bytes, B256::from(hash), expected_owner)?;
            Some(Bytes::from(sig.bytes))
        }
        (None, None) => None,
        (Some(_), None) => return Err(bad("no userOp signature, though one was asked")),
        (None, Some(_)) => return Err(bad("a userOp signature nobody asked for")),
    };
    Ok(Eip7702Signed {
        authorization,
        user_op_signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_request_debug_hides_the_jwt() {
        let req = AgentSigningRequest {
            wallet_id: WalletId([0; 16]),
            agent_index: 1,
            jwt: "eyJ.secret.jwt",
            user_op_hash: B256::ZERO,
            account: Address::ZERO,
            expected_key: None,
        };
        assert!(!format!("{req:?}").contains("secret"));
    }

    /// A software owner key: its address and `r ‖ s ‖ v` (27/28) signatures over prehashes.
    struct Owner(k256::ecdsa::SigningKey);

    impl Owner {
        fn new(b: u8) -> Self {
            Self(k256::ecdsa::SigningKey::from_slice(&[b; 32]).unwrap())
        }
        fn address(&self) -> Address {
            let point = self.0.verifying_key().to_encoded_point(false);
            Address::from_raw_public_key(&point.as_bytes()[1..])
        }
        fn sign(&self, hash: B256) -> kms_proto::Signature65 {
            let (sig, recid) = self.0.sign_prehash_recoverable(hash.as_slice()).unwrap();
            let mut bytes = sig.to_bytes().to_vec();
            bytes.push(27 + recid.to_byte());
            kms_proto::Signature65 {
                bytes,
                address: self.address().into(),
            }
        }
    }

    fn body(user_op_hash: Option<[u8; 32]>) -> Eip7702DelegationBody {
        Eip7702DelegationBody {
            wallet_id: WalletId([1; 16]),
            chain_id: 31337,
            delegate: [0xDE; 20],
            nonce: 3,
            user_op_hash,
        }
    }

    fn auth_hash(b: &Eip7702DelegationBody) -> B256 {
        Authorization {
            chain_id: U256::from(b.chain_id),
            address: Address::from(b.delegate),
            nonce: b.nonce,
        }
        .signature_hash()
    }

    #[test]
    fn eip7702_answers_are_checked_against_the_owner_and_the_request() {
        let owner = Owner::new(7);
        let op = [0x42; 32];
        let b = body(Some(op));
        let good = Eip7702Signatures {
            authorization: owner.sign(auth_hash(&b)),
            user_op: Some(owner.sign(B256::from(op))),
        };
        let signed = check_eip7702(&b, good.clone(), owner.address()).unwrap();
        assert_eq!(
            signed.authorization.recover_authority().unwrap(),
            owner.address()
        );
        assert_eq!(signed.authorization.inner().nonce, 3);
        assert_eq!(
            signed.authorization.y_parity(),
            good.authorization.bytes[64] - 27
        );
        assert_eq!(
            signed.user_op_signature.as_ref().map(|b| b.to_vec()),
            Some(good.user_op.as_ref().unwrap().bytes.clone())
        );

        // Another owner expected.
        let other = Owner::new(8);
        assert!(matches!(
            check_eip7702(&b, good.clone(), other.address()),
            Err(OperatorSignerError::WrongSigner { .. })
        ));
        // An authorisation for another nonce (or delegate) than requested does not recover to
        // the owner.
        let mut moved = b.clone();
        moved.nonce = 4;
        assert!(check_eip7702(&moved, good.clone(), owner.address()).is_err());
        // Signed by another key while naming the owner.
        let mut forged = good.clone();
        forged.authorization.bytes = other.sign(auth_hash(&b)).bytes;
        assert!(check_eip7702(&b, forged, owner.address()).is_err());
        let mut forged = good.clone();
        forged.user_op.as_mut().unwrap().bytes = other.sign(B256::from(op)).bytes;
        assert!(check_eip7702(&b, forged, owner.address()).is_err());
        // A bad v.
        let mut bad_v = good.clone();
        bad_v.authorization.bytes[64] = 1;
        assert!(check_eip7702(&b, bad_v, owner.address()).is_err());
        // The userOp signature is there exactly when asked.
        let mut missing = good.clone();
        missing.user_op = None;
        assert!(check_eip7702(&b, missing, owner.address()).is_err());
        let unasked = body(None);
        let with_op = Eip7702Signatures {
            authorization: owner.sign(auth_hash(&unasked)),
            user_op: Some(owner.sign(B256::from(op))),
        };
        assert!(check_eip7702(&unasked, with_op.clone(), owner.address()).is_err());
        let without = Eip7702Signatures {
            user_op: None,
            ..with_op
        };
        let signed = check_eip7702(&unasked, without, owner.address()).unwrap();
        assert_eq!(signed.user_op_signature, None);
    }

    #[test]
    fn a_ta_failure_comes_back_out_of_a_signing_error() {
        let e = signer(TeeError::Ta(kms_proto::TaError::OperatorKeyMissing));
        assert!(matches!(
            tee_failure(e),
            Ok(TeeError::Ta(kms_proto::TaError::OperatorKeyMissing))
        ));
        let other = OperatorSignerError::BadSignature("x");
        assert!(tee_failure(other).is_err());
    }
}
