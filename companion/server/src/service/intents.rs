//! An agent's intent, from its calls to the bundler and on to its receipt:
//! [`IntentPipeline::submit`] and [`IntentPipeline::status`].
//!
//! An intent is a list of calls the agent wants its session's account to make. The pipeline
//! checks it against the on-chain session — every rule of `SessionKeyValidator`: targets and
//! their functions, token caps, the value cap, the usage limit, the validity window (with the
//! bundler's margin), each budget net of what this agent's intents still in flight will charge —
//! and refuses what the chain would refuse ([`IntentError::Refused`]); otherwise it builds the
//! UserOperation (the agent's own nonce key, gas estimated with the 106-byte stub), checks its
//! maximum gas cost against the gas budget, has the TA sign it with the presented credential
//! (the TA checks the JWT), commits the signature's audit event, records the intent, submits
//! it, and returns the recorded intent. Different agents proceed in parallel.
//!
//! # Several intents of one agent in flight
//!
//! One agent's intents are built one after another (a lock per lane: account and nonce key,
//! held from the idempotency check to the submission), but none waits for the previous one's
//! inclusion. Each takes the next sequence of the agent's lane: the one after the highest of its
//! open intents there that the chain has not passed, else the chain's
//! ([`MAX_IN_FLIGHT_PER_LANE`] at most ahead of it, else [`IntentError::TooManyInFlight`]). The
//! chain's nonce is read at the block the session was read at, so every open operation is counted
//! once: in the session's figures when the chain has passed it, as in flight otherwise (those
//! ahead of the chain's nonce included); the budget pre-check refuses the intent that would take
//! the open ones together past a cap. The open intents are read from the database before the
//! chain: one included and marked settled between the two reads would otherwise be in neither.
//! A node can answer a read at the head's number from the block it is mining (anvil writes the
//! new block's state before it moves its head; a read by block hash does the same), so the
//! session and the nonce read together at one block may come from two blocks, and an operation
//! being included would count both as spent and in flight. The two are therefore read twice at
//! the same block and used when both readings agree, else read again from a fresh head
//! ([`CONSISTENT_READ_TRIES`] times at most, then the intent fails as the node's error).
//!
//! The bundler (Alto) estimates and validates an operation against the chain plus the earlier
//! operations of its sender and key still in its mempool (simulated first). So the sequence after
//! an accepted operation is taken, except for the moment that operation is out of the mempool
//! being bundled and not on chain yet: then both the estimate and the submission are refused with
//! AA25, and are retried (bounded) while the previous operation is `pending`
//! (`IntentPipeline::prepare`, `IntentPipeline::send`). An operation after one the bundler
//! never got (`signed`, not accepted) cannot be estimated or accepted at all until it is. The
//! estimate after earlier operations sees their validation's warm storage: the
//! `verificationGasLimit` of such an operation is doubled ([`QUEUED_VERIFICATION_FACTOR`]),
//! or the bundler refuses it (AA26) once the earlier ones are on chain.
//!
//! The bundler's gas estimate (the longest chain round trip of an intent) does not wait for the
//! reads when this process knows which nonce to expect: the one after the last operation it
//! submitted in the lane (`NonceTracker`). That estimate runs beside the session, nonce and
//! database reads, and is used only if the reads give that very nonce; otherwise (an operation of
//! the lane sent past this companion, or by another one, a refused predecessor, a new budget
//! period, a failed estimate) the operation is estimated again for the nonce the reads gave. Every
//! check runs on the reads as before, and nothing is signed before them; in the `Server-Timing`
//! header the overlapped estimate falls in `nonce`, and `prepare` is then only the build.
//!
//! # Gas limits reused per call shape
//!
//! Most intents need no estimate at all: the gas limits of the last operation of the same call
//! shape (account, agent, and per call the target, selector, whether value is sent and the
//! calldata's length: [`kms_chain::gas_reuse::CallShape`]) built from a bundler's estimate, in
//! the same budget period, are reused, buffers included. Beside the reads, instead of the
//! estimate, the node runs the operation's execution as the EntryPoint would with the reused
//! `callGasLimit` (`ChainClient::execution_fits`, an `eth_call` from the EntryPoint) and the
//! fees are read (those read in the last [`FEES_REUSE_FOR`], else the bundler's gas price); after
//! the reads and checks the operation is assembled locally. Each shortcut falls back:
//!
//! - the execution does not fit (reverts or runs out of gas): the shape's limits are dropped and
//!   the operation is estimated as above — the bundler checks only validation on submission, so
//!   an execution that no longer fits would otherwise revert on chain at the agent's cost;
//! - the bundler refuses the operation for its gas or fees
//!   ([`kms_chain::gas_reuse::is_gas_refusal`]: preVerificationGas, fees, AA26/AA40/AA13): that
//!   record stays refused (`failed`, judged on evidence like any refusal), the shape's limits are
//!   dropped, and the operation is estimated, built, signed (with the credential still in hand)
//!   and recorded again for the same nonce, once;
//! - an operation behind open ones of its lane (past the chain's nonce) is estimated: the
//!   bundler's estimate runs its execution after theirs, the node's check only on the chain as it
//!   is (see `reuse_applies`);
//! - everything else is unchanged: the nonce comes from the reads (the limits do not depend on
//!   it), the session and budget are read and pre-checked as before (the gas rule with the reused
//!   limits' maximum cost), and the in-flight logic (AA25 retries, the raised
//!   `verificationGasLimit` after earlier open operations: the limits kept are those signed, so
//!   already raised when they were estimated ahead of the chain, and a cold estimate otherwise)
//!   holds.
//!
//! Not for a request with an `Idempotency-Key`: a refusal of reused limits is answered with a
//! second record, and the key names one. Such a request is estimated as before.
//!
//! When an operation will never use its sequence (refused, dropped, cancelled), the ones after it
//! in the lane can never validate. The companion cannot re-sign them (that takes the agent's JWT,
//! which it does not keep): the lifecycle fails each of them once the bundler no longer holds it,
//! status `failed`, reason `predecessor_failed` ([`crate::lifecycle`]), and the agent submits
//! them again; the lane's next intent then takes the chain's nonce again. A sequence below an open
//! intent is never reused, so an open operation never executes in an order it was not built for.
//!
//! `Idempotency-Key`: a retry with the same key returns the recorded intent instead of
//! submitting again; the same key with different calls is refused
//! ([`IntentError::IdempotencyKeyReused`]). Nothing is ever re-built for an intent: a transient
//! bundler failure leaves the signed operation recorded (`signed`), and the background task
//! re-submits exactly it. A bundler's error is judged only on evidence ([`crate::lifecycle`]).
//!
//! The session's account kind (recorded at grant) decides the rest: on `AgentAccount` the
//! validator's own path, the agent's key address as its nonce key and `execute`/`executeBatch`
//! callData; on an ERC-7579 account the module path (the module's state read with the session),
//! the nonce key `validator ‖ lane ‖ period` of the agent's lane there, and ERC-7579
//! `execute(mode, executionCalldata)` callData. An intent that names no account uses the
//! agent's one active session; an agent with sessions on several accounts must name one
//! ([`IntentError::AccountRequired`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U256};
use axum::http::HeaderValue;
use kms_chain::account::{AccountKind, Call};
use kms_chain::client::{ChainError, Erc7579Error};
use kms_chain::gas_reuse::{is_gas_refusal, CallShape, Reusable};
use kms_chain::nonce::{AgentLane, NonceKey};
use kms_chain::session::{precheck_on, InFlight, Refusal, SessionSnapshot};
use kms_chain::userop::v0_7::GasLimits;
use kms_db::{AgentSession, DbError, Intent, IntentReason, IntentStatus, NewIntent};
use serde_json::{json, Value};

use crate::audit::{AuditMode, Audited};
use crate::chain::ChainState;
use crate::error::{ApiError, ErrorCode};
use crate::lifecycle;
use crate::service::credentials::AgentAuth;
use crate::state::AppState;
use crate::tee::AgentSigningRequest;

/// How long the background task leaves a new intent to the request that records it (seconds):
/// the request submits it and schedules what follows; only a request that never got that far
/// (a crash) leaves it to the task.
pub const RESUBMIT_AFTER_SECS: i64 = 30;

/// Most operations of one agent lane (account, nonce key) open at once: a new intent whose
/// sequence would be this many past the chain's is refused ([`IntentError::TooManyInFlight`]).
/// Bundlers bound how far ahead of the chain they accept a sequence (Alto: 10).
pub const MAX_IN_FLIGHT_PER_LANE: u64 = 8;

/// How long an estimate or a submission refused with AA25 is retried while the previous
/// operation of the agent's lane is with the bundler (see `IntentPipeline::prepare`).
pub const AA25_RETRY_FOR: Duration = Duration::from_secs(5);

/// How often such a refusal is retried.
pub const AA25_RETRY_EVERY: Duration = Duration::from_millis(50);

/// By how much the `verificationGasLimit` of an operation estimated after earlier open ones of
/// its lane is multiplied (see `IntentPipeline::prepare`).
pub const QUEUED_VERIFICATION_FACTOR: u128 = 2;

/// How long the fees last read are reused for an operation built with reused gas limits (see
/// the module docs); a price the bundler no longer takes is answered like reused gas it refuses.
pub const FEES_REUSE_FOR: Duration = Duration::from_secs(1);

/// How many times the session and the lane's nonce are read from a fresh head (each time twice at
/// its block) before an intent fails for want of two readings that agree (see the module docs).
pub const CONSISTENT_READ_TRIES: u32 = 3;

/// Why an intent was not accepted (each maps to one HTTP answer, in [`crate::error`]).
#[derive(Debug, thiserror::Error)]
pub enum IntentError {
    /// The agent has no active session on the account asked for (or on any account).
    #[error("the agent has no active session on the account")]
    NoSession {
        /// The agent key.
        agent: Address,
        /// The account asked for, if any.
        requested: Option<Address>,
        /// The accounts of its active sessions.
        accounts: Vec<Address>,
    },
    /// The agent holds active sessions on several accounts and the intent names none.
    #[error("the agent has sessions on several accounts: name one")]
    AccountRequired {
        /// The agent key.
        agent: Address,
        /// The accounts of its active sessions, most recently activated first.
        accounts: Vec<Address>,
    },
    /// The account checks sessions with another validator than the companion's (an account of
    /// an earlier factory): its sessions are not used.
    #[error(
        "account {account} checks sessions with validator {used}, not this companion's \
         {validator}"
    )]
    OutdatedAccount {
        /// The account.
        account: Address,
        /// The agent key.
        agent: Address,
        /// The validator the account uses.
        used: Address,
        /// The companion's validator.
        validator: Address,
    },
    /// The session's rules refuse the intent (what the chain would refuse).
    #[error(transparent)]
    Refused(Box<Refusal>),
    /// What remains of the gas budget is less than even the bundler's gas estimation charges.
    #[error("the gas budget left is below what the bundler's gas estimation charges")]
    GasBudgetExhausted {
        /// Left net of what is in flight.
        available: U256,
        /// Left on chain.
        remaining: U256,
        /// Charged by intents in flight.
        in_flight: U256,
    },
    /// An `Idempotency-Key` reused for different calls.
    #[error("Idempotency-Key {key:?} was used for another intent ({user_op_hash})")]
    IdempotencyKeyReused {
        /// The key.
        key: String,
        /// The intent recorded under it.
        user_op_hash: String,
    },
    /// The chain (node or bundler) failed or refused before anything was signed.
    #[error("{error}")]
    Chain {
        /// The error.
        error: Box<ChainError>,
        /// The account.
        account: Address,
    },
    /// The signed, recorded operation is not with the bundler: a verdict on it, or no verdict
    /// (then the operation is kept and re-submitted).
    #[error("{error}")]
    NotAccepted {
        /// The bundler's error.
        error: Box<ChainError>,
        /// The account.
        account: Address,
        /// The operation.
        user_op_hash: B256,
        /// The intent's status after the lookups.
        status: IntentStatus,
        /// Why.
        reason: IntentReason,
    },
    /// The agent already has [`MAX_IN_FLIGHT_PER_LANE`] operations open in its lane on the
    /// account: it waits for one of them to settle.
    #[error("{in_flight} operations of this agent are open on {account} (at most {max})")]
    TooManyInFlight {
        /// The account.
        account: Address,
        /// Its open operations ahead of the chain's nonce.
        in_flight: u64,
        /// The most allowed.
        max: u64,
    },
    /// No intent of this agent has this hash.
    #[error("no intent of this agent has this userOpHash")]
    NotFound,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Another layer's failure, already an HTTP answer (the TA, the audit log, the lifecycle's
    /// lookups).
    #[error(transparent)]
    Other(#[from] ApiError),
}

impl IntentError {
    fn chain(error: ChainError, account: Address) -> Self {
        IntentError::Chain {
            error: Box::new(error),
            account,
        }
    }
}

impl From<crate::tee::SignError> for IntentError {
    fn from(e: crate::tee::SignError) -> Self {
        IntentError::Other(e.into())
    }
}

/// A new intent: the calls, the account asked for (if any), the `Idempotency-Key` (if any).
#[derive(Debug)]
pub struct Submission {
    /// The calls, in order.
    pub calls: Vec<Call>,
    /// The account to act from [default: the account of the agent's one active session; required
    /// when it has several].
    pub account: Option<Address>,
    /// The idempotency key.
    pub idempotency_key: Option<String>,
}

/// What a submission came to: the intent (or the error), and the operation's hash once known.
#[derive(Debug)]
pub struct Submitted {
    /// The recorded intent, or why not.
    pub result: Result<Intent, IntentError>,
    /// The userOpHash, once the operation was built (for the audit trail of a refusal).
    pub user_op_hash: Option<B256>,
}

/// What [`IntentPipeline::reads`] found.
struct Reads {
    /// The time the session was checked against (seconds).
    now: u64,
    /// The session.
    snapshot: SessionSnapshot,
    /// The validator's path for the account's kind.
    path: kms_chain::session::ValidatorPath,
    /// The budget period the operation is in (0 without periods).
    period_index: u64,
    /// The chain's next nonce of the lane at the snapshot's block.
    chain_nonce: U256,
    /// The agent's open intents.
    open: Vec<Intent>,
    /// The operation's nonce.
    nonce: U256,
    /// How many sequences it is past the chain's.
    ahead: u64,
    /// Whether the operation just before it is with the bundler.
    after_pending: bool,
}

/// What [`IntentPipeline::chain_view`] read at one block.
#[derive(Debug, Clone, PartialEq)]
struct ChainView {
    /// The session.
    snapshot: SessionSnapshot,
    /// The validator's path for the account's kind.
    path: kms_chain::session::ValidatorPath,
    /// The budget period the operation is in (0 without periods).
    period_index: u64,
    /// The chain's next nonce of the period's lane at the snapshot's block.
    chain_nonce: U256,
}

/// Reads with `read` at the latest block (`read(None)`), then again at the block of that reading
/// (`read(Some(block_of(&first)))`), and returns the reading when the two agree; else starts again
/// from the latest block, `tries` times at most, then fails with `unstable()`. A node answers a
/// read at its head's number from the block it is mining for a moment (anvil writes the new
/// block's state before it moves its head), so two values read together at one block can come
/// from two blocks. Readings at a block go from that block to the next one's state for a moment
/// and back, so two consecutive readings that agree are taken as of one block (measured on anvil
/// mining at full speed: 340 of 1000 pairs read once at one block disagreed, none read this way).
async fn consistent<T, E, F, Fut>(
    tries: u32,
    mut read: F,
    block_of: impl Fn(&T) -> (u64, u64),
    unstable: impl FnOnce() -> E,
) -> Result<T, E>
where
    T: PartialEq,
    F: FnMut(Option<(u64, u64)>) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    for _ in 0..tries {
        let first = read(None).await?;
        let again = read(Some(block_of(&first))).await?;
        if first == again {
            return Ok(first);
        }
    }
    Err(unstable())
}

/// The pipeline of one companion: its state and chain.
#[derive(Clone, Copy)]
pub struct IntentPipeline<'a> {
    s: &'a AppState,
    chain: &'a ChainState,
}

impl<'a> IntentPipeline<'a> {
    /// The pipeline of `s` on `chain`.
    pub fn new(s: &'a AppState, chain: &'a ChainState) -> Self {
        IntentPipeline { s, chain }
    }

    /// Submits `sub` for the authenticated agent (see the module docs); `phases` records the
    /// time of each step.
    pub async fn submit(
        &self,
        auth: &AgentAuth,
        sub: Submission,
        phases: &mut Phases,
    ) -> Submitted {
        let mut hash = None;
        let result = self.submit_inner(auth, sub, &mut hash, phases).await;
        Submitted {
            result,
            user_op_hash: hash,
        }
    }

    async fn submit_inner(
        &self,
        auth: &AgentAuth,
        sub: Submission,
        hash_out: &mut Option<B256>,
        phases: &mut Phases,
    ) -> Result<Intent, IntentError> {
        let (s, chain) = (self.s, self.chain);
        let Submission {
            calls,
            account: requested_account,
            idempotency_key: idem,
        } = sub;
        let wallet_str = auth.wallet.to_uuid_string();
        let agent = auth.agent_address;
        // One of the agent's active sessions (the one on the account asked for, or its only
        // one), else no_session / account_required.
        let session = self.session(auth, requested_account).await?;
        let account = session.account;
        let kind = account_kind(session.account_kind);
        let lane = self.lane(&session, agent).await?;
        let base_key = lane
            .key(0)
            .map_err(|e| IntentError::chain(Erc7579Error::from(e).into(), account))?;

        // One build of this agent's intents at a time (in any of its period lanes), from the
        // idempotency check to the submission; the previous operation is not waited for.
        let mut lane_guard = chain.nonces.lock(account, base_key).await;
        // Across the companions sharing a PostgreSQL database too (crate::replicas).
        let _shared_lane =
            crate::replicas::LaneLease::take(s, chain.client.chain_id(), account, base_key).await?;
        if let Some(k) = &idem {
            if let Some(existing) = s.db.find_intent_by_idempotency_key(&auth.key_id, k).await? {
                *hash_out = existing.user_op_hash.parse().ok();
                same_calls(&existing, &calls, k, kind)?;
                return Ok(existing);
            }
        }
        phases.end("queue");
        // The bundler's estimate of the sequence this process expects next in the lane (the one
        // after the last operation it submitted there) runs beside the reads below; it is used
        // only if the reads give that very nonce, else the operation is estimated again.
        let predicted = lane_guard.in_flight().map(|f| {
            let (k, seq) = NonceKey::split(f.nonce);
            k.nonce(seq.saturating_add(1))
        });
        // Gas limits of this call shape kept from an earlier estimate (see the module docs): with
        // them, the execution is checked on the node and the fees read beside the reads, and the
        // bundler is not asked for an estimate. Not with an Idempotency-Key: a bundler's refusal
        // of reused limits is answered by signing again under a second record, which the key's
        // one record cannot be.
        let shape = idem
            .is_none()
            .then(|| CallShape::of(account, kind, agent, &calls));
        let cached = shape
            .as_ref()
            .and_then(|sh| chain.client.gas_cache().get(sh));
        let probe = async {
            let c = cached?;
            let call_data = kind.encode_calls(&calls).ok()?;
            Some(tokio::join!(
                chain
                    .client
                    .execution_fits(account, &call_data, c.limits.call_gas_limit),
                chain.client.recent_fees(FEES_REUSE_FOR)
            ))
        };
        // The nonce key read beside the session: the expected one's, else the base lane's.
        let guess = predicted.map_or(base_key, |p| NonceKey::split(p).0);
        let speculative = async {
            match predicted.filter(|_| cached.is_none()) {
                Some(p) => Some(
                    chain
                        .client
                        .prepare_agent_op_on(account, agent, lane, 0, calls.clone(), Some(p))
                        .await,
                ),
                None => None,
            }
        };
        let (reads, speculative, probe) = tokio::join!(
            self.reads(auth, account, kind, lane, base_key, guess, agent, &calls),
            speculative,
            probe
        );
        let Reads {
            now,
            snapshot,
            path,
            period_index,
            chain_nonce,
            open,
            nonce,
            ahead,
            after_pending,
        } = reads?;
        phases.end("nonce");

        // What this agent's intents on this account still in flight (recorded, not settled, not
        // passed by the chain's nonce, including those ahead of it) will charge the session when
        // they validate.
        let in_flight = in_flight(&open, account, chain_nonce)?;
        if snapshot.session.epoch == 0 && kind == AccountKind::AgentAccount {
            self.outdated_account(account, agent).await?;
        }
        precheck_on(
            path,
            &snapshot,
            &calls,
            &in_flight,
            None,
            now,
            chain.margins,
        )
        .map_err(|r| IntentError::Refused(Box::new(r)))?;
        let speculative = speculative.filter(|_| predicted == Some(nonce));
        phases.end("policy");

        // The reused limits, when the execution fits them and they are of this period's lane.
        let reused = match (cached, probe) {
            (Some(c), Some((Ok(true), Ok(fees)))) if reuse_applies(&c, period_index, ahead) => {
                chain
                    .client
                    .assemble_agent_op(kind, account, agent, &calls, nonce, fees, c.limits)
                    .ok()
            }
            (Some(_), Some((Ok(false), _))) => {
                tracing::debug!(%account, %agent,
                    "the execution no longer fits the reused callGasLimit; estimated again");
                if let Some(sh) = &shape {
                    chain.client.gas_cache().remove(sh);
                }
                None
            }
            _ => None,
        };
        let mut from_cache = reused.is_some();
        // The bundler's estimate of this operation, with its retries (here, and again after a
        // refusal of reused gas on submission).
        let estimate = || {
            self.prepare(
                account,
                agent,
                lane,
                period_index,
                &calls,
                nonce,
                ahead,
                after_pending,
            )
        };
        let prepared = match (reused, speculative) {
            (Some(p), _) => Ok(p),
            // Estimated beside the reads, for the nonce they gave.
            (None, Some(Ok(p))) => self.raised(p, ahead),
            // Not estimated, for another nonce, or failed: estimated now.
            _ => estimate().await,
        }
        .map_err(|e| estimate_error(e, &snapshot, &in_flight, account))?;
        if !from_cache {
            self.keep_limits(shape.as_ref(), period_index, &prepared);
        }
        let mut prepared = prepared;
        // Once, after the bundler refused reused limits for gas: estimated, built and signed again.
        let intent = loop {
            // The gas rule needs the estimate: the operation's maximum cost is what the validator charges.
            let max_gas_cost = prepared.op.max_gas_cost();
            let charges = precheck_on(
                path,
                &snapshot,
                &calls,
                &in_flight,
                Some(max_gas_cost),
                now,
                chain.margins,
            )
            .map_err(|r| IntentError::Refused(Box::new(r)))?;
            let user_op_hash = prepared.user_op_hash;
            *hash_out = Some(user_op_hash);
            phases.end("prepare");
            let (signature, _) = s
                .tee
                .sign_agent_user_op(&AgentSigningRequest {
                    wallet_id: auth.wallet,
                    agent_index: auth.index,
                    jwt: &auth.jwt,
                    user_op_hash,
                    account,
                    expected_key: Some(agent),
                })
                .await?;
            s.metrics.count_signature("agent_intent");
            let op = prepared.signed(signature);
            phases.end("sign");

            let entry_point = chain.client.entry_point();
            let hash_str = format!("{user_op_hash:#x}");
            // The signature's audit event is committed (per --audit-durability) before the signed
            // operation is recorded or submitted; if it cannot be, nothing leaves (503
            // audit_unavailable) and the agent may retry.
            let actor = format!("agent:{}", auth.key_id);
            let audit = Audited::new(&actor, "SignAgentUserOp")
                .key_id(auth.key_id.as_str())
                .user_op_hash(hash_str.as_str())
                .detail("intent");
            s.audited(audit, AuditMode::Release, Ok(())).await?;
            s.db.insert_intent(&NewIntent {
                user_op_hash: hash_str.clone(),
                key_id: auth.key_id.clone(),
                wallet_id: Some(wallet_str.clone()),
                agent_index: Some(auth.index),
                account: Some(account),
                status: IntentStatus::Signed,
                chain_id: i64::try_from(chain.client.chain_id()).ok(),
                entry_point: Some(entry_point.address),
                calls_json: Some(calls_json(&calls).to_string()),
                user_op_json: Some(
                    serde_json::to_string(&op.to_rpc())
                        .map_err(|e| ApiError::internal(e.to_string()))?,
                ),
                nonce: Some(nonce),
                value_wei: Some(charges.value),
                max_gas_cost_wei: Some(max_gas_cost),
                token_amounts_json: Some(
                    serde_json::to_string(&charges.tokens)
                        .map_err(|e| ApiError::internal(e.to_string()))?,
                ),
                idempotency_key: idem.clone(),
                // The background task leaves it to this request until then (a crash in between).
                next_check_at: kms_db::now_secs() + RESUBMIT_AFTER_SECS,
                first_block: i64::try_from(snapshot.block_number).ok(),
                now: kms_db::now_secs(),
            })
            .await?;
            phases.end("record");

            // The row just recorded is read back (for its lifecycle) while the bundler
            // validates the operation: the submission does not depend on it.
            let (recorded, sent) =
                tokio::join!(s.db.get_intent(&hash_str), self.send(&op, after_pending));
            let recorded: Result<Intent, IntentError> = match recorded {
                Ok(Some(r)) => Ok(r),
                Ok(None) => Err(ApiError::internal("intent vanished").into()),
                Err(e) => Err(e.into()),
            };
            if recorded.is_err() && sent.is_ok() {
                // It left: the next intent of the lane follows it (the background task moves
                // the record on: see RESUBMIT_AFTER_SECS).
                lane_guard.submitted(nonce, user_op_hash);
            }
            let recorded = recorded?;
            match sent {
                Ok(sub) => {
                    lane_guard.submitted(nonce, user_op_hash);
                    let reason = if sub.already_known {
                        IntentReason::AlreadyKnown
                    } else {
                        IntentReason::Accepted
                    };
                    lifecycle::accepted(s, &recorded, Some(&sub), reason, kms_db::now_secs())
                        .await?;
                }
                Err(e) => {
                    // Judged only on evidence (lookups first): see `lifecycle::after_send_error`.
                    let (status, reason) =
                        lifecycle::after_send_error(s, chain, &recorded, &op, user_op_hash, &e)
                            .await?;
                    if status.is_open() || status == IntentStatus::Included {
                        lane_guard.submitted(nonce, user_op_hash);
                    } else {
                        lane_guard.clear();
                    }
                    if status == IntentStatus::Included || status == IntentStatus::Pending {
                        tracing::info!(user_op_hash = %hash_str, %status, %reason, error = %e,
                    "the bundler's error turned out not to be a refusal of the operation");
                    } else if from_cache
                        && matches!(&e, ChainError::Bundler(b) if is_gas_refusal(b))
                    {
                        // Reused limits (or fees) the bundler no longer takes: this record stays
                        // refused, the shape's limits are forgotten, and the operation is estimated
                        // again for the same nonce and signed again with the credential in hand.
                        tracing::info!(user_op_hash = %hash_str, error = %e,
                        "the bundler refused reused gas limits; estimated and signed again");
                        if let Some(sh) = &shape {
                            chain.client.gas_cache().remove(sh);
                        }
                        from_cache = false;
                        prepared = estimate()
                            .await
                            .map_err(|e| estimate_error(e, &snapshot, &in_flight, account))?;
                        self.keep_limits(shape.as_ref(), period_index, &prepared);
                        continue;
                    } else {
                        return Err(IntentError::NotAccepted {
                            error: Box::new(e),
                            account,
                            user_op_hash,
                            status,
                            reason,
                        });
                    }
                }
            }
            break s
                .db
                .get_intent(&hash_str)
                .await?
                .ok_or_else(|| ApiError::internal("intent vanished"))?;
        };
        phases.end("submit");
        Ok(intent)
    }

    /// Keeps the limits of `prepared` (built from a real estimate, in period `period_index`) for
    /// `shape`, when gas reuse applies to the request (see the module docs).
    fn keep_limits(
        &self,
        shape: Option<&CallShape>,
        period_index: u64,
        prepared: &kms_chain::client::PreparedOp,
    ) {
        let Some(shape) = shape else { return };
        let op = &prepared.op;
        self.chain.client.gas_cache().insert(
            shape.clone(),
            Reusable {
                period_index,
                limits: GasLimits {
                    pre_verification_gas: op.pre_verification_gas,
                    verification_gas_limit: op.verification_gas_limit,
                    call_gas_limit: op.call_gas_limit,
                    paymaster_verification_gas_limit: op.paymaster_verification_gas_limit,
                    paymaster_post_op_gas_limit: op.paymaster_post_op_gas_limit,
                },
            },
        );
    }

    /// The reads an intent's checks need, in order: the agent's open intents, the session (with
    /// the validator's path) at the latest block, the period's lane, the chain's nonce there at
    /// the same block (the two read twice, see [`consistent`]), and from them the operation's
    /// nonce (see the module docs).
    #[allow(clippy::too_many_arguments)]
    async fn reads(
        &self,
        auth: &AgentAuth,
        account: Address,
        kind: AccountKind,
        lane: AgentLane,
        base_key: NonceKey,
        guess: NonceKey,
        agent: Address,
        calls: &[Call],
    ) -> Result<Reads, IntentError> {
        // The agent's open intents, before the chain: one included and marked settled between the
        // reads is then in flight here or spent there, never in neither.
        let s = self.s;
        let open = s.db.open_intents_of(&auth.key_id).await?;
        // The session as the chain has it now; what this agent's open operations will still charge
        // is added from the database below. The operation names the lane of the period containing
        // now (bundlers check windows against their clock).
        let now = u64::try_from(kms_db::now_secs()).unwrap_or(0);
        let this = *self;
        let ChainView {
            snapshot,
            path,
            period_index,
            chain_nonce,
        } = consistent(
            CONSISTENT_READ_TRIES,
            move |block| {
                this.chain_view(
                    account, kind, lane, base_key, guess, agent, calls, now, block,
                )
            },
            |v| (v.snapshot.block_number, v.snapshot.block_timestamp),
            || {
                IntentError::chain(
                    ChainError::Node {
                        during: "reading the session and the lane's nonce",
                        message: format!(
                            "two readings at the same block disagreed {CONSISTENT_READ_TRIES} \
                             times"
                        ),
                    },
                    account,
                )
            },
        )
        .await?;
        // The next sequence after this agent's open operations in the lane, or the chain's.
        let (nonce, ahead) = next_nonce(&open, account, chain_nonce);
        // Whether the operation just before it is with the bundler (accepted, not settled).
        let after_pending = predecessor_pending(&open, account, nonce);
        if ahead >= MAX_IN_FLIGHT_PER_LANE {
            return Err(IntentError::TooManyInFlight {
                account,
                in_flight: ahead,
                max: MAX_IN_FLIGHT_PER_LANE,
            });
        }
        Ok(Reads {
            now,
            snapshot,
            path,
            period_index,
            chain_nonce,
            open,
            nonce,
            ahead,
            after_pending,
        })
    }

    /// The session (with the validator's path) at the latest block, or at `block` = (number,
    /// timestamp), the budget period's index, and the chain's nonce of the period's lane at the
    /// same block. The nonce of `guess` is read beside the session; when the period names
    /// another lane, that lane's nonce is read after it.
    #[allow(clippy::too_many_arguments)]
    async fn chain_view(
        self,
        account: Address,
        kind: AccountKind,
        lane: AgentLane,
        base_key: NonceKey,
        guess: NonceKey,
        agent: Address,
        calls: &[Call],
        now: u64,
        block: Option<(u64, u64)>,
    ) -> Result<ChainView, IntentError> {
        let chain = self.chain;
        let (snapshot, path, guessed) = chain
            .client
            .read_session_and_nonce_on(kind, account, agent, calls, now, guess, block)
            .await
            .map_err(|e| IntentError::chain(e, account))?;
        let period_index = if snapshot.session.period != 0 {
            snapshot.period_index
        } else {
            0
        };
        let key = match lane.key(period_index) {
            Ok(key) => key,
            // AgentAccount: a period past 32 bits stays in the agent's base lane (as ever).
            Err(_) if kind == AccountKind::AgentAccount => base_key,
            // ERC-7579: a period past the key's 16 bits cannot be named (the pre-check says so).
            Err(e) => {
                precheck_on(
                    path,
                    &snapshot,
                    calls,
                    &InFlight::default(),
                    None,
                    now,
                    chain.margins,
                )
                .map_err(|r| IntentError::Refused(Box::new(r)))?;
                return Err(IntentError::chain(Erc7579Error::from(e).into(), account));
            }
        };
        // The chain's nonce at the block the session was read at: an operation it has passed is
        // in the snapshot's figures, every later one of this agent is counted as in flight.
        let chain_nonce = if key == guess {
            guessed
        } else {
            chain
                .client
                .nonce_at(account, key, snapshot.block_number)
                .await
                .map_err(|e| IntentError::chain(e, account))?
        };
        Ok(ChainView {
            snapshot,
            path,
            period_index,
            chain_nonce,
        })
    }

    /// Builds the agent's operation with `nonce` (`ahead` sequences past the chain's). The
    /// bundler estimates it against the chain plus the operations it holds in its mempool; an
    /// earlier operation of the lane that it has taken out of its mempool to bundle but that is
    /// not on chain yet is in neither, so the estimate is refused with AA25 for a moment. While
    /// the operation just before it is with the bundler (`after_pending`), such a refusal is
    /// retried every [`AA25_RETRY_EVERY`] for at most [`AA25_RETRY_FOR`]; any other failure is
    /// returned. An operation estimated after earlier ones (`ahead > 0`) was simulated after
    /// their validation, which warmed (and wrote) the storage its own validation touches; alone
    /// on chain it needs more, so its `verificationGasLimit` is multiplied by
    /// [`QUEUED_VERIFICATION_FACTOR`] (the gas rule then charges that larger maximum).
    #[allow(clippy::too_many_arguments)]
    async fn prepare(
        &self,
        account: Address,
        agent: Address,
        lane: AgentLane,
        period_index: u64,
        calls: &[Call],
        nonce: U256,
        ahead: u64,
        after_pending: bool,
    ) -> Result<kms_chain::client::PreparedOp, ChainError> {
        let deadline = Instant::now() + AA25_RETRY_FOR;
        let prepared = loop {
            let result = self
                .chain
                .client
                .prepare_agent_op_on(
                    account,
                    agent,
                    lane,
                    period_index,
                    calls.to_vec(),
                    Some(nonce),
                )
                .await;
            match result {
                Err(ChainError::Bundler(b))
                    if after_pending
                        && b.aa_code() == Some("AA25")
                        && Instant::now() < deadline =>
                {
                    tracing::debug!(%account, %agent, nonce = %nonce, error = %b,
                        "estimate refused for its nonce while the previous operation is with the \
                         bundler; retried");
                    tokio::time::sleep(AA25_RETRY_EVERY).await;
                }
                other => break other?,
            }
        };
        self.raised(prepared, ahead)
    }

    /// `prepared`, `ahead` sequences past the chain's: its `verificationGasLimit` multiplied by
    /// [`QUEUED_VERIFICATION_FACTOR`] when `ahead > 0` (see `IntentPipeline::prepare`).
    fn raised(
        &self,
        prepared: kms_chain::client::PreparedOp,
        ahead: u64,
    ) -> Result<kms_chain::client::PreparedOp, ChainError> {
        if ahead == 0 {
            return Ok(prepared);
        }
        let raised = prepared
            .op
            .verification_gas_limit
            .saturating_mul(QUEUED_VERIFICATION_FACTOR);
        self.chain.client.with_verification_gas(prepared, raised)
    }

    /// Submits `op`. The bundler validates it against the chain plus the operations in its
    /// mempool, so for the moment the previous operation of the lane is being bundled (out of the
    /// mempool, not on chain yet) it refuses it with AA25: while that previous operation is with
    /// the bundler (`after_pending`), such a refusal is retried with the identical operation, as
    /// in [`IntentPipeline::prepare`]. Any other answer is returned.
    async fn send(
        &self,
        op: &kms_chain::userop::v0_7::UserOperation,
        after_pending: bool,
    ) -> Result<kms_chain::bundler::Submission, ChainError> {
        let deadline = Instant::now() + AA25_RETRY_FOR;
        loop {
            match self.chain.client.submit(op).await {
                Err(ChainError::Bundler(b))
                    if after_pending
                        && b.aa_code() == Some("AA25")
                        && Instant::now() < deadline =>
                {
                    tracing::debug!(sender = %op.sender, nonce = %op.nonce, error = %b,
                        "submission refused for its nonce while the previous operation is with \
                         the bundler; retried");
                    tokio::time::sleep(AA25_RETRY_EVERY).await;
                }
                other => return other,
            }
        }
    }

    /// The intent `user_op_hash` of the agent: looked up on chain when it is open and due (at
    /// most once per `--intent-poll-secs`, more often while it is young: see
    /// [`crate::chain::IntentChecks`]), else as recorded.
    pub async fn status(
        &self,
        auth: &AgentAuth,
        user_op_hash: B256,
    ) -> Result<Intent, IntentError> {
        let intent = self
            .s
            .db
            .get_intent(&format!("{user_op_hash:#x}"))
            .await?
            .filter(|i| i.key_id == auth.key_id)
            .ok_or(IntentError::NotFound)?;
        let age = kms_db::now_secs().saturating_sub(intent.created_at);
        if intent.is_open() && self.chain.intent_checks.due(user_op_hash, age) {
            Ok(lifecycle::refresh(self.s, self.chain, intent).await?)
        } else {
            Ok(intent)
        }
    }

    /// The session an agent's intent acts on: its active session on `requested`, else (none
    /// requested) its only active session; [`IntentError::NoSession`] when there is none (a
    /// pending, failed, superseded or revoked grant is not a session),
    /// [`IntentError::AccountRequired`] when none is requested and it has several.
    pub async fn session(
        &self,
        auth: &AgentAuth,
        requested: Option<Address>,
    ) -> Result<AgentSession, IntentError> {
        let mut active = self
            .s
            .db
            .active_sessions_of_agent(&auth.wallet.to_uuid_string(), auth.index)
            .await?;
        let accounts: Vec<Address> = active.iter().map(|a| a.account).collect();
        let found = match requested {
            None if active.len() > 1 => {
                return Err(IntentError::AccountRequired {
                    agent: auth.agent_address,
                    accounts,
                })
            }
            None => active.pop(),
            Some(account) => active.into_iter().find(|a| a.account == account),
        };
        found.ok_or(IntentError::NoSession {
            agent: auth.agent_address,
            requested,
            accounts,
        })
    }

    /// The agent's place in the nonce space of its session's account: its key on `AgentAccount`;
    /// on an ERC-7579 account the lane recorded at grant, read from the validator (and recorded)
    /// when the row has none yet (its grant settled while the node could not be read).
    async fn lane(&self, session: &AgentSession, agent: Address) -> Result<AgentLane, IntentError> {
        let kind = account_kind(session.account_kind);
        if let (AccountKind::Erc7579, Some(lane)) = (kind, session.lane) {
            return Ok(AgentLane::Module {
                validator: self.chain.client.validator(),
                lane,
            });
        }
        let lane = self
            .chain
            .client
            .agent_lane(kind, session.account, agent)
            .await
            .map_err(|e| IntentError::chain(e, session.account))?;
        if let AgentLane::Module { lane: l, .. } = lane {
            self.s
                .db
                .set_session_lane(session.id, l, kms_db::now_secs())
                .await?;
        }
        Ok(lane)
    }

    /// When the agent has no session on `account` because the account checks sessions with
    /// another validator than the companion's (an account of an earlier factory: its sessions
    /// predate the current session rules and are never widened to them), the refusal that says
    /// so.
    async fn outdated_account(&self, account: Address, agent: Address) -> Result<(), IntentError> {
        let validator = self.chain.client.validator();
        match self.chain.client.node().account_validator(account).await {
            Ok(Some(used)) if used != validator => Err(IntentError::OutdatedAccount {
                account,
                agent,
                used,
                validator,
            }),
            _ => Ok(()),
        }
    }
}

/// Whether limits kept for a shape (`kept`) may be reused for an operation in budget period
/// `period_index`, `ahead` sequences past the chain's nonce: only in the period they were
/// estimated in (a new period's lane writes a new nonce slot), and only for an operation right
/// at the chain's nonce. The node's check runs the execution on the chain as it is, while the
/// bundler's estimate of an operation behind open ones of its lane runs it after them (it
/// simulates them first): an execution that fails only after them (e.g. the account's balance
/// spent by them) is caught by the estimate, so such an operation is estimated.
fn reuse_applies(kept: &Reusable, period_index: u64, ahead: u64) -> bool {
    kept.period_index == period_index && ahead == 0
}

/// Refuses a retry under `key` whose calls are not those of the intent recorded under it (the
/// recorded operation's callData is what these calls encode to): a reused key must not make a
/// different request look accepted.
fn same_calls(
    existing: &Intent,
    calls: &[Call],
    key: &str,
    kind: AccountKind,
) -> Result<(), IntentError> {
    let recorded = lifecycle::stored_op(existing)?.call_data;
    let asked = kind
        .encode_calls(calls)
        .map_err(|e| ApiError::unprocessable(ErrorCode::NoCalls, e.to_string()))?;
    if recorded == asked {
        return Ok(());
    }
    Err(IntentError::IdempotencyKeyReused {
        key: key.to_owned(),
        user_op_hash: existing.user_op_hash.clone(),
    })
}

/// A failed build of the operation. The bundler's gas estimation runs validation, which charges
/// the session for the simulated operation: when even that exceeds the gas budget left, the
/// agent learns what remains ([`IntentError::GasBudgetExhausted`]; the real operation's maximum
/// cost is unknown without an estimate).
fn estimate_error(
    e: ChainError,
    snapshot: &SessionSnapshot,
    in_flight: &InFlight,
    account: Address,
) -> IntentError {
    let gas_refusal = match &e {
        ChainError::Bundler(b) => {
            b.rejection()
                .and_then(|r| r.revert)
                .and_then(|r| r.refusal_code())
                == Some(kms_chain::session::RefusalCode::GasOverBudget)
        }
        _ => false,
    };
    if !gas_refusal {
        return IntentError::chain(e, account);
    }
    let remaining = snapshot.session.remaining_gas();
    IntentError::GasBudgetExhausted {
        available: remaining.saturating_sub(in_flight.gas),
        remaining,
        in_flight: in_flight.gas,
    }
}

/// The chain's name of a session's recorded account kind.
pub fn account_kind(kind: kms_db::AccountKind) -> AccountKind {
    match kind {
        kms_db::AccountKind::AgentAccount => AccountKind::AgentAccount,
        kms_db::AccountKind::Erc7579 => AccountKind::Erc7579,
    }
}

/// The nonce of the agent's next operation on `account` in the lane of `chain_nonce` (the
/// EntryPoint's next nonce of that key): the sequence after the highest one of its open intents
/// there that the chain has not passed, or the chain's when there is none; and how many sequences
/// past the chain's that is. A sequence below an open one is never reused: an operation still
/// open there may yet validate. (An open operation above a sequence that none will use can never
/// validate; the lifecycle fails it, reason `predecessor_failed`, and the lane returns to the
/// chain's nonce.)
fn next_nonce(open: &[Intent], account: Address, chain_nonce: U256) -> (U256, u64) {
    let (key, chain_seq) = NonceKey::split(chain_nonce);
    let next = open
        .iter()
        .filter(|i| i.account == Some(account))
        .filter_map(|i| i.nonce.map(NonceKey::split))
        .filter(|(k, seq)| *k == key && *seq >= chain_seq)
        .map(|(_, seq)| seq.saturating_add(1))
        .fold(chain_seq, u64::max);
    (key.nonce(next), next - chain_seq)
}

/// Whether the open intent just before `nonce` in its lane on `account` is `pending` (accepted
/// by the bundler): then an AA25 for `nonce` is the moment that operation is being bundled.
fn predecessor_pending(open: &[Intent], account: Address, nonce: U256) -> bool {
    let (key, seq) = NonceKey::split(nonce);
    seq > 0
        && open.iter().any(|i| {
            i.account == Some(account)
                && i.status == IntentStatus::Pending
                && i.nonce == Some(key.nonce(seq - 1))
        })
}

/// What the open intents of one agent on `account` will charge its session there when they
/// validate (an intent recorded on another account charges another session; one recorded
/// without its account counts), for an operation with `next` (the EntryPoint's next nonce of
/// its lane: an `AgentAccount` key, or an ERC-7579 module key `validator ‖ lane ‖ period`, whose
/// lane and period are compared whole): those of that lane whose
/// sequence the chain has not passed, and, conservatively, every open one of its other lanes
/// (other budget periods: their sequences are not compared) and any without a recorded nonce —
/// their value, maximum gas cost, count and token amounts; the value of those in `next`'s lane
/// also counts against its period's cap. A field absent from a row recorded before it existed
/// counts as zero; a recorded value that does not parse is a corrupt row (an error).
fn in_flight(open: &[Intent], account: Address, next: U256) -> Result<InFlight, DbError> {
    let (lane, seq) = NonceKey::split(next);
    let mut total = InFlight::default();
    for i in open {
        if i.account.is_some_and(|a| a != account) {
            continue;
        }
        let same_lane = match i.nonce.map(NonceKey::split) {
            Some((key, open_seq)) if key == lane => {
                if open_seq < seq {
                    continue;
                }
                true
            }
            _ => false,
        };
        let tokens: BTreeMap<Address, U256> = match i.token_amounts_json.as_deref() {
            Some(t) => serde_json::from_str(t).map_err(|e| {
                DbError::Invalid(format!("intent {} token amounts: {e}", i.user_op_hash))
            })?,
            None => BTreeMap::new(),
        };
        total.add(
            i.value_wei.unwrap_or_default(),
            i.max_gas_cost_wei.unwrap_or_default(),
            &tokens,
            same_lane,
        );
    }
    Ok(total)
}

fn calls_json(calls: &[Call]) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| json!({"to": c.to, "value": c.value.to_string(), "data": c.data}))
            .collect(),
    )
}

/// The phases of one request and their durations, for the `Server-Timing` header.
#[derive(Debug)]
pub struct Phases {
    start: Instant,
    last: Instant,
    done: Vec<(&'static str, Duration)>,
}

impl Phases {
    /// Starts the clock.
    pub fn start() -> Self {
        let now = Instant::now();
        Phases {
            start: now,
            last: now,
            done: Vec::with_capacity(9),
        }
    }

    /// Ends phase `name` (which began where the previous one ended).
    pub fn end(&mut self, name: &'static str) {
        let now = Instant::now();
        self.done.push((name, now - self.last));
        self.last = now;
    }

    /// `name;dur=<ms>, ...` with the total last.
    pub fn header(&self) -> HeaderValue {
        let mut v = String::new();
        let total = self.last - self.start;
        for (name, d) in self.done.iter().chain([&("total", total)]) {
            if !v.is_empty() {
                v.push_str(", ");
            }
            let _ = write!(v, "{name};dur={:.3}", d.as_secs_f64() * 1000.0);
        }
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("total"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted reading: (value, block), or a read error.
    type Reading = Result<(u32, u64), &'static str>;

    /// Runs [`consistent`] over scripted readings: returns the result and the blocks it was asked
    /// to read at.
    fn run_consistent(script: Vec<Reading>) -> (Reading, Vec<Option<(u64, u64)>>) {
        let script = std::cell::RefCell::new(std::collections::VecDeque::from(script));
        let asked = std::cell::RefCell::new(Vec::new());
        let result = futures_util::FutureExt::now_or_never(consistent(
            3,
            |block| {
                asked.borrow_mut().push(block);
                let next = script
                    .borrow_mut()
                    .pop_front()
                    .expect("read past the script");
                std::future::ready(next)
            },
            |&(_, n)| (n, n * 12),
            || "unstable",
        ))
        .expect("no read waits");
        assert!(
            script.borrow().is_empty(),
            "not every scripted reading was taken"
        );
        (result, asked.into_inner())
    }

    #[test]
    fn consistent_returns_two_agreeing_readings_at_one_block() {
        let (result, asked) = run_consistent(vec![Ok((7, 10)), Ok((7, 10))]);
        assert_eq!(result, Ok((7, 10)));
        assert_eq!(asked, vec![None, Some((10, 120))]);
    }

    #[test]
    fn consistent_reads_from_a_fresh_head_when_two_readings_disagree() {
        // The first reading at block 10 is of the block being mined (11), the second of 10.
        let (result, asked) =
            run_consistent(vec![Ok((8, 10)), Ok((7, 10)), Ok((8, 11)), Ok((8, 11))]);
        assert_eq!(result, Ok((8, 11)));
        assert_eq!(asked, vec![None, Some((10, 120)), None, Some((11, 132))]);
    }

    #[test]
    fn consistent_gives_up_after_its_tries() {
        let (result, asked) = run_consistent(vec![
            Ok((1, 10)),
            Ok((2, 10)),
            Ok((1, 11)),
            Ok((2, 11)),
            Ok((1, 12)),
            Ok((2, 12)),
        ]);
        assert_eq!(result, Err("unstable"));
        assert_eq!(asked.len(), 6);
        assert_eq!(asked[4..], [None, Some((12, 144))]);
    }

    #[test]
    fn consistent_returns_a_read_error_at_once() {
        let (result, asked) = run_consistent(vec![Ok((1, 10)), Err("node down")]);
        assert_eq!(result, Err("node down"));
        assert_eq!(asked.len(), 2);
    }

    #[test]
    fn server_timing_lists_each_phase_then_the_total() {
        let mut p = Phases::start();
        std::thread::sleep(Duration::from_millis(2));
        p.end("auth");
        p.end("sign");
        let h = p.header();
        let parts: Vec<(String, f64)> = h
            .to_str()
            .unwrap()
            .split(", ")
            .map(|x| {
                let (n, d) = x.split_once(";dur=").unwrap();
                (n.to_owned(), d.parse().unwrap())
            })
            .collect();
        let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["auth", "sign", "total"]);
        assert!(parts[0].1 >= 2.0, "{h:?}");
        assert!((parts[2].1 - parts[0].1 - parts[1].1).abs() < 0.01, "{h:?}");
    }

    fn open(nonce: U256, value: u64, gas: Option<u64>, tokens: Option<&str>) -> Intent {
        Intent {
            user_op_hash: "0x01".into(),
            key_id: "w:0".into(),
            wallet_id: None,
            agent_index: None,
            account: None,
            status: kms_db::IntentStatus::Pending,
            chain_id: None,
            entry_point: None,
            calls_json: None,
            user_op_json: None,
            tx_hash: None,
            error: None,
            created_at: 0,
            updated_at: 0,
            nonce: Some(nonce),
            value_wei: Some(U256::from(value)),
            idempotency_key: None,
            receipt_json: None,
            max_gas_cost_wei: gas.map(U256::from),
            token_amounts_json: tokens.map(str::to_owned),
            status_reason: None,
            evidence_json: None,
            next_check_at: 0,
            idle_checks: 0,
            settled_at: None,
            first_block: None,
        }
    }

    #[test]
    fn in_flight_sums_what_the_chain_has_not_passed() {
        let agent = Address::repeat_byte(7);
        let key = NonceKey::for_agent(agent);
        let token = "0x3333333333333333333333333333333333333333";
        let rows = [
            // Passed by the chain's nonce (sequence 4 < 5): not in flight.
            open(key.nonce(4), 100, Some(1000), None),
            open(
                key.nonce(5),
                10,
                Some(700),
                Some(&format!(r#"{{"{token}":"9"}}"#)),
            ),
            // Recorded before gas and tokens were: counts its value and one operation.
            open(key.nonce(6), 1, None, None),
        ];
        let f = in_flight(&rows, Address::ZERO, key.nonce(5)).unwrap();
        assert_eq!(f.value, U256::from(11));
        assert_eq!(f.period_value, U256::from(11));
        assert_eq!(f.gas, U256::from(700));
        assert_eq!(f.ops, 2);
        assert_eq!(f.tokens[&token.parse::<Address>().unwrap()], U256::from(9));
        assert_eq!(
            in_flight(&rows, Address::ZERO, key.nonce(7)).unwrap(),
            InFlight::default()
        );
        // From another period's lane, every open intent counts (sequences of different lanes
        // are not compared), but none against that period's cap.
        let next_period = NonceKey::for_agent_period(agent, 1);
        let f = in_flight(&rows, Address::ZERO, next_period.nonce(0)).unwrap();
        assert_eq!((f.value, f.ops), (U256::from(111), 3));
        assert_eq!(f.period_value, U256::ZERO);
        let mut rows = rows.to_vec();
        rows.push(open(next_period.nonce(0), 1000, None, None));
        let f = in_flight(&rows, Address::ZERO, next_period.nonce(0)).unwrap();
        assert_eq!(
            (f.value, f.period_value),
            (U256::from(1111), U256::from(1000))
        );
        assert_eq!(
            in_flight(&rows, Address::ZERO, next_period.nonce(1))
                .unwrap()
                .period_value,
            U256::ZERO
        );
    }

    #[test]
    fn in_flight_on_an_erc7579_account_compares_module_lanes_and_periods() {
        let validator = Address::repeat_byte(0x5c);
        let (a, b) = (Address::repeat_byte(0xaa), Address::repeat_byte(0xbb));
        let lane = AgentLane::Module { validator, lane: 3 };
        let key = lane.key(0).unwrap();
        assert_eq!(key.module_parts(), (validator, 3, 0));
        let on = |account: Address, nonce: U256, value: u64| Intent {
            account: Some(account),
            ..open(nonce, value, Some(10), None)
        };
        let rows = [
            // Passed on this lane: not in flight.
            on(a, key.nonce(1), 1000),
            on(a, key.nonce(2), 1),
            // Period 1 of the same lane: another lane (counts, not against period 0's cap).
            on(a, lane.key(1).unwrap().nonce(0), 20),
            // Another agent lane of the module on the account (never this agent's, but counted
            // conservatively like any other lane of its own).
            on(
                a,
                AgentLane::Module { validator, lane: 4 }
                    .key(0)
                    .unwrap()
                    .nonce(9),
                300,
            ),
            // Another account: another session, not charged here.
            on(b, key.nonce(2), 4000),
        ];
        let f = in_flight(&rows, a, key.nonce(2)).unwrap();
        assert_eq!(
            (f.value, f.period_value, f.ops),
            (U256::from(321), U256::from(1), 3)
        );
        assert_eq!(f.gas, U256::from(30));
        // From period 1: its own lane's intent counts against its cap, period 0's do not.
        let p1 = lane.key(1).unwrap();
        assert_eq!(p1.module_parts(), (validator, 3, 1));
        let f = in_flight(&rows, a, p1.nonce(0)).unwrap();
        assert_eq!(
            (f.value, f.period_value),
            (U256::from(1321), U256::from(20))
        );
        // On account B only its own intent counts.
        let f = in_flight(&rows, b, key.nonce(0)).unwrap();
        assert_eq!(
            (f.value, f.period_value, f.ops),
            (U256::from(4000), U256::from(4000), 1)
        );
    }

    #[test]
    fn the_next_nonce_follows_the_open_intents_of_the_lane() {
        let agent = Address::repeat_byte(7);
        let account = Address::repeat_byte(0xaa);
        let key = NonceKey::for_agent(agent);
        let on = |acc: Address, nonce: U256| Intent {
            account: Some(acc),
            ..open(nonce, 1, None, None)
        };
        // Nothing open: the chain's nonce.
        assert_eq!(next_nonce(&[], account, key.nonce(5)), (key.nonce(5), 0));
        let rows = [
            // Passed by the chain: not in the way.
            on(account, key.nonce(3)),
            on(account, key.nonce(5)),
            on(account, key.nonce(6)),
            // Another period's lane, another account: other sequences.
            on(account, NonceKey::for_agent_period(agent, 1).nonce(40)),
            on(Address::repeat_byte(0xbb), key.nonce(30)),
        ];
        assert_eq!(next_nonce(&rows, account, key.nonce(5)), (key.nonce(7), 2));
        // The chain passed one of them: still after the last open one.
        assert_eq!(next_nonce(&rows, account, key.nonce(6)), (key.nonce(7), 1));
        // The chain passed them all.
        assert_eq!(next_nonce(&rows, account, key.nonce(9)), (key.nonce(9), 0));
        // A sequence below an open one is never reused, even with a gap under it.
        let gap = [on(account, key.nonce(8))];
        assert_eq!(next_nonce(&gap, account, key.nonce(5)), (key.nonce(9), 4));
        // Those ahead of the chain's nonce count in the budget too.
        let f = in_flight(&rows[..3], account, key.nonce(5)).unwrap();
        assert_eq!(f.ops, 2);
    }

    #[test]
    fn too_many_in_flight_is_429_with_the_counts() {
        let e: ApiError = IntentError::TooManyInFlight {
            account: Address::repeat_byte(0xaa),
            in_flight: MAX_IN_FLIGHT_PER_LANE,
            max: MAX_IN_FLIGHT_PER_LANE,
        }
        .into();
        assert_eq!(e.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.code(), "too_many_in_flight");
        let ApiError::Detailed { details, .. } = e else {
            panic!("detailed")
        };
        assert_eq!(details["inFlight"], MAX_IN_FLIGHT_PER_LANE);
        assert_eq!(details["max"], MAX_IN_FLIGHT_PER_LANE);
    }

    #[test]
    fn only_a_pending_predecessor_makes_an_aa25_worth_retrying() {
        let account = Address::repeat_byte(0xaa);
        let key = NonceKey::for_agent(Address::repeat_byte(7));
        let with = |status: IntentStatus, seq: u64| Intent {
            account: Some(account),
            status,
            ..open(key.nonce(seq), 1, None, None)
        };
        assert!(predecessor_pending(
            &[with(IntentStatus::Pending, 4)],
            account,
            key.nonce(5)
        ));
        // Signed (the bundler never took it), or not just before: nothing to wait for.
        assert!(!predecessor_pending(
            &[with(IntentStatus::Signed, 4)],
            account,
            key.nonce(5)
        ));
        assert!(!predecessor_pending(
            &[with(IntentStatus::Pending, 3)],
            account,
            key.nonce(5)
        ));
        assert!(!predecessor_pending(&[], account, key.nonce(0)));
    }

    #[test]
    fn kept_limits_are_reused_only_in_their_period_and_at_the_chains_nonce() {
        let kept = Reusable {
            period_index: 3,
            limits: GasLimits::default(),
        };
        assert!(reuse_applies(&kept, 3, 0));
        // Another period's lane: estimated.
        assert!(!reuse_applies(&kept, 4, 0));
        assert!(!reuse_applies(&kept, 2, 0));
        // Behind open operations of the lane: estimated after them by the bundler.
        assert!(!reuse_applies(&kept, 3, 1));
        assert!(!reuse_applies(&kept, 3, MAX_IN_FLIGHT_PER_LANE - 1));
    }

    #[test]
    fn a_corrupt_token_record_is_an_error_not_zero() {
        let key = NonceKey::for_agent(Address::repeat_byte(7));
        let rows = [open(key.nonce(5), 1, None, Some("not json"))];
        assert!(in_flight(&rows, Address::ZERO, key.nonce(5)).is_err());
    }
}
