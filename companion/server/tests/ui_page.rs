//! The owner's page (`/ui`): its assets and headers, and the two read-only
//! listings it uses (`/kms/list-agent-keys`, `/kms/list-agent-intents`). The
//! page itself is driven in Chromium by `e2e/browser/run.sh`.

mod common;

use common::*;
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
