//! The shared test harness lives in the `kms-test-support` dev crate (also used by
//! `kms-admin`'s tests).
#![allow(unused_imports)]

pub use kms_test_support::*;
