//! `kms-mcp`: the MCP server of one agent of the agent-key companion (see the crate docs and
//! the README's "AI agents over MCP" section).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kms_mcp::{serve_http, serve_stdio, CompanionClient, Credential, KmsMcp};

/// MCP server giving an AI agent typed tools over its companion session (stdio by default).
#[derive(Debug, Parser)]
#[command(name = "kms-mcp", version)]
struct Args {
    /// The companion's URL.
    #[arg(long, env = "KMS_URL", default_value = "http://127.0.0.1:3000")]
    companion_url: String,
    /// A file holding the agent's credential (JWT), readable only by its owner (chmod 600).
    /// Alternatively set KMS_AGENT_CREDENTIAL to the credential itself.
    #[arg(long, env = "KMS_AGENT_CREDENTIAL_FILE")]
    credential_file: Option<PathBuf>,
    /// The chain's JSON-RPC URL, read for ERC-20 `decimals()` by transfer_token (without it,
    /// transfer_token refuses and submit_intent remains).
    #[arg(long, env = "KMS_RPC_URL")]
    rpc_url: Option<String>,
    /// Serve MCP over streamable HTTP at http://ADDR/mcp (a loopback address, e.g.
    /// 127.0.0.1:8765) instead of stdio.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Log filter (logs go to stderr; never the credential).
    #[arg(long, env = "KMS_MCP_LOG", default_value = "warn")]
    log: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let from_env = std::env::var("KMS_AGENT_CREDENTIAL").ok();
    let credential = match Credential::load(from_env.as_deref(), args.credential_file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kms-mcp: {e}");
            return ExitCode::from(2);
        }
    };
    let server = KmsMcp::new(CompanionClient::new(
        &args.companion_url,
        credential,
        args.rpc_url,
    ));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kms-mcp: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match args.http {
            None => serve_stdio(server).await,
            Some(addr) => {
                let http = serve_http(server, addr).await?;
                // The one line a supervisor reads to find the endpoint.
                eprintln!("kms-mcp: listening on {}", http.url());
                tokio::select! {
                    r = tokio::signal::ctrl_c() => {
                        r?;
                        http.shutdown().await
                    }
                }
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kms-mcp: {e}");
            ExitCode::FAILURE
        }
    }
}
