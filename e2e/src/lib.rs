//! End-to-end test support for the agent key companion.
//!
//! - [`stack::Stack`] runs `anvil/stack.sh` (anvil + canonical EntryPoints v0.7/v0.8 + the
//!   project's contracts + the Alto bundler) as a child process, waits for the JSON file it
//!   writes, and stops it when dropped.
//! - [`ta::TaSim`] runs a `ta-sim` process (test seeding enabled) on a temporary directory.
//! - [`owner`]: a software-passkey wallet owner and its agents, through the TA.
//! - [`chain::ChainEnv`]: a `kms_chain` client for one EntryPoint version of a stack, plus test
//!   helpers (balances, the EntryPoint's own verdict on an operation).
//! - [`companion::Companion`]: the companion server (in-process, free port) over its own
//!   `ta-sim`, with the stack's chain settings, and an HTTP client doing real WebAuthn ceremonies.
//! - [`proxy::Proxy`]: a fault-injecting JSON-RPC proxy in front of the bundler.
//!
//! The workspace binaries the tests spawn (`ta-sim`, `companion`, `kms-admin`) are found or built
//! by `kms-test-bins` (`companion/test-bins`).
//!
//! The tests live in one binary, `e2e/tests/it/` (a module per area, one shared stack).

#![warn(missing_docs)]

pub mod chain;
pub mod companion;
pub mod owner;
pub mod proxy;
pub mod stack;
pub mod ta;
