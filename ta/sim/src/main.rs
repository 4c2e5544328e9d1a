//! `ta-sim`: see the crate documentation of `kms-ta-sim` (and `--help`).
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kms_ta_sim::{start, Settings};
use tracing_subscriber::EnvFilter;

/// The key companion's Trusted Application, simulated as a host process.
#[derive(Debug, Parser)]
#[command(
    name = "ta-sim",
    version,
    about = "The key companion's Trusted Application, simulated as a host process.",
    long_about = "The key companion's Trusted Application, simulated as a host process for \
machines without TrustZone.\n\n\
It hosts one TA core and serves client sessions (the companion, kms-admin) over a Unix \
socket: one connection is one session, and every session shares the same TA state, as with a \
single-instance multi-session OP-TEE TA.\n\n\
The TA state is sealed in <DATA_DIR>/sealed.bin (XChaCha20-Poly1305) under the key \
<DATA_DIR>/sealed.key (32 random bytes, mode 0600, created on the first start). A tampered or \
truncated store, a wrong key or a key file with a broader mode than 0600 makes the start fail; \
the simulator never starts empty over state it cannot read.\n\n\
Rollback detection: <DATA_DIR>/counter.bin (sealed with the same key) holds the newest state \
version written, a stand-in for OP-TEE's RPMB counter. If sealed.bin is older than it (an older \
copy put back), the TA refuses every command that touches state until an operator runs \
`kms-admin accept-restore --yes`. The file catches a sealed.bin restored on its own, not a host \
that rolls back both files. If a directory fsync fails after a rename, ta-sim exits with code 74 \
so that memory never disagrees with the disk.\n\n\
Prints `ta-sim ready on <SOCKET>` to stderr once it listens. SIGTERM/SIGINT: stops accepting, \
finishes the calls in flight, removes the socket and exits 0.",
    after_help = "Wire frames (big-endian): request [u32 length][u32 command id][request], \
response [u32 length][response]; length counts the bytes after it."
)]
struct Cli {
    /// Directory holding the sealed state and its key (created with mode
    /// 0700 if missing).
    #[arg(long, value_name = "DIR", env = "TA_SIM_DATA_DIR")]
    data_dir: PathBuf,

    /// Unix socket to listen on (mode 0600) [default: <DATA_DIR>/ta.sock].
    #[arg(long, value_name = "PATH", env = "TA_SIM_SOCKET")]
    socket: Option<PathBuf>,

    /// Serve SeedWalletForTest (create a wallet from a given mnemonic).
    /// For tests only; never use it with real funds.
    #[arg(long)]
    enable_test_seed: bool,

    /// How sessions share the TA core: `sign-outside` (agent signatures'
    /// ECDSA runs in parallel outside the core's lock; state changes wait for
    /// the signatures begun before them) or `global` (every call wholly under
    /// one lock, the former behaviour; for comparisons).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "sign-outside",
        env = "TA_SIM_LOCKING"
    )]
    locking: kms_ta_sim::Locking,

    /// Log level or filter: error, warn, info, debug, trace, or a tracing
    /// filter directive such as `kms_ta_sim=debug`. Logs never contain
    /// request or response bytes.
    #[arg(
        long,
        value_name = "FILTER",
        default_value = "info",
        env = "TA_SIM_LOG"
    )]
    log: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match EnvFilter::try_new(&cli.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ta-sim: error: invalid --log filter {:?}: {e}", cli.log);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("ta-sim: error: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    // The process holds seeds in memory: no core dumps, no ptrace by
    // other processes of the same user.
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        tracing::warn!(error = %e, "cannot disable core dumps");
    }
    let settings = Settings {
        data_dir: cli.data_dir,
        socket: cli.socket,
        enable_test_seed: cli.enable_test_seed,
        locking: cli.locking,
    };
    let started = start(&settings)?;
    started.server.stop_on_signals()?;
    let socket = started.server.path().to_owned();
    eprintln!("{} {}", kms_ta_sim::READY_LINE, socket.display());
    started.server.run()?;
    drop(started.data_dir);
    tracing::info!("stopped");
    Ok(())
}
