//! The HTTP contract (#15 item 7): EIP-55 addresses in answers, ES256-only registration,
//! unknown fields refused, forged credentials reported as invalid, re-issue of a lost agent
//! credential with the owner's passkey alone.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use sha3::Digest;

use crate::common::*;

/// The EIP-55 spelling of an address (any case in).
fn eip55(address: &str) -> String {
    let lower = address.trim_start_matches("0x").to_ascii_lowercase();
    let hash = sha3::Keccak256::digest(lower.as_bytes());
    let mut out = String::from("0x");
    for (i, c) in lower.chars().enumerate() {
        let nibble = (hash[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 0x0f;
        out.push(if c.is_ascii_alphabetic() && nibble >= 8 {
            c.to_ascii_uppercase()
        } else {
            c
        });
    }
    out
}

/// `v` is a checksummed address (and has letters in both cases or none, as EIP-55 gives).
#[track_caller]
fn assert_checksummed(what: &str, v: &Value) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {v}"));
    assert_eq!(s.len(), 42, "{what}: {s}");
    assert_eq!(s, eip55(s), "{what} is not EIP-55 checksummed");
}

#[test]
fn eip55_matches_the_eip_vectors() {
    for a in [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ] {
        assert_eq!(eip55(&a.to_ascii_lowercase()), a);
    }
}

/// `/CompleteRegistration`, `/DescribeKey`, `/GetPublicKey`, `/SignHash`,
/// `/kms/create-agent-key`, `/kms/sign-agent`, `/kms/refresh-agent-credential` and
/// `/kms/list-agent-keys` answer checksummed addresses, as `/health` does (they answered
/// lowercase before).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn addresses_in_answers_are_checksummed() {
    let env = Env::start().await;
    let mut owner = Soft::new();
    let reg = env.register(&mut owner).await;
    assert_checksummed("CompleteRegistration Address", &reg["Address"]);
    let wallet = reg["KeyId"].as_str().unwrap().to_owned();

    let (s, d) = env
        .post(
            "/DescribeKey",
            Some("DescribeKey"),
            &json!({"KeyId": wallet}),
        )
        .await;
    assert_eq!(s, 200, "{d}");
    assert_checksummed(
        "DescribeKey KeyMetadata.Address",
        &d["KeyMetadata"]["Address"],
    );
    for a in d["Addresses"].as_array().unwrap() {
        assert_checksummed("DescribeKey Addresses[].Address", &a["Address"]);
    }
    let (s, p) = env
        .post(
            "/GetPublicKey",
            Some("GetPublicKey"),
            &json!({"KeyId": wallet}),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    assert_checksummed("GetPublicKey Address", &p["Address"]);

    let (s, sig) = env
        .signed_op(
            &mut owner,
            &wallet,
            "SignHash",
            json!({"Hash": USER_OP_HASH}),
        )
        .await;
    assert_eq!(s, 200, "{sig}");
    assert_checksummed("SignHash Address", &sig["Address"]);
    assert_eq!(sig["Address"], reg["Address"]);

    let Agent {
        key_id,
        jwt,
        answer: a,
        ..
    } = env.agent(&mut owner, &wallet, json!({})).await;
    assert_checksummed("create-agent-key agentAddress", &a["agentAddress"]);
    let (s, r, _) = env.sign_agent(&jwt, &key_id).await;
    assert_eq!(s, 200, "{r}");
    assert_checksummed("sign-agent agentAddress", &r["agentAddress"]);

    let w = env
        .ceremony(&mut owner, &key_id, "RefreshAgentCredential", json!({}))
        .await;
    let (s, r, _) = env
        .post_bearer(
            "/kms/refresh-agent-credential",
            &jwt,
            &json!({"keyId": key_id, "webAuthnAssertion": w}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_checksummed("refresh agentAddress", &r["agentAddress"]);

    let (s, l) = env
        .post("/kms/list-agent-keys", None, &json!({"humanKeyId": wallet}))
        .await;
    assert_eq!(s, 200, "{l}");
    assert_checksummed(
        "list-agent-keys agentAddress",
        &l["agentKeys"][0]["agentAddress"],
    );

    // /health answered checksummed before: still so.
    let (_, h) = env.get("/health").await;
    let h: Value = serde_json::from_str(&h).unwrap();
    if let Some(op) = h.get("operatorAddress").filter(|v| !v.is_null()) {
        assert_checksummed("health operatorAddress", op);
    }
}

/// Registration offers only ES256, the one algorithm the TA verifies (webauthn-rs alone offers
/// ES384 and RS256 too, and the TA then refused such a passkey after it was created).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registration_offers_es256_only() {
    let env = Env::start().await;
    let (s, begin) = env
        .post("/BeginRegistration", None, &json!({"Description": "x"}))
        .await;
    assert_eq!(s, 200, "{begin}");
    assert_eq!(
        begin["Options"]["publicKey"]["pubKeyCredParams"],
        json!([{"type": "public-key", "alg": -7}]),
        "{begin}"
    );
    // An ES256 passkey still registers.
    let mut owner = Soft::new();
    env.register(&mut owner).await;
}

/// A misspelt or unknown field is refused 422 naming it, instead of ignored (`"ttl": 60` for
/// `ttlSecs` gave a three-day credential).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_fields_are_refused_naming_the_field() {
    let env = Env::start().await;
    let mut owner = Soft::new();
    let wallet = env.wallet(&mut owner).await;

    // The ceremony's payload is parsed as the request: refused there already.
    let (s, e) = env
        .post(
            "/BeginAuthentication",
            None,
            &json!({"KeyId": wallet, "Purpose": "CreateAgentKey", "Payload": {"ttl": 60}}),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (422, Some("unknown_field")), "{e}");
    assert_eq!(e["details"]["field"], "ttl", "{e}");
    assert!(
        e["details"]["expected"]
            .as_array()
            .unwrap()
            .contains(&json!("ttlSecs")),
        "{e}"
    );

    // And on the operation itself, before any ceremony is consumed.
    let w = env
        .ceremony(
            &mut owner,
            &wallet,
            "CreateAgentKey",
            json!({"ttlSecs": 60}),
        )
        .await;
    let (s, e) = env
        .post(
            "/kms/create-agent-key",
            None,
            &json!({"humanKeyId": wallet, "ttl": 60, "webAuthnAssertion": w}),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (422, Some("unknown_field")), "{e}");
    assert_eq!(e["details"]["field"], "ttl");
    // The same ceremony still serves the well-formed request (nothing was consumed).
    let (s, a) = env
        .post(
            "/kms/create-agent-key",
            None,
            &json!({"humanKeyId": wallet, "ttlSecs": 60, "webAuthnAssertion": w}),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    let lifetime = a["expiresAt"].as_u64().unwrap()
        - std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
    assert!(lifetime <= 60, "{a}");

    // The AWS-style routes too, nested objects included.
    let (s, e) = env
        .post(
            "/DescribeKey",
            Some("DescribeKey"),
            &json!({"KeyId": wallet, "GrantTokens": []}),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (422, Some("unknown_field")), "{e}");
    assert_eq!(e["details"]["field"], "GrantTokens");
    let (s, e) = env
        .post(
            "/Sign",
            Some("Sign"),
            &json!({"KeyId": wallet, "Transaction": {"chainId": 1, "nonce": 0, "gas": 21000,
                "gasprice": "1"}, "WebAuthn": {"ChallengeId": "x", "Credential": {}}}),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (422, Some("unknown_field")), "{e}");
    assert_eq!(e["details"]["field"], "gasprice");
    // An agent's request as well.
    let (key_id, jwt) = (
        a["keyId"].as_str().unwrap().to_owned(),
        a["agentCredential"].as_str().unwrap().to_owned(),
    );
    let mut body = sign_body(&key_id);
    body["userOpHash"] = json!(USER_OP_HASH);
    let (s, e, _) = env.post_bearer("/kms/sign-agent", &jwt, &body).await;
    assert_eq!((s, e["code"].as_str()), (422, Some("unknown_field")), "{e}");
    assert_eq!(e["details"]["field"], "userOpHash");
}

/// A forged or tampered credential is `credential_invalid`; only an earlier generation's own
/// credential is `credential_superseded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_credentials_are_invalid_not_superseded() {
    let env = Env::start().await;
    let mut owner = Soft::new();
    let wallet = env.wallet(&mut owner).await;
    let Agent { key_id, jwt, .. } = env.agent(&mut owner, &wallet, json!({})).await;
    let parts: Vec<&str> = jwt.split('.').collect();
    // The MAC tampered with.
    let mut mac = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    mac[0] ^= 1;
    let tampered_mac = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(&mac));
    // A claim tampered with (a longer lifetime).
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["exp"] = json!(claims["exp"].as_u64().unwrap() + 1000);
    let tampered_claims = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );
    for (what, token) in [("mac", &tampered_mac), ("claims", &tampered_claims)] {
        let (s, e, _) = env.sign_agent(token, &key_id).await;
        assert_eq!(
            (s, e["code"].as_str()),
            (401, Some("credential_invalid")),
            "tampered {what}: {e}"
        );
    }
    // The refresh route says the same of a tampered Bearer.
    let w = env
        .ceremony(&mut owner, &key_id, "RefreshAgentCredential", json!({}))
        .await;
    let (s, e, _) = env
        .post_bearer(
            "/kms/refresh-agent-credential",
            &tampered_mac,
            &json!({"keyId": key_id, "webAuthnAssertion": w}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (401, Some("credential_invalid")),
        "{e}"
    );
    // The genuine previous credential, once refreshed, is superseded.
    let (s, r, _) = env
        .post_bearer(
            "/kms/refresh-agent-credential",
            &jwt,
            &json!({"keyId": key_id, "webAuthnAssertion": w}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let (s, e, _) = env.sign_agent(&jwt, &key_id).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (401, Some("credential_superseded")),
        "{e}"
    );
}

/// A lost agent credential is re-issued with the owner's passkey alone: no Bearer, and the TA's
/// generation is bumped (the previous credential is dead).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_credential_is_reissued_with_the_passkey_alone() {
    let env = Env::start().await;
    let mut owner = Soft::new();
    let wallet = env.wallet(&mut owner).await;
    let Agent {
        key_id,
        jwt: lost,
        answer: a,
        ..
    } = env.agent(&mut owner, &wallet, json!({})).await;
    assert_eq!(a["generation"], 1);

    // Without a ceremony there is nothing to authorise it.
    let (s, e) = env
        .post(
            "/kms/refresh-agent-credential",
            None,
            &json!({"keyId": key_id}),
        )
        .await;
    assert_eq!(s, 401, "{e}");

    let w = env
        .ceremony(
            &mut owner,
            &key_id,
            "RefreshAgentCredential",
            json!({"ttlSecs": 600}),
        )
        .await;
    let (s, r) = env
        .post(
            "/kms/refresh-agent-credential",
            None,
            &json!({"keyId": key_id, "ttlSecs": 600, "webAuthnAssertion": w}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["generation"], 2, "{r}");
    assert_eq!(r["agentAddress"], a["agentAddress"]);
    let fresh = r["agentCredential"].as_str().unwrap().to_owned();

    // The new credential signs; the lost one is dead.
    let (s, sig, _) = env.sign_agent(&fresh, &key_id).await;
    assert_eq!(s, 200, "{sig}");
    let (s, e, _) = env.sign_agent(&lost, &key_id).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (401, Some("credential_superseded")),
        "{e}"
    );
    // The ceremony was single use.
    let (s, e) = env
        .post(
            "/kms/refresh-agent-credential",
            None,
            &json!({"keyId": key_id, "ttlSecs": 600, "webAuthnAssertion": w}),
        )
        .await;
    assert_eq!(s, 401, "{e}");
}

/// `/openapi.json` as served declares the shared statuses, and documents the agent signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openapi_declares_shared_statuses_and_the_agent_signature() {
    let env = Env::start().await;
    let (s, doc) = env.get("/openapi.json").await;
    assert_eq!(s, 200);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    let responses = &doc["paths"]["/kms/revoke-agent-credential"]["post"]["responses"];
    for st in ["400", "413", "422", "503"] {
        assert!(responses[st].is_object(), "{st}: {responses}");
    }
    let responses = &doc["paths"]["/SignHash"]["post"]["responses"];
    for st in ["401", "413", "429"] {
        assert!(responses[st].is_object(), "{st}: {responses}");
    }
    let sig = doc["components"]["schemas"]["SignAgentResponse"]["properties"]["signature"]
        ["description"]
        .as_str()
        .unwrap();
    assert!(sig.contains("0x08"), "{sig}");
    assert!(sig.contains("Ethereum Signed Message"), "{sig}");
}
