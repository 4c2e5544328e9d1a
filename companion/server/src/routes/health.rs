//! `/health`, `/metrics`, `/openapi.json`, and the JSON 404/405 answers.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::config::ApiKeyMode;
use crate::error::ApiError;
use crate::state::AppState;

/// `/health` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    /// `ok` when the database and the TEE answer, else `degraded`.
    pub status: String,
    /// The database answers.
    pub database: bool,
    /// The TEE answers.
    pub tee: bool,
    /// Companion version.
    pub version: String,
    /// TA version, when reachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ta_version: Option<String>,
    /// `required` or `open`.
    pub api_key_mode: String,
    /// The TA's operator key (fund it; it is the revoker of the sessions the companion
    /// registers), when the TEE answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_address: Option<String>,
    /// The chain the intent API uses, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainInfo>,
}

/// The chain settings in force.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainInfo {
    /// Chain id.
    pub chain_id: u64,
    /// EntryPoint address.
    pub entry_point: String,
    /// EntryPoint version (`v0.7`, `v0.8`).
    pub entry_point_version: String,
    /// AgentAccountFactory.
    pub account_factory: String,
    /// SessionKeyValidator.
    pub session_key_validator: String,
}

/// `/kms/operator` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperatorResponse {
    /// The operator key's address (created in the TA at start-up). Its only signing use is
    /// `SessionKeyValidator.revokeSession`; name it as the revoker of sessions and fund it.
    pub address: String,
    /// Its balance in wei (decimal), when the chain is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<String>,
}

fn chain_info(s: &AppState) -> Option<ChainInfo> {
    let c = &s.chain.as_ref()?.client;
    Some(ChainInfo {
        chain_id: c.chain_id(),
        entry_point: c.entry_point().address.to_string(),
        entry_point_version: c.entry_point().version.to_string(),
        account_factory: c.factory().to_string(),
        session_key_validator: c.validator().to_string(),
    })
}

/// The operator key's address and balance.
#[utoipa::path(get, path = "/kms/operator", tag = "operations",
    responses((status = 200, body = OperatorResponse), (status = 503, body = crate::error::ErrorBody)))]
pub async fn operator(State(s): State<Arc<AppState>>) -> Result<Json<OperatorResponse>, ApiError> {
    let address = kms_chain::operator::OperatorSigner::address(s.operator().await?);
    let balance = match s.chain.as_ref() {
        Some(c) => Some(
            c.client
                .balance(address)
                .await
                .map_err(|e| crate::chain::chain_error(e, None))?
                .to_string(),
        ),
        None => None,
    };
    Ok(Json(OperatorResponse {
        address: address.to_string(),
        balance,
    }))
}

/// Liveness: database and TEE reachable (200), else 503.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, body = HealthResponse), (status = 503, body = HealthResponse)))]
pub async fn health(State(s): State<Arc<AppState>>) -> Response {
    let database = s.db.ping().await.is_ok();
    let ta = s.tee.call(&kms_proto::TaInfo {}).await.ok();
    let ok = database && ta.is_some();
    let operator_address = match ta.is_some() {
        true => s
            .operator()
            .await
            .ok()
            .map(|o| kms_chain::operator::OperatorSigner::address(o).to_string()),
        false => None,
    };
    let body = HealthResponse {
        status: if ok { "ok" } else { "degraded" }.into(),
        database,
        tee: ta.is_some(),
        version: env!("CARGO_PKG_VERSION").into(),
        ta_version: ta.map(|t| t.version),
        api_key_mode: match s.api_key_mode {
            ApiKeyMode::Required => "required",
            ApiKeyMode::Open => "open",
        }
        .into(),
        operator_address,
        chain: chain_info(&s),
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics (text format 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

/// The OpenAPI document of this service.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi() -> Response {
    Json(crate::openapi::document()).into_response()
}

/// Unknown path.
pub async fn not_found() -> ApiError {
    ApiError::not_found("route_not_found", "no such route")
}

/// Known path, wrong method.
pub async fn method_not_allowed() -> Response {
    let mut r = ApiError::bad_request("method_not_allowed", "method not allowed on this route")
        .into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}
