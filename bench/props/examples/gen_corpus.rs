//! Write the fuzz seed corpus (`fuzz/corpus/<target>/`): valid inputs of
//! each target, so coverage-guided fuzzing starts past the first checks.
//!
//! `cargo run -p kms-props --example gen_corpus` (re-run when a format changes).

use std::fs;
use std::path::Path;

use kms_proto::*;

fn put(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join(name), bytes).unwrap();
}

fn assertion() -> PasskeyAssertion {
    PasskeyAssertion {
        authenticator_data: vec![0x49; 37],
        client_data_json: br#"{"type":"webauthn.get","challenge":"AAAA"}"#.to_vec(),
        signature: kms_props::der_encode(&[0x11; 32], &[0x22; 32]),
    }
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let (wallet, jwt) = kms_props::ta::with_fixture(|f| (f.wallet, f.jwt.clone()));
    let reqs: Vec<(CommandId, Vec<u8>)> = vec![
        (
            CommandId::SignAgentUserOp,
            encode_request(&SignAgentUserOp {
                wallet_id: wallet,
                agent_index: 0,
                jwt: jwt.clone(),
                user_op_hash: [0x42; 32],
                account: [0xAA; 20],
            }),
        ),
        (
            CommandId::SignAgentUserOps,
            encode_request(&SignAgentUserOps {
                requests: vec![
                    SignAgentUserOp {
                        wallet_id: wallet,
                        agent_index: 0,
                        jwt: jwt.clone(),
                        user_op_hash: [0x42; 32],
                        account: [0xAA; 20],
                    },
                    SignAgentUserOp {
                        wallet_id: wallet,
                        agent_index: 1,
                        jwt: jwt.clone(),
                        user_op_hash: [0x43; 32],
                        account: [0xAA; 20],
                    },
                ],
            }),
        ),
        (
            CommandId::CreateAgentKey,
            encode_request(&CreateAgentKey {
                agent_index: 1,
                body: MintAgentBody {
                    wallet_id: wallet,
                    label: "bot".into(),
                    ttl_secs: 3600,
                },
                assertion: assertion(),
            }),
        ),
        (
            CommandId::SignHash,
            encode_request(&SignHash {
                body: SignHashBody {
                    wallet_id: wallet,
                    path: HdPath::agent(0),
                    hash: [3; 32],
                },
                assertion: assertion(),
            }),
        ),
        (
            CommandId::SignForAccount,
            encode_request(&SignForAccount {
                body: SignForAccountBody {
                    wallet_id: wallet,
                    path: HdPath::OWNER,
                    chain_id: 31337,
                    account: [0xAA; 20],
                    content: AccountSignContent::Message(b"hello".to_vec()),
                },
                assertion: assertion(),
            }),
        ),
        (
            CommandId::SignEip7702Delegation,
            encode_request(&SignEip7702Delegation {
                body: Eip7702DelegationBody {
                    wallet_id: wallet,
                    chain_id: 31337,
                    delegate: [0xDE; 20],
                    nonce: 0,
                    user_op_hash: Some([0x42; 32]),
                },
                assertion: assertion(),
            }),
        ),
        (
            CommandId::JwtHmacVerify,
            encode_request(&JwtHmacVerify { jwt: jwt.clone() }),
        ),
        (
            CommandId::JwtRotateSecret,
            encode_request(&JwtRotateSecret {
                mode: RotationMode::Normal,
            }),
        ),
        (
            CommandId::GetAgentState,
            encode_request(&GetAgentState {
                wallet_id: wallet,
                agent_index: 0,
            }),
        ),
        (
            CommandId::GetWalletInfo,
            encode_request(&GetWalletInfo { wallet_id: wallet }),
        ),
        (CommandId::TaInfo, encode_request(&TaInfo {})),
    ];
    for (id, bytes) in &reqs {
        put(&dir, "proto_decode", id.name(), bytes);
        let pos = CommandId::ALL.iter().position(|c| c == id).unwrap() as u8;
        let mut framed = vec![0u8, pos];
        framed.extend(bytes);
        put(&dir, "ta_invoke", id.name(), &framed);
    }
    put(&dir, "jwt", "valid", jwt.as_bytes());
    put(&dir, "jwt", "three_parts", b"eyJhbGciOiJIUzI1NiJ9.e30.AAAA");
    put(
        &dir,
        "der",
        "sig",
        &kms_props::der_encode(&[0x80; 32], &[0x01; 32]),
    );
    put(
        &dir,
        "der",
        "short",
        &kms_props::der_encode(
            &[0; 31]
                .iter()
                .chain(&[5])
                .copied()
                .collect::<Vec<_>>()
                .try_into()
                .unwrap(),
            &[7; 32],
        ),
    );
    for (n, s) in [
        ("address", "0x00000000000000000000000000000000000a11ce"),
        (
            "hash",
            "0x2222222222222222222222222222222222222222222222222222222222222222",
        ),
        ("decimal", "1000000000000000000"),
        ("quantity", "0x1f"),
        ("json_number", "12345"),
        ("json_string", "\"0xff\""),
    ] {
        put(&dir, "hex", n, s.as_bytes());
    }
    put(
        &dir,
        "userop_json",
        "basic",
        br#"{"sender":"0x0000000000000000000000000000000000000a11","nonce":"0x0","callData":"0xb61d27f6","callGasLimit":"0x13880","verificationGasLimit":"0x249f0","preVerificationGas":"0xc350","maxFeePerGas":"0x77359400","maxPriorityFeePerGas":"0x3b9aca00","signature":"0x"}"#,
    );
    put(
        &dir,
        "userop_json",
        "factory_paymaster",
        br#"{"sender":"0x0000000000000000000000000000000000000a11","nonce":"0x10000000000000000","factory":"0x00000000000000000000000000000000000000f1","factoryData":"0x5fbfb9cf","callData":"0x","callGasLimit":"0x1","verificationGasLimit":"0x1","preVerificationGas":"0x1","maxFeePerGas":"0x1","maxPriorityFeePerGas":"0x1","paymaster":"0x00000000000000000000000000000000000000aa","paymasterVerificationGasLimit":"0x1","paymasterPostOpGasLimit":"0x1","paymasterData":"0x00","signature":"0x08"}"#,
    );
    put(
        &dir,
        "intent_body",
        "one_call",
        br#"{"keyId":"00000000-0000-4000-8000-000000000000:1","accountAddress":"0x00000000000000000000000000000000000a11ce","calls":[{"to":"0x0000000000000000000000000000000000000b0b","value":"1000000000000000","data":"0x"}]}"#,
    );
    put(
        &dir,
        "intent_body",
        "two_calls",
        br#"{"calls":[{"to":"0x0000000000000000000000000000000000000b0b","value":"0x10"},{"to":"0x0000000000000000000000000000000000000c0c","data":"0xa9059cbb"}]}"#,
    );
    println!("seed corpus written to {}", dir.display());
}
