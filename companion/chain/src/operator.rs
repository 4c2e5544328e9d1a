//! What the chain layer needs from a signer, and how it checks what a signer returns.
//!
//! - [`OperatorSigner`] is what [`crate::client::ChainClient::revoke_session`] needs: the operator
//!   address and a signed `revokeSession` transaction ([`RevokeSessionTx`] within the TA's
//!   ceilings, [`revoke_fees`]). The companion implements it with the TA's operator key through
//!   its one TEE handle (`kms_companion::tee`); this crate never talks to the TA itself.
//! - [`owner_sign_body`] is the exact body the owner's passkey authorises for a UserOperation
//!   (`SignHash` of the userOpHash itself at the owner path: `AgentAccount` takes the owner's raw
//!   ECDSA signature over the userOpHash, so no EIP-191 personal message doubles as one).
//! - [`verify_raw`] and [`verify_eip191`] check the signatures that come back (owner: raw ECDSA
//!   over the userOpHash; agent: EIP-191 over it) before anyone submits them.
//!
//! Errors carry no JWT, assertion or signature bytes.

use std::future::Future;

use alloy::primitives::{Address, Bytes, Signature, B256};
use kms_proto::{HdPath, SignHashBody, WalletId};

/// The fields of the operator's `revokeSession` transaction that the host chooses (the TA
/// builds the call data from `validator`, `account` and `agent_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevokeSessionTx {
    /// Chain id.
    pub chain_id: u64,
    /// The operator's account nonce.
    pub nonce: u64,
    /// Max priority fee per gas.
    pub max_priority_fee_per_gas: u128,
    /// Max fee per gas.
    pub max_fee_per_gas: u128,
    /// Gas limit.
    pub gas_limit: u64,
    /// The SessionKeyValidator.
    pub validator: Address,
    /// The account whose session is revoked.
    pub account: Address,
    /// The agent key whose session is revoked.
    pub agent_key: Address,
}

/// The gas limit and fees of a `revokeSession` transaction, within the TA's ceilings
/// ([`kms_proto::operator`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevokeFees {
    /// Gas limit.
    pub gas_limit: u64,
    /// Max fee per gas.
    pub max_fee_per_gas: u128,
    /// Max priority fee per gas.
    pub max_priority_fee_per_gas: u128,
}

/// Why the operator's transaction cannot be made within the TA's ceilings (the TA would refuse
/// to sign it, or it could not be included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OperatorCeiling {
    /// The node's gas estimate is above the TA's gas-limit ceiling.
    #[error(
        "revokeSession needs {estimate} gas by the node's estimate, above the TA's gas-limit \
         ceiling of {max}"
    )]
    Gas {
        /// The node's estimate.
        estimate: u64,
        /// [`kms_proto::operator::MAX_GAS_LIMIT`].
        max: u64,
    },
    /// The network's base fee is at or above the TA's fee ceiling: no transaction it signs
    /// could be included now.
    #[error(
        "the network's base fee of {base_fee} wei per gas is not below the TA's ceiling of {max} \
         wei per gas for the operator's transactions; retry when fees fall"
    )]
    BaseFee {
        /// The latest block's base fee.
        base_fee: u128,
        /// [`kms_proto::operator::MAX_FEE_PER_GAS`].
        max: u128,
    },
}

/// Fits a `revokeSession` transaction under the TA's ceilings: the gas limit is the node's
/// `estimate` plus 20 %, at most [`kms_proto::operator::MAX_GAS_LIMIT`]; the max fee is twice
/// `base_fee` plus `priority`, at most [`kms_proto::operator::MAX_FEE_PER_GAS`]; the tip is at
/// most what is left above the base fee. Fails when the estimate or the base fee alone is above
/// a ceiling.
pub fn revoke_fees(
    base_fee: u128,
    priority: u128,
    estimate: u64,
) -> Result<RevokeFees, OperatorCeiling> {
    use kms_proto::operator::{MAX_FEE_PER_GAS, MAX_GAS_LIMIT};
    if estimate > MAX_GAS_LIMIT {
        return Err(OperatorCeiling::Gas {
            estimate,
            max: MAX_GAS_LIMIT,
        });
    }
    if base_fee >= MAX_FEE_PER_GAS {
        return Err(OperatorCeiling::BaseFee {
            base_fee,
            max: MAX_FEE_PER_GAS,
        });
    }
    let max_fee_per_gas = base_fee
        .saturating_mul(2)
        .saturating_add(priority)
        .min(MAX_FEE_PER_GAS);
    let fees = RevokeFees {
        gas_limit: estimate.saturating_add(estimate / 5).min(MAX_GAS_LIMIT),
        max_fee_per_gas,
        max_priority_fee_per_gas: priority.min(max_fee_per_gas - base_fee),
    };
    debug_assert!(kms_proto::operator::check_fees(
        fees.gas_limit,
        fees.max_fee_per_gas,
        fees.max_priority_fee_per_gas
    )
    .is_ok());
    Ok(fees)
}

/// A signed transaction, ready for `eth_sendRawTransaction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRevoke {
    /// The EIP-2718 envelope.
    pub raw: Bytes,
    /// The transaction hash.
    pub tx_hash: B256,
    /// The signer.
    pub from: Address,
}

/// A signer's own failure, kept as is for the caller that knows the signer (the companion's TEE
/// handle gives its `TeeError`: a TA refusal or the way to the TA failing).
pub type SignerFailure = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorSignerError {
    /// The signer (for the companion: the TA, or the way to it) failed or refused.
    #[error("TA error: {0}")]
    Signer(SignerFailure),
    /// The TA's answer names another signer than expected.
    #[error("signed by {got}, expected {expected}")]
    WrongSigner {
        /// Expected signer.
        expected: Address,
        /// Actual signer.
        got: Address,
    },
    /// The TA's signature is malformed or does not verify.
    #[error("the TA returned a bad signature: {0}")]
    BadSignature(&'static str),
}

/// Signs the operator's `revokeSession` transactions.
pub trait OperatorSigner: Send + Sync {
    /// The operator address (the session's revoker).
    fn address(&self) -> Address;

    /// Signs the transaction described by `tx`.
    fn sign_revoke_session(
        &self,
        tx: RevokeSessionTx,
    ) -> impl Future<Output = Result<SignedRevoke, OperatorSignerError>> + Send;
}

/// The body the owner's passkey authorises to sign a UserOperation: `SignHash` of
/// `user_op_hash` itself at the owner path (the account verifies the owner's raw ECDSA signature
/// over the userOpHash). The WebAuthn challenge is `SHA-256(TA nonce ‖ payload digest of this
/// body)` (see `kms_proto::authz`).
pub fn owner_sign_body(wallet_id: WalletId, user_op_hash: B256) -> SignHashBody {
    SignHashBody {
        wallet_id,
        path: HdPath::OWNER,
        hash: user_op_hash.0,
    }
}

/// Checks that `rsv` (65 bytes, `v` = 27/28) is `signer`'s ECDSA signature over `hash` itself
/// (what owners sign for a UserOperation of their `AgentAccount`).
pub fn verify_raw(rsv: &[u8], hash: B256, signer: Address) -> Result<(), OperatorSignerError> {
    let sig = parse_rsv(rsv)?;
    let recovered = sig
        .recover_address_from_prehash(&hash)
        .map_err(|_| OperatorSignerError::BadSignature("does not recover"))?;
    if recovered != signer {
        return Err(OperatorSignerError::BadSignature(
            "does not recover to the expected key",
        ));
    }
    Ok(())
}

fn parse_rsv(rsv: &[u8]) -> Result<Signature, OperatorSignerError> {
    let rsv: &[u8; 65] = rsv
        .try_into()
        .map_err(|_| OperatorSignerError::BadSignature("not 65 bytes"))?;
    if rsv[64] != 27 && rsv[64] != 28 {
        return Err(OperatorSignerError::BadSignature("v is not 27 or 28"));
    }
    Signature::from_raw_array(rsv).map_err(|_| OperatorSignerError::BadSignature("unparseable"))
}

/// Checks that `rsv` (65 bytes, `v` = 27/28) is `signer`'s signature over the EIP-191 hash of
/// `hash` (what agent keys sign for a UserOperation).
pub fn verify_eip191(rsv: &[u8], hash: B256, signer: Address) -> Result<(), OperatorSignerError> {
    let sig = parse_rsv(rsv)?;
    let recovered = sig
        .recover_address_from_msg(hash.as_slice())
        .map_err(|_| OperatorSignerError::BadSignature("does not recover"))?;
    if recovered != signer {
        return Err(OperatorSignerError::BadSignature(
            "does not recover to the expected key",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::b256;
    use alloy::signers::local::PrivateKeySigner;
    use alloy::signers::SignerSync;

    #[test]
    fn eip191_verification() {
        let key = PrivateKeySigner::random();
        let hash = b256!("0x6226d388b9eeafd16264b979d58847aaa287dd4c0724259f414ea468434dbf82");
        let sig = key.sign_message_sync(hash.as_slice()).unwrap().as_bytes();
        assert!(verify_eip191(&sig, hash, key.address()).is_ok());
        assert!(verify_eip191(&sig, B256::ZERO, key.address()).is_err());
        assert!(verify_eip191(&sig, hash, Address::ZERO).is_err());
        let mut bad_v = sig;
        bad_v[64] = 1;
        assert!(verify_eip191(&bad_v, hash, key.address()).is_err());
    }

    #[test]
    fn raw_verification_is_not_eip191() {
        let key = PrivateKeySigner::random();
        let hash = b256!("0x6226d388b9eeafd16264b979d58847aaa287dd4c0724259f414ea468434dbf82");
        let raw = key.sign_hash_sync(&hash).unwrap().as_bytes();
        assert!(verify_raw(&raw, hash, key.address()).is_ok());
        assert!(verify_eip191(&raw, hash, key.address()).is_err());
        let personal = key.sign_message_sync(hash.as_slice()).unwrap().as_bytes();
        assert!(verify_raw(&personal, hash, key.address()).is_err());
        assert!(verify_raw(&raw[..64], hash, key.address()).is_err());
    }

    #[test]
    fn owner_body_is_the_hash_at_the_owner_path() {
        let w = WalletId([3; 16]);
        let h = B256::repeat_byte(9);
        let body = owner_sign_body(w, h);
        assert_eq!(body.path, HdPath::OWNER);
        assert_eq!(body.hash, h.0);
        assert_eq!(body.wallet_id, w);
    }

    #[test]
    fn revoke_fees_stay_under_the_tas_ceilings() {
        use kms_proto::operator::{check_fees, MAX_FEE_PER_GAS, MAX_GAS_LIMIT};
        let gwei = 1_000_000_000u128;
        // The usual case: untouched.
        assert_eq!(
            revoke_fees(10 * gwei, gwei, 31_934),
            Ok(RevokeFees {
                gas_limit: 38_320,
                max_fee_per_gas: 21 * gwei,
                max_priority_fee_per_gas: gwei,
            })
        );
        // High fees: the max fee is capped, the tip fits under it.
        let f = revoke_fees(150 * gwei, 80 * gwei, 31_934).unwrap();
        assert_eq!(f.max_fee_per_gas, MAX_FEE_PER_GAS);
        assert_eq!(f.max_priority_fee_per_gas, 50 * gwei);
        // A large estimate: the limit is capped, not the estimate's 20 % more.
        assert_eq!(
            revoke_fees(gwei, 0, MAX_GAS_LIMIT).unwrap().gas_limit,
            MAX_GAS_LIMIT
        );
        for (base, tip, gas) in [
            (0, 0, 21_000),
            (gwei, 10 * MAX_FEE_PER_GAS, 90_000),
            (MAX_FEE_PER_GAS - 1, MAX_FEE_PER_GAS, MAX_GAS_LIMIT),
        ] {
            let f = revoke_fees(base, tip, gas).unwrap();
            assert!(
                check_fees(f.gas_limit, f.max_fee_per_gas, f.max_priority_fee_per_gas).is_ok(),
                "{f:?}"
            );
            assert!(f.max_fee_per_gas >= base + f.max_priority_fee_per_gas);
        }
        // Above the ceilings: a clear refusal, nothing to sign.
        assert_eq!(
            revoke_fees(gwei, gwei, MAX_GAS_LIMIT + 1),
            Err(OperatorCeiling::Gas {
                estimate: MAX_GAS_LIMIT + 1,
                max: MAX_GAS_LIMIT
            })
        );
        assert_eq!(
            revoke_fees(MAX_FEE_PER_GAS, 0, 31_934),
            Err(OperatorCeiling::BaseFee {
                base_fee: MAX_FEE_PER_GAS,
                max: MAX_FEE_PER_GAS
            })
        );
    }
}
