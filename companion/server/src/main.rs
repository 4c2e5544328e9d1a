//! `companion`: the key companion HTTP service.

use std::io::IsTerminal;
use std::process::ExitCode;

use kms_companion::config::{ApiKeyMode, LogFormat};
use kms_companion::{dev, Config};
use tracing_subscriber::EnvFilter;

/// mimalloc rather than glibc's malloc: under load the companion allocates and frees small
/// buffers on every request from several threads, and glibc's arenas spent about 15% of its CPU
/// there (a `perf` profile of `/kms/sign-agent`, BENCHMARKS.md section 2e).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc's default-setter (part of the bundled C library; the `mimalloc` crate does not wrap
// it): sets an option's value unless the environment (`MIMALLOC_*`) sets it.
#[cfg(target_os = "linux")]
extern "C" {
    fn mi_option_set_default(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// mimalloc's defaults for a long-running server:
///
/// - `arena_eager_commit = 0`: arenas are committed as used, and freed memory goes back to the
///   OS. With mimalloc's default on Linux (eager) the companion's peak RSS under `loadgen` was
///   58–76 MiB, against about 35 MiB with this (the target is 64 MB).
/// - `purge_delay = 1000` ms (default 10): memory goes back at most once a second, so a steady
///   load does not pay a `madvise` for every short-lived buffer. Together they cost about 4 % of
///   the companion's CPU per signature against mimalloc's defaults (BENCHMARKS.md 2e).
///
/// The first arena is reserved by the first allocation, which happens before `main`; so this
/// runs as an ELF constructor of priority 100, before mimalloc's own load-time initialisation
/// (priority 101), which then reads the environment: `MIMALLOC_ARENA_EAGER_COMMIT` and
/// `MIMALLOC_PURGE_DELAY` still override these. The numbers are `mi_option_t` values of the
/// bundled mimalloc v2 (`libmimalloc-sys` 0.1.49, pinned by Cargo.lock).
#[cfg(target_os = "linux")]
extern "C" fn tune_allocator() {
    const MI_OPTION_ARENA_EAGER_COMMIT: std::ffi::c_int = 4;
    const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
    // SAFETY: plain stores into mimalloc's static option table; nothing else runs yet.
    unsafe {
        mi_option_set_default(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        mi_option_set_default(MI_OPTION_PURGE_DELAY, 1000);
    }
}

#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array.00100"]
static TUNE_ALLOCATOR: extern "C" fn() = tune_allocator;

fn init_logs(cfg: &Config) -> Result<(), String> {
    let filter = EnvFilter::try_new(&cfg.log).map_err(|e| format!("invalid --log filter: {e}"))?;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log_format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

async fn run(mut cfg: Config) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if let Some(label) = cfg.create_api_key.clone() {
        if cfg.database_url.is_none() {
            std::fs::create_dir_all(&cfg.data_dir)?;
        }
        let db = kms_db::Db::open(&cfg.database_url()).await?;
        let k = db.create_api_key(&label, kms_db::now_secs()).await?;
        eprintln!(
            "API key {} created (label {label:?}); it is shown only once:",
            k.id
        );
        println!("{}", k.key);
        db.close().await;
        return Ok(());
    }
    let mut sim = None;
    let mut _tmp = None;
    if cfg.dev {
        let dir = tempfile::Builder::new().prefix("kms-dev-").tempdir()?;
        let bin = dev::find_ta_sim(cfg.ta_sim_bin.as_deref());
        let s = dev::start_sim(&bin, dir.path()).await?;
        cfg.data_dir = dir.path().to_owned();
        cfg.database_url = None;
        cfg.tee = Some(format!("sim:{}", s.socket.display()));
        cfg.rp_id = "localhost".into();
        cfg.origins.clear();
        sim = Some(s);
        _tmp = Some(dir);
    }
    let running = kms_companion::start(cfg.clone()).await?;
    if cfg.dev {
        eprintln!(
            "==> companion --dev listening on http://localhost:{}",
            running.addr.port()
        );
        eprintln!(
            "    data dir {} (deleted on exit), rp id localhost",
            cfg.data_dir.display()
        );
        if running.state.api_key_mode == ApiKeyMode::Open {
            eprintln!("!!! OPEN MODE: no API key is required. Never expose this instance. !!!");
        } else {
            let k = running
                .state
                .db
                .create_api_key("dev", kms_db::now_secs())
                .await?;
            eprintln!("    API key (send as x-api-key):");
            println!("KMS_API_KEY={}", k.key);
        }
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    if let Some(s) = sim {
        s.stop().await;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cfg = Config::from_args();
    if let Err(e) = init_logs(&cfg) {
        eprintln!("companion: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("companion: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("companion: error: {e}");
            ExitCode::FAILURE
        }
    }
}
