//! Rollback detection in the real `ta-sim`: an older `sealed.bin` (same key) copied over the
//! newer one is refused on every command that touches state, until `AcceptRestore`.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use kms_proto::*;
use kms_tee_client::{TeeClient, TeeError};

fn agent_state(client: &TeeClient, wallet: WalletId) -> Result<AgentState, TeeError> {
    client.call(&GetAgentState {
        wallet_id: wallet,
        agent_index: 0,
    })
}

fn create_agent(client: &TeeClient, pk: &mut SoftPasskey, wallet: WalletId) {
    let body = MintAgentBody {
        wallet_id: wallet,
        label: "bot".into(),
        ttl_secs: 3600,
    };
    let assertion = pk.authorize(&nonce(client, wallet), &body);
    client
        .call(&CreateAgentKey {
            agent_index: 0,
            body,
            assertion,
        })
        .expect("create agent");
}

fn refused(sealed: u64, counter: u64) -> TeeError {
    TeeError::Ta(TaError::StateRolledBack { sealed, counter })
}

fn stop(sim: Sim) {
    let exit = sim.stop();
    assert!(exit.status.success(), "stderr:\n{}", exit.stderr);
}

fn copy_over(from: &[u8], dir: &Path) {
    fs::write(dir.join("sealed.bin"), from).unwrap();
}

#[test]
fn an_older_sealed_bin_is_refused_until_the_restore_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut pk = SoftPasskey::new(11);

    // Version 2: a wallet and its agent. Keep a copy of that sealed.bin.
    let sim = Sim::start(&dir, &[]);
    let client = sim.client();
    let wallet = create_wallet(&client, &pk).wallet_id;
    create_agent(&client, &mut pk, wallet);
    stop(sim);
    assert!(dir.join("counter.bin").exists(), "the counter file is kept");
    let old = fs::read(dir.join("sealed.bin")).unwrap();

    // Version 3: the agent is revoked.
    let sim = Sim::start(&dir, &[]);
    let client = sim.client();
    let st = client
        .call(&RevokeAgentKey {
            wallet_id: wallet,
            agent_index: 0,
        })
        .unwrap();
    assert!(st.revoked);
    stop(sim);

    // The old copy is put back (same key, so it unseals): the TA refuses it.
    copy_over(&old, &dir);
    let sim = Sim::start(&dir, &[]);
    assert!(
        sim.stderr().contains("OLDER than the rollback counter"),
        "a loud start-up error; stderr:\n{}",
        sim.stderr()
    );
    let client = sim.client();
    assert_eq!(agent_state(&client, wallet).unwrap_err(), refused(2, 3));
    assert_eq!(
        client
            .call(&GetWalletInfo { wallet_id: wallet })
            .unwrap_err(),
        refused(2, 3)
    );
    assert_eq!(
        client
            .call(&JwtRotateSecret {
                mode: RotationMode::Force
            })
            .unwrap_err(),
        refused(2, 3)
    );
    assert_eq!(
        client
            .call(&CreateWallet {
                passkey_public_key: SoftPasskey::new(12).public_key(),
                rp_id: RP_ID.into(),
            })
            .unwrap_err(),
        refused(2, 3)
    );
    client.call(&TaInfo {}).expect("TaInfo still answers");
    assert_eq!(
        fs::read(dir.join("sealed.bin")).unwrap(),
        old,
        "nothing was written"
    );
    // A restart does not make it acceptable.
    stop(sim);
    let sim = Sim::start(&dir, &[]);
    let client = sim.client();
    assert_eq!(agent_state(&client, wallet).unwrap_err(), refused(2, 3));

    // The operator accepts the restore: the old state is served, at a version past the counter.
    let accepted = client.call(&AcceptRestore {}).unwrap();
    assert_eq!(
        accepted,
        RestoreAccepted {
            sealed_version: 2,
            counter: 3,
            new_version: 4,
            was_rolled_back: true,
            jwt_secrets_rotated: true,
        }
    );
    assert!(
        !agent_state(&client, wallet).unwrap().revoked,
        "the restored state: the agent is live again"
    );
    stop(sim);

    // After a restart it is still current; the same old copy put back again is refused
    // against the new counter.
    let sim = Sim::start(&dir, &[]);
    let client = sim.client();
    assert!(!agent_state(&client, wallet).unwrap().revoked);
    stop(sim);
    copy_over(&old, &dir);
    let sim = Sim::start(&dir, &[]);
    assert_eq!(
        agent_state(&sim.client(), wallet).unwrap_err(),
        refused(2, 4)
    );
    stop(sim);
}

#[test]
fn a_tampered_counter_file_is_refused_and_a_missing_one_is_recreated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let pk = SoftPasskey::new(13);
    let sim = Sim::start(&dir, &[]);
    let wallet = create_wallet(&sim.client(), &pk).wallet_id;
    stop(sim);

    let counter = dir.join("counter.bin");
    let good = fs::read(&counter).unwrap();
    let mut flipped = good.clone();
    flipped[20] ^= 0x40;
    fs::write(&counter, &flipped).unwrap();
    let exit = start_fails(&dir, &[]);
    assert!(!exit.status.success());
    assert!(
        exit.stderr.contains("counter.bin") && exit.stderr.contains("tampered"),
        "stderr:\n{}",
        exit.stderr
    );

    fs::remove_file(&counter).unwrap();
    let sim = Sim::start(&dir, &[]);
    assert!(
        sim.stderr().contains("rollback counter file is missing"),
        "stderr:\n{}",
        sim.stderr()
    );
    assert!(counter.exists(), "recreated at start");
    sim.client()
        .call(&GetWalletInfo { wallet_id: wallet })
        .expect("served");
    stop(sim);
}
