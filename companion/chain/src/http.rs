//! Bounded HTTP to chain services: every request to the node and to the bundler has a timeout,
//! every response body a size cap, and an error quotes at most a short prefix of what came back.
//!
//! A stalled or hostile node or bundler can then neither hold a caller (and the agent's nonce
//! lock it holds) for ever, nor make the companion buffer, log, store or return megabytes: a
//! body over the cap is abandoned after [`HttpLimits::max_body_bytes`] bytes.
//!
//! [`node_provider`] builds the alloy provider the companion uses for the node over
//! [`CappedHttp`], a JSON-RPC transport with these bounds (alloy's own HTTP transport reads the
//! whole body and has no timeout).

use std::task;
use std::time::Duration;

use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::client::RpcClient;
use alloy::rpc::json_rpc::{RequestPacket, ResponsePacket};
use alloy::transports::{TransportError, TransportErrorKind, TransportFut};

/// Bounds on one chain service's HTTP requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// The whole request, connection to last body byte.
    pub timeout: Duration,
    /// Establishing the connection.
    pub connect_timeout: Duration,
    /// Largest response body read; a longer one is an error.
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    /// 15 s per request (an ERC-4337 gas estimate simulates the operation several times), 5 s to
    /// connect, 4 MiB per body (a receipt with many logs is a few hundred KiB).
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            max_body_bytes: 4 << 20,
        }
    }
}

impl HttpLimits {
    /// A reqwest client with these timeouts.
    pub fn client(&self) -> Result<reqwest::Client, reqwest::Error> {
        reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .build()
    }
}

/// Most characters of a service's answer quoted in an error.
pub const EXCERPT_CHARS: usize = 256;

/// At most [`EXCERPT_CHARS`] characters of `text`, with the length of what was cut.
pub fn excerpt(text: &str) -> String {
    truncate(text, EXCERPT_CHARS)
}

/// At most `max_chars` characters of `text`, with the length of what was cut.
pub fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}… ({} bytes in all)", &text[..cut], text.len()),
    }
}

/// [`excerpt`] of bytes read as UTF-8 (lossily).
pub fn excerpt_bytes(bytes: &[u8]) -> String {
    // Decoding only a prefix keeps a huge body from being copied whole.
    let prefix = &bytes[..bytes.len().min(4 * EXCERPT_CHARS)];
    let text = String::from_utf8_lossy(prefix);
    match text.char_indices().nth(EXCERPT_CHARS) {
        None if prefix.len() == bytes.len() => text.into_owned(),
        None => format!("{text}… ({} bytes in all)", bytes.len()),
        Some((cut, _)) => format!("{}… ({} bytes in all)", &text[..cut], bytes.len()),
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The transfer failed or timed out.
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
    /// The body is longer than the cap.
    #[error("response body over {limit} bytes")]
    TooLarge {
        /// The cap.
        limit: usize,
    },
}

/// Reads `response`'s body, refusing (and dropping the connection) past `limit` bytes.
pub async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A JSON-RPC-over-HTTP transport for alloy with [`HttpLimits`]: request timeout, body cap,
/// short error excerpts.
#[derive(Debug, Clone)]
pub struct CappedHttp {
    client: reqwest::Client,
    url: reqwest::Url,
    limits: HttpLimits,
}

/// A transport error for a reqwest failure, naming a timeout as one (reqwest's own message says
/// only "error sending request") and without the URL.
fn transport_error(e: reqwest::Error, limits: &HttpLimits) -> TransportError {
    if e.is_timeout() {
        TransportErrorKind::custom_str(&format!(
            "no complete answer within {:?} (request timed out)",
            limits.timeout
        ))
    } else if e.is_connect() {
        TransportErrorKind::custom_str(&format!("cannot connect: {}", e.without_url()))
    } else {
        TransportErrorKind::custom(e.without_url())
    }
}

impl CappedHttp {
    /// A transport to `url` bounded by `limits`.
    pub fn new(url: reqwest::Url, limits: HttpLimits) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: limits.client()?,
            url,
            limits,
        })
    }

    async fn send(self, req: RequestPacket) -> Result<ResponsePacket, TransportError> {
        let response = self
            .client
            .post(self.url)
            .json(&req)
            .headers(req.headers())
            .send()
            .await
            .map_err(|e| transport_error(e, &self.limits))?;
        let status = response.status();
        let body = read_capped(response, self.limits.max_body_bytes)
            .await
            .map_err(|e| match e {
                BodyError::Transport(e) => transport_error(e, &self.limits),
                e @ BodyError::TooLarge { .. } => TransportErrorKind::custom(e),
            })?;
        if !status.is_success() {
            return Err(TransportErrorKind::http_error(
                status.as_u16(),
                excerpt_bytes(&body),
            ));
        }
        serde_json::from_slice(&body)
            .map_err(|e| TransportError::deser_err(e, excerpt_bytes(&body)))
    }
}

impl tower::Service<RequestPacket> for CappedHttp {
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, _cx: &mut task::Context<'_>) -> task::Poll<Result<(), Self::Error>> {
        task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: RequestPacket) -> Self::Future {
        Box::pin(self.clone().send(req))
    }
}

/// An alloy provider for the node at `url` over [`CappedHttp`].
pub fn node_provider(url: reqwest::Url, limits: HttpLimits) -> Result<DynProvider, reqwest::Error> {
    let is_local = alloy::transports::utils::guess_local_url(url.as_str());
    let client = RpcClient::new(CappedHttp::new(url, limits)?, is_local);
    Ok(ProviderBuilder::new().connect_client(client).erased())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_and_say_how_long_the_whole_was() {
        assert_eq!(excerpt("short"), "short");
        let long = "x".repeat(10_000);
        let e = excerpt(&long);
        assert!(e.starts_with(&"x".repeat(EXCERPT_CHARS)), "{e}");
        assert!(e.ends_with("(10000 bytes in all)"), "{e}");
        assert!(e.len() < EXCERPT_CHARS + 40, "{}", e.len());
        let e = excerpt_bytes(long.as_bytes());
        assert!(e.ends_with("(10000 bytes in all)"), "{e}");
        assert_eq!(excerpt_bytes(b"{\"a\":1}"), "{\"a\":1}");
        // Multi-byte characters are never cut in the middle.
        let wide = "é".repeat(1000);
        assert!(excerpt(&wide).starts_with(&"é".repeat(EXCERPT_CHARS)));
        assert!(excerpt_bytes(wide.as_bytes()).contains("(2000 bytes in all)"));
    }
}
