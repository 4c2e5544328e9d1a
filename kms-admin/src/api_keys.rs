//! `api-key create | list | revoke`.

use serde_json::{json, Value};

use crate::ctx::Ctx;
use crate::error::{AdminError, Exit, Result};
use crate::fmt::{ts, ts_opt, Table};
use crate::{audit, Report};

/// `api-key create [--label L]`: the key is in the report once; only its hash is stored.
pub async fn create(ctx: &Ctx, label: &str) -> Result<Report> {
    let db = ctx.db().await?;
    let now = kms_db::now_secs();
    let k = db.create_api_key(label, now).await?;
    audit(&db, "ApiKeyCreate", Some(&k.id), "ok", Some(label)).await;
    let human = format!(
        "Created API key {id} (label {label:?}).\n\
         Key (shown once, only its hash is stored; clients send it as the x-api-key header):\n\
         {key}\n",
        id = k.id,
        key = k.key
    );
    Ok(Report::ok(
        human,
        json!({"id": k.id, "key": k.key, "label": label, "createdAt": now}),
    ))
}

/// `api-key list`.
pub async fn list(ctx: &Ctx) -> Result<Report> {
    let db = ctx.db().await?;
    let keys = db.list_api_keys().await?;
    let mut t = Table::new(&["ID", "LABEL", "STATUS", "CREATED", "LAST USED", "REVOKED"]);
    let mut rows = Vec::new();
    for k in &keys {
        let status = if k.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        };
        t.row(vec![
            k.id.clone(),
            k.label.clone(),
            status.into(),
            ts(k.created_at),
            ts_opt(k.last_used_at),
            ts_opt(k.revoked_at),
        ]);
        rows.push(json!({
            "id": k.id, "label": k.label, "status": status, "createdAt": k.created_at,
            "lastUsedAt": k.last_used_at, "revokedAt": k.revoked_at,
        }));
    }
    let human = if keys.is_empty() {
        "No API keys.\n".to_owned()
    } else {
        let active = keys.iter().filter(|k| k.revoked_at.is_none()).count();
        format!(
            "{}{} API key(s), {active} active.\n",
            t.render(),
            keys.len()
        )
    };
    Ok(Report::ok(human, Value::Array(rows)))
}

/// `api-key revoke <id>`: unknown ids are an error (exit 3); an already revoked key is a
/// success with a note.
pub async fn revoke(ctx: &Ctx, id: &str) -> Result<Report> {
    let db = ctx.db().await?;
    let id = id.trim().to_ascii_lowercase();
    let keys = db.list_api_keys().await?;
    let Some(k) = keys.iter().find(|k| k.id == id) else {
        return Err(
            AdminError::new(Exit::UnknownKey, format!("no API key with id {id:?}"))
                .hint("`kms-admin api-key list` shows the ids"),
        );
    };
    if let Some(at) = k.revoked_at {
        return Ok(Report::ok(
            format!("API key {id} was already revoked at {}.\n", ts(at)),
            json!({"id": id, "revoked": true, "alreadyRevoked": true, "revokedAt": at}),
        ));
    }
    let now = kms_db::now_secs();
    let changed = db.revoke_api_key(&id, now).await?;
    audit(&db, "ApiKeyRevoke", Some(&id), "ok", None).await;
    Ok(Report::ok(
        format!("API key {id} revoked: requests with it are refused from now on.\n"),
        json!({"id": id, "revoked": true, "alreadyRevoked": !changed, "revokedAt": now}),
    ))
}
