//! `kms-mcp`: an MCP server whose tools are exactly one agent's session on the agent-key
//! companion.
//!
//! The agent's key stays in the TEE and its limits on chain; this server only speaks to the
//! companion's agent API over HTTP with the agent's Bearer credential (from `KMS_AGENT_CREDENTIAL`
//! or a file readable only by its owner) and gives a model typed tools ([`server::KmsMcp`]):
//! `get_session`, `submit_intent`, `transfer_native`, `transfer_token`, `get_intent`,
//! `wait_for_intent`, and the session as the resource `kms://session`. Refusals come back as
//! tool errors carrying the companion's code and details with a hint on what to change. The
//! credential never appears in logs, tool results or errors.
//!
//! Transports: stdio ([`serve_stdio`], for desktop hosts) and streamable HTTP on a loopback
//! address ([`serve_http`], at `/mcp`, for server-side agents).

pub mod companion;
pub mod credential;
pub mod server;

use std::net::SocketAddr;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;

pub use companion::{CompanionClient, Failure};
pub use credential::{Credential, CredentialError};
pub use server::KmsMcp;

/// A server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The HTTP address is not a loopback address.
    #[error("--http {0}: kms-mcp serves HTTP on a loopback address only (127.0.0.1 or [::1])")]
    NotLoopback(SocketAddr),
    /// I/O (binding, the stdio streams).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The MCP session failed.
    #[error("MCP: {0}")]
    Mcp(String),
}

/// Serves `server` over stdin/stdout until the client closes the connection.
pub async fn serve_stdio(server: KmsMcp) -> Result<(), ServeError> {
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| ServeError::Mcp(e.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|e| ServeError::Mcp(e.to_string()))?;
    Ok(())
}

/// A streamable HTTP server started by [`serve_http`].
#[derive(Debug)]
pub struct HttpServer {
    /// The bound address (the MCP endpoint is `http://{addr}/mcp`).
    pub addr: SocketAddr,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), std::io::Error>>,
}

impl HttpServer {
    /// The MCP endpoint URL.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.cancel.cancel();
        match self.task.await {
            Ok(r) => Ok(r?),
            Err(e) => Err(ServeError::Mcp(e.to_string())),
        }
    }

    /// Waits until the server stops (it stops on [`HttpServer::shutdown`] or an error).
    pub async fn wait(self) -> Result<(), ServeError> {
        match self.task.await {
            Ok(r) => Ok(r?),
            Err(e) => Err(ServeError::Mcp(e.to_string())),
        }
    }
}

/// Serves MCP over streamable HTTP at `http://{addr}/mcp` (`addr` must be a loopback address;
/// port 0 picks a free one), one [`KmsMcp`] per MCP session, all sharing `server`'s companion
/// client.
pub async fn serve_http(server: KmsMcp, addr: SocketAddr) -> Result<HttpServer, ServeError> {
    if !addr.ip().is_loopback() {
        return Err(ServeError::NotLoopback(addr));
    }
    let cancel = CancellationToken::new();
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig::default().with_cancellation_token(cancel.child_token()),
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let stop = cancel.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    });
    Ok(HttpServer { addr, cancel, task })
}
