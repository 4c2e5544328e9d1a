//! The one error type of the HTTP API and its one mapping to statuses
//! (companion/README.md, *Errors*): every error body is `{"error": "...", "code": "..."}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kms_db::{ChallengeRefusal, DbError};
use kms_proto::{JwtError, OperatorLimit, PasskeyError, TaError};
use kms_tee_client::TeeError;
use serde::Serialize;
use utoipa::ToSchema;

/// The JSON body of every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Human-readable message (never contains secrets).
    pub error: String,
    /// Stable machine-readable code.
    pub code: String,
    /// Machine-readable particulars, where there are some: the refused target or amounts of a
    /// policy refusal, or the bundler's JSON-RPC code, `AAxx` code, message and decoded revert.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed JSON, hex, or a structurally wrong request.
    #[error("{message}")]
    BadRequest {
        /// Code.
        code: &'static str,
        /// Message.
        message: String,
    },
    /// 401: missing/invalid API key, credential, or WebAuthn ceremony.
    #[error("{message}")]
    Unauthorized {
        /// Code.
        code: &'static str,
        /// Message.
        message: String,
    },
    /// 403: policy refusal or a keyId that does not match the credential.
    #[error("{message}")]
    Forbidden {
        /// Code.
        code: &'static str,
        /// Message.
        message: String,
    },
    /// 404: unknown key.
    #[error("{message}")]
    NotFound {
        /// Code.
        code: &'static str,
        /// Message.
        message: String,
    },
    /// 409: the request conflicts with the current state.
    #[error("{message}")]
    Conflict {
        /// Code.
        code: &'static str,
        /// Message.
        message: String,
    },
    /// 413: body over the limit (refused while reading).
    #[error("request body exceeds {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// 422: well-formed but invalid values.
    #[error("{message}")]
    Unprocessable {
        /// Code.
        code: &'static str,
        /// Message.
        message: String,
    },
    /// 429: rate limited.
    #[error("rate limit exceeded ({scope}); retry after {retry_after_secs} s")]
    RateLimited {
        /// Which limit.
        scope: &'static str,
        /// Seconds until a request would be allowed.
        retry_after_secs: u64,
    },
    /// 503: the TEE cannot be reached.
    #[error("TEE unavailable")]
    TeeUnavailable,
    /// Any status, with machine-readable details (policy refusals, bundler and chain errors).
    #[error("{message}")]
    Detailed {
        /// The HTTP status.
        status: StatusCode,
        /// Code.
        code: &'static str,
        /// Message.
        message: String,
        /// Details for the `details` field of the body.
        details: serde_json::Value,
    },
    /// 500: a bug or a fault that is not the client's (detail only logged).
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }
    /// 401.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unauthorized {
            code,
            message: message.into(),
        }
    }
    /// 403.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::Forbidden {
            code,
            message: message.into(),
        }
    }
    /// 404.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
        }
    }
    /// 422.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unprocessable {
            code,
            message: message.into(),
        }
    }
    /// 500.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::Internal(detail.into())
    }
    /// Any status with `details`.
    pub fn detailed(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        details: serde_json::Value,
    ) -> Self {
        Self::Detailed {
            status,
            code,
            message: message.into(),
            details,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TeeUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Detailed { status, .. } => *status,
        }
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::Unauthorized { code, .. }
            | ApiError::Forbidden { code, .. }
            | ApiError::NotFound { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Unprocessable { code, .. }
            | ApiError::Detailed { code, .. } => code,
            ApiError::TooLarge { .. } => "body_too_large",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::TeeUnavailable => "tee_unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let details = match &self {
            ApiError::Detailed { details, .. } => {
                Some(crate::extract::checksummed(details.clone()))
            }
            _ => None,
        };
        let body = ErrorBody {
            error: self.to_string(),
            code: self.code().to_owned(),
            details,
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if let ApiError::RateLimited {
            retry_after_secs, ..
        } = self
        {
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.max(1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        ApiError::Internal(format!("database: {e}"))
    }
}

impl From<ChallengeRefusal> for ApiError {
    fn from(r: ChallengeRefusal) -> Self {
        let msg = r.to_string();
        match r {
            ChallengeRefusal::Unknown => ApiError::unauthorized(
                "challenge_unknown",
                "unknown ChallengeId: start a ceremony with /BeginAuthentication (or /BeginRegistration)",
            ),
            ChallengeRefusal::AlreadyUsed => ApiError::unauthorized(
                "challenge_used",
                "this ceremony was already used (replayed assertion); start a new one",
            ),
            ChallengeRefusal::Expired => ApiError::unauthorized(
                "challenge_expired",
                "the ceremony expired (300 s); start a new one",
            ),
            ChallengeRefusal::WrongKind(_) => ApiError::unauthorized("challenge_wrong_kind", msg),
            ChallengeRefusal::WrongWallet => ApiError::forbidden("challenge_wrong_key", msg),
            ChallengeRefusal::WrongPurpose(p) => ApiError::forbidden(
                "challenge_wrong_purpose",
                format!("the ceremony was started for Purpose {p}, not for this operation"),
            ),
            ChallengeRefusal::WrongPayload => ApiError::forbidden(
                "payload_mismatch",
                "the assertion was made for a different payload than this request: start \
                 /BeginAuthentication with exactly this request's payload",
            ),
        }
    }
}

/// The one mapping of TA refusals to HTTP.
impl From<TaError> for ApiError {
    fn from(e: TaError) -> Self {
        let msg = e.to_string();
        match e {
            TaError::Jwt(j) => {
                let code = match j {
                    JwtError::Malformed | JwtError::UnsupportedAlgorithm => "credential_malformed",
                    JwtError::UnknownKid | JwtError::RetiredKid | JwtError::BadSignature => {
                        "credential_invalid"
                    }
                    JwtError::StaleGeneration => "credential_superseded",
                    JwtError::Expired | JwtError::InvalidLifetime => "credential_expired",
                    JwtError::AgentRevoked => "credential_revoked",
                    JwtError::AgentUnknown => "credential_invalid",
                    JwtError::WalletMismatch | JwtError::IndexMismatch => {
                        return ApiError::forbidden("key_id_mismatch", msg)
                    }
                };
                ApiError::unauthorized(code, msg)
            }
            TaError::Passkey(p) => match p {
                PasskeyError::MalformedSignature => ApiError::unprocessable("invalid_der", msg),
                PasskeyError::MalformedAuthenticatorData | PasskeyError::MalformedClientData => {
                    ApiError::unprocessable("invalid_assertion", msg)
                }
                PasskeyError::UserVerificationMissing => {
                    ApiError::unauthorized("user_verification_missing", msg)
                }
                _ => ApiError::unauthorized("passkey_refused", msg),
            },
            TaError::WalletNotFound => ApiError::not_found("key_not_found", "key not found"),
            TaError::AgentNotFound => ApiError::not_found("agent_not_found", msg),
            TaError::AgentRevoked => ApiError::unauthorized("credential_revoked", msg),
            TaError::AgentExists => ApiError::Conflict {
                code: "agent_exists",
                message: msg,
            },
            TaError::InvalidRecipientLength(_) => ApiError::unprocessable("invalid_recipient", msg),
            TaError::InvalidPasskeyKey
            | TaError::InvalidRpId
            | TaError::InvalidPath
            | TaError::InvalidTransaction
            | TaError::MessageTooLong
            | TaError::InvalidAgentIndex
            | TaError::InvalidTtl
            | TaError::InvalidLabel => ApiError::unprocessable("invalid_value", msg),
            TaError::LimitReached => ApiError::RateLimited {
                scope: "tee capacity",
                retry_after_secs: 5,
            },
            // Only the rotation task asks for normal rotations, and handles this itself.
            TaError::JwtRotationRefused { .. } => ApiError::Conflict {
                code: "jwt_rotation_refused",
                message: msg,
            },
            // The TA refuses its sealed state as older than its monotonic counter: the
            // companion stops serving the TA routes (see `reconcile`).
            TaError::StateRolledBack { sealed, counter } => ApiError::detailed(
                StatusCode::SERVICE_UNAVAILABLE,
                crate::reconcile::TA_ROLLED_BACK,
                msg,
                serde_json::json!({ "sealedVersion": sealed, "counter": counter }),
            ),
            // The TA refused to sign an operator transaction above its ceilings (the companion
            // keeps within the per-transaction ones, so in practice: the spend budget is used
            // up until `retryAt`). Amounts in wei, as decimal strings.
            TaError::OperatorTxRefused(limit) => {
                let details = match limit {
                    OperatorLimit::GasLimit { requested, max } => serde_json::json!({
                        "limit": "gas_limit", "requested": requested, "max": max
                    }),
                    OperatorLimit::MaxFeePerGas { requested, max } => serde_json::json!({
                        "limit": "max_fee_per_gas",
                        "requested": requested.to_string(), "max": max.to_string()
                    }),
                    OperatorLimit::PriorityAboveMaxFee { priority, max_fee } => serde_json::json!({
                        "limit": "priority_fee",
                        "requested": priority.to_string(), "max": max_fee.to_string()
                    }),
                    OperatorLimit::SpendBudget {
                        requested,
                        available,
                        budget,
                        window_secs,
                        retry_at,
                    } => serde_json::json!({
                        "limit": "spend_budget",
                        "requested": requested.to_string(),
                        "available": available.to_string(),
                        "budget": budget.to_string(),
                        "windowSecs": window_secs,
                        "retryAt": retry_at,
                    }),
                };
                ApiError::detailed(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "operator_limit",
                    msg,
                    details,
                )
            }
            // Only the audit checkpoint task sends checkpoints, and handles these itself.
            TaError::AuditCheckpointOutOfStep { .. } => ApiError::Conflict {
                code: "audit_checkpoint_out_of_step",
                message: msg,
            },
            TaError::AuditBatchInvalid { .. } => ApiError::Internal(format!("TA: {msg}")),
            TaError::Protocol(_)
            | TaError::UnknownCommand(_)
            | TaError::Unsupported
            | TaError::OperatorKeyMissing
            | TaError::NoCurrentKid
            | TaError::InvalidMnemonic
            | TaError::WalletExists
            | TaError::Entropy
            | TaError::Storage(_)
            | TaError::Internal => ApiError::Internal(format!("TA: {msg}")),
        }
    }
}

impl From<TeeError> for ApiError {
    fn from(e: TeeError) -> Self {
        match e {
            TeeError::Ta(ta) => ta.into(),
            TeeError::Unavailable {
                reason,
                maybe_executed,
            } => {
                tracing::warn!(%reason, maybe_executed, "TEE unavailable");
                ApiError::TeeUnavailable
            }
            TeeError::NotBuilt(_) => ApiError::TeeUnavailable,
            TeeError::Protocol(p) => ApiError::Internal(format!("TEE protocol: {p}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_design() {
        let s = |e: ApiError| e.status().as_u16();
        assert_eq!(s(TaError::Jwt(JwtError::StaleGeneration).into()), 401);
        assert_eq!(s(TaError::Jwt(JwtError::WalletMismatch).into()), 403);
        assert_eq!(s(TaError::InvalidRecipientLength(19).into()), 422);
        assert_eq!(
            s(TaError::Passkey(PasskeyError::MalformedSignature).into()),
            422
        );
        assert_eq!(s(TaError::WalletNotFound.into()), 404);
        let rolled_back: ApiError = TaError::StateRolledBack {
            sealed: 2,
            counter: 3,
        }
        .into();
        assert_eq!(
            (rolled_back.status().as_u16(), rolled_back.code()),
            (503, "ta_rolled_back")
        );
        assert_eq!(
            s(TeeError::Unavailable {
                reason: "x".into(),
                maybe_executed: false
            }
            .into()),
            503
        );
        let budget: ApiError = TaError::OperatorTxRefused(OperatorLimit::SpendBudget {
            requested: 3,
            available: 2,
            budget: 10,
            window_secs: 86_400,
            retry_at: 77,
        })
        .into();
        assert_eq!(
            (budget.status().as_u16(), budget.code()),
            (503, "operator_limit")
        );
        assert!(budget.to_string().contains("spend budget"), "{budget}");
        assert_eq!(s(ChallengeRefusal::AlreadyUsed.into()), 401);
        assert_eq!(s(ChallengeRefusal::WrongPayload.into()), 403);
        assert_eq!(s(ApiError::TooLarge { limit: 1 }), 413);
        assert_eq!(
            s(ApiError::RateLimited {
                scope: "x",
                retry_after_secs: 3
            }),
            429
        );
    }

    #[test]
    fn rate_limited_sets_retry_after() {
        let r = ApiError::RateLimited {
            scope: "agent",
            retry_after_secs: 7,
        }
        .into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
    }
}
