//! A TA clock that never goes backwards (used by the OP-TEE TA and `ta-sim`).
//!
//! The only wall-clock time an OP-TEE TA can read is the REE time
//! (`TEE_GetREETime`): the normal world's clock, which the host controls.
//! (`TEE_GetSystemTime` has an arbitrary origin, and the TA persistent time
//! of `TEE_GetTAPersistentTime` is kept in RAM by OP-TEE and lost at every
//! reboot.) A host that sets its clock back could make an expired nonce or
//! credential look fresh again, so the TA clock is the REE time clamped to a
//! *time floor*: the highest time the TA has ever seen. The floor is raised
//! on every reading and stored in every sealed snapshot
//! ([`crate::snapshot`]), so it survives restarts. The host can still hold
//! time still or move it forward faster; what it cannot do is go back
//! behind any time the TA already used. (Revocation and supersession do not
//! depend on the clock at all: they are generation counters in sealed
//! storage.)

use core::sync::atomic::{AtomicU64, Ordering};

/// The highest time (Unix seconds) the TA has seen.
#[derive(Debug, Default)]
pub struct TimeFloor(AtomicU64);

impl TimeFloor {
    /// A floor at 0.
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// The current floor.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Raise the floor to `t` if it is lower; returns the floor afterwards
    /// (`max(floor, t)`).
    pub fn raise(&self, t: u64) -> u64 {
        self.0.fetch_max(t, Ordering::AcqRel).max(t)
    }
}

/// A source of (untrusted) wall-clock time.
pub trait TimeSource {
    /// Unix seconds, or `None` if unavailable.
    fn unix_seconds(&self) -> Option<u64>;
}

/// [`crate::Clock`] over a [`TimeSource`], clamped to a [`TimeFloor`].
#[derive(Debug)]
pub struct MonotonicClock<T> {
    source: T,
    floor: alloc::sync::Arc<TimeFloor>,
}

impl<T: TimeSource> MonotonicClock<T> {
    /// A clock reading `source`, never going below `floor`.
    pub fn new(source: T, floor: alloc::sync::Arc<TimeFloor>) -> Self {
        Self { source, floor }
    }
}

impl<T: TimeSource> crate::Clock for MonotonicClock<T> {
    fn now(&self) -> u64 {
        let t = self.source.unix_seconds().unwrap_or(0);
        self.floor.raise(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Clock;
    use alloc::sync::Arc;
    use core::cell::Cell;

    struct Fake(Cell<Option<u64>>);
    impl TimeSource for Fake {
        fn unix_seconds(&self) -> Option<u64> {
            self.0.get()
        }
    }

    #[test]
    fn never_goes_backwards() {
        let floor = Arc::new(TimeFloor::new());
        floor.raise(500);
        let clock = MonotonicClock::new(Fake(Cell::new(Some(100))), floor.clone());
        assert_eq!(clock.now(), 500);
        clock.source.0.set(Some(1_000));
        assert_eq!(clock.now(), 1_000);
        clock.source.0.set(Some(900));
        assert_eq!(clock.now(), 1_000);
        clock.source.0.set(None);
        assert_eq!(clock.now(), 1_000);
        assert_eq!(floor.get(), 1_000);
    }
}
