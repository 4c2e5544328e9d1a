//! The single versioned encoding.
//!
//! Request:  `[PROTOCOL_VERSION] ‖ postcard(request)`; the command id travels
//! beside it (as the OP-TEE command id, or in the simulator's frame header).
//!
//! Response: `[PROTOCOL_VERSION] ‖ [0x00] ‖ postcard(output)` on success,
//! `[PROTOCOL_VERSION] ‖ [0x01] ‖ postcard(TaError)` on failure.
//!
//! postcard never panics on malformed input; every failure here is a
//! [`ProtoError`].

use crate::{Command, ProtoError, TaError};
use alloc::vec::Vec;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// Largest message either side accepts (requests and responses).
pub const MAX_MESSAGE_LEN: usize = 256 * 1024;

const STATUS_OK: u8 = 0;
const STATUS_ERR: u8 = 1;

fn encode_with_header<T: Serialize + ?Sized>(header: &[u8], value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(header);
    // postcard's `to_extend` cannot fail for in-memory output of plain data.
    match postcard::to_extend(value, out) {
        Ok(v) => v,
        Err(_) => {
            // Unreachable for our types; keep the message well-formed as an
            // internal error rather than panicking.
            let mut v = Vec::with_capacity(3);
            v.extend_from_slice(&[PROTOCOL_VERSION, STATUS_ERR]);
            v.extend(postcard::to_allocvec(&TaError::Internal).unwrap_or_default());
            v
        }
    }
}

fn decode_exact<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtoError> {
    let (value, rest) = postcard::take_from_bytes::<T>(body).map_err(|_| ProtoError::Malformed)?;
    if !rest.is_empty() {
        return Err(ProtoError::TrailingBytes);
    }
    Ok(value)
}

fn check_version(bytes: &[u8]) -> Result<&[u8], ProtoError> {
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(ProtoError::TooLarge);
    }
    let (&v, rest) = bytes.split_first().ok_or(ProtoError::Empty)?;
    if v != PROTOCOL_VERSION {
        return Err(ProtoError::UnsupportedVersion(v));
    }
    Ok(rest)
}

/// Encode a request.
pub fn encode_request<C: Command>(request: &C) -> Vec<u8> {
    encode_with_header(&[PROTOCOL_VERSION], request)
}

/// Decode a request of a known command type.
pub fn decode_request<C: Command>(bytes: &[u8]) -> Result<C, ProtoError> {
    decode_exact(check_version(bytes)?)
}

/// Encode a response.
pub fn encode_response<O: Serialize>(result: Result<&O, &TaError>) -> Vec<u8> {
    match result {
        Ok(o) => encode_with_header(&[PROTOCOL_VERSION, STATUS_OK], o),
        Err(e) => encode_with_header(&[PROTOCOL_VERSION, STATUS_ERR], e),
    }
}

/// Decode a response: the outer `Result` is about the bytes, the inner one is
/// what the TA answered.
pub fn decode_response<O: DeserializeOwned>(
    bytes: &[u8],
) -> Result<Result<O, TaError>, ProtoError> {
    let rest = check_version(bytes)?;
    let (&status, body) = rest.split_first().ok_or(ProtoError::Empty)?;
    match status {
        STATUS_OK => Ok(Ok(decode_exact(body)?)),
        STATUS_ERR => Ok(Err(decode_exact(body)?)),
        s => Err(ProtoError::UnknownStatus(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use alloc::vec;
    use proptest::prelude::*;

    fn sample_assertion() -> PasskeyAssertion {
        PasskeyAssertion {
            authenticator_data: vec![1; 37],
            client_data_json: b"{}".to_vec(),
            signature: vec![0x30, 0x06, 2, 1, 1, 2, 1, 1],
        }
    }

    #[test]
    fn request_round_trips() {
        let req = SignHash {
            body: SignHashBody {
                wallet_id: WalletId([9; 16]),
                path: HdPath::agent(3),
                hash: [4; 32],
            },
            assertion: sample_assertion(),
        };
        let bytes = encode_request(&req);
        assert_eq!(bytes[0], PROTOCOL_VERSION);
        assert_eq!(decode_request::<SignHash>(&bytes).unwrap(), req);
    }

    #[test]
    fn sign_for_account_round_trips() {
        for content in [
            AccountSignContent::Message(b"hello".to_vec()),
            AccountSignContent::Hash([5; 32]),
        ] {
            let req = SignForAccount {
                body: SignForAccountBody {
                    wallet_id: WalletId([9; 16]),
                    path: HdPath::OWNER,
                    chain_id: u64::MAX,
                    account: [0xAB; 20],
                    content,
                },
                assertion: sample_assertion(),
            };
            let bytes = encode_request(&req);
            assert_eq!(decode_request::<SignForAccount>(&bytes).unwrap(), req);
            // Not a SignHash request.
            assert!(decode_request::<SignHash>(&bytes).is_err());
        }
    }

    #[test]
    fn sign_eip7702_delegation_round_trips() {
        for user_op_hash in [None, Some([6; 32])] {
            let req = SignEip7702Delegation {
                body: Eip7702DelegationBody {
                    wallet_id: WalletId([9; 16]),
                    chain_id: u64::MAX,
                    delegate: [0xDE; 20],
                    nonce: u64::MAX - 1,
                    user_op_hash,
                },
                assertion: sample_assertion(),
            };
            let bytes = encode_request(&req);
            assert_eq!(
                decode_request::<SignEip7702Delegation>(&bytes).unwrap(),
                req
            );
            assert!(decode_request::<SignHash>(&bytes).is_err());
        }
        let sig = |b: u8| Signature65 {
            bytes: vec![b; 65],
            address: [b; 20],
        };
        for user_op in [None, Some(sig(2))] {
            let out = Eip7702Signatures {
                authorization: sig(1),
                user_op,
            };
            let bytes = encode_response::<Eip7702Signatures>(Ok(&out));
            assert_eq!(
                decode_response::<Eip7702Signatures>(&bytes).unwrap(),
                Ok(out)
            );
        }
        let err = TaError::InvalidAuthorization;
        let bytes = encode_response::<Eip7702Signatures>(Err(&err));
        assert_eq!(
            decode_response::<Eip7702Signatures>(&bytes).unwrap(),
            Err(err)
        );
    }

    #[test]
    fn response_round_trips_ok_and_err() {
        let ok = AgentState {
            wallet_id: WalletId([1; 16]),
            agent_index: 2,
            address: [3; 20],
            generation: 4,
            revoked: false,
            created_at: 5,
            revoked_at: None,
        };
        let bytes = encode_response::<AgentState>(Ok(&ok));
        assert_eq!(decode_response::<AgentState>(&bytes).unwrap(), Ok(ok));
        let err = TaError::Jwt(JwtError::StaleGeneration);
        let bytes = encode_response::<AgentState>(Err(&err));
        assert_eq!(decode_response::<AgentState>(&bytes).unwrap(), Err(err));
    }

    #[test]
    fn bad_bytes_give_typed_errors() {
        assert_eq!(decode_request::<GetChallenge>(&[]), Err(ProtoError::Empty));
        assert_eq!(
            decode_request::<GetChallenge>(&[7, 0]),
            Err(ProtoError::UnsupportedVersion(7))
        );
        assert_eq!(
            decode_request::<GetChallenge>(&[PROTOCOL_VERSION, 1, 2]),
            Err(ProtoError::Malformed)
        );
        let mut ok = encode_request(&GetChallenge {
            wallet_id: WalletId([0; 16]),
        });
        ok.push(0);
        assert_eq!(
            decode_request::<GetChallenge>(&ok),
            Err(ProtoError::TrailingBytes)
        );
        assert_eq!(
            decode_request::<GetChallenge>(&vec![PROTOCOL_VERSION; MAX_MESSAGE_LEN + 1]),
            Err(ProtoError::TooLarge)
        );
        assert_eq!(
            decode_response::<Empty>(&[PROTOCOL_VERSION, 9]),
            Err(ProtoError::UnknownStatus(9))
        );
        assert_eq!(
            decode_response::<Empty>(&[PROTOCOL_VERSION]),
            Err(ProtoError::Empty)
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_request::<SignTransaction>(&bytes);
            let _ = decode_request::<CreateAgentKey>(&bytes);
            let _ = decode_request::<SignAgentUserOp>(&bytes);
            let _ = decode_response::<AgentCredential>(&bytes);
            let _ = decode_response::<Vec<JwtSecretInfo>>(&bytes);
        }

        #[test]
        fn truncated_requests_are_refused(cut in 0usize..200) {
            let req = CreateAgentKey {
                agent_index: 5,
                body: MintAgentBody { wallet_id: WalletId([3; 16]), label: "bot".into(), ttl_secs: 3600 },
                assertion: sample_assertion(),
            };
            let bytes = encode_request(&req);
            if cut < bytes.len() {
                prop_assert!(decode_request::<CreateAgentKey>(&bytes[..cut]).is_err());
            }
        }
    }
}
