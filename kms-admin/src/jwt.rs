//! `rotate-jwt-secret` and `jwt-secret-status`.

use kms_db::{JwtSecretMeta, JwtSecretState};
use kms_proto::{
    JwtRotateSecret, JwtSecretInfo, JwtSecretStatus, KidStatus, RotationMode, TaError, TaInfo,
};
use kms_tee_client::TeeError;
use serde_json::{json, Value};

use crate::ctx::Ctx;
use crate::error::{AdminError, Exit, Result};
use crate::fmt::{duration, ts, ts_opt, Table};
use crate::{audit, Report};

/// `rotate-jwt-secret [--force]`.
pub async fn rotate(ctx: &Ctx, force: bool) -> Result<Report> {
    // The database first: a missing database must not leave a rotation unrecorded.
    let db = ctx.db().await?;
    let tee = ctx.tee()?;
    let mode = if force {
        RotationMode::Force
    } else {
        RotationMode::Normal
    };
    let mode_name = if force { "force" } else { "normal" };
    let ta = crate::ctx::jwt_meta_ta(&tee).await?;
    let before = tee.call_async(&JwtSecretStatus {}).await?;
    let r = match tee.call_async(&JwtRotateSecret { mode }).await {
        Ok(r) => r,
        Err(TeeError::Ta(TaError::JwtRotationRefused { retry_at })) => {
            // Nothing changed in the TA; the table is still brought in line with it.
            let recorded = db
                .sync_jwt_secret_meta_from_ta(&ta, &before, kms_db::now_secs())
                .await;
            audit(&db, "JwtRotateSecret", None, "refused", Some(mode_name)).await;
            let ta_now = tee.call_async(&TaInfo {}).await.ok().map(|i| i.now);
            return Err(rotation_refused(
                &before,
                retry_at,
                ta_now,
                recorded.is_ok(),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let now = kms_db::now_secs();
    let recorded = db.sync_jwt_secret_meta_from_ta(&ta, &r.secrets, now).await;
    audit(
        &db,
        "JwtRotateSecret",
        r.current_kid.as_deref(),
        if recorded.is_ok() { "ok" } else { "db_error" },
        Some(mode_name),
    )
    .await;
    if let Err(e) = recorded {
        return Err(AdminError::new(
            Exit::Database,
            format!(
                "the TA rotated (new kid {}) but jwt_secret_meta could not be updated: {e}",
                r.current_kid.as_deref().unwrap_or("-")
            ),
        )
        .hint("run `kms-admin jwt-secret-status` to bring the table in line with the TA"));
    }
    let new_kid = r.current_kid.clone().unwrap_or_default();
    let mut previous = Vec::new();
    let mut human = format!("Rotated the JWT secret ({mode_name}).\nNew current kid: {new_kid}\n");
    for k in &before {
        if Some(&k.kid) == r.current_kid.as_ref() {
            continue;
        }
        let kept = r.secrets.iter().find(|s| s.kid == k.kid);
        match kept {
            Some(s) if s.status == KidStatus::VerifyOnly => {
                let until = s.retire_at.map(|t| i64::try_from(t).unwrap_or(i64::MAX));
                human.push_str(&format!(
                    "Previous kid {}: verify-only until {} (credentials it signed keep working \
                     until they expire)\n",
                    k.kid,
                    ts_opt(until)
                ));
                previous.push(json!({"kid": k.kid, "fate": "verify-only", "retireAt": until}));
            }
            Some(_) => {}
            None => {
                // A normal rotation removes only kids whose overlap has ended.
                let why = if force {
                    "every credential it signed is refused"
                } else {
                    "its overlap had ended"
                };
                human.push_str(&format!("Previous kid {}: purged ({why})\n", k.kid));
                previous.push(json!({"kid": k.kid, "fate": "purged"}));
            }
        }
    }
    if before.is_empty() {
        human.push_str("There was no previous kid.\n");
    }
    human.push_str("jwt_secret_meta updated to match the TA.\n");
    Ok(Report::ok(
        human,
        json!({
            "mode": mode_name,
            "newKid": r.current_kid,
            "previous": previous,
            "secrets": r.secrets.iter().map(|s| json!({
                "kid": s.kid,
                "status": match s.status { KidStatus::Current => "current", KidStatus::VerifyOnly => "verify-only" },
                "createdAt": s.created_at,
                "retireAt": s.retire_at,
            })).collect::<Vec<_>>(),
        }),
    ))
}

/// The error of a normal rotation the TA refused: which verify-only kids hold it up, from when
/// it can run, and the forced alternative.
fn rotation_refused(
    before: &[JwtSecretInfo],
    retry_at: u64,
    ta_now: Option<u64>,
    recorded: bool,
) -> AdminError {
    let secs = |t: u64| i64::try_from(t).unwrap_or(i64::MAX);
    // The verify-only kids still within their overlap (an expired one is purged, not counted).
    let mut live: Vec<&JwtSecretInfo> = before
        .iter()
        .filter(|k| k.status == KidStatus::VerifyOnly)
        .filter(|k| match (k.retire_at, ta_now) {
            (Some(t), Some(now)) => t > now,
            _ => true,
        })
        .collect();
    live.sort_by_key(|k| k.retire_at);
    let kids: Vec<String> = live
        .iter()
        .map(|k| format!("{} until {}", k.kid, ts_opt(k.retire_at.map(secs))))
        .collect();
    let wait = ta_now
        .map(|now| format!("; in {}", duration(secs(retry_at) - secs(now))))
        .unwrap_or_default();
    let mut message = format!(
        "the TA refused the normal rotation: it keeps {} verify-only kid(s) within their overlap \
         ({}), its limit of {}, and each may still verify live credentials until its retire \
         time, so none is dropped early. Nothing changed. A normal rotation can run from {} (unix {retry_at}, TA \
         clock{wait}).",
        live.len(),
        kids.join(", "),
        kms_proto::jwt::MAX_VERIFY_ONLY_KIDS,
        ts(secs(retry_at)),
    );
    if !recorded {
        message.push_str(" (jwt_secret_meta could not be brought in line with the TA.)");
    }
    AdminError::new(Exit::Failure, message).hint(format!(
        "run `kms-admin rotate-jwt-secret` again after {}; `kms-admin rotate-jwt-secret --force` \
         rotates now but purges every old kid, so every outstanding agent credential dies",
        ts(secs(retry_at))
    ))
}

/// `jwt-secret-status`: this host's TA's kids (with several TAs over one database, the others'
/// rows are theirs to show).
pub async fn status(ctx: &Ctx) -> Result<Report> {
    let db = ctx.db().await?;
    let tee = ctx.tee()?;
    let live = tee.call_async(&JwtSecretStatus {}).await?;
    let ta = crate::ctx::jwt_meta_ta(&tee).await?;
    let ta_now = tee
        .call_async(&TaInfo {})
        .await
        .map(|i| i64::try_from(i.now).unwrap_or(i64::MAX))
        .unwrap_or_else(|_| kms_db::now_secs());
    db.sync_jwt_secret_meta_from_ta(&ta, &live, kms_db::now_secs())
        .await?;
    let all = db.list_jwt_secret_meta_of(&ta).await?;
    Ok(render_status(&all, ta_now))
}

fn state_name(s: JwtSecretState) -> &'static str {
    s.as_str()
}

fn render_status(all: &[JwtSecretMeta], now: i64) -> Report {
    let mut t = Table::new(&["KID", "STATUS", "CREATED", "RETIRE-AT", "AGE"]);
    let mut rows = Vec::new();
    for k in all {
        // For a retired kid, "retire-at" is when it was seen gone from the TA.
        let retire = match k.status {
            JwtSecretState::Retired => k.retired_at.or(k.retire_at),
            _ => k.retire_at,
        };
        t.row(vec![
            k.kid.clone(),
            state_name(k.status).into(),
            ts(k.created_at),
            ts_opt(retire),
            duration(now - k.created_at),
        ]);
        rows.push(json!({
            "kid": k.kid,
            "status": state_name(k.status),
            "createdAt": k.created_at,
            "retireAt": k.retire_at,
            "retiredAt": k.retired_at,
            "ageSecs": now - k.created_at,
        }));
    }
    let human = if t.is_empty() {
        "No JWT secret in the TA yet: the TA creates the first kid when it mints the first agent \
         credential (or at the first rotation).\n"
            .into()
    } else {
        let live = all
            .iter()
            .filter(|k| k.status != JwtSecretState::Retired)
            .count();
        format!(
            "{}{} kid(s): {live} in the TA, {} retired.\n",
            t.render(),
            all.len(),
            all.len() - live
        )
    };
    Report::ok(human, Value::Array(rows))
}
