//! The real `ta-sim` process, driven through `kms-tee-client`.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use common::*;
use kms_proto::*;
use kms_tee_client::{TeeBackend, TeeError};

fn data_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    (tmp, dir)
}

#[test]
fn starts_with_a_0600_socket_and_a_0700_data_dir_and_answers() {
    let (_tmp, dir) = data_dir();
    let sim = Sim::start(&dir, &[]);
    let meta = fs::symlink_metadata(&sim.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        fs::metadata(dir.join("sealed.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // Through the backend string the companion and kms-admin take.
    let backend: TeeBackend = format!("sim:{}", sim.socket.display()).parse().unwrap();
    let client = backend.connect().unwrap();
    let info = client.call(&TaInfo {}).unwrap();
    assert_eq!(info.protocol_version, PROTOCOL_VERSION);
    assert!(!info.test_seed, "test seeding is off by default");

    let exit = sim.stop();
    assert!(exit.status.success(), "stderr:\n{}", exit.stderr);
}

#[test]
fn two_sessions_at_once_share_one_ta() {
    let (_tmp, dir) = data_dir();
    let sim = Sim::start(&dir, &[]);
    // Two clients with their own pools: two sessions.
    let a = sim.client();
    let b = sim.client();
    let mut pk = SoftPasskey::new(7);
    let wallet = create_wallet(&a, &pk);

    // State created on session A is visible on session B.
    let info_b = b
        .call(&GetWalletInfo {
            wallet_id: wallet.wallet_id,
        })
        .unwrap();
    assert_eq!(info_b.owner, wallet.owner);
    assert_eq!(info_b.passkey_public_key, pk.public_key());

    // Both sessions used concurrently from two threads, each answered
    // correctly.
    let expected = info_b.clone();
    let workers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|c| {
            let expected = expected.clone();
            thread::spawn(move || {
                for _ in 0..25 {
                    let info = c
                        .call(&GetWalletInfo {
                            wallet_id: expected.wallet_id,
                        })
                        .unwrap();
                    assert_eq!(info, expected);
                    assert_eq!(
                        c.call(&TaInfo {}).unwrap().protocol_version,
                        PROTOCOL_VERSION
                    );
                    let n = c
                        .call(&GetChallenge {
                            wallet_id: expected.wallet_id,
                        })
                        .unwrap();
                    assert_ne!(n.nonce, [0u8; 32]);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }

    // A nonce issued on session A authorises a command on session B, once.
    let body = DeriveAddressBody {
        wallet_id: wallet.wallet_id,
        path: HdPath::agent(3),
    };
    let nonce = nonce(&a, wallet.wallet_id);
    let assertion = pk.authorize(&nonce, &body);
    let req = DeriveAddress {
        body: body.clone(),
        assertion,
    };
    let derived = b.call(&req).unwrap();
    assert_eq!(derived.path, HdPath::agent(3));
    // ... and is consumed for everyone: replaying it on session A fails.
    assert_eq!(
        a.call(&req),
        Err(TeeError::Ta(TaError::Passkey(
            PasskeyError::ChallengeMismatch
        )))
    );

    assert!(sim.stop().status.success());
}

#[test]
fn state_survives_a_restart() {
    let (_tmp, dir) = data_dir();
    let sim = Sim::start(&dir, &[]);
    let pk = SoftPasskey::new(9);
    let client = sim.client();
    let wallet = create_wallet(&client, &pk);
    let before = client
        .call(&GetWalletInfo {
            wallet_id: wallet.wallet_id,
        })
        .unwrap();
    let socket = sim.socket.clone();
    let exit = sim.stop();
    assert!(exit.status.success(), "stderr:\n{}", exit.stderr);
    assert!(!socket.exists(), "the socket is removed on SIGTERM");

    // The old client's sessions are gone: a call fails as unavailable.
    assert!(client.call(&TaInfo {}).unwrap_err().is_unavailable());

    let sim = Sim::start(&dir, &[]);
    // The same client recovers on its next call (fresh session).
    let after = client
        .call(&GetWalletInfo {
            wallet_id: wallet.wallet_id,
        })
        .unwrap();
    assert_eq!(after, before);
    assert!(sim.stop().status.success());
}

#[test]
fn sigint_also_stops_cleanly() {
    let (_tmp, dir) = data_dir();
    let sim = Sim::start(&dir, &[]);
    let socket = sim.socket.clone();
    sim.signal(rustix::process::Signal::INT);
    let exit = sim.wait();
    assert!(exit.status.success(), "stderr:\n{}", exit.stderr);
    assert!(!socket.exists());
}

#[test]
fn calls_in_flight_at_sigterm_are_answered_or_cleanly_unavailable() {
    let (_tmp, dir) = data_dir();
    let sim = Sim::start(&dir, &[]);
    let clients: Vec<_> = (0..3).map(|_| sim.client()).collect();
    let workers: Vec<_> = clients
        .into_iter()
        .map(|c| {
            thread::spawn(move || {
                let mut ok = 0u32;
                for _ in 0..2000 {
                    match c.call(&TaInfo {}) {
                        Ok(info) => {
                            assert_eq!(info.protocol_version, PROTOCOL_VERSION);
                            ok += 1;
                        }
                        Err(e) => {
                            assert!(e.is_unavailable(), "{e:?}");
                            break;
                        }
                    }
                }
                ok
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(100));
    let exit = sim.stop();
    assert!(exit.status.success(), "stderr:\n{}", exit.stderr);
    let answered: u32 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(answered > 0);
}

fn assert_refused(exit: &Exit, needles: &[&str]) {
    assert!(
        !exit.status.success(),
        "must fail; stderr:\n{}",
        exit.stderr
    );
    for n in needles {
        assert!(
            exit.stderr.contains(n),
            "stderr should mention {n:?}:\n{}",
            exit.stderr
        );
    }
}

#[test]
fn a_tampered_truncated_or_wrongly_keyed_store_is_refused() {
    let (_tmp, dir) = data_dir();
    let sim = Sim::start(&dir, &[]);
    let client = sim.client();
    let wallet = create_wallet(&client, &SoftPasskey::new(3));
    assert!(sim.stop().status.success());

    let store = dir.join("sealed.bin");
    let key = dir.join("sealed.key");
    let good = fs::read(&store).unwrap();
    let good_key = fs::read(&key).unwrap();

    // One flipped byte, in the header, the nonce, the ciphertext and the tag.
    for pos in [3, 12, good.len() / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[pos] ^= 0x01;
        fs::write(&store, &bad).unwrap();
        let exit = start_fails(&dir, &[]);
        assert_refused(&exit, &["sealed.bin", "refusing to start"]);
    }

    // Truncated, by one byte and to almost nothing; and emptied.
    for len in [good.len() - 1, 10, 0] {
        fs::write(&store, &good[..len]).unwrap();
        let exit = start_fails(&dir, &[]);
        assert_refused(&exit, &["sealed.bin", "refusing to start"]);
    }
    fs::write(&store, &good).unwrap();

    // The wrong key.
    fs::write(&key, [0x42u8; 32]).unwrap();
    let exit = start_fails(&dir, &[]);
    assert_refused(&exit, &["sealed.bin", "sealed.key is not the key"]);
    fs::write(&key, &good_key).unwrap();

    // Deleted store next to its key: never starts empty.
    fs::remove_file(&store).unwrap();
    let exit = start_fails(&dir, &[]);
    assert_refused(&exit, &["sealed.bin", "missing", "refusing to start empty"]);
    fs::write(&store, &good).unwrap();

    // Restored: starts and still has the wallet.
    let sim = Sim::start(&dir, &[]);
    sim.client()
        .call(&GetWalletInfo {
            wallet_id: wallet.wallet_id,
        })
        .unwrap();
    assert!(sim.stop().status.success());
}

#[test]
fn a_key_file_readable_by_others_is_refused() {
    let (_tmp, dir) = data_dir();
    assert!(Sim::start(&dir, &[]).stop().status.success());
    let key = dir.join("sealed.key");
    for mode in [0o644, 0o640, 0o604, 0o660] {
        fs::set_permissions(&key, fs::Permissions::from_mode(mode)).unwrap();
        let exit = start_fails(&dir, &[]);
        assert_refused(
            &exit,
            &["sealed.key", &format!("mode {mode:04o}"), "chmod 600"],
        );
    }
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(Sim::start(&dir, &[]).stop().status.success());
}

#[test]
fn a_malformed_frame_closes_only_its_session() {
    let (_tmp, dir) = data_dir();
    let sim = Sim::start(&dir, &[]);
    let good = sim.client();
    good.call(&TaInfo {}).unwrap();

    for frame in [
        // Length far over the bound.
        vec![0xff, 0xff, 0xff, 0xff],
        // Length just over the bound.
        ((MAX_MESSAGE_LEN + 5) as u32).to_be_bytes().to_vec(),
        // Too short to hold a command id.
        vec![0, 0, 0, 2, 0, 0],
    ] {
        let mut raw = UnixStream::connect(&sim.socket).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        raw.write_all(&frame).unwrap();
        let mut buf = [0u8; 16];
        let n = raw.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "the server closes the session without answering");
        // The other session, opened before, keeps working.
        assert_eq!(
            good.call(&TaInfo {}).unwrap().protocol_version,
            PROTOCOL_VERSION
        );
    }

    // A well-framed request that does not decode is answered, not closed.
    let mut raw = UnixStream::connect(&sim.socket).unwrap();
    raw.write_all(&[0, 0, 0, 6, 0, 0, 0, 22, 9, 9]).unwrap();
    let mut len = [0u8; 4];
    raw.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; u32::from_be_bytes(len) as usize];
    raw.read_exact(&mut resp).unwrap();
    assert_eq!(
        decode_response::<TaInfoOutput>(&resp).unwrap(),
        Err(TaError::Protocol(ProtoError::UnsupportedVersion(9)))
    );
    assert!(sim.stop().status.success());
}

#[test]
fn a_stale_socket_is_replaced_but_a_live_one_is_refused() {
    let (tmp, dir) = data_dir();
    let sim = Sim::start(&dir, &[]);
    let socket = sim.socket.clone();

    // Another ta-sim (another data dir) on the same socket: refused.
    let other = tmp.path().join("other");
    let out = std::process::Command::new(BIN)
        .arg("--data-dir")
        .arg(&other)
        .arg("--socket")
        .arg(&socket)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("already serving"), "{stderr}");
    // Another ta-sim on the same data dir: refused too.
    let exit = start_fails(&dir, &[]);
    assert_refused(&exit, &["in use by another ta-sim"]);
    // The first one is unaffected.
    sim.client().call(&TaInfo {}).unwrap();

    // Killed without cleanup: the socket file stays behind, stale.
    sim.signal(rustix::process::Signal::KILL);
    let exit = sim.wait();
    assert!(!exit.status.success());
    assert!(socket.exists());
    let sim = Sim::start(&dir, &[]);
    sim.client().call(&TaInfo {}).unwrap();
    assert!(sim.stop().status.success());
}

#[test]
fn test_seeding_is_served_only_when_enabled() {
    const ANVIL: &str = "test test test test test test test test test test test junk";
    let req = SeedWalletForTest {
        mnemonic: ANVIL.into(),
        passkey_public_key: SoftPasskey::new(1).public_key(),
        rp_id: RP_ID.into(),
    };
    let (_tmp, dir) = data_dir();
    let sim = Sim::start(&dir, &[]);
    let refused = sim.client().call(&req);
    assert!(
        matches!(
            refused,
            Err(TeeError::Ta(
                TaError::Unsupported | TaError::UnknownCommand(_)
            ))
        ),
        "{refused:?}"
    );
    assert!(sim.stop().status.success());

    let sim = Sim::start(&dir, &["--enable-test-seed"]);
    let client = sim.client();
    assert!(client.call(&TaInfo {}).unwrap().test_seed);
    let out = client.call(&req).unwrap();
    assert_eq!(
        out.owner.address,
        [
            0xf3, 0x9f, 0xd6, 0xe5, 0x1a, 0xad, 0x88, 0xf6, 0xf4, 0xce, 0x6a, 0xb8, 0x82, 0x72,
            0x79, 0xcf, 0xff, 0xb9, 0x22, 0x66
        ]
    );
    assert!(out.mnemonic.is_none());
    assert!(sim.stop().status.success());
}

#[test]
fn help_describes_the_flags() {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--socket",
        "--data-dir",
        "--enable-test-seed",
        "--log",
        "sealed.key",
    ] {
        assert!(help.contains(flag), "--help should mention {flag}:\n{help}");
    }
}
