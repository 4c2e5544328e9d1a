//! End-to-end: the wallet API and the WebAuthn ceremonies, over HTTP
//! against the companion, the real ta-sim and a SQLite file.

use crate::common::*;
use serde_json::{json, Value};

const HASH: &str = "0x1111111111111111111111111111111111111111111111111111111111111111";

fn tx(to: &str) -> Value {
    json!({"chainId": 31337, "nonce": 0, "to": to, "value": "1000", "gasPrice": "1000000000", "gas": 21000})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wallet_lifecycle_and_refusals() {
    let env = Env::start().await;
    let mut alice = Soft::new();
    let reg = env.register(&mut alice).await;
    let key = reg["KeyId"].as_str().unwrap().to_owned();
    let owner = reg["Address"].as_str().unwrap().to_owned();
    assert_eq!(reg["Status"], "ready");
    assert_eq!(reg["DerivationPath"], "m/44'/60'/0'/0/0");
    assert_eq!(owner.len(), 42);

    // DescribeKey / ListKeys / GetPublicKey (owner: public, no ceremony).
    let (s, d) = env
        .post("/DescribeKey", Some("DescribeKey"), &json!({"KeyId": key}))
        .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["KeyMetadata"]["Address"], owner);
    assert_eq!(d["KeyMetadata"]["Description"], "test wallet");
    assert_eq!(d["KeyMetadata"]["PasskeyCredentialId"], reg["CredentialId"]);
    let (s, p) = env
        .post(
            "/GetPublicKey",
            Some("GetPublicKey"),
            &json!({"KeyId": key}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(p["PublicKey"], reg["PublicKey"]);
    let (s, d) = env.post("/DescribeKey", None, &json!({"KeyId": key})).await;
    assert_eq!((s, d["code"].as_str()), (400, Some("missing_target")));
    let (s, d) = env
        .post("/DescribeKey", Some("Sign"), &json!({"KeyId": key}))
        .await;
    assert_eq!((s, d["code"].as_str()), (400, Some("invalid_target")));
    let (s, d) = env
        .post(
            "/DescribeKey",
            Some("DescribeKey"),
            &json!({"KeyId": "00000000-0000-4000-8000-000000000000"}),
        )
        .await;
    assert_eq!((s, d["code"].as_str()), (404, Some("key_not_found")));

    // SignHash: ceremony bound to the hash; the signature recovers to the owner.
    let w = env
        .ceremony(&mut alice, &key, "SignHash", json!({"Hash": HASH}))
        .await;
    let (s, sig) = env
        .post(
            "/SignHash",
            Some("SignHash"),
            &json!({"KeyId": key, "Hash": HASH, "WebAuthn": w}),
        )
        .await;
    assert_eq!(s, 200, "{sig}");
    let rsv = hexs(&sig["Signature"]);
    assert_eq!(rsv.len(), 65);
    let h: [u8; 32] = hexs(&json!(HASH)).try_into().unwrap();
    assert_eq!(recover(&h, &rsv), owner.to_ascii_lowercase());
    // Replaying the same assertion is refused.
    let (s, e) = env
        .post(
            "/SignHash",
            Some("SignHash"),
            &json!({"KeyId": key, "Hash": HASH, "WebAuthn": w}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (401, Some("challenge_used")),
        "{e}"
    );

    // An assertion made for one payload does not authorise another.
    let w = env
        .ceremony(&mut alice, &key, "SignHash", json!({"Hash": HASH}))
        .await;
    let other = HASH.replace("0x11", "0x22");
    let (s, e) = env
        .post(
            "/SignHash",
            Some("SignHash"),
            &json!({"KeyId": key, "Hash": other, "WebAuthn": w}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (403, Some("payload_mismatch")),
        "{e}"
    );
    // ...nor another operation.
    let (s, e) = env
        .post(
            "/Sign",
            Some("Sign"),
            &json!({"KeyId": key, "Message": "hello", "WebAuthn": w}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (403, Some("challenge_wrong_purpose")),
        "{e}"
    );
    // The refusals above did not consume it: the right request still works.
    let (s, _) = env
        .post(
            "/SignHash",
            Some("SignHash"),
            &json!({"KeyId": key, "Hash": HASH, "WebAuthn": w}),
        )
        .await;
    assert_eq!(s, 200);

    // Missing ceremony; legacy bare assertion.
    let (s, e) = env
        .post(
            "/SignHash",
            Some("SignHash"),
            &json!({"KeyId": key, "Hash": HASH}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (401, Some("ceremony_required")),
        "{e}"
    );
    assert!(e["error"]
        .as_str()
        .unwrap()
        .contains("/BeginAuthentication"));
    let legacy = json!({"AuthenticatorData": "00", "ClientDataHash": "00", "Signature": "00"});
    let (s, e) = env
        .post(
            "/SignHash",
            Some("SignHash"),
            &json!({"KeyId": key, "Hash": HASH, "Passkey": legacy}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (401, Some("legacy_assertion_refused")),
        "{e}"
    );
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("\"Purpose\": \"SignHash\""),
        "{e}"
    );

    // Malformed JSON, malformed hex, wrong length.
    let (s, e, _) = env
        .request("/SignHash", Some("SignHash"), &[], b"{\"KeyId\": ".to_vec())
        .await;
    assert_eq!((s, e["code"].as_str()), (400, Some("malformed_json")));
    let (s, e) = env
        .post(
            "/SignHash",
            Some("SignHash"),
            &json!({"KeyId": key, "Hash": "0xzz"}),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (400, Some("invalid_hex")));
    let (s, e) = env
        .post(
            "/SignHash",
            Some("SignHash"),
            &json!({"KeyId": key, "Hash": "0x11"}),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (422, Some("invalid_length")));
    // 300 KiB body: refused while reading.
    let big = format!(
        "{{\"KeyId\": \"{key}\", \"Hash\": \"{}\"}}",
        "a".repeat(300 * 1024)
    );
    let (s, e, _) = env
        .request("/SignHash", Some("SignHash"), &[], big.into_bytes())
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (413, Some("body_too_large")),
        "{e}"
    );

    // Bad DER in an otherwise real assertion: 422, before anything is consumed.
    let mut w = env
        .ceremony(&mut alice, &key, "SignHash", json!({"Hash": HASH}))
        .await;
    let good_sig = w["Credential"]["response"]["signature"].clone();
    w["Credential"]["response"]["signature"] = json!("MAUCAQECAQ"); // 30 05 02 01 01 02 01 (truncated)
    let (s, e) = env
        .post(
            "/SignHash",
            Some("SignHash"),
            &json!({"KeyId": key, "Hash": HASH, "WebAuthn": w}),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (422, Some("invalid_der")), "{e}");
    w["Credential"]["response"]["signature"] = good_sig;
    let (s, _) = env
        .post(
            "/SignHash",
            Some("SignHash"),
            &json!({"KeyId": key, "Hash": HASH, "WebAuthn": w}),
        )
        .await;
    assert_eq!(s, 200);

    // Sign a message (EIP-191).
    let w = env
        .ceremony(&mut alice, &key, "Sign", json!({"Message": "hello"}))
        .await;
    let (s, m) = env
        .post(
            "/Sign",
            Some("Sign"),
            &json!({"KeyId": key, "Message": "hello", "WebAuthn": w}),
        )
        .await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(
        recover(&eip191(b"hello"), &hexs(&m["Signature"])),
        owner.to_ascii_lowercase()
    );

    // Sign a transaction; `to` must be 20 bytes (422 at ceremony start and at Sign).
    let to = "0x000000000000000000000000000000000000dEaD";
    let (s, t) = env
        .signed_op(&mut alice, &key, "Sign", json!({"Transaction": tx(to)}))
        .await;
    assert_eq!(s, 200, "{t}");
    assert!(t["SignedTransaction"].as_str().unwrap().starts_with("0x"));
    let raw = hexs(&t["SignedTransaction"]);
    let h_tx = <sha3::Keccak256 as sha2::Digest>::digest(&raw);
    assert_eq!(
        t["TransactionHash"],
        json!(format!("0x{}", hex::encode(h_tx)))
    );
    // EIP-1559 (type 2 envelope).
    let tx1559 = json!({"chainId": 31337, "nonce": 1, "to": to, "value": "0x0", "gas": 21000,
        "maxFeePerGas": "2000000000", "maxPriorityFeePerGas": "1000000000", "data": "0x"});
    let w = env
        .ceremony(&mut alice, &key, "Sign", json!({"Transaction": tx1559}))
        .await;
    let (s, t2) = env
        .post(
            "/Sign",
            Some("Sign"),
            &json!({"KeyId": key, "Transaction": tx1559, "WebAuthn": w}),
        )
        .await;
    assert_eq!(s, 200, "{t2}");
    assert_eq!(hexs(&t2["SignedTransaction"])[0], 0x02);
    assert_eq!(t2["Address"], json!(owner));
    let short = "0x000000000000000000000000000000000000de";
    let (s, e) = env
        .post(
            "/BeginAuthentication",
            None,
            &json!({"KeyId": key, "Purpose": "Sign", "Payload": {"Transaction": tx(short)}}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (422, Some("invalid_recipient")),
        "{e}"
    );
    let (s, e) = env
        .post(
            "/Sign",
            Some("Sign"),
            &json!({"KeyId": key, "Transaction": tx(short), "WebAuthn": w}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (422, Some("invalid_recipient")),
        "{e}"
    );

    // DeriveAddress records the address; Sign by Address then works.
    let path = "m/44'/60'/0'/0/1";
    let (s, a) = env
        .signed_op(
            &mut alice,
            &key,
            "DeriveAddress",
            json!({"DerivationPath": path}),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    let addr1 = a["Address"].as_str().unwrap().to_owned();
    assert_ne!(addr1, owner);
    let (s, p) = env
        .signed_op(
            &mut alice,
            &key,
            "GetPublicKey",
            json!({"DerivationPath": path}),
        )
        .await;
    assert_eq!((s, &p["Address"]), (200, &json!(addr1)), "{p}");
    let (s, b) = env
        .post(
            "/BeginAuthentication",
            None,
            &json!({"Address": addr1, "Purpose": "SignHash", "Payload": {"Hash": HASH}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let cred = alice.authenticate(&env.origin(), &b["Options"]);
    let w = json!({"ChallengeId": b["ChallengeId"], "Credential": cred});
    let (s, sig) = env
        .post(
            "/SignHash",
            Some("SignHash"),
            &json!({"Address": addr1, "Hash": HASH, "WebAuthn": w}),
        )
        .await;
    assert_eq!(s, 200, "{sig}");
    assert_eq!(
        recover(&h, &hexs(&sig["Signature"])),
        addr1.to_ascii_lowercase()
    );

    // ListKeys pages.
    let mut bob = Soft::new();
    let reg2 = env.register(&mut bob).await;
    let (s, l) = env
        .post("/ListKeys", Some("ListKeys"), &json!({"Limit": 1}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(l["Keys"].as_array().unwrap().len(), 1);
    assert_eq!(l["Truncated"], true);
    let (_, l2) = env
        .post(
            "/ListKeys",
            Some("ListKeys"),
            &json!({"Limit": 1, "Marker": l["NextMarker"]}),
        )
        .await;
    assert_eq!(l2["Truncated"], false);
    let mut ids = vec![
        l["Keys"][0]["KeyId"].clone(),
        l2["Keys"][0]["KeyId"].clone(),
    ];
    ids.sort_by_key(|v| v.as_str().unwrap().to_owned());
    let mut want = vec![json!(key), reg2["KeyId"].clone()];
    want.sort_by_key(|v| v.as_str().unwrap().to_owned());
    assert_eq!(ids, want);

    // A ceremony of Bob's wallet cannot be used on Alice's.
    let wb = env
        .ceremony(
            &mut bob,
            reg2["KeyId"].as_str().unwrap(),
            "SignHash",
            json!({"Hash": HASH}),
        )
        .await;
    let (s, e) = env
        .post(
            "/SignHash",
            Some("SignHash"),
            &json!({"KeyId": key, "Hash": HASH, "WebAuthn": wb}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (403, Some("challenge_wrong_key")),
        "{e}"
    );

    // DeleteKey, then the key is gone.
    let w = env
        .ceremony(
            &mut bob,
            reg2["KeyId"].as_str().unwrap(),
            "DeleteKey",
            json!({}),
        )
        .await;
    let (s, d) = env
        .post(
            "/DeleteKey",
            Some("ScheduleKeyDeletion"),
            &json!({"KeyId": reg2["KeyId"], "WebAuthn": w}),
        )
        .await;
    assert_eq!((s, &d["KeyState"]), (200, &json!("Deleted")), "{d}");
    let (s, _) = env
        .post(
            "/DescribeKey",
            Some("DescribeKey"),
            &json!({"KeyId": reg2["KeyId"]}),
        )
        .await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_key_requires_proof_of_possession() {
    let env = Env::start().await;
    // A bare public key is refused (upstream defect not copied).
    let pk = format!("04{}", "11".repeat(64));
    let (s, e) = env
        .post(
            "/CreateKey",
            Some("CreateKey"),
            &json!({"Description": "x", "KeyUsage": "SIGN_VERIFY",
            "KeySpec": "ECC_SECG_P256K1", "Origin": "EXTERNAL_KMS", "PasskeyPublicKey": pk}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (400, Some("registration_required")),
        "{e}"
    );
    assert!(e["error"].as_str().unwrap().contains("/BeginRegistration"));
    // Over a registration ceremony it answers in the AWS KeyMetadata shape.
    let (_, begin) = env.post("/BeginRegistration", None, &json!({})).await;
    let mut user = Soft::new();
    let cred = user.register(&env.origin(), &begin["Options"]);
    let (s, k) = env
        .post(
            "/CreateKey",
            Some("CreateKey"),
            &json!({"ChallengeId": begin["ChallengeId"], "Credential": cred,
            "Description": "aws"}),
        )
        .await;
    assert_eq!(s, 200, "{k}");
    let m = &k["KeyMetadata"];
    assert_eq!(m["Description"], "aws");
    assert_eq!(m["Enabled"], true);
    assert!(m["Arn"]
        .as_str()
        .unwrap()
        .ends_with(m["KeyId"].as_str().unwrap()));
    assert_eq!(m["Address"].as_str().unwrap().len(), 42);
    // The registration ceremony is single use.
    let (s, e) = env
        .post(
            "/CompleteRegistration",
            None,
            &json!({"ChallengeId": begin["ChallengeId"], "Credential": cred}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (401, Some("challenge_used")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn change_passkey_needs_the_new_and_the_current_passkey() {
    let env = Env::start().await;
    let mut old = Soft::new();
    let reg = env.register(&mut old).await;
    let key = reg["KeyId"].as_str().unwrap().to_owned();

    // A bare new public key is refused.
    let (s, e) = env
        .post(
            "/ChangePasskey",
            None,
            &json!({"KeyId": key, "PasskeyPublicKey": format!("04{}", "22".repeat(64))}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (400, Some("registration_required")),
        "{e}"
    );

    // 1. Register the new passkey for this wallet (proof of possession).
    let mut new = Manual::new();
    let (s, begin) = env
        .post("/BeginRegistration", None, &json!({"KeyId": key}))
        .await;
    assert_eq!(s, 200, "{begin}");
    let reg_cred = new.register(&env.origin(), &begin["Options"]);
    let new_passkey = json!({"ChallengeId": begin["ChallengeId"], "Credential": reg_cred});
    // 2. The current passkey authorises the change to exactly that key.
    let w = env
        .ceremony(
            &mut old,
            &key,
            "ChangePasskey",
            json!({"NewPasskey": new_passkey}),
        )
        .await;
    // Without the current passkey's assertion: refused.
    let (s, e) = env
        .post(
            "/ChangePasskey",
            None,
            &json!({"KeyId": key, "NewPasskey": new_passkey}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (401, Some("ceremony_required")),
        "{e}"
    );
    let (s, c) = env
        .post(
            "/ChangePasskey",
            Some("ChangePasskey"),
            &json!({"KeyId": key, "NewPasskey": new_passkey, "WebAuthn": w}),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["Changed"], true);
    assert_ne!(c["CredentialId"], reg["CredentialId"]);
    let (_, d) = env
        .post("/DescribeKey", Some("DescribeKey"), &json!({"KeyId": key}))
        .await;
    assert_eq!(d["KeyMetadata"]["PasskeyCredentialId"], c["CredentialId"]);

    // The new passkey now signs; the old one is refused (host and TA).
    let w = env
        .ceremony(&mut new, &key, "SignHash", json!({"Hash": HASH}))
        .await;
    let (s, sig) = env
        .post(
            "/SignHash",
            Some("SignHash"),
            &json!({"KeyId": key, "Hash": HASH, "WebAuthn": w}),
        )
        .await;
    assert_eq!(s, 200, "{sig}");
    let (s, b) = env
        .post(
            "/BeginAuthentication",
            None,
            &json!({"KeyId": key, "Purpose": "SignHash", "Payload": {"Hash": HASH}}),
        )
        .await;
    assert_eq!(s, 200);
    let mut opts = b["Options"].clone();
    // The soft authenticator only answers for credentials it holds: point
    // the request at its old credential, as a stale client would.
    opts["publicKey"]["allowCredentials"] =
        json!([{"type": "public-key", "id": reg["CredentialId"]}]);
    let cred = old.authenticate(&env.origin(), &opts);
    let (s, e) = env
        .post(
            "/SignHash",
            Some("SignHash"),
            &json!({"KeyId": key, "Hash": HASH,
            "WebAuthn": {"ChallengeId": b["ChallengeId"], "Credential": cred}}),
        )
        .await;
    assert_eq!(s, 401, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uv_missing_and_sign_count_regression_are_refused() {
    let env = Env::start().await;
    let mut m = Manual::new();
    let reg = env.register(&mut m).await;
    let key = reg["KeyId"].as_str().unwrap().to_owned();
    // A real assertion by the registered key works.
    let (s, v) = env
        .signed_op(&mut m, &key, "SignHash", json!({"Hash": HASH}))
        .await;
    assert_eq!(s, 200, "{v}");
    // The same key, the same kind of assertion, UV flag cleared: refused.
    m.without_uv();
    let (s, e) = env
        .signed_op(&mut m, &key, "SignHash", json!({"Hash": HASH}))
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (401, Some("user_verification_missing")),
        "{e}"
    );
    // Counter going backwards (a cloned authenticator): refused.
    m.flags = 0x05;
    let (s, _) = env
        .signed_op(&mut m, &key, "SignHash", json!({"Hash": HASH}))
        .await;
    assert_eq!(s, 200);
    m.next_counter = Some(1);
    let (s, e) = env
        .signed_op(&mut m, &key, "SignHash", json!({"Hash": HASH}))
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (401, Some("sign_count_regression")),
        "{e}"
    );
}

// ------------------------------------- ERC-1271 signatures for the AgentAccount

/// The ERC-7739 `PersonalSign` digest `AgentAccount.isValidSignature` recovers from, computed
/// here with alloy's EIP-712 support (not with the companion's or the TA's code).
mod erc7739 {
    use alloy::primitives::{keccak256, Address, B256};
    use alloy::sol_types::{eip712_domain, SolStruct};

    alloy::sol! {
        struct PersonalSign {
            bytes prefixed;
        }
    }

    fn domain(chain_id: u64, account: Address) -> alloy::sol_types::Eip712Domain {
        eip712_domain! {
            name: "AgentAccount",
            version: "1",
            chain_id: chain_id,
            verifying_contract: account,
        }
    }

    /// For a personal message: EIP-712 hashes the `bytes prefixed` member, which gives the
    /// message's EIP-191 hash inside the struct.
    pub fn of_message(chain_id: u64, account: Address, message: &[u8]) -> [u8; 32] {
        let mut prefixed = format!("\x19Ethereum Signed Message:\n{}", message.len()).into_bytes();
        prefixed.extend_from_slice(message);
        PersonalSign {
            prefixed: prefixed.into(),
        }
        .eip712_signing_hash(&domain(chain_id, account))
        .0
    }

    /// For a bare hash: `keccak256(0x1901 ‖ separator ‖ keccak256(typeHash ‖ hash))`.
    pub fn of_hash(chain_id: u64, account: Address, hash: B256) -> [u8; 32] {
        let type_hash = PersonalSign {
            prefixed: Default::default(),
        }
        .eip712_type_hash();
        let struct_hash = keccak256([type_hash.as_slice(), hash.as_slice()].concat());
        let separator = domain(chain_id, account).separator();
        keccak256(
            [
                &[0x19, 0x01][..],
                separator.as_slice(),
                struct_hash.as_slice(),
            ]
            .concat(),
        )
        .0
    }
}

/// A stand-in node and bundler for the companion's chain settings: it answers the start-up
/// checks (chain id, supported EntryPoint, code, the factory's EntryPoint and validator) and
/// nothing else. The chain id is what `Account` signatures bind.
struct FakeChain {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

const FAKE_CHAIN_ID: u64 = 8453;
const FAKE_FACTORY: &str = "0x00000000000000000000000000000000000fac70";
const FAKE_VALIDATOR: &str = "0x0000000000000000000000000000000000005e55";

impl FakeChain {
    async fn start() -> FakeChain {
        use alloy::sol_types::SolCall;
        use kms_contracts::AgentAccountFactory::{entryPointCall, validatorCall};
        fn word(address: &str) -> String {
            format!("0x{:0>64}", address.trim_start_matches("0x"))
        }
        async fn rpc(axum::Json(req): axum::Json<Value>) -> axum::Json<Value> {
            let id = req["id"].clone();
            let call_data = req["params"][0]["input"]
                .as_str()
                .or_else(|| req["params"][0]["data"].as_str())
                .unwrap_or_default()
                .to_owned();
            let result = match req["method"].as_str().unwrap_or_default() {
                "eth_chainId" => json!(format!("{FAKE_CHAIN_ID:#x}")),
                "eth_supportedEntryPoints" => json!([kms_contracts::ENTRY_POINT_V07]),
                "eth_getCode" => json!("0x6000"),
                "eth_call" if call_data.starts_with(&hex0x_of(&entryPointCall::SELECTOR)) => {
                    json!(word(&kms_contracts::ENTRY_POINT_V07.to_string()))
                }
                "eth_call" if call_data.starts_with(&hex0x_of(&validatorCall::SELECTOR)) => {
                    json!(word(FAKE_VALIDATOR))
                }
                _ => {
                    return axum::Json(json!({"jsonrpc": "2.0", "id": id,
                        "error": {"code": -32601, "message": "not served by the fake chain"}}))
                }
            };
            axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result}))
        }
        fn hex0x_of(b: &[u8]) -> String {
            format!("0x{}", hex::encode(b))
        }
        let app = axum::Router::new().route("/", axum::routing::post(rpc));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeChain { url, task }
    }

    fn args(&self) -> Vec<String> {
        [
            "--rpc-url",
            &self.url,
            "--bundler-url",
            &self.url,
            "--validator-address",
            FAKE_VALIDATOR,
            "--account-factory",
            FAKE_FACTORY,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

impl Drop for FakeChain {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const ACCOUNT_A: &str = "0x00000000000000000000000000000000000a11ce";
const ACCOUNT_B: &str = "0x00000000000000000000000000000000000b0b00";

fn address(s: &str) -> alloy::primitives::Address {
    s.parse().unwrap()
}

fn b256(s: &str) -> alloy::primitives::B256 {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn account_signatures_are_erc7739_for_that_account_and_the_companions_chain() {
    let chain = FakeChain::start().await;
    let env = Env::with(Opts {
        args: chain.args(),
        ..Default::default()
    })
    .await;
    assert_eq!(
        env.server()
            .state
            .chain
            .as_ref()
            .map(|c| c.client.chain_id()),
        Some(FAKE_CHAIN_ID)
    );
    let mut alice = Soft::new();
    let reg = env.register(&mut alice).await;
    let key = reg["KeyId"].as_str().unwrap().to_owned();
    let owner = reg["Address"].as_str().unwrap().to_owned();
    let message = "Sign in to example.org";

    // /Sign Message + Account: the ERC-7739 PersonalSign signature for A on the chain.
    let payload = json!({"Message": message, "Account": ACCOUNT_A});
    let w = env.ceremony(&mut alice, &key, "Sign", payload).await;
    let (s, v) = env
        .post(
            "/Sign",
            Some("Sign"),
            &json!({"KeyId": key, "Message": message, "Account": ACCOUNT_A, "WebAuthn": w}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["SignatureFormat"], "ERC7739PersonalSign");
    // Addresses are answered EIP-55 checksummed (#15 item 7; lowercase before).
    assert_eq!(
        v["Account"].as_str().unwrap().to_ascii_lowercase(),
        ACCOUNT_A
    );
    assert_eq!(v["ChainId"], FAKE_CHAIN_ID);
    assert_eq!(v["Address"], owner);
    let verify_hash = eip191(message.as_bytes());
    assert_eq!(hexs(&v["IsValidSignatureHash"]), verify_hash);
    let sig_a = hexs(&v["Signature"]);
    assert_eq!(sig_a.len(), 65);
    let want = erc7739::of_message(FAKE_CHAIN_ID, address(ACCOUNT_A), message.as_bytes());
    assert_eq!(recover(&want, &sig_a), owner.to_ascii_lowercase());
    assert_eq!(
        want,
        erc7739::of_hash(FAKE_CHAIN_ID, address(ACCOUNT_A), verify_hash.into())
    );
    // Not a personal_sign of the message, nor valid for B or on another chain.
    assert_ne!(recover(&verify_hash, &sig_a), owner.to_ascii_lowercase());
    for other in [
        erc7739::of_message(FAKE_CHAIN_ID, address(ACCOUNT_B), message.as_bytes()),
        erc7739::of_message(1, address(ACCOUNT_A), message.as_bytes()),
    ] {
        assert_ne!(recover(&other, &sig_a), owner.to_ascii_lowercase());
    }

    // The plain /Sign of the same message: EIP-191, said so, no account fields.
    let (s, v) = env
        .signed_op(&mut alice, &key, "Sign", json!({"Message": message}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["SignatureFormat"], "EIP191PersonalSign");
    assert!(
        v.get("Account").is_none() && v.get("ChainId").is_none(),
        "{v}"
    );
    let plain = hexs(&v["Signature"]);
    assert_eq!(recover(&verify_hash, &plain), owner.to_ascii_lowercase());
    assert_ne!(plain, sig_a);

    // /SignHash + Account: the wrapping of the hash; plain /SignHash: the hash itself.
    let (s, v) = env
        .signed_op(
            &mut alice,
            &key,
            "SignHash",
            json!({"Hash": HASH, "Account": ACCOUNT_B}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["SignatureFormat"], "ERC7739PersonalSign");
    assert_eq!(
        v["Account"].as_str().unwrap().to_ascii_lowercase(),
        ACCOUNT_B
    );
    assert_eq!(v["ChainId"], FAKE_CHAIN_ID);
    assert_eq!(v["IsValidSignatureHash"], HASH);
    let wrapped = hexs(&v["Signature"]);
    assert_eq!(
        recover(
            &erc7739::of_hash(FAKE_CHAIN_ID, address(ACCOUNT_B), b256(HASH)),
            &wrapped
        ),
        owner.to_ascii_lowercase()
    );
    assert_ne!(recover(&b256(HASH).0, &wrapped), owner.to_ascii_lowercase());
    let (s, v) = env
        .signed_op(&mut alice, &key, "SignHash", json!({"Hash": HASH}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["SignatureFormat"], "RawDigest");
    assert_eq!(
        recover(&b256(HASH).0, &hexs(&v["Signature"])),
        owner.to_ascii_lowercase()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_account_ceremony_authorises_only_its_own_body() {
    let chain = FakeChain::start().await;
    let env = Env::with(Opts {
        args: chain.args(),
        ..Default::default()
    })
    .await;
    let mut alice = Soft::new();
    let reg = env.register(&mut alice).await;
    let key = reg["KeyId"].as_str().unwrap().to_owned();
    let owner = reg["Address"].as_str().unwrap().to_owned();
    let message = "hello agent";
    let mismatch = |(s, e): (u16, Value)| {
        assert_eq!(
            (s, e["code"].as_str()),
            (403, Some("payload_mismatch")),
            "{e}"
        );
    };

    // Begun for Account A: completing for B, or without Account (EIP-191), is refused.
    let w = env
        .ceremony(
            &mut alice,
            &key,
            "Sign",
            json!({"Message": message, "Account": ACCOUNT_A}),
        )
        .await;
    mismatch(
        env.post(
            "/Sign",
            Some("Sign"),
            &json!({"KeyId": key, "Message": message, "Account": ACCOUNT_B, "WebAuthn": w}),
        )
        .await,
    );
    mismatch(
        env.post(
            "/Sign",
            Some("Sign"),
            &json!({"KeyId": key, "Message": message, "WebAuthn": w}),
        )
        .await,
    );
    // A different message for A: refused too.
    mismatch(
        env.post(
            "/Sign",
            Some("Sign"),
            &json!({"KeyId": key, "Message": "hello agenT", "Account": ACCOUNT_A, "WebAuthn": w}),
        )
        .await,
    );
    // The refusals consumed nothing: the body it was begun for signs, for A.
    let (s, v) = env
        .post(
            "/Sign",
            Some("Sign"),
            &json!({"KeyId": key, "Message": message, "Account": ACCOUNT_A, "WebAuthn": w}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        recover(
            &erc7739::of_message(FAKE_CHAIN_ID, address(ACCOUNT_A), message.as_bytes()),
            &hexs(&v["Signature"])
        ),
        owner.to_ascii_lowercase()
    );

    // Begun for a plain personal_sign: completing with an Account is refused.
    let w = env
        .ceremony(&mut alice, &key, "Sign", json!({"Message": message}))
        .await;
    mismatch(
        env.post(
            "/Sign",
            Some("Sign"),
            &json!({"KeyId": key, "Message": message, "Account": ACCOUNT_A, "WebAuthn": w}),
        )
        .await,
    );

    // SignHash begun for the wrapping for A: never a raw signature of the hash, nor B's.
    let w = env
        .ceremony(
            &mut alice,
            &key,
            "SignHash",
            json!({"Hash": HASH, "Account": ACCOUNT_A}),
        )
        .await;
    mismatch(
        env.post(
            "/SignHash",
            Some("SignHash"),
            &json!({"KeyId": key, "Hash": HASH, "WebAuthn": w}),
        )
        .await,
    );
    mismatch(
        env.post(
            "/SignHash",
            Some("SignHash"),
            &json!({"KeyId": key, "Hash": HASH, "Account": ACCOUNT_B, "WebAuthn": w}),
        )
        .await,
    );
    // ...nor a /Sign of anything.
    let (s, e) = env
        .post(
            "/Sign",
            Some("Sign"),
            &json!({"KeyId": key, "Message": HASH, "Account": ACCOUNT_A, "WebAuthn": w}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (403, Some("challenge_wrong_purpose")),
        "{e}"
    );
    // Begun for the raw hash: never the wrapping.
    let w = env
        .ceremony(&mut alice, &key, "SignHash", json!({"Hash": HASH}))
        .await;
    mismatch(
        env.post(
            "/SignHash",
            Some("SignHash"),
            &json!({"KeyId": key, "Hash": HASH, "Account": ACCOUNT_A, "WebAuthn": w}),
        )
        .await,
    );

    // Malformed accounts, and Account with a transaction.
    for (account, want) in [
        ("0xzz", (400, "invalid_hex")),
        (
            "0x00000000000000000000000000000000000a11",
            (422, "invalid_length"),
        ),
        (
            "0x0000000000000000000000000000000000000000",
            (422, "invalid_value"),
        ),
    ] {
        for (path, target, body) in [
            (
                "/Sign",
                "Sign",
                json!({"KeyId": key, "Message": message, "Account": account}),
            ),
            (
                "/SignHash",
                "SignHash",
                json!({"KeyId": key, "Hash": HASH, "Account": account}),
            ),
        ] {
            let (s, e) = env.post(path, Some(target), &body).await;
            assert_eq!(
                (s, e["code"].as_str()),
                (want.0, Some(want.1)),
                "{path} {e}"
            );
        }
    }
    let (s, e) = env
        .post(
            "/Sign",
            Some("Sign"),
            &json!({"KeyId": key, "Transaction": tx(ACCOUNT_B), "Account": ACCOUNT_A}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (400, Some("invalid_request")),
        "{e}"
    );
    let (s, e) = env
        .post(
            "/BeginAuthentication",
            None,
            &json!({"KeyId": key, "Purpose": "Sign",
                "Payload": {"Transaction": tx(ACCOUNT_B), "Account": ACCOUNT_A}}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (400, Some("invalid_request")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn account_signatures_need_the_chain_settings() {
    let env = Env::start().await;
    assert!(env.server().state.chain.is_none());
    let mut alice = Soft::new();
    let reg = env.register(&mut alice).await;
    let key = reg["KeyId"].as_str().unwrap().to_owned();
    let unavailable = |(s, e): (u16, Value)| {
        assert_eq!(
            (s, e["code"].as_str()),
            (503, Some("chain_not_configured")),
            "{e}"
        );
        assert!(e["error"].as_str().unwrap().contains("Account"), "{e}");
    };
    unavailable(
        env.post(
            "/BeginAuthentication",
            None,
            &json!({"KeyId": key, "Purpose": "Sign",
                "Payload": {"Message": "hi", "Account": ACCOUNT_A}}),
        )
        .await,
    );
    unavailable(
        env.post(
            "/BeginAuthentication",
            None,
            &json!({"KeyId": key, "Purpose": "SignHash",
                "Payload": {"Hash": HASH, "Account": ACCOUNT_A}}),
        )
        .await,
    );
    unavailable(
        env.post(
            "/Sign",
            Some("Sign"),
            &json!({"KeyId": key, "Message": "hi", "Account": ACCOUNT_A}),
        )
        .await,
    );
    unavailable(
        env.post(
            "/SignHash",
            Some("SignHash"),
            &json!({"KeyId": key, "Hash": HASH, "Account": ACCOUNT_A}),
        )
        .await,
    );
    // Without Account the same companion signs as before.
    let w = env
        .ceremony(&mut alice, &key, "Sign", json!({"Message": "hi"}))
        .await;
    let (s, v) = env
        .post(
            "/Sign",
            Some("Sign"),
            &json!({"KeyId": key, "Message": "hi", "WebAuthn": w}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["SignatureFormat"], "EIP191PersonalSign");

    // The API description says what each route produces.
    let (s, doc) = env.get("/openapi.json").await;
    assert_eq!(s, 200);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    let describe = |path: &str| {
        doc["paths"][path]["post"]["description"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let sign = describe("/Sign");
    for want in [
        "EIP191PersonalSign",
        "NOT valid as the owner's `AgentAccount`'s ERC-1271",
        "NOT as its UserOperation",
        "ERC7739PersonalSign",
        "\"AgentAccount\"",
    ] {
        assert!(sign.contains(want), "/Sign does not say {want:?}: {sign}");
    }
    let sign_hash = describe("/SignHash");
    for want in [
        "RawDigest",
        "userOpHash of an operation of the owner's own `AgentAccount`",
        "Only sign digests you computed yourself",
        "ERC7739PersonalSign",
    ] {
        assert!(
            sign_hash.contains(want),
            "/SignHash does not say {want:?}: {sign_hash}"
        );
    }
}
