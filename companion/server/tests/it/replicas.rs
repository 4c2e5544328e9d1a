//! Two companion processes, one PostgreSQL database, one ta-sim (docs/DEPLOY.md, "N companions"):
//! requests alternate between them, and agent indexes, single-use ceremonies, the audit chain and
//! the JWT rotation stay as with one companion.
//!
//! Needs `KMS_TEST_POSTGRES_URL` (`./test.sh` runs it under `scripts/postgres.sh`); several
//! companions are not supported on SQLite, so without a server the test says so and returns.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use kms_proto::AuditAnchor;
use serde_json::{json, Value};

/// A companion process we started; killed (SIGKILL) and reaped on drop.
struct Replica {
    child: Child,
    client: Client,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the `companion` binary on `port` over the shared database and TA, allowing the
/// WebAuthn origins of every replica (a ceremony begun on one may be finished on another), and
/// waits until `/health` answers 200.
async fn start_replica(
    dir: &Path,
    port: u16,
    ports: &[u16],
    database_url: &str,
    socket: &Path,
    api_key: &str,
) -> Replica {
    let origins: Vec<String> = ports
        .iter()
        .map(|p| format!("http://localhost:{p}"))
        .collect();
    let child = Command::new(env!("CARGO_BIN_EXE_companion"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir)
        .args(["--tee", &format!("sim:{}", socket.display())])
        .args(["--database-url", database_url])
        .args(["--rp-id", "localhost", "--origin", &origins.join(",")])
        .args(["--require-api-key", "--log", "warn"])
        // A rotation due every 2 s, the task ticking every second on each replica.
        .args([
            "--allow-short-jwt-rotation-period",
            "--jwt-rotation-period-secs",
            "2",
            "--jwt-rotation-tick-secs",
            "1",
        ])
        // Both replicas checkpoint the audit log in the one TA.
        .args(["--audit-checkpoint-secs", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the companion binary");
    let mut replica = Replica {
        child,
        client: Client::new(reqwest::Client::new(), port, Some(api_key.to_owned())),
    };
    for _ in 0..600 {
        if let Ok(Some(status)) = replica.child.try_wait() {
            panic!("the companion on port {port} exited during start-up: {status}");
        }
        if let Ok((200, _)) = replica.client.get("/health", None).await {
            return replica;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the companion on port {port} did not answer /health within 60 s");
}

/// `kms_jwt_rotation_ticks_total{outcome="<outcome>"}` of a replica's `/metrics` (0 if absent).
async fn rotation_ticks(r: &Replica, outcome: &str) -> u64 {
    let (status, body) = r.client.get("/metrics", None).await.unwrap();
    assert_eq!(status, 200);
    let text = body.as_str().unwrap_or_default().to_owned();
    let prefix = format!("kms_jwt_rotation_ticks_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// How many `SignAgentUserOp` calls a replica made to its TA (any outcome), from its `/metrics`.
async fn sign_calls(r: &Client) -> u64 {
    let (status, body) = r.get("/metrics", None).await.unwrap();
    assert_eq!(status, 200);
    let prefix = "kms_tee_call_duration_seconds_count{command=\"SignAgentUserOp\",";
    body.as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// A `CreateAgentKey` ceremony begun on `on` and answered by `owner`: the request body of
/// `/kms/create-agent-key` (to be sent to any replica).
/// `/kms/sign-agent` on `on` with `agent`'s credential: the status and the answer.
async fn sign(on: &Client, agent: &Agent) -> (u16, Value) {
    let (status, answer, _) = on
        .post_bearer(
            "/kms/sign-agent",
            &agent.jwt,
            &sign_body(&agent.key_id),
            &[],
        )
        .await
        .unwrap();
    (status, answer)
}

/// Fails the test (never passes it silently) when no PostgreSQL server is named: several
/// companions cannot share a SQLite file. The tests that call it are `#[ignore]`d, and run with
/// `--include-ignored` under `scripts/postgres.sh`.
fn needs_postgres() {
    assert!(
        kms_db::testing::postgres_server().is_some(),
        "several companions need PostgreSQL: set {} (./test.sh runs this under \
         scripts/postgres.sh)",
        kms_db::testing::POSTGRES_URL_VAR
    );
}

async fn create_body(on: &Client, owner: &mut Manual, wallet: &str, label: &str) -> Value {
    let extra = json!({ "label": label });
    let (web_authn, _) = on
        .ceremony(owner, wallet, "CreateAgentKey", extra.clone())
        .await
        .unwrap();
    let mut body = extra;
    body["humanKeyId"] = json!(wallet);
    body["webAuthnAssertion"] = web_authn;
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL: KMS_TEST_POSTGRES_URL (./test.sh runs it under scripts/postgres.sh)"]
async fn two_companions_share_one_database_and_one_ta() {
    needs_postgres();
    let dir = tempfile::tempdir().unwrap();
    let url = kms_db::testing::test_database_url(dir.path()).await;
    let db = kms_db::Db::open(&url).await.unwrap();
    let api_key = db.create_api_key("replicas", 1).await.unwrap().key;
    let sim = Sim::start(dir.path());
    let ports = [free_port(), free_port()];
    let mut replicas = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let data = dir.path().join(format!("companion-{i}"));
        std::fs::create_dir_all(&data).unwrap();
        replicas.push(start_replica(&data, *port, &ports, &url, &sim.socket, &api_key).await);
    }
    let (a, b) = (&replicas[0].client, &replicas[1].client);
    // A passkey without a signature counter (as synced passkeys are): the two ceremonies raced
    // below would otherwise be refused in the order their counters do not follow.
    let mut owner = Manual::new();
    owner.counting = false;

    // A registration begun on one replica and completed on the other.
    let begin = a
        .post("/BeginRegistration", &json!({"Description": "shared"}))
        .await
        .unwrap();
    assert_eq!(begin.0, 200, "{}", begin.1);
    let cred = owner.register(&a.origin(), &begin.1["Options"]);
    let done = b
        .post(
            "/CompleteRegistration",
            &json!({"ChallengeId": begin.1["ChallengeId"], "Credential": cred}),
        )
        .await
        .unwrap();
    assert_eq!(done.0, 200, "{}", done.1);
    let wallet = done.1["KeyId"].as_str().unwrap().to_owned();

    // Agents created on alternating replicas, then two at once (one on each): every index is
    // distinct, and they are 0..6 in all.
    let mut key_ids = Vec::new();
    for i in 0..4 {
        let on = [a, b][i % 2];
        let body = create_body(on, &mut owner, &wallet, &format!("agent {i}")).await;
        let (status, answer) = on.post("/kms/create-agent-key", &body).await.unwrap();
        assert_eq!(status, 200, "{answer}");
        key_ids.push(answer["keyId"].as_str().unwrap().to_owned());
    }
    let body_a = create_body(a, &mut owner, &wallet, "racing a").await;
    let body_b = create_body(b, &mut owner, &wallet, "racing b").await;
    let (ra, rb) = tokio::join!(
        a.post("/kms/create-agent-key", &body_a),
        b.post("/kms/create-agent-key", &body_b)
    );
    let mut agents = Vec::new();
    for (status, answer) in [ra.unwrap(), rb.unwrap()] {
        assert_eq!(status, 200, "{answer}");
        key_ids.push(answer["keyId"].as_str().unwrap().to_owned());
        agents.push(Agent::from_answer(answer));
    }
    let indexes: BTreeSet<u32> = key_ids
        .iter()
        .map(|k| k.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(indexes, (0..6).collect(), "{key_ids:?}");

    // A ceremony begun on one replica is finished on the other once, and only once: replayed
    // to either replica, it is refused as used (and no agent is created by the replays).
    let body = create_body(a, &mut owner, &wallet, "once").await;
    let (status, answer) = b.post("/kms/create-agent-key", &body).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["keyId"], format!("{wallet}:6"));
    for on in [a, b] {
        let (status, answer) = on.post("/kms/create-agent-key", &body).await.unwrap();
        assert_eq!(
            (status, answer["code"].as_str()),
            (401, Some("challenge_used")),
            "{answer}"
        );
    }
    assert_eq!(db.list_agents(Some(&wallet)).await.unwrap().len(), 7);

    // An agent credential minted through one replica works on both (one TA, one database).
    for agent in &agents {
        for on in [a, b] {
            let (status, answer) = sign(on, agent).await;
            assert_eq!(status, 200, "{answer}");
        }
    }

    // The rotation task ticks on both replicas, but one of them holds the lease and rotates:
    // the other only ever skips. Wait (bounded) until a rotation has happened.
    let mut rotations = 0;
    for _ in 0..100 {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM audit_log WHERE action = 'JwtRotateSecret'")
                .fetch_one(db.pool())
                .await
                .unwrap();
        rotations = n;
        if rotations >= 2
            && rotation_ticks(&replicas[1], "skipped").await
                + rotation_ticks(&replicas[0], "skipped").await
                >= 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rotations >= 2, "JWT secret rotations: {rotations}");
    let ran = [
        rotation_ticks(&replicas[0], "ran").await,
        rotation_ticks(&replicas[1], "ran").await,
    ];
    let skipped = [
        rotation_ticks(&replicas[0], "skipped").await,
        rotation_ticks(&replicas[1], "skipped").await,
    ];
    assert!(
        (ran[0] > 0 && ran[1] == 0 && skipped[1] > 0 && skipped[0] == 0)
            || (ran[1] > 0 && ran[0] == 0 && skipped[0] > 0 && skipped[1] == 0),
        "rotation ticks run {ran:?}, skipped {skipped:?}: one replica must do them all"
    );
    let (_, health) = a.get("/health", None).await.unwrap();
    let ta = health["operatorAddress"].as_str().unwrap().to_lowercase();
    let lease = db
        .lease(&kms_companion::replicas::rotation_lease_name(Some(&ta)))
        .await
        .unwrap()
        .expect("the rotation lease is held");
    assert!(!lease.holder.is_empty());
    // Credentials minted before the rotations still verify (their kid is verify-only now).
    let (status, answer) = sign(b, &agents[0]).await;
    assert_eq!(status, 200, "{answer}");

    // One audit chain, appended by both replicas and anchored by both in the one TA: it
    // verifies row by row and against the TA's anchor once the last rows are checkpointed.
    let chain = db.verify_audit_chain().await.unwrap();
    assert!(chain.first_bad.is_none() && chain.rows >= 10, "{chain:?}");
    let report = anchored_report(&db, &sim.socket).await;
    assert!(report.ok && report.unanchored_rows == 0, "{report:#?}");
    assert!(report.checkpoints >= 1, "{report:#?}");
}

/// The audit log verified against the TA on `socket`, once that TA has anchored every row. (A
/// checkpoint the TA signed and its companion has not stored yet shows as missing for a moment:
/// the last report, once everything is anchored, is the one returned.)
async fn anchored_report(db: &kms_db::Db, socket: &std::path::Path) -> kms_db::AuditReport {
    let tee = kms_tee_client::TeeBackend::Simulator {
        socket: socket.to_owned(),
    }
    .connect()
    .unwrap();
    let mut report = None;
    for _ in 0..100 {
        let r = db
            .verify_anchored(&tee.call(&AuditAnchor {}).unwrap())
            .await
            .unwrap();
        let done = r.ok && r.unanchored_rows == 0;
        report = Some(r);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report.unwrap()
}

/// An agent's nonce lane is held by one companion at a time across those sharing a PostgreSQL
/// database ([`kms_companion::replicas::LaneLease`]): the second replica's intent waits until the
/// first one's lease is given up. On SQLite (one companion) no lease is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agents_lane_is_held_by_one_replica_at_a_time() {
    use kms_companion::replicas::LaneLease;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let account = alloy::primitives::Address::repeat_byte(0xac);
    let key = kms_chain::nonce::NonceKey::for_agent(alloy::primitives::Address::repeat_byte(0x11));
    let first = Env::start().await;
    let Some(url) = first.database_url().map(str::to_owned) else {
        let s = &first.server().state;
        assert!(LaneLease::take(s, 1, account, key).await.unwrap().is_none());
        return;
    };
    let second = Env::with(Opts {
        args: vec!["--database-url".into(), url],
        ..Opts::default()
    })
    .await;
    let held = LaneLease::take(&first.server().state, 1, account, key)
        .await
        .unwrap()
        .expect("a lease on PostgreSQL");
    // Another lane (another chain, account or key) is free meanwhile.
    let other = LaneLease::take(&second.server().state, 2, account, key)
        .await
        .unwrap();
    assert!(other.is_some());
    let released = Arc::new(AtomicBool::new(false));
    let waiter = {
        let state = second.server().state.clone();
        let released = released.clone();
        tokio::spawn(async move {
            let lease = LaneLease::take(&state, 1, account, key).await.unwrap();
            (lease.is_some(), released.load(Ordering::SeqCst))
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the lane was taken while held");
    released.store(true, Ordering::SeqCst);
    drop(held);
    let (got, after_release) = waiter.await.unwrap();
    assert!(got && after_release);
}

/// Two TEE devices (two ta-sim processes) and a companion on each, over one PostgreSQL
/// database: each wallet records its TA; a companion refuses the other TA's wallets (owner
/// operations and agent credentials) with 421 `wallet_on_other_ta` naming that TA, before its own
/// TA sees them; and a companion starting beside the other TA's agents does not take them for a
/// rollback of its own TA.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL: KMS_TEST_POSTGRES_URL (./test.sh runs it under scripts/postgres.sh)"]
async fn two_tas_each_companion_refuses_the_other_tas_wallets() {
    needs_postgres();
    let dir = tempfile::tempdir().unwrap();
    let url = kms_db::testing::test_database_url(dir.path()).await;
    let db = kms_db::Db::open(&url).await.unwrap();
    let api_key = db.create_api_key("tas", 1).await.unwrap().key;
    let ports = [free_port(), free_port()];
    let mut sims = Vec::new();
    let mut replicas = Vec::new();
    // Companion A on TA A first; its wallet and agent exist before B starts.
    for name in ["a", "b"] {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        sims.push(Sim::start(&d));
    }
    let start = |i: usize| {
        let d = dir.path().join(["a", "b"][i]);
        let (url, key, socket) = (url.clone(), api_key.clone(), sims[i].socket.clone());
        async move { start_replica(&d, ports[i], &ports, &url, &socket, &key).await }
    };
    replicas.push(start(0).await);
    let a = replicas[0].client.clone();
    let mut owner_a = Manual::new();
    let wallet_a = a.register(&mut owner_a, "on TA A").await.unwrap()["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let agent_a = Agent::from_answer(
        a.create_agent(&mut owner_a, &wallet_a, json!({"label": "a"}))
            .await
            .unwrap(),
    );
    replicas.push(start(1).await);
    let b = replicas[1].client.clone();

    // Each TA's identity: its operator address, as /health shows it; B is not rolled back.
    let ta_of = |health: Value| {
        assert_eq!(health["status"], "ok", "{health}");
        assert!(health.get("taRolledBack").is_none(), "{health}");
        health["operatorAddress"].as_str().unwrap().to_owned()
    };
    let ta_a = ta_of(a.get("/health", None).await.unwrap().1);
    let ta_b = ta_of(b.get("/health", None).await.unwrap().1);
    assert_ne!(ta_a, ta_b);
    assert_eq!(
        db.wallet_ta(&wallet_a).await.unwrap(),
        Some(Some(ta_a.to_lowercase()))
    );

    // B refuses A's wallet: an owner ceremony, and the agent's credential (more times than a
    // client's failed-authentication budget: a misdirected request is not charged as one).
    let (status, answer) = b
        .post(
            "/BeginAuthentication",
            &json!({"KeyId": wallet_a, "Purpose": "CreateAgentKey", "Payload": {"label": "x"}}),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, answer["code"].as_str()),
        (421, Some("wallet_on_other_ta")),
        "{answer}"
    );
    assert_eq!(answer["details"]["walletTa"], ta_a.as_str());
    assert_eq!(answer["details"]["thisTa"], ta_b.as_str());
    assert_eq!(answer["details"]["namedBy"], "wallet");
    // The agent credential names the TA that minted it (its `iss` claim), and that is what B
    // refuses it by.
    let claims = kms_proto::jwt::parse(&agent_a.jwt).unwrap().claims;
    assert_eq!(claims.iss, Some(ta_a.to_lowercase()));
    for _ in 0..130 {
        let (status, answer) = sign(&b, &agent_a).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (421, Some("wallet_on_other_ta")),
            "{answer}"
        );
        assert_eq!(answer["details"]["walletTa"], ta_a.as_str());
        assert_eq!(answer["details"]["namedBy"], "credential");
    }
    // A serves it.
    let (status, answer) = sign(&a, &agent_a).await;
    assert_eq!(status, 200, "{answer}");

    // And the other way round: B's own wallet is B's, refused by A naming TA B.
    let mut owner_b = Manual::new();
    let wallet_b = b.register(&mut owner_b, "on TA B").await.unwrap()["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let agent_b = Agent::from_answer(
        b.create_agent(&mut owner_b, &wallet_b, json!({"label": "b"}))
            .await
            .unwrap(),
    );
    assert_eq!(
        db.wallet_ta(&wallet_b).await.unwrap(),
        Some(Some(ta_b.to_lowercase()))
    );
    let (status, answer) = sign(&a, &agent_b).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (421, Some("wallet_on_other_ta")),
        "{answer}"
    );
    assert_eq!(answer["details"]["walletTa"], ta_b.as_str());
    let (status, answer) = sign(&b, &agent_b).await;
    assert_eq!(status, 200, "{answer}");

    // The credential carries its TA even where the database is wrong: with wallet B's row
    // saying TA A, companion A still refuses B's credential by its claim, naming TA B, and never
    // sends it to TA A (A's count of signature calls does not move; TA A would refuse it too).
    sqlx::query("UPDATE wallets SET ta_id = $1 WHERE key_id = $2")
        .bind(ta_a.to_lowercase())
        .bind(&wallet_b)
        .execute(db.pool())
        .await
        .unwrap();
    let calls_a = sign_calls(&a).await;
    for _ in 0..3 {
        let (status, answer) = sign(&a, &agent_b).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (421, Some("wallet_on_other_ta")),
            "{answer}"
        );
        assert_eq!(answer["details"]["namedBy"], "credential", "{answer}");
        assert_eq!(answer["details"]["walletTa"], ta_b.as_str(), "{answer}");
        assert_eq!(answer["details"]["thisTa"], ta_a.as_str(), "{answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(
            message.contains(&format!("minted by TA {ta_b}")) && message.contains(&ta_a),
            "{message}"
        );
    }
    assert_eq!(sign_calls(&a).await, calls_a, "B's credential reached TA A");
    sqlx::query("UPDATE wallets SET ta_id = $1 WHERE key_id = $2")
        .bind(ta_b.to_lowercase())
        .bind(&wallet_b)
        .execute(db.pool())
        .await
        .unwrap();
    let (status, answer) = sign(&b, &agent_b).await;
    assert_eq!(status, 200, "{answer}");

    // Both TAs anchor the one audit log, each with its own checkpoints: it verifies against
    // each, and each report notes the other TA's checkpoints.
    for sim in &sims {
        let report = anchored_report(&db, &sim.socket).await;
        assert!(report.ok && report.unanchored_rows == 0, "{report:#?}");
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.code == "other_ta_checkpoints"),
            "{report:#?}"
        );
    }
}
