//! Behaviour of the TA core through its byte protocol: key derivation
//! vectors, the 106-byte agent signature, and every refusal path.

mod common;

use common::*;
use kms_proto::jwt::{MAX_TTL_SECS, MAX_VERIFY_ONLY_KIDS, VERIFY_ONLY_OVERLAP_SECS};
use kms_proto::session_signature::{SessionSignature, SESSION_MARKER, SESSION_SIGNATURE_LEN};
use kms_proto::*;

const TTL: u64 = 3600;
const ACCOUNT: [u8; 20] = [0xAA; 20];

// ------------------------------------------------------------ derivation

#[test]
fn bip44_vectors_through_the_seeding_path() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = seed_anvil_wallet(&mut h, &pk);
    assert_eq!(
        checksum(&w.owner.address),
        "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    );
    let a0 = create_agent(&mut h, &mut pk, w.wallet_id, 0, TTL).unwrap();
    let a1 = create_agent(&mut h, &mut pk, w.wallet_id, 1, TTL).unwrap();
    assert_eq!(
        checksum(&a0.address),
        "0x4b39F7b0624b9dB86AD293686bc38B903142dbBc"
    );
    assert_eq!(
        checksum(&a1.address),
        "0x71b4a2d9B91726bdb5849D928967A1654D7F3de7"
    );
    // DeriveAddress agrees with CreateAgentKey.
    let body = DeriveAddressBody {
        wallet_id: w.wallet_id,
        path: HdPath::agent(1),
    };
    let assertion = pk.authorize(&mut h, w.wallet_id, &body);
    let info = h.call(&DeriveAddress { body, assertion }).unwrap();
    assert_eq!(info.address, a1.address);
    assert_eq!(info.public_key, a1.public_key);
}

#[test]
fn created_wallets_are_random_and_return_no_mnemonic_without_export_secrets() {
    let mut h = Harness::new();
    let pk = SoftPasskey::new(1);
    let a = create_wallet(&mut h, &pk);
    let b = create_wallet(&mut h, &pk);
    assert_ne!(a.wallet_id, b.wallet_id);
    assert_ne!(a.owner.address, b.owner.address);
    assert_eq!(a.wallet_id.0[6] >> 4, 4, "UUID version 4");
    #[cfg(not(feature = "export-secrets"))]
    assert_eq!(a.mnemonic, None);
    #[cfg(feature = "export-secrets")]
    assert_eq!(
        a.mnemonic.as_deref().map(|m| m.split(' ').count()),
        Some(24)
    );
}

#[test]
fn repeated_signing_does_not_rederive() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = create_wallet(&mut h, &pk);
    let cred = create_agent(&mut h, &mut pk, w.wallet_id, 0, TTL).unwrap();
    let jwt = cred.to_jwt();
    sign_op(&mut h, w.wallet_id, 0, &jwt, [1; 32], ACCOUNT).unwrap();
    h.storage.reads.borrow_mut().clear();
    for i in 0..20u8 {
        sign_op(&mut h, w.wallet_id, 0, &jwt, [i; 32], ACCOUNT).unwrap();
    }
    let reads = h.storage.reads.borrow();
    assert!(
        reads.is_empty(),
        "signing with a cached key read storage: {reads:?}"
    );
}

// ---------------------------------------------------- the 106-byte output

#[test]
fn agent_signature_layout_and_recovery() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = seed_anvil_wallet(&mut h, &pk);
    let cred = create_agent(&mut h, &mut pk, w.wallet_id, 0, TTL).unwrap();
    // n/2 of secp256k1, big-endian: low-S means s <= n/2.
    let half_n: [u8; 32] = [
        0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b,
        0x20, 0xa0,
    ];
    for i in 0..32u8 {
        let hash = alloy_primitives::keccak256([i]).0;
        let out = sign_op(&mut h, w.wallet_id, 0, &cred.to_jwt(), hash, ACCOUNT).unwrap();
        let sig = &out.signature;
        assert_eq!(sig.len(), SESSION_SIGNATURE_LEN);
        assert_eq!(sig[0], SESSION_MARKER);
        assert_eq!(&sig[1..21], &ACCOUNT);
        assert_eq!(&sig[21..41], &cred.address);
        assert_eq!(out.agent_address, cred.address);
        assert!(sig[105] == 27 || sig[105] == 28);
        assert!(sig[73..105] <= half_n[..], "high-S signature");
        assert_eq!(
            recover(&eip191(&hash), &sig[41..SESSION_SIGNATURE_LEN]),
            cred.address
        );
        let parsed = SessionSignature::parse(sig).expect("session layout");
        assert_eq!((parsed.account, parsed.key), (ACCOUNT, cred.address));
        assert_eq!(
            checksum(&cred.address),
            "0x4b39F7b0624b9dB86AD293686bc38B903142dbBc"
        );
    }
}

/// `begin` + `finish` answers exactly what `invoke` answers; the check is `begin`'s (a revoke
/// between two `begin`s refuses the second), the ECDSA `finish`'s.
#[test]
fn begin_then_finish_is_invoke_and_checks_at_begin() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = seed_anvil_wallet(&mut h, &pk);
    let cred = create_agent(&mut h, &mut pk, w.wallet_id, 0, TTL).unwrap();
    let cmd = CommandId::SignAgentUserOp.as_u32();
    assert!(kms_ta::runs_in_parallel(cmd));
    assert!(!kms_ta::runs_in_parallel(
        CommandId::RevokeAgentKey.as_u32()
    ));
    let req = encode_request(&SignAgentUserOp {
        wallet_id: w.wallet_id,
        agent_index: 0,
        jwt: cred.to_jwt(),
        user_op_hash: [7; 32],
        account: ACCOUNT,
    });
    let whole = h.ta.invoke(cmd, &req);
    let kms_ta::Begun::Sign(pending) = h.ta.begin(cmd, &req) else {
        panic!("a valid credential leaves the signature to do");
    };
    // A signature begun before a revoke still completes (the shell orders it before the
    // revoke); one begun after is refused.
    h.call(&RevokeAgentKey {
        wallet_id: w.wallet_id,
        agent_index: 0,
    })
    .unwrap();
    assert_eq!(pending.finish(), whole, "RFC 6979: same bytes as invoke");
    let kms_ta::Begun::Done(refused) = h.ta.begin(cmd, &req) else {
        panic!("a revoked agent's credential must not reach the signature");
    };
    assert_eq!(
        decode_response::<AgentSignature>(&refused).unwrap(),
        Err(TaError::Jwt(JwtError::AgentRevoked))
    );
    assert_eq!(h.ta.invoke(cmd, &req), refused);
    // Any other command is done at once.
    let get = encode_request(&GetAgentState {
        wallet_id: w.wallet_id,
        agent_index: 0,
    });
    assert!(matches!(
        h.ta.begin(CommandId::GetAgentState.as_u32(), &get),
        kms_ta::Begun::Done(_)
    ));
}

/// `SignAgentUserOps` answers each request exactly as `SignAgentUserOp` alone answers it: the
/// same signature bytes for a good credential, the same refusal for each bad one (a tampered
/// MAC, a superseded generation, another wallet's claims, a revoked agent), in order, without one
/// refusal touching the others; `begin` + `finish` equals `invoke`, and a revoke between them
/// does not stop the signatures checked before it, while a batch begun after it is refused.
#[test]
fn a_batch_answers_each_request_as_alone() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = seed_anvil_wallet(&mut h, &pk);
    let a0 = create_agent(&mut h, &mut pk, w.wallet_id, 0, TTL).unwrap();
    let old1 = create_agent(&mut h, &mut pk, w.wallet_id, 1, TTL).unwrap();
    let a1 = refresh_agent(&mut h, &mut pk, w.wallet_id, 1, TTL).unwrap();
    let a2 = create_agent(&mut h, &mut pk, w.wallet_id, 2, TTL).unwrap();
    h.call(&RevokeAgentKey {
        wallet_id: w.wallet_id,
        agent_index: 2,
    })
    .unwrap();
    let mut tampered = a0.to_jwt();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let req = |index: u32, jwt: String, hash: u8| SignAgentUserOp {
        wallet_id: w.wallet_id,
        agent_index: index,
        jwt,
        user_op_hash: [hash; 32],
        account: ACCOUNT,
    };
    let requests = vec![
        req(0, a0.to_jwt(), 1),
        req(0, tampered, 2),
        req(1, old1.to_jwt(), 3),
        req(1, a1.to_jwt(), 4),
        req(0, a1.to_jwt(), 5),
        req(2, a2.to_jwt(), 6),
        req(0, a0.to_jwt(), 7),
    ];
    let alone: Vec<_> = requests.iter().map(|r| h.call(r)).collect();
    assert!(alone[0].is_ok() && alone[3].is_ok() && alone[6].is_ok());
    assert_eq!(jwt_err(alone[1].clone()), JwtError::BadSignature);
    assert_eq!(jwt_err(alone[2].clone()), JwtError::StaleGeneration);
    assert_eq!(jwt_err(alone[4].clone()), JwtError::IndexMismatch);
    assert_eq!(jwt_err(alone[5].clone()), JwtError::AgentRevoked);
    let batch = SignAgentUserOps {
        requests: requests.clone(),
    };
    assert_eq!(
        h.call(&batch).unwrap(),
        alone,
        "each answered as alone, in order"
    );
    // The signatures are the agents' own over each request's hash.
    let signed = alone[3].as_ref().unwrap();
    assert_eq!(
        recover(&eip191(&[4; 32]), &signed.signature[41..]),
        a1.address
    );

    // begin + finish = invoke; the check is begin's.
    let cmd = CommandId::SignAgentUserOps.as_u32();
    assert!(kms_ta::runs_in_parallel(cmd));
    let bytes = encode_request(&batch);
    let whole = h.ta.invoke(cmd, &bytes);
    let kms_ta::Begun::Sign(pending) = h.ta.begin(cmd, &bytes) else {
        panic!("a well-formed batch leaves its signatures to do");
    };
    h.call(&RevokeAgentKey {
        wallet_id: w.wallet_id,
        agent_index: 0,
    })
    .unwrap();
    assert_eq!(pending.finish(), whole, "RFC 6979: same bytes as invoke");
    let after = h.call(&batch).unwrap();
    assert_eq!(jwt_err(after[0].clone()), JwtError::AgentRevoked);
    assert_eq!(jwt_err(after[6].clone()), JwtError::AgentRevoked);
    assert_eq!(
        after[3], alone[3],
        "agent 1 is not touched by agent 0's revoke"
    );
}

/// A batch with no request, or more than the most one call takes, is refused whole, and nothing
/// of it is signed; the most it takes is accepted.
#[test]
fn a_batch_takes_one_to_the_most_requests() {
    let mut a = agent();
    let one = SignAgentUserOp {
        wallet_id: a.wallet,
        agent_index: 0,
        jwt: a.cred.to_jwt(),
        user_op_hash: [9; 32],
        account: ACCOUNT,
    };
    let refused = TaError::SignBatchInvalid {
        max: MAX_AGENT_SIGNATURES_PER_CALL as u32,
    };
    let empty = SignAgentUserOps { requests: vec![] };
    assert_eq!(a.h.call(&empty).unwrap_err(), refused);
    let cmd = CommandId::SignAgentUserOps.as_u32();
    let kms_ta::Begun::Done(out) = a.h.ta.begin(cmd, &encode_request(&empty)) else {
        panic!("an empty batch has nothing to sign");
    };
    assert_eq!(
        decode_response::<Empty>(&out).unwrap(),
        Err(refused.clone())
    );
    let over = SignAgentUserOps {
        requests: vec![one.clone(); MAX_AGENT_SIGNATURES_PER_CALL + 1],
    };
    assert_eq!(a.h.call(&over).unwrap_err(), refused);
    let full = SignAgentUserOps {
        requests: vec![one.clone(); MAX_AGENT_SIGNATURES_PER_CALL],
    };
    let answers = a.h.call(&full).unwrap();
    assert_eq!(answers.len(), MAX_AGENT_SIGNATURES_PER_CALL);
    let alone = a.h.call(&one).unwrap();
    assert!(answers.iter().all(|r| r.as_ref() == Ok(&alone)));
}

// --------------------------------------------------- credential refusals

struct Agent {
    h: Harness,
    pk: SoftPasskey,
    wallet: WalletId,
    cred: AgentCredential,
}

fn agent() -> Agent {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = create_wallet(&mut h, &pk);
    let cred = create_agent(&mut h, &mut pk, w.wallet_id, 0, TTL).unwrap();
    Agent {
        h,
        pk,
        wallet: w.wallet_id,
        cred,
    }
}

fn jwt_err(r: Result<AgentSignature, TaError>) -> JwtError {
    match r {
        Err(TaError::Jwt(e)) => e,
        other => panic!("expected a credential refusal, got {other:?}"),
    }
}

#[test]
fn bad_hmac_is_refused() {
    let mut a = agent();
    let mut jwt = a.cred.to_jwt();
    let last = jwt.pop().unwrap();
    jwt.push(if last == 'A' { 'B' } else { 'A' });
    let r = sign_op(&mut a.h, a.wallet, 0, &jwt, [1; 32], ACCOUNT);
    assert_eq!(jwt_err(r), JwtError::BadSignature);
    // A payload edited to claim another agent fails the MAC too.
    let mut forged = a.cred.clone();
    let mut claims: kms_proto::jwt::AgentClaims =
        kms_proto::jwt::parse(&a.cred.to_jwt()).unwrap().claims;
    claims.exp += 100;
    forged.payload_b64 = kms_proto::jwt::encode_json_b64(&claims);
    let r = sign_op(&mut a.h, a.wallet, 0, &forged.to_jwt(), [1; 32], ACCOUNT);
    assert_eq!(jwt_err(r), JwtError::BadSignature);
}

#[test]
fn unknown_kid_is_refused() {
    let mut a = agent();
    let mut c = a.cred.clone();
    c.header_b64 = kms_proto::jwt::encode_json_b64(&kms_proto::jwt::JwtHeader {
        alg: "HS256".into(),
        typ: "JWT".into(),
        kid: "k0000000000000000".into(),
    });
    let r = sign_op(&mut a.h, a.wallet, 0, &c.to_jwt(), [1; 32], ACCOUNT);
    assert_eq!(jwt_err(r), JwtError::UnknownKid);
}

#[test]
fn expired_credential_is_refused() {
    let mut a = agent();
    let jwt = a.cred.to_jwt();
    a.h.advance(TTL - 1);
    sign_op(&mut a.h, a.wallet, 0, &jwt, [1; 32], ACCOUNT).unwrap();
    a.h.advance(1);
    let r = sign_op(&mut a.h, a.wallet, 0, &jwt, [1; 32], ACCOUNT);
    assert_eq!(jwt_err(r), JwtError::Expired);
}

#[test]
fn wrong_wallet_or_index_claim_is_refused() {
    let mut a = agent();
    let other = create_wallet(&mut a.h, &a.pk).wallet_id;
    create_agent(&mut a.h, &mut a.pk, a.wallet, 1, TTL).unwrap();
    let jwt = a.cred.to_jwt();
    let r = sign_op(&mut a.h, other, 0, &jwt, [1; 32], ACCOUNT);
    assert_eq!(jwt_err(r), JwtError::WalletMismatch);
    let r = sign_op(&mut a.h, a.wallet, 1, &jwt, [1; 32], ACCOUNT);
    assert_eq!(jwt_err(r), JwtError::IndexMismatch);
}

fn claims_of(jwt: &str) -> kms_proto::jwt::AgentClaims {
    kms_proto::jwt::parse(jwt).unwrap().claims
}

fn address_hex(a: &[u8; 20]) -> String {
    format!(
        "0x{}",
        a.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn operator_address(h: &mut Harness) -> Result<[u8; 20], TaError> {
    h.call(&OperatorKey {
        create_if_missing: false,
    })
    .map(|k| k.address)
}

#[test]
fn credentials_name_this_ta_by_its_operator_address() {
    // A TA whose operator key exists before the first credential (as the companion makes it).
    let mut h = Harness::new();
    let op = h
        .call(&OperatorKey {
            create_if_missing: true,
        })
        .unwrap();
    let mut pk = SoftPasskey::new(1);
    let w = create_wallet(&mut h, &pk).wallet_id;
    let cred = create_agent(&mut h, &mut pk, w, 0, TTL).unwrap();
    assert_eq!(
        claims_of(&cred.to_jwt()).iss,
        Some(address_hex(&op.address))
    );
    // A refresh names it too, across a restart.
    h.restart();
    let new = refresh_agent(&mut h, &mut pk, w, 0, TTL).unwrap();
    assert_eq!(claims_of(&new.to_jwt()).iss, Some(address_hex(&op.address)));
    sign_op(&mut h, w, 0, &new.to_jwt(), [1; 32], ACCOUNT).unwrap();

    // A TA asked for a credential before anything asked for its operator key creates the key
    // then (in the credential's write), and names it; it is the key kept from then on.
    let mut a = agent();
    let iss = claims_of(&a.cred.to_jwt()).iss.expect("the iss claim");
    let kept =
        operator_address(&mut a.h).expect("the operator key was created with the credential");
    assert_eq!(iss, address_hex(&kept));
    a.h.restart();
    assert_eq!(operator_address(&mut a.h).unwrap(), kept);
    let again =
        a.h.call(&OperatorKey {
            create_if_missing: true,
        })
        .unwrap();
    assert_eq!(again.address, kept);
    sign_op(&mut a.h, a.wallet, 0, &a.cred.to_jwt(), [1; 32], ACCOUNT).unwrap();
}

#[test]
fn a_credential_naming_another_ta_is_refused_as_such() {
    // Two TAs (different randomness: different operator keys and JWT secrets).
    let mut a = agent();
    let mut b = {
        let mut h = Harness::with_seed(2);
        let mut pk = SoftPasskey::new(2);
        let w = create_wallet(&mut h, &pk);
        let cred = create_agent(&mut h, &mut pk, w.wallet_id, 0, TTL).unwrap();
        Agent {
            h,
            pk,
            wallet: w.wallet_id,
            cred,
        }
    };
    let ta_a = operator_address(&mut a.h).unwrap();
    let ta_b = operator_address(&mut b.h).unwrap();
    assert_ne!(ta_a, ta_b);
    // B's credential presented to A, for A's agent or for B's: refused as another TA's (not
    // as an unknown kid, which is what its MAC would give).
    let jwt_b = b.cred.to_jwt();
    assert_eq!(claims_of(&jwt_b).iss, Some(address_hex(&ta_b)));
    let r = sign_op(&mut a.h, b.wallet, 0, &jwt_b, [1; 32], ACCOUNT);
    assert_eq!(jwt_err(r), JwtError::OtherTa);
    let r = sign_op(&mut a.h, a.wallet, 0, &jwt_b, [1; 32], ACCOUNT);
    assert_eq!(jwt_err(r), JwtError::OtherTa);
    assert_eq!(
        a.h.call(&JwtHmacVerify { jwt: jwt_b.clone() }).unwrap_err(),
        TaError::Jwt(JwtError::OtherTa)
    );
    // B still takes it.
    sign_op(&mut b.h, b.wallet, 0, &jwt_b, [1; 32], ACCOUNT).unwrap();

    // A's own credential edited to name B is refused the same way; edited to drop the claim,
    // its MAC fails (the claim is covered by it).
    let mut claims = claims_of(&a.cred.to_jwt());
    let mut forged = a.cred.clone();
    claims.iss = Some(address_hex(&ta_b));
    forged.payload_b64 = kms_proto::jwt::encode_json_b64(&claims);
    let r = sign_op(&mut a.h, a.wallet, 0, &forged.to_jwt(), [1; 32], ACCOUNT);
    assert_eq!(jwt_err(r), JwtError::OtherTa);
    claims.iss = None;
    forged.payload_b64 = kms_proto::jwt::encode_json_b64(&claims);
    let r = sign_op(&mut a.h, a.wallet, 0, &forged.to_jwt(), [1; 32], ACCOUNT);
    assert_eq!(jwt_err(r), JwtError::BadSignature);
    // The claim is compared exactly: A's address in capitals is not A's spelling.
    claims.iss = Some(format!("0x{}", address_hex(&ta_a)[2..].to_uppercase()));
    forged.payload_b64 = kms_proto::jwt::encode_json_b64(&claims);
    let r = sign_op(&mut a.h, a.wallet, 0, &forged.to_jwt(), [1; 32], ACCOUNT);
    assert_eq!(jwt_err(r), JwtError::OtherTa);
    sign_op(&mut a.h, a.wallet, 0, &a.cred.to_jwt(), [1; 32], ACCOUNT).unwrap();
}

/// The JWT secret store as sealed (`ta/core/src/records.rs`), read back from the harness's
/// storage to MAC a credential the way a TA from before the `iss` claim minted it.
#[derive(serde::Deserialize)]
struct SealedJwtStore {
    _version: u8,
    entries: Vec<SealedJwtSecret>,
}

#[derive(serde::Deserialize)]
struct SealedJwtSecret {
    kid: String,
    secret: [u8; 32],
    _created_at: u64,
    retire_at: Option<u64>,
}

#[test]
fn a_credential_minted_before_the_iss_claim_still_verifies() {
    use hmac::Mac;
    let mut a = agent();
    let bytes = a.h.storage.map.borrow()["jwt"].clone();
    let store: SealedJwtStore = postcard::from_bytes(&bytes).unwrap();
    let current = store
        .entries
        .iter()
        .find(|e| e.retire_at.is_none())
        .unwrap();
    assert_eq!(current.kid, a.cred.kid);
    let mut claims = claims_of(&a.cred.to_jwt());
    claims.iss = None;
    let mut old = a.cred.clone();
    old.payload_b64 = kms_proto::jwt::encode_json_b64(&claims);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&current.secret).unwrap();
    mac.update(format!("{}.{}", old.header_b64, old.payload_b64).as_bytes());
    old.hmac = mac.finalize().into_bytes().into();
    let jwt = old.to_jwt();
    assert_eq!(claims_of(&jwt).iss, None);
    sign_op(&mut a.h, a.wallet, 0, &jwt, [1; 32], ACCOUNT).unwrap();
    // Checked like any other all the same: superseded by a refresh.
    refresh_agent(&mut a.h, &mut a.pk, a.wallet, 0, TTL).unwrap();
    let r = sign_op(&mut a.h, a.wallet, 0, &jwt, [1; 32], ACCOUNT);
    assert_eq!(jwt_err(r), JwtError::StaleGeneration);
}

#[test]
fn refresh_supersedes_the_previous_generation() {
    let mut a = agent();
    let old = a.cred.to_jwt();
    let new = refresh_agent(&mut a.h, &mut a.pk, a.wallet, 0, TTL).unwrap();
    assert_eq!(new.generation, a.cred.generation + 1);
    assert_eq!(new.address, a.cred.address);
    let r = sign_op(&mut a.h, a.wallet, 0, &old, [1; 32], ACCOUNT);
    assert_eq!(jwt_err(r), JwtError::StaleGeneration);
    sign_op(&mut a.h, a.wallet, 0, &new.to_jwt(), [1; 32], ACCOUNT).unwrap();
    // The generation is sealed: it survives a TA restart.
    a.h.restart();
    let r = sign_op(&mut a.h, a.wallet, 0, &old, [1; 32], ACCOUNT);
    assert_eq!(jwt_err(r), JwtError::StaleGeneration);
    sign_op(&mut a.h, a.wallet, 0, &new.to_jwt(), [1; 32], ACCOUNT).unwrap();
}

#[test]
fn revoke_kills_the_agent_for_good() {
    let mut a = agent();
    let jwt = a.cred.to_jwt();
    let st =
        a.h.call(&RevokeAgentKey {
            wallet_id: a.wallet,
            agent_index: 0,
        })
        .unwrap();
    assert!(st.revoked);
    assert_eq!(st.generation, a.cred.generation + 1);
    let r = sign_op(&mut a.h, a.wallet, 0, &jwt, [1; 32], ACCOUNT);
    assert_eq!(jwt_err(r), JwtError::AgentRevoked);
    // Revoking again changes nothing (re-running is safe).
    let again =
        a.h.call(&RevokeAgentKey {
            wallet_id: a.wallet,
            agent_index: 0,
        })
        .unwrap();
    assert_eq!(again, st);
    // No refresh, no re-mint at the same index.
    assert_eq!(
        refresh_agent(&mut a.h, &mut a.pk, a.wallet, 0, TTL).unwrap_err(),
        TaError::AgentRevoked
    );
    assert_eq!(
        create_agent(&mut a.h, &mut a.pk, a.wallet, 0, TTL).unwrap_err(),
        TaError::AgentExists
    );
    a.h.restart();
    let r = sign_op(&mut a.h, a.wallet, 0, &jwt, [1; 32], ACCOUNT);
    assert_eq!(jwt_err(r), JwtError::AgentRevoked);
    assert!(
        a.h.call(&GetAgentState {
            wallet_id: a.wallet,
            agent_index: 0
        })
        .unwrap()
        .revoked
    );
}

#[test]
fn forced_rotation_kills_every_old_kid() {
    let mut a = agent();
    let jwt = a.cred.to_jwt();
    a.h.call(&JwtRotateSecret {
        mode: RotationMode::Normal,
    })
    .unwrap();
    let r =
        a.h.call(&JwtRotateSecret {
            mode: RotationMode::Force,
        })
        .unwrap();
    assert_eq!(r.removed.len(), 2);
    assert_eq!(r.secrets.len(), 1);
    let res = sign_op(&mut a.h, a.wallet, 0, &jwt, [1; 32], ACCOUNT);
    assert_eq!(jwt_err(res), JwtError::UnknownKid);
    // A refreshed credential uses the new kid and works.
    let new = refresh_agent(&mut a.h, &mut a.pk, a.wallet, 0, TTL).unwrap();
    assert_eq!(Some(new.kid.clone()), r.current_kid);
    sign_op(&mut a.h, a.wallet, 0, &new.to_jwt(), [1; 32], ACCOUNT).unwrap();
}

const DAY: u64 = 24 * 3600;

fn rotate(h: &mut Harness, mode: RotationMode) -> Result<JwtRotation, TaError> {
    h.call(&JwtRotateSecret { mode })
}

fn verify_only(h: &mut Harness) -> Vec<(String, Option<u64>)> {
    h.call(&JwtSecretStatus {})
        .unwrap()
        .into_iter()
        .filter(|s| s.status == KidStatus::VerifyOnly)
        .map(|s| (s.kid, s.retire_at))
        .collect()
}

#[test]
fn a_second_normal_rotation_a_day_later_keeps_the_first_kids_credentials_until_they_expire() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = create_wallet(&mut h, &pk);
    // The longest credential there is, under kid A.
    let minted_at = h.clock.get();
    let cred = create_agent(&mut h, &mut pk, w.wallet_id, 0, MAX_TTL_SECS).unwrap();
    let jwt = cred.to_jwt();
    let kid_a = cred.kid.clone();
    let r1 = rotate(&mut h, RotationMode::Normal).unwrap();
    assert_eq!(r1.retired, vec![kid_a.clone()]);
    let kid_b = r1.current_kid.clone().unwrap();
    h.advance(DAY);
    let r2 = rotate(&mut h, RotationMode::Normal).unwrap();
    assert_eq!(r2.retired, vec![kid_b.clone()]);
    assert!(
        r2.removed.is_empty(),
        "a live verify-only kid was dropped: {r2:?}"
    );
    // Both old kids are verify-only, each until its own retire time.
    assert_eq!(
        verify_only(&mut h),
        vec![
            (kid_a.clone(), Some(minted_at + VERIFY_ONLY_OVERLAP_SECS)),
            (kid_b, Some(minted_at + DAY + VERIFY_ONLY_OVERLAP_SECS)),
        ]
    );
    assert_eq!(r2.secrets.len(), 3);
    // The first credential verifies and signs until its expiry, across a TA restart too.
    assert_eq!(
        h.call(&JwtHmacVerify { jwt: jwt.clone() }).unwrap().kid,
        kid_a
    );
    sign_op(&mut h, w.wallet_id, 0, &jwt, [1; 32], ACCOUNT).unwrap();
    h.clock.set(minted_at + MAX_TTL_SECS - 1);
    h.restart();
    sign_op(&mut h, w.wallet_id, 0, &jwt, [2; 32], ACCOUNT).unwrap();
    // Then it is refused: it expired (its kid is still there, until its retire time).
    h.advance(1);
    let r = sign_op(&mut h, w.wallet_id, 0, &jwt, [3; 32], ACCOUNT);
    assert_eq!(jwt_err(r), JwtError::Expired);
    assert_eq!(verify_only(&mut h).len(), 2);
    // At A's retire time a purge drops A, and only A.
    h.clock.set(minted_at + VERIFY_ONLY_OVERLAP_SECS);
    let purged = rotate(&mut h, RotationMode::PurgeExpired).unwrap();
    assert_eq!(purged.removed, vec![kid_a]);
    assert_eq!(verify_only(&mut h).len(), 1);
}

#[test]
fn normal_rotation_at_the_verify_only_limit_is_refused_with_its_retry_time() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = create_wallet(&mut h, &pk);
    // One live credential under every kid: agent i is minted under the i-th kid.
    let mut creds = vec![create_agent(&mut h, &mut pk, w.wallet_id, 0, MAX_TTL_SECS).unwrap()];
    let first_rotation = h.clock.get();
    for i in 1..=MAX_VERIFY_ONLY_KIDS as u32 {
        rotate(&mut h, RotationMode::Normal).unwrap();
        h.advance(3600);
        creds.push(create_agent(&mut h, &mut pk, w.wallet_id, i, MAX_TTL_SECS).unwrap());
    }
    assert_eq!(verify_only(&mut h).len(), MAX_VERIFY_ONLY_KIDS);
    // One more normal rotation would have to drop a kid within its overlap: refused, with the
    // time the oldest verify-only kid retires, and nothing changes.
    let retry_at = first_rotation + VERIFY_ONLY_OVERLAP_SECS;
    let before = h.call(&JwtSecretStatus {}).unwrap();
    assert_eq!(
        rotate(&mut h, RotationMode::Normal).unwrap_err(),
        TaError::JwtRotationRefused { retry_at }
    );
    assert_eq!(h.call(&JwtSecretStatus {}).unwrap(), before);
    h.restart();
    assert_eq!(
        h.call(&JwtSecretStatus {}).unwrap(),
        before,
        "nothing was sealed"
    );
    for (i, c) in creds.iter().enumerate() {
        sign_op(&mut h, w.wallet_id, i as u32, &c.to_jwt(), [1; 32], ACCOUNT).unwrap();
    }
    // Still refused a second before; at the retry time it runs and drops the oldest kid only.
    h.clock.set(retry_at - 1);
    assert_eq!(
        rotate(&mut h, RotationMode::Normal).unwrap_err(),
        TaError::JwtRotationRefused { retry_at }
    );
    h.clock.set(retry_at);
    let r = rotate(&mut h, RotationMode::Normal).unwrap();
    assert_eq!(r.removed, vec![creds[0].kid.clone()]);
    assert_eq!(verify_only(&mut h).len(), MAX_VERIFY_ONLY_KIDS);
}

#[test]
fn forced_rotation_kills_every_kid_even_several_verify_only_ones() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = create_wallet(&mut h, &pk);
    let mut creds = vec![create_agent(&mut h, &mut pk, w.wallet_id, 0, MAX_TTL_SECS).unwrap()];
    for i in 1..=MAX_VERIFY_ONLY_KIDS as u32 {
        rotate(&mut h, RotationMode::Normal).unwrap();
        h.advance(DAY / 4);
        creds.push(create_agent(&mut h, &mut pk, w.wallet_id, i, MAX_TTL_SECS).unwrap());
    }
    // At the limit a forced rotation is not refused, and every old kid goes.
    let r = rotate(&mut h, RotationMode::Force).unwrap();
    assert_eq!(r.removed.len(), MAX_VERIFY_ONLY_KIDS + 1);
    assert_eq!(r.secrets.len(), 1);
    for (i, c) in creds.iter().enumerate() {
        let res = sign_op(&mut h, w.wallet_id, i as u32, &c.to_jwt(), [1; 32], ACCOUNT);
        assert_eq!(jwt_err(res), JwtError::UnknownKid, "agent {i}");
    }
}

#[test]
fn verify_only_kid_stops_after_the_overlap() {
    let mut a = agent();
    let jwt = a.cred.to_jwt();
    a.h.call(&JwtRotateSecret {
        mode: RotationMode::Normal,
    })
    .unwrap();
    // Refresh under the new kid to check the retired kid alone.
    a.h.advance(VERIFY_ONLY_OVERLAP_SECS);
    let res = a.h.call(&JwtHmacVerify { jwt });
    assert_eq!(res.unwrap_err(), TaError::Jwt(JwtError::RetiredKid));
    let purged =
        a.h.call(&JwtRotateSecret {
            mode: RotationMode::PurgeExpired,
        })
        .unwrap();
    assert_eq!(purged.removed, vec![a.cred.kid.clone()]);
}

#[test]
fn hmac_sign_is_never_a_mac_oracle_and_verify_returns_no_mac() {
    let mut a = agent();
    assert_eq!(
        a.h.call(&JwtHmacSign {
            message: b"anything".to_vec()
        })
        .unwrap_err(),
        TaError::Unsupported
    );
    let v =
        a.h.call(&JwtHmacVerify {
            jwt: a.cred.to_jwt(),
        })
        .unwrap();
    assert_eq!(v.kid, a.cred.kid);
    assert_eq!(v.claims.gen, a.cred.generation);
    assert_eq!(v.claims.agent_index, 0);
    // The whole encoded answer does not contain the MAC bytes.
    let bytes = a.ta_raw_verify();
    assert!(!bytes.windows(32).any(|w| w == a.cred.hmac));
}

impl Agent {
    fn ta_raw_verify(&mut self) -> Vec<u8> {
        self.h.ta.invoke(
            CommandId::JwtHmacVerify.as_u32(),
            &encode_request(&JwtHmacVerify {
                jwt: self.cred.to_jwt(),
            }),
        )
    }
}

#[test]
fn ttl_and_label_and_index_bounds() {
    let mut a = agent();
    for ttl in [0, MAX_TTL_SECS + 1] {
        assert_eq!(
            create_agent(&mut a.h, &mut a.pk, a.wallet, 5, ttl).unwrap_err(),
            TaError::InvalidTtl
        );
    }
    create_agent(&mut a.h, &mut a.pk, a.wallet, 5, MAX_TTL_SECS).unwrap();
    let body = MintAgentBody {
        wallet_id: a.wallet,
        label: "x".repeat(129),
        ttl_secs: TTL,
    };
    let assertion = a.pk.authorize(&mut a.h, a.wallet, &body);
    assert_eq!(
        a.h.call(&CreateAgentKey {
            agent_index: 6,
            body,
            assertion
        })
        .unwrap_err(),
        TaError::InvalidLabel
    );
    assert_eq!(
        create_agent(&mut a.h, &mut a.pk, a.wallet, 1 << 31, TTL).unwrap_err(),
        TaError::InvalidAgentIndex
    );
    assert_eq!(
        create_agent(&mut a.h, &mut a.pk, a.wallet, 0, TTL).unwrap_err(),
        TaError::AgentExists
    );
}

// ----------------------------------------------------- passkey refusals

fn sign_hash_req(
    h: &mut Harness,
    pk: &mut SoftPasskey,
    wallet: WalletId,
    opts: &AssertOpts,
) -> SignHash {
    let body = SignHashBody {
        wallet_id: wallet,
        path: HdPath::OWNER,
        hash: [9; 32],
    };
    let assertion = pk.authorize_with(h, wallet, &body, opts);
    SignHash { body, assertion }
}

fn passkey_err<T: std::fmt::Debug>(r: Result<T, TaError>) -> PasskeyError {
    match r {
        Err(TaError::Passkey(e)) => e,
        other => panic!("expected a passkey refusal, got {other:?}"),
    }
}

#[test]
fn a_good_assertion_signs_once() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = create_wallet(&mut h, &pk);
    let req = sign_hash_req(&mut h, &mut pk, w.wallet_id, &AssertOpts::default());
    let sig = h.call(&req).unwrap();
    assert_eq!(recover(&[9; 32], &sig.bytes), w.owner.address);
    assert_eq!(sig.address, w.owner.address);
    // Reused nonce.
    assert_eq!(passkey_err(h.call(&req)), PasskeyError::ChallengeMismatch);
}

#[test]
fn assertion_by_a_wrong_key_is_refused() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let mut other = SoftPasskey::new(2);
    let w = create_wallet(&mut h, &pk);
    let req = sign_hash_req(&mut h, &mut other, w.wallet_id, &AssertOpts::default());
    assert_eq!(passkey_err(h.call(&req)), PasskeyError::BadSignature);
    // The failed attempt did not burn the nonce for a legitimate holder? It
    // did not consume anything: the right key with a fresh nonce works.
    let req = sign_hash_req(&mut h, &mut pk, w.wallet_id, &AssertOpts::default());
    h.call(&req).unwrap();
}

#[test]
fn assertion_for_another_payload_is_refused() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = create_wallet(&mut h, &pk);
    let mut req = sign_hash_req(&mut h, &mut pk, w.wallet_id, &AssertOpts::default());
    req.body.hash = [10; 32];
    assert_eq!(passkey_err(h.call(&req)), PasskeyError::ChallengeMismatch);
    // Same body, other command: a SignHash assertion cannot authorise
    // DeriveAddress even with identical fields.
    let mut req2 = sign_hash_req(&mut h, &mut pk, w.wallet_id, &AssertOpts::default());
    let derive = DeriveAddress {
        body: DeriveAddressBody {
            wallet_id: w.wallet_id,
            path: HdPath::OWNER,
        },
        assertion: req2.assertion.clone(),
    };
    assert_eq!(
        passkey_err(h.call(&derive)),
        PasskeyError::ChallengeMismatch
    );
    req2.body.path = HdPath::agent(0);
    assert_eq!(passkey_err(h.call(&req2)), PasskeyError::ChallengeMismatch);
}

#[test]
fn assertion_without_up_or_uv_or_for_another_rp_is_refused() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = create_wallet(&mut h, &pk);
    for (opts, want) in [
        (
            AssertOpts {
                flags: 0x04,
                ..Default::default()
            },
            PasskeyError::UserPresenceMissing,
        ),
        (
            AssertOpts {
                flags: 0x01,
                ..Default::default()
            },
            PasskeyError::UserVerificationMissing,
        ),
        (
            AssertOpts {
                rp_id: Some("evil.example".into()),
                ..Default::default()
            },
            PasskeyError::RpIdMismatch,
        ),
        (
            AssertOpts {
                typ: "webauthn.create",
                ..Default::default()
            },
            PasskeyError::WrongType,
        ),
    ] {
        let req = sign_hash_req(&mut h, &mut pk, w.wallet_id, &opts);
        assert_eq!(passkey_err(h.call(&req)), want);
    }
}

#[test]
fn expired_nonce_is_refused() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = create_wallet(&mut h, &pk);
    let req = sign_hash_req(&mut h, &mut pk, w.wallet_id, &AssertOpts::default());
    h.advance(300);
    assert_eq!(passkey_err(h.call(&req)), PasskeyError::ChallengeMismatch);
}

#[test]
fn several_nonces_may_be_pending_per_wallet() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = create_wallet(&mut h, &pk);
    let reqs: Vec<SignHash> = (0..5)
        .map(|_| sign_hash_req(&mut h, &mut pk, w.wallet_id, &AssertOpts::default()))
        .collect();
    // Used in reverse order: each still works once.
    for r in reqs.iter().rev() {
        h.call(r).unwrap();
    }
    for r in &reqs {
        assert_eq!(passkey_err(h.call(r)), PasskeyError::ChallengeMismatch);
    }
}

#[test]
fn malformed_assertion_parts_are_refused() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = create_wallet(&mut h, &pk);
    let mut req = sign_hash_req(&mut h, &mut pk, w.wallet_id, &AssertOpts::default());
    req.assertion.signature = vec![0x30, 0x80, 0xff];
    assert_eq!(passkey_err(h.call(&req)), PasskeyError::MalformedSignature);
    req.assertion.client_data_json = b"not json".to_vec();
    assert_eq!(passkey_err(h.call(&req)), PasskeyError::MalformedClientData);
    req.assertion.authenticator_data.truncate(36);
    assert_eq!(
        passkey_err(h.call(&req)),
        PasskeyError::MalformedAuthenticatorData
    );
}

#[test]
fn off_curve_or_malformed_passkey_keys_are_refused() {
    let mut h = Harness::new();
    let pk = SoftPasskey::new(1);
    let good = pk.public_key();
    let mut off_curve = good.clone();
    off_curve[64] ^= 1;
    let mut compressed = good[..33].to_vec();
    compressed[0] = 0x02;
    for bad in [
        off_curve,
        compressed,
        vec![0x04; 65],
        vec![],
        good[..64].to_vec(),
    ] {
        assert_eq!(
            h.call(&CreateWallet {
                passkey_public_key: bad,
                rp_id: RP_ID.into()
            })
            .unwrap_err(),
            TaError::InvalidPasskeyKey
        );
    }
    assert_eq!(
        h.call(&CreateWallet {
            passkey_public_key: good,
            rp_id: String::new()
        })
        .unwrap_err(),
        TaError::InvalidRpId
    );
}

#[test]
fn change_passkey_moves_authority_to_the_new_key() {
    let mut h = Harness::new();
    let mut old = SoftPasskey::new(1);
    let mut new = SoftPasskey::new(2);
    let w = create_wallet(&mut h, &old);
    let pending = sign_hash_req(&mut h, &mut old, w.wallet_id, &AssertOpts::default());
    let body = ChangePasskeyBody {
        wallet_id: w.wallet_id,
        new_passkey_public_key: new.public_key(),
        new_rp_id: RP_ID.into(),
    };
    let assertion = old.authorize(&mut h, w.wallet_id, &body);
    h.call(&ChangePasskey { body, assertion }).unwrap();
    // The old key's pending challenge is void; the new key works.
    assert!(h.call(&pending).is_err());
    let req = sign_hash_req(&mut h, &mut old, w.wallet_id, &AssertOpts::default());
    assert_eq!(passkey_err(h.call(&req)), PasskeyError::BadSignature);
    let req = sign_hash_req(&mut h, &mut new, w.wallet_id, &AssertOpts::default());
    h.call(&req).unwrap();
}

#[test]
fn remove_wallet_needs_the_passkey_and_removes_everything() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let mut other = SoftPasskey::new(2);
    let w = create_wallet(&mut h, &pk);
    let cred = create_agent(&mut h, &mut pk, w.wallet_id, 0, TTL).unwrap();
    let body = RemoveWalletBody {
        wallet_id: w.wallet_id,
    };
    let bad = other.authorize(&mut h, w.wallet_id, &body);
    assert_eq!(
        passkey_err(h.call(&RemoveWallet {
            body: body.clone(),
            assertion: bad
        })),
        PasskeyError::BadSignature
    );
    let assertion = pk.authorize(&mut h, w.wallet_id, &body);
    h.call(&RemoveWallet { body, assertion }).unwrap();
    assert_eq!(
        h.call(&GetChallenge {
            wallet_id: w.wallet_id
        })
        .unwrap_err(),
        TaError::WalletNotFound
    );
    assert!(sign_op(&mut h, w.wallet_id, 0, &cred.to_jwt(), [1; 32], ACCOUNT).is_err());
}

// ------------------------------------------------------- transactions

fn sign_tx(
    h: &mut Harness,
    pk: &mut SoftPasskey,
    w: WalletId,
    tx: Transaction,
) -> Result<SignedTransaction, TaError> {
    let body = SignTransactionBody {
        wallet_id: w,
        path: HdPath::OWNER,
        transaction: tx,
    };
    let assertion = pk.authorize(h, w, &body);
    h.call(&SignTransaction { body, assertion })
}

#[test]
fn signs_eip1559_and_legacy_transactions_that_recover_to_the_owner() {
    use alloy_consensus::transaction::SignerRecoverable;
    use alloy_eips::eip2718::Decodable2718;
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = seed_anvil_wallet(&mut h, &pk);
    let mut value = [0u8; 32];
    value[31] = 7;
    let to = Some(vec![0x11; 20]);
    let eip1559 = sign_tx(
        &mut h,
        &mut pk,
        w.wallet_id,
        Transaction::Eip1559 {
            chain_id: 31337,
            nonce: 3,
            max_priority_fee_per_gas: 1_000_000_000,
            max_fee_per_gas: 2_000_000_000,
            gas_limit: 21000,
            to: to.clone(),
            value,
            data: vec![],
            access_list: vec![],
        },
    )
    .unwrap();
    assert_eq!(eip1559.raw[0], 0x02);
    let env = alloy_consensus::TxEnvelope::decode_2718(&mut eip1559.raw.as_slice()).unwrap();
    assert_eq!(env.recover_signer().unwrap().0 .0, w.owner.address);
    assert_eq!(env.tx_hash().0, eip1559.tx_hash);
    let legacy = sign_tx(
        &mut h,
        &mut pk,
        w.wallet_id,
        Transaction::Legacy {
            chain_id: 1,
            nonce: 0,
            gas_price: 20_000_000_000,
            gas_limit: 21000,
            to,
            value,
            data: vec![1, 2, 3],
        },
    )
    .unwrap();
    let env = alloy_consensus::TxEnvelope::decode_2718(&mut legacy.raw.as_slice()).unwrap();
    assert_eq!(env.recover_signer().unwrap().0 .0, w.owner.address);
    match env {
        alloy_consensus::TxEnvelope::Legacy(s) => assert_eq!(s.tx().chain_id, Some(1)),
        other => panic!("not legacy: {other:?}"),
    }
}

#[test]
fn short_to_is_refused_with_a_typed_error() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = create_wallet(&mut h, &pk);
    for len in [0usize, 19, 21, 32] {
        let r = sign_tx(
            &mut h,
            &mut pk,
            w.wallet_id,
            Transaction::Legacy {
                chain_id: 1,
                nonce: 0,
                gas_price: 1,
                gas_limit: 21000,
                to: Some(vec![0x22; len]),
                value: [0; 32],
                data: vec![],
            },
        );
        assert_eq!(r.unwrap_err(), TaError::InvalidRecipientLength(len as u32));
    }
}

#[test]
fn sign_message_is_eip191() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = create_wallet(&mut h, &pk);
    let body = SignMessageBody {
        wallet_id: w.wallet_id,
        path: HdPath::OWNER,
        message: b"hello agent".to_vec(),
    };
    let assertion = pk.authorize(&mut h, w.wallet_id, &body);
    let sig = h.call(&SignMessage { body, assertion }).unwrap();
    assert_eq!(
        recover(&eip191(b"hello agent"), &sig.bytes),
        w.owner.address
    );
}

// ------------------------------------- ERC-1271 for the AgentAccount (ERC-7739)

/// The ERC-7739 `PersonalSign` digest, computed here with alloy-sol-types' EIP-712
/// machinery (not with the TA's code): the domain is `eip712_domain!`, the struct is a
/// `sol!` `PersonalSign(bytes prefixed)`.
mod erc7739 {
    use alloy_primitives::{keccak256, Address};
    use alloy_sol_types::{eip712_domain, sol, Eip712Domain, SolStruct};

    sol! {
        struct PersonalSign {
            bytes prefixed;
        }
    }

    pub fn domain(chain_id: u64, account: [u8; 20]) -> Eip712Domain {
        eip712_domain! {
            name: "AgentAccount",
            version: "1",
            chain_id: chain_id,
            verifying_contract: Address::from(account),
        }
    }

    /// For a personal message: the EIP-712 signing hash of
    /// `PersonalSign { prefixed: "\x19Ethereum Signed Message:\n" ‖ len ‖ message }`
    /// (EIP-712 hashes a `bytes` member, giving the EIP-191 hash inside the struct).
    pub fn of_message(chain_id: u64, account: [u8; 20], message: &[u8]) -> [u8; 32] {
        let mut prefixed = format!("\x19Ethereum Signed Message:\n{}", message.len()).into_bytes();
        prefixed.extend_from_slice(message);
        PersonalSign {
            prefixed: prefixed.into(),
        }
        .eip712_signing_hash(&domain(chain_id, account))
        .0
    }

    /// For a bare hash (no preimage): `keccak256(0x1901 ‖ separator ‖ keccak256(typeHash ‖ hash))`.
    pub fn of_hash(chain_id: u64, account: [u8; 20], hash: [u8; 32]) -> [u8; 32] {
        let type_hash = PersonalSign {
            prefixed: Default::default(),
        }
        .eip712_type_hash();
        assert_eq!(type_hash, keccak256("PersonalSign(bytes prefixed)"));
        let struct_hash = keccak256([type_hash.0, hash].concat());
        let separator = domain(chain_id, account).separator();
        keccak256([&[0x19, 0x01][..], &separator[..], &struct_hash[..]].concat()).0
    }
}

const CHAIN: u64 = 31337;

fn sign_for_account_req(
    h: &mut Harness,
    pk: &mut SoftPasskey,
    wallet: WalletId,
    chain_id: u64,
    account: [u8; 20],
    content: AccountSignContent,
) -> SignForAccount {
    let body = SignForAccountBody {
        wallet_id: wallet,
        path: HdPath::OWNER,
        chain_id,
        account,
        content,
    };
    let assertion = pk.authorize(h, wallet, &body);
    SignForAccount { body, assertion }
}

#[test]
fn independent_erc7739_digests_agree_with_each_other() {
    // Sanity of the test's own reference: the message form and the hash form meet at the
    // EIP-191 hash, and the domain is the AgentAccount one.
    let m = b"hello agent";
    assert_eq!(
        erc7739::of_message(CHAIN, ACCOUNT, m),
        erc7739::of_hash(CHAIN, ACCOUNT, eip191(m))
    );
    let d = erc7739::domain(CHAIN, ACCOUNT);
    assert_eq!(d.name.as_deref(), Some("AgentAccount"));
    assert_eq!(d.version.as_deref(), Some("1"));
}

#[test]
fn sign_for_account_signs_the_erc7739_personal_sign_digest() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = seed_anvil_wallet(&mut h, &pk);
    let message = b"Sign in to example.org".to_vec();
    let req = sign_for_account_req(
        &mut h,
        &mut pk,
        w.wallet_id,
        CHAIN,
        ACCOUNT,
        AccountSignContent::Message(message.clone()),
    );
    let sig = h.call(&req).unwrap();
    assert_eq!(sig.bytes.len(), 65);
    assert!(sig.bytes[64] == 27 || sig.bytes[64] == 28);
    assert_eq!(sig.address, w.owner.address);
    let want = erc7739::of_message(CHAIN, ACCOUNT, &message);
    assert_eq!(recover(&want, &sig.bytes), w.owner.address);
    // RFC 6979: the same digest signed by the same key gives the same signature; the plain
    // SignHash of the independent digest is therefore byte-identical.
    let body = SignHashBody {
        wallet_id: w.wallet_id,
        path: HdPath::OWNER,
        hash: want,
    };
    let assertion = pk.authorize(&mut h, w.wallet_id, &body);
    assert_eq!(
        h.call(&SignHash { body, assertion }).unwrap().bytes,
        sig.bytes
    );
    // It is neither the EIP-191 signature of the message nor a raw signature of its hash.
    for not in [eip191(&message), eip191(&eip191(&message))] {
        assert_ne!(recover(&not, &sig.bytes), w.owner.address);
    }

    // The hash form: a dapp's 32-byte hash, wrapped the same way.
    let hash = alloy_primitives::keccak256(b"some EIP-712 digest").0;
    let req = sign_for_account_req(
        &mut h,
        &mut pk,
        w.wallet_id,
        CHAIN,
        ACCOUNT,
        AccountSignContent::Hash(hash),
    );
    let sig = h.call(&req).unwrap();
    assert_eq!(
        recover(&erc7739::of_hash(CHAIN, ACCOUNT, hash), &sig.bytes),
        w.owner.address
    );
    assert_ne!(recover(&hash, &sig.bytes), w.owner.address);
    // n/2 of secp256k1: low s.
    let half_n: [u8; 32] = [
        0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b,
        0x20, 0xa0,
    ];
    assert!(sig.bytes[32..64] <= half_n[..], "high-S signature");
}

#[test]
fn sign_for_account_binds_the_account_and_the_chain() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = create_wallet(&mut h, &pk);
    let hash = [0x5a; 32];
    let mut sign = |h: &mut Harness, chain_id: u64, account: [u8; 20]| {
        let req = sign_for_account_req(
            h,
            &mut pk,
            w.wallet_id,
            chain_id,
            account,
            AccountSignContent::Hash(hash),
        );
        h.call(&req).unwrap().bytes
    };
    let base = sign(&mut h, CHAIN, ACCOUNT);
    let other_account = sign(&mut h, CHAIN, [0xBB; 20]);
    let other_chain = sign(&mut h, 1, ACCOUNT);
    assert_ne!(base, other_account);
    assert_ne!(base, other_chain);
    assert_ne!(other_account, other_chain);
    // Each recovers to the owner only over its own domain.
    for (sig, chain_id, account) in [
        (&base, CHAIN, ACCOUNT),
        (&other_account, CHAIN, [0xBB; 20]),
        (&other_chain, 1, ACCOUNT),
    ] {
        assert_eq!(
            recover(&erc7739::of_hash(chain_id, account, hash), sig),
            w.owner.address
        );
    }
    assert_ne!(
        recover(&erc7739::of_hash(CHAIN, [0xBB; 20], hash), &base),
        w.owner.address
    );
    assert_ne!(
        recover(&erc7739::of_hash(1, ACCOUNT, hash), &base),
        w.owner.address
    );
    // Same domain, same content: deterministic (RFC 6979).
    assert_eq!(sign(&mut h, CHAIN, ACCOUNT), base);
}

#[test]
fn sign_for_account_needs_an_assertion_over_its_own_body() {
    use kms_proto::authz::AuthorizedBody;
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = create_wallet(&mut h, &pk);
    let content = AccountSignContent::Message(b"hi".to_vec());

    // An assertion over nothing the TA issued (no nonce) is refused.
    let body = SignForAccountBody {
        wallet_id: w.wallet_id,
        path: HdPath::OWNER,
        chain_id: CHAIN,
        account: ACCOUNT,
        content: content.clone(),
    };
    let forged = pk.assert_challenge(
        &kms_proto::authz::challenge(&[0; 32], &body.payload_digest()),
        &AssertOpts::default(),
    );
    assert_eq!(
        passkey_err(h.call(&SignForAccount {
            body: body.clone(),
            assertion: forged,
        })),
        PasskeyError::ChallengeMismatch
    );

    // Another passkey's assertion is refused.
    let mut other = SoftPasskey::new(2);
    let req = sign_for_account_req(
        &mut h,
        &mut other,
        w.wallet_id,
        CHAIN,
        ACCOUNT,
        content.clone(),
    );
    assert_eq!(passkey_err(h.call(&req)), PasskeyError::BadSignature);

    // An assertion for one body never authorises another: other account, chain, content,
    // or the SignHash / SignMessage of the same content.
    let variants: [fn(&mut SignForAccountBody); 4] = [
        |b| b.account = [0xBB; 20],
        |b| b.chain_id = 1,
        |b| b.content = AccountSignContent::Message(b"ho".to_vec()),
        |b| b.path = HdPath::agent(0),
    ];
    for change in variants {
        let mut req = sign_for_account_req(
            &mut h,
            &mut pk,
            w.wallet_id,
            CHAIN,
            ACCOUNT,
            content.clone(),
        );
        change(&mut req.body);
        assert_eq!(passkey_err(h.call(&req)), PasskeyError::ChallengeMismatch);
    }
    let message_body = SignMessageBody {
        wallet_id: w.wallet_id,
        path: HdPath::OWNER,
        message: b"hi".to_vec(),
    };
    let assertion = pk.authorize(&mut h, w.wallet_id, &message_body);
    let cross = SignForAccount {
        body: body.clone(),
        assertion,
    };
    assert_eq!(passkey_err(h.call(&cross)), PasskeyError::ChallengeMismatch);
    let req = sign_for_account_req(
        &mut h,
        &mut pk,
        w.wallet_id,
        CHAIN,
        ACCOUNT,
        content.clone(),
    );
    let as_message = SignMessage {
        body: message_body,
        assertion: req.assertion.clone(),
    };
    assert_eq!(
        passkey_err(h.call(&as_message)),
        PasskeyError::ChallengeMismatch
    );

    // The right assertion works once.
    h.call(&req).unwrap();
    assert_eq!(passkey_err(h.call(&req)), PasskeyError::ChallengeMismatch);
}

#[test]
fn sign_for_account_bounds_the_message_length() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = create_wallet(&mut h, &pk);
    let long = vec![0x61; kms_ta::MAX_MESSAGE_LEN + 1];
    let req = sign_for_account_req(
        &mut h,
        &mut pk,
        w.wallet_id,
        CHAIN,
        ACCOUNT,
        AccountSignContent::Message(long),
    );
    assert_eq!(h.call(&req).unwrap_err(), TaError::MessageTooLong);
    // The longest accepted message signs.
    let max = vec![0x61; kms_ta::MAX_MESSAGE_LEN];
    let req = sign_for_account_req(
        &mut h,
        &mut pk,
        w.wallet_id,
        CHAIN,
        ACCOUNT,
        AccountSignContent::Message(max.clone()),
    );
    let sig = h.call(&req).unwrap();
    assert_eq!(
        recover(&erc7739::of_message(CHAIN, ACCOUNT, &max), &sig.bytes),
        w.owner.address
    );
}

// ------------------------------------------- EIP-7702 delegation of the owner's EOA

const DELEGATE: [u8; 20] = [0xDE; 20];

/// The EIP-7702 authorisation hash built by hand (not with the TA's code, nor alloy's):
/// `keccak256(0x05 ‖ rlp([chain_id, address, nonce]))`, RLP integers big-endian without
/// leading zeros (0 is the empty string 0x80), the address a 20-byte string (0x94 ‖ address).
fn eip7702_hash_by_hand(chain_id: u64, address: [u8; 20], nonce: u64) -> [u8; 32] {
    fn rlp_uint(v: u64, out: &mut Vec<u8>) {
        let be = v.to_be_bytes();
        let trimmed: Vec<u8> = be.iter().copied().skip_while(|b| *b == 0).collect();
        match trimmed.as_slice() {
            [] => out.push(0x80),
            [b] if *b < 0x80 => out.push(*b),
            bytes => {
                out.push(0x80 + bytes.len() as u8);
                out.extend_from_slice(bytes);
            }
        }
    }
    let mut payload = Vec::new();
    rlp_uint(chain_id, &mut payload);
    payload.push(0x80 + 20);
    payload.extend_from_slice(&address);
    rlp_uint(nonce, &mut payload);
    assert!(payload.len() < 56, "a short list");
    let mut buf = vec![0x05, 0xc0 + payload.len() as u8];
    buf.extend_from_slice(&payload);
    alloy_primitives::keccak256(&buf).0
}

fn delegation_req(
    h: &mut Harness,
    pk: &mut SoftPasskey,
    body: Eip7702DelegationBody,
) -> SignEip7702Delegation {
    let assertion = pk.authorize(h, body.wallet_id, &body);
    SignEip7702Delegation { body, assertion }
}

fn delegation_body(wallet: WalletId, user_op_hash: Option<[u8; 32]>) -> Eip7702DelegationBody {
    Eip7702DelegationBody {
        wallet_id: wallet,
        chain_id: CHAIN,
        delegate: DELEGATE,
        nonce: 0,
        user_op_hash,
    }
}

#[test]
fn eip7702_hash_by_hand_agrees_with_alloy() {
    use alloy_eips::eip7702::Authorization;
    for (chain_id, nonce) in [
        (1, 0),
        (CHAIN, 1),
        (CHAIN, 0x7f),
        (CHAIN, 0x80),
        (u64::MAX, u64::MAX - 1),
    ] {
        let alloy = Authorization {
            chain_id: alloy_primitives::U256::from(chain_id),
            address: alloy_primitives::Address::from(DELEGATE),
            nonce,
        }
        .signature_hash();
        assert_eq!(eip7702_hash_by_hand(chain_id, DELEGATE, nonce), alloy.0);
    }
}

#[test]
fn sign_eip7702_delegation_signs_the_authorization_and_the_first_user_op() {
    use alloy_eips::eip7702::{Authorization, SignedAuthorization};
    use alloy_primitives::U256;
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = seed_anvil_wallet(&mut h, &pk);
    // anvil's first account: the owner is the EOA being delegated.
    assert_eq!(
        checksum(&w.owner.address),
        "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    );
    let op_hash = alloy_primitives::keccak256(b"the first user operation").0;
    for (chain_id, nonce) in [(CHAIN, 0), (1, 5), (u64::MAX, u64::MAX - 1)] {
        let body = Eip7702DelegationBody {
            chain_id,
            nonce,
            ..delegation_body(w.wallet_id, Some(op_hash))
        };
        let req = delegation_req(&mut h, &mut pk, body);
        let out = h.call(&req).unwrap();

        let auth = &out.authorization;
        assert_eq!(auth.address, w.owner.address);
        assert_eq!(auth.bytes.len(), 65);
        assert!(auth.bytes[64] == 27 || auth.bytes[64] == 28);
        let want = eip7702_hash_by_hand(chain_id, DELEGATE, nonce);
        assert_eq!(recover(&want, &auth.bytes), w.owner.address);
        // Not a signature of the userOpHash, nor of the hash without the 0x05 prefix.
        assert_ne!(recover(&op_hash, &auth.bytes), w.owner.address);
        // As an authorisation list item: alloy recovers the owner as the authority (it also
        // refuses a high s).
        let signed = SignedAuthorization::new_unchecked(
            Authorization {
                chain_id: U256::from(chain_id),
                address: DELEGATE.into(),
                nonce,
            },
            auth.bytes[64] - 27,
            U256::from_be_slice(&auth.bytes[..32]),
            U256::from_be_slice(&auth.bytes[32..64]),
        );
        assert_eq!(
            signed.recover_authority().unwrap(),
            alloy_primitives::Address::from(w.owner.address)
        );

        let op = out.user_op.expect("a userOpHash was asked");
        assert_eq!(op.address, w.owner.address);
        assert_eq!(op.bytes.len(), 65);
        assert_eq!(recover(&op_hash, &op.bytes), w.owner.address);
        assert_ne!(recover(&eip191(&op_hash), &op.bytes), w.owner.address);
        // RFC 6979: the same as SignHash of the userOpHash with the owner key.
        let sh = SignHashBody {
            wallet_id: w.wallet_id,
            path: HdPath::OWNER,
            hash: op_hash,
        };
        let assertion = pk.authorize(&mut h, w.wallet_id, &sh);
        assert_eq!(
            h.call(&SignHash {
                body: sh,
                assertion
            })
            .unwrap()
            .bytes,
            op.bytes
        );
    }
}

#[test]
fn sign_eip7702_delegation_without_a_user_op_hash_signs_only_the_authorization() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = create_wallet(&mut h, &pk);
    let req = delegation_req(&mut h, &mut pk, delegation_body(w.wallet_id, None));
    let out = h.call(&req).unwrap();
    assert_eq!(out.user_op, None);
    assert_eq!(
        recover(
            &eip7702_hash_by_hand(CHAIN, DELEGATE, 0),
            &out.authorization.bytes
        ),
        w.owner.address
    );
    // The same authorisation with a userOpHash asked: the same authorisation signature.
    let req = delegation_req(&mut h, &mut pk, delegation_body(w.wallet_id, Some([3; 32])));
    let with_op = h.call(&req).unwrap();
    assert_eq!(with_op.authorization, out.authorization);
    assert!(with_op.user_op.is_some());
}

#[test]
fn sign_eip7702_delegation_refuses_chain_id_0_and_the_last_nonce_before_the_passkey() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = create_wallet(&mut h, &pk);
    let bad: [fn(&mut Eip7702DelegationBody); 2] = [|b| b.chain_id = 0, |b| b.nonce = u64::MAX];
    for change in bad {
        let mut body = delegation_body(w.wallet_id, Some([3; 32]));
        change(&mut body);
        let req = delegation_req(&mut h, &mut pk, body);
        let pending = h.ta.nonce_table_usage().entries;
        assert_eq!(h.call(&req).unwrap_err(), TaError::InvalidAuthorization);
        // Refused before the assertion was checked: its nonce is still pending.
        assert_eq!(h.ta.nonce_table_usage().entries, pending);
        assert!(pending > 0);
    }
    // Just inside the bounds signs.
    let body = Eip7702DelegationBody {
        chain_id: 1,
        nonce: u64::MAX - 1,
        ..delegation_body(w.wallet_id, None)
    };
    let req = delegation_req(&mut h, &mut pk, body);
    let out = h.call(&req).unwrap();
    assert_eq!(
        recover(
            &eip7702_hash_by_hand(1, DELEGATE, u64::MAX - 1),
            &out.authorization.bytes
        ),
        w.owner.address
    );
}

#[test]
fn sign_eip7702_delegation_needs_an_assertion_over_its_own_body() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let w = create_wallet(&mut h, &pk);
    let op_hash = [0x42; 32];

    // An assertion for one body never authorises another: each field is bound.
    let variants: [fn(&mut Eip7702DelegationBody); 5] = [
        |b| b.chain_id = 1,
        |b| b.delegate[19] ^= 1,
        |b| b.nonce += 1,
        |b| b.user_op_hash = Some([0x43; 32]),
        |b| b.user_op_hash = None,
    ];
    for change in variants {
        let mut req = delegation_req(&mut h, &mut pk, delegation_body(w.wallet_id, Some(op_hash)));
        change(&mut req.body);
        assert_eq!(passkey_err(h.call(&req)), PasskeyError::ChallengeMismatch);
    }
    // Adding a userOpHash to an assertion made without one is refused too.
    let mut req = delegation_req(&mut h, &mut pk, delegation_body(w.wallet_id, None));
    req.body.user_op_hash = Some(op_hash);
    assert_eq!(passkey_err(h.call(&req)), PasskeyError::ChallengeMismatch);

    // Another passkey's assertion is refused.
    let mut other = SoftPasskey::new(2);
    let req = delegation_req(
        &mut h,
        &mut other,
        delegation_body(w.wallet_id, Some(op_hash)),
    );
    assert_eq!(passkey_err(h.call(&req)), PasskeyError::BadSignature);

    // A SignHash assertion over the userOpHash does not authorise a delegation.
    let sh = SignHashBody {
        wallet_id: w.wallet_id,
        path: HdPath::OWNER,
        hash: op_hash,
    };
    let assertion = pk.authorize(&mut h, w.wallet_id, &sh);
    let cross = SignEip7702Delegation {
        body: delegation_body(w.wallet_id, Some(op_hash)),
        assertion,
    };
    assert_eq!(passkey_err(h.call(&cross)), PasskeyError::ChallengeMismatch);

    // Another wallet: one that does not exist, and one bound to the same passkey (its nonces
    // and the body's digest differ).
    let mut req = delegation_req(&mut h, &mut pk, delegation_body(w.wallet_id, Some(op_hash)));
    req.body.wallet_id = WalletId([0x77; 16]);
    assert_eq!(h.call(&req).unwrap_err(), TaError::WalletNotFound);
    let w2 = create_wallet(&mut h, &pk);
    let mut req = delegation_req(&mut h, &mut pk, delegation_body(w.wallet_id, Some(op_hash)));
    req.body.wallet_id = w2.wallet_id;
    assert_eq!(passkey_err(h.call(&req)), PasskeyError::ChallengeMismatch);

    // The right assertion works once; the reused challenge is refused.
    let req = delegation_req(&mut h, &mut pk, delegation_body(w.wallet_id, Some(op_hash)));
    let out = h.call(&req).unwrap();
    assert_eq!(out.authorization.address, w.owner.address);
    assert_eq!(passkey_err(h.call(&req)), PasskeyError::ChallengeMismatch);
}

// ------------------------------------------------------- protocol bytes

#[test]
fn malformed_protocol_bytes_give_typed_errors() {
    let mut h = Harness::new();
    let decode = |b: Vec<u8>| decode_response::<Empty>(&b).unwrap();
    let r = decode(h.ta.invoke(CommandId::SignHash.as_u32(), &[]));
    assert_eq!(r.unwrap_err(), TaError::Protocol(ProtoError::Empty));
    let r = decode(h.ta.invoke(CommandId::SignHash.as_u32(), &[9, 1, 2]));
    assert_eq!(
        r.unwrap_err(),
        TaError::Protocol(ProtoError::UnsupportedVersion(9))
    );
    let r = decode(h.ta.invoke(CommandId::SignHash.as_u32(), &[PROTOCOL_VERSION, 0xff]));
    assert_eq!(r.unwrap_err(), TaError::Protocol(ProtoError::Malformed));
    let r = decode(h.ta.invoke(4242, &[PROTOCOL_VERSION]));
    assert_eq!(r.unwrap_err(), TaError::UnknownCommand(4242));
    #[cfg(not(feature = "export-secrets"))]
    {
        let r = decode(h.ta.invoke(CommandId::ExportPrivateKey.as_u32(), &[PROTOCOL_VERSION]));
        assert_eq!(r.unwrap_err(), TaError::UnknownCommand(6));
    }
}

#[test]
fn operator_key_signs_only_revoke_session() {
    use alloy_consensus::transaction::SignerRecoverable;
    use alloy_consensus::Transaction as _;
    use alloy_eips::eip2718::Decodable2718;
    let mut h = Harness::new();
    assert_eq!(
        h.call(&OperatorKey {
            create_if_missing: false
        })
        .unwrap_err(),
        TaError::OperatorKeyMissing
    );
    let op = h
        .call(&OperatorKey {
            create_if_missing: true,
        })
        .unwrap();
    let again = h
        .call(&OperatorKey {
            create_if_missing: true,
        })
        .unwrap();
    assert_eq!(op, again);
    let tx = h
        .call(&OperatorSignRevokeSession {
            chain_id: 31337,
            nonce: 0,
            max_priority_fee_per_gas: 1,
            max_fee_per_gas: 2,
            gas_limit: 100_000,
            validator: [0x33; 20],
            account: [0x44; 20],
            agent_key: [0x55; 20],
        })
        .unwrap();
    let env = alloy_consensus::TxEnvelope::decode_2718(&mut tx.raw.as_slice()).unwrap();
    assert_eq!(env.recover_signer().unwrap().0 .0, op.address);
    assert_eq!(env.to().unwrap().0 .0, [0x33; 20]);
    let data = env.input();
    assert_eq!(
        &data[..4],
        &alloy_primitives::keccak256("revokeSession(address,address)")[..4]
    );
    assert_eq!(&data[16..36], &[0x44; 20]);
    assert_eq!(&data[48..68], &[0x55; 20]);
    assert!(env.value().is_zero());
}

#[test]
fn test_seed_can_be_disabled_at_run_time() {
    let storage = MemStorage::default();
    let clock = std::rc::Rc::new(std::cell::Cell::new(T0));
    let mut ta = kms_ta::TaCore::new(
        storage,
        TestEntropyPublic::new(),
        TestClock(clock),
        MemCounter::default(),
        kms_ta::Config {
            test_seed_enabled: false,
        },
    );
    let req = SeedWalletForTest {
        mnemonic: ANVIL_MNEMONIC.into(),
        passkey_public_key: SoftPasskey::new(1).public_key(),
        rp_id: RP_ID.into(),
    };
    let out = ta.invoke(SeedWalletForTest::ID.as_u32(), &encode_request(&req));
    #[cfg(feature = "test-seed")]
    assert_eq!(
        decode_response::<CreateWalletOutput>(&out)
            .unwrap()
            .unwrap_err(),
        TaError::Unsupported
    );
    #[cfg(not(feature = "test-seed"))]
    assert_eq!(
        decode_response::<CreateWalletOutput>(&out)
            .unwrap()
            .unwrap_err(),
        TaError::UnknownCommand(SeedWalletForTest::ID.as_u32())
    );
}

struct TestEntropyPublic;
impl TestEntropyPublic {
    fn new() -> Self {
        TestEntropyPublic
    }
}
impl kms_ta::Entropy for TestEntropyPublic {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), kms_ta::EntropyError> {
        buf.fill(7);
        Ok(())
    }
}

#[cfg(feature = "export-secrets")]
#[test]
fn export_private_key_still_needs_the_passkey() {
    let mut h = Harness::new();
    let mut pk = SoftPasskey::new(1);
    let mut other = SoftPasskey::new(2);
    let w = seed_anvil_wallet(&mut h, &pk);
    let body = ExportPrivateKeyBody {
        wallet_id: w.wallet_id,
        path: HdPath::OWNER,
    };
    let bad = other.authorize(&mut h, w.wallet_id, &body);
    assert_eq!(
        passkey_err(h.call(&ExportPrivateKey {
            body: body.clone(),
            assertion: bad
        })),
        PasskeyError::BadSignature
    );
    let assertion = pk.authorize(&mut h, w.wallet_id, &body);
    let key = h.call(&ExportPrivateKey { body, assertion }).unwrap();
    // anvil account #0.
    assert_eq!(
        hex(&key.private_key),
        "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
    );
    assert_eq!(key.address, w.owner.address);
}
