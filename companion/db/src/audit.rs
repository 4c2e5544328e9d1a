//! The append-only, hash-chained audit log.
//!
//! Each row stores `prev_hash` (the previous row's hash, or
//! [`GENESIS_HASH`] for the first) and its own
//! `hash = SHA-256("kms-audit/v1" ‖ prev_hash ‖ seq ‖ ts ‖ actor ‖ action ‖
//! key_id ‖ outcome ‖ user_op_hash ‖ detail)`, every field length-prefixed
//! (absent fields with a distinct marker). Editing, deleting or reordering a
//! row breaks the chain, which [`Db::verify_audit_chain`] reports. Triggers
//! also refuse UPDATE and DELETE on the table.
//!
//! The chain alone does not catch a deleted tail (a prefix of a chain is a
//! chain) or a rewrite that recomputes every hash: the TA's anchor over the row
//! hashes does (`anchor.rs`, [`Db::verify_anchored`]).
//!
//! Durability: the pool commits with `synchronous = NORMAL` (WAL): a commit
//! survives a crash of the process, not a power loss. An [`AuditAppender`]
//! opened with `full_sync` (the companion's writer with `--audit-durability
//! sync`) commits under `synchronous = FULL`: the WAL is fsynced before the
//! commit returns.
//!
//! Events must never carry secrets (no JWTs, API keys, assertions).

use std::sync::Arc;

use crate::{AuditTail, Db, Result};
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;
use sqlx::Connection;

use crate::{begin_write_on, write_begin, Backend};

/// `prev_hash` of the first row.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// When (unix seconds).
    pub ts: i64,
    /// Who: `api-key:<id>`, `agent:<keyId>`, `open-mode`, `system`, ...
    pub actor: String,
    /// What: `CreateAgentKey`, `SignAgent`, `SignHash`, ...
    pub action: String,
    /// The key concerned (wallet id or agent key id).
    pub key_id: Option<String>,
    /// `ok` or `refused:<code>` / `error:<code>`.
    pub outcome: String,
    /// The userOpHash signed, where there is one.
    pub user_op_hash: Option<String>,
    /// Non-secret detail (e.g. a derivation path or an address).
    pub detail: Option<String>,
}

/// A stored row.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditRecord {
    /// Sequence number (1, 2, ...).
    pub seq: i64,
    /// When.
    pub ts: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Key.
    pub key_id: Option<String>,
    /// Outcome.
    pub outcome: String,
    /// userOpHash.
    pub user_op_hash: Option<String>,
    /// Detail.
    pub detail: Option<String>,
    /// Previous row's hash.
    pub prev_hash: String,
    /// This row's hash.
    pub hash: String,
}

/// Result of [`Db::verify_audit_chain`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditVerification {
    /// Rows checked.
    pub rows: u64,
    /// The first row that does not verify, with the reason; `None` when the
    /// whole chain verifies.
    pub first_bad: Option<(i64, String)>,
}

impl AuditVerification {
    /// Whether the chain verifies.
    pub fn is_ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

fn field(h: &mut Sha256, v: Option<&str>) {
    match v {
        Some(s) => {
            h.update(u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
            h.update(s.as_bytes());
        }
        None => h.update(u32::MAX.to_be_bytes()),
    }
}

pub(crate) fn row_hash(prev: &str, seq: i64, e: &AuditEvent) -> String {
    hex::encode(row_digest(prev, seq, e))
}

/// [`row_hash`] as bytes.
fn row_digest(prev: &str, seq: i64, e: &AuditEvent) -> kms_proto::B256 {
    let mut h = Sha256::new();
    h.update(b"kms-audit/v1");
    field(&mut h, Some(prev));
    h.update(seq.to_be_bytes());
    h.update(e.ts.to_be_bytes());
    field(&mut h, Some(&e.actor));
    field(&mut h, Some(&e.action));
    field(&mut h, e.key_id.as_deref());
    field(&mut h, Some(&e.outcome));
    field(&mut h, e.user_op_hash.as_deref());
    field(&mut h, e.detail.as_deref());
    h.finalize().into()
}

/// Rows per multi-row INSERT (10 parameters each; SQLite allows 32766, PostgreSQL 65535).
const AUDIT_ROWS_PER_INSERT: usize = 128;

/// Append `events` in one write transaction on `conn` (SQLite's `BEGIN IMMEDIATE`, PostgreSQL's
/// advisory write lock: see [`Db::begin_write`]), so the chain's head read here is still the head
/// when the rows are inserted.
async fn append_on(
    conn: &mut AnyConnection,
    backend: Backend,
    events: &[AuditEvent],
    tail: Option<&AuditTail>,
) -> Result<Head> {
    let tx = conn.begin_with(write_begin(backend)).await?;
    let mut tx = begin_write_on(tx, backend).await?;
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
    let (mut seq, mut prev) = last.unwrap_or((0, GENESIS_HASH.to_owned()));
    let start = (seq, prev.clone());
    let mut hashes = Vec::with_capacity(events.len());
    // Multi-row INSERTs: one statement per chunk instead of one per
    // event (each statement is a round trip to the database).
    for chunk in events.chunks(AUDIT_ROWS_PER_INSERT) {
        let rows = chain_rows(&mut seq, &mut prev, chunk);
        hashes.extend(rows.iter().map(|r| r.4));
        // Numbered placeholders (sqlx's QueryBuilder writes `?` for `Any`, which PostgreSQL
        // does not understand).
        let mut sql = String::from(
            "INSERT INTO audit_log (seq, ts, actor, action, key_id, outcome, user_op_hash, \
             detail, prev_hash, hash) VALUES ",
        );
        for i in 0..rows.len() {
            let b = i * 10;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for j in 1..=10 {
                if j > 1 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", b + j));
            }
            sql.push(')');
        }
        bind_rows(sqlx::query(&sql), rows).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    if let Some(tail) = tail {
        remember(tail, &start, &hashes);
    }
    Ok((seq, prev))
}

/// Tell `tail` that the rows with these `hashes` were committed after `start`.
fn remember(tail: &AuditTail, start: &Head, hashes: &[kms_proto::B256]) {
    match hex::decode(&start.1).ok().and_then(|h| h.try_into().ok()) {
        Some(prev) => tail.committed(start.0, &prev, hashes),
        // Not a head this module writes: remember nothing rather than something wrong.
        None => tail.forget(),
    }
}

/// The chain's head: the last row's `seq` and `hash`.
type Head = (i64, String);

/// One row to insert: `(seq, event, prev_hash, hash)`, and the hash as bytes.
type ChainRow<'e> = (i64, &'e AuditEvent, String, String, kms_proto::B256);

/// Chains `events` after `(seq, prev)`, advancing both to the last new row.
fn chain_rows<'e>(seq: &mut i64, prev: &mut String, events: &'e [AuditEvent]) -> Vec<ChainRow<'e>> {
    let mut rows = Vec::with_capacity(events.len());
    for e in events {
        *seq += 1;
        let digest = row_digest(prev, *seq, e);
        let hash = hex::encode(digest);
        rows.push((*seq, e, std::mem::replace(prev, hash.clone()), hash, digest));
    }
    rows
}

/// Binds `rows`' ten columns each, in `audit_log`'s insert order.
fn bind_rows<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    rows: Vec<ChainRow<'q>>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for (seq, e, prev_hash, hash, _) in rows {
        q = q
            .bind(seq)
            .bind(e.ts)
            .bind(e.actor.as_str())
            .bind(e.action.as_str())
            .bind(e.key_id.as_deref())
            .bind(e.outcome.as_str())
            .bind(e.user_op_hash.as_deref())
            .bind(e.detail.as_deref())
            .bind(prev_hash)
            .bind(hash);
    }
    q
}

/// SQLite's append in one statement, chained after `head` (what this appender wrote last):
/// `INSERT … SELECT … WHERE` the table's last row is still `head`. A single statement in
/// autocommit is atomic under SQLite's write lock (in WAL mode a snapshot that another writer
/// has moved past cannot write: `SQLITE_BUSY_SNAPSHOT`), so the rows go in only if nobody
/// appended since; one round trip to the connection's worker thread instead of the four of
/// [`append_on`] (begin, head, insert, commit). `Ok(None)` when the head moved or the write
/// met a busy database: nothing was written and the caller takes [`append_on`]'s path.
async fn append_after_sqlite(
    conn: &mut AnyConnection,
    head: &Head,
    events: &[AuditEvent],
    tail: Option<&AuditTail>,
) -> Result<Option<Head>> {
    let (mut seq, mut prev) = head.clone();
    let rows = chain_rows(&mut seq, &mut prev, events);
    let hashes: Vec<kms_proto::B256> = rows.iter().map(|r| r.4).collect();
    let mut sql = String::from(
        "INSERT INTO audit_log (seq, ts, actor, action, key_id, outcome, user_op_hash, detail, \
         prev_hash, hash) SELECT * FROM (VALUES ",
    );
    for i in 0..rows.len() {
        sql.push_str(if i == 0 { "" } else { ", " });
        sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    }
    sql.push_str(") WHERE (SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1) = ?");
    let q = bind_rows(sqlx::query(&sql), rows).bind(head.1.as_str());
    match q.execute(&mut *conn).await {
        Ok(done) if done.rows_affected() == events.len() as u64 => {
            if let Some(tail) = tail {
                remember(tail, head, &hashes);
            }
            Ok(Some((seq, prev)))
        }
        Ok(done) if done.rows_affected() == 0 => Ok(None),
        Ok(done) => Err(crate::DbError::Invalid(format!(
            "audit append wrote {} of {} rows",
            done.rows_affected(),
            events.len()
        ))),
        Err(sqlx::Error::Database(e)) if is_busy(e.code().as_deref()) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// SQLite's `SQLITE_BUSY` and its extended codes (`BUSY_RECOVERY`, `BUSY_SNAPSHOT`,
/// `BUSY_TIMEOUT`): the statement did not run.
fn is_busy(code: Option<&str>) -> bool {
    code.and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| c & 0xff == 5)
}

/// A connection of its own for one audit writer (outside the pool), set up once: with
/// `full_sync` it commits under `PRAGMA synchronous = FULL` (see [`Db::append_audit_synced`])
/// without switching the pragma for every batch.
pub struct AuditAppender {
    conn: AnyConnection,
    backend: Backend,
    /// The chain's head after this appender's last append (SQLite: the next append tries
    /// [`append_after_sqlite`] first).
    head: Option<Head>,
    /// Appends done in one statement (see [`AuditAppender::single_statement_appends`]).
    single: u64,
    /// Where committed stretches are remembered for the TA's checkpoints, if anywhere.
    tail: Option<Arc<AuditTail>>,
}

impl std::fmt::Debug for AuditAppender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditAppender")
    }
}

impl AuditAppender {
    /// How many appends went in as one statement after this appender's own head (SQLite),
    /// rather than as a write transaction that reads the head first.
    pub fn single_statement_appends(&self) -> u64 {
        self.single
    }

    /// Remember every stretch this appender commits in `tail` (see [`AuditTail`]), for
    /// [`Db::anchor_audit_log_from`].
    pub fn remembering(mut self, tail: Arc<AuditTail>) -> Self {
        self.tail = Some(tail);
        self
    }

    /// Append events, in order, in one transaction.
    pub async fn append(&mut self, events: &[AuditEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        // Forget the head first: after a failure nothing is assumed about it.
        let head = self.head.take();
        let (conn, backend, tail) = (&mut self.conn, self.backend, self.tail.as_deref());
        let single = &mut self.single;
        let appended = async {
            if let (Backend::Sqlite, Some(head)) = (backend, head) {
                if events.len() <= AUDIT_ROWS_PER_INSERT {
                    if let Some(next) = append_after_sqlite(conn, &head, events, tail).await? {
                        *single += 1;
                        return Ok(next);
                    }
                }
            }
            append_on(conn, backend, events, tail).await
        }
        .await;
        match appended {
            Ok(next) => {
                self.head = Some(next);
                Ok(())
            }
            Err(e) => {
                // Committed or not is unknown: the next stretch starts from the table's head.
                if let Some(tail) = tail {
                    tail.forget();
                }
                Err(e)
            }
        }
    }
}

/// The statement that makes every commit on a connection durable against a power loss: SQLite's
/// `synchronous = FULL` (in WAL mode the WAL is fsynced at each commit); on PostgreSQL
/// `synchronous_commit = on`, its default.
fn full_sync_on(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "PRAGMA synchronous = FULL",
        Backend::Postgres => "SET synchronous_commit = on",
    }
}

/// The first reason `r` does not follow `prev` at `expect_seq`, if any.
pub(crate) fn row_fault(r: &AuditRecord, expect_seq: i64, prev: &str) -> Option<&'static str> {
    if r.seq != expect_seq {
        return Some("sequence gap (a row was deleted or inserted)");
    }
    if r.prev_hash != prev {
        return Some("prev_hash does not match the previous row");
    }
    let e = AuditEvent {
        ts: r.ts,
        actor: r.actor.clone(),
        action: r.action.clone(),
        key_id: r.key_id.clone(),
        outcome: r.outcome.clone(),
        user_op_hash: r.user_op_hash.clone(),
        detail: r.detail.clone(),
    };
    if row_hash(prev, r.seq, &e) != r.hash {
        return Some("row hash does not match its contents (edited)");
    }
    None
}

impl Db {
    /// A dedicated connection for an audit writer (same file and settings as the pool's).
    /// After a failed append, drop it and open another.
    pub async fn audit_appender(&self, full_sync: bool) -> Result<AuditAppender> {
        use sqlx::ConnectOptions;
        let mut conn = self.pool.connect_options().connect().await?;
        crate::prepare_connection(&mut conn, self.backend, self.busy_timeout).await?;
        if full_sync {
            sqlx::query(full_sync_on(self.backend))
                .execute(&mut conn)
                .await?;
        }
        Ok(AuditAppender {
            conn,
            backend: self.backend,
            head: None,
            single: 0,
            tail: None,
        })
    }

    /// Append events, in order, in one transaction (committed with the pool's
    /// `synchronous = NORMAL`: durable once it returns against a crash of the process, not
    /// against a power loss or an OS crash; see [`Db::append_audit_synced`]).
    pub async fn append_audit(&self, events: &[AuditEvent]) -> Result<()> {
        self.append_audit_synced(events, false).await
    }

    /// [`Db::append_audit`], and with `full_sync` the transaction commits under
    /// `PRAGMA synchronous = FULL`: in WAL mode SQLite then fsyncs the WAL before the commit
    /// returns, so the events survive a power loss too (and so does everything committed
    /// before them: the WAL is synced in order). Only this transaction pays the fsync; the
    /// connection goes back to the pool's `NORMAL` afterwards.
    pub async fn append_audit_synced(&self, events: &[AuditEvent], full_sync: bool) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.acquire().await?;
        if !full_sync {
            return append_on(&mut conn, self.backend, events, None)
                .await
                .map(drop);
        }
        if self.backend == Backend::Postgres {
            // `synchronous_commit = on` (PostgreSQL's default, never changed here): every
            // commit is flushed to the WAL on disk before it returns.
            return append_on(&mut conn, self.backend, events, None)
                .await
                .map(drop);
        }
        sqlx::query(full_sync_on(self.backend))
            .execute(&mut *conn)
            .await?;
        let appended = append_on(&mut conn, self.backend, events, None)
            .await
            .map(drop);
        // If this fails the connection stays FULL: slower, never less durable.
        let _ = sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut *conn)
            .await;
        appended
    }

    /// Rows with `seq > after`, at most `limit`, oldest first.
    pub async fn audit_rows(&self, after: i64, limit: u32) -> Result<Vec<AuditRecord>> {
        Ok(sqlx::query_as::<_, AuditRecord>(
            "SELECT seq, ts, actor, action, key_id, outcome, user_op_hash, detail, prev_hash, hash \
             FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Recompute the whole chain and report the first row that does not
    /// verify (edited, deleted, inserted or reordered).
    pub async fn verify_audit_chain(&self) -> Result<AuditVerification> {
        let mut prev = GENESIS_HASH.to_owned();
        let mut expect_seq = 1i64;
        let mut rows = 0u64;
        loop {
            let page = self.audit_rows(expect_seq - 1, 1000).await?;
            if page.is_empty() {
                return Ok(AuditVerification {
                    rows,
                    first_bad: None,
                });
            }
            for r in page {
                rows += 1;
                let bad = |why: &str| {
                    Ok(AuditVerification {
                        rows,
                        first_bad: Some((r.seq, why.to_owned())),
                    })
                };
                if let Some(why) = row_fault(&r, expect_seq, &prev) {
                    return bad(why);
                }
                prev = r.hash;
                expect_seq += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    fn ev(action: &str) -> AuditEvent {
        AuditEvent {
            ts: 5,
            actor: "system".into(),
            action: action.into(),
            key_id: Some("w:0".into()),
            outcome: "ok".into(),
            user_op_hash: None,
            detail: None,
        }
    }

    #[tokio::test]
    async fn chain_verifies_and_detects_edits() {
        let (_d, db) = temp_db().await;
        assert!(db.verify_audit_chain().await.unwrap().is_ok());
        db.append_audit(&[ev("A"), ev("B")]).await.unwrap();
        db.append_audit(&[ev("C")]).await.unwrap();
        let v = db.verify_audit_chain().await.unwrap();
        assert_eq!(
            v,
            AuditVerification {
                rows: 3,
                first_bad: None
            }
        );
        // The table refuses edits...
        let err = sqlx::query("UPDATE audit_log SET outcome = 'x' WHERE seq = 2")
            .execute(db.pool())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        // ...and one that gets around the trigger is detected.
        crate::testing::drop_trigger(&db, "audit_log_no_update").await;
        sqlx::query("UPDATE audit_log SET outcome = 'refused' WHERE seq = 2")
            .execute(db.pool())
            .await
            .unwrap();
        let v = db.verify_audit_chain().await.unwrap();
        assert_eq!(v.first_bad.as_ref().map(|b| b.0), Some(2), "{v:?}");
    }

    #[tokio::test]
    async fn batches_over_several_inserts_keep_order_and_chain() {
        let (_d, db) = temp_db().await;
        let n = 2 * AUDIT_ROWS_PER_INSERT + 7;
        let events: Vec<AuditEvent> = (0..n).map(|i| ev(&format!("E{i}"))).collect();
        db.append_audit(&events[..3]).await.unwrap();
        db.append_audit(&events[3..]).await.unwrap();
        let v = db.verify_audit_chain().await.unwrap();
        assert_eq!(
            v,
            AuditVerification {
                rows: n as u64,
                first_bad: None
            }
        );
        let rows = db.audit_rows(0, n as u32 + 1).await.unwrap();
        assert_eq!(rows.len(), n);
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r.seq, i as i64 + 1);
            assert_eq!(r.action, format!("E{i}"));
        }
    }

    /// An appender's next batch goes in as one statement chained after its own last row; a
    /// row appended by another writer in between makes that statement write nothing, and the
    /// batch is chained after the other writer's row instead.
    #[tokio::test]
    async fn appender_chains_after_its_head_or_after_another_writer() {
        let (_d, db) = temp_db().await;
        // One statement is SQLite's path; PostgreSQL always takes the write transaction.
        let single = |n: u64| {
            if db.backend() == Backend::Sqlite {
                n
            } else {
                0
            }
        };
        let mut a = db.audit_appender(true).await.unwrap();
        a.append(&[ev("A1")]).await.unwrap();
        assert_eq!(
            a.single_statement_appends(),
            0,
            "the first append reads the head"
        );
        a.append(&[ev("A2"), ev("A3")]).await.unwrap();
        a.append(&[ev("A4")]).await.unwrap();
        assert_eq!(a.single_statement_appends(), single(2));
        db.append_audit(&[ev("B1")]).await.unwrap();
        a.append(&[ev("A5"), ev("A6")]).await.unwrap();
        assert_eq!(
            a.single_statement_appends(),
            single(2),
            "the head moved: read again"
        );
        a.append(&[ev("A7")]).await.unwrap();
        assert_eq!(a.single_statement_appends(), single(3));
        let rows = db.audit_rows(0, 100).await.unwrap();
        let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
        assert_eq!(actions, ["A1", "A2", "A3", "A4", "B1", "A5", "A6", "A7"]);
        assert_eq!(
            db.verify_audit_chain().await.unwrap(),
            AuditVerification {
                rows: 8,
                first_bad: None
            }
        );
    }

    /// Writers racing on several connections (the pool's, and appenders of their own, one with
    /// full sync) still build one chain: each append reads the head under the write lock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_build_one_chain() {
        let (_d, db) = temp_db().await;
        let mut tasks = Vec::new();
        for w in 0..6 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                let mut own = match w % 2 {
                    0 => Some(db.audit_appender(w == 0).await.unwrap()),
                    _ => None,
                };
                for i in 0..10 {
                    let batch = [ev(&format!("W{w}-{i}/a")), ev(&format!("W{w}-{i}/b"))];
                    match own.as_mut() {
                        Some(a) => a.append(&batch).await.unwrap(),
                        None => db.append_audit(&batch).await.unwrap(),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let v = db.verify_audit_chain().await.unwrap();
        assert_eq!(
            v,
            AuditVerification {
                rows: 120,
                first_bad: None
            }
        );
        // A batch's events are adjacent: one transaction, nobody in between.
        let rows = db.audit_rows(0, 200).await.unwrap();
        for pair in rows.chunks(2) {
            assert_eq!(
                pair[0].action.strip_suffix("/a"),
                pair[1].action.strip_suffix("/b"),
                "{pair:?}"
            );
            assert!(pair[0].action.ends_with("/a"), "{pair:?}");
        }
    }

    #[tokio::test]
    async fn deletion_is_detected() {
        let (_d, db) = temp_db().await;
        db.append_audit(&[ev("A"), ev("B"), ev("C")]).await.unwrap();
        crate::testing::drop_trigger(&db, "audit_log_no_delete").await;
        sqlx::query("DELETE FROM audit_log WHERE seq = 2")
            .execute(db.pool())
            .await
            .unwrap();
        let v = db.verify_audit_chain().await.unwrap();
        assert_eq!(v.first_bad.map(|b| b.0), Some(3));
    }

    #[test]
    fn absent_and_empty_fields_hash_differently() {
        let mut a = ev("A");
        a.detail = None;
        let mut b = a.clone();
        b.detail = Some(String::new());
        assert_ne!(row_hash(GENESIS_HASH, 1, &a), row_hash(GENESIS_HASH, 1, &b));
    }
}
