//! SignAgentUserOp through the TA core's byte protocol against raw k256
//! signing of a 32-byte digest, measured in the same run. Prints the ratio
//! (aim: ≤ 1.25× raw when the agent key is cached).
//!
//! Run: `cargo bench -p kms-ta --features test-seed --bench sign_agent`

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use criterion::Criterion;
use kms_proto::*;
use std::hint::black_box;
use std::time::{Duration, Instant};

struct Setup {
    h: Harness,
    wallet: WalletId,
    jwt: String,
    raw_key: k256::ecdsa::SigningKey,
}

fn setup() -> Setup {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = seed_anvil_wallet(&mut h, &pk);
    let cred = create_agent(&mut h, &mut pk, w.wallet_id, 0, 3600).unwrap();
    let jwt = cred.to_jwt();
    // Warm the key cache.
    sign_op(&mut h, w.wallet_id, 0, &jwt, [0; 32], [0xAA; 20]).unwrap();
    let raw_key = k256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap();
    Setup {
        h,
        wallet: w.wallet_id,
        jwt,
        raw_key,
    }
}

fn ta_sign(s: &mut Setup, i: u64) -> Vec<u8> {
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&i.to_be_bytes());
    let req = SignAgentUserOp {
        wallet_id: s.wallet,
        agent_index: 0,
        jwt: s.jwt.clone(),
        user_op_hash: hash,
        account: [0xAA; 20],
    };
    let out =
        s.h.ta
            .invoke(SignAgentUserOp::ID.as_u32(), &encode_request(&req));
    let sig = decode_response::<AgentSignature>(&out).unwrap().unwrap();
    sig.signature
}

fn raw_sign(s: &Setup, i: u64) -> [u8; 64] {
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&i.to_be_bytes());
    let (sig, _recid) = s.raw_key.sign_prehash_recoverable(&hash).unwrap();
    sig.to_bytes().into()
}

/// Interleaved A/B rounds; returns the median per-op time of each.
fn interleaved(s: &mut Setup, rounds: usize, per_round: u64) -> (Duration, Duration) {
    let mut ta = Vec::new();
    let mut raw = Vec::new();
    let mut i = 0u64;
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..per_round {
            i += 1;
            black_box(raw_sign(s, i));
        }
        raw.push(t.elapsed() / per_round as u32);
        let t = Instant::now();
        for _ in 0..per_round {
            i += 1;
            black_box(ta_sign(s, i));
        }
        ta.push(t.elapsed() / per_round as u32);
    }
    ta.sort();
    raw.sort();
    (ta[rounds / 2], raw[rounds / 2])
}

fn main() {
    let mut s = setup();
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3));
    let mut group = c.benchmark_group("sign_agent_user_op");
    let mut i = 0u64;
    group.bench_function("raw_k256_sign_prehash", |b| {
        b.iter(|| {
            i += 1;
            raw_sign(&s, i)
        })
    });
    group.bench_function("ta_core_invoke", |b| {
        b.iter(|| {
            i += 1;
            ta_sign(&mut s, i)
        })
    });
    group.finish();
    c.final_summary();

    let (ta, raw) = interleaved(&mut s, 11, 300);
    println!(
        "\nSignAgentUserOp via TA core: {:?}/op, raw k256: {:?}/op, ratio {:.3}x (aim <= 1.25x, cached key)",
        ta,
        raw,
        ta.as_secs_f64() / raw.as_secs_f64()
    );
}
