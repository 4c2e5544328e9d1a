//! The in-process baseline: raw k256 ECDSA signing of 32-byte digests
//! (RFC 6979, recoverable), on `threads` OS threads for `secs` seconds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Signatures per second over all threads.
pub fn sign_throughput(threads: usize, dur: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let key = k256::ecdsa::SigningKey::from_slice(&[0x42 + t as u8; 32]).expect("key");
                let mut n = 0u64;
                let mut digest = [0u8; 32];
                while !stop.load(Ordering::Relaxed) {
                    digest[..8].copy_from_slice(&n.to_be_bytes());
                    let sig = key.sign_prehash_recoverable(&digest).expect("sign");
                    std::hint::black_box(sig);
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    total as f64 / started.elapsed().as_secs_f64()
}
