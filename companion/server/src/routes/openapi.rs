//! `/openapi.json`: the OpenAPI document of this service ([`crate::openapi`]).

use axum::response::{IntoResponse, Response};
use axum::Json;

/// The OpenAPI document of this service.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi() -> Response {
    Json(crate::openapi::document()).into_response()
}
