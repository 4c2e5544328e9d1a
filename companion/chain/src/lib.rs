//! The chain side of the agent key companion: ERC-4337 UserOperations and the bundler.
//!
//! - [`userop::v0_7`]: a [`UserOperation`](userop::v0_7::UserOperation) built with alloy types, its
//!   packed EntryPoint form, its userOpHash computed locally exactly as EntryPoint v0.7 does, and
//!   its ERC-4337 JSON-RPC form for bundlers.
//! - [`userop::v0_8`]: the EIP-712 userOpHash of EntryPoint v0.8 for the same operation.
//! - [`signature`]: the 106-byte session signature layout (DESIGN.md §5.1) and stub signatures for
//!   gas estimation.
//! - [`bundler`]: a small JSON-RPC client for ERC-4337 bundlers (Alto and others) with typed errors
//!   that keep the bundler's code and message (e.g. `AA23 reverted`).
//!
//! The contract bindings and canonical addresses are in the `kms-contracts` crate.

#![warn(missing_docs)]

pub mod bundler;
pub mod signature;
pub mod userop;
