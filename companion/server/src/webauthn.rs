//! WebAuthn ceremonies (webauthn-rs), bound to TA nonces and payloads.
//!
//! Authentication: the server builds the exact TA body of the operation,
//! asks the TA for a one-time nonce, and sets the WebAuthn challenge to
//! `SHA-256(nonce ‖ payload digest)` (`kms_proto::authz::challenge`) in both
//! the options sent to the client and the stored webauthn-rs state. The
//! ceremony row records wallet, purpose and payload digest; finishing it
//! consumes the row (single use, 300 s), verifies the assertion with
//! webauthn-rs (UV required, origin, rpId, signature, sign-count
//! regression refused), and hands authenticatorData / clientDataJSON /
//! signature to the TA, which verifies them again.
//!
//! Registration: `start_passkey_registration` (UV required) and
//! `finish_passkey_registration`; the attested P-256 key becomes the
//! wallet's passkey in the TA.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kms_db::{ChallengeKind, NewChallenge};
use kms_proto::{GetChallenge, PasskeyAssertion, WalletId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use webauthn_rs::prelude::{
    COSEAlgorithm, COSEKeyType, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, Uuid, WebauthnError,
};

use crate::config::CEREMONY_TTL_SECS;
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// The operation an authentication ceremony authorises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Purpose {
    /// `/SignHash`.
    SignHash,
    /// `/Sign` (message or transaction).
    Sign,
    /// `/DeriveAddress`.
    DeriveAddress,
    /// `/GetPublicKey` with a DerivationPath.
    GetPublicKey,
    /// `/DeleteKey`.
    DeleteKey,
    /// `/ChangePasskey` (assertion by the current passkey).
    ChangePasskey,
    /// `/kms/create-agent-key`.
    CreateAgentKey,
    /// `/kms/refresh-agent-credential`.
    RefreshAgentCredential,
    /// `/kms/revoke-agent-credential`.
    RevokeAgentCredential,
    /// `/kms/agent-sessions`: the owner signs the UserOperation registering an agent's session
    /// (the challenge binds `SignMessage` of that operation's userOpHash).
    GrantSession,
}

impl Purpose {
    /// Every purpose.
    pub const ALL: [Purpose; 10] = [
        Purpose::SignHash,
        Purpose::Sign,
        Purpose::DeriveAddress,
        Purpose::GetPublicKey,
        Purpose::DeleteKey,
        Purpose::ChangePasskey,
        Purpose::CreateAgentKey,
        Purpose::RefreshAgentCredential,
        Purpose::RevokeAgentCredential,
        Purpose::GrantSession,
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::SignHash => "SignHash",
            Purpose::Sign => "Sign",
            Purpose::DeriveAddress => "DeriveAddress",
            Purpose::GetPublicKey => "GetPublicKey",
            Purpose::DeleteKey => "DeleteKey",
            Purpose::ChangePasskey => "ChangePasskey",
            Purpose::CreateAgentKey => "CreateAgentKey",
            Purpose::RefreshAgentCredential => "RefreshAgentCredential",
            Purpose::RevokeAgentCredential => "RevokeAgentCredential",
            Purpose::GrantSession => "GrantSession",
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Purpose {
    type Err = ApiError;
    fn from_str(s: &str) -> Result<Self, ApiError> {
        Purpose::ALL
            .iter()
            .copied()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<&str> = Purpose::ALL.iter().map(|p| p.as_str()).collect();
                ApiError::bad_request(
                    ErrorCode::InvalidPurpose,
                    format!("unknown Purpose {s:?}; one of {}", names.join(", ")),
                )
            })
    }
}

/// A request that carries the owner's passkey ceremony: its `CeremonyResponse` (if any) and
/// whether it sent the legacy raw `passkeyAssertion` (refused, with a message that says how to
/// run the ceremony instead).
pub trait CarriesCeremony {
    /// The ceremony's response, if the request carries one.
    fn ceremony(&self) -> Option<&CeremonyResponse>;
    /// Whether the request sent the legacy raw assertion.
    fn legacy_assertion(&self) -> bool;
}

/// Implements [`CarriesCeremony`] for request types by their two fields.
macro_rules! carries_ceremony {
    ($($t:ty => $ceremony:ident, $legacy:ident;)*) => {$(
        impl $crate::webauthn::CarriesCeremony for $t {
            fn ceremony(&self) -> Option<&$crate::webauthn::CeremonyResponse> {
                self.$ceremony.as_ref()
            }
            fn legacy_assertion(&self) -> bool {
                self.$legacy.is_some()
            }
        }
    )*};
}
pub(crate) use carries_ceremony;

/// A finished ceremony as sent with an operation: upstream's `WebAuthn`
/// (`webAuthnAssertion` on `/kms/*`) object.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CeremonyResponse {
    /// The id returned by `/BeginAuthentication` (or `/BeginRegistration`).
    #[serde(rename = "ChallengeId", alias = "challengeId")]
    pub challenge_id: String,
    /// The authenticator's response, WebAuthn JSON
    /// (`PublicKeyCredential` / `RegistrationResponseJSON`, base64url fields).
    #[serde(rename = "Credential", alias = "credential")]
    #[schema(value_type = Object)]
    pub credential: Value,
}

/// What `/BeginAuthentication` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct BeginAuthenticationResponse {
    /// Send this back as `WebAuthn.ChallengeId`.
    #[serde(rename = "ChallengeId")]
    pub challenge_id: String,
    /// `navigator.credentials.get()` options (`publicKey.challenge` is
    /// `SHA-256(TA nonce ‖ payload digest)`).
    #[serde(rename = "Options")]
    #[schema(value_type = Object)]
    pub options: Value,
    /// The operation it authorises.
    #[serde(rename = "Purpose")]
    pub purpose: Purpose,
    /// Hex digest of the exact TA payload being authorised.
    #[serde(rename = "PayloadDigest")]
    pub payload_digest: String,
    /// Expiry (unix seconds).
    #[serde(rename = "ExpiresAt")]
    pub expires_at: i64,
    /// For `GrantSession`: the UserOperation the assertion will authorise (userOpHash, account,
    /// whether it deploys the account, EntryPoint, chain id), built now and signed exactly as is.
    #[serde(rename = "UserOperation", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub user_operation: Option<Value>,
}

/// What `/BeginRegistration` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct BeginRegistrationResponse {
    /// Send this back as `ChallengeId`.
    #[serde(rename = "ChallengeId")]
    pub challenge_id: String,
    /// `navigator.credentials.create()` options.
    #[serde(rename = "Options")]
    #[schema(value_type = Object)]
    pub options: Value,
    /// Expiry (unix seconds).
    #[serde(rename = "ExpiresAt")]
    pub expires_at: i64,
}

fn internal<E: fmt::Display>(what: &'static str) -> impl FnOnce(E) -> ApiError {
    move |e| ApiError::internal(format!("{what}: {e}"))
}

fn new_ceremony_id() -> String {
    Uuid::new_v4().simple().to_string()
}

/// The SEC1 uncompressed P-256 key of a passkey.
pub fn passkey_sec1(passkey: &Passkey) -> Result<Vec<u8>, ApiError> {
    match &passkey.get_public_key().key {
        COSEKeyType::EC_EC2(k) if k.x.len() == 32 && k.y.len() == 32 => {
            let mut out = Vec::with_capacity(65);
            out.push(0x04);
            out.extend_from_slice(&k.x);
            out.extend_from_slice(&k.y);
            Ok(out)
        }
        _ => Err(ApiError::unprocessable(
            ErrorCode::UnsupportedPasskey,
            "the passkey is not a P-256 (ES256) key; the TEE verifies P-256 passkeys only",
        )),
    }
}

/// The credential id of a passkey, base64url.
pub fn passkey_credential_id(passkey: &Passkey) -> String {
    URL_SAFE_NO_PAD.encode(passkey.cred_id().as_ref() as &[u8])
}

/// The refusal for a request without a server ceremony.
pub fn ceremony_required(purpose: Purpose, legacy_present: bool, key_field: &str) -> ApiError {
    if legacy_present {
        ApiError::unauthorized(
            ErrorCode::LegacyAssertionRefused,
            format!(
                "a bare passkey assertion without a server challenge is not accepted; start a \
                 ceremony with POST /BeginAuthentication {{\"KeyId\": <{key_field}>, \"Purpose\": \
                 \"{purpose}\", \"Payload\": <this request's fields>}} and send its ChallengeId \
                 with the assertion"
            ),
        )
    } else {
        ApiError::unauthorized(
            ErrorCode::CeremonyRequired,
            format!(
                "this operation requires a WebAuthn ceremony: POST /BeginAuthentication with \
                 Purpose \"{purpose}\", then send {{ChallengeId, Credential}}"
            ),
        )
    }
}

impl AppState {
    /// Start an authentication ceremony for `purpose` over a payload with
    /// `payload_digest`, for `wallet`. `metadata` is kept with the ceremony (e.g. the
    /// UserOperation a `GrantSession` assertion authorises).
    pub async fn begin_authentication(
        &self,
        wallet: &WalletId,
        purpose: Purpose,
        payload_digest: &[u8; 32],
        metadata: Option<Value>,
    ) -> Result<BeginAuthenticationResponse, ApiError> {
        let wallet_str = wallet.to_uuid_string();
        let stored = self
            .db
            .get_passkey(&wallet_str)
            .await?
            .ok_or_else(|| ApiError::not_found(ErrorCode::KeyNotFound, "key not found"))?;
        let passkey: Passkey =
            serde_json::from_str(&stored.passkey_json).map_err(internal("stored passkey"))?;
        let nonce = self.tee.call(&GetChallenge { wallet_id: *wallet }).await?;
        let challenge = kms_proto::authz::challenge(&nonce.nonce, payload_digest);
        let (mut rcr, auth_state) = self
            .webauthn
            .start_passkey_authentication(std::slice::from_ref(&passkey))
            .map_err(internal("start authentication"))?;
        rcr.public_key.challenge = challenge.to_vec();
        let mut state_json = serde_json::to_value(&auth_state).map_err(internal("state"))?;
        let slot = state_json
            .get_mut("ast")
            .and_then(|a| a.get_mut("challenge"))
            .ok_or_else(|| ApiError::internal("authentication state has no challenge"))?;
        *slot = Value::String(URL_SAFE_NO_PAD.encode(challenge));
        // Check the edited state still deserialises.
        let _: PasskeyAuthentication =
            serde_json::from_value(state_json.clone()).map_err(internal("edited state"))?;
        let now = kms_db::now_secs();
        let id = new_ceremony_id();
        let digest_hex = hex::encode(payload_digest);
        let expires_at = now + CEREMONY_TTL_SECS;
        self.db
            .insert_challenge(&NewChallenge {
                id: id.clone(),
                kind: ChallengeKind::Authentication,
                wallet_id: Some(wallet_str),
                purpose: purpose.as_str().to_owned(),
                payload_digest: Some(digest_hex.clone()),
                state_json: state_json.to_string(),
                metadata_json: metadata.map(|m| m.to_string()),
                now,
                expires_at,
            })
            .await?;
        Ok(BeginAuthenticationResponse {
            challenge_id: id,
            options: serde_json::to_value(&rcr).map_err(internal("options"))?,
            purpose,
            payload_digest: digest_hex,
            expires_at,
            user_operation: None,
        })
    }

    /// Finish an authentication ceremony sent with an operation whose TA
    /// body has `payload_digest`. Returns the assertion to pass to the TA.
    pub async fn finish_authentication(
        &self,
        wallet: &WalletId,
        purpose: Purpose,
        payload_digest: &[u8; 32],
        request: &impl CarriesCeremony,
        key_field: &str,
    ) -> Result<PasskeyAssertion, ApiError> {
        let Some(ceremony) = request.ceremony() else {
            return Err(ceremony_required(
                purpose,
                request.legacy_assertion(),
                key_field,
            ));
        };
        let credential: PublicKeyCredential = serde_json::from_value(ceremony.credential.clone())
            .map_err(|e| {
            ApiError::bad_request(
                ErrorCode::InvalidCredential,
                format!("Credential is not a WebAuthn assertion response: {e}"),
            )
        })?;
        crate::der::parse_ecdsa_signature(&credential.response.signature).map_err(|e| {
            ApiError::unprocessable(ErrorCode::InvalidDer, format!("assertion signature: {e}"))
        })?;
        let wallet_str = wallet.to_uuid_string();
        let digest_hex = hex::encode(payload_digest);
        let now = kms_db::now_secs();
        let row = self
            .db
            .consume_challenge(
                &ceremony.challenge_id,
                ChallengeKind::Authentication,
                Some(&wallet_str),
                purpose.as_str(),
                Some(&digest_hex),
                now,
            )
            .await??;
        let stored = self
            .db
            .get_passkey(&wallet_str)
            .await?
            .ok_or_else(|| ApiError::not_found(ErrorCode::KeyNotFound, "key not found"))?;
        let mut passkey: Passkey =
            serde_json::from_str(&stored.passkey_json).map_err(internal("stored passkey"))?;
        // Verify against the credential as stored now (current counter), not
        // the copy captured when the ceremony began.
        let mut state_json: Value =
            serde_json::from_str(&row.state_json).map_err(internal("stored state"))?;
        let cred = serde_json::to_value(&passkey)
            .map_err(internal("passkey"))?
            .get("cred")
            .cloned()
            .ok_or_else(|| ApiError::internal("passkey has no cred"))?;
        if let Some(ast) = state_json.get_mut("ast") {
            ast["credentials"] = Value::Array(vec![cred]);
        }
        let auth_state: PasskeyAuthentication =
            serde_json::from_value(state_json).map_err(internal("stored state"))?;
        let result = self
            .webauthn
            .finish_passkey_authentication(&credential, &auth_state)
            .map_err(map_webauthn_error)?;
        if !result.user_verified() {
            return Err(ApiError::unauthorized(
                ErrorCode::UserVerificationMissing,
                "the authenticator did not verify the user (UV flag not set)",
            ));
        }
        let new_count = i64::from(result.counter());
        if new_count > 0 || stored.sign_count > 0 {
            passkey.update_credential(&result);
            let json = serde_json::to_string(&passkey).map_err(internal("passkey"))?;
            // Compare-and-swap against the stored counter. A concurrent
            // ceremony may have advanced it meanwhile: retry while ours is
            // still higher, refuse once it is not.
            let mut expected = stored.sign_count;
            loop {
                let swapped = self
                    .db
                    .update_passkey_counter(
                        &wallet_str,
                        &stored.credential_id,
                        expected,
                        new_count,
                        &json,
                        now,
                    )
                    .await?;
                if swapped {
                    break;
                }
                let current = self
                    .db
                    .get_passkey(&wallet_str)
                    .await?
                    .filter(|p| p.credential_id == stored.credential_id)
                    .map(|p| p.sign_count);
                match current {
                    Some(c) if c < new_count && c != expected => expected = c,
                    _ => return Err(ApiError::unauthorized(
                        ErrorCode::SignCountRegression,
                        "the authenticator's signature counter did not advance (possible clone)",
                    )),
                }
            }
        }
        Ok(PasskeyAssertion {
            authenticator_data: credential.response.authenticator_data,
            client_data_json: credential.response.client_data_json,
            signature: credential.response.signature,
        })
    }

    /// Start a registration ceremony. `wallet` is set when registering a
    /// new passkey for an existing wallet (ChangePasskey).
    pub async fn begin_registration(
        &self,
        wallet: Option<&str>,
        purpose: &str,
        user_name: &str,
        display_name: &str,
        metadata: Option<Value>,
    ) -> Result<BeginRegistrationResponse, ApiError> {
        let (mut ccr, reg_state) = self
            .webauthn
            .start_passkey_registration(Uuid::new_v4(), user_name, display_name, None)
            .map_err(internal("start registration"))?;
        // Offer only what the TA verifies (ES256, P-256): an authenticator must not create a
        // passkey that the registration would then refuse. webauthn-rs offers ES256, ES384 and
        // RS256 and has no setting for it, so both the options and the ceremony's state (which
        // finish_passkey_registration checks the credential's algorithm against) are narrowed.
        ccr.public_key
            .pub_key_cred_params
            .retain(|p| p.alg == COSEAlgorithm::ES256 as i64);
        let mut state_json = serde_json::to_value(&reg_state).map_err(internal("state"))?;
        match state_json
            .get_mut("rs")
            .and_then(|rs| rs.get_mut("credential_algorithms"))
        {
            Some(algs) => {
                *algs = serde_json::to_value([COSEAlgorithm::ES256]).map_err(internal("state"))?
            }
            None => return Err(ApiError::internal("registration state without algorithms")),
        }
        let now = kms_db::now_secs();
        let id = new_ceremony_id();
        let expires_at = now + CEREMONY_TTL_SECS;
        self.db
            .insert_challenge(&NewChallenge {
                id: id.clone(),
                kind: ChallengeKind::Registration,
                wallet_id: wallet.map(str::to_owned),
                purpose: purpose.to_owned(),
                payload_digest: None,
                state_json: state_json.to_string(),
                metadata_json: metadata.map(|m| m.to_string()),
                now,
                expires_at,
            })
            .await?;
        Ok(BeginRegistrationResponse {
            challenge_id: id,
            options: serde_json::to_value(&ccr).map_err(internal("options"))?,
            expires_at,
        })
    }

    /// Verify a registration response against its ceremony. With
    /// `consume`, the ceremony is used up (single use); without, it is only
    /// checked (to rebuild a payload that depends on the new passkey).
    /// Returns the passkey and the ceremony's metadata.
    pub async fn verify_registration(
        &self,
        ceremony: &CeremonyResponse,
        wallet: Option<&str>,
        purpose: &str,
        consume: bool,
    ) -> Result<(Passkey, Option<Value>), ApiError> {
        let credential: RegisterPublicKeyCredential =
            serde_json::from_value(ceremony.credential.clone()).map_err(|e| {
                ApiError::bad_request(
                    ErrorCode::InvalidCredential,
                    format!("Credential is not a WebAuthn registration response: {e}"),
                )
            })?;
        let now = kms_db::now_secs();
        let kind = ChallengeKind::Registration;
        let row = if consume {
            self.db
                .consume_challenge(&ceremony.challenge_id, kind, wallet, purpose, None, now)
                .await??
        } else {
            self.db
                .peek_challenge(&ceremony.challenge_id, kind, wallet, purpose, now)
                .await??
        };
        let reg_state: PasskeyRegistration =
            serde_json::from_str(&row.state_json).map_err(internal("stored state"))?;
        let passkey = self
            .webauthn
            .finish_passkey_registration(&credential, &reg_state)
            .map_err(map_webauthn_error)?;
        let metadata = row
            .metadata_json
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(internal("metadata"))?;
        Ok((passkey, metadata))
    }
}

/// webauthn-rs refusals as API errors.
pub fn map_webauthn_error(e: WebauthnError) -> ApiError {
    let msg = format!("WebAuthn verification failed: {e}");
    match e {
        WebauthnError::UserNotVerified => ApiError::unauthorized(
            ErrorCode::UserVerificationMissing,
            "the authenticator did not verify the user (UV flag not set)",
        ),
        WebauthnError::CredentialPossibleCompromise => ApiError::unauthorized(
            ErrorCode::SignCountRegression,
            "the authenticator's signature counter did not advance (possible clone)",
        ),
        WebauthnError::InvalidRPOrigin => ApiError::unauthorized(ErrorCode::OriginNotAllowed, msg),
        WebauthnError::CredentialAlteredAlgFromRequest => ApiError::unprocessable(
            ErrorCode::UnsupportedPasskey,
            "the passkey's algorithm was not offered: the TEE verifies P-256 (ES256) passkeys only",
        ),
        WebauthnError::MismatchedChallenge => {
            ApiError::unauthorized(ErrorCode::ChallengeMismatch, msg)
        }
        WebauthnError::ParseNOMFailure
        | WebauthnError::ParseCBORFailure(_)
        | WebauthnError::ParseJSONFailure(_)
        | WebauthnError::ParseBase64Failure(_) => {
            ApiError::bad_request(ErrorCode::InvalidCredential, msg)
        }
        _ => ApiError::unauthorized(ErrorCode::AssertionInvalid, msg),
    }
}
