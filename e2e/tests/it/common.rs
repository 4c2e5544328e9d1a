//! What the intent and session-bound tests share: one test's world (the shared stack, its own
//! companion, one owner with a wallet) and the agent's moves through the companion.

use alloy::primitives::{keccak256, utils::parse_ether, Address, Bytes, B256, U256};
use kms_chain::account::Call;
use kms_chain::bundler::BundlerError;
use kms_chain::client::ChainError;
use kms_chain::session::RefusalCode;
use kms_chain::signature::SESSION_SIGNATURE_LEN;
use kms_chain::userop::v0_7::UserOperation;
use kms_chain::userop::EntryPointVersion;
use kms_e2e::chain::ChainEnv;
use kms_e2e::companion::{AgentKey, Companion, Wallet};
use kms_e2e::stack::Stack;
use kms_test_support::Soft;
use serde_json::{json, Value};

/// A day, in seconds.
pub const DAY: u64 = 24 * 3600;

/// `s` ether in wei.
pub fn eth(s: &str) -> U256 {
    parse_ether(s).unwrap()
}

/// A recipient address of its own for each test and purpose.
pub fn address(tag: &str) -> Address {
    Address::from_word(keccak256(tag.as_bytes()))
}

/// The calls of an intent paying `wei` ether to `to`.
pub fn transfer(to: Address, wei: &str) -> Value {
    json!([{"to": to, "value": eth(wei).to_string()}])
}

/// One test's world: the shared chain, its own companion, one owner with a wallet.
pub struct Fixture {
    pub env: ChainEnv,
    pub c: Companion,
    pub user: Soft,
    pub wallet: Wallet,
}

/// A fresh [`Fixture`] on the shared stack for EntryPoint `version`.
pub async fn fixture(version: EntryPointVersion) -> Fixture {
    fixture_with(version, &[]).await
}

/// [`fixture`] with extra companion flags.
pub async fn fixture_with(version: EntryPointVersion, companion_args: &[&str]) -> Fixture {
    let stack = tokio::task::spawn_blocking(Stack::shared).await.unwrap();
    let env = ChainEnv::connect(stack.info(), version)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", stack.output_tail()));
    let c = Companion::start_with(stack.info(), version, companion_args)
        .await
        .unwrap();
    let mut user = Soft::new();
    let wallet = c.register(&mut user).await.unwrap();
    Fixture {
        env,
        c,
        user,
        wallet,
    }
}

impl Fixture {
    /// A new agent key of the owner's wallet.
    pub async fn agent(&mut self, label: &str) -> AgentKey {
        self.c
            .create_agent(&mut self.user, &self.wallet, label)
            .await
            .unwrap()
    }

    /// A window open since an hour ago for a day (chain time).
    pub async fn open_window(&self) -> (u64, u64) {
        let now = self.env.now().await.unwrap();
        (now - 3600, now + DAY)
    }

    /// The owner's account of `salt` (counterfactual or deployed).
    pub async fn account(&self, salt: u64) -> Address {
        self.env
            .client
            .account_address(self.wallet.address, U256::from(salt))
            .await
            .unwrap()
    }

    /// The owner's account `salt`, funded with 10 ETH (it pays the grant's gas).
    pub async fn funded_account(&self, salt: u64) -> Address {
        let account = self.account(salt).await;
        self.env.set_balance(account, eth("10")).await.unwrap();
        account
    }

    /// Grants `agent` the `/kms/agent-sessions` fields `session`; expects 200 and the session
    /// included. Returns the answer.
    pub async fn grant_included(&mut self, agent: &AgentKey, session: Value) -> Value {
        let (status, body) = self
            .c
            .grant_session(&mut self.user, agent, session)
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "included", "{body}");
        body
    }

    /// Submits an intent; expects 202 and returns its userOpHash.
    pub async fn submit(&self, agent: &AgentKey, calls: Value) -> String {
        let (status, body) = self.c.intent(agent, calls, None).await.unwrap();
        assert_eq!(status, 202, "{body}");
        body["userOpHash"].as_str().unwrap().to_owned()
    }

    /// Submits an intent and waits until it is included successfully; returns the final body.
    pub async fn lands(&self, agent: &AgentKey, calls: Value) -> Value {
        let hash = self.submit(agent, calls).await;
        let done = self.c.wait_intent(agent, &hash).await.unwrap();
        assert_eq!(done["status"], "included", "{done}");
        assert_eq!(done["success"], true, "{done}");
        done
    }

    /// Expects a 403 policy refusal with `code`; returns the body.
    pub async fn refused(&self, agent: &AgentKey, calls: Value, code: RefusalCode) -> Value {
        let (status, body) = self.c.intent(agent, calls, None).await.unwrap();
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some(code.as_str())),
            "{body}"
        );
        body
    }

    /// An operation of `account` built past the companion's pre-check (fixed gas, no
    /// estimation) and signed by the TA through `/kms/sign-agent`.
    pub async fn presigned(
        &self,
        account: Address,
        agent: &AgentKey,
        calls: Vec<Call>,
    ) -> UserOperation {
        self.presigned_for(account, agent, calls, account).await
    }

    /// As [`Fixture::presigned`], but the signature names `sign_for` as its account.
    pub async fn presigned_for(
        &self,
        account: Address,
        agent: &AgentKey,
        calls: Vec<Call>,
        sign_for: Address,
    ) -> UserOperation {
        let prepared = self
            .env
            .unestimated_agent_op(account, agent.address, calls)
            .await
            .unwrap();
        let sig = self.sign(agent, prepared.user_op_hash, sign_for).await;
        prepared.signed(sig)
    }

    /// The agent's 106-byte session signature of `hash` for `account`, through
    /// `/kms/sign-agent`.
    pub async fn sign(&self, agent: &AgentKey, hash: B256, account: Address) -> Bytes {
        let (status, body) = self.c.sign_agent(agent, hash, account).await.unwrap();
        assert_eq!(status, 200, "{body}");
        let sig: Bytes = body["signature"].as_str().unwrap().parse().unwrap();
        assert_eq!(sig.len(), SESSION_SIGNATURE_LEN);
        sig
    }

    /// Sends `op` straight to the bundler, expecting a refusal.
    pub async fn bundler_refuses(&self, op: &UserOperation) -> BundlerError {
        match self.env.client.submit(op).await {
            Ok(s) => panic!("the bundler accepted {}", s.user_op_hash),
            Err(ChainError::Bundler(e)) => e,
            Err(e) => panic!("not a bundler refusal: {e}"),
        }
    }
}
