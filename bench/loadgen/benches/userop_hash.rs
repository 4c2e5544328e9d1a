//! userOpHash of EntryPoint v0.7 (abi.encode + keccak) and v0.8 (EIP-712)
//! for one realistic operation (an `execute` call with 4-byte selector and
//! ABI words, gas and fees set), against a single keccak256 of the same
//! call data as the baseline, all measured in the same run.
//!
//! Run: `cargo bench -p kms-loadgen --bench userop_hash`

use std::hint::black_box;
use std::time::{Duration, Instant};

use alloy::primitives::{address, keccak256, Address, Bytes, U256};
use criterion::Criterion;
use kms_chain::userop::v0_7::{GasLimits, UserOperation};
use kms_chain::userop::v0_8;
use kms_proto::session_signature::SESSION_SIGNATURE_LEN;

const EP7: Address = address!("0000000071727De22E5E9d8BAf0edAc6f37da032");
const EP8: Address = address!("4337084D9E255Ff0702461CF8895CE9E3b5Ff108");

fn op() -> UserOperation {
    // execute(address,uint256,bytes): selector + 3 words + empty bytes.
    let mut call = vec![0xb6, 0x1d, 0x27, 0xf6];
    call.extend([0u8; 12]);
    call.extend([0x11; 20]);
    call.extend(U256::from(10u64.pow(15)).to_be_bytes::<32>());
    call.extend(U256::from(96).to_be_bytes::<32>());
    call.extend([0u8; 32]);
    UserOperation::new(
        address!("a11ce00000000000000000000000000000000001"),
        U256::from(7u64) << 64,
        Bytes::from(call),
    )
    .with_gas(GasLimits {
        pre_verification_gas: U256::from(50_000),
        verification_gas_limit: 150_000,
        call_gas_limit: 80_000,
        ..GasLimits::default()
    })
    .with_fees(2_000_000_000, 1_000_000_000)
    .with_signature(vec![0u8; SESSION_SIGNATURE_LEN])
}

fn median(rounds: usize, per: u32, mut f: impl FnMut()) -> Duration {
    let mut v: Vec<Duration> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per {
                f();
            }
            t.elapsed() / per
        })
        .collect();
    v.sort();
    v[rounds / 2]
}

fn main() {
    let op = op();
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3));
    let mut g = c.benchmark_group("user_op_hash");
    g.bench_function("keccak256_call_data_baseline", |b| {
        b.iter(|| keccak256(black_box(&op.call_data)))
    });
    g.bench_function("v0_7_hash", |b| b.iter(|| black_box(&op).hash(EP7, 31337)));
    g.bench_function("v0_8_eip712_hash", |b| {
        b.iter(|| v0_8::user_op_hash(black_box(&op), EP8, 31337))
    });
    g.finish();
    c.final_summary();

    let (mut base, mut h7, mut h8) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..7 {
        base.push(median(5, 20_000, || {
            black_box(keccak256(black_box(&op.call_data)));
        }));
        h7.push(median(5, 20_000, || {
            black_box(black_box(&op).hash(EP7, 31337));
        }));
        h8.push(median(5, 20_000, || {
            black_box(v0_8::user_op_hash(black_box(&op), EP8, 31337));
        }));
    }
    for v in [&mut base, &mut h7, &mut h8] {
        v.sort();
    }
    let (base, h7, h8) = (base[3], h7[3], h8[3]);
    println!(
        "\nuserOpHash: v0.7 {h7:?}/op, v0.8 (EIP-712) {h8:?}/op, one keccak256 of the call data {base:?}/op; \
         v0.7/keccak {:.1}x, v0.8/keccak {:.1}x, v0.8/v0.7 {:.2}x",
        h7.as_secs_f64() / base.as_secs_f64(),
        h8.as_secs_f64() / base.as_secs_f64(),
        h8.as_secs_f64() / h7.as_secs_f64()
    );
}
