//! Every `kms-admin` command, run as the real binary against the companion's real SQLite file
//! and the TA simulator (`ta-sim`), while the companion itself runs in-process over both.
//! The chain-side cases (on-chain revocation, balances) are in `e2e/tests/it/admin.rs` on anvil.

use crate::common::{self, admin, admin_in, kid, sign_agent, Owner};
use alloy::primitives::address;
use kms_chain::session::{SessionGrant, TargetPermission, TokenLimit, TRANSFER};
use kms_db::{JwtSecretMeta, JwtSecretState};
use kms_proto::{GetAgentState, WalletId};
use kms_test_support::{Env, Sim};
use serde_json::json;

// ------------------------------------------------------------------ JWT secrets

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwt_status_and_normal_then_forced_rotation() {
    let env = Env::start().await;
    let db = &env.server().state.db;

    // Before any credential the TA has no kid.
    let out = admin(&env, &["jwt-secret-status"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("No JWT secret"), "{out:?}");

    let mut owner = Owner::register(&env).await;
    let (key_a, jwt_a, _) = owner.agent(&env).await;
    let k1 = kid(&jwt_a);

    // Status: one current kid, as a table and as JSON.
    let out = admin(&env, &["jwt-secret-status"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("KID"), "{out:?}");
    assert!(
        out.stdout.contains(&k1) && out.stdout.contains("current"),
        "{out:?}"
    );
    let status = admin(&env, &["--json", "jwt-secret-status"]).await.json();
    assert_eq!(status.as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status[0]["kid"], json!(k1));
    assert_eq!(status[0]["status"], "current");
    assert!(status[0]["ageSecs"].as_i64().unwrap() >= 0);

    // Normal rotation: a new kid; the old one verify-only, its credentials still good.
    let out = admin(&env, &["rotate-jwt-secret"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("verify-only until"), "{out:?}");
    let meta = db.list_jwt_secret_meta().await.unwrap();
    let current: Vec<_> = meta
        .iter()
        .filter(|m| m.status == JwtSecretState::Current)
        .collect();
    assert_eq!(current.len(), 1, "{meta:?}");
    let k2 = current[0].kid.clone();
    assert_ne!(k2, k1);
    assert!(
        out.stdout.contains(&format!("New current kid: {k2}")),
        "{out:?}"
    );
    let old = meta.iter().find(|m| m.kid == k1).unwrap();
    assert_eq!(old.status, JwtSecretState::VerifyOnly);
    assert!(old.retire_at.unwrap() > old.created_at);
    let (s, v) = sign_agent(&env, &jwt_a, &key_a).await;
    assert_eq!(s, 200, "an old credential works during the overlap: {v}");
    let (key_b, jwt_b, _) = owner.agent(&env).await;
    assert_eq!(kid(&jwt_b), k2, "new credentials use the new kid");
    let (s, v) = sign_agent(&env, &jwt_b, &key_b).await;
    assert_eq!(s, 200, "{v}");

    // Forced rotation: every old kid purged; every outstanding credential refused.
    let r = admin(&env, &["--json", "rotate-jwt-secret", "--force"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let r = r.json();
    assert_eq!(r["mode"], "force");
    let k3 = r["newKid"].as_str().unwrap().to_owned();
    assert!(k3 != k1 && k3 != k2);
    let mut purged: Vec<&str> = r["previous"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["fate"], "purged", "{r}");
            p["kid"].as_str().unwrap()
        })
        .collect();
    purged.sort();
    let mut expected = vec![k1.as_str(), k2.as_str()];
    expected.sort();
    assert_eq!(purged, expected);
    assert_eq!(r["secrets"].as_array().unwrap().len(), 1, "{r}");
    for (jwt, key) in [(&jwt_a, &key_a), (&jwt_b, &key_b)] {
        let (s, v) = sign_agent(&env, jwt, key).await;
        assert_eq!(s, 401, "a credential of a purged kid is refused: {v}");
    }
    let (key_c, jwt_c, _) = owner.agent(&env).await;
    assert_eq!(kid(&jwt_c), k3);
    assert_eq!(sign_agent(&env, &jwt_c, &key_c).await.0, 200);

    // The table keeps the history: k1 and k2 retired, k3 current.
    let meta = db.list_jwt_secret_meta().await.unwrap();
    let state = |k: &str| meta.iter().find(|m| m.kid == k).unwrap().status;
    assert_eq!(state(&k1), JwtSecretState::Retired);
    assert_eq!(state(&k2), JwtSecretState::Retired);
    assert_eq!(state(&k3), JwtSecretState::Current);
    let out = admin(&env, &["jwt-secret-status"]).await;
    assert!(out.stdout.contains("1 in the TA, 2 retired"), "{out:?}");

    // The audit log records both rotations, and no secret: only kids.
    let audit = db.audit_rows(0, 1000).await.unwrap();
    let rotations: Vec<_> = audit
        .iter()
        .filter(|e| e.action == "JwtRotateSecret" && e.actor == "kms-admin")
        .collect();
    assert_eq!(rotations.len(), 2, "{audit:?}");
    assert_eq!(rotations[1].key_id.as_deref(), Some(k3.as_str()));
    assert_eq!(db.verify_audit_chain().await.unwrap().first_bad, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn normal_rotations_in_a_row_keep_every_verify_only_kid_then_refuse_at_the_limit() {
    let env = Env::start().await;
    let db = &env.server().state.db;
    let mut owner = Owner::register(&env).await;
    let (key_a, jwt_a, _) = owner.agent(&env).await;
    let k1 = kid(&jwt_a);

    // Two normal rotations in a row: the first kid stays verify-only (its credential has days
    // to live), next to the second.
    let r = admin(&env, &["--json", "rotate-jwt-secret"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let k2 = r.json()["newKid"].as_str().unwrap().to_owned();
    let out = admin(&env, &["rotate-jwt-secret"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    for k in [&k1, &k2] {
        assert!(
            out.stdout
                .contains(&format!("Previous kid {k}: verify-only until")),
            "{out:?}"
        );
    }
    assert!(!out.stdout.contains("purged"), "{out:?}");
    let (s, v) = sign_agent(&env, &jwt_a, &key_a).await;
    assert_eq!(s, 200, "the first kid's credential still works: {v}");

    // jwt_secret_meta and jwt-secret-status show both verify-only kids with their retire times.
    let meta = db.list_jwt_secret_meta().await.unwrap();
    let row = |k: &str| meta.iter().find(|m| m.kid == k).unwrap().clone();
    let (m1, m2) = (row(&k1), row(&k2));
    assert_eq!(m1.status, JwtSecretState::VerifyOnly);
    assert_eq!(m2.status, JwtSecretState::VerifyOnly);
    let overlap = kms_proto::jwt::VERIFY_ONLY_OVERLAP_SECS as i64;
    assert!(m1.retire_at.unwrap() >= m1.created_at + overlap, "{m1:?}");
    assert!(m2.retire_at.unwrap() >= m1.retire_at.unwrap(), "{m2:?}");
    let status = admin(&env, &["--json", "jwt-secret-status"]).await.json();
    let verify_only: Vec<(&str, i64)> = status
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["status"] == "verify-only")
        .map(|k| (k["kid"].as_str().unwrap(), k["retireAt"].as_i64().unwrap()))
        .collect();
    assert_eq!(verify_only.len(), 2, "{status}");
    assert!(verify_only.contains(&(k1.as_str(), m1.retire_at.unwrap())));
    assert!(verify_only.contains(&(k2.as_str(), m2.retire_at.unwrap())));
    let out = admin(&env, &["jwt-secret-status"]).await;
    assert!(out.stdout.contains("3 in the TA, 0 retired"), "{out:?}");

    // Up to the TA's limit of verify-only kids, then a normal rotation is refused: exit 1,
    // nothing changed, and the message says from when it can run (the first kid's retire time).
    for _ in 2..kms_proto::jwt::MAX_VERIFY_ONLY_KIDS {
        assert_eq!(admin(&env, &["rotate-jwt-secret"]).await.code, 0);
    }
    let before = db.list_jwt_secret_meta().await.unwrap();
    let retry_at = m1.retire_at.unwrap();
    let out = admin(&env, &["rotate-jwt-secret"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("refused the normal rotation")
            && out.stderr.contains(&format!("unix {retry_at}"))
            && out.stderr.contains(&k1)
            && out.stderr.contains("--force"),
        "{out:?}"
    );
    let err = admin(&env, &["--json", "rotate-jwt-secret"])
        .await
        .json_err();
    assert_eq!(err["exitCode"], 1, "{err}");
    assert!(err["hint"].as_str().unwrap().contains("--force"), "{err}");
    let after = db.list_jwt_secret_meta().await.unwrap();
    let live = |m: &[kms_db::JwtSecretMeta]| {
        m.iter()
            .map(|k| (k.kid.clone(), k.status, k.retire_at))
            .collect::<Vec<_>>()
    };
    assert_eq!(live(&after), live(&before));
    assert_eq!(
        after
            .iter()
            .filter(|m| m.status == JwtSecretState::VerifyOnly)
            .count(),
        kms_proto::jwt::MAX_VERIFY_ONLY_KIDS
    );
    assert_eq!(sign_agent(&env, &jwt_a, &key_a).await.0, 200);
    let audit = db.audit_rows(0, 1000).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "JwtRotateSecret" && e.outcome == "refused"),
        "{audit:?}"
    );

    // A forced rotation still runs at the limit and kills every old kid.
    let r = admin(&env, &["--json", "rotate-jwt-secret", "--force"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.json()["previous"].as_array().unwrap().len(),
        kms_proto::jwt::MAX_VERIFY_ONLY_KIDS + 1
    );
    assert_eq!(sign_agent(&env, &jwt_a, &key_a).await.0, 401);
}

// ------------------------------------------------------------------ agent keys

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_and_revoke_agent_keys_db_only_and_idempotent() {
    let mut env = Env::start().await;
    let mut owner = Owner::register(&env).await;
    let (key0, jwt0, addr0) = owner.agent(&env).await;
    let (key1, jwt1, addr1) = owner.agent(&env).await;
    let db = env.server().state.db.clone();
    let wallet = owner.wallet.clone();
    // The whole grant, as the companion records it: functions, a token cap, gas cap, paymaster,
    // usage limit, a periodic budget of 0.5 ETH per day.
    let grant = SessionGrant {
        key: addr1.parse().unwrap(),
        targets: vec![
            TargetPermission::transfers_only(address!(
                "0x3333333333333333333333333333333333333333"
            )),
            TargetPermission::with_selectors(
                address!("0x5555555555555555555555555555555555555555"),
                vec![TRANSFER],
            ),
        ],
        tokens: vec![TokenLimit {
            token: address!("0x6666666666666666666666666666666666666666"),
            cap: 250_000_000,
        }],
        spend_cap: 1_500_000_000_000_000_000,
        gas_cap: 10_000_000_000_000_000,
        paymaster: Some(address!("0x7777777777777777777777777777777777777777")),
        max_ops: 5,
        period: 86_400,
        period_cap: 500_000_000_000_000_000,
        valid_after: 1_700_000_000,
        valid_until: 1_900_000_000,
        revoker: address!("0x4444444444444444444444444444444444444444"),
    };
    let grant_json = serde_json::to_string(&grant).unwrap();
    // Recorded as the companion's grant route records an included grant: pending, then active.
    let record = |account: &'static str, grant_json: Option<String>| {
        let db = db.clone();
        let wallet = wallet.clone();
        async move {
            let id = db
                .insert_session(&kms_db::NewSession {
                    wallet_id: &wallet,
                    agent_index: 1,
                    account: account.parse().unwrap(),
                    account_kind: kms_db::AccountKind::AgentAccount,
                    targets_json: "[\"0x3333333333333333333333333333333333333333\"]",
                    spend_cap: "1500000000000000000".parse().unwrap(),
                    valid_after: 1_700_000_000,
                    valid_until: 1_900_000_000,
                    revoker: Some(
                        "0x4444444444444444444444444444444444444444"
                            .parse()
                            .unwrap(),
                    ),
                    grant_json: grant_json.as_deref(),
                    user_op_hash: None,
                    user_op_json: None,
                    now: kms_db::now_secs(),
                })
                .await
                .unwrap();
            assert!(db
                .activate_session(id, None, kms_db::now_secs())
                .await
                .unwrap());
            id
        }
    };
    const ACCOUNT: &str = "0x2222222222222222222222222222222222222222";
    record(ACCOUNT, Some(grant_json.clone())).await;

    // The table: both keys, the recorded session of #1 (no RPC: from the database).
    let out = admin(&env, &["list-agent-keys"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("KEY ID"), "{out:?}");
    // The companion answers addresses EIP-55 checksummed (#15 item 7); the table shows the
    // database's lowercase spelling.
    for s in [&key0, &key1, &addr0, &addr1] {
        assert!(
            out.stdout.contains(s.to_ascii_lowercase().as_str()),
            "{s} missing: {out:?}"
        );
    }
    assert!(out.stdout.contains("1.5 ETH"), "{out:?}");
    assert!(out.stdout.contains("2 active"), "{out:?}");
    // Caps from the database; what was spent or used needs the chain.
    for cell in ["?/1.5 ETH", "?/0.5 ETH per day", "?/0.01 ETH", "?/5"] {
        assert!(out.stdout.contains(cell), "{cell} missing: {out:?}");
    }
    let header = out.stdout.lines().next().unwrap();
    for col in ["VALUE", "PERIOD", "GAS", "OPS", "WINDOW"] {
        assert!(header.contains(col), "{col} missing: {header}");
    }
    assert!(!out.stdout.contains(&jwt0) && !out.stdout.contains(&jwt1));
    let list = admin(&env, &["--json", "list-agent-keys", "--wallet", &wallet])
        .await
        .json();
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["keyId"], json!(key0));
    assert_eq!(rows[0]["agentIndex"], 0);
    assert_eq!(rows[0]["session"], json!(null));
    assert!(rows[0]["credentialExpiresAt"].as_i64().unwrap() > kms_db::now_secs());
    let session = &rows[1]["session"];
    assert_eq!(session["source"], "database");
    assert_eq!(session["spendCap"], "1500000000000000000");
    assert_eq!(session["gasCap"], "10000000000000000", "{session}");
    assert_eq!(session["maxOps"], 5);
    assert_eq!(session["period"], 86_400, "{session}");
    assert_eq!(session["periodCap"], "500000000000000000", "{session}");
    assert_eq!(
        session["paymaster"],
        "0x7777777777777777777777777777777777777777"
    );
    for unknown in [
        "spent",
        "gasSpent",
        "opsUsed",
        "periodIndex",
        "periodSpent",
        "periodEndsAt",
    ] {
        assert!(session[unknown].is_null(), "{unknown}: {session}");
    }
    assert_eq!(
        session["targets"],
        json!(["0x3333333333333333333333333333333333333333"])
    );
    assert_eq!(
        session["targetPermissions"],
        json!([
            {"target": "0x3333333333333333333333333333333333333333", "anySelector": false, "selectors": []},
            {"target": "0x5555555555555555555555555555555555555555", "anySelector": false,
             "selectors": ["0xa9059cbb"]},
        ]),
        "{session}"
    );
    assert_eq!(
        session["tokens"],
        json!([{"token": "0x6666666666666666666666666666666666666666", "cap": "250000000", "spent": null}])
    );
    assert_eq!(
        (&session["accountKind"], &session["lane"]),
        (&json!("agent-account"), &json!(null)),
        "{session}"
    );
    assert!(!out.stdout.contains("(erc7579"), "{out:?}");
    // A session on an ERC-7579 account: its kind and lane, in the table and the JSON.
    let id = db
        .insert_session(&kms_db::NewSession {
            wallet_id: &wallet,
            agent_index: 0,
            account: "0x8888888888888888888888888888888888888888"
                .parse()
                .unwrap(),
            account_kind: kms_db::AccountKind::Erc7579,
            targets_json: "[\"0x3333333333333333333333333333333333333333\"]",
            spend_cap: "1".parse().unwrap(),
            valid_after: 1_700_000_000,
            valid_until: 1_900_000_000,
            revoker: None,
            grant_json: None,
            user_op_hash: None,
            user_op_json: None,
            now: kms_db::now_secs(),
        })
        .await
        .unwrap();
    assert!(db
        .activate_session(id, None, kms_db::now_secs())
        .await
        .unwrap());
    assert!(db
        .set_session_lane(id, 7, kms_db::now_secs())
        .await
        .unwrap());
    let out = admin(&env, &["list-agent-keys"]).await;
    assert!(
        out.stdout
            .contains("0x8888888888888888888888888888888888888888 (erc7579, lane 7)"),
        "{out:?}"
    );
    let listed = admin(&env, &["--json", "list-agent-keys", "--wallet", &wallet])
        .await
        .json();
    let s0 = &listed[0]["session"];
    assert_eq!(
        (&s0["accountKind"], &s0["lane"]),
        (&json!("erc7579"), &json!(7)),
        "{s0}"
    );

    // A session recorded before grants carried all this still lists, with what it has: here
    // a later grant on the same account, which supersedes the first.
    record(ACCOUNT, None).await;
    let out = admin(&env, &["list-agent-keys"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("?/1.5 ETH"), "{out:?}");
    assert!(out.stdout.contains("superseded"), "{out:?}");
    let old = admin(&env, &["--json", "list-agent-keys", "--wallet", &wallet])
        .await
        .json();
    let session = &old[1]["session"];
    assert_eq!(session["source"], "database");
    assert_eq!(session["status"], "active");
    assert_eq!(session["spendCap"], "1500000000000000000");
    for absent in [
        "gasCap",
        "maxOps",
        "period",
        "periodCap",
        "paymaster",
        "targetPermissions",
        "tokens",
    ] {
        assert!(session[absent].is_null(), "{absent}: {session}");
    }
    let statuses: Vec<&str> = old[1]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["active", "superseded"], "{old}");
    assert_eq!(session["validUntil"], 1_900_000_000);
    assert!(
        !list.to_string().contains(&jwt0),
        "no credential in the output"
    );

    // Unknown or malformed input.
    let other = "12345678-9abc-4def-8011-223344556677";
    let out = admin(&env, &["list-agent-keys", "--wallet", other]).await;
    assert_eq!(out.code, 3, "{out:?}");
    let out = admin(&env, &["list-agent-keys", "--wallet", "nope"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    let out = admin(&env, &["revoke-agent-key", &format!("{wallet}:7")]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("no agent key"), "{out:?}");
    let out = admin(&env, &["--json", "revoke-agent-key", "garbage"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(out.json_err()["code"], "usage");

    // Revoke #0 with --db-only: database and TA, chain skipped; exit 0.
    let r = admin(&env, &["--json", "revoke-agent-key", &key0, "--db-only"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let r = r.json();
    assert_eq!(r["ok"], true);
    let outcomes: Vec<&str> = r["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["revoked", "revoked", "skipped"], "{r}");
    // The companion refuses the credential; the TA itself marks the key revoked.
    let (s, v) = sign_agent(&env, &jwt0, &key0).await;
    assert_eq!(s, 401, "{v}");
    assert_eq!(v["code"], "credential_revoked", "{v}");
    let wid: WalletId = wallet.parse().unwrap();
    let tee = common::tee(&env);
    let st = tee
        .call_async(&GetAgentState {
            wallet_id: wid,
            agent_index: 0,
        })
        .await
        .unwrap();
    assert!(st.revoked);
    let row = db.get_agent(&wallet, 0).await.unwrap().unwrap();
    assert_eq!(row.status, kms_db::AgentStatus::Revoked);
    assert_eq!(
        row.generation,
        Some(st.generation),
        "the TA's generation recorded"
    );
    // The other key is untouched.
    assert_eq!(sign_agent(&env, &jwt1, &key1).await.0, 200);

    // Re-running is a success that changes nothing.
    let out = admin(&env, &["revoke-agent-key", &key0, "--db-only"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.matches("already-revoked").count(), 2, "{out:?}");
    let list = admin(&env, &["--json", "list-agent-keys", "--status", "revoked"])
        .await
        .json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["keyId"], json!(key0));

    // Key #1 has sessions on two accounts: without a chain configured, the chain layer fails
    // (exit 7) after the database and the TA are revoked, for each account, and says what to
    // do; the sessions stay live (`revoke_failed`) for the next run.
    const OTHER_ACCOUNT: &str = "0x8888888888888888888888888888888888888888";
    record(OTHER_ACCOUNT, Some(grant_json.clone())).await;
    let out = admin(&env, &["revoke-agent-key", &key1]).await;
    assert_eq!(out.code, 7, "{out:?}");
    assert!(out.stdout.contains("FAILED"), "{out:?}");
    assert!(out.stdout.contains("--db-only"), "{out:?}");
    for account in [ACCOUNT, OTHER_ACCOUNT] {
        assert!(out.stdout.contains(account), "{account}: {out:?}");
    }
    assert_eq!(sign_agent(&env, &jwt1, &key1).await.0, 401);
    let live: Vec<(String, kms_db::SessionStatus)> = db
        .sessions_of_agent(&wallet, 1)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.status.is_live())
        .map(|s| (format!("{:#x}", s.account), s.status))
        .collect();
    assert_eq!(
        live,
        [
            (
                OTHER_ACCOUNT.to_owned(),
                kms_db::SessionStatus::RevokeFailed
            ),
            (ACCOUNT.to_owned(), kms_db::SessionStatus::RevokeFailed),
        ]
    );
    // --db-only reports each account as skipped.
    let r = admin(&env, &["--json", "revoke-agent-key", &key1, "--db-only"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let sessions = r.json()["sessions"].clone();
    assert_eq!(
        sessions
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (
                s["account"].as_str().unwrap(),
                s["outcome"].as_str().unwrap()
            ))
            .collect::<Vec<_>>(),
        [(OTHER_ACCOUNT, "skipped"), (ACCOUNT, "skipped")],
        "{sessions}"
    );
    // An unreachable node: exit 6, and the URL (which may hold an API key) is not printed.
    let out = admin(
        &env,
        &[
            "revoke-agent-key",
            &key1,
            "--rpc-url",
            "http://127.0.0.1:9/?apikey=SECRET",
            "--validator-address",
            "0x5555555555555555555555555555555555555555",
        ],
    )
    .await;
    assert_eq!(out.code, 6, "{out:?}");
    assert!(!out.stdout.contains("SECRET") && !out.stderr.contains("SECRET"));

    // A run that fails in the TA layer is finished by the next run.
    let (key2, jwt2, _) = owner.agent(&env).await;
    env.sim.stop();
    let out = admin(&env, &["revoke-agent-key", &key2, "--db-only"]).await;
    assert_eq!(out.code, 5, "TA unreachable: {out:?}");
    assert!(out.stdout.contains("database  revoked"), "{out:?}");
    env.sim = Sim::start(env.dir.path());
    let out = admin(&env, &["--json", "revoke-agent-key", &key2, "--db-only"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let outcomes: Vec<String> = out.json()["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(outcomes, ["already-revoked", "revoked", "skipped"]);
    let tee = common::tee(&env);
    let st = tee
        .call_async(&GetAgentState {
            wallet_id: wid,
            agent_index: 2,
        })
        .await
        .unwrap();
    assert!(st.revoked, "the second run bumped the generation in the TA");
    drop(jwt2);
}

// ------------------------------------------------------------------ API keys

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_keys_are_shown_once_stored_hashed_and_revocable() {
    let env = Env::start().await;
    let db = &env.server().state.db;

    let out = admin(&env, &["--json", "api-key", "create", "--label", "ci"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let created = out.json();
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with(kms_db::API_KEY_PREFIX), "{created}");
    // Stored hashed: the database knows the key by its hash only.
    assert_eq!(db.verify_api_key(&key).await.unwrap(), Some(id.clone()));
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM api_keys WHERE id || secret_hash || label LIKE '%' || $1 || '%'",
    )
    .bind(&key)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(n, 0, "the key itself is nowhere in the api_keys table");

    // The companion accepts it.
    let resp = env
        .http
        .post(env.url("/BeginRegistration"))
        .header("x-api-key", &key)
        .json(&json!({"Description": "w"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // Listed without the key.
    let out = admin(&env, &["api-key", "list"]).await;
    assert_eq!(out.code, 0);
    assert!(
        out.stdout.contains(&id) && out.stdout.contains("ci"),
        "{out:?}"
    );
    assert!(!out.stdout.contains(&key));
    let list = admin(&env, &["--json", "api-key", "list"]).await;
    assert!(!list.stdout.contains(&key));
    let row = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == json!(id))
        .cloned()
        .unwrap();
    assert_eq!(row["status"], "active");

    // Revoke: refused by the companion from then on; again is a no-op; unknown ids exit 3.
    let out = admin(&env, &["api-key", "revoke", &id]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let resp = env
        .http
        .post(env.url("/BeginRegistration"))
        .header("x-api-key", &key)
        .json(&json!({"Description": "w"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let out = admin(&env, &["--json", "api-key", "revoke", &id]).await;
    assert_eq!(out.code, 0);
    assert_eq!(out.json()["alreadyRevoked"], true);
    let out = admin(&env, &["--json", "api-key", "revoke", "00000000deadbeef"]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(out.json_err()["code"], "unknown_key");
}

// ------------------------------------------------------------------ operator key

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_address_is_created_only_on_request() {
    let mut env = Env::start().await;
    // The companion creates the operator key at start-up: kms-admin reads the same key.
    let (status, health) = env.get("/health").await;
    assert_eq!(status, 200, "{health}");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    let companion_operator = health["operatorAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("no operator address in /health: {health}"))
        .to_owned();
    let out = admin(&env, &["--json", "operator-address"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.json()["address"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case(&companion_operator),
        "{out:?} vs {companion_operator}"
    );

    // A TA without an operator key (fresh sealed store, same database): kms-admin does not
    // create one unless asked.
    env.stop_server().await;
    env.sim.stop();
    std::fs::remove_dir_all(env.dir.path().join("ta")).unwrap();
    env.sim = Sim::start(env.dir.path());
    let out = admin(&env, &["operator-address"]).await;
    assert_eq!(out.code, 3, "no operator key yet: {out:?}");
    assert!(out.stderr.contains("--create"), "{out:?}");

    let out = admin(&env, &["--json", "operator-address", "--create"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let created = out.json();
    assert_eq!(created["createdNow"], true);
    assert_eq!(created["balanceWei"], json!(null), "no RPC configured");
    let address = created["address"].as_str().unwrap().to_owned();
    assert_eq!(address.len(), 42);

    let out = admin(&env, &["operator-address"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(&address), "{out:?}");
    assert!(out.stdout.contains("no RPC URL configured"), "{out:?}");
    let again = admin(&env, &["--json", "operator-address", "--create"])
        .await
        .json();
    assert_eq!(
        again["address"],
        json!(address),
        "--create keeps an existing key"
    );
    assert_eq!(again["createdNow"], false);

    // A node that cannot be reached: the address is still printed, the exit code says 6.
    let out = admin(
        &env,
        &["operator-address", "--rpc-url", "http://127.0.0.1:9/"],
    )
    .await;
    assert_eq!(out.code, 6, "{out:?}");
    assert!(out.stdout.contains(&address), "{out:?}");
}

// ------------------------------------------------------------------ failures

/// A PostgreSQL server that does not answer: exit 4 after the retries, the URL named without its
/// password; a database migrated by a newer version: exit 4, refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_server_or_a_newer_schema_is_a_database_error() {
    let empty = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://kms:hunter2@127.0.0.1:{port}/kms");
    let out = admin_in(empty.path(), &["--database-url", &url, "api-key", "list"]).await;
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("postgres://kms:***@127.0.0.1:{port}/kms")),
        "{out:?}"
    );
    assert!(out.stderr.contains("unreachable"), "{out:?}");
    assert!(!out.stderr.contains("hunter2") && !out.stdout.contains("hunter2"));

    let url = kms_db::testing::test_database_url(empty.path()).await;
    let db = kms_db::Db::open(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, 'from the future', TRUE, $2, 0)",
    )
    .bind(9999_i64)
    .bind(vec![0u8; 48])
    .execute(db.pool())
    .await
    .unwrap();
    db.close().await;
    let out = admin_in(empty.path(), &["--database-url", &url, "api-key", "list"]).await;
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr.contains("newer") && out.stderr.contains("9999"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_database_and_unreachable_ta_have_their_exit_codes() {
    // No database: exit 4, and nothing is created.
    let empty = tempfile::tempdir().unwrap();
    for args in [
        &["list-agent-keys"][..],
        &["api-key", "list"],
        &["jwt-secret-status"],
        &["rotate-jwt-secret"],
    ] {
        let out = admin_in(empty.path(), args).await;
        assert_eq!(out.code, 4, "{args:?}: {out:?}");
        assert!(out.stderr.contains("database not found"), "{out:?}");
    }
    let out = admin_in(empty.path(), &["--json", "api-key", "list"]).await;
    assert_eq!(out.json_err()["code"], "database_unavailable");
    assert!(!empty.path().join("kms.db").exists());

    // Database present, TA gone: exit 5 for the commands that need the TA.
    let mut env = Env::start().await;
    env.sim.stop();
    for args in [
        &["jwt-secret-status"][..],
        &["rotate-jwt-secret"],
        &["operator-address"],
    ] {
        let out = admin(&env, args).await;
        assert_eq!(out.code, 5, "{args:?}: {out:?}");
    }
    let out = admin(&env, &["--json", "rotate-jwt-secret"]).await;
    assert_eq!(out.json_err()["code"], "tee_unreachable");
    // Database-only commands still work.
    assert_eq!(admin(&env, &["api-key", "list"]).await.code, 0);

    // A malformed TEE backend is a configuration error.
    let out = admin(&env, &["jwt-secret-status", "--tee", "tpm"]).await;
    assert_eq!(out.code, 7, "{out:?}");

    // --help documents the exit codes.
    let out = admin(&env, &["revoke-agent-key", "--help"]).await;
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("Exit codes:"), "{out:?}");
    assert!(out.stdout.contains("--db-only"), "{out:?}");
}

/// With several TAs over one database, `jwt_secret_meta` keeps each TA's kids under its name:
/// `jwt-secret-status` shows this host's TA's kids only, and neither it nor a forced rotation
/// retires the other TA's rows (before, the table mirrored whichever TA synced last).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwt_secret_status_shows_and_rewrites_only_this_tas_kids() {
    let env = Env::start().await;
    let mut owner = Owner::register(&env).await;
    let (_, jwt, _) = owner.agent(&env).await;
    let k1 = kid(&jwt);
    let db = &env.server().state.db;
    let wallet = owner.wallet.clone();
    let this_ta = db.wallet_ta(&wallet).await.unwrap().unwrap().unwrap();
    let other_ta = format!(
        "{:#x}",
        address!("00000000000000000000000000000000000000b2")
    );
    db.sync_jwt_secret_meta(
        &other_ta,
        &[JwtSecretMeta {
            kid: "kother".into(),
            status: JwtSecretState::Current,
            created_at: 1,
            retire_at: None,
            retired_at: None,
        }],
        kms_db::now_secs(),
    )
    .await
    .unwrap();

    let status = admin(&env, &["--json", "jwt-secret-status"]).await.json();
    let kids: Vec<&str> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [k1.as_str()], "{status}");
    let out = admin(&env, &["jwt-secret-status"]).await;
    assert!(!out.stdout.contains("kother"), "{out:?}");

    let out = admin(&env, &["rotate-jwt-secret", "--force"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let other = db.list_jwt_secret_meta_of(&other_ta).await.unwrap();
    assert_eq!(
        (other.len(), other[0].status),
        (1, JwtSecretState::Current),
        "{other:?}"
    );
    let mine = db.list_jwt_secret_meta_of(&this_ta).await.unwrap();
    let states: Vec<(String, JwtSecretState)> =
        mine.iter().map(|m| (m.kid.clone(), m.status)).collect();
    assert_eq!(states.len(), 2, "{states:?}");
    assert!(
        states.contains(&(k1.clone(), JwtSecretState::Retired)),
        "{states:?}"
    );
    assert!(
        states
            .iter()
            .any(|(k, s)| *k != k1 && *s == JwtSecretState::Current),
        "{states:?}"
    );
    assert!(db
        .list_jwt_secret_meta_of(kms_db::UNNAMED_TA)
        .await
        .unwrap()
        .is_empty());
}

/// Records wallet `wallet` on TA `ta` in the database (as another TA's companion would have).
async fn set_wallet_ta(db: &kms_db::Db, wallet: &str, ta: &str) {
    sqlx::query("UPDATE wallets SET ta_id = $1 WHERE key_id = $2")
        .bind(ta)
        .bind(wallet)
        .execute(db.pool())
        .await
        .unwrap();
}

/// How many `RevokeAgentKey` events the audit log holds.
async fn revocations(db: &kms_db::Db) -> i64 {
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM audit_log WHERE action = 'RevokeAgentKey'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    n
}

/// With several TAs over one database (docs/DEPLOY.md), `revoke-agent-key` refuses an agent of
/// a wallet the database records on another TA (exit 9, naming that TA and this host's) before
/// any layer: the database row stays active, nothing is audited, and the TA is not asked (the
/// agent's credential still signs once the row names this TA again). Back on this TA, it revokes
/// as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoke_agent_key_refuses_a_wallet_of_another_ta_before_any_layer() {
    let env = Env::start().await;
    let mut owner = Owner::register(&env).await;
    let (key_id, jwt, _) = owner.agent(&env).await;
    let wallet = key_id.rsplit_once(':').unwrap().0.to_owned();
    let db = &env.server().state.db;
    let this_ta = db.wallet_ta(&wallet).await.unwrap().unwrap().unwrap();
    let other_ta = address!("00000000000000000000000000000000000000b2");
    set_wallet_ta(db, &wallet, &format!("{other_ta:#x}")).await;
    let this_checksummed = this_ta
        .parse::<alloy::primitives::Address>()
        .unwrap()
        .to_checksum(None);
    for extra in [&[][..], &["--db-only"]] {
        let mut args = vec!["--json", "revoke-agent-key", &key_id];
        args.extend_from_slice(extra);
        let out = admin(&env, &args).await;
        assert_eq!(out.code, 9, "{out:?}");
        let err = out.json_err();
        assert_eq!(err["code"], "wallet_on_other_ta", "{out:?}");
        let message = err["error"].as_str().unwrap();
        assert!(
            message.contains(&other_ta.to_checksum(None)) && message.contains(&this_checksummed),
            "{message}"
        );
        assert!(out.stdout.is_empty(), "no report: {out:?}");
    }
    let out = admin(&env, &["revoke-agent-key", &key_id]).await;
    assert_eq!(out.code, 9, "{out:?}");
    assert!(
        out.stderr.contains("not by this host's TA")
            && out.stderr.contains("hint: run kms-admin on a board of TA"),
        "{out:?}"
    );
    let row = db.get_agent(&wallet, 0).await.unwrap().unwrap();
    assert_eq!(row.status, kms_db::AgentStatus::Active);
    assert_eq!(revocations(db).await, 0, "nothing audited");

    // The TA was not asked: once the row names this TA again, the credential still signs.
    set_wallet_ta(db, &wallet, &this_ta).await;
    let (status, answer) = sign_agent(&env, &jwt, &key_id).await;
    assert_eq!(status, 200, "{answer}");
    let out = admin(&env, &["revoke-agent-key", &key_id]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(revocations(db).await, 1);
    let (status, answer) = sign_agent(&env, &jwt, &key_id).await;
    assert_eq!(status, 401, "{answer}");
}

// ------------------------------------------------------------------ accept-restore

/// With several TAs over one database (docs/DEPLOY.md), accept-restore aligns only its own TA's
/// wallets: an active agent of a wallet recorded on another TA, unknown to this one, is left as it
/// is (it would otherwise be revoked in the database as "unknown to the TA").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accept_restore_leaves_the_wallets_of_other_tas_alone() {
    let env = Env::start().await;
    let db = &env.server().state.db;
    let now = kms_db::now_secs();
    let other = "6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f";
    db.insert_wallet(&kms_db::NewWallet {
        key_id: other.into(),
        description: "on another TA".into(),
        key_usage: "SIGN_VERIFY".into(),
        key_spec: "ECC_SECG_P256K1".into(),
        origin: "EXTERNAL_KMS".into(),
        address: address!("00000000000000000000000000000000000000a1"),
        public_key: "02aa".into(),
        derivation_path: "m/44'/60'/0'/0/0".into(),
        rp_id: "localhost".into(),
        credential_id: "cred-other-ta".into(),
        passkey_public_key: "04bb".into(),
        passkey_json: "{}".into(),
        sign_count: 0,
        ta_id: Some(format!(
            "{:#x}",
            address!("00000000000000000000000000000000000000b2")
        )),
        now,
    })
    .await
    .unwrap();
    let index = db
        .reserve_agent_index(other, "elsewhere", now)
        .await
        .unwrap();
    assert!(db
        .activate_agent(
            other,
            index,
            &kms_db::AgentActivation {
                agent_address: address!("00000000000000000000000000000000000000c3"),
                public_key: "02cc",
                credential_hash: "00",
                kid: "k",
                generation: 1,
                issued_at: now,
                expires_at: now + 3600,
                now,
            },
        )
        .await
        .unwrap());

    let out = admin(&env, &["--json", "accept-restore", "--yes"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["database"], json!([]), "{out:?}");
    let row = db.get_agent(other, index).await.unwrap().unwrap();
    assert_eq!(row.status, kms_db::AgentStatus::Active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accept_restore_accepts_a_rolled_back_ta_and_brings_the_database_in_line() {
    let mut env = Env::start().await;
    let mut owner = Owner::register(&env).await;
    let (key_a, jwt_a1, _) = owner.agent(&env).await;
    let (key_c, jwt_c, _) = owner.agent(&env).await;
    let sealed = env.dir.path().join("ta").join("sealed.bin");

    // A copy of the sealed state, taken with the simulator at rest.
    env.stop_server().await;
    env.sim.stop();
    let old = std::fs::read(&sealed).unwrap();
    env.sim = Sim::start(env.dir.path());
    env.restart_server().await;

    // Since that copy: A's credential superseded, B created, C revoked.
    let w = env
        .ceremony(
            &mut owner.passkey,
            &key_a,
            "RefreshAgentCredential",
            json!({}),
        )
        .await;
    let (s, r, _) = env
        .post_bearer(
            "/kms/refresh-agent-credential",
            &jwt_a1,
            &json!({"keyId": key_a, "webAuthnAssertion": w}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let jwt_a2 = r["agentCredential"].as_str().unwrap().to_owned();
    let (key_b, jwt_b, _) = owner.agent(&env).await;
    assert_eq!(
        admin(&env, &["revoke-agent-key", &key_c, "--db-only"])
            .await
            .code,
        0
    );

    // The old copy is put back: the TA refuses it, the companion refuses the TA routes.
    env.stop_server().await;
    env.sim.stop();
    std::fs::write(&sealed, &old).unwrap();
    env.sim = Sim::start(env.dir.path());
    env.restart_server().await;
    let (s, v) = sign_agent(&env, &jwt_a2, &key_a).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (503, Some("ta_rolled_back")),
        "{v}"
    );
    let out = admin(&env, &["list-agent-keys", "--no-chain"]).await;
    assert_eq!(out.code, 0, "database-only commands still work: {out:?}");
    let out = admin(&env, &["jwt-secret-status"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("rolled back"), "{out:?}");

    // --help explains the consequences; without --yes nothing changes (exit 2).
    let help = admin(&env, &["accept-restore", "--help"]).await;
    assert_eq!(help.code, 0);
    for needle in ["revoked", "superseded", "OP-TEE login", "--yes"] {
        assert!(help.stdout.contains(needle), "{needle}: {help:?}");
    }
    let out = admin(&env, &["accept-restore"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("nothing was changed"), "{out:?}");
    let (s, _) = sign_agent(&env, &jwt_a2, &key_a).await;
    assert_eq!(s, 503, "still refused");
    let db = &env.server().state.db;
    let accepts = |rows: &[kms_db::AuditRecord]| {
        rows.iter()
            .filter(|r| r.action == "AcceptRestore")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(accepts(&db.audit_rows(0, 1000).await.unwrap()).is_empty());

    // Accepted.
    let out = admin(&env, &["--json", "accept-restore", "--yes"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let j = out.json();
    assert_eq!(j["wasRolledBack"], true, "{j}");
    let (sealed_v, counter) = (
        j["sealedVersion"].as_u64().unwrap(),
        j["counter"].as_u64().unwrap(),
    );
    assert!(sealed_v < counter, "{j}");
    assert_eq!(j["newVersion"].as_u64(), Some(counter + 1), "{j}");
    let actions: Vec<(String, String)> = j["database"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["keyId"].as_str().unwrap().to_owned(),
                c["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut want = vec![
        (key_a.clone(), "generation-adopted".to_owned()),
        (key_b.clone(), "revoked-in-database".to_owned()),
        (key_c.clone(), "revoked-again-in-ta".to_owned()),
    ];
    want.sort();
    let mut got = actions.clone();
    got.sort();
    assert_eq!(got, want, "{j}");

    // The database follows the TA: A at the TA's generation, B revoked; C revoked in the TA.
    let index = |k: &str| k.rsplit_once(':').unwrap().1.parse::<u32>().unwrap();
    let row_a = db
        .get_agent(&owner.wallet, index(&key_a))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row_a.generation, Some(1));
    let row_b = db
        .get_agent(&owner.wallet, index(&key_b))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row_b.status, kms_db::AgentStatus::Revoked);
    let tee = common::tee(&env);
    let st = tee
        .call(&GetAgentState {
            wallet_id: owner.wallet.parse::<WalletId>().unwrap(),
            agent_index: index(&key_c),
        })
        .unwrap();
    assert!(st.revoked, "C is revoked in the TA again");

    // Recorded in the audit log, with the versions.
    let rows = accepts(&db.audit_rows(0, 1000).await.unwrap());
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].actor.as_str(), rows[0].outcome.as_str()),
        ("kms-admin", "ok")
    );
    let detail = rows[0].detail.clone().unwrap_or_default();
    assert!(
        detail.contains("was_rolled_back=true")
            && detail.contains("jwt_secrets_rotated=true")
            && detail.contains(&format!("new_version={}", counter + 1)),
        "{detail}"
    );
    assert_eq!(db.verify_audit_chain().await.unwrap().first_bad, None);

    // The companion serves the TA routes again (it re-checks while it refuses).
    let mut served = None;
    for _ in 0..100 {
        let (s, v) = sign_agent(&env, &jwt_a2, &key_a).await;
        if s != 503 {
            served = Some((s, v));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (s, v) = served.expect("the companion serves again after accept-restore");
    // The JWT secrets were force-rotated with the acceptance: A's credentials are dead (its
    // newest would only have been superseded in the restored TA, its older one would have
    // verified again); B and C are revoked.
    assert_eq!(
        (s, v["code"].as_str()),
        (401, Some("credential_invalid")),
        "{v}"
    );
    assert_eq!(sign_agent(&env, &jwt_a1, &key_a).await.0, 401);
    assert_eq!(sign_agent(&env, &jwt_b, &key_b).await.0, 401);
    assert_eq!(sign_agent(&env, &jwt_c, &key_c).await.0, 401);
    // The owner refreshes A; its new credential signs.
    let w = env
        .ceremony(
            &mut owner.passkey,
            &key_a,
            "RefreshAgentCredential",
            json!({}),
        )
        .await;
    let (s, r, _) = env
        .post_bearer(
            "/kms/refresh-agent-credential",
            &jwt_a2,
            &json!({"keyId": key_a, "webAuthnAssertion": w}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let jwt_a3 = r["agentCredential"].as_str().unwrap();
    assert_eq!(sign_agent(&env, jwt_a3, &key_a).await.0, 200);

    // On a TA that is not rolled back it only moves the version.
    let j = admin(&env, &["--json", "accept-restore", "--yes"])
        .await
        .json();
    assert_eq!(j["wasRolledBack"], false, "{j}");
    assert_eq!(j["database"], json!([]), "{j}");
}

// ------------------------------------------------------------------ the audit log

/// A companion without its checkpoint task (the test decides when the TA checkpoints), a
/// wallet, an agent and two signatures, anchored by `audit checkpoint` in two checkpoints,
/// then one more signature (not anchored yet).
async fn anchored_log() -> Env {
    let env = Env::with(kms_test_support::Opts {
        args: vec!["--audit-checkpoint-secs".into(), "0".into()],
        ..Default::default()
    })
    .await;
    let mut owner = Owner::register(&env).await;
    let (key, jwt, _) = owner.agent(&env).await;
    assert_eq!(sign_agent(&env, &jwt, &key).await.0, 200);
    let out = admin(&env, &["--json", "audit", "checkpoint"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["signed"].as_array().unwrap().len(), 1, "{out:?}");
    assert_eq!(sign_agent(&env, &jwt, &key).await.0, 200);
    assert_eq!(admin(&env, &["audit", "checkpoint"]).await.code, 0);
    assert_eq!(sign_agent(&env, &jwt, &key).await.0, 200);
    env
}

/// `audit verify --json`: (exit code, report, stderr error object if any).
async fn audit_verify(env: &Env) -> (i32, serde_json::Value, Option<serde_json::Value>) {
    let out = admin(env, &["audit", "verify", "--json"]).await;
    let err = (!out.stderr.trim().is_empty()).then(|| out.json_err());
    (out.code, out.json(), err)
}

fn codes(report: &serde_json::Value) -> Vec<String> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap().to_owned())
        .collect()
}

async fn sql(env: &Env, q: &str) {
    let db = &env.server().state.db;
    match q.strip_prefix("DROP TRIGGER ") {
        // In the dialect of the database in use (SQLite, or PostgreSQL's `DROP TRIGGER … ON`).
        Some(name) => kms_db::testing::drop_trigger(db, name).await,
        None => {
            sqlx::query(q).execute(db.pool()).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_verify_passes_on_an_intact_log_and_counts_what_is_not_anchored() {
    let env = Env::with(kms_test_support::Opts {
        args: vec!["--audit-checkpoint-secs".into(), "0".into()],
        ..Default::default()
    })
    .await;
    let mut owner = Owner::register(&env).await;
    let (key, jwt, _) = owner.agent(&env).await;
    assert_eq!(sign_agent(&env, &jwt, &key).await.0, 200);
    // Nothing anchored yet: it verifies, every row counted as not anchored.
    let (code, r, _) = audit_verify(&env).await;
    assert_eq!(code, 0, "{r}");
    assert_eq!(
        (r["ok"].as_bool(), r["anchoredSeq"].as_u64()),
        (Some(true), Some(0))
    );
    let rows = r["rows"].as_u64().unwrap();
    assert!(rows >= 3, "{r}");
    assert_eq!(r["unanchoredRows"].as_u64(), Some(rows));
    assert!(
        r["ta"]["keyId"].is_null(),
        "no audit key before the first checkpoint: {r}"
    );

    let env = anchored_log().await;
    let (code, r, err) = audit_verify(&env).await;
    assert_eq!(code, 0, "{r} {err:?}");
    assert_eq!(r["ok"], true);
    assert_eq!(r["checkpoints"], 2);
    assert_eq!(r["ta"]["index"], 2);
    assert_eq!(
        r["unanchoredRows"], 1,
        "the last signature is not anchored yet: {r}"
    );
    assert_eq!(r["problems"], json!([]));
    // The table output says the same.
    let out = admin(&env, &["audit", "verify"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("VERIFIED") && out.stdout.contains("Not yet anchored: 1 rows"),
        "{out:?}"
    );
    // Anchored now; a second run has nothing to do.
    let out = admin(&env, &["--json", "audit", "checkpoint"]).await;
    assert_eq!(out.json()["signed"].as_array().unwrap().len(), 1, "{out:?}");
    let out = admin(&env, &["audit", "checkpoint"]).await;
    assert!(out.stdout.contains("Nothing new to anchor"), "{out:?}");
    let (code, r, _) = audit_verify(&env).await;
    assert_eq!((code, r["unanchoredRows"].as_u64()), (0, Some(0)), "{r}");
    // The key is the TA's, not in the database: the report names it from the TA.
    let ta = common::tee(&env).call(&kms_proto::AuditAnchor {}).unwrap();
    assert_eq!(
        r["ta"]["publicKey"].as_str(),
        Some(hex::encode(ta.public_key.unwrap()).as_str())
    );
    // --help is honest about what is and is not anchored.
    let help = admin(&env, &["audit", "verify", "--help"]).await;
    for needle in [
        "log_truncated",
        "anchor_mismatch",
        "checkpoint_missing",
        "not anchored yet",
    ] {
        assert!(help.stdout.contains(needle), "{needle}: {help:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_verify_fails_on_a_deleted_tail() {
    let env = anchored_log().await;
    let anchored = env
        .server()
        .state
        .db
        .audit_checkpoint(2)
        .await
        .unwrap()
        .unwrap()
        .seq;
    // Every row from one before the anchored head is deleted. The chain alone still verifies
    // (a prefix of a chain is a chain): only the TA's anchor shows it.
    sql(&env, "DROP TRIGGER audit_log_no_delete").await;
    sql(
        &env,
        &format!("DELETE FROM audit_log WHERE seq >= {}", anchored - 1),
    )
    .await;
    assert!(env
        .server()
        .state
        .db
        .verify_audit_chain()
        .await
        .unwrap()
        .is_ok());
    let (code, r, err) = audit_verify(&env).await;
    assert_eq!(code, 8, "{r}");
    assert_eq!(r["ok"], false);
    assert!(codes(&r).contains(&"log_truncated".to_owned()), "{r}");
    let err = err.unwrap();
    assert_eq!(
        (err["code"].as_str(), err["exitCode"].as_u64()),
        (Some("audit_verification_failed"), Some(8))
    );
    // The table output names it too.
    let out = admin(&env, &["audit", "verify"]).await;
    assert_eq!(out.code, 8);
    assert!(
        out.stdout.contains("DOES NOT VERIFY") && out.stdout.contains("log_truncated"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_verify_fails_on_a_consistently_rewritten_log() {
    let env = anchored_log().await;
    let db = &env.server().state.db;
    // The whole log rewritten with one outcome changed and every hash recomputed: the chain
    // verifies, the TA's anchor does not match.
    let rows = db.audit_rows(0, 1000).await.unwrap();
    let events: Vec<kms_db::AuditEvent> = rows
        .iter()
        .map(|r| kms_db::AuditEvent {
            ts: r.ts,
            actor: r.actor.clone(),
            action: r.action.clone(),
            key_id: r.key_id.clone(),
            outcome: if r.action == "SignAgentUserOp" {
                "refused:credential_revoked".into()
            } else {
                r.outcome.clone()
            },
            user_op_hash: r.user_op_hash.clone(),
            detail: r.detail.clone(),
        })
        .collect();
    sql(&env, "DROP TRIGGER audit_log_no_delete").await;
    sql(&env, "DELETE FROM audit_log").await;
    db.append_audit(&events).await.unwrap();
    assert!(db.verify_audit_chain().await.unwrap().is_ok());
    assert_eq!(db.audit_last_seq().await.unwrap(), rows.last().unwrap().seq);
    let (code, r, _) = audit_verify(&env).await;
    assert_eq!(code, 8, "{r}");
    let found = codes(&r);
    assert!(found.contains(&"anchor_mismatch".to_owned()), "{r}");
    assert!(found.contains(&"checkpoint_mismatch".to_owned()), "{r}");
    assert!(!found.contains(&"chain_broken".to_owned()), "{r}");
    // And nothing is anchored over it: the rows after the TA's anchor do not chain from the
    // TA's row head, so `audit checkpoint` sends nothing to the TA.
    let out = admin(&env, &["audit", "checkpoint"]).await;
    assert_eq!(out.code, 8, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_verify_fails_on_a_deleted_checkpoint() {
    let env = anchored_log().await;
    sql(&env, "DROP TRIGGER audit_checkpoints_no_delete").await;
    sql(&env, "DELETE FROM audit_checkpoints WHERE idx = 1").await;
    let (code, r, _) = audit_verify(&env).await;
    assert_eq!(code, 8, "{r}");
    assert_eq!(codes(&r), vec!["checkpoint_missing"], "{r}");
    assert_eq!(r["problems"][0]["index"], 1);
}
