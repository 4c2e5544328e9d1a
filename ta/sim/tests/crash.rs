//! A crash between writing the sealed temp file and renaming it over
//! `sealed.bin` leaves the previous state (needs `--features
//! fault-injection`, which compiles the crash hook in).

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
