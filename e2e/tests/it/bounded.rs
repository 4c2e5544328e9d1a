//! Sessions bound everything an agent can move, end to end: anvil + the canonical EntryPoints +
//! the project's contracts + Alto (one shared stack for this test binary), and per test a
//! companion (in-process, free port of 127.0.0.1) over its own `ta-sim` and SQLite file.
//!
//! - gas: every operation's maximum cost is charged to the session's gas cap, so an agent that
//!   signs (through `/kms/sign-agent`) an operation with absurd gas values and submits it itself
//!   — to the bundler or straight to `handleOps` with itself as beneficiary — drains nothing;
//! - ERC-20 caps: `transfer` / `approve` count against the token's cap, other functions need
//!   their selector listed (and are not counted);
//! - functions: a target's selector allow-list, plain-address targets take plain transfers only;
//! - usage limit (`maxOps`), the companion's gas pre-check (nothing signed nor recorded), the
//!   agent's own nonce lane, the one allowed paymaster, and the grant input the companion
//!   refuses before any ceremony.
//!
//! Each refusal is shown at the companion (403 with its code) and, for an operation signed past
//! the companion's pre-check, at the bundler and at the EntryPoint itself (`handleOps` as an
//! `eth_call`).

use crate::common::*;
use alloy::primitives::{Address, Bytes, FixedBytes, U256};
use alloy::sol_types::{SolCall, SolError};
use kms_chain::account::Call;
use kms_chain::client::NonceChoice;
use kms_chain::nonce::NonceKey;
use kms_chain::revert::DecodedRevert;
use kms_chain::session::{RefusalCode, SessionSnapshot};
use kms_chain::userop::v0_7::{GasLimits, UserOperation};
use kms_chain::userop::EntryPointVersion::{self, V07, V08};
use kms_contracts::{SessionKeyValidator, TestToken};
use kms_e2e::chain::FIXED_GAS;
use kms_e2e::companion::{AgentKey, DAY_SESSION_GAS_CAP};
use rstest::rstest;
use serde_json::{json, Value};

const GWEI: u128 = 1_000_000_000;

/// A session for the request body of `/kms/agent-sessions` (without keyId and salt): `targets`
/// as given, spend cap 1 ETH, gas cap [`DAY_SESSION_GAS_CAP`], valid in `window`.
fn session(targets: Value, window: (u64, u64)) -> Value {
    json!({
        "targets": targets,
        "spendCap": eth("1").to_string(),
        "gasCap": DAY_SESSION_GAS_CAP.to_string(),
        "validAfter": window.0,
        "validUntil": window.1,
    })
}

impl Fixture {
    /// Grants `agent` `session` on the owner's account `salt` through `/kms/agent-sessions`,
    /// funding the account with 10 ETH when it is not deployed yet; checks the answer and
    /// returns the account.
    async fn grant(&mut self, agent: &AgentKey, salt: u64, mut session: Value) -> Address {
        let predicted = self.account(salt).await;
        let deployed = self.env.client.has_code(predicted).await.unwrap();
        if !deployed {
            self.env.set_balance(predicted, eth("10")).await.unwrap();
        }
        session["salt"] = json!(salt.to_string());
        let body = self.grant_included(agent, session).await;
        assert_eq!(body["deploysAccount"], !deployed, "{body}");
        let account: Address = body["account"].as_str().unwrap().parse().unwrap();
        assert_eq!(account, predicted);
        account
    }

    /// The session of `agent` on `account`, with the permissions of `targets`.
    async fn on_chain(
        &self,
        account: Address,
        agent: &AgentKey,
        targets: &[Address],
    ) -> SessionSnapshot {
        self.env
            .client
            .read_session(account, agent.address, targets)
            .await
            .unwrap()
    }

    /// An operation of `agent` on `account` built exactly as given (nonce, gas, fees) and
    /// signed through `/kms/sign-agent`.
    async fn custom(
        &self,
        account: Address,
        agent: &AgentKey,
        nonce: NonceChoice,
        calls: Vec<Call>,
        gas: GasLimits,
        fees: Option<(u128, u128)>,
    ) -> UserOperation {
        let prepared = self
            .env
            .custom_agent_op(account, agent.address, nonce, calls, gas, fees)
            .await
            .unwrap();
        let sig = self.sign(agent, prepared.user_op_hash, account).await;
        prepared.signed(sig)
    }

    /// Expects the bundler and the EntryPoint (`handleOps` as an `eth_call`) to refuse `op` in
    /// the account's validation with the validator's error `name`, read as `code`; returns the
    /// bundler's decoded revert.
    async fn chain_refuses(
        &self,
        op: &UserOperation,
        name: &str,
        code: RefusalCode,
    ) -> DecodedRevert {
        let err = self.bundler_refuses(op).await;
        assert_eq!(err.aa_code(), Some("AA23"), "{err}");
        let revert = err
            .rejection()
            .and_then(|r| r.revert)
            .unwrap_or_else(|| panic!("no decoded revert in {err}"));
        assert_eq!(
            (revert.name.as_str(), revert.refusal_code()),
            (name, Some(code)),
            "{revert:?}"
        );
        match self.env.entry_point_verdict(op).await {
            Ok(()) => panic!("handleOps would accept the operation"),
            Err(None) => panic!("handleOps reverted without a decodable error"),
            Err(Some(d)) => {
                assert_eq!(
                    (d.name.as_str(), d.entry_point_reason.as_deref()),
                    (name, Some("AA23 reverted")),
                    "{d:?}"
                );
                assert_eq!(
                    d.data, revert.data,
                    "the same error, with the same arguments"
                );
            }
        }
        revert
    }

    /// Mints `amount` of the stack's `TestToken` to `to` (anyone may mint it).
    async fn mint(&self, to: Address, amount: u64) {
        self.env
            .mint_test_token(to, U256::from(amount))
            .await
            .unwrap();
    }

    async fn token_balance(&self, who: Address) -> U256 {
        self.env.test_token_balance(who).await.unwrap()
    }
}

fn transfer_data(to: Address, amount: u64) -> Bytes {
    TestToken::transferCall {
        to,
        value: U256::from(amount),
    }
    .abi_encode()
    .into()
}

fn approve_data(spender: Address, amount: u64) -> Bytes {
    TestToken::approveCall {
        spender,
        value: U256::from(amount),
    }
    .abi_encode()
    .into()
}

fn mint_data(to: Address, amount: u64) -> Bytes {
    TestToken::mintCall {
        to,
        amount: U256::from(amount),
    }
    .abi_encode()
    .into()
}

/// An intent of one call with data and no value.
fn data_call(to: Address, data: &Bytes) -> Value {
    json!([{"to": to, "data": data}])
}

fn selector(data: &Bytes) -> FixedBytes<4> {
    FixedBytes::from_slice(&data[..4])
}

fn addr(v: &Value) -> Address {
    v.as_str()
        .unwrap_or_else(|| panic!("not an address: {v}"))
        .parse()
        .unwrap()
}

// ------------------------------------------------------------------ the gas drain

/// The attack the gas cap closes: an agent with a 0.01 ETH spend cap signs, through
/// `/kms/sign-agent`, a do-nothing `execute(allowedTarget, 0, "")` with preVerificationGas =
/// 8,000,000 and 1000 gwei fees — an 8.6 ETH prefund — and submits it itself.
#[rstest]
#[case::v07(V07)]
#[case::v08(V08)]
#[tokio::test(flavor = "multi_thread")]
async fn gas_drain_through_sign_agent_is_bounded(#[case] version: EntryPointVersion) {
    let mut f = fixture(version).await;
    let agent = f.agent("drain").await;
    let to = address(&format!("drain target {version}"));
    let window = f.open_window().await;
    let gas_cap = eth("0.005");
    let mut s = session(json!([to]), window);
    s["spendCap"] = json!(eth("0.01").to_string());
    s["gasCap"] = json!(gas_cap.to_string());
    let account = f.grant(&agent, 0, s).await;
    let lane = NonceKey::for_agent(agent.address);

    let call = vec![Call::transfer(to, U256::ZERO)];
    let drain_gas = GasLimits {
        pre_verification_gas: U256::from(8_000_000),
        ..FIXED_GAS
    };
    let fee = 1000 * GWEI;
    let drain = f
        .custom(
            account,
            &agent,
            NonceChoice::Next(lane),
            call.clone(),
            drain_gas,
            Some((fee, fee)),
        )
        .await;
    let max_cost = drain.max_gas_cost();
    assert_eq!(max_cost, U256::from(8_600_000u128 * fee));
    let balance = f.env.balance(account).await.unwrap();
    let deposit = f.env.deposit(account).await.unwrap();
    assert!(
        balance + deposit > max_cost,
        "the account could pay the prefund: the session is the only bound"
    );

    // (a) To the bundler: refused in validation, over the gas budget.
    let revert = f
        .chain_refuses(&drain, "GasBudgetExceeded", RefusalCode::GasOverBudget)
        .await;
    let args = SessionKeyValidator::GasBudgetExceeded::abi_decode(&revert.data).unwrap();
    assert_eq!((args.maxCost, args.remaining), (max_cost, gas_cap));

    // (b) Straight to the EntryPoint from a funded EOA standing for the agent, itself the
    // beneficiary: the transaction reverts and the attacker only pays for it.
    let attacker = f.env.funded_signer(eth("1")).await.unwrap();
    let attacker_before = f.env.balance(attacker.address()).await.unwrap();
    let receipt = f
        .env
        .handle_ops_from(
            &attacker,
            std::slice::from_ref(&drain),
            attacker.address(),
            3_000_000,
        )
        .await
        .unwrap();
    assert!(!receipt.status(), "handleOps must revert: {receipt:?}");
    let paid = U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price);
    assert_eq!(
        f.env.balance(attacker.address()).await.unwrap(),
        attacker_before - paid,
        "the beneficiary got nothing"
    );
    assert_eq!(f.env.balance(account).await.unwrap(), balance);
    assert_eq!(f.env.deposit(account).await.unwrap(), deposit);
    let snapshot = f.on_chain(account, &agent, &[to]).await;
    assert_eq!(
        (snapshot.session.gas_spent, snapshot.session.ops_used),
        (0, 0)
    );
    assert_eq!(
        f.env.client.nonce(account, lane).await.unwrap(),
        drain.nonce
    );

    // Within the budget, the same agent's operation lands and is charged its maximum cost.
    let fair = f.presigned(account, &agent, call).await;
    assert_eq!(fair.nonce, drain.nonce);
    let cost = fair.max_gas_cost();
    assert!(
        cost <= gas_cap,
        "fees too high on this chain for the test's gas cap: {cost}"
    );
    let landed = f.env.submit_and_wait(&fair).await.unwrap();
    let snapshot = f.on_chain(account, &agent, &[to]).await;
    assert_eq!(U256::from(snapshot.session.gas_spent), cost);
    assert_eq!(snapshot.session.ops_used, 1);
    assert!(
        landed.actual_gas_cost <= cost,
        "{} > {cost}",
        landed.actual_gas_cost
    );
    // The account paid exactly the actual cost (the unused prefund stays in its deposit).
    let after = f.env.balance(account).await.unwrap() + f.env.deposit(account).await.unwrap();
    assert_eq!(balance + deposit - after, landed.actual_gas_cost);
    // The drain, re-signed for the next nonce, is refused against what is left.
    let again = f
        .custom(
            account,
            &agent,
            NonceChoice::Next(lane),
            vec![Call::transfer(to, U256::ZERO)],
            drain_gas,
            Some((fee, fee)),
        )
        .await;
    let revert = f
        .chain_refuses(&again, "GasBudgetExceeded", RefusalCode::GasOverBudget)
        .await;
    let args = SessionKeyValidator::GasBudgetExceeded::abi_decode(&revert.data).unwrap();
    assert_eq!(args.remaining, gas_cap - cost);
}

// ------------------------------------------------------------------ ERC-20 caps

#[tokio::test(flavor = "multi_thread")]
async fn token_cap_bounds_transfers_and_approvals() {
    let mut f = fixture(V07).await;
    let token = f.env.info.test_token;
    let agent = f.agent("tokens").await;
    let recipient = address("token recipient");
    let spender = address("token spender");
    let window = f.open_window().await;
    let mut s = session(json!([]), window);
    s["tokens"] = json!([{"token": token, "cap": "1000"}]);
    let account = f.grant(&agent, 0, s).await;
    f.mint(account, 5000).await;
    let permission = |s: &SessionSnapshot| s.permissions[&token];

    // Within the cap: lands and is counted.
    f.lands(&agent, data_call(token, &transfer_data(recipient, 600)))
        .await;
    assert_eq!(f.token_balance(recipient).await, U256::from(600));
    assert_eq!(f.token_balance(account).await, U256::from(4400));
    let p = permission(&f.on_chain(account, &agent, &[token]).await);
    assert!(p.allowed && p.is_token && !p.any_selector, "{p:?}");
    assert_eq!((p.token_cap, p.token_spent), (1000, 600));

    // Past the cap: the companion refuses and says what remains.
    let body = f
        .refused(
            &agent,
            data_call(token, &transfer_data(recipient, 401)),
            RefusalCode::TokenOverBudget,
        )
        .await;
    let d = &body["details"];
    assert_eq!(addr(&d["token"]), token, "{body}");
    assert_eq!(
        (
            d["requested"].as_str(),
            d["available"].as_str(),
            d["remainingTokenBudget"].as_str(),
            d["inFlight"].as_str()
        ),
        (Some("401"), Some("400"), Some("400"), Some("0")),
        "{body}"
    );
    // Signed past the companion, the chain refuses it.
    let over = f
        .presigned(
            account,
            &agent,
            vec![Call::new(token, U256::ZERO, transfer_data(recipient, 401))],
        )
        .await;
    let revert = f
        .chain_refuses(&over, "TokenCapExceeded", RefusalCode::TokenOverBudget)
        .await;
    let args = SessionKeyValidator::TokenCapExceeded::abi_decode(&revert.data).unwrap();
    assert_eq!(
        (args.token, args.requested, args.remaining),
        (token, U256::from(401), U256::from(400))
    );
    assert_eq!(f.token_balance(recipient).await, U256::from(600));

    // An approval counts like a transfer: over the remainder, refused; within it, counted.
    let body = f
        .refused(
            &agent,
            data_call(token, &approve_data(spender, 401)),
            RefusalCode::TokenOverBudget,
        )
        .await;
    assert_eq!(body["details"]["available"], "400", "{body}");
    f.lands(&agent, data_call(token, &approve_data(spender, 400)))
        .await;
    let allowance = TestToken::new(token, f.env.client.provider())
        .allowance(account, spender)
        .call()
        .await
        .unwrap();
    assert_eq!(allowance, U256::from(400));
    assert_eq!(
        permission(&f.on_chain(account, &agent, &[token]).await).token_spent,
        1000
    );
    let body = f
        .refused(
            &agent,
            data_call(token, &transfer_data(recipient, 1)),
            RefusalCode::TokenOverBudget,
        )
        .await;
    assert_eq!(body["details"]["available"], "0", "{body}");

    // Another function of the token is not allowed by the cap alone.
    let mint = mint_data(account, 5);
    let body = f
        .refused(
            &agent,
            data_call(token, &mint),
            RefusalCode::SelectorNotAllowed,
        )
        .await;
    assert_eq!(addr(&body["details"]["target"]), token, "{body}");
    assert_eq!(body["details"]["selector"], "0x40c10f19", "{body}");
    let op = f
        .presigned(
            account,
            &agent,
            vec![Call::new(token, U256::ZERO, mint.clone())],
        )
        .await;
    f.chain_refuses(&op, "SelectorNotAllowed", RefusalCode::SelectorNotAllowed)
        .await;

    // Granted again with `mint` listed: a new grant, its counters from zero; `mint` is allowed
    // and, not moving the account's tokens, not counted; transfers still are.
    let mut s = session(
        json!([{"target": token, "selectors": ["mint(address,uint256)"]}]),
        window,
    );
    s["tokens"] = json!([{"token": token, "cap": "1000"}]);
    assert_eq!(f.grant(&agent, 0, s).await, account);
    let snapshot = f
        .env
        .client
        .read_session_for_calls(
            account,
            agent.address,
            &[Call::new(token, U256::ZERO, mint.clone())],
            f.env.now().await.unwrap(),
        )
        .await
        .unwrap();
    assert!(snapshot
        .listed_selectors
        .contains(&(token, selector(&mint))));
    assert_eq!(permission(&snapshot).token_spent, 0);
    let held = f.token_balance(account).await;
    f.lands(&agent, data_call(token, &mint)).await;
    assert_eq!(f.token_balance(account).await, held + U256::from(5));
    assert_eq!(
        permission(&f.on_chain(account, &agent, &[token]).await).token_spent,
        0,
        "a listed function is not counted"
    );
    f.lands(&agent, data_call(token, &transfer_data(recipient, 10)))
        .await;
    assert_eq!(
        permission(&f.on_chain(account, &agent, &[token]).await).token_spent,
        10
    );
    assert_eq!(f.token_balance(recipient).await, U256::from(610));
}

// ------------------------------------------------------------------ functions

#[tokio::test(flavor = "multi_thread")]
async fn selectors_bound_the_functions_an_agent_calls() {
    let mut f = fixture(V07).await;
    // TestToken as a plain contract here (no cap): its `mint` is the one function granted.
    let dapp = f.env.info.test_token;
    let agent = f.agent("functions").await;
    let payee = address("functions payee");
    let window = f.open_window().await;
    let account = f
        .grant(
            &agent,
            0,
            session(
                json!([{"target": dapp, "selectors": ["mint(address,uint256)"]}, payee]),
                window,
            ),
        )
        .await;
    let p = f
        .on_chain(account, &agent, &[dapp, payee])
        .await
        .permissions;
    assert!(p[&dapp].allowed && !p[&dapp].is_token && !p[&dapp].any_selector);
    assert!(p[&payee].allowed);

    // The listed function lands.
    f.lands(&agent, data_call(dapp, &mint_data(payee, 7))).await;
    assert_eq!(f.token_balance(payee).await, U256::from(7));

    // Another function of the same target: refused by the companion and by the chain.
    let approve = approve_data(payee, 1);
    let body = f
        .refused(
            &agent,
            data_call(dapp, &approve),
            RefusalCode::SelectorNotAllowed,
        )
        .await;
    assert_eq!(addr(&body["details"]["target"]), dapp, "{body}");
    assert_eq!(body["details"]["selector"], "0x095ea7b3", "{body}");
    let op = f
        .presigned(
            account,
            &agent,
            vec![Call::new(dapp, U256::ZERO, approve.clone())],
        )
        .await;
    let revert = f
        .chain_refuses(&op, "SelectorNotAllowed", RefusalCode::SelectorNotAllowed)
        .await;
    let args = SessionKeyValidator::SelectorNotAllowed::abi_decode(&revert.data).unwrap();
    assert_eq!((args.target, args.selector), (dapp, selector(&approve)));

    // A plain-address target takes plain transfers, and no call data.
    f.lands(&agent, transfer(payee, "0.01")).await;
    assert_eq!(f.env.balance(payee).await.unwrap(), eth("0.01"));
    let junk = Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]);
    let body = f
        .refused(
            &agent,
            data_call(payee, &junk),
            RefusalCode::SelectorNotAllowed,
        )
        .await;
    assert_eq!(body["details"]["selector"], "0xdeadbeef", "{body}");
    let op = f
        .presigned(account, &agent, vec![Call::new(payee, U256::ZERO, junk)])
        .await;
    f.chain_refuses(&op, "SelectorNotAllowed", RefusalCode::SelectorNotAllowed)
        .await;

    // `anySelector` opens every function of its target.
    let open = f.agent("any selector").await;
    f.grant(
        &open,
        0,
        session(json!([{"target": dapp, "anySelector": true}]), window),
    )
    .await;
    f.lands(&open, data_call(dapp, &approve)).await;
    let allowance = TestToken::new(dapp, f.env.client.provider())
        .allowance(account, payee)
        .call()
        .await
        .unwrap();
    assert_eq!(allowance, U256::from(1));
}

// ------------------------------------------------------------------ usage limit

#[tokio::test(flavor = "multi_thread")]
async fn usage_limit_stops_the_third_operation() {
    let mut f = fixture(V07).await;
    let agent = f.agent("usage").await;
    let to = address("usage");
    let window = f.open_window().await;
    let mut s = session(json!([to]), window);
    s["maxOps"] = json!(2);
    let account = f.grant(&agent, 0, s).await;

    f.lands(&agent, transfer(to, "0.01")).await;
    f.lands(&agent, transfer(to, "0.01")).await;
    let snapshot = f.on_chain(account, &agent, &[to]).await;
    assert_eq!(
        (snapshot.session.max_ops, snapshot.session.ops_used),
        (2, 2)
    );
    let body = f
        .refused(&agent, transfer(to, "0.01"), RefusalCode::UsageExhausted)
        .await;
    assert_eq!(
        body["details"],
        json!({"maxOps": 2, "used": 2, "inFlight": 0, "remaining": 0}),
        "{body}"
    );
    // Signed past the companion, the chain refuses it.
    let op = f
        .presigned(account, &agent, vec![Call::transfer(to, eth("0.01"))])
        .await;
    let revert = f
        .chain_refuses(&op, "UsageLimitReached", RefusalCode::UsageExhausted)
        .await;
    let args = SessionKeyValidator::UsageLimitReached::abi_decode(&revert.data).unwrap();
    assert_eq!(args.maxOps, 2);
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.02"));
}

// ------------------------------------------------------------------ gas pre-check

/// A gas cap (wei) that passes the bundler's estimate but not one operation's maximum cost at
/// the chain's fees. Alto's estimate simulates validation at maxFeePerGas = 1 wei with its own
/// gas limits (about 2·10^7 gas, so the validator charges about 2·10^7 wei); a real operation
/// costs some 10^5 gas at about a gwei, some 10^14 wei.
const GAS_CAP_BELOW_ONE_OP: u64 = 1_000_000_000_000;

#[tokio::test(flavor = "multi_thread")]
async fn gas_cap_below_one_operation_is_refused_before_signing() {
    let mut f = fixture(V07).await;
    let to = address("gas precheck");
    let window = f.open_window().await;
    let agent = f.agent("gas precheck").await;
    let mut s = session(json!([to]), window);
    s["gasCap"] = json!(GAS_CAP_BELOW_ONE_OP.to_string());
    let account = f.grant(&agent, 0, s).await;
    // A session whose gas cap is below even what the bundler's estimate charges.
    let tiny = f.agent("gas precheck tiny").await;
    let mut s = session(json!([to]), window);
    s["gasCap"] = json!("1000");
    assert_eq!(f.grant(&tiny, 0, s).await, account);
    let signatures_before = f.c.server().state.metrics.signatures("agent_intent");

    // The companion's own rule, once the gas is estimated: refused with what it would cost and
    // what is available.
    let body = f
        .refused(&agent, transfer(to, "0.01"), RefusalCode::GasOverBudget)
        .await;
    let d = &body["details"];
    let max_cost: U256 = d["maxGasCost"]
        .as_str()
        .unwrap_or_else(|| panic!("no maxGasCost: {body}"))
        .parse()
        .unwrap();
    assert!(max_cost > U256::from(GAS_CAP_BELOW_ONE_OP), "{body}");
    let cap = GAS_CAP_BELOW_ONE_OP.to_string();
    assert_eq!(
        (
            d["available"].as_str(),
            d["remainingGasBudget"].as_str(),
            d["inFlight"].as_str()
        ),
        (Some(cap.as_str()), Some(cap.as_str()), Some("0")),
        "{body}"
    );
    // Below even the estimate's charge, the estimate itself fails in validation: refused with
    // the same code and what is available (the real maximum cost is unknown without an
    // estimate).
    let body = f
        .refused(&tiny, transfer(to, "0.01"), RefusalCode::GasOverBudget)
        .await;
    let d = &body["details"];
    assert!(d["maxGasCost"].is_null(), "{body}");
    assert_eq!(
        (d["available"].as_str(), d["remainingGasBudget"].as_str()),
        (Some("1000"), Some("1000")),
        "{body}"
    );

    // Nothing was signed, recorded or submitted.
    assert_eq!(
        f.c.server().state.metrics.signatures("agent_intent"),
        signatures_before
    );
    for agent in [&agent, &tiny] {
        let (status, list) =
            f.c.post("/kms/list-agent-intents", &json!({"keyId": agent.key_id}))
                .await
                .unwrap();
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["intents"], json!([]), "{list}");
        let lane = NonceKey::for_agent(agent.address);
        assert_eq!(
            f.env.client.nonce(account, lane).await.unwrap(),
            lane.nonce(0)
        );
        let snapshot = f.on_chain(account, agent, &[to]).await;
        assert_eq!(
            (snapshot.session.gas_spent, snapshot.session.ops_used),
            (0, 0)
        );
    }
    assert_eq!(f.env.balance(to).await.unwrap(), U256::ZERO);
}

// ------------------------------------------------------------------ quote ceilings

/// Quotes over the companion's gas and fee ceilings are refused before anything is signed, for
/// the owner's grant and for an agent's operation alike (a hostile bundler quoting a huge
/// preVerificationGas would otherwise be paid from the session's gas budget or the owner's ETH).
#[tokio::test(flavor = "multi_thread")]
async fn quotes_over_the_ceilings_are_refused_before_signing() {
    // Alto quotes some 10^5 preVerificationGas for an operation deploying the account.
    let mut f = fixture_with(V07, &["--max-pre-verification-gas", "1000"]).await;
    let to = address("ceilings");
    let window = f.open_window().await;
    let agent = f.agent("ceilings").await;
    let account = f.account(0).await;
    f.env.set_balance(account, eth("10")).await.unwrap();
    let mut s = session(json!([to]), window);
    s["salt"] = json!("0");
    // The grant's operation is built when its ceremony begins: refused there, so the owner is
    // never asked to approve it.
    let (status, body) =
        f.c.post(
            "/BeginAuthentication",
            &json!({"KeyId": agent.key_id, "Purpose": "GrantSession", "Payload": s}),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("gas_above_ceiling")),
        "{body}"
    );
    assert_eq!(body["details"]["field"], "preVerificationGas", "{body}");
    assert_eq!(body["details"]["ceiling"], "1000", "{body}");
    let quoted: u64 = body["details"]["value"].as_str().unwrap().parse().unwrap();
    assert!(quoted > 1000, "{body}");
    assert!(!f.env.client.has_code(account).await.unwrap());

    // An agent's operation built by the same code on the same real quotes: a maxFeePerGas
    // ceiling below the chain's fees refuses it (the companion's intents go through `prepare`).
    let mut f = fixture(V07).await;
    let agent = f.agent("ceilings agent").await;
    let account = f.grant(&agent, 0, session(json!([to]), window)).await;
    let mut config = kms_e2e::chain::chain_config(&f.env.info, V07);
    config.ceilings = kms_chain::client::GasCeilings {
        max_fee_per_gas: 1,
        ..kms_chain::client::GasCeilings::default()
    };
    let strict = kms_chain::client::ChainClient::connect(config)
        .await
        .unwrap();
    let err = strict
        .prepare_agent_op(
            account,
            agent.address,
            vec![Call::transfer(to, eth("0.01"))],
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            kms_chain::client::ChainError::AboveCeiling {
                ceiling: kms_chain::client::Ceiling::MaxFeePerGas,
                ..
            }
        ),
        "{err}"
    );
    // With the default ceilings the same intent lands.
    f.lands(&agent, transfer(to, "0.01")).await;
}

// ------------------------------------------------------------------ nonce lanes

#[tokio::test(flavor = "multi_thread")]
async fn agent_ops_outside_their_own_lane_are_refused() {
    let mut f = fixture(V07).await;
    let a = f.agent("lane a").await;
    let b = f.agent("lane b").await;
    let to = address("lanes");
    let window = f.open_window().await;
    let account = f.grant(&a, 0, session(json!([to]), window)).await;
    assert_eq!(f.grant(&b, 0, session(json!([to]), window)).await, account);
    let owner_nonce = f.env.client.nonce(account, NonceKey::OWNER).await.unwrap();
    assert_eq!(owner_nonce, NonceKey::OWNER.nonce(2), "two grants");
    let lane_a = NonceKey::for_agent(a.address);
    let lane_b = NonceKey::for_agent(b.address);

    // Agent A signs operations in the owner's lane and in agent B's lane: both refused.
    for (lane, whose) in [(NonceKey::OWNER, "the owner's"), (lane_b, "agent B's")] {
        let op = f
            .custom(
                account,
                &a,
                NonceChoice::Next(lane),
                vec![Call::transfer(to, eth("0.01"))],
                FIXED_GAS,
                None,
            )
            .await;
        let revert = f
            .chain_refuses(&op, "NonceLaneNotAllowed", RefusalCode::LaneNotAllowed)
            .await;
        let args = SessionKeyValidator::NonceLaneNotAllowed::abi_decode(&revert.data).unwrap();
        assert_eq!(
            (args.nonceKey, args.expected),
            (lane.0, lane_a.0),
            "{whose} lane"
        );
    }
    assert_eq!(f.env.balance(to).await.unwrap(), U256::ZERO);
    assert_eq!(
        f.env.client.nonce(account, NonceKey::OWNER).await.unwrap(),
        owner_nonce
    );
    assert_eq!(
        f.env.client.nonce(account, lane_b).await.unwrap(),
        lane_b.nonce(0)
    );

    // The owner's next operation (a new grant) uses its nonce, unharmed.
    f.grant(&a, 0, session(json!([to]), window)).await;
    assert_eq!(
        f.env.client.nonce(account, NonceKey::OWNER).await.unwrap(),
        NonceKey::OWNER.nonce(3)
    );
    // Each agent still works in its own lane.
    f.lands(&b, transfer(to, "0.01")).await;
    f.lands(&a, transfer(to, "0.01")).await;
    assert_eq!(
        f.env.client.nonce(account, lane_b).await.unwrap(),
        lane_b.nonce(1)
    );
    assert_eq!(
        f.env.client.nonce(account, lane_a).await.unwrap(),
        lane_a.nonce(1)
    );
    assert_eq!(f.env.balance(to).await.unwrap(), eth("0.02"));
}

// ------------------------------------------------------------------ grant input

#[tokio::test(flavor = "multi_thread")]
async fn invalid_grants_are_refused_before_anything_is_sent() {
    let mut f = fixture(V07).await;
    let agent = f.agent("grant input").await;
    let token = f.env.info.test_token;
    let eoa = address("grant input eoa");
    let other = address("grant input other");
    let window = f.open_window().await;
    let account = f.account(0).await;
    f.env.set_balance(account, eth("10")).await.unwrap();
    let mint = "mint(address,uint256)";

    let begin = |payload: Value| {
        let c = &f.c;
        let key_id = agent.key_id.clone();
        async move {
            c.post(
                "/BeginAuthentication",
                &json!({"KeyId": key_id, "Purpose": "GrantSession", "Payload": payload}),
            )
            .await
            .unwrap()
        }
    };
    let with = |targets: Value, extra: Value| {
        let mut s = session(targets, window);
        for (k, v) in extra.as_object().unwrap() {
            s[k] = v.clone();
        }
        s
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "selectors on an address without code",
            with(json!([{"target": eoa, "selectors": [mint]}]), json!({})),
            "has no code",
        ),
        (
            "a token without code",
            with(json!([]), json!({"tokens": [{"token": eoa, "cap": "1"}]})),
            "has no code",
        ),
        (
            "a zero token cap",
            with(json!([]), json!({"tokens": [{"token": token, "cap": "0"}]})),
            "zero cap",
        ),
        (
            "a duplicate target",
            with(json!([other, other]), json!({})),
            "listed twice",
        ),
        (
            "a duplicate token",
            with(
                json!([]),
                json!({"tokens": [{"token": token, "cap": "1"}, {"token": token, "cap": "2"}]}),
            ),
            "listed twice",
        ),
        (
            "a duplicate selector",
            with(
                json!([{"target": token, "selectors": [mint, "0x40c10f19"]}]),
                json!({}),
            ),
            "listed twice",
        ),
        (
            "a zero paymaster",
            with(json!([other]), json!({"paymaster": Address::ZERO})),
            "paymaster",
        ),
        (
            "anySelector with selectors",
            with(
                json!([{"target": token, "anySelector": true, "selectors": [mint]}]),
                json!({}),
            ),
            "anySelector",
        ),
        (
            "anySelector on a capped token",
            with(
                json!([{"target": token, "anySelector": true}]),
                json!({"tokens": [{"token": token, "cap": "1"}]}),
            ),
            "anySelector",
        ),
        (
            "the account as a target",
            with(json!([account]), json!({})),
            "cannot be a session target",
        ),
        (
            "the validator as a target",
            with(json!([f.env.info.session_key_validator]), json!({})),
            "cannot be a session target",
        ),
        (
            "an EntryPoint as a token",
            with(
                json!([]),
                json!({"tokens": [{"token": f.env.client.entry_point().address, "cap": "1"}]}),
            ),
            "cannot be a session target",
        ),
    ];
    for (what, payload, message) in cases {
        let (status, body) = begin(payload).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (422, Some("invalid_session")),
            "{what}: {body}"
        );
        assert!(
            body["error"].as_str().unwrap().contains(message),
            "{what}: {body}"
        );
    }

    // Without gasCap: refused as a malformed request naming the field, at the ceremony's start
    // and at /kms/agent-sessions.
    let mut no_gas_cap = session(json!([other]), window);
    no_gas_cap.as_object_mut().unwrap().remove("gasCap");
    let (status, body) = begin(no_gas_cap.clone()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    assert!(body["error"].as_str().unwrap().contains("gasCap"), "{body}");
    no_gas_cap["keyId"] = json!(agent.key_id);
    let (status, body) = f.c.post("/kms/agent-sessions", &no_gas_cap).await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    assert!(body["error"].as_str().unwrap().contains("gasCap"), "{body}");

    // Nothing reached the chain.
    assert!(!f.env.client.has_code(account).await.unwrap());
    assert_eq!(
        f.env.client.nonce(account, NonceKey::OWNER).await.unwrap(),
        U256::ZERO
    );
    assert_eq!(f.env.balance(account).await.unwrap(), eth("10"));

    // Everything at once, well formed, is granted as asked.
    let paymaster = address("grant input paymaster");
    let full = with(
        json!([other, {"target": token, "selectors": [mint]}]),
        json!({
            "tokens": [{"token": token, "cap": "500"}],
            "gasCap": "12345678900000000",
            "paymaster": paymaster,
            "maxOps": 7,
        }),
    );
    assert_eq!(f.grant(&agent, 0, full).await, account);
    let snapshot = f
        .env
        .client
        .read_session_for_calls(
            account,
            agent.address,
            &[
                Call::transfer(other, U256::ZERO),
                Call::new(token, U256::ZERO, mint_data(other, 1)),
            ],
            f.env.now().await.unwrap(),
        )
        .await
        .unwrap();
    let s = snapshot.session;
    assert_eq!(
        (s.gas_cap, s.paymaster, s.max_ops, s.spend_cap),
        (12_345_678_900_000_000, paymaster, 7, eth("1").to::<u128>())
    );
    assert!(snapshot.permissions[&other].allowed);
    let p = snapshot.permissions[&token];
    assert!(p.allowed && p.is_token && !p.any_selector, "{p:?}");
    assert_eq!(p.token_cap, 500);
    assert!(snapshot
        .listed_selectors
        .contains(&(token, FixedBytes([0x40, 0xc1, 0x0f, 0x19]))));

    // An operation naming another paymaster than the granted one is refused by the chain.
    let mut prepared = f
        .env
        .custom_agent_op(
            account,
            agent.address,
            NonceChoice::Next(NonceKey::for_agent(agent.address)),
            vec![Call::transfer(other, U256::ZERO)],
            FIXED_GAS,
            None,
        )
        .await
        .unwrap();
    // A contract (the bundler refuses a paymaster without code before simulating).
    let stranger = f.env.info.account_factory_v07;
    prepared.op = prepared
        .op
        .with_paymaster(stranger, 100_000, 0, Bytes::new());
    prepared.user_op_hash = f
        .env
        .client
        .entry_point()
        .user_op_hash(&prepared.op, f.env.client.chain_id())
        .unwrap();
    let sig = f.sign(&agent, prepared.user_op_hash, account).await;
    let op = prepared.signed(sig);
    let revert = f
        .chain_refuses(&op, "PaymasterNotAllowed", RefusalCode::PaymasterNotAllowed)
        .await;
    let args = SessionKeyValidator::PaymasterNotAllowed::abi_decode(&revert.data).unwrap();
    assert_eq!(args.paymaster, stranger);
}
