//! The README's demo: brings up the whole local stack and walks through the product once.
//!
//! anvil (canonical EntryPoint v0.7 and the project's contracts) and Alto through
//! `anvil/stack.sh`, a `ta-sim` process, and the companion (SQLite, free port of 127.0.0.1);
//! then a software-passkey owner registers a wallet through the real WebAuthn ceremony, creates
//! an agent key, grants it a bounded session on chain (a payee, an ETH cap, a gas budget, a cap
//! on a test ERC-20), and the agent submits intents: an ETH payment and a token payment land
//! (receipts and balance changes printed), a token payment over the cap is refused. The stack
//! then stays up until Ctrl-C (or stops at once with `--no-wait`); everything started is stopped
//! on the way out.
//!
//! What it started is also written as JSON, `stack.json` (URLs, chain, contracts, account, agent
//! keyId and address, the paths of the agent credential and API-key files, the `kms-mcp`
//! command), in the state directory: `--state-dir DIR` (kept after exit; the next run replaces
//! its files), else a temporary directory removed on exit.
//!
//! `--entry-point-version 0.8` runs it all on EntryPoint v0.8 instead (its companion, factory and
//! account; `stack.json` names the version), as `clients/viem/run.sh` does for its v0.8 tests.

use std::io::Write;
use std::process::ExitCode;

use alloy::primitives::utils::{format_ether, parse_ether};
use alloy::primitives::{keccak256, Address, U256};
use alloy::sol_types::SolCall;
use kms_chain::userop::EntryPointVersion;
use kms_contracts::TestToken;
use kms_e2e::chain::ChainEnv;
use kms_e2e::companion::{day_session, Companion, DAY_SESSION_GAS_CAP};
use kms_e2e::stack::Stack;
use kms_test_support::Soft;
use serde_json::json;

const HELP: &str = "\
demo: bring up the local stack (anvil + EntryPoint v0.7 + contracts, Alto, ta-sim, companion)
and run the agent-key demo: wallet (software passkey) -> agent key -> bounded session ->
intents (an ETH payment and a token payment land, a token payment over the cap is refused).

usage: demo [--no-wait] [--state-dir DIR] [--entry-point-version V] [--help]

  --no-wait         stop everything and exit once the demo has run (default: keep the stack
                    up and print how to call it with curl, until Ctrl-C)
  --state-dir DIR   write stack.json (what was started, machine-readable), agent.jwt and
                    api.key (secrets, mode 0600) into DIR, created if missing and kept after
                    exit (default: a temporary directory removed on exit)
  --entry-point-version V
                    the EntryPoint the companion and the account use: 0.7 (default) or 0.8
  --help            this text

Everything listens on 127.0.0.1 on ports chosen at run time (Alto binds 0.0.0.0).";

fn step(n: u32, what: &str) {
    println!("\n[{n}] {what}");
}

fn kv(k: &str, v: impl std::fmt::Display) {
    println!("    {k:<22} {v}");
}

fn main() -> ExitCode {
    let mut no_wait = false;
    let mut state_dir: Option<std::path::PathBuf> = None;
    let mut version = EntryPointVersion::V07;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-wait" => no_wait = true,
            "--state-dir" => match args.next() {
                Some(d) => state_dir = Some(d.into()),
                None => {
                    eprintln!("demo: --state-dir needs a directory\n\n{HELP}");
                    return ExitCode::from(2);
                }
            },
            "--entry-point-version" => match args.next().map(|v| v.parse()) {
                Some(Ok(v)) => version = v,
                Some(Err(e)) => {
                    eprintln!("demo: {e}\n\n{HELP}");
                    return ExitCode::from(2);
                }
                None => {
                    eprintln!("demo: --entry-point-version needs 0.7 or 0.8\n\n{HELP}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("{HELP}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("demo: unknown argument {other:?}\n\n{HELP}");
                return ExitCode::from(2);
            }
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(no_wait, state_dir, version)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ndemo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn fail(msg: impl Into<String>) -> Error {
    msg.into().into()
}

async fn run(
    no_wait: bool,
    state_dir: Option<std::path::PathBuf>,
    version: EntryPointVersion,
) -> Result<(), Error> {
    step(
        1,
        "Starting anvil + EntryPoint v0.7 + contracts + Alto (anvil/stack.sh)",
    );
    let stack = tokio::task::spawn_blocking(Stack::start).await??;
    let info = stack.info().clone();
    kv("anvil", &info.rpc_url);
    kv("Alto bundler", &info.bundler_url);
    kv("chain id", info.chain_id);
    kv("EntryPoint v0.7", info.entry_point_v07);
    kv("SessionKeyValidator", info.session_key_validator);
    kv("AgentAccountFactory", info.account_factory_v07);

    step(2, "Starting ta-sim and the companion (SQLite)");
    if version != EntryPointVersion::V07 {
        kv("EntryPoint v0.8", info.entry_point_v08);
        kv("AgentAccountFactory", info.account_factory_v08);
    }
    let companion = Companion::start(&info, version).await?;
    let env = ChainEnv::connect(&info, version).await?;
    let operator = companion.operator_address().await?;
    kv("companion", companion.url(""));
    kv("operator key (in TA)", operator);
    env.set_balance(operator, parse_ether("1")?).await?;
    kv(
        "operator funded",
        "1 ETH (anvil_setBalance), to send revokeSession",
    );

    let result = demo(&companion, &env, state_dir).await;
    let result = match result {
        Ok(d) => write_stack_json(&companion, &info, version, &d).map(|()| d),
        Err(e) => Err(e),
    };
    let outcome = match result {
        Ok(d) if !no_wait => {
            print_curl(&companion, &d)?;
            println!("\nThe stack is up. Press Ctrl-C to stop everything.");
            tokio::signal::ctrl_c().await?;
            println!("\nStopping…");
            Ok(())
        }
        other => other.map(|_| ()),
    };
    companion.shutdown().await;
    drop(stack);
    if outcome.is_ok() {
        println!("Stopped.");
    }
    outcome
}

/// Where the demo's files go: a directory kept after exit, or a temporary one.
enum StateDir {
    Kept(std::path::PathBuf),
    Temp(tempfile::TempDir),
}

impl StateDir {
    fn path(&self) -> &std::path::Path {
        match self {
            StateDir::Kept(p) => p,
            StateDir::Temp(t) => t.path(),
        }
    }
}

/// What the walk-through produced, for the curl examples and `stack.json`.
struct Demo {
    dir: StateDir,
    key_id: String,
    recipient: Address,
    user_op_hash: String,
    wallet_key_id: String,
    owner: Address,
    account: Address,
    agent_address: Address,
}

async fn demo(
    c: &Companion,
    env: &ChainEnv,
    state_dir: Option<std::path::PathBuf>,
) -> Result<Demo, Error> {
    step(
        3,
        "The owner registers a wallet with a software passkey (WebAuthn ceremony)",
    );
    let mut user = Soft::new();
    let wallet = c.register(&mut user).await?;
    kv("wallet keyId", &wallet.key_id);
    kv("owner address", wallet.address);
    let account = env
        .client
        .account_address(wallet.address, U256::ZERO)
        .await?;
    kv(
        "smart account",
        format!("{account} (counterfactual, salt 0)"),
    );
    env.set_balance(account, parse_ether("10")?).await?;
    kv(
        "account funded",
        "10 ETH (anvil_setBalance), for gas and the demo payment",
    );
    let token = env.info.test_token;
    env.mint_test_token(account, parse_ether("500")?).await?;
    kv("and", format!("500 TEST (an ERC-20 at {token})"));

    step(
        4,
        "The owner creates an agent key (ceremony CreateAgentKey)",
    );
    let agent = c.create_agent(&mut user, &wallet, "demo agent").await?;
    kv("agent keyId", &agent.key_id);
    kv("agent address", agent.address);
    kv(
        "credential",
        "HS256 JWT (shown once; saved for the curl examples below)",
    );

    step(
        5,
        "The owner grants the agent a session on chain (ceremony GrantSession)",
    );
    let recipient = Address::from_word(keccak256(b"agent key companion demo recipient"));
    let now = env.now().await?;
    let cap = parse_ether("1")?;
    let token_cap = parse_ether("100")?;
    let mut session = day_session(&[recipient], cap, now);
    session["tokens"] = json!([{"token": token, "cap": token_cap.to_string()}]);
    let (status, grant) = c.grant_session(&mut user, &agent, session).await?;
    if status != 200 {
        return Err(fail(format!("/kms/agent-sessions: HTTP {status}: {grant}")));
    }
    kv("allowed target", format!("{recipient} (plain transfers)"));
    kv("spend cap", format!("{} ETH", format_ether(cap)));
    kv(
        "gas budget",
        format!(
            "{} ETH (each operation is charged its maximum gas cost)",
            format_ether(U256::from(DAY_SESSION_GAS_CAP))
        ),
    );
    kv(
        "token cap",
        format!(
            "{} TEST (transfer/approve counted)",
            format_ether(token_cap)
        ),
    );
    kv("valid", "from a minute ago for 24 h");
    kv(
        "revoker",
        grant["session"]["revoker"].as_str().unwrap_or("?"),
    );
    kv(
        "deploys the account",
        grant["deploysAccount"].as_bool().unwrap_or(false),
    );
    kv(
        "owner userOpHash",
        grant["userOpHash"].as_str().unwrap_or("?"),
    );
    kv(
        "transaction",
        grant["transactionHash"].as_str().unwrap_or("?"),
    );

    step(
        6,
        "The agent submits an intent: pay 0.1 ETH to the recipient (POST /agent/intents)",
    );
    let before_recipient = env.balance(recipient).await?;
    let before_account = env.balance(account).await?;
    let amount = parse_ether("0.1")?;
    let (status, submitted) = c
        .intent(
            &agent,
            json!([{"to": recipient, "value": amount.to_string()}]),
            Some("demo-payment-1"),
        )
        .await?;
    if status != 202 {
        return Err(fail(format!("/agent/intents: HTTP {status}: {submitted}")));
    }
    let hash = submitted["userOpHash"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    kv("HTTP status", status);
    kv("userOpHash", &hash);
    kv("nonce", submitted["nonce"].as_str().unwrap_or("?"));

    step(
        7,
        "Waiting for the receipt (GET /agent/intents/{userOpHash})",
    );
    let done = c.wait_intent(&agent, &hash).await?;
    if done["status"] != "included" {
        return Err(fail(format!("the intent did not land: {done}")));
    }
    let after_recipient = env.balance(recipient).await?;
    let after_account = env.balance(account).await?;
    kv("status", done["status"].as_str().unwrap_or("?"));
    kv(
        "transaction",
        done["transactionHash"].as_str().unwrap_or("?"),
    );
    kv("block", done["blockNumber"].as_str().unwrap_or("?"));
    if let Some(cost) = done["actualGasCost"]
        .as_str()
        .and_then(|c| c.parse::<U256>().ok())
    {
        kv("gas paid by account", format!("{} ETH", format_ether(cost)));
    }
    kv(
        "recipient balance",
        format!(
            "{} -> {} ETH (+{})",
            format_ether(before_recipient),
            format_ether(after_recipient),
            format_ether(after_recipient.saturating_sub(before_recipient))
        ),
    );
    kv(
        "account balance",
        format!(
            "{} -> {} ETH (-{})",
            format_ether(before_account),
            format_ether(after_account),
            format_ether(before_account.saturating_sub(after_account))
        ),
    );
    if after_recipient.saturating_sub(before_recipient) != amount {
        return Err(fail("the recipient did not receive exactly 0.1 ETH"));
    }

    step(
        8,
        "The agent pays 40 TEST to the recipient (an ERC-20 transfer intent)",
    );
    let token_call = |wei: U256| {
        let data = TestToken::transferCall {
            to: recipient,
            value: wei,
        }
        .abi_encode();
        json!([{"to": token, "data": alloy::primitives::hex::encode_prefixed(data)}])
    };
    let (status, submitted) = c
        .intent(&agent, token_call(parse_ether("40")?), Some("demo-token-1"))
        .await?;
    if status != 202 {
        return Err(fail(format!("/agent/intents: HTTP {status}: {submitted}")));
    }
    let token_hash = submitted["userOpHash"].as_str().unwrap_or_default();
    let done = c.wait_intent(&agent, token_hash).await?;
    if done["status"] != "included" {
        return Err(fail(format!("the token intent did not land: {done}")));
    }
    let received = env.test_token_balance(recipient).await?;
    kv("status", done["status"].as_str().unwrap_or("?"));
    kv("recipient TEST", format!("{} TEST", format_ether(received)));
    if received != parse_ether("40")? {
        return Err(fail("the recipient did not receive exactly 40 TEST"));
    }

    step(
        9,
        "The agent tries to pay 80 TEST more: over what is left of its 100 TEST cap",
    );
    let (status, refused) = c
        .intent(&agent, token_call(parse_ether("80")?), None)
        .await?;
    if status != 403 || refused["code"] != "token_over_budget" {
        return Err(fail(format!(
            "expected 403 token_over_budget, got HTTP {status}: {refused}"
        )));
    }
    kv("HTTP status", status);
    kv("code", refused["code"].as_str().unwrap_or("?"));
    kv(
        "available",
        refused["details"]["available"]
            .as_str()
            .and_then(|a| a.parse::<U256>().ok())
            .map(|a| format!("{} TEST", format_ether(a)))
            .unwrap_or_else(|| "?".into()),
    );
    kv(
        "why it holds",
        "the validator counts every transfer/approve on chain: signing it through \
         /kms/sign-agent and sending it elsewhere is refused just the same",
    );
    let snapshot = env
        .client
        .read_session(account, agent.address, &[token])
        .await?;
    kv(
        "session on chain",
        format!(
            "{} of {} ETH spent, {} of {} ETH gas charged, {} operations",
            format_ether(U256::from(snapshot.session.spent)),
            format_ether(U256::from(snapshot.session.spend_cap)),
            format_ether(U256::from(snapshot.session.gas_spent)),
            format_ether(U256::from(snapshot.session.gas_cap)),
            snapshot.session.ops_used
        ),
    );
    println!(
        "\nDemo complete: the payments landed through the agent's session, and the chain \
         holds it to its caps."
    );

    let dir = match state_dir {
        Some(d) => {
            std::fs::create_dir_all(&d)?;
            // The previous run's files describe a stack that is gone.
            for f in [STACK_JSON, "agent.jwt", "api.key"] {
                match std::fs::remove_file(d.join(f)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                    _ => {}
                }
            }
            StateDir::Kept(std::path::absolute(&d)?)
        }
        None => StateDir::Temp(tempfile::Builder::new().prefix("kms-demo-").tempdir()?),
    };
    write_secret(&dir.path().join("agent.jwt"), &agent.jwt)?;
    write_secret(&dir.path().join("api.key"), c.api_key())?;
    Ok(Demo {
        dir,
        key_id: agent.key_id,
        recipient,
        user_op_hash: hash,
        wallet_key_id: wallet.key_id,
        owner: wallet.address,
        account,
        agent_address: agent.address,
    })
}

/// The machine-readable description of the running stack, in the state directory.
const STACK_JSON: &str = "stack.json";

/// Writes a secret to a file readable by the user only.
fn write_secret(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(secret.as_bytes())
}

/// Writes `stack.json` (what was started: URLs, chain, contracts, account, agent, secret file
/// paths, the `kms-mcp` command) into the state directory and says where it is.
fn write_stack_json(
    c: &Companion,
    info: &kms_e2e::stack::StackInfo,
    version: EntryPointVersion,
    d: &Demo,
) -> Result<(), Error> {
    let (entry_point, factory, bundler_url) = match version {
        EntryPointVersion::V07 => (
            info.entry_point_v07,
            info.account_factory_v07,
            info.bundler_url.clone(),
        ),
        EntryPointVersion::V08 => (
            info.entry_point_v08,
            info.account_factory_v08,
            info.bundler_url_v08
                .clone()
                .unwrap_or_else(|| info.bundler_url.clone()),
        ),
    };
    let dir = d.dir.path();
    let credential_file = dir.join("agent.jwt");
    let url = c.url("");
    let kms_mcp = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|p| p.join("kms-mcp")))
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "kms-mcp".to_owned());
    let v = json!({
        "version": 1,
        "pid": std::process::id(),
        "companion": {
            "url": url,
            "openapi": c.url("/openapi.json"),
            "apiKeyFile": dir.join("api.key"),
        },
        "chain": {
            "rpcUrl": info.rpc_url,
            "bundlerUrl": bundler_url,
            "chainId": info.chain_id,
            "entryPointVersion": version.as_str().trim_start_matches('v'),
            "entryPoint": entry_point,
            "sessionKeyValidator": info.session_key_validator,
            "accountFactory": factory,
            "testToken": info.test_token,
            "anvilPid": info.anvil_pid,
            "bundlerPid": info.bundler_pid,
        },
        "wallet": {"keyId": d.wallet_key_id, "ownerAddress": d.owner},
        "account": d.account,
        "agent": {
            "keyId": d.key_id,
            "address": d.agent_address,
            "credentialFile": credential_file,
            "allowedTarget": d.recipient,
        },
        "lastIntent": d.user_op_hash,
        "mcp": {
            "command": kms_mcp,
            "args": ["--credential-file", credential_file],
            "env": {"KMS_URL": url, "KMS_RPC_URL": info.rpc_url},
        },
    });
    let path = dir.join(STACK_JSON);
    std::fs::write(&path, serde_json::to_string_pretty(&v)? + "\n")?;
    println!("\nWhat was started, as JSON: {}", path.display());
    Ok(())
}

fn print_curl(c: &Companion, d: &Demo) -> Result<(), Error> {
    let url = c.url("");
    let dir = d.dir.path().display();
    println!("\nCall it yourself (the secrets are in files readable only by you):");
    println!("  export KMS_URL={url}");
    println!("  export KMS_JWT=$(cat {dir}/agent.jwt)      # the agent's credential");
    println!("  export KMS_API_KEY=$(cat {dir}/api.key)    # the API key");
    println!("  curl -s $KMS_URL/health");
    println!(
        "  curl -s -H \"Authorization: Bearer $KMS_JWT\" $KMS_URL/agent/intents/{}",
        d.user_op_hash
    );
    println!(
        "  curl -s -X POST -H \"Authorization: Bearer $KMS_JWT\" -H 'Content-Type: application/json' \\\n       \
         -H 'Idempotency-Key: my-payment-1' $KMS_URL/agent/intents \\\n       \
         -d '{{\"calls\":[{{\"to\":\"{}\",\"value\":\"10000000000000000\"}}]}}'",
        d.recipient
    );
    println!(
        "  curl -s -X POST -H \"Authorization: Bearer $KMS_JWT\" -H 'Content-Type: application/json' \\\n       \
         $KMS_URL/agent/intents -d '{{\"calls\":[{{\"to\":\"0x000000000000000000000000000000000000dEaD\",\"value\":\"1\"}}]}}'   # 403 target_not_allowed"
    );
    println!("  (agent keyId {})", d.key_id);
    println!("  curl -s $KMS_URL/openapi.json | head -c 300");
    println!(
        "\nOr give an AI agent MCP tools over this session: the host configuration of kms-mcp is \
         under \"mcp\" in {dir}/{STACK_JSON} (README: AI agents over MCP)."
    );
    Ok(())
}
