//! `list-agent-keys`.

use alloy::primitives::{Address, U256};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use kms_chain::node::NodeClient;
use kms_chain::session::OnChainSession;
use kms_db::{AgentKey, AgentStatus};
use serde_json::{json, Value};

use crate::cli::StatusFilter;
use crate::ctx::{chain_error, Ctx};
use crate::error::{AdminError, Exit, Result};
use crate::fmt::{ether, ether_str, ts, ts_opt, window, Table};
use crate::Report;

/// How many on-chain session reads `list-agent-keys` keeps in flight.
const SESSION_READS_IN_FLIGHT: usize = 8;

/// Where a row's session facts come from.
enum Session {
    /// No session recorded in the database.
    None,
    /// From the database only (no chain configured, or `--no-chain`).
    Db,
    /// Read from the chain at `block`.
    Chain { session: OnChainSession, block: u64 },
}

/// `list-agent-keys [--wallet W] [--status S] [--no-chain]`.
pub async fn list(
    ctx: &Ctx,
    wallet: Option<&str>,
    status: Option<StatusFilter>,
    no_chain: bool,
) -> Result<Report> {
    let wallet = match wallet {
        Some(w) => Some(
            w.parse::<kms_proto::WalletId>()
                .map_err(|e| AdminError::new(Exit::Usage, format!("--wallet {w:?}: {e}")))?
                .to_uuid_string(),
        ),
        None => None,
    };
    let db = ctx.db().await?;
    if let Some(w) = &wallet {
        if db.get_wallet(w).await?.is_none() {
            return Err(AdminError::new(
                Exit::UnknownKey,
                format!("no wallet {w} in the database"),
            ));
        }
    }
    let mut agents = db.list_agents(wallet.as_deref()).await?;
    if let Some(f) = status {
        agents.retain(|a| a.status == f.status());
    }
    let node = if !no_chain && ctx.chain_configured() {
        Some(ctx.node().await?)
    } else {
        None
    };
    // Several reads in flight at once (a wallet may have many agents), answers kept in order.
    let sessions: Vec<Session> = stream::iter(&agents)
        .map(|a| session_of(node.as_ref(), a))
        .buffered(SESSION_READS_IN_FLIGHT)
        .try_collect()
        .await?;
    Ok(render(&agents, &sessions, node.is_some()))
}

fn parse_addr(s: Option<&str>) -> Option<Address> {
    s.and_then(|s| s.parse().ok())
}

async fn session_of(node: Option<&NodeClient>, a: &AgentKey) -> Result<Session> {
    let (Some(account), Some(key)) = (
        parse_addr(a.account.as_deref()),
        parse_addr(a.agent_address.as_deref()),
    ) else {
        return Ok(Session::None);
    };
    let Some(node) = node else {
        return Ok(Session::Db);
    };
    let snap = node
        .read_session(account, key, &[])
        .await
        .map_err(chain_error)?;
    Ok(Session::Chain {
        session: snap.session,
        block: snap.block_number,
    })
}

fn status_name(s: AgentStatus) -> &'static str {
    s.as_str()
}

fn render(agents: &[AgentKey], sessions: &[Session], from_chain: bool) -> Report {
    let mut t = Table::new(&[
        "KEY ID",
        "IDX",
        "ADDRESS",
        "STATUS",
        "CREATED",
        "CRED EXPIRES",
        "ACCOUNT",
        "SESSION",
        "CAP",
        "SPENT",
        "WINDOW",
    ]);
    let mut rows = Vec::new();
    for (a, s) in agents.iter().zip(sessions) {
        let account = a.account.clone().unwrap_or_else(|| "-".into());
        let (state, cap, spent, win, session_json) = match s {
            Session::None => (
                "-".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                Value::Null,
            ),
            Session::Db => (
                "recorded".to_owned(),
                a.spend_cap.as_deref().map(ether_str).unwrap_or("-".into()),
                // The database keeps no spend: only the chain knows it.
                "? (no RPC)".to_owned(),
                match (a.valid_after, a.valid_until) {
                    (Some(f), Some(u)) => window(f, u),
                    _ => "-".into(),
                },
                json!({
                    "source": "database",
                    "account": a.account,
                    "spendCap": a.spend_cap,
                    "spent": null,
                    "validAfter": a.valid_after,
                    "validUntil": a.valid_until,
                    "revoker": a.revoker,
                    "targets": a.targets.as_deref().and_then(|t| serde_json::from_str::<Value>(t).ok()),
                }),
            ),
            Session::Chain { session, block } => {
                let state = if session.epoch == 0 {
                    "none on chain"
                } else if session.active {
                    "active"
                } else {
                    "revoked"
                };
                (
                    state.to_owned(),
                    ether(U256::from(session.spend_cap)),
                    ether(U256::from(session.spent)),
                    window(
                        i64::try_from(session.valid_after).unwrap_or(i64::MAX),
                        i64::try_from(session.valid_until).unwrap_or(i64::MAX),
                    ),
                    json!({
                        "source": "chain",
                        "block": block,
                        "account": a.account,
                        "active": session.active,
                        "epoch": session.epoch,
                        "spendCap": session.spend_cap.to_string(),
                        "spent": session.spent.to_string(),
                        "validAfter": session.valid_after,
                        "validUntil": session.valid_until,
                        "revoker": session.revoker,
                    }),
                )
            }
        };
        t.row(vec![
            a.key_id(),
            a.agent_index.to_string(),
            a.agent_address.clone().unwrap_or_else(|| "-".into()),
            status_name(a.status).into(),
            ts(a.created_at),
            ts_opt(a.expires_at),
            account,
            state,
            cap,
            spent,
            win,
        ]);
        rows.push(json!({
            "keyId": a.key_id(),
            "walletId": a.wallet_id,
            "agentIndex": a.agent_index,
            "label": a.label,
            "address": a.agent_address,
            "status": status_name(a.status),
            "generation": a.generation,
            "kid": a.kid,
            "createdAt": a.created_at,
            "credentialExpiresAt": a.expires_at,
            "revokedAt": a.revoked_at,
            "session": session_json,
        }));
    }
    let human = if agents.is_empty() {
        "No agent keys.\n".to_owned()
    } else {
        let count = |st: AgentStatus| agents.iter().filter(|a| a.status == st).count();
        format!(
            "{}{} agent key(s): {} active, {} revoked, {} pending, {} failed. Sessions read {}.\n",
            t.render(),
            agents.len(),
            count(AgentStatus::Active),
            count(AgentStatus::Revoked),
            count(AgentStatus::Pending),
            count(AgentStatus::Failed),
            if from_chain {
                "from the chain"
            } else {
                "from the database (no RPC URL/validator configured, or --no-chain)"
            }
        )
    };
    Report::ok(human, Value::Array(rows))
}
