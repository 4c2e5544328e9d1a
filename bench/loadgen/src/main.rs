//! `loadgen`: drive `/kms/sign-agent` on a real companion + ta-sim pair.
//!
//! Starts `ta-sim` and `companion` (release builds) on a free port with the
//! rate limits set high, creates N agents through the real API (WebAuthn
//! ceremonies with a software passkey), then drives `/kms/sign-agent` at
//! concurrency C for T seconds over keep-alive connections. Prints
//! throughput, latency percentiles (hdrhistogram), errors by status, peak
//! RSS of both processes, and the ratio of HTTP throughput to raw
//! in-process k256 signing measured in the same run on the same cores.
//!
//! `cargo run --release -p kms-loadgen -- --agents 200 --concurrency 32 --duration 20`
//!
//! `--compare-audit queued,sync` measures the cost of the audit log's durability in one run:
//! the companion is restarted over the same database and TA with each `--audit-durability`
//! in turn (alternating, `--rounds` times), and each mode's figures are printed with their
//! ratio to the first mode's, the baseline, measured in the same run on the same agents.
//!
//! `--sweep 1,2,4,…` measures each connection count in turn (and `--plot` draws it);
//! `--cpus 1,2` pins ta-sim and the companion to that many cores in turn (taskset) and prints
//! the scaling factor.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use kms_loadgen::api::{self, Agent, Api};
use kms_loadgen::procs::{self, CompanionOpts, Profile};
use kms_loadgen::{http1, raw};

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "Sign-agent load driver for the key companion"
)]
struct Cli {
    /// Agents to create through the API.
    #[arg(long, default_value_t = 200)]
    agents: usize,
    /// Wallets the agents are spread over (each with its own passkey).
    #[arg(long, default_value_t = 8)]
    wallets: usize,
    /// Concurrent keep-alive connections driving /kms/sign-agent.
    #[arg(long, short = 'c', default_value_t = 32)]
    concurrency: usize,
    /// Measured seconds.
    #[arg(long, short = 'd', default_value_t = 20)]
    duration: u64,
    /// Unmeasured warm-up seconds before the measurement.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Seconds of each raw k256 baseline (one before, one after).
    #[arg(long, default_value_t = 3)]
    raw_secs: u64,
    /// Threads of the raw baseline [default: the number of cores].
    #[arg(long)]
    raw_threads: Option<usize>,
    /// Directory with `companion` and `ta-sim` (skips `cargo build`).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Use debug builds (for a quick functional check only).
    #[arg(long)]
    debug: bool,
    /// Extra flags for the companion (repeatable), e.g. `--companion-arg=--db-max-connections=4`.
    #[arg(long = "companion-arg", allow_hyphen_values = true)]
    companion_args: Vec<String>,
    /// Also write the figures as one JSON object to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Compare the companion's `--audit-durability` modes in this run (comma-separated, the
    /// first is the baseline), e.g. `queued,sync` or `queued,commit,sync`: the companion is
    /// restarted over the same data for each mode, modes alternating, each measured
    /// `--rounds` times for `--duration` seconds (after `--warmup`); prints each mode's
    /// figures and their ratio to the baseline's.
    #[arg(long, value_delimiter = ',')]
    compare_audit: Vec<String>,
    /// Compare ta-sim's `--locking` modes in this run (comma-separated, the first is the
    /// baseline), e.g. `global,sign-outside`: ta-sim and the companion are restarted over the
    /// same data for each mode, modes alternating, each measured `--rounds` times; prints each
    /// mode's figures and their ratio to the baseline's.
    #[arg(long, value_delimiter = ',', conflicts_with = "compare_audit")]
    compare_ta_locking: Vec<String>,
    /// Compare companion builds in this run (comma-separated directories, each holding a
    /// `companion` binary; the first is the baseline), e.g. a build of the commit before a
    /// change against one after it: the companion is restarted from each directory in turn over
    /// the same data and ta-sim (from `--bin-dir`), builds alternating, each measured `--rounds`
    /// times; prints each build's figures, its CPU time per signature, and their ratios to the
    /// baseline's.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["compare_audit", "compare_ta_locking"])]
    compare_companions: Vec<PathBuf>,
    /// Rounds of `--compare-audit`, `--compare-ta-locking` or `--compare-companions` (each mode
    /// measured once per round).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Measure each of these connection counts in turn (comma-separated, e.g.
    /// `1,2,4,8,16,32,64`), `--duration` seconds each after `--warmup`, on the same companion
    /// and agents, instead of the one `--concurrency` run; prints throughput, p50 and p99 per
    /// count with the throughput's ratio to the first count's and to raw signing.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["compare_audit", "compare_ta_locking", "compare_companions"])]
    sweep: Vec<u32>,
    /// With `--sweep`: draw throughput and latency against connections into this SVG file.
    #[arg(long, requires = "sweep")]
    plot: Option<PathBuf>,
    /// Measure with ta-sim and the companion pinned to each of these numbers of cores in turn
    /// (comma-separated, e.g. `1,2`: cores 0..n-1, with `taskset`), both restarted over the
    /// same data each time, `--rounds` times, at `--concurrency`; prints each count's figures
    /// and the scaling factor to the first. While the server has fewer cores than the machine,
    /// the driver is pinned to the others.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["compare_audit", "compare_ta_locking", "compare_companions", "sweep"])]
    cpus: Vec<usize>,
}

#[derive(Default)]
struct Tally {
    hist: Option<Histogram<u64>>,
    ok: u64,
    by_status: BTreeMap<String, u64>,
}

impl Tally {
    /// Adds `other`'s successes, errors and latencies to this one.
    fn absorb(&mut self, other: Tally) -> Result<(), String> {
        self.ok += other.ok;
        for (k, v) in other.by_status {
            *self.by_status.entry(k).or_default() += v;
        }
        if let (Some(h), Some(oh)) = (self.hist.as_mut(), other.hist.as_ref()) {
            h.add(oh).map_err(|e| format!("merging histograms: {e}"))?;
        }
        Ok(())
    }
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")
}

async fn drive(
    port: u16,
    agents: Arc<Vec<Agent>>,
    account: [u8; 20],
    worker: usize,
    workers: usize,
    until: Instant,
    record: bool,
) -> Tally {
    let mut t = Tally {
        hist: Some(new_hist()),
        ..Tally::default()
    };
    let mut conn = None;
    let mut n: u64 = 0;
    let mut i = worker;
    let mut body = Vec::with_capacity(256);
    let mut auth = String::with_capacity(1024);
    while Instant::now() < until {
        if conn.is_none() {
            match http1::Conn::connect(port).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    *t.by_status
                        .entry(format!("connect: {}", e.kind()))
                        .or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let a = &agents[i % agents.len()];
        i += workers;
        n += 1;
        let mut hash = [0u8; 32];
        hash[..8].copy_from_slice(&(worker as u64).to_be_bytes());
        hash[8..16].copy_from_slice(&n.to_be_bytes());
        body.clear();
        serde_json::to_writer(&mut body, &api::sign_body(&a.key_id, &hash, &account))
            .expect("json");
        auth.clear();
        auth.push_str("Bearer ");
        auth.push_str(&a.jwt);
        let started = Instant::now();
        let c = conn.as_mut().expect("connected");
        let res = c
            .post("/kms/sign-agent", &[("authorization", &auth)], &body)
            .await;
        let micros = started.elapsed().as_micros() as u64;
        match res {
            Ok(r) => {
                let good = r.status == 200 && api::has_session_signature(r.body);
                if record {
                    if let Some(h) = t.hist.as_mut() {
                        let _ = h.record(micros.max(1));
                    }
                    if good {
                        t.ok += 1;
                    } else {
                        *t.by_status.entry(r.status.to_string()).or_default() += 1;
                    }
                }
            }
            Err(e) => {
                if record {
                    *t.by_status.entry(format!("io: {}", e.kind())).or_default() += 1;
                }
                conn = None;
            }
        }
    }
    t
}

async fn phase(
    port: u16,
    agents: &Arc<Vec<Agent>>,
    c: usize,
    secs: u64,
    record: bool,
) -> (Tally, Duration) {
    let account = [0xA1; 20];
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..c)
        .map(|w| tokio::spawn(drive(port, agents.clone(), account, w, c, until, record)))
        .collect();
    let mut total = Tally {
        hist: Some(new_hist()),
        ..Tally::default()
    };
    for t in tasks {
        let r = t.await.expect("driver task");
        total.absorb(r).expect("merge histograms");
    }
    (total, started.elapsed())
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// One mode of `--compare-audit`, accumulated over its rounds.
struct ModeFigures {
    mode: String,
    tally: Tally,
    secs: f64,
    /// Audit batches committed and events committed (the companion's counters, summed over
    /// its runs): events per commit shows the group commit.
    commits: u64,
    events: u64,
    /// CPU time of the companion during the measured phases (seconds).
    cpu_secs: f64,
}

/// `kms_audit_commits_total` and `kms_audit_committed_events_total` of the companion on `port`.
async fn audit_counters(port: u16) -> (u64, u64) {
    let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else {
        return (0, 0);
    };
    let text = r.text().await.unwrap_or_default();
    let get = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (
        get("kms_audit_commits_total"),
        get("kms_audit_committed_events_total"),
    )
}

/// What a comparison run varies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Compared {
    /// The companion's `--audit-durability`.
    Audit,
    /// ta-sim's `--locking` (`TA_SIM_LOCKING`).
    TaLocking,
    /// The companion binary (`--compare-companions`).
    Companions,
}

/// `--compare-audit` / `--compare-ta-locking` / `--compare-companions`: restart the companion
/// (and for the TA's locking ta-sim first) with each mode in turn and measure it.
#[allow(clippy::too_many_arguments)]
fn compare_audit(
    cli: &Cli,
    rt: &tokio::runtime::Runtime,
    bins: &std::path::Path,
    dir: &std::path::Path,
    base_args: &[String],
    agents: &Arc<Vec<Agent>>,
    companion: &mut procs::Proc,
    sim: &mut procs::Proc,
    compared: Compared,
) -> Result<Vec<ModeFigures>, String> {
    let dirs: Vec<String>;
    let modes = match compared {
        Compared::Audit => &cli.compare_audit,
        Compared::TaLocking => &cli.compare_ta_locking,
        Compared::Companions => {
            dirs = cli
                .compare_companions
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            &dirs
        }
    };
    let mut figures: Vec<ModeFigures> = modes
        .iter()
        .map(|m| ModeFigures {
            mode: m.clone(),
            tally: Tally {
                hist: Some(new_hist()),
                ..Tally::default()
            },
            secs: 0.0,
            commits: 0,
            events: 0,
            cpu_secs: 0.0,
        })
        .collect();
    for round in 0..cli.rounds.max(1) {
        for f in figures.iter_mut() {
            companion.kill9();
            let mut args = base_args.to_vec();
            let mut companion_bin = bins.join("companion");
            match compared {
                Compared::Companions => {
                    companion_bin = std::path::Path::new(&f.mode).join("companion");
                }
                Compared::Audit => {
                    args.extend(["--audit-durability".to_string(), f.mode.clone()]);
                }
                Compared::TaLocking => {
                    sim.kill9();
                    *sim = procs::start_sim(
                        &bins.join("ta-sim"),
                        dir,
                        &[("TA_SIM_LOCKING", f.mode.as_str())],
                    )?;
                }
            }
            let port = procs::free_port();
            *companion =
                procs::start_companion(&companion_bin, dir, port, &CompanionOpts { args })?;
            if cli.warmup > 0 {
                rt.block_on(phase(port, agents, cli.concurrency, cli.warmup, false));
            }
            let before = rt.block_on(audit_counters(port));
            let cpu_before = procs::cpu_ticks(companion.pid);
            let (t, elapsed) =
                rt.block_on(phase(port, agents, cli.concurrency, cli.duration, true));
            let cpu_after = procs::cpu_ticks(companion.pid);
            let after = rt.block_on(audit_counters(port));
            if let (Some(b), Some(a)) = (cpu_before, cpu_after) {
                f.cpu_secs += a.saturating_sub(b) as f64 / procs::TICKS_PER_SEC;
            }
            eprintln!(
                "loadgen: round {} mode {}: {} ok in {:.1} s",
                round + 1,
                f.mode,
                t.ok,
                elapsed.as_secs_f64()
            );
            f.tally.absorb(t)?;
            f.secs += elapsed.as_secs_f64();
            f.commits += after.0.saturating_sub(before.0);
            f.events += after.1.saturating_sub(before.1);
        }
    }
    Ok(figures)
}

/// Prints (and with `--json` writes) the `--compare-audit` figures, each mode against the
/// first.
fn print_comparison(
    cli: &Cli,
    agents: usize,
    figures: &[ModeFigures],
    compared: Compared,
) -> Result<(), String> {
    let stats = |f: &ModeFigures| {
        let h = f.tally.hist.as_ref().expect("hist");
        (
            f.tally.ok as f64 / f.secs.max(1e-9),
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.9)),
            ms(h.value_at_quantile(0.99)),
        )
    };
    // The companion's CPU per answered signature (µs).
    let cpu_us = |f: &ModeFigures| 1e6 * f.cpu_secs / f.tally.ok.max(1) as f64;
    let base = stats(&figures[0]);
    let base_cpu = cpu_us(&figures[0]);
    println!();
    println!(
        "{}: C={} agents={} rounds={} x {} s per mode (modes alternating, same companion data and TA state), baseline {}",
        match compared {
                Compared::Audit => "audit durability",
            Compared::TaLocking => "ta-sim locking",
            Compared::Companions => "companion builds",
        },
        cli.concurrency,
        agents,
        cli.rounds.max(1),
        cli.duration,
        figures[0].mode
    );
    let mut out = Vec::new();
    for f in figures {
        let (tput, p50, p90, p99) = stats(f);
        let errors: u64 = f.tally.by_status.values().sum();
        let per_commit = f.events as f64 / f.commits.max(1) as f64;
        println!(
            "  {:<7} throughput {tput:>6.0}/s  p50 {p50:.2} ms  p90 {p90:.2} ms  p99 {p99:.2} ms  errors {errors}  audit {} events in {} commits ({per_commit:.1} per commit)",
            f.mode, f.events, f.commits
        );
        let cpu = cpu_us(f);
        println!("          companion CPU {cpu:.1} µs per signature");
        println!(
            "          ratio to {}: throughput {:.3}  p50 {:.2}x  p99 {:.2}x  companion CPU per signature {:.3}",
            figures[0].mode,
            tput / base.0,
            p50 / base.1,
            p99 / base.3,
            cpu / base_cpu
        );
        out.push(serde_json::json!({
            "companion_cpu_us_per_signature": cpu, "companion_cpu_ratio": cpu / base_cpu,
            "mode": f.mode, "seconds": f.secs, "ok": f.tally.ok, "errors": f.tally.by_status,
            "throughput": tput, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99,
            "audit_commits": f.commits, "audit_events": f.events,
            "events_per_commit": per_commit,
            "throughput_ratio": tput / base.0, "p50_ratio": p50 / base.1, "p99_ratio": p99 / base.3,
        }));
    }
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("  load average     {}", loadavg.trim());
    if let Some(path) = &cli.json {
        let key = match compared {
            Compared::Audit => "compare_audit",
            Compared::TaLocking => "compare_ta_locking",
            Compared::Companions => "compare_companions",
        };
        let v = serde_json::json!({
            key: out, "concurrency": cli.concurrency, "agents": agents,
            "rounds": cli.rounds.max(1), "duration": cli.duration, "loadavg": loadavg.trim(),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&v).expect("json"))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `--cpus`: ta-sim and the companion restarted pinned to each number of cores in turn
/// (alternating over `--rounds`), measured at `--concurrency`; prints the scaling factor.
#[allow(clippy::too_many_arguments)]
fn cpu_scaling(
    cli: &Cli,
    rt: &tokio::runtime::Runtime,
    bins: &std::path::Path,
    dir: &std::path::Path,
    base_args: &[String],
    agents: &Arc<Vec<Agent>>,
    companion: &mut procs::Proc,
    sim: &mut procs::Proc,
) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(bad) = cli.cpus.iter().find(|&&n| n == 0 || n > cores) {
        return Err(format!("--cpus {bad}: this machine has {cores} cores"));
    }
    let mut figures: Vec<(usize, Tally, f64, f64)> = cli
        .cpus
        .iter()
        .map(|&n| {
            let tally = Tally {
                hist: Some(new_hist()),
                ..Tally::default()
            };
            (n, tally, 0.0, 0.0)
        })
        .collect();
    let me = std::process::id();
    for _ in 0..cli.rounds.max(1) {
        for (n, tally, secs, rss) in figures.iter_mut() {
            companion.kill9();
            sim.kill9();
            let server = if *n == 1 {
                "0".to_owned()
            } else {
                format!("0-{}", *n - 1)
            };
            *sim = procs::start_sim(&bins.join("ta-sim"), dir, &[])?;
            procs::pin(sim.pid, &server)?;
            let port = procs::free_port();
            *companion = procs::start_companion(
                &bins.join("companion"),
                dir,
                port,
                &CompanionOpts {
                    args: base_args.to_vec(),
                },
            )?;
            procs::pin(companion.pid, &server)?;
            // The driver on the cores the server does not have, when there are any.
            let driver = if *n < cores {
                format!("{}-{}", *n, cores - 1)
            } else {
                format!("0-{}", cores - 1)
            };
            procs::pin(me, &driver)?;
            if cli.warmup > 0 {
                rt.block_on(phase(port, agents, cli.concurrency, cli.warmup, false));
            }
            let (t, elapsed) =
                rt.block_on(phase(port, agents, cli.concurrency, cli.duration, true));
            eprintln!(
                "loadgen: server on cores {server}: {} ok in {:.1} s",
                t.ok,
                elapsed.as_secs_f64()
            );
            tally.absorb(t)?;
            *secs += elapsed.as_secs_f64();
            *rss = rss.max(procs::peak_rss_kib(companion.pid).unwrap_or(0) as f64 / 1024.0);
        }
    }
    procs::pin(me, &format!("0-{}", cores - 1))?;
    println!();
    println!(
        "core scaling: C={} agents={} rounds={} x {} s per core count (alternating, same data)",
        cli.concurrency,
        agents.len(),
        cli.rounds.max(1),
        cli.duration
    );
    let base = figures[0].1.ok as f64 / figures[0].2.max(1e-9);
    let mut rows = Vec::new();
    for (n, tally, secs, rss) in &figures {
        let h = tally.hist.as_ref().expect("hist");
        let tput = tally.ok as f64 / secs.max(1e-9);
        let errors: u64 = tally.by_status.values().sum();
        println!(
            "  {n} core(s)  throughput {tput:>6.0}/s  p50 {:.2} ms  p99 {:.2} ms  errors {errors}  companion peak RSS {rss:.1} MiB  scaling to {} core(s) {:.2}",
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            figures[0].0,
            tput / base
        );
        rows.push(serde_json::json!({
            "cores": n, "throughput": tput, "p50_ms": ms(h.value_at_quantile(0.5)),
            "p99_ms": ms(h.value_at_quantile(0.99)), "errors": errors,
            "companion_peak_rss_mib": rss, "scaling": tput / base,
        }));
    }
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("  load average     {}", loadavg.trim());
    if let Some(path) = &cli.json {
        let v = serde_json::json!({
            "cpus": rows, "concurrency": cli.concurrency, "agents": agents.len(),
            "rounds": cli.rounds.max(1), "duration": cli.duration, "loadavg": loadavg.trim(),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&v).expect("json"))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `--sweep`: each connection count in turn on the same companion and agents; the raw baseline
/// is measured again at the end, and the figures are printed (and drawn with `--plot`).
fn sweep(
    cli: &Cli,
    rt: &tokio::runtime::Runtime,
    port: u16,
    agents: &Arc<Vec<Agent>>,
    raw_before: f64,
    raw_threads: usize,
) -> Result<(), String> {
    let mut points = Vec::with_capacity(cli.sweep.len());
    let mut errors = Vec::with_capacity(cli.sweep.len());
    for &c in &cli.sweep {
        let c = c.max(1);
        if cli.warmup > 0 {
            rt.block_on(phase(port, agents, c as usize, cli.warmup, false));
        }
        let (t, elapsed) = rt.block_on(phase(port, agents, c as usize, cli.duration, true));
        let h = t.hist.as_ref().expect("hist");
        let point = kms_loadgen::plot::SweepPoint {
            concurrency: c,
            throughput: t.ok as f64 / elapsed.as_secs_f64(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
        };
        eprintln!(
            "loadgen: C={c}: {:.0}/s p99 {:.2} ms",
            point.throughput, point.p99_ms
        );
        errors.push(t.by_status.values().sum::<u64>());
        points.push(point);
    }
    let raw_after = raw::sign_throughput(raw_threads, Duration::from_secs(cli.raw_secs));
    let raw_mean = (raw_before + raw_after) / 2.0;
    let base = points[0].throughput;
    println!();
    println!(
        "sign-agent sweep: agents={} {} s per count after {} s warm-up; raw k256 ({raw_threads} threads) before {raw_before:.0}/s after {raw_after:.0}/s",
        agents.len(),
        cli.duration,
        cli.warmup
    );
    let mut rows = Vec::new();
    for (p, e) in points.iter().zip(&errors) {
        println!(
            "  C={:<4} throughput {:>7.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {e}  ratio to C={} {:.2}  HTTP / raw {:.3}",
            p.concurrency,
            p.throughput,
            p.p50_ms,
            p.p99_ms,
            points[0].concurrency,
            p.throughput / base,
            p.throughput / raw_mean
        );
        rows.push(serde_json::json!({
            "concurrency": p.concurrency, "throughput": p.throughput, "p50_ms": p.p50_ms,
            "p99_ms": p.p99_ms, "errors": e, "ratio_to_first": p.throughput / base,
            "ratio_to_raw": p.throughput / raw_mean,
        }));
    }
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("  load average     {}", loadavg.trim());
    if let Some(path) = &cli.plot {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        kms_loadgen::plot::concurrency(
            path,
            &format!(
                "/kms/sign-agent over HTTP, {} agents, {cores} cores (one run)",
                agents.len()
            ),
            &points,
            raw_mean,
        )
        .map_err(|e| format!("--plot {}: {e}", path.display()))?;
        println!("  picture          {}", path.display());
    }
    if let Some(path) = &cli.json {
        let v = serde_json::json!({
            "sweep": rows, "agents": agents.len(), "duration": cli.duration,
            "raw_before": raw_before, "raw_after": raw_after, "loadavg": loadavg.trim(),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&v).expect("json"))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn main() -> Result<(), String> {
    let cli = Cli::parse();
    let profile = if cli.debug {
        Profile::Debug
    } else {
        Profile::Release
    };
    let bins = match &cli.bin_dir {
        Some(d) => d.clone(),
        None => {
            eprintln!("loadgen: building companion and ta-sim ({profile:?})");
            procs::build_bins(profile)?
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let raw_threads = cli.raw_threads.unwrap_or(cores);
    let dir = tempfile::Builder::new()
        .prefix("kms-loadgen-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let mut sim = procs::start_sim(&bins.join("ta-sim"), dir.path(), &[])?;
    let api_key = procs::create_api_key(&bins.join("companion"), dir.path())?;
    let port = procs::free_port();
    let mut args = vec![
        "--rate-limit".to_string(),
        "1000000000".into(),
        "--agent-rate-limit".into(),
        "1000000000".into(),
    ];
    args.extend(cli.companion_args.iter().cloned());
    let base_args = args.clone();
    let mut companion = procs::start_companion(
        &bins.join("companion"),
        dir.path(),
        port,
        &CompanionOpts { args },
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;

    let api = Api::new(port, &api_key);
    let setup = Instant::now();
    let agents = rt.block_on(async {
        let wallets = cli.wallets.max(1).min(cli.agents.max(1));
        let mut tasks = Vec::new();
        for w in 0..wallets {
            let api = api.clone();
            let n = cli.agents / wallets + usize::from(w < cli.agents % wallets);
            tasks.push(tokio::spawn(async move {
                let mut owner = api.register().await?;
                let mut out = Vec::new();
                for k in 0..n {
                    let (s, v) = api
                        .create_agent(&mut owner, &format!("load-{w}-{k}"))
                        .await?;
                    if s != 200 {
                        return Err(format!("create-agent-key: {s} {v}"));
                    }
                    out.push(Agent::from_answer(&v).ok_or("bad create answer")?);
                }
                Ok::<_, String>(out)
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.map_err(|e| e.to_string())??);
        }
        Ok::<_, String>(all)
    })?;
    let setup_secs = setup.elapsed().as_secs_f64();
    println!(
        "setup: {} wallets, {} agents created through the API (real ceremonies) in {:.1} s ({:.1} agents/s)",
        cli.wallets.min(cli.agents.max(1)),
        agents.len(),
        setup_secs,
        agents.len() as f64 / setup_secs
    );
    let agents = Arc::new(agents);

    let raw_before = raw::sign_throughput(raw_threads, Duration::from_secs(cli.raw_secs));
    println!(
        "raw k256 sign_prehash_recoverable, {raw_threads} threads (before): {raw_before:.0}/s"
    );

    if !cli.compare_audit.is_empty()
        || !cli.compare_ta_locking.is_empty()
        || !cli.compare_companions.is_empty()
    {
        let compared = if !cli.compare_audit.is_empty() {
            Compared::Audit
        } else if !cli.compare_ta_locking.is_empty() {
            Compared::TaLocking
        } else {
            Compared::Companions
        };
        let figures = compare_audit(
            &cli,
            &rt,
            &bins,
            dir.path(),
            &base_args,
            &agents,
            &mut companion,
            &mut sim,
            compared,
        )?;
        print_comparison(&cli, agents.len(), &figures, compared)?;
        drop(rt);
        companion.kill9();
        sim.kill9();
        return Ok(());
    }
    if !cli.cpus.is_empty() {
        let result = cpu_scaling(
            &cli,
            &rt,
            &bins,
            dir.path(),
            &base_args,
            &agents,
            &mut companion,
            &mut sim,
        );
        drop(rt);
        companion.kill9();
        sim.kill9();
        return result;
    }
    if !cli.sweep.is_empty() {
        let result = sweep(&cli, &rt, port, &agents, raw_before, raw_threads);
        drop(rt);
        companion.kill9();
        sim.kill9();
        return result;
    }
    if cli.warmup > 0 {
        rt.block_on(phase(port, &agents, cli.concurrency, cli.warmup, false));
    }
    let cpu0 = (
        procs::cpu_ticks(companion.pid),
        procs::cpu_ticks(sim.pid),
        procs::cpu_ticks(std::process::id()),
    );
    let (tally, elapsed) = rt.block_on(phase(port, &agents, cli.concurrency, cli.duration, true));
    let cpu1 = (
        procs::cpu_ticks(companion.pid),
        procs::cpu_ticks(sim.pid),
        procs::cpu_ticks(std::process::id()),
    );
    let rss_companion_now = procs::rss_kib(companion.pid);
    let rss_companion = procs::peak_rss_kib(companion.pid);
    let rss_sim = procs::peak_rss_kib(sim.pid);

    let raw_after = raw::sign_throughput(raw_threads, Duration::from_secs(cli.raw_secs));
    println!("raw k256 sign_prehash_recoverable, {raw_threads} threads (after):  {raw_after:.0}/s");
    let raw_mean = (raw_before + raw_after) / 2.0;

    let h = tally.hist.as_ref().expect("hist");
    let secs = elapsed.as_secs_f64();
    let tput = tally.ok as f64 / secs;
    let errors: u64 = tally.by_status.values().sum();
    let pct = |q: f64| ms(h.value_at_quantile(q));
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpu = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => (b - a) as f64 / procs::TICKS_PER_SEC / secs,
        _ => f64::NAN,
    };
    let (cpu_c, cpu_s, cpu_d) = (
        cpu(cpu0.0, cpu1.0),
        cpu(cpu0.1, cpu1.1),
        cpu(cpu0.2, cpu1.2),
    );
    println!();
    println!(
        "sign-agent: C={} T={:.1}s agents={} ok={} errors={}",
        cli.concurrency,
        secs,
        agents.len(),
        tally.ok,
        errors
    );
    println!("  throughput       {tput:.0} sign-agent/s   (target >= 5000)");
    println!(
        "  latency          p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms   (target p99 <= 5 ms)",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        ms(h.max())
    );
    if tally.by_status.is_empty() {
        println!("  errors by status none");
    } else {
        for (k, v) in &tally.by_status {
            println!("  errors by status {k}: {v}");
        }
    }
    let kib =
        |v: Option<u64>| v.map_or("?".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    println!(
        "  peak RSS         companion {} (now {})   ta-sim {}   (target companion <= 64 MB)",
        kib(rss_companion),
        kib(rss_companion_now),
        kib(rss_sim)
    );
    println!(
        "  CPU (cores used) companion {cpu_c:.2}  ta-sim {cpu_s:.2}  loadgen {cpu_d:.2}  of {cores}"
    );
    println!(
        "  ratio            HTTP sign-agent / raw in-process k256 ({raw_threads} threads, mean of before {raw_before:.0}/s and after {raw_after:.0}/s) = {:.3}",
        tput / raw_mean
    );
    println!("  load average     {}", loadavg.trim());
    if let Some(path) = &cli.json {
        let v = serde_json::json!({
            "agents": agents.len(), "concurrency": cli.concurrency, "seconds": secs,
            "ok": tally.ok, "errors": tally.by_status, "throughput": tput,
            "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99), "max_ms": ms(h.max()),
            "rss_companion_kib": rss_companion, "rss_sim_kib": rss_sim,
            "raw_before": raw_before, "raw_after": raw_after, "ratio": tput / raw_mean,
            "cpu_companion": cpu_c, "cpu_sim": cpu_s, "cpu_loadgen": cpu_d,
            "setup_secs": setup_secs, "loadavg": loadavg.trim(),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&v).expect("json"))
            .map_err(|e| e.to_string())?;
    }
    drop(rt);
    companion.kill9();
    sim.kill9();
    Ok(())
}
