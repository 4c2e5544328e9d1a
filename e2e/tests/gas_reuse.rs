//! Gas limits reused per call shape (`kms_chain::gas_reuse`, `companion/server/src/service/
//! intents.rs`): an intent of a shape estimated before is built without the bundler's
//! `eth_estimateUserOperationGas`, and each shortcut falls back when it no longer holds — a nonce
//! gap, a session changed on chain, an execution that no longer fits the reused `callGasLimit`, a
//! bundler refusing the reused gas. The companion's bundler is a pass-through proxy that counts
//! the estimates (and scripts the refusals).
//!
//! Run with `cargo test -p kms-e2e --test gas_reuse` (starts the anvil + Alto stack).

#[allow(dead_code)]
#[path = "it/common.rs"]
mod common;

use alloy::primitives::{Address, Bytes, U256};
use alloy::sol_types::SolCall;
use common::*;
use kms_chain::account::Call;
use kms_chain::session::RefusalCode;
use kms_chain::userop::EntryPointVersion::V07;
use kms_contracts::TestToken;
use kms_e2e::chain::RECEIPT_TIMEOUT;
use kms_e2e::companion::{AgentKey, DAY_SESSION_GAS_CAP};
use kms_e2e::proxy::{Proxy, Step};
use serde_json::{json, Value};

/// A fixture whose companion's bundler is a counting proxy in front of the stack's.
async fn counted() -> (Fixture, Proxy) {
    let stack = tokio::task::spawn_blocking(kms_e2e::stack::Stack::shared)
        .await
        .unwrap();
    let env = kms_e2e::chain::ChainEnv::connect(stack.info(), V07)
        .await
        .unwrap();
    let proxy = Proxy::start(env.client.config().bundler_url.as_str(), &[])
        .await
        .unwrap();
    let url = proxy.url();
    let f = fixture_with(V07, &["--bundler-url", &url]).await;
    (f, proxy)
}

fn estimates(proxy: &Proxy) -> usize {
    proxy.seen_of("eth_estimateUserOperationGas").len()
}

fn sends(proxy: &Proxy) -> usize {
    proxy.seen_of("eth_sendUserOperation").len()
}

/// Grants `agent` a session on the owner's account `salt` (funded with 10 ETH): `targets`, a
/// 1 ETH spend cap, `tokens` caps; returns the account.
async fn grant(
    f: &mut Fixture,
    agent: &AgentKey,
    salt: u64,
    targets: &[Address],
    tokens: Value,
) -> Address {
    let window = f.open_window().await;
    f.env
        .set_balance(f.account(salt).await, eth("10"))
        .await
        .unwrap();
    let body = f
        .grant_included(
            agent,
            json!({
                "targets": targets,
                "spendCap": eth("1").to_string(),
                "gasCap": DAY_SESSION_GAS_CAP.to_string(),
                "validAfter": window.0,
                "validUntil": window.1,
                "salt": salt.to_string(),
                "tokens": tokens,
            }),
        )
        .await;
    body["account"].as_str().unwrap().parse().unwrap()
}

/// The sequence of an intent's nonce (its low 64 bits).
fn sequence(intent: &Value) -> u64 {
    let nonce: U256 = intent["nonce"].as_str().unwrap().parse().unwrap();
    kms_chain::nonce::NonceKey::split(nonce).1
}

/// An operation of the agent's lane sent straight to the bundler (past the companion), included.
async fn sent_past_the_companion(f: &Fixture, account: Address, agent: &AgentKey, call: Call) {
    let op = f.presigned(account, agent, vec![call]).await;
    let sub = f.env.client.submit(&op).await.unwrap();
    let receipt = f
        .env
        .client
        .wait_for_receipt(
            &f.env.client.expected_receipt(&op, sub.user_op_hash),
            RECEIPT_TIMEOUT,
        )
        .await
        .unwrap();
    assert!(receipt.success);
}

fn token_transfer(token: Address, to: Address, amount: u64) -> Value {
    let data: Bytes = TestToken::transferCall {
        to,
        value: U256::from(amount),
    }
    .abi_encode()
    .into();
    json!([{"to": token, "data": data}])
}

#[tokio::test(flavor = "multi_thread")]
async fn reused_limits_skip_the_estimate_and_hold_across_a_nonce_gap() {
    let (mut f, proxy) = counted().await;
    let agent = f.agent("reuse").await;
    let to = address("gas reuse: payee");
    let account = grant(&mut f, &agent, 0, &[to], json!([])).await;

    // The first of its shape: estimated by the bundler, its limits kept.
    let before = estimates(&proxy);
    let first = sequence(&f.lands(&agent, transfer(to, "0.01")).await);
    assert_eq!(estimates(&proxy) - before, 1);
    // The same shape (another amount): no estimate; the execution was checked on the node.
    let before = estimates(&proxy);
    let second = sequence(&f.lands(&agent, transfer(to, "0.02")).await);
    assert_eq!(second, first + 1);
    assert_eq!(estimates(&proxy) - before, 0, "the limits were reused");

    // A nonce gap: an operation of the lane sent past the companion moves the chain's nonce.
    sent_past_the_companion(&f, account, &agent, Call::transfer(to, eth("0.01"))).await;
    // The nonce comes from the reads (the chain's), not from the companion's expectation; the
    // limits, which do not depend on it, are still reused.
    let before = estimates(&proxy);
    let third = sequence(&f.lands(&agent, transfer(to, "0.01")).await);
    assert_eq!(
        third,
        second + 2,
        "after the operation sent past the companion"
    );
    assert_eq!(estimates(&proxy) - before, 0);
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.05"));

    // Another shape (no value, other calldata length) is estimated.
    let before = estimates(&proxy);
    f.lands(&agent, json!([{"to": to, "value": "0", "data": "0x"}]))
        .await;
    assert_eq!(estimates(&proxy) - before, 1);

    // With an Idempotency-Key nothing is reused (a refusal of reused gas is answered with a
    // second record, which a key's single record cannot be): estimated every time.
    for key in ["reuse-k1", "reuse-k2"] {
        let before = estimates(&proxy);
        let (status, body) =
            f.c.intent(&agent, transfer(to, "0.01"), Some(key))
                .await
                .unwrap();
        assert_eq!(status, 202, "{body}");
        let hash = body["userOpHash"].as_str().unwrap();
        let done = f.c.wait_intent(&agent, hash).await.unwrap();
        assert_eq!(done["status"], "included", "{done}");
        assert_eq!(estimates(&proxy) - before, 1, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_changed_on_chain_is_seen_with_reused_limits() {
    let (mut f, proxy) = counted().await;
    let agent = f.agent("reuse-session").await;
    let to = address("gas reuse: session");
    let account = grant(&mut f, &agent, 0, &[to], json!([])).await;
    f.lands(&agent, transfer(to, "0.1")).await;

    // Past the companion, the session's budget is spent down to 0.05 ETH.
    sent_past_the_companion(&f, account, &agent, Call::transfer(to, eth("0.85"))).await;

    // A shape with kept limits: the pre-check still reads the session and refuses, before any
    // estimate or signature.
    let (before, sent) = (estimates(&proxy), sends(&proxy));
    let body = f
        .refused(&agent, transfer(to, "0.1"), RefusalCode::OverBudget)
        .await;
    assert_eq!(
        body["details"]["remainingBudget"].as_str(),
        Some(eth("0.05").to_string().as_str()),
        "{body}"
    );
    assert_eq!((estimates(&proxy), sends(&proxy)), (before, sent));
    // What remains still lands, on the kept limits.
    f.lands(&agent, transfer(to, "0.05")).await;
    assert_eq!(estimates(&proxy), before);
    assert_eq!(f.env.balance(to).await.unwrap(), eth("1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_execution_that_no_longer_fits_is_estimated_again() {
    let (mut f, proxy) = counted().await;
    let token = f.env.info.test_token;
    let agent = f.agent("reuse-fit").await;
    let holder = address("gas reuse: holder");
    let fresh = address("gas reuse: fresh recipient");
    let account = grant(
        &mut f,
        &agent,
        0,
        &[],
        json!([{"token": token, "cap": "1000"}]),
    )
    .await;
    f.env
        .mint_test_token(account, U256::from(1000))
        .await
        .unwrap();
    // The holder already has tokens: a transfer to it rewrites a non-zero balance (cheap).
    f.env.mint_test_token(holder, U256::from(1)).await.unwrap();

    let before = estimates(&proxy);
    f.lands(&agent, token_transfer(token, holder, 10)).await;
    f.lands(&agent, token_transfer(token, holder, 10)).await;
    assert_eq!(
        estimates(&proxy) - before,
        1,
        "the second reused the first's"
    );

    // The same shape (target, selector, no value, calldata length) to a recipient without
    // tokens writes a zero balance slot (~17,000 gas more): the kept callGasLimit no longer fits
    // the execution, the node's check says so, and the bundler estimates it.
    let before = estimates(&proxy);
    let done = f.lands(&agent, token_transfer(token, fresh, 10)).await;
    assert_eq!(estimates(&proxy) - before, 1, "estimated again");
    assert_eq!(done["success"], true, "{done}");
    assert_eq!(
        f.env.test_token_balance(fresh).await.unwrap(),
        U256::from(10)
    );
    // Its limits are kept in place of the others'.
    let before = estimates(&proxy);
    f.lands(&agent, token_transfer(token, holder, 10)).await;
    assert_eq!(estimates(&proxy) - before, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundler_refusal_of_reused_gas_is_estimated_and_signed_again_once() {
    let (mut f, proxy) = counted().await;
    let agent = f.agent("reuse-refused").await;
    let to = address("gas reuse: refused");
    grant(&mut f, &agent, 0, &[to], json!([])).await;
    f.lands(&agent, transfer(to, "0.01")).await;

    // The bundler refuses the reused preVerificationGas (Alto's words and code) once.
    proxy.script(
        "eth_sendUserOperation",
        [Step::Error {
            code: -32602,
            message: "preVerificationGas is not enough, required: 99999999, got: 1".into(),
        }],
    );
    let (before, sent) = (estimates(&proxy), sends(&proxy));
    let done = f.lands(&agent, transfer(to, "0.01")).await;
    assert_eq!(estimates(&proxy) - before, 1, "estimated after the refusal");
    assert_eq!(sends(&proxy) - sent, 2, "refused, then the re-signed one");
    let ops: Vec<Value> = proxy.seen_of("eth_sendUserOperation")[sent..]
        .iter()
        .map(|s| s.params[0].clone())
        .collect();
    assert_eq!(ops[0]["nonce"], ops[1]["nonce"], "the same nonce");
    assert_ne!(ops[0]["signature"], ops[1]["signature"], "signed again");
    assert_eq!(done["nonce"], ops[1]["nonce"]);
    // The refused operation's record is settled as refused, not left open.
    let (status, list) =
        f.c.post("/kms/list-agent-intents", &json!({"keyId": agent.key_id}))
            .await
            .unwrap();
    assert_eq!(status, 200, "{list}");
    let listed = list["intents"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{list}");
    let failed: Vec<&Value> = listed.iter().filter(|i| i["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{list}");
    assert_ne!(failed[0]["userOpHash"], done["userOpHash"], "{list}");

    // The shape's limits were forgotten and replaced by the fresh estimate: reused again.
    let before = estimates(&proxy);
    f.lands(&agent, transfer(to, "0.01")).await;
    assert_eq!(estimates(&proxy) - before, 0);

    // Another refusal (not for gas) of reused limits is answered, not retried.
    proxy.script(
        "eth_sendUserOperation",
        [Step::Error {
            code: -32500,
            message: "UserOperation failed validation with reason: AA24 signature error".into(),
        }],
    );
    let (before, sent) = (estimates(&proxy), sends(&proxy));
    let (status, body) =
        f.c.intent(&agent, transfer(to, "0.01"), None)
            .await
            .unwrap();
    assert_ne!(status, 202, "{body}");
    assert_eq!((estimates(&proxy), sends(&proxy) - sent), (before, 1));
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.03"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fee_the_bundler_no_longer_takes_is_read_again_and_signed_again() {
    let (mut f, proxy) = counted().await;
    let agent = f.agent("reuse-fees").await;
    let to = address("gas reuse: fees");
    grant(&mut f, &agent, 0, &[to], json!([])).await;
    f.lands(&agent, transfer(to, "0.01")).await;

    // The bundler refuses the (possibly reused) fee once, in Alto's words and code.
    proxy.script(
        "eth_sendUserOperation",
        [Step::Error {
            code: -32602,
            message: "maxFeePerGas must be at least 999999999999 (current maxFeePerGas: 1) - use \
                      pimlico_getUserOperationGasPrice to get the current gas price"
                .into(),
        }],
    );
    let sent = sends(&proxy);
    let done = f.lands(&agent, transfer(to, "0.01")).await;
    let seen = proxy.seen_of("eth_sendUserOperation");
    assert_eq!(seen.len() - sent, 2, "refused, then the re-signed one");
    let (refused, resent) = (&seen[sent], &seen[sent + 1]);
    assert_eq!(refused.params[0]["nonce"], resent.params[0]["nonce"]);
    assert_ne!(
        refused.params[0]["signature"],
        resent.params[0]["signature"]
    );
    assert_eq!(done["nonce"], resent.params[0]["nonce"]);
    // Between the refusal and the second submission the gas price was read afresh.
    assert!(
        proxy
            .seen_of("pimlico_getUserOperationGasPrice")
            .iter()
            .any(|s| s.at > refused.at && s.at < resent.at),
        "no fresh gas price between the refusal and the second submission"
    );
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.02"));
}
