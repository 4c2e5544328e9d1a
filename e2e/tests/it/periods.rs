//! Periodic budgets ("0.1 ETH per hour") on anvil with time warps: the companion refuses what
//! the current period cannot pay, and the chain bounds each period whatever the agent signs — the
//! operation names its period in its nonce lane, the validator returns that period's window and
//! the EntryPoint, not the validator, checks the time.
//!
//! This test moves the chain's clock, so it runs on a stack of its own (not the shared one).

use alloy::primitives::{utils::parse_ether, Address, Bytes, U256};
use alloy::providers::Provider;
use kms_chain::account::Call;
use kms_chain::client::NonceChoice;
use kms_chain::nonce::NonceKey;
use kms_chain::session::RefusalCode;
use kms_chain::userop::EntryPointVersion::V07;
use kms_contracts::SessionKeyValidator;
use kms_e2e::chain::{ChainEnv, FIXED_GAS};
use kms_e2e::companion::{Companion, DAY_SESSION_GAS_CAP};
use kms_e2e::stack::Stack;
use kms_test_support::Soft;
use serde_json::json;

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
