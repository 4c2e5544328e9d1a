//! `accept-restore --yes`: make the TA accept a restored (older) sealed state, and bring the
//! database in line with it.
//!
//! The TA refuses a sealed state older than its monotonic counter (`StateRolledBack`), and the
//! companion stops serving the routes that reach the TA (`ta_rolled_back`) when the TA refuses,
//! or when the TA is behind the database. This command is the explicit way out, for an
//! operator who has decided that the restored state is the one to run with:
//!
//! 1. the TA (`AcceptRestore`) re-seals the state it holds with a version past its counter;
//! 2. the database follows the TA where the TA is behind it: an active agent unknown to the TA
//!    is revoked in the database, an active agent at an older generation in the TA takes that
//!    generation (its newest credential is then refused by the TA: the owner refreshes it); an
//!    agent revoked in the database but live in the restored TA is revoked in the TA again;
//! 3. the whole is recorded in the audit log (`AcceptRestore`, actor `kms-admin`).
//!
//! The companion re-checks while it refuses and serves again once the two agree.

use kms_db::{AgentStatus, Db};
use kms_proto::{
    AcceptRestore, GetAgentState, JwtSecretStatus, RestoreAccepted, RevokeAgentKey, TaError,
    WalletId,
};
use kms_tee_client::{TeeClient, TeeError};
use serde_json::json;

use crate::ctx::Ctx;
use crate::error::{AdminError, Exit, Result};
use crate::{audit, Report};

/// What was done to one agent key of the database.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Change {
    key_id: String,
    action: &'static str,
    detail: String,
}

/// `accept-restore --yes`.
pub async fn accept(ctx: &Ctx, yes: bool) -> Result<Report> {
    if !yes {
        return Err(AdminError::new(
            Exit::Usage,
            "accept-restore makes the TA serve its restored (older) state: agents revoked since \
             that copy was made come back, and every agent credential dies; nothing was changed",
        )
        .hint("read `kms-admin accept-restore --help`, then run it again with --yes"));
    }
    // The database first: the acceptance must be recorded in its audit log.
    let db = ctx.db().await?;
    let tee = ctx.tee()?;
    let accepted = match tee.call_async(&AcceptRestore {}).await {
        Ok(a) => a,
        Err(e) => {
            let e = AdminError::from(e);
            audit(
                &db,
                "AcceptRestore",
                None,
                &format!("error:{}", e.exit.name()),
                Some(&e.message),
            )
            .await;
            return Err(e);
        }
    };
    let (changes, mut failure) = match align_database(&db, &tee).await {
        Ok(c) => (c, None),
        Err((c, e)) => (c, Some(e)),
    };
    // The TA force-rotated its JWT secrets with a rolled-back state: jwt_secret_meta follows.
    if accepted.jwt_secrets_rotated {
        let status = match crate::ctx::jwt_meta_ta(&tee).await {
            Ok(ta) => tee
                .call_async(&JwtSecretStatus {})
                .await
                .map(|live| (ta, live))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.message),
        };
        let synced = match status {
            Ok((ta, live)) => db
                .sync_jwt_secret_meta_from_ta(&ta, &live, kms_db::now_secs())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        if let (Err(e), None) = (synced, &failure) {
            failure = Some(AdminError::new(
                Exit::Failure,
                format!("the TA rotated its JWT secrets but jwt_secret_meta could not follow: {e}"),
            ));
        }
    }
    let detail = audit_detail(&accepted, &changes);
    audit(
        &db,
        "AcceptRestore",
        None,
        if failure.is_none() { "ok" } else { "partial" },
        Some(&detail),
    )
    .await;

    let mut human = format!(
        "The TA accepted its sealed state{}.\n  sealed state version  {}\n  counter before        \
         {}\n  version now           {}\n",
        if accepted.was_rolled_back {
            " (it was rolled back)"
        } else {
            " (it was not rolled back: only its version moved)"
        },
        accepted.sealed_version,
        accepted.counter,
        accepted.new_version,
    );
    if accepted.jwt_secrets_rotated {
        human.push_str(
            "Its JWT secrets were force-rotated with it: every agent credential is dead (the \
             restored state would have verified superseded ones); owners refresh their agents' \
             credentials.\n",
        );
    }
    if changes.is_empty() {
        human.push_str("The database already agrees with the TA's agent keys.\n");
    } else {
        human.push_str("The database now follows the restored TA state:\n");
        for c in &changes {
            human.push_str(&format!("  {}  {}: {}\n", c.key_id, c.action, c.detail));
        }
    }
    if failure.is_none() {
        human.push_str(
            "The companion serves the TA routes again within seconds (it re-checks while it \
             refuses).\n",
        );
    }
    let json = json!({
        "sealedVersion": accepted.sealed_version,
        "counter": accepted.counter,
        "newVersion": accepted.new_version,
        "wasRolledBack": accepted.was_rolled_back,
        "jwtSecretsRotated": accepted.jwt_secrets_rotated,
        "database": changes.iter().map(|c| json!({
            "keyId": c.key_id,
            "action": c.action,
            "detail": c.detail,
        })).collect::<Vec<_>>(),
    });
    Ok(Report {
        human,
        json,
        failure,
    })
}

fn audit_detail(a: &RestoreAccepted, changes: &[Change]) -> String {
    let mut d = format!(
        "sealed_version={} counter={} new_version={} was_rolled_back={} jwt_secrets_rotated={}",
        a.sealed_version, a.counter, a.new_version, a.was_rolled_back, a.jwt_secrets_rotated
    );
    for c in changes {
        d.push_str(&format!(" {}={}", c.key_id, c.action));
    }
    d
}

async fn ta_state(
    tee: &TeeClient,
    wallet: WalletId,
    index: u32,
) -> std::result::Result<Option<kms_proto::AgentState>, TeeError> {
    match tee
        .call_async(&GetAgentState {
            wallet_id: wallet,
            agent_index: index,
        })
        .await
    {
        Ok(st) => Ok(Some(st)),
        Err(TeeError::Ta(TaError::AgentNotFound)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Step 2 of the module docs. On failure, what was done so far and the error.
async fn align_database(
    db: &Db,
    tee: &TeeClient,
) -> std::result::Result<Vec<Change>, (Vec<Change>, AdminError)> {
    let mut changes = Vec::new();
    let rows = match db.list_agents(None).await {
        Ok(r) => r,
        Err(e) => return Err((changes, e.into())),
    };
    // Several TAs over one database (docs/DEPLOY.md): the wallets another TA holds are not this
    // TA's to align (it does not know them). A TA is named by its operator key's address; a TA
    // without one (none was ever created) holds no wallet recorded on a TA.
    let elsewhere: std::collections::HashSet<String> = match tee
        .call_async(&kms_proto::OperatorKey {
            create_if_missing: false,
        })
        .await
    {
        Ok(op) => {
            let ta = format!("{:#x}", alloy::primitives::Address::from(op.address));
            match db.wallets_of_other_tas(&ta).await {
                Ok(w) => w.into_iter().collect(),
                Err(e) => return Err((changes, e.into())),
            }
        }
        Err(_) => Default::default(),
    };
    let now = kms_db::now_secs();
    for row in rows {
        if elsewhere.contains(&row.wallet_id) {
            continue;
        }
        let Ok(wallet) = row.wallet_id.parse::<WalletId>() else {
            continue;
        };
        let index = row.agent_index;
        let key_id = kms_proto::jwt::key_id(&wallet, index);
        let r = align_one(db, tee, &row, wallet, now).await;
        match r {
            Ok(Some((action, detail))) => changes.push(Change {
                key_id,
                action,
                detail,
            }),
            Ok(None) => {}
            Err(e) => return Err((changes, e)),
        }
    }
    Ok(changes)
}

/// Step 2 of the module docs for one row: what was done, if anything.
async fn align_one(
    db: &Db,
    tee: &TeeClient,
    row: &kms_db::AgentKey,
    wallet: WalletId,
    now: i64,
) -> Result<Option<(&'static str, String)>> {
    let index = row.agent_index;
    match row.status {
        AgentStatus::Active => match ta_state(tee, wallet, index).await? {
            None => {
                db.revoke_agent(&row.wallet_id, index, None, now).await?;
                Ok(Some((
                    "revoked-in-database",
                    "unknown to the restored TA (created after that copy); revoke its \
                         on-chain session with `kms-admin revoke-agent-key`"
                        .to_owned(),
                )))
            }
            Some(st) if row.generation.is_some_and(|g| g > st.generation) => {
                db.set_agent_generation(&row.wallet_id, index, st.generation, now)
                    .await?;
                Ok(Some((
                    "generation-adopted",
                    format!(
                        "generation {} -> {} (the TA refuses its newest credential: the \
                             owner refreshes it)",
                        row.generation.unwrap_or_default(),
                        st.generation
                    ),
                )))
            }
            Some(_) => Ok(None),
        },
        AgentStatus::Revoked => match ta_state(tee, wallet, index).await? {
            Some(st) if !st.revoked => {
                let st = tee
                    .call_async(&RevokeAgentKey {
                        wallet_id: wallet,
                        agent_index: index,
                    })
                    .await?;
                db.revoke_agent(&row.wallet_id, index, Some(st.generation), now)
                    .await?;
                Ok(Some((
                    "revoked-again-in-ta",
                    "revoked in the database, live in the restored TA".to_owned(),
                )))
            }
            _ => Ok(None),
        },
        // The companion's reconciliation handles interrupted creations.
        AgentStatus::Pending | AgentStatus::Failed => Ok(None),
    }
}
