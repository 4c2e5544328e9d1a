//! Ethereum transactions, built and encoded with alloy's consensus types.

use crate::keys::DerivedKey;
use alloc::vec::Vec;
use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope, TxLegacy};
use alloy_eips::eip2718::Encodable2718;
use alloy_eips::eip2930::{AccessList, AccessListItem as AlloyAccessListItem};
use alloy_primitives::{keccak256, Address, Bytes, Signature, TxKind, B256, U256};
use kms_proto::{SignedTransaction, TaError, Transaction};

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
