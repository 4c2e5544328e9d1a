//! Truthful intent statuses, end to end (issue 14 items 2, 3 and the revocation line of 5): the
//! companion's bundler is a scripted fault proxy in front of Alto ([`kms_e2e::proxy::Proxy`]),
//! and what the background task makes of each fault is read from the companion's database (a
//! `GET` would look the intent up itself; these tests show what the task does on its own).
//!
//! - "already known" on a re-submission ends `included`, not `failed`;
//! - AA25 on a re-submission (the operation included at the last moment, the bundler's receipt
//!   missing) is looked up on chain and ends `included` with the EntryPoint's event as evidence;
//! - an answer that says nothing about the operation (another userOpHash, an unreadable answer)
//!   on the first submission leaves the intent open, and it ends `included`;
//! - more than a hundred orphans (intents the chain's nonce passed, or the bundler never saw)
//!   never keep a fresh intent from settling, and are settled themselves, with evidence;
//! - a revoked agent's signed operation is never re-submitted: `cancelled`.
//!
//! (A racing refresh that would overwrite `included` is refused by the database: `kms-db`'s
//! `a_racing_refresh_cannot_overwrite_included`.)

use std::time::{Duration, Instant};

use crate::common::*;
use alloy::primitives::{keccak256, Address, U256};
use kms_chain::nonce::NonceKey;
use kms_chain::userop::EntryPointVersion::{self, V07, V08};
use kms_db::{Intent, IntentStatus, NewIntent};
use kms_e2e::chain::ChainEnv;
use kms_e2e::companion::{AgentKey, DAY_SESSION_GAS_CAP};
use kms_e2e::proxy::{Proxy, Step};
use kms_e2e::stack::Stack;
use serde_json::{json, Value};

const SEND: &str = "eth_sendUserOperation";
const RECEIPT: &str = "eth_getUserOperationReceipt";
const STATUS: &str = "pimlico_getUserOperationStatus";
const ESTIMATE: &str = "eth_estimateUserOperationGas";

/// How long the background task may take to settle what these tests make it settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A fixture whose companion talks to the bundler through a fault proxy.
async fn proxied(version: EntryPointVersion) -> (Fixture, Proxy) {
    let stack = tokio::task::spawn_blocking(Stack::shared).await.unwrap();
    let env = ChainEnv::connect(stack.info(), version)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", stack.output_tail()));
    let proxy = Proxy::start(env.client.config().bundler_url.as_str(), &[])
        .await
        .unwrap();
    let url = proxy.url();
    let f = fixture_with(version, &["--bundler-url", &url]).await;
    (f, proxy)
}

/// Grants `agent` plain transfers to `to` (1 ETH cap) on the owner's account of salt 0, valid
/// from an hour ago for a day; returns the account.
async fn grant(f: &mut Fixture, agent: &AgentKey, to: Address) -> Address {
    let account = f.funded_account(0).await;
    let now = f.env.now().await.unwrap();
    f.grant_included(
        agent,
        json!({
            "targets": [to],
            "spendCap": eth("1").to_string(),
            "gasCap": DAY_SESSION_GAS_CAP.to_string(),
            "validAfter": now - 3600,
            "validUntil": now + DAY,
        }),
    )
    .await;
    account
}

/// The intent as the companion's database has it.
async fn stored(f: &Fixture, hash: &str) -> Intent {
    f.c.server()
        .state
        .db
        .get_intent(hash)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no intent {hash}"))
}

/// Waits (reading the database only: the background task's doing) until intent `hash` has a
/// final status.
async fn settled(f: &Fixture, hash: &str) -> Intent {
    let start = Instant::now();
    loop {
        let i = stored(f, hash).await;
        if !i.is_open() {
            return i;
        }
        assert!(
            start.elapsed() < SETTLE_TIMEOUT,
            "intent {hash} still {} ({:?}) after {SETTLE_TIMEOUT:?}: {:?}",
            i.status,
            i.status_reason,
            i.evidence_json
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn evidence(i: &Intent) -> Value {
    serde_json::from_str(i.evidence_json.as_deref().expect("evidence")).unwrap()
}

/// Expects the 502 of a first submission that got no usable answer: the operation kept open.
fn kept_open(status: u16, body: &Value, reason: &str) -> String {
    assert_eq!(
        (status, body["code"].as_str()),
        (502, Some("bundler_unavailable")),
        "{body}"
    );
    assert_eq!(body["details"]["status"], "signed", "{body}");
    assert_eq!(body["details"]["statusReason"], reason, "{body}");
    body["details"]["userOpHash"].as_str().unwrap().to_owned()
}

/// Five 503s without forwarding: every attempt of the companion's first submission.
fn unreachable_first_submission() -> Vec<Step> {
    vec![Step::Unavailable; 5]
}

#[tokio::test(flavor = "multi_thread")]
async fn already_known_on_resubmission_ends_included() {
    let (mut f, proxy) = proxied(V07).await;
    let agent = f.agent("already known").await;
    let to = address("lifecycle already known");
    grant(&mut f, &agent, to).await;

    // The first submission never reaches the bundler; the task's re-submission does, and its
    // answer says "already known" (as when an earlier attempt had got through).
    let grant_sends = proxy.seen_of(SEND).len();
    proxy.script(SEND, unreachable_first_submission());
    proxy.script(
        SEND,
        [Step::ForwardThenError {
            code: -32602,
            message: "Already known".into(),
        }],
    );
    let (status, body) = f.c.intent(&agent, transfer(to, "0.1"), None).await.unwrap();
    let hash = kept_open(status, &body, "bundler_unreachable");
    assert_eq!(stored(&f, &hash).await.status, IntentStatus::Signed);

    let done = settled(&f, &hash).await;
    assert_eq!(
        (done.status.as_str(), done.status_reason.map(|r| r.as_str())),
        ("included", Some("receipt")),
        "{done:?}"
    );
    assert_eq!(evidence(&done)["source"], "bundlerReceipt");
    assert!(done.receipt_json.is_some() && done.tx_hash.is_some());
    assert!(done.settled_at.is_some());
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.1"));
    let sends = proxy.seen_of(SEND).split_off(grant_sends);
    assert_eq!(sends.len(), 6, "{sends:?}");
    assert!(
        sends.iter().all(|s| s.params == sends[0].params),
        "the identical operation"
    );
    assert_eq!(
        sends.iter().filter(|s| s.forwarded).count(),
        1,
        "only the re-submission reached the bundler"
    );
    // The agent sees it too, with its evidence.
    let (status, v) =
        f.c.get_bearer(&format!("/agent/intents/{hash}"), &agent.jwt)
            .await
            .unwrap();
    assert_eq!(
        (status, v["status"].as_str()),
        (200, Some("included")),
        "{v}"
    );
    assert_eq!(v["statusReason"], "receipt", "{v}");
    assert_eq!(v["evidence"]["source"], "bundlerReceipt", "{v}");
    // And so does the owner's listing.
    let (status, list) =
        f.c.post("/kms/list-agent-intents", &json!({"keyId": agent.key_id}))
            .await
            .unwrap();
    assert_eq!(status, 200, "{list}");
    let listed = list["intents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["userOpHash"] == hash.as_str())
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(listed["status"], "included", "{listed}");
    assert_eq!(listed["statusReason"], "receipt", "{listed}");
    assert_eq!(listed["evidence"]["source"], "bundlerReceipt", "{listed}");
    assert!(listed["settledAt"].as_i64().is_some(), "{listed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn aa25_on_resubmission_is_looked_up_on_chain_and_ends_included() {
    let (mut f, proxy) = proxied(V08).await;
    let agent = f.agent("aa25").await;
    let to = address("lifecycle aa25");
    grant(&mut f, &agent, to).await;

    // The bundler has lost track of everything (no receipts, no status), the first submission
    // never reaches it, and the re-submission does but is answered AA25: what a bundler says
    // when the operation was included a moment before.
    proxy.script(RECEIPT, vec![Step::Result(Value::Null); 2000]);
    proxy.script(
        STATUS,
        vec![Step::Result(json!({"status": "not_found", "transactionHash": null})); 2000],
    );
    proxy.script(SEND, unreachable_first_submission());
    proxy.script(
        SEND,
        [Step::ForwardThenError {
            code: -32500,
            message: "UserOperation failed validation with reason: AA25 invalid account nonce"
                .into(),
        }],
    );
    let (status, body) = f.c.intent(&agent, transfer(to, "0.2"), None).await.unwrap();
    let hash = kept_open(status, &body, "bundler_unreachable");

    let done = settled(&f, &hash).await;
    proxy.clear_script(RECEIPT);
    proxy.clear_script(STATUS);
    assert_eq!(
        (done.status.as_str(), done.status_reason.map(|r| r.as_str())),
        ("included", Some("entry_point_event")),
        "{done:?}"
    );
    let ev = evidence(&done);
    assert_eq!(ev["source"], "entryPointEvent", "{ev}");
    assert_eq!(ev["event"]["userOpHash"], hash, "{ev}");
    assert_eq!(ev["event"]["success"], true, "{ev}");
    // The receipt is rebuilt from the event: the agent sees the transaction and the outcome.
    assert_eq!(
        done.tx_hash.as_deref(),
        ev["event"]["transactionHash"].as_str()
    );
    let (_, v) =
        f.c.get_bearer(&format!("/agent/intents/{hash}"), &agent.jwt)
            .await
            .unwrap();
    assert_eq!(
        (v["status"].as_str(), v["success"].as_bool()),
        (Some("included"), Some(true)),
        "{v}"
    );
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.2"));
    assert!(
        proxy
            .seen_of(SEND)
            .iter()
            .any(|s| s.step.is_some() && s.forwarded),
        "the re-submission was answered AA25"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_first_answer_is_not_failed() {
    let (mut f, proxy) = proxied(V07).await;
    let agent = f.agent("unusable").await;
    let to = address("lifecycle unusable");
    grant(&mut f, &agent, to).await;

    // The bundler takes the operation but answers with another userOpHash; then, for the next
    // intent, with something that is not a hash at all. Neither says the operation failed.
    for (i, answer) in [
        json!(format!("0x{}", "11".repeat(32))),
        json!({"not": "a hash"}),
    ]
    .into_iter()
    .enumerate()
    {
        proxy.script(SEND, [Step::ForwardThenResult(answer)]);
        let (status, body) = f.c.intent(&agent, transfer(to, "0.1"), None).await.unwrap();
        let hash = kept_open(status, &body, "bundler_answer_unusable");
        let done = settled(&f, &hash).await;
        assert_eq!(
            (done.status.as_str(), done.status_reason.map(|r| r.as_str())),
            ("included", Some("receipt")),
            "answer {i}: {done:?}"
        );
        assert_eq!(done.error, None);
    }
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn orphans_never_starve_fresh_intents_and_are_settled_with_evidence() {
    let mut f = fixture(V07).await;
    let agent = f.agent("orphans").await;
    let to = address("lifecycle orphans");
    let account = grant(&mut f, &agent, to).await;
    let first = f.lands(&agent, transfer(to, "0.01")).await;
    let first_hash = first["userOpHash"].as_str().unwrap().to_owned();
    let first_row = stored(&f, &first_hash).await;
    let op_json: Value = serde_json::from_str(first_row.user_op_json.as_deref().unwrap()).unwrap();

    // Orphans, older than anything else and all due: 110 `pending` operations whose nonce the
    // chain has passed (another operation, the first intent, used it) and 3 the bundler never
    // saw (in a lane the validator refuses: the bundler's verdict will be the evidence).
    let db = &f.c.server().state.db;
    let old = kms_db::now_secs() - 3600;
    let orphan = |tag: String, op: &Value| NewIntent {
        user_op_hash: format!("{:#x}", keccak256(tag.as_bytes())),
        key_id: agent.key_id.clone(),
        wallet_id: first_row.wallet_id.clone(),
        agent_index: first_row.agent_index.map(|i| i as u32),
        account: Some(account),
        status: IntentStatus::Pending,
        chain_id: first_row.chain_id,
        entry_point: first_row.entry_point,
        calls_json: first_row.calls_json.clone(),
        user_op_json: Some(op.to_string()),
        nonce: op["nonce"].as_str().map(|n| n.parse().unwrap()),
        value_wei: Some(U256::from(1)),
        max_gas_cost_wei: None,
        token_amounts_json: None,
        idempotency_key: None,
        next_check_at: 0,
        first_block: None,
        now: old,
    };
    let mut passed = Vec::new();
    for i in 0..110 {
        let o = orphan(format!("orphan {} {i}", agent.key_id), &op_json);
        passed.push(o.user_op_hash.clone());
        db.insert_intent(&o).await.unwrap();
    }
    let mut unseen = Vec::new();
    for i in 0..3u64 {
        let mut op = op_json.clone();
        op["nonce"] = json!(format!(
            "{:#x}",
            NonceKey::split(U256::from(0xdead_u64 + i) << 64).0.nonce(0)
        ));
        let o = orphan(format!("unseen {} {i}", agent.key_id), &op);
        unseen.push(o.user_op_hash.clone());
        db.insert_intent(&o).await.unwrap();
    }
    assert!(db.open_intents_of(&agent.key_id).await.unwrap().len() > 100);

    // A fresh intent settles through the background task alone, orphans or not.
    let fresh = f.submit(&agent, transfer(to, "0.02")).await;
    let done = settled(&f, &fresh).await;
    assert_eq!(done.status, IntentStatus::Included, "{done:?}");
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.03"));

    // And every orphan is settled, with its evidence; none counts as in flight any more.
    for hash in &passed {
        let i = settled(&f, hash).await;
        assert_eq!(
            (i.status.as_str(), i.status_reason.map(|r| r.as_str())),
            ("replaced", Some("nonce_passed")),
            "{i:?}"
        );
        let ev = evidence(&i);
        assert_eq!(ev["source"], "entryPointNonce", "{ev}");
        assert_eq!(ev["usedBy"]["userOpHash"], first_hash, "{ev}");
        assert!(i.error.as_deref().unwrap().contains("nonce"), "{i:?}");
    }
    for hash in &unseen {
        let i = settled(&f, hash).await;
        assert_eq!(
            (i.status.as_str(), i.status_reason.map(|r| r.as_str())),
            ("failed", Some("bundler_rejected")),
            "{i:?}"
        );
        let ev = evidence(&i);
        assert_eq!(ev["source"], "bundlerRefusal", "{ev}");
        assert!(ev["rejection"]["rpcCode"].is_i64(), "{ev}");
        assert_eq!(ev["checked"]["receipt"], Value::Null, "{ev}");
    }
    assert!(db.open_intents_of(&agent.key_id).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_agents_signed_intent_is_cancelled_not_resubmitted() {
    let (mut f, proxy) = proxied(V07).await;
    let agent = f.agent("revoked").await;
    let to = address("lifecycle revoked");
    grant(&mut f, &agent, to).await;

    // The first submission and any re-submission before the revocation never reach the
    // bundler.
    let grant_sends = proxy.seen_of(SEND).len();
    proxy.script(SEND, vec![Step::Unavailable; 25]);
    let (status, body) = f.c.intent(&agent, transfer(to, "0.1"), None).await.unwrap();
    let hash = kept_open(status, &body, "bundler_unreachable");
    f.c.revoke_agent(&mut f.user, &agent).await.unwrap();
    let revoked_at = Instant::now();
    proxy.clear_script(SEND);

    let done = settled(&f, &hash).await;
    assert_eq!(
        (done.status.as_str(), done.status_reason.map(|r| r.as_str())),
        ("cancelled", Some("agent_revoked")),
        "{done:?}"
    );
    let ev = evidence(&done);
    assert_eq!(ev["source"], "agentRevoked", "{ev}");
    assert!(ev["agentRevokedAt"].is_i64(), "{ev}");
    assert_eq!(ev["checked"]["receipt"], Value::Null, "{ev}");
    // Never sent after the revocation (a look that began before it may still finish its
    // retries), and nothing moved.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sends = proxy.seen_of(SEND).split_off(grant_sends);
    let late: Vec<_> = sends
        .iter()
        .filter(|s| s.at > revoked_at + Duration::from_secs(5))
        .collect();
    assert!(late.is_empty(), "{late:?}");
    assert!(sends.iter().all(|s| !s.forwarded), "{sends:?}");
    assert_eq!(f.env.balance(to).await.unwrap(), U256::ZERO);
}

/// The sequence of a recorded intent's nonce.
fn sequence_of(i: &Intent) -> u64 {
    NonceKey::split(i.nonce.expect("a recorded nonce")).1
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operation_after_one_that_failed_is_failed_with_its_reason_and_the_lane_recovers() {
    // A long poll interval: the background task's first look at A comes after B is submitted.
    let stack = tokio::task::spawn_blocking(Stack::shared).await.unwrap();
    let env = ChainEnv::connect(stack.info(), V07)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", stack.output_tail()));
    let proxy = Proxy::start(env.client.config().bundler_url.as_str(), &[])
        .await
        .unwrap();
    let url = proxy.url();
    let mut f = fixture_with(V07, &["--bundler-url", &url, "--intent-poll-secs=5"]).await;
    let agent = f.agent("predecessor").await;
    let to = address("lifecycle predecessor");
    grant(&mut f, &agent, to).await;

    // A: its first submission never reaches the bundler; it stays open at sequence n.
    proxy.script(SEND, unreachable_first_submission());
    let (status, body) = f.c.intent(&agent, transfer(to, "0.1"), None).await.unwrap();
    let a = kept_open(status, &body, "bundler_unreachable");
    // B: the agent's next intent does not wait for A: sequence n + 1, signed and recorded. The
    // bundler can neither estimate nor accept an operation whose predecessor it never saw
    // (AA25): B's estimate is scripted (fixed limits), and its submission is refused for its
    // nonce, which keeps it open (not a verdict on B).
    proxy.script(
        ESTIMATE,
        [Step::Result(json!({
            "preVerificationGas": "0x186a0",
            "verificationGasLimit": "0x61a80",
            "callGasLimit": "0x30d40",
        }))],
    );
    let (status, body) = f.c.intent(&agent, transfer(to, "0.2"), None).await.unwrap();
    assert_eq!(
        (status, body["details"]["status"].as_str()),
        (422, Some("signed")),
        "{body}"
    );
    assert_eq!(body["details"]["statusReason"], "nonce_conflict", "{body}");
    assert_eq!(body["details"]["aaCode"], "AA25", "{body}");
    let b = body["details"]["userOpHash"].as_str().unwrap().to_owned();
    let (ia, ib) = (stored(&f, &a).await, stored(&f, &b).await);
    assert_eq!(sequence_of(&ib), sequence_of(&ia) + 1, "{ia:?} {ib:?}");
    assert!(ia.is_open() && ib.is_open(), "{ia:?} {ib:?}");

    // A's re-submission by the background task is refused in validation: A fails, and so does
    // B, which can never validate without A's sequence.
    proxy.script(
        SEND,
        [Step::Error {
            code: -32500,
            message: "UserOperation reverted during simulation with reason: AA23 reverted: test"
                .into(),
        }],
    );
    let done_a = settled(&f, &a).await;
    assert_eq!(
        (done_a.status, done_a.status_reason.map(|r| r.as_str())),
        (IntentStatus::Failed, Some("bundler_rejected")),
        "{done_a:?}"
    );
    let refused = proxy
        .seen_of(SEND)
        .into_iter()
        .find(|s| matches!(s.step, Some(Step::Error { .. })))
        .expect("the scripted refusal was taken");
    assert_eq!(
        refused.params[0]["nonce"]
            .as_str()
            .unwrap()
            .parse::<U256>()
            .unwrap(),
        ia.nonce.unwrap(),
        "the refusal went to A's operation"
    );
    let done_b = settled(&f, &b).await;
    assert_eq!(
        (done_b.status, done_b.status_reason.map(|r| r.as_str())),
        (IntentStatus::Failed, Some("predecessor_failed")),
        "{done_b:?}"
    );
    let ev = evidence(&done_b);
    assert_eq!(ev["source"], "predecessor", "{ev}");
    assert_eq!(ev["missingSequence"], sequence_of(&ia), "{ev}");
    assert!(
        done_b
            .error
            .as_deref()
            .unwrap()
            .contains("submit the intent again"),
        "{done_b:?}"
    );
    // The agent reads the reason too.
    let (status, v) =
        f.c.get_bearer(&format!("/agent/intents/{b}"), &agent.jwt)
            .await
            .unwrap();
    assert_eq!((status, v["status"].as_str()), (200, Some("failed")), "{v}");
    assert_eq!(v["statusReason"], "predecessor_failed", "{v}");

    // The lane recovers: the next intent takes A's sequence and lands; neither A nor B moved
    // anything.
    let done = f.lands(&agent, transfer(to, "0.05")).await;
    let nonce: U256 = done["nonce"].as_str().unwrap().parse().unwrap();
    assert_eq!(NonceKey::split(nonce).1, sequence_of(&ia), "{done}");
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.05"));
}
