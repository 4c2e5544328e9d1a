//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::server::ROUTES;

use crate::routes::{
    agent, ceremony, health, intents, metrics, openapi, operator, permissions, rpc, sessions,
    wallet,
};

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

/// Declares on every route the statuses its shared layers can answer
/// ([`crate::server::RouteSpec::shared_statuses`]), where its handler's annotation does not.
struct SharedStatuses;

impl Modify for SharedStatuses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for r in ROUTES.iter().filter(|r| r.documented) {
            let Some(item) = openapi.paths.paths.get_mut(r.path) else {
                continue;
            };
            let op = match r.method {
                "GET" => item.get.as_mut(),
                _ => item.post.as_mut(),
            };
            let Some(op) = op else { continue };
            for status in r.shared_statuses() {
                op.responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| RefOr::T(shared_response(status)));
            }
        }
    }
}

fn shared_response(status: u16) -> utoipa::openapi::Response {
    let description = match status {
        400 => "Malformed JSON, hex or request (`malformed_json`, `invalid_request`, ...)",
        401 => "Missing or invalid API key or agent credential (`code` says which)",
        408 => "`body_timeout`: the request body did not arrive in time",
        413 => "`body_too_large`: the body is over 256 KiB (refused while reading)",
        422 => {
            "Well-formed but invalid: `unknown_field` (`details.field`: every request type refuses \
                fields it does not know) or an invalid value"
        }
        429 => {
            "Rate limited (per API key, per agent key or per client address: the message says \
                which), with `Retry-After`"
        }
        500 => "`internal`: a fault that is not the client's",
        503 => {
            "`overloaded` (with `Retry-After: 1`), `request_timeout`, `tee_unavailable`, or \
                `ta_rolled_back`"
        }
        _ => "Error",
    };
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        )
        .build()
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
        wallet::create_key,
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
        crate::routes::agent_session::get_agent_session,
        operator::operator,
        permissions::list,
        permissions::resolve,
        rpc::rpc,
        agent::list_agent_keys,
        intents::list_agent_intents,
        health::health,
        metrics::metrics,
        openapi::openapi,
    ),
    components(schemas(
        crate::error::ErrorBody,
        crate::error::ErrorCode,
        crate::routes::agent_session::AgentSessionResponse,
        crate::webauthn::CeremonyResponse,
        crate::webauthn::Purpose,
        crate::routes::permissions::ListPermissionRequests,
        crate::routes::permissions::ResolvePermissionRequest,
    )),
    modifiers(&Security, &SharedStatuses)
)]
pub struct ApiDoc;

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    use crate::server::ROUTES;

    /// What each handler can answer itself, beyond its route's shared layers
    /// ([`crate::server::RouteSpec::shared_statuses`]). A route added to the router without an
    /// entry here fails [`every_route_declares_every_status_it_can_answer`].
    const HANDLER_STATUSES: &[(&str, &[u16])] = &[
        ("/BeginRegistration", &[200, 400, 404]),
        ("/CompleteRegistration", &[200, 400, 401, 403, 422]),
        // GrantSession ceremonies build the owner's operation (chain: 409, 502).
        ("/BeginAuthentication", &[200, 400, 403, 404, 409, 422, 502]),
        ("/CreateKey", &[200, 400, 401, 403, 422]),
        ("/DescribeKey", &[200, 400, 404]),
        ("/ListKeys", &[200, 400]),
        ("/GetPublicKey", &[200, 400, 401, 403, 404, 422]),
        ("/DeriveAddress", &[200, 400, 401, 403, 404, 422]),
        ("/Sign", &[200, 400, 401, 403, 404, 422]),
        ("/SignHash", &[200, 400, 401, 403, 404, 422]),
        ("/DeleteKey", &[200, 400, 401, 403, 404]),
        ("/ChangePasskey", &[200, 400, 401, 403, 404, 422]),
        (
            "/kms/create-agent-key",
            &[200, 400, 401, 403, 404, 409, 422],
        ),
        ("/kms/list-agent-keys", &[200, 400, 404]),
        ("/kms/list-agent-intents", &[200, 400, 404, 422]),
        ("/kms/sign-agent", &[200, 400, 401, 403, 404, 422]),
        (
            "/kms/refresh-agent-credential",
            &[200, 400, 401, 403, 404, 422],
        ),
        ("/kms/revoke-agent-credential", &[200, 400, 401, 403, 404]),
        (
            "/kms/agent-sessions",
            &[200, 202, 400, 401, 403, 404, 409, 422, 502],
        ),
        ("/kms/operator", &[200]),
        ("/kms/permission-requests", &[200, 400, 404]),
        (
            "/kms/permission-requests/resolve",
            &[200, 400, 403, 404, 409, 422],
        ),
        // Every JSON-RPC answer (errors included) is 200.
        ("/rpc", &[200]),
        ("/agent/intents", &[202, 400, 401, 403, 404, 422, 502]),
        ("/agent/intents/{userOpHash}", &[200, 400, 401, 404]),
        ("/agent/session", &[200, 400, 401, 403, 502]),
        ("/health", &[200]),
        ("/metrics", &[200]),
        ("/openapi.json", &[200]),
    ];

    /// The contract an integrator writes a client from: every route of the router is in the
    /// document with its method, and declares every status its shared layers (body limit and
    /// timeout, rate limits, authentication, overload, the TA's refusals) and its handler can
    /// answer.
    #[test]
    fn every_route_declares_every_status_it_can_answer() {
        let doc = serde_json::to_value(super::document()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let mut missing = Vec::new();
        for r in ROUTES.iter().filter(|r| r.documented) {
            let op = &paths
                .get(r.path)
                .unwrap_or_else(|| panic!("{} {} is routed but not documented", r.method, r.path))
                [r.method.to_ascii_lowercase()];
            assert!(op.is_object(), "{} {} is not documented", r.method, r.path);
            let own = HANDLER_STATUSES
                .iter()
                .find(|(p, _)| *p == r.path)
                .unwrap_or_else(|| {
                    panic!(
                        "{} has no entry in HANDLER_STATUSES: list the statuses its handler can \
                         answer and declare them in its #[utoipa::path]",
                        r.path
                    )
                })
                .1;
            let declared = op["responses"].as_object().unwrap();
            for status in r.shared_statuses().into_iter().chain(own.iter().copied()) {
                if !declared.contains_key(&status.to_string()) {
                    missing.push(format!("{} {} {status}", r.method, r.path));
                }
            }
        }
        assert!(missing.is_empty(), "undeclared statuses: {missing:#?}");
        // And nothing is documented that the router does not serve.
        for (path, item) in paths {
            for method in item.as_object().unwrap().keys() {
                assert!(
                    ROUTES.iter().any(|r| r.path == path
                        && r.documented
                        && r.method.eq_ignore_ascii_case(method)),
                    "{method} {path} is documented but not routed"
                );
            }
        }
    }

    /// Every route answers 413, 429 (where rate limited) and 401 (where authenticated), as
    /// `/openapi.json` says.
    #[test]
    fn shared_statuses_are_declared() {
        let doc = serde_json::to_value(super::document()).unwrap();
        let responses = |path: &str, method: &str| doc["paths"][path][method]["responses"].clone();
        for (path, method) in [
            ("/kms/revoke-agent-credential", "post"),
            ("/SignHash", "post"),
            ("/agent/intents/{userOpHash}", "get"),
        ] {
            assert!(responses(path, method)["413"].is_object(), "{path}");
        }
        assert!(responses("/DescribeKey", "post")["401"].is_object());
        assert!(responses("/DescribeKey", "post")["429"].is_object());
        assert!(responses("/kms/refresh-agent-credential", "post")["422"].is_object());
    }
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

    #[test]
    fn error_codes_are_listed() {
        let doc = serde_json::to_value(super::document()).unwrap();
        let listed: Vec<String> =
            serde_json::from_value(doc["components"]["schemas"]["ErrorCode"]["enum"].clone())
                .unwrap();
        let all: Vec<&str> = crate::error::ErrorCode::all()
            .map(crate::error::ErrorCode::as_str)
            .collect();
        assert_eq!(listed, all);
        assert_eq!(
            doc["components"]["schemas"]["ErrorBody"]["properties"]["code"]["$ref"],
            "#/components/schemas/ErrorCode"
        );
    }
}
