//! `kms-admin`: see `kms-admin --help` and the crate documentation.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use kms_admin::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kms-admin: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(kms_admin::run(&cli));
    kms_admin::finish(cli.json, result)
}
