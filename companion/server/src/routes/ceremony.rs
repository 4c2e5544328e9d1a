//! WebAuthn ceremony endpoints: `/BeginRegistration`,
//! `/CompleteRegistration` (creates the wallet in the TA:
//! [`crate::service::wallets::Wallets::register`]), and `/BeginAuthentication`
//! (payload-bound challenges). `/CreateKey`, the AWS shape over the same
//! registration ceremony, is in [`super::wallet`].

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::audit::{AuditMode, Audited};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::extract::JsonBody;
use crate::ops::{self, CHANGE_PASSKEY_REGISTRATION, NEW_WALLET_REGISTRATION};
use crate::service::wallets::Wallets;
use crate::state::AppState;
use crate::webauthn::{BeginAuthenticationResponse, BeginRegistrationResponse, Purpose};

/// `/BeginRegistration`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct BeginRegistrationRequest {
    /// Set to register a NEW passkey for this existing wallet (the first
    /// step of `/ChangePasskey`); absent for a new wallet.
    #[serde(default)]
    pub key_id: Option<String>,
    /// WebAuthn user name [default: `wallet-user`].
    #[serde(default)]
    pub user_name: Option<String>,
    /// WebAuthn user display name [default: `Agent Key Companion wallet`].
    #[serde(default)]
    pub user_display_name: Option<String>,
    /// Key description stored with the new wallet.
    #[serde(default)]
    pub description: Option<String>,
    /// AWS key usage [default: SIGN_VERIFY].
    #[serde(default)]
    pub key_usage: Option<String>,
    /// AWS key spec [default: ECC_SECG_P256K1].
    #[serde(default)]
    pub key_spec: Option<String>,
    /// AWS key origin [default: EXTERNAL_KMS].
    #[serde(default)]
    pub origin: Option<String>,
}

/// `/CompleteRegistration` and `/CreateKey`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CompleteRegistrationRequest {
    /// From `/BeginRegistration`.
    #[serde(default)]
    pub challenge_id: Option<String>,
    /// The authenticator's registration response (WebAuthn JSON).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub credential: Option<Value>,
    /// Overrides the description given at BeginRegistration.
    #[serde(default)]
    pub description: Option<String>,
    /// `/CreateKey` only: AWS key usage.
    #[serde(default)]
    pub key_usage: Option<String>,
    /// `/CreateKey` only: AWS key spec.
    #[serde(default)]
    pub key_spec: Option<String>,
    /// `/CreateKey` only: AWS key origin.
    #[serde(default)]
    pub origin: Option<String>,
    /// Refused: a bare key without proof of possession.
    #[serde(default)]
    pub passkey_public_key: Option<String>,
}

/// The new wallet.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct CompleteRegistrationResponse {
    /// Wallet id.
    pub key_id: String,
    /// Passkey credential id (base64url).
    pub credential_id: String,
    /// Owner address `m/44'/60'/0'/0/0`.
    pub address: String,
    /// Owner public key (SEC1 compressed, 0x hex).
    pub public_key: String,
    /// Owner path.
    pub derivation_path: String,
    /// Always `ready`.
    pub status: String,
}

/// `/BeginAuthentication`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct BeginAuthenticationRequest {
    /// The operation's key: the wallet id for wallet operations and
    /// CreateAgentKey, the agent key id `"{wallet}:{index}"` for
    /// RefreshAgentCredential and RevokeAgentCredential.
    #[serde(default)]
    pub key_id: Option<String>,
    /// Instead of KeyId for Sign/SignHash: a recorded address.
    #[serde(default)]
    pub address: Option<String>,
    /// The operation to authorise.
    #[serde(default)]
    pub purpose: Option<String>,
    /// The operation's request fields (without KeyId and WebAuthn), exactly
    /// as they will be sent to the operation endpoint.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
}

/// Start a registration ceremony.
#[utoipa::path(post, path = "/BeginRegistration", tag = "ceremonies",
    request_body = BeginRegistrationRequest,
    responses((status = 200, body = BeginRegistrationResponse), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn begin_registration(
    State(s): State<Arc<AppState>>,
    JsonBody(r): JsonBody<BeginRegistrationRequest>,
) -> Result<Json<BeginRegistrationResponse>, ApiError> {
    let user = r.user_name.clone().unwrap_or_else(|| "wallet-user".into());
    let display = r
        .user_display_name
        .clone()
        .unwrap_or_else(|| "Agent Key Companion wallet".into());
    if let Some(k) = &r.key_id {
        // A new passkey for an existing wallet (ChangePasskey).
        let id = ops::wallet_id(k)?;
        let w = id.to_uuid_string();
        if s.db.get_wallet(&w).await?.is_none() {
            return Err(ApiError::not_found(ErrorCode::KeyNotFound, "key not found"));
        }
        if let Some(other) = crate::replicas::wallet_elsewhere(&s, &w).await? {
            return Err(other.into());
        }
        return Ok(Json(
            s.begin_registration(Some(&w), CHANGE_PASSKEY_REGISTRATION, &user, &display, None)
                .await?,
        ));
    }
    let meta = json!({
        "Description": r.description.clone().unwrap_or_default(),
        "KeyUsage": r.key_usage.clone().unwrap_or_else(|| "SIGN_VERIFY".into()),
        "KeySpec": r.key_spec.clone().unwrap_or_else(|| "ECC_SECG_P256K1".into()),
        "Origin": r.origin.clone().unwrap_or_else(|| "EXTERNAL_KMS".into()),
    });
    Ok(Json(
        s.begin_registration(None, NEW_WALLET_REGISTRATION, &user, &display, Some(meta))
            .await?,
    ))
}

/// Finish a registration: create the wallet in the TA bound to the attested
/// passkey and the configured rpId.
#[utoipa::path(post, path = "/CompleteRegistration", tag = "ceremonies",
    request_body = CompleteRegistrationRequest,
    responses((status = 200, body = CompleteRegistrationResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn complete_registration(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    JsonBody(r): JsonBody<CompleteRegistrationRequest>,
) -> Result<Json<CompleteRegistrationResponse>, ApiError> {
    let res = Wallets(&s).register(&caller, &r).await;
    let key = res.as_ref().ok().map(|(w, _)| w.key_id.clone());
    let audit = Audited::new(&caller.actor, "RegisterWallet").key_id(key.as_deref());
    let (w, credential_id) = s.audited(audit, AuditMode::Durable, res).await?;
    Ok(Json(CompleteRegistrationResponse {
        key_id: w.key_id,
        credential_id,
        address: w.address.to_checksum(None),
        public_key: w.public_key,
        derivation_path: w.derivation_path,
        status: "ready".into(),
    }))
}

/// Start an authentication ceremony bound to an operation's exact payload.
#[utoipa::path(post, path = "/BeginAuthentication", tag = "ceremonies",
    request_body = BeginAuthenticationRequest,
    responses((status = 200, body = BeginAuthenticationResponse), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "GrantSession: `agent_revoked`, the agent key is revoked"),
        (status = 422, body = ErrorBody),
        (status = 502, body = ErrorBody, description = "GrantSession: the node or the bundler failed while the owner's operation was built")),
    security(("api_key" = [])))]
pub async fn begin_authentication(
    State(s): State<Arc<AppState>>,
    JsonBody(r): JsonBody<BeginAuthenticationRequest>,
) -> Result<Json<BeginAuthenticationResponse>, ApiError> {
    let purpose: Purpose = r
        .purpose
        .as_deref()
        .ok_or_else(|| {
            let names: Vec<&str> = Purpose::ALL.iter().map(|p| p.as_str()).collect();
            ApiError::bad_request(
                ErrorCode::PurposeRequired,
                format!(
                    "Purpose is required (one of {}), with the operation's Payload",
                    names.join(", ")
                ),
            )
        })?
        .parse()?;
    if r.key_id.is_none() && r.address.is_none() {
        return Err(ApiError::bad_request(
            ErrorCode::MissingKey,
            "KeyId (or Address) is required",
        ));
    }
    if purpose == Purpose::GrantSession {
        // The payload is built into a UserOperation now; the ceremony keeps it.
        return Ok(Json(
            crate::service::sessions::begin_grant(&s, r.key_id.as_deref(), r.payload).await?,
        ));
    }
    let (wallet, digest) = ops::ceremony_target(
        &s,
        purpose,
        r.key_id.as_deref(),
        r.address.as_deref(),
        r.payload,
    )
    .await?;
    Ok(Json(
        s.begin_authentication(&wallet, purpose, &digest, None)
            .await?,
    ))
}
