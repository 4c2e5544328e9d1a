//! UserOperations for EntryPoint v0.7.
//!
//! [`UserOperation`] holds the unpacked fields (as bundlers take them over JSON-RPC). It converts
//! to the packed on-chain form ([`UserOperation::to_packed`]), computes its userOpHash locally
//! ([`UserOperation::hash`], identical to `EntryPoint.getUserOpHash`), and converts to and from the
//! ERC-4337 v0.7 JSON-RPC form ([`RpcUserOperation`]).

use alloy::eips::eip7702::SignedAuthorization;
use alloy::primitives::{address, keccak256, Address, Bytes, B256, U256};
use alloy::sol_types::SolValue;
use kms_contracts::PackedUserOperation;
use serde::{Deserialize, Serialize};

/// An ERC-4337 v0.7 user operation, unpacked.
///
/// Build one with [`UserOperation::new`] and the `with_*` methods; every field is public too.
/// Gas limits that the packed form stores in 16 bytes are `u128`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserOperation {
    /// The account.
    pub sender: Address,
    /// Nonce: key (upper 192 bits) and sequence (lower 64 bits), from `EntryPoint.getNonce`.
    pub nonce: U256,
    /// The factory deploying the account in this operation, if any.
    pub factory: Option<Address>,
    /// Call data for the factory (ignored without a factory).
    pub factory_data: Bytes,
    /// The call the EntryPoint makes on the account.
    pub call_data: Bytes,
    /// Gas for the execution phase.
    pub call_gas_limit: u128,
    /// Gas for the validation phase (including deployment).
    pub verification_gas_limit: u128,
    /// Gas paid for the bundler's overhead.
    pub pre_verification_gas: U256,
    /// Maximum fee per gas (EIP-1559).
    pub max_fee_per_gas: u128,
    /// Maximum priority fee per gas (EIP-1559).
    pub max_priority_fee_per_gas: u128,
    /// The paymaster, if any.
    pub paymaster: Option<Address>,
    /// Gas for the paymaster's validation (ignored without a paymaster).
    pub paymaster_verification_gas_limit: u128,
    /// Gas for the paymaster's postOp (ignored without a paymaster).
    pub paymaster_post_op_gas_limit: u128,
    /// Data for the paymaster (ignored without a paymaster).
    pub paymaster_data: Bytes,
    /// The account-specific signature.
    pub signature: Bytes,
    /// The sender's EIP-7702 authorisation, carried beside the operation (JSON-RPC
    /// `eip7702Auth`; the bundler puts it in the authorisation list of its bundle transaction).
    /// Set with [`UserOperation::with_eip7702`], which also sets the initCode marker.
    pub eip7702_auth: Option<SignedAuthorization>,
}

/// The factory field of an EIP-7702 operation: `0x7702` padded to 20 bytes. As initCode it tells
/// EntryPoint v0.8 that the sender is an EOA delegating with EIP-7702, and that the userOpHash
/// binds its delegate (see [`super::v0_8`]).
pub const EIP7702_MARKER: Address = address!("0x7702000000000000000000000000000000000000");

/// Gas limits of an operation, as `eth_estimateUserOperationGas` returns them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GasLimits {
    /// Gas paid for the bundler's overhead.
    pub pre_verification_gas: U256,
    /// Gas for the validation phase.
    pub verification_gas_limit: u128,
    /// Gas for the execution phase.
    pub call_gas_limit: u128,
    /// Gas for the paymaster's validation.
    pub paymaster_verification_gas_limit: u128,
    /// Gas for the paymaster's postOp.
    pub paymaster_post_op_gas_limit: u128,
}

impl UserOperation {
    /// An operation of `sender` with `nonce` making `call_data`; no factory, paymaster, gas or
    /// signature yet.
    pub fn new(sender: Address, nonce: U256, call_data: impl Into<Bytes>) -> Self {
        Self {
            sender,
            nonce,
            call_data: call_data.into(),
            ..Self::default()
        }
    }

    /// Deploys the account in this operation with `factory` called with `factory_data`.
    pub fn with_factory(mut self, factory: Address, factory_data: impl Into<Bytes>) -> Self {
        self.factory = Some(factory);
        self.factory_data = factory_data.into();
        self
    }

    /// Sets the gas limits (for example from [`crate::bundler::GasEstimate`]).
    pub fn with_gas(mut self, gas: GasLimits) -> Self {
        self.pre_verification_gas = gas.pre_verification_gas;
        self.verification_gas_limit = gas.verification_gas_limit;
        self.call_gas_limit = gas.call_gas_limit;
        self.paymaster_verification_gas_limit = gas.paymaster_verification_gas_limit;
        self.paymaster_post_op_gas_limit = gas.paymaster_post_op_gas_limit;
        self
    }

    /// Sets the EIP-1559 fees.
    pub fn with_fees(mut self, max_fee_per_gas: u128, max_priority_fee_per_gas: u128) -> Self {
        self.max_fee_per_gas = max_fee_per_gas;
        self.max_priority_fee_per_gas = max_priority_fee_per_gas;
        self
    }

    /// Sets a paymaster with its gas limits and data.
    pub fn with_paymaster(
        mut self,
        paymaster: Address,
        verification_gas_limit: u128,
        post_op_gas_limit: u128,
        data: impl Into<Bytes>,
    ) -> Self {
        self.paymaster = Some(paymaster);
        self.paymaster_verification_gas_limit = verification_gas_limit;
        self.paymaster_post_op_gas_limit = post_op_gas_limit;
        self.paymaster_data = data.into();
        self
    }

    /// Makes this the operation of an EOA delegating with EIP-7702: carries `auth` (whose
    /// `address` is the delegate) and sets the initCode to [`EIP7702_MARKER`], so that the
    /// userOpHash binds the delegate. The authorisation's own signature is not part of the hash: a
    /// stub can stand in for estimation and the real one be put in after signing.
    pub fn with_eip7702(mut self, auth: SignedAuthorization) -> Self {
        self.factory = Some(EIP7702_MARKER);
        self.factory_data = Bytes::new();
        self.eip7702_auth = Some(auth);
        self
    }

    /// Sets the signature.
    pub fn with_signature(mut self, signature: impl Into<Bytes>) -> Self {
        self.signature = signature.into();
        self
    }

    /// The gas limits of this operation.
    pub fn gas(&self) -> GasLimits {
        GasLimits {
            pre_verification_gas: self.pre_verification_gas,
            verification_gas_limit: self.verification_gas_limit,
            call_gas_limit: self.call_gas_limit,
            paymaster_verification_gas_limit: self.paymaster_verification_gas_limit,
            paymaster_post_op_gas_limit: self.paymaster_post_op_gas_limit,
        }
    }

    /// The most this operation can cost: what EntryPoint v0.7 and v0.8 require as prefund,
    /// `(preVerificationGas + verificationGasLimit + callGasLimit +
    /// paymasterVerificationGasLimit + paymasterPostOpGasLimit) × maxFeePerGas` (the paymaster
    /// limits count only with a paymaster). Without a paymaster it is what `SessionKeyValidator`
    /// charges to a session's gas budget. Saturates instead of overflowing.
    pub fn max_gas_cost(&self) -> U256 {
        let mut gas = self
            .pre_verification_gas
            .saturating_add(U256::from(self.verification_gas_limit))
            .saturating_add(U256::from(self.call_gas_limit));
        if self.paymaster.is_some() {
            gas = gas
                .saturating_add(U256::from(self.paymaster_verification_gas_limit))
                .saturating_add(U256::from(self.paymaster_post_op_gas_limit));
        }
        gas.saturating_mul(U256::from(self.max_fee_per_gas))
    }

    /// `factory ‖ factoryData`, or empty without a factory.
    pub fn init_code(&self) -> Bytes {
        match self.factory {
            Some(factory) => [factory.as_slice(), &self.factory_data[..]].concat().into(),
            None => Bytes::new(),
        }
    }

    /// `verificationGasLimit (16 bytes) ‖ callGasLimit (16 bytes)`.
    pub fn account_gas_limits(&self) -> B256 {
        pack_u128s(self.verification_gas_limit, self.call_gas_limit)
    }

    /// `maxPriorityFeePerGas (16 bytes) ‖ maxFeePerGas (16 bytes)`.
    pub fn gas_fees(&self) -> B256 {
        pack_u128s(self.max_priority_fee_per_gas, self.max_fee_per_gas)
    }

    /// `paymaster ‖ verificationGasLimit (16) ‖ postOpGasLimit (16) ‖ data`, or empty without a
    /// paymaster.
    pub fn paymaster_and_data(&self) -> Bytes {
        match self.paymaster {
            Some(paymaster) => [
                paymaster.as_slice(),
                &self.paymaster_verification_gas_limit.to_be_bytes(),
                &self.paymaster_post_op_gas_limit.to_be_bytes(),
                &self.paymaster_data[..],
            ]
            .concat()
            .into(),
            None => Bytes::new(),
        }
    }

    /// The packed form passed to the EntryPoint (`handleOps`, `getUserOpHash`).
    pub fn to_packed(&self) -> PackedUserOperation {
        PackedUserOperation {
            sender: self.sender,
            nonce: self.nonce,
            initCode: self.init_code(),
            callData: self.call_data.clone(),
            accountGasLimits: self.account_gas_limits(),
            preVerificationGas: self.pre_verification_gas,
            gasFees: self.gas_fees(),
            paymasterAndData: self.paymaster_and_data(),
            signature: self.signature.clone(),
        }
    }

    /// `keccak256` of the ABI encoding of the packed fields without the signature (the inner hash
    /// of `UserOperationLib.hash` in v0.7).
    pub fn packed_fields_hash(&self) -> B256 {
        keccak256(
            (
                self.sender,
                self.nonce,
                keccak256(self.init_code()),
                keccak256(&self.call_data),
                self.account_gas_limits(),
                self.pre_verification_gas,
                self.gas_fees(),
                keccak256(self.paymaster_and_data()),
            )
                .abi_encode(),
        )
    }

    /// The userOpHash for EntryPoint v0.7 at `entry_point` on `chain_id`:
    /// `keccak256(abi.encode(packed_fields_hash, entryPoint, chainId))`, as `getUserOpHash` computes
    /// it. The signature is not part of it.
    pub fn hash(&self, entry_point: Address, chain_id: u64) -> B256 {
        keccak256((self.packed_fields_hash(), entry_point, U256::from(chain_id)).abi_encode())
    }

    /// The ERC-4337 v0.7 JSON-RPC form.
    pub fn to_rpc(&self) -> RpcUserOperation {
        let paymaster = self.paymaster.is_some();
        RpcUserOperation {
            sender: self.sender,
            nonce: self.nonce,
            factory: self.factory,
            factory_data: self.factory.map(|_| self.factory_data.clone()),
            call_data: self.call_data.clone(),
            call_gas_limit: U256::from(self.call_gas_limit),
            verification_gas_limit: U256::from(self.verification_gas_limit),
            pre_verification_gas: self.pre_verification_gas,
            max_fee_per_gas: U256::from(self.max_fee_per_gas),
            max_priority_fee_per_gas: U256::from(self.max_priority_fee_per_gas),
            paymaster: self.paymaster,
            paymaster_verification_gas_limit: paymaster
                .then(|| U256::from(self.paymaster_verification_gas_limit)),
            paymaster_post_op_gas_limit: paymaster
                .then(|| U256::from(self.paymaster_post_op_gas_limit)),
            paymaster_data: paymaster.then(|| self.paymaster_data.clone()),
            signature: self.signature.clone(),
            eip7702_auth: self.eip7702_auth.clone(),
        }
    }
}

impl From<&UserOperation> for PackedUserOperation {
    fn from(op: &UserOperation) -> Self {
        op.to_packed()
    }
}

/// A gas value from JSON-RPC does not fit the 16 bytes the packed form gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} = {value} does not fit in 128 bits")]
pub struct GasOverflow {
    /// The JSON field name.
    pub field: &'static str,
    /// The value received.
    pub value: U256,
}

/// Narrows a JSON-RPC quantity to the 128 bits the packed form has for it.
pub(crate) fn to_u128(field: &'static str, value: U256) -> Result<u128, GasOverflow> {
    u128::try_from(value).map_err(|_| GasOverflow { field, value })
}

impl TryFrom<RpcUserOperation> for UserOperation {
    type Error = GasOverflow;

    fn try_from(op: RpcUserOperation) -> Result<Self, Self::Error> {
        Ok(Self {
            sender: op.sender,
            nonce: op.nonce,
            factory: op.factory,
            factory_data: op.factory_data.unwrap_or_default(),
            call_data: op.call_data,
            call_gas_limit: to_u128("callGasLimit", op.call_gas_limit)?,
            verification_gas_limit: to_u128("verificationGasLimit", op.verification_gas_limit)?,
            pre_verification_gas: op.pre_verification_gas,
            max_fee_per_gas: to_u128("maxFeePerGas", op.max_fee_per_gas)?,
            max_priority_fee_per_gas: to_u128("maxPriorityFeePerGas", op.max_priority_fee_per_gas)?,
            paymaster: op.paymaster,
            paymaster_verification_gas_limit: to_u128(
                "paymasterVerificationGasLimit",
                op.paymaster_verification_gas_limit.unwrap_or_default(),
            )?,
            paymaster_post_op_gas_limit: to_u128(
                "paymasterPostOpGasLimit",
                op.paymaster_post_op_gas_limit.unwrap_or_default(),
            )?,
            paymaster_data: op.paymaster_data.unwrap_or_default(),
            signature: op.signature,
            eip7702_auth: op.eip7702_auth,
        })
    }
}

/// The ERC-4337 v0.7 JSON-RPC form of a user operation (`eth_sendUserOperation`,
/// `eth_estimateUserOperationGas`): camelCase keys, quantities as hex strings, and the factory and
/// paymaster fields left out when there is no factory or paymaster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcUserOperation {
    /// The account.
    pub sender: Address,
    /// Nonce.
    pub nonce: U256,
    /// Factory, when the operation deploys the account. [`EIP7702_MARKER`] is written `"0x7702"`
    /// (the form bundlers expect; both forms are read).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "factory_field"
    )]
    pub factory: Option<Address>,
    /// Factory call data, with a factory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factory_data: Option<Bytes>,
    /// The call on the account.
    pub call_data: Bytes,
    /// Execution gas.
    pub call_gas_limit: U256,
    /// Validation gas.
    pub verification_gas_limit: U256,
    /// Bundler overhead gas.
    pub pre_verification_gas: U256,
    /// Maximum fee per gas.
    pub max_fee_per_gas: U256,
    /// Maximum priority fee per gas.
    pub max_priority_fee_per_gas: U256,
    /// Paymaster, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paymaster: Option<Address>,
    /// Paymaster validation gas, with a paymaster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paymaster_verification_gas_limit: Option<U256>,
    /// Paymaster postOp gas, with a paymaster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paymaster_post_op_gas_limit: Option<U256>,
    /// Paymaster data, with a paymaster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paymaster_data: Option<Bytes>,
    /// Signature.
    pub signature: Bytes,
    /// The sender's EIP-7702 authorisation, when it delegates in this operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eip7702_auth: Option<SignedAuthorization>,
}

/// The JSON form of the factory field: an address, or `"0x7702"` for [`EIP7702_MARKER`].
mod factory_field {
    use super::EIP7702_MARKER;
    use alloy::primitives::Address;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Address>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(a) if *a == EIP7702_MARKER => s.serialize_str("0x7702"),
            other => other.serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Address>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) if s.eq_ignore_ascii_case("0x7702") => Ok(Some(EIP7702_MARKER)),
            Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
        }
    }
}

fn pack_u128s(high: u128, low: u128) -> B256 {
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&high.to_be_bytes());
    out[16..].copy_from_slice(&low.to_be_bytes());
    B256::from(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloy::primitives::{address, b256, bytes};

    /// The operation of the vector below.
    pub(crate) fn vector_op() -> UserOperation {
        UserOperation::new(
            address!("0x1111111111111111111111111111111111111111"),
            U256::from(0x2a_u64) | (U256::from(7_u64) << 64),
            bytes!("b61d27f6000000000000000000000000222222222222222222222222222222222222222200000000000000000000000000000000000000000000000000000000000003e800000000000000000000000000000000000000000000000000000000000000600000000000000000000000000000000000000000000000000000000000000000"),
        )
        .with_factory(address!("0x3333333333333333333333333333333333333333"), bytes!("5fbfb9cf00"))
        .with_gas(GasLimits {
            pre_verification_gas: U256::from(50_000_u64),
            verification_gas_limit: 500_000,
            call_gas_limit: 100_000,
            ..GasLimits::default()
        })
        .with_fees(2_000_000_000, 1_000_000_000)
        .with_paymaster(address!("0x4444444444444444444444444444444444444444"), 60_000, 40_000, bytes!("c0ffee"))
        .with_signature(bytes!("deadbeef"))
    }

    /// userOpHash of `vector_op` computed by EntryPoint v0.7's own `getUserOpHash` (canonical
    /// bytecode on anvil, chain id 31337), not by this code.
    pub(crate) const VECTOR_HASH_V07: B256 =
        b256!("0x6226d388b9eeafd16264b979d58847aaa287dd4c0724259f414ea468434dbf82");

    #[test]
    fn packs_fields_like_the_entry_point() {
        let op = vector_op();
        let packed = op.to_packed();
        assert_eq!(
            packed.accountGasLimits,
            b256!("0x0000000000000000000000000007a120000000000000000000000000000186a0")
        );
        assert_eq!(
            packed.gasFees,
            b256!("0x0000000000000000000000003b9aca0000000000000000000000000077359400")
        );
        assert_eq!(
            packed.initCode,
            bytes!("33333333333333333333333333333333333333335fbfb9cf00")
        );
        assert_eq!(
            packed.paymasterAndData,
            bytes!("44444444444444444444444444444444444444440000000000000000000000000000ea6000000000000000000000000000009c40c0ffee")
        );
    }

    #[test]
    fn max_gas_cost_is_the_prefund_bound() {
        let op = vector_op();
        let g = op.gas();
        let limits = g.pre_verification_gas
            + U256::from(g.verification_gas_limit + g.call_gas_limit)
            + U256::from(g.paymaster_verification_gas_limit + g.paymaster_post_op_gas_limit);
        assert_eq!(op.max_gas_cost(), limits * U256::from(op.max_fee_per_gas));
        let mut no_paymaster = op.clone();
        no_paymaster.paymaster = None;
        assert_eq!(
            no_paymaster.max_gas_cost(),
            (g.pre_verification_gas + U256::from(g.verification_gas_limit + g.call_gas_limit))
                * U256::from(op.max_fee_per_gas)
        );
        let mut huge = no_paymaster;
        huge.pre_verification_gas = U256::MAX;
        assert_eq!(huge.max_gas_cost(), U256::MAX, "saturates");
    }

    #[test]
    fn hash_matches_entry_point_v07() {
        assert_eq!(
            vector_op().hash(kms_contracts::ENTRY_POINT_V07, 31337),
            VECTOR_HASH_V07
        );
    }

    #[test]
    fn hash_ignores_the_signature_and_binds_entry_point_and_chain() {
        let op = vector_op();
        let h = op.hash(kms_contracts::ENTRY_POINT_V07, 31337);
        assert_eq!(
            op.clone()
                .with_signature(Bytes::new())
                .hash(kms_contracts::ENTRY_POINT_V07, 31337),
            h
        );
        assert_ne!(op.hash(kms_contracts::ENTRY_POINT_V07, 1), h);
        assert_ne!(op.hash(kms_contracts::ENTRY_POINT_V08, 31337), h);
    }

    #[test]
    fn no_factory_no_paymaster_means_empty_fields() {
        let op = UserOperation::new(Address::ZERO, U256::ZERO, Bytes::new());
        assert!(op.init_code().is_empty());
        assert!(op.paymaster_and_data().is_empty());
    }

    #[test]
    fn rpc_form() {
        let json = serde_json::to_value(vector_op().to_rpc()).unwrap();
        assert_eq!(json["sender"], "0x1111111111111111111111111111111111111111");
        assert_eq!(json["nonce"], "0x7000000000000002a");
        assert_eq!(
            json["factory"],
            "0x3333333333333333333333333333333333333333"
        );
        assert_eq!(json["factoryData"], "0x5fbfb9cf00");
        assert_eq!(json["callGasLimit"], "0x186a0");
        assert_eq!(json["verificationGasLimit"], "0x7a120");
        assert_eq!(json["preVerificationGas"], "0xc350");
        assert_eq!(json["maxFeePerGas"], "0x77359400");
        assert_eq!(json["maxPriorityFeePerGas"], "0x3b9aca00");
        assert_eq!(
            json["paymaster"],
            "0x4444444444444444444444444444444444444444"
        );
        assert_eq!(json["paymasterVerificationGasLimit"], "0xea60");
        assert_eq!(json["paymasterPostOpGasLimit"], "0x9c40");
        assert_eq!(json["paymasterData"], "0xc0ffee");
        assert_eq!(json["signature"], "0xdeadbeef");

        let bare = serde_json::to_value(
            UserOperation::new(Address::ZERO, U256::ZERO, Bytes::new()).to_rpc(),
        )
        .unwrap();
        let keys: Vec<_> = bare.as_object().unwrap().keys().cloned().collect();
        for absent in [
            "factory",
            "factoryData",
            "paymaster",
            "paymasterVerificationGasLimit",
            "paymasterData",
        ] {
            assert!(
                !keys.contains(&absent.to_string()),
                "{absent} should be left out"
            );
        }
    }

    #[test]
    fn rpc_round_trip() {
        let op = vector_op();
        let json = serde_json::to_string(&op.to_rpc()).unwrap();
        let back: RpcUserOperation = serde_json::from_str(&json).unwrap();
        assert_eq!(UserOperation::try_from(back).unwrap(), op);
    }

    #[test]
    fn rpc_gas_overflow_is_an_error() {
        let mut rpc = vector_op().to_rpc();
        rpc.call_gas_limit = U256::from(1) << 128;
        assert_eq!(
            UserOperation::try_from(rpc).unwrap_err(),
            GasOverflow {
                field: "callGasLimit",
                value: U256::from(1) << 128
            }
        );
    }
}
