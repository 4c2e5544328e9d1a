//! `revoke-agent-key`: database, TA, chain — each layer idempotent, each outcome reported.

use std::time::Duration;

use alloy::primitives::Address;
use kms_chain::client::{ChainError, RevokeOutcome};
use kms_chain::operator::TaOperator;
use kms_db::{AgentKey, AgentStatus, Db};
use kms_proto::{GetAgentState, RevokeAgentKey, TaError, WalletId};
use kms_tee_client::{TeeClient, TeeError};
use serde_json::json;

use crate::ctx::{chain_error, Ctx};
use crate::error::{AdminError, Exit, Result};
use crate::fmt::ts;
use crate::{audit, Report};

/// What became of one layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Revoked by this run.
    Revoked(String),
    /// Was already revoked (or there was nothing to revoke): a success, with a note.
    AlreadyDone(String),
    /// Not attempted on purpose (`--db-only`), a success.
    Skipped(String),
    /// Failed: the run exits non-zero with this error's code.
    Failed(AdminError),
}

impl Outcome {
    fn word(&self) -> &'static str {
        match self {
            Outcome::Revoked(_) => "revoked",
            Outcome::AlreadyDone(_) => "already-revoked",
            Outcome::Skipped(_) => "skipped",
            Outcome::Failed(_) => "FAILED",
        }
    }

    fn detail(&self) -> String {
        match self {
            Outcome::Revoked(d) | Outcome::AlreadyDone(d) | Outcome::Skipped(d) => d.clone(),
            Outcome::Failed(e) => match &e.hint {
                Some(h) => format!("{} ({h})", e.message),
                None => e.message.clone(),
            },
        }
    }

    fn failure(&self) -> Option<&AdminError> {
        match self {
            Outcome::Failed(e) => Some(e),
            _ => None,
        }
    }
}

/// Parses `<wallet_uuid>:<agent_index>`.
pub fn parse_key_id(s: &str) -> Result<(WalletId, u32)> {
    kms_proto::jwt::parse_key_id(s).ok_or_else(|| {
        AdminError::new(
            Exit::Usage,
            format!("{s:?} is not an agent key id: expected <wallet_uuid>:<agent_index>"),
        )
    })
}

/// `revoke-agent-key <wallet:index> [--db-only]`.
pub async fn revoke(ctx: &Ctx, key_id: &str, db_only: bool) -> Result<Report> {
    let (wallet, index) = parse_key_id(key_id)?;
    let key_id = kms_proto::jwt::key_id(&wallet, index);
    let wallet_str = wallet.to_uuid_string();
    let db = ctx.db().await?;
    let row = db.get_agent(&wallet_str, index).await?.ok_or_else(|| {
        AdminError::new(
            Exit::UnknownKey,
            format!("no agent key {key_id} in the database"),
        )
        .hint("`kms-admin list-agent-keys` shows the known keys")
    })?;

    let db_layer = db_layer(&db, &row).await;
    let tee = ctx.tee();
    let tee_layer = match &tee {
        Ok(tee) => tee_layer(&db, tee, &row, wallet).await,
        Err(e) => Outcome::Failed(e.clone()),
    };
    let chain_layer = if db_only {
        Outcome::Skipped("--db-only".into())
    } else {
        chain_layer(ctx, tee.as_ref().ok(), &row).await
    };

    let layers = [
        ("database", &db_layer),
        ("tee", &tee_layer),
        ("chain", &chain_layer),
    ];
    let failure = layers.iter().find_map(|(_, o)| o.failure()).cloned();
    let detail = layers
        .iter()
        .map(|(n, o)| format!("{n}={}", o.word()))
        .collect::<Vec<_>>()
        .join(" ");
    audit(
        &db,
        "RevokeAgentKey",
        Some(&key_id),
        if failure.is_none() { "ok" } else { "partial" },
        Some(&detail),
    )
    .await;

    let address = row.agent_address.clone().unwrap_or_else(|| "-".into());
    let mut human = format!("Agent key {key_id} ({address})\n");
    for (name, o) in &layers {
        human.push_str(&format!("  {name:<9} {:<16} {}\n", o.word(), o.detail()));
    }
    let failed = layers.iter().filter(|(_, o)| o.failure().is_some()).count();
    if failed == 0 {
        human.push_str("Revoked in every layer.\n");
    } else {
        human.push_str(&format!(
            "{failed} layer(s) failed: fix the cause and run `kms-admin revoke-agent-key {key_id}{}` \
             again to finish (layers already revoked are left as they are).\n",
            if db_only { " --db-only" } else { "" }
        ));
    }
    let json = json!({
        "keyId": key_id,
        "address": row.agent_address,
        "ok": failure.is_none(),
        "layers": layers.iter().map(|(name, o)| json!({
            "layer": name,
            "outcome": o.word().to_ascii_lowercase(),
            "detail": o.detail(),
            "exitCode": o.failure().map(|e| e.exit.code()),
        })).collect::<Vec<_>>(),
    });
    Ok(Report {
        human,
        json,
        failure: failure.map(|e| {
            AdminError::new(
                e.exit,
                format!("revocation of {key_id} incomplete: {}", e.message),
            )
        }),
    })
}

async fn db_layer(db: &Db, row: &AgentKey) -> Outcome {
    match row.status {
        AgentStatus::Revoked => Outcome::AlreadyDone(format!(
            "already revoked at {}",
            row.revoked_at.map(ts).unwrap_or_else(|| "?".into())
        )),
        AgentStatus::Failed => {
            Outcome::AlreadyDone("never issued (creation failed): nothing to revoke".into())
        }
        AgentStatus::Active | AgentStatus::Pending => {
            let now = kms_db::now_secs();
            match db
                .revoke_agent(&row.wallet_id, row.agent_index, None, now)
                .await
            {
                Ok(true) => Outcome::Revoked(format!("status revoked at {}", ts(now))),
                // Revoked concurrently (e.g. by the owner through the companion).
                Ok(false) => Outcome::AlreadyDone("already revoked".into()),
                Err(e) => Outcome::Failed(AdminError::db(e)),
            }
        }
    }
}

async fn tee_layer(db: &Db, tee: &TeeClient, row: &AgentKey, wallet: WalletId) -> Outcome {
    let index = row.agent_index;
    let state = match tee
        .call_async(&GetAgentState {
            wallet_id: wallet,
            agent_index: index,
        })
        .await
    {
        Ok(s) => s,
        Err(TeeError::Ta(TaError::AgentNotFound | TaError::WalletNotFound))
            if matches!(row.status, AgentStatus::Pending | AgentStatus::Failed) =>
        {
            return Outcome::AlreadyDone("the TA never created this key: nothing to revoke".into())
        }
        Err(TeeError::Ta(e @ (TaError::AgentNotFound | TaError::WalletNotFound))) => {
            return Outcome::Failed(AdminError::new(
                Exit::UnknownKey,
                format!("the TA does not know this key ({e}); is this the companion's TA?"),
            ))
        }
        Err(e) => return Outcome::Failed(AdminError::tee(e)),
    };
    let (outcome, generation) = if state.revoked {
        (
            Outcome::AlreadyDone(format!(
                "already revoked at {} (generation {})",
                state
                    .revoked_at
                    .map(|t| ts(i64::try_from(t).unwrap_or(i64::MAX)))
                    .unwrap_or_else(|| "?".into()),
                state.generation
            )),
            state.generation,
        )
    } else {
        match tee
            .call_async(&RevokeAgentKey {
                wallet_id: wallet,
                agent_index: index,
            })
            .await
        {
            Ok(after) => (
                Outcome::Revoked(format!(
                    "generation {} → {}: every credential of the key is refused",
                    state.generation, after.generation
                )),
                after.generation,
            ),
            Err(e) => return Outcome::Failed(AdminError::tee(e)),
        }
    };
    // Record the TA's generation; the DB status is already revoked (or was).
    if let Err(e) = db
        .revoke_agent(&row.wallet_id, index, Some(generation), kms_db::now_secs())
        .await
    {
        return Outcome::Failed(AdminError::db(e));
    }
    outcome
}

async fn chain_layer(ctx: &Ctx, tee: Option<&TeeClient>, row: &AgentKey) -> Outcome {
    let (Some(account), Some(key)) = (row.account.as_deref(), row.agent_address.as_deref()) else {
        return Outcome::AlreadyDone(
            "no on-chain session recorded for this key: nothing to revoke".into(),
        );
    };
    let (Ok(account), Ok(key)) = (account.parse::<Address>(), key.parse::<Address>()) else {
        return Outcome::Failed(AdminError::new(
            Exit::Failure,
            "the recorded session account or key address is not an address",
        ));
    };
    let Some(tee) = tee else {
        return Outcome::Failed(AdminError::new(
            Exit::TeeUnreachable,
            "the operator key is in the TA, which is unreachable",
        ));
    };
    let node = match ctx.node().await {
        Ok(n) => n,
        Err(e) => {
            let e = if e.exit == Exit::NotConfigured {
                e.hint(
                    "set --rpc-url / KMS_RPC_URL and --validator-address / \
                     KMS_VALIDATOR_ADDRESS, or pass --db-only to leave the chain alone",
                )
            } else {
                e
            };
            return Outcome::Failed(e);
        }
    };
    let operator = match TaOperator::open(tee.clone(), false).await {
        Ok(o) => o,
        Err(TeeError::Ta(TaError::OperatorKeyMissing)) => {
            return Outcome::Failed(
                AdminError::new(
                    Exit::UnknownKey,
                    "the TA has no operator key, so it cannot be this session's revoker",
                )
                .hint("the account owner must revoke the session"),
            )
        }
        Err(e) => return Outcome::Failed(AdminError::tee(e)),
    };
    let timeout = Duration::from_secs(ctx.config.tx_timeout_secs);
    match node.revoke_session(&operator, account, key, timeout).await {
        Ok(RevokeOutcome::Revoked {
            tx_hash,
            block_number,
        }) => Outcome::Revoked(format!(
            "revokeSession({account}, {key}) sent by the operator {}: tx {tx_hash} mined in \
             block {block_number}",
            operator_address(&operator)
        )),
        Ok(RevokeOutcome::AlreadyRevoked) => Outcome::AlreadyDone(format!(
            "the session of {key} on {account} is already revoked on chain"
        )),
        Err(ChainError::NoSession { .. }) => Outcome::AlreadyDone(format!(
            "no session of {key} on {account} on chain: nothing to revoke"
        )),
        Err(ChainError::NotRevoker { operator, revoker }) => Outcome::Failed(
            AdminError::new(
                Exit::Failure,
                format!(
                    "the operator {operator} is not this session's revoker ({revoker}), so the \
                     chain would refuse its revokeSession"
                ),
            )
            .hint("the account owner must revoke the session"),
        ),
        Err(e) => Outcome::Failed(chain_error(e)),
    }
}

fn operator_address(o: &TaOperator) -> Address {
    use kms_chain::operator::OperatorSigner;
    o.address()
}
