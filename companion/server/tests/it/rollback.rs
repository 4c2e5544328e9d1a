//! A rolled-back TA: the companion's reconciliation meets it at start-up and, instead of
//! adopting the older state, stops serving the routes that reach the TA (503
//! `ta_rolled_back`), whether the TA refuses its own state (its monotonic counter is ahead) or
//! is merely behind the database (its counter was put back too).

use std::fs;
use std::path::PathBuf;

use crate::common::*;
use kms_proto::{GetAgentState, TaError, WalletId};
use kms_tee_client::{TeeBackend, TeeError};
use serde_json::{json, Value};

fn ta_dir(env: &Env) -> PathBuf {
    env.dir.path().join("ta")
}

/// Stop the companion and the simulator (so the sealed files are at rest).
async fn stop_all(env: &mut Env) {
    env.stop_server().await;
    env.sim.stop();
}

/// Start the simulator and the companion again over the same directories.
async fn start_all(env: &mut Env) {
    env.sim = Sim::start(env.dir.path());
    env.restart_server().await;
}

/// Refresh `key_id`'s credential through the companion (ceremony + current JWT).
async fn refresh(env: &Env, owner: &mut Soft, key_id: &str, jwt: &str) -> String {
    let w = env
        .ceremony(owner, key_id, "RefreshAgentCredential", json!({}))
        .await;
    let (s, r, _) = env
        .post_bearer(
            "/kms/refresh-agent-credential",
            jwt,
            &json!({"keyId": key_id, "webAuthnAssertion": w}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    r["agentCredential"].as_str().unwrap().to_owned()
}

/// The routes that reach the TA answer 503 `ta_rolled_back`; the database-only ones answer.
async fn assert_ta_routes_refused(env: &Env, wallet: &str, key_id: &str, jwts: &[&str]) {
    for jwt in jwts {
        let (s, e, _) = env.sign_agent(jwt, key_id).await;
        assert_eq!(
            (s, e["code"].as_str()),
            (503, Some("ta_rolled_back")),
            "{e}"
        );
        let (s, e, _) = env
            .post_bearer(
                "/kms/refresh-agent-credential",
                jwt,
                &json!({"keyId": key_id}),
            )
            .await;
        assert_eq!(
            (s, e["code"].as_str()),
            (503, Some("ta_rolled_back")),
            "{e}"
        );
    }
    let (s, e) = env
        .post(
            "/BeginAuthentication",
            None,
            &json!({"KeyId": wallet, "Purpose": "CreateAgentKey", "Payload": {"label": "x"}}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (503, Some("ta_rolled_back")),
        "{e}"
    );
    let (s, e) = env
        .post(
            "/GetPublicKey",
            Some("GetPublicKey"),
            &json!({"KeyId": wallet}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (503, Some("ta_rolled_back")),
        "{e}"
    );
    let (s, e) = env.post("/kms/create-agent-key", None, &json!({})).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (503, Some("ta_rolled_back")),
        "{e}"
    );

    // /health says why, with 503.
    let (s, body) = env.get("/health").await;
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s, 503, "{h}");
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["taRolledBack"].as_str().is_some(), "{h}");
    // Database-only routes keep answering.
    let (s, v) = env
        .post("/kms/list-agent-keys", None, &json!({"humanKeyId": wallet}))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = env
        .post(
            "/DescribeKey",
            Some("DescribeKey"),
            &json!({"KeyId": wallet}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ta_refusing_its_rolled_back_state_stops_the_ta_routes() {
    let mut env = Env::start().await;
    let mut owner = Soft::new();
    let wallet = env.wallet(&mut owner).await;
    let Agent {
        key_id, jwt: jwt1, ..
    } = env
        .agent(&mut owner, &wallet, json!({"label": "bot"}))
        .await;

    // A copy of the sealed state taken now (the simulator at rest)...
    stop_all(&mut env).await;
    let old = fs::read(ta_dir(&env).join("sealed.bin")).unwrap();
    start_all(&mut env).await;
    // ...then the credential is superseded.
    let jwt2 = refresh(&env, &mut owner, &key_id, &jwt1).await;
    let (s, v, _) = env.sign_agent(&jwt2, &key_id).await;
    assert_eq!(s, 200, "{v}");

    // The old sealed.bin is put back; the TA's counter is ahead of it.
    stop_all(&mut env).await;
    fs::write(ta_dir(&env).join("sealed.bin"), &old).unwrap();
    start_all(&mut env).await;

    let reason = env.server().state.reconcile.rolled_back();
    assert!(
        reason.as_deref().is_some_and(|r| r.contains("rolled back")),
        "{reason:?}"
    );
    // Neither the superseded credential nor the current one is served.
    assert_ta_routes_refused(&env, &wallet, &key_id, &[&jwt1, &jwt2]).await;
    // The database was not moved back.
    let (w, i) = key_id.rsplit_once(':').unwrap();
    let row = env
        .server()
        .state
        .db
        .get_agent(w, i.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.generation, Some(2));
    // The TA itself refuses its state, naming both versions.
    let tee = TeeBackend::Simulator {
        socket: env.sim.socket.clone(),
    }
    .connect()
    .unwrap();
    let err = tee
        .call(&GetAgentState {
            wallet_id: w.parse::<WalletId>().unwrap(),
            agent_index: i.parse().unwrap(),
        })
        .unwrap_err();
    assert!(
        matches!(err, TeeError::Ta(TaError::StateRolledBack { sealed, counter }) if sealed < counter),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ta_behind_the_database_stops_the_ta_routes_instead_of_being_adopted() {
    let mut env = Env::start().await;
    let mut owner = Soft::new();
    let wallet = env.wallet(&mut owner).await;
    let Agent {
        key_id, jwt: jwt1, ..
    } = env
        .agent(&mut owner, &wallet, json!({"label": "bot"}))
        .await;

    // A copy of BOTH the sealed state and the TA's counter file: the TA cannot tell.
    stop_all(&mut env).await;
    let sealed = fs::read(ta_dir(&env).join("sealed.bin")).unwrap();
    let counter = fs::read(ta_dir(&env).join("counter.bin")).unwrap();
    start_all(&mut env).await;
    let jwt2 = refresh(&env, &mut owner, &key_id, &jwt1).await;

    stop_all(&mut env).await;
    fs::write(ta_dir(&env).join("sealed.bin"), &sealed).unwrap();
    fs::write(ta_dir(&env).join("counter.bin"), &counter).unwrap();
    start_all(&mut env).await;

    // The TA serves its (older) state, but reconciliation sees it behind the database.
    let reason = env.server().state.reconcile.rolled_back();
    assert!(
        reason.as_deref().is_some_and(|r| r.contains(&key_id)),
        "{reason:?}"
    );
    assert_ta_routes_refused(&env, &wallet, &key_id, &[&jwt1, &jwt2]).await;
    // The older generation was not adopted.
    let (w, i) = key_id.rsplit_once(':').unwrap();
    let row = env
        .server()
        .state
        .db
        .get_agent(w, i.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.generation, Some(2));
    // Re-checks keep refusing while nothing changed.
    tokio::time::sleep(kms_companion::reconcile::ROLLBACK_RECHECK * 2).await;
    let (s, e, _) = env.sign_agent(&jwt1, &key_id).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (503, Some("ta_rolled_back")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolled_back_ta_is_found_even_without_agent_keys() {
    let mut env = Env::start().await;
    let mut owner = Soft::new();
    let wallet = env.wallet(&mut owner).await;
    stop_all(&mut env).await;
    let old = fs::read(ta_dir(&env).join("sealed.bin")).unwrap();
    start_all(&mut env).await;
    // A TA write the database does not follow (an operator's forced rotation).
    let tee = TeeBackend::Simulator {
        socket: env.sim.socket.clone(),
    }
    .connect()
    .unwrap();
    tee.call(&kms_proto::JwtRotateSecret {
        mode: kms_proto::RotationMode::Force,
    })
    .unwrap();
    stop_all(&mut env).await;
    fs::write(ta_dir(&env).join("sealed.bin"), &old).unwrap();
    start_all(&mut env).await;

    assert!(env.server().state.reconcile.rolled_back().is_some());
    let (s, e) = env
        .post(
            "/BeginAuthentication",
            None,
            &json!({"KeyId": wallet, "Purpose": "CreateAgentKey", "Payload": {"label": "x"}}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (503, Some("ta_rolled_back")),
        "{e}"
    );
    // Re-checks do not clear it while the TA still refuses its state.
    tokio::time::sleep(kms_companion::reconcile::ROLLBACK_RECHECK * 2).await;
    assert!(env.server().state.reconcile.rolled_back().is_some());
    let (s, h) = env.get("/health").await;
    assert_eq!(s, 503, "{h}");
}
