//! ERC-4337 UserOperations, per EntryPoint version.
//!
//! v0.7 and v0.8 share the packed format and the JSON-RPC form; they differ in the userOpHash
//! (v0.7: `keccak256(abi.encode(keccak256(packed fields), entryPoint, chainId))`, v0.8: EIP-712).

pub mod v0_7;
pub mod v0_8;
