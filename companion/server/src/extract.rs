//! Request parsing: the JSON body extractor (256 KiB limit enforced while
//! reading, Content-Type not required, empty body = `{}`), hex and number
//! parsing with the statuses of companion/README.md's *Errors* (400 malformed, 422 invalid).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::MAX_BODY_BYTES;
use crate::error::{ApiError, ErrorCode};
use crate::ratelimit::ClientAddr;
use crate::service::credentials::{AgentAuth, AgentCredentials, CredentialError, Presented};
use crate::state::AppState;

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
                ApiError::bad_request(ErrorCode::BodyUnreadable, rej.body_text())
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
        if let Some(refused) = unknown_field(&e) {
            return refused;
        }
        let code = if e.is_data() {
            ErrorCode::InvalidRequest
        } else {
            ErrorCode::MalformedJson
        };
        ApiError::bad_request(code, format!("invalid JSON: {e}"))
    })
}

/// A field the request type does not know (every request type denies unknown fields, so that a
/// misspelt field, such as `ttl` for `ttlSecs`, is refused instead of silently ignored): 422
/// `unknown_field` naming it (`details.field`, and the fields expected there).
fn unknown_field(e: &serde_json::Error) -> Option<ApiError> {
    let msg = e.to_string();
    let rest = msg.strip_prefix("unknown field `")?;
    let (field, tail) = rest.split_once('`')?;
    let expected: Vec<&str> = tail
        .split(" at line ")
        .next()
        .unwrap_or("")
        .split('`')
        .skip(1)
        .step_by(2)
        .collect();
    Some(ApiError::detailed(
        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::UnknownField,
        format!("unknown field {field:?}: {msg}"),
        serde_json::json!({ "field": field, "expected": expected }),
    ))
}

/// Deserialize a JSON value into a request type (400 on mismatch, 422 on an unknown field).
pub fn from_value<T: DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| {
        unknown_field(&e).unwrap_or_else(|| {
            ApiError::bad_request(ErrorCode::InvalidRequest, format!("invalid request: {e}"))
        })
    })
}

/// Hex bytes, `0x` optional. Malformed → 400.
pub fn hex_bytes(field: &str, s: &str) -> Result<Vec<u8>, ApiError> {
    let t = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    hex::decode(t).map_err(|_| {
        ApiError::bad_request(ErrorCode::InvalidHex, format!("{field} is not valid hex"))
    })
}

/// Exactly `N` hex bytes. Malformed → 400, wrong length → 422.
pub fn hex_fixed<const N: usize>(field: &str, s: &str) -> Result<[u8; N], ApiError> {
    let v = hex_bytes(field, s)?;
    v.as_slice().try_into().map_err(|_| {
        ApiError::unprocessable(
            ErrorCode::InvalidLength,
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

/// The Bearer credential of a request, if it carries an `Authorization` header (parsed, not
/// checked).
pub fn bearer(headers: &axum::http::HeaderMap) -> Result<Option<Presented>, CredentialError> {
    let Some(v) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| CredentialError::MalformedHeader)?;
    let token = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .ok_or(CredentialError::NotBearer)?;
    Presented::parse(token.trim()).map(Some)
}

/// The agent of a request, authenticated by its Bearer credential
/// ([`AgentCredentials::authenticate`]). A client address that spent its budget of failed
/// authentications is refused (429) before its credential is read; every refusal of the
/// credential charges that budget (`--client-auth-failures`), never the agent's. The agent's own
/// rate limit is the handler's to take (the routes differ).
#[derive(Debug)]
pub struct Agent {
    /// The authenticated agent.
    pub auth: AgentAuth,
    /// The client address (charged for a refusal that follows, e.g. a `keyId` mismatch).
    pub client: ClientAddr,
}

impl Agent {
    /// Refuses a request whose `keyId` (when given) names another agent than the credential
    /// (403 `key_id_mismatch`, or 400 for a malformed keyId; the client's budget is charged).
    pub fn require_key_id(&self, s: &AppState, key_id: Option<&str>) -> Result<(), ApiError> {
        let Some(k) = key_id else { return Ok(()) };
        let (wallet, index) =
            crate::ops::agent_key_id(k).map_err(|e| s.limits.refused(self.client, e))?;
        if (wallet, index) != (self.auth.wallet, self.auth.index) {
            return Err(s
                .limits
                .refused(self.client, CredentialError::KeyIdMismatch.into()));
        }
        Ok(())
    }
}

impl axum::extract::FromRequestParts<std::sync::Arc<AppState>> for Agent {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &std::sync::Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let client = ClientAddr::from_request_parts(parts, s)
            .await
            .unwrap_or_else(|never| match never {});
        s.limits.clients.admit(client.0)?;
        let auth = async {
            let presented = bearer(&parts.headers)?.ok_or(CredentialError::Missing)?;
            AgentCredentials(s).authenticate(&presented, None).await
        }
        .await
        .map_err(|e| s.limits.refused(client, e.into()))?;
        Ok(Agent { auth, client })
    }
}

/// An address as EIP-55 checksummed `0x` hex (every address in an answer).
/// (Bytes that are not 20 long come back as plain `0x` hex.)
pub fn checksum(b: &[u8]) -> String {
    match <[u8; 20]>::try_from(b) {
        Ok(a) => alloy::primitives::Address::from(a).to_checksum(None),
        Err(_) => hex0x(b),
    }
}

/// A stored `0x` address (the database keeps them lowercase) as EIP-55 checksummed hex; a value
/// that is not a 20-byte hex address is returned as it is.
pub fn checksum_str(s: &str) -> String {
    match s.parse::<alloy::primitives::Address>() {
        Ok(a) if s.len() == 42 => a.to_checksum(None),
        _ => s.to_owned(),
    }
}

/// Every address in a JSON value (a string of `0x` + 40 hex digits) as EIP-55 checksummed hex.
/// Only the case of hex digits changes, so nothing else in the value changes meaning.
pub fn checksum_json(v: &mut Value) {
    match v {
        Value::String(s)
            if s.len() == 42
                && s.starts_with("0x")
                && s[2..].bytes().all(|c| c.is_ascii_hexdigit()) =>
        {
            *s = checksum_str(s);
        }
        Value::Array(a) => a.iter_mut().for_each(checksum_json),
        Value::Object(o) => o.values_mut().for_each(checksum_json),
        _ => {}
    }
}

/// [`checksum_json`] of an owned value.
#[must_use]
pub fn checksummed(mut v: Value) -> Value {
    checksum_json(&mut v);
    v
}

/// A non-negative integer given as a JSON number, a decimal string, or a
/// `0x` hex string, as 32 big-endian bytes. Malformed → 400, too large → 422.
pub fn uint256(field: &str, v: &Value) -> Result<[u8; 32], ApiError> {
    let bad = || {
        ApiError::bad_request(
            ErrorCode::InvalidNumber,
            format!("{field} is not a non-negative integer"),
        )
    };
    let big = || {
        ApiError::unprocessable(
            ErrorCode::InvalidValue,
            format!("{field} does not fit 256 bits"),
        )
    };
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
                    ApiError::bad_request(
                        ErrorCode::InvalidHex,
                        format!("{field} is not valid hex"),
                    )
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
            ErrorCode::InvalidValue,
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
        ApiError::unprocessable(
            ErrorCode::InvalidValue,
            format!("{field} does not fit 64 bits"),
        )
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
        #[derive(serde::Deserialize, Debug)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        #[allow(dead_code)]
        struct Strict {
            ttl_secs: Option<u64>,
        }
        let e = parse_json::<Strict>(b"{\"ttl\":60}").unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (422, "unknown_field"));
        let body = serde_json::to_value(match &e {
            ApiError::Detailed { details, .. } => details.clone(),
            _ => Value::Null,
        })
        .unwrap();
        assert_eq!(body, json!({"field": "ttl", "expected": ["ttlSecs"]}));
        let e = from_value::<Strict>(json!({"ttlSecs": 1, "x": 2})).unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (422, "unknown_field"));
    }

    #[test]
    fn addresses_are_checksummed() {
        let lower = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed";
        let want = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
        assert_eq!(checksum_str(lower), want);
        assert_eq!(checksum(&hex::decode(&lower[2..]).unwrap()), want);
        assert_eq!(checksum_str("not an address"), "not an address");
        let mut v = json!({"a": [lower, {"b": lower}], "hash": format!("0x{}", "11".repeat(32))});
        checksum_json(&mut v);
        assert_eq!(v["a"][0], want);
        assert_eq!(v["a"][1]["b"], want);
        assert_eq!(v["hash"], format!("0x{}", "11".repeat(32)));
    }
}
