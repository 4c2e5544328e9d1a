//! Session grants: the owner registers an agent key's session on `SessionKeyValidator` (call
//! targets, spend cap, validity window, the operator key as revoker) through a UserOperation
//! from the owner's account, signed by the owner key in the TA; the background task settles the
//! grants not included within the wait ([`grant_tick`]).
//!
//! The ceremony binds the exact operation: [`begin_grant`] builds the UserOperation (deploying
//! the account in the same operation if it has no code yet) and keeps it with the ceremony; the
//! WebAuthn challenge commits to signing its userOpHash at the owner path. [`grant`] then checks
//! that the request asks for the same session, has the TA sign exactly that operation, records
//! the grant as a `pending` row of `agent_sessions`, submits it, and waits (bounded) for its
//! inclusion.
//!
//! A grant is one of the agent's sessions only once included with a successful execution
//! (`active`); a reverted one is `failed` (422 `grant_failed`), one refused by the bundler too.
//! One not included within `--receipt-wait-secs` stays `pending` and [`grant_tick`] settles it:
//! `active` when its receipt comes, `failed` when the owner's nonce passed without it or after
//! [`GRANT_DROP_AFTER_SECS`]. A grant on an account where the agent already has a session
//! supersedes it (the validator keeps one per agent and account); one on another account adds a
//! session. A grant that becomes active for an agent revoked in the meantime is revoked on chain
//! at once (the operator's `revokeSession`).
//!
//! The account is the owner's `AgentAccount` (of the factory and `salt`), or an existing ERC-7579
//! account the request names (`account`) whose signer is the wallet's owner key: its kind is
//! detected on chain (`supportsModule(1)`), and the owner's operation installs the validator as
//! its validator module when it is not installed yet, then grants, in one ERC-7579 batch. An
//! account that is not ERC-7579 is 422 `unsupported_account`; one that refuses the owner key's
//! signature (AA24: its signer is someone else) is 422 `not_account_signer`. The row records the
//! kind, and on an ERC-7579 account the agent's lane there, read once the grant is included.

use alloy::primitives::{Address, B256, U256};
use axum::http::StatusCode;
use kms_chain::account::AccountKind;
use kms_chain::client::{AccountCode, ChainError};
use kms_chain::nonce::NonceKey;
use kms_chain::operator::{owner_sign_body, OperatorSigner};
use kms_chain::session::{parse_selector, SessionGrant, TargetPermission, TokenLimit};
use kms_chain::userop::v0_7::{RpcUserOperation, UserOperation};
use kms_db::{AgentSession, AgentStatus, ChallengeKind, NewSession, SessionStatus};
use kms_proto::authz::AuthorizedBody;
use kms_proto::{Eip7702DelegationBody, WalletId};
use serde_json::{json, Value};

use crate::chain::{bundler_error, chain_error, ChainState};
use crate::error::{ApiError, ErrorCode};
use crate::extract::{checksummed, from_value, hex_fixed, uint128, uint256};
use crate::ops::{agent_key_id, AgentSessionRequest, TargetSpec};
use crate::revocation::{revoke_account, AccountOutcome, AccountRevocation, CompanionChain};
use crate::state::AppState;
use crate::webauthn::{BeginAuthenticationResponse, CarriesCeremony, Purpose};

/// A session request resolved against the database and the TA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantPlan {
    /// The wallet.
    pub wallet_id: WalletId,
    /// The agent index.
    pub agent_index: u32,
    /// `"{wallet}:{index}"`.
    pub key_id: String,
    /// The owner key's address (the account's owner).
    pub owner: Address,
    /// The account's CREATE2 salt (of the owner's `AgentAccount`).
    pub salt: U256,
    /// The existing ERC-7579 account named by the request, instead of the `AgentAccount`.
    pub account: Option<Address>,
    /// The session as sent to the validator.
    pub grant: SessionGrant,
}

impl GrantPlan {
    /// What the ceremony commits to besides the operation (compared at completion).
    pub fn canonical(&self) -> Value {
        json!({
            "keyId": self.key_id,
            "owner": self.owner,
            "salt": self.salt.to_string(),
            "account": self.account,
            "grant": self.grant,
        })
    }

    /// The kind of account the grant is on: an ERC-7579 account when the request names one.
    pub fn kind(&self) -> AccountKind {
        if self.account.is_some() {
            AccountKind::Erc7579
        } else {
            AccountKind::AgentAccount
        }
    }
}

/// Resolves a session request against the database (the agent, active; the owner) and the TA
/// (the operator key, the session's revoker).
pub async fn plan(s: &AppState, r: &AgentSessionRequest) -> Result<GrantPlan, ApiError> {
    let (wallet_id, agent_index) = agent_key_id(&r.key_id)?;
    let key_id = kms_proto::jwt::key_id(&wallet_id, agent_index);
    let wallet_str = wallet_id.to_uuid_string();
    let agent =
        s.db.get_agent(&wallet_str, agent_index)
            .await?
            .ok_or_else(|| ApiError::not_found(ErrorCode::AgentNotFound, "unknown agent key"))?;
    match agent.status {
        AgentStatus::Active => {}
        AgentStatus::Revoked => {
            return Err(ApiError::Conflict {
                code: ErrorCode::AgentRevoked,
                message: "the agent key is revoked; create a new agent".into(),
            })
        }
        AgentStatus::Pending | AgentStatus::Failed => {
            return Err(ApiError::not_found(
                ErrorCode::AgentNotFound,
                "unknown agent key",
            ))
        }
    }
    // An active agent has its address (activation records it): a row without one is corrupt.
    let agent_address = agent.agent_address.ok_or_else(|| {
        ApiError::from(kms_db::DbError::Invalid(format!(
            "active agent {key_id} has no address"
        )))
    })?;
    let wallet =
        s.db.get_wallet(&wallet_str)
            .await?
            .ok_or_else(|| ApiError::not_found(ErrorCode::KeyNotFound, "key not found"))?;
    let owner = wallet.address;
    let salt = match &r.salt {
        Some(v) => U256::from_be_bytes(uint256("salt", v)?),
        None => U256::ZERO,
    };
    let account = r
        .account
        .as_deref()
        .map(|a| hex_fixed::<20>("account", a).map(Address::from))
        .transpose()?;
    if account.is_some() && r.salt.is_some() {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "give `account` (an existing ERC-7579 account) or `salt` (the owner's AgentAccount), \
             not both",
        ));
    }
    let operator = s.operator().await?.address();
    let grant = SessionGrant {
        key: agent_address,
        targets: r
            .targets
            .iter()
            .map(target_permission)
            .collect::<Result<_, _>>()?,
        tokens: r
            .tokens
            .iter()
            .map(|t| {
                Ok(TokenLimit {
                    token: Address::from(hex_fixed::<20>("tokens[].token", &t.token)?),
                    cap: uint128("tokens[].cap", &t.cap)?,
                })
            })
            .collect::<Result<_, ApiError>>()?,
        spend_cap: uint128("spendCap", &r.spend_cap)?,
        gas_cap: uint128("gasCap", &r.gas_cap)?,
        paymaster: r
            .paymaster
            .as_deref()
            .map(|p| hex_fixed::<20>("paymaster", p).map(Address::from))
            .transpose()?,
        max_ops: r.max_ops.unwrap_or(0),
        period: r.period.unwrap_or(0),
        period_cap: match &r.period_cap {
            Some(v) => uint128("periodCap", v)?,
            None => 0,
        },
        valid_after: r.valid_after.unwrap_or(0),
        valid_until: r.valid_until.unwrap_or(0),
        revoker: operator,
    };
    Ok(GrantPlan {
        wallet_id,
        agent_index,
        key_id,
        owner,
        salt,
        account,
        grant,
    })
}

/// One `targets` entry of the request as the validator's permission.
fn target_permission(t: &TargetSpec) -> Result<TargetPermission, ApiError> {
    let (target, selectors, any_selector) = match t {
        TargetSpec::Address(a) => (a, &[][..], false),
        TargetSpec::Detailed {
            target,
            selectors,
            any_selector,
        } => (target, &selectors[..], *any_selector),
    };
    Ok(TargetPermission {
        target: Address::from(hex_fixed::<20>("targets[].target", target)?),
        any_selector,
        selectors: selectors
            .iter()
            .map(|s| {
                parse_selector(s).map_err(|e| ApiError::unprocessable(ErrorCode::InvalidSession, e))
            })
            .collect::<Result<_, _>>()?,
    })
}

/// `/BeginAuthentication` with Purpose `GrantSession`: builds the owner's operation and starts a
/// ceremony whose challenge commits to signing its userOpHash.
pub async fn begin_grant(
    s: &AppState,
    key_id: Option<&str>,
    payload: Option<Value>,
) -> Result<BeginAuthenticationResponse, ApiError> {
    let chain = s.chain()?;
    let mut payload = match payload {
        None | Some(Value::Null) => json!({}),
        Some(v @ Value::Object(_)) => v,
        Some(_) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidRequest,
                "Payload must be a JSON object",
            ))
        }
    };
    if let Some(k) = key_id {
        match payload.get("keyId") {
            Some(Value::String(existing)) if existing != k => {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidRequest,
                    "Payload.keyId differs from KeyId",
                ))
            }
            _ => payload["keyId"] = Value::String(k.to_owned()),
        }
    }
    let request: AgentSessionRequest = from_value(payload)?;
    let plan = plan(s, &request).await?;
    let grants = std::slice::from_ref(&plan.grant);
    let kind = plan.kind();
    // The owner's own EOA, without code yet: it delegates with EIP-7702 in this operation.
    let delegates = match plan.account {
        Some(account) if account == plan.owner => {
            chain
                .client
                .account_code(account)
                .await
                .map_err(|e| chain_error(e, Some(account)))?
                == AccountCode::Empty
        }
        _ => false,
    };
    let prepared = match plan.account {
        None => {
            chain
                .client
                .prepare_grants(plan.owner, plan.salt, grants)
                .await
        }
        Some(account) if delegates => chain
            .client
            .prepare_eip7702_grants(account, grants)
            .await
            .map(|(prepared, _)| prepared),
        // Detected on chain first: refused (422 unsupported_account) unless ERC-7579 (an EOA
        // delegated to an ERC-7579 implementation is one).
        Some(account) => chain.client.prepare_erc7579_grants(account, grants).await,
    }
    .map_err(|e| owner_op_error(e, &plan))?;
    let account = prepared.op.sender;
    let calls = match kind {
        AccountKind::AgentAccount => vec![plan.grant.owner_call(chain.client.validator())],
        // The module's installation (when missing) and the grant.
        AccountKind::Erc7579 => kind
            .decode_calls(&prepared.op.call_data)
            .unwrap_or_default(),
    };
    let digest = owner_ceremony_digest(plan.wallet_id, &prepared.op, prepared.user_op_hash)?;
    // Everything the owner approves, so that a client can recompute the userOpHash from the
    // operation (EntryPoint, chain id) and show what it does: the account's calls (the grant,
    // decoded too), nonce, gas limits, fees and the most it can cost.
    let summary = checksummed(json!({
        "userOpHash": prepared.user_op_hash,
        "account": account,
        "deploysAccount": prepared.deploys_account,
        "accountKind": kind.as_str(),
        "entryPoint": chain.client.entry_point().address,
        "entryPointVersion": chain.client.entry_point().version.to_string(),
        "chainId": chain.client.chain_id(),
        "userOp": prepared.op.to_rpc(),
        "calls": calls,
        "maxGasCost": prepared.op.max_gas_cost().to_string(),
        "session": plan.grant,
        // The EIP-7702 delegation the passkey also approves (its signature in `userOp` is a
        // placeholder until the TA signs it).
        "eip7702Authorization": prepared.op.eip7702_auth.as_ref().map(|a| json!({
            "chainId": a.chain_id.to_string(),
            "delegate": a.address,
            "nonce": a.nonce,
        })),
    }));
    let metadata = json!({
        "plan": plan.canonical(),
        "userOp": prepared.op.to_rpc(),
        "userOpHash": prepared.user_op_hash,
        "deploysAccount": prepared.deploys_account,
    });
    let mut resp = s
        .begin_authentication(
            &plan.wallet_id,
            Purpose::GrantSession,
            &digest,
            Some(metadata),
        )
        .await?;
    resp.user_operation = Some(summary);
    Ok(resp)
}

/// The TA command body of an operation that delegates the owner's EOA with EIP-7702 (the
/// authorisation it carries, and `user_op_hash` signed by the same owner key in the same
/// command); `None` for any other operation.
fn delegation_body(
    wallet_id: WalletId,
    op: &UserOperation,
    user_op_hash: B256,
) -> Result<Option<Eip7702DelegationBody>, ApiError> {
    let Some(auth) = op.eip7702_auth.as_ref() else {
        return Ok(None);
    };
    let chain_id = u64::try_from(auth.chain_id)
        .map_err(|_| ApiError::internal("authorisation chain id out of range"))?;
    Ok(Some(Eip7702DelegationBody {
        wallet_id,
        chain_id,
        delegate: auth.address.into_array(),
        nonce: auth.nonce,
        user_op_hash: Some(user_op_hash.0),
    }))
}

/// The payload digest the owner's ceremony binds for `op`: the EIP-7702 delegation and the
/// operation when `op` delegates the EOA ([`delegation_body`]), else the owner's signature of
/// the userOpHash ([`owner_sign_body`]).
fn owner_ceremony_digest(
    wallet_id: WalletId,
    op: &UserOperation,
    user_op_hash: B256,
) -> Result<[u8; 32], ApiError> {
    Ok(match delegation_body(wallet_id, op, user_op_hash)? {
        Some(body) => body.payload_digest(),
        None => owner_sign_body(wallet_id, user_op_hash).payload_digest(),
    })
}

/// A failure to build or submit the owner's operation as HTTP: on an ERC-7579 account, a refusal
/// of the owner key's signature (AA24, or the bundler's signature-failure code) means the
/// account's signer is not this wallet's owner key (422 `not_account_signer`); else
/// [`chain_error`].
fn owner_op_error(e: ChainError, plan: &GrantPlan) -> ApiError {
    if let (Some(account), ChainError::Bundler(b)) = (plan.account, &e) {
        if b.aa_code() == Some("AA24") || b.rpc_code() == Some(-32507) {
            return ApiError::detailed(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::NotAccountSigner,
                format!(
                    "account {account} refuses the signature of this wallet's owner key {}: its \
                     signer is not the owner key ({b})",
                    plan.owner
                ),
                json!({"account": account, "owner": plan.owner, "aaCode": b.aa_code(),
                    "rpcCode": b.rpc_code()}),
            );
        }
    }
    chain_error(e, plan.account)
}

/// The operation kept with a `GrantSession` ceremony.
pub struct StoredGrant {
    /// The owner's operation, unsigned.
    pub op: UserOperation,
    /// Its hash.
    pub user_op_hash: B256,
    /// Whether it deploys the account.
    pub deploys_account: bool,
}

/// The operation kept with the ceremony `metadata`, checked to be for `plan` and to hash to its
/// recorded userOpHash.
fn stored_grant(
    s: &AppState,
    plan: &GrantPlan,
    metadata: Option<&str>,
) -> Result<StoredGrant, ApiError> {
    let chain = s.chain()?;
    let meta: Value = metadata
        .and_then(|m| serde_json::from_str(m).ok())
        .ok_or_else(|| ApiError::internal("GrantSession ceremony without its operation"))?;
    if meta["plan"] != plan.canonical() {
        return Err(ApiError::forbidden(
            ErrorCode::PayloadMismatch,
            "the ceremony was started for a different session: start /BeginAuthentication with \
             exactly this request's fields",
        ));
    }
    let rpc: RpcUserOperation = serde_json::from_value(meta["userOp"].clone())
        .map_err(|e| ApiError::internal(format!("stored operation: {e}")))?;
    let op = UserOperation::try_from(rpc).map_err(|e| ApiError::internal(e.to_string()))?;
    let user_op_hash = chain
        .client
        .entry_point()
        .user_op_hash(&op, chain.client.chain_id())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let stored_hash: Option<B256> = serde_json::from_value(meta["userOpHash"].clone()).ok();
    if stored_hash != Some(user_op_hash) {
        return Err(ApiError::internal(
            "stored operation does not hash to its userOpHash",
        ));
    }
    Ok(StoredGrant {
        op,
        user_op_hash,
        deploys_account: meta["deploysAccount"].as_bool().unwrap_or(false),
    })
}

/// Whether a grant's operation was included within the wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantOutcome {
    /// Included with a successful execution: the session is active.
    Included,
    /// Not included within `--receipt-wait-secs`: recorded `pending`, settled by
    /// [`grant_tick`].
    Pending,
}

impl GrantOutcome {
    /// As answered (`included`, `pending`).
    pub fn as_str(self) -> &'static str {
        match self {
            GrantOutcome::Included => "included",
            GrantOutcome::Pending => "pending",
        }
    }
}

/// What a grant came to.
pub struct Granted {
    /// The owner's operation.
    pub stored: StoredGrant,
    /// The account the session is on.
    pub account: Address,
    /// Included (the session is active), or pending (not included within the wait).
    pub status: GrantOutcome,
    /// The bundle transaction, once included.
    pub transaction_hash: Option<String>,
}

/// Completes the owner's `GrantSession` ceremony `r` for `plan`: checks that it was started for
/// this very session, has the TA sign the operation kept with it (the owner key, authorised by
/// the passkey), records the grant `pending`, submits it and waits (bounded by
/// `--receipt-wait-secs`) for its inclusion. `user_op_hash` learns the operation's hash as soon
/// as it is known (for the audit trail).
pub async fn grant(
    s: &AppState,
    chain: &ChainState,
    plan: &GrantPlan,
    r: &AgentSessionRequest,
    user_op_hash: &mut Option<B256>,
) -> Result<Granted, ApiError> {
    let Some(ceremony) = r.ceremony() else {
        return Err(crate::webauthn::ceremony_required(
            Purpose::GrantSession,
            r.legacy_assertion(),
            "agent keyId",
        ));
    };
    let wallet_str = plan.wallet_id.to_uuid_string();
    let peeked =
        s.db.peek_challenge(
            &ceremony.challenge_id,
            ChallengeKind::Authentication,
            Some(&wallet_str),
            Purpose::GrantSession.as_str(),
            kms_db::now_secs(),
        )
        .await??;
    let stored = stored_grant(s, plan, peeked.metadata_json.as_deref())?;
    *user_op_hash = Some(stored.user_op_hash);
    let digest = owner_ceremony_digest(plan.wallet_id, &stored.op, stored.user_op_hash)?;
    let assertion = s
        .finish_authentication(
            &plan.wallet_id,
            Purpose::GrantSession,
            &digest,
            r,
            "agent keyId",
        )
        .await?;
    let op = match delegation_body(plan.wallet_id, &stored.op, stored.user_op_hash)? {
        None => {
            let signature = s
                .tee
                .sign_owner_user_op(plan.wallet_id, stored.user_op_hash, assertion, plan.owner)
                .await?;
            stored.op.clone().with_signature(signature)
        }
        Some(body) => {
            let signed = s
                .tee
                .sign_eip7702_delegation(body, assertion, plan.owner)
                .await?;
            let signature = signed
                .user_op_signature
                .ok_or_else(|| ApiError::internal("the TA signed no operation"))?;
            stored
                .op
                .clone()
                .with_eip7702(signed.authorization)
                .with_signature(signature)
        }
    };
    let account = op.sender;
    let g = &plan.grant;
    let addresses: Vec<String> = g
        .targets
        .iter()
        .map(|t| t.target)
        .chain(g.tokens.iter().map(|l| l.token))
        .map(|a| a.to_string())
        .collect();
    let targets_json =
        serde_json::to_string(&addresses).map_err(|e| ApiError::internal(e.to_string()))?;
    let grant_json = serde_json::to_string(g).map_err(|e| ApiError::internal(e.to_string()))?;
    let op_json =
        serde_json::to_string(&op.to_rpc()).map_err(|e| ApiError::internal(e.to_string()))?;
    let hash_str = format!("{:#x}", stored.user_op_hash);
    // Recorded `pending` before it leaves: a grant is one of the agent's sessions only once
    // it is included (below, or the background task), and one that never is replaces
    // nothing.
    let session_id =
        s.db.insert_session(&NewSession {
            wallet_id: &wallet_str,
            agent_index: plan.agent_index,
            account,
            account_kind: match plan.kind() {
                AccountKind::AgentAccount => kms_db::AccountKind::AgentAccount,
                AccountKind::Erc7579 => kms_db::AccountKind::Erc7579,
            },
            targets_json: &targets_json,
            spend_cap: U256::from(g.spend_cap),
            valid_after: i64::try_from(g.valid_after).unwrap_or(i64::MAX),
            valid_until: i64::try_from(g.valid_until).unwrap_or(i64::MAX),
            revoker: Some(g.revoker),
            grant_json: Some(&grant_json),
            user_op_hash: Some(&hash_str),
            user_op_json: Some(&op_json),
            now: kms_db::now_secs(),
        })
        .await?;
    match chain.client.submit(&op).await {
        Ok(_) => {}
        // It may have reached the bundler: the row stays pending, and the background task
        // settles it (its receipt, or the owner's nonce passing without it).
        Err(kms_chain::client::ChainError::Bundler(e)) if e.is_transient() => {
            return Err(bundler_error(&e, Some(account)))
        }
        Err(e) => {
            let err = owner_op_error(e, plan);
            s.db.fail_session(
                session_id,
                &format!("refused: {err}"),
                None,
                kms_db::now_secs(),
            )
            .await?;
            return Err(err);
        }
    }
    s.metrics.count_signature("owner_userop");
    let (status, tx) = match chain
        .client
        .wait_for_receipt(
            &chain.client.expected_receipt(&op, stored.user_op_hash),
            chain.receipt_wait,
        )
        .await
    {
        Ok(receipt) if receipt.success => {
            let tx = format!("{:#x}", receipt.receipt.transaction_hash);
            activated(s, session_id, &tx).await?;
            (GrantOutcome::Included, Some(tx))
        }
        Ok(receipt) => {
            s.db.fail_session(
                session_id,
                "the owner's operation was included but its execution reverted",
                Some(&format!("{:#x}", receipt.receipt.transaction_hash)),
                kms_db::now_secs(),
            )
            .await?;
            return Err(ApiError::detailed(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::GrantFailed,
                "the owner's operation was included but its execution failed",
                json!({"userOpHash": stored.user_op_hash, "transactionHash": receipt.receipt.transaction_hash, "reason": receipt.reason}),
            ));
        }
        // Not included within the wait: pending, settled later by the background task.
        Err(kms_chain::client::ChainError::Bundler(
            kms_chain::bundler::BundlerError::ReceiptTimeout { .. },
        )) => (GrantOutcome::Pending, None),
        Err(kms_chain::client::ChainError::Bundler(e)) => {
            return Err(bundler_error(&e, Some(account)))
        }
        Err(e) => return Err(chain_error(e, Some(account))),
    };
    Ok(Granted {
        stored,
        account,
        status,
        transaction_hash: tx,
    })
}

/// A pending grant with no receipt this long after it was recorded is given up as dropped
/// (`failed`), unless the owner's nonce passed without it first (then at once).
pub const GRANT_DROP_AFTER_SECS: i64 = 3600;

/// Most pending grants one tick of the background task looks at.
const GRANTS_PER_TICK: u32 = 100;

/// A grant was included with a successful execution: its row becomes `active` (superseding the
/// agent's earlier session on the same account), and on an ERC-7579 account the agent's lane
/// there is read and recorded (if the node cannot be read now, the agent's first intent reads
/// it). If the agent was revoked in the meantime, the new session is revoked on chain at once.
async fn activated(s: &AppState, session_id: i64, tx: &str) -> Result<(), ApiError> {
    if !s
        .db
        .activate_session(
            session_id,
            Some(tx).filter(|t| !t.is_empty()),
            kms_db::now_secs(),
        )
        .await?
    {
        return Ok(());
    }
    let Some(session) = s.db.get_session(session_id).await? else {
        return Ok(());
    };
    let agent =
        s.db.get_agent(&session.wallet_id, session.agent_index)
            .await?;
    if session.account_kind == kms_db::AccountKind::Erc7579 && session.lane.is_none() {
        if let (Some(chain), Some(key)) = (
            s.chain.as_ref(),
            agent.as_ref().and_then(|a| a.agent_address),
        ) {
            match chain.client.node().session_lane(session.account, key).await {
                Ok(Some(lane)) => {
                    s.db.set_session_lane(session.id, lane, kms_db::now_secs())
                        .await?;
                }
                Ok(None) => tracing::warn!(key_id = %session.key_id(), account = %session.account,
                    "an included grant left the agent key no lane on the account"),
                Err(e) => tracing::warn!(key_id = %session.key_id(), account = %session.account,
                    error = %e, "reading the agent's lane failed: its first intent reads it"),
            }
        }
    }
    let Some(agent) = agent.filter(|a| a.status == AgentStatus::Revoked) else {
        return Ok(());
    };
    let key_id = session.key_id();
    tracing::warn!(key_id = %key_id, account = %session.account,
        "a grant was included after its agent was revoked: revoking the session on chain");
    let outcome = match (
        crate::revocation::ChainAccess::open(&CompanionChain(s)).await,
        agent.agent_address,
    ) {
        (Ok(side), Some(key)) => {
            revoke_account(&s.db, &side, key, session.account, &[session.id]).await
        }
        (Err(f), _) => AccountOutcome::Failed(f),
        (_, None) => AccountOutcome::Failed(crate::revocation::RevokeFailure::BadRecord),
    };
    if let AccountOutcome::Failed(f) = &outcome {
        let _ =
            s.db.session_revoke_failed(session.id, &f.to_string(), kms_db::now_secs())
                .await;
        tracing::error!(key_id = %key_id, account = %session.account, error = %f,
            "the session of a revoked agent could not be revoked on chain: revoke the agent again");
    }
    let revocation = AccountRevocation {
        account: session.account,
        outcome,
        sessions: vec![session.id],
        pending_grant: false,
    };
    crate::service::credentials::audit_account_revocation(s, &key_id, &revocation).await;
    Ok(())
}

/// A grant's operation was included: `active` when its execution succeeded, `failed` when it
/// reverted.
async fn settled(s: &AppState, id: i64, success: bool, tx: &str) -> Result<(), ApiError> {
    if success {
        activated(s, id, tx).await
    } else {
        s.db.fail_session(
            id,
            "the owner's operation was included but its execution reverted",
            Some(tx).filter(|t| !t.is_empty()),
            kms_db::now_secs(),
        )
        .await?;
        Ok(())
    }
}

/// Settles one pending grant from the chain: `active` when its receipt (from the bundler, or,
/// once the owner's nonce passed, the EntryPoint's `UserOperationEvent` read from the node) shows
/// a successful execution, `failed` when it shows a reverted one, when the owner's nonce passed
/// without it (dropped: another operation took its nonce), or after [`GRANT_DROP_AFTER_SECS`]. Returns the
/// row's status afterwards.
pub async fn settle_grant(
    s: &AppState,
    chain: &ChainState,
    grant: &AgentSession,
) -> Result<SessionStatus, ApiError> {
    if grant.status != SessionStatus::Pending {
        return Ok(grant.status);
    }
    let now = kms_db::now_secs();
    let op = grant
        .user_op_json
        .as_deref()
        .and_then(|j| serde_json::from_str::<RpcUserOperation>(j).ok())
        .and_then(|r| UserOperation::try_from(r).ok());
    let hash = grant
        .user_op_hash
        .as_deref()
        .and_then(|h| h.parse::<B256>().ok());
    let (Some(op), Some(hash)) = (op, hash) else {
        s.db.fail_session(grant.id, "no readable operation recorded", None, now)
            .await?;
        return Ok(SessionStatus::Failed);
    };
    // The nonce first: if it had passed before the receipt lookup found nothing, the operation
    // can no longer be included.
    let (key, _) = NonceKey::split(op.nonce);
    let passed = match chain.client.nonce(op.sender, key).await {
        Ok(on_chain) => on_chain > op.nonce,
        Err(e) => {
            tracing::debug!(error = %e, "reading the owner's nonce failed");
            return Ok(SessionStatus::Pending);
        }
    };
    match chain
        .client
        .receipt(&chain.client.expected_receipt(&op, hash))
        .await
    {
        Ok(Some(receipt)) => {
            let tx = format!("{:#x}", receipt.receipt.transaction_hash);
            settled(s, grant.id, receipt.success, &tx).await?;
        }
        Ok(None) if passed => {
            // The bundler may not know (or not yet) the receipt of an operation another bundler
            // included: the EntryPoint's events, read from the node, decide.
            match chain
                .client
                .user_operation_events(op.sender, Some(hash), None)
                .await
            {
                Ok(events) => match events
                    .iter()
                    .find(|e| e.user_op_hash == hash && e.nonce == op.nonce)
                {
                    Some(e) => {
                        let tx = e
                            .transaction_hash
                            .map(|t| format!("{t:#x}"))
                            .unwrap_or_default();
                        settled(s, grant.id, e.success, &tx).await?;
                    }
                    None => {
                        s.db.fail_session(
                            grant.id,
                            &format!(
                                "dropped: the owner's nonce {:#x} was used by another operation",
                                op.nonce
                            ),
                            None,
                            now,
                        )
                        .await?;
                    }
                },
                Err(e) => {
                    tracing::debug!(error = %e, "reading the grant's UserOperationEvent failed")
                }
            }
        }
        Ok(None) if now - grant.created_at >= GRANT_DROP_AFTER_SECS => {
            s.db.fail_session(
                grant.id,
                &format!(
                    "dropped: not included within {GRANT_DROP_AFTER_SECS} s (grant again: the \
                     new operation takes its nonce, so this one can never be included)"
                ),
                None,
                now,
            )
            .await?;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::debug!(error = %e, "grant receipt lookup failed");
        }
    }
    Ok(s.db
        .get_session(grant.id)
        .await?
        .map_or(SessionStatus::Pending, |g| g.status))
}

/// One tick of the grant task: settles up to 100 pending grants ([`settle_grant`]).
pub async fn grant_tick(s: &AppState) {
    let Some(chain) = s.chain.as_ref() else {
        return;
    };
    let pending = match s.db.pending_sessions(GRANTS_PER_TICK).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "reading pending grants failed");
            return;
        }
    };
    for grant in pending {
        match settle_grant(s, chain, &grant).await {
            Ok(SessionStatus::Pending) => {}
            Ok(status) => tracing::info!(key_id = %grant.key_id(), account = %grant.account,
                user_op_hash = ?grant.user_op_hash, %status, "grant settled"),
            Err(e) => tracing::warn!(session = grant.id, error = %e, "grant settlement failed"),
        }
    }
}
