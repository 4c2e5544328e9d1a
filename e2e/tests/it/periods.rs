//! Periodic budgets ("0.1 ETH per hour") on anvil with time warps: the companion refuses what
//! the current period cannot pay, and the chain bounds each period whatever the agent signs — the
//! operation names its period in its nonce lane, the validator returns that period's window and
//! the EntryPoint, not the validator, checks the time.
//!
//! The first test moves the chain's clock, so it runs on a stack of its own (not the shared one);
//! the others leave the clock alone and run on the shared stack.

use crate::common::{address, fixture, transfer, DAY};
use crate::in_flight::{alto, debug_stack, lane_nonce};
use alloy::primitives::{utils::parse_ether, Address, Bytes, U256};
use alloy::providers::Provider;
use kms_chain::account::Call;
use kms_chain::client::NonceChoice;
use kms_chain::nonce::NonceKey;
use kms_chain::session::RefusalCode;
use kms_chain::userop::EntryPointVersion::V07;
use kms_contracts::SessionKeyValidator;
use kms_e2e::chain::{ChainEnv, FIXED_GAS};
use kms_e2e::companion::{chain_args, Companion, DAY_SESSION_GAS_CAP, INTENT_TIMEOUT};
use kms_e2e::stack::Stack;
use kms_test_support::{Agent, Env, Opts, Soft};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const HOUR: u64 = 3600;

fn eth(s: &str) -> U256 {
    parse_ether(s).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn periodic_budget_bounds_each_period_and_the_entry_point_keeps_the_time() {
    let stack = tokio::task::spawn_blocking(Stack::start)
        .await
        .unwrap()
        .unwrap();
    let env = ChainEnv::connect(stack.info(), V07).await.unwrap();
    let c = Companion::start(stack.info(), V07).await.unwrap();
    let mut user = Soft::new();
    let wallet = c.register(&mut user).await.unwrap();
    let agent = c
        .create_agent(&mut user, &wallet, "per hour")
        .await
        .unwrap();
    let to = Address::repeat_byte(0x7e);
    let account = env
        .client
        .account_address(wallet.address, U256::ZERO)
        .await
        .unwrap();
    env.set_balance(account, eth("10")).await.unwrap();

    // 0.1 ETH per hour, 1 ETH in all; period 0 began a minute ago.
    let start = env.now().await.unwrap() - 60;
    let (status, grant) = c
        .grant_session(
            &mut user,
            &agent,
            json!({
                "targets": [to],
                "spendCap": eth("1").to_string(),
                "gasCap": DAY_SESSION_GAS_CAP.to_string(),
                "period": HOUR,
                "periodCap": eth("0.1").to_string(),
                "validAfter": start,
            }),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{grant}");
    assert_eq!(grant["session"]["period"], HOUR);
    assert_eq!(grant["session"]["periodCap"], eth("0.1").to_string());

    // Period 0: 0.06 lands through the companion; 0.05 more would pass the period's cap.
    let (status, body) = c
        .intent(
            &agent,
            json!([{"to": to, "value": eth("0.06").to_string()}]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let done = c
        .wait_intent(&agent, body["userOpHash"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(done["status"], "included", "{done}");
    let (status, refused) = c
        .intent(
            &agent,
            json!([{"to": to, "value": eth("0.05").to_string()}]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (status, refused["code"].as_str()),
        (403, Some(RefusalCode::PeriodOverBudget.as_str())),
        "{refused}"
    );
    let d = &refused["details"];
    assert_eq!(d["periodIndex"], 0, "{refused}");
    assert_eq!(d["available"], eth("0.04").to_string(), "{refused}");
    assert_eq!(d["resetsAt"], start + HOUR, "{refused}");

    let validator = SessionKeyValidator::new(env.info.session_key_validator, env.client.provider());
    let spent_in = |p: u64| {
        let v = validator.clone();
        async move {
            v.periodSpent(account, agent.address, U256::from(p))
                .call()
                .await
                .unwrap()
        }
    };
    assert_eq!(spent_in(0).await, eth("0.06"));

    // What the agent could sign itself through /kms/sign-agent, sent straight to the EntryPoint.
    let signed = |lane: NonceKey, value: U256| {
        let (env, c, agent) = (&env, &c, &agent);
        async move {
            let prepared = env
                .custom_agent_op(
                    account,
                    agent.address,
                    NonceChoice::Next(lane),
                    vec![Call::transfer(to, value)],
                    FIXED_GAS,
                    None,
                )
                .await
                .unwrap();
            let (status, body) = c
                .sign_agent(agent, prepared.user_op_hash, account)
                .await
                .unwrap();
            assert_eq!(status, 200, "{body}");
            let sig: Bytes = body["signature"].as_str().unwrap().parse().unwrap();
            prepared.signed(sig)
        }
    };
    let period = |p: u32| NonceKey::for_agent_period(agent.address, p);
    let verdict = |op| {
        let env = &env;
        async move { env.entry_point_verdict(&op).await }
    };

    // More than period 0 has left: the validator refuses it whoever submits it.
    let over = signed(period(0), eth("0.05")).await;
    let revert = verdict(over).await.unwrap_err().expect("decodes");
    assert_eq!(revert.name, "PeriodCapExceeded", "{revert:?}");
    assert_eq!(revert.refusal_code(), Some(RefusalCode::PeriodOverBudget));

    // Period 1's budget, signed now: the validator accepts it but returns period 1's window, so
    // the EntryPoint refuses it until then.
    let next = signed(period(1), eth("0.1")).await;
    let early = verdict(next.clone()).await.unwrap_err().expect("decodes");
    assert_eq!(
        early.entry_point_reason.as_deref(),
        Some("AA22 expired or not due"),
        "{early:?}"
    );
    // 0.04 left in period 0, signed now, to be sent after period 0 ends.
    let late = signed(period(0), eth("0.04")).await;

    // An hour later (the chain's clock): period 1 has begun.
    let provider = env.client.provider();
    provider
        .raw_request::<_, i64>("evm_increaseTime".into(), (HOUR,))
        .await
        .unwrap();
    provider
        .raw_request::<_, String>("evm_mine".into(), ())
        .await
        .unwrap();
    let bundler = env.funded_signer(eth("1")).await.unwrap();
    let receipt = env
        .handle_ops_from(&bundler, &[next], bundler.address(), 2_000_000)
        .await
        .unwrap();
    assert!(receipt.status(), "{receipt:?}");
    assert_eq!(spent_in(1).await, eth("0.1"));
    assert_eq!(env.balance(to).await.unwrap(), eth("0.16"));
    // Period 0 is over: what it had left can no longer be spent.
    let expired = verdict(late).await.unwrap_err().expect("decodes");
    assert_eq!(
        expired.entry_point_reason.as_deref(),
        Some("AA22 expired or not due"),
        "{expired:?}"
    );
    // And period 1 is spent too.
    let more = signed(period(1), U256::from(1)).await;
    let revert = verdict(more).await.unwrap_err().expect("decodes");
    assert_eq!(revert.name, "PeriodCapExceeded", "{revert:?}");
    let session = validator
        .getSession(account, agent.address)
        .call()
        .await
        .unwrap();
    assert_eq!(session.spent, eth("0.16").to::<u128>());
    c.shutdown().await;
}

/// The budget pre-check when the current period's nonce lane is not the one the companion
/// expects. The companion reads the lane's nonce beside the session under the key it expects (the
/// one after its last submission in the lane, else the agent's base lane: period 0's); when the
/// session's current period names another lane, it reads that lane's nonce after the session, at
/// the session's block (`chain_view` in the companion's `service/intents.rs`). Here the session
/// is in period 1 from the start and the companion has submitted nothing for the agent, so each
/// intent below takes that second read: what the period has left is counted from the chain
/// (spent past the companion), and the operation within it is built at period 1's next sequence,
/// which only that read gives (period 0's lane would name a period that is over, an earlier
/// sequence of period 1's lane one already used).
#[tokio::test(flavor = "multi_thread")]
async fn the_precheck_reads_the_periods_own_lane_when_it_is_not_the_expected_one() {
    let mut f = fixture(V07).await;
    let agent = f.agent("period lane").await;
    let to = address("periods: a period lane the companion did not expect");
    let account = f.funded_account(0).await;

    // 0.1 ETH per hour; period 1 began ten minutes ago (the clock is never moved on this stack).
    let now = f.env.now().await.unwrap();
    let start = now - HOUR - 600;
    let grant = f
        .grant_included(
            &agent,
            json!({
                "targets": [to],
                "spendCap": eth("1").to_string(),
                "gasCap": DAY_SESSION_GAS_CAP.to_string(),
                "period": HOUR,
                "periodCap": eth("0.1").to_string(),
                "validAfter": start,
                "validUntil": now + DAY,
            }),
        )
        .await;
    assert_eq!(grant["session"]["period"], HOUR, "{grant}");

    let base = NonceKey::for_agent(agent.address);
    let p1 = NonceKey::for_agent_period(agent.address, 1);
    assert_ne!(base, p1);
    assert_eq!(base, NonceKey::for_agent_period(agent.address, 0));
    let validator =
        SessionKeyValidator::new(f.env.info.session_key_validator, f.env.client.provider());
    let spent_in = |p: u64| {
        let v = validator.clone();
        async move {
            v.periodSpent(account, agent.address, U256::from(p))
                .call()
                .await
                .unwrap()
        }
    };

    // 0.06 spent in period 1 past the companion: the agent's operation in period 1's lane, signed
    // through /kms/sign-agent and sent straight to the bundler.
    let prepared = f
        .env
        .custom_agent_op(
            account,
            agent.address,
            NonceChoice::Next(p1),
            vec![Call::transfer(to, eth("0.06"))],
            FIXED_GAS,
            None,
        )
        .await
        .unwrap();
    assert_eq!(prepared.op.nonce, p1.nonce(0));
    let sig = f.sign(&agent, prepared.user_op_hash, account).await;
    f.env.submit_and_wait(&prepared.signed(sig)).await.unwrap();
    assert_eq!(spent_in(1).await, eth("0.06"));
    assert_eq!(f.env.client.nonce(account, p1).await.unwrap(), p1.nonce(1));
    assert_eq!(
        f.env.client.nonce(account, base).await.unwrap(),
        base.nonce(0)
    );

    // More than the period has left: refused with what is left of period 1, nothing in flight.
    let refused = f
        .refused(&agent, transfer(to, "0.05"), RefusalCode::PeriodOverBudget)
        .await;
    assert_eq!(
        refused["details"],
        json!({
            "periodIndex": 1,
            "requested": eth("0.05").to_string(),
            "available": eth("0.04").to_string(),
            "remainingPeriodBudget": eth("0.04").to_string(),
            "inFlight": "0",
            "resetsAt": start + 2 * HOUR,
        }),
        "{refused}"
    );

    // Within it: accepted (the refusal submitted nothing, so the companion still expects the base
    // lane) and built in period 1's lane at the sequence after the one sent past it.
    let done = f.lands(&agent, transfer(to, "0.04")).await;
    let nonce: U256 = done["nonce"].as_str().unwrap().parse().unwrap();
    assert_eq!(NonceKey::split(nonce), (p1, 1), "{done}");
    assert_eq!(spent_in(1).await, eth("0.1"));
    assert_eq!(spent_in(0).await, U256::ZERO);
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.1"));
    assert_eq!(f.env.client.nonce(account, p1).await.unwrap(), p1.nonce(2));
    assert_eq!(
        f.env.client.nonce(account, base).await.unwrap(),
        base.nonce(0)
    );
    f.c.shutdown().await;
}

/// `POST /agent/intents` of `calls` with `agent`'s credential, on the companion of `c`.
async fn post_intent(c: &Env, agent: &Agent, calls: Value) -> (u16, Value) {
    let (status, body, _) = c
        .post_bearer("/agent/intents", &agent.jwt, &json!({ "calls": calls }))
        .await;
    (status, body)
}

/// The intent `hash` as `GET /agent/intents/{hash}` shows it on the companion of `c`.
async fn get_intent(c: &Env, agent: &Agent, hash: &str) -> Value {
    let (status, body) = c
        .client()
        .get(&format!("/agent/intents/{hash}"), Some(&agent.jwt))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits (at most [`INTENT_TIMEOUT`]) for intent `hash` to be included successfully.
async fn included(c: &Env, agent: &Agent, hash: &str) -> Value {
    let start = Instant::now();
    loop {
        let v = get_intent(c, agent, hash).await;
        if !matches!(v["status"].as_str(), Some("signed" | "pending")) {
            assert_eq!(v["status"], "included", "{v}");
            assert_eq!(v["success"], true, "{v}");
            return v;
        }
        assert!(start.elapsed() < INTENT_TIMEOUT, "not settled: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The same second read by a companion restarted while an intent of the agent is open in the
/// period's lane. What the companion submitted in a lane is kept in memory only, so once
/// restarted it expects the agent's base lane (period 0's) again and reads period 1's nonce after
/// the session: the open intent counts against the period's cap only if that read is of period
/// 1's lane at the session's block (from another lane it would count against the whole budget
/// only, and 0.05 more would pass the pre-check). Alto bundles nothing meanwhile (manual bundling,
/// on a stack of its own as in `in_flight`), so the intent stays open across the restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_companion_counts_the_open_intents_of_the_periods_lane() {
    let stack = tokio::task::spawn_blocking(debug_stack).await.unwrap();
    let info = stack.info();
    let env = ChainEnv::connect(info, V07).await.unwrap();
    // The companion of the e2e harness, over a data directory and a ta-sim that outlive it.
    let mut args: Vec<String> = ["--receipt-wait-secs", "60", "--intent-poll-secs", "1"]
        .map(String::from)
        .to_vec();
    args.extend(chain_args(info, V07));
    let mut c = Env::with(Opts {
        args,
        ta_sim_bin: None,
    })
    .await;
    let mut user = Soft::new();
    let wallet = c.register(&mut user).await;
    let owner: Address = wallet["Address"].as_str().unwrap().parse().unwrap();
    let agent = c
        .agent(
            &mut user,
            wallet["KeyId"].as_str().unwrap(),
            json!({"label": "restarted"}),
        )
        .await;
    let agent_address: Address = agent.address.parse().unwrap();
    let to = Address::repeat_byte(0x7f);
    let account = env.client.account_address(owner, U256::ZERO).await.unwrap();
    env.set_balance(account, eth("10")).await.unwrap();

    // 0.1 ETH per hour; period 1 began ten minutes ago.
    let now = env.now().await.unwrap();
    let start = now - HOUR - 600;
    let session = json!({
        "targets": [to],
        "spendCap": eth("1").to_string(),
        "gasCap": DAY_SESSION_GAS_CAP.to_string(),
        "period": HOUR,
        "periodCap": eth("0.1").to_string(),
        "validAfter": start,
        "validUntil": now + DAY,
    });
    let web_authn = c
        .ceremony(&mut user, &agent.key_id, "GrantSession", session.clone())
        .await;
    let mut body = session;
    body["keyId"] = json!(agent.key_id);
    body["webAuthnAssertion"] = web_authn;
    let (status, grant) = c.post("/kms/agent-sessions", None, &body).await;
    assert_eq!(status, 200, "{grant}");
    assert_eq!(grant["status"], "included", "{grant}");
    let p1 = NonceKey::for_agent_period(agent_address, 1);

    // Alto stops bundling: what it accepts stays in its mempool, ahead of the chain.
    assert_eq!(
        alto(info, "debug_bundler_setBundlingMode", json!(["manual"])).await,
        "ok"
    );

    // 0.06 accepted, in period 1's lane, and left open.
    let (status, first) = post_intent(&c, &agent, transfer(to, "0.06")).await;
    assert_eq!(status, 202, "{first}");
    let first = first["userOpHash"].as_str().unwrap().to_owned();
    let open = get_intent(&c, &agent, &first).await;
    assert_eq!(open["status"], "pending", "{open}");
    assert_eq!(lane_nonce(&open), (p1, 0), "{open}");

    // What 0.05 more is refused with: period 1 has 0.1 left on chain, 0.06 of it in flight.
    let over = json!({
        "periodIndex": 1,
        "requested": eth("0.05").to_string(),
        "available": eth("0.04").to_string(),
        "remainingPeriodBudget": eth("0.1").to_string(),
        "inFlight": eth("0.06").to_string(),
        "resetsAt": start + 2 * HOUR,
    });
    let refused = |(status, body): (u16, Value)| {
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some(RefusalCode::PeriodOverBudget.as_str())),
            "{body}"
        );
        assert_eq!(body["details"], over, "{body}");
    };
    // Before the restart the companion expects period 1's lane (it submitted there last).
    refused(post_intent(&c, &agent, transfer(to, "0.05")).await);

    // Restarted: it no longer knows it submitted there, and reads period 1's lane second.
    c.restart_server().await;
    refused(post_intent(&c, &agent, transfer(to, "0.05")).await);
    assert_eq!(get_intent(&c, &agent, &first).await["status"], "pending");
    assert_eq!(env.client.nonce(account, p1).await.unwrap(), p1.nonce(0));

    // Within it: accepted, at the sequence after the open one.
    let (status, second) = post_intent(&c, &agent, transfer(to, "0.04")).await;
    assert_eq!(status, 202, "{second}");
    let second = second["userOpHash"].as_str().unwrap().to_owned();
    assert_eq!(lane_nonce(&get_intent(&c, &agent, &second).await), (p1, 1));

    // Bundling resumes: both land, and the period is spent exactly.
    assert_eq!(
        alto(info, "debug_bundler_setBundlingMode", json!(["auto"])).await,
        "ok"
    );
    for hash in [&first, &second] {
        included(&c, &agent, hash).await;
    }
    let validator = SessionKeyValidator::new(env.info.session_key_validator, env.client.provider());
    let spent = validator
        .periodSpent(account, agent_address, U256::from(1))
        .call()
        .await
        .unwrap();
    assert_eq!(spent, eth("0.1"));
    assert_eq!(env.balance(to).await.unwrap(), eth("0.1"));
    assert_eq!(env.client.nonce(account, p1).await.unwrap(), p1.nonce(2));
    c.stop_server().await;
}
