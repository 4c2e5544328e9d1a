//! `GET /agent/session` at the HTTP layer, without a chain: the agent's credential is checked
//! first (401), then the chain settings (503 `chain_not_configured`); the route and its answer
//! are in the OpenAPI document. What it reads on chain is tested end to end with the MCP server
//! (`e2e/tests/it/mcp.rs`, `get_session` against the validator).

use crate::common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_session_checks_the_credential_then_needs_the_chain() {
    let env = Env::start().await;
    let get = |jwt: Option<String>| {
        let mut rb = env.http.get(env.url("/agent/session"));
        if let Some(j) = jwt {
            rb = rb.bearer_auth(j);
        }
        async move {
            let r = rb.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, body) = get(None).await;
    assert_eq!(s, 401, "{body}");
    let (s, body) = get(Some("not.a.jwt".into())).await;
    assert_eq!(s, 401, "{body}");

    let mut owner = Soft::new();
    let wallet = env.wallet(&mut owner).await;
    let a = env.agent(&mut owner, &wallet, json!({})).await;
    let (s, body) = get(Some(a.jwt.clone())).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (503, Some("chain_not_configured")),
        "{body}"
    );

    let (s, doc) = env.get("/openapi.json").await;
    assert_eq!(s, 200);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    let op = &doc["paths"]["/agent/session"]["get"];
    assert!(op.is_object(), "{}", doc["paths"]);
    assert_eq!(
        op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/AgentSessionResponse"
    );
    let schema = &doc["components"]["schemas"]["AgentSessionResponse"]["properties"];
    for field in [
        "account",
        "agentAddress",
        "targets",
        "tokens",
        "remainingValue",
        "remainingGas",
        "validAfter",
        "validUntil",
        "status",
    ] {
        assert!(schema[field].is_object(), "{field} missing: {schema}");
    }
}
