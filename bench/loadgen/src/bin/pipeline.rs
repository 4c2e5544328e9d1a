//! `pipeline`: the intent pipeline through the companion's HTTP API on anvil + Alto.
//!
//! Starts the local chain stack (`anvil/stack.sh`: anvil, the canonical EntryPoint v0.7, the
//! project's contracts, Alto), a `ta-sim` process and the companion (in this process, SQLite,
//! a free 127.0.0.1 port). An owner registers a wallet with a software passkey (real WebAuthn
//! ceremony), creates an agent key and grants it a session on chain (`POST /kms/agent-sessions`,
//! which deploys the account). Then the agent runs N intents one after another, each a native
//! transfer to the allowed target:
//!
//! * `POST /agent/intents` (202): the companion's `Server-Timing` header splits its time into
//!   auth, queue, nonce, policy, prepare, sign, record and submit;
//! * `GET /agent/intents/{userOpHash}` every 25 ms until the intent is `included`.
//!
//! Prints each phase's p50/p90/max and share of the total, and the ratio of the companion's
//! own work (the phases without chain RPC: auth, queue, sign, record) to the total time to
//! receipt. `prepare` is mostly RPC (bundler gas price and gas estimate); the build and
//! userOpHash inside it are measured in-process by `cargo bench -p kms-loadgen --bench
//! userop_hash`.
//!
//! Build it with `--release`; the `ta-sim` it starts is built in the same profile
//! (`KMS_TA_SIM_BIN` points at another).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use alloy::primitives::utils::parse_ether;
use alloy::primitives::{keccak256, Address, U256};
use clap::Parser;
use hdrhistogram::Histogram;
use kms_chain::userop::EntryPointVersion;
use kms_e2e::chain::ChainEnv;
use kms_e2e::companion::{day_session, server_timing, Companion, Soft};
use kms_e2e::stack::Stack;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "pipeline",
    about = "Intent pipeline figures through the companion's HTTP API on anvil + Alto"
)]
struct Cli {
    /// Intents to run (one after another).
    #[arg(long, default_value_t = 100)]
    intents: usize,
    /// Receipt polling interval (milliseconds) of `GET /agent/intents/{userOpHash}`.
    #[arg(long, default_value_t = 25)]
    poll_ms: u64,
}

/// The companion's phases, in the order of its `Server-Timing` header.
const PHASES: [&str; 8] = [
    "auth", "queue", "nonce", "policy", "prepare", "sign", "record", "submit",
];
/// The phases with no chain RPC: the companion's own work.
const OWN: [&str; 4] = ["auth", "queue", "sign", "record"];

type Error = Box<dyn std::error::Error + Send + Sync>;

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram")
}

fn line(name: &str, h: &Histogram<u64>, total_us: f64) {
    let ms = |v: u64| v as f64 / 1000.0;
    let sum = h.mean() * h.len() as f64;
    println!(
        "  {name:<40} p50 {:>8.3} ms  p90 {:>8.3} ms  max {:>8.3} ms  mean {:>8.3} ms  share {:>5.1}%",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.max()),
        h.mean() / 1000.0,
        100.0 * sum / total_us
    );
}

fn main() -> Result<(), Error> {
    let cli = Cli::parse();
    if cli.intents == 0 {
        return Err("--intents must be at least 1".into());
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> Result<(), Error> {
    eprintln!("pipeline: starting anvil + Alto (anvil/stack.sh), ta-sim and the companion");
    let stack = tokio::task::spawn_blocking(Stack::start).await??;
    let info = stack.info().clone();
    // One agent sends every intent: lift its per-credential rate limit out of the way.
    let c = Companion::start_with(
        &info,
        EntryPointVersion::V07,
        &["--agent-rate-limit", "1000000"],
    )
    .await?;
    let env = ChainEnv::connect(&info, EntryPointVersion::V07).await?;
    let result = measure(&cli, &c, &env).await;
    c.shutdown().await;
    drop(stack);
    result
}

async fn measure(cli: &Cli, c: &Companion, env: &ChainEnv) -> Result<(), Error> {
    // The owner, the agent and its session, all through the API.
    let mut user = Soft::new();
    let wallet = c.register(&mut user).await?;
    let account = env
        .client
        .account_address(wallet.address, U256::ZERO)
        .await?;
    env.set_balance(account, parse_ether("10")?).await?;
    let agent = c.create_agent(&mut user, &wallet, "pipeline").await?;
    let recipient = Address::from_word(keccak256(b"pipeline recipient"));
    let now = env.now().await?;
    let (status, grant) = c
        .grant_session(
            &mut user,
            &agent,
            day_session(&[recipient], parse_ether("5")?, now),
        )
        .await?;
    if status != 200 {
        return Err(format!("/kms/agent-sessions: HTTP {status}: {grant}").into());
    }
    eprintln!(
        "pipeline: account {account} deployed, session granted to agent {}; {} intents",
        agent.address, cli.intents
    );

    let mut phases: BTreeMap<&str, Histogram<u64>> = PHASES.iter().map(|p| (*p, hist())).collect();
    let (mut h_server, mut h_post, mut h_own, mut h_wait, mut h_total) =
        (hist(), hist(), hist(), hist(), hist());
    let value = U256::from(1_000_000_000u64);
    let before = env.balance(recipient).await?;
    let load0 = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let poll = Duration::from_millis(cli.poll_ms);
    for i in 0..cli.intents {
        let t0 = Instant::now();
        let (status, body, timing) = c
            .intent_timed(
                &agent,
                json!([{"to": recipient, "value": value.to_string()}]),
            )
            .await?;
        let t1 = Instant::now();
        if status != 202 {
            return Err(format!("intent {i}: HTTP {status}: {body}").into());
        }
        let timing = timing.ok_or("no Server-Timing header")?;
        // Microseconds per phase.
        let timing: BTreeMap<String, u64> = server_timing(&timing)
            .ok_or_else(|| format!("bad Server-Timing header {timing:?}"))?
            .into_iter()
            .map(|(name, ms)| (name, (ms * 1000.0).round().max(1.0) as u64))
            .collect();
        let hash = body["userOpHash"]
            .as_str()
            .ok_or_else(|| format!("intent {i}: no userOpHash in {body}"))?
            .to_owned();
        loop {
            let (status, v) = c
                .get_bearer(&format!("/agent/intents/{hash}"), &agent.jwt)
                .await?;
            if status != 200 {
                return Err(format!("intent {i}: GET HTTP {status}: {v}").into());
            }
            match v["status"].as_str() {
                Some("included") => break,
                Some("failed") => return Err(format!("intent {i} failed: {v}").into()),
                _ if t0.elapsed() > Duration::from_secs(120) => {
                    return Err(format!("intent {i} not included in 120 s: {v}").into())
                }
                _ => tokio::time::sleep(poll).await,
            }
        }
        let t2 = Instant::now();
        let us = |d: Duration| (d.as_micros() as u64).max(1);
        for p in PHASES {
            let v = *timing
                .get(p)
                .ok_or_else(|| format!("intent {i}: no {p} in Server-Timing"))?;
            phases.get_mut(p).expect("phase").record(v)?;
        }
        h_own.record(OWN.iter().map(|p| timing[*p]).sum::<u64>().max(1))?;
        h_server.record(timing.get("total").copied().unwrap_or(1))?;
        h_post.record(us(t1 - t0))?;
        h_wait.record(us(t2 - t1))?;
        h_total.record(us(t2 - t0))?;
    }
    let moved = env.balance(recipient).await? - before;
    if moved != value * U256::from(cli.intents) {
        return Err(format!(
            "the recipient received {moved} wei, not {} intents' worth",
            cli.intents
        )
        .into());
    }
    let total_us = h_total.mean() * h_total.len() as f64;
    println!(
        "pipeline: {} intents through POST /agent/intents on anvil + Alto (EntryPoint v0.7), one after another, all included (recipient +{moved} wei)",
        cli.intents
    );
    for p in PHASES {
        line(&format!("companion {p}"), &phases[p], total_us);
    }
    line("companion total (Server-Timing)", &h_server, total_us);
    line("POST /agent/intents (client)", &h_post, total_us);
    line(
        &format!("202 -> included (GET every {} ms)", cli.poll_ms),
        &h_wait,
        total_us,
    );
    line("total to receipt", &h_total, total_us);
    line("companion own (auth+queue+sign+record)", &h_own, total_us);
    println!(
        "  ratio companion-own / total-to-receipt = {:.4} (mean {:.3} ms of {:.1} ms); chain RPC inside the companion (nonce+policy+prepare+submit) = {:.1} ms",
        h_own.mean() / h_total.mean(),
        h_own.mean() / 1000.0,
        h_total.mean() / 1000.0,
        ["nonce", "policy", "prepare", "submit"]
            .iter()
            .map(|p| phases[*p].mean())
            .sum::<f64>()
            / 1000.0
    );
    println!(
        "  load average before {} after {}",
        load0.trim(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    Ok(())
}
