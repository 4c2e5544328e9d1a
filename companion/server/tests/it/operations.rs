//! End-to-end: restarts, audit chain, JWT rotation, health, metrics,
//! OpenAPI, and the `companion --dev` binary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::common::*;
use kms_proto::{JwtSecretStatus, KidStatus};
use kms_tee_client::TeeBackend;
use serde_json::{json, Value};

const HASH: &str = "0x4444444444444444444444444444444444444444444444444444444444444444";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_survives_restarts_of_companion_and_simulator() {
    let mut env = Env::start().await;
    let mut owner = Soft::new();
    let wallet = env.wallet(&mut owner).await;
    let Agent { jwt, key_id, .. } = env.agent(&mut owner, &wallet, json!({})).await;
    let (s, before, _) = env.sign_agent(&jwt, &key_id).await;
    assert_eq!(s, 200);

    // Restart both processes over the same files.
    env.stop_server().await;
    env.sim.stop();
    env.sim = Sim::start(env.dir.path());
    env.restart_server().await;

    // The JWT still signs (TA sealed state and DB row survived); RFC 6979
    // gives the same signature for the same key and hash.
    let (s, after, _) = env.sign_agent(&jwt, &key_id).await;
    assert_eq!(s, 200, "{after}");
    assert_eq!(after["signature"], before["signature"]);
    // The passkey (and its counter) survived: a new ceremony works.
    let (s, v) = env
        .signed_op(&mut owner, &wallet, "SignHash", json!({"Hash": HASH}))
        .await;
    assert_eq!(s, 200, "{v}");
    // Indices continue.
    let b = env.create_agent(&mut owner, &wallet, json!({})).await;
    assert_eq!(b["keyId"], json!(format!("{wallet}:1")));

    // With the simulator down: 503, and health says so.
    env.sim.stop();
    let (s, e, _) = env.sign_agent(&jwt, &key_id).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (503, Some("tee_unavailable")),
        "{e}"
    );
    let (s, h) = env.get("/health").await;
    assert_eq!(s, 503, "{h}");
    env.sim = Sim::start(env.dir.path());
    let (s, _, _) = env.sign_agent(&jwt, &key_id).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_chain_records_events_without_secrets_and_detects_edits() {
    let env = Env::start().await;
    let mut owner = Soft::new();
    let wallet = env.wallet(&mut owner).await;
    let Agent { jwt, key_id, .. } = env.agent(&mut owner, &wallet, json!({})).await;
    let (s, _, _) = env.sign_agent(&jwt, &key_id).await;
    assert_eq!(s, 200);
    let (s, _, _) = env.sign_agent(&jwt, &format!("{wallet}:5")).await;
    assert_eq!(s, 403);
    let state = &env.server().state;
    state.audit.flush().await;
    let db = &state.db;
    let rows = db.audit_rows(0, 1000).await.unwrap();
    let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    assert!(actions.contains(&"RegisterWallet"), "{actions:?}");
    assert!(actions.contains(&"CreateAgentKey"));
    let sign = rows.iter().find(|r| r.action == "SignAgentUserOp").unwrap();
    assert_eq!(sign.outcome, "ok");
    assert_eq!(sign.user_op_hash.as_deref(), Some(USER_OP_HASH));
    assert_eq!(sign.key_id.as_deref(), Some(key_id.as_str()));
    // No secret anywhere in the log.
    let mac = jwt.rsplit('.').next().unwrap();
    for r in &rows {
        let all = format!("{r:?}");
        assert!(
            !all.contains(mac) && !all.contains(&jwt),
            "secret in audit row {}",
            r.seq
        );
        assert!(
            !all.contains(env.api_key.as_ref().unwrap()),
            "API key in audit row {}",
            r.seq
        );
    }
    let v = db.verify_audit_chain().await.unwrap();
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(v.rows as usize, rows.len());
    // Edit one row behind the triggers' back: detected at that row.
    let target = rows
        .iter()
        .find(|r| r.action == "CreateAgentKey")
        .unwrap()
        .seq;
    kms_db::testing::drop_trigger(db, "audit_log_no_update").await;
    sqlx::query("UPDATE audit_log SET outcome = 'refused:x' WHERE seq = $1")
        .bind(target)
        .execute(db.pool())
        .await
        .unwrap();
    let v = db.verify_audit_chain().await.unwrap();
    assert_eq!(v.first_bad.map(|b| b.0), Some(target));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwt_rotation_keeps_meta_true_to_the_ta() {
    let env = Env::with(Opts {
        // Every tick rotates (the period is far below the 7-day overlap, which only the
        // development flag lets through).
        args: vec![
            "--jwt-rotation-period-secs".into(),
            "0".into(),
            "--allow-short-jwt-rotation-period".into(),
        ],
        ..Opts::default()
    })
    .await;
    let mut owner = Soft::new();
    let wallet = env.wallet(&mut owner).await;
    let Agent { jwt, key_id, .. } = env.agent(&mut owner, &wallet, json!({})).await;
    let state = &env.server().state;
    let first_kid = kms_proto::jwt::parse(&jwt).unwrap().header.kid;

    let report = kms_companion::tasks::rotation_tick(state).await.unwrap();
    let new_kid = report.rotated_to.clone().expect("rotated");
    assert_ne!(new_kid, first_kid);
    // DB metadata equals the TA's store.
    let tee = TeeBackend::Simulator {
        socket: env.sim.socket.clone(),
    }
    .lazy()
    .unwrap();
    let ta = tee.call(&JwtSecretStatus {}).unwrap();
    let meta = state.db.list_jwt_secret_meta().await.unwrap();
    // Recorded under this companion's TA's name (its operator address, as wallets record it).
    let this_ta = kms_companion::replicas::this_ta(state).expect("the TA was reached");
    assert_eq!(
        state.db.wallet_ta(&wallet).await.unwrap(),
        Some(Some(this_ta.clone()))
    );
    assert_eq!(
        state.db.list_jwt_secret_meta_of(&this_ta).await.unwrap(),
        meta
    );
    for k in &ta {
        let m = meta.iter().find(|m| m.kid == k.kid).expect("kid recorded");
        let want = match k.status {
            KidStatus::Current => kms_db::JwtSecretState::Current,
            KidStatus::VerifyOnly => kms_db::JwtSecretState::VerifyOnly,
        };
        assert_eq!(m.status, want);
        assert_eq!(m.retire_at, k.retire_at.map(|t| t as i64));
    }
    let old = meta.iter().find(|m| m.kid == first_kid).unwrap();
    assert_eq!(old.status, kms_db::JwtSecretState::VerifyOnly);
    assert!(
        old.retire_at.unwrap() - old.created_at >= kms_proto::jwt::VERIFY_ONLY_OVERLAP_SECS as i64
    );
    // A credential of the verify-only kid still signs.
    let (s, _, _) = env.sign_agent(&jwt, &key_id).await;
    assert_eq!(s, 200);
    // More rotations keep every verify-only kid until its retire time: the first kid stays,
    // in the TA and in the table, and its credential still signs.
    let mut verify_only = vec![first_kid.clone(), new_kid];
    for _ in 1..kms_proto::jwt::MAX_VERIFY_ONLY_KIDS {
        let report = kms_companion::tasks::rotation_tick(state).await.unwrap();
        assert!(report.purged.is_empty(), "{report:?}");
        assert_eq!(report.refused_until, None);
        verify_only.push(report.rotated_to.expect("rotated"));
    }
    let current = verify_only.pop().unwrap();
    let meta = state.db.list_jwt_secret_meta().await.unwrap();
    let ta = tee.call(&JwtSecretStatus {}).unwrap();
    assert_eq!(ta.len(), kms_proto::jwt::MAX_VERIFY_ONLY_KIDS + 1);
    for k in &ta {
        let m = meta.iter().find(|m| m.kid == k.kid).expect("kid recorded");
        let want = if k.kid == current {
            kms_db::JwtSecretState::Current
        } else {
            assert!(verify_only.contains(&k.kid), "{k:?}");
            kms_db::JwtSecretState::VerifyOnly
        };
        assert_eq!(m.status, want, "{}", k.kid);
        assert_eq!(m.retire_at, k.retire_at.map(|t| t as i64));
    }
    let (s, e, _) = env.sign_agent(&jwt, &key_id).await;
    assert_eq!(s, 200, "{e}");
    // At the TA's limit the due rotation is refused: the tick still succeeds (purge and
    // metadata sync), reports when the rotation can run (the first kid's retire time) and
    // changes nothing; the credential keeps working.
    let first_retire = ta.iter().find(|k| k.kid == first_kid).unwrap().retire_at;
    let report = kms_companion::tasks::rotation_tick(state).await.unwrap();
    assert_eq!(report.rotated_to, None, "{report:?}");
    assert_eq!(report.refused_until, first_retire);
    assert_eq!(tee.call(&JwtSecretStatus {}).unwrap(), ta);
    let (s, e, _) = env.sign_agent(&jwt, &key_id).await;
    assert_eq!(s, 200, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_metrics_and_openapi() {
    let env = Env::start().await;
    let (s, h) = env.get("/health").await;
    assert_eq!(s, 200, "{h}");
    let h: Value = serde_json::from_str(&h).unwrap();
    assert_eq!(
        (h["database"].as_bool(), h["tee"].as_bool()),
        (Some(true), Some(true))
    );
    let mut owner = Soft::new();
    let wallet = env.wallet(&mut owner).await;
    let a = env.agent(&mut owner, &wallet, json!({})).await;
    let (s, _, _) = env.sign_agent(&a.jwt, &a.key_id).await;
    assert_eq!(s, 200);
    let (s, _) = env.post("/nope", None, &json!({})).await;
    assert_eq!(s, 404);
    // Without chain settings the chain routes answer 503 with a code, before anything else.
    let (s, body, _) = env
        .post_bearer(
            "/agent/intents",
            &a.jwt,
            &json!({"calls": [{"to": "0x1111111111111111111111111111111111111111"}]}),
        )
        .await;
    assert_eq!(
        (s, body["code"].as_str()),
        (503, Some("chain_not_configured")),
        "{body}"
    );
    let (s, m) = env.get("/metrics").await;
    assert_eq!(s, 200);
    assert!(
        m.contains(
            "kms_http_requests_total{method=\"POST\",route=\"/kms/sign-agent\",status=\"200\"} 1"
        ),
        "{m}"
    );
    assert!(
        m.contains(
            "kms_tee_call_duration_seconds_count{command=\"SignAgentUserOp\",outcome=\"ok\"} 1"
        ),
        "{m}"
    );
    assert!(m.contains("kms_signatures_total{kind=\"agent_userop\"} 1"));
    assert!(m.contains("status=\"404\""));
    let (s, doc) = env.get("/openapi.json").await;
    assert_eq!(s, 200);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    for p in [
        "/BeginRegistration",
        "/CompleteRegistration",
        "/BeginAuthentication",
        "/CreateKey",
        "/DescribeKey",
        "/ListKeys",
        "/GetPublicKey",
        "/DeriveAddress",
        "/Sign",
        "/SignHash",
        "/DeleteKey",
        "/ChangePasskey",
        "/kms/create-agent-key",
        "/kms/sign-agent",
        "/kms/refresh-agent-credential",
        "/kms/revoke-agent-credential",
        "/health",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} not in OpenAPI");
    }
    assert!(doc["paths"]["/kms/sign-agent"]["post"]["requestBody"].is_object());
    assert!(doc["components"]["schemas"]["SignAgentResponse"].is_object());
}

#[test]
fn dev_mode_runs_its_own_simulator_and_stops_it() {
    let bin = env!("CARGO_BIN_EXE_companion");
    let sim = ta_sim_bin();
    let mut child = Command::new(bin)
        .args([
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--log",
            "warn",
            "--ta-sim-bin",
        ])
        .arg(&sim)
        // Both set: the fail-closed flag wins over open mode.
        .env("KMS_ALLOW_OPEN_MODE", "1")
        .env("KMS_REQUIRE_API_KEY", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut port, mut dir) = (None, None);
    while port.is_none() || dir.is_none() {
        let line = err.next().expect("companion exited early").unwrap();
        if let Some(rest) = line.split("listening on http://localhost:").nth(1) {
            port = Some(rest.trim().parse::<u16>().unwrap());
        }
        if let Some(rest) = line.strip_prefix("    data dir ") {
            dir = Some(std::path::PathBuf::from(rest.split(" (").next().unwrap()));
        }
    }
    std::thread::spawn(move || for _ in err.by_ref() {});
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let key_line = out.next().unwrap().unwrap();
    let key = key_line
        .strip_prefix("KMS_API_KEY=")
        .expect("printed API key")
        .to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let url = |p: &str| format!("http://127.0.0.1:{}{p}", port.unwrap());
        let h = http.get(url("/health")).send().await.unwrap();
        assert_eq!(h.status().as_u16(), 200);
        let r = http
            .post(url("/ListKeys"))
            .header("x-amz-target", "TrentService.ListKeys")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            401,
            "dev mode requires the printed key"
        );
        let r = http
            .post(url("/ListKeys"))
            .header("x-amz-target", "TrentService.ListKeys")
            .header("x-api-key", &key)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    });
    // Ctrl-C (SIGINT to the process we started): it stops, with its simulator
    // and temporary directory.
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let dir = dir.unwrap();
    assert!(!dir.exists(), "{} left behind", dir.display());
}
