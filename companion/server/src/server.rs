//! Building the router and running the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use kms_db::{Db, DbOptions};
use kms_tee_client::TeeBackend;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use webauthn_rs::prelude::Url;
use webauthn_rs::WebauthnBuilder;

use crate::audit::Audit;
use crate::bounds::{self, RequestBounds};
use crate::config::{ApiKeyMode, Config, MAX_BODY_BYTES};
use crate::metrics::Metrics;
use crate::ratelimit::Limits;
use crate::reconcile::{self, Reconcile};
use crate::routes::{
    agent, ceremony, health, intents, metrics, openapi, operator, permissions, rpc, sessions, ui,
    wallet,
};
use crate::state::{AppState, CredentialCache, SharedState};
use crate::tee::Tee;
use crate::{auth, tasks};

/// A start-up error.
pub type StartError = Box<dyn std::error::Error + Send + Sync>;

/// Which shared layer authenticates a route before its handler runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `x-api-key` ([`auth::require_api_key`]: 401, 429 per API key).
    ApiKey,
    /// An agent's Bearer credential (401, 429 per agent key and per client address).
    Bearer,
    /// No shared authentication (a ceremony or nothing).
    Open,
}

/// One route of the router.
#[derive(Clone, Copy, Debug)]
pub struct RouteSpec {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The path, as routed (and as in the OpenAPI document).
    pub path: &'static str,
    /// Its shared authentication layer.
    pub access: Access,
    /// Whether it reads a JSON body ([`crate::extract::JsonBody`]: 400, 422).
    pub json_body: bool,
    /// Whether it is described in `/openapi.json` (the `/ui` page and assets are not).
    pub documented: bool,
    /// Whether it reaches the TA (then the TA's refusals are its answers too; the others answer
    /// from the database while the TA is found rolled back).
    pub reaches_ta: bool,
}

const fn route(
    method: &'static str,
    path: &'static str,
    access: Access,
    json_body: bool,
) -> RouteSpec {
    RouteSpec {
        method,
        path,
        access,
        json_body,
        documented: true,
        reaches_ta: true,
    }
}

/// A route answered from the database (or nothing) alone.
const fn db_only(
    method: &'static str,
    path: &'static str,
    access: Access,
    json_body: bool,
) -> RouteSpec {
    RouteSpec {
        reaches_ta: false,
        ..route(method, path, access, json_body)
    }
}

/// Every route the router serves: [`router`] is built from this list, so a route exists only
/// once listed here (and the OpenAPI test checks each one's declared statuses).
pub const ROUTES: &[RouteSpec] = &[
    route("POST", "/BeginRegistration", Access::ApiKey, true),
    route("POST", "/CompleteRegistration", Access::ApiKey, true),
    route("POST", "/BeginAuthentication", Access::ApiKey, true),
    route("POST", "/CreateKey", Access::ApiKey, true),
    db_only("POST", "/DescribeKey", Access::ApiKey, true),
    db_only("POST", "/ListKeys", Access::ApiKey, true),
    route("POST", "/GetPublicKey", Access::ApiKey, true),
    route("POST", "/DeriveAddress", Access::ApiKey, true),
    route("POST", "/Sign", Access::ApiKey, true),
    route("POST", "/SignHash", Access::ApiKey, true),
    route("POST", "/DeleteKey", Access::ApiKey, true),
    route("POST", "/ChangePasskey", Access::ApiKey, true),
    route("POST", "/kms/create-agent-key", Access::ApiKey, true),
    db_only("POST", "/kms/list-agent-keys", Access::ApiKey, true),
    db_only("POST", "/kms/list-agent-intents", Access::ApiKey, true),
    route("POST", "/kms/sign-agent", Access::Bearer, true),
    route(
        "POST",
        "/kms/refresh-agent-credential",
        Access::Bearer,
        true,
    ),
    route("POST", "/kms/revoke-agent-credential", Access::Open, true),
    route("POST", "/kms/agent-sessions", Access::Open, true),
    route("GET", "/kms/operator", Access::Open, false),
    db_only("POST", "/kms/permission-requests", Access::ApiKey, true),
    // Reaches the TA for the operator key (the session's revoker) when it checks the grant.
    route(
        "POST",
        "/kms/permission-requests/resolve",
        Access::ApiKey,
        true,
    ),
    db_only("POST", "/rpc", Access::ApiKey, false),
    route("POST", "/agent/intents", Access::Bearer, true),
    db_only("GET", "/agent/intents/{userOpHash}", Access::Bearer, false),
    db_only("GET", "/agent/session", Access::Bearer, false),
    db_only("GET", "/health", Access::Open, false),
    db_only("GET", "/metrics", Access::Open, false),
    db_only("GET", "/openapi.json", Access::Open, false),
    RouteSpec {
        documented: false,
        ..db_only("GET", "/ui", Access::Open, false)
    },
    RouteSpec {
        documented: false,
        ..db_only("GET", "/ui/", Access::Open, false)
    },
    RouteSpec {
        documented: false,
        ..db_only("GET", "/ui/{file}", Access::Open, false)
    },
];

impl RouteSpec {
    /// The statuses the shared layers can answer on this route, whatever its handler does:
    /// 408 and 413 (the body read by [`bounds::bound`]), 500, 503 (`overloaded`,
    /// `request_timeout`, and `ta_rolled_back`/TEE unreachable where the TA is reached), 400 and
    /// 422 (a JSON body: malformed, unknown field), 401 and 429 (API key or agent credential),
    /// and where the TA is reached its refusals (`From<TaError> for ApiError`: 401 credential
    /// or passkey, 403 keyId mismatch, 404 unknown key or agent, 422 invalid value, 429 TEE
    /// capacity).
    pub fn shared_statuses(&self) -> Vec<u16> {
        let mut v = vec![408, 413, 500, 503];
        if self.json_body {
            v.extend([400, 422]);
        }
        if self.access != Access::Open {
            v.extend([401, 429]);
        }
        if self.reaches_ta {
            v.extend([401, 403, 404, 422, 429]);
        }
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// The handler of a listed route.
fn handler(path: &str) -> axum::routing::MethodRouter<SharedState> {
    match path {
        "/BeginRegistration" => post(ceremony::begin_registration),
        "/CompleteRegistration" => post(ceremony::complete_registration),
        "/BeginAuthentication" => post(ceremony::begin_authentication),
        "/CreateKey" => post(wallet::create_key),
        "/DescribeKey" => post(wallet::describe_key),
        "/ListKeys" => post(wallet::list_keys),
        "/GetPublicKey" => post(wallet::get_public_key),
        "/DeriveAddress" => post(wallet::derive_address),
        "/Sign" => post(wallet::sign),
        "/SignHash" => post(wallet::sign_hash),
        "/DeleteKey" => post(wallet::delete_key),
        "/ChangePasskey" => post(wallet::change_passkey),
        "/kms/create-agent-key" => post(agent::create_agent_key),
        "/kms/list-agent-keys" => post(agent::list_agent_keys),
        "/kms/list-agent-intents" => post(intents::list_agent_intents),
        "/kms/sign-agent" => post(agent::sign_agent),
        "/kms/refresh-agent-credential" => post(agent::refresh_agent_credential),
        "/kms/revoke-agent-credential" => post(agent::revoke_agent_credential),
        "/kms/agent-sessions" => post(sessions::agent_sessions),
        "/kms/operator" => get(operator::operator),
        "/kms/permission-requests" => post(permissions::list),
        "/kms/permission-requests/resolve" => post(permissions::resolve),
        "/rpc" => post(rpc::rpc),
        "/agent/intents" => post(intents::submit_intent),
        "/agent/intents/{userOpHash}" => get(intents::get_intent),
        "/agent/session" => get(crate::routes::agent_session::get_agent_session),
        "/health" => get(health::health),
        "/metrics" => get(metrics::metrics),
        "/openapi.json" => get(openapi::openapi),
        "/ui" | "/ui/" => get(ui::index),
        "/ui/{file}" => get(ui::file),
        other => unreachable!("route {other} is listed in ROUTES without a handler"),
    }
}

/// The router over `state`: every route of [`ROUTES`].
pub fn router(state: SharedState) -> Router {
    let (mut with_api_key, mut without) = (Router::new(), Router::new());
    for r in ROUTES {
        if r.access == Access::ApiKey {
            with_api_key = with_api_key.route(r.path, handler(r.path));
        } else {
            without = without.route(r.path, handler(r.path));
        }
    }
    let with_api_key = with_api_key.route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_api_key,
    ));
    Router::new()
        .merge(with_api_key)
        .merge(without)
        .fallback(crate::routes::not_found)
        .method_not_allowed_fallback(crate::routes::method_not_allowed)
        // While the TA is found rolled back, the routes that reach it answer 503.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            reconcile::refuse_when_rolled_back,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            RequestBounds::new(
                usize::try_from(state.config.max_concurrent_requests).unwrap_or(usize::MAX),
                std::time::Duration::from_secs(state.config.request_timeout_secs),
            ),
            bounds::bound,
        ))
        .with_state(state)
}

async fn track(State(s): State<SharedState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    s.metrics.observe_request(method.as_str(), &route, status);
    tracing::debug!(%method, %route, status, elapsed_ms = started.elapsed().as_millis() as u64, "request");
    resp
}

/// A running server.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its state.
    pub state: SharedState,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    tasks: Vec<JoinHandle<()>>,
    audit_task: JoinHandle<()>,
}

impl Running {
    /// Stop accepting, finish in-flight requests, stop the tasks, commit
    /// queued audit events and close the database.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        for t in self.tasks {
            let _ = t.await;
        }
        self.state.audit.flush().await;
        self.audit_task.abort();
        self.state.db.close().await;
    }

    /// Wait until the server stops on its own (it does not, unless it fails).
    pub async fn wait(&mut self) -> std::io::Result<()> {
        (&mut self.server).await.unwrap_or(Ok(()))
    }
}

/// Open the database, connect the TEE (lazily), bind, and serve.
pub async fn start(config: Config) -> Result<Running, StartError> {
    config.validate()?;
    if config.database_url.is_none() {
        std::fs::create_dir_all(&config.data_dir)?;
    }
    let db = Db::open_with(
        &config.database_url(),
        &DbOptions {
            max_connections: config.db_max_connections,
            connect_retry: std::time::Duration::from_secs(config.db_connect_retry_secs),
            ..DbOptions::default()
        },
    )
    .await?;
    let backend: TeeBackend = config.tee_backend().parse()?;
    let metrics = Arc::new(Metrics::default());
    let reconcile = Arc::new(Reconcile::default());
    let tee = Tee::new(backend.lazy()?, metrics.clone(), reconcile.clone()).with_sign_batching(
        config.tee_sign_batch as usize,
        config.tee_sign_parallel as usize,
    );

    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let origins = config.origins_for_port(addr.port());
    let first: Url = origins.first().ok_or("no origin")?.parse()?;
    let mut builder = WebauthnBuilder::new(&config.rp_id, &first)?.rp_name(&config.rp_name);
    for o in origins.iter().skip(1) {
        builder = builder.append_allowed_origin(&o.parse()?);
    }
    let webauthn = builder.build()?;

    if config.jwt_rotation_period_secs
        < crate::config::min_rotation_period_secs(config.jwt_ttl_secs)
    {
        tracing::warn!(
            period_secs = config.jwt_rotation_period_secs,
            "--allow-short-jwt-rotation-period: the JWT secret rotation period is shorter than \
             the 7-day verify-only overlap. Development and tests only: rotations pile up \
             verify-only secrets and the TA refuses them at its bound until one retires."
        );
    }
    let api_key_mode = config.api_key_mode();
    match api_key_mode {
        ApiKeyMode::Open => tracing::warn!(
            "API-KEY MODE: OPEN — every API-key route is served WITHOUT an API key. Development only."
        ),
        ApiKeyMode::Required => {
            let n = db.count_active_api_keys().await?;
            if n == 0 {
                tracing::warn!(
                    "API-key mode: required, and NO API key is provisioned: every API-key route \
                     is refused (fail closed). Create one with `companion --create-api-key LABEL`."
                );
            } else {
                tracing::info!(active_keys = n, "API-key mode: required");
            }
        }
    }

    let chain = match config.chain_settings()? {
        Some(settings) => {
            let c = crate::chain::ChainState::connect(&settings, &config).await?;
            tracing::info!(
                chain_id = c.client.chain_id(),
                entry_point = %c.client.entry_point().address,
                version = %c.client.entry_point().version,
                factory = %c.client.factory(),
                validator = %c.client.validator(),
                "chain routes enabled"
            );
            Some(c)
        }
        None => {
            tracing::info!("no chain settings: /kms/agent-sessions and /agent/intents answer 503");
            None
        }
    };

    let (audit, audit_task) = Audit::start(
        db.clone(),
        metrics.clone(),
        config.audit_durability,
        config.audit_checkpoint_events,
    );
    match config.audit_durability {
        crate::config::AuditDurability::Sync => {}
        crate::config::AuditDurability::Commit => tracing::info!(
            "--audit-durability commit: signatures wait for their audit event's commit, not \
             for an fsync (a power loss can lose the last events)"
        ),
        crate::config::AuditDurability::Queued => tracing::warn!(
            "--audit-durability queued: signatures are released before their audit event is \
             committed (a crash loses the events still queued)"
        ),
    }
    if config.audit_checkpoint_secs == 0 {
        tracing::warn!(
            "--audit-checkpoint-secs 0: the audit checkpoint task is off; the audit log is not \
             anchored in the TA unless `kms-admin audit checkpoint` runs"
        );
    }
    let state = Arc::new(AppState {
        limits: Limits::new(
            config.rate_limit,
            config.agent_rate_limit,
            config.agent_read_rate_limit,
            config.client_rate_limit,
        ),
        config,
        db,
        tee,
        webauthn,
        origins,
        api_key_mode,
        audit,
        metrics,
        credentials: CredentialCache::default(),
        chain,
        operator: tokio::sync::OnceCell::new(),
        reconcile,
        health: health::HealthCache::default(),
        replica_id: crate::replicas::new_replica_id(),
    });
    match state.operator().await {
        Ok(op) => tracing::info!(
            operator = %kms_chain::operator::OperatorSigner::address(op),
            "operator key ready (fund it and name it as revoker)"
        ),
        Err(e) => tracing::warn!(error = %e, "operator key not available yet (TEE unreachable?)"),
    }
    crate::replicas::adopt_wallets(&state).await;
    if let Err(e) = tasks::sync_jwt_meta(&state).await {
        tracing::warn!(error = %e, "could not read the TA's JWT secret status at start-up");
    }
    // Before serving: repair what a crash between a database write and a
    // TA write left apart. If the TA is not reachable yet, the background
    // task retries.
    if let Err(e) = reconcile::run_once(&state, true).await {
        tracing::warn!(error = %e, "could not reconcile agents with the TA at start-up; will retry");
    }
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = tasks::spawn(state.clone(), rx.clone());
    tasks.push(reconcile::spawn(state.clone(), rx.clone()));
    let app = router(state.clone());
    let mut stop = rx;
    let server = tokio::spawn(async move {
        // With the peer address of each connection (`ConnectInfo`): the per-client-address
        // limit of the agent routes keys on it.
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await
    });
    tracing::info!(
        %addr,
        rp_id = %state.config.rp_id,
        origins = ?state.origins,
        tee = %state.config.tee_backend(),
        "companion listening"
    );
    Ok(Running {
        addr,
        state,
        shutdown,
        server,
        tasks,
        audit_task,
    })
}
