//! `audit verify` and `audit checkpoint`: the audit log against the checkpoints signed in the
//! TA (see `kms_proto::audit` and `kms_db::Db::verify_anchored`).

use std::time::Duration;

use kms_db::{AnchorError, AuditReport, Db};
use kms_proto::{AuditAnchor, AuditAnchorInfo, TaError};
use kms_tee_client::{TeeClient, TeeError};
use serde_json::json;

use crate::ctx::Ctx;
use crate::error::{AdminError, Exit, Result};
use crate::fmt::ts;
use crate::Report;

async fn ta_anchor(tee: &TeeClient) -> Result<AuditAnchorInfo> {
    Ok(tee.call_async(&AuditAnchor {}).await?)
}

/// Verify against one consistent view: the TA's anchor read before and after the database,
/// equal. A report that does not verify is read again (twice, half a second apart) before it
/// is believed: a checkpoint the companion is storing at that moment (signed by the TA, not in
/// the table yet) shows as missing for a few milliseconds.
async fn consistent_report(db: &Db, tee: &TeeClient) -> Result<(AuditAnchorInfo, AuditReport)> {
    let mut attempt = 0;
    loop {
        let before = ta_anchor(tee).await?;
        let report = db.verify_anchored(&before).await?;
        let after = ta_anchor(tee).await?;
        let settled = before == after && report.ok;
        if settled || attempt >= 2 {
            return Ok((after, report));
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn short(hex: &str) -> String {
    hex.get(..16)
        .map_or_else(|| hex.to_owned(), |h| format!("{h}…"))
}

/// `audit verify`.
pub async fn verify(ctx: &Ctx) -> Result<Report> {
    let db = ctx.db().await?;
    let tee = ctx.tee()?;
    let (_, report) = consistent_report(&db, &tee).await?;
    let mut human = format!(
        "Audit log: {} rows (last row {}), {} checkpoints stored.\n",
        report.rows, report.last_seq, report.checkpoints
    );
    match (&report.ta.key_id, report.ta.index) {
        (None, _) => human.push_str(
            "TA anchor: none yet (the TA has signed no checkpoint: nothing is anchored).\n",
        ),
        (Some(k), 0) => human.push_str(&format!("TA anchor: none yet; audit key {}.\n", short(k))),
        (Some(k), index) => human.push_str(&format!(
            "TA anchor: checkpoint {index} at row {}, signed {} (TA clock); audit key {}.\n",
            report.ta.seq,
            report
                .ta
                .ta_time
                .map_or_else(|| "?".into(), |t| ts(i64::try_from(t).unwrap_or(i64::MAX))),
            short(k),
        )),
    }
    for n in &report.notes {
        human.push_str(&format!("NOTE ({}): {}\n", n.code, n.message));
    }
    if report.unanchored_rows > 0 {
        human.push_str(&format!(
            "Not yet anchored: {} rows after row {} (the next checkpoint covers them; `kms-admin \
             audit checkpoint` makes one now).\n",
            report.unanchored_rows, report.ta.seq
        ));
    }
    let failure = if report.ok {
        human.push_str(
            "VERIFIED: the chain holds and matches every checkpoint and the TA's anchor.\n",
        );
        None
    } else {
        human.push_str("DOES NOT VERIFY:\n");
        let mut t = crate::fmt::Table::new(&["CODE", "ROW", "CHECKPOINT", "WHAT"]);
        for p in &report.problems {
            t.row(vec![
                p.code.to_owned(),
                p.seq.map_or_else(|| "-".into(), |s| s.to_string()),
                match (p.index, p.count) {
                    (Some(i), Some(n)) if n > 1 => format!("{i}..{}", i + n - 1),
                    (Some(i), _) => i.to_string(),
                    _ => "-".into(),
                },
                p.message.clone(),
            ]);
        }
        human.push_str(&t.render());
        let mut codes: Vec<&str> = report.problems.iter().map(|p| p.code).collect();
        codes.dedup();
        Some(
            AdminError::new(
                Exit::AuditFailed,
                format!(
                    "the audit log does not verify: {} problem(s) ({})",
                    report.problems.len(),
                    codes.join(", ")
                ),
            )
            .hint(
                "the log or its checkpoints were changed behind the companion's back, or the TA's \
                 state was restored; keep a copy of the database as it is before touching it",
            ),
        )
    };
    let json = serde_json::to_value(&report)
        .map_err(|e| AdminError::new(Exit::Failure, format!("encoding the report: {e}")))?;
    Ok(Report {
        human,
        json,
        failure,
    })
}

/// `audit checkpoint`.
pub async fn checkpoint(ctx: &Ctx) -> Result<Report> {
    let db = ctx.db().await?;
    let tee = ctx.tee()?;
    let mut attempt = 0;
    let done = loop {
        let info = ta_anchor(&tee).await?;
        let t = &tee;
        match db
            .anchor_audit_log(&info, |req| async move { t.call_async(&req).await })
            .await
        {
            Ok(done) => break done,
            // The companion's task came first: start again from the TA's new anchor.
            Err(AnchorError::Ta(TeeError::Ta(TaError::AuditCheckpointOutOfStep { .. })))
                if attempt < 3 =>
            {
                attempt += 1;
            }
            Err(AnchorError::Ta(e)) => return Err(e.into()),
            Err(AnchorError::Db(e)) => return Err(e.into()),
            Err(e @ AnchorError::Chain { .. }) => {
                return Err(AdminError::new(Exit::AuditFailed, e.to_string())
                    .hint("run `kms-admin audit verify` to see what does not verify"))
            }
        }
    };
    let mut human = String::new();
    if done.recovered {
        human.push_str("The TA's last checkpoint was missing from audit_checkpoints; stored it.\n");
    }
    if done.forks > 0 {
        human.push_str(&format!(
            "{} checkpoint(s) stored beside an older one of the same number: the TA's state was \
             restored since that one was signed (see `kms-admin audit verify`).\n",
            done.forks
        ));
    }
    match done.signed.last() {
        Some(last) => human.push_str(&format!(
            "The TA signed {} checkpoint(s): rows up to {} are anchored (checkpoint {}).\n",
            done.signed.len(),
            last.seq,
            last.index
        )),
        None => human.push_str(&format!(
            "Nothing new to anchor: the TA's anchor is at row {}.\n",
            done.seq
        )),
    }
    let json = json!({
        "anchoredSeq": done.seq,
        "recovered": done.recovered,
        "forks": done.forks,
        "signed": done.signed.iter().map(|c| json!({
            "index": c.index,
            "seq": c.seq,
            "anchor": hex::encode(c.anchor),
            "rowHead": hex::encode(c.row_head),
            "taTime": c.ta_time,
            "keyId": hex::encode(c.key_id),
        })).collect::<Vec<_>>(),
    });
    Ok(Report::ok(human, json))
}
