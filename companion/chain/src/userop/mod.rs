//! ERC-4337 UserOperations, per EntryPoint version.
//!
//! v0.7 and v0.8 share the packed format and the JSON-RPC form ([`v0_7::UserOperation`] serves
//! both); they differ in the userOpHash (v0.7: `keccak256(abi.encode(keccak256(packed fields),
//! entryPoint, chainId))`, v0.8: EIP-712). [`EntryPoint`] names one deployed EntryPoint and
//! computes the right hash for its version.

use std::fmt;
use std::str::FromStr;

use alloy::primitives::{Address, B256};

pub mod v0_7;
pub mod v0_8;

/// A version of the ERC-4337 EntryPoint contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryPointVersion {
    /// EntryPoint v0.7 (canonical `0x0000000071727De22E5E9d8BAf0edAc6f37da032`).
    V07,
    /// EntryPoint v0.8 (canonical `0x4337084D9E255Ff0702461CF8895CE9E3b5Ff108`).
    V08,
}

impl EntryPointVersion {
    /// Both versions, oldest first.
    pub const ALL: [EntryPointVersion; 2] = [EntryPointVersion::V07, EntryPointVersion::V08];

    /// The canonical (deterministic-deployment) address of this version.
    pub fn canonical_address(self) -> Address {
        match self {
            EntryPointVersion::V07 => kms_contracts::ENTRY_POINT_V07,
            EntryPointVersion::V08 => kms_contracts::ENTRY_POINT_V08,
        }
    }

    /// `"v0.7"` or `"v0.8"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryPointVersion::V07 => "v0.7",
            EntryPointVersion::V08 => "v0.8",
        }
    }
}

impl fmt::Display for EntryPointVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no supported EntryPoint version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown EntryPoint version {0:?} (expected v0.7 or v0.8)")]
pub struct UnknownEntryPointVersion(pub String);

impl FromStr for EntryPointVersion {
    type Err = UnknownEntryPointVersion;

    /// Accepts `v0.7`/`0.7`/`v07` and `v0.8`/`0.8`/`v08`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().trim_start_matches('v') {
            "0.7" | "07" | "0.7.0" => Ok(EntryPointVersion::V07),
            "0.8" | "08" | "0.8.0" => Ok(EntryPointVersion::V08),
            _ => Err(UnknownEntryPointVersion(s.to_owned())),
        }
    }
}

/// The operation cannot be hashed locally: an EIP-7702 operation without its authorisation on
/// v0.8 (its hash binds the sender's delegate, see [`v0_8`]), or any EIP-7702 operation on v0.7
/// (which knows no EIP-7702 marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an EIP-7702 user operation needs EntryPoint v0.8 and its authorisation to be hashed")]
pub struct UnhashableOperation;

/// One deployed EntryPoint: its version and address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryPoint {
    /// The version, which decides the hash.
    pub version: EntryPointVersion,
    /// Where it is deployed.
    pub address: Address,
}

impl EntryPoint {
    /// The EntryPoint of `version` at its canonical address.
    pub fn canonical(version: EntryPointVersion) -> Self {
        Self {
            version,
            address: version.canonical_address(),
        }
    }

    /// The userOpHash of `op` for this EntryPoint on `chain_id`, as its `getUserOpHash` computes
    /// it (the signature is not part of it).
    pub fn user_op_hash(
        &self,
        op: &v0_7::UserOperation,
        chain_id: u64,
    ) -> Result<B256, UnhashableOperation> {
        match self.version {
            EntryPointVersion::V07 if op.eip7702_auth.is_some() => Err(UnhashableOperation),
            EntryPointVersion::V07 => Ok(op.hash(self.address, chain_id)),
            EntryPointVersion::V08 => {
                v0_8::user_op_hash(op, self.address, chain_id).ok_or(UnhashableOperation)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_print() {
        for v in EntryPointVersion::ALL {
            assert_eq!(v.as_str().parse::<EntryPointVersion>().unwrap(), v);
        }
        assert_eq!(
            "0.8".parse::<EntryPointVersion>().unwrap(),
            EntryPointVersion::V08
        );
        assert!("v0.6".parse::<EntryPointVersion>().is_err());
    }

    #[test]
    fn dispatches_the_hash_by_version() {
        let op = v0_7::tests::vector_op();
        let v07 = EntryPoint::canonical(EntryPointVersion::V07);
        let v08 = EntryPoint::canonical(EntryPointVersion::V08);
        assert_eq!(
            v07.user_op_hash(&op, 31337).unwrap(),
            op.hash(v07.address, 31337)
        );
        assert_eq!(
            v08.user_op_hash(&op, 31337).unwrap(),
            v0_8::user_op_hash(&op, v08.address, 31337).unwrap()
        );
    }
}
