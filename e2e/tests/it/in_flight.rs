//! One agent's lane full of intents ahead of the chain, on anvil + Alto: the companion keeps at
//! most `MAX_IN_FLIGHT_PER_LANE` (8) operations of a lane open past the chain's nonce and refuses
//! the next intent with 429 `too_many_in_flight`, until the chain catches up.
//!
//! To hold operations open ahead of the chain, Alto is switched to manual bundling
//! (`debug_bundler_setBundlingMode`): it keeps accepting operations into its mempool, and
//! estimating new ones against them, but bundles none until it is switched back to automatic
//! bundling. Pausing anvil's mining instead would leave the first operation in a bundle
//! transaction that is never mined, out of Alto's mempool and not on chain: the next ones'
//! estimates would be refused with AA25 (see `service/intents.rs`) and fail once its retries run
//! out. Either switch would stall every other test on the shared stack, so this test starts a
//! stack of its own ([`debug_stack`]: `anvil/stack.sh` with Alto's debug endpoints enabled, which
//! the shared stack leaves off).

use crate::common::{address, eth, DAY};
use alloy::primitives::{Address, U256};
use kms_chain::nonce::NonceKey;
use kms_chain::userop::EntryPointVersion::V07;
use kms_e2e::chain::ChainEnv;
use kms_e2e::companion::{AgentKey, Companion, DAY_SESSION_GAS_CAP};
use kms_e2e::stack::{Stack, StackInfo, DEFAULT_START_TIMEOUT};
use kms_test_support::Soft;
use serde_json::{json, Value};

/// `MAX_IN_FLIGHT_PER_LANE` of the companion's intent pipeline.
const MAX_IN_FLIGHT: u64 = kms_companion::service::intents::MAX_IN_FLIGHT_PER_LANE;

/// `anvil/stack.sh` run for this test alone, with Alto's debug endpoints enabled
/// (`ALTO_ENABLE_DEBUG_ENDPOINTS=true` in its environment: Alto reads its options from `ALTO_*`
/// variables too, and the script passes no flag of that name, so the variable decides). Stopped
/// with its anvil and Alto when dropped; panics with the start error.
pub(crate) fn debug_stack() -> Stack {
    Stack::start_with_env(
        &[("ALTO_ENABLE_DEBUG_ENDPOINTS", "true")],
        DEFAULT_START_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The result of the JSON-RPC call `method` on the stack's Alto; panics on an error answer.
pub(crate) async fn alto(info: &StackInfo, method: &str, params: Value) -> Value {
    let answer: Value = reqwest::Client::new()
        .post(&info.bundler_url)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer.get("error").is_none(), "{method}: {answer}");
    answer["result"].clone()
}

/// The nonces of `account`'s operations in Alto's mempool (accepted, not bundled), sorted.
async fn mempool_nonces(info: &StackInfo, account: Address) -> Vec<U256> {
    let ops = alto(
        info,
        "debug_bundler_dumpMempool",
        json!([info.entry_point_v07]),
    )
    .await;
    let mut nonces: Vec<U256> = ops
        .as_array()
        .unwrap()
        .iter()
        .filter(|op| op["sender"].as_str().unwrap().parse::<Address>().unwrap() == account)
        .map(|op| op["nonce"].as_str().unwrap().parse().unwrap())
        .collect();
    nonces.sort();
    nonces
}

/// `(i + 1) / 100` ether, as a decimal string: what intent `i` pays.
fn amount(i: usize) -> String {
    format!("0.{:02}", i + 1)
}

/// The calls of intent `i`: `amount(i)` to payee `i`.
fn payment(payees: &[Address], i: usize) -> Value {
    json!([{"to": payees[i], "value": eth(&amount(i)).to_string()}])
}

/// Submits intent `i`; expects 202 and returns its userOpHash.
async fn submit(c: &Companion, agent: &AgentKey, payees: &[Address], i: usize) -> String {
    let (status, body) = c.intent(agent, payment(payees, i), None).await.unwrap();
    assert_eq!(status, 202, "intent {i}: {body}");
    body["userOpHash"].as_str().unwrap().to_owned()
}

/// Submits intent `i`; expects 429 `too_many_in_flight` for `account`'s lane with
/// [`MAX_IN_FLIGHT`] open.
async fn refused_in_flight(
    c: &Companion,
    agent: &AgentKey,
    payees: &[Address],
    i: usize,
    account: Address,
) {
    let (status, body) = c.intent(agent, payment(payees, i), None).await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("too_many_in_flight")),
        "intent {i}: {body}"
    );
    assert_eq!(
        body["details"],
        json!({
            "account": account.to_checksum(None),
            "inFlight": MAX_IN_FLIGHT,
            "max": MAX_IN_FLIGHT,
        }),
        "{body}"
    );
    assert!(
        body["error"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// The intent `hash` as `GET /agent/intents/{hash}` shows it.
async fn intent(c: &Companion, agent: &AgentKey, hash: &str) -> Value {
    let (status, body) = c
        .get_bearer(&format!("/agent/intents/{hash}"), &agent.jwt)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// An intent's nonce as its key and sequence.
pub(crate) fn lane_nonce(intent: &Value) -> (NonceKey, u64) {
    NonceKey::split(intent["nonce"].as_str().unwrap().parse().unwrap())
}

/// Waits for intent `hash` to be included successfully; returns its sequence.
async fn landed(c: &Companion, agent: &AgentKey, hash: &str) -> u64 {
    let done = c.wait_intent(agent, hash).await.unwrap();
    assert_eq!(done["status"], "included", "{done}");
    assert_eq!(done["success"], true, "{done}");
    lane_nonce(&done).1
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lane_full_ahead_of_the_chain_is_refused_with_429_until_the_chain_catches_up() {
    assert_eq!(MAX_IN_FLIGHT, 8, "the counts below are written for 8");
    let stack = tokio::task::spawn_blocking(debug_stack).await.unwrap();
    let info = stack.info();
    let env = ChainEnv::connect(info, V07).await.unwrap();
    let c = Companion::start(info, V07).await.unwrap();
    let mut user = Soft::new();
    let wallet = c.register(&mut user).await.unwrap();
    let agent = c
        .create_agent(&mut user, &wallet, "lane full")
        .await
        .unwrap();
    let account = env
        .client
        .account_address(wallet.address, U256::ZERO)
        .await
        .unwrap();
    env.set_balance(account, eth("10")).await.unwrap();
    // Nine payees, one per intent: intent i pays (i + 1) / 100 ETH to payee i, 0.45 ETH in all,
    // within the 1 ETH cap (the refusal below is the lane's, not the budget's).
    let payees: Vec<Address> = (0..9)
        .map(|i| address(&format!("lane full payee {i}")))
        .collect();
    let now = env.now().await.unwrap();
    let (status, grant) = c
        .grant_session(
            &mut user,
            &agent,
            json!({
                "targets": payees,
                "spendCap": eth("1").to_string(),
                "gasCap": DAY_SESSION_GAS_CAP.to_string(),
                "validAfter": now - 3600,
                "validUntil": now + DAY,
            }),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{grant}");
    assert_eq!(grant["status"], "included", "{grant}");

    // Alto stops bundling: what it accepts stays in its mempool, ahead of the chain.
    assert_eq!(
        alto(info, "debug_bundler_setBundlingMode", json!(["manual"])).await,
        "ok"
    );

    // Eight intents, each answered 202 without any being included.
    let mut hashes = Vec::new();
    for i in 0..8 {
        hashes.push(submit(&c, &agent, &payees, i).await);
    }
    let (key, first) = lane_nonce(&intent(&c, &agent, &hashes[0]).await);
    for (i, hash) in hashes.iter().enumerate() {
        let open = intent(&c, &agent, hash).await;
        assert_eq!(open["status"], "pending", "{open}");
        assert_eq!(lane_nonce(&open), (key, first + i as u64), "{open}");
    }
    // They are all with the bundler and none on chain: the lane's nonce on chain is the first's.
    let open_nonces: Vec<U256> = (0..8).map(|i| key.nonce(first + i)).collect();
    assert_eq!(mempool_nonces(info, account).await, open_nonces);
    assert_eq!(
        env.client.nonce(account, key).await.unwrap(),
        key.nonce(first)
    );

    // The ninth is refused with 429; nothing of it reached the bundler, which holds the same eight.
    refused_in_flight(&c, &agent, &payees, 8, account).await;
    assert_eq!(mempool_nonces(info, account).await, open_nonces);

    // Bundling resumes: the eight land, in order, and the chain's nonce passes them all.
    assert_eq!(
        alto(info, "debug_bundler_setBundlingMode", json!(["auto"])).await,
        "ok"
    );
    for (i, hash) in hashes.iter().enumerate() {
        assert_eq!(landed(&c, &agent, hash).await, first + i as u64);
    }
    assert_eq!(
        env.client.nonce(account, key).await.unwrap(),
        key.nonce(first + 8)
    );
    // The lane takes intents again: the refused one, sent again, gets the next sequence (the
    // refusal took none) and lands.
    let ninth = submit(&c, &agent, &payees, 8).await;
    assert_eq!(landed(&c, &agent, &ninth).await, first + 8);

    // Each payee got exactly its intent's value, once.
    for (i, payee) in payees.iter().enumerate() {
        assert_eq!(
            env.balance(*payee).await.unwrap(),
            eth(&amount(i)),
            "payee {i}"
        );
    }
    let snapshot = env
        .client
        .read_session(account, agent.address, &payees)
        .await
        .unwrap();
    assert_eq!(snapshot.remaining_budget, eth("1") - eth("0.45"));
}
