//! Ethereum transactions, built and encoded with alloy's consensus types, and the other
//! Ethereum digests the TA signs (ERC-7739 for the `AgentAccount`, EIP-7702 authorisations).

use crate::keys::DerivedKey;
use alloc::vec::Vec;
use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope, TxLegacy};
use alloy_eips::eip2718::Encodable2718;
use alloy_eips::eip2930::{AccessList, AccessListItem as AlloyAccessListItem};
use alloy_eips::eip7702::Authorization;
use alloy_primitives::{keccak256, Address, Bytes, Signature, TxKind, B256, U256};
use kms_proto::{
    Eip7702DelegationBody, Eip7702Signatures, Signature65, SignedTransaction, TaError, Transaction,
};

/// Largest call data the TA signs over.
pub(crate) const MAX_TX_DATA: usize = 128 * 1024;

fn to_kind(to: &Option<Vec<u8>>) -> Result<TxKind, TaError> {
    match to {
        None => Ok(TxKind::Create),
        Some(bytes) if bytes.len() == 20 => Ok(TxKind::Call(Address::from_slice(bytes))),
        Some(bytes) => Err(TaError::InvalidRecipientLength(
            u32::try_from(bytes.len()).unwrap_or(u32::MAX),
        )),
    }
}

fn signature_of(raw: &[u8; 65]) -> Signature {
    Signature::new(
        U256::from_be_slice(&raw[..32]),
        U256::from_be_slice(&raw[32..64]),
        raw[64] == 28,
    )
}

/// Sign a transaction with `key`.
pub(crate) fn sign_transaction(
    key: &DerivedKey,
    tx: &Transaction,
) -> Result<SignedTransaction, TaError> {
    let (envelope, signing_hash, raw_sig) = match tx {
        Transaction::Legacy {
            chain_id,
            nonce,
            gas_price,
            gas_limit,
            to,
            value,
            data,
        } => {
            if data.len() > MAX_TX_DATA {
                return Err(TaError::InvalidTransaction);
            }
            let tx = TxLegacy {
                chain_id: Some(*chain_id),
                nonce: *nonce,
                gas_price: *gas_price,
                gas_limit: *gas_limit,
                to: to_kind(to)?,
                value: U256::from_be_bytes(*value),
                input: Bytes::copy_from_slice(data),
            };
            let hash = tx.signature_hash();
            let raw = key.sign_digest(&hash.0)?;
            let signed = tx.into_signed(signature_of(&raw));
            (TxEnvelope::Legacy(signed), hash, raw)
        }
        Transaction::Eip1559 {
            chain_id,
            nonce,
            max_priority_fee_per_gas,
            max_fee_per_gas,
            gas_limit,
            to,
            value,
            data,
            access_list,
        } => {
            if data.len() > MAX_TX_DATA || max_priority_fee_per_gas > max_fee_per_gas {
                return Err(TaError::InvalidTransaction);
            }
            let tx = TxEip1559 {
                chain_id: *chain_id,
                nonce: *nonce,
                gas_limit: *gas_limit,
                max_fee_per_gas: *max_fee_per_gas,
                max_priority_fee_per_gas: *max_priority_fee_per_gas,
                to: to_kind(to)?,
                value: U256::from_be_bytes(*value),
                access_list: AccessList(
                    access_list
                        .iter()
                        .map(|i| AlloyAccessListItem {
                            address: Address::from(i.address),
                            storage_keys: i.storage_keys.iter().map(|k| B256::from(*k)).collect(),
                        })
                        .collect(),
                ),
                input: Bytes::copy_from_slice(data),
            };
            let hash = tx.signature_hash();
            let raw = key.sign_digest(&hash.0)?;
            let signed = tx.into_signed(signature_of(&raw));
            (TxEnvelope::Eip1559(signed), hash, raw)
        }
    };
    let raw = envelope.encoded_2718();
    Ok(SignedTransaction {
        tx_hash: keccak256(&raw).0,
        raw,
        signing_hash: signing_hash.0,
        signature: raw_sig.to_vec(),
        from: key.address,
    })
}

/// Call data of `SessionKeyValidator.revokeSession(address account, address key)`.
pub(crate) fn revoke_session_calldata(account: &[u8; 20], agent_key: &[u8; 20]) -> Vec<u8> {
    let selector = keccak256(b"revokeSession(address,address)");
    let mut data = Vec::with_capacity(68);
    data.extend_from_slice(&selector[..4]);
    for a in [account, agent_key] {
        data.extend_from_slice(&[0u8; 12]);
        data.extend_from_slice(a);
    }
    data
}

/// The EIP-712 domain type of `AgentAccount` (no salt, no extensions).
const EIP712_DOMAIN_TYPE: &[u8] =
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)";
/// ERC-7739's `PersonalSign` type (OpenZeppelin `ERC7739Utils.PERSONAL_SIGN_TYPEHASH`).
const PERSONAL_SIGN_TYPE: &[u8] = b"PersonalSign(bytes prefixed)";

/// The EIP-712 domain separator of `AgentAccount` at `account` on `chain_id` (OpenZeppelin
/// `EIP712("AgentAccount", "1")._domainSeparatorV4()` as the account computes it):
/// `keccak256(abi.encode(typeHash, keccak256(name), keccak256(version), chainId, account))`.
pub(crate) fn agent_account_domain_separator(chain_id: u64, account: &[u8; 20]) -> [u8; 32] {
    let mut enc = [0u8; 5 * 32];
    enc[..32].copy_from_slice(&keccak256(EIP712_DOMAIN_TYPE).0);
    enc[32..64].copy_from_slice(&keccak256(kms_proto::AGENT_ACCOUNT_EIP712_NAME.as_bytes()).0);
    enc[64..96].copy_from_slice(&keccak256(kms_proto::AGENT_ACCOUNT_EIP712_VERSION.as_bytes()).0);
    enc[120..128].copy_from_slice(&chain_id.to_be_bytes());
    enc[140..160].copy_from_slice(account);
    keccak256(enc).0
}

/// The digest `AgentAccount`'s ERC-7739 `isValidSignature(hash, signature)` recovers the owner
/// from on its `PersonalSign` path (OpenZeppelin 5.4 `ERC7739._isValidNestedPersonalSignSignature`):
/// `keccak256(0x1901 ‖ domainSeparator ‖ keccak256(abi.encode(PERSONAL_SIGN_TYPEHASH, hash)))`.
pub(crate) fn erc7739_personal_sign_digest(
    chain_id: u64,
    account: &[u8; 20],
    hash: &[u8; 32],
) -> [u8; 32] {
    let mut st = [0u8; 64];
    st[..32].copy_from_slice(&keccak256(PERSONAL_SIGN_TYPE).0);
    st[32..].copy_from_slice(hash);
    let struct_hash = keccak256(st);
    let mut buf = [0u8; 2 + 32 + 32];
    buf[0] = 0x19;
    buf[1] = 0x01;
    buf[2..34].copy_from_slice(&agent_account_domain_separator(chain_id, account));
    buf[34..].copy_from_slice(&struct_hash.0);
    keccak256(buf).0
}

/// The EIP-7702 authorisation hash of `body`, `keccak256(0x05 ‖ rlp([chain_id, delegate,
/// nonce]))` (alloy's `Authorization::signature_hash`), or
/// [`TaError::InvalidAuthorization`] for chain id 0 (valid on every chain) or nonce `u64::MAX`
/// (EIP-7702 bounds it to `2^64 - 2`).
pub(crate) fn eip7702_authorization_hash(body: &Eip7702DelegationBody) -> Result<B256, TaError> {
    if body.chain_id == 0 || body.nonce == u64::MAX {
        return Err(TaError::InvalidAuthorization);
    }
    Ok(Authorization {
        chain_id: U256::from(body.chain_id),
        address: Address::from(body.delegate),
        nonce: body.nonce,
    }
    .signature_hash())
}

/// Sign the EIP-7702 authorisation of `body` with `key` (the owner key), and its userOpHash raw
/// when it carries one (RFC 6979, low s, `v` = 27/28).
pub(crate) fn sign_eip7702_delegation(
    key: &DerivedKey,
    body: &Eip7702DelegationBody,
) -> Result<Eip7702Signatures, TaError> {
    let hash = eip7702_authorization_hash(body)?;
    let authorization = Signature65 {
        bytes: key.sign_digest(&hash.0)?.to_vec(),
        address: key.address,
    };
    let user_op = match &body.user_op_hash {
        Some(h) => Some(Signature65 {
            bytes: key.sign_digest(h)?.to_vec(),
            address: key.address,
        }),
        None => None,
    };
    Ok(Eip7702Signatures {
        authorization,
        user_op,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    #[test]
    fn eip7702_hash_refuses_chain_id_0_and_the_last_nonce() {
        let body = Eip7702DelegationBody {
            wallet_id: kms_proto::WalletId([0; 16]),
            chain_id: 1,
            delegate: [0xDE; 20],
            nonce: u64::MAX - 1,
            user_op_hash: None,
        };
        let ok = eip7702_authorization_hash(&body).unwrap();
        assert_eq!(
            eip7702_authorization_hash(&Eip7702DelegationBody {
                chain_id: 0,
                ..body.clone()
            }),
            Err(TaError::InvalidAuthorization)
        );
        assert_eq!(
            eip7702_authorization_hash(&Eip7702DelegationBody {
                nonce: u64::MAX,
                ..body.clone()
            }),
            Err(TaError::InvalidAuthorization)
        );
        // The userOpHash is not part of the authorisation.
        assert_eq!(
            eip7702_authorization_hash(&Eip7702DelegationBody {
                user_op_hash: Some([1; 32]),
                ..body
            }),
            Ok(ok)
        );
    }

    /// Known answers computed independently with Foundry's `cast` (1.7.1):
    /// `cast keccak`, `cast abi-encode "f(bytes32,bytes32,bytes32,uint256,address)"`,
    /// `cast hash-message "hello agent"`, `cast concat-hex 0x1901 …`.
    #[test]
    fn erc7739_personal_sign_known_answer() {
        // 0x5FbDB2315678afecb367f032d93F642f64180aa3
        let account = [
            0x5f, 0xbd, 0xb2, 0x31, 0x56, 0x78, 0xaf, 0xec, 0xb3, 0x67, 0xf0, 0x32, 0xd9, 0x3f,
            0x64, 0x2f, 0x64, 0x18, 0x0a, 0xa3,
        ];
        assert_eq!(
            agent_account_domain_separator(31337, &account),
            hex32("caa8046a5b7d3b49a25b0a969acdf4c9a8b7efd7308183fdbdd334f16b652d92")
        );
        let hash = crate::keys::eip191_hash(b"hello agent");
        assert_eq!(
            hash,
            hex32("6af4a8cc01b96829bda5ca897a85f2500a16bfdcbd940dc031af5df81142eaef")
        );
        assert_eq!(
            erc7739_personal_sign_digest(31337, &account, &hash),
            hex32("95b7ec75ee7f70f1ab02687de571ad97181b262164a9bc2ec008fe5c7b8a1f97")
        );
        // Every input is bound.
        let d = erc7739_personal_sign_digest(31337, &account, &hash);
        assert_ne!(erc7739_personal_sign_digest(1, &account, &hash), d);
        let mut other = account;
        other[0] ^= 1;
        assert_ne!(erc7739_personal_sign_digest(31337, &other, &hash), d);
        let mut h2 = hash;
        h2[31] ^= 1;
        assert_ne!(erc7739_personal_sign_digest(31337, &account, &h2), d);
    }
}
