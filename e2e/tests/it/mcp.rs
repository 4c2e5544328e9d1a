//! The MCP server (`kms-mcp`) against the real stack, through rmcp's client: over stdio (the
//! built binary, spawned as a desktop host would) and over streamable HTTP (the server in
//! process on 127.0.0.1). One owner grants an agent a session (one payee, an ETH cap, a cap on
//! the test ERC-20); the agent's credential is in a file readable only by its owner; the model's
//! moves are tool calls: it reads its session (as the chain has it), pays, waits, and is
//! refused with codes it can act on. The credential never appears in what the tools answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::common::*;
use alloy::primitives::{Address, U256};
use kms_chain::userop::EntryPointVersion::V07;
use kms_e2e::companion::{day_session, AgentKey};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ProgressNotificationParam, ReadResourceRequestParams,
    ResourceContents,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{json, Value};

/// The tools the server must list.
const TOOLS: [&str; 6] = [
    "get_session",
    "submit_intent",
    "transfer_native",
    "transfer_token",
    "get_intent",
    "wait_for_intent",
];

/// Whether at least one progress notification has reached the client, waiting (bounded) for
/// one in flight: the client handles notifications apart from responses, so the last one sent
/// before a tool's result may be counted just after the result is read.
async fn progress_arrives(progress: &AtomicUsize) -> bool {
    for _ in 0..100 {
        if progress.load(Ordering::SeqCst) >= 1 {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// A client that counts the progress notifications it receives.
#[derive(Clone, Default)]
struct Host {
    progress: Arc<AtomicUsize>,
}

impl ClientHandler for Host {
    async fn on_progress(
        &self,
        _params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.fetch_add(1, Ordering::SeqCst);
    }
}

type Client = RunningService<RoleClient, Host>;

/// One test's world: a fixture, an agent with a session on `account` allowing `payee` (1 ETH
/// cap) and the test token (100 TEST cap), and its credential in a 0600 file.
struct World {
    f: Fixture,
    agent: AgentKey,
    account: Address,
    payee: Address,
    dir: tempfile::TempDir,
}

impl World {
    async fn new(tag: &str) -> Self {
        let mut f = fixture(V07).await;
        let agent = f.agent(tag).await;
        let payee = address(&format!("mcp payee {tag}"));
        let account = f
            .env
            .client
            .account_address(f.wallet.address, U256::ZERO)
            .await
            .unwrap();
        f.env.set_balance(account, eth("10")).await.unwrap();
        f.env.mint_test_token(account, eth("500")).await.unwrap();
        let now = f.env.now().await.unwrap();
        let mut session = day_session(&[payee], eth("1"), now);
        session["tokens"] =
            json!([{"token": f.env.info.test_token, "cap": eth("100").to_string()}]);
        let (status, body) =
            f.c.grant_session(&mut f.user, &agent, session)
                .await
                .unwrap();
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("included")),
            "{body}"
        );
        let dir = tempfile::tempdir().unwrap();
        write_private(&dir.path().join("agent.jwt"), &agent.jwt);
        World {
            f,
            agent,
            account,
            payee,
            dir,
        }
    }

    fn credential_file(&self) -> std::path::PathBuf {
        self.dir.path().join("agent.jwt")
    }

    /// Connects over stdio to the built `kms-mcp` (with `--rpc-url` for token decimals).
    async fn stdio(&self, host: Host) -> Client {
        let bin = kms_test_bins::workspace_bin("kms-mcp", "kms-mcp", "KMS_MCP_BIN").unwrap();
        let url = self.f.c.url("");
        let rpc = self.f.env.info.rpc_url.clone();
        let file = self.credential_file();
        let transport =
            TokioChildProcess::new(tokio::process::Command::new(bin).configure(|cmd| {
                cmd.arg("--credential-file")
                    .arg(&file)
                    .env("KMS_URL", &url)
                    .env("KMS_RPC_URL", &rpc)
                    .env_remove("KMS_AGENT_CREDENTIAL")
                    .env_remove("KMS_AGENT_CREDENTIAL_FILE");
            }))
            .unwrap();
        host.serve(transport).await.unwrap()
    }

    /// Starts `kms-mcp` in process on streamable HTTP and connects to it.
    async fn http(&self, host: Host) -> (kms_mcp::HttpServer, Client) {
        let credential = kms_mcp::Credential::from_file(&self.credential_file()).unwrap();
        let server = kms_mcp::KmsMcp::new(kms_mcp::CompanionClient::new(
            &self.f.c.url(""),
            credential,
            Some(self.f.env.info.rpc_url.clone()),
        ));
        let http = kms_mcp::serve_http(server, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let transport = StreamableHttpClientTransport::from_uri(http.url());
        let client = host.serve(transport).await.unwrap();
        (http, client)
    }

    /// Calls `tool`; checks the credential is nowhere in the answer.
    async fn call(&self, client: &Client, tool: &'static str, args: Value) -> CallToolResult {
        let r = client
            .call_tool(
                CallToolRequestParams::new(tool).with_arguments(args.as_object().unwrap().clone()),
            )
            .await
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        let all = serde_json::to_string(&r).unwrap();
        assert!(
            !all.contains(&self.agent.jwt),
            "{tool} leaked the credential"
        );
        r
    }

    /// Calls `tool` expecting success; its structured content.
    async fn ok(&self, client: &Client, tool: &'static str, args: Value) -> Value {
        let r = self.call(client, tool, args).await;
        assert_ne!(r.is_error, Some(true), "{tool}: {r:?}");
        r.structured_content.expect("structured content")
    }

    /// Calls `tool` expecting a tool error with `code`; its structured content.
    async fn refused(&self, client: &Client, tool: &'static str, args: Value, code: &str) -> Value {
        let r = self.call(client, tool, args).await;
        assert_eq!(r.is_error, Some(true), "{tool}: {r:?}");
        let v = r.structured_content.clone().expect("structured error");
        assert_eq!(v["error"], code, "{v}");
        assert!(v["hint"].as_str().is_some_and(|h| !h.is_empty()), "{v}");
        // The text a model reads names the code too.
        let text = format!("{:?}", r.content);
        assert!(text.contains(code), "{text}");
        v
    }
}

fn write_private(path: &std::path::Path, secret: &str) {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)
        .unwrap()
        .write_all(secret.as_bytes())
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_over_stdio_pays_waits_and_is_refused_with_codes() {
    let w = World::new("mcp stdio").await;
    let host = Host::default();
    let progress = host.progress.clone();
    let client = w.stdio(host).await;

    // Tools listed, each with a schema whose fields have descriptions (and examples).
    let tools = client.list_all_tools().await.unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    let mut want = TOOLS.to_vec();
    want.sort_unstable();
    assert_eq!(names, want);
    for t in &tools {
        assert!(
            t.description.as_deref().is_some_and(|d| d.len() > 40),
            "{t:?}"
        );
        let props = t.input_schema.get("properties").and_then(Value::as_object);
        for (field, p) in props.into_iter().flatten() {
            assert!(p.get("description").is_some(), "{}.{field}: {p}", t.name);
        }
    }
    let transfer = tools.iter().find(|t| t.name == "transfer_native").unwrap();
    assert!(
        transfer.input_schema["properties"]["amount"]["examples"].is_array(),
        "{:?}",
        transfer.input_schema
    );

    // get_session is the session as the chain has it.
    let s = w.ok(&client, "get_session", json!({})).await;
    let token = w.f.env.info.test_token;
    let chain =
        w.f.env
            .client
            .read_session(w.account, w.agent.address, &[w.payee, token])
            .await
            .unwrap();
    assert_eq!(
        s["account"].as_str().unwrap().parse::<Address>().unwrap(),
        w.account
    );
    assert_eq!(
        s["agentAddress"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        w.agent.address
    );
    assert_eq!(s["status"], "active", "{s}");
    assert_eq!(s["remainingValue"], chain.remaining_budget.to_string());
    assert_eq!(s["remainingGas"], chain.session.remaining_gas().to_string());
    assert_eq!(s["validAfter"], chain.session.valid_after);
    assert_eq!(s["validUntil"], chain.session.valid_until);
    let targets = s["targets"].as_array().unwrap();
    assert!(targets.iter().any(
        |t| t["target"].as_str().unwrap().parse::<Address>().unwrap() == w.payee
            && t["allowed"] == true
    ));
    assert_eq!(s["tokens"][0]["cap"], eth("100").to_string(), "{s}");
    assert_eq!(s["tokens"][0]["remaining"], eth("100").to_string(), "{s}");

    // The session is a resource too.
    let resources = client.list_all_resources().await.unwrap();
    assert!(
        resources.iter().any(|r| r.uri == "kms://session"),
        "{resources:?}"
    );
    let read = client
        .read_resource(ReadResourceRequestParams::new("kms://session"))
        .await
        .unwrap();
    let ResourceContents::TextResourceContents { text, .. } = &read.contents[0] else {
        panic!("{read:?}")
    };
    let resource: Value = serde_json::from_str(text).unwrap();
    assert_eq!(resource["account"], s["account"]);

    // A payment lands, and wait_for_intent says so (with progress on the way).
    let paid = w
        .ok(
            &client,
            "transfer_native",
            json!({"to": w.payee.to_string(), "amount": "0.1", "idempotency_key": "mcp-1"}),
        )
        .await;
    let hash = paid["userOpHash"].as_str().unwrap().to_owned();
    let done = w
        .ok(
            &client,
            "wait_for_intent",
            json!({"user_op_hash": hash, "timeout_seconds": 60}),
        )
        .await;
    assert_eq!(done["status"], "included", "{done}");
    assert_eq!(done["success"], true, "{done}");
    assert_eq!(done["waitTimedOut"], false, "{done}");
    assert!(done["transactionHash"].as_str().is_some(), "{done}");
    assert!(
        progress_arrives(&progress).await,
        "no progress notification"
    );
    assert_eq!(w.f.env.balance(w.payee).await.unwrap(), eth("0.1"));
    let again = w
        .ok(&client, "get_intent", json!({"user_op_hash": hash}))
        .await;
    assert_eq!(again["status"], "included");

    // An ERC-20 payment in token units (decimals read on chain) lands.
    let sent = w
        .ok(
            &client,
            "transfer_token",
            json!({"token": token.to_string(), "to": w.payee.to_string(), "amount": "40"}),
        )
        .await;
    let done = w
        .ok(
            &client,
            "wait_for_intent",
            json!({"user_op_hash": sent["userOpHash"]}),
        )
        .await;
    assert_eq!(done["status"], "included", "{done}");
    assert_eq!(
        w.f.env.test_token_balance(w.payee).await.unwrap(),
        eth("40")
    );

    // Refusals: over the ETH budget, over the token cap, a target not allowed, bad input.
    let over = w
        .refused(
            &client,
            "transfer_native",
            json!({"to": w.payee.to_string(), "amount": "5"}),
            "over_budget",
        )
        .await;
    assert_eq!(over["httpStatus"], 403);
    assert!(over["details"]["available"].is_string(), "{over}");
    w.refused(
        &client,
        "transfer_token",
        json!({"token": token.to_string(), "to": w.payee.to_string(), "amount": "80"}),
        "token_over_budget",
    )
    .await;
    let stranger = address("mcp stranger");
    w.refused(
        &client,
        "submit_intent",
        json!({"calls": [{"to": stranger.to_string(), "value": "1"}]}),
        "target_not_allowed",
    )
    .await;
    w.refused(
        &client,
        "transfer_native",
        json!({"to": w.payee.to_string(), "amount": "0.1", "memo": "x"}),
        "invalid_argument",
    )
    .await;
    w.refused(
        &client,
        "transfer_native",
        json!({"to": w.payee.to_string(), "amount": "a lot"}),
        "invalid_amount",
    )
    .await;
    w.refused(
        &client,
        "transfer_token",
        json!({"token": stranger.to_string(), "to": w.payee.to_string(), "amount": "1"}),
        "token_has_no_decimals",
    )
    .await;
    // Only the one payment left the account.
    assert_eq!(w.f.env.balance(w.payee).await.unwrap(), eth("0.1"));
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_over_http_and_a_revoked_credential() {
    let mut w = World::new("mcp http").await;
    let host = Host::default();
    let progress = host.progress.clone();
    let (http, client) = w.http(host).await;
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), TOOLS.len());
    let s = w.ok(&client, "get_session", json!({})).await;
    assert_eq!(s["status"], "active", "{s}");

    let paid = w
        .ok(
            &client,
            "submit_intent",
            json!({"calls": [{"to": w.payee.to_string(), "value": eth("0.2").to_string()}]}),
        )
        .await;
    let done = w
        .ok(
            &client,
            "wait_for_intent",
            json!({"user_op_hash": paid["userOpHash"], "timeout_seconds": 60}),
        )
        .await;
    assert_eq!(done["status"], "included", "{done}");
    assert!(
        progress_arrives(&progress).await,
        "no progress notification over HTTP"
    );
    assert_eq!(w.f.env.balance(w.payee).await.unwrap(), eth("0.2"));

    // The owner revokes the agent: every tool now says the credential is refused.
    w.f.c.revoke_agent(&mut w.f.user, &w.agent).await.unwrap();
    let v = w
        .refused(&client, "get_session", json!({}), "credential_revoked")
        .await;
    assert_eq!(v["httpStatus"], 401, "{v}");
    assert!(v["hint"].as_str().unwrap().contains("credential"), "{v}");
    w.refused(
        &client,
        "transfer_native",
        json!({"to": w.payee.to_string(), "amount": "0.1"}),
        "credential_revoked",
    )
    .await;
    client.cancel().await.unwrap();
    http.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_reports_an_unreachable_companion() {
    // A port nothing listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = kms_mcp::KmsMcp::new(kms_mcp::CompanionClient::new(
        &format!("http://127.0.0.1:{port}"),
        kms_mcp::Credential::new("not.a.real.jwt", "test").unwrap(),
        None,
    ));
    let http = kms_mcp::serve_http(server, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = Host::default()
        .serve(StreamableHttpClientTransport::from_uri(http.url()))
        .await
        .unwrap();
    let r = client
        .call_tool(CallToolRequestParams::new("get_session"))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    let v = r.structured_content.unwrap();
    assert_eq!(v["error"], "companion_unreachable", "{v}");
    assert!(!serde_json::to_string(&v)
        .unwrap()
        .contains("not.a.real.jwt"));
    // A token without an RPC URL configured: a clear refusal naming --rpc-url.
    let r = client
        .call_tool(
            CallToolRequestParams::new("transfer_token").with_arguments(
                json!({"token": address("t").to_string(), "to": address("u").to_string(), "amount": "1"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .unwrap();
    let v = r.structured_content.unwrap();
    assert_eq!(v["error"], "no_rpc_url", "{v}");
    assert!(v["message"].as_str().unwrap().contains("--rpc-url"), "{v}");
    client.cancel().await.unwrap();
    http.shutdown().await.unwrap();
}

#[test]
fn kms_mcp_refuses_a_credential_file_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let bin = kms_test_bins::workspace_bin("kms-mcp", "kms-mcp", "KMS_MCP_BIN").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.jwt");
    std::fs::write(&file, "secret.credential.value").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(&bin)
            .args(args)
            .env_remove("KMS_AGENT_CREDENTIAL")
            .env_remove("KMS_AGENT_CREDENTIAL_FILE")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&["--credential-file".as_ref(), file.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("readable by its group or by others"),
        "{stderr}"
    );
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(!stderr.contains("secret.credential.value"), "{stderr}");
    // No credential at all: says where to put one.
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("KMS_AGENT_CREDENTIAL"), "{stderr}");
}
