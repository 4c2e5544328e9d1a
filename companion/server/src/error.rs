//! The one error type of the HTTP API and its one mapping to statuses
//! (companion/README.md, *Errors*): every error body is `{"error": "...", "code": "..."}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kms_chain::session::RefusalCode;
use kms_db::{ChallengeRefusal, DbError};
use kms_proto::{JwtError, OperatorLimit, PasskeyError, TaError};
use kms_tee_client::TeeError;

use crate::service::credentials::CredentialError;
use crate::service::intents::IntentError;
use serde::Serialize;
use utoipa::ToSchema;

/// Every `code` the API answers: stable and machine-readable, one variant per code (the
/// policy refusals are the validator's, [`RefusalCode`]). `/openapi.json` lists them as the
/// values of [`ErrorBody::code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A policy refusal (403): what the session's rules on chain refuse, by rule.
    Refusal(RefusalCode),
    /// `account_required`: The agent holds sessions on several accounts: the intent must name
    /// one (`account`).
    AccountRequired,
    /// `account_unfunded`: The account cannot pay for its operation's gas (AA21).
    AccountUnfunded,
    /// `agent_exists`: The TA already holds an agent at this index.
    AgentExists,
    /// `agent_not_found`: No such agent key (or one whose creation did not complete).
    AgentNotFound,
    /// `agent_revoked`: The agent key is revoked: it gets no new session.
    AgentRevoked,
    /// `api_key_invalid`: The API key is unknown or revoked.
    ApiKeyInvalid,
    /// `api_key_required`: The route needs an API key.
    ApiKeyRequired,
    /// `assertion_invalid`: The WebAuthn assertion does not verify.
    AssertionInvalid,
    /// `audit_checkpoint_out_of_step`: An audit checkpoint does not extend the TA's anchor.
    AuditCheckpointOutOfStep,
    /// `audit_unavailable`: A signature withheld: its audit event could not be committed.
    AuditUnavailable,
    /// `body_timeout`: The request body was not received in time.
    BodyTimeout,
    /// `body_too_large`: The request body is over the limit (refused while reading).
    BodyTooLarge,
    /// `body_unreadable`: The request body could not be read.
    BodyUnreadable,
    /// `bundler_rejected`: The bundler refused the operation in validation.
    BundlerRejected,
    /// `bundler_unavailable`: The bundler could not be reached, or its answer said nothing usable.
    BundlerUnavailable,
    /// `ceremony_required`: The operation needs the owner's passkey ceremony.
    CeremonyRequired,
    /// `chain_not_configured`: The companion has no chain settings.
    ChainNotConfigured,
    /// `chain_revoke_failed`: The operator's on-chain revocation of a session failed.
    ChainRevokeFailed,
    /// `chain_unavailable`: The node could not be reached or answered with an error.
    ChainUnavailable,
    /// `database_unavailable`: The database could not be reached (no connection within the pool's
    /// wait, or the connection failed); retry.
    DatabaseUnavailable,
    /// `challenge_expired`: The ceremony expired.
    ChallengeExpired,
    /// `challenge_mismatch`: The assertion was made for another challenge.
    ChallengeMismatch,
    /// `challenge_unknown`: No ceremony has this id.
    ChallengeUnknown,
    /// `challenge_used`: The ceremony was already used (a replay).
    ChallengeUsed,
    /// `challenge_wrong_key`: The ceremony was started for another key.
    ChallengeWrongKey,
    /// `challenge_wrong_kind`: A registration ceremony where an authentication one is needed, or the reverse.
    ChallengeWrongKind,
    /// `challenge_wrong_purpose`: The ceremony was started for another operation.
    ChallengeWrongPurpose,
    /// `credential_expired`: The agent credential has expired.
    CredentialExpired,
    /// `credential_invalid`: Not a credential the companion issued for this key (forged or tampered).
    CredentialInvalid,
    /// `credential_malformed`: The Bearer is not a credential of the companion's shape.
    CredentialMalformed,
    /// `credential_missing`: The route needs an agent credential (`Authorization: Bearer`).
    CredentialMissing,
    /// `credential_revoked`: The agent key is revoked.
    CredentialRevoked,
    /// `credential_superseded`: An earlier credential of the agent (refreshed or revoked since).
    CredentialSuperseded,
    /// `gas_above_ceiling`: The network's fees are over this companion's ceilings: nothing was signed.
    GasAboveCeiling,
    /// `grant_failed`: The owner's grant was included but its execution failed.
    GrantFailed,
    /// `idempotency_key_reused`: An `Idempotency-Key` reused for different calls.
    IdempotencyKeyReused,
    /// `intent_not_found`: No intent of this agent has this userOpHash.
    IntentNotFound,
    /// `internal`: A fault that is not the client's (details only logged).
    Internal,
    /// `invalid_assertion`: The assertion's authenticator data or client data is malformed.
    InvalidAssertion,
    /// `invalid_base64`: A field is not valid base64.
    InvalidBase64,
    /// `invalid_credential`: The ceremony's credential is not a WebAuthn response.
    InvalidCredential,
    /// `invalid_der`: A signature is not valid DER.
    InvalidDer,
    /// `invalid_derivation_path`: A derivation path that does not parse or is not allowed.
    InvalidDerivationPath,
    /// `invalid_hex`: A field is not valid hex.
    InvalidHex,
    /// `invalid_idempotency_key`: An `Idempotency-Key` that is empty, too long or not visible ASCII.
    InvalidIdempotencyKey,
    /// `invalid_key_id`: A key id that is not a wallet UUID (or `wallet:index`).
    InvalidKeyId,
    /// `invalid_label`: An agent label that is too long or not printable.
    InvalidLabel,
    /// `invalid_length`: A field of the wrong length.
    InvalidLength,
    /// `invalid_limit`: A list limit out of range.
    InvalidLimit,
    /// `invalid_number`: A number that does not parse.
    InvalidNumber,
    /// `invalid_purpose`: An unknown ceremony Purpose.
    InvalidPurpose,
    /// `invalid_recipient`: A transaction recipient that is not 20 bytes.
    InvalidRecipient,
    /// `invalid_request`: A structurally wrong request.
    InvalidRequest,
    /// `invalid_session`: A session grant the validator would refuse.
    InvalidSession,
    /// `invalid_target`: An `x-amz-target` header for another operation.
    InvalidTarget,
    /// `invalid_ttl`: A credential lifetime out of range.
    InvalidTtl,
    /// `invalid_value`: A well-formed but invalid value.
    InvalidValue,
    /// `jwt_rotation_refused`: The TA refused a JWT secret rotation (too soon).
    JwtRotationRefused,
    /// `key_id_mismatch`: The request names another agent than its credential.
    KeyIdMismatch,
    /// `key_not_found`: No such wallet key.
    KeyNotFound,
    /// `lane_busy`: Another companion sharing the database is building an intent of this agent
    /// (its nonce lane); retry.
    LaneBusy,
    /// `legacy_assertion_refused`: The legacy raw passkey assertion is refused: run the ceremony.
    LegacyAssertionRefused,
    /// `malformed_json`: The body is not JSON.
    MalformedJson,
    /// `method_not_allowed`: The route does not answer this method.
    MethodNotAllowed,
    /// `missing_key`: The request names no key.
    MissingKey,
    /// `missing_target`: The `x-amz-target` header is required.
    MissingTarget,
    /// `no_calls`: An intent without calls.
    NoCalls,
    /// `not_account_signer`: The account's signer is not this wallet's owner key in the TA (the
    /// account refuses the owner's signature: AA24).
    NotAccountSigner,
    /// `not_revoker`: The operator key is not the session's revoker.
    NotRevoker,
    /// `operator_limit`: The operator's transaction is over a ceiling of the TA.
    OperatorLimit,
    /// `origin_not_allowed`: The ceremony came from an origin the companion does not allow.
    OriginNotAllowed,
    /// `overloaded`: Too many requests in progress.
    Overloaded,
    /// `passkey_refused`: The TA refused the passkey assertion.
    PasskeyRefused,
    /// `payload_mismatch`: The assertion was made for a different payload than this request.
    PayloadMismatch,
    /// `permission_not_granted`: The agent holds no active session matching the ERC-7715
    /// request (grant it the request's session first).
    PermissionNotGranted,
    /// `permission_request_closed`: The ERC-7715 request was already decided, or expired.
    PermissionRequestClosed,
    /// `permission_request_not_found`: No such ERC-7715 permission request.
    PermissionRequestNotFound,
    /// `purpose_required`: The ceremony needs a Purpose.
    PurposeRequired,
    /// `rate_limited`: A rate limit: retry after `Retry-After` seconds.
    RateLimited,
    /// `registration_required`: The operation needs a registration ceremony.
    RegistrationRequired,
    /// `request_timeout`: The answer took longer than the request timeout.
    RequestTimeout,
    /// `route_not_found`: No such route.
    RouteNotFound,
    /// `sign_count_regression`: The authenticator's signature counter went backwards (a cloned passkey).
    SignCountRegression,
    /// `ta_rolled_back`: The TA's state is older than the database: refused until a restore is accepted.
    TaRolledBack,
    /// `tee_unavailable`: The TEE cannot be reached.
    TeeUnavailable,
    /// `too_many_calls`: An intent with too many calls.
    TooManyCalls,
    /// `too_many_in_flight`: The agent has the most operations open in its lane on the account;
    /// retry once one has settled.
    TooManyInFlight,
    /// `transaction_failed`: The operator's transaction failed or was not mined in time.
    TransactionFailed,
    /// `unknown_field`: A field the request type does not know.
    UnknownField,
    /// `unsupported_account`: The account is not of a kind this grant needs (not an ERC-7579
    /// account with validator modules, or an `AgentAccount` named for a module grant).
    UnsupportedAccount,
    /// `unsupported_passkey`: A passkey of an algorithm the TA does not verify (only ES256).
    UnsupportedPasskey,
    /// `wallet_on_other_ta`: The wallet is held by another TA than this companion's, or the
    /// agent credential was minted by another TA (421, with `details.walletTa`, `thisTa` and
    /// `namedBy`: `wallet` or `credential`): send its requests to a companion attached to that
    /// TA.
    WalletOnOtherTa,
    /// `user_verification_missing`: The assertion lacks user verification.
    UserVerificationMissing,
}

impl ErrorCode {
    /// Every code but the policy refusals (see [`ErrorCode::all`]).
    pub const OWN: [ErrorCode; 93] = [
        ErrorCode::AccountRequired,
        ErrorCode::AccountUnfunded,
        ErrorCode::AgentExists,
        ErrorCode::AgentNotFound,
        ErrorCode::AgentRevoked,
        ErrorCode::ApiKeyInvalid,
        ErrorCode::ApiKeyRequired,
        ErrorCode::AssertionInvalid,
        ErrorCode::AuditCheckpointOutOfStep,
        ErrorCode::AuditUnavailable,
        ErrorCode::BodyTimeout,
        ErrorCode::BodyTooLarge,
        ErrorCode::BodyUnreadable,
        ErrorCode::BundlerRejected,
        ErrorCode::BundlerUnavailable,
        ErrorCode::CeremonyRequired,
        ErrorCode::ChainNotConfigured,
        ErrorCode::ChainRevokeFailed,
        ErrorCode::ChainUnavailable,
        ErrorCode::ChallengeExpired,
        ErrorCode::DatabaseUnavailable,
        ErrorCode::ChallengeMismatch,
        ErrorCode::ChallengeUnknown,
        ErrorCode::ChallengeUsed,
        ErrorCode::ChallengeWrongKey,
        ErrorCode::ChallengeWrongKind,
        ErrorCode::ChallengeWrongPurpose,
        ErrorCode::CredentialExpired,
        ErrorCode::CredentialInvalid,
        ErrorCode::CredentialMalformed,
        ErrorCode::CredentialMissing,
        ErrorCode::CredentialRevoked,
        ErrorCode::CredentialSuperseded,
        ErrorCode::GasAboveCeiling,
        ErrorCode::GrantFailed,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::IntentNotFound,
        ErrorCode::Internal,
        ErrorCode::InvalidAssertion,
        ErrorCode::InvalidBase64,
        ErrorCode::InvalidCredential,
        ErrorCode::InvalidDer,
        ErrorCode::InvalidDerivationPath,
        ErrorCode::InvalidHex,
        ErrorCode::InvalidIdempotencyKey,
        ErrorCode::InvalidKeyId,
        ErrorCode::InvalidLabel,
        ErrorCode::InvalidLength,
        ErrorCode::InvalidLimit,
        ErrorCode::InvalidNumber,
        ErrorCode::InvalidPurpose,
        ErrorCode::InvalidRecipient,
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidSession,
        ErrorCode::InvalidTarget,
        ErrorCode::InvalidTtl,
        ErrorCode::InvalidValue,
        ErrorCode::JwtRotationRefused,
        ErrorCode::KeyIdMismatch,
        ErrorCode::KeyNotFound,
        ErrorCode::LaneBusy,
        ErrorCode::LegacyAssertionRefused,
        ErrorCode::MalformedJson,
        ErrorCode::MethodNotAllowed,
        ErrorCode::MissingKey,
        ErrorCode::MissingTarget,
        ErrorCode::NoCalls,
        ErrorCode::NotAccountSigner,
        ErrorCode::NotRevoker,
        ErrorCode::OperatorLimit,
        ErrorCode::OriginNotAllowed,
        ErrorCode::Overloaded,
        ErrorCode::PasskeyRefused,
        ErrorCode::PayloadMismatch,
        ErrorCode::PermissionNotGranted,
        ErrorCode::PermissionRequestClosed,
        ErrorCode::PermissionRequestNotFound,
        ErrorCode::PurposeRequired,
        ErrorCode::RateLimited,
        ErrorCode::RegistrationRequired,
        ErrorCode::RequestTimeout,
        ErrorCode::RouteNotFound,
        ErrorCode::SignCountRegression,
        ErrorCode::TaRolledBack,
        ErrorCode::TeeUnavailable,
        ErrorCode::TooManyCalls,
        ErrorCode::TooManyInFlight,
        ErrorCode::TransactionFailed,
        ErrorCode::UnknownField,
        ErrorCode::UnsupportedAccount,
        ErrorCode::UnsupportedPasskey,
        ErrorCode::UserVerificationMissing,
        ErrorCode::WalletOnOtherTa,
    ];

    /// Every code, the policy refusals included.
    pub fn all() -> impl Iterator<Item = ErrorCode> {
        Self::OWN
            .into_iter()
            .chain(RefusalCode::ALL.into_iter().map(ErrorCode::Refusal))
    }

    /// The code as answered.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Refusal(r) => r.as_str(),
            ErrorCode::AccountRequired => "account_required",
            ErrorCode::AccountUnfunded => "account_unfunded",
            ErrorCode::AgentExists => "agent_exists",
            ErrorCode::AgentNotFound => "agent_not_found",
            ErrorCode::AgentRevoked => "agent_revoked",
            ErrorCode::ApiKeyInvalid => "api_key_invalid",
            ErrorCode::ApiKeyRequired => "api_key_required",
            ErrorCode::AssertionInvalid => "assertion_invalid",
            ErrorCode::AuditCheckpointOutOfStep => "audit_checkpoint_out_of_step",
            ErrorCode::AuditUnavailable => "audit_unavailable",
            ErrorCode::BodyTimeout => "body_timeout",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::BodyUnreadable => "body_unreadable",
            ErrorCode::BundlerRejected => "bundler_rejected",
            ErrorCode::BundlerUnavailable => "bundler_unavailable",
            ErrorCode::CeremonyRequired => "ceremony_required",
            ErrorCode::ChainNotConfigured => "chain_not_configured",
            ErrorCode::ChainRevokeFailed => "chain_revoke_failed",
            ErrorCode::ChainUnavailable => "chain_unavailable",
            ErrorCode::DatabaseUnavailable => "database_unavailable",
            ErrorCode::ChallengeExpired => "challenge_expired",
            ErrorCode::ChallengeMismatch => "challenge_mismatch",
            ErrorCode::ChallengeUnknown => "challenge_unknown",
            ErrorCode::ChallengeUsed => "challenge_used",
            ErrorCode::ChallengeWrongKey => "challenge_wrong_key",
            ErrorCode::ChallengeWrongKind => "challenge_wrong_kind",
            ErrorCode::ChallengeWrongPurpose => "challenge_wrong_purpose",
            ErrorCode::CredentialExpired => "credential_expired",
            ErrorCode::CredentialInvalid => "credential_invalid",
            ErrorCode::CredentialMalformed => "credential_malformed",
            ErrorCode::CredentialMissing => "credential_missing",
            ErrorCode::CredentialRevoked => "credential_revoked",
            ErrorCode::CredentialSuperseded => "credential_superseded",
            ErrorCode::GasAboveCeiling => "gas_above_ceiling",
            ErrorCode::GrantFailed => "grant_failed",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::IntentNotFound => "intent_not_found",
            ErrorCode::Internal => "internal",
            ErrorCode::InvalidAssertion => "invalid_assertion",
            ErrorCode::InvalidBase64 => "invalid_base64",
            ErrorCode::InvalidCredential => "invalid_credential",
            ErrorCode::InvalidDer => "invalid_der",
            ErrorCode::InvalidDerivationPath => "invalid_derivation_path",
            ErrorCode::InvalidHex => "invalid_hex",
            ErrorCode::InvalidIdempotencyKey => "invalid_idempotency_key",
            ErrorCode::InvalidKeyId => "invalid_key_id",
            ErrorCode::InvalidLabel => "invalid_label",
            ErrorCode::InvalidLength => "invalid_length",
            ErrorCode::InvalidLimit => "invalid_limit",
            ErrorCode::InvalidNumber => "invalid_number",
            ErrorCode::InvalidPurpose => "invalid_purpose",
            ErrorCode::InvalidRecipient => "invalid_recipient",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidSession => "invalid_session",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::InvalidTtl => "invalid_ttl",
            ErrorCode::InvalidValue => "invalid_value",
            ErrorCode::JwtRotationRefused => "jwt_rotation_refused",
            ErrorCode::KeyIdMismatch => "key_id_mismatch",
            ErrorCode::KeyNotFound => "key_not_found",
            ErrorCode::LaneBusy => "lane_busy",
            ErrorCode::LegacyAssertionRefused => "legacy_assertion_refused",
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::MissingKey => "missing_key",
            ErrorCode::MissingTarget => "missing_target",
            ErrorCode::NoCalls => "no_calls",
            ErrorCode::NotAccountSigner => "not_account_signer",
            ErrorCode::NotRevoker => "not_revoker",
            ErrorCode::OperatorLimit => "operator_limit",
            ErrorCode::OriginNotAllowed => "origin_not_allowed",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::PasskeyRefused => "passkey_refused",
            ErrorCode::PayloadMismatch => "payload_mismatch",
            ErrorCode::PermissionNotGranted => "permission_not_granted",
            ErrorCode::PermissionRequestClosed => "permission_request_closed",
            ErrorCode::PermissionRequestNotFound => "permission_request_not_found",
            ErrorCode::PurposeRequired => "purpose_required",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::RegistrationRequired => "registration_required",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::RouteNotFound => "route_not_found",
            ErrorCode::SignCountRegression => "sign_count_regression",
            ErrorCode::TaRolledBack => "ta_rolled_back",
            ErrorCode::TeeUnavailable => "tee_unavailable",
            ErrorCode::TooManyCalls => "too_many_calls",
            ErrorCode::TooManyInFlight => "too_many_in_flight",
            ErrorCode::TransactionFailed => "transaction_failed",
            ErrorCode::UnknownField => "unknown_field",
            ErrorCode::UnsupportedAccount => "unsupported_account",
            ErrorCode::UnsupportedPasskey => "unsupported_passkey",
            ErrorCode::UserVerificationMissing => "user_verification_missing",
            ErrorCode::WalletOnOtherTa => "wallet_on_other_ta",
        }
    }
}

/// In `/openapi.json`: a string, one of every code.
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(ErrorCode::all().map(ErrorCode::as_str)))
            .description(Some(
                "Stable machine-readable code: one value per way a request can fail",
            ))
            .into()
    }
}

impl utoipa::ToSchema for ErrorCode {}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Human-readable message (never contains secrets).
    pub error: String,
    /// Stable machine-readable code.
    #[schema(value_type = ErrorCode)]
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
        code: ErrorCode,
        /// Message.
        message: String,
    },
    /// 401: missing/invalid API key, credential, or WebAuthn ceremony.
    #[error("{message}")]
    Unauthorized {
        /// Code.
        code: ErrorCode,
        /// Message.
        message: String,
    },
    /// 403: policy refusal or a keyId that does not match the credential.
    #[error("{message}")]
    Forbidden {
        /// Code.
        code: ErrorCode,
        /// Message.
        message: String,
    },
    /// 404: unknown key.
    #[error("{message}")]
    NotFound {
        /// Code.
        code: ErrorCode,
        /// Message.
        message: String,
    },
    /// 409: the request conflicts with the current state.
    #[error("{message}")]
    Conflict {
        /// Code.
        code: ErrorCode,
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
        code: ErrorCode,
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
        code: ErrorCode,
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
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }
    /// 401.
    pub fn unauthorized(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Unauthorized {
            code,
            message: message.into(),
        }
    }
    /// 403.
    pub fn forbidden(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Forbidden {
            code,
            message: message.into(),
        }
    }
    /// 404.
    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
        }
    }
    /// 422.
    pub fn unprocessable(code: ErrorCode, message: impl Into<String>) -> Self {
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
        code: ErrorCode,
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
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::Unauthorized { code, .. }
            | ApiError::Forbidden { code, .. }
            | ApiError::NotFound { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Unprocessable { code, .. }
            | ApiError::Detailed { code, .. } => *code,
            ApiError::TooLarge { .. } => ErrorCode::BodyTooLarge,
            ApiError::RateLimited { .. } => ErrorCode::RateLimited,
            ApiError::TeeUnavailable => ErrorCode::TeeUnavailable,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The stable code as answered.
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
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
        if e.is_unavailable() {
            // The server is down or unreachable (docs/DEPLOY.md, "Failures"): 503, the detail
            // only logged.
            tracing::warn!(error = %e, "database unavailable");
            return ApiError::detailed(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::DatabaseUnavailable,
                "the database cannot be reached; retry",
                serde_json::json!({}),
            );
        }
        ApiError::Internal(format!("database: {e}"))
    }
}

impl From<ChallengeRefusal> for ApiError {
    fn from(r: ChallengeRefusal) -> Self {
        let msg = r.to_string();
        match r {
            ChallengeRefusal::Unknown => ApiError::unauthorized(
                ErrorCode::ChallengeUnknown,
                "unknown ChallengeId: start a ceremony with /BeginAuthentication (or /BeginRegistration)",
            ),
            ChallengeRefusal::AlreadyUsed => ApiError::unauthorized(
                ErrorCode::ChallengeUsed,
                "this ceremony was already used (replayed assertion); start a new one",
            ),
            ChallengeRefusal::Expired => ApiError::unauthorized(
                ErrorCode::ChallengeExpired,
                "the ceremony expired (300 s); start a new one",
            ),
            ChallengeRefusal::WrongKind(_) => ApiError::unauthorized(ErrorCode::ChallengeWrongKind, msg),
            ChallengeRefusal::WrongWallet => ApiError::forbidden(ErrorCode::ChallengeWrongKey, msg),
            ChallengeRefusal::WrongPurpose(p) => ApiError::forbidden(
                ErrorCode::ChallengeWrongPurpose,
                format!("the ceremony was started for Purpose {p}, not for this operation"),
            ),
            ChallengeRefusal::WrongPayload => ApiError::forbidden(
                ErrorCode::PayloadMismatch,
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
                    JwtError::Malformed | JwtError::UnsupportedAlgorithm => {
                        ErrorCode::CredentialMalformed
                    }
                    JwtError::UnknownKid | JwtError::RetiredKid | JwtError::BadSignature => {
                        ErrorCode::CredentialInvalid
                    }
                    JwtError::StaleGeneration => ErrorCode::CredentialSuperseded,
                    JwtError::Expired | JwtError::InvalidLifetime => ErrorCode::CredentialExpired,
                    JwtError::AgentRevoked => ErrorCode::CredentialRevoked,
                    JwtError::AgentUnknown => ErrorCode::CredentialInvalid,
                    JwtError::WalletMismatch | JwtError::IndexMismatch => {
                        return ApiError::forbidden(ErrorCode::KeyIdMismatch, msg)
                    }
                    // The companion refuses such a credential before it reaches the TA
                    // (`replicas::credential_elsewhere`); the TA's own refusal is the same
                    // routing fault, without the names the companion adds.
                    JwtError::OtherTa => {
                        return ApiError::detailed(
                            StatusCode::MISDIRECTED_REQUEST,
                            ErrorCode::WalletOnOtherTa,
                            format!(
                                "{msg}: send its requests to a companion attached to the TA \
                                 its iss claim names"
                            ),
                            serde_json::json!({ "namedBy": "credential" }),
                        )
                    }
                };
                ApiError::unauthorized(code, msg)
            }
            TaError::Passkey(p) => match p {
                PasskeyError::MalformedSignature => {
                    ApiError::unprocessable(ErrorCode::InvalidDer, msg)
                }
                PasskeyError::MalformedAuthenticatorData | PasskeyError::MalformedClientData => {
                    ApiError::unprocessable(ErrorCode::InvalidAssertion, msg)
                }
                PasskeyError::UserVerificationMissing => {
                    ApiError::unauthorized(ErrorCode::UserVerificationMissing, msg)
                }
                _ => ApiError::unauthorized(ErrorCode::PasskeyRefused, msg),
            },
            TaError::WalletNotFound => ApiError::not_found(ErrorCode::KeyNotFound, "key not found"),
            TaError::AgentNotFound => ApiError::not_found(ErrorCode::AgentNotFound, msg),
            TaError::AgentRevoked => ApiError::unauthorized(ErrorCode::CredentialRevoked, msg),
            TaError::AgentExists => ApiError::Conflict {
                code: ErrorCode::AgentExists,
                message: msg,
            },
            TaError::InvalidRecipientLength(_) => {
                ApiError::unprocessable(ErrorCode::InvalidRecipient, msg)
            }
            TaError::InvalidPasskeyKey
            | TaError::InvalidRpId
            | TaError::InvalidPath
            | TaError::InvalidTransaction
            | TaError::MessageTooLong
            | TaError::InvalidAgentIndex
            | TaError::InvalidTtl
            | TaError::InvalidLabel
            // An EIP-7702 authorisation with chain id 0 or nonce 2^64 - 1 (the message says which
            // bounds).
            | TaError::InvalidAuthorization => ApiError::unprocessable(ErrorCode::InvalidValue, msg),
            TaError::LimitReached => ApiError::RateLimited {
                scope: "tee capacity",
                retry_after_secs: 5,
            },
            // Only the rotation task asks for normal rotations, and handles this itself.
            TaError::JwtRotationRefused { .. } => ApiError::Conflict {
                code: ErrorCode::JwtRotationRefused,
                message: msg,
            },
            // The TA refuses its sealed state as older than its monotonic counter: the
            // companion stops serving the TA routes (see `reconcile`).
            TaError::StateRolledBack { sealed, counter } => ApiError::detailed(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::TaRolledBack,
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
                    ErrorCode::OperatorLimit,
                    msg,
                    details,
                )
            }
            // Only the audit checkpoint task sends checkpoints, and handles these itself.
            TaError::AuditCheckpointOutOfStep { .. } => ApiError::Conflict {
                code: ErrorCode::AuditCheckpointOutOfStep,
                message: msg,
            },
            // The companion's batcher sends 1 to MAX_AGENT_SIGNATURES_PER_CALL requests.
            TaError::AuditBatchInvalid { .. } | TaError::SignBatchInvalid { .. } => {
                ApiError::Internal(format!("TA: {msg}"))
            }
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

impl From<crate::revocation::RevokeFailure> for ApiError {
    fn from(f: crate::revocation::RevokeFailure) -> Self {
        use crate::revocation::RevokeFailure;
        match f {
            RevokeFailure::Database(m) => ApiError::Internal(format!("database: {m}")),
            RevokeFailure::Tee(e) => e.into(),
            RevokeFailure::UnknownToTa(e) => TeeError::Ta(e).into(),
            RevokeFailure::TaRolledBack(reason) => crate::reconcile::rolled_back_error(&reason),
            other => ApiError::internal(other.to_string()),
        }
    }
}

/// The services' errors as HTTP: each service's typed error becomes its answer here, once.
impl From<CredentialError> for ApiError {
    fn from(e: CredentialError) -> Self {
        let msg = e.to_string();
        match e {
            CredentialError::Missing | CredentialError::NotBearer => {
                ApiError::unauthorized(ErrorCode::CredentialMissing, msg)
            }
            CredentialError::MalformedHeader | CredentialError::Malformed(_) => {
                ApiError::unauthorized(ErrorCode::CredentialMalformed, msg)
            }
            CredentialError::KeyIdMismatch => ApiError::forbidden(ErrorCode::KeyIdMismatch, msg),
            CredentialError::AgentNotFound => ApiError::not_found(ErrorCode::AgentNotFound, msg),
            CredentialError::Revoked => ApiError::unauthorized(ErrorCode::CredentialRevoked, msg),
            CredentialError::Superseded => {
                ApiError::unauthorized(ErrorCode::CredentialSuperseded, msg)
            }
            CredentialError::Invalid => ApiError::unauthorized(ErrorCode::CredentialInvalid, msg),
            CredentialError::Expired => ApiError::unauthorized(ErrorCode::CredentialExpired, msg),
            CredentialError::WrongTa(w) => w.into(),
            CredentialError::Db(d) => d.into(),
        }
    }
}

impl From<IntentError> for ApiError {
    fn from(e: IntentError) -> Self {
        use axum::http::StatusCode;
        use serde_json::json;
        match e {
            IntentError::NoSession {
                agent,
                requested: None,
                ..
            } => ApiError::detailed(
                StatusCode::FORBIDDEN,
                ErrorCode::Refusal(kms_chain::session::RefusalCode::NoSession),
                "this agent has no active session on any account: the owner registers one with \
                 POST /kms/agent-sessions (a grant counts once it is included)",
                json!({"agentAddress": agent, "accounts": []}),
            ),
            IntentError::NoSession {
                agent,
                requested: Some(account),
                accounts,
            } => ApiError::detailed(
                StatusCode::FORBIDDEN,
                ErrorCode::Refusal(kms_chain::session::RefusalCode::NoSession),
                format!(
                    "this agent has no active session on account {account}: its sessions are on {}",
                    if accounts.is_empty() {
                        "no account".to_owned()
                    } else {
                        accounts
                            .iter()
                            .map(|a| a.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
                json!({"agentAddress": agent, "account": account, "accounts": accounts}),
            ),
            IntentError::AccountRequired { agent, accounts } => ApiError::detailed(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::AccountRequired,
                format!(
                    "this agent has sessions on {} accounts: name the one to act from \
                     (`account`): {}",
                    accounts.len(),
                    accounts
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                json!({"agentAddress": agent, "accounts": accounts}),
            ),
            IntentError::OutdatedAccount {
                account,
                agent,
                used,
                validator,
            } => ApiError::detailed(
                StatusCode::FORBIDDEN,
                ErrorCode::Refusal(kms_chain::session::RefusalCode::NoSession),
                format!(
                    "account {account} checks sessions with validator {used}, not this \
                     companion's {validator}: its sessions were granted under earlier rules and \
                     are not used; grant the agent a session on an account of the current factory"
                ),
                json!({"account": account, "agentAddress": agent, "accountValidator": used,
                    "validator": validator}),
            ),
            IntentError::Refused(r) => crate::chain::refusal(&r),
            IntentError::GasBudgetExhausted {
                available,
                remaining,
                in_flight,
            } => ApiError::detailed(
                StatusCode::FORBIDDEN,
                ErrorCode::Refusal(RefusalCode::GasOverBudget),
                format!(
                    "only {available} wei of the gas budget are available (left {remaining}, in \
                     flight {in_flight}): less than even the bundler's gas estimation charges, so \
                     no operation of this agent can pass until the owner grants more gas"
                ),
                json!({
                    "maxGasCost": null,
                    "available": available.to_string(),
                    "remainingGasBudget": remaining.to_string(),
                    "inFlight": in_flight.to_string(),
                }),
            ),
            IntentError::IdempotencyKeyReused { key, user_op_hash } => ApiError::detailed(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::IdempotencyKeyReused,
                format!(
                    "Idempotency-Key {key:?} was used for another intent ({user_op_hash}) with \
                     different calls; use a new key for a new intent"
                ),
                json!({"idempotencyKey": key, "userOpHash": user_op_hash}),
            ),
            IntentError::Chain { error, account } => {
                crate::chain::chain_error(*error, Some(account))
            }
            IntentError::NotAccepted {
                error,
                account,
                user_op_hash,
                status,
                reason,
            } => not_accepted(*error, account, user_op_hash, status, reason),
            IntentError::TooManyInFlight {
                account,
                in_flight,
                max,
            } => ApiError::detailed(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyInFlight,
                format!(
                    "{in_flight} operations of this agent are open on {account} (at most {max}): \
                     retry once one of them has settled"
                ),
                json!({"account": account, "inFlight": in_flight, "max": max}),
            ),
            IntentError::NotFound => ApiError::not_found(
                ErrorCode::IntentNotFound,
                "no intent of this agent has this userOpHash",
            ),
            IntentError::Db(d) => d.into(),
            IntentError::Other(a) => a,
        }
    }
}

/// A submission that did not end with the bundler holding the operation: a verdict on the
/// operation (the intent `failed`, `dropped`, `cancelled` or `replaced`, or kept open after an
/// AA25 while the chain has not passed its nonce) is the bundler's refusal as usual (403 with a
/// policy code, 422 `bundler_rejected` / `account_unfunded`); no verdict (unreachable bundler, an
/// answer that says nothing about the operation) is 502 `bundler_unavailable`, the signed
/// operation kept. `details` always carry `userOpHash`, `status` and `statusReason`.
fn not_accepted(
    e: kms_chain::client::ChainError,
    account: alloy::primitives::Address,
    user_op_hash: alloy::primitives::B256,
    status: kms_db::IntentStatus,
    reason: kms_db::IntentReason,
) -> ApiError {
    use kms_db::IntentReason;
    let hash = format!("{user_op_hash:#x}");
    let err = match reason {
        IntentReason::BundlerUnreachable | IntentReason::BundlerAnswerUnusable => {
            ApiError::detailed(
                StatusCode::BAD_GATEWAY,
                ErrorCode::BundlerUnavailable,
                format!(
                    "the bundler could not be reached or its answer could not be used; the \
                     signed operation is kept, re-submitted as is and looked up until it settles \
                     (GET /agent/intents/{hash}): {e}"
                ),
                serde_json::json!({}),
            )
        }
        _ => crate::chain::chain_error(e, Some(account)),
    };
    match err {
        ApiError::Detailed {
            status: http,
            code,
            message,
            mut details,
        } => {
            if let Some(d) = details.as_object_mut() {
                d.insert("userOpHash".into(), serde_json::json!(hash));
                d.insert("status".into(), serde_json::json!(status.as_str()));
                d.insert("statusReason".into(), serde_json::json!(reason.as_str()));
            }
            ApiError::Detailed {
                status: http,
                code,
                message,
                details,
            }
        }
        other => other,
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
    fn an_unreachable_database_is_503_and_other_database_faults_500() {
        for e in [sqlx::Error::PoolTimedOut, sqlx::Error::PoolClosed] {
            let a = ApiError::from(DbError::Sql(e));
            assert_eq!(
                (a.status().as_u16(), a.code()),
                (503, "database_unavailable")
            );
        }
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            ApiError::from(DbError::Sql(sqlx::Error::Io(io)))
                .status()
                .as_u16(),
            503
        );
        let a = ApiError::from(DbError::Sql(sqlx::Error::RowNotFound));
        assert_eq!((a.status().as_u16(), a.code()), (500, "internal"));
    }

    #[test]
    fn statuses_follow_design() {
        let s = |e: ApiError| e.status().as_u16();
        assert_eq!(s(TaError::Jwt(JwtError::StaleGeneration).into()), 401);
        assert_eq!(s(TaError::Jwt(JwtError::WalletMismatch).into()), 403);
        let other: ApiError = TaError::Jwt(JwtError::OtherTa).into();
        assert_eq!(
            (other.status().as_u16(), other.code()),
            (421, "wallet_on_other_ta")
        );
        assert_eq!(s(TaError::InvalidRecipientLength(19).into()), 422);
        assert_eq!(s(TaError::InvalidAuthorization.into()), 422);
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

    #[test]
    fn every_code_is_unique_and_snake_case() {
        let all: Vec<&str> = ErrorCode::all().map(ErrorCode::as_str).collect();
        let unique: std::collections::BTreeSet<&str> = all.iter().copied().collect();
        assert_eq!(
            unique.len(),
            all.len(),
            "a code is answered by two variants"
        );
        for c in &all {
            assert!(
                c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{c} is not snake_case"
            );
        }
        assert!(unique.contains("credential_superseded"));
        assert!(unique.contains("target_not_allowed"));
    }
}
