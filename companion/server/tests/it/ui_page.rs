//! The owner's page (`/ui`): its assets and headers, and the two read-only
//! listings it uses (`/kms/list-agent-keys`, `/kms/list-agent-intents`). The
//! page itself is driven in Chromium by `e2e/browser/run.sh`.

use crate::common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn page_assets_are_served_with_a_strict_policy() {
    let env = Env::start().await;
    for (path, ct) in [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/api.js", "text/javascript"),
        ("/ui/webauthn.js", "text/javascript"),
        ("/ui/permissions.js", "text/javascript"),
        ("/ui/eth.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let r = env.http.get(env.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let h = r.headers();
        let got = h["content-type"].to_str().unwrap();
        assert!(got.starts_with(ct), "{path}: {got}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe-"), "{csp}");
        assert!(!csp.contains("http"), "no other origin: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
    }
    // The page loads nothing from elsewhere.
    let (_, html) = env.get("/ui").await;
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    assert!(html.contains(r#"src="/ui/app.js""#));
    let r = env.http.get(env.url("/ui/nope.js")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "route_not_found");
    // The static page needs no API key; the listings do.
    let r = env
        .http
        .post(env.url("/kms/list-agent-keys"))
        .json(&json!({"humanKeyId": "00000000-0000-0000-0000-000000000000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listings_show_public_facts_only() {
    let env = Env::start().await;
    let mut owner = Soft::new();
    let wallet = env.register(&mut owner).await;
    let wallet_id = wallet["KeyId"].as_str().unwrap().to_owned();
    let agent = env
        .create_agent(
            &mut owner,
            &wallet_id,
            json!({"label": "bot", "ttlSecs": 3600}),
        )
        .await;
    let jwt = agent["agentCredential"].as_str().unwrap().to_owned();
    let key_id = agent["keyId"].as_str().unwrap().to_owned();

    let (s, v) = env
        .post(
            "/kms/list-agent-keys",
            None,
            &json!({"humanKeyId": wallet_id}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["humanKeyId"], wallet_id);
    let keys = v["agentKeys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!(k["keyId"], key_id);
    assert_eq!(k["label"], "bot");
    assert_eq!(k["status"], "active");
    assert_eq!(k["derivationPath"], "m/44'/60'/0'/1/0");
    assert_eq!(
        k["agentAddress"].as_str().unwrap().to_ascii_lowercase(),
        agent["agentAddress"].as_str().unwrap().to_ascii_lowercase()
    );
    assert!(k["session"].is_null());
    // Neither the credential nor anything derived from it.
    let text = v.to_string();
    let mac = jwt.rsplit('.').next().unwrap();
    assert!(!text.contains(mac) && !text.contains(&jwt), "{text}");
    assert!(!text.to_ascii_lowercase().contains("credential"), "{text}");

    let (s, v) = env
        .post(
            "/kms/list-agent-intents",
            None,
            &json!({"keyId": key_id, "limit": 5}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["keyId"], key_id);
    assert_eq!(v["intents"], json!([]));

    for (body, status, code) in [
        (json!({"keyId": key_id, "limit": 0}), 422, "invalid_limit"),
        (json!({"keyId": key_id, "limit": 101}), 422, "invalid_limit"),
        (
            json!({"keyId": format!("{wallet_id}:7")}),
            404,
            "agent_not_found",
        ),
    ] {
        let (s, v) = env.post("/kms/list-agent-intents", None, &body).await;
        assert_eq!((s, v["code"].as_str().unwrap()), (status, code), "{v}");
    }
    let (s, v) = env
        .post(
            "/kms/list-agent-keys",
            None,
            &json!({"humanKeyId": "00000000-0000-4000-8000-000000000000"}),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str().unwrap()),
        (404, "key_not_found"),
        "{v}"
    );
}

/// A session recorded with the whole grant (`grant_json`) lists its functions, token caps,
/// gas cap, paymaster and usage limit; one recorded before (no `grant_json`) still lists,
/// with its addresses and spend cap only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listed_sessions_carry_the_whole_grant_when_recorded() {
    use alloy::primitives::{address, Address};
    use kms_chain::session::{
        parse_selector, SessionGrant, TargetPermission, TokenLimit, TRANSFER,
    };

    const DAPP: Address = address!("0x1111111111111111111111111111111111111111");
    const PAYEE: Address = address!("0x2222222222222222222222222222222222222222");
    const ANY: Address = address!("0x5555555555555555555555555555555555555555");
    const TOKEN: Address = address!("0x3333333333333333333333333333333333333333");
    const PAYMASTER: Address = address!("0x4444444444444444444444444444444444444444");

    let env = Env::start().await;
    let mut owner = Soft::new();
    let wallet = env.register(&mut owner).await;
    let wallet_id = wallet["KeyId"].as_str().unwrap().to_owned();
    for label in ["new", "old"] {
        env.create_agent(
            &mut owner,
            &wallet_id,
            json!({"label": label, "ttlSecs": 3600}),
        )
        .await;
    }
    let swap = parse_selector("swap(uint256)").unwrap();
    let grant = SessionGrant {
        key: address!("0x6666666666666666666666666666666666666666"),
        targets: vec![
            TargetPermission::with_selectors(DAPP, vec![TRANSFER, swap]),
            TargetPermission::transfers_only(PAYEE),
            TargetPermission::any(ANY),
        ],
        tokens: vec![TokenLimit {
            token: TOKEN,
            cap: 100_000_000_000_000_000_000,
        }],
        spend_cap: 500_000_000_000_000_000,
        gas_cap: 10_000_000_000_000_000,
        paymaster: Some(PAYMASTER),
        max_ops: 7,
        // 0.1 ETH per day.
        period: 86_400,
        period_cap: 100_000_000_000_000_000,
        valid_after: 1_700_000_000,
        valid_until: 1_900_000_000,
        revoker: address!("0x7777777777777777777777777777777777777777"),
    };
    let grant_json = serde_json::to_string(&grant).unwrap();
    let addresses = json!([DAPP, PAYEE, ANY, TOKEN]).to_string();
    let db = &env.server().state.db;
    // Recorded as the grant route records an included grant: pending, then active.
    async fn record(db: &kms_db::Db, wallet: &str, index: u32, targets: &str, grant: Option<&str>) {
        let id = db
            .insert_session(&kms_db::NewSession {
                wallet_id: wallet,
                agent_index: index,
                account: "0x8888888888888888888888888888888888888888"
                    .parse()
                    .unwrap(),
                account_kind: kms_db::AccountKind::AgentAccount,
                targets_json: targets,
                spend_cap: "500000000000000000".parse().unwrap(),
                valid_after: 1_700_000_000,
                valid_until: 1_900_000_000,
                revoker: Some(
                    "0x7777777777777777777777777777777777777777"
                        .parse()
                        .unwrap(),
                ),
                grant_json: grant,
                user_op_hash: None,
                user_op_json: None,
                now: 1,
            })
            .await
            .unwrap();
        assert!(db.activate_session(id, Some("0xabc"), 1).await.unwrap());
    }
    record(db, &wallet_id, 0, &addresses, Some(&grant_json)).await;
    record(
        db,
        &wallet_id,
        1,
        r#"["0x2222222222222222222222222222222222222222"]"#,
        None,
    )
    .await;

    let (s, v) = env
        .post(
            "/kms/list-agent-keys",
            None,
            &json!({"humanKeyId": wallet_id}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let keys = v["agentKeys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{v}");

    // Recorded with the grant: every field of it.
    let new = &keys[0]["session"];
    assert_eq!(keys[0]["label"], "new");
    assert_eq!(new["account"], "0x8888888888888888888888888888888888888888");
    assert_eq!(
        new["targets"],
        json!([DAPP, PAYEE, ANY, TOKEN]),
        "the addresses, as before"
    );
    assert_eq!(
        new["targetPermissions"],
        json!([
            {"target": DAPP.to_string(), "anySelector": false,
             "selectors": ["0xa9059cbb", swap.to_string()]},
            {"target": PAYEE.to_string(), "anySelector": false, "selectors": []},
            {"target": ANY.to_string(), "anySelector": true, "selectors": []},
        ]),
        "{new}"
    );
    assert_eq!(
        new["tokens"],
        json!([{"token": TOKEN.to_string(), "cap": "100000000000000000000"}])
    );
    assert_eq!(new["spendCap"], "500000000000000000");
    assert_eq!(new["gasCap"], "10000000000000000");
    assert_eq!(new["paymaster"], PAYMASTER.to_string());
    assert_eq!(new["maxOps"], 7);
    assert_eq!(new["period"], 86_400, "{new}");
    assert_eq!(new["periodCap"], "100000000000000000", "{new}");
    assert_eq!(
        (&new["validAfter"], &new["validUntil"]),
        (&json!(1_700_000_000), &json!(1_900_000_000))
    );
    assert_eq!(new["transactionHash"], "0xabc");

    // Recorded before grants carried all this: it still lists, with what it has.
    let old = &keys[1]["session"];
    assert_eq!(keys[1]["label"], "old");
    assert_eq!(
        old["targets"],
        json!(["0x2222222222222222222222222222222222222222"])
    );
    assert_eq!(old["spendCap"], "500000000000000000");
    assert_eq!(old["validUntil"], 1_900_000_000);
    for field in [
        "targetPermissions",
        "tokens",
        "gasCap",
        "paymaster",
        "maxOps",
        "period",
        "periodCap",
    ] {
        assert!(old[field].is_null(), "{field}: {old}");
    }

    // A grant without a paymaster, usage limit or periodic budget: paymaster null, maxOps 0,
    // period 0 and periodCap "0".
    let plain = SessionGrant {
        paymaster: None,
        max_ops: 0,
        period: 0,
        period_cap: 0,
        tokens: Vec::new(),
        ..grant.clone()
    };
    let plain_json = serde_json::to_string(&plain).unwrap();
    record(db, &wallet_id, 1, &addresses, Some(&plain_json)).await;
    let (_, v) = env
        .post(
            "/kms/list-agent-keys",
            None,
            &json!({"humanKeyId": wallet_id}),
        )
        .await;
    let plain = &v["agentKeys"][1]["session"];
    assert!(plain["paymaster"].is_null(), "{plain}");
    assert_eq!(plain["maxOps"], 0);
    assert_eq!(plain["period"], 0, "{plain}");
    assert_eq!(plain["periodCap"], "0", "{plain}");
    assert_eq!(plain["tokens"], json!([]));
    assert_eq!(plain["gasCap"], "10000000000000000");

    // A grant recorded before grants carried a periodic budget (its JSON has no `period` or
    // `periodCap`): no periodic budget, rather than an unreadable grant.
    let mut before_periods = serde_json::to_value(&grant).unwrap();
    let fields = before_periods.as_object_mut().unwrap();
    assert!(fields.remove("period").is_some() && fields.remove("periodCap").is_some());
    let before_periods = before_periods.to_string();
    record(db, &wallet_id, 1, &addresses, Some(&before_periods)).await;
    let (_, v) = env
        .post(
            "/kms/list-agent-keys",
            None,
            &json!({"humanKeyId": wallet_id}),
        )
        .await;
    let before = &v["agentKeys"][1]["session"];
    assert_eq!(
        before["maxOps"], 7,
        "the rest of the grant is read: {before}"
    );
    assert_eq!(before["period"], 0, "{before}");
    assert_eq!(before["periodCap"], "0", "{before}");

    // The OpenAPI document describes the new fields.
    let (s, doc) = env.get("/openapi.json").await;
    assert_eq!(s, 200);
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let schemas = &doc["components"]["schemas"];
    let props = &schemas["ListedSession"]["properties"];
    for field in [
        "targetPermissions",
        "tokens",
        "gasCap",
        "paymaster",
        "maxOps",
        "period",
        "periodCap",
    ] {
        assert!(props[field].is_object(), "ListedSession.{field}: {props}");
    }
    assert!(
        schemas["ListedTarget"]["properties"]["selectors"].is_object(),
        "{schemas}"
    );
    assert!(schemas["ListedToken"]["properties"]["cap"].is_object());
}

/// Sessions are rows of their own: an agent granted on two accounts lists both (`sessions`),
/// the most recently activated as `session`; a pending grant and a failed one are listed with
/// their status and are neither `session`; a later grant on the same account supersedes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_session_of_an_agent_is_listed_with_its_status() {
    let env = Env::start().await;
    let mut owner = Soft::new();
    let wallet = env.register(&mut owner).await;
    let wallet_id = wallet["KeyId"].as_str().unwrap().to_owned();
    env.create_agent(
        &mut owner,
        &wallet_id,
        json!({"label": "two", "ttlSecs": 3600}),
    )
    .await;
    let db = &env.server().state.db;
    let grant = |account: &'static str, op: &'static str| kms_db::NewSession {
        wallet_id: &wallet_id,
        agent_index: 0,
        account: account.parse().unwrap(),
        account_kind: kms_db::AccountKind::AgentAccount,
        targets_json: r#"["0x2222222222222222222222222222222222222222"]"#,
        spend_cap: "1".parse().unwrap(),
        valid_after: 0,
        valid_until: 0,
        revoker: None,
        grant_json: None,
        user_op_hash: Some(op),
        user_op_json: None,
        now: 10,
    };
    const A: &str = "0xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "0xbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "0xcccccccccccccccccccccccccccccccccccccccc";
    let list = || async {
        let (s, v) = env
            .post(
                "/kms/list-agent-keys",
                None,
                &json!({"humanKeyId": wallet_id}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["agentKeys"][0].clone()
    };
    // A grant submitted but not included: listed as pending, not the agent's session.
    let a = db.insert_session(&grant(A, "0x01")).await.unwrap();
    let key = list().await;
    assert!(key["session"].is_null(), "{key}");
    assert_eq!(key["sessions"][0]["status"], "pending");
    assert_eq!(key["sessions"][0]["userOpHash"], "0x01");
    db.activate_session(a, Some("0xt1"), 11).await.unwrap();
    let b = db.insert_session(&grant(B, "0x02")).await.unwrap();
    db.activate_session(b, Some("0xt2"), 12).await.unwrap();
    // A grant on a third account that reverted: failed, with why.
    let c = db.insert_session(&grant(C, "0x03")).await.unwrap();
    db.fail_session(c, "execution reverted", Some("0xt3"), 13)
        .await
        .unwrap();
    let key = list().await;
    // Accounts are answered EIP-55 checksummed (#15 item 7; lowercase before).
    assert_eq!(
        key["session"]["account"]
            .as_str()
            .unwrap()
            .to_ascii_lowercase(),
        B,
        "the most recently activated: {key}"
    );
    let statuses: Vec<(String, &str)> = key["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["account"].as_str().unwrap().to_ascii_lowercase(),
                s["status"].as_str().unwrap(),
            )
        })
        .collect();
    let statuses: Vec<(&str, &str)> = statuses.iter().map(|(a, s)| (a.as_str(), *s)).collect();
    assert_eq!(statuses, [(C, "failed"), (B, "active"), (A, "active")]);
    assert_eq!(key["sessions"][0]["error"], "execution reverted");
    assert_eq!(key["sessions"][1]["transactionHash"], "0xt2");
    // A new grant on the first account supersedes the session there.
    let again = db.insert_session(&grant(A, "0x04")).await.unwrap();
    db.activate_session(again, Some("0xt4"), 14).await.unwrap();
    let key = list().await;
    assert_eq!(key["session"]["userOpHash"], "0x04");
    let statuses: Vec<&str> = key["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["active", "failed", "active", "superseded"]);
    // Revoked: every session closed; `session` is the last one activated.
    db.revoke_session(again, Some("0xr1"), None, 15)
        .await
        .unwrap();
    db.revoke_session(b, None, Some("not on chain"), 15)
        .await
        .unwrap();
    let key = list().await;
    assert_eq!(key["session"]["status"], "revoked", "{key}");
    assert_eq!(key["session"]["revokeTransactionHash"], "0xr1");
    assert_eq!(key["sessions"][2]["error"], "not on chain");
}
