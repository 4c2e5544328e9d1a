//! Rate limits: per API key (all API-key routes together) and per agent
//! credential (`/kms/sign-agent`), both GCRA keyed limiters (governor) with a
//! burst equal to the per-minute quota. Both are checked before any TEE call.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::error::ApiError;

/// A keyed per-minute limiter.
pub struct KeyedLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    scope: &'static str,
}

impl KeyedLimiter {
    /// `per_minute` requests per minute per key (at least 1).
    pub fn per_minute(per_minute: u32, scope: &'static str) -> Self {
        let n = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_minute(n)),
            clock: DefaultClock::default(),
            scope,
        }
    }

    /// Take one token for `key`, or answer 429 with the wait.
    pub fn check(&self, key: &str) -> Result<(), ApiError> {
        // Avoid allocating the key when the limiter already tracks it is not
        // possible with governor's API; keys are short.
        match self.limiter.check_key(&key.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Err(ApiError::RateLimited {
                    scope: self.scope,
                    retry_after_secs: secs.max(1),
                })
            }
        }
    }

    /// Forget keys whose buckets are full again (bounded memory).
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Number of tracked keys.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

/// Both limiters.
pub struct Limits {
    /// Per API key.
    pub api: KeyedLimiter,
    /// Per agent credential (keyId).
    pub agent: KeyedLimiter,
}

impl Limits {
    /// From the configured per-minute quotas.
    pub fn new(api_per_minute: u32, agent_per_minute: u32) -> Self {
        Self {
            api: KeyedLimiter::per_minute(api_per_minute, "per API key"),
            agent: KeyedLimiter::per_minute(agent_per_minute, "per agent credential"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_with_retry_after() {
        let l = KeyedLimiter::per_minute(3, "t");
        for _ in 0..3 {
            l.check("a").unwrap();
        }
        match l.check("a") {
            Err(ApiError::RateLimited {
                retry_after_secs, ..
            }) => {
                assert!((1..=20).contains(&retry_after_secs), "{retry_after_secs}")
            }
            other => panic!("{other:?}"),
        }
        // Another key has its own bucket.
        l.check("b").unwrap();
        assert_eq!(l.tracked(), 2);
    }
}
