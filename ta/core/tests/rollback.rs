//! Rollback detection: the sealed state's version against the monotonic counter kept outside
//! it (in-memory storage and counter; a "restore" puts an older copy of the storage map back).

mod common;

use std::collections::BTreeMap;

use common::*;
use kms_proto::*;
use kms_ta::{touches_state, STATE_VERSION_KEY};

const TTL: u64 = 3600;
const ACCOUNT: [u8; 20] = [0xAC; 20];

fn sealed_version(h: &Harness) -> u64 {
    h.storage
        .map
        .borrow()
        .get(STATE_VERSION_KEY)
        .map(|b| u64::from_be_bytes(b.as_slice().try_into().unwrap()))
        .unwrap_or(0)
}

fn snapshot(h: &Harness) -> BTreeMap<String, Vec<u8>> {
    h.storage.map.borrow().clone()
}

fn restore(h: &mut Harness, copy: &BTreeMap<String, Vec<u8>>) {
    *h.storage.map.borrow_mut() = copy.clone();
    h.restart();
}

/// A wallet with agent 0: (wallet, agent 0's JWT, the passkey).
fn wallet_with_agent(h: &mut Harness) -> (WalletId, String, SoftPasskey) {
    let mut pk = SoftPasskey::new(1);
    let w = create_wallet(h, &pk);
    let jwt = create_agent(h, &mut pk, w.wallet_id, 0, TTL)
        .unwrap()
        .to_jwt();
    (w.wallet_id, jwt, pk)
}

fn revoke(h: &mut Harness, wallet: WalletId) -> Result<AgentState, TaError> {
    h.call(&RevokeAgentKey {
        wallet_id: wallet,
        agent_index: 0,
    })
}

fn agent_state(h: &mut Harness, wallet: WalletId) -> Result<AgentState, TaError> {
    h.call(&GetAgentState {
        wallet_id: wallet,
        agent_index: 0,
    })
}

#[test]
fn every_write_moves_the_version_and_the_counter_together() {
    let mut h = Harness::new();
    assert_eq!((sealed_version(&h), h.counter.value.get()), (0, 0));
    let (wallet, _, _) = wallet_with_agent(&mut h);
    // CreateWallet, then CreateAgentKey (agent and first JWT secret in one batch).
    assert_eq!((sealed_version(&h), h.counter.value.get()), (2, 2));
    revoke(&mut h, wallet).unwrap();
    assert_eq!((sealed_version(&h), h.counter.value.get()), (3, 3));
    // Reads move nothing.
    agent_state(&mut h, wallet).unwrap();
    h.call(&JwtSecretStatus {}).unwrap();
    assert_eq!((sealed_version(&h), h.counter.value.get()), (3, 3));
    h.restart();
    assert!(agent_state(&mut h, wallet).unwrap().revoked);
}

#[test]
fn a_rolled_back_state_is_refused_on_every_command_that_touches_state() {
    let mut h = Harness::new();
    let (wallet, jwt, _) = wallet_with_agent(&mut h);
    let before_revoke = snapshot(&h);
    assert!(revoke(&mut h, wallet).unwrap().revoked);
    assert_eq!(h.counter.value.get(), 3);

    // The host puts the copy from before the revocation back and restarts the TA.
    restore(&mut h, &before_revoke);
    let refused = TaError::StateRolledBack {
        sealed: 2,
        counter: 3,
    };
    assert_eq!(agent_state(&mut h, wallet), Err(refused.clone()));
    // The revoked agent does not come back silently: its credential does not sign.
    assert_eq!(
        sign_op(&mut h, wallet, 0, &jwt, [1; 32], ACCOUNT).map(|_| ()),
        Err(refused.clone())
    );
    assert_eq!(
        h.call(&JwtHmacVerify { jwt: jwt.clone() }).map(|_| ()),
        Err(refused.clone())
    );
    assert_eq!(
        h.call(&GetChallenge { wallet_id: wallet }).map(|_| ()),
        Err(refused.clone())
    );
    assert_eq!(
        h.call(&OperatorKey {
            create_if_missing: true
        })
        .map(|_| ()),
        Err(refused.clone())
    );
    assert_eq!(
        h.call(&CreateWallet {
            passkey_public_key: SoftPasskey::new(2).public_key(),
            rp_id: RP_ID.into(),
        })
        .map(|_| ()),
        Err(refused.clone())
    );
    // Every command but the exempt ones, whatever its bytes: refused before decoding.
    for id in CommandId::ALL {
        let out = h.ta.invoke(id.as_u32(), &[0xFF, 0x00]);
        let got = decode_response::<Empty>(&out).unwrap();
        if touches_state(id) {
            assert_eq!(got.unwrap_err(), refused, "{id}");
        } else {
            assert_ne!(got, Err(refused.clone()), "{id}");
        }
    }
    // TaInfo still answers (so the host can see the TA is up).
    assert!(h.call(&TaInfo {}).is_ok());
    // Nothing was written over the restored copy, and the counter did not move.
    assert_eq!(snapshot(&h), before_revoke);
    assert_eq!(h.counter.value.get(), 3);
    // A restart does not forget it.
    h.restart();
    assert_eq!(agent_state(&mut h, wallet), Err(refused));
}

#[test]
fn a_crash_between_the_sealed_write_and_the_counter_is_accepted() {
    let mut h = Harness::new();
    let (wallet, jwt, _) = wallet_with_agent(&mut h);
    // The sealed write lands, the counter advance does not (a crash in between, or an error).
    h.counter.fail_advances.set(true);
    assert!(revoke(&mut h, wallet).unwrap().revoked);
    assert_eq!((sealed_version(&h), h.counter.value.get()), (3, 2));
    // The TA restarts: the sealed state is ahead of the counter, which is accepted once the
    // counter has caught up; while it cannot, nothing is served.
    h.restart();
    assert_eq!(
        agent_state(&mut h, wallet),
        Err(TaError::Storage(StorageFault::Io))
    );
    h.counter.fail_advances.set(false);
    let st = agent_state(&mut h, wallet).unwrap();
    assert!(st.revoked, "the newer (sealed) state is the one served");
    assert_eq!(h.counter.value.get(), 3, "the counter caught up");
    assert_eq!(
        sign_op(&mut h, wallet, 0, &jwt, [1; 32], ACCOUNT).map(|_| ()),
        Err(TaError::Jwt(JwtError::AgentRevoked))
    );

    // Without a restart: a lagging counter is caught up before the next command.
    h.counter.fail_advances.set(true);
    h.call(&JwtRotateSecret {
        mode: RotationMode::Normal,
    })
    .unwrap();
    assert_eq!((sealed_version(&h), h.counter.value.get()), (4, 3));
    h.counter.fail_advances.set(false);
    h.call(&JwtSecretStatus {}).unwrap();
    assert_eq!(h.counter.value.get(), 4);
}

#[test]
fn accept_restore_moves_forward_past_the_counter() {
    let mut h = Harness::new();
    let (wallet, jwt, mut pk) = wallet_with_agent(&mut h);
    let old = snapshot(&h);
    // Supersede the credential, then revoke the agent.
    let newer = refresh_agent(&mut h, &mut pk, wallet, 0, TTL)
        .unwrap()
        .to_jwt();
    revoke(&mut h, wallet).unwrap();
    assert_eq!(h.counter.value.get(), 4);

    restore(&mut h, &old);
    assert_eq!(
        agent_state(&mut h, wallet),
        Err(TaError::StateRolledBack {
            sealed: 2,
            counter: 4
        })
    );
    let accepted = h.call(&AcceptRestore {}).unwrap();
    assert_eq!(
        accepted,
        RestoreAccepted {
            sealed_version: 2,
            counter: 4,
            new_version: 5,
            was_rolled_back: true,
            jwt_secrets_rotated: true,
        }
    );
    assert_eq!((sealed_version(&h), h.counter.value.get()), (5, 5));
    // The consequences: the revoked agent is live again at its old generation, but no
    // credential of the restored state signs: the secrets were force-rotated with the
    // acceptance, so the superseded credential (whose generation is current again) and the
    // newer one are both refused; the owner refreshes.
    let st = agent_state(&mut h, wallet).unwrap();
    assert!(!st.revoked);
    assert_eq!(st.generation, 1);
    for credential in [&jwt, &newer] {
        assert_eq!(
            sign_op(&mut h, wallet, 0, credential, [1; 32], ACCOUNT).map(|_| ()),
            Err(TaError::Jwt(JwtError::UnknownKid))
        );
    }
    // Writes continue from the new version; a restart keeps serving.
    revoke(&mut h, wallet).unwrap();
    assert_eq!((sealed_version(&h), h.counter.value.get()), (6, 6));
    h.restart();
    assert!(agent_state(&mut h, wallet).unwrap().revoked);
    // The copy accepted once is refused again when it is put back a second time.
    restore(&mut h, &old);
    assert_eq!(
        agent_state(&mut h, wallet),
        Err(TaError::StateRolledBack {
            sealed: 2,
            counter: 6
        })
    );
}

#[test]
fn accept_restore_on_a_current_state_only_moves_the_version() {
    let mut h = Harness::new();
    let (wallet, _, _) = wallet_with_agent(&mut h);
    let accepted = h.call(&AcceptRestore {}).unwrap();
    assert_eq!(
        accepted,
        RestoreAccepted {
            sealed_version: 2,
            counter: 2,
            new_version: 3,
            was_rolled_back: false,
            jwt_secrets_rotated: false,
        }
    );
    assert_eq!((sealed_version(&h), h.counter.value.get()), (3, 3));
    assert!(!agent_state(&mut h, wallet).unwrap().revoked);
}

#[test]
fn a_state_from_before_versions_is_version_zero_and_served() {
    let mut h = Harness::new();
    let (wallet, _, _) = wallet_with_agent(&mut h);
    // What an earlier TA wrote: no version object, no counter.
    h.storage.map.borrow_mut().remove(STATE_VERSION_KEY);
    h.counter.value.set(0);
    h.restart();
    assert!(!agent_state(&mut h, wallet).unwrap().revoked);
    revoke(&mut h, wallet).unwrap();
    assert_eq!((sealed_version(&h), h.counter.value.get()), (1, 1));
}

#[test]
fn counter_and_version_faults_refuse_without_deciding() {
    let mut h = Harness::new();
    let (wallet, _, _) = wallet_with_agent(&mut h);
    h.restart();
    h.counter.fail_reads.set(true);
    assert_eq!(
        agent_state(&mut h, wallet),
        Err(TaError::Storage(StorageFault::Io))
    );
    // A failed read is not taken for a verdict: once the counter answers, the state is served.
    h.counter.fail_reads.set(false);
    assert!(agent_state(&mut h, wallet).is_ok());

    h.storage
        .map
        .borrow_mut()
        .insert(STATE_VERSION_KEY.into(), vec![1, 2, 3]);
    h.restart();
    assert_eq!(
        agent_state(&mut h, wallet),
        Err(TaError::Storage(StorageFault::Corrupt))
    );
}
