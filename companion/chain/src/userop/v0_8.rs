//! The userOpHash of EntryPoint v0.8 (EIP-712).
//!
//! v0.8 takes the same packed operation as v0.7 (use [`super::v0_7::UserOperation`]); only the hash
//! differs: `keccak256(0x1901 ‖ domainSeparator ‖ structHash)` with the domain
//! `EIP712Domain(name "ERC4337", version "1", chainId, verifyingContract = entryPoint)` and
//! `structHash = keccak256(abi.encode(PACKED_USEROP_TYPEHASH, sender, nonce, keccak256(initCode),
//! keccak256(callData), accountGasLimits, preVerificationGas, gasFees, keccak256(paymasterAndData)))`.
//!
//! EIP-7702 operations (initCode starting with the `0x7702` marker padded to 20 bytes): the
//! EntryPoint hashes `keccak256(delegate ‖ initCode[20..])` in place of `keccak256(initCode)`,
//! `delegate` being the sender's delegate when it validates. Locally that is the delegate of the
//! authorisation the operation carries ([`UserOperation::eip7702_auth`]); [`user_op_hash`] returns
//! `None` for a marked operation without one (its delegate is then whatever the chain holds).

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

/// The EIP-712 struct hash of the operation; `None` for an EIP-7702 operation without its
/// authorisation (see the module docs).
pub fn struct_hash(op: &UserOperation) -> Option<B256> {
    Some(keccak256(
        (
            packed_user_op_type_hash(),
            op.sender,
            op.nonce,
            init_code_hash(op)?,
            keccak256(&op.call_data),
            op.account_gas_limits(),
            op.pre_verification_gas,
            op.gas_fees(),
            keccak256(op.paymaster_and_data()),
        )
            .abi_encode(),
    ))
}

/// What the EntryPoint hashes for the initCode: `keccak256(initCode)`, or for an EIP-7702
/// operation `keccak256(delegate ‖ initCode[20..])` with the delegate of its authorisation
/// (`None` without one).
fn init_code_hash(op: &UserOperation) -> Option<B256> {
    let init_code = op.init_code();
    if !is_eip7702_init_code(op) {
        return Some(keccak256(&init_code));
    }
    let delegate = op.eip7702_auth.as_ref()?.address;
    Some(keccak256([delegate.as_slice(), &init_code[20..]].concat()))
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
/// it; `None` for an EIP-7702 operation that carries no authorisation (see the module docs).
pub fn user_op_hash(op: &UserOperation, entry_point: Address, chain_id: u64) -> Option<B256> {
    let struct_hash = struct_hash(op)?;
    let mut digest = Vec::with_capacity(66);
    digest.extend_from_slice(&[0x19, 0x01]);
    digest.extend_from_slice(domain_separator(entry_point, chain_id).as_slice());
    digest.extend_from_slice(struct_hash.as_slice());
    Some(keccak256(digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::userop::v0_7::{tests::vector_op, EIP7702_MARKER};
    use alloy::eips::eip7702::{Authorization, SignedAuthorization};
    use alloy::primitives::{b256, Bytes};

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

    fn authorization(delegate: Address, nonce: u64, r: u64) -> SignedAuthorization {
        SignedAuthorization::new_unchecked(
            Authorization {
                chain_id: U256::from(31337),
                address: delegate,
                nonce,
            },
            0,
            U256::from(r),
            U256::from(7),
        )
    }

    #[test]
    fn eip7702_hash_binds_the_delegate_and_nothing_else_of_the_authorisation() {
        let ep = kms_contracts::ENTRY_POINT_V08;
        let d1 = Address::repeat_byte(0xd1);
        let marked = vector_op().with_factory(EIP7702_MARKER, Bytes::new());
        // Without its authorisation the delegate is unknown: not hashed.
        assert_eq!(user_op_hash(&marked, ep, 31337), None);
        let op = vector_op().with_eip7702(authorization(d1, 5, 1));
        let h = user_op_hash(&op, ep, 31337).unwrap();
        // keccak256(initCode) replaced by keccak256(delegate): recomputed by hand.
        let mut plain = op.clone();
        plain.factory = None;
        plain.eip7702_auth = None;
        let with_delegate_hash = |init: B256| {
            let sh = keccak256(
                (
                    packed_user_op_type_hash(),
                    op.sender,
                    op.nonce,
                    init,
                    keccak256(&op.call_data),
                    op.account_gas_limits(),
                    op.pre_verification_gas,
                    op.gas_fees(),
                    keccak256(op.paymaster_and_data()),
                )
                    .abi_encode(),
            );
            keccak256([&[0x19, 0x01][..], &domain_separator(ep, 31337)[..], &sh[..]].concat())
        };
        assert_eq!(h, with_delegate_hash(keccak256(d1)));
        assert_ne!(h, with_delegate_hash(keccak256(op.init_code())));
        assert_ne!(h, user_op_hash(&plain, ep, 31337).unwrap());
        // Another delegate, another hash; the authorisation's nonce and signature are not hashed.
        let other = vector_op().with_eip7702(authorization(Address::repeat_byte(0xd2), 5, 1));
        assert_ne!(user_op_hash(&other, ep, 31337).unwrap(), h);
        let resigned = vector_op().with_eip7702(authorization(d1, 6, 2));
        assert_eq!(user_op_hash(&resigned, ep, 31337).unwrap(), h);
        // EntryPoint v0.7 knows no marker: refused rather than hashed wrongly.
        assert!(
            crate::userop::EntryPoint::canonical(crate::userop::EntryPointVersion::V07)
                .user_op_hash(&op, 31337)
                .is_err()
        );
    }

    #[test]
    fn eip7702_rpc_form() {
        let op = vector_op().with_eip7702(authorization(Address::repeat_byte(0xd1), 5, 1));
        let v = serde_json::to_value(op.to_rpc()).unwrap();
        assert_eq!(v["factory"], "0x7702", "{v}");
        let auth = &v["eip7702Auth"];
        assert_eq!(auth["chainId"], "0x7a69", "{v}");
        assert_eq!(auth["nonce"], "0x5", "{v}");
        assert_eq!(auth["yParity"], "0x0", "{v}");
        assert_eq!(
            auth["address"].as_str().unwrap().to_lowercase(),
            format!("{:#x}", Address::repeat_byte(0xd1))
        );
        let back = UserOperation::try_from(
            serde_json::from_value::<crate::userop::v0_7::RpcUserOperation>(v).unwrap(),
        )
        .unwrap();
        assert_eq!(back, op);
        assert!(is_eip7702_init_code(&back));
    }
}
