//! `kms-admin`: the key companion's operator CLI (see `kms-admin/README.md`).
//!
//! It works beside a running companion: the same configuration (flags or the same `KMS_*`
//! environment variables), the same SQLite database (WAL mode, so both write safely), and its
//! own session to the TA. See `kms-admin --help` and the crate README for every command.
//!
//! - [`cli`]: the command line.
//! - [`ctx`]: opening the database, the TA session and the node, lazily, with failures mapped
//!   to exit codes ([`error`]).
//! - one module per command group: [`jwt`], [`agents`], [`revoke`], [`api_keys`],
//!   [`operator`], [`restore`], [`audit_log`]; each returns a [`Report`] (human text, JSON, and an optional failure).
//! - [`export`] (feature `export-secrets`): the passkey-gated private key export of the
//!   development-only `export_key` binary.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod agents;
pub mod api_keys;
pub mod audit_log;
pub mod cli;
pub mod ctx;
pub mod error;
#[cfg(feature = "export-secrets")]
pub mod export;
pub mod fmt;
pub mod jwt;
pub mod operator;
pub mod restore;
pub mod revoke;

use std::io::Write;
use std::process::ExitCode;

use cli::{ApiKeyCommand, AuditCommand, Cli, Command};
use ctx::Ctx;
use error::AdminError;
use serde_json::{json, Value};

/// What a command produced: text for people, JSON for scripts, and — for commands that
/// report partial results (`revoke-agent-key`, `operator-address`) — a failure that sets the
/// exit code after the output is printed.
#[derive(Debug)]
pub struct Report {
    /// The human-readable output.
    pub human: String,
    /// The `--json` output.
    pub json: Value,
    /// A failure to report after the output (non-zero exit).
    pub failure: Option<AdminError>,
}

impl Report {
    /// A successful report.
    pub fn ok(human: String, json: Value) -> Self {
        Self {
            human,
            json,
            failure: None,
        }
    }
}

/// The audit actor of every event kms-admin records.
pub const AUDIT_ACTOR: &str = "kms-admin";

/// Appends an event to the companion's hash-chained audit log. A failure to record is
/// reported on stderr but does not undo or fail the operation.
pub async fn audit(
    db: &kms_db::Db,
    action: &str,
    key_id: Option<&str>,
    outcome: &str,
    detail: Option<&str>,
) {
    let e = kms_db::AuditEvent {
        ts: kms_db::now_secs(),
        actor: AUDIT_ACTOR.into(),
        action: action.into(),
        key_id: key_id.map(str::to_owned),
        outcome: outcome.into(),
        user_op_hash: None,
        detail: detail.map(str::to_owned),
    };
    if let Err(err) = db.append_audit(&[e]).await {
        eprintln!("kms-admin: warning: could not record {action} in the audit log: {err}");
    }
}

/// [`audit`] when the database exists; nothing otherwise (for TA-only commands).
pub async fn audit_if_db(ctx: &Ctx, action: &str, key_id: &str) {
    if let Ok(db) = ctx.db().await {
        audit(&db, action, Some(key_id), "ok", None).await;
    }
}

/// Runs the command of `cli`.
pub async fn run(cli: &Cli) -> Result<Report, AdminError> {
    let ctx = Ctx::new(cli.config.clone());
    match &cli.command {
        Command::RotateJwtSecret { force } => jwt::rotate(&ctx, *force).await,
        Command::JwtSecretStatus => jwt::status(&ctx).await,
        Command::ListAgentKeys {
            wallet,
            status,
            no_chain,
        } => agents::list(&ctx, wallet.as_deref(), *status, *no_chain).await,
        Command::RevokeAgentKey { key_id, db_only } => revoke::revoke(&ctx, key_id, *db_only).await,
        Command::ApiKey(ApiKeyCommand::Create { label }) => api_keys::create(&ctx, label).await,
        Command::ApiKey(ApiKeyCommand::List) => api_keys::list(&ctx).await,
        Command::ApiKey(ApiKeyCommand::Revoke { id }) => api_keys::revoke(&ctx, id).await,
        Command::OperatorAddress { create } => operator::address(&ctx, *create).await,
        Command::AcceptRestore { yes } => restore::accept(&ctx, *yes).await,
        Command::Audit(AuditCommand::Verify) => audit_log::verify(&ctx).await,
        Command::Audit(AuditCommand::Checkpoint) => audit_log::checkpoint(&ctx).await,
    }
}

/// Prints `report` (stdout) and any failure (stderr), and returns the exit code.
pub fn finish(json_mode: bool, result: Result<Report, AdminError>) -> ExitCode {
    let (report, failure) = match result {
        Ok(r) => {
            let f = r.failure.clone();
            (Some(r), f)
        }
        Err(e) => (None, Some(e)),
    };
    if let Some(r) = report {
        let mut out = std::io::stdout().lock();
        let text = if json_mode {
            let mut s = serde_json::to_string_pretty(&r.json).unwrap_or_default();
            s.push('\n');
            s
        } else {
            r.human
        };
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
    match failure {
        None => ExitCode::SUCCESS,
        Some(e) => {
            print_error(json_mode, &e);
            ExitCode::from(e.exit.code())
        }
    }
}

/// Prints an error on stderr: text with a hint line, or one JSON object in `--json` mode.
pub fn print_error(json_mode: bool, e: &AdminError) {
    let mut err = std::io::stderr().lock();
    if json_mode {
        let v = json!({
            "error": e.message,
            "code": e.exit.name(),
            "exitCode": e.exit.code(),
            "hint": e.hint,
        });
        let _ = writeln!(err, "{v}");
    } else {
        let _ = writeln!(err, "kms-admin: error: {}", e.message);
        if let Some(h) = &e.hint {
            let _ = writeln!(err, "  hint: {h}");
        }
    }
}
