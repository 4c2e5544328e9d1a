//! The lifecycle of agent intents: how an open intent (`signed`, `pending`) is looked up and
//! settled, by `GET /agent/intents/{userOpHash}` and by the background task
//! ([`crate::tasks::intent_tick`]). The statuses and their allowed transitions are
//! [`kms_db::IntentStatus`]; every change goes through [`kms_db::Db::transition_intent`] (guarded
//! in SQL: whoever settles an intent first wins, `included` is never overwritten) with its
//! reason ([`IntentReason`]) and its evidence (JSON, kept in the row).
//!
//! # Looking before judging
//!
//! An open intent is looked up in this order, and the first answer settles it:
//!
//! 1. the bundler's receipt for its userOpHash, checked against the operation (hash, EntryPoint,
//!    sender, nonce): `included`, or `failed` when the execution reverted;
//! 2. the EntryPoint nonce of the operation's key (`getNonce(sender, key)`, through the node):
//!    while the chain has not passed the operation's sequence, the operation can still be
//!    included, so nothing is settled from what follows unless the bundler gives a verdict;
//! 3. once the chain has passed it, the EntryPoint's `UserOperationEvent` for its hash (through
//!    the node, whatever bundler included it): `included` / `failed` (reason
//!    `entry_point_event`); else the event of the operation that used its nonce: `replaced`, with
//!    that operation as evidence.
//!
//! Still open and due (the background task's turn, or a read once `next_check_at` passed):
//!
//! * its agent revoked: never re-submitted. `cancelled` when the bundler no longer holds it, or
//!   when the session is revoked on chain (the chain would refuse it); otherwise (held, session
//!   still active) it is watched until the chain settles it.
//! * held by the bundler (`pimlico_getUserOperationStatus`, else `eth_getUserOperationByHash`): a
//!   `signed` intent becomes `pending`; nothing else to do.
//! * not held: the identical signed operation is re-submitted. "Already known" or acceptance:
//!   `pending`. AA25 (nonce): looked up again (an inclusion at the last moment shows here).
//!   Unreachable bundler or an answer that says nothing about the operation (another hash, an
//!   unreadable answer): unchanged, looked at again later. A verdict of validation, with the
//!   operation neither on chain nor held: `failed` (`bundler_rejected`), or `dropped` when it is
//!   out of its validity window (`expired`), or `cancelled` when its session is revoked.
//!
//! # Schedule
//!
//! Each look reschedules the intent (`next_check_at`): after a change, `--intent-poll-secs`;
//! after a look that changed nothing, twice the previous wait, up to [`MAX_BACKOFF_SECS`]. The
//! background task takes at most [`TASK_BATCH`] intents per tick, the longest overdue first, so
//! intents that never settle (an unreachable bundler, a chain that never moves) wait longer and
//! longer and can never keep fresh intents from being looked at.

use alloy::primitives::{Address, B256, U256};
use kms_chain::bundler::{BundlerError, Holding, SendVerdict, Submission, UserOperationReceipt};
use kms_chain::client::{ChainError, OpEvent};
use kms_chain::nonce::NonceKey;
use kms_chain::userop::v0_7::{RpcUserOperation, UserOperation};
use kms_db::{AgentStatus, Intent, IntentChange, IntentReason, IntentStatus};
use serde_json::{json, Value};

use crate::chain::ChainState;
use crate::error::ApiError;
use crate::state::AppState;

/// Longest wait between two looks at an open intent that does not change (seconds).
pub const MAX_BACKOFF_SECS: i64 = 300;
/// Most intents the background task looks at per tick.
pub const TASK_BATCH: u32 = 32;

/// When an open intent that had `idle_checks` looks in a row without change is looked at next:
/// `poll × 2^idle_checks` seconds from `now`, at most [`MAX_BACKOFF_SECS`].
pub fn next_check(now: i64, poll_secs: u64, idle_checks: i64) -> i64 {
    let poll = i64::try_from(poll_secs).unwrap_or(i64::MAX).max(1);
    let shift = u32::try_from(idle_checks.clamp(0, 30)).unwrap_or(30);
    let wait = poll
        .saturating_mul(1i64 << shift)
        .min(MAX_BACKOFF_SECS.max(poll));
    now.saturating_add(wait)
}

fn hash_hex(h: B256) -> String {
    format!("{h:#x}")
}

/// The operation recorded for `intent` (a row without a readable one is corrupt).
pub(crate) fn stored_op(intent: &Intent) -> Result<UserOperation, ApiError> {
    intent
        .user_op_json
        .as_deref()
        .and_then(|j| serde_json::from_str::<RpcUserOperation>(j).ok())
        .and_then(|r| UserOperation::try_from(r).ok())
        .ok_or_else(|| {
            ApiError::internal(format!(
                "intent {}: no readable stored operation",
                intent.user_op_hash
            ))
        })
}

/// What the lookups found about an operation.
#[derive(Debug)]
enum Found {
    /// The bundler's receipt (checked).
    Receipt(Box<UserOperationReceipt>),
    /// The EntryPoint's event for its hash (the bundler had no receipt).
    Event(OpEvent),
    /// The chain's nonce passed it without it; the operation that used its nonce when found.
    Replaced {
        chain_nonce: U256,
        by: Option<OpEvent>,
    },
    /// Not on chain, and the chain has not passed its nonce (`None`: the nonce was not read).
    Open { chain_nonce: Option<U256> },
}

/// Looks `op` (userOpHash `hash`) up: the bundler's receipt, then (when `deep`) the chain's
/// nonce and the EntryPoint's events from `first_block`. An error when nothing could be said
/// (the node failed, or the bundler failed and the nonce does not settle it).
async fn look_up(
    chain: &ChainState,
    op: &UserOperation,
    hash: B256,
    first_block: Option<u64>,
    deep: bool,
) -> Result<Found, ChainError> {
    let receipt_error = match chain
        .client
        .receipt(&chain.client.expected_receipt(op, hash))
        .await
    {
        Ok(Some(r)) => return Ok(Found::Receipt(Box::new(r))),
        Ok(None) => None,
        Err(ChainError::Bundler(e @ BundlerError::ReceiptMismatch { .. })) => {
            // Not a settlement: the chain is asked instead.
            tracing::warn!(user_op_hash = %hash, error = %e,
                "the bundler answered with another operation's receipt; looking on chain");
            None
        }
        Err(e) => Some(e),
    };
    if !deep {
        return match receipt_error {
            Some(e) => Err(e),
            None => Ok(Found::Open { chain_nonce: None }),
        };
    }
    let (key, seq) = NonceKey::split(op.nonce);
    let chain_nonce = chain.client.nonce(op.sender, key).await?;
    if NonceKey::split(chain_nonce).1 <= seq {
        return match receipt_error {
            // The bundler could not say whether it was included at the last moment.
            Some(e) => Err(e),
            None => Ok(Found::Open {
                chain_nonce: Some(chain_nonce),
            }),
        };
    }
    let mine = chain
        .client
        .user_operation_events(op.sender, Some(hash), first_block)
        .await?;
    if let Some(ev) = mine
        .into_iter()
        .find(|e| e.user_op_hash == hash && e.nonce == op.nonce)
    {
        return Ok(Found::Event(ev));
    }
    let by = chain
        .client
        .user_operation_events(op.sender, None, first_block)
        .await?
        .into_iter()
        .find(|e| e.nonce == op.nonce && e.user_op_hash != hash);
    Ok(Found::Replaced { chain_nonce, by })
}

fn receipt_evidence(r: &UserOperationReceipt) -> Value {
    json!({
        "source": "bundlerReceipt",
        "transactionHash": r.receipt.transaction_hash,
        "blockNumber": r.receipt.block_number.to_string(),
        "success": r.success,
    })
}

fn event_json(e: &OpEvent) -> Value {
    json!({
        "userOpHash": e.user_op_hash,
        "nonce": format!("{:#x}", e.nonce),
        "success": e.success,
        "transactionHash": e.transaction_hash,
        "blockNumber": e.block_number,
        "actualGasCost": e.actual_gas_cost.to_string(),
    })
}

/// What was checked before a verdict: no receipt, the chain's nonce, the bundler's holding.
fn checked_json(chain_nonce: Option<U256>, holding: Option<&Holding>) -> Value {
    json!({
        "receipt": null,
        "chainNonce": chain_nonce.map(|n| format!("{n:#x}")),
        "bundlerStatus": holding.map(|h| h.status.as_str()),
    })
}

/// The status, reason, evidence and words of an intent found on chain (or passed by the nonce).
fn settled_on_chain(
    found: &Found,
    op: &UserOperation,
    entry_point: Address,
) -> Option<(
    IntentStatus,
    IntentReason,
    Value,
    Option<UserOperationReceipt>,
)> {
    match found {
        Found::Receipt(r) => Some((
            if r.success {
                IntentStatus::Included
            } else {
                IntentStatus::Failed
            },
            if r.success {
                IntentReason::Receipt
            } else {
                IntentReason::ExecutionReverted
            },
            receipt_evidence(r),
            Some((**r).clone()),
        )),
        Found::Event(e) => Some((
            if e.success {
                IntentStatus::Included
            } else {
                IntentStatus::Failed
            },
            IntentReason::EntryPointEvent,
            json!({"source": "entryPointEvent", "event": event_json(e)}),
            e.to_receipt(entry_point),
        )),
        Found::Replaced { chain_nonce, by } => Some((
            IntentStatus::Replaced,
            IntentReason::NoncePassed,
            json!({
                "source": "entryPointNonce",
                "nonce": format!("{:#x}", op.nonce),
                "chainNonce": format!("{chain_nonce:#x}"),
                "usedBy": by.as_ref().map(event_json),
            }),
            None,
        )),
        Found::Open { .. } => None,
    }
}

fn error_words(status: IntentStatus, reason: IntentReason, detail: Option<&str>) -> Option<String> {
    let words = match (status, reason) {
        (IntentStatus::Failed, IntentReason::ExecutionReverted)
        | (IntentStatus::Failed, IntentReason::EntryPointEvent) => {
            "the operation was included but its execution reverted".to_owned()
        }
        (IntentStatus::Failed, IntentReason::PredecessorFailed) => {
            "an earlier operation of this agent in the same nonce lane did not execute, so this one \
             can never validate; submit the intent again"
                .to_owned()
        }
        (IntentStatus::Failed, _) => "the bundler refused the operation".to_owned(),
        (IntentStatus::Replaced, _) => {
            "the chain's nonce passed this operation: another operation used its nonce, so it \
             will never execute"
                .to_owned()
        }
        (IntentStatus::Dropped, _) => {
            "the operation was not included before its validity ended and will never execute"
                .to_owned()
        }
        (IntentStatus::Cancelled, IntentReason::SessionRevoked) => {
            "the session was revoked before the operation reached the chain; it will never \
             execute"
                .to_owned()
        }
        (IntentStatus::Cancelled, _) => {
            "the agent was revoked before the operation reached the chain; it is not sent again"
                .to_owned()
        }
        _ => return None,
    };
    Some(match detail {
        Some(d) => format!("{words}: {d}"),
        None => words,
    })
}

/// Moves the intent to `to`; returns whether it applied (a `false` means someone else settled or
/// moved it first: the row says what it is now).
#[allow(clippy::too_many_arguments)]
async fn transition(
    s: &AppState,
    intent: &Intent,
    to: IntentStatus,
    reason: IntentReason,
    evidence: &Value,
    receipt: Option<&UserOperationReceipt>,
    detail: Option<&str>,
    now: i64,
) -> Result<bool, ApiError> {
    let receipt_json = receipt
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let tx = receipt.map(|r| hash_hex(r.receipt.transaction_hash));
    let evidence = evidence.to_string();
    let error = error_words(to, reason, detail);
    let applied =
        s.db.transition_intent(
            &intent.user_op_hash,
            to,
            &IntentChange {
                reason,
                evidence_json: Some(&evidence),
                tx_hash: tx.as_deref(),
                receipt_json: receipt_json.as_deref(),
                error: error.as_deref(),
                next_check_at: next_check(now, s.config.intent_poll_secs, 0),
                now,
            },
        )
        .await?;
    if applied && to.is_terminal() {
        tracing::info!(user_op_hash = %intent.user_op_hash, status = %to, reason = %reason,
            "intent settled");
        if !uses_its_nonce(to, reason) {
            successors_due(s, intent, now).await?;
        }
    }
    Ok(applied)
}

/// Whether an intent settled with `status` and `reason` used its nonce on chain (included,
/// reverted in execution, or passed by the chain's nonce), so the operations after it in its lane
/// may still validate.
fn uses_its_nonce(status: IntentStatus, reason: IntentReason) -> bool {
    match status {
        IntentStatus::Included | IntentStatus::Replaced => true,
        IntentStatus::Failed => matches!(
            reason,
            IntentReason::ExecutionReverted | IntentReason::EntryPointEvent
        ),
        _ => false,
    }
}

/// The sequences of the open intents of `intent`'s agent in the lane of `op` (same account and
/// nonce key), ascending.
async fn open_sequences(
    s: &AppState,
    intent: &Intent,
    op: &UserOperation,
) -> Result<Vec<(u64, String)>, ApiError> {
    let (key, _) = NonceKey::split(op.nonce);
    let mut seqs: Vec<(u64, String)> =
        s.db.open_intents_of(&intent.key_id)
            .await?
            .into_iter()
            .filter(|i| i.account == intent.account)
            .filter_map(|i| {
                let (k, seq) = NonceKey::split(i.nonce?);
                (k == key).then_some((seq, i.user_op_hash))
            })
            .collect();
    seqs.sort();
    Ok(seqs)
}

/// An intent that will never use its nonce settled: the open intents after it in its lane are
/// made due at once, so the lifecycle finds them stranded ([`missing_predecessor`]) without
/// waiting for their next look.
async fn successors_due(s: &AppState, intent: &Intent, now: i64) -> Result<(), ApiError> {
    let Ok(op) = stored_op(intent) else {
        return Ok(());
    };
    let (_, seq) = NonceKey::split(op.nonce);
    for (later, hash) in open_sequences(s, intent, &op).await? {
        if later > seq {
            if let Some(i) = s.db.get_intent(&hash).await?.filter(|i| i.is_open()) {
                s.db.reschedule_intent(&hash, i.status, now, None, now)
                    .await?;
            }
        }
    }
    Ok(())
}

/// The first sequence between the chain's next one (`chain_nonce`) and `op`'s that no open
/// intent of the agent holds, if any: `op` can never validate while it is missing, and the
/// companion never fills a sequence below an open one of the lane (see the intent pipeline), so
/// nothing will.
async fn missing_predecessor(
    s: &AppState,
    intent: &Intent,
    op: &UserOperation,
    chain_nonce: U256,
) -> Result<Option<u64>, ApiError> {
    let (_, seq) = NonceKey::split(op.nonce);
    let (_, chain_seq) = NonceKey::split(chain_nonce);
    if seq <= chain_seq {
        return Ok(None);
    }
    let mut want = chain_seq;
    for (open, _) in open_sequences(s, intent, op).await? {
        if open >= seq {
            break;
        }
        if open == want {
            want += 1;
        } else if open > want {
            break;
        }
    }
    Ok((want < seq).then_some(want))
}

/// Records a look at an open intent that left its status as it was: with a new `reason` (and
/// evidence) when it differs from the recorded one (the backoff restarts), else as an idle look
/// (the wait doubles).
async fn reschedule(
    s: &AppState,
    intent: &Intent,
    reason: Option<(IntentReason, Value)>,
    now: i64,
) -> Result<(), ApiError> {
    let status = intent.status;
    let changed = reason
        .as_ref()
        .filter(|(r, _)| intent.status_reason != Some(*r));
    let evidence = changed.map(|(_, e)| e.to_string());
    let idle = if changed.is_some() {
        0
    } else {
        intent.idle_checks.saturating_add(1)
    };
    s.db.reschedule_intent(
        &intent.user_op_hash,
        status,
        next_check(now, s.config.intent_poll_secs, idle),
        changed.map(|(r, _)| (*r, evidence.as_deref())),
        now,
    )
    .await?;
    Ok(())
}

/// The bundler accepted (or already held) the operation of open intent `intent`: `pending`.
pub(crate) async fn accepted(
    s: &AppState,
    intent: &Intent,
    submission: Option<&Submission>,
    reason: IntentReason,
    now: i64,
) -> Result<(), ApiError> {
    let evidence = json!({
        "source": "bundlerAnswer",
        "answer": reason.as_str(),
        "attempts": submission.map(|s| s.attempts),
        "alreadyKnown": submission.map(|s| s.already_known),
    });
    if intent.status == IntentStatus::Signed {
        transition(
            s,
            intent,
            IntentStatus::Pending,
            reason,
            &evidence,
            None,
            None,
            now,
        )
        .await?;
    } else {
        reschedule(s, intent, Some((reason, evidence)), now).await?;
    }
    Ok(())
}

/// Judges a failed `eth_sendUserOperation` of `intent`'s operation `op` (userOpHash `hash`) —
/// the first submission or a re-submission — and records the outcome: "already known" is
/// `pending`; no answer or an unusable one leaves it open (looked at again later); a verdict is
/// final only once lookups show the operation neither on chain (receipt, nonce, events: an AA25
/// after an inclusion at the last moment ends `included`) nor held by the bundler. Returns the
/// intent's status afterwards and its reason.
pub(crate) async fn after_send_error(
    s: &AppState,
    chain: &ChainState,
    intent: &Intent,
    op: &UserOperation,
    hash: B256,
    err: &ChainError,
) -> Result<(IntentStatus, IntentReason), ApiError> {
    let now = kms_db::now_secs();
    let current = intent.status;
    let ChainError::Bundler(b) = err else {
        reschedule(
            s,
            intent,
            Some((
                IntentReason::BundlerAnswerUnusable,
                json!({"source": "bundlerAnswer", "error": err.to_string()}),
            )),
            now,
        )
        .await?;
        return Ok((current, IntentReason::BundlerAnswerUnusable));
    };
    let verdict = b.send_verdict();
    let open_reason = match verdict {
        SendVerdict::AlreadyKnown => {
            accepted(s, intent, None, IntentReason::AlreadyKnown, now).await?;
            return Ok((IntentStatus::Pending, IntentReason::AlreadyKnown));
        }
        SendVerdict::Unreachable => Some(IntentReason::BundlerUnreachable),
        SendVerdict::Unusable => Some(IntentReason::BundlerAnswerUnusable),
        _ => None,
    };
    if let Some(reason) = open_reason {
        reschedule(
            s,
            intent,
            Some((
                reason,
                json!({"source": "bundlerAnswer", "error": b.to_string()}),
            )),
            now,
        )
        .await?;
        return Ok((current, reason));
    }
    // A verdict on the operation: first make sure it is neither on chain nor held.
    let first_block = intent.first_block.and_then(|b| u64::try_from(b).ok());
    let found = match look_up(chain, op, hash, first_block, true).await {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(user_op_hash = %intent.user_op_hash, error = %e,
                "lookup after a refusal failed; judged later");
            reschedule(s, intent, None, now).await?;
            return Ok((current, IntentReason::BundlerAnswerUnusable));
        }
    };
    let entry_point = chain.client.entry_point().address;
    if let Some((to, reason, evidence, receipt)) = settled_on_chain(&found, op, entry_point) {
        transition(
            s,
            intent,
            to,
            reason,
            &evidence,
            receipt.as_ref(),
            None,
            now,
        )
        .await?;
        return Ok((to, reason));
    }
    let Found::Open { chain_nonce } = found else {
        unreachable!("settled_on_chain covers every other case")
    };
    let holding = chain.client.bundler().holding(hash).await.ok();
    if holding.as_ref().is_some_and(|h| h.held) {
        accepted(s, intent, None, IntentReason::AlreadyKnown, now).await?;
        return Ok((IntentStatus::Pending, IntentReason::AlreadyKnown));
    }
    let evidence = json!({
        "source": "bundlerRefusal",
        "rejection": b.rejection(),
        "checked": checked_json(chain_nonce, holding.as_ref()),
    });
    let (to, reason) = match verdict {
        SendVerdict::Nonce => {
            // The chain has not passed its nonce: another operation with the nonce is ahead of
            // it, or one before it is missing. Not a verdict on this operation.
            reschedule(
                s,
                intent,
                Some((IntentReason::NonceConflict, evidence)),
                now,
            )
            .await?;
            return Ok((current, IntentReason::NonceConflict));
        }
        SendVerdict::OutOfTime => (IntentStatus::Dropped, IntentReason::Expired),
        SendVerdict::SessionRevoked => (IntentStatus::Cancelled, IntentReason::SessionRevoked),
        _ => (IntentStatus::Failed, IntentReason::BundlerRejected),
    };
    let detail = b.rejection().map(|r| r.message);
    transition(
        s,
        intent,
        to,
        reason,
        &evidence,
        None,
        detail.as_deref(),
        now,
    )
    .await?;
    Ok((to, reason))
}

/// Whether the agent of `intent` is revoked, and when.
async fn agent_revocation(
    s: &AppState,
    intent: &Intent,
) -> Result<Option<(Option<i64>, Option<Address>)>, ApiError> {
    let (Some(wallet), Some(index)) = (
        intent.wallet_id.as_deref(),
        intent.agent_index.and_then(|i| u32::try_from(i).ok()),
    ) else {
        return Ok(None);
    };
    Ok(s.db
        .get_agent(wallet, index)
        .await?
        .filter(|a| a.status == AgentStatus::Revoked)
        .map(|a| (a.revoked_at, a.agent_address)))
}

/// An open intent of a revoked agent, not on chain: never re-submitted; `cancelled` unless the
/// bundler still holds it with its session active on chain (then it is watched).
#[allow(clippy::too_many_arguments)]
async fn revoked_agent(
    s: &AppState,
    chain: &ChainState,
    intent: &Intent,
    op: &UserOperation,
    hash: B256,
    (revoked_at, agent_address): (Option<i64>, Option<Address>),
    chain_nonce: Option<U256>,
    now: i64,
) -> Result<(), ApiError> {
    let holding = match chain.client.bundler().holding(hash).await {
        Ok(h) => h,
        Err(e) => {
            tracing::debug!(user_op_hash = %intent.user_op_hash, error = %e,
                "bundler lookup failed; the revoked agent's intent is judged later");
            return reschedule(s, intent, None, now).await;
        }
    };
    let session_active = if holding.held {
        match agent_address {
            Some(agent) => match chain.client.read_session(op.sender, agent, &[]).await {
                Ok(snapshot) => Some(snapshot.session.active),
                Err(e) => {
                    tracing::debug!(user_op_hash = %intent.user_op_hash, error = %e,
                        "session read failed; the revoked agent's intent is judged later");
                    return reschedule(s, intent, None, now).await;
                }
            },
            None => Some(true),
        }
    } else {
        None
    };
    let evidence = json!({
        "source": "agentRevoked",
        "agentRevokedAt": revoked_at,
        "sessionActive": session_active,
        "checked": checked_json(chain_nonce, Some(&holding)),
    });
    if session_active == Some(true) {
        // The bundler holds it and the chain would still take it: it may land. Watched, never
        // sent again.
        if intent.status == IntentStatus::Signed {
            transition(
                s,
                intent,
                IntentStatus::Pending,
                IntentReason::RevokedInMempool,
                &evidence,
                None,
                None,
                now,
            )
            .await?;
        } else {
            reschedule(
                s,
                intent,
                Some((IntentReason::RevokedInMempool, evidence)),
                now,
            )
            .await?;
        }
        return Ok(());
    }
    transition(
        s,
        intent,
        IntentStatus::Cancelled,
        IntentReason::AgentRevoked,
        &evidence,
        None,
        None,
        now,
    )
    .await?;
    Ok(())
}

/// Brings an open intent up to date (see the module docs) and returns it as it is now. A read
/// (`GET`) before the intent is due only looks for its receipt; the background task (and a read
/// once `next_check_at` passed) does everything, including re-submitting the identical signed
/// operation. Settled intents are returned as they are.
pub async fn refresh(s: &AppState, chain: &ChainState, intent: Intent) -> Result<Intent, ApiError> {
    if !intent.is_open() {
        return Ok(intent);
    }
    let now = kms_db::now_secs();
    let due = now >= intent.next_check_at;
    let hash: B256 = intent
        .user_op_hash
        .parse()
        .map_err(|_| ApiError::internal("stored userOpHash"))?;
    let op = match stored_op(&intent) {
        Ok(op) => op,
        Err(e) => {
            if due {
                // Corrupt: looked at as rarely as possible, never judged.
                s.db.reschedule_intent(
                    &intent.user_op_hash,
                    intent.status,
                    now + MAX_BACKOFF_SECS,
                    None,
                    now,
                )
                .await?;
            }
            return Err(e);
        }
    };
    let first_block = intent.first_block.and_then(|b| u64::try_from(b).ok());
    match look_up(chain, &op, hash, first_block, due).await {
        Ok(found) => {
            let entry_point = chain.client.entry_point().address;
            if let Some((to, reason, evidence, receipt)) =
                settled_on_chain(&found, &op, entry_point)
            {
                transition(
                    s,
                    &intent,
                    to,
                    reason,
                    &evidence,
                    receipt.as_ref(),
                    None,
                    now,
                )
                .await?;
            } else if due {
                let Found::Open { chain_nonce } = found else {
                    unreachable!("settled_on_chain covers every other case")
                };
                act(s, chain, &intent, &op, hash, chain_nonce, now).await?;
            }
        }
        Err(e) => {
            tracing::debug!(user_op_hash = %intent.user_op_hash, error = %e,
                "intent lookup failed");
            if due {
                reschedule(s, &intent, None, now).await?;
            }
        }
    }
    s.db.get_intent(&intent.user_op_hash)
        .await?
        .ok_or_else(|| ApiError::internal("intent vanished"))
}

/// An open intent that is due, not on chain, its nonce not passed: see the module docs.
async fn act(
    s: &AppState,
    chain: &ChainState,
    intent: &Intent,
    op: &UserOperation,
    hash: B256,
    chain_nonce: Option<U256>,
    now: i64,
) -> Result<(), ApiError> {
    if let Some(revocation) = agent_revocation(s, intent).await? {
        return revoked_agent(s, chain, intent, op, hash, revocation, chain_nonce, now).await;
    }
    let holding = chain.client.bundler().holding(hash).await;
    if let Ok(h) = &holding {
        if h.held {
            return if intent.status == IntentStatus::Signed {
                accepted(s, intent, None, IntentReason::AlreadyKnown, now).await
            } else {
                reschedule(s, intent, None, now).await
            };
        }
    }
    // Not held (the bundler says so), ahead of the chain, and an earlier sequence of its lane
    // will never be used: it can never validate (sending it again would only park it in the
    // bundler's queue).
    if let (Ok(h), Some(chain_nonce)) = (&holding, chain_nonce) {
        if let Some(missing) = missing_predecessor(s, intent, op, chain_nonce).await? {
            let evidence = json!({
                "source": "predecessor",
                "nonce": format!("{:#x}", op.nonce),
                "chainNonce": format!("{chain_nonce:#x}"),
                "missingSequence": missing,
                "checked": checked_json(Some(chain_nonce), Some(h)),
            });
            transition(
                s,
                intent,
                IntentStatus::Failed,
                IntentReason::PredecessorFailed,
                &evidence,
                None,
                None,
                now,
            )
            .await?;
            return Ok(());
        }
    }
    // Not held (or the bundler cannot say): send the identical signed operation again.
    match chain.client.submit(op).await {
        Ok(sub) => {
            let reason = if sub.already_known {
                IntentReason::AlreadyKnown
            } else {
                IntentReason::Resubmitted
            };
            accepted(s, intent, Some(&sub), reason, now).await
        }
        Err(e) => after_send_error(s, chain, intent, op, hash, &e)
            .await
            .map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_poll_interval_up_to_the_cap() {
        assert_eq!(next_check(100, 2, 0), 102);
        assert_eq!(next_check(100, 2, 1), 104);
        assert_eq!(next_check(100, 2, 3), 116);
        assert_eq!(next_check(100, 2, 20), 100 + MAX_BACKOFF_SECS);
        assert_eq!(next_check(100, 2, i64::MAX), 100 + MAX_BACKOFF_SECS);
        assert_eq!(next_check(100, 2, -5), 102);
        // A poll interval longer than the cap is the wait.
        assert_eq!(next_check(0, 600, 4), 600);
    }

    #[test]
    fn words_name_what_the_agent_can_do() {
        assert!(error_words(IntentStatus::Included, IntentReason::Receipt, None).is_none());
        assert!(error_words(IntentStatus::Pending, IntentReason::Accepted, None).is_none());
        let w = error_words(IntentStatus::Replaced, IntentReason::NoncePassed, None).unwrap();
        assert!(w.contains("never execute"), "{w}");
        let w = error_words(
            IntentStatus::Failed,
            IntentReason::BundlerRejected,
            Some("AA24 signature error"),
        )
        .unwrap();
        assert!(w.ends_with("AA24 signature error"), "{w}");
    }
}
