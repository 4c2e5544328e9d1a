//! Bounds on the HTTP server: at most [`RequestBounds::max_in_flight`] requests in progress (one
//! more is answered `503 overloaded` at once, not queued), and an answer within
//! [`RequestBounds::timeout`] (`503 request_timeout` past it).
//!
//! The body is read first (within [`BODY_READ_TIMEOUT`], at most the body limit; `408
//! body_timeout` or `413` otherwise), before the request takes a slot: a client trickling its
//! body cannot hold slots.
//!
//! A request that times out is **not cancelled**: its handler runs on in its own task to the end
//! and records what it did (an intent already signed is still submitted and stored; its status
//! tells the outcome). Cancelling a handler half-way could lose that record. The task keeps its
//! slot until it ends, so work stalled on a slow node or bundler still counts against the cap and
//! cannot pile up without bound.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::config::MAX_BODY_BYTES;
use crate::error::{ApiError, ErrorCode};

/// The server's request bounds (shared by all requests).
#[derive(Debug, Clone)]
pub struct RequestBounds {
    slots: Arc<Semaphore>,
    max_in_flight: usize,
    timeout: Duration,
}

impl RequestBounds {
    /// At most `max_in_flight` requests at once, each answered within `timeout`.
    pub fn new(max_in_flight: usize, timeout: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            timeout,
        }
    }

    /// The cap on requests in progress.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// The answer timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Longest a client may take to send its request body. The body is read whole (at most
/// [`MAX_BODY_BYTES`]) before the request takes a slot, so a client trickling its body holds a
/// connection for at most this long and never a slot.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Middleware applying [`RequestBounds`].
pub async fn bound(State(b): State<RequestBounds>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let body = match tokio::time::timeout(
        BODY_READ_TIMEOUT,
        axum::body::to_bytes(body, MAX_BODY_BYTES),
    )
    .await
    {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return ApiError::TooLarge {
                limit: MAX_BODY_BYTES,
            }
            .into_response()
        }
        Err(_) => {
            return ApiError::detailed(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::BodyTimeout,
                format!(
                    "the request body did not arrive within {} s",
                    BODY_READ_TIMEOUT.as_secs()
                ),
                json!({"timeoutSecs": BODY_READ_TIMEOUT.as_secs()}),
            )
            .into_response()
        }
    };
    let req = Request::from_parts(parts, axum::body::Body::from(body));
    let Ok(slot) = b.slots.clone().try_acquire_owned() else {
        let mut resp = ApiError::detailed(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Overloaded,
            format!(
                "{} requests are in progress, the most this companion serves at once; retry shortly",
                b.max_in_flight
            ),
            json!({"maxInFlight": b.max_in_flight}),
        )
        .into_response();
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
        return resp;
    };
    let work = tokio::spawn(async move {
        let resp = next.run(req).await;
        drop(slot);
        resp
    });
    match tokio::time::timeout(b.timeout, work).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => ApiError::internal(format!("request handler failed: {e}")).into_response(),
        Err(_) => {
            tracing::warn!(
                timeout_secs = b.timeout.as_secs_f64(),
                "request not answered in time; its work goes on in the background"
            );
            ApiError::detailed(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::RequestTimeout,
                format!(
                    "no answer within {} s (a chain service is slow); work already started goes \
                     on: look the outcome up (e.g. GET /agent/intents/{{userOpHash}}) before \
                     retrying",
                    b.timeout.as_secs()
                ),
                json!({"timeoutSecs": b.timeout.as_secs()}),
            )
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tokio::sync::{mpsc, Notify};
    use tower::ServiceExt;

    /// `/hold` reports that it started, waits for `release`, then reports that it finished.
    fn app(
        bounds: RequestBounds,
        events: mpsc::UnboundedSender<&'static str>,
        release: Arc<Notify>,
    ) -> Router {
        Router::new()
            .route(
                "/hold",
                get(move || {
                    let (events, release) = (events.clone(), release.clone());
                    async move {
                        events.send("started").unwrap();
                        release.notified().await;
                        events.send("finished").unwrap();
                        "done"
                    }
                }),
            )
            .route("/fast", get(|| async { "ok" }))
            .route(
                "/echo",
                axum::routing::post(|body: String| async move { body }),
            )
            .layer(axum::middleware::from_fn_with_state(bounds, bound))
    }

    async fn call(app: &Router, path: &str) -> (StatusCode, String) {
        let resp = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_slow_request_times_out_but_its_work_finishes() {
        let (tx, mut events) = mpsc::unbounded_channel();
        let release = Arc::new(Notify::new());
        let app = app(
            RequestBounds::new(8, Duration::from_millis(50)),
            tx,
            release.clone(),
        );
        let (status, body) = call(&app, "/hold").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("request_timeout"), "{body}");
        assert_eq!(events.recv().await, Some("started"));
        // The handler was not cancelled: released, it runs to its end.
        release.notify_one();
        assert_eq!(events.recv().await, Some("finished"));
        assert_eq!(call(&app, "/fast").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_before_any_slot() {
        let (tx, _events) = mpsc::unbounded_channel();
        let app = app(
            RequestBounds::new(1, Duration::from_secs(600)),
            tx,
            Arc::new(Notify::new()),
        );
        let resp = app
            .clone()
            .oneshot(
                Request::post("/echo")
                    .body(Body::from(vec![b'x'; MAX_BODY_BYTES + 1]))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_times_out_without_holding_a_slot() {
        let (tx, _events) = mpsc::unbounded_channel();
        let app = app(
            RequestBounds::new(1, Duration::from_secs(600)),
            tx,
            Arc::new(Notify::new()),
        );
        // A body that never ends.
        let (_sender, body) = {
            let (s, r) = mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
            (s, Body::from_stream(tokio_stream_from(r)))
        };
        let slow = tokio::spawn({
            let app = app.clone();
            async move {
                app.oneshot(Request::post("/echo").body(body).unwrap())
                    .await
                    .unwrap()
                    .status()
            }
        });
        // While it trickles, the only slot is free.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(call(&app, "/fast").await.0, StatusCode::OK);
        assert_eq!(slow.await.unwrap(), StatusCode::REQUEST_TIMEOUT);
    }

    /// A stream of a channel's items (without a tokio-stream dependency).
    fn tokio_stream_from<T: Send + 'static>(
        mut r: mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Send {
        futures_util::stream::poll_fn(move |cx| r.poll_recv(cx))
    }

    #[tokio::test]
    async fn over_the_cap_is_refused_at_once_until_a_slot_frees() {
        let (tx, mut events) = mpsc::unbounded_channel();
        let release = Arc::new(Notify::new());
        let app = app(
            RequestBounds::new(1, Duration::from_secs(600)),
            tx,
            release.clone(),
        );
        let held = tokio::spawn({
            let app = app.clone();
            async move { call(&app, "/hold").await }
        });
        assert_eq!(events.recv().await, Some("started"));
        let (status, body) = call(&app, "/fast").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("overloaded"), "{body}");
        release.notify_one();
        assert_eq!(held.await.unwrap().0, StatusCode::OK);
        assert_eq!(call(&app, "/fast").await, (StatusCode::OK, "ok".into()));
    }
}
