//! End-to-end: agent keys and credentials over HTTP, against the real
//! ta-sim and a SQLite file.

use std::sync::{Arc, Mutex};

use crate::common::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kms_proto::session_signature::{SESSION_MARKER, SESSION_SIGNATURE_LEN};
use kms_proto::{SignAgentUserOp, TaError};
use kms_tee_client::{TeeBackend, TeeError};
use serde_json::{json, Value};

/// Re-encode a JWT's payload with one claim changed (its MAC no longer
/// matches).
fn with_claim(jwt: &str, claim: &str, value: Value) -> String {
    let parts: Vec<&str> = jwt.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims[claim] = value;
    format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_lifecycle_and_credential_refusals() {
    let env = Env::start().await;
    let mut owner = Soft::new();
    let wallet = env.wallet(&mut owner).await;

    // Create: ceremony bound to the mint payload.
    let a = env
        .create_agent(&mut owner, &wallet, json!({"label": "bot"}))
        .await;
    let key_id = a["keyId"].as_str().unwrap().to_owned();
    assert_eq!(key_id, format!("{wallet}:0"));
    assert_eq!(a["derivationPath"], "m/44'/60'/0'/1/0");
    let jwt = a["agentCredential"].as_str().unwrap().to_owned();
    let agent_addr = a["agentAddress"].as_str().unwrap().to_owned();
    let claims = kms_proto::jwt::parse(&jwt).unwrap().claims;
    assert_eq!(claims.sub, key_id);
    assert_eq!(claims.exp - claims.iat, kms_proto::jwt::MAX_TTL_SECS);
    // Only SHA-256(jwt) is stored.
    let row = env
        .server()
        .state
        .db
        .get_agent(&wallet, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.credential_hash.as_deref(),
        Some(kms_db::sha256_hex(jwt.as_bytes()).as_str())
    );
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM agent_keys WHERE credential_jwt IS NOT NULL")
            .fetch_one(env.server().state.db.pool())
            .await
            .unwrap();
    assert_eq!(n, 0);

    // Missing ceremony, legacy assertion.
    let (s, e) = env
        .post(
            "/kms/create-agent-key",
            None,
            &json!({"humanKeyId": wallet}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (401, Some("ceremony_required")),
        "{e}"
    );
    let (s, e) = env
        .post(
            "/kms/create-agent-key",
            None,
            &json!({"humanKeyId": wallet, "passkeyAssertion": {"x": 1}}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (401, Some("legacy_assertion_refused")),
        "{e}"
    );
    assert!(e["error"].as_str().unwrap().contains("CreateAgentKey"));

    // Sign: 106 bytes, marker, account, agent address, ECDSA by the agent key.
    let (s, sig, _) = env.sign_agent(&jwt, &key_id).await;
    assert_eq!(s, 200, "{sig}");
    let bytes = hexs(&sig["signature"]);
    assert_eq!(bytes.len(), SESSION_SIGNATURE_LEN);
    assert_eq!(bytes[0], SESSION_MARKER);
    assert_eq!(format!("0x{}", hex::encode(&bytes[1..21])), ACCOUNT);
    // Addresses are answered EIP-55 checksummed (#15 item 7; lowercase before).
    assert_eq!(
        format!("0x{}", hex::encode(&bytes[21..41])),
        agent_addr.to_ascii_lowercase()
    );
    let op: [u8; 32] = hexs(&json!(USER_OP_HASH)).try_into().unwrap();
    assert_eq!(
        recover(&eip191_32(&op), &bytes[41..]),
        agent_addr.to_ascii_lowercase()
    );

    // Refusals: missing, garbage, forged MAC, keyId mismatch, unknown key.
    let (s, e, _) = env
        .request(
            "/kms/sign-agent",
            None,
            &[],
            serde_json::to_vec(&sign_body(&key_id)).unwrap(),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (401, Some("credential_missing")));
    let (s, e, _) = env.sign_agent("not.a.jwt", &key_id).await;
    assert_eq!((s, e["code"].as_str()), (401, Some("credential_malformed")));
    let mut forged = jwt.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let (s, e, _) = env.sign_agent(&forged, &key_id).await;
    assert_eq!(s, 401, "{e}");
    let (s, e, _) = env.sign_agent(&jwt, &format!("{wallet}:1")).await;
    assert_eq!((s, e["code"].as_str()), (403, Some("key_id_mismatch")));
    let ghost = with_claim(
        &with_claim(&jwt, "agent_index", json!(99)),
        "sub",
        json!(format!("{wallet}:99")),
    );
    let (s, e, _) = env.sign_agent(&ghost, &format!("{wallet}:99")).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (404, Some("agent_not_found")),
        "{e}"
    );
    let (s, e, _) = env
        .post_bearer(
            "/kms/sign-agent",
            &jwt,
            &json!({"keyId": key_id, "payload": "0xzz", "accountAddress": ACCOUNT}),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (400, Some("invalid_hex")));

    // Refresh: Bearer (current credential) + ceremony; the old JWT is superseded.
    let w = env
        .ceremony(&mut owner, &key_id, "RefreshAgentCredential", json!({}))
        .await;
    let (s, e, _) = env
        .post_bearer(
            "/kms/refresh-agent-credential",
            &jwt,
            &json!({"keyId": key_id}),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (401, Some("ceremony_required")));
    let (s, r, _) = env
        .post_bearer(
            "/kms/refresh-agent-credential",
            &jwt,
            &json!({"keyId": key_id, "webAuthnAssertion": w}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let jwt2 = r["agentCredential"].as_str().unwrap().to_owned();
    assert_ne!(jwt2, jwt);
    assert_eq!(r["agentAddress"], json!(agent_addr));
    assert_eq!(r["generation"], 2);
    let (s, e, _) = env.sign_agent(&jwt, &key_id).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (401, Some("credential_superseded")),
        "{e}"
    );
    let (s, _, _) = env.sign_agent(&jwt2, &key_id).await;
    assert_eq!(s, 200);
    // The TA itself refuses the superseded credential (generation), even
    // from a host that skips its own checks.
    let tee = TeeBackend::Simulator {
        socket: env.sim.socket.clone(),
    }
    .lazy()
    .unwrap();
    let wid: kms_proto::WalletId = wallet.parse().unwrap();
    let direct = tee.call(&SignAgentUserOp {
        wallet_id: wid,
        agent_index: 0,
        jwt: jwt.clone(),
        user_op_hash: op,
        account: [0xa; 20],
    });
    assert_eq!(
        direct.unwrap_err(),
        TeeError::Ta(TaError::Jwt(kms_proto::JwtError::StaleGeneration))
    );

    // Revoke: ceremony (digest of the revoke request); then 401 revoked.
    let (s, e) = env
        .post(
            "/kms/revoke-agent-credential",
            None,
            &json!({"keyId": key_id}),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (401, Some("ceremony_required")));
    let (s, e) = env
        .post(
            "/kms/revoke-agent-credential",
            None,
            &json!({"keyId": format!("{wallet}:7")}),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (404, Some("agent_not_found")));
    let w = env
        .ceremony(&mut owner, &key_id, "RevokeAgentCredential", json!({}))
        .await;
    let (s, v) = env
        .post(
            "/kms/revoke-agent-credential",
            None,
            &json!({"keyId": key_id, "webAuthnAssertion": w}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["success"], true);
    let (s, e, _) = env.sign_agent(&jwt2, &key_id).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (401, Some("credential_revoked")),
        "{e}"
    );
    let direct = tee.call(&SignAgentUserOp {
        wallet_id: wid,
        agent_index: 0,
        jwt: jwt2.clone(),
        user_op_hash: op,
        account: [0xa; 20],
    });
    assert!(
        matches!(direct, Err(TeeError::Ta(TaError::Jwt(_)))),
        "{direct:?}"
    );
    // Refresh of a revoked agent is refused.
    let w = env
        .ceremony(&mut owner, &key_id, "RefreshAgentCredential", json!({}))
        .await;
    let (s, e, _) = env
        .post_bearer(
            "/kms/refresh-agent-credential",
            &jwt2,
            &json!({"keyId": key_id, "webAuthnAssertion": w}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (401, Some("credential_revoked")),
        "{e}"
    );
    // Revoke is idempotent (still behind a ceremony).
    let w = env
        .ceremony(&mut owner, &key_id, "RevokeAgentCredential", json!({}))
        .await;
    let (s, _) = env
        .post(
            "/kms/revoke-agent-credential",
            None,
            &json!({"keyId": key_id, "webAuthnAssertion": w}),
        )
        .await;
    assert_eq!(s, 200);

    // A second agent gets the next index; indices are never reused.
    let b = env
        .create_agent(&mut owner, &wallet, json!({"label": "b"}))
        .await;
    assert_eq!(b["keyId"], json!(format!("{wallet}:1")));

    // Expired credential (1 s lifetime): refused with 401 once past exp.
    let c = env
        .create_agent(&mut owner, &wallet, json!({"ttlSecs": 1}))
        .await;
    let cjwt = c["agentCredential"].as_str().unwrap().to_owned();
    let ckey = c["keyId"].as_str().unwrap().to_owned();
    let exp = kms_proto::jwt::parse(&cjwt).unwrap().claims.exp;
    while kms_db::now_secs() as u64 <= exp {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (s, e, _) = env.sign_agent(&cjwt, &ckey).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (401, Some("credential_expired")),
        "{e}"
    );
    // A TTL above the configured maximum is refused before any ceremony.
    let (s, e) = env
        .post(
            "/BeginAuthentication",
            None,
            &json!({"KeyId": wallet, "Purpose": "CreateAgentKey",
            "Payload": {"ttlSecs": kms_proto::jwt::MAX_TTL_SECS + 1}}),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (422, Some("invalid_ttl")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn fifty_concurrent_creates_get_indices_0_to_49() {
    let env = Arc::new(Env::start().await);
    // A synced passkey (signature counter always 0, as iCloud Keychain and
    // Google Password Manager report it): 50 assertions made up front and
    // sent concurrently cannot arrive in counter order, and with a counting
    // authenticator that is rightly refused as a possible clone.
    let mut owner = Manual::new();
    owner.counting = false;
    let wallet = env.wallet(&mut owner).await;
    let owner = Arc::new(Mutex::new(owner));
    // 50 ceremonies pending at once, then 50 concurrent creates.
    let mut ceremonies = Vec::new();
    for i in 0..50 {
        let (s, b) = env
            .post(
                "/BeginAuthentication",
                None,
                &json!({"KeyId": wallet, "Purpose": "CreateAgentKey",
                "Payload": {"label": format!("a{i}")}}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        let cred = owner
            .lock()
            .unwrap()
            .authenticate(&env.origin(), &b["Options"]);
        ceremonies.push((
            i,
            json!({"ChallengeId": b["ChallengeId"], "Credential": cred}),
        ));
    }
    let mut tasks = Vec::new();
    for (i, w) in ceremonies {
        let env = env.clone();
        let wallet = wallet.clone();
        tasks.push(tokio::spawn(async move {
            env.post(
                "/kms/create-agent-key",
                None,
                &json!({"humanKeyId": wallet, "label": format!("a{i}"),
                "webAuthnAssertion": w}),
            )
            .await
        }));
    }
    let mut indices = Vec::new();
    for t in tasks {
        let (s, v) = t.await.unwrap();
        assert_eq!(s, 200, "{v}");
        let k = v["keyId"].as_str().unwrap();
        indices.push(k.rsplit_once(':').unwrap().1.parse::<u32>().unwrap());
    }
    indices.sort_unstable();
    assert_eq!(indices, (0..50).collect::<Vec<u32>>());
    let rows = env
        .server()
        .state
        .db
        .list_agents(Some(&wallet))
        .await
        .unwrap();
    assert_eq!(rows.len(), 50);
    assert!(rows.iter().all(|r| r.status == kms_db::AgentStatus::Active));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_answer_429_with_retry_after_before_the_tee() {
    let env = Env::with(Opts {
        args: vec![
            "--agent-rate-limit".into(),
            "3".into(),
            "--rate-limit".into(),
            "40".into(),
        ],
        ..Opts::default()
    })
    .await;
    let mut owner = Soft::new();
    let wallet = env.wallet(&mut owner).await;
    let a = env.agent(&mut owner, &wallet, json!({})).await;
    let (jwt, key_id) = (a.jwt.as_str(), a.key_id.as_str());
    for _ in 0..3 {
        let (s, v, _) = env.sign_agent(jwt, key_id).await;
        assert_eq!(s, 200, "{v}");
    }
    let before = env.server().state.metrics.signatures("agent_userop");
    let (s, e, h) = env.sign_agent(jwt, key_id).await;
    assert_eq!((s, e["code"].as_str()), (429, Some("rate_limited")));
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(
        env.server().state.metrics.signatures("agent_userop"),
        before,
        "no signature past the limit"
    );
    // Another spelling of the same key id shares the bucket.
    let (s, _, _) = env.sign_agent(jwt, &key_id.to_uppercase()).await;
    assert_eq!(s, 429);
    // A forged credential of that key is not charged to the key's bucket
    // (strangers cannot spend it): refused 401 by the host's hash check,
    // without reaching the TEE.
    let (s, e, _) = env
        .sign_agent(&with_claim(jwt, "gen", json!(9)), key_id)
        .await;
    // A forged credential is invalid, not superseded (#15 item 7; superseded before).
    assert_eq!((s, e["code"].as_str()), (401, Some("credential_invalid")));
    assert_eq!(
        env.server().state.metrics.signatures("agent_userop"),
        before,
        "no signature for a forged credential"
    );
    // The per-API-key limit: 40/min in all (registration + ceremony above
    // used a few).
    let mut last = 0;
    for _ in 0..80 {
        let (s, _) = env
            .post(
                "/DescribeKey",
                Some("DescribeKey"),
                &json!({"KeyId": wallet}),
            )
            .await;
        last = s;
        if s == 429 {
            break;
        }
    }
    assert_eq!(last, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_keys_fail_closed_and_open_mode_is_explicit() {
    let mut env = Env::start().await;
    // Wrong or missing key.
    let good = env.api_key.take();
    let (s, e) = env.post("/ListKeys", Some("ListKeys"), &json!({})).await;
    assert_eq!((s, e["code"].as_str()), (401, Some("api_key_required")));
    env.api_key = Some("kms_0000000000000000_".to_string() + &"0".repeat(64));
    let (s, e) = env.post("/ListKeys", Some("ListKeys"), &json!({})).await;
    assert_eq!((s, e["code"].as_str()), (401, Some("api_key_invalid")));
    env.api_key = good.clone();
    let (s, _) = env.post("/ListKeys", Some("ListKeys"), &json!({})).await;
    assert_eq!(s, 200);
    // Revoked: fail closed again (none provisioned).
    let id = good.as_ref().unwrap().split('_').nth(1).unwrap().to_owned();
    assert!(env.server().state.db.revoke_api_key(&id, 2).await.unwrap());
    let (s, e) = env.post("/ListKeys", Some("ListKeys"), &json!({})).await;
    assert_eq!(s, 401);
    assert!(e["error"].as_str().unwrap().contains("fails closed"), "{e}");
    // Health needs no key.
    assert_eq!(env.get("/health").await.0, 200);

    // Open mode only when chosen, and KMS_REQUIRE_API_KEY wins over it.
    let open = Env::with(Opts {
        args: vec!["--open".into()],
        ..Opts::default()
    })
    .await;
    assert!(open.api_key.is_none());
    let (s, _) = open.post("/ListKeys", Some("ListKeys"), &json!({})).await;
    assert_eq!(s, 200);
    let forced = Env::with(Opts {
        args: vec!["--open".into(), "--require-api-key".into()],
        ..Opts::default()
    })
    .await;
    assert!(forced.api_key.is_some());
    let mut f = forced;
    f.api_key = None;
    let (s, _) = f.post("/ListKeys", Some("ListKeys"), &json!({})).await;
    assert_eq!(s, 401);
}

/// Revocation over HTTP reports each account where the agent has a session: here the companion
/// has no chain settings, so each one's on-chain layer fails (the sessions stay live,
/// `revoke_failed`, for a later revocation) while the database and the TA are revoked; a pending
/// grant is not reported, and the shape keeps `onChain` for one-session clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_reports_every_account_of_the_agent() {
    let env = Env::start().await;
    let mut owner = Soft::new();
    let wallet = env.wallet(&mut owner).await;
    let created = env
        .create_agent(&mut owner, &wallet, json!({"label": "two"}))
        .await;
    let key_id = created["keyId"].as_str().unwrap().to_owned();
    let db = &env.server().state.db;
    let mut ids = Vec::new();
    for (account, included) in [
        ("0xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", true),
        ("0xbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", true),
        ("0xcccccccccccccccccccccccccccccccccccccccc", false),
    ] {
        let id = db
            .insert_session(&kms_db::NewSession {
                wallet_id: &wallet,
                agent_index: 0,
                account: account.parse().unwrap(),
                account_kind: kms_db::AccountKind::AgentAccount,
                targets_json: "[]",
                spend_cap: "1".parse().unwrap(),
                valid_after: 0,
                valid_until: 0,
                revoker: None,
                grant_json: None,
                user_op_hash: None,
                user_op_json: None,
                now: 10,
            })
            .await
            .unwrap();
        if included {
            db.activate_session(id, None, 10 + id).await.unwrap();
        }
        ids.push(id);
    }
    let w = env
        .ceremony(&mut owner, &key_id, "RevokeAgentCredential", json!({}))
        .await;
    let (s, v) = env
        .post(
            "/kms/revoke-agent-credential",
            None,
            &json!({"keyId": key_id, "webAuthnAssertion": w}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["success"], true);
    let sessions = v["sessions"].as_array().unwrap();
    // The live sessions, the most recently activated first, then the pending grant's account,
    // which could not be checked either (a grant may be included before its receipt is seen).
    // Accounts are answered EIP-55 checksummed (#15 item 7; lowercase before).
    let accounts: Vec<String> = sessions
        .iter()
        .map(|s| s["account"].as_str().unwrap().to_ascii_lowercase())
        .collect();
    let reported: Vec<(&str, &str, bool)> = sessions
        .iter()
        .zip(&accounts)
        .map(|(s, account)| {
            (
                account.as_str(),
                s["status"].as_str().unwrap(),
                s["pendingGrant"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        reported,
        [
            (
                "0xbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
                "failed",
                false
            ),
            (
                "0xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "failed",
                false
            ),
            ("0xcccccccccccccccccccccccccccccccccccccccc", "failed", true),
        ],
        "{v}"
    );
    assert!(
        sessions[0]["error"]
            .as_str()
            .unwrap()
            .contains("no chain settings"),
        "{v}"
    );
    assert_eq!(v["onChain"], sessions[0], "{v}");
    let rows = db.sessions_of_agent(&wallet, 0).await.unwrap();
    let status = |id: i64| rows.iter().find(|r| r.id == id).unwrap().status;
    assert_eq!(status(ids[0]), kms_db::SessionStatus::RevokeFailed);
    assert_eq!(status(ids[1]), kms_db::SessionStatus::RevokeFailed);
    assert_eq!(
        status(ids[2]),
        kms_db::SessionStatus::Pending,
        "a pending grant stays pending"
    );
    // The credential is revoked all the same.
    assert_eq!(
        db.get_agent(&wallet, 0).await.unwrap().unwrap().status,
        kms_db::AgentStatus::Revoked
    );
}
