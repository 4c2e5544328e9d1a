//! ERC-7715 on the companion (issue 17 item 7): a dapp calls `wallet_grantPermissions` on `/rpc`
//! with the exact JSON viem's `grantPermissions` sends; the owner approves through the HTTP calls
//! `/ui` makes (the pending request listed, `CreateAgentKey`, `GrantSession` over the listed
//! session, resolve); the dapp's call is answered with the granted permissions, the context and
//! (as the owner chose) the credential; an intent within the grant lands and one beyond it is
//! refused. Also: a cancelled request is 4001, an unenforceable one is refused by name, one
//! nobody decides expires, and another method is -32601.

use alloy::primitives::Address;
use alloy::sol_types::{SolCall, SolValue};
use kms_chain::userop::EntryPointVersion::V07;
use kms_contracts::TestToken;
use kms_e2e::companion::AgentKey;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::common::*;

/// `params[0]` as viem's `grantPermissions` formats it (`formatParameters`: allowances and gas
/// limits as hex, `required` filled in, no signer without an account). The native permission's
/// `recipients` is the companion's extension (the validator allows only listed targets).
fn viem_request(expiry: u64, payee: Address, token: Address) -> Value {
    json!({
        "expiry": expiry,
        "permissions": [
            {"type": "native-token-transfer", "data": {"ticker": "ETH", "recipients": [payee]},
             "policies": [
                {"data": {"allowance": "0x16345785d8a0000"}, "type": "token-allowance"},
                {"data": {"limit": "0x2386f26fc10000"}, "type": "gas-limit"}],
             "required": true},
            {"type": "erc20-token-transfer", "data": {"address": token, "ticker": "TEST"},
             "policies": [{"data": {"allowance": "0x56bc75e2d63100000"}, "type": "token-allowance"}],
             "required": true},
            {"type": "contract-call", "data": {"address": token, "calls": ["transfer(address,uint256)"]},
             "policies": [{"data": {"count": 3, "interval": 60}, "type": "rate-limit"}],
             "required": false},
        ],
    })
}

fn rpc_body(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": [params]})
}

/// Sends the JSON-RPC call in the background (it waits for the owner).
fn call(f: &Fixture, body: Value) -> JoinHandle<(u16, Value)> {
    let client = f.c.client().clone();
    let path = format!("/rpc?address={}", f.wallet.address);
    tokio::spawn(async move { client.post(&path, &body).await.unwrap() })
}

/// The wallet's pending requests, as `/ui` lists them, once there are `n`.
async fn pending(f: &Fixture, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let (status, v) =
            f.c.post(
                "/kms/permission-requests",
                &json!({"humanKeyId": f.wallet.key_id}),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{v}");
        let list = v["requests"].as_array().unwrap().clone();
        if list.len() >= n {
            return list;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no pending permission request listed");
}

/// The owner's approval, as `/ui` makes it: `CreateAgentKey` with the listing's `createAgent`,
/// then `GrantSession` with its `session`.
async fn create_and_grant(f: &mut Fixture, r: &Value) -> AgentKey {
    let create = r["createAgent"].clone();
    let (web_authn, _) =
        f.c.ceremony(
            &mut f.user,
            &f.wallet.key_id,
            "CreateAgentKey",
            create.clone(),
        )
        .await
        .unwrap();
    let mut body = create;
    body["humanKeyId"] = json!(f.wallet.key_id);
    body["webAuthnAssertion"] = web_authn;
    let (status, v) = f.c.post("/kms/create-agent-key", &body).await.unwrap();
    assert_eq!(status, 200, "{v}");
    let agent = AgentKey {
        key_id: v["keyId"].as_str().unwrap().to_owned(),
        address: v["agentAddress"].as_str().unwrap().parse().unwrap(),
        jwt: v["agentCredential"].as_str().unwrap().to_owned(),
    };
    f.grant_included(&agent, r["session"].clone()).await;
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dapp_asks_the_owner_approves_and_the_agent_acts_within_the_grant() {
    let mut f = fixture(V07).await;
    let account = f.funded_account(0).await;
    let payee = address("erc7715 payee");
    let token = f.env.info.test_token;
    let now = f.env.now().await.unwrap();
    let expiry = now + DAY;
    let request = viem_request(expiry, payee, token);
    let waiting = call(&f, rpc_body(7, "wallet_grantPermissions", request.clone()));

    // The owner's page lists it, decoded.
    let listed = pending(&f, 1).await;
    let r = &listed[0];
    assert_eq!(r["status"], "pending");
    assert_eq!(r["walletId"], json!(f.wallet.key_id));
    assert!(
        r["requester"].as_str().unwrap().starts_with("api-key:"),
        "{r}"
    );
    let s = &r["session"];
    assert_eq!(s["spendCap"], eth("0.1").to_string());
    assert_eq!(s["gasCap"], eth("0.01").to_string());
    assert_eq!(s["validUntil"], expiry);
    assert_eq!(
        s["tokens"],
        json!([{"token": token.to_string(), "cap": eth("100").to_string()}])
    );
    assert_eq!(s["targets"], json!([payee.to_string()]));
    // The optional contract-call with a rate limit cannot be enforced: dropped, by name.
    assert_eq!(r["permissions"].as_array().unwrap().len(), 2);
    assert_eq!(r["dropped"][0]["index"], 2);
    assert_eq!(r["dropped"][0]["unsupported"][0]["name"], "rate-limit");
    assert!(!waiting.is_finished(), "the call waits for the owner");

    let agent = create_and_grant(&mut f, r).await;
    let request_id = r["requestId"].as_str().unwrap();
    // Resolving with another credential than the agent's is refused, and changes nothing.
    let (status, v) =
        f.c.post(
            "/kms/permission-requests/resolve",
            &json!({"requestId": request_id, "decision": "approve", "keyId": agent.key_id,
                "credentialTo": "requester", "credential": "eyJ.forged.jwt"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["code"], "credential_invalid");
    let (status, v) =
        f.c.post(
            "/kms/permission-requests/resolve",
            &json!({"requestId": request_id, "decision": "approve", "keyId": agent.key_id,
                "credentialTo": "requester", "credential": agent.jwt}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["delivered"], true);
    assert_eq!(v["credentialTo"], "requester");
    // The recorded answer never holds the credential.
    assert!(!v.to_string().contains(&agent.jwt));

    let (status, answer) = waiting.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["id"], 7);
    let result = &answer["result"];
    assert_eq!(result["expiry"], expiry, "{answer}");
    assert_eq!(
        result["grantedPermissions"],
        json!([request["permissions"][0], request["permissions"][1]])
    );
    assert_eq!(
        result["signerData"]["submitToAddress"],
        json!(account.to_string())
    );
    assert_eq!(result["signerData"]["credential"], json!(agent.jwt));
    assert_eq!(result["signerData"]["keyId"], json!(agent.key_id));
    let ctx = alloy::hex::decode(
        result["permissionsContext"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
    )
    .unwrap();
    let (ctx_account, ctx_agent, ctx_key) =
        <(Address, Address, String)>::abi_decode_params(&ctx).unwrap();
    assert_eq!((ctx_account, ctx_agent), (account, agent.address));
    assert_eq!(ctx_key, agent.key_id);
    // Decided: no longer pending, not decidable again.
    let (_, v) =
        f.c.post(
            "/kms/permission-requests",
            &json!({"humanKeyId": f.wallet.key_id}),
        )
        .await
        .unwrap();
    assert_eq!(v["requests"], json!([]));
    let (status, v) =
        f.c.post(
            "/kms/permission-requests/resolve",
            &json!({"requestId": request_id, "decision": "reject"}),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, v["code"].clone()),
        (409, json!("permission_request_closed"))
    );

    // The agent acts with what the dapp received: within the grant it lands...
    let as_dapp = AgentKey {
        jwt: result["signerData"]["credential"]
            .as_str()
            .unwrap()
            .to_owned(),
        ..agent.clone()
    };
    let before = f.env.balance(payee).await.unwrap();
    f.lands(&as_dapp, transfer(payee, "0.04")).await;
    assert_eq!(f.env.balance(payee).await.unwrap(), before + eth("0.04"));
    // ...beyond it (0.1 ETH allowance, 0.04 spent) it is refused, and so is an unlisted target.
    let (status, v) =
        f.c.intent(&as_dapp, transfer(payee, "0.07"), None)
            .await
            .unwrap();
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["code"], "over_budget");
    let (status, v) =
        f.c.intent(
            &as_dapp,
            transfer(address("erc7715 stranger"), "0.01"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["code"], "target_not_allowed");
    // The ERC-20 allowance bounds token transfers (100 TEST).
    let data = alloy::primitives::Bytes::from(
        TestToken::transferCall {
            to: payee,
            value: eth("101"),
        }
        .abi_encode(),
    );
    let (status, v) =
        f.c.intent(
            &as_dapp,
            json!([{"to": token, "value": "0", "data": data}]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["code"], "token_over_budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_unenforceable_expired_and_unknown_are_json_rpc_errors() {
    let f = fixture_with(V07, &["--permission-request-timeout-secs", "3"]).await;
    let now = f.env.now().await.unwrap();
    let payee = address("erc7715 payee 2");
    let token = f.env.info.test_token;

    // Another method.
    let (status, v) =
        f.c.post("/rpc", &rpc_body(1, "eth_sendTransaction", json!({})))
            .await
            .unwrap();
    assert_eq!(status, 200);
    assert_eq!(v["error"]["code"], -32601, "{v}");
    // Not JSON-RPC.
    let (status, v) = f.c.post("/rpc", &json!({"method": "x"})).await.unwrap();
    assert_eq!((status, v["error"]["code"].clone()), (200, json!(-32600)));

    // A required rate limit cannot be enforced: refused at once, by name; nothing recorded.
    let mut request = viem_request(now + DAY, payee, token);
    request["permissions"][2]["required"] = json!(true);
    let (status, v) = call(&f, rpc_body(2, "wallet_grantPermissions", request))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(v["error"]["code"], -32010, "{v}");
    assert_eq!(v["error"]["data"]["unsupported"], json!(["rate-limit"]));
    // An unknown wallet is invalid params.
    let (_, v) =
        f.c.post(
            &format!("/rpc?address={}", address("nobody")),
            &rpc_body(
                3,
                "wallet_grantPermissions",
                viem_request(now + DAY, payee, token),
            ),
        )
        .await
        .unwrap();
    assert_eq!(v["error"]["code"], -32602, "{v}");
    assert_eq!(v["error"]["data"]["field"], "address");

    // The owner cancels: 4001.
    let waiting = call(
        &f,
        rpc_body(
            4,
            "wallet_grantPermissions",
            viem_request(now + DAY, payee, token),
        ),
    );
    let listed = pending(&f, 1).await;
    let id = listed[0]["requestId"].as_str().unwrap().to_owned();
    let (status, v) =
        f.c.post(
            "/kms/permission-requests/resolve",
            &json!({"requestId": id, "decision": "reject"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["delivered"], true);
    let (_, v) = waiting.await.unwrap();
    assert_eq!(v["error"]["code"], 4001, "{v}");
    assert_eq!(v["error"]["data"]["requestId"], json!(id));

    // Nobody decides: expired after --permission-request-timeout-secs, and stays so.
    let started = std::time::Instant::now();
    let (_, v) = call(
        &f,
        rpc_body(
            5,
            "wallet_grantPermissions",
            viem_request(now + DAY, payee, token),
        ),
    )
    .await
    .unwrap();
    assert_eq!(v["error"]["code"], -32011, "{v}");
    assert_eq!(v["error"]["data"]["status"], "expired");
    assert!(started.elapsed() >= std::time::Duration::from_secs(3));
    let expired_id = v["error"]["data"]["requestId"].as_str().unwrap();
    let (status, v) = f
        .c
        .post(
            "/kms/permission-requests/resolve",
            &json!({"requestId": expired_id, "decision": "approve", "keyId": format!("{}:0", f.wallet.key_id)}),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, v["code"].clone()),
        (409, json!("permission_request_closed")),
        "{v}"
    );
    let (_, v) =
        f.c.post(
            "/kms/permission-requests",
            &json!({"humanKeyId": f.wallet.key_id, "includeDecided": true}),
        )
        .await
        .unwrap();
    let statuses: Vec<&str> = v["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["expired", "rejected"], "{v}");

    // Without the API key, /rpc is the shared 401.
    let r =
        f.c.client()
            .http
            .post(f.c.url("/rpc"))
            .json(&rpc_body(6, "wallet_grantPermissions", json!({})))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

/// A decision taken through another companion sharing the database (which holds no waiting call;
/// its resolve changes the request's row, as done here) reaches the waiting call from the row,
/// before the request's own expiry (`--permission-request-timeout-secs`, 100 s by default): a
/// cancellation as 4001, an approval as the answer recorded with it (the credential stays with
/// the owner).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_decision_on_another_companion_answers_the_waiting_call() {
    let f = fixture(V07).await;
    let now = f.env.now().await.unwrap();
    let (payee, token) = (address("erc7715 payee 3"), f.env.info.test_token);
    let db = &f.c.server().state.db;
    let ask = |id| {
        call(
            &f,
            rpc_body(
                id,
                "wallet_grantPermissions",
                viem_request(now + DAY, payee, token),
            ),
        )
    };
    let open_request = || async {
        let id = pending(&f, 1).await[0]["requestId"]
            .as_str()
            .unwrap()
            .to_owned();
        let expires_at = db
            .get_permission_request(&id)
            .await
            .unwrap()
            .unwrap()
            .expires_at;
        (id, expires_at)
    };

    let waiting = ask(1);
    let (id, expires_at) = open_request().await;
    assert!(db
        .reject_permission_request(&id, kms_db::now_secs())
        .await
        .unwrap());
    let (_, v) = waiting.await.unwrap();
    assert_eq!(v["error"]["code"], 4001, "{v}");
    assert_eq!(v["error"]["data"]["requestId"], json!(id));
    assert!(
        kms_db::now_secs() < expires_at,
        "answered by the expiry, not the decision"
    );

    let waiting = ask(2);
    let (id, expires_at) = open_request().await;
    let recorded = json!({"grantedPermissions": [], "permissionsContext": "0x01"});
    assert!(db
        .approve_permission_request(
            &id,
            &format!("{}:0", f.wallet.key_id),
            address("erc7715 elsewhere"),
            "owner",
            &recorded.to_string(),
            kms_db::now_secs(),
        )
        .await
        .unwrap());
    let (_, v) = waiting.await.unwrap();
    assert_eq!(v["result"], recorded, "{v}");
    assert!(
        kms_db::now_secs() < expires_at,
        "answered by the expiry, not the decision"
    );
}
