//! Strangers cannot lock an agent out: forged credentials naming an agent's keyId are refused
//! 401 and charged to the sender's address (`--client-rate-limit`), never to the agent's own
//! bucket (`--agent-rate-limit`), which only requests presenting the agent's current
//! credential spend. The addresses are 127.0.0.x loopback sources (Linux routes all of
//! 127/8 to the loopback interface).

use std::net::IpAddr;

use crate::common::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

const AGENT_LIMIT: usize = 4;
const CLIENT_LIMIT: usize = 30;

/// An HTTP client whose connections come from `ip`.
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .no_proxy()
        .build()
        .unwrap()
}

/// What a stranger who knows only the keyId can send: a well-formed HS256 JWT naming the
/// agent, with a MAC of its own (`n` makes each one different).
fn forged(key_id: &str, n: u32) -> String {
    let (wallet, index) = key_id.rsplit_once(':').unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let enc = |v: Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap());
    let header = enc(json!({"alg": "HS256", "typ": "JWT", "kid": "guess"}));
    let claims = enc(json!({
        "sub": key_id, "wallet_id": wallet, "agent_index": index.parse::<u32>().unwrap(),
        "agent_address": format!("0x{}", "00".repeat(20)), "gen": 1,
        "iat": now, "exp": now + 3600,
    }));
    let mut mac = [0x5au8; 32];
    mac[..4].copy_from_slice(&n.to_be_bytes());
    format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode(mac))
}

async fn post(
    env: &Env,
    http: &reqwest::Client,
    path: &str,
    jwt: &str,
    body: &Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = http
        .post(env.url(path))
        .header("authorization", format!("Bearer {jwt}"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.json().await.unwrap_or(Value::Null), headers)
}

fn tee_calls(env: &Env, command: &str) -> u64 {
    let m = env.server().state.metrics.render();
    let prefix = format!("kms_tee_call_duration_seconds_count{{command=\"{command}\",");
    m.lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_tokens_charge_their_senders_address_not_the_agent() {
    let env = Env::with(Opts {
        args: vec![
            "--agent-rate-limit".into(),
            AGENT_LIMIT.to_string(),
            "--client-rate-limit".into(),
            CLIENT_LIMIT.to_string(),
        ],
        ..Opts::default()
    })
    .await;
    let mut owner = Soft::new();
    let wallet = env.wallet(&mut owner).await;
    let Agent {
        jwt,
        key_id: victim,
        ..
    } = env.agent(&mut owner, &wallet, json!({})).await;
    let agent = client_from("127.0.0.1");

    // (A forged token is `credential_invalid`, #15 item 7; `credential_superseded` before.)
    // 100 forged tokens naming the victim, 25 from each of four addresses (each under its
    // address's limit): every one refused 401 after the host's hash check, none reaching the
    // TEE, none answered 429 (today's code spent the victim's bucket on them).
    let mut n = 0;
    let started = std::time::Instant::now();
    for host in 2..=5 {
        let stranger = client_from(&format!("127.0.0.{host}"));
        for _ in 0..25 {
            n += 1;
            let (s, e, _) = post(
                &env,
                &stranger,
                "/kms/sign-agent",
                &forged(&victim, n),
                &sign_body(&victim),
            )
            .await;
            assert_eq!(
                (s, e["code"].as_str()),
                (401, Some("credential_invalid")),
                "forged token {n} from 127.0.0.{host}: {e}"
            );
        }
    }
    assert_eq!(
        tee_calls(&env, "SignAgentUserOp"),
        0,
        "no forged token reached the TEE"
    );

    // The victim signs normally.
    let victim_started = std::time::Instant::now();
    let (s, v, _) = post(&env, &agent, "/kms/sign-agent", &jwt, &sign_body(&victim)).await;
    assert_eq!(s, 200, "the victim after 100 forged tokens: {v}");

    // A stranger's address does run out: 127.0.0.2 sent 25 of its 30; it gets five more 401s
    // (more if the test is slow: a token comes back every 60/CLIENT_LIMIT s), then 429 (per
    // client address) with Retry-After.
    let stranger = client_from("127.0.0.2");
    let mut refused = 25;
    let (e, h) = loop {
        n += 1;
        let (s, e, h) = post(
            &env,
            &stranger,
            "/kms/sign-agent",
            &forged(&victim, n),
            &sign_body(&victim),
        )
        .await;
        if s != 401 {
            assert_eq!(s, 429, "{e}");
            break (e, h);
        }
        refused += 1;
        assert!(
            refused <= 2 * CLIENT_LIMIT,
            "no 429 after {refused} forged tokens"
        );
    };
    let refills = started.elapsed().as_secs() as usize * CLIENT_LIMIT / 60 + 1;
    assert!(
        (CLIENT_LIMIT..=CLIENT_LIMIT + refills).contains(&refused),
        "127.0.0.2 was refused 401 {refused} times before its 429"
    );
    assert_eq!(e["code"].as_str(), Some("rate_limited"), "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("per client address"),
        "{e}"
    );
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Refused before its credential is read: a malformed token gets the same 429, and so do
    // the other Bearer routes from that address.
    let (s, _, _) = post(&env, &stranger, "/kms/sign-agent", "x", &sign_body(&victim)).await;
    assert_eq!(s, 429);
    let (s, _, _) = post(
        &env,
        &stranger,
        "/kms/refresh-agent-credential",
        &forged(&victim, 0),
        &json!({"keyId": victim}),
    )
    .await;
    assert_eq!(s, 429);

    // The victim (its own address) is not affected, and its own bucket still limits it: one
    // signature above, AGENT_LIMIT - 1 more (more if the test is slow: a token comes back every
    // 60/AGENT_LIMIT s), then 429 per agent credential, with no TEE call.
    let mut signed = 1;
    let (e, h) = loop {
        let (s, e, h) = post(&env, &agent, "/kms/sign-agent", &jwt, &sign_body(&victim)).await;
        if s != 200 {
            assert_eq!((s, e["code"].as_str()), (429, Some("rate_limited")), "{e}");
            break (e, h);
        }
        signed += 1;
        assert!(
            signed <= 2 * AGENT_LIMIT,
            "no 429 after {signed} signatures"
        );
    };
    let refills = victim_started.elapsed().as_secs() as usize * AGENT_LIMIT / 60 + 1;
    assert!(
        (AGENT_LIMIT..=AGENT_LIMIT + refills).contains(&signed),
        "the victim signed {signed} times before its 429"
    );
    assert_eq!(
        tee_calls(&env, "SignAgentUserOp"),
        signed as u64,
        "one TEE call per signature, none past the limit"
    );
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("per agent credential"),
        "{e}"
    );
    assert!(h.contains_key("retry-after"));
    // The victim's spent bucket does not answer for strangers either: a forged token from a
    // fresh address is still just refused 401.
    let (s, e, _) = post(
        &env,
        &client_from("127.0.0.6"),
        "/kms/sign-agent",
        &forged(&victim, n + 1),
        &sign_body(&victim),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (401, Some("credential_invalid")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_refreshes_and_other_refusals_count_against_the_address() {
    let env = Env::with(Opts {
        args: vec!["--client-rate-limit".into(), "6".into()],
        ..Opts::default()
    })
    .await;
    let mut owner = Soft::new();
    let wallet = env.wallet(&mut owner).await;
    let Agent { jwt, key_id, .. } = env.agent(&mut owner, &wallet, json!({})).await;
    let agent = client_from("127.0.0.1");
    let stranger = client_from("127.0.0.9");
    // Every kind of refusal counts: a forged refresh, a malformed token, a missing one, a
    // keyId that is not the credential's, an unknown agent.
    let unknown = format!("{wallet}:7");
    let tries: Vec<(&str, String, Value, u16)> = vec![
        (
            "/kms/refresh-agent-credential",
            forged(&key_id, 1),
            json!({"keyId": key_id}),
            401,
        ),
        (
            "/kms/sign-agent",
            "not.a.jwt".into(),
            sign_body(&key_id),
            401,
        ),
        ("/kms/sign-agent", String::new(), sign_body(&key_id), 401),
        ("/kms/sign-agent", jwt.clone(), sign_body(&unknown), 403),
        (
            "/kms/sign-agent",
            forged(&unknown, 2),
            sign_body(&unknown),
            404,
        ),
        (
            "/kms/refresh-agent-credential",
            forged(&key_id, 3),
            json!({"keyId": key_id}),
            401,
        ),
    ];
    for (path, token, body, want) in &tries {
        let (s, e, _) = post(&env, &stranger, path, token, body).await;
        assert_eq!(s, *want, "{path}: {e}");
    }
    let (s, e, _) = post(
        &env,
        &stranger,
        "/kms/sign-agent",
        &jwt,
        &sign_body(&key_id),
    )
    .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (429, Some("rate_limited")),
        "the address spent its 6: even the right credential is refused from it: {e}"
    );
    // Requests whose credential matches are never charged to their address: the agent signs
    // more than 6 times from its own.
    for i in 0..8 {
        let (s, v, _) = post(&env, &agent, "/kms/sign-agent", &jwt, &sign_body(&key_id)).await;
        assert_eq!(s, 200, "signature {i}: {v}");
    }
}

/// `jwt` with its payload's claims changed by `edit` (its MAC no longer matches).
fn with_claims(jwt: &str, edit: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = jwt.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    edit(&mut claims);
    format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    )
}

/// A credential whose `iss` claim names another TA is refused 421 `wallet_on_other_ta` from
/// the claim alone, naming both TAs: before the database (an agent this database does not know
/// gets the same answer, not 404), before the credential's hash is compared (a copy of the
/// agent's own credential naming another TA is not `credential_invalid`), and before the TA (no
/// `SignAgentUserOp` call). Like every 421, it is not charged to the sender's
/// failed-authentication budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_credential_naming_another_ta_is_refused_before_the_database_and_the_ta() {
    let env = Env::with(Opts {
        args: vec!["--client-rate-limit".into(), "5".into()],
        ..Opts::default()
    })
    .await;
    let mut owner = Soft::new();
    let wallet = env.wallet(&mut owner).await;
    let Agent { jwt, key_id, .. } = env.agent(&mut owner, &wallet, json!({})).await;

    // The credential names this companion's TA: its operator address, as /health shows it.
    let (_, health) = env.get("/health").await;
    let health: Value = serde_json::from_str(&health).unwrap();
    let this_ta = health["operatorAddress"].as_str().unwrap().to_owned();
    let claims = kms_proto::jwt::parse(&jwt).unwrap().claims;
    assert_eq!(claims.iss, Some(this_ta.to_lowercase()));

    let other_ta = "0xabcdef0123456789abcdef0123456789abcdef01";
    let other_checksummed = other_ta
        .parse::<alloy::primitives::Address>()
        .unwrap()
        .to_checksum(None);
    let theirs = with_claims(&jwt, |c| c["iss"] = json!(other_ta));
    let unknown_agent = format!("{wallet}:99");
    let theirs_unknown = with_claims(&theirs, |c| {
        c["agent_index"] = json!(99);
        c["sub"] = json!(unknown_agent);
    });
    let http = client_from("127.0.0.9");
    for _ in 0..3 {
        for (token, named) in [(&theirs, &key_id), (&theirs_unknown, &unknown_agent)] {
            let (s, e, _) = post(&env, &http, "/kms/sign-agent", token, &sign_body(named)).await;
            assert_eq!(
                (s, e["code"].as_str()),
                (421, Some("wallet_on_other_ta")),
                "{e}"
            );
            assert_eq!(e["details"]["namedBy"], "credential", "{e}");
            assert_eq!(e["details"]["walletTa"], other_checksummed.as_str(), "{e}");
            assert_eq!(e["details"]["thisTa"], this_ta.as_str(), "{e}");
            let message = e["error"].as_str().unwrap();
            assert!(
                message.contains("minted by TA")
                    && message.contains(&other_checksummed)
                    && message.contains(&this_ta),
                "{message}"
            );
        }
    }
    // The same from the refresh route, which reads the presented credential before the ceremony.
    let (s, e, _) = post(
        &env,
        &http,
        "/kms/refresh-agent-credential",
        &theirs,
        &json!({"keyId": key_id}),
    )
    .await;
    assert_eq!(
        (s, e["code"].as_str(), e["details"]["namedBy"].as_str()),
        (421, Some("wallet_on_other_ta"), Some("credential")),
        "{e}"
    );
    assert_eq!(
        tee_calls(&env, "SignAgentUserOp"),
        0,
        "no credential of another TA reached the TA"
    );

    // A claim in another spelling than a TA writes is malformed (this TA's address in capitals).
    let shouting = with_claims(&jwt, |c| {
        c["iss"] = json!(format!("0x{}", this_ta[2..].to_uppercase()))
    });
    let (s, e, _) = post(
        &env,
        &client_from("127.0.0.10"),
        "/kms/sign-agent",
        &shouting,
        &sign_body(&key_id),
    )
    .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (401, Some("credential_malformed")),
        "{e}"
    );

    // Seven 421s from 127.0.0.9, over its budget of 5 had they been charged: its agent's own
    // credential still signs from there, and reaches the TA.
    let (s, v, _) = post(&env, &http, "/kms/sign-agent", &jwt, &sign_body(&key_id)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(tee_calls(&env, "SignAgentUserOp"), 1);
}
