//! Sessions end to end at the chain level: anvil + EntryPoint v0.7/v0.8 + the project's contracts
//! + Alto (one shared stack for this test binary) + a `ta-sim` per test, through `kms_chain`.
//!
//! Every flow runs on both EntryPoint versions. Operations are signed by the TA: the owner's with
//! `SignMessage` over the userOpHash (passkey-gated), the agents' with `SignAgentUserOp` (JWT
//! checked by the TA, 106-byte session signature). Refusals are shown three ways where they
//! apply: the companion's pre-check (reason code), the bundler (sent straight to it), and the
//! EntryPoint itself (`handleOps` as an `eth_call`).

use alloy::primitives::{keccak256, utils::parse_ether, Address, Bytes, FixedBytes, U256};
use kms_chain::account::Call;
use kms_chain::bundler::{BundlerError, RetryPolicy};
use kms_chain::client::{ChainClient, ChainError, FeeSource, PreparedOp, RevokeOutcome};
use kms_chain::nonce::{NonceKey, NonceTracker};
use kms_chain::revert::DecodedRevert;
use kms_chain::session::{
    precheck, InFlight, RefusalCode, SessionGrant, TargetPermission, ValidityMargins,
};
use kms_chain::signature::{SessionSignature, SESSION_MARKER, SESSION_SIGNATURE_LEN};
use kms_chain::userop::EntryPointVersion::{self, V07, V08};
use kms_companion::tee::{TaOperator, Tee};
use kms_contracts::{AgentAccount, IEntryPointV07, SessionKeyValidator};
use kms_e2e::chain::{chain_config, ChainEnv};
use kms_e2e::owner::{Agent, Owner, ANVIL_MNEMONIC};
use kms_e2e::proxy::{Fault, Proxy};
use kms_e2e::stack::Stack;
use kms_e2e::ta::TaSim;
use kms_tee_client::TeeClient;
use rstest::rstest;

const DAY: u64 = 24 * 3600;

/// Everything one test needs: the shared chain, its own TA, a fresh owner, the TA's operator.
struct Fixture {
    env: ChainEnv,
    _sim: TaSim,
    tee: TeeClient,
    owner: Owner,
    operator: TaOperator,
}

async fn fixture(version: EntryPointVersion) -> Fixture {
    let stack = tokio::task::spawn_blocking(Stack::shared).await.unwrap();
    let env = ChainEnv::connect(stack.info(), version)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", stack.output_tail()));
    let sim = TaSim::start().unwrap();
    let tee = sim.client();
    let owner = Owner::create(&tee).await.unwrap();
    let operator = TaOperator::open(Tee::standalone(tee.clone()), true)
        .await
        .unwrap();
    Fixture {
        env,
        _sim: sim,
        tee,
        owner,
        operator,
    }
}

/// A recipient address of its own for each test and purpose.
fn address(tag: &str) -> Address {
    Address::from_word(keccak256(tag.as_bytes()))
}

fn eth(s: &str) -> U256 {
    parse_ether(s).unwrap()
}

fn grant(
    agent: &Agent,
    targets: Vec<Address>,
    cap: U256,
    window: (u64, u64),
    revoker: Address,
) -> SessionGrant {
    SessionGrant {
        key: agent.address,
        // Any function: these tests are about targets, value, windows and revocation (the
        // function, token and gas rules have their own tests).
        targets: targets.into_iter().map(TargetPermission::any).collect(),
        tokens: Vec::new(),
        spend_cap: cap.to(),
        gas_cap: eth("1").to(),
        paymaster: None,
        max_ops: 0,
        period: 0,
        period_cap: 0,
        valid_after: window.0,
        valid_until: window.1,
        revoker,
    }
}

impl Fixture {
    /// Funds the owner's account `salt` with 10 ETH, then deploys it with sessions for `grants`.
    async fn account_with(&self, salt: u64, grants: &[SessionGrant]) -> Address {
        let predicted = self
            .env
            .client
            .account_address(self.owner.address, U256::from(salt))
            .await
            .unwrap();
        self.env.set_balance(predicted, eth("10")).await.unwrap();
        let (account, receipt) = self
            .env
            .grant(&self.owner, U256::from(salt), grants)
            .await
            .unwrap();
        assert!(receipt.success);
        assert_eq!(account, predicted);
        account
    }

    /// The usual window: from an hour ago to a day ahead.
    async fn open_window(&self) -> (u64, u64) {
        let now = self.env.now().await.unwrap();
        (now - 3600, now + DAY)
    }

    /// Pre-checks `calls` of `agent` on `account` against the chain (nothing in flight).
    async fn precheck(
        &self,
        account: Address,
        agent: &Agent,
        calls: &[Call],
        in_flight: U256,
    ) -> Result<U256, RefusalCode> {
        let now = self.env.now().await.unwrap();
        let snapshot = self
            .env
            .client
            .read_session_for_calls(account, agent.address, calls, now)
            .await
            .unwrap();
        let in_flight = InFlight {
            value: in_flight,
            ..InFlight::default()
        };
        precheck(
            &snapshot,
            calls,
            &in_flight,
            None,
            now,
            ValidityMargins::default(),
        )
        .map(|p| p.value)
        .map_err(|r| r.code())
    }

    /// Builds `calls` of `agent` on `account` through `env`'s client (with estimation, at
    /// `nonce` or the next one) and has the TA sign it: the prepared operation and the signed.
    async fn signed_agent_op(
        &self,
        env: &ChainEnv,
        account: Address,
        agent: &Agent,
        calls: Vec<Call>,
        nonce: Option<U256>,
    ) -> (PreparedOp, kms_chain::userop::v0_7::UserOperation) {
        let prepared = env
            .client
            .prepare_agent_op(account, agent.address, calls, nonce)
            .await
            .unwrap();
        let sig = agent
            .sign(&self.tee, prepared.user_op_hash, account)
            .await
            .unwrap();
        let signed = prepared.signed(sig);
        (prepared, signed)
    }

    /// Builds (with estimation), has the TA sign, submits and waits for an agent intent.
    async fn agent_intent(
        &self,
        account: Address,
        agent: &Agent,
        calls: Vec<Call>,
    ) -> kms_chain::bundler::UserOperationReceipt {
        let (_, op) = self
            .signed_agent_op(&self.env, account, agent, calls, None)
            .await;
        self.env.submit_and_wait(&op).await.unwrap()
    }

    /// An agent operation built without estimation and signed by the TA: what an attacker
    /// holding the credential could send straight to the bundler.
    async fn unchecked_signed_op(
        &self,
        account: Address,
        agent: &Agent,
        calls: Vec<Call>,
    ) -> kms_chain::userop::v0_7::UserOperation {
        let prepared = self
            .env
            .unestimated_agent_op(account, agent.address, calls)
            .await
            .unwrap();
        let sig = agent
            .sign(&self.tee, prepared.user_op_hash, account)
            .await
            .unwrap();
        prepared.signed(sig)
    }
}

/// Sends `op` straight to the bundler, expecting a refusal; returns it.
async fn bundler_refuses(
    env: &ChainEnv,
    op: &kms_chain::userop::v0_7::UserOperation,
) -> BundlerError {
    match env.client.submit(op).await {
        Ok(s) => panic!("the bundler accepted {}", s.user_op_hash),
        Err(ChainError::Bundler(e)) => e,
        Err(e) => panic!("not a bundler refusal: {e}"),
    }
}

/// The EntryPoint's verdict on `op`, which must be a refusal.
async fn entry_point_refuses(
    env: &ChainEnv,
    op: &kms_chain::userop::v0_7::UserOperation,
) -> DecodedRevert {
    match env.entry_point_verdict(op).await {
        Ok(()) => panic!("handleOps would accept the operation"),
        Err(Some(d)) => d,
        Err(None) => panic!("handleOps reverted without a decodable error"),
    }
}

// ------------------------------------------------------------------ start-up checks

#[tokio::test(flavor = "multi_thread")]
async fn start_up_checks_chain_id_entry_point_and_factory() {
    let stack = tokio::task::spawn_blocking(Stack::shared).await.unwrap();
    let info = stack.info();
    for v in [V07, V08] {
        let ok = ChainClient::connect(chain_config(info, v)).await.unwrap();
        assert_eq!(ok.chain_id(), info.chain_id);
    }
    let mut wrong_chain = chain_config(info, V07);
    wrong_chain.expected_chain_id = Some(1);
    assert!(matches!(
        ChainClient::connect(wrong_chain).await.unwrap_err(),
        ChainError::ChainIdMismatch {
            node: 31337,
            bundler: 31337,
            configured: Some(1)
        }
    ));
    let mut unknown_ep = chain_config(info, V07);
    unknown_ep.entry_point.address = address("not an entry point");
    assert!(matches!(
        ChainClient::connect(unknown_ep).await.unwrap_err(),
        ChainError::EntryPointNotSupported { .. }
    ));
    let mut crossed = chain_config(info, V07);
    crossed.factory = info.account_factory_v08;
    assert!(matches!(
        ChainClient::connect(crossed).await.unwrap_err(),
        ChainError::FactoryMismatch { .. }
    ));
    let mut no_validator = chain_config(info, V08);
    no_validator.validator = address("no validator here");
    assert!(matches!(
        ChainClient::connect(no_validator).await.unwrap_err(),
        ChainError::NoCode {
            what: "session key validator",
            ..
        }
    ));
}

// ------------------------------------------------------------------ owner grants a session

#[rstest]
#[case::v07(V07)]
#[case::v08(V08)]
#[tokio::test(flavor = "multi_thread")]
async fn owner_op_deploys_account_and_grants_session(#[case] version: EntryPointVersion) {
    let stack = tokio::task::spawn_blocking(Stack::shared).await.unwrap();
    let env = ChainEnv::connect(stack.info(), version).await.unwrap();
    let sim = TaSim::start().unwrap();
    let tee = sim.client();
    // The anvil mnemonic: the known owner and agent addresses (docs/ARCHITECTURE.md#key-derivation).
    let owner = Owner::seed(&tee, ANVIL_MNEMONIC).await.unwrap();
    assert_eq!(
        owner.address,
        alloy::primitives::address!("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")
    );
    let agent = owner.create_agent(0, DAY).await.unwrap();
    assert_eq!(
        agent.address,
        alloy::primitives::address!("0x4b39F7b0624b9dB86AD293686bc38B903142dbBc")
    );
    let operator = TaOperator::open(Tee::standalone(tee.clone()), true)
        .await
        .unwrap();
    assert_ne!(
        kms_chain::operator::OperatorSigner::address(&operator),
        Address::ZERO
    );

    // A salt of its own per version (both versions share the owner).
    let salt = U256::from(match version {
        V07 => 7001,
        V08 => 8001,
    });
    let account = env
        .client
        .account_address(owner.address, salt)
        .await
        .unwrap();
    assert!(
        !env.client.has_code(account).await.unwrap(),
        "counterfactual"
    );
    env.set_balance(account, eth("1")).await.unwrap();

    let now = env.now().await.unwrap();
    let target = address(&format!("grant target {version}"));
    let g = grant(
        &agent,
        vec![target],
        eth("0.5"),
        (now - 60, now + DAY),
        kms_chain::operator::OperatorSigner::address(&operator),
    );
    let prepared = env
        .client
        .prepare_grants(owner.address, salt, std::slice::from_ref(&g))
        .await
        .unwrap();
    assert!(prepared.deploys_account);
    assert_eq!(prepared.op.factory, Some(env.client.factory()));
    assert_eq!(prepared.op.nonce, U256::ZERO, "owner key 0, first sequence");
    // The local userOpHash is the EntryPoint's.
    let onchain = IEntryPointV07::new(env.client.entry_point().address, env.client.provider())
        .getUserOpHash(prepared.op.to_packed())
        .call()
        .await
        .unwrap();
    assert_eq!(prepared.user_op_hash, onchain, "{version} userOpHash");

    let sig = owner.sign_user_op(prepared.user_op_hash).await.unwrap();
    assert_eq!(sig.len(), 65);
    let receipt = env.submit_and_wait(&prepared.signed(sig)).await.unwrap();
    assert!(receipt.success);
    assert_eq!(receipt.user_op_hash, prepared.user_op_hash);

    assert!(
        env.client.has_code(account).await.unwrap(),
        "deployed in the same operation"
    );
    let acc = AgentAccount::new(account, env.client.provider());
    assert_eq!(acc.owner().call().await.unwrap(), owner.address);
    let snapshot = env
        .client
        .read_session(account, agent.address, &[target])
        .await
        .unwrap();
    let s = snapshot.session;
    assert!(s.active);
    assert_eq!(s.epoch, 1);
    assert_eq!(s.spend_cap, eth("0.5").to::<u128>());
    assert_eq!((s.valid_after, s.valid_until), (now - 60, now + DAY));
    assert_eq!(
        s.revoker,
        kms_chain::operator::OperatorSigner::address(&operator)
    );
    assert!(snapshot.allowed_targets[&target]);
    assert_eq!(snapshot.remaining_budget, eth("0.5"));

    // A second grant on the deployed account: no factory, next owner nonce.
    let agent1 = owner.create_agent(1, DAY).await.unwrap();
    assert_eq!(
        agent1.address,
        alloy::primitives::address!("0x71b4a2d9B91726bdb5849D928967A1654D7F3de7")
    );
    let g1 = grant(&agent1, vec![target], eth("0.1"), (0, 0), Address::ZERO);
    let again = env
        .client
        .prepare_grants(owner.address, salt, &[g1])
        .await
        .unwrap();
    assert!(!again.deploys_account);
    assert_eq!(again.op.factory, None);
    assert_eq!(again.op.nonce, U256::from(1));
    let sig = owner.sign_user_op(again.user_op_hash).await.unwrap();
    env.submit_and_wait(&again.signed(sig)).await.unwrap();
    assert!(
        env.client
            .read_session(account, agent1.address, &[])
            .await
            .unwrap()
            .session
            .active
    );
}

// ------------------------------------------------------------------ an agent op moves value

#[rstest]
#[case::v07(V07)]
#[case::v08(V08)]
#[tokio::test(flavor = "multi_thread")]
async fn agent_op_signed_by_the_ta_moves_value(#[case] version: EntryPointVersion) {
    let f = fixture(version).await;
    let agent = f.owner.create_agent(0, DAY).await.unwrap();
    let (to_a, to_b) = (
        address(&format!("pay a {version}")),
        address(&format!("pay b {version}")),
    );
    let window = f.open_window().await;
    let account = f
        .account_with(
            0,
            &[grant(
                &agent,
                vec![to_a, to_b],
                eth("1"),
                window,
                Address::ZERO,
            )],
        )
        .await;

    let calls = vec![Call::transfer(to_a, eth("0.25"))];
    assert_eq!(
        f.precheck(account, &agent, &calls, U256::ZERO).await,
        Ok(eth("0.25"))
    );
    let prepared = f
        .env
        .client
        .prepare_agent_op(account, agent.address, calls, None)
        .await
        .unwrap();
    let (key, seq) = NonceKey::split(prepared.op.nonce);
    assert_eq!((key, seq), (NonceKey::for_agent(agent.address), 0));
    let onchain = IEntryPointV07::new(f.env.client.entry_point().address, f.env.client.provider())
        .getUserOpHash(prepared.op.to_packed())
        .call()
        .await
        .unwrap();
    assert_eq!(prepared.user_op_hash, onchain, "{version} userOpHash");

    let sig = agent
        .sign(&f.tee, prepared.user_op_hash, account)
        .await
        .unwrap();
    let parsed = SessionSignature::parse(&sig).expect("106-byte session layout");
    assert_eq!((parsed.account, parsed.key), (account, agent.address));
    // The deployed validator checks the layout the TA produced, defined once in kms_proto.
    let validator = SessionKeyValidator::new(f.env.client.validator(), f.env.client.provider());
    assert_eq!(
        validator.SESSION_MARKER().call().await.unwrap(),
        FixedBytes([SESSION_MARKER])
    );
    assert_eq!(
        validator.SESSION_SIGNATURE_LENGTH().call().await.unwrap(),
        U256::from(SESSION_SIGNATURE_LEN)
    );
    let before = f.env.balance(to_a).await.unwrap();
    let receipt = f.env.submit_and_wait(&prepared.signed(sig)).await.unwrap();
    assert!(receipt.success);
    assert_eq!(receipt.receipt.status, Some(U256::from(1)));
    assert_eq!(f.env.balance(to_a).await.unwrap() - before, eth("0.25"));

    // Two calls in one intent: executeBatch.
    let before_b = f.env.balance(to_b).await.unwrap();
    let receipt = f
        .agent_intent(
            account,
            &agent,
            vec![
                Call::transfer(to_a, eth("0.1")),
                Call::transfer(to_b, eth("0.2")),
            ],
        )
        .await;
    assert!(receipt.success);
    assert_eq!(f.env.balance(to_b).await.unwrap() - before_b, eth("0.2"));

    // The validator recorded the spend; the agent's nonce key advanced twice.
    let snapshot = f
        .env
        .client
        .read_session(account, agent.address, &[])
        .await
        .unwrap();
    assert_eq!(snapshot.session.spent, eth("0.55").to::<u128>());
    assert_eq!(snapshot.remaining_budget, eth("0.45"));
    let nonce = f
        .env
        .client
        .nonce(account, NonceKey::for_agent(agent.address))
        .await
        .unwrap();
    assert_eq!(NonceKey::split(nonce).1, 2);
    assert_eq!(
        f.env.client.nonce(account, NonceKey::OWNER).await.unwrap(),
        U256::from(1)
    );
}

// ------------------------------------------------------------------ sender binding

#[rstest]
#[case::v07(V07)]
#[case::v08(V08)]
#[tokio::test(flavor = "multi_thread")]
async fn sender_binding_refuses_a_signature_for_another_account(
    #[case] version: EntryPointVersion,
) {
    let f = fixture(version).await;
    let agent = f.owner.create_agent(0, DAY).await.unwrap();
    let to = address(&format!("binding {version}"));
    let window = f.open_window().await;
    let g = grant(&agent, vec![to], eth("1"), window, Address::ZERO);
    // The same agent key holds sessions on both accounts.
    let a = f.account_with(1, std::slice::from_ref(&g)).await;
    let b = f.account_with(2, std::slice::from_ref(&g)).await;
    assert_ne!(a, b);

    // 1. The TA signs B's operation hash but for account A (a host naming the wrong account):
    //    the signature names A, the operation's sender is B.
    let op_b = f
        .env
        .client
        .prepare_agent_op(b, agent.address, vec![Call::transfer(to, eth("0.1"))], None)
        .await
        .unwrap();
    let sig_for_a = agent.sign(&f.tee, op_b.user_op_hash, a).await.unwrap();
    let forged = op_b.signed(sig_for_a.clone());
    let err = bundler_refuses(&f.env, &forged).await;
    assert_eq!(err.aa_code(), Some("AA23"), "{err}");
    let rejection = err.rejection().unwrap();
    assert_eq!(
        rejection.revert.as_ref().map(|r| r.name.as_str()),
        Some("AccountMismatch"),
        "{rejection:?}"
    );
    let verdict = entry_point_refuses(&f.env, &forged).await;
    assert_eq!(verdict.name, "AccountMismatch");
    assert_eq!(verdict.entry_point_reason.as_deref(), Some("AA23 reverted"));

    // 2. A's own operation and signature, moved into an operation whose sender is B.
    let op_a = f
        .env
        .client
        .prepare_agent_op(a, agent.address, vec![Call::transfer(to, eth("0.1"))], None)
        .await
        .unwrap();
    let sig_a = agent.sign(&f.tee, op_a.user_op_hash, a).await.unwrap();
    let mut moved = op_a.signed(sig_a.clone());
    moved.sender = b;
    assert_eq!(
        entry_point_refuses(&f.env, &moved).await.name,
        "AccountMismatch"
    );
    assert_eq!(
        bundler_refuses(&f.env, &moved).await.aa_code(),
        Some("AA23")
    );

    // 3. ... with the account bytes rewritten to B: the ECDSA signature covers A's operation
    //    (whose hash includes its sender), so it does not recover to the key for B's.
    let mut rewritten = sig_a.to_vec();
    rewritten[1..21].copy_from_slice(b.as_slice());
    moved.signature = Bytes::from(rewritten);
    let err = bundler_refuses(&f.env, &moved).await;
    assert!(
        err.aa_code() == Some("AA24") || err.rpc_code() == Some(-32507),
        "signature failure expected: {err}"
    );
    match f.env.entry_point_verdict(&moved).await {
        Err(Some(d)) => assert_eq!(
            d.entry_point_reason.as_deref(),
            Some("AA24 signature error"),
            "{d:?}"
        ),
        other => panic!("{other:?}"),
    }

    // Nothing moved; the genuine signatures still work for their own accounts.
    assert_eq!(f.env.balance(to).await.unwrap(), U256::ZERO);
    let receipt = f.env.submit_and_wait(&op_a.signed(sig_a)).await.unwrap();
    assert!(receipt.success);
    let sig_b = agent.sign(&f.tee, op_b.user_op_hash, b).await.unwrap();
    assert!(
        f.env
            .submit_and_wait(&op_b.signed(sig_b))
            .await
            .unwrap()
            .success
    );
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.2"));
}

// ------------------------------------------------------------------ disallowed target

#[rstest]
#[case::v07(V07)]
#[case::v08(V08)]
#[tokio::test(flavor = "multi_thread")]
async fn disallowed_target_is_refused(#[case] version: EntryPointVersion) {
    let f = fixture(version).await;
    let agent = f.owner.create_agent(0, DAY).await.unwrap();
    let allowed = address(&format!("allowed {version}"));
    let other = address(&format!("not allowed {version}"));
    let window = f.open_window().await;
    let account = f
        .account_with(
            0,
            &[grant(
                &agent,
                vec![allowed],
                eth("1"),
                window,
                Address::ZERO,
            )],
        )
        .await;

    // The companion's pre-check refuses, whatever the position of the bad call.
    for calls in [
        vec![Call::transfer(other, eth("0.1"))],
        vec![
            Call::transfer(allowed, eth("0.1")),
            Call::transfer(other, U256::ZERO),
        ],
        vec![Call::transfer(account, U256::ZERO)],
        vec![Call::transfer(f.env.client.validator(), U256::ZERO)],
    ] {
        assert_eq!(
            f.precheck(account, &agent, &calls, U256::ZERO).await,
            Err(RefusalCode::TargetNotAllowed)
        );
    }
    // Estimation refuses too (the validator reverts in simulation).
    let err = f
        .env
        .client
        .prepare_agent_op(
            account,
            agent.address,
            vec![Call::transfer(other, eth("0.1"))],
            None,
        )
        .await
        .unwrap_err();
    let ChainError::Bundler(err) = err else {
        panic!("{err}")
    };
    assert_eq!(
        err.rejection().unwrap().revert.unwrap().refusal_code(),
        Some(RefusalCode::TargetNotAllowed)
    );

    // Signed and sent straight to the bundler: refused, and the EntryPoint agrees.
    let op = f
        .unchecked_signed_op(account, &agent, vec![Call::transfer(other, eth("0.1"))])
        .await;
    let err = bundler_refuses(&f.env, &op).await;
    assert_eq!(err.aa_code(), Some("AA23"), "{err}");
    let revert = err.rejection().unwrap().revert.expect("decoded revert");
    assert_eq!(revert.name, "TargetNotAllowed");
    assert_eq!(revert.refusal_code(), Some(RefusalCode::TargetNotAllowed));
    let verdict = entry_point_refuses(&f.env, &op).await;
    assert_eq!(
        (verdict.name.as_str(), verdict.refusal_code()),
        ("TargetNotAllowed", Some(RefusalCode::TargetNotAllowed))
    );

    let op = f
        .unchecked_signed_op(account, &agent, vec![Call::transfer(account, U256::ZERO)])
        .await;
    assert_eq!(
        entry_point_refuses(&f.env, &op).await.name,
        "ForbiddenTarget"
    );
    assert_eq!(f.env.balance(other).await.unwrap(), U256::ZERO);
}

// ------------------------------------------------------------------ spend cap across ops

#[rstest]
#[case::v07(V07)]
#[case::v08(V08)]
#[tokio::test(flavor = "multi_thread")]
async fn total_over_the_cap_across_ops_is_refused(#[case] version: EntryPointVersion) {
    let f = fixture(version).await;
    let agent = f.owner.create_agent(0, DAY).await.unwrap();
    let to = address(&format!("cap {version}"));
    let window = f.open_window().await;
    let account = f
        .account_with(
            0,
            &[grant(&agent, vec![to], eth("1"), window, Address::ZERO)],
        )
        .await;

    // 0.6 lands; another 0.6 is over what is left (0.4).
    assert!(
        f.agent_intent(account, &agent, vec![Call::transfer(to, eth("0.6"))])
            .await
            .success
    );
    let over = vec![Call::transfer(to, eth("0.6"))];
    assert_eq!(
        f.precheck(account, &agent, &over, U256::ZERO).await,
        Err(RefusalCode::OverBudget)
    );
    // Within what is left, unless intents in flight already claim it.
    let fits = vec![Call::transfer(to, eth("0.3"))];
    assert_eq!(
        f.precheck(account, &agent, &fits, U256::ZERO).await,
        Ok(eth("0.3"))
    );
    assert_eq!(
        f.precheck(account, &agent, &fits, eth("0.3")).await,
        Err(RefusalCode::OverBudget)
    );

    let op = f.unchecked_signed_op(account, &agent, over).await;
    let err = bundler_refuses(&f.env, &op).await;
    assert_eq!(err.aa_code(), Some("AA23"), "{err}");
    assert_eq!(
        err.rejection().unwrap().revert.unwrap().name,
        "SpendCapExceeded"
    );
    let verdict = entry_point_refuses(&f.env, &op).await;
    assert_eq!(verdict.refusal_code(), Some(RefusalCode::OverBudget));

    // Several calls of one operation add up too.
    let op = f
        .unchecked_signed_op(
            account,
            &agent,
            vec![
                Call::transfer(to, eth("0.3")),
                Call::transfer(to, eth("0.3")),
            ],
        )
        .await;
    assert_eq!(
        entry_point_refuses(&f.env, &op).await.name,
        "SpendCapExceeded"
    );
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.6"));
    // What is left can still be spent exactly.
    assert!(
        f.agent_intent(account, &agent, vec![Call::transfer(to, eth("0.4"))])
            .await
            .success
    );
    assert_eq!(f.env.balance(to).await.unwrap(), eth("1"));
}

// ------------------------------------------------------------------ validity window

#[rstest]
#[case::v07(V07)]
#[case::v08(V08)]
#[tokio::test(flavor = "multi_thread")]
async fn expired_or_future_window_is_refused(#[case] version: EntryPointVersion) {
    let f = fixture(version).await;
    let expired = f.owner.create_agent(0, DAY).await.unwrap();
    let soon = f.owner.create_agent(1, DAY).await.unwrap();
    let future = f.owner.create_agent(2, DAY).await.unwrap();
    let to = address(&format!("window {version}"));
    let now = f.env.now().await.unwrap();
    let account = f
        .account_with(
            0,
            &[
                grant(&expired, vec![to], eth("1"), (0, now - 60), Address::ZERO),
                grant(&soon, vec![to], eth("1"), (0, now + 10), Address::ZERO),
                grant(&future, vec![to], eth("1"), (now + DAY, 0), Address::ZERO),
            ],
        )
        .await;
    let calls = vec![Call::transfer(to, eth("0.1"))];
    assert_eq!(
        f.precheck(account, &expired, &calls, U256::ZERO).await,
        Err(RefusalCode::SessionExpired)
    );
    // Ten seconds left is less than the bundlers' margin.
    assert_eq!(
        f.precheck(account, &soon, &calls, U256::ZERO).await,
        Err(RefusalCode::SessionExpired)
    );
    assert_eq!(
        f.precheck(account, &future, &calls, U256::ZERO).await,
        Err(RefusalCode::SessionNotYetValid)
    );

    for agent in [&expired, &future] {
        let op = f.unchecked_signed_op(account, agent, calls.clone()).await;
        let err = bundler_refuses(&f.env, &op).await;
        // Alto reports the EntryPoint's AA22 (other bundlers use ERC-7769's -32503).
        assert_eq!(err.aa_code(), Some("AA22"), "{err}");
        let verdict = entry_point_refuses(&f.env, &op).await;
        assert_eq!(
            verdict.entry_point_reason.as_deref(),
            Some("AA22 expired or not due"),
            "{verdict:?}"
        );
    }
    assert_eq!(f.env.balance(to).await.unwrap(), U256::ZERO);
}

// ------------------------------------------------------------------ operator revocation

#[rstest]
#[case::v07(V07)]
#[case::v08(V08)]
#[tokio::test(flavor = "multi_thread")]
async fn operator_revocation_kills_a_presigned_op(#[case] version: EntryPointVersion) {
    let f = fixture(version).await;
    let operator_address = kms_chain::operator::OperatorSigner::address(&f.operator);
    let agent = f.owner.create_agent(0, DAY).await.unwrap();
    let other_agent = f.owner.create_agent(1, DAY).await.unwrap();
    let to = address(&format!("revoke {version}"));
    let window = f.open_window().await;
    let account = f
        .account_with(
            0,
            &[
                grant(&agent, vec![to], eth("1"), window, operator_address),
                grant(&other_agent, vec![to], eth("1"), window, Address::ZERO),
            ],
        )
        .await;
    f.env.set_balance(operator_address, eth("1")).await.unwrap();

    // An operation the agent signed while its session was live.
    let calls = vec![Call::transfer(to, eth("0.1"))];
    let (_, presigned) = f
        .signed_agent_op(&f.env, account, &agent, calls.clone(), None)
        .await;

    let outcome = f
        .env
        .client
        .revoke_session(
            &f.operator,
            account,
            agent.address,
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap();
    let RevokeOutcome::Revoked { tx_hash, .. } = outcome else {
        panic!("{outcome:?}")
    };
    // Sent from the operator key, to the validator, calling revokeSession(account, key).
    let tx = alloy::providers::Provider::get_transaction_by_hash(f.env.client.provider(), tx_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tx.inner.signer(), operator_address);
    assert_eq!(
        alloy::consensus::Transaction::to(&tx),
        Some(f.env.client.validator())
    );
    let call = <SessionKeyValidator::revokeSessionCall as alloy::sol_types::SolCall>::abi_decode(
        alloy::consensus::Transaction::input(&tx),
    )
    .unwrap();
    assert_eq!((call.account, call.key), (account, agent.address));

    let snapshot = f
        .env
        .client
        .read_session(account, agent.address, &[])
        .await
        .unwrap();
    assert!(!snapshot.session.active);
    assert_eq!(
        f.precheck(account, &agent, &calls, U256::ZERO).await,
        Err(RefusalCode::SessionRevoked)
    );

    // The pre-signed operation is refused by the bundler and by the EntryPoint.
    let err = bundler_refuses(&f.env, &presigned).await;
    assert_eq!(err.aa_code(), Some("AA23"), "{err}");
    assert_eq!(
        err.rejection().unwrap().revert.unwrap().refusal_code(),
        Some(RefusalCode::SessionRevoked)
    );
    assert_eq!(
        entry_point_refuses(&f.env, &presigned).await.name,
        "SessionIsRevoked"
    );

    // Revoking again sends nothing; a session without the operator as revoker is refused
    // before anything is signed; the other agent is untouched.
    assert_eq!(
        f.env
            .client
            .revoke_session(
                &f.operator,
                account,
                agent.address,
                std::time::Duration::from_secs(30)
            )
            .await
            .unwrap(),
        RevokeOutcome::AlreadyRevoked
    );
    assert!(matches!(
        f.env
            .client
            .revoke_session(
                &f.operator,
                account,
                other_agent.address,
                std::time::Duration::from_secs(30)
            )
            .await,
        Err(ChainError::NotRevoker { .. })
    ));
    assert!(f.agent_intent(account, &other_agent, calls).await.success);
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.1"));
}

// ------------------------------------------------------------------ two agents in parallel

#[rstest]
#[case::v07(V07)]
#[case::v08(V08)]
#[tokio::test(flavor = "multi_thread")]
async fn two_agents_of_one_account_in_parallel_all_land(#[case] version: EntryPointVersion) {
    let f = fixture(version).await;
    let a0 = f.owner.create_agent(0, DAY).await.unwrap();
    let a1 = f.owner.create_agent(1, DAY).await.unwrap();
    let (to0, to1) = (
        address(&format!("parallel 0 {version}")),
        address(&format!("parallel 1 {version}")),
    );
    let window = f.open_window().await;
    // One owner operation grants both sessions (executeBatch).
    let account = f
        .account_with(
            0,
            &[
                grant(&a0, vec![to0], eth("1"), window, Address::ZERO),
                grant(&a1, vec![to1], eth("1"), window, Address::ZERO),
            ],
        )
        .await;

    const ROUNDS: u64 = 3;
    let run = |agent: Agent, to: Address| {
        let f = &f;
        async move {
            for _ in 0..ROUNDS {
                let r = f
                    .agent_intent(account, &agent, vec![Call::transfer(to, eth("0.01"))])
                    .await;
                assert!(r.success);
            }
        }
    };
    tokio::join!(run(a0.clone(), to0), run(a1.clone(), to1));

    assert_eq!(f.env.balance(to0).await.unwrap(), eth("0.03"));
    assert_eq!(f.env.balance(to1).await.unwrap(), eth("0.03"));
    for agent in [&a0, &a1] {
        let n = f
            .env
            .client
            .nonce(account, NonceKey::for_agent(agent.address))
            .await
            .unwrap();
        assert_eq!(
            NonceKey::split(n),
            (NonceKey::for_agent(agent.address), ROUNDS)
        );
    }
}

// ------------------------------------------------------------------ fees from the node

#[tokio::test(flavor = "multi_thread")]
async fn node_fees_cover_twice_the_base_fee() {
    let f = fixture(V07).await;
    let fees = f.env.client.node_fees().await.unwrap();
    let block = alloy::providers::Provider::get_block_by_number(
        f.env.client.provider(),
        alloy::rpc::types::BlockNumberOrTag::Latest,
    )
    .await
    .unwrap()
    .unwrap();
    // Read after the fees: twice the base fee then covers the base fee now (it moves by at most
    // 12.5 % a block, and anvil's nearly empty blocks lower it).
    let base = u128::from(block.header.base_fee_per_gas.unwrap());
    assert!(
        fees.max_fee_per_gas - fees.max_priority_fee_per_gas >= base,
        "{fees:?}, base {base}"
    );
    let (bundler_fees, source) = f.env.client.fees().await.unwrap();
    assert_eq!(
        source,
        kms_chain::client::FeeSource::Bundler,
        "Alto offers pimlico_getUserOperationGasPrice"
    );
    assert!(bundler_fees.max_fee_per_gas >= bundler_fees.max_priority_fee_per_gas);
}

// ------------------------------------------------------------------ bundler faults

/// A client of `version` whose bundler requests go through a fault-injecting proxy.
async fn through_proxy(
    version: EntryPointVersion,
    faults: &[(&str, Fault)],
) -> (Fixture, Proxy, ChainEnv) {
    let f = fixture(version).await;
    let proxy = Proxy::start(f.env.client.config().bundler_url.as_ref(), faults)
        .await
        .unwrap();
    let mut config = chain_config(&f.env.info, version);
    config.bundler_url = proxy.url().parse().unwrap();
    config.retry = RetryPolicy {
        attempts: 4,
        initial_backoff: std::time::Duration::from_millis(50),
        max_backoff: std::time::Duration::from_millis(400),
    };
    let env = ChainEnv {
        info: f.env.info.clone(),
        client: ChainClient::connect(config).await.unwrap(),
    };
    (f, proxy, env)
}

#[tokio::test(flavor = "multi_thread")]
async fn bundler_without_gas_price_method_falls_back_to_node_fees() {
    let (f, proxy, env) =
        through_proxy(V08, &[("pimlico_getUserOperationGasPrice", Fault::Hide)]).await;
    let agent = f.owner.create_agent(0, DAY).await.unwrap();
    let to = address("node fees");
    let window = f.open_window().await;
    let account = f
        .account_with(
            0,
            &[grant(&agent, vec![to], eth("1"), window, Address::ZERO)],
        )
        .await;

    let (fees, source) = env.client.fees().await.unwrap();
    assert_eq!(source, FeeSource::Node);
    let prepared = env
        .client
        .prepare_agent_op(
            account,
            agent.address,
            vec![Call::transfer(to, eth("0.1"))],
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        prepared.op.max_priority_fee_per_gas,
        fees.max_priority_fee_per_gas
    );
    let sig = agent
        .sign(&f.tee, prepared.user_op_hash, account)
        .await
        .unwrap();
    assert!(
        env.submit_and_wait(&prepared.signed(sig))
            .await
            .unwrap()
            .success
    );
    assert_eq!(env.balance(to).await.unwrap(), eth("0.1"));
    // Asked once, then remembered as missing.
    assert_eq!(proxy.seen_of("pimlico_getUserOperationGasPrice").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_bundler_answer_is_retried_with_the_identical_op_and_lands_once() {
    let (f, proxy, env) =
        through_proxy(V07, &[("eth_sendUserOperation", Fault::LoseAnswer(1))]).await;
    let agent = f.owner.create_agent(0, DAY).await.unwrap();
    let to = address("lost answer");
    let window = f.open_window().await;
    let account = f
        .account_with(
            0,
            &[grant(&agent, vec![to], eth("1"), window, Address::ZERO)],
        )
        .await;

    let (prepared, op) = f
        .signed_agent_op(
            &env,
            account,
            &agent,
            vec![Call::transfer(to, eth("0.1"))],
            None,
        )
        .await;
    let submission = env.client.submit(&op).await.unwrap();
    assert_eq!(submission.user_op_hash, prepared.user_op_hash);
    assert_eq!(submission.attempts, 2);
    assert!(
        submission.already_known,
        "the bundler had the first request"
    );
    let receipt = env
        .client
        .wait_for_receipt(
            &env.client
                .expected_receipt(&prepared.op, submission.user_op_hash),
            kms_e2e::chain::RECEIPT_TIMEOUT,
        )
        .await
        .unwrap();
    assert!(receipt.success);

    let sends = proxy.seen_of("eth_sendUserOperation");
    assert_eq!(sends.len(), 2);
    assert!(sends.iter().all(|s| s.forwarded));
    assert_eq!(
        sends[0].params, sends[1].params,
        "the identical operation both times"
    );
    // Moved once.
    assert_eq!(env.balance(to).await.unwrap(), eth("0.1"));
    let n = env
        .client
        .nonce(account, NonceKey::for_agent(agent.address))
        .await
        .unwrap();
    assert_eq!(NonceKey::split(n).1, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn unavailable_bundler_is_retried_with_backoff() {
    let (f, proxy, env) =
        through_proxy(V08, &[("eth_sendUserOperation", Fault::Unavailable(2))]).await;
    let agent = f.owner.create_agent(0, DAY).await.unwrap();
    let to = address("unavailable");
    let window = f.open_window().await;
    let account = f
        .account_with(
            0,
            &[grant(&agent, vec![to], eth("1"), window, Address::ZERO)],
        )
        .await;

    let (prepared, op) = f
        .signed_agent_op(
            &env,
            account,
            &agent,
            vec![Call::transfer(to, eth("0.1"))],
            None,
        )
        .await;
    let submission = env.client.submit(&op).await.unwrap();
    assert_eq!((submission.attempts, submission.already_known), (3, false));
    assert!(
        env.client
            .wait_for_receipt(
                &env.client
                    .expected_receipt(&prepared.op, submission.user_op_hash),
                kms_e2e::chain::RECEIPT_TIMEOUT,
            )
            .await
            .unwrap()
            .success
    );
    let sends = proxy.seen_of("eth_sendUserOperation");
    assert_eq!(
        sends.iter().map(|s| s.forwarded).collect::<Vec<_>>(),
        [false, false, true]
    );
    assert!(sends.iter().all(|s| s.params == sends[0].params));
    assert_eq!(env.balance(to).await.unwrap(), eth("0.1"));
}

// ------------------------------------------------------------------ one agent, back to back

#[rstest]
#[case::v07(V07)]
#[case::v08(V08)]
#[tokio::test(flavor = "multi_thread")]
async fn one_agent_back_to_back_gets_consecutive_nonces(#[case] version: EntryPointVersion) {
    let f = fixture(version).await;
    let agent = f.owner.create_agent(0, DAY).await.unwrap();
    let to = address(&format!("back to back {version}"));
    let window = f.open_window().await;
    let account = f
        .account_with(
            0,
            &[grant(&agent, vec![to], eth("1"), window, Address::ZERO)],
        )
        .await;
    let tracker = NonceTracker::new();
    let key = NonceKey::for_agent(agent.address);

    // Three intents of one agent, each submitted as soon as the call returns: the tracker makes
    // each wait for its predecessor's inclusion, so they take consecutive nonces.
    let mut hashes = Vec::new();
    for i in 0..3u64 {
        let mut guard = tracker.lock(account, key).await;
        let nonce = f
            .env
            .client
            .next_nonce(&mut guard, kms_e2e::chain::RECEIPT_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(NonceKey::split(nonce), (key, i));
        let (prepared, op) = f
            .signed_agent_op(
                &f.env,
                account,
                &agent,
                vec![Call::transfer(to, eth("0.01"))],
                Some(nonce),
            )
            .await;
        let sub = f.env.client.submit(&op).await.unwrap();
        guard.submitted(nonce, sub.user_op_hash);
        hashes.push(
            f.env
                .client
                .expected_receipt(&prepared.op, sub.user_op_hash),
        );
    }
    for h in hashes {
        let r = f
            .env
            .client
            .wait_for_receipt(&h, kms_e2e::chain::RECEIPT_TIMEOUT)
            .await
            .unwrap();
        assert!(r.success);
    }
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.03"));
    assert_eq!(
        NonceKey::split(f.env.client.nonce(account, key).await.unwrap()).1,
        3
    );
}
