//! Agent signatures outside the core's lock (`Locking::SignOutside`): the ECDSA runs in
//! parallel, yet once a revoke has returned no signature checked against the old state comes
//! out. Runs the server in this process (to hold a signature in flight at a pause point).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use kms_proto::*;
use kms_ta_sim::server::SignPause;
use kms_ta_sim::{start, Locking, Settings};
use kms_tee_client::{SimConfig, SimTransport, TeeClient, TeeError};

struct InProcess {
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    stop: kms_ta_sim::server::ShutdownHandle,
    thread: Option<thread::JoinHandle<()>>,
}

impl InProcess {
    fn start(pause: Option<SignPause>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            data_dir: dir.path().join("ta"),
            socket: Some(dir.path().join("ta.sock")),
            enable_test_seed: false,
            locking: Locking::SignOutside,
        };
        let started = start(&settings).expect("start");
        let mut server = started.server;
        if let Some(p) = pause {
            server = server.with_pause_before_signature(p);
        }
        let socket = server.path().to_owned();
        let stop = server.shutdown_handle().unwrap();
        let data_dir = started.data_dir;
        let thread = thread::spawn(move || {
            server.run().expect("serve");
            drop(data_dir);
        });
        InProcess {
            _dir: dir,
            socket,
            stop,
            thread: Some(thread),
        }
    }

    fn client(&self) -> TeeClient {
        TeeClient::new(SimTransport::with_config(
            &self.socket,
            SimConfig {
                call_timeout: Some(Duration::from_secs(60)),
                ..SimConfig::default()
            },
        ))
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let _ = self.stop.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn create_agent(
    client: &TeeClient,
    pk: &mut SoftPasskey,
    wallet: WalletId,
    index: u32,
) -> AgentCredential {
    let body = MintAgentBody {
        wallet_id: wallet,
        label: format!("bot-{index}"),
        ttl_secs: 3600,
    };
    let assertion = pk.authorize(&nonce(client, wallet), &body);
    client
        .call(&CreateAgentKey {
            agent_index: index,
            body,
            assertion,
        })
        .expect("create agent")
}

fn sign(
    client: &TeeClient,
    wallet: WalletId,
    index: u32,
    jwt: &str,
    n: u64,
) -> Result<AgentSignature, TeeError> {
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&n.to_be_bytes());
    client.call(&SignAgentUserOp {
        wallet_id: wallet,
        agent_index: index,
        jwt: jwt.to_owned(),
        user_op_hash: hash,
        account: [0xAA; 20],
    })
}

fn revoke(client: &TeeClient, wallet: WalletId, index: u32) -> AgentState {
    client
        .call(&RevokeAgentKey {
            wallet_id: wallet,
            agent_index: index,
        })
        .expect("revoke")
}

fn is_revoked(r: &Result<AgentSignature, TeeError>) -> bool {
    matches!(r, Err(TeeError::Ta(TaError::Jwt(JwtError::AgentRevoked))))
}

/// A pause that holds the first signature (or batch) after its check: `checked` hears when it is
/// held, and sending on `release` lets it go on. Later signatures do not pause.
fn pause_first_signature() -> (SignPause, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (checked_tx, checked_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let first = Arc::new(Mutex::new(Some((checked_tx, release_rx))));
    let pause: SignPause = Arc::new(move || {
        if let Some((checked, release)) = first.lock().unwrap().take() {
            checked.send(()).unwrap();
            release.recv().unwrap();
        }
    });
    (pause, checked_rx, release_tx)
}

/// A signature held in flight between its check and its ECDSA: a revoke of its agent does
/// not return until that signature is out; the signature after it is refused.
#[test]
fn a_revoke_waits_for_the_signature_checked_before_it() {
    let (pause, checked_rx, release_tx) = pause_first_signature();
    let sim = InProcess::start(Some(pause));
    // Dropped before `sim` if an assertion fails, so the paused session can end.
    let release_tx = release_tx;
    let client = sim.client();
    let mut pk = SoftPasskey::new(3);
    let wallet = create_wallet(&client, &pk).wallet_id;
    let cred = create_agent(&client, &mut pk, wallet, 0);
    let jwt = cred.to_jwt();

    let signer = {
        let (c, jwt) = (sim.client(), jwt.clone());
        thread::spawn(move || sign(&c, wallet, 0, &jwt, 1))
    };
    checked_rx.recv().unwrap(); // the signature passed its check and is in flight
    let (revoked_tx, revoked_rx) = mpsc::channel();
    let revoker = {
        let c = sim.client();
        thread::spawn(move || {
            let st = revoke(&c, wallet, 0);
            revoked_tx.send(()).unwrap();
            st
        })
    };
    // The forbidden event is the revoke returning while the signature is still held; give it
    // every chance to happen (in the correct design it cannot, whatever the wait).
    assert_eq!(
        revoked_rx.recv_timeout(Duration::from_millis(300)),
        Err(mpsc::RecvTimeoutError::Timeout),
        "a revoke returned while a signature checked before it was still in flight"
    );
    release_tx.send(()).unwrap();
    let out = signer
        .join()
        .unwrap()
        .expect("checked before the revoke: signed");
    assert_eq!(out.agent_address, cred.address);
    assert_eq!(out.signature.len(), 106);
    let st = revoker.join().unwrap();
    assert!(st.revoked);
    assert_eq!(st.generation, cred.generation + 1);
    assert!(is_revoked(&sign(&client, wallet, 0, &jwt, 2)));
}

/// The same guarantee for a batch (`SignAgentUserOps`): held in flight after its checks, it keeps
/// a revoke of one of its agents from returning until its signatures are out; each of its
/// requests is answered as alone; the same batch after the revoke has that agent's requests
/// refused and the other agent's signed.
#[test]
fn a_revoke_waits_for_a_batch_checked_before_it() {
    let (pause, checked_rx, release_tx) = pause_first_signature();
    let sim = InProcess::start(Some(pause));
    let release_tx = release_tx;
    let client = sim.client();
    let mut pk = SoftPasskey::new(5);
    let wallet = create_wallet(&client, &pk).wallet_id;
    let creds: Vec<_> = (0..2)
        .map(|i| create_agent(&client, &mut pk, wallet, i))
        .collect();
    let request = |i: usize, n: u8| SignAgentUserOp {
        wallet_id: wallet,
        agent_index: i as u32,
        jwt: creds[i].to_jwt(),
        user_op_hash: [n; 32],
        account: [0xAA; 20],
    };
    let batch = SignAgentUserOps {
        requests: vec![request(0, 1), request(1, 2), request(0, 3)],
    };
    let signer = {
        let (c, batch) = (sim.client(), batch.clone());
        thread::spawn(move || c.call(&batch))
    };
    checked_rx.recv().unwrap();
    let (revoked_tx, revoked_rx) = mpsc::channel();
    let revoker = {
        let c = sim.client();
        thread::spawn(move || {
            let st = revoke(&c, wallet, 0);
            revoked_tx.send(()).unwrap();
            st
        })
    };
    assert_eq!(
        revoked_rx.recv_timeout(Duration::from_millis(300)),
        Err(mpsc::RecvTimeoutError::Timeout),
        "a revoke returned while a batch checked before it was still in flight"
    );
    release_tx.send(()).unwrap();
    let out = signer.join().unwrap().expect("checked before the revoke");
    assert_eq!(out.len(), 3);
    for (answer, i) in out.iter().zip([0, 1, 0]) {
        let a = answer.as_ref().expect("signed");
        assert_eq!(a.agent_address, creds[i].address);
        assert_eq!(a.signature.len(), 106);
    }
    assert!(revoker.join().unwrap().revoked);
    let after = client.call(&batch).expect("a well-formed batch");
    let after: Vec<Result<AgentSignature, TeeError>> =
        after.into_iter().map(|r| r.map_err(TeeError::Ta)).collect();
    assert!(is_revoked(&after[0]) && is_revoked(&after[2]), "{after:?}");
    assert_eq!(after[1].as_ref().unwrap(), out[1].as_ref().unwrap());
}

/// Many sessions signing for several agents while each agent is revoked: every signature
/// requested after its agent's revoke returned is refused, every other answer is a valid
/// signature or that refusal. Ordering by flags, not by time.
#[test]
fn no_signature_for_a_revoked_agent_under_concurrent_signing() {
    const AGENTS: u32 = 4;
    const SIGNERS: usize = 8;
    let sim = InProcess::start(None);
    let client = sim.client();
    let mut pk = SoftPasskey::new(4);
    let wallet = create_wallet(&client, &pk).wallet_id;
    let creds: Vec<AgentCredential> = (0..AGENTS)
        .map(|i| create_agent(&client, &mut pk, wallet, i))
        .collect();
    let creds = Arc::new(creds);
    let revoked: Arc<Vec<AtomicBool>> =
        Arc::new((0..AGENTS).map(|_| AtomicBool::new(false)).collect());
    let signed = Arc::new(AtomicU64::new(0));
    let refused_after = Arc::new(AtomicU64::new(0));

    let signers: Vec<_> = (0..SIGNERS)
        .map(|s| {
            let (c, creds, revoked, signed, refused_after) = (
                sim.client(),
                Arc::clone(&creds),
                Arc::clone(&revoked),
                Arc::clone(&signed),
                Arc::clone(&refused_after),
            );
            thread::spawn(move || {
                let mut n = s as u64 * 1_000_000;
                // Until every agent is revoked, then one more round for each.
                let mut rounds_after_all = 0;
                while rounds_after_all < 2 {
                    if revoked.iter().all(|r| r.load(Ordering::SeqCst)) {
                        rounds_after_all += 1;
                    }
                    for (i, cred) in creds.iter().enumerate() {
                        n += 1;
                        let after = revoked[i].load(Ordering::SeqCst);
                        let r = sign(&c, wallet, i as u32, &cred.to_jwt(), n);
                        match r {
                            Ok(out) => {
                                assert!(
                                    !after,
                                    "agent {i}: a signature requested after its revoke returned"
                                );
                                assert_eq!(out.agent_address, cred.address);
                                assert_eq!(out.signature.len(), 106);
                                signed.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(_) => {
                                assert!(is_revoked(&r), "agent {i}: {r:?}");
                                if after {
                                    refused_after.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                        }
                    }
                }
            })
        })
        .collect();

    // Revoke each agent once signing is under way (counted, not timed).
    let revoker = sim.client();
    for i in 0..AGENTS {
        let target = 20 * (u64::from(i) + 1);
        while signed.load(Ordering::SeqCst) < target {
            thread::yield_now();
        }
        let st = revoke(&revoker, wallet, i);
        assert!(st.revoked);
        assert_eq!(st.generation, creds[i as usize].generation + 1);
        revoked[i as usize].store(true, Ordering::SeqCst);
    }
    for s in signers {
        s.join().expect("signer");
    }
    assert!(signed.load(Ordering::SeqCst) >= 20 * u64::from(AGENTS));
    assert!(refused_after.load(Ordering::SeqCst) >= (SIGNERS as u64) * u64::from(AGENTS));
}
