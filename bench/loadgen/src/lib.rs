//! The load driver's and the fault-injection test's shared harness.
//!
//! * [`procs`] — start `ta-sim` and the `companion` as real processes on
//!   free ports, kill them (SIGKILL) and restart them, read their peak RSS.
//! * [`api`] — the companion's HTTP API with real WebAuthn ceremonies (the
//!   tests' HTTP client and software passkey, from `kms-test-support`).
//! * [`http1`] — a minimal keep-alive HTTP/1.1 client for the hot loop
//!   (one request in flight per connection, nothing else on the CPU).
//! * [`raw`] — the in-process baseline: raw k256 signing throughput.
//! * [`plot`] — the pictures of BENCHMARKS.md (SVG), drawn from the drivers' figures.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod api;
pub mod http1;
pub mod plot;
pub mod procs;
pub mod raw;
