//! `export_key`: prints a wallet's private key after a passkey assertion. Development builds
//! only (feature `export-secrets`, in this crate and in the TA). See [`kms_admin::export`].
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kms_admin::cli::AdminConfig;
use kms_admin::ctx::Ctx;
use kms_admin::error::{AdminError, Exit};
use kms_admin::export;
use kms_proto::{HdPath, WalletId};
use zeroize::Zeroize;

/// Export a private key from the TA (development builds only), authorised by the wallet's
/// passkey.
///
/// Step 1: `export_key challenge --wallet W` prints the WebAuthn challenge (base64url) for
/// this wallet and path. Step 2: sign it with the wallet's passkey and run
/// `export_key export --wallet W --assertion FILE` with the assertion as JSON
/// (`authenticatorData`, `clientDataJSON`, `signature`, base64url). The TA checks the
/// assertion before it returns the key, which is printed on stdout and nowhere else. A wallet
/// the database records on another TA than this host's is refused (exit 9) before the TA is
/// asked.
#[derive(Debug, Parser)]
#[command(name = "export_key", version)]
struct Args {
    #[command(flatten)]
    config: AdminConfig,
    /// The wallet (UUID).
    #[arg(long, global = true, value_name = "WALLET_ID")]
    wallet: Option<String>,
    /// The derivation path.
    #[arg(long, global = true, default_value = "m/44'/60'/0'/0/0")]
    path: String,
    #[command(subcommand)]
    step: Step,
}

#[derive(Debug, Subcommand)]
enum Step {
    /// Print the challenge the passkey must sign.
    Challenge,
    /// Send the assertion and print the key.
    Export {
        /// The assertion JSON file (`-` for stdin).
        #[arg(long, value_name = "FILE")]
        assertion: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("export_key: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            kms_admin::print_error(false, &e);
            ExitCode::from(e.exit.code())
        }
    }
}

async fn run(args: Args) -> Result<(), AdminError> {
    let wallet: WalletId = args
        .wallet
        .as_deref()
        .ok_or_else(|| AdminError::new(Exit::Usage, "--wallet is required"))?
        .parse()
        .map_err(|_| AdminError::new(Exit::Usage, "--wallet is not a wallet UUID"))?;
    let path: HdPath = args
        .path
        .parse()
        .map_err(|_| AdminError::new(Exit::Usage, "--path is not m/44'/60'/0'/<change>/<index>"))?;
    let ctx = Ctx::new(args.config);
    let tee = ctx.tee()?;
    // Another TA's wallet (several TAs over one database) is refused naming both TAs, before the
    // TA is asked. Without a database there is no record to check: the TA refuses a wallet it
    // does not hold.
    if let Ok(db) = ctx.db().await {
        let checked =
            kms_admin::ctx::require_wallet_on_this_ta(&db, &tee, &wallet.to_uuid_string()).await;
        db.close().await;
        checked?;
    }
    match args.step {
        Step::Challenge => {
            let c = export::challenge(&tee, wallet, path).await?;
            println!("{}", export::challenge_b64(&c));
            eprintln!(
                "Sign this challenge with the wallet's passkey, then run `export_key export`."
            );
        }
        Step::Export { assertion } => {
            let text = if assertion.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(&assertion)
            }
            .map_err(|e| AdminError::new(Exit::Usage, format!("reading the assertion: {e}")))?;
            let json: export::AssertionJson = serde_json::from_str(&text).map_err(|e| {
                AdminError::new(Exit::Usage, format!("the assertion is not valid JSON: {e}"))
            })?;
            let mut key = export::export(&tee, wallet, path, json.decode()?).await?;
            eprintln!("WARNING: a private key follows; anyone who sees it controls the address.");
            println!("address: {}", alloy::primitives::Address::from(key.address));
            let mut hex_key = hex::encode(key.private_key);
            println!("private key: 0x{hex_key}");
            hex_key.zeroize();
            key.private_key.zeroize();
        }
    }
    Ok(())
}
