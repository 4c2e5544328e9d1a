//! Sessions on the owner's own EOA through EIP-7702 (#16 item 5), on anvil (Prague rules) +
//! Alto + EntryPoint v0.8, through the companion's HTTP API:
//!
//! - `POST /kms/agent-sessions` naming the wallet's owner address, which has no code: the begin
//!   answer shows the authorisation (this chain, `Eip7702Account`, the EOA's nonce) and an
//!   operation with the `0x7702` marker; the passkey approves both, the TA signs both
//!   (`SignEip7702Delegation`), Alto sends the bundle as an EIP-7702 transaction, and the EOA's
//!   code becomes `0xef0100 ‖ Eip7702Account` with `SessionKeyValidator` installed and the session
//!   granted;
//! - the agent then acts for the EOA (an intent lands; a target not granted and a transfer over
//!   the cap are refused), and a second agent is granted on the delegated EOA as on any ERC-7579
//!   account (no second authorisation);
//! - refusals before anything is signed: EntryPoint v0.7, and a companion without
//!   `--eip7702-account` (422 `unsupported_account`, `details.needs`).

use crate::common::*;
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use kms_chain::session::RefusalCode;
use kms_chain::userop::EntryPointVersion::{V07, V08};
use serde_json::{json, Value};

use crate::erc7579_companion::parsed;

/// The code at `address`.
async fn code(f: &Fixture, address: Address) -> Vec<u8> {
    f.env
        .client
        .provider()
        .get_code_at(address)
        .await
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_owner_eoa_delegates_and_its_agents_act_for_it() {
    let mut f = fixture(V08).await;
    let implementation = f.env.info.eip7702_account;
    let eoa = f.wallet.address;
    assert!(
        code(&f, eoa).await.is_empty(),
        "a fresh owner key has no code"
    );
    f.env.set_balance(eoa, eth("10")).await.unwrap();
    let agent = f.agent("eip7702").await;
    let to = address("eip7702: to");

    // The ceremony's begin answer: what the passkey approves.
    let fields = f.transfers_to(to, json!({"account": eoa})).await;
    let (_, begun) =
        f.c.ceremony(&mut f.user, &agent.key_id, "GrantSession", fields.clone())
            .await
            .unwrap();
    let summary = &begun["UserOperation"];
    let auth = &summary["eip7702Authorization"];
    assert_eq!(parsed(&auth["delegate"]), implementation, "{summary}");
    assert_eq!(
        auth["chainId"],
        f.env.info.chain_id.to_string(),
        "{summary}"
    );
    let eoa_nonce = f
        .env
        .client
        .provider()
        .get_transaction_count(eoa)
        .await
        .unwrap();
    assert_eq!(auth["nonce"], json!(eoa_nonce), "{summary}");
    assert_eq!(summary["userOp"]["factory"], "0x7702", "{summary}");
    assert_eq!(summary["accountKind"], "erc7579", "{summary}");

    // Granted: delegated, module installed, session on the EOA.
    let granted = f.grant_included(&agent, fields).await;
    assert_eq!(parsed(&granted["account"]), eoa, "{granted}");
    assert_eq!(granted["accountKind"], "erc7579", "{granted}");
    let mut designator = vec![0xef, 0x01, 0x00];
    designator.extend_from_slice(implementation.as_slice());
    assert_eq!(code(&f, eoa).await, designator);
    assert!(f.env.client.node().is_module_installed(eoa).await.unwrap());
    let (status, view) = f.c.get_bearer("/agent/session", &agent.jwt).await.unwrap();
    assert_eq!(status, 200, "{view}");
    assert_eq!(parsed(&view["account"]), eoa, "{view}");
    assert_eq!(view["moduleInstalled"], true, "{view}");

    // The agent acts for the EOA, within its session.
    let before = f.env.balance(to).await.unwrap();
    let done = f.lands(&agent, transfer(to, "0.01")).await;
    assert_eq!(parsed(&done["account"]), eoa, "{done}");
    assert_eq!(f.env.balance(to).await.unwrap(), before + eth("0.01"));
    let stranger = address("eip7702: stranger");
    f.refused(
        &agent,
        transfer(stranger, "0.01"),
        RefusalCode::TargetNotAllowed,
    )
    .await;
    f.refused(&agent, transfer(to, "2"), RefusalCode::OverBudget)
        .await;
    assert_eq!(f.env.balance(stranger).await.unwrap(), U256::ZERO);

    // A second agent on the delegated EOA: an ERC-7579 grant, no new authorisation.
    let second = f.agent("eip7702 second").await;
    let fields = f.transfers_to(to, json!({"account": eoa})).await;
    let (_, begun) =
        f.c.ceremony(&mut f.user, &second.key_id, "GrantSession", fields.clone())
            .await
            .unwrap();
    assert_eq!(
        begun["UserOperation"]["eip7702Authorization"],
        Value::Null,
        "{begun}"
    );
    let granted = f.grant_included(&second, fields).await;
    assert_eq!(parsed(&granted["account"]), eoa, "{granted}");
    let before = f.env.balance(to).await.unwrap();
    f.lands(&second, transfer(to, "0.02")).await;
    assert_eq!(f.env.balance(to).await.unwrap(), before + eth("0.02"));
    assert_eq!(code(&f, eoa).await, designator, "still the same delegation");
}

#[tokio::test(flavor = "multi_thread")]
async fn delegation_is_refused_where_it_cannot_work() {
    // EntryPoint v0.7 knows no EIP-7702 sender; a companion on v0.8 without an implementation
    // has nothing to delegate to.
    for (version, args, needs) in [
        (V07, &[][..], "EntryPoint v0.8"),
        (
            V08,
            &["--eip7702-account", ""][..],
            "a configured EIP-7702 account implementation",
        ),
    ] {
        let mut f = fixture_with(version, args).await;
        let agent = f.agent("eip7702 refused").await;
        let eoa = f.wallet.address;
        let fields = f
            .transfers_to(address("eip7702 refused: to"), json!({"account": eoa}))
            .await;
        let (status, body) = f.grant_refused(&agent, fields).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (422, Some("unsupported_account")),
            "{body}"
        );
        assert_eq!(body["details"]["needs"], needs, "{body}");
        assert!(code(&f, eoa).await.is_empty());
    }
}
