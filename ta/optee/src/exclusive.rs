//! A non-blocking exclusive cell for the TA's one global core.
//!
//! OP-TEE enters a single-instance TA for one call at a time, so the cell is
//! never contended in practice; if it ever were (a bug, or a future
//! concurrent TA), [`Exclusive::with`] returns `None` (the entry point answers
//! `TEE_ERROR_BUSY`) instead of handing out a second `&mut`. It works in
//! `no_std` builds, where there is no `Mutex`.
#![allow(unsafe_code)]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// A value that at most one caller at a time may use.
pub struct Exclusive<T> {
    busy: AtomicBool,
    value: UnsafeCell<Option<T>>,
}

// SAFETY: access to `value` is only ever given out by `with`, which holds
// the `busy` flag (acquired with compare-exchange, released after the
// closure), so there is never more than one `&mut` at a time — the same
// argument as a spin lock's `try_lock`. `T: Send` because the value may be
// used from whichever thread holds the flag.
unsafe impl<T: Send> Sync for Exclusive<T> {}

impl<T> Default for Exclusive<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Exclusive<T> {
    /// An empty cell.
    pub const fn new() -> Self {
        Self {
            busy: AtomicBool::new(false),
            value: UnsafeCell::new(None),
        }
    }

    /// Run `f` with exclusive access to the slot; `None` if another caller
    /// is inside.
    pub fn with<R>(&self, f: impl FnOnce(&mut Option<T>) -> R) -> Option<R> {
        if self
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        /// Releases the flag even if `f` unwinds.
        struct Release<'a>(&'a AtomicBool);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _release = Release(&self.busy);
        // SAFETY: we hold the flag (see the `Sync` impl).
        let slot = unsafe { &mut *self.value.get() };
        Some(f(slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_access_and_refuses_reentry() {
        let cell: Exclusive<u32> = Exclusive::new();
        assert_eq!(cell.with(|v| *v = Some(5)), Some(()));
        let inner = cell.with(|v| {
            *v = v.map(|x| x + 1);
            cell.with(|_| ())
        });
        assert_eq!(inner, Some(None));
        assert_eq!(cell.with(|v| *v), Some(Some(6)));
    }

    #[test]
    fn is_released_after_a_panic() {
        let cell: Exclusive<u32> = Exclusive::new();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cell.with(|_| panic!("boom"));
        }));
        assert!(r.is_err());
        assert_eq!(cell.with(|v| v.is_none()), Some(true));
    }
}
