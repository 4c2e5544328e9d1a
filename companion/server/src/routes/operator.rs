//! `/kms/operator`: the operator key (the sessions' revoker) and its balance.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;

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
