//! The fuzz targets' properties (see `kms_props`) under proptest, so they
//! run in every `cargo test`: arbitrary bytes, plus structured inputs near
//! the valid ones (which random bytes rarely reach).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kms_proto::*;
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

/// A valid encoded request of a few types, with one byte changed or cut.
fn near_valid_request() -> impl Strategy<Value = Vec<u8>> {
    let reqs = [
        encode_request(&SignAgentUserOp {
            wallet_id: WalletId([7; 16]),
            agent_index: 3,
            jwt: "a.b.c".into(),
            user_op_hash: [1; 32],
            account: [2; 20],
        }),
        encode_request(&CreateAgentKey {
            agent_index: 1,
            body: MintAgentBody {
                wallet_id: WalletId([3; 16]),
                label: "bot".into(),
                ttl_secs: 60,
            },
            assertion: PasskeyAssertion {
                authenticator_data: vec![0; 37],
                client_data_json: b"{}".to_vec(),
                signature: vec![0x30, 0x06, 2, 1, 1, 2, 1, 1],
            },
        }),
        encode_request(&JwtRotateSecret {
            mode: RotationMode::Force,
        }),
        encode_request(&GetAgentState {
            wallet_id: WalletId([5; 16]),
            agent_index: 9,
        }),
    ];
    (0..reqs.len(), any::<usize>(), any::<u8>(), any::<bool>()).prop_map(
        move |(which, at, x, cut)| {
            let mut r = reqs[which].clone();
            let i = at % r.len();
            if cut {
                r.truncate(i);
            } else {
                r[i] ^= x;
            }
            r
        },
    )
}

fn jwt_like() -> impl Strategy<Value = String> {
    let part =
        proptest::collection::vec(any::<u8>(), 0..80).prop_map(|b| URL_SAFE_NO_PAD.encode(b));
    let header = prop_oneof![
        Just(r#"{"alg":"HS256","typ":"JWT","kid":"k0011223344556677"}"#.to_string()),
        "[ -~]{0,60}",
    ]
    .prop_map(|h| URL_SAFE_NO_PAD.encode(h));
    let claims = prop_oneof![
        Just(r#"{"sub":"x:0","wallet_id":"x","agent_index":0,"agent_address":"0x","gen":1,"iat":1,"exp":2}"#.to_string()),
        "[ -~]{0,80}",
    ]
    .prop_map(|c| URL_SAFE_NO_PAD.encode(c));
    (header, claims, part, "[.a-zA-Z0-9_-]{0,3}")
        .prop_map(|(h, c, m, sep)| format!("{h}.{c}.{m}{sep}"))
}

fn der_like() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        bytes(80),
        (
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            any::<usize>(),
            any::<u8>()
        )
            .prop_map(|(r, s, at, x)| {
                let mut d = kms_props::der_encode(&r, &s);
                if x & 1 == 1 {
                    let i = at % d.len();
                    d[i] ^= x;
                }
                d
            }),
    ]
}

fn hex_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "(0x|0X)?[0-9a-fA-F]{0,70}",
        "[0-9]{0,90}",
        "\\PC{0,40}",
        Just("0x".to_string()),
    ]
}

fn userop_json() -> impl Strategy<Value = Vec<u8>> {
    let q = prop_oneof![
        Just("\"0x0\"".to_string()),
        Just("\"0x1\"".to_string()),
        "\"0x[0-9a-f]{1,64}\"",
        "\"0x[0-9a-f]{65,70}\"",
        Just("1".to_string()),
    ];
    (q.clone(), q.clone(), q.clone(), q.clone(), q, "0x([0-9a-f]{2}){0,40}", any::<bool>())
        .prop_map(|(a, b, c, d, e, data, factory)| {
            let f = if factory {
                r#""factory":"0x00000000000000000000000000000000000000f1","factoryData":"0x01","#
            } else {
                ""
            };
            format!(
                r#"{{"sender":"0x0000000000000000000000000000000000000a11",{f}"nonce":{a},"callData":"{data}","callGasLimit":{b},"verificationGasLimit":{c},"preVerificationGas":{d},"maxFeePerGas":{e},"maxPriorityFeePerGas":"0x1","signature":"0x"}}"#
            )
            .into_bytes()
        })
}

fn intent_like() -> impl Strategy<Value = Vec<u8>> {
    let call = (
        hex_like(),
        hex_like(),
        prop_oneof![
            Just("\"1\"".to_string()),
            Just("5".to_string()),
            "\"0x[0-9a-f]{0,70}\"",
            Just("-1".to_string())
        ],
    )
        .prop_map(|(to, data, value)| {
            format!(r#"{{"to":"{to}","value":{value},"data":"{data}"}}"#)
        });
    (proptest::collection::vec(call, 0..4), hex_like()).prop_map(|(calls, acct)| {
        format!(
            r#"{{"keyId":"00000000-0000-4000-8000-000000000000:1","accountAddress":"{acct}","calls":[{}]}}"#,
            calls.join(",")
        )
        .into_bytes()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn proto_decode_arbitrary(b in bytes(300)) { kms_props::check_proto_decode(&b); }

    #[test]
    fn proto_decode_near_valid(b in near_valid_request()) { kms_props::check_proto_decode(&b); }

    #[test]
    fn ta_invoke_arbitrary(b in bytes(300)) { kms_props::check_ta_invoke(&b); }

    #[test]
    fn ta_invoke_near_valid(cmd in any::<u8>(), b in near_valid_request()) {
        let mut d = vec![0u8, cmd];
        d.extend(b);
        kms_props::check_ta_invoke(&d);
    }

    #[test]
    fn jwt_arbitrary(b in bytes(300)) { kms_props::check_jwt(&b); }

    #[test]
    fn jwt_shaped(t in jwt_like()) { kms_props::check_jwt(t.as_bytes()); }

    #[test]
    fn jwt_one_byte_change_is_refused(at in any::<usize>(), x in 1u8..) {
        kms_props::check_jwt_mutation(at, x);
    }

    #[test]
    fn der(b in der_like()) { kms_props::check_der(&b); }

    #[test]
    fn hex(s in hex_like()) { kms_props::check_hex(s.as_bytes()); }

    #[test]
    fn hex_arbitrary(b in bytes(100)) { kms_props::check_hex(&b); }

    #[test]
    fn userop(b in userop_json()) { kms_props::check_userop_json(&b); }

    #[test]
    fn userop_arbitrary(b in bytes(200)) { kms_props::check_userop_json(&b); }

    #[test]
    fn intent(b in intent_like()) { kms_props::check_intent_body(&b); }

    #[test]
    fn intent_arbitrary(b in bytes(200)) { kms_props::check_intent_body(&b); }
}

#[test]
fn the_fixture_token_verifies_and_canonical_der_parses() {
    kms_props::ta::with_fixture(|f| {
        let t = f.jwt.clone();
        assert!(f.verify(&t));
    });
    let d = kms_props::der_encode(&[0x80; 32], &[1; 32]);
    assert!(kms_companion::der::parse_ecdsa_signature(&d).is_ok());
    kms_props::check_der(&d);
}
