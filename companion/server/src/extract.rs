//! Request parsing: the JSON body extractor (256 KiB limit enforced while
//! reading, Content-Type not required, empty body = `{}`), hex and number
//! parsing with the statuses of DESIGN §6 (400 malformed, 422 invalid).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::MAX_BODY_BYTES;
use crate::error::ApiError;

/// A JSON request body.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge {
                    limit: MAX_BODY_BYTES,
                }
            } else {
                ApiError::bad_request("body_unreadable", rej.body_text())
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parse a JSON body (empty = `{}`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| {
        let code = if e.is_data() {
            "invalid_request"
        } else {
            "malformed_json"
        };
        ApiError::bad_request(code, format!("invalid JSON: {e}"))
    })
}

/// Deserialize a JSON value into a request type (400 on mismatch).
pub fn from_value<T: DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v)
        .map_err(|e| ApiError::bad_request("invalid_request", format!("invalid request: {e}")))
}

/// Hex bytes, `0x` optional. Malformed → 400.
pub fn hex_bytes(field: &str, s: &str) -> Result<Vec<u8>, ApiError> {
    let t = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    hex::decode(t)
        .map_err(|_| ApiError::bad_request("invalid_hex", format!("{field} is not valid hex")))
}

/// Exactly `N` hex bytes. Malformed → 400, wrong length → 422.
pub fn hex_fixed<const N: usize>(field: &str, s: &str) -> Result<[u8; N], ApiError> {
    let v = hex_bytes(field, s)?;
    v.as_slice().try_into().map_err(|_| {
        ApiError::unprocessable(
            "invalid_length",
            format!("{field} must be exactly {N} bytes, got {}", v.len()),
        )
    })
}

/// `0x` + lowercase hex.
pub fn hex0x(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + b.len() * 2);
    s.push_str("0x");
    s.push_str(&hex::encode(b));
    s
}

/// A non-negative integer given as a JSON number, a decimal string, or a
/// `0x` hex string, as 32 big-endian bytes. Malformed → 400, too large → 422.
pub fn uint256(field: &str, v: &Value) -> Result<[u8; 32], ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_number",
            format!("{field} is not a non-negative integer"),
        )
    };
    let big = || ApiError::unprocessable("invalid_value", format!("{field} does not fit 256 bits"));
    let mut out = [0u8; 32];
    match v {
        Value::Number(n) => {
            let x = n.as_u64().ok_or_else(bad)?;
            out[24..].copy_from_slice(&x.to_be_bytes());
        }
        Value::String(s) => {
            if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                let h = if h.len() % 2 == 1 {
                    format!("0{h}")
                } else {
                    h.to_owned()
                };
                let b = hex::decode(&h).map_err(|_| {
                    ApiError::bad_request("invalid_hex", format!("{field} is not valid hex"))
                })?;
                let b: &[u8] = {
                    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
                    &b[first..]
                };
                if b.len() > 32 {
                    return Err(big());
                }
                out[32 - b.len()..].copy_from_slice(b);
            } else {
                if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
                    return Err(bad());
                }
                for d in s.bytes() {
                    let mut carry = u32::from(d - b'0');
                    for byte in out.iter_mut().rev() {
                        let x = u32::from(*byte) * 10 + carry;
                        *byte = (x & 0xff) as u8;
                        carry = x >> 8;
                    }
                    if carry != 0 {
                        return Err(big());
                    }
                }
            }
        }
        _ => return Err(bad()),
    }
    Ok(out)
}

/// [`uint256`] that must fit `u128`.
pub fn uint128(field: &str, v: &Value) -> Result<u128, ApiError> {
    let b = uint256(field, v)?;
    if b[..16].iter().any(|&x| x != 0) {
        return Err(ApiError::unprocessable(
            "invalid_value",
            format!("{field} does not fit 128 bits"),
        ));
    }
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[16..]);
    Ok(u128::from_be_bytes(a))
}

/// [`uint256`] that must fit `u64`.
pub fn uint64(field: &str, v: &Value) -> Result<u64, ApiError> {
    u64::try_from(uint128(field, v)?).map_err(|_| {
        ApiError::unprocessable("invalid_value", format!("{field} does not fit 64 bits"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers() {
        assert_eq!(uint64("n", &json!(5)).unwrap(), 5);
        assert_eq!(uint64("n", &json!("0x10")).unwrap(), 16);
        assert_eq!(uint64("n", &json!("0xf")).unwrap(), 15);
        assert_eq!(
            uint128("n", &json!("1000000000000000000")).unwrap(),
            10u128.pow(18)
        );
        let max = "115792089237316195423570985008687907853269984665640564039457584007913129639935";
        assert_eq!(uint256("n", &json!(max)).unwrap(), [0xff; 32]);
        let over = "115792089237316195423570985008687907853269984665640564039457584007913129639936";
        assert_eq!(uint256("n", &json!(over)).unwrap_err().status(), 422);
        assert_eq!(uint64("n", &json!("-1")).unwrap_err().status(), 400);
        assert_eq!(uint64("n", &json!("0xzz")).unwrap_err().status(), 400);
        assert_eq!(uint64("n", &json!(true)).unwrap_err().status(), 400);
        assert_eq!(
            uint64("n", &json!("18446744073709551616"))
                .unwrap_err()
                .status(),
            422
        );
    }

    #[test]
    fn hex_and_json() {
        assert_eq!(hex_fixed::<2>("h", "0xabcd").unwrap(), [0xab, 0xcd]);
        assert_eq!(hex_fixed::<2>("h", "abcd").unwrap(), [0xab, 0xcd]);
        assert_eq!(hex_fixed::<2>("h", "0xab").unwrap_err().status(), 422);
        assert_eq!(hex_fixed::<2>("h", "0xabc").unwrap_err().status(), 400);
        assert_eq!(parse_json::<Value>(b"").unwrap(), json!({}));
        assert_eq!(
            parse_json::<Value>(b"{").unwrap_err().code(),
            "malformed_json"
        );
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct R {
            a: u8,
        }
        assert_eq!(
            parse_json::<R>(b"{\"a\":\"x\"}").unwrap_err().code(),
            "invalid_request"
        );
    }
}
