//! Randomness and time of the simulated TA: the host's.

use std::time::{SystemTime, UNIX_EPOCH};

use kms_ta::clock::TimeSource;
use kms_ta::{Entropy, EntropyError};

/// [`Entropy`] from the OS CSPRNG (`getrandom`).
#[derive(Debug, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        getrandom::fill(buf).map_err(|_| EntropyError)
    }
}

/// The system clock (used through
/// [`kms_ta::clock::MonotonicClock`], so the TA's time never goes
/// backwards even if the host's clock does).
#[derive(Debug, Default)]
pub struct SystemClock;

impl TimeSource for SystemClock {
    fn unix_seconds(&self) -> Option<u64> {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_fills_and_time_is_now() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        OsEntropy.fill(&mut a).unwrap();
        OsEntropy.fill(&mut b).unwrap();
        assert_ne!(a, b);
        assert!(SystemClock.unix_seconds().unwrap() > 1_700_000_000);
    }
}
