//! `kms-admin` end to end on anvil + Alto + EntryPoint v0.7: the real `kms-admin` binary beside
//! a running companion (in-process, its own `ta-sim` and SQLite file), an agent key minted
//! through the companion (real WebAuthn ceremony) and a session for it on a deployed account.
//!
//! - `revoke-agent-key` on an agent with a live session: the companion refuses its JWT, and the
//!   chain refuses an operation the agent signed before the revocation;
//! - `rotate-jwt-secret --force`: every outstanding JWT refused;
//! - normal rotation: an old JWT still works during the overlap (its operation lands) and a new
//!   one uses the new kid.

use std::path::Path;

use alloy::primitives::{keccak256, utils::parse_ether, Address, Bytes, B256, U256};
use alloy::providers::Provider;
use kms_chain::account::Call;
use kms_chain::client::ChainError;
use kms_chain::session::{SessionGrant, TargetPermission, TokenLimit};
use kms_chain::signature::SESSION_SIGNATURE_LEN;

/// The TestToken cap of the fixture's sessions.
const TOKEN_CAP: u128 = 1000;
use kms_chain::userop::v0_7::UserOperation;
use kms_chain::userop::EntryPointVersion::V07;
use kms_e2e::chain::ChainEnv;
use kms_e2e::owner::Owner;
use kms_e2e::stack::{Stack, StackInfo};
use kms_test_bins::workspace_bin;
use kms_test_support::{Env, Soft};
use serde_json::{json, Value};

const DAY: u64 = 24 * 3600;

fn eth(s: &str) -> U256 {
    parse_ether(s).unwrap()
}

fn address(tag: &str) -> Address {
    Address::from_word(keccak256(tag.as_bytes()))
}

/// One `kms-admin` run.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// Runs `kms-admin --json` over the companion's data directory and the stack's chain.
async fn admin(dir: &Path, info: &StackInfo, args: &[&str]) -> Out {
    let bin = tokio::task::spawn_blocking(|| {
        workspace_bin("kms-admin", "kms-admin", "KMS_ADMIN_BIN").unwrap()
    })
    .await
    .unwrap();
    let out = tokio::process::Command::new(bin)
        .env_remove("KMS_DATABASE_URL")
        .env_remove("KMS_TEE_BACKEND")
        .env("KMS_DATA_DIR", dir)
        .env("KMS_RPC_URL", &info.rpc_url)
        .env(
            "KMS_VALIDATOR_ADDRESS",
            info.session_key_validator.to_string(),
        )
        .env("KMS_CHAIN_ID", info.chain_id.to_string())
        .arg("--json")
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

/// The shared chain, a companion with a wallet, and an account owner in the companion's TA.
struct Fixture {
    info: StackInfo,
    chain: ChainEnv,
    env: Env,
    passkey: Soft,
    wallet: String,
    /// The account's owner: a second wallet in the same TA, driven directly (the owner side of
    /// session grants is not what these tests are about).
    owner: Owner,
}

/// An agent minted through the companion.
struct Minted {
    key_id: String,
    index: u32,
    jwt: String,
    address: Address,
}

async fn fixture() -> Fixture {
    let stack = tokio::task::spawn_blocking(Stack::shared).await.unwrap();
    let info = stack.info().clone();
    let chain = ChainEnv::connect(&info, V07)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", stack.output_tail()));
    let env = Env::start().await;
    let mut passkey = Soft::new();
    let wallet = env.register(&mut passkey).await["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let tee = kms_tee_client::TeeBackend::Simulator {
        socket: env.sim.socket.clone(),
    }
    .connect()
    .unwrap();
    let owner = Owner::create(&tee).await.unwrap();
    Fixture {
        info,
        chain,
        env,
        passkey,
        wallet,
        owner,
    }
}

impl Fixture {
    async fn admin(&self, args: &[&str]) -> Out {
        admin(self.env.dir.path(), &self.info, args).await
    }

    async fn mint(&mut self) -> Minted {
        let a = self
            .env
            .create_agent(&mut self.passkey, &self.wallet, json!({"label": "bot"}))
            .await;
        let key_id = a["keyId"].as_str().unwrap().to_owned();
        Minted {
            index: key_id.rsplit_once(':').unwrap().1.parse().unwrap(),
            key_id,
            jwt: a["agentCredential"].as_str().unwrap().to_owned(),
            address: a["agentAddress"].as_str().unwrap().parse().unwrap(),
        }
    }

    /// Deploys account `salt` (funded with 10 ETH) with a session for each of `agents` (one
    /// target, 1 ETH cap, revoker `revoker`), and records the sessions in the companion's
    /// database as its session route does (pending, then active once included).
    async fn account(
        &self,
        salt: u64,
        agents: &[&Minted],
        to: Address,
        revoker: Address,
    ) -> Address {
        self.account_with_periods(salt, agents, to, revoker, &[])
            .await
    }

    /// [`Fixture::account`], the session of `agents[i]` with the periodic budget `periods[i]`
    /// (`(period, periodCap)`; none for the agents past the end of `periods`).
    async fn account_with_periods(
        &self,
        salt: u64,
        agents: &[&Minted],
        to: Address,
        revoker: Address,
        periods: &[(u32, u128)],
    ) -> Address {
        let predicted = self
            .chain
            .client
            .account_address(self.owner.address, U256::from(salt))
            .await
            .unwrap();
        self.chain.set_balance(predicted, eth("10")).await.unwrap();
        let now = self.chain.now().await.unwrap();
        let (after, until) = (now - 3600, now + DAY);
        let grants: Vec<SessionGrant> = agents
            .iter()
            .enumerate()
            .map(|(i, a)| SessionGrant {
                key: a.address,
                targets: vec![TargetPermission::transfers_only(to)],
                tokens: vec![TokenLimit {
                    token: self.info.test_token,
                    cap: TOKEN_CAP,
                }],
                spend_cap: eth("1").to(),
                gas_cap: eth("1").to(),
                paymaster: None,
                max_ops: 0,
                period: periods.get(i).map_or(0, |p| p.0),
                period_cap: periods.get(i).map_or(0, |p| p.1),
                valid_after: after,
                valid_until: until,
                revoker,
            })
            .collect();
        let (account, receipt) = self
            .chain
            .grant(&self.owner, U256::from(salt), &grants)
            .await
            .unwrap();
        assert!(receipt.success);
        assert_eq!(account, predicted);
        let db = &self.env.server().state.db;
        for (a, grant) in agents.iter().zip(&grants) {
            let grant_json = serde_json::to_string(grant).unwrap();
            let id = db
                .insert_session(&kms_db::NewSession {
                    wallet_id: &self.wallet,
                    agent_index: a.index,
                    account,
                    account_kind: kms_db::AccountKind::AgentAccount,
                    targets_json: &json!([to.to_string()]).to_string(),
                    spend_cap: eth("1"),
                    valid_after: after as i64,
                    valid_until: until as i64,
                    revoker: Some(revoker),
                    grant_json: Some(&grant_json),
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
        }
        account
    }

    /// Has the companion sign `hash` for `account` with `jwt` (`POST /kms/sign-agent`).
    async fn sign(&self, a: &Minted, jwt: &str, hash: B256, account: Address) -> (u16, Value) {
        let (s, v, _) = self
            .env
            .post_bearer(
                "/kms/sign-agent",
                jwt,
                &json!({
                    "keyId": a.key_id,
                    "payload": hash.to_string(),
                    "accountAddress": account.to_string(),
                }),
            )
            .await;
        (s, v)
    }

    /// An operation of `a` moving `value` to `to`, signed through the companion with `jwt`.
    async fn signed_op(
        &self,
        a: &Minted,
        jwt: &str,
        account: Address,
        to: Address,
        value: &str,
    ) -> UserOperation {
        let prepared = self
            .chain
            .client
            .prepare_agent_op(
                account,
                a.address,
                vec![Call::transfer(to, eth(value))],
                None,
            )
            .await
            .unwrap();
        let (s, v) = self.sign(a, jwt, prepared.user_op_hash, account).await;
        assert_eq!(s, 200, "{v}");
        let sig: Bytes = v["signature"].as_str().unwrap().parse().unwrap();
        assert_eq!(sig.len(), SESSION_SIGNATURE_LEN);
        prepared.signed(sig)
    }
}

fn outcomes(report: &Value) -> Vec<String> {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["outcome"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoke_agent_key_kills_the_jwt_and_a_presigned_operation() {
    let mut f = fixture().await;
    let agent = f.mint().await;
    let other = f.mint().await;

    // The operator key: created explicitly, funded, then shown with its balance.
    let op = f.admin(&["operator-address", "--create"]).await;
    assert_eq!(op.code, 0, "{op:?}");
    let operator: Address = op.json()["address"].as_str().unwrap().parse().unwrap();
    assert_eq!(op.json()["balanceWei"], "0");
    f.chain.set_balance(operator, eth("1")).await.unwrap();
    let op = f.admin(&["operator-address"]).await;
    assert_eq!(op.json()["balanceWei"], eth("1").to_string(), "{op:?}");
    assert_eq!(op.json()["chainId"], f.info.chain_id);

    let to = address("kms-admin revoke");
    // The other agent has a periodic budget: 0.5 ETH per day (its period 0 began an hour ago).
    let per_day = (DAY as u32, eth("0.5").to::<u128>());
    let account = f
        .account_with_periods(0, &[&agent, &other], to, operator, &[(0, 0), per_day])
        .await;

    // list-agent-keys reads the live sessions from the chain, each row its own key's.
    let list = f.admin(&["list-agent-keys"]).await;
    assert_eq!(list.code, 0, "{list:?}");
    let rows = list.json();
    assert_eq!(rows.as_array().map(Vec::len), Some(2), "{rows}");
    for (row, minted) in rows.as_array().unwrap().iter().zip([&agent, &other]) {
        assert_eq!(row["keyId"], minted.key_id.as_str(), "{rows}");
        assert_eq!(row["session"]["source"], "chain", "{rows}");
        assert_eq!(row["session"]["active"], true, "{rows}");
        assert_eq!(row["session"]["spendCap"], eth("1").to_string(), "{rows}");
        // Gas and usage as the chain counts them (nothing spent or used yet; no usage limit,
        // no paymaster).
        assert_eq!(row["session"]["gasCap"], eth("1").to_string(), "{rows}");
        assert_eq!(row["session"]["gasSpent"], "0", "{rows}");
        assert_eq!(row["session"]["maxOps"], 0, "{rows}");
        assert_eq!(row["session"]["opsUsed"], 0, "{rows}");
        assert!(row["session"]["paymaster"].is_null(), "{rows}");
        assert!(row["session"]["epoch"].as_u64() >= Some(1), "{rows}");
        // The token cap, read from the chain for the token the recorded grant names.
        assert_eq!(
            row["session"]["tokens"],
            json!([{"token": f.info.test_token.to_string().to_ascii_lowercase(),
                "cap": TOKEN_CAP.to_string(), "spent": "0"}]),
            "{rows}"
        );
    }
    // The periodic budget as the chain holds it, and its current period (none for the first).
    let (plain, periodic) = (&rows[0]["session"], &rows[1]["session"]);
    assert_eq!(
        (&plain["period"], &plain["periodCap"]),
        (&json!(0), &json!("0"))
    );
    for none in ["periodIndex", "periodSpent", "periodEndsAt"] {
        assert!(plain[none].is_null(), "{none}: {plain}");
    }
    assert_eq!(periodic["period"], DAY, "{periodic}");
    assert_eq!(periodic["periodCap"], eth("0.5").to_string(), "{periodic}");
    assert_eq!(periodic["periodIndex"], 0, "{periodic}");
    assert_eq!(periodic["periodSpent"], "0", "{periodic}");
    assert_eq!(
        periodic["periodEndsAt"].as_u64(),
        periodic["validAfter"].as_u64().map(|a| a + DAY - 1),
        "{periodic}"
    );

    // An operation the agent signed (through the companion) while its session was live: the
    // EntryPoint would accept it now.
    let presigned = f.signed_op(&agent, &agent.jwt, account, to, "0.1").await;
    assert!(matches!(
        f.chain.entry_point_verdict(&presigned).await,
        Ok(())
    ));

    // Revoke in every layer.
    let nonce_before = f
        .chain
        .client
        .provider()
        .get_transaction_count(operator)
        .await
        .unwrap();
    let r = f.admin(&["revoke-agent-key", &agent.key_id]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let report = r.json();
    assert_eq!(
        outcomes(&report),
        ["revoked", "revoked", "revoked"],
        "{report}"
    );
    let chain_detail = report["layers"][2]["detail"].as_str().unwrap();
    assert!(chain_detail.contains("mined in block"), "{chain_detail}");

    // The companion refuses the JWT.
    let (s, v) = f
        .sign(&agent, &agent.jwt, B256::repeat_byte(1), account)
        .await;
    assert_eq!(s, 401, "{v}");
    assert_eq!(v["code"], "credential_revoked");

    // The chain refuses the operation signed before the revocation: the bundler (AA23) and
    // the EntryPoint itself (SessionIsRevoked).
    match f.chain.client.submit(&presigned).await {
        Err(ChainError::Bundler(e)) => assert_eq!(e.aa_code(), Some("AA23"), "{e}"),
        other => panic!("the bundler did not refuse: {other:?}"),
    }
    match f.chain.entry_point_verdict(&presigned).await {
        Err(Some(d)) => assert_eq!(d.name, "SessionIsRevoked"),
        other => panic!("the EntryPoint did not refuse as expected: {other:?}"),
    }
    let snapshot = f
        .chain
        .client
        .read_session(account, agent.address, &[])
        .await
        .unwrap();
    assert!(!snapshot.session.active);
    assert_eq!(f.chain.balance(to).await.unwrap(), U256::ZERO);

    // Re-running changes nothing and sends no transaction.
    let again = f.admin(&["revoke-agent-key", &agent.key_id]).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(
        outcomes(&again.json()),
        ["already-revoked", "already-revoked", "already-revoked"]
    );
    let nonce_after = f
        .chain
        .client
        .provider()
        .get_transaction_count(operator)
        .await
        .unwrap();
    assert_eq!(nonce_after, nonce_before + 1, "one revokeSession in all");

    // The other agent of the account is untouched: its operation lands.
    let op = f.signed_op(&other, &other.jwt, account, to, "0.2").await;
    assert!(f.chain.submit_and_wait(&op).await.unwrap().success);
    assert_eq!(f.chain.balance(to).await.unwrap(), eth("0.2"));
    // Counted in its period too.
    let active = f
        .admin(&["list-agent-keys", "--status", "active"])
        .await
        .json();
    assert_eq!(active[0]["keyId"], other.key_id.as_str(), "{active}");
    let session = &active[0]["session"];
    assert_eq!(session["spent"], eth("0.2").to_string(), "{session}");
    assert_eq!(session["periodIndex"], 0, "{session}");
    assert_eq!(session["periodSpent"], eth("0.2").to_string(), "{session}");
    let list = f
        .admin(&["list-agent-keys", "--status", "revoked"])
        .await
        .json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["session"]["active"], false);
}

/// The operator key sends one transaction at a time across every process on the database (the
/// `operator-tx` lease): while another process holds it past `--tx-timeout-secs`, the
/// revocation's chain layer fails saying so and sends nothing (the session stays live on chain,
/// its row `revoke_failed`); once the lease is given up, revoking again goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_waits_for_the_operators_other_transaction() {
    let mut f = fixture().await;
    let agent = f.mint().await;
    let op = f.admin(&["operator-address", "--create"]).await;
    assert_eq!(op.code, 0, "{op:?}");
    let operator: Address = op.json()["address"].as_str().unwrap().parse().unwrap();
    f.chain.set_balance(operator, eth("1")).await.unwrap();
    let account = f
        .account(0, &[&agent], address("operator lease"), operator)
        .await;
    let nonce = || async {
        f.chain
            .client
            .provider()
            .get_transaction_count(operator)
            .await
            .unwrap()
    };
    let nonce_before = nonce().await;

    // Another process (say a second companion) is sending an operator transaction.
    let db = &f.env.server().state.db;
    let lease = kms_companion::revocation::operator_lease_name(f.info.chain_id, operator);
    assert!(db
        .try_lease(&lease, "elsewhere", 3600, kms_db::now_secs())
        .await
        .unwrap());
    let r = f
        .admin(&["--tx-timeout-secs", "1", "revoke-agent-key", &agent.key_id])
        .await;
    assert_eq!(r.code, 1, "{r:?}");
    let report = r.json();
    assert_eq!(
        outcomes(&report),
        ["revoked", "revoked", "failed"],
        "{report}"
    );
    let detail = report["layers"][2]["detail"].to_string();
    assert!(detail.contains(&lease), "{detail}");
    assert_eq!(nonce().await, nonce_before, "nothing was sent");
    let live = f
        .chain
        .client
        .read_session(account, agent.address, &[])
        .await
        .unwrap();
    assert!(live.session.active);

    // It is given up: the same revocation goes through, and gives its own lease up after.
    assert!(db.release_lease(&lease, "elsewhere").await.unwrap());
    let r = f.admin(&["revoke-agent-key", &agent.key_id]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        outcomes(&r.json()),
        ["already-revoked", "already-revoked", "revoked"]
    );
    assert_eq!(nonce().await, nonce_before + 1);
    let after = f
        .chain
        .client
        .read_session(account, agent.address, &[])
        .await
        .unwrap();
    assert!(!after.session.active);
    assert!(db.lease(&lease).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoke_fails_on_chain_when_the_operator_is_not_the_revoker() {
    let mut f = fixture().await;
    let agent = f.mint().await;
    let op = f.admin(&["operator-address", "--create"]).await;
    assert_eq!(op.code, 0, "{op:?}");
    let to = address("kms-admin not revoker");
    // The session names another revoker: the chain layer fails (exit 1), the others succeed.
    let account = f.account(1, &[&agent], to, address("someone else")).await;
    let r = f.admin(&["revoke-agent-key", &agent.key_id]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(outcomes(&r.json()), ["revoked", "revoked", "failed"]);
    assert!(r.stderr.contains("not this session's revoker"), "{r:?}");
    let snapshot = f
        .chain
        .client
        .read_session(account, agent.address, &[])
        .await
        .unwrap();
    assert!(snapshot.session.active, "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn normal_rotation_keeps_old_jwts_in_the_overlap_and_forced_rotation_kills_them() {
    let mut f = fixture().await;
    let first = f.mint().await;
    let kid = |jwt: &str| kms_proto::jwt::parse(jwt).unwrap().header.kid;
    let k1 = kid(&first.jwt);
    let op = f.admin(&["operator-address", "--create"]).await;
    let operator: Address = op.json()["address"].as_str().unwrap().parse().unwrap();

    // Normal rotation.
    let r = f.admin(&["rotate-jwt-secret"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let r = r.json();
    let k2 = r["newKid"].as_str().unwrap().to_owned();
    assert_ne!(k2, k1);
    assert_eq!(r["previous"][0]["kid"], json!(k1));
    assert_eq!(r["previous"][0]["fate"], "verify-only");

    // A new credential carries the new kid.
    let second = f.mint().await;
    assert_eq!(kid(&second.jwt), k2);
    let to = address("kms-admin rotation");
    let account = f.account(2, &[&first, &second], to, operator).await;

    // The old JWT still works during the overlap: its operation lands on chain; so does the
    // new one's.
    let op = f.signed_op(&first, &first.jwt, account, to, "0.1").await;
    assert!(f.chain.submit_and_wait(&op).await.unwrap().success);
    let op = f.signed_op(&second, &second.jwt, account, to, "0.1").await;
    assert!(f.chain.submit_and_wait(&op).await.unwrap().success);
    assert_eq!(f.chain.balance(to).await.unwrap(), eth("0.2"));

    // Forced rotation: every outstanding JWT is refused.
    let r = f.admin(&["rotate-jwt-secret", "--force"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let k3 = r.json()["newKid"].as_str().unwrap().to_owned();
    let hash = B256::repeat_byte(2);
    for a in [&first, &second] {
        let (s, v) = f.sign(a, &a.jwt, hash, account).await;
        assert_eq!(s, 401, "{v}");
    }
    let status = f.admin(&["jwt-secret-status"]).await.json();
    let live: Vec<&Value> = status
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["status"] != "retired")
        .collect();
    assert_eq!(live.len(), 1, "{status}");
    assert_eq!(live[0]["kid"], json!(k3));
}

/// An agent with sessions on two accounts of its owner: `revoke-agent-key` revokes both on chain
/// (each account reported), so an operation it signed before on either is refused, and
/// `list-agent-keys` shows both sessions revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoke_agent_key_revokes_the_session_on_every_account() {
    let mut f = fixture().await;
    let agent = f.mint().await;
    let op = f.admin(&["operator-address", "--create"]).await;
    assert_eq!(op.code, 0, "{op:?}");
    let operator: Address = op.json()["address"].as_str().unwrap().parse().unwrap();
    f.chain.set_balance(operator, eth("1")).await.unwrap();
    let to = address("kms-admin two accounts");
    let first = f.account(0, &[&agent], to, operator).await;
    let second = f.account(1, &[&agent], to, operator).await;

    let list = f.admin(&["list-agent-keys"]).await.json();
    let sessions = list[0]["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{list}");
    for s in sessions {
        assert_eq!(
            (s["status"].as_str(), s["active"].as_bool()),
            (Some("active"), Some(true)),
            "{list}"
        );
    }

    let on_first = f.signed_op(&agent, &agent.jwt, first, to, "0.1").await;
    let on_second = f.signed_op(&agent, &agent.jwt, second, to, "0.1").await;
    for op in [&on_first, &on_second] {
        assert!(matches!(f.chain.entry_point_verdict(op).await, Ok(())));
    }

    let r = f.admin(&["revoke-agent-key", &agent.key_id]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let report = r.json();
    assert_eq!(
        outcomes(&report),
        ["revoked", "revoked", "revoked"],
        "{report}"
    );
    let mut accounts: Vec<Address> = report["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["outcome"], "revoked", "{report}");
            assert!(s["transactionHash"].as_str().is_some(), "{report}");
            s["account"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    accounts.sort();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(accounts, expected, "{report}");

    for op in [&on_first, &on_second] {
        match f.chain.client.submit(op).await {
            Err(ChainError::Bundler(e)) => assert_eq!(e.aa_code(), Some("AA23"), "{e}"),
            other => panic!("the bundler did not refuse: {other:?}"),
        }
        match f.chain.entry_point_verdict(op).await {
            Err(Some(d)) => assert_eq!(d.name, "SessionIsRevoked"),
            other => panic!("the EntryPoint did not refuse as expected: {other:?}"),
        }
    }
    assert_eq!(f.chain.balance(to).await.unwrap(), U256::ZERO);

    // Listed: both sessions revoked, on chain too.
    let list = f.admin(&["list-agent-keys"]).await.json();
    let sessions = list[0]["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{list}");
    for s in sessions {
        assert_eq!(s["status"], "revoked", "{list}");
        assert_eq!(s["active"], false, "{list}");
        assert!(s["revokeTransactionHash"].as_str().is_some(), "{list}");
    }
    // Re-running sends nothing.
    let again = f.admin(&["revoke-agent-key", &agent.key_id]).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.json()["sessions"], json!([]), "{again:?}");
}
