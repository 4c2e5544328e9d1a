//! `list-agent-keys`.

use alloy::primitives::{Address, U256};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use kms_chain::node::NodeClient;
use kms_chain::session::{SessionGrant, SessionSnapshot};
use kms_db::{AgentKey, AgentStatus};
use serde_json::{json, Value};

use crate::cli::StatusFilter;
use crate::ctx::{chain_error, Ctx};
use crate::error::{AdminError, Exit, Result};
use crate::fmt::{ether_of, ops_of, per_period, ts, ts_opt, window, Table};
use crate::Report;

/// How many on-chain session reads `list-agent-keys` keeps in flight.
const SESSION_READS_IN_FLIGHT: usize = 8;

/// Where a row's session facts come from.
enum Session {
    /// No session recorded in the database.
    None,
    /// From the database only (no chain configured, or `--no-chain`), with the whole grant
    /// when it was recorded.
    Db { grant: Option<SessionGrant> },
    /// Read from the chain, with the grant as recorded (its targets' functions and its tokens,
    /// whose caps and spending were read from the chain).
    Chain {
        snap: Box<SessionSnapshot>,
        grant: Option<SessionGrant>,
    },
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

/// The grant recorded with the session (`None` for sessions recorded before grants carried
/// functions, tokens and a gas cap, or unreadable JSON).
fn recorded_grant(a: &AgentKey) -> Option<SessionGrant> {
    a.session_json
        .as_deref()
        .and_then(|g| serde_json::from_str(g).ok())
}

async fn session_of(node: Option<&NodeClient>, a: &AgentKey) -> Result<Session> {
    let (Some(account), Some(key)) = (
        parse_addr(a.account.as_deref()),
        parse_addr(a.agent_address.as_deref()),
    ) else {
        return Ok(Session::None);
    };
    let grant = recorded_grant(a);
    let Some(node) = node else {
        return Ok(Session::Db { grant });
    };
    // The tokens' caps and spending come with the session, in the same call.
    let tokens: Vec<Address> = grant
        .iter()
        .flat_map(|g| g.tokens.iter().map(|l| l.token))
        .collect();
    let snap = node
        .read_session(account, key, &tokens)
        .await
        .map_err(chain_error)?;
    Ok(Session::Chain {
        snap: Box::new(snap),
        grant,
    })
}

/// A grant's targets and their functions, as JSON (`selectors` as 4-byte hex).
fn targets_json(grant: Option<&SessionGrant>) -> Value {
    match grant {
        Some(g) => json!(g
            .targets
            .iter()
            .map(|t| json!({
                "target": t.target,
                "anySelector": t.any_selector,
                "selectors": t.selectors.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            }))
            .collect::<Vec<_>>()),
        None => Value::Null,
    }
}

/// A zero address (the validator's "none") as `null`.
fn nonzero(a: Address) -> Value {
    if a == Address::ZERO {
        Value::Null
    } else {
        json!(a)
    }
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
        "VALUE",
        "PERIOD",
        "GAS",
        "OPS",
        "WINDOW",
    ]);
    let mut rows = Vec::new();
    for (a, s) in agents.iter().zip(sessions) {
        let account = a.account.clone().unwrap_or_else(|| "-".into());
        let dash = || "-".to_owned();
        let (state, value, period, gas, ops, win, session_json) = match s {
            Session::None => (dash(), dash(), dash(), dash(), dash(), dash(), Value::Null),
            Session::Db { grant } => {
                let g = grant.as_ref();
                (
                    "recorded".to_owned(),
                    // The database keeps no spending: only the chain knows it.
                    match a.spend_cap.as_deref().map(str::parse::<U256>) {
                        Some(Ok(cap)) => ether_of(None, Some(cap)),
                        Some(Err(_)) => a.spend_cap.clone().unwrap_or_default(),
                        None => "?".to_owned(),
                    },
                    per_period(
                        None,
                        g.map(|g| U256::from(g.period_cap)),
                        g.map(|g| g.period),
                    ),
                    ether_of(None, g.map(|g| U256::from(g.gas_cap))),
                    ops_of(None, g.map(|g| g.max_ops)),
                    match (a.valid_after, a.valid_until) {
                        (Some(f), Some(u)) => window(f, u),
                        _ => dash(),
                    },
                    json!({
                        "source": "database",
                        "account": a.account,
                        "spendCap": a.spend_cap,
                        "spent": null,
                        "gasCap": g.map(|g| g.gas_cap.to_string()),
                        "gasSpent": null,
                        "maxOps": g.map(|g| g.max_ops),
                        "opsUsed": null,
                        "period": g.map(|g| g.period),
                        "periodCap": g.map(|g| g.period_cap.to_string()),
                        "periodIndex": null,
                        "periodSpent": null,
                        "periodEndsAt": null,
                        "paymaster": g.and_then(|g| g.paymaster),
                        "validAfter": a.valid_after,
                        "validUntil": a.valid_until,
                        "revoker": a.revoker,
                        "targets": a.targets.as_deref().and_then(|t| serde_json::from_str::<Value>(t).ok()),
                        "targetPermissions": targets_json(g),
                        "tokens": g.map(|g| g
                            .tokens
                            .iter()
                            .map(|l| json!({"token": l.token, "cap": l.cap.to_string(), "spent": null}))
                            .collect::<Vec<_>>()),
                    }),
                )
            }
            Session::Chain { snap, grant } => {
                let session = &snap.session;
                let state = if session.epoch == 0 {
                    "none on chain"
                } else if session.active {
                    "active"
                } else {
                    "revoked"
                };
                let g = grant.as_ref();
                // The period containing the block's time, and what it spent (none without a
                // period).
                let periodic = session.period != 0;
                let current = |v: Value| if periodic { v } else { Value::Null };
                // Each recorded token as the chain counts it in the current grant.
                let tokens = g.map(|g| {
                    g.tokens
                        .iter()
                        .map(|l| {
                            let p = snap.permissions.get(&l.token).copied().unwrap_or_default();
                            json!({
                                "token": l.token,
                                "cap": p.token_cap.to_string(),
                                "spent": p.token_spent.to_string(),
                            })
                        })
                        .collect::<Vec<_>>()
                });
                (
                    state.to_owned(),
                    ether_of(
                        Some(U256::from(session.spent)),
                        Some(U256::from(session.spend_cap)),
                    ),
                    per_period(
                        Some(U256::from(snap.period_spent)),
                        Some(U256::from(session.period_cap)),
                        Some(session.period),
                    ),
                    ether_of(
                        Some(U256::from(session.gas_spent)),
                        Some(U256::from(session.gas_cap)),
                    ),
                    ops_of(Some(session.ops_used), Some(session.max_ops)),
                    window(
                        i64::try_from(session.valid_after).unwrap_or(i64::MAX),
                        i64::try_from(session.valid_until).unwrap_or(i64::MAX),
                    ),
                    json!({
                        "source": "chain",
                        "block": snap.block_number,
                        "account": a.account,
                        "active": session.active,
                        "epoch": session.epoch,
                        "spendCap": session.spend_cap.to_string(),
                        "spent": session.spent.to_string(),
                        "gasCap": session.gas_cap.to_string(),
                        "gasSpent": session.gas_spent.to_string(),
                        "maxOps": session.max_ops,
                        "opsUsed": session.ops_used,
                        "period": session.period,
                        "periodCap": session.period_cap.to_string(),
                        "periodIndex": current(json!(snap.period_index)),
                        "periodSpent": current(json!(snap.period_spent.to_string())),
                        "periodEndsAt": session
                            .period_window(snap.period_index)
                            .map(|(_, end)| end),
                        "paymaster": nonzero(session.paymaster),
                        "validAfter": session.valid_after,
                        "validUntil": session.valid_until,
                        "revoker": session.revoker,
                        "targetPermissions": targets_json(g),
                        "tokens": tokens,
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
            value,
            period,
            gas,
            ops,
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
            "{}{} agent key(s): {} active, {} revoked, {} pending, {} failed. Sessions read {}.\n\
             VALUE and GAS: spent/cap; PERIOD: spent in the current budget period/cap per \
             period (-: no periodic budget); OPS: operations used/limit (∞: no limit{}).\n",
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
            },
            if from_chain {
                ""
            } else {
                "; ?: known only on chain, or not recorded"
            },
        )
    };
    Report::ok(human, Value::Array(rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kms_chain::session::OnChainSession;

    const ACCOUNT: &str = "0x2222222222222222222222222222222222222222";
    const AGENT: &str = "0x3333333333333333333333333333333333333333";

    fn agent(index: u32) -> AgentKey {
        AgentKey {
            wallet_id: "12345678-9abc-4def-8011-223344556677".into(),
            agent_index: index,
            label: format!("bot{index}"),
            status: AgentStatus::Active,
            agent_address: Some(AGENT.into()),
            public_key: None,
            credential_hash: None,
            kid: None,
            generation: Some(1),
            issued_at: Some(1_700_000_000),
            expires_at: Some(1_700_086_400),
            failure: None,
            created_at: 1_700_000_000,
            updated_at: 1_700_000_000,
            revoked_at: None,
            account: Some(ACCOUNT.into()),
            targets: Some(format!("[\"{AGENT}\"]")),
            spend_cap: Some("1000000000000000000".into()),
            valid_after: Some(1_700_000_000),
            valid_until: Some(1_900_000_000),
            revoker: None,
            session_tx_hash: None,
            session_json: None,
        }
    }

    /// A session read from the chain at `1_700_000_000 + 3 days + 1 h`: 1 ETH in total, and
    /// `period_cap` wei per `period` seconds (0: none), of which period 3 spent `period_spent`.
    fn on_chain(period: u32, period_cap: u128, period_spent: u128) -> Session {
        let session = OnChainSession {
            valid_after: 1_700_000_000,
            valid_until: 1_900_000_000,
            spend_cap: 1_000_000_000_000_000_000,
            spent: 250_000_000_000_000_000,
            gas_cap: 10_000_000_000_000_000,
            epoch: 1,
            active: true,
            period,
            period_cap,
            ..OnChainSession::default()
        };
        let at = 1_700_000_000 + 3 * 86_400 + 3600;
        Session::Chain {
            snap: Box::new(SessionSnapshot {
                account: ACCOUNT.parse().unwrap(),
                key: AGENT.parse().unwrap(),
                validator: Address::repeat_byte(9),
                block_number: 42,
                block_timestamp: at,
                session,
                remaining_budget: U256::ZERO,
                allowed_targets: Default::default(),
                permissions: Default::default(),
                listed_selectors: Default::default(),
                at,
                period_index: session.period_index(at),
                period_spent,
            }),
            grant: None,
        }
    }

    #[test]
    fn chain_sessions_show_the_current_period() {
        let agents = [agent(0), agent(1)];
        // 0.1 ETH per day, 0.04 spent in period 3; and a session without a periodic budget.
        let sessions = [
            on_chain(86_400, 100_000_000_000_000_000, 40_000_000_000_000_000),
            on_chain(0, 0, 0),
        ];
        let r = render(&agents, &sessions, true);
        let lines: Vec<&str> = r.human.lines().collect();
        let header = lines[0];
        let titles: Vec<&str> = header.split_whitespace().collect();
        let value = titles.iter().position(|t| *t == "VALUE").unwrap();
        assert_eq!(
            titles[value..value + 3],
            ["VALUE", "PERIOD", "GAS"],
            "{header}"
        );
        // The cell sits under its title.
        assert_eq!(
            header.find("PERIOD"),
            lines[1].find("0.04/0.1 ETH per day"),
            "{}",
            r.human
        );
        assert!(
            lines[1].contains("0.25/1 ETH  0.04/0.1 ETH per day  0/0.01 ETH"),
            "{}",
            r.human
        );
        assert!(lines[2].contains("0.25/1 ETH  -"), "{}", r.human);
        assert!(r
            .human
            .contains("PERIOD: spent in the current budget period"));

        let periodic = &r.json[0]["session"];
        assert_eq!(periodic["source"], "chain");
        assert_eq!(periodic["period"], 86_400, "{periodic}");
        assert_eq!(periodic["periodCap"], "100000000000000000");
        assert_eq!(periodic["periodIndex"], 3);
        assert_eq!(periodic["periodSpent"], "40000000000000000");
        assert_eq!(
            periodic["periodEndsAt"],
            1_700_000_000 + 4 * 86_400 - 1,
            "the last second of period 3"
        );
        let plain = &r.json[1]["session"];
        assert_eq!(plain["period"], 0, "{plain}");
        assert_eq!(plain["periodCap"], "0");
        for none in ["periodIndex", "periodSpent", "periodEndsAt"] {
            assert!(plain[none].is_null(), "{none}: {plain}");
        }
    }
}
