//! Agent signatures from many agents at once over HTTP, against the real ta-sim: the companion
//! sends the ones that wait together to the TA in one `SignAgentUserOps` call, and each request
//! still gets exactly its own answer: its agent's signature over its own hash for its account,
//! or its own refusal (here an agent revoked in the TA while the database still lists it, so the
//! companion forwards its requests and the TA alone refuses them, inside the batches).

use crate::common::*;
use kms_proto::session_signature::{SESSION_MARKER, SESSION_SIGNATURE_LEN};
use kms_tee_client::TeeBackend;
use serde_json::json;
use tokio::task::JoinSet;

/// Requests per agent in the burst.
const PER_AGENT: u8 = 12;

fn tee_calls(env: &Env, command: &str, outcome: &str) -> u64 {
    let m = env.server().state.metrics.render();
    let line = format!(
        "kms_tee_call_duration_seconds_count{{command=\"{command}\",outcome=\"{outcome}\"}} "
    );
    m.lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_many_agents_gets_each_its_own_answer() {
    // One call at the TA at a time, so that requests wait and go together.
    let env = Env::with(Opts {
        args: vec!["--tee-sign-parallel".into(), "1".into()],
        ..Opts::default()
    })
    .await;
    let mut owner = Soft::new();
    let wallet = env.wallet(&mut owner).await;
    let mut agents = Vec::new();
    for i in 0..4 {
        agents.push(
            env.agent(&mut owner, &wallet, json!({"label": format!("bot-{i}")}))
                .await,
        );
    }
    // Agent 3 revoked in the TA only: the companion's database still lists it as active.
    let tee = TeeBackend::Simulator {
        socket: env.sim.socket.clone(),
    }
    .lazy()
    .unwrap();
    tee.call(&kms_proto::RevokeAgentKey {
        wallet_id: wallet.parse().unwrap(),
        agent_index: 3,
    })
    .unwrap();
    let body = |key_id: &str, n: u8| {
        json!({"keyId": key_id, "payload": format!("0x{}", hex::encode([n; 32])),
               "accountAddress": ACCOUNT})
    };
    let (lone_status, lone) = {
        let (s, e, _) = env
            .post_bearer(
                "/kms/sign-agent",
                &agents[3].jwt,
                &body(&agents[3].key_id, 0),
            )
            .await;
        (s, e["code"].clone())
    };
    assert!(lone_status >= 400, "a TA-revoked agent signed: {lone}");
    assert_eq!(tee_calls(&env, "SignAgentUserOp", "ta_error"), 1);

    let client = env.client();
    let mut burst = JoinSet::new();
    for (a, agent) in agents.iter().enumerate() {
        for k in 0..PER_AGENT {
            let n = 1 + a as u8 * PER_AGENT + k;
            let (client, agent, body) = (client.clone(), agent.clone(), body(&agent.key_id, n));
            burst.spawn(async move {
                let (s, v, _) = client
                    .post_bearer("/kms/sign-agent", &agent.jwt, &body, &[])
                    .await
                    .unwrap();
                (a, n, s, v)
            });
        }
    }
    let mut answered = 0;
    while let Some(r) = burst.join_next().await {
        let (a, n, status, v) = r.unwrap();
        answered += 1;
        if a == 3 {
            assert_eq!(
                (status, v["code"].clone()),
                (lone_status, lone.clone()),
                "{v}"
            );
            continue;
        }
        assert_eq!(status, 200, "agent {a} request {n}: {v}");
        let sig = hexs(&v["signature"]);
        assert_eq!(sig.len(), SESSION_SIGNATURE_LEN);
        assert_eq!(sig[0], SESSION_MARKER);
        assert_eq!(format!("0x{}", hex::encode(&sig[1..21])), ACCOUNT);
        let address = agents[a].address.to_ascii_lowercase();
        assert_eq!(format!("0x{}", hex::encode(&sig[21..41])), address);
        assert_eq!(
            recover(&eip191_32(&[n; 32]), &sig[41..]),
            address,
            "agent {a} request {n}: not its agent's signature over its own hash"
        );
    }
    assert_eq!(answered, 4 * PER_AGENT as usize);
    // Every request reached the TA exactly once, with its own outcome.
    let burst_size = 4 * u64::from(PER_AGENT);
    assert_eq!(
        tee_calls(&env, "SignAgentUserOp", "ok"),
        3 * u64::from(PER_AGENT)
    );
    assert_eq!(
        tee_calls(&env, "SignAgentUserOp", "ta_error"),
        1 + u64::from(PER_AGENT)
    );
    let (batches, batched) = env.server().state.metrics.sign_batches();
    assert!(
        batched <= burst_size && batches <= batched / 2,
        "{batches} {batched}"
    );
    eprintln!("burst of {burst_size}: {batched} requests went in {batches} SignAgentUserOps calls");
}
