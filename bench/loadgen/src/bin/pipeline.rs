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
//! * the bundler's `eth_getUserOperationReceipt` every 25 ms until the operation is included,
//!   then `GET /agent/intents/{userOpHash}` until the companion reports it `included` (it
//!   looks at the chain at most once per `--intent-poll-secs`: that lag is printed apart).
//!
//! With `--get-from-202` the companion's `GET` is polled from the 202, beside the bundler's
//! receipt, as an agent would: the lag between the receipt and the companion's `included` is
//! then what such an agent sees.
//!
//! Prints each phase's p50/p90/max and share of the total, and the ratio of the companion's
//! own work (the phases without chain RPC: auth, queue, sign, record) to the total time to
//! receipt. `prepare` is mostly RPC (bundler gas price and gas estimate); the build and
//! userOpHash inside it are measured in-process by `cargo bench -p kms-loadgen --bench
//! userop_hash`.
//!
//! With `--agents N` (N > 1) the agents run at once instead: N agents of one owner, spread
//! round-robin over `--accounts K` of the owner's accounts (salts 0..K, so several agents share
//! each account's gas and several accounts are in play), each sending `--intents` transfers one
//! after another (one agent's operations are serialised by the companion), all agents
//! concurrently (each intent counted included when the bundler has its receipt), after a baseline of the first agent alone (same intents, same run). Prints
//! intents/s to inclusion over the whole run and its ratio to the baseline's, p50/p99 to receipt, the
//! companion's share of that time (its `Server-Timing` total, and its own work without chain
//! RPC), and the failures by reason (HTTP status and code, or the intent's final status and
//! reason); a failure does not stop the run.
//!
//! With `--in-flight K` (K > 1) the same agents then run again, each keeping up to K intents in
//! flight (the companion answers 202 without waiting for the agent's previous operation; the
//! agent sends its next intent at once while fewer than K wait for their receipt), and the
//! ratio of intents/s to inclusion against the one-at-a-time run above (same agents, same run)
//! is printed.
//!
//! With `--compare-gas-reuse` (one agent) the intents alternate between the companion's reuse of
//! gas limits per call shape (no `Idempotency-Key`) and its baseline, the bundler's estimate
//! (an `Idempotency-Key`, which turns reuse off), and the companion's answer time of each half is
//! printed with the ratio, both measured in the same run.
//!
//! Build it with `--release`; the `ta-sim` it starts is built in the same profile
//! (`KMS_TA_SIM_BIN` points at another).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use alloy::primitives::utils::parse_ether;
use alloy::primitives::{keccak256, Address, B256, U256};
use clap::Parser;
use hdrhistogram::Histogram;
use kms_chain::userop::EntryPointVersion;
use kms_e2e::chain::ChainEnv;
use kms_e2e::companion::{day_session, server_timing, AgentKey, Companion, Soft};
use kms_e2e::stack::Stack;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "pipeline",
    about = "Intent pipeline figures through the companion's HTTP API on anvil + Alto"
)]
struct Cli {
    /// Intents to run (one after another), per agent.
    #[arg(long, default_value_t = 100)]
    intents: usize,
    /// Agents sending at once (1: the sequential breakdown by phase).
    #[arg(long, default_value_t = 1)]
    agents: usize,
    /// With several agents, how many of the owner's accounts they are spread over.
    #[arg(long, default_value_t = 5)]
    accounts: usize,
    /// With one agent: draw where an intent's time to receipt goes (mean per phase) into this
    /// SVG file.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// Receipt polling interval (milliseconds) of `GET /agent/intents/{userOpHash}`.
    #[arg(long, default_value_t = 25)]
    poll_ms: u64,
    /// With K > 1, each agent then keeps up to K intents in flight (it sends the next one as
    /// soon as the companion answers 202, waiting for a receipt only with K open), after the
    /// same agents one intent at a time in the same run; prints the ratio.
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// With one agent: poll `GET /agent/intents/{userOpHash}` from the 202 (as an agent
    /// would), beside the bundler's receipt, instead of only once the receipt is there.
    #[arg(long)]
    get_from_202: bool,
    /// With one agent: every other intent (the even ones) carries an `Idempotency-Key`, which
    /// turns the companion's reuse of gas limits per call shape off for it (the bundler's
    /// estimate, beside the reads, as before); prints both halves' phases and the ratio of the
    /// companion's answer time with reuse to without, measured in the same run.
    #[arg(long)]
    compare_gas_reuse: bool,
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
    if cli.intents == 0 || cli.agents == 0 || cli.accounts == 0 || cli.in_flight == 0 {
        return Err("--intents, --agents, --accounts and --in-flight must be at least 1".into());
    }
    if cli.compare_gas_reuse && (cli.agents > 1 || cli.in_flight > 1) {
        return Err("--compare-gas-reuse runs one agent, one intent at a time".into());
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
    // The agents send and poll as fast as they can: lift the rate limits out of the way.
    let c = Companion::start_with(
        &info,
        EntryPointVersion::V07,
        &[
            "--agent-rate-limit",
            "1000000",
            "--agent-read-rate-limit",
            "1000000",
            "--rate-limit",
            "1000000",
            "--client-rate-limit",
            "1000000",
        ],
    )
    .await?;
    let env = ChainEnv::connect(&info, EntryPointVersion::V07).await?;
    let result = if cli.agents > 1 || cli.in_flight > 1 {
        measure_many(&cli, &c, &env).await
    } else {
        measure(&cli, &c, &env).await
    };
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
    let (mut h_server, mut h_post, mut h_own, mut h_wait, mut h_total, mut h_status) =
        (hist(), hist(), hist(), hist(), hist(), hist());
    let value = U256::from(1_000_000_000u64);
    let before = env.balance(recipient).await?;
    let load0 = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let poll = Duration::from_millis(cli.poll_ms);
    let http = reqwest::Client::new();
    // Per arm of --compare-gas-reuse (0: reuse, 1: baseline): each phase, then the total.
    let mut arms: [BTreeMap<&str, Histogram<u64>>; 2] = std::array::from_fn(|_| {
        PHASES
            .iter()
            .chain(&["total"])
            .map(|p| (*p, hist()))
            .collect()
    });
    for i in 0..cli.intents {
        let t0 = Instant::now();
        let calls = json!([{"to": recipient, "value": value.to_string()}]);
        let baseline = cli.compare_gas_reuse && i % 2 == 0;
        let (status, body, timing) = if baseline {
            intent_keyed(&http, c, &agent, calls, &format!("pipeline-{i}")).await?
        } else {
            c.intent_timed(&agent, calls).await?
        };
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
        // Included as the chain sees it (the bundler's receipt), then as the companion's
        // `GET /agent/intents/{hash}` reports it (it looks at the chain at most once per
        // `--intent-poll-secs`).
        let hash_b256: B256 = hash.parse()?;
        let receipt = async {
            loop {
                match env
                    .client
                    .bundler()
                    .get_user_operation_receipt(hash_b256)
                    .await?
                {
                    Some(r) if r.success => return Ok::<Instant, Error>(Instant::now()),
                    Some(r) => return Err(format!("intent {i} reverted: {r:?}").into()),
                    None if t0.elapsed() > Duration::from_secs(120) => {
                        return Err(format!("intent {i} not included in 120 s").into())
                    }
                    None => tokio::time::sleep(poll).await,
                }
            }
        };
        let reported = async {
            loop {
                let (status, v) = c
                    .get_bearer(&format!("/agent/intents/{hash}"), &agent.jwt)
                    .await?;
                if status != 200 {
                    return Err(format!("intent {i}: GET HTTP {status}: {v}").into());
                }
                match v["status"].as_str() {
                    Some("included") => return Ok::<Instant, Error>(Instant::now()),
                    Some("failed") => return Err(format!("intent {i} failed: {v}").into()),
                    _ if t0.elapsed() > Duration::from_secs(120) => {
                        return Err(format!("intent {i} not reported included in 120 s: {v}").into())
                    }
                    _ => tokio::time::sleep(poll).await,
                }
            }
        };
        let (t_receipt, t_reported) = if cli.get_from_202 {
            let (a, b) = tokio::join!(receipt, reported);
            (a?, b?)
        } else {
            let a = receipt.await?;
            (a, reported.await?)
        };
        h_status
            .record((t_reported.saturating_duration_since(t_receipt).as_micros() as u64).max(1))?;
        let t2 = t_receipt;
        let us = |d: Duration| (d.as_micros() as u64).max(1);
        for p in PHASES {
            let v = *timing
                .get(p)
                .ok_or_else(|| format!("intent {i}: no {p} in Server-Timing"))?;
            phases.get_mut(p).expect("phase").record(v)?;
        }
        let arm = &mut arms[usize::from(baseline)];
        for p in PHASES.iter().chain(&["total"]) {
            arm.get_mut(p)
                .expect("phase")
                .record(timing.get(*p).copied().unwrap_or(1))?;
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
        &format!(
            "202 -> included (bundler receipt, every {} ms)",
            cli.poll_ms
        ),
        &h_wait,
        total_us,
    );
    line("total to receipt", &h_total, total_us);
    line(
        if cli.get_from_202 {
            "receipt -> GET (polled from the 202) says included"
        } else {
            "receipt -> the companion's GET says included"
        },
        &h_status,
        total_us,
    );
    line("companion own (auth+queue+sign+record)", &h_own, total_us);
    if cli.compare_gas_reuse {
        compare_gas_reuse(&arms);
    }
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
    if let Some(path) = &cli.plot {
        let mut bars: Vec<(String, f64)> = PHASES
            .iter()
            .map(|p| (format!("companion: {p}"), phases[p].mean() / 1000.0))
            .collect();
        bars.push((
            "202 -> included (bundler receipt)".to_owned(),
            h_wait.mean() / 1000.0,
        ));
        kms_loadgen::plot::breakdown(
            path,
            &format!(
                "One intent's time to receipt, mean of {} (anvil + Alto, EntryPoint v0.7): {:.1} ms",
                cli.intents,
                h_total.mean() / 1000.0
            ),
            &bars,
            h_total.mean() / 1000.0,
        )
        .map_err(|e| format!("--plot {}: {e}", path.display()))?;
        println!("  picture {}", path.display());
    }
    Ok(())
}

/// What one intent of the concurrent run came to.
struct Outcome {
    /// `None` when included; else the reason it was not.
    failure: Option<String>,
    /// POST to included (or to the failure), microseconds.
    to_receipt_us: u64,
    /// The companion's `Server-Timing` total and its own phases (auth+queue+sign+record), µs.
    server_us: Option<(u64, u64)>,
}

/// One agent's intents, one after another, with at most `in_flight` open at once: the next is
/// sent as soon as the companion answers 202 while fewer than `in_flight` wait for their receipt.
#[allow(clippy::too_many_arguments)]
async fn agent_run(
    c: &Companion,
    env: &ChainEnv,
    agent: &AgentKey,
    recipient: Address,
    value: U256,
    intents: usize,
    poll: Duration,
    in_flight: usize,
) -> Vec<Outcome> {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let mut out = Vec::with_capacity(intents);
    let mut open = FuturesUnordered::new();
    for _ in 0..intents {
        while open.len() >= in_flight.max(1) {
            if let Some(o) = open.next().await {
                out.push(o);
            }
        }
        match post(c, agent, recipient, value).await {
            Ok((hash, t0, server_us)) => open.push(receipt(env, hash, t0, server_us, poll)),
            Err(o) => out.push(o),
        }
    }
    while let Some(o) = open.next().await {
        out.push(o);
    }
    out
}

/// `POST /agent/intents` with an `Idempotency-Key`: status, body and `Server-Timing` header.
async fn intent_keyed(
    http: &reqwest::Client,
    c: &Companion,
    agent: &AgentKey,
    calls: serde_json::Value,
    key: &str,
) -> Result<(u16, serde_json::Value, Option<String>), Error> {
    let response = http
        .post(c.url("/agent/intents"))
        .bearer_auth(&agent.jwt)
        .header("idempotency-key", key)
        .json(&json!({ "calls": calls }))
        .send()
        .await?;
    let status = response.status().as_u16();
    let timing = response
        .headers()
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((status, response.json().await?, timing))
}

/// The `--compare-gas-reuse` table: each phase's p50 with gas limits reused (`arms[0]`) and with
/// the bundler's estimate (`arms[1]`, the baseline), and the ratio of the companion's answer
/// times, both measured in this run.
fn compare_gas_reuse(arms: &[BTreeMap<&str, Histogram<u64>>; 2]) {
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "gas limits reused per call shape (no Idempotency-Key, {} intents) vs the bundler's estimate (Idempotency-Key, {} intents), alternating, same run:",
        arms[0]["total"].len(),
        arms[1]["total"].len()
    );
    for p in PHASES.iter().chain(&["total"]) {
        println!(
            "  {p:<8} p50 {:>8.3} ms vs {:>8.3} ms   p90 {:>8.3} ms vs {:>8.3} ms",
            ms(&arms[0][p], 0.5),
            ms(&arms[1][p], 0.5),
            ms(&arms[0][p], 0.9),
            ms(&arms[1][p], 0.9)
        );
    }
    println!(
        "  ratio reuse / estimate, companion total: p50 {:.3}, mean {:.3}",
        ms(&arms[0]["total"], 0.5) / ms(&arms[1]["total"], 0.5),
        arms[0]["total"].mean() / arms[1]["total"].mean()
    );
}

/// Sends one intent: its userOpHash, when it was sent and the companion's timing; or the
/// failure.
async fn post(
    c: &Companion,
    agent: &AgentKey,
    recipient: Address,
    value: U256,
) -> Result<(B256, Instant, Option<(u64, u64)>), Outcome> {
    let t0 = Instant::now();
    let us = || (t0.elapsed().as_micros() as u64).max(1);
    let posted = c
        .intent_timed(
            agent,
            json!([{"to": recipient, "value": value.to_string()}]),
        )
        .await;
    let (status, body, timing) = posted.map_err(|e| Outcome {
        failure: Some(format!("POST error: {e}")),
        to_receipt_us: us(),
        server_us: None,
    })?;
    let server_us = timing.as_deref().and_then(server_timing).map(|t| {
        let t: BTreeMap<String, u64> = t
            .into_iter()
            .map(|(n, ms)| (n, (ms * 1000.0).round().max(1.0) as u64))
            .collect();
        (
            t.get("total").copied().unwrap_or(1),
            OWN.iter()
                .map(|p| t.get(*p).copied().unwrap_or(0))
                .sum::<u64>()
                .max(1),
        )
    });
    let Some(hash) = body["userOpHash"].as_str().filter(|_| status == 202) else {
        return Err(Outcome {
            failure: Some(format!(
                "HTTP {status} {}",
                body["code"].as_str().unwrap_or("-")
            )),
            to_receipt_us: us(),
            server_us,
        });
    };
    let hash = hash.parse::<B256>().map_err(|_| Outcome {
        failure: Some(format!("bad userOpHash {hash}")),
        to_receipt_us: us(),
        server_us,
    })?;
    Ok((hash, t0, server_us))
}

/// Waits for the bundler's receipt of `hash` (sent at `t0`). Inclusion as the chain sees it:
/// the companion's own `GET /agent/intents/{hash}` looks at the chain at its own cadence.
async fn receipt(
    env: &ChainEnv,
    hash: B256,
    t0: Instant,
    server_us: Option<(u64, u64)>,
    poll: Duration,
) -> Outcome {
    let failure = loop {
        match env.client.bundler().get_user_operation_receipt(hash).await {
            Ok(Some(r)) if r.success => break None,
            Ok(Some(_)) => break Some("included, execution reverted".to_owned()),
            Ok(None) if t0.elapsed() > Duration::from_secs(120) => {
                break Some("not included in 120 s".to_owned())
            }
            Ok(None) => tokio::time::sleep(poll).await,
            Err(e) => break Some(format!("receipt error: {e}")),
        }
    };
    Outcome {
        failure,
        to_receipt_us: (t0.elapsed().as_micros() as u64).max(1),
        server_us,
    }
}

/// All `agents` at once, each with at most `in_flight` intents open: the outcomes and the wall
/// time.
#[allow(clippy::too_many_arguments)]
async fn all_at_once(
    c: &Companion,
    env: &ChainEnv,
    agents: &[AgentKey],
    recipient: Address,
    value: U256,
    intents: usize,
    poll: Duration,
    in_flight: usize,
) -> (Vec<Outcome>, Duration) {
    let started = Instant::now();
    let runs = agents
        .iter()
        .map(|a| agent_run(c, env, a, recipient, value, intents, poll, in_flight));
    let outcomes: Vec<Outcome> = futures_util::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect();
    (outcomes, started.elapsed())
}

/// `--agents N`: N agents over `--accounts` accounts, all sending at once.
async fn measure_many(cli: &Cli, c: &Companion, env: &ChainEnv) -> Result<(), Error> {
    let mut user = Soft::new();
    let wallet = c.register(&mut user).await?;
    let recipient = Address::from_word(keccak256(b"pipeline recipient"));
    let accounts = cli.accounts.min(cli.agents);
    let mut account_of = Vec::with_capacity(accounts);
    for salt in 0..accounts {
        let account = env
            .client
            .account_address(wallet.address, U256::from(salt))
            .await?;
        env.set_balance(account, parse_ether("100")?).await?;
        account_of.push(account);
    }
    eprintln!(
        "pipeline: creating {} agents and granting their sessions over {accounts} accounts",
        cli.agents
    );
    let mut agents = Vec::with_capacity(cli.agents);
    for i in 0..cli.agents {
        let agent = c
            .create_agent(&mut user, &wallet, &format!("pipeline {i}"))
            .await?;
        let now = env.now().await?;
        let mut session = day_session(&[recipient], parse_ether("5")?, now);
        session["salt"] = json!((i % accounts).to_string());
        let (status, grant) = c.grant_session(&mut user, &agent, session).await?;
        if status != 200 {
            return Err(
                format!("/kms/agent-sessions for agent {i}: HTTP {status}: {grant}").into(),
            );
        }
        agents.push(agent);
    }
    eprintln!(
        "pipeline: {} agents x {} intents, all agents at once",
        cli.agents, cli.intents
    );
    let value = U256::from(1_000_000_000u64);
    let poll = Duration::from_millis(cli.poll_ms);
    // The baseline, in the same run: the first agent alone.
    let started = Instant::now();
    let alone = agent_run(c, env, &agents[0], recipient, value, cli.intents, poll, 1).await;
    let alone_wall = started.elapsed();
    if let Some(f) = alone.iter().find_map(|o| o.failure.as_ref()) {
        return Err(format!("the baseline agent's intent failed: {f}").into());
    }
    let mut h_alone = hist();
    for o in &alone {
        h_alone.record(o.to_receipt_us)?;
    }
    let alone_rate = alone.len() as f64 / alone_wall.as_secs_f64();
    let before = env.balance(recipient).await?;
    let load0 = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let (outcomes, wall) =
        all_at_once(c, env, &agents, recipient, value, cli.intents, poll, 1).await;
    let (mut h_receipt, mut h_server, mut h_own) = (hist(), hist(), hist());
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for o in &outcomes {
        match &o.failure {
            None => {
                h_receipt.record(o.to_receipt_us)?;
                if let Some((total, own)) = o.server_us {
                    h_server.record(total)?;
                    h_own.record(own)?;
                }
            }
            Some(reason) => *failures.entry(reason.clone()).or_default() += 1,
        }
    }
    let included = h_receipt.len();
    let moved = env.balance(recipient).await? - before;
    if moved != value * U256::from(included) {
        return Err(format!(
            "the recipient received {moved} wei, not the {included} included intents' worth"
        )
        .into());
    }
    let ms = |v: u64| v as f64 / 1000.0;
    println!(
        "pipeline: {} agents over {accounts} accounts, {} intents each, all agents at once, on anvil + Alto (EntryPoint v0.7)",
        cli.agents, cli.intents
    );
    let rate = included as f64 / wall.as_secs_f64();
    println!(
        "  baseline, one agent alone: {} intents in {:.2} s: {alone_rate:.1} intents/s, POST -> included p50 {:.1} ms",
        alone.len(),
        alone_wall.as_secs_f64(),
        ms(h_alone.value_at_quantile(0.5))
    );
    println!(
        "  included {included} of {} in {:.2} s: {rate:.1} intents/s to inclusion = {:.1} x one agent alone",
        outcomes.len(),
        wall.as_secs_f64(),
        rate / alone_rate
    );
    println!(
        "  POST -> included       p50 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms",
        ms(h_receipt.value_at_quantile(0.5)),
        ms(h_receipt.value_at_quantile(0.99)),
        ms(h_receipt.max())
    );
    println!(
        "  companion (Server-Timing total) p50 {:>8.1} ms  p99 {:>8.1} ms; share of the time to receipt {:.1}% (own work without chain RPC {:.1}%)",
        ms(h_server.value_at_quantile(0.5)),
        ms(h_server.value_at_quantile(0.99)),
        100.0 * h_server.mean() / h_receipt.mean().max(1.0),
        100.0 * h_own.mean() / h_receipt.mean().max(1.0)
    );
    if failures.is_empty() {
        println!("  failures: none");
    } else {
        println!("  failures by reason:");
        for (reason, n) in &failures {
            println!("    {n:>6}  {reason}");
        }
    }
    if cli.in_flight > 1 {
        // The same agents again, each with up to K intents in flight.
        let before = env.balance(recipient).await?;
        let (more, wall_k) = all_at_once(
            c,
            env,
            &agents,
            recipient,
            value,
            cli.intents,
            poll,
            cli.in_flight,
        )
        .await;
        let (h_k, h_server_k, failures_k) = tally(&more)?;
        let included_k = h_k.len();
        let moved = env.balance(recipient).await? - before;
        if moved != value * U256::from(included_k) {
            return Err(format!(
                "the recipient received {moved} wei, not the {included_k} included intents' worth"
            )
            .into());
        }
        let rate_k = included_k as f64 / wall_k.as_secs_f64();
        println!(
            "  the same {} agents with up to {} intents each in flight: included {included_k} of {} in {:.2} s: {rate_k:.1} intents/s = {:.2} x one at a time (above)",
            cli.agents,
            cli.in_flight,
            more.len(),
            wall_k.as_secs_f64(),
            rate_k / rate
        );
        println!(
            "  POST -> included       p50 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms; companion (Server-Timing total) p50 {:>8.1} ms  p99 {:>8.1} ms",
            ms(h_k.value_at_quantile(0.5)),
            ms(h_k.value_at_quantile(0.99)),
            ms(h_k.max()),
            ms(h_server_k.value_at_quantile(0.5)),
            ms(h_server_k.value_at_quantile(0.99)),
        );
        if failures_k.is_empty() {
            println!("  failures: none");
        } else {
            println!("  failures by reason:");
            for (reason, n) in &failures_k {
                println!("    {n:>6}  {reason}");
            }
        }
    }
    println!(
        "  load average before {} after {}",
        load0.trim(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    Ok(())
}

/// The time to receipt and the companion's `Server-Timing` total of the included outcomes (µs),
/// and the failures by reason.
type Tally = (Histogram<u64>, Histogram<u64>, BTreeMap<String, usize>);

/// Tallies `outcomes` (see [`Tally`]).
fn tally(outcomes: &[Outcome]) -> Result<Tally, Error> {
    let (mut h_receipt, mut h_server) = (hist(), hist());
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for o in outcomes {
        match &o.failure {
            None => {
                h_receipt.record(o.to_receipt_us)?;
                if let Some((total, _)) = o.server_us {
                    h_server.record(total)?;
                }
            }
            Some(reason) => *failures.entry(reason.clone()).or_default() += 1,
        }
    }
    Ok((h_receipt, h_server, failures))
}
