//! Intents end to end through the companion's HTTP API: anvil + canonical EntryPoint + the
//! project's contracts + Alto (one shared stack for this test binary), and per test a companion
//! (in-process, free port of 127.0.0.1) over its own `ta-sim` and SQLite file. Owners use a
//! software passkey through real WebAuthn ceremonies; agents use their Bearer JWT.
//!
//! Refusals are shown at the companion (403 with a reason code) and, for an operation sent
//! straight to the bundler past the companion (signed through `/kms/sign-agent`), at the bundler
//! and at the EntryPoint itself (`handleOps` as an `eth_call`).

use crate::common::*;
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::Provider;
use alloy::sol_types::SolCall;
use kms_chain::account::Call;
use kms_chain::session::RefusalCode;
use kms_chain::signature::{SESSION_MARKER, SESSION_SIGNATURE_LEN};
use kms_chain::userop::v0_7::UserOperation;
use kms_chain::userop::EntryPointVersion::{self, V07, V08};
use kms_contracts::IEntryPointV07;
use kms_e2e::chain::ChainEnv;
use kms_e2e::companion::{AgentKey, DAY_SESSION_GAS_CAP};
use rstest::rstest;
use serde_json::{json, Value};

impl Fixture {
    /// Grants `agent` a session on the owner's account `salt` through `/kms/agent-sessions`
    /// (funding the account first); checks the answer and returns the account.
    async fn session(
        &mut self,
        agent: &AgentKey,
        salt: u64,
        targets: &[Address],
        cap: U256,
        window: (u64, u64),
    ) -> Address {
        let predicted = self.account(salt).await;
        let deployed = self.env.client.has_code(predicted).await.unwrap();
        self.env.set_balance(predicted, eth("10")).await.unwrap();
        let body = self
            .grant_included(
                agent,
                json!({
                    "targets": targets,
                    "spendCap": cap.to_string(),
                    "gasCap": DAY_SESSION_GAS_CAP.to_string(),
                    "validAfter": window.0,
                    "validUntil": window.1,
                    "salt": salt.to_string(),
                }),
            )
            .await;
        assert_eq!(body["deploysAccount"], !deployed, "{body}");
        assert!(body["transactionHash"].as_str().is_some(), "{body}");
        let account: Address = body["account"].as_str().unwrap().parse().unwrap();
        assert_eq!(account, predicted);
        assert!(self.env.client.has_code(account).await.unwrap());
        // The session on chain is what was asked, with the operator key as revoker.
        let snapshot = self
            .env
            .client
            .read_session(account, agent.address, targets)
            .await
            .unwrap();
        assert_eq!(snapshot.remaining_budget, cap);
        assert!(snapshot.allowed_targets.values().all(|a| *a));
        let operator = self.c.operator_address().await.unwrap();
        assert_eq!(
            body["session"]["revoker"]
                .as_str()
                .unwrap()
                .parse::<Address>()
                .unwrap(),
            operator
        );
        account
    }

    /// The EntryPoint's own verdict on `op`, which must be a decodable refusal: its name.
    async fn entry_point_refuses(&self, op: &UserOperation) -> kms_chain::revert::DecodedRevert {
        match self.env.entry_point_verdict(op).await {
            Ok(()) => panic!("handleOps would accept the operation"),
            Err(Some(d)) => d,
            Err(None) => panic!("handleOps reverted without a decodable error"),
        }
    }
}

/// The UserOperation of `account` in the bundle transaction `tx` (decoded `handleOps`).
async fn op_in_bundle(
    env: &ChainEnv,
    tx: &str,
    account: Address,
) -> kms_contracts::PackedUserOperation {
    let tx: Value = env
        .client
        .provider()
        .raw_request("eth_getTransactionByHash".into(), (tx,))
        .await
        .unwrap();
    assert_eq!(
        tx["to"].as_str().unwrap().parse::<Address>().unwrap(),
        env.client.entry_point().address,
        "the bundle calls the EntryPoint"
    );
    let input: Bytes = tx["input"].as_str().unwrap().parse().unwrap();
    let call = IEntryPointV07::handleOpsCall::abi_decode(&input).unwrap();
    call.ops
        .into_iter()
        .find(|o| o.sender == account)
        .expect("the account's operation is in the bundle")
}

// ------------------------------------------------------------------ an intent lands

#[rstest]
#[case::v07(V07)]
#[case::v08(V08)]
#[tokio::test(flavor = "multi_thread")]
async fn intent_within_policy_lands(#[case] version: EntryPointVersion) {
    let mut f = fixture(version).await;
    let agent = f.agent("lands").await;
    let to = address(&format!("intent lands {version}"));
    let window = f.open_window().await;
    let account = f.session(&agent, 0, &[to], eth("1"), window).await;
    assert_eq!(f.env.balance(to).await.unwrap(), U256::ZERO);

    let (status, first, timing) =
        f.c.intent_timed(&agent, transfer(to, "0.25"))
            .await
            .unwrap();
    assert_eq!(status, 202, "{first}");
    // Server-Timing names every phase once, in order, each with a duration, then the total.
    let timing = timing.expect("a Server-Timing header");
    let phases = kms_e2e::companion::server_timing(&timing).expect(&timing);
    let names: Vec<&str> = phases.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(
        names,
        ["auth", "queue", "nonce", "policy", "prepare", "sign", "record", "submit", "total"]
    );
    let sum: f64 = phases[..phases.len() - 1].iter().map(|p| p.1).sum();
    assert!((phases[8].1 - sum).abs() < 0.05, "{timing}");
    assert!(phases.iter().all(|p| p.1 >= 0.0), "{timing}");
    assert_eq!(
        first["account"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        account
    );
    assert!(
        first["status"] == "pending" || first["status"] == "included",
        "{first}"
    );
    let hash = first["userOpHash"].as_str().unwrap().to_owned();
    let done = f.c.wait_intent(&agent, &hash).await.unwrap();
    assert_eq!(
        (done["status"].as_str(), done["success"].as_bool()),
        (Some("included"), Some(true)),
        "{done}"
    );
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.25"));

    // The operation on chain carries the 106-byte session signature for this account and
    // agent, and hashes to the userOpHash the companion reported.
    let tx = done["transactionHash"].as_str().unwrap();
    let op = op_in_bundle(&f.env, tx, account).await;
    let sig = &op.signature;
    assert_eq!(sig.len(), SESSION_SIGNATURE_LEN);
    assert_eq!(sig[0], SESSION_MARKER);
    assert_eq!(&sig[1..21], account.as_slice());
    assert_eq!(&sig[21..41], agent.address.as_slice());
    let ep = IEntryPointV07::new(f.env.client.entry_point().address, f.env.client.provider());
    let onchain_hash = ep.getUserOpHash(op).call().await.unwrap();
    assert_eq!(format!("{onchain_hash:#x}"), hash);
    // The validator recorded the spend (it validated the session signature).
    let snapshot = f
        .env
        .client
        .read_session(account, agent.address, &[to])
        .await
        .unwrap();
    assert_eq!(snapshot.remaining_budget, eth("0.75"));

    // Another agent's credential does not see this intent.
    let other = f.agent("other").await;
    let (status, body) =
        f.c.get_bearer(&format!("/agent/intents/{hash}"), &other.jwt)
            .await
            .unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("intent_not_found")),
        "{body}"
    );
    // No session for that one: refused with its reason.
    f.refused(&other, transfer(to, "0.1"), RefusalCode::NoSession)
        .await;
}

// ------------------------------------------------------------------ idempotency

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_key_returns_the_first_result() {
    let mut f = fixture(V07).await;
    let agent = f.agent("idempotent").await;
    let to = address("idempotency");
    let window = f.open_window().await;
    f.session(&agent, 0, &[to], eth("1"), window).await;

    let (s1, first) =
        f.c.intent(&agent, transfer(to, "0.1"), Some("pay-42"))
            .await
            .unwrap();
    assert_eq!(s1, 202, "{first}");
    let (s2, again) =
        f.c.intent(&agent, transfer(to, "0.1"), Some("pay-42"))
            .await
            .unwrap();
    assert_eq!(s2, 202, "{again}");
    assert_eq!(again["userOpHash"], first["userOpHash"]);
    assert_eq!(again["nonce"], first["nonce"]);
    let hash = first["userOpHash"].as_str().unwrap();
    f.c.wait_intent(&agent, hash).await.unwrap();
    // Retried after inclusion: still the first result, nothing new submitted.
    let (s3, late) =
        f.c.intent(&agent, transfer(to, "0.1"), Some("pay-42"))
            .await
            .unwrap();
    assert_eq!(
        (s3, late["userOpHash"].as_str()),
        (202, Some(hash)),
        "{late}"
    );
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.1"));
    // The same key with different calls is refused, naming the key and the recorded intent.
    let (s4, reused) =
        f.c.intent(&agent, transfer(to, "0.2"), Some("pay-42"))
            .await
            .unwrap();
    assert_eq!(
        (s4, reused["code"].as_str()),
        (422, Some("idempotency_key_reused")),
        "{reused}"
    );
    assert_eq!(reused["details"]["idempotencyKey"], "pay-42", "{reused}");
    assert_eq!(reused["details"]["userOpHash"], hash, "{reused}");
    // A different key is a different intent.
    let other =
        f.c.intent(&agent, transfer(to, "0.1"), Some("pay-43"))
            .await
            .unwrap();
    assert_eq!(other.0, 202, "{}", other.1);
    assert_ne!(other.1["userOpHash"].as_str(), Some(hash));
    f.c.wait_intent(&agent, other.1["userOpHash"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.2"));
    // A malformed key is refused before anything is built.
    let (s, body) =
        f.c.intent(&agent, transfer(to, "0.1"), Some(&"k".repeat(200)))
            .await
            .unwrap();
    assert_eq!(
        (s, body["code"].as_str()),
        (400, Some("invalid_idempotency_key"))
    );

    // The audit log has the grant (committed before the answer) and the submissions (queued;
    // polled for), with userOpHashes and never a credential.
    let db = &f.c.server().state.db;
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = db.audit_rows(0, 1000).await.unwrap();
        if rows
            .iter()
            .filter(|r| r.action == "SubmitIntent" && r.outcome == "ok")
            .count()
            >= 3
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(rows
        .iter()
        .any(|r| r.action == "GrantSession" && r.outcome == "ok"));
    let submits: Vec<_> = rows
        .iter()
        .filter(|r| r.action == "SubmitIntent" && r.outcome == "ok")
        .collect();
    assert!(submits.len() >= 3, "{rows:?}");
    assert!(submits
        .iter()
        .any(|r| r.user_op_hash.as_deref() == Some(hash)));
    for r in &rows {
        let text = format!("{r:?}");
        assert!(
            !text.contains(&agent.jwt) && !text.contains("eyJ"),
            "{text}"
        );
    }
    assert_eq!(db.verify_audit_chain().await.unwrap().first_bad, None);
    // The intent is recorded with its idempotency key.
    let stored = db.get_intent(hash).await.unwrap().unwrap();
    assert_eq!(stored.idempotency_key.as_deref(), Some("pay-42"));
    assert_eq!(stored.status, kms_db::IntentStatus::Included);
}

/// Status reads have a per-agent limit of their own: an agent polling past it gets 429 on reads
/// while its signing budget is untouched.
#[tokio::test(flavor = "multi_thread")]
async fn status_reads_are_limited_per_agent_apart_from_signing() {
    let mut f = fixture_with(V07, &["--agent-read-rate-limit", "3"]).await;
    let agent = f.agent("reads").await;
    let to = address("reads");
    let window = f.open_window().await;
    f.session(&agent, 0, &[to], eth("1"), window).await;
    let hash = f.submit(&agent, transfer(to, "0.01")).await;
    let path = format!("/agent/intents/{hash}");
    for _ in 0..3 {
        let (status, body) = f.c.get_bearer(&path, &agent.jwt).await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = f.c.get_bearer(&path, &agent.jwt).await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("rate_limited")),
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap().contains("intent reads"),
        "{body}"
    );
    // Signing is a budget of its own.
    let (status, body) =
        f.c.intent(&agent, transfer(to, "0.01"), None)
            .await
            .unwrap();
    assert_eq!(status, 202, "{body}");
}

// ------------------------------------------------------------------ sender binding

#[tokio::test(flavor = "multi_thread")]
async fn sender_binding_refuses_a_signature_made_for_another_account() {
    let mut f = fixture(V07).await;
    let agent = f.agent("binding").await;
    let to = address("binding");
    let window = f.open_window().await;
    // The same agent key holds sessions on both accounts.
    let a = f.session(&agent, 1, &[to], eth("1"), window).await;
    let b = f.session(&agent, 2, &[to], eth("1"), window).await;
    assert_ne!(a, b);

    // B's operation, signed by the TA (through the companion) for account A.
    let forged = f
        .presigned_for(b, &agent, vec![Call::transfer(to, eth("0.1"))], a)
        .await;
    let err = f.bundler_refuses(&forged).await;
    assert_eq!(err.aa_code(), Some("AA23"), "{err}");
    assert_eq!(
        err.rejection().unwrap().revert.map(|r| r.name),
        Some("AccountMismatch".to_owned())
    );
    assert_eq!(f.entry_point_refuses(&forged).await.name, "AccountMismatch");
    assert_eq!(f.env.balance(to).await.unwrap(), U256::ZERO);

    // The same operation signed for B goes through.
    let genuine = f
        .presigned_for(b, &agent, vec![Call::transfer(to, eth("0.1"))], b)
        .await;
    assert!(f.env.submit_and_wait(&genuine).await.unwrap().success);
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.1"));
}

// ------------------------------------------------------------------ refusals

#[tokio::test(flavor = "multi_thread")]
async fn disallowed_target_is_refused_by_companion_and_chain() {
    let mut f = fixture(V07).await;
    let agent = f.agent("target").await;
    let to = address("target allowed");
    let other = address("target not allowed");
    let window = f.open_window().await;
    let account = f.session(&agent, 0, &[to], eth("1"), window).await;

    let body = f
        .refused(
            &agent,
            transfer(other, "0.1"),
            RefusalCode::TargetNotAllowed,
        )
        .await;
    assert_eq!(
        body["details"]["target"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        other
    );
    // The account itself is never a target either.
    f.refused(
        &agent,
        transfer(account, "0"),
        RefusalCode::TargetNotAllowed,
    )
    .await;

    let op = f
        .presigned_for(
            account,
            &agent,
            vec![Call::transfer(other, eth("0.1"))],
            account,
        )
        .await;
    let err = f.bundler_refuses(&op).await;
    assert_eq!(err.aa_code(), Some("AA23"), "{err}");
    assert_eq!(
        err.rejection().unwrap().revert.unwrap().refusal_code(),
        Some(RefusalCode::TargetNotAllowed)
    );
    assert_eq!(
        f.entry_point_refuses(&op).await.refusal_code(),
        Some(RefusalCode::TargetNotAllowed)
    );
    assert_eq!(f.env.balance(other).await.unwrap(), U256::ZERO);
}

#[tokio::test(flavor = "multi_thread")]
async fn total_over_the_cap_across_intents_is_refused() {
    let mut f = fixture(V07).await;
    let agent = f.agent("cap").await;
    let to = address("cap");
    let window = f.open_window().await;
    let account = f.session(&agent, 0, &[to], eth("1"), window).await;

    // 0.6 is submitted; another 0.6 right after it would exceed the cap once the first is
    // counted (in flight, or spent).
    let first = f.submit(&agent, transfer(to, "0.6")).await;
    let body = f
        .refused(&agent, transfer(to, "0.6"), RefusalCode::OverBudget)
        .await;
    assert_eq!(body["details"]["requested"], eth("0.6").to_string());
    f.c.wait_intent(&agent, &first).await.unwrap();
    // What is left still goes through, in two intents; then nothing more.
    f.lands(&agent, transfer(to, "0.3")).await;
    f.lands(&agent, transfer(to, "0.1")).await;
    f.refused(
        &agent,
        transfer(to, "0.000000000000000001"),
        RefusalCode::OverBudget,
    )
    .await;
    assert_eq!(f.env.balance(to).await.unwrap(), eth("1"));

    // Past the companion, the chain refuses too.
    let op = f
        .presigned_for(
            account,
            &agent,
            vec![Call::transfer(to, eth("0.1"))],
            account,
        )
        .await;
    let err = f.bundler_refuses(&op).await;
    assert_eq!(err.aa_code(), Some("AA23"), "{err}");
    assert_eq!(
        err.rejection().unwrap().revert.unwrap().name,
        "SpendCapExceeded"
    );
    assert_eq!(
        f.entry_point_refuses(&op).await.refusal_code(),
        Some(RefusalCode::OverBudget)
    );
    assert_eq!(f.env.balance(to).await.unwrap(), eth("1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_window_is_refused_by_companion_and_chain() {
    let mut f = fixture(V07).await;
    let agent = f.agent("expired").await;
    let to = address("expired");
    let now = f.env.now().await.unwrap();
    let account = f.session(&agent, 0, &[to], eth("1"), (0, now - 60)).await;

    let body = f
        .refused(&agent, transfer(to, "0.1"), RefusalCode::SessionExpired)
        .await;
    assert_eq!(body["details"]["validUntil"], now - 60);

    let op = f
        .presigned_for(
            account,
            &agent,
            vec![Call::transfer(to, eth("0.1"))],
            account,
        )
        .await;
    let err = f.bundler_refuses(&op).await;
    assert_eq!(err.aa_code(), Some("AA22"), "{err}");
    let verdict = f.env.entry_point_verdict(&op).await;
    match verdict {
        Err(Some(d)) => assert_eq!(
            d.entry_point_reason.as_deref(),
            Some("AA22 expired or not due")
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.env.balance(to).await.unwrap(), U256::ZERO);
}

// ------------------------------------------------------------------ revocation

#[tokio::test(flavor = "multi_thread")]
async fn revocation_through_the_api_is_enforced_by_companion_and_chain() {
    let mut f = fixture(V07).await;
    let operator = f.c.operator_address().await.unwrap();
    f.env.set_balance(operator, eth("1")).await.unwrap();
    let agent = f.agent("revoked").await;
    let to = address("revocation");
    let window = f.open_window().await;
    let account = f.session(&agent, 0, &[to], eth("1"), window).await;
    f.lands(&agent, transfer(to, "0.1")).await;

    // Signed before the revocation, kept for later.
    let presigned = f
        .presigned_for(
            account,
            &agent,
            vec![Call::transfer(to, eth("0.1"))],
            account,
        )
        .await;
    assert_eq!(f.env.entry_point_verdict(&presigned).await, Ok(()));

    let revoked = f.c.revoke_agent(&mut f.user, &agent).await.unwrap();
    assert_eq!(revoked["onChain"]["status"], "revoked", "{revoked}");
    assert!(
        revoked["onChain"]["transactionHash"].as_str().is_some(),
        "{revoked}"
    );
    let snapshot = f
        .env
        .client
        .read_session(account, agent.address, &[to])
        .await
        .unwrap();
    assert!(!snapshot.session.active, "{snapshot:?}");

    // The companion refuses the revoked credential.
    let (status, body) = f.c.intent(&agent, transfer(to, "0.1"), None).await.unwrap();
    assert_eq!(status, 401, "{body}");
    // The chain refuses the pre-signed operation.
    let err = f.bundler_refuses(&presigned).await;
    assert_eq!(err.aa_code(), Some("AA23"), "{err}");
    assert_eq!(
        err.rejection().unwrap().revert.unwrap().refusal_code(),
        Some(RefusalCode::SessionRevoked)
    );
    assert_eq!(
        f.entry_point_refuses(&presigned).await.refusal_code(),
        Some(RefusalCode::SessionRevoked)
    );
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.1"));
}

// ------------------------------------------------------------------ refresh

#[tokio::test(flavor = "multi_thread")]
async fn refresh_kills_the_old_jwt_and_the_new_one_works() {
    let mut f = fixture(V07).await;
    let agent = f.agent("refresh").await;
    let to = address("refresh");
    let window = f.open_window().await;
    f.session(&agent, 0, &[to], eth("1"), window).await;

    let fresh = f.c.refresh_agent(&mut f.user, &agent).await.unwrap();
    assert_ne!(fresh.jwt, agent.jwt);
    assert_eq!(fresh.address, agent.address);
    let (status, body) = f.c.intent(&agent, transfer(to, "0.1"), None).await.unwrap();
    assert_eq!(status, 401, "{body}");
    f.lands(&fresh, transfer(to, "0.1")).await;
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.1"));
}

// ------------------------------------------------------------------ parallel agents

#[tokio::test(flavor = "multi_thread")]
async fn two_agents_of_one_account_in_parallel_all_land() {
    let mut f = fixture(V07).await;
    let a1 = f.agent("parallel 1").await;
    let a2 = f.agent("parallel 2").await;
    let to = address("parallel");
    let window = f.open_window().await;
    let account = f.session(&a1, 0, &[to], eth("1"), window).await;
    assert_eq!(f.session(&a2, 0, &[to], eth("1"), window).await, account);

    let f = &f;
    let (h1, h2, h3, h4) = tokio::join!(
        f.submit(&a1, transfer(to, "0.01")),
        f.submit(&a2, transfer(to, "0.02")),
        f.submit(&a1, transfer(to, "0.03")),
        f.submit(&a2, transfer(to, "0.04")),
    );
    let mut nonces = Vec::new();
    for (agent, hash) in [(&a1, &h1), (&a2, &h2), (&a1, &h3), (&a2, &h4)] {
        let done = f.c.wait_intent(agent, hash).await.unwrap();
        assert_eq!(done["status"], "included", "{done}");
        nonces.push(done["nonce"].as_str().unwrap().to_owned());
    }
    nonces.sort();
    nonces.dedup();
    assert_eq!(nonces.len(), 4, "four distinct nonces");
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.1"));
}

// ------------------------------------------------------------------ one agent, several in flight

/// The sequence of an intent's nonce (its low 64 bits), from `GET /agent/intents/{hash}`.
fn sequence(intent: &Value) -> u64 {
    let nonce: U256 = intent["nonce"].as_str().unwrap().parse().unwrap();
    kms_chain::nonce::NonceKey::split(nonce).1
}

#[tokio::test(flavor = "multi_thread")]
async fn one_agent_several_intents_in_flight_all_land_with_consecutive_nonces() {
    let mut f = fixture(V07).await;
    let agent = f.agent("in flight").await;
    let to = address("in flight");
    let window = f.open_window().await;
    f.session(&agent, 0, &[to], eth("1"), window).await;

    // Back to back: each POST is answered (202) without waiting for the previous operation's
    // inclusion, and takes the next sequence of the agent's lane.
    let mut hashes = Vec::new();
    for _ in 0..4 {
        hashes.push(f.submit(&agent, transfer(to, "0.01")).await);
    }
    // At once: the companion builds them one after another, none waits for an inclusion.
    let f = &f;
    let (h5, h6, h7, h8) = tokio::join!(
        f.submit(&agent, transfer(to, "0.01")),
        f.submit(&agent, transfer(to, "0.01")),
        f.submit(&agent, transfer(to, "0.01")),
        f.submit(&agent, transfer(to, "0.01")),
    );
    hashes.extend([h5, h6, h7, h8]);
    let mut sequences = Vec::new();
    for (i, hash) in hashes.iter().enumerate() {
        let done = f.c.wait_intent(&agent, hash).await.unwrap();
        assert_eq!(done["status"], "included", "{done}");
        assert_eq!(done["success"], true, "{done}");
        sequences.push(sequence(&done));
        if i > 0 && i < 4 {
            assert_eq!(
                sequences[i],
                sequences[i - 1] + 1,
                "back to back: consecutive"
            );
        }
    }
    sequences.sort();
    let first = sequences[0];
    assert_eq!(
        sequences,
        (first..first + 8).collect::<Vec<_>>(),
        "eight consecutive sequences, none skipped or reused"
    );
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.08"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_budget_counts_every_intent_in_flight() {
    let mut f = fixture(V07).await;
    let agent = f.agent("in flight cap").await;
    let to = address("in flight cap");
    let window = f.open_window().await;
    f.session(&agent, 0, &[to], eth("1"), window).await;

    // Two of 0.4 back to back; a third would take the three past the 1 ETH cap, whether the
    // first two are still in flight (counted from the companion's records, ahead of the chain's
    // nonce too) or already spent on chain.
    let first = f.submit(&agent, transfer(to, "0.4")).await;
    let second = f.submit(&agent, transfer(to, "0.4")).await;
    let body = f
        .refused(&agent, transfer(to, "0.4"), RefusalCode::OverBudget)
        .await;
    assert_eq!(
        body["details"]["requested"],
        eth("0.4").to_string(),
        "{body}"
    );
    assert_eq!(
        body["details"]["available"],
        eth("0.2").to_string(),
        "{body}"
    );
    for hash in [&first, &second] {
        let done = f.c.wait_intent(&agent, hash).await.unwrap();
        assert_eq!(done["status"], "included", "{done}");
    }
    // What is left still goes through.
    f.lands(&agent, transfer(to, "0.2")).await;
    assert_eq!(f.env.balance(to).await.unwrap(), eth("1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_expected_nonce_is_estimated_beside_the_reads_and_again_after_a_gap() {
    // The companion's bundler is a pass-through proxy: it counts the estimates.
    let stack = tokio::task::spawn_blocking(kms_e2e::stack::Stack::shared)
        .await
        .unwrap();
    let env = ChainEnv::connect(stack.info(), V07).await.unwrap();
    let proxy = kms_e2e::proxy::Proxy::start(env.client.config().bundler_url.as_str(), &[])
        .await
        .unwrap();
    let url = proxy.url();
    let mut f = fixture_with(V07, &["--bundler-url", &url]).await;
    let agent = f.agent("speculative").await;
    let to = address("speculative");
    let window = f.open_window().await;
    let account = f.session(&agent, 0, &[to], eth("1"), window).await;
    let estimates = || proxy.seen_of("eth_estimateUserOperationGas").len();
    // Each intent with an Idempotency-Key: gas limits are then never reused from an earlier
    // estimate of the same shape (tests/gas_reuse.rs), so every intent is estimated.
    let mut keys = 0;
    let mut lands = |calls: Value| {
        keys += 1;
        let key = format!("speculative-{keys}");
        let (c, agent) = (&f.c, &agent);
        async move {
            let (status, body) = c.intent(agent, calls, Some(&key)).await.unwrap();
            assert_eq!(status, 202, "{body}");
            let done = c
                .wait_intent(agent, body["userOpHash"].as_str().unwrap())
                .await
                .unwrap();
            assert_eq!(done["status"], "included", "{done}");
            done
        }
    };

    // Nothing of this lane submitted by this companion yet: estimated once the reads are done.
    let before = estimates();
    let first = sequence(&lands(transfer(to, "0.01")).await);
    assert_eq!(estimates() - before, 1);
    // The companion expects the sequence after its last one; the reads give that very nonce, so
    // the estimate made beside them is the one used.
    let before = estimates();
    let second = sequence(&lands(transfer(to, "0.01")).await);
    assert_eq!(second, first + 1);
    assert_eq!(
        estimates() - before,
        1,
        "one estimate, made beside the reads"
    );

    // A gap: an operation of the lane sent past the companion moves the chain's nonce.
    let op = f
        .presigned(account, &agent, vec![Call::transfer(to, eth("0.01"))])
        .await;
    let sub = f.env.client.submit(&op).await.unwrap();
    f.env
        .client
        .wait_for_receipt(
            &f.env.client.expected_receipt(&op, sub.user_op_hash),
            kms_e2e::chain::RECEIPT_TIMEOUT,
        )
        .await
        .unwrap();
    // The expected nonce is stale: the operation is estimated again for the chain's, and lands.
    let before = estimates();
    let third = sequence(&lands(transfer(to, "0.01")).await);
    assert_eq!(
        third,
        second + 2,
        "after the operation sent past the companion"
    );
    assert_eq!(
        estimates() - before,
        2,
        "the estimate for the expected nonce, unused, and the one for the chain's"
    );
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.04"));
}

// ------------------------------------------------------------------ grant refusals

#[tokio::test(flavor = "multi_thread")]
async fn grant_session_requires_the_ceremony_for_exactly_this_session() {
    let mut f = fixture(V07).await;
    let agent = f.agent("grant refusals").await;
    let to = address("grant refusals");
    let window = f.open_window().await;
    let account = f
        .env
        .client
        .account_address(f.wallet.address, U256::ZERO)
        .await
        .unwrap();
    f.env.set_balance(account, eth("10")).await.unwrap();
    let session = json!({
        "keyId": agent.key_id,
        "targets": [to],
        "spendCap": eth("1").to_string(),
        "gasCap": DAY_SESSION_GAS_CAP.to_string(),
        "validAfter": window.0,
        "validUntil": window.1,
    });

    // No ceremony, or a bare legacy assertion: refused.
    let (status, body) = f.c.post("/kms/agent-sessions", &session).await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("ceremony_required")),
        "{body}"
    );
    let mut legacy = session.clone();
    legacy["passkeyAssertion"] = json!({"authenticatorData": "0x00"});
    let (status, body) = f.c.post("/kms/agent-sessions", &legacy).await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("legacy_assertion_refused")),
        "{body}"
    );

    // A ceremony for a 1 ETH cap does not authorise a 5 ETH cap.
    let mut payload = session.clone();
    payload.as_object_mut().unwrap().remove("keyId");
    let (web_authn, begin) =
        f.c.ceremony(&mut f.user, &agent.key_id, "GrantSession", payload)
            .await
            .unwrap();
    assert_eq!(
        begin["UserOperation"]["account"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        account
    );
    assert_eq!(begin["UserOperation"]["deploysAccount"], true);
    // The begin answer carries the whole operation: a client recomputes the userOpHash from it
    // and reads what it does (one call, to the validator, granting exactly this session).
    let shown = &begin["UserOperation"];
    let op = UserOperation::try_from(
        serde_json::from_value::<kms_chain::userop::v0_7::RpcUserOperation>(
            shown["userOp"].clone(),
        )
        .unwrap(),
    )
    .unwrap();
    let recomputed = f
        .env
        .client
        .entry_point()
        .user_op_hash(&op, shown["chainId"].as_u64().unwrap())
        .unwrap();
    assert_eq!(
        shown["userOpHash"]
            .as_str()
            .unwrap()
            .parse::<alloy::primitives::B256>()
            .unwrap(),
        recomputed,
        "{shown}"
    );
    assert_eq!(op.sender, account);
    assert!(op.max_fee_per_gas > 0 && op.call_gas_limit > 0, "{shown}");
    assert_eq!(
        shown["maxGasCost"],
        op.max_gas_cost().to_string(),
        "{shown}"
    );
    let calls: Vec<Call> = serde_json::from_value(shown["calls"].clone()).unwrap();
    assert_eq!(calls.len(), 1, "{shown}");
    assert_eq!(calls[0].to, f.env.info.session_key_validator);
    assert_eq!(
        kms_chain::account::encode_calls(&calls).unwrap(),
        op.call_data,
        "the calls shown are the operation's"
    );
    assert_eq!(
        shown["session"]["spendCap"],
        eth("1").to_string(),
        "{shown}"
    );
    let mut bigger = session.clone();
    bigger["spendCap"] = json!(eth("5").to_string());
    bigger["webAuthnAssertion"] = web_authn.clone();
    let (status, body) = f.c.post("/kms/agent-sessions", &bigger).await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("payload_mismatch")),
        "{body}"
    );
    assert!(
        !f.env.client.has_code(account).await.unwrap(),
        "nothing sent"
    );

    // The same ceremony with exactly its session goes through, once.
    let mut exact = session.clone();
    exact["webAuthnAssertion"] = web_authn;
    let (status, body) = f.c.post("/kms/agent-sessions", &exact).await.unwrap();
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("included")),
        "{body}"
    );
    assert_eq!(
        body["userOpHash"].as_str(),
        begin["UserOperation"]["userOpHash"].as_str()
    );
    let (status, body) = f.c.post("/kms/agent-sessions", &exact).await.unwrap();
    assert_eq!(status, 401, "a ceremony is single use: {body}");
    let snapshot = f
        .env
        .client
        .read_session(account, agent.address, &[to])
        .await
        .unwrap();
    assert_eq!(snapshot.remaining_budget, eth("1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_account_of_an_earlier_validator_is_refused_with_the_reason() {
    use alloy::providers::ProviderBuilder;
    use kms_contracts::{AgentAccountFactory, SessionKeyValidator};

    let mut f = fixture(V07).await;
    let agent = f.agent("outdated").await;
    // Another validator and a factory bound to it stand for the contracts of an earlier release.
    let deployer = f.env.funded_signer(eth("1")).await.unwrap();
    let provider = ProviderBuilder::new()
        .wallet(deployer)
        .connect_http(f.env.info.rpc_url.parse().unwrap());
    let old_validator = SessionKeyValidator::deploy(&provider).await.unwrap();
    let old_factory = AgentAccountFactory::deploy(
        &provider,
        f.env.client.entry_point().address,
        *old_validator.address(),
    )
    .await
    .unwrap();
    let receipt = old_factory
        .createAccount(f.wallet.address, U256::from(7))
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(receipt.status());
    let account = old_factory
        .getAddress(f.wallet.address, U256::from(7))
        .call()
        .await
        .unwrap();
    assert!(f.env.client.has_code(account).await.unwrap());
    // The companion's record says the agent's session is on that account.
    let (wallet, index) = agent.key_id.split_once(':').unwrap();
    let db = &f.c.server().state.db;
    let id = db
        .insert_session(&kms_db::NewSession {
            wallet_id: wallet,
            agent_index: index.parse().unwrap(),
            account,
            account_kind: kms_db::AccountKind::AgentAccount,
            targets_json: "[]",
            spend_cap: U256::from(1),
            valid_after: 0,
            valid_until: 0,
            revoker: None,
            grant_json: None,
            user_op_hash: None,
            user_op_json: None,
            now: kms_db::now_secs(),
        })
        .await
        .unwrap();
    assert!(db
        .activate_session(id, None, kms_db::now_secs())
        .await
        .unwrap());

    let body = f
        .refused(
            &agent,
            transfer(address("to"), "0.01"),
            RefusalCode::NoSession,
        )
        .await;
    assert_eq!(
        body["details"]["accountValidator"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        *old_validator.address(),
        "{body}"
    );
    assert_eq!(
        body["details"]["validator"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        f.env.client.validator(),
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap().contains("earlier rules"),
        "{body}"
    );
}
