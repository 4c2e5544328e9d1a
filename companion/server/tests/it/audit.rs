//! The audit log's durability and anchoring: a signature is answered only once its audit event
//! is committed (group commit through the one writer), a signature whose event cannot be
//! committed is withheld, and the checkpoint task has the TA sign the log's head.

use std::time::Duration;

use crate::common::*;
use kms_proto::AuditAnchor;
use serde_json::json;
use sqlx::AnyConnection;

/// The companion's database: its `--database-url` (a PostgreSQL test database), else the SQLite
/// file in its data directory.
fn database_url(env: &Env) -> String {
    env.database_url()
        .map(str::to_owned)
        .unwrap_or_else(|| kms_db::default_database_url(env.dir.path()))
}

/// A wallet and an agent: (wallet, keyId, JWT).
async fn agent(env: &Env) -> (String, String, String) {
    let mut owner = Soft::new();
    agent_of(env, &mut owner).await
}

async fn agent_of(env: &Env, owner: &mut Soft) -> (String, String, String) {
    let wallet = env.wallet(owner).await;
    let a = env.agent(owner, &wallet, json!({})).await;
    (wallet, a.key_id, a.jwt)
}

async fn signed_rows(conn: &mut AnyConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE action = 'SignAgentUserOp' AND user_op_hash = $1",
    )
    .bind(USER_OP_HASH)
    .fetch_one(conn)
    .await
    .unwrap()
}

fn metric(env: &Env, name: &str) -> u64 {
    env.server()
        .state
        .metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signature_is_answered_only_once_its_audit_event_is_committed() {
    let env = Env::start().await;
    let (_, key_id, jwt) = agent(&env).await;
    // Another connection to the database takes the write lock: while it holds it, no
    // audit event can be committed.
    let mut lock = kms_db::testing::hold_write_lock(&database_url(&env)).await;
    let body = sign_body(&key_id);
    let request = env.post_bearer("/kms/sign-agent", &jwt, &body);
    tokio::pin!(request);
    // Whenever the answer comes, its audit event must already be committed. An answer while
    // the lock is held could not have been.
    tokio::select! {
        (s, v, _) = &mut request => {
            let committed = signed_rows(&mut lock).await;
            panic!("answered {s} while its audit event could not be committed ({committed} rows): {v}");
        }
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
    assert_eq!(signed_rows(&mut lock).await, 0);
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    let (s, v, _) = request.await;
    assert_eq!(s, 200, "{v}");
    // Committed by the time the answer arrived: visible at once, without a flush.
    assert_eq!(signed_rows(&mut lock).await, 1);
    let (commits, events) = env.server().state.metrics.audit_commits();
    assert!(commits >= 1 && events >= commits, "{commits} {events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signature_whose_audit_event_cannot_be_committed_is_withheld() {
    let env = Env::start().await;
    let mut owner = Soft::new();
    let (wallet, key_id, jwt) = agent_of(&env, &mut owner).await;
    let db = &env.server().state.db;
    // The audit table refuses every insert (the log is unavailable).
    kms_db::testing::refuse_audit_inserts(db, "audit log unavailable (test)").await;
    let (s, v, _) = env.sign_agent(&jwt, &key_id).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (503, Some("audit_unavailable")),
        "{v}"
    );
    assert!(v.get("signature").is_none(), "{v}");
    // A wallet signature (its own ceremony) is withheld too.
    let hash = "0x6666666666666666666666666666666666666666666666666666666666666666";
    let (s, v) = env
        .signed_op(&mut owner, &wallet, "SignHash", json!({"Hash": hash}))
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (503, Some("audit_unavailable")),
        "{v}"
    );
    assert!(v.get("Signature").is_none(), "{v}");
    assert_eq!(metric(&env, "kms_audit_signatures_withheld_total"), 2);
    assert!(metric(&env, "kms_audit_events_lost_total") >= 1);

    // The log is back: the same request is answered, and recorded.
    kms_db::testing::drop_trigger(db, "audit_log_refuse").await;
    let (s, v, _) = env.sign_agent(&jwt, &key_id).await;
    assert_eq!(s, 200, "{v}");
    let signed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE action = 'SignAgentUserOp' AND user_op_hash = $1",
    )
    .bind(USER_OP_HASH)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(signed, 1);
    assert!(db.verify_audit_chain().await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_durability_answers_without_waiting_for_the_audit_commit() {
    let env = Env::with(Opts {
        args: vec!["--audit-durability".into(), "queued".into()],
        ..Opts::default()
    })
    .await;
    let (_, key_id, jwt) = agent(&env).await;
    let mut lock = kms_db::testing::hold_write_lock(&database_url(&env)).await;
    // The baseline of the load driver: answered while the event is still queued.
    let (s, v, _) = env.sign_agent(&jwt, &key_id).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(signed_rows(&mut lock).await, 0);
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    env.server().state.audit.flush().await;
    assert_eq!(signed_rows(&mut lock).await, 1);
}

/// The whole log verifies against the TA's anchor, with no row left unanchored.
async fn fully_anchored(state: &kms_companion::state::AppState, tee: &kms_tee_client::TeeClient) {
    let report = state
        .db
        .verify_anchored(&tee.call(&AuditAnchor {}).unwrap())
        .await
        .unwrap();
    assert!(report.ok && report.unanchored_rows == 0, "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_checkpoint_task_has_the_ta_sign_the_head_of_the_log() {
    // A checkpoint once 3 events were committed (and every hour otherwise).
    let env = Env::with(Opts {
        args: vec![
            "--audit-checkpoint-secs".into(),
            "3600".into(),
            "--audit-checkpoint-events".into(),
            "3".into(),
        ],
        ..Opts::default()
    })
    .await;
    let (_, key_id, jwt) = agent(&env).await;
    for _ in 0..3 {
        let (s, _, _) = env.sign_agent(&jwt, &key_id).await;
        assert_eq!(s, 200);
    }
    let state = &env.server().state;
    let tee = kms_tee_client::TeeBackend::Simulator {
        socket: env.sim.socket.clone(),
    }
    .connect()
    .unwrap();
    // The task runs on its own; wait (bounded) until the TA's anchor has moved.
    let mut anchored = 0;
    for _ in 0..200 {
        anchored = tee.call(&AuditAnchor {}).unwrap().last.map_or(0, |l| l.seq);
        if anchored >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(anchored >= 3, "the TA's anchor is at {anchored}");
    // One more run anchors everything up to now; the whole log verifies against the TA.
    let done = kms_companion::tasks::audit_checkpoint(state).await.unwrap();
    let last = state.db.audit_last_seq().await.unwrap();
    assert_eq!(done.seq, last as u64);
    fully_anchored(state, &tee).await;
    assert!(metric(&env, "kms_audit_anchored_seq") >= 3);

    // The rows the writer committed since are anchored from its memory, not read back.
    for _ in 0..2 {
        let (s, _, _) = env.sign_agent(&jwt, &key_id).await;
        assert_eq!(s, 200);
    }
    state.audit.flush().await;
    let done = kms_companion::tasks::audit_checkpoint(state).await.unwrap();
    let now = state.db.audit_last_seq().await.unwrap() as u64;
    assert_eq!(done.seq, now);
    assert_eq!(done.from_memory, now - last as u64);
    assert!(done.from_memory >= 2);
    fully_anchored(state, &tee).await;
}
