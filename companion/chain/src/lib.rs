//! The chain side of the agent key companion: ERC-4337 UserOperations, the bundler, sessions.
//!
//! - [`userop`]: [`EntryPoint`](userop::EntryPoint) (version + address) and the userOpHash of
//!   each version.
//! - [`userop::v0_7`]: a [`UserOperation`](userop::v0_7::UserOperation) built with alloy types, its
//!   packed EntryPoint form, its userOpHash computed locally exactly as EntryPoint v0.7 does, and
//!   its ERC-4337 JSON-RPC form for bundlers.
//! - [`userop::v0_8`]: the EIP-712 userOpHash of EntryPoint v0.8 for the same operation.
//! - [`signature`]: the session signature (layout defined once in
//!   [`kms_proto::session_signature`], see `docs/ARCHITECTURE.md#session-signature`) in alloy's
//!   types, and stub signatures for gas estimation.
//! - [`bundler`]: a small JSON-RPC client for ERC-4337 bundlers (Alto and others) with typed errors
//!   that keep the bundler's code and message (e.g. `AA23 reverted`), and submission that retries
//!   transient failures with the identical operation only.
//! - [`http`]: timeouts and body caps on every request to the node and the bundler.
//! - [`account`]: the account's callData (`execute`/`executeBatch`) and factoryData, and the
//!   [`AccountKind`](account::AccountKind) (`AgentAccount` or ERC-7579) that decides callData,
//!   nonce keys and the validator's path.
//! - [`erc7579`]: third-party ERC-7579 accounts with the validator as their module: `execute(mode,
//!   executionCalldata)` and its decoding as the module path reads it, module installation.
//! - [`nonce`]: nonce keys (owner 0, one per agent key; on ERC-7579 accounts `validator ‖ lane ‖
//!   period`).
//! - [`session`]: session grants, the on-chain session, and the pre-check of an intent with
//!   machine-readable refusal codes.
//! - [`revert`]: decoding the validator's and EntryPoint's errors out of bundler refusals.
//! - [`node`]: [`NodeClient`](node::NodeClient), the node-only part (session reads, node fees,
//!   balances, the operator's `revokeSession`), usable without a bundler.
//! - [`client`]: [`ChainClient`](client::ChainClient), one EntryPoint on one chain: start-up
//!   checks, building (nonce, factory, fees, gas, hash), submission, session reads, the
//!   operator's `revokeSession` transaction.
//! - [`gas_reuse`]: gas limits reused per call shape, with the execution checked on the node
//!   and the bundler's refusals for gas told apart.
//! - [`operator`]: what the chain layer needs from a signer (the operator's `revokeSession`
//!   transaction) and the checks of what signers return; the TA itself is reached only through
//!   the companion's TEE handle.
//!
//! The contract bindings and canonical addresses are in the `kms-contracts` crate.

#![warn(missing_docs)]

pub mod account;
pub mod bundler;
pub mod client;
pub mod erc7579;
pub mod gas_reuse;
pub mod http;
pub mod node;
pub mod nonce;
pub mod operator;
pub mod revert;
pub mod session;
pub mod signature;
pub mod userop;

/// The URL type of [`client::ChainConfig`] (reqwest's).
pub use reqwest::Url;
