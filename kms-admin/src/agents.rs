//! `list-agent-keys`: every agent key, and every session of each (one row per grant, on
//! whichever account).

use alloy::primitives::{Address, U256};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use kms_chain::node::NodeClient;
use kms_chain::session::{SessionGrant, SessionSnapshot};
use kms_db::{AgentKey, AgentSession, AgentStatus, SessionStatus};
use serde_json::{json, Value};

use crate::cli::StatusFilter;
use crate::ctx::{chain_error, Ctx};
use crate::error::{AdminError, Exit, Result};
use crate::fmt::{ether_of, ops_of, per_period, ts, ts_opt, window, Table};
use crate::Report;

/// How many on-chain session reads `list-agent-keys` keeps in flight.
const SESSION_READS_IN_FLIGHT: usize = 8;

/// One session row and where its facts come from.
#[derive(Clone)]
struct Listed {
    row: AgentSession,
    /// The whole grant, when it was recorded.
    grant: Option<SessionGrant>,
    /// Read from the chain (active, revoked or revoke_failed sessions, when the chain is
    /// configured): the grant as recorded gives its targets' functions and its tokens, whose
    /// caps and spending were read from the chain.
    snap: Option<Box<SessionSnapshot>>,
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
    let rows = db.sessions_of_wallet(wallet.as_deref()).await?;
    let node = if !no_chain && ctx.chain_configured() {
        Some(ctx.node().await?)
    } else {
        None
    };
    // Each agent's session rows, newest first.
    let mut per_agent: Vec<Vec<AgentSession>> = agents
        .iter()
        .map(|a| {
            rows.iter()
                .filter(|s| s.wallet_id == a.wallet_id && s.agent_index == a.agent_index)
                .cloned()
                .collect()
        })
        .collect();
    // Several reads in flight at once (a wallet may have many sessions), answers kept in order.
    let jobs: Vec<(Option<Address>, AgentSession)> = agents
        .iter()
        .zip(per_agent.iter_mut())
        .flat_map(|(a, sessions)| {
            let key = a.agent_address;
            std::mem::take(sessions).into_iter().map(move |s| (key, s))
        })
        .collect();
    let counts: Vec<usize> = agents
        .iter()
        .map(|a| {
            jobs.iter()
                .filter(|(_, s)| s.wallet_id == a.wallet_id && s.agent_index == a.agent_index)
                .count()
        })
        .collect();
    let mut listed: Vec<Listed> = stream::iter(jobs)
        .map(|(key, row)| listed(node.as_ref(), key, row))
        .buffered(SESSION_READS_IN_FLIGHT)
        .try_collect()
        .await?;
    let mut grouped = Vec::with_capacity(agents.len());
    for n in counts {
        let rest = listed.split_off(n);
        grouped.push(std::mem::replace(&mut listed, rest));
    }
    Ok(render(&agents, &grouped, node.is_some()))
}

async fn listed(
    node: Option<&NodeClient>,
    key: Option<Address>,
    row: AgentSession,
) -> Result<Listed> {
    // The grant recorded with the session (`None` for sessions recorded before grants carried
    // functions, tokens and a gas cap, or unreadable JSON).
    let grant: Option<SessionGrant> = row
        .grant_json
        .as_deref()
        .and_then(|g| serde_json::from_str(g).ok());
    let on_chain = matches!(
        row.status,
        SessionStatus::Active | SessionStatus::Revoked | SessionStatus::RevokeFailed
    );
    let (Some(node), Some(key), Some(account), true) = (node, key, Some(row.account), on_chain)
    else {
        return Ok(Listed {
            row,
            grant,
            snap: None,
        });
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
    Ok(Listed {
        row,
        grant,
        snap: Some(Box::new(snap)),
    })
}

/// The agent's current session among its rows: the most recently activated active one, else the
/// most recently activated of those it had (as the companion's `/kms/list-agent-keys`).
fn current(sessions: &[Listed]) -> Option<&Listed> {
    let latest = |status: &[SessionStatus]| {
        sessions
            .iter()
            .filter(|l| status.contains(&l.row.status))
            .max_by_key(|l| (l.row.activated_at, l.row.id))
    };
    latest(&[SessionStatus::Active]).or_else(|| {
        latest(&[
            SessionStatus::Revoked,
            SessionStatus::RevokeFailed,
            SessionStatus::Superseded,
        ])
        .filter(|l| l.row.activated_at.is_some())
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

/// The table cells of one session (`SESSION`, `VALUE`, `PERIOD`, `GAS`, `OPS`, `WINDOW`) and its
/// JSON.
fn session_cells(l: &Listed) -> ([String; 6], Value) {
    let r = &l.row;
    let g = l.grant.as_ref();
    let cells;
    let mut json = match &l.snap {
        None => {
            cells = [
                r.status.to_string(),
                // The database keeps no spending: only the chain knows it.
                match r.spend_cap {
                    Some(cap) => ether_of(None, Some(cap)),
                    None => "?".to_owned(),
                },
                per_period(
                    None,
                    g.map(|g| U256::from(g.period_cap)),
                    g.map(|g| g.period),
                ),
                ether_of(None, g.map(|g| U256::from(g.gas_cap))),
                ops_of(None, g.map(|g| g.max_ops)),
                match (r.valid_after, r.valid_until) {
                    (Some(f), Some(u)) => window(f, u),
                    _ => "-".to_owned(),
                },
            ];
            json!({
                "source": "database",
                "account": format!("{:#x}", r.account),
                "spendCap": r.spend_cap.map(|c| c.to_string()),
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
                "validAfter": r.valid_after,
                "validUntil": r.valid_until,
                "revoker": r.revoker.map(|a| format!("{a:#x}")),
                "targets": r.targets.as_deref().and_then(|t| serde_json::from_str::<Value>(t).ok()),
                "targetPermissions": targets_json(g),
                "tokens": g.map(|g| g
                    .tokens
                    .iter()
                    .map(|l| json!({"token": l.token, "cap": l.cap.to_string(), "spent": null}))
                    .collect::<Vec<_>>()),
            })
        }
        Some(snap) => {
            let session = &snap.session;
            let chain_state = if session.epoch == 0 {
                "none on chain"
            } else if session.active {
                "active"
            } else {
                "revoked"
            };
            // The row's status, and what the chain says when it says otherwise.
            let state = if chain_state == r.status.as_str() {
                chain_state.to_owned()
            } else {
                format!("{} (chain: {chain_state})", r.status)
            };
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
            cells = [
                state,
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
            ];
            json!({
                "source": "chain",
                "block": snap.block_number,
                "account": format!("{:#x}", r.account),
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
            })
        }
    };
    if let Some(o) = json.as_object_mut() {
        o.insert("id".into(), json!(r.id));
        o.insert("status".into(), json!(r.status.as_str()));
        o.insert("accountKind".into(), json!(r.account_kind.as_str()));
        o.insert("lane".into(), json!(r.lane));
        o.insert("userOpHash".into(), json!(r.user_op_hash));
        o.insert("transactionHash".into(), json!(r.tx_hash));
        o.insert("revokeTransactionHash".into(), json!(r.revoke_tx_hash));
        o.insert("error".into(), json!(r.error));
        o.insert("createdAt".into(), json!(r.created_at));
        o.insert("activatedAt".into(), json!(r.activated_at));
        o.insert("revokedAt".into(), json!(r.revoked_at));
    }
    (cells, json)
}

fn render(agents: &[AgentKey], sessions: &[Vec<Listed>], from_chain: bool) -> Report {
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
    for (a, listed) in agents.iter().zip(sessions) {
        let agent_cells = vec![
            a.key_id(),
            a.agent_index.to_string(),
            a.agent_address
                .map_or_else(|| "-".to_owned(), |a| format!("{a:#x}")),
            status_name(a.status).into(),
            ts(a.created_at),
            ts_opt(a.expires_at),
        ];
        let mut all = Vec::new();
        if listed.is_empty() {
            let mut cells = agent_cells.clone();
            cells.extend(std::iter::repeat_n("-".to_owned(), 7));
            t.row(cells);
        }
        for (i, l) in listed.iter().enumerate() {
            let (session, json) = session_cells(l);
            // The key's own columns on its first line only.
            let mut cells = if i == 0 {
                agent_cells.clone()
            } else {
                let mut c = vec![a.key_id()];
                c.extend(std::iter::repeat_n(String::new(), 5));
                c
            };
            // An ERC-7579 account says so, with the agent's lane there.
            cells.push(match (l.row.account_kind, l.row.lane) {
                (kms_db::AccountKind::Erc7579, Some(lane)) => {
                    format!("{:#x} (erc7579, lane {lane})", l.row.account)
                }
                (kms_db::AccountKind::Erc7579, None) => {
                    format!("{:#x} (erc7579)", l.row.account)
                }
                _ => format!("{:#x}", l.row.account),
            });
            cells.extend(session);
            t.row(cells);
            all.push(json);
        }
        let current = current(listed).and_then(|c| listed.iter().position(|l| std::ptr::eq(l, c)));
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
            "session": current.map_or(Value::Null, |i| all[i].clone()),
            "sessions": all,
        }));
    }
    let human = if agents.is_empty() {
        "No agent keys.\n".to_owned()
    } else {
        let count = |st: AgentStatus| agents.iter().filter(|a| a.status == st).count();
        let live = sessions
            .iter()
            .flatten()
            .filter(|l| l.row.status == SessionStatus::Active)
            .count();
        format!(
            "{}{} agent key(s): {} active, {} revoked, {} pending, {} failed; {} active \
             session(s). Sessions read {}.\n\
             One line per session (a key on several accounts has several). VALUE and GAS: \
             spent/cap; PERIOD: spent in the current budget period/cap per period (-: no \
             periodic budget); OPS: operations used/limit (∞: no limit{}).\n",
            t.render(),
            agents.len(),
            count(AgentStatus::Active),
            count(AgentStatus::Revoked),
            count(AgentStatus::Pending),
            count(AgentStatus::Failed),
            live,
            if from_chain {
                "from the chain (active, revoked and revoke_failed ones; the others from the \
                 database)"
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
            agent_address: Some(AGENT.parse().unwrap()),
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
        }
    }

    /// A session row of agent `index` on `account`.
    fn row(id: i64, index: u32, account: &str, status: SessionStatus) -> AgentSession {
        AgentSession {
            id,
            wallet_id: "12345678-9abc-4def-8011-223344556677".into(),
            agent_index: index,
            account: account.parse().unwrap(),
            account_kind: kms_db::AccountKind::AgentAccount,
            lane: None,
            status,
            grant_json: None,
            targets: Some(format!("[\"{AGENT}\"]")),
            spend_cap: Some("1000000000000000000".parse().unwrap()),
            valid_after: Some(1_700_000_000),
            valid_until: Some(1_900_000_000),
            revoker: None,
            user_op_hash: Some(format!("0x{id:064x}")),
            user_op_json: None,
            tx_hash: None,
            error: None,
            revoke_tx_hash: None,
            created_at: 1_700_000_000 + id,
            updated_at: 1_700_000_000 + id,
            activated_at: (status != SessionStatus::Pending).then_some(1_700_000_000 + id),
            revoked_at: None,
        }
    }

    /// A session read from the chain at `1_700_000_000 + 3 days + 1 h`: 1 ETH in total, and
    /// `period_cap` wei per `period` seconds (0: none), of which period 3 spent `period_spent`.
    fn on_chain(period: u32, period_cap: u128, period_spent: u128) -> Listed {
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
        Listed {
            row: row(1, 0, ACCOUNT, SessionStatus::Active),
            snap: Some(Box::new(SessionSnapshot {
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
            })),
            grant: None,
        }
    }

    #[test]
    fn chain_sessions_show_the_current_period() {
        let agents = [agent(0), agent(1)];
        // 0.1 ETH per day, 0.04 spent in period 3; and a session without a periodic budget.
        let sessions = [
            vec![on_chain(
                86_400,
                100_000_000_000_000_000,
                40_000_000_000_000_000,
            )],
            vec![on_chain(0, 0, 0)],
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

    /// One key granted on two accounts (and a grant still pending on a third): a line each,
    /// every one in `sessions`, the most recently activated as `session`.
    #[test]
    fn every_session_of_a_key_is_listed() {
        let agents = [agent(0)];
        let other = "0x4444444444444444444444444444444444444444";
        let third = "0x5555555555555555555555555555555555555555";
        let sessions = [vec![
            Listed {
                row: row(3, 0, third, SessionStatus::Pending),
                grant: None,
                snap: None,
            },
            Listed {
                row: row(2, 0, other, SessionStatus::Active),
                grant: None,
                snap: None,
            },
            Listed {
                row: row(1, 0, ACCOUNT, SessionStatus::Revoked),
                grant: None,
                snap: None,
            },
        ]];
        let r = render(&agents, &sessions, false);
        let lines: Vec<&str> = r.human.lines().collect();
        assert!(
            lines[1].contains(third) && lines[1].contains("pending"),
            "{}",
            r.human
        );
        assert!(
            lines[2].contains(other) && lines[2].contains("active"),
            "{}",
            r.human
        );
        assert!(
            lines[3].contains(ACCOUNT) && lines[3].contains("revoked"),
            "{}",
            r.human
        );
        assert!(r.human.contains("1 active session(s)"), "{}", r.human);
        let key = &r.json[0];
        let listed = key["sessions"].as_array().unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|s| (
                    s["account"].as_str().unwrap(),
                    s["status"].as_str().unwrap()
                ))
                .collect::<Vec<_>>(),
            [(third, "pending"), (other, "active"), (ACCOUNT, "revoked")]
        );
        assert_eq!(key["session"]["account"], other, "{key}");
        assert_eq!(key["session"]["source"], "database");
        assert_eq!(key["session"]["userOpHash"], format!("0x{:064x}", 2));
        // Without an active one, the most recently activated it had.
        let r = render(&agents, &[sessions[0][2..].to_vec()], false);
        assert_eq!(r.json[0]["session"]["status"], "revoked");
        let r = render(&agents, &[Vec::new()], false);
        assert!(r.json[0]["session"].is_null());
        assert_eq!(r.json[0]["sessions"], json!([]));
    }
}
