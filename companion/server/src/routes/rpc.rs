//! `POST /rpc`: the companion as a JSON-RPC 2.0 wallet endpoint for dapps (API key required).
//! One method, ERC-7715's `wallet_grantPermissions`: the request becomes a permission request
//! the owner approves or cancels on `/ui`, and the call waits for that decision (bounded by
//! `--permission-request-timeout-secs`); see [`crate::service::permissions`].
//!
//! Every JSON-RPC answer, errors included, is HTTP 200 (`{jsonrpc, id, result | error}`); the
//! shared layers answer as on every API-key route (401 and 429 for the key, 408/413 for the
//! body, 503).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::service::permissions::{self, RpcError};
use crate::state::AppState;

/// The query of `/rpc`.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct RpcQuery {
    /// The wallet asked, by its owner address, when the request's `params[0].address` does not
    /// name it (viem's `grantPermissions` sends no address: put it on the transport's URL).
    pub address: Option<String>,
}

fn answer(id: &Value, outcome: Result<Value, RpcError>) -> Json<Value> {
    Json(match outcome {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => json!({"jsonrpc": "2.0", "id": id, "error": e.to_json()}),
    })
}

/// JSON-RPC 2.0 for dapps: `wallet_grantPermissions` (ERC-7715).
#[utoipa::path(post, path = "/rpc", tag = "dapp", params(RpcQuery),
    request_body(content = Object, description = "A JSON-RPC 2.0 request: `{\"jsonrpc\": \"2.0\", \"id\": 1, \
        \"method\": \"wallet_grantPermissions\", \"params\": [{\"expiry\", \"permissions\", \"signer\"?, \"address\"?, \"chainId\"?}]}`."),
    description = "ERC-7715 `wallet_grantPermissions`: the request is mapped onto a session (`native-token-transfer`/`native-token-limit` \
        + `token-allowance` → spendCap, `erc20-token-transfer`/`erc20-token-limit` → tokens, `contract-call` → targets and selectors, \
        `gas-limit` → gasCap in wei, `expiry` → validUntil), waits for the owner's approval on /ui (at most \
        `--permission-request-timeout-secs`) and answers `{expiry, grantedPermissions, permissionsContext, signerData}`. \
        Every JSON-RPC answer is HTTP 200; its errors: -32700 parse error, -32600 invalid request, -32601 unknown method, \
        -32602 invalid params (`data.field`), -32010 not enforceable (`data.unsupported`: the names), -32011 expired \
        (nobody decided in time; `data.requestId`), 4001 the owner rejected it, -32603 internal.",
    responses((status = 200, description = "A JSON-RPC 2.0 answer (`result` or `error`).", body = Object)),
    security(("api_key" = [])))]
pub async fn rpc(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<RpcQuery>,
    body: Bytes,
) -> Json<Value> {
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return answer(
                &Value::Null,
                Err(RpcError {
                    code: -32700,
                    message: format!("parse error: {e}"),
                    data: None,
                }),
            )
        }
    };
    let invalid = |m: &str| RpcError {
        code: -32600,
        message: m.to_owned(),
        data: None,
    };
    if req.is_array() {
        return answer(&Value::Null, Err(invalid("batches are not supported")));
    }
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    if req.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return answer(&id, Err(invalid("jsonrpc must be \"2.0\"")));
    }
    let Some(method) = req.get("method").and_then(Value::as_str) else {
        return answer(&id, Err(invalid("method must be a string")));
    };
    if method != "wallet_grantPermissions" {
        return answer(
            &id,
            Err(RpcError {
                code: -32601,
                message: format!(
                    "method {method:?} not found: this endpoint serves wallet_grantPermissions"
                ),
                data: None,
            }),
        );
    }
    let Some(params) = req
        .get("params")
        .and_then(Value::as_array)
        .and_then(|p| p.first())
    else {
        return answer(
            &id,
            Err(RpcError::invalid(
                "params",
                "params must be [request] (one object)",
            )),
        );
    };
    let wait = s.config.permission_wait();
    let outcome =
        match permissions::open(&s, &caller.actor, params, q.address.as_deref(), wait).await {
            Ok(opened) => permissions::wait(&s, opened, wait).await,
            Err(e) => Err(e),
        };
    answer(&id, outcome)
}
