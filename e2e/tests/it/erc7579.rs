//! Sessions on a third-party ERC-7579 account, end to end at the chain level (#16 items 3–4):
//! OpenZeppelin 5.4.0's `AccountERC7579` with an ECDSA owner (`contracts/testing/OzAccount7579.sol`,
//! deployed here from its committed artifact) whose signer is the wallet's owner key in the TA,
//! `SessionKeyValidator` installed as its validator module by an owner UserOperation, through
//! Alto on anvil and the canonical EntryPoint v0.7 and v0.8.
//!
//! Everything is signed in the TA: the owner's operations with `SignHash` (raw ECDSA over the
//! userOpHash, what `SignerECDSA` checks, on nonce key 0 which names no module), the agents'
//! with `SignAgentUserOp` (the same 106-byte session signature as on `AgentAccount`). The chain
//! side is `kms_chain`'s: the kind detected on chain, `execute(mode, executionCalldata)` callData,
//! the module lane read after the grant, the install-and-grant batch, the uninstallation.

use alloy::network::EthereumWallet;
use alloy::primitives::{keccak256, utils::parse_ether, Address, U256};
use alloy::providers::ProviderBuilder;
use kms_chain::account::{AccountKind, Call};
use kms_chain::bundler::{BundlerError, UserOperationReceipt};
use kms_chain::client::{ChainError, Erc7579Error, NonceChoice, OpRequest, PreparedOp};
use kms_chain::erc7579::{decode_execute, MODE_BATCH, MODE_SINGLE};
use kms_chain::nonce::{AgentLane, NonceKey};
use kms_chain::revert::DecodedRevert;
use kms_chain::session::{
    precheck_on, InFlight, RefusalCode, SessionGrant, TargetPermission, ValidatorPath,
    ValidityMargins,
};
use kms_chain::signature::{stub_session_signature, SESSION_SIGNATURE_LEN};
use kms_chain::userop::v0_7::UserOperation;
use kms_chain::userop::EntryPointVersion::{self, V07, V08};
use kms_contracts::OzAccount7579;
use kms_e2e::chain::{ChainEnv, FIXED_GAS};
use kms_e2e::owner::{Agent, Owner};
use kms_e2e::stack::Stack;
use kms_e2e::ta::TaSim;
use kms_tee_client::TeeClient;
use rstest::rstest;

const DAY: u64 = 24 * 3600;

fn eth(s: &str) -> U256 {
    parse_ether(s).unwrap()
}

/// A recipient address of its own for each test and purpose.
fn address(tag: &str) -> Address {
    Address::from_word(keccak256(tag.as_bytes()))
}

/// The shared chain, a TA of its own, a fresh owner.
struct Fixture {
    env: ChainEnv,
    _sim: TaSim,
    tee: TeeClient,
    owner: Owner,
}

async fn fixture(version: EntryPointVersion) -> Fixture {
    let stack = tokio::task::spawn_blocking(Stack::shared).await.unwrap();
    let env = ChainEnv::connect(stack.info(), version)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", stack.output_tail()));
    let sim = TaSim::start().unwrap();
    let tee = sim.client();
    let owner = Owner::create(&tee).await.unwrap();
    Fixture {
        env,
        _sim: sim,
        tee,
        owner,
    }
}

/// Plain transfers to `targets`, 1 ETH of value, 1 ETH of gas, from an hour ago to a day ahead.
fn grant(agent: &Agent, targets: &[Address], now: u64) -> SessionGrant {
    SessionGrant {
        key: agent.address,
        targets: targets
            .iter()
            .copied()
            .map(TargetPermission::transfers_only)
            .collect(),
        tokens: Vec::new(),
        spend_cap: eth("1").to(),
        gas_cap: eth("1").to(),
        paymaster: None,
        max_ops: 0,
        period: 0,
        period_cap: 0,
        valid_after: now - 3600,
        valid_until: now + DAY,
        revoker: Address::ZERO,
    }
}

impl Fixture {
    /// A new `OzAccount7579` for this EntryPoint whose ECDSA signer is the owner key in the TA,
    /// deployed by a throwaway EOA and funded with 10 ETH.
    async fn oz_account(&self) -> Address {
        let deployer = self.env.funded_signer(eth("1")).await.unwrap();
        let provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(deployer))
            .connect_http(self.env.info.rpc_url.parse().unwrap());
        let account = OzAccount7579::deploy(
            &provider,
            self.env.client.entry_point().address,
            self.owner.address,
        )
        .await
        .unwrap();
        let account = *account.address();
        self.env.set_balance(account, eth("10")).await.unwrap();
        account
    }

    /// Signs an owner operation in the TA (raw ECDSA over the userOpHash) and lands it.
    async fn owner_lands(&self, prepared: &PreparedOp) -> UserOperationReceipt {
        assert_eq!(NonceKey::split(prepared.op.nonce).0, NonceKey::OWNER);
        let sig = self
            .owner
            .sign_user_op(prepared.user_op_hash)
            .await
            .unwrap();
        self.env
            .submit_and_wait(&prepared.signed(sig))
            .await
            .unwrap()
    }

    /// The owner installs the module (unless installed) and grants `grants` on `account`, in one
    /// operation.
    async fn install_and_grant(&self, account: Address, grants: &[SessionGrant]) {
        let prepared = self
            .env
            .client
            .prepare_erc7579_grants(account, grants)
            .await
            .unwrap();
        assert!(self.owner_lands(&prepared).await.success);
    }

    /// The agent's lane on `account`, read from the validator.
    async fn lane(&self, account: Address, agent: &Agent) -> AgentLane {
        self.env
            .client
            .agent_lane(AccountKind::Erc7579, account, agent.address)
            .await
            .unwrap()
    }

    /// An agent operation on `account` (gas estimated by Alto), signed in the TA.
    async fn agent_op(&self, account: Address, agent: &Agent, calls: Vec<Call>) -> UserOperation {
        let lane = self.lane(account, agent).await;
        let prepared = self
            .env
            .client
            .prepare_agent_op_on(account, agent.address, lane, 0, calls, None)
            .await
            .unwrap();
        let sig = agent
            .sign(&self.tee, prepared.user_op_hash, account)
            .await
            .unwrap();
        assert_eq!(sig.len(), SESSION_SIGNATURE_LEN);
        prepared.signed(sig)
    }

    /// An agent operation built past every estimate (fixed gas) on `nonce_key`, its session
    /// signature made in the TA for `sign_for`: what an agent could send the bundler directly.
    async fn raw_agent_op(
        &self,
        account: Address,
        agent: &Agent,
        nonce_key: NonceKey,
        calls: Vec<Call>,
        sign_for: Address,
    ) -> UserOperation {
        let prepared = self
            .env
            .client
            .prepare_for(
                AccountKind::Erc7579,
                OpRequest {
                    sender: account,
                    init: None,
                    nonce: NonceChoice::Next(nonce_key),
                    calls,
                    stub_signature: stub_session_signature(account, agent.address),
                    gas: Some(FIXED_GAS),
                },
            )
            .await
            .unwrap();
        let sig = agent
            .sign(&self.tee, prepared.user_op_hash, sign_for)
            .await
            .unwrap();
        prepared.signed(sig)
    }

    /// Sends `op` to the bundler, expecting a refusal.
    async fn bundler_refuses(&self, op: &UserOperation) -> BundlerError {
        match self.env.client.submit(op).await {
            Ok(s) => panic!("the bundler accepted {}", s.user_op_hash),
            Err(ChainError::Bundler(e)) => e,
            Err(e) => panic!("not a bundler refusal: {e}"),
        }
    }

    /// The bundler refuses `op` in the account's validation (AA23) with the validator's error
    /// `name`, which reads as `code`; the EntryPoint itself says the same.
    async fn validator_refuses(&self, op: &UserOperation, name: &str, code: Option<RefusalCode>) {
        let err = self.bundler_refuses(op).await;
        assert_eq!(err.aa_code(), Some("AA23"), "{err}");
        let revert = err.rejection().and_then(|r| r.revert);
        assert_eq!(
            revert.as_ref().map(|r| r.name.as_str()),
            Some(name),
            "{err}"
        );
        assert_eq!(revert.and_then(|r| r.refusal_code()), code);
        let verdict = self.entry_point_refuses(op).await;
        assert_eq!(
            (verdict.source.as_str(), verdict.name.as_str()),
            ("SessionKeyValidator", name)
        );
        assert_eq!(verdict.entry_point_reason.as_deref(), Some("AA23 reverted"));
    }

    /// The EntryPoint's own verdict on `op` (`handleOps` as an `eth_call`), which must be a
    /// decodable refusal.
    async fn entry_point_refuses(&self, op: &UserOperation) -> DecodedRevert {
        match self.env.entry_point_verdict(op).await {
            Ok(()) => panic!("handleOps would accept the operation"),
            Err(Some(d)) => d,
            Err(None) => panic!("handleOps reverted without a decodable error"),
        }
    }

    /// Pre-checks `calls` of `agent` on the ERC-7579 `account` with the module's state, both read
    /// at one block.
    async fn precheck(
        &self,
        account: Address,
        agent: &Agent,
        calls: &[Call],
    ) -> Result<U256, RefusalCode> {
        let now = self.env.now().await.unwrap();
        let (snapshot, path) = self
            .env
            .client
            .read_session_for_calls_on(AccountKind::Erc7579, account, agent.address, calls, now)
            .await
            .unwrap();
        assert!(matches!(path, ValidatorPath::Erc7579(_)));
        precheck_on(
            path,
            &snapshot,
            calls,
            &InFlight::default(),
            None,
            now,
            ValidityMargins::default(),
        )
        .map(|p| p.value)
        .map_err(|r| r.code())
    }
}

/// The whole life of agent sessions on two OpenZeppelin ERC-7579 accounts of one owner: detection,
/// install-and-grant by an owner operation, lanes, an agent's single call and batch landing, the
/// pre-check, sender binding across the two accounts, lane binding between two agents, the caps and
/// targets refused by the chain (bundler and EntryPoint, with the validator's error decoded), and
/// uninstallation ending the sessions of one account only (a reinstallation does not revive them, a
/// re-grant does).
#[rstest]
#[case::v07(V07)]
#[case::v08(V08)]
#[tokio::test(flavor = "multi_thread")]
async fn sessions_on_openzeppelin_erc7579_accounts(#[case] version: EntryPointVersion) {
    let f = fixture(version).await;
    let client = &f.env.client;
    let validator = client.validator();
    let agent = f.owner.create_agent(0, DAY).await.unwrap();
    let other_agent = f.owner.create_agent(1, DAY).await.unwrap();
    let to = address(&format!("erc7579 payee {version}"));
    let stranger = address(&format!("erc7579 stranger {version}"));
    let now = f.env.now().await.unwrap();

    // Two accounts of the same owner; the kind is detected on chain.
    let a = f.oz_account().await;
    let b = f.oz_account().await;
    assert_ne!(a, b);
    assert_eq!(
        client.account_kind(a).await.unwrap(),
        Some(AccountKind::Erc7579)
    );
    assert_eq!(client.account_kind(to).await.unwrap(), None, "no code");
    assert_eq!(
        client.account_kind(validator).await.unwrap(),
        None,
        "not an account"
    );
    let id = client.node().account_id(a).await.unwrap().unwrap();
    assert!(id.contains("AccountERC7579"), "{id}");
    assert!(!client.node().is_module_installed(a).await.unwrap());

    // Installing on something that is not an ERC-7579 account is refused before anything is built.
    let g = grant(&agent, &[to], now);
    match client
        .prepare_erc7579_grants(to, std::slice::from_ref(&g))
        .await
    {
        Err(ChainError::Erc7579(Erc7579Error::NotErc7579 { account, found })) => {
            assert_eq!((account, found), (to, "no code"))
        }
        other => panic!("{other:?}"),
    }

    // The owner installs the module and grants in one operation (a batch: the account's own
    // installModule, then the validator's grantSession).
    let install = client
        .prepare_erc7579_grants(a, std::slice::from_ref(&g))
        .await
        .unwrap();
    let batch = decode_execute(&install.op.call_data).unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!((batch[0].to, batch[1].to), (a, validator));
    assert!(f.owner_lands(&install).await.success);
    assert!(client.node().is_module_installed(a).await.unwrap());
    let module = client.module_state(a).await.unwrap();
    assert!(module.installed);
    assert_eq!((module.generation, module.lanes), (0, 1));
    // The first key granted on the account has lane 1; a second agent, granted while the module is
    // installed (no installation in the batch), lane 2; the same key on B lane 1 there.
    assert_eq!(
        f.lane(a, &agent).await,
        AgentLane::Module { validator, lane: 1 }
    );
    let again = client
        .prepare_erc7579_grants(a, &[grant(&other_agent, &[to], now)])
        .await
        .unwrap();
    assert_eq!(decode_execute(&again.op.call_data).unwrap().len(), 1);
    assert!(f.owner_lands(&again).await.success);
    assert_eq!(
        f.lane(a, &other_agent).await,
        AgentLane::Module { validator, lane: 2 }
    );
    f.install_and_grant(b, std::slice::from_ref(&g)).await;
    assert_eq!(
        f.lane(b, &agent).await,
        AgentLane::Module { validator, lane: 1 }
    );

    // The pre-check on the module path: a listed transfer passes, a stranger is refused.
    assert_eq!(
        f.precheck(a, &agent, &[Call::transfer(to, eth("0.1"))])
            .await,
        Ok(eth("0.1"))
    );
    assert_eq!(
        f.precheck(a, &agent, &[Call::transfer(stranger, eth("0.1"))])
            .await,
        Err(RefusalCode::TargetNotAllowed)
    );

    // An agent's single call lands, on its lane, with ERC-7579 callData and the 106-byte
    // session signature made in the TA; then a batch.
    let single = f
        .agent_op(a, &agent, vec![Call::transfer(to, eth("0.1"))])
        .await;
    assert_eq!(&single.call_data[4..36], MODE_SINGLE.as_slice());
    let (key, seq) = NonceKey::split(single.nonce);
    assert_eq!((key, seq), (NonceKey::for_module_lane(validator, 1, 0), 0));
    assert!(f.env.submit_and_wait(&single).await.unwrap().success);
    let two = f
        .agent_op(
            a,
            &agent,
            vec![
                Call::transfer(to, eth("0.05")),
                Call::transfer(to, eth("0.05")),
            ],
        )
        .await;
    assert_eq!(&two.call_data[4..36], MODE_BATCH.as_slice());
    assert!(f.env.submit_and_wait(&two).await.unwrap().success);
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.2"));
    let session = client.read_session(a, agent.address, &[]).await.unwrap();
    assert_eq!(session.session.spent, eth("0.2").to::<u128>());
    assert_eq!((session.session.lane, session.session.generation), (1, 0));
    assert_eq!(
        NonceKey::split(
            client
                .nonce(a, NonceKey::for_module_lane(validator, 1, 0))
                .await
                .unwrap()
        )
        .1,
        2
    );
    // The other agent's lane, and the owner's, did not move.
    assert_eq!(
        client
            .nonce(a, NonceKey::for_module_lane(validator, 2, 0))
            .await
            .unwrap(),
        NonceKey::for_module_lane(validator, 2, 0).nonce(0)
    );

    // Sender binding across the two accounts: the TA signs B's operation naming A.
    let lane_b = NonceKey::for_module_lane(validator, 1, 0);
    let forged = f
        .raw_agent_op(b, &agent, lane_b, vec![Call::transfer(to, eth("0.1"))], a)
        .await;
    f.validator_refuses(&forged, "AccountMismatch", None).await;

    // Lane binding: the other agent on the first agent's lane of A.
    let stolen_lane = f
        .raw_agent_op(
            a,
            &other_agent,
            NonceKey::for_module_lane(validator, 1, 0),
            vec![Call::transfer(to, eth("0.1"))],
            a,
        )
        .await;
    f.validator_refuses(
        &stolen_lane,
        "NonceLaneNotAllowed",
        Some(RefusalCode::LaneNotAllowed),
    )
    .await;

    // A target the session does not list, and more value than the cap has left.
    let lane_a = NonceKey::for_module_lane(validator, 1, 0);
    let unlisted = f
        .raw_agent_op(
            a,
            &agent,
            lane_a,
            vec![Call::transfer(stranger, eth("0.1"))],
            a,
        )
        .await;
    f.validator_refuses(
        &unlisted,
        "TargetNotAllowed",
        Some(RefusalCode::TargetNotAllowed),
    )
    .await;
    let over_cap = f
        .raw_agent_op(a, &agent, lane_a, vec![Call::transfer(to, eth("0.9"))], a)
        .await;
    f.validator_refuses(&over_cap, "SpendCapExceeded", Some(RefusalCode::OverBudget))
        .await;
    assert_eq!(
        f.precheck(a, &agent, &[Call::transfer(to, eth("0.9"))])
            .await,
        Err(RefusalCode::OverBudget)
    );
    assert_eq!(f.env.balance(stranger).await.unwrap(), U256::ZERO);

    // Uninstallation by the owner ends A's sessions: the account no longer hands the lane to the
    // validator (its owner signer refuses the session signature: AA24), and the pre-check says so.
    let uninstall = client.prepare_erc7579_uninstall(a).await.unwrap();
    assert!(f.owner_lands(&uninstall).await.success);
    let module = client.module_state(a).await.unwrap();
    assert_eq!((module.installed, module.generation), (false, 1));
    assert!(!client.node().is_module_installed(a).await.unwrap());
    assert!(matches!(
        client.prepare_erc7579_uninstall(a).await,
        Err(ChainError::Erc7579(Erc7579Error::ModuleNotInstalled { .. }))
    ));
    assert_eq!(
        f.precheck(a, &agent, &[Call::transfer(to, eth("0.1"))])
            .await,
        Err(RefusalCode::SessionRevoked)
    );
    let after = f
        .raw_agent_op(a, &agent, lane_a, vec![Call::transfer(to, eth("0.1"))], a)
        .await;
    let err = f.bundler_refuses(&after).await;
    assert!(
        err.aa_code() == Some("AA24") || err.rpc_code() == Some(-32507),
        "signature failure expected: {err}"
    );

    // A reinstallation does not revive them: the validator refuses the old generation.
    f.install_and_grant(a, &[]).await;
    let module = client.module_state(a).await.unwrap();
    assert_eq!((module.installed, module.generation), (true, 1));
    let revived = f
        .raw_agent_op(a, &agent, lane_a, vec![Call::transfer(to, eth("0.1"))], a)
        .await;
    f.validator_refuses(
        &revived,
        "SessionUninstalled",
        Some(RefusalCode::SessionRevoked),
    )
    .await;

    // B's session was never touched: its agent operation lands.
    let on_b = f
        .agent_op(b, &agent, vec![Call::transfer(to, eth("0.1"))])
        .await;
    assert!(f.env.submit_and_wait(&on_b).await.unwrap().success);

    // A re-grant on A starts a live session on the key's same lane.
    f.install_and_grant(a, std::slice::from_ref(&g)).await;
    assert_eq!(
        f.lane(a, &agent).await,
        AgentLane::Module { validator, lane: 1 }
    );
    let regranted = f
        .agent_op(a, &agent, vec![Call::transfer(to, eth("0.1"))])
        .await;
    assert!(f.env.submit_and_wait(&regranted).await.unwrap().success);
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.4"));
}

/// A periodic session on the module path names its period in the low 16 bits of its lane's
/// nonce key (`validator ‖ lane ‖ period`): the current period's operation lands, the period's
/// cap holds (pre-check and chain), an operation naming an elapsed period is refused by the
/// EntryPoint (its window is over). And the owner's `AgentAccount` is told apart on chain: the
/// module cannot be installed there.
#[rstest]
#[case::v07(V07)]
#[case::v08(V08)]
#[tokio::test(flavor = "multi_thread")]
async fn periodic_session_names_its_period_in_the_module_lane(#[case] version: EntryPointVersion) {
    let f = fixture(version).await;
    let client = &f.env.client;
    let validator = client.validator();
    let agent = f.owner.create_agent(0, DAY).await.unwrap();
    let to = address(&format!("erc7579 periodic payee {version}"));
    let now = f.env.now().await.unwrap();

    // The owner's AgentAccount (deployed with a grant) is detected as such and refused.
    let salt = U256::from(7579);
    let agent_account = client.account_address(f.owner.address, salt).await.unwrap();
    f.env.set_balance(agent_account, eth("1")).await.unwrap();
    f.env
        .grant(&f.owner, salt, &[grant(&agent, &[to], now)])
        .await
        .unwrap();
    assert_eq!(
        client.account_kind(agent_account).await.unwrap(),
        Some(AccountKind::AgentAccount)
    );
    match client.prepare_erc7579_grants(agent_account, &[]).await {
        Err(ChainError::Erc7579(Erc7579Error::NotErc7579 { found, .. })) => {
            assert_eq!(found, "agent-account")
        }
        other => panic!("{other:?}"),
    }

    // A daily budget of 0.1 ETH whose window began a day and an hour ago: now is in period 1.
    let account = f.oz_account().await;
    let mut g = grant(&agent, &[to], now);
    g.valid_after = now - DAY - 3600;
    g.period = DAY as u32;
    g.period_cap = eth("0.1").to();
    f.install_and_grant(account, std::slice::from_ref(&g)).await;
    let lane = f.lane(account, &agent).await;
    let snapshot = client
        .read_session(account, agent.address, &[])
        .await
        .unwrap();
    assert_eq!(snapshot.period_index, 1);

    let prepared = client
        .prepare_agent_op_on(
            account,
            agent.address,
            lane,
            snapshot.period_index,
            vec![Call::transfer(to, eth("0.06"))],
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        NonceKey::split(prepared.op.nonce).0,
        NonceKey::for_module_lane(validator, 1, 1)
    );
    let sig = agent
        .sign(&f.tee, prepared.user_op_hash, account)
        .await
        .unwrap();
    assert!(
        f.env
            .submit_and_wait(&prepared.signed(sig))
            .await
            .unwrap()
            .success
    );
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.06"));

    // 0.05 more in the same period: over its cap, for the pre-check and for the chain.
    assert_eq!(
        f.precheck(account, &agent, &[Call::transfer(to, eth("0.05"))])
            .await,
        Err(RefusalCode::PeriodOverBudget)
    );
    let over = f
        .raw_agent_op(
            account,
            &agent,
            lane.key(1).unwrap(),
            vec![Call::transfer(to, eth("0.05"))],
            account,
        )
        .await;
    f.validator_refuses(
        &over,
        "PeriodCapExceeded",
        Some(RefusalCode::PeriodOverBudget),
    )
    .await;

    // Period 0 is over: its operation is valid only within it, so the EntryPoint refuses it.
    let past = f
        .raw_agent_op(
            account,
            &agent,
            lane.key(0).unwrap(),
            vec![Call::transfer(to, eth("0.01"))],
            account,
        )
        .await;
    match f.env.entry_point_verdict(&past).await {
        Err(Some(d)) => assert!(
            d.entry_point_reason
                .as_deref()
                .is_some_and(|r| r.starts_with("AA22")),
            "{d:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.06"));
}
