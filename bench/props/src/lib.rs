//! Robustness properties of the inputs an attacker controls, written once
//! and used twice: by the cargo-fuzz targets in `fuzz/` (coverage-guided,
//! run by `scripts/fuzz.sh`) and by the proptest suite in `tests/` (always
//! run by `cargo test`). Each `check_*` function takes arbitrary bytes and
//! panics only when a property fails:
//!
//! * [`check_proto_decode`] — every request and response type's decoder:
//!   no panic; what decodes re-encodes to something that decodes equal.
//! * [`check_ta_invoke`] — `TaCore::invoke` on any command id and bytes: no
//!   panic, always a well-formed response, never a signature or credential
//!   for a forged request.
//! * [`check_jwt`] — `jwt::parse` (host) and `JwtHmacVerify` (TA): no
//!   panic; the parts it returns lie inside the input; nothing verifies but
//!   the TA's own tokens ([`check_jwt_mutation`]: any one-byte change of a
//!   valid token is refused).
//! * [`check_der`] — the companion's DER ECDSA parser: no panic; it accepts
//!   only the canonical encoding of what it returns.
//! * [`check_hex`] — the companion's hex/address/number parsers: no panic;
//!   accepted hex round-trips to its lowercase `0x` form.
//! * [`check_userop_json`] — the v0.7 JSON-RPC UserOperation: no panic;
//!   JSON → op → JSON → op is stable; both hashes compute.
//! * [`check_intent_body`] — the `POST /agent/intents` body.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ta;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kms_proto::*;
use serde::Deserialize;

macro_rules! each_request {
    ($m:ident, $bytes:expr) => {
        $m!($bytes, CreateWallet);
        $m!($bytes, RemoveWallet);
        $m!($bytes, DeriveAddress);
        $m!($bytes, SignTransaction);
        $m!($bytes, SignMessage);
        $m!($bytes, SignHash);
        $m!($bytes, GetPublicKey);
        $m!($bytes, ChangePasskey);
        $m!($bytes, GetChallenge);
        $m!($bytes, GetWalletInfo);
        $m!($bytes, CreateAgentKey);
        $m!($bytes, SignAgentUserOp);
        $m!($bytes, JwtHmacSign);
        $m!($bytes, JwtHmacVerify);
        $m!($bytes, JwtRotateSecret);
        $m!($bytes, JwtSignPayload);
        $m!($bytes, RevokeAgentKey);
        $m!($bytes, GetAgentState);
        $m!($bytes, JwtSecretStatus);
        $m!($bytes, OperatorKey);
        $m!($bytes, OperatorSignRevokeSession);
        $m!($bytes, TaInfo);
        $m!($bytes, SignForAccount);
        $m!($bytes, SignEip7702Delegation);
        $m!($bytes, SeedWalletForTest);
    };
}

macro_rules! request_round_trip {
    ($bytes:expr, $t:ty) => {
        if let Ok(req) = decode_request::<$t>($bytes) {
            let again = encode_request(&req);
            let back = decode_request::<$t>(&again).unwrap_or_else(|e| {
                panic!("{} re-encoding does not decode: {e:?}", stringify!($t))
            });
            assert!(
                back == req,
                "{} round trip changed the value",
                stringify!($t)
            );
            assert_eq!(
                encode_request(&back),
                again,
                "{} encoding not stable",
                stringify!($t)
            );
        }
    };
}

macro_rules! response_decodes {
    ($bytes:expr, $t:ty) => {
        let _ = decode_response::<<$t as Command>::Output>($bytes);
    };
}

/// Every request type's decoder and every response type's decoder on
/// `data`: never a panic; a decoded request re-encodes to bytes that decode
/// to the same value, and that encoding is stable.
pub fn check_proto_decode(data: &[u8]) {
    each_request!(request_round_trip, data);
    each_request!(response_decodes, data);
}

/// `TaCore::invoke` with the command id from the first 4 bytes (folded
/// onto the known ids most of the time) and the rest as input, on a TA
/// holding a wallet and an agent. Never a panic; the response always
/// starts with the protocol version; a request that carries no valid proof
/// never yields a signature (see [`ta::Fixture::invoke_checked`]).
pub fn check_ta_invoke(data: &[u8]) {
    ta::with_invoke_fixture(|f| f.invoke_checked(data));
}

/// Host-side `jwt::parse` and the TA's `JwtHmacVerify` on `data` as a
/// token: no panic; the signing input returned is a prefix of the token;
/// and an arbitrary token never verifies (only the fixture's own does).
pub fn check_jwt(data: &[u8]) {
    let Ok(token) = core::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = kms_proto::jwt::parse(token) {
        assert!(token.starts_with(p.signing_input));
        assert_eq!(token.as_bytes().get(p.signing_input.len()), Some(&b'.'));
        let mac = &token[p.signing_input.len() + 1..];
        assert_eq!(
            URL_SAFE_NO_PAD.decode(mac).ok().as_deref(),
            Some(&p.mac[..])
        );
    }
    ta::with_fixture(|f| {
        let ok = f.verify(token);
        assert!(
            !ok || token == f.jwt,
            "a token the TA did not issue verified"
        );
    });
}

/// Flip byte `at % len` of the fixture's valid token to `xor` (non-zero):
/// the TA must refuse the result, and the host parser must not panic.
pub fn check_jwt_mutation(at: usize, xor: u8) {
    ta::with_fixture(|f| {
        let mut bytes = f.jwt.clone().into_bytes();
        let i = at % bytes.len();
        bytes[i] ^= xor.max(1);
        if let Ok(token) = String::from_utf8(bytes) {
            let _ = kms_proto::jwt::parse(&token);
            assert!(
                !f.verify(&token),
                "a one-byte change of a valid JWT verified"
            );
        }
    });
}

fn der_len(out: &mut Vec<u8>, n: usize) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        out.extend([0x81, n as u8]);
    }
}

fn der_int(out: &mut Vec<u8>, v: &[u8; 32]) {
    let first = v.iter().position(|&b| b != 0).unwrap_or(31);
    let mut digits = v[first..].to_vec();
    if digits[0] & 0x80 != 0 {
        digits.insert(0, 0);
    }
    out.push(0x02);
    der_len(out, digits.len());
    out.extend(digits);
}

/// The canonical DER encoding of an ECDSA signature `(r, s)`.
pub fn der_encode(r: &[u8; 32], s: &[u8; 32]) -> Vec<u8> {
    let mut body = Vec::new();
    der_int(&mut body, r);
    der_int(&mut body, s);
    let mut out = vec![0x30];
    der_len(&mut out, body.len());
    out.extend(body);
    out
}

/// The companion's DER parser on `data`: no panic, and whatever it accepts
/// is exactly the canonical encoding of the `(r, s)` it returns (it is
/// strict: one encoding per signature), with r and s non-zero.
pub fn check_der(data: &[u8]) {
    if let Ok((r, s)) = kms_companion::der::parse_ecdsa_signature(data) {
        assert!(r != [0; 32] && s != [0; 32], "zero component accepted");
        assert_eq!(der_encode(&r, &s), data, "non-canonical DER accepted");
    }
}

/// The companion's hex, address and number parsers on `data` (as a string
/// and as JSON): no panic; accepted hex round-trips to its lowercase `0x`
/// form; an accepted address/hash has exactly 20/32 bytes.
pub fn check_hex(data: &[u8]) {
    use kms_companion::extract::*;
    let s = String::from_utf8_lossy(data);
    if let Ok(b) = hex_bytes("f", &s) {
        let digits = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(&s);
        assert_eq!(
            hex0x(&b)[2..],
            digits.to_ascii_lowercase(),
            "hex round trip"
        );
    }
    if let Ok(a) = hex_fixed::<20>("f", &s) {
        assert_eq!(hex_bytes("f", &s).ok().as_deref(), Some(&a[..]));
    }
    if let Ok(h) = hex_fixed::<32>("f", &s) {
        assert_eq!(hex_bytes("f", &s).ok().as_deref(), Some(&h[..]));
    }
    let as_string = serde_json::Value::String(s.clone().into_owned());
    let _ = uint256("f", &as_string);
    let _ = uint128("f", &as_string);
    let _ = uint64("f", &as_string);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let a = uint256("f", &v);
        let b = uint128("f", &v);
        let c = uint64("f", &v);
        // The narrower parsers never accept a value the wider one refuses,
        // and agree with it on the value.
        if let Ok(c) = c {
            let mut w = [0u8; 32];
            w[24..].copy_from_slice(&c.to_be_bytes());
            assert_eq!(a.as_ref().ok(), Some(&w), "uint64 vs uint256");
        }
        if let Ok(b) = b {
            let mut w = [0u8; 32];
            w[16..].copy_from_slice(&b.to_be_bytes());
            assert_eq!(a.as_ref().ok(), Some(&w), "uint128 vs uint256");
        }
    }
}

/// A v0.7 UserOperation in its JSON-RPC form: no panic; JSON → op → JSON →
/// op is the identity on what decodes; both userOpHashes compute.
pub fn check_userop_json(data: &[u8]) {
    use kms_chain::userop::v0_7::{RpcUserOperation, UserOperation};
    let Ok(rpc) = serde_json::from_slice::<RpcUserOperation>(data) else {
        return;
    };
    let Ok(op) = UserOperation::try_from(rpc) else {
        return;
    };
    let json = serde_json::to_vec(&op.to_rpc()).expect("serialise");
    let back: RpcUserOperation = serde_json::from_slice(&json).expect("re-parse");
    let op2 = UserOperation::try_from(back).expect("re-convert");
    assert_eq!(
        op2.hash(alloy::primitives::Address::ZERO, 1),
        op.hash(alloy::primitives::Address::ZERO, 1)
    );
    let _ = kms_chain::userop::v0_8::user_op_hash(&op, alloy::primitives::Address::ZERO, 1);
    let _ = op.to_packed();
}

/// One call of an intent.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
pub struct IntentCall {
    /// Target (20 bytes hex).
    pub to: String,
    /// Native value (decimal or 0x quantity).
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// Call data (hex).
    #[serde(default)]
    pub data: Option<String>,
}

/// The `POST /agent/intents` body as issue 5 specifies it (`calls: [{to,
/// value, data}]`; `keyId` and `accountAddress` as in `/kms/sign-agent`).
/// The route is being written on another branch; this is the shape it is
/// expected to take, parsed with the companion's own helpers.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct IntentRequest {
    /// `"{wallet}:{index}"`.
    #[serde(default)]
    pub key_id: Option<String>,
    /// The smart account.
    #[serde(default)]
    pub account_address: Option<String>,
    /// The calls.
    pub calls: Vec<IntentCall>,
}

/// The intent body through the companion's JSON parser and its field
/// parsers: no panic; each accepted call has a 20-byte target, a value
/// within 256 bits and call data that round-trips.
pub fn check_intent_body(data: &[u8]) {
    use kms_companion::extract::*;
    let Ok(req) = parse_json::<IntentRequest>(data) else {
        return;
    };
    if let Some(k) = &req.key_id {
        let _ = kms_companion::ops::agent_key_id(k);
    }
    if let Some(a) = &req.account_address {
        let _ = hex_fixed::<20>("accountAddress", a);
    }
    for c in &req.calls {
        let _ = hex_fixed::<20>("to", &c.to);
        if let Some(v) = &c.value {
            let _ = uint256("value", v);
        }
        if let Some(d) = &c.data {
            if let Ok(b) = hex_bytes("data", d) {
                assert_eq!(hex_bytes("data", &hex0x(&b)).ok(), Some(b));
            }
        }
    }
}
