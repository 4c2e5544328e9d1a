//! The agent credential format (HS256 JWT) and its one parser.
//!
//! Both sides use [`parse`]: the host to read claims before it spends a TA
//! call, the TA before it checks the HMAC and the claims against its sealed
//! state. Parsing verifies nothing; see the TA for verification.

use crate::JwtError;
use alloc::string::String;
use alloc::vec::Vec;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// Longest credential lifetime the TA issues or accepts: 3 days.
pub const MAX_TTL_SECS: u64 = 3 * 24 * 3600;
/// How long a rotated-out kid keeps verifying: 7 days (≥ [`MAX_TTL_SECS`], so
/// a normal rotation never kills a live credential: the last credential a kid
/// signs is minted before the rotation and expires at most [`MAX_TTL_SECS`]
/// after it, while the kid verifies until this long after it).
pub const VERIFY_ONLY_OVERLAP_SECS: u64 = 7 * 24 * 3600;
/// Most verify-only kids the TA keeps at once, besides the current one.
///
/// A normal rotation keeps every verify-only kid until its retire time; when
/// this many are still within their overlap it is refused
/// ([`crate::TaError::JwtRotationRefused`], with the time it can run) rather
/// than drop one early. Rotations at the companion's allowed periods (at least
/// the overlap) never leave more than one; the others are for an operator's
/// manual rotations within one overlap window. Five secrets of 32 bytes with
/// their kids are a few hundred bytes of heap and sealed record, and every
/// verification scans them.
pub const MAX_VERIFY_ONLY_KIDS: usize = 4;
/// Longest compact JWT accepted (the longest the TA mints is about 600 bytes: see the test
/// `the_longest_credential_fits`).
pub const MAX_JWT_LEN: usize = 2048;
/// Clock skew tolerated on `iat`.
pub const MAX_CLOCK_SKEW_SECS: u64 = 60;

/// The JOSE header the TA writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtHeader {
    /// Always `HS256`.
    pub alg: String,
    /// Always `JWT`.
    pub typ: String,
    /// The HMAC key id.
    pub kid: String,
}

/// The claims of an agent credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentClaims {
    /// The key id `"{wallet_uuid}:{agent_index}"`.
    pub sub: String,
    /// Wallet UUID.
    pub wallet_id: String,
    /// Agent index.
    pub agent_index: u32,
    /// Agent key address, `0x` + 40 lowercase hex.
    pub agent_address: String,
    /// Credential generation; refresh and revoke bump it in the TA.
    pub gen: u32,
    /// Issued at (unix seconds).
    pub iat: u64,
    /// Expires at (unix seconds).
    pub exp: u64,
    /// The TA that minted the credential (the issuer): its operator key's address, `0x` + 40
    /// lowercase hex, the name the rest of the system gives that TA (`wallets.ta_id`). A TA
    /// refuses a credential naming another TA ([`JwtError::OtherTa`]), and a companion never
    /// sends one to its TA. Absent from credentials minted before the claim existed: those
    /// parse and verify until they expire (at most [`MAX_TTL_SECS`] after their minting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// A compact JWT split into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedJwt<'a> {
    /// `header_b64 "." payload_b64`: the bytes the HMAC covers.
    pub signing_input: &'a str,
    /// Decoded header.
    pub header: JwtHeader,
    /// Decoded claims.
    pub claims: AgentClaims,
    /// The 32-byte HMAC.
    pub mac: [u8; 32],
}

/// Split and decode a compact JWT. Checks shape only (three base64url parts,
/// HS256, the claim set, a 32-byte MAC); never the MAC or the claims' values.
pub fn parse(jwt: &str) -> Result<ParsedJwt<'_>, JwtError> {
    if jwt.len() > MAX_JWT_LEN {
        return Err(JwtError::Malformed);
    }
    let (signing_input, mac_b64) = jwt.rsplit_once('.').ok_or(JwtError::Malformed)?;
    let (header_b64, payload_b64) = signing_input.split_once('.').ok_or(JwtError::Malformed)?;
    if payload_b64.contains('.') {
        return Err(JwtError::Malformed);
    }
    let header: JwtHeader = decode_json(header_b64)?;
    if header.alg != "HS256" || header.typ != "JWT" {
        return Err(JwtError::UnsupportedAlgorithm);
    }
    if header.kid.is_empty() || header.kid.len() > 64 {
        return Err(JwtError::Malformed);
    }
    let claims: AgentClaims = decode_json(payload_b64)?;
    let mac_bytes = URL_SAFE_NO_PAD
        .decode(mac_b64)
        .map_err(|_| JwtError::Malformed)?;
    let mac: [u8; 32] = mac_bytes
        .as_slice()
        .try_into()
        .map_err(|_| JwtError::Malformed)?;
    Ok(ParsedJwt {
        signing_input,
        header,
        claims,
        mac,
    })
}

fn decode_json<T: serde::de::DeserializeOwned>(b64: &str) -> Result<T, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

/// base64url (no padding) of `bytes`, appended to `out`.
pub fn base64url_encode_into(bytes: &[u8], out: &mut String) {
    URL_SAFE_NO_PAD.encode_string(bytes, out);
}

/// base64url (no padding) of `bytes`.
pub fn base64url_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// base64url (no padding) of the JSON of `value`.
pub fn encode_json_b64<T: Serialize>(value: &T) -> String {
    let json: Vec<u8> = serde_json::to_vec(value).unwrap_or_default();
    base64url_encode(&json)
}

/// The key id string of an agent: `"{wallet_uuid}:{agent_index}"`.
pub fn key_id(wallet_id: &crate::WalletId, agent_index: u32) -> String {
    alloc::format!("{wallet_id}:{agent_index}")
}

/// Parse a key id `"{wallet_uuid}:{agent_index}"` (the index in decimal, at most
/// [`crate::HdPath::MAX_INDEX`]). `None` for anything else.
pub fn parse_key_id(s: &str) -> Option<(crate::WalletId, u32)> {
    let (w, i) = s.rsplit_once(':')?;
    let wallet = w.parse().ok()?;
    if i.is_empty() || i.len() > 10 || !i.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let index: u32 = i.parse().ok()?;
    (index <= crate::HdPath::MAX_INDEX).then_some((wallet, index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn key_ids_round_trip_and_refuse_malformed() {
        let w: crate::WalletId = "12345678-9abc-4def-8011-223344556677".parse().unwrap();
        assert_eq!(parse_key_id(&key_id(&w, 7)), Some((w, 7)));
        for bad in [
            format!("{w}"),
            format!("{w}:"),
            format!("{w}:-1"),
            format!("{w}:+1"),
            format!("{w}:2147483648"),
            format!("x:{}", 1),
        ] {
            assert_eq!(parse_key_id(&bad), None, "{bad}");
        }
    }

    fn sample() -> (JwtHeader, AgentClaims) {
        (
            JwtHeader {
                alg: "HS256".into(),
                typ: "JWT".into(),
                kid: "k0123456789abcdef".into(),
            },
            AgentClaims {
                sub: "w:1".into(),
                wallet_id: "w".into(),
                agent_index: 1,
                agent_address: "0x00".into(),
                gen: 1,
                iat: 10,
                exp: 20,
                iss: Some(alloc::format!("0x{}", "ab".repeat(20))),
            },
        )
    }

    fn token(h: &JwtHeader, c: &AgentClaims, mac: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            encode_json_b64(h),
            encode_json_b64(c),
            base64url_encode(mac)
        )
    }

    #[test]
    fn parses_a_well_formed_token() {
        let (h, c) = sample();
        let t = token(&h, &c, &[7; 32]);
        let p = parse(&t).unwrap();
        assert_eq!(p.header, h);
        assert_eq!(p.claims, c);
        assert_eq!(p.mac, [7; 32]);
        assert_eq!(p.signing_input, t.rsplit_once('.').unwrap().0);
    }

    #[test]
    fn refuses_bad_shapes() {
        let (h, c) = sample();
        assert_eq!(parse("a.b"), Err(JwtError::Malformed));
        assert_eq!(parse(""), Err(JwtError::Malformed));
        assert_eq!(parse(&token(&h, &c, &[7; 31])), Err(JwtError::Malformed));
        let four = format!("{}.x", token(&h, &c, &[7; 32]));
        assert_eq!(parse(&four), Err(JwtError::Malformed));
        let mut none = h.clone();
        none.alg = "none".into();
        assert_eq!(
            parse(&token(&none, &c, &[7; 32])),
            Err(JwtError::UnsupportedAlgorithm)
        );
        let bad_payload = format!(
            "{}.{}.{}",
            encode_json_b64(&h),
            base64url_encode(b"{\"sub\":1}"),
            base64url_encode(&[0; 32])
        );
        assert_eq!(parse(&bad_payload), Err(JwtError::Malformed));
        let long = "a".repeat(MAX_JWT_LEN + 1);
        assert_eq!(parse(&long), Err(JwtError::Malformed));
        assert_eq!(parse("é.é.é"), Err(JwtError::Malformed));
    }

    #[test]
    fn credentials_minted_before_the_iss_claim_still_parse() {
        let (h, mut c) = sample();
        c.iss = None;
        let t = token(&h, &c, &[7; 32]);
        // The claim is left out of the payload, not written as null.
        let payload = t.split('.').nth(1).unwrap();
        let json = URL_SAFE_NO_PAD.decode(payload).unwrap();
        assert!(!json.windows(5).any(|w| w == b"\"iss\""));
        assert_eq!(parse(&t).unwrap().claims.iss, None);
        // A payload written by hand without it, as an older TA minted them.
        let old = format!(
            "{}.{}.{}",
            encode_json_b64(&h),
            base64url_encode(
                br#"{"sub":"w:1","wallet_id":"w","agent_index":1,"agent_address":"0x00","gen":1,"iat":10,"exp":20}"#
            ),
            base64url_encode(&[0; 32])
        );
        assert_eq!(parse(&old).unwrap().claims, c);
        // The claim, when present, must be a string.
        let bad = format!(
            "{}.{}.{}",
            encode_json_b64(&h),
            base64url_encode(
                br#"{"sub":"w:1","wallet_id":"w","agent_index":1,"agent_address":"0x00","gen":1,"iat":10,"exp":20,"iss":7}"#
            ),
            base64url_encode(&[0; 32])
        );
        assert_eq!(parse(&bad), Err(JwtError::Malformed));
    }

    #[test]
    fn the_longest_credential_fits() {
        // Every field at its longest: a 64-character kid, the largest numbers, a full key id,
        // agent address and issuer.
        let h = JwtHeader {
            alg: "HS256".into(),
            typ: "JWT".into(),
            kid: "k".repeat(64),
        };
        let wallet = "12345678-9abc-4def-8011-223344556677";
        let c = AgentClaims {
            sub: format!("{wallet}:{}", u32::MAX),
            wallet_id: wallet.into(),
            agent_index: u32::MAX,
            agent_address: format!("0x{}", "ab".repeat(20)),
            gen: u32::MAX,
            iat: u64::MAX,
            exp: u64::MAX,
            iss: Some(format!("0x{}", "cd".repeat(20))),
        };
        let t = token(&h, &c, &[7; 32]);
        assert!(t.len() <= MAX_JWT_LEN / 2, "{} bytes", t.len());
        assert_eq!(parse(&t).unwrap().claims, c);
    }

    #[test]
    fn overlap_outlives_the_longest_credential() {
        const { assert!(VERIFY_ONLY_OVERLAP_SECS >= MAX_TTL_SECS) };
    }
}
