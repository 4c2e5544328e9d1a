//! API keys (`x-api-key`): stored hashed, compared in constant time (in
//! `kms-db`), fail closed unless open mode was chosen explicitly. The
//! per-API-key rate limit is taken here too, before any handler runs.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::ApiKeyMode;
use crate::error::{ApiError, ErrorCode};
use crate::state::SharedState;

/// The authenticated caller of an API-key route (a request extension).
#[derive(Clone, Debug)]
pub struct Caller {
    /// Audit actor: `api-key:<id>` or `open-mode`.
    pub actor: String,
}

/// Header carrying the API key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Middleware for API-key routes.
pub async fn require_api_key(
    State(state): State<SharedState>,
    mut req: Request,
    next: Next,
) -> Response {
    let presented = match req
        .headers()
        .get(API_KEY_HEADER)
        .map(|v| v.to_str().map(str::to_owned))
    {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            return ApiError::unauthorized(ErrorCode::ApiKeyInvalid, "invalid API key")
                .into_response()
        }
    };
    match authenticate(&state, presented.as_deref()).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

async fn authenticate(state: &SharedState, presented: Option<&str>) -> Result<Caller, ApiError> {
    match state.api_key_mode {
        ApiKeyMode::Open => {
            let key = "open-mode";
            state.limits.api.check(key)?;
            Ok(Caller {
                actor: key.to_owned(),
            })
        }
        ApiKeyMode::Required => {
            let Some(presented) = presented else {
                return Err(ApiError::unauthorized(
                    ErrorCode::ApiKeyRequired,
                    "missing x-api-key header",
                ));
            };
            match state.db.verify_api_key(presented).await? {
                Some(id) => {
                    state.limits.api.check(&id)?;
                    Ok(Caller {
                        actor: format!("api-key:{id}"),
                    })
                }
                None => {
                    if state.db.count_active_api_keys().await? == 0 {
                        return Err(ApiError::unauthorized(
                            ErrorCode::ApiKeyRequired,
                            "no API key is provisioned and open mode is off: the service fails \
                             closed (create a key with `companion --create-api-key LABEL`)",
                        ));
                    }
                    Err(ApiError::unauthorized(
                        ErrorCode::ApiKeyInvalid,
                        "invalid API key",
                    ))
                }
            }
        }
    }
}
