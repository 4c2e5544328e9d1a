//! The development-only `export_key` binary (feature `export-secrets`), against a `ta-sim`
//! built with `export-secrets`: it exports only with a passkey assertion over the challenge for
//! exactly that wallet and path.

use std::path::Path;

use kms_test_support::{ta_sim_bin_with_features, Authenticator, Env, Manual, Opts};
use serde_json::{json, Value};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn export_key(dir: &Path, args: &[&str]) -> Out {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_export_key"))
        .env_remove("KMS_TEE_BACKEND")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .await
        .unwrap();
    Out {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// The passkey's assertion over `challenge` (base64url), as the `--assertion` file.
fn assertion(env: &Env, passkey: &mut Manual, challenge: &str, dir: &Path, name: &str) -> String {
    let r = passkey.authenticate(
        &env.origin(),
        &json!({"publicKey": {"challenge": challenge}}),
    );
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(&r["response"]).unwrap()).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_needs_a_passkey_assertion_for_that_wallet_and_path() {
    let env = Env::with(Opts {
        ta_sim_bin: Some(ta_sim_bin_with_features("export-secrets")),
        ..Opts::default()
    })
    .await;
    let mut passkey = Manual::new();
    let reg: Value = env.register(&mut passkey).await;
    let wallet = reg["KeyId"].as_str().unwrap().to_owned();
    let dir = env.dir.path();
    let files = tempfile::tempdir().unwrap();

    // No assertion, or garbage: refused, nothing printed.
    let out = export_key(
        dir,
        &["export", "--wallet", &wallet, "--assertion", "/nonexistent"],
    )
    .await;
    assert_ne!(out.code, 0);
    assert!(!out.stdout.contains("private key"));

    // An assertion over the challenge of another path does not export this one.
    let other = export_key(
        dir,
        &[
            "challenge",
            "--wallet",
            &wallet,
            "--path",
            "m/44'/60'/0'/0/1",
        ],
    )
    .await;
    assert_eq!(other.code, 0, "{}", other.stderr);
    let wrong = assertion(
        &env,
        &mut passkey,
        other.stdout.trim(),
        files.path(),
        "wrong.json",
    );
    let out = export_key(dir, &["export", "--wallet", &wallet, "--assertion", &wrong]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(!out.stdout.contains("private key"));

    // The right challenge: the key of m/44'/60'/0'/0/0, whose address is the wallet's.
    let c = export_key(dir, &["challenge", "--wallet", &wallet]).await;
    assert_eq!(c.code, 0, "{}", c.stderr);
    let good = assertion(
        &env,
        &mut passkey,
        c.stdout.trim(),
        files.path(),
        "good.json",
    );
    let out = export_key(dir, &["export", "--wallet", &wallet, "--assertion", &good]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("WARNING"));
    let line = |p: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(p))
            .unwrap()
            .to_owned()
    };
    let key = hex::decode(line("private key: 0x")).unwrap();
    let sk = k256::ecdsa::SigningKey::from_slice(&key).unwrap();
    let point = sk.verifying_key().to_encoded_point(false);
    let h = <sha3::Keccak256 as sha3::Digest>::digest(&point.as_bytes()[1..]);
    assert_eq!(
        line("address: ").to_ascii_lowercase(),
        format!("0x{}", hex::encode(&h[12..]))
    );
    let owner = env
        .server()
        .state
        .db
        .get_wallet(&wallet)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        format!("{:#x}", owner.address),
        line("address: ").to_ascii_lowercase()
    );

    // The nonce was consumed: the same assertion does not export twice.
    let out = export_key(dir, &["export", "--wallet", &wallet, "--assertion", &good]).await;
    assert_ne!(out.code, 0);
    assert!(!out.stdout.contains("private key"));

    // A wallet the database records on another TA (several TAs over one database) is refused,
    // exit 9 naming both TAs, before the TA is asked: a good assertion presented meanwhile is
    // still unused once the wallet names this TA again.
    let db = &env.server().state.db;
    let this_ta = db.wallet_ta(&wallet).await.unwrap().unwrap().unwrap();
    let other_ta = "0x00000000000000000000000000000000000000b2";
    let set_ta = |ta: &str| {
        sqlx::query("UPDATE wallets SET ta_id = $1 WHERE key_id = $2")
            .bind(ta.to_owned())
            .bind(wallet.clone())
            .execute(db.pool())
    };
    let c = export_key(dir, &["challenge", "--wallet", &wallet]).await;
    assert_eq!(c.code, 0, "{}", c.stderr);
    let fresh = assertion(
        &env,
        &mut passkey,
        c.stdout.trim(),
        files.path(),
        "fresh.json",
    );
    set_ta(other_ta).await.unwrap();
    let checksummed = |a: &str| {
        a.parse::<alloy::primitives::Address>()
            .unwrap()
            .to_checksum(None)
    };
    for args in [
        &["challenge", "--wallet", &wallet][..],
        &["export", "--wallet", &wallet, "--assertion", &fresh],
    ] {
        let out = export_key(dir, args).await;
        assert_eq!(out.code, 9, "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{}", out.stdout);
        assert!(
            out.stderr.contains(&checksummed(other_ta))
                && out.stderr.contains(&checksummed(&this_ta)),
            "{}",
            out.stderr
        );
    }
    set_ta(&this_ta).await.unwrap();
    let out = export_key(dir, &["export", "--wallet", &wallet, "--assertion", &fresh]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("private key"));
}
