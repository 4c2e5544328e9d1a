//! The userOpHash of EntryPoint v0.8 (EIP-712).
//!
//! v0.8 takes the same packed operation as v0.7 (use [`super::v0_7::UserOperation`]); only the hash
//! differs: `keccak256(0x1901 ‖ domainSeparator ‖ structHash)` with the domain
//! `EIP712Domain(name "ERC4337", version "1", chainId, verifyingContract = entryPoint)` and
//! `structHash = keccak256(abi.encode(PACKED_USEROP_TYPEHASH, sender, nonce, keccak256(initCode),
//! keccak256(callData), accountGasLimits, preVerificationGas, gasFees, keccak256(paymasterAndData)))`.
//!
//! Not covered: EIP-7702 operations (initCode starting with the `0x7702` marker), whose hash uses
//! the sender's on-chain delegate address; [`user_op_hash`] returns `None` for them.

use alloy::primitives::{keccak256, Address, B256, U256};
use alloy::sol_types::SolValue;

use super::v0_7::UserOperation;

/// The EIP-712 type string of a packed user operation in EntryPoint v0.8.
pub const PACKED_USEROP_TYPE: &str = "PackedUserOperation(address sender,uint256 nonce,bytes initCode,bytes callData,bytes32 accountGasLimits,uint256 preVerificationGas,bytes32 gasFees,bytes paymasterAndData)";

/// EIP-712 domain name of EntryPoint v0.8.
pub const DOMAIN_NAME: &str = "ERC4337";

/// EIP-712 domain version of EntryPoint v0.8.
pub const DOMAIN_VERSION: &str = "1";

/// `keccak256(PACKED_USEROP_TYPE)` (what `EntryPoint.getPackedUserOpTypeHash()` returns).
pub fn packed_user_op_type_hash() -> B256 {
    keccak256(PACKED_USEROP_TYPE)
}

/// The EIP-712 domain separator of the v0.8 EntryPoint at `entry_point` on `chain_id` (what
/// `EntryPoint.getDomainSeparatorV4()` returns).
pub fn domain_separator(entry_point: Address, chain_id: u64) -> B256 {
    keccak256(
        (
            keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
            keccak256(DOMAIN_NAME),
            keccak256(DOMAIN_VERSION),
            U256::from(chain_id),
            entry_point,
        )
            .abi_encode(),
    )
}

/// The EIP-712 struct hash of the operation.
pub fn struct_hash(op: &UserOperation) -> B256 {
    keccak256(
        (
            packed_user_op_type_hash(),
            op.sender,
            op.nonce,
            keccak256(op.init_code()),
            keccak256(&op.call_data),
            op.account_gas_limits(),
            op.pre_verification_gas,
            op.gas_fees(),
            keccak256(op.paymaster_and_data()),
        )
            .abi_encode(),
    )
}

/// True when the operation's initCode is an EIP-7702 authorisation marker (`0x7702` padded to 20
/// bytes, optionally followed by data).
pub fn is_eip7702_init_code(op: &UserOperation) -> bool {
    let init_code = op.init_code();
    let mut marker = [0u8; 20];
    marker[..2].copy_from_slice(&[0x77, 0x02]);
    init_code.len() >= 20 && init_code[..20] == marker
}

/// The userOpHash for EntryPoint v0.8 at `entry_point` on `chain_id`, as `getUserOpHash` computes
/// it; `None` for EIP-7702 operations (see the module docs).
pub fn user_op_hash(op: &UserOperation, entry_point: Address, chain_id: u64) -> Option<B256> {
    if is_eip7702_init_code(op) {
        return None;
    }
    let mut digest = Vec::with_capacity(66);
    digest.extend_from_slice(&[0x19, 0x01]);
    digest.extend_from_slice(domain_separator(entry_point, chain_id).as_slice());
    digest.extend_from_slice(struct_hash(op).as_slice());
    Some(keccak256(digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::userop::v0_7::tests::vector_op;
    use alloy::primitives::b256;

    /// userOpHash of `vector_op` by EntryPoint v0.8's own `getUserOpHash` (canonical bytecode on
    /// anvil, chain id 31337).
    const VECTOR_HASH_V08: B256 =
        b256!("0x9346440775ac135b6e34cdef2187622866fdfb94b4f09528bea840d895224fc9");

    #[test]
    fn type_hash() {
        // EntryPoint v0.8 getPackedUserOpTypeHash().
        assert_eq!(
            packed_user_op_type_hash(),
            b256!("0x29a0bca4af4be3421398da00295e58e6d7de38cb492214754cb6a47507dd6f8e")
        );
    }

    #[test]
    fn domain_separator_matches_entry_point_v08() {
        // EntryPoint v0.8 getDomainSeparatorV4() on anvil (chain id 31337).
        assert_eq!(
            domain_separator(kms_contracts::ENTRY_POINT_V08, 31337),
            b256!("0x484c72667c677e410ab6fec54017fef39d5d62145471a1294918478f6ffa6981")
        );
    }

    #[test]
    fn hash_matches_entry_point_v08() {
        assert_eq!(
            user_op_hash(&vector_op(), kms_contracts::ENTRY_POINT_V08, 31337),
            Some(VECTOR_HASH_V08)
        );
    }

    #[test]
    fn differs_from_v07() {
        let op = vector_op();
        assert_ne!(
            user_op_hash(&op, kms_contracts::ENTRY_POINT_V08, 31337).unwrap(),
            op.hash(kms_contracts::ENTRY_POINT_V08, 31337)
        );
    }

    #[test]
    fn eip7702_is_not_hashed_locally() {
        let mut marker = [0u8; 20];
        marker[..2].copy_from_slice(&[0x77, 0x02]);
        let op = vector_op().with_factory(
            alloy::primitives::Address::from(marker),
            alloy::primitives::Bytes::new(),
        );
        assert_eq!(
            user_op_hash(&op, kms_contracts::ENTRY_POINT_V08, 31337),
            None
        );
    }
}
