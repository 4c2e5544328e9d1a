//! Rate limits, all checked before any TEE call:
//!
//! - per API key (all API-key routes together) and per agent credential (the agent routes that
//!   lead to a TEE call: `/kms/sign-agent`, `POST /agent/intents`): GCRA keyed limiters
//!   (governor) with a burst equal to the per-minute quota. An agent's bucket is charged only
//!   once the presented credential *is* that agent's current one (the host's cheap check:
//!   SHA-256 of the JWT against the stored hash, constant time), so a stranger who knows a keyId
//!   cannot spend the agent's budget with forged tokens;
//! - per agent credential for intent status reads (`GET /agent/intents/{userOpHash}`), a bucket
//!   of its own so that polling never eats the signing budget;
//! - per client address ([`ClientLimiter`]): the agent routes' *failed* authentications (missing,
//!   malformed, forged, superseded, expired or revoked credentials, keyId mismatches, unknown
//!   agents). Once an address has spent its budget, every agent-route request from it is
//!   refused 429 before its credential is even read, until the bucket refills. Requests whose
//!   credential matches are never charged here.
//!
//! The client address is the TCP peer ([`ClientAddr`], from axum's `ConnectInfo`): behind a
//! reverse proxy it is the proxy's address, so every client of the proxy shares one bucket.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
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
                Err(rate_limited(self.scope, wait))
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

fn rate_limited(scope: &'static str, wait: Duration) -> ApiError {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::RateLimited {
        scope,
        retry_after_secs: secs.max(1),
    }
}

/// The address a request came from: the TCP peer's IP (axum's `ConnectInfo`, which
/// [`crate::server::start`] provides). Behind a reverse proxy this is the proxy. Without
/// connection info (a router served without it) every request gets the unspecified address,
/// so all share one bucket: stricter, never looser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip()),
        ))
    }
}

/// The bucket an address belongs to: IPv4 addresses (also IPv4-mapped IPv6) on their own, IPv6
/// addresses by their /64 (one host or site usually holds a whole /64, so counting single
/// IPv6 addresses would let it open 2^64 buckets).
pub fn bucket_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// Most addresses tracked at once; past it, addresses whose buckets are full again are
/// forgotten, and if that is not enough, all of them (memory stays bounded).
pub const MAX_TRACKED_CLIENTS: usize = 100_000;

/// Per-client-address limiter of failed agent authentications: a GCRA (the same algorithm as
/// governor's) whose bucket can be looked at without spending it, which governor cannot do.
///
/// [`ClientLimiter::admit`] refuses (429) an address whose bucket is empty, without charging;
/// [`ClientLimiter::charge`] spends one token after a failed authentication.
pub struct ClientLimiter {
    /// Time one token takes to come back.
    interval: Duration,
    /// How far ahead of now the theoretical arrival time may run: (burst − 1) × interval.
    tolerance: Duration,
    /// Theoretical arrival time per bucket (absent: full bucket).
    tat: Mutex<HashMap<IpAddr, Instant>>,
    scope: &'static str,
}

impl ClientLimiter {
    /// `per_minute` failed authentications per minute per address (at least 1), all of them
    /// available at once (burst = quota).
    pub fn per_minute(per_minute: u32) -> Self {
        let n = per_minute.max(1);
        let interval = Duration::from_secs(60) / n;
        Self {
            interval,
            tolerance: interval * (n - 1),
            tat: Mutex::new(HashMap::new()),
            scope: "per client address",
        }
    }

    /// How long until a bucket whose theoretical arrival time is `tat` has a token, if it is
    /// empty now.
    fn wait(&self, tat: Option<&Instant>, now: Instant) -> Option<Duration> {
        let horizon = now + self.tolerance;
        let tat = *tat?;
        (tat > horizon).then(|| tat - horizon)
    }

    /// 429 when `ip`'s bucket is empty (nothing is spent).
    pub fn admit(&self, ip: IpAddr) -> Result<(), ApiError> {
        let now = Instant::now();
        let map = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        match self.wait(map.get(&bucket_of(ip)), now) {
            Some(wait) => Err(rate_limited(self.scope, wait)),
            None => Ok(()),
        }
    }

    /// Spend one token of `ip`'s bucket (a failed authentication). Returns false when the
    /// bucket was already empty (nothing changes then).
    pub fn charge(&self, ip: IpAddr) -> bool {
        let key = bucket_of(ip);
        let now = Instant::now();
        let mut map = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        if self.wait(map.get(&key), now).is_some() {
            return false;
        }
        if map.len() >= MAX_TRACKED_CLIENTS && !map.contains_key(&key) {
            map.retain(|_, tat| *tat > now);
            if map.len() >= MAX_TRACKED_CLIENTS {
                map.clear();
            }
        }
        let tat = map.get(&key).map_or(now, |t| (*t).max(now)) + self.interval;
        map.insert(key, tat);
        if self.wait(Some(&tat), now).is_some() {
            tracing::debug!(client = %key, "client address spent its agent-authentication budget");
        }
        true
    }

    /// Forget addresses whose buckets are full again.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut map = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, tat| *tat > now);
        map.shrink_to_fit();
    }

    /// Number of tracked addresses.
    pub fn tracked(&self) -> usize {
        self.tat.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// All limiters.
pub struct Limits {
    /// Per API key.
    pub api: KeyedLimiter,
    /// Per agent credential (keyId), charged once the credential matches.
    pub agent: KeyedLimiter,
    /// Intent status reads per agent credential, charged once the credential matches.
    pub agent_reads: KeyedLimiter,
    /// Failed agent authentications per client address.
    pub clients: ClientLimiter,
}

impl Limits {
    /// From the configured per-minute quotas.
    pub fn new(
        api_per_minute: u32,
        agent_per_minute: u32,
        agent_reads_per_minute: u32,
        client_per_minute: u32,
    ) -> Self {
        Self {
            api: KeyedLimiter::per_minute(api_per_minute, "per API key"),
            agent: KeyedLimiter::per_minute(agent_per_minute, "per agent credential"),
            agent_reads: KeyedLimiter::per_minute(
                agent_reads_per_minute,
                "intent reads per agent credential",
            ),
            clients: ClientLimiter::per_minute(client_per_minute),
        }
    }

    /// Forget full buckets (the cleanup task).
    pub fn sweep(&self) {
        self.api.sweep();
        self.agent.sweep();
        self.agent_reads.sweep();
        self.clients.sweep();
    }

    /// `e`, after charging `client`'s bucket when `e` refuses the request's credential (any
    /// 4xx of the authentication phase but 421, a wallet of another TA; server faults are not
    /// the client's).
    pub fn refused(&self, client: ClientAddr, e: ApiError) -> ApiError {
        // A wallet of another TA (421) is a routing fault, not a guess at a credential.
        if e.status().is_client_error() && e.status() != axum::http::StatusCode::MISDIRECTED_REQUEST
        {
            self.clients.charge(client.0);
        }
        e
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

    #[test]
    fn client_buckets_admit_until_spent_and_only_charges_spend() {
        let l = ClientLimiter::per_minute(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        // Looking does not spend.
        for _ in 0..10 {
            l.admit(a).unwrap();
        }
        assert_eq!(l.tracked(), 0);
        for _ in 0..3 {
            l.admit(a).unwrap();
            assert!(l.charge(a));
        }
        match l.admit(a) {
            Err(ApiError::RateLimited {
                retry_after_secs,
                scope,
            }) => {
                assert_eq!(scope, "per client address");
                assert!((1..=20).contains(&retry_after_secs), "{retry_after_secs}");
            }
            other => panic!("{other:?}"),
        }
        // A spent bucket is not charged further.
        assert!(!l.charge(a));
        // Another address has its own bucket.
        l.admit(b).unwrap();
        assert!(l.charge(b));
        assert_eq!(l.tracked(), 2);
        // Spent buckets survive a sweep.
        l.sweep();
        assert_eq!(l.tracked(), 2);
    }

    #[test]
    fn client_buckets_refill_and_are_swept() {
        // 6000/min: one token every 10 ms.
        let l = ClientLimiter::per_minute(6000);
        let a: IpAddr = "192.0.2.9".parse().unwrap();
        // Spent to the last token (tokens that come back while the loop runs, slowly on a
        // loaded machine, are spent too), then refused.
        let mut spent = 0;
        while l.charge(a) {
            spent += 1;
            assert!(spent <= 60_000, "the bucket never ran dry");
        }
        assert!(
            spent >= 6000,
            "a full bucket holds a minute's worth: {spent}"
        );
        assert!(l.admit(a).is_err());
        std::thread::sleep(Duration::from_millis(30));
        l.admit(a).unwrap();
        assert!(l.charge(a));
        // One charge on a fresh bucket: full again after one interval, then swept.
        let b: IpAddr = "192.0.2.10".parse().unwrap();
        assert!(l.charge(b));
        l.sweep();
        assert_eq!(l.tracked(), 2, "a spent and a just-charged bucket are kept");
        std::thread::sleep(Duration::from_millis(30));
        l.sweep();
        assert_eq!(l.tracked(), 1, "b is full again and forgotten; a is not");
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let l = ClientLimiter::per_minute(2);
        let x: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:ffff::7".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(l.charge(x));
        assert!(l.charge(y));
        assert!(l.admit(x).is_err(), "same /64, same bucket");
        l.admit(other).unwrap();
        let v4: IpAddr = "192.0.2.5".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.5".parse().unwrap();
        assert!(l.charge(v4));
        assert!(l.charge(mapped));
        assert!(l.admit(v4).is_err());
        assert_eq!(bucket_of(mapped), v4);
    }
}
