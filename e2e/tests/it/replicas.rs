//! Two companions on one PostgreSQL database and one TA (docs/DEPLOY.md, "N companions"), with
//! intents on the chain: one agent's intents sent to both replicas at once each take a nonce of
//! their own (the lane lease, `kms_companion::replicas::LaneLease`), and all are included.
//!
//! Needs `KMS_TEST_POSTGRES_URL`: `#[ignore]`d, and run by `./test.sh` with `--include-ignored`
//! under `scripts/postgres.sh`; run without a server, it fails.

use crate::common::*;
use kms_chain::userop::EntryPointVersion::V07;
use kms_e2e::companion::{chain_args, DAY_SESSION_GAS_CAP};
use kms_e2e::stack::Stack;
use kms_test_support::Client;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL: KMS_TEST_POSTGRES_URL (./test.sh runs it under scripts/postgres.sh)"]
async fn one_agents_intents_on_two_replicas_take_distinct_nonces() {
    let server = kms_db::testing::postgres_server().unwrap_or_else(|| {
        panic!(
            "several companions need PostgreSQL: set {} (./test.sh runs this under \
             scripts/postgres.sh)",
            kms_db::testing::POSTGRES_URL_VAR
        )
    });
    let url = kms_db::testing::fresh_postgres_database(&server)
        .await
        .unwrap();
    let mut f = fixture_with(V07, &["--database-url", &url]).await;

    // The second replica: the same TA (the first one's ta-sim), the same database and chain.
    let stack = tokio::task::spawn_blocking(Stack::shared).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = [
        "companion",
        "--listen",
        "127.0.0.1:0",
        "--log",
        "warn",
        "--rp-id",
        "localhost",
        "--intent-poll-secs",
        "1",
        "--database-url",
        &url,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend([
        "--data-dir".to_owned(),
        dir.path().display().to_string(),
        "--tee".to_owned(),
        format!("sim:{}", f.c.sim.socket().display()),
    ]);
    args.extend(chain_args(stack.info(), V07));
    let second = kms_companion::start(<kms_companion::Config as clap::Parser>::parse_from(args))
        .await
        .unwrap();
    let b = Client::new(
        reqwest::Client::new(),
        second.addr.port(),
        Some(f.c.api_key().to_owned()),
    );

    let agent = f.agent("replicas").await;
    let to = address("replicas: two companions, one lane");
    f.funded_account(0).await;
    let now = f.env.now().await.unwrap();
    f.grant_included(
        &agent,
        json!({
            "targets": [to],
            "spendCap": eth("1").to_string(),
            "gasCap": DAY_SESSION_GAS_CAP.to_string(),
            "validAfter": now - 3600,
            "validUntil": now + DAY,
        }),
    )
    .await;

    // Four intents of the agent at once, two on each replica.
    let body = json!({ "calls": transfer(to, "0.01") });
    let send_a = || {
        f.c.client()
            .post_bearer("/agent/intents", &agent.jwt, &body, &[])
    };
    let send_b = || b.post_bearer("/agent/intents", &agent.jwt, &body, &[]);
    let (r1, r2, r3, r4) = tokio::join!(send_a(), send_b(), send_a(), send_b());
    let mut hashes = Vec::new();
    for r in [r1, r2, r3, r4] {
        let (status, answer, _) = r.unwrap();
        assert_eq!(status, 202, "{answer}");
        hashes.push(answer["userOpHash"].as_str().unwrap().to_owned());
    }

    // Each took a nonce of its own, and all four are included.
    let mut nonces = std::collections::BTreeSet::new();
    for hash in &hashes {
        let done = f.c.wait_intent(&agent, hash).await.unwrap();
        assert_eq!(done["status"], "included", "{done}");
        assert_eq!(done["success"], true, "{done}");
        let row =
            f.c.server()
                .state
                .db
                .get_intent(hash)
                .await
                .unwrap()
                .unwrap();
        nonces.insert(row.nonce.unwrap());
    }
    assert_eq!(nonces.len(), 4, "{nonces:?}");
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.04"));
    second.shutdown().await;
}
