//! The TA's entry hardening, through its byte protocol: the operator transaction's ceilings and
//! spend budget, and the bound of the passkey nonce table (4096 wallets).

mod common;

use alloy_consensus::Transaction as _;
use alloy_eips::eip2718::Decodable2718;
use common::*;
use kms_proto::authz::{self, AuthorizedBody};
use kms_proto::operator::{
    OperatorLimit, MAX_FEE_PER_GAS, MAX_GAS_LIMIT, SPEND_BUDGET_WEI, SPEND_WINDOW_SECS,
};
use kms_proto::*;
use kms_ta::{MAX_NONCES_PER_WALLET, MAX_PENDING_NONCES, NONCE_TABLE_MAX_BYTES};

// ------------------------------------------------------------ operator transactions

fn revoke(gas_limit: u64, max_fee: u128, priority: u128, nonce: u64) -> OperatorSignRevokeSession {
    OperatorSignRevokeSession {
        chain_id: 1,
        nonce,
        max_priority_fee_per_gas: priority,
        max_fee_per_gas: max_fee,
        gas_limit,
        validator: [0x33; 20],
        account: [0x44; 20],
        agent_key: [0x55; 20],
    }
}

fn with_operator() -> Harness {
    let mut h = Harness::new();
    h.call(&OperatorKey {
        create_if_missing: true,
    })
    .unwrap();
    h
}

fn refusal<T: std::fmt::Debug>(r: Result<T, TaError>) -> OperatorLimit {
    match r {
        Err(TaError::OperatorTxRefused(l)) => l,
        other => panic!("expected an operator-limit refusal, got {other:?}"),
    }
}

/// Most transactions at the ceilings that one full budget pays for.
const AT_CEILINGS: u128 = MAX_GAS_LIMIT as u128 * MAX_FEE_PER_GAS;

#[test]
fn operator_tx_at_the_ceilings_is_signed() {
    let mut h = with_operator();
    let tx = h
        .call(&revoke(MAX_GAS_LIMIT, MAX_FEE_PER_GAS, MAX_FEE_PER_GAS, 7))
        .unwrap();
    let env = alloy_consensus::TxEnvelope::decode_2718(&mut tx.raw.as_slice()).unwrap();
    assert_eq!(env.gas_limit(), MAX_GAS_LIMIT);
    assert_eq!(env.max_fee_per_gas(), MAX_FEE_PER_GAS);
    assert_eq!(env.max_priority_fee_per_gas(), Some(MAX_FEE_PER_GAS));
    assert_eq!(env.nonce(), 7);
}

#[test]
fn operator_tx_above_the_gas_ceiling_is_refused() {
    let mut h = with_operator();
    assert_eq!(
        refusal(h.call(&revoke(MAX_GAS_LIMIT + 1, 1, 1, 0))),
        OperatorLimit::GasLimit {
            requested: MAX_GAS_LIMIT + 1,
            max: MAX_GAS_LIMIT
        }
    );
    assert_eq!(
        refusal(h.call(&revoke(u64::MAX, 1, 1, 0))),
        OperatorLimit::GasLimit {
            requested: u64::MAX,
            max: MAX_GAS_LIMIT
        }
    );
}

#[test]
fn operator_tx_above_the_fee_ceiling_is_refused() {
    let mut h = with_operator();
    assert_eq!(
        refusal(h.call(&revoke(50_000, MAX_FEE_PER_GAS + 1, 0, 0))),
        OperatorLimit::MaxFeePerGas {
            requested: MAX_FEE_PER_GAS + 1,
            max: MAX_FEE_PER_GAS
        }
    );
    assert_eq!(
        refusal(h.call(&revoke(50_000, u128::MAX, u128::MAX, 0))),
        OperatorLimit::MaxFeePerGas {
            requested: u128::MAX,
            max: MAX_FEE_PER_GAS
        }
    );
}

#[test]
fn operator_tx_with_a_tip_above_its_max_fee_is_refused() {
    let mut h = with_operator();
    assert_eq!(
        refusal(h.call(&revoke(50_000, 1_000, 1_001, 0))),
        OperatorLimit::PriorityAboveMaxFee {
            priority: 1_001,
            max_fee: 1_000
        }
    );
}

#[test]
fn operator_spend_budget_is_enforced_and_refills_over_its_window() {
    let mut h = with_operator();
    // Refusals above the ceilings charge nothing.
    for _ in 0..10 {
        h.call(&revoke(MAX_GAS_LIMIT + 1, 1, 1, 0)).unwrap_err();
        h.call(&revoke(1, MAX_FEE_PER_GAS + 1, 1, 0)).unwrap_err();
    }
    // One full budget of transactions at the ceilings (fresh nonces: each could be mined).
    let fits = (SPEND_BUDGET_WEI / AT_CEILINGS) as u64;
    assert_eq!(fits, 5);
    for nonce in 0..fits {
        h.call(&revoke(MAX_GAS_LIMIT, MAX_FEE_PER_GAS, 1, nonce))
            .unwrap();
    }
    // The next one does not fit, and says when it will.
    let wait = (AT_CEILINGS * u128::from(SPEND_WINDOW_SECS)).div_ceil(SPEND_BUDGET_WEI) as u64;
    let refused = refusal(h.call(&revoke(MAX_GAS_LIMIT, MAX_FEE_PER_GAS, 1, fits)));
    assert_eq!(
        refused,
        OperatorLimit::SpendBudget {
            requested: AT_CEILINGS,
            available: 0,
            budget: SPEND_BUDGET_WEI,
            window_secs: SPEND_WINDOW_SECS,
            retry_at: T0 + wait,
        }
    );
    // Nor does a cheaper one of any size but zero.
    assert!(matches!(
        refusal(h.call(&revoke(21_000, 1, 1, fits))),
        OperatorLimit::SpendBudget { .. }
    ));
    // A transaction that cannot cost anything is always signed.
    h.call(&revoke(21_000, 0, 0, fits)).unwrap();
    // Not a second before the retry time; at it, exactly one more fits.
    h.advance(wait - 1);
    refusal(h.call(&revoke(MAX_GAS_LIMIT, MAX_FEE_PER_GAS, 1, fits)));
    h.advance(1);
    h.call(&revoke(MAX_GAS_LIMIT, MAX_FEE_PER_GAS, 1, fits))
        .unwrap();
    refusal(h.call(&revoke(MAX_GAS_LIMIT, MAX_FEE_PER_GAS, 1, fits + 1)));
    // After a whole window the budget is whole again, and no more.
    h.advance(SPEND_WINDOW_SECS * 10);
    for nonce in 0..fits {
        h.call(&revoke(MAX_GAS_LIMIT, MAX_FEE_PER_GAS, 1, 100 + nonce))
            .unwrap();
    }
    refusal(h.call(&revoke(MAX_GAS_LIMIT, MAX_FEE_PER_GAS, 1, 200)));
}

#[test]
fn operator_spend_budget_survives_a_ta_restart() {
    let mut h = with_operator();
    for nonce in 0..5 {
        h.call(&revoke(MAX_GAS_LIMIT, MAX_FEE_PER_GAS, 1, nonce))
            .unwrap();
    }
    h.restart();
    assert!(matches!(
        refusal(h.call(&revoke(MAX_GAS_LIMIT, MAX_FEE_PER_GAS, 1, 5))),
        OperatorLimit::SpendBudget { available: 0, .. }
    ));
}

#[test]
fn operator_budget_is_not_charged_without_an_operator_key() {
    let mut h = Harness::new();
    for _ in 0..10 {
        assert_eq!(
            h.call(&revoke(MAX_GAS_LIMIT, MAX_FEE_PER_GAS, 1, 0))
                .unwrap_err(),
            TaError::OperatorKeyMissing
        );
    }
    h.call(&OperatorKey {
        create_if_missing: true,
    })
    .unwrap();
    for nonce in 0..5 {
        h.call(&revoke(MAX_GAS_LIMIT, MAX_FEE_PER_GAS, 1, nonce))
            .unwrap();
    }
}

// ----------------------------------------------------------------- nonce table

/// Make `n` more wallets bound to the same passkey as `template` by copying its sealed record
/// under new ids (creating 4096 wallets through `CreateWallet` would run PBKDF2 4096 times).
fn clone_wallets(h: &mut Harness, template: WalletId, n: usize) -> Vec<WalletId> {
    let hex = |id: &WalletId| id.0.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let record = h.storage.map.borrow()[&format!("w/{}", hex(&template))].clone();
    (0..n)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            id[15] = 0xc1;
            let id = WalletId(id);
            h.storage
                .map
                .borrow_mut()
                .insert(format!("w/{}", hex(&id)), record.clone());
            id
        })
        .collect()
}

fn owner_sign(wallet: WalletId) -> SignHashBody {
    SignHashBody {
        wallet_id: wallet,
        path: HdPath::OWNER,
        hash: [9; 32],
    }
}

fn check_bound(h: &Harness) {
    let u = h.ta.nonce_table_usage();
    assert!(u.entries <= MAX_PENDING_NONCES, "{u:?}");
    assert!(u.bytes <= NONCE_TABLE_MAX_BYTES, "{u:?}");
    const { assert!(NONCE_TABLE_MAX_BYTES <= 256 * 1024) };
}

#[test]
fn nonce_table_of_4096_wallets_stays_bounded_and_honest_ceremonies_work() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let owner = create_wallet(&mut h, &pk).wallet_id;
    let others = clone_wallets(&mut h, owner, 4096);

    // One ceremony for each of 4096 wallets at once: the table is full.
    for w in &others {
        h.nonce(*w);
    }
    let u = h.ta.nonce_table_usage();
    assert_eq!((u.entries, u.wallets), (MAX_PENDING_NONCES, 4096));
    check_bound(&h);

    // A 4097th wallet still gets its challenge (no refusal: the oldest pending one goes).
    let body = owner_sign(owner);
    let nonce = h.nonce(owner);
    let honest = pk.assert_challenge(
        &authz::challenge(&nonce, &body.payload_digest()),
        &Default::default(),
    );
    assert_eq!(h.ta.nonce_table_usage().entries, MAX_PENDING_NONCES);

    // A flood over 64 wallets, a full table's worth of challenges: it displaces its own
    // wallets' nonces, never the owner's.
    for w in &others[..64] {
        for _ in 0..MAX_NONCES_PER_WALLET {
            h.nonce(*w);
        }
        check_bound(&h);
    }
    assert_eq!(h.ta.nonce_table_usage().entries, MAX_PENDING_NONCES);
    check_bound(&h);

    // The owner's ceremony, started before the flood, completes.
    h.call(&SignHash {
        body: body.clone(),
        assertion: honest,
    })
    .unwrap();
    // And a fresh one works as ever.
    let assertion = pk.authorize(&mut h, owner, &body);
    h.call(&SignHash { body, assertion }).unwrap();
    check_bound(&h);
}

#[test]
fn a_flood_for_one_wallet_displaces_only_that_wallets_nonces() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let victim = create_wallet(&mut h, &pk).wallet_id;
    let flooded = clone_wallets(&mut h, victim, 1)[0];
    let body = owner_sign(victim);
    let nonce = h.nonce(victim);
    let honest = pk.assert_challenge(
        &authz::challenge(&nonce, &body.payload_digest()),
        &Default::default(),
    );

    let first = h.nonce(flooded);
    for _ in 0..1000 {
        h.nonce(flooded);
    }
    let u = h.ta.nonce_table_usage();
    assert_eq!((u.entries, u.wallets), (MAX_NONCES_PER_WALLET + 1, 2));

    h.call(&SignHash {
        body,
        assertion: honest,
    })
    .unwrap();
    // The flooded wallet's first nonce is long gone.
    let fbody = owner_sign(flooded);
    let stale = pk.assert_challenge(
        &authz::challenge(&first, &fbody.payload_digest()),
        &Default::default(),
    );
    assert_eq!(
        h.call(&SignHash {
            body: fbody,
            assertion: stale
        })
        .unwrap_err(),
        TaError::Passkey(PasskeyError::ChallengeMismatch)
    );
}

#[test]
fn expired_nonces_free_their_room() {
    let mut h = Harness::new();
    let pk = SoftPasskey::new(1);
    let owner = create_wallet(&mut h, &pk).wallet_id;
    let others = clone_wallets(&mut h, owner, 100);
    for w in &others {
        h.nonce(*w);
    }
    assert_eq!(h.ta.nonce_table_usage().entries, 100);
    h.advance(300);
    h.nonce(owner);
    let u = h.ta.nonce_table_usage();
    assert_eq!((u.entries, u.wallets), (1, 1));
}
