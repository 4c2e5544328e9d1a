//! Sessions on a third-party ERC-7579 account through the companion's HTTP API (#16 item 4), on
//! anvil + Alto + EntryPoint v0.7: OpenZeppelin 5.4.0's `AccountERC7579`
//! (`contracts/testing/OzAccount7579.sol`) whose ECDSA signer is the wallet's owner key in the TA.
//!
//! - `POST /kms/agent-sessions` naming the account installs `SessionKeyValidator` as its module
//!   and grants in one owner operation, signed in the TA inside the `GrantSession` passkey
//!   ceremony; the session row records the kind (`erc7579`) and the agent's lane;
//! - `GET /agent/session` reports the kind, the lane and the module;
//! - an intent lands through `POST /agent/intents` (ERC-7579 `execute`, the module lane's nonce
//!   key), a disallowed target is refused (403);
//! - with sessions on the 7579 account and on an `AgentAccount`, an intent must name its account
//!   (422 `account_required`), and either account named works;
//! - an `AgentAccount`, or an address without code, named for a module grant is 422
//!   `unsupported_account`; an ERC-7579 account whose signer is not the owner key is 422
//!   `not_account_signer` (AA24: at the estimate, or at the submission, where its grant is
//!   recorded `failed`), and the module is not installed there.

use crate::common::*;
use alloy::network::EthereumWallet;
use alloy::primitives::{Address, U256};
use alloy::providers::ProviderBuilder;
use kms_chain::session::RefusalCode;
use kms_chain::userop::EntryPointVersion::V07;
use kms_contracts::OzAccount7579;
use kms_e2e::companion::{AgentKey, CompanionError, DAY_SESSION_GAS_CAP};
use kms_test_support::ClientError;
use serde_json::{json, Value};

impl Fixture {
    /// A new `OzAccount7579` whose ECDSA signer is `signer`, deployed by a throwaway EOA and
    /// funded with 10 ETH.
    async fn oz_account(&self, signer: Address) -> Address {
        let deployer = self.env.funded_signer(eth("1")).await.unwrap();
        let provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(deployer))
            .connect_http(self.env.info.rpc_url.parse().unwrap());
        let account =
            OzAccount7579::deploy(&provider, self.env.client.entry_point().address, signer)
                .await
                .unwrap();
        let account = *account.address();
        self.env.set_balance(account, eth("10")).await.unwrap();
        account
    }

    /// Plain transfers to `to`, 1 ETH cap, open since an hour ago for a day, on `on` (the
    /// `/kms/agent-sessions` fields naming the account, or a salt).
    pub(crate) async fn transfers_to(&self, to: Address, on: Value) -> Value {
        let (after, until) = self.open_window().await;
        let mut v = json!({
            "targets": [to],
            "spendCap": eth("1").to_string(),
            "gasCap": DAY_SESSION_GAS_CAP.to_string(),
            "validAfter": after,
            "validUntil": until,
        });
        for (k, x) in on.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    /// A grant refused before the ceremony (by `/BeginAuthentication`): status and body.
    pub(crate) async fn grant_refused(&mut self, agent: &AgentKey, session: Value) -> (u16, Value) {
        match self.c.grant_session(&mut self.user, agent, session).await {
            Err(CompanionError::Client(ClientError::Status { status, body, .. })) => (status, body),
            Ok((status, body)) => (status, body),
            Err(e) => panic!("{e}"),
        }
    }

    /// `GET /agent/session` (optionally `?account=`): status and body.
    async fn agent_session(&self, agent: &AgentKey, account: Option<Address>) -> (u16, Value) {
        let path = match account {
            Some(a) => format!("/agent/session?account={a}"),
            None => "/agent/session".to_owned(),
        };
        self.c.get_bearer(&path, &agent.jwt).await.unwrap()
    }

    /// An intent of `agent` naming `account`; expects it included, returns the final body.
    pub(crate) async fn lands_on(&self, agent: &AgentKey, account: Address, calls: Value) -> Value {
        let (status, body) = self
            .c
            .post_bearer(
                "/agent/intents",
                &agent.jwt,
                &json!({"account": account, "calls": calls}),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(status, 202, "{body}");
        let done = self
            .c
            .wait_intent(agent, body["userOpHash"].as_str().unwrap())
            .await
            .unwrap();
        assert_eq!(
            (&done["status"], &done["success"]),
            (&json!("included"), &json!(true)),
            "{done}"
        );
        done
    }
}

pub(crate) fn parsed(v: &Value) -> Address {
    v.as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_on_an_erc7579_account_through_the_companion() {
    let mut f = fixture(V07).await;
    let agent = f.agent("erc7579").await;
    let to = address("erc7579 companion: to");
    let oz = f.oz_account(f.wallet.address).await;
    assert!(!f.env.client.node().is_module_installed(oz).await.unwrap());

    // Granted on the account by name: the module installed and the session granted, in the
    // passkey ceremony.
    let fields = f.transfers_to(to, json!({"account": oz})).await;
    let granted = f.grant_included(&agent, fields).await;
    assert_eq!(parsed(&granted["account"]), oz, "{granted}");
    assert_eq!(granted["accountKind"], "erc7579", "{granted}");
    assert!(f.env.client.node().is_module_installed(oz).await.unwrap());
    let lane = f
        .env
        .client
        .node()
        .session_lane(oz, agent.address)
        .await
        .unwrap()
        .expect("a lane given at the grant");
    let (status, view) = f.agent_session(&agent, None).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(parsed(&view["account"]), oz);
    assert_eq!(view["accountKind"], "erc7579", "{view}");
    assert_eq!(view["lane"], json!(lane), "{view}");
    assert_eq!(view["moduleInstalled"], true, "{view}");
    assert_eq!(view["status"], "active", "{view}");
    // The owner's listing says the kind and the lane too.
    let (status, list) =
        f.c.post(
            "/kms/list-agent-keys",
            &json!({"humanKeyId": f.wallet.key_id}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{list}");
    let listed = list["agentKeys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["keyId"] == json!(agent.key_id))
        .unwrap();
    assert_eq!(
        (
            &listed["session"]["accountKind"],
            &listed["session"]["lane"]
        ),
        (&json!("erc7579"), &json!(lane)),
        "{listed}"
    );

    // An intent lands (ERC-7579 execute on the module lane); a target not granted is refused.
    let before = f.env.balance(to).await.unwrap();
    let done = f.lands(&agent, transfer(to, "0.01")).await;
    assert_eq!(parsed(&done["account"]), oz, "{done}");
    assert_eq!(f.env.balance(to).await.unwrap(), before + eth("0.01"));
    let stranger = address("erc7579 companion: stranger");
    f.refused(
        &agent,
        transfer(stranger, "0.01"),
        RefusalCode::TargetNotAllowed,
    )
    .await;
    assert_eq!(f.env.balance(stranger).await.unwrap(), U256::ZERO);

    // A second session, on the owner's AgentAccount: an intent must now name its account.
    let agent_account = f.funded_account(0).await;
    let fields = f.transfers_to(to, json!({"salt": "0"})).await;
    let granted = f.grant_included(&agent, fields).await;
    assert_eq!(parsed(&granted["account"]), agent_account, "{granted}");
    assert_eq!(granted["accountKind"], "agent-account", "{granted}");
    let (status, body) =
        f.c.intent(&agent, transfer(to, "0.01"), None)
            .await
            .unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("account_required")),
        "{body}"
    );
    assert_eq!(body["details"]["accounts"].as_array().unwrap().len(), 2);
    let (status, body) = f.agent_session(&agent, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("account_required")),
        "{body}"
    );
    let (_, view) = f.agent_session(&agent, Some(agent_account)).await;
    assert_eq!(
        (&view["accountKind"], &view["lane"]),
        (&json!("agent-account"), &Value::Null),
        "{view}"
    );
    let done = f.lands_on(&agent, oz, transfer(to, "0.02")).await;
    assert_eq!(parsed(&done["account"]), oz);
    let done = f
        .lands_on(&agent, agent_account, transfer(to, "0.03"))
        .await;
    assert_eq!(parsed(&done["account"]), agent_account);

    // An AgentAccount, or an address without code, named for a module grant: 422, nothing built.
    for (account, found) in [
        (agent_account, "agent-account"),
        (address("erc7579 companion: no code"), "no code"),
    ] {
        let fields = f.transfers_to(to, json!({"account": account})).await;
        let (status, body) = f.grant_refused(&agent, fields).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (422, Some("unsupported_account")),
            "{body}"
        );
        assert_eq!(body["details"]["found"], found, "{body}");
    }
    // `account` and `salt` together: refused.
    let fields = f
        .transfers_to(to, json!({"account": oz, "salt": "1"}))
        .await;
    let (status, body) = f.grant_refused(&agent, fields).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );

    // An ERC-7579 account whose signer is someone else refuses the owner key's signature.
    let foreign = f
        .oz_account(address("erc7579 companion: other signer"))
        .await;
    let fields = f.transfers_to(to, json!({"account": foreign})).await;
    let (status, body) = f.grant_refused(&agent, fields).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("not_account_signer")),
        "{body}"
    );
    assert!(!f
        .env
        .client
        .node()
        .is_module_installed(foreign)
        .await
        .unwrap());
}
