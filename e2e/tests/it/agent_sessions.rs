//! Sessions as rows of their own (issue 14 item 1), end to end through the companion's HTTP API
//! on anvil + Alto + EntryPoint v0.7:
//!
//! - an agent granted on two accounts of its owner has two sessions: both listed, an intent may
//!   name either (it must: 422 `account_required` when it names none); revoked, neither account executes an
//!   operation the agent signed before (bundler and EntryPoint refuse both), and the answer
//!   reports each account;
//! - a grant whose execution reverts, one the bundler refuses (its nonce taken), and one dropped
//!   without ever being included never become sessions: no intent runs on them, revocation does
//!   not report them, the listing shows them `failed`;
//! - a grant not included within the wait is `pending`, not a session, until the background task
//!   sees its receipt.
//!
//! (`kms-admin revoke-agent-key` on an agent with sessions on two accounts: `admin::`.)

use std::time::{Duration, Instant};

use crate::common::*;
use alloy::primitives::Address;
use alloy::providers::Provider;
use kms_chain::account::Call;
use kms_chain::session::RefusalCode;
use kms_chain::userop::v0_7::UserOperation;
use kms_chain::userop::EntryPointVersion::V07;
use kms_e2e::companion::{AgentKey, DAY_SESSION_GAS_CAP};
use kms_e2e::proxy::{Proxy, Step};
use kms_e2e::stack::Stack;
use serde_json::{json, Value};

impl Fixture {
    /// The grant fields of a session on account `salt` allowing plain transfers to `to` (1 ETH
    /// cap, open since an hour ago for a day).
    async fn grant_fields(&self, salt: u64, targets: Value) -> Value {
        let now = self.env.now().await.unwrap();
        json!({
            "targets": targets,
            "spendCap": eth("1").to_string(),
            "gasCap": DAY_SESSION_GAS_CAP.to_string(),
            "validAfter": now - 3600,
            "validUntil": now + DAY,
            "salt": salt.to_string(),
        })
    }

    /// Grants `agent` plain transfers to `to` on account `salt` through `/kms/agent-sessions`;
    /// expects it included. Returns the account.
    async fn grant_on(&mut self, agent: &AgentKey, salt: u64, to: Address) -> Address {
        let account = self.funded_account(salt).await;
        let fields = self.grant_fields(salt, json!([to])).await;
        let body = self.grant_included(agent, fields).await;
        assert_eq!(
            body["account"]
                .as_str()
                .unwrap()
                .parse::<Address>()
                .unwrap(),
            account
        );
        account
    }

    /// The agent's entry of `/kms/list-agent-keys`.
    async fn listed(&self, agent: &AgentKey) -> Value {
        let (status, v) = self
            .c
            .post(
                "/kms/list-agent-keys",
                &json!({"humanKeyId": self.wallet.key_id}),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{v}");
        v["agentKeys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["keyId"] == agent.key_id.as_str())
            .cloned()
            .unwrap()
    }

    /// `(account, status)` of each listed session of `agent`, newest first.
    async fn session_statuses(&self, agent: &AgentKey) -> Vec<(Address, String)> {
        self.listed(agent).await["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["account"].as_str().unwrap().parse().unwrap(),
                    s["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// An intent of `agent` naming `account`: status and body.
    async fn intent_on(&self, agent: &AgentKey, account: Address, calls: Value) -> (u16, Value) {
        self.c
            .post_bearer(
                "/agent/intents",
                &agent.jwt,
                &json!({"account": account, "calls": calls}),
                &[],
            )
            .await
            .unwrap()
    }

    /// The chain refuses `op` (signed before its session was revoked): the bundler (AA23,
    /// `SessionIsRevoked`) and the EntryPoint itself.
    async fn revoked_on_chain(&self, op: &UserOperation) {
        let err = self.bundler_refuses(op).await;
        assert_eq!(err.aa_code(), Some("AA23"), "{err}");
        assert_eq!(
            err.rejection().unwrap().revert.unwrap().refusal_code(),
            Some(RefusalCode::SessionRevoked),
            "{err}"
        );
        match self.env.entry_point_verdict(op).await {
            Err(Some(d)) => assert_eq!(d.refusal_code(), Some(RefusalCode::SessionRevoked)),
            other => panic!("the EntryPoint did not refuse as expected: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_revoked_on_two_accounts_executes_on_neither() {
    let mut f = fixture(V07).await;
    let operator = f.c.operator_address().await.unwrap();
    f.env.set_balance(operator, eth("1")).await.unwrap();
    let agent = f.agent("two accounts").await;
    let to = address("sessions two accounts");
    let first = f.grant_on(&agent, 0, to).await;
    let second = f.grant_on(&agent, 1, to).await;
    assert_ne!(first, second);

    // Two sessions, the second granted the current one.
    let listed = f.listed(&agent).await;
    assert_eq!(
        f.session_statuses(&agent).await,
        [(second, "active".into()), (first, "active".into())],
        "{listed}"
    );
    assert_eq!(
        listed["session"]["account"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        second
    );

    // With sessions on two accounts an intent names its account (422 account_required
    // otherwise), and runs on either.
    let (status, body) =
        f.c.intent(&agent, transfer(to, "0.01"), None)
            .await
            .unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("account_required")),
        "{body}"
    );
    assert_eq!(
        body["details"]["accounts"].as_array().unwrap().len(),
        2,
        "{body}"
    );
    let (status, body) = f.intent_on(&agent, second, transfer(to, "0.01")).await;
    assert_eq!(status, 202, "{body}");
    let done =
        f.c.wait_intent(&agent, body["userOpHash"].as_str().unwrap())
            .await
            .unwrap();
    assert_eq!(done["status"], "included", "{done}");
    assert_eq!(
        done["account"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        second
    );
    let (status, body) = f.intent_on(&agent, first, transfer(to, "0.02")).await;
    assert_eq!(status, 202, "{body}");
    let done =
        f.c.wait_intent(&agent, body["userOpHash"].as_str().unwrap())
            .await
            .unwrap();
    assert_eq!(done["status"], "included", "{done}");
    assert_eq!(
        done["account"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        first
    );
    // An account the agent has no session on: refused before anything is signed.
    let stranger = address("sessions two accounts: no session here");
    let (status, body) = f.intent_on(&agent, stranger, transfer(to, "0.01")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("no_session")),
        "{body}"
    );
    assert_eq!(
        body["details"]["accounts"].as_array().unwrap().len(),
        2,
        "{body}"
    );

    // Operations the agent signed while both sessions were live: the EntryPoint would run them.
    let on_first = f
        .presigned(first, &agent, vec![Call::transfer(to, eth("0.1"))])
        .await;
    let on_second = f
        .presigned(second, &agent, vec![Call::transfer(to, eth("0.1"))])
        .await;
    for op in [&on_first, &on_second] {
        assert_eq!(f.env.entry_point_verdict(op).await, Ok(()));
    }

    // Revoked: every account's session, each reported.
    let revoked = f.c.revoke_agent(&mut f.user, &agent).await.unwrap();
    let sessions = revoked["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{revoked}");
    for (s, account) in sessions.iter().zip([second, first]) {
        assert_eq!(
            s["account"].as_str().unwrap().parse::<Address>().unwrap(),
            account
        );
        assert_eq!(s["status"], "revoked", "{revoked}");
        let tx = s["transactionHash"].as_str().unwrap();
        let receipt = f
            .env
            .client
            .provider()
            .get_transaction_receipt(tx.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(receipt.status(), "{tx}");
    }
    // The one-session field names the most recent one.
    assert_eq!(revoked["onChain"], sessions[0], "{revoked}");
    for account in [first, second] {
        let snapshot = f
            .env
            .client
            .read_session(account, agent.address, &[to])
            .await
            .unwrap();
        assert!(!snapshot.session.active, "{account}: {snapshot:?}");
    }

    // Neither pre-signed operation runs.
    f.revoked_on_chain(&on_first).await;
    f.revoked_on_chain(&on_second).await;
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.03"));

    // Listed: both sessions revoked, with the operator's transactions.
    let listed = f.listed(&agent).await;
    assert_eq!(listed["status"], "revoked");
    for s in listed["sessions"].as_array().unwrap() {
        assert_eq!(s["status"], "revoked", "{listed}");
        assert!(s["revokeTransactionHash"].as_str().is_some(), "{listed}");
    }
    // Revoking again sends nothing: both already revoked on chain... and closed.
    let nonce = f
        .env
        .client
        .provider()
        .get_transaction_count(operator)
        .await
        .unwrap();
    let again = f.c.revoke_agent(&mut f.user, &agent).await.unwrap();
    assert_eq!(again["sessions"], json!([]), "{again}");
    assert!(again.get("onChain").is_none(), "{again}");
    assert_eq!(
        f.env
            .client
            .provider()
            .get_transaction_count(operator)
            .await
            .unwrap(),
        nonce
    );
}

/// Completes a grant whose ceremony was made: `POST /kms/agent-sessions`.
async fn post_grant(
    f: &Fixture,
    agent: &AgentKey,
    fields: Value,
    web_authn: Value,
) -> (u16, Value) {
    let mut body = fields;
    body["keyId"] = json!(agent.key_id);
    body["webAuthnAssertion"] = web_authn;
    f.c.post("/kms/agent-sessions", &body).await.unwrap()
}

/// Sets the code at `address` (anvil).
async fn set_code(f: &Fixture, address: Address, code: &str) {
    let _: Value = f
        .env
        .client
        .provider()
        .raw_request("anvil_setCode".into(), (address, code))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn grants_that_revert_or_are_never_included_never_become_sessions() {
    let mut f = fixture(V07).await;
    let operator = f.c.operator_address().await.unwrap();
    f.env.set_balance(operator, eth("1")).await.unwrap();
    let agent = f.agent("failed grants").await;
    let to = address("sessions failed grants");
    let live = f.grant_on(&agent, 0, to).await;

    // 1. A grant whose execution reverts: it names a function of a contract that is gone by
    //    the time the operation runs (the validator refuses selectors on an address without
    //    code). The bundler accepts it (validation passes); its execution reverts.
    let vanishing = address("sessions vanishing contract");
    set_code(&f, vanishing, "0x00").await;
    let reverting = f.funded_account(1).await;
    let fields = f
        .grant_fields(
            1,
            json!([{"target": vanishing, "selectors": ["transfer(address,uint256)"]}]),
        )
        .await;
    let (web_authn, _) =
        f.c.ceremony(&mut f.user, &agent.key_id, "GrantSession", fields.clone())
            .await
            .unwrap();
    set_code(&f, vanishing, "0x").await;
    let (status, answer) = post_grant(&f, &agent, fields, web_authn).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (422, Some("grant_failed")),
        "{answer}"
    );

    // 2. A grant the bundler refuses: its operation's nonce was taken by another grant on the
    //    same account (another payee), both built before either was sent (the ceremonies in
    //    the order they complete: a passkey's counter only goes up).
    let taken = f.funded_account(2).await;
    let first_fields = f.grant_fields(2, json!([to])).await;
    let (first_web_authn, _) =
        f.c.ceremony(
            &mut f.user,
            &agent.key_id,
            "GrantSession",
            first_fields.clone(),
        )
        .await
        .unwrap();
    let late_fields = f
        .grant_fields(2, json!([address("sessions failed grants: late")]))
        .await;
    let (late_web_authn, late_begin) =
        f.c.ceremony(
            &mut f.user,
            &agent.key_id,
            "GrantSession",
            late_fields.clone(),
        )
        .await
        .unwrap();
    let late_op = late_begin["UserOperation"].clone();
    let (status, answer) = post_grant(&f, &agent, first_fields, first_web_authn).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("included")),
        "{answer}"
    );
    let (status, answer) = post_grant(&f, &agent, late_fields, late_web_authn).await;
    assert!((400..500).contains(&status), "{status}: {answer}");
    assert!(answer["code"] != "sign_count_regression", "{answer}");

    // 3. A grant recorded as submitted whose operation was never included (its submission's
    //    answer lost, say), and whose nonce another operation took: the background task gives
    //    it up as dropped.
    let (wallet, index) = agent.key_id.split_once(':').unwrap();
    let db = &f.c.server().state.db;
    let dropped = db
        .insert_session(&kms_db::NewSession {
            wallet_id: wallet,
            agent_index: index.parse().unwrap(),
            account: late_op["account"].as_str().unwrap().parse().unwrap(),
            account_kind: kms_db::AccountKind::AgentAccount,
            targets_json: "[]",
            spend_cap: alloy::primitives::U256::from(1),
            valid_after: 0,
            valid_until: 0,
            revoker: None,
            grant_json: None,
            user_op_hash: late_op["userOpHash"].as_str(),
            user_op_json: Some(&late_op["userOp"].to_string()),
            now: kms_db::now_secs(),
        })
        .await
        .unwrap();
    let start = Instant::now();
    let row = loop {
        let row = db.get_session(dropped).await.unwrap().unwrap();
        if row.status != kms_db::SessionStatus::Pending {
            break row;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not settled: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(row.status, kms_db::SessionStatus::Failed, "{row:?}");
    assert!(row.error.as_deref().unwrap().contains("dropped"), "{row:?}");

    // Listed: the sessions on accounts 0 and 2 are active; the reverted, refused and dropped
    // grants failed.
    let statuses = f.session_statuses(&agent).await;
    let of = |account: Address| -> Vec<&str> {
        statuses
            .iter()
            .filter(|(a, _)| *a == account)
            .map(|(_, s)| s.as_str())
            .collect()
    };
    assert_eq!(of(live), ["active"], "{statuses:?}");
    assert_eq!(of(reverting), ["failed"], "{statuses:?}");
    assert_eq!(of(taken), ["failed", "failed", "active"], "{statuses:?}");
    let listed = f.listed(&agent).await;
    let failed = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["account"].as_str().unwrap().parse::<Address>().unwrap() == reverting)
        .unwrap();
    assert!(
        failed["error"].as_str().unwrap().contains("reverted"),
        "{failed}"
    );
    assert!(failed["transactionHash"].as_str().is_some(), "{failed}");

    // No intent runs on the reverted grant's account.
    let (status, body) = f.intent_on(&agent, reverting, transfer(to, "0.01")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("no_session")),
        "{body}"
    );

    // Revocation reports the two live sessions only.
    let revoked = f.c.revoke_agent(&mut f.user, &agent).await.unwrap();
    let mut accounts: Vec<Address> = revoked["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["status"], "revoked", "{revoked}");
            s["account"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    accounts.sort();
    let mut expected = vec![live, taken];
    expected.sort();
    assert_eq!(accounts, expected, "{revoked}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_not_included_in_time_is_pending_until_its_receipt_is_seen() {
    // The bundler behind a proxy that answers its first receipt lookups "none yet", and a
    // companion that does not wait for the receipt: the grant is answered pending.
    let stack = tokio::task::spawn_blocking(Stack::shared).await.unwrap();
    let proxy = Proxy::start(&stack.info().bundler_url, &[]).await.unwrap();
    let url = proxy.url();
    let mut f = fixture_with(V07, &["--receipt-wait-secs=0", "--bundler-url", &url]).await;
    let agent = f.agent("pending grant").await;
    let to = address("sessions pending grant");
    let account = f.funded_account(0).await;
    let fields = f.grant_fields(0, json!([to])).await;
    proxy.script(
        "eth_getUserOperationReceipt",
        std::iter::repeat_n(Step::Result(Value::Null), 5),
    );
    let (status, body) =
        f.c.grant_session(&mut f.user, &agent, fields)
            .await
            .unwrap();
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("pending")),
        "{body}"
    );
    // Not a session yet: no intent runs on it.
    let (status, body) =
        f.c.intent(&agent, transfer(to, "0.01"), None)
            .await
            .unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("no_session")),
        "{body}"
    );
    // The background task sees the receipt: the grant becomes the agent's session.
    let start = Instant::now();
    loop {
        let statuses = f.session_statuses(&agent).await;
        assert_eq!(statuses.len(), 1, "{statuses:?}");
        if statuses[0].1 == "active" {
            break;
        }
        assert_eq!(statuses[0], (account, "pending".to_owned()));
        assert!(start.elapsed() < Duration::from_secs(30), "never activated");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let listed = f.listed(&agent).await;
    assert!(
        listed["session"]["transactionHash"].as_str().is_some(),
        "{listed}"
    );
    let done = f.lands(&agent, transfer(to, "0.01")).await;
    assert_eq!(
        done["account"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        account
    );
}
