//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{agent, ceremony, health, intents, sessions, ui, wallet};

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "Agent Key Companion", description = "TEE-backed key companion for AI agents on Ethereum: \
        AWS-KMS-style wallet API gated by WebAuthn passkeys, short-lived agent credentials, on-chain \
        sessions (SessionKeyValidator) and agent intents submitted as ERC-4337 UserOperations."),
    paths(
        ceremony::begin_registration,
        ceremony::complete_registration,
        ceremony::begin_authentication,
        ceremony::create_key,
        wallet::describe_key,
        wallet::list_keys,
        wallet::get_public_key,
        wallet::derive_address,
        wallet::sign,
        wallet::sign_hash,
        wallet::delete_key,
        wallet::change_passkey,
        agent::create_agent_key,
        agent::sign_agent,
        agent::refresh_agent_credential,
        agent::revoke_agent_credential,
        sessions::agent_sessions,
        intents::submit_intent,
        intents::get_intent,
        health::operator,
        ui::list_agent_keys,
        ui::list_agent_intents,
        health::health,
        health::metrics,
        health::openapi,
    ),
    components(schemas(
        crate::error::ErrorBody,
        crate::webauthn::CeremonyResponse,
        crate::webauthn::Purpose,
    )),
    modifiers(&Security)
)]
pub struct ApiDoc;

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_is_documented() {
        let doc = super::document();
        for p in [
            "/BeginRegistration",
            "/CompleteRegistration",
            "/BeginAuthentication",
            "/CreateKey",
            "/DescribeKey",
            "/ListKeys",
            "/GetPublicKey",
            "/DeriveAddress",
            "/Sign",
            "/SignHash",
            "/DeleteKey",
            "/ChangePasskey",
            "/kms/create-agent-key",
            "/kms/sign-agent",
            "/kms/refresh-agent-credential",
            "/kms/revoke-agent-credential",
            "/kms/agent-sessions",
            "/kms/operator",
            "/agent/intents",
            "/agent/intents/{userOpHash}",
            "/health",
            "/metrics",
            "/openapi.json",
        ] {
            assert!(doc.paths.paths.contains_key(p), "{p} missing");
        }
        let schemas = &doc.components.as_ref().unwrap().schemas;
        for s in [
            "SignAgentRequest",
            "SignAgentResponse",
            "CreateAgentKeyRequest",
            "ErrorBody",
            "SignRequest",
            "AgentSessionRequest",
            "AgentSessionResponse",
            "IntentRequest",
            "IntentResponse",
            "RevokeAgentResponse",
            "OnChainRevocation",
            "ListAgentKeysResponse",
            "ListedSession",
        ] {
            assert!(schemas.contains_key(s), "{s} missing");
        }
    }

    /// Sessions are rows of their own: the revoke answer reports each account, the listing every
    /// session with its status, and an intent may name its account.
    #[test]
    fn sessions_per_account_are_documented() {
        let doc = serde_json::to_value(super::document()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let props = |name: &str| schemas[name]["properties"].clone();
        assert!(
            props("RevokeAgentResponse")["sessions"].is_object(),
            "{schemas}"
        );
        assert!(props("RevokeAgentResponse")["onChain"].is_object());
        for field in ["status", "account", "transactionHash", "error"] {
            assert!(props("OnChainRevocation")[field].is_object(), "{field}");
        }
        assert!(props("ListedAgentKey")["sessions"].is_object());
        assert!(props("ListedAgentKey")["session"].is_object());
        for field in ["status", "account", "userOpHash", "revokeTransactionHash"] {
            assert!(props("ListedSession")[field].is_object(), "{field}");
        }
        assert!(props("IntentRequest")["account"].is_object());
    }
}
