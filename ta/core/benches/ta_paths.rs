//! Credential verification and key derivation inside the TA core, each
//! against its own baseline measured in the same run:
//!
//! * JWT: the TA's full credential check (`JwtHmacVerify` through the byte
//!   protocol: parse, HMAC by kid, claims, generation) against the host's
//!   shape-only `kms_proto::jwt::parse` of the same token.
//! * BIP32: `GetWalletInfo` on a freshly started core (cold: empty caches,
//!   so BIP39 seed (PBKDF2-HMAC-SHA512, 2048 rounds) + BIP32 root + owner key)
//!   against the same call repeated (cached).
//! * SignAgentUserOp on a freshly started core (cold: seed, root and agent
//!   key derived on the first signature) against the cached key.
//!
//! Run: `cargo bench -p kms-ta --features test-seed --bench ta_paths`

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
}

fn setup() -> Setup {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = seed_anvil_wallet(&mut h, &pk);
    let cred = create_agent(&mut h, &mut pk, w.wallet_id, 0, 3600).unwrap();
    let jwt = cred.to_jwt();
    sign_op(&mut h, w.wallet_id, 0, &jwt, [0; 32], [0xAA; 20]).unwrap();
    Setup {
        h,
        wallet: w.wallet_id,
        jwt,
    }
}

fn ta_verify(s: &mut Setup) -> VerifiedCredential {
    let req = JwtHmacVerify { jwt: s.jwt.clone() };
    let out =
        s.h.ta
            .invoke(JwtHmacVerify::ID.as_u32(), &encode_request(&req));
    decode_response::<VerifiedCredential>(&out)
        .unwrap()
        .unwrap()
}

fn host_parse(s: &Setup) -> u32 {
    kms_proto::jwt::parse(&s.jwt).unwrap().claims.gen
}

fn wallet_info(s: &mut Setup) -> WalletInfo {
    s.h.call(&GetWalletInfo {
        wallet_id: s.wallet,
    })
    .unwrap()
}

fn sign(s: &mut Setup, i: u64) -> AgentSignature {
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&i.to_be_bytes());
    sign_op(&mut s.h, s.wallet, 0, &s.jwt, hash, [0xAA; 20]).unwrap()
}

/// Median of `rounds` timings of `per_round` calls of `f`.
fn median(rounds: usize, per_round: u32, mut f: impl FnMut()) -> Duration {
    let mut v: Vec<Duration> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_round {
                f();
            }
            t.elapsed() / per_round
        })
        .collect();
    v.sort();
    v[rounds / 2]
}

fn main() {
    let mut s = setup();
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3));

    let mut g = c.benchmark_group("jwt_verification");
    g.bench_function("host_jwt_parse", |b| b.iter(|| host_parse(&s)));
    g.bench_function("ta_jwt_hmac_verify_invoke", |b| {
        b.iter(|| ta_verify(&mut s))
    });
    g.finish();

    let mut g = c.benchmark_group("bip32_derivation");
    g.sample_size(10);
    g.bench_function("cold_fresh_core_get_wallet_info", |b| {
        b.iter(|| {
            s.h.restart();
            wallet_info(&mut s)
        })
    });
    g.bench_function("cached_get_wallet_info", |b| b.iter(|| wallet_info(&mut s)));
    g.finish();

    let mut g = c.benchmark_group("sign_agent_cold_vs_cached");
    g.sample_size(10);
    let mut i = 0u64;
    g.bench_function("cold_fresh_core_first_signature", |b| {
        b.iter(|| {
            s.h.restart();
            i += 1;
            sign(&mut s, i)
        })
    });
    g.bench_function("cached_key_signature", |b| {
        b.iter(|| {
            i += 1;
            sign(&mut s, i)
        })
    });
    g.finish();
    c.final_summary();

    // Ratios from interleaved medians measured in this run.
    let (mut verify, mut parse) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        parse.push(median(5, 2000, || {
            black_box(host_parse(&s));
        }));
        verify.push(median(5, 2000, || {
            black_box(ta_verify(&mut s));
        }));
    }
    parse.sort();
    verify.sort();
    let (parse, verify) = (parse[3], verify[3]);
    println!(
        "\nJWT: TA JwtHmacVerify (invoke, full check) {verify:?}/op, host jwt::parse {parse:?}/op, ratio {:.2}x",
        verify.as_secs_f64() / parse.as_secs_f64()
    );
    s.h.restart();
    wallet_info(&mut s);
    let cached = median(7, 2000, || {
        black_box(wallet_info(&mut s));
    });
    let cold = median(7, 3, || {
        s.h.restart();
        black_box(wallet_info(&mut s));
    });
    println!(
        "BIP32: cold (fresh core: PBKDF2 seed + root + m/44'/60'/0'/0/0) {cold:?}/op, cached {cached:?}/op, ratio {:.0}x",
        cold.as_secs_f64() / cached.as_secs_f64()
    );
    let cached = median(7, 300, || {
        i += 1;
        black_box(sign(&mut s, i));
    });
    let cold = median(7, 3, || {
        s.h.restart();
        i += 1;
        black_box(sign(&mut s, i));
    });
    println!(
        "SignAgentUserOp: cold (fresh core, first signature) {cold:?}/op, cached key {cached:?}/op, ratio {:.0}x",
        cold.as_secs_f64() / cached.as_secs_f64()
    );
}
