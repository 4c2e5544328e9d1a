//! `revoke-agent-key`: database, TA, chain (every account where the agent has a live session) —
//! each layer idempotent, each outcome reported. The layers themselves are the companion's
//! ([`kms_companion::revocation`]): one code path for the HTTP route and this command.

use std::time::Duration;

use kms_companion::revocation::{
    describe, revoke_agent, AccountOutcome, AccountRevocation, ChainAccess, ChainSide, Layer,
    RevokeFailure, TaAccess, TaCallError, Unavailable,
};
use kms_companion::tee::{TaOperator, Tee};
use kms_proto::{TaError, WalletId};
use kms_tee_client::{TeeClient, TeeError};
use serde_json::json;

use crate::ctx::{rpc_unreachable, Ctx};
use crate::error::{AdminError, Exit, Result};
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

/// `revoke-agent-key <wallet:index> [--db-only]`: the companion's one revocation path
/// ([`kms_companion::revocation::revoke_agent`]) through this host's own TA session and node.
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

    let tee = ctx.tee();
    // Another TA's wallet is refused before any layer: this TA does not know the agent, and its
    // operator key is not the revoker of the agent's sessions.
    if let Ok(t) = &tee {
        crate::ctx::require_wallet_on_this_ta(&db, t, &wallet_str).await?;
    }
    let ta = AdminTa(tee.as_ref().ok().cloned());
    let chain = AdminChain {
        ctx,
        tee: tee.as_ref().ok(),
    };
    let done = revoke_agent(&db, &ta, (!db_only).then_some(&chain), wallet, &row, || {}).await;

    let db_layer = outcome(&done.database);
    // A TA session that could not even be opened fails the layer with its own error.
    let tee_layer = match &tee {
        Err(e) => Outcome::Failed(e.clone()),
        Ok(_) => outcome(&done.tee),
    };
    let chain_layer = outcome(&done.chain);
    let layers = [
        ("database", &db_layer),
        ("tee", &tee_layer),
        ("chain", &chain_layer),
    ];
    let accounts: Vec<(&AccountRevocation, Option<AdminError>)> = done
        .accounts
        .iter()
        .map(|a| (a, a.outcome.failure().map(admin_error)))
        .collect();
    let failure = layers.iter().find_map(|(_, o)| o.failure()).cloned();
    let mut detail = layers
        .iter()
        .map(|(n, o)| format!("{n}={}", o.word()))
        .collect::<Vec<_>>()
        .join(" ");
    for (a, _) in &accounts {
        detail.push_str(&format!(" {:#x}={}", a.account, a.outcome.status()));
    }
    audit(
        &db,
        "RevokeAgentKey",
        Some(&key_id),
        if failure.is_none() { "ok" } else { "partial" },
        Some(&detail),
    )
    .await;

    let address = row
        .agent_address
        .map_or_else(|| "-".to_owned(), |a| format!("{a:#x}"));
    let mut human = format!("Agent key {key_id} ({address})\n");
    for (name, o) in &layers {
        let text = match (name, &accounts[..]) {
            (&"chain", [_, ..]) if o.failure().is_none() => {
                format!("{} account(s), each below", accounts.len())
            }
            _ => o.detail(),
        };
        human.push_str(&format!("  {name:<9} {:<16} {text}\n", o.word()));
    }
    for (a, err) in &accounts {
        let word = match a.outcome {
            AccountOutcome::Failed(_) => "FAILED".to_owned(),
            ref o => o.status().replace('_', "-"),
        };
        let text = match err {
            Some(e) => failed_detail(e),
            None => describe(&a.outcome),
        };
        let pending = if a.pending_grant {
            " (a pending grant, found included)"
        } else {
            ""
        };
        human.push_str(&format!(
            "    {:#x} {word:<16} {text}{pending}\n",
            a.account
        ));
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
        "generation": done.generation,
        "layers": layers.iter().map(|(name, o)| json!({
            "layer": name,
            "outcome": o.word().to_ascii_lowercase(),
            "detail": o.detail(),
            "exitCode": o.failure().map(|e| e.exit.code()),
        })).collect::<Vec<_>>(),
        "sessions": accounts.iter().map(|(a, err)| json!({
            "account": format!("{:#x}", a.account),
            "outcome": a.outcome.status(),
            "transactionHash": a.outcome.tx_hash().map(|h| format!("{h:#x}")),
            "detail": match err {
                Some(e) => failed_detail(e),
                None => describe(&a.outcome),
            },
            "exitCode": err.as_ref().map(|e| e.exit.code()),
            "pendingGrant": a.pending_grant,
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

fn failed_detail(e: &AdminError) -> String {
    match &e.hint {
        Some(h) => format!("{} ({h})", e.message),
        None => e.message.clone(),
    }
}

fn outcome(layer: &Layer) -> Outcome {
    match layer {
        Layer::Revoked(d) => Outcome::Revoked(d.clone()),
        Layer::AlreadyDone(d) => Outcome::AlreadyDone(d.clone()),
        Layer::Skipped(d) => Outcome::Skipped(d.clone()),
        Layer::Failed(f) => Outcome::Failed(admin_error(f)),
    }
}

/// A revocation failure with its exit code (and hint).
fn admin_error(f: &RevokeFailure) -> AdminError {
    let e = match f {
        RevokeFailure::Database(m) => {
            AdminError::new(Exit::Database, format!("database unusable: {m}"))
        }
        RevokeFailure::Tee(t) => AdminError::tee(t.clone()),
        RevokeFailure::UnknownToTa(_) | RevokeFailure::OperatorMissing => {
            AdminError::new(Exit::UnknownKey, f.to_string())
        }
        RevokeFailure::ChainUnavailable { kind, .. } => AdminError::new(
            match kind {
                Unavailable::NotConfigured => Exit::NotConfigured,
                Unavailable::Node => Exit::RpcUnreachable,
                Unavailable::Tee => Exit::TeeUnreachable,
                Unavailable::Other => Exit::Failure,
            },
            f.to_string(),
        ),
        RevokeFailure::Chain { node: true, .. } => rpc_unreachable(f.to_string()),
        RevokeFailure::TaRolledBack(_)
        | RevokeFailure::BadRecord
        | RevokeFailure::NotRevoker { .. }
        | RevokeFailure::Chain { .. } => AdminError::new(Exit::Failure, f.to_string()),
    };
    match (f.hint(), &e.hint) {
        (Some(h), None) => e.hint(h),
        _ => e,
    }
}

/// The TA as `kms-admin` reaches it: its own session (none when it could not be opened).
struct AdminTa(Option<TeeClient>);

impl TaAccess for AdminTa {
    async fn call_ta<C>(&self, req: &C) -> std::result::Result<C::Output, TaCallError>
    where
        C: kms_proto::Command + Sync,
        C::Output: Send + 'static,
    {
        match &self.0 {
            Some(tee) => tee.call_ta(req).await,
            None => Err(TaCallError::Tee(TeeError::Unavailable {
                reason: "no TA session".into(),
                maybe_executed: false,
            })),
        }
    }
}

/// The chain as `kms-admin` reaches it: the configured node, the TA's operator key (never
/// created here), `--tx-timeout-secs`.
struct AdminChain<'a> {
    ctx: &'a Ctx,
    tee: Option<&'a TeeClient>,
}

impl ChainAccess for AdminChain<'_> {
    async fn open(&self) -> std::result::Result<ChainSide, RevokeFailure> {
        let Some(tee) = self.tee else {
            return Err(RevokeFailure::ChainUnavailable {
                message: "the operator key is in the TA, which is unreachable".into(),
                hint: None,
                kind: Unavailable::Tee,
            });
        };
        let node = self.ctx.node().await.map_err(|e| {
            let kind = match e.exit {
                Exit::NotConfigured => Unavailable::NotConfigured,
                Exit::RpcUnreachable => Unavailable::Node,
                _ => Unavailable::Other,
            };
            let hint = if kind == Unavailable::NotConfigured {
                Some(
                    "set --rpc-url / KMS_RPC_URL and --validator-address / \
                     KMS_VALIDATOR_ADDRESS, or pass --db-only to leave the chain alone"
                        .to_owned(),
                )
            } else {
                e.hint.clone()
            };
            RevokeFailure::ChainUnavailable {
                message: e.message,
                hint,
                kind,
            }
        })?;
        let operator = match TaOperator::open(Tee::standalone(tee.clone()), false).await {
            Ok(o) => o,
            Err(TeeError::Ta(TaError::OperatorKeyMissing)) => {
                return Err(RevokeFailure::OperatorMissing)
            }
            Err(e) => return Err(RevokeFailure::Tee(e)),
        };
        Ok(ChainSide {
            node,
            operator,
            timeout: Duration::from_secs(self.ctx.config.tx_timeout_secs),
        })
    }
}
