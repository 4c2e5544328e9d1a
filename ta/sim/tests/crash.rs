//! The fault-injection hooks of ta-sim (needs `--features fault-injection`, which compiles
//! them in):
//!
//! * a crash between writing the sealed temp file and renaming it over `sealed.bin` leaves the
//!   previous state;
//! * a directory fsync failing after the rename of `sealed.bin` (or of the rollback counter)
//!   stops the simulator, so memory never disagrees with the disk: the next start serves the
//!   new state;
//! * a crash between the sealed write and the counter advance is accepted (the counter catches
//!   up).

mod common;

use std::fs;

use common::*;
use kms_proto::*;
use kms_tee_client::TeeError;

#[test]
fn a_crash_before_the_rename_leaves_the_previous_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let sim = Sim::start(&dir, &[]);
    let client = sim.client();
    let pk = SoftPasskey::new(5);
    let kept = create_wallet(&client, &pk);
    assert!(sim.stop().status.success());
    let store = dir.join("sealed.bin");
    let before = fs::read(&store).unwrap();

    // Restart with the hook armed; the next sealed write aborts the process
    // after the temp file is written and synced, before the rename.
    let socket = default_socket(&dir);
    let sim = Sim::start_with(&dir, &socket, &[], &[("TA_SIM_CRASH_BEFORE_RENAME", "1")]);
    let client = sim.client();
    let lost = client.call(&CreateWallet {
        passkey_public_key: pk.public_key(),
        rp_id: RP_ID.into(),
    });
    assert!(
        matches!(
            lost,
            Err(TeeError::Unavailable {
                maybe_executed: true,
                ..
            })
        ),
        "{lost:?}"
    );
    let exit = sim.wait();
    assert!(!exit.status.success(), "the hook aborts the process");
    assert!(
        dir.join("sealed.bin.tmp").exists(),
        "the temp file was written"
    );
    assert_eq!(fs::read(&store).unwrap(), before, "sealed.bin untouched");

    // Restart normally: the previous state, and the temp file is gone.
    let sim = Sim::start(&dir, &[]);
    let info = sim
        .client()
        .call(&GetWalletInfo {
            wallet_id: kept.wallet_id,
        })
        .unwrap();
    assert_eq!(info.owner, kept.owner);
    assert!(!dir.join("sealed.bin.tmp").exists());
    assert!(sim.stop().status.success());
}

fn operator_key(client: &kms_tee_client::TeeClient, create: bool) -> Result<Address, TeeError> {
    client
        .call(&OperatorKey {
            create_if_missing: create,
        })
        .map(|k| k.address)
}

/// A data directory holding a wallet, whose TA has no operator key yet.
fn prepared() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let sim = Sim::start(&dir, &[]);
    let client = sim.client();
    create_wallet(&client, &SoftPasskey::new(6));
    assert_eq!(
        operator_key(&client, false).unwrap_err(),
        TeeError::Ta(TaError::OperatorKeyMissing)
    );
    assert!(sim.stop().status.success());
    (tmp, dir)
}

/// Arm `env`, make one write (create the operator key): the simulator stops (exit code 74) and
/// the caller sees the call fail as "may have executed"; the next start serves what the disk
/// holds, which is the new state.
fn a_failed_directory_fsync_stops_the_simulator(hook: &str) {
    let (_tmp, dir) = prepared();
    let before = fs::read(dir.join("sealed.bin")).unwrap();
    let socket = default_socket(&dir);
    let sim = Sim::start_with(&dir, &socket, &[], &[("TA_SIM_FAIL_DIR_FSYNC", hook)]);
    let client = sim.client();
    let lost = operator_key(&client, true);
    assert!(
        matches!(
            lost,
            Err(TeeError::Unavailable {
                maybe_executed: true,
                ..
            })
        ),
        "the write is neither reported failed nor served from memory: {lost:?}"
    );
    let exit = sim.wait();
    assert_eq!(exit.status.code(), Some(74), "stderr:\n{}", exit.stderr);
    assert!(
        exit.stderr.contains("directory fsync failed"),
        "stderr:\n{}",
        exit.stderr
    );
    assert_ne!(
        fs::read(dir.join("sealed.bin")).unwrap(),
        before,
        "the renamed file is in place"
    );

    // What the disk holds is what is served: the write happened.
    let sim = Sim::start(&dir, &[]);
    let created = operator_key(&sim.client(), false).expect("the operator key exists");
    assert_eq!(operator_key(&sim.client(), true).unwrap(), created);
    assert!(sim.stop().status.success());
}

#[test]
fn a_failed_directory_fsync_after_the_sealed_rename_stops_the_simulator() {
    a_failed_directory_fsync_stops_the_simulator("sealed");
}

#[test]
fn a_failed_directory_fsync_after_the_counter_rename_stops_the_simulator() {
    a_failed_directory_fsync_stops_the_simulator("counter");
}

#[test]
fn a_crash_between_the_sealed_write_and_the_counter_advance_is_accepted() {
    let (_tmp, dir) = prepared();
    let sealed = dir.join("sealed.bin");
    let counter = dir.join("counter.bin");
    let old_sealed = fs::read(&sealed).unwrap();
    let old_counter = fs::read(&counter).unwrap();

    let socket = default_socket(&dir);
    let sim = Sim::start_with(&dir, &socket, &[], &[("TA_SIM_CRASH_BEFORE_COUNTER", "1")]);
    let lost = operator_key(&sim.client(), true);
    assert!(
        matches!(
            lost,
            Err(TeeError::Unavailable {
                maybe_executed: true,
                ..
            })
        ),
        "{lost:?}"
    );
    assert!(!sim.wait().status.success(), "the hook aborts the process");
    assert_ne!(
        fs::read(&sealed).unwrap(),
        old_sealed,
        "the sealed write landed"
    );
    assert_eq!(
        fs::read(&counter).unwrap(),
        old_counter,
        "the counter did not move"
    );

    // The sealed state is ahead of the counter: accepted, and the counter catches up.
    let sim = Sim::start(&dir, &[]);
    operator_key(&sim.client(), false).expect("the newer state is served");
    assert_ne!(fs::read(&counter).unwrap(), old_counter, "caught up");
    assert!(sim.stop().status.success());

    // Caught up for real: the copy from before the crash is now a rollback.
    fs::write(&sealed, &old_sealed).unwrap();
    let sim = Sim::start(&dir, &[]);
    let refused = operator_key(&sim.client(), false).unwrap_err();
    assert!(
        matches!(
            refused,
            TeeError::Ta(TaError::StateRolledBack { sealed, counter }) if counter == sealed + 1
        ),
        "{refused:?}"
    );
    assert!(sim.stop().status.success());
}
