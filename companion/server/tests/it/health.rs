//! `/health` answers from a cached probe: a flood makes at most one TEE call per
//! `HEALTH_CACHE_TTL`, and a TA that stops answering shows within that bound.

use std::time::{Duration, Instant};

use crate::common::*;
use kms_companion::routes::health::HEALTH_CACHE_TTL;
use serde_json::Value;

/// `TaInfo` calls so far (every outcome), from the companion's TEE metrics.
async fn ta_info_calls(env: &Env) -> u64 {
    let (s, m) = env.get("/metrics").await;
    assert_eq!(s, 200);
    let prefix = "kms_tee_call_duration_seconds_count{command=\"TaInfo\",";
    m.lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Most probes a span of `elapsed` can hold: one per interval begun.
fn bound(elapsed: Duration) -> u64 {
    1 + (elapsed.as_secs_f64() / HEALTH_CACHE_TTL.as_secs_f64()).ceil() as u64
}

async fn flood(env: &Env, n: usize) -> Vec<(u16, Value)> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (http, url) = (env.http.clone(), env.url("/health"));
        set.spawn(async move {
            let r = http.get(url).send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap())
        });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_floods_make_one_tee_call_per_interval_and_see_the_ta_go() {
    let mut env = Env::start().await;
    let before = ta_info_calls(&env).await;
    let started = Instant::now();
    let answers = flood(&env, 300).await;
    let elapsed = started.elapsed();
    for (s, h) in &answers {
        assert_eq!(*s, 200, "{h}");
        assert_eq!(h["tee"], true, "{h}");
        assert!(
            h["taVersion"].is_string() && h["operatorAddress"].is_string(),
            "{h}"
        );
    }
    let calls = ta_info_calls(&env).await - before;
    assert!(
        (1..=bound(elapsed)).contains(&calls),
        "300 concurrent /health in {elapsed:?} made {calls} TaInfo calls"
    );

    // The TA goes away: /health says so within the interval (plus the failing probe's time
    // and this loop's, with room for a loaded machine), and still without a TEE call per
    // request.
    env.sim.stop();
    let before = ta_info_calls(&env).await;
    let stopped = Instant::now();
    let mut requests = 0;
    let seen = loop {
        let answers = flood(&env, 20).await;
        requests += 20;
        if let Some((_, h)) = answers.iter().find(|(s, _)| *s == 503) {
            break h.clone();
        }
        assert!(
            stopped.elapsed() < HEALTH_CACHE_TTL + Duration::from_secs(5),
            "/health still 200 {:?} after the TA stopped",
            stopped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = stopped.elapsed();
    assert!(
        took <= HEALTH_CACHE_TTL + Duration::from_secs(2),
        "the TA's loss showed after {took:?}"
    );
    assert_eq!(
        (
            seen["status"].as_str(),
            seen["tee"].as_bool(),
            seen["database"].as_bool()
        ),
        (Some("degraded"), Some(false), Some(true)),
        "{seen}"
    );
    assert!(seen.get("taVersion").is_none(), "{seen}");
    let calls = ta_info_calls(&env).await - before;
    assert!(
        calls <= bound(took),
        "{requests} /health requests in {took:?} made {calls} TaInfo calls"
    );

    // And back.
    env.sim = Sim::start(env.dir.path());
    let back = Instant::now();
    loop {
        let (s, h) = env.get("/health").await;
        if s == 200 {
            break;
        }
        assert!(
            back.elapsed() < HEALTH_CACHE_TTL + Duration::from_secs(5),
            "/health still {s} {:?} after the TA came back: {h}",
            back.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An unreachable database at start-up: retried for `--db-connect-retry-secs`, then the
/// companion refuses to start with an error naming the URL without its password.
#[tokio::test]
async fn an_unreachable_database_stops_the_start_without_leaking_its_password() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://kms:hunter2@127.0.0.1:{port}/kms");
    let cfg = config(
        dir.path(),
        &dir.path().join("ta.sock"),
        &[
            "--database-url".into(),
            url,
            "--db-connect-retry-secs".into(),
            "1".into(),
        ],
    );
    let started = Instant::now();
    let err = match kms_companion::start(cfg).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started without a database"),
    };
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("unreachable"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

/// A database that a newer version migrated (a migration this binary does not know): the
/// companion refuses to start rather than run on a schema it does not understand.
#[tokio::test]
async fn a_database_from_a_newer_version_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = kms_db::Db::open(&kms_db::default_database_url(dir.path()))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, X'00', 0)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    db.close().await;
    let cfg = config(dir.path(), &dir.path().join("ta.sock"), &[]);
    let err = match kms_companion::start(cfg).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started on a newer schema"),
    };
    assert!(err.contains("newer") && err.contains("9999"), "{err}");
}
