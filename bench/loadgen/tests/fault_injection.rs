//! Fault injection: `kill -9` the companion and the simulator at random
//! points while owners create, refresh and revoke agent keys, agents sign,
//! and the companion rotates its JWT secret every second (until the TA's
//! limit of verify-only secrets refuses it; forced rotations reset it); some rounds arm
//! ta-sim's crash hook so that a sealed-storage write dies half-way. After
//! each restart the invariants are checked against the database and the TA:
//!
//! 1. no duplicate index: each (wallet, index) has one address, the TA's,
//!    and no two indices of a wallet share an address;
//! 2. every active agent's database generation equals the TA's, and the TA
//!    has not revoked it; every revoked/failed/pending row is revoked or
//!    absent in the TA;
//! 3. no JWT that should be dead is accepted, by the companion or by the
//!    TA directly (superseded by a refresh we saw, revoked, or of an agent
//!    the database does not hold active); the current one of an active
//!    agent is accepted when its kid is still in the TA;
//! 4. `jwt_secret_meta` agrees with the TA's `JwtSecretStatus`;
//! 5. the sealed store opens (ta-sim restarts), and a crash inside a sealed
//!    write leaves `sealed.bin` byte-for-byte as it was;
//! 6. the audit log, anchored up to its end, verifies against the TA's anchor
//!    (the companion checkpoints every few events under the kills: a
//!    checkpoint the TA signed but the killed companion never stored is
//!    recovered from the TA, and no committed row is lost).
//!
//! Bounded: `KMS_FAULT_ROUNDS` rounds (default 6) of about two seconds
//! each. The RNG seed is printed; re-run a failure with `KMS_FAULT_SEED=<n>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kms_db::AgentStatus;
use kms_loadgen::api::{Agent, Api, Owner};
use kms_loadgen::procs::{self, CompanionOpts, Proc};
use kms_proto::{
    AuditAnchor, GetAgentState, JwtSecretStatus, KidStatus, RotationMode, SignAgentUserOp, TaError,
    WalletId,
};
use kms_tee_client::{SimTransport, TeeClient, TeeError};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

const OWNERS: usize = 2;
const MAX_AGENTS_PER_OWNER: usize = 5;
const ACCOUNT: [u8; 20] = [0xAC; 20];

/// What the test knows about one agent.
#[derive(Default, Clone)]
struct Known {
    /// Every credential we were given for it.
    jwts: Vec<String>,
    /// Credentials known dead (superseded by a refresh answer we got, or
    /// the agent's revoke answer we got).
    dead: Vec<String>,
    /// The credential to use as Bearer next.
    current: Option<String>,
}

#[derive(Default)]
struct Model {
    agents: BTreeMap<String, Known>,
}

struct Bins {
    sim: PathBuf,
    companion: PathBuf,
}

fn bins() -> Bins {
    // The fault-injection build of ta-sim (the crash hook is armed only by
    // its environment variable), as its own copy so other tests' builds of
    // ta-sim do not replace it under us.
    let sim = kms_test_support::ta_sim_bin_with_features("fault-injection");
    let companion = kms_test_bins::workspace_bin("kms-companion", "companion", "KMS_COMPANION_BIN")
        .unwrap_or_else(|e| panic!("{e}"));
    Bins { sim, companion }
}

fn tee(dir: &Path) -> TeeClient {
    TeeClient::new(SimTransport::new(dir.join("ta.sock")))
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn key_parts(key_id: &str) -> (WalletId, u32) {
    let (w, i) = key_id.rsplit_once(':').unwrap();
    (w.parse().unwrap(), i.parse().unwrap())
}

fn companion_opts() -> CompanionOpts {
    CompanionOpts {
        args: [
            "--rate-limit",
            "1000000",
            "--agent-rate-limit",
            "1000000",
            // The invariant checks present superseded and revoked credentials (which must be
            // refused) again and again while they poll: each is a failed authentication of the
            // harness's one address, which the per-address limit would soon refuse outright.
            "--client-rate-limit",
            "1000000",
            "--agent-read-rate-limit",
            "1000000",
            "--jwt-rotation-tick-secs",
            "1",
            "--jwt-rotation-period-secs",
            "1",
            // A period far below the 7-day overlap: the TA keeps every verify-only secret, so
            // the rotations fill its limit and are then refused until a forced rotation (below)
            // empties the store; both paths run under the kills.
            "--allow-short-jwt-rotation-period",
            // Audit checkpoints every few events, so that kills land around them.
            "--audit-checkpoint-events",
            "5",
            "--audit-checkpoint-secs",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    }
}

/// One owner's loop of random operations until `stop`.
async fn owner_loop(
    api: Api,
    mut owner: Owner,
    model: Arc<Mutex<Model>>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> Owner {
    let mut rng = SmallRng::seed_from_u64(seed);
    while !stop.load(Ordering::SeqCst) {
        let mine: Vec<(String, Option<String>)> = {
            let m = model.lock().unwrap();
            m.agents
                .iter()
                .filter(|(k, _)| k.starts_with(&owner.wallet))
                .map(|(k, a)| (k.clone(), a.current.clone()))
                .collect()
        };
        let roll = rng.gen_range(0..100);
        if roll < 30 && mine.len() < MAX_AGENTS_PER_OWNER {
            if let Ok((200, v)) = api.create_agent(&mut owner, "fi").await {
                let a = Agent::from_answer(&v).expect("create answer");
                let mut m = model.lock().unwrap();
                let k = m.agents.entry(a.key_id).or_default();
                k.jwts.push(a.jwt.clone());
                k.current = Some(a.jwt);
            }
        } else if roll < 65 && !mine.is_empty() {
            let (key_id, cur) = &mine[rng.gen_range(0..mine.len())];
            let Some(cur) = cur else { continue };
            if let Ok((200, v)) = api.refresh(&mut owner, key_id, cur).await {
                let a = Agent::from_answer(&v).expect("refresh answer");
                let mut m = model.lock().unwrap();
                let k = m.agents.get_mut(key_id).unwrap();
                // Every earlier credential is superseded.
                let older: Vec<String> = k.jwts.clone();
                k.dead.extend(older);
                k.jwts.push(a.jwt.clone());
                k.current = Some(a.jwt);
            }
        } else if roll < 75 && !mine.is_empty() {
            let (key_id, _) = &mine[rng.gen_range(0..mine.len())];
            if let Ok((200, _)) = api.revoke(&mut owner, key_id).await {
                let mut m = model.lock().unwrap();
                let k = m.agents.get_mut(key_id).unwrap();
                let all = k.jwts.clone();
                k.dead.extend(all);
                k.current = None;
            }
        } else if !mine.is_empty() {
            let (key_id, cur) = &mine[rng.gen_range(0..mine.len())];
            if let Some(cur) = cur {
                let _ = api.sign(key_id, cur, &[7; 32], &ACCOUNT).await;
            }
        }
    }
    owner
}

async fn ta_accepts(t: &TeeClient, key_id: &str, jwt: &str) -> Result<bool, TeeError> {
    let (wallet_id, agent_index) = key_parts(key_id);
    match t
        .call_async(&SignAgentUserOp {
            wallet_id,
            agent_index,
            jwt: jwt.to_owned(),
            user_op_hash: [9; 32],
            account: ACCOUNT,
        })
        .await
    {
        Ok(_) => Ok(true),
        Err(TeeError::Ta(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Check every invariant once; `Err` describes the first one broken.
async fn check(dir: &Path, api: &Api, model: &Model) -> Result<(), String> {
    let db = kms_db::Db::open(&format!("sqlite://{}", dir.join("kms.db").display()))
        .await
        .map_err(|e| format!("open db: {e}"))?;
    let t = tee(dir);
    let result = async {
        let rows = db.list_agents(None).await.map_err(|e| e.to_string())?;
        let mut addresses: BTreeMap<(String, String), u32> = BTreeMap::new();
        for row in &rows {
            let key_id = row.key_id();
            let (wallet, index) = key_parts(&key_id);
            let st = match t
                .call_async(&GetAgentState {
                    wallet_id: wallet,
                    agent_index: index,
                })
                .await
            {
                Ok(st) => Some(st),
                Err(TeeError::Ta(TaError::AgentNotFound)) => None,
                Err(e) => return Err(format!("GetAgentState {key_id}: {e}")),
            };
            if let Some(st) = &st {
                let ta_addr = format!("0x{}", hex::encode(st.address));
                if let Some(a) = &row.agent_address {
                    if format!("{a:#x}") != ta_addr {
                        return Err(format!("{key_id}: DB address {a} != TA address {ta_addr}"));
                    }
                }
                if let Some(other) =
                    addresses.insert((row.wallet_id.clone(), ta_addr.clone()), index)
                {
                    return Err(format!("{key_id}: address {ta_addr} also at index {other}"));
                }
            }
            match row.status {
                AgentStatus::Active => {
                    let st = st.ok_or(format!("{key_id}: active in DB, unknown to the TA"))?;
                    if st.revoked {
                        return Err(format!("{key_id}: active in DB, revoked in the TA"));
                    }
                    if row.generation != Some(st.generation) {
                        return Err(format!(
                            "{key_id}: DB generation {:?} != TA generation {}",
                            row.generation, st.generation
                        ));
                    }
                }
                AgentStatus::Revoked | AgentStatus::Failed | AgentStatus::Pending => {
                    if st.as_ref().is_some_and(|s| !s.revoked) {
                        return Err(format!(
                            "{key_id}: {:?} in DB but live in the TA",
                            row.status
                        ));
                    }
                }
            }
        }
        // Credentials.
        let live_kids: Vec<String> = t
            .call_async(&JwtSecretStatus {})
            .await
            .map_err(|e| format!("JwtSecretStatus: {e}"))?
            .into_iter()
            .map(|k| k.kid)
            .collect();
        for (key_id, known) in &model.agents {
            let (wallet, index) = key_parts(key_id);
            let row = rows
                .iter()
                .find(|r| r.wallet_id == wallet.to_uuid_string() && r.agent_index == index);
            let active = row.is_some_and(|r| r.status == AgentStatus::Active);
            for jwt in &known.jwts {
                let claims = kms_proto::jwt::parse(jwt).unwrap().claims;
                let is_current = active
                    && row.and_then(|r| r.credential_hash.as_deref()) == Some(&sha256_hex(jwt));
                let must_die = known.dead.contains(jwt)
                    || !active
                    || row.and_then(|r| r.generation) != Some(claims.gen);
                let kid = kms_proto::jwt::parse(jwt).unwrap().header.kid;
                if must_die {
                    if ta_accepts(&t, key_id, jwt)
                        .await
                        .map_err(|e| e.to_string())?
                    {
                        return Err(format!(
                            "{key_id}: the TA accepts a dead JWT (gen {})",
                            claims.gen
                        ));
                    }
                    let (s, _) = api
                        .sign(key_id, jwt, &[3; 32], &ACCOUNT)
                        .await
                        .map_err(|e| e.0)?;
                    if s == 200 {
                        return Err(format!(
                            "{key_id}: the companion accepts a dead JWT (gen {})",
                            claims.gen
                        ));
                    }
                } else if is_current && live_kids.contains(&kid) {
                    let (s, v) = api
                        .sign(key_id, jwt, &[4; 32], &ACCOUNT)
                        .await
                        .map_err(|e| e.0)?;
                    if s != 200 {
                        return Err(format!("{key_id}: the current JWT is refused: {s} {v}"));
                    }
                } else if !is_current {
                    // Not the DB's current credential: the companion refuses.
                    let (s, _) = api
                        .sign(key_id, jwt, &[5; 32], &ACCOUNT)
                        .await
                        .map_err(|e| e.0)?;
                    if s == 200 {
                        return Err(format!("{key_id}: the companion accepts a superseded JWT"));
                    }
                }
            }
        }
        // jwt_secret_meta agrees with the TA.
        let mut ta: Vec<(String, bool)> = t
            .call_async(&JwtSecretStatus {})
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|k| (k.kid, k.status == KidStatus::Current))
            .collect();
        let mut meta: Vec<(String, bool)> = db
            .list_jwt_secret_meta()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|m| m.status != kms_db::JwtSecretState::Retired)
            .map(|m| (m.kid, m.status == kms_db::JwtSecretState::Current))
            .collect();
        ta.sort();
        meta.sort();
        if ta != meta {
            return Err(format!("jwt_secret_meta {meta:?} != TA {ta:?}"));
        }
        // The audit log, anchored up to its end (as `kms-admin audit checkpoint` does; a
        // checkpoint of the running companion's task coming first is an error here, retried by
        // the caller's poll), verifies against the TA.
        let info = t
            .call_async(&AuditAnchor {})
            .await
            .map_err(|e| format!("AuditAnchor: {e}"))?;
        let tt = &t;
        db.anchor_audit_log(&info, |req| async move { tt.call_async(&req).await })
            .await
            .map_err(|e| format!("anchoring the audit log: {e}"))?;
        let info = t
            .call_async(&AuditAnchor {})
            .await
            .map_err(|e| format!("AuditAnchor: {e}"))?;
        let report = db.verify_anchored(&info).await.map_err(|e| e.to_string())?;
        if !report.ok {
            return Err(format!(
                "the audit log does not verify against the TA: {:?}",
                report.problems
            ));
        }
        Ok(())
    }
    .await;
    db.close().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_at_random_points_keeps_the_invariants() {
    let seed: u64 = std::env::var("KMS_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let rounds: u32 = std::env::var("KMS_FAULT_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    eprintln!("fault injection: seed {seed} ({rounds} rounds; re-run with KMS_FAULT_SEED={seed})");
    let mut rng = SmallRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let b = tokio::task::spawn_blocking(bins).await.unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let mut sim = procs::start_sim(&b.sim, &dir, &[]).unwrap();
    let api_key = procs::create_api_key(&b.companion, &dir).unwrap();
    let port = procs::free_port();
    let mut companion =
        procs::start_companion(&b.companion, &dir, port, &companion_opts()).unwrap();
    let api = Api::new(port, &api_key);
    let mut owners = Vec::new();
    for _ in 0..OWNERS {
        owners.push(api.register().await.unwrap());
    }
    let model = Arc::new(Mutex::new(Model::default()));
    let mut hook_crashes = 0;
    let mut kills = (0, 0);

    for round in 0..rounds {
        let ctx = |what: String| format!("seed {seed}, round {round}: {what}");
        // Arm the sealed-write crash hook in some rounds: restart ta-sim
        // with it, remembering the sealed file it must leave untouched.
        let armed = rng.gen_bool(0.3);
        let sealed = dir.join("ta").join("sealed.bin");
        let before = if armed {
            sim.kill9();
            let before = std::fs::read(&sealed).ok();
            sim = procs::start_sim(&b.sim, &dir, &[("TA_SIM_CRASH_BEFORE_RENAME", "1")])
                .unwrap_or_else(|e| panic!("{}", ctx(e)));
            before
        } else {
            None
        };
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = owners
            .drain(..)
            .enumerate()
            .map(|(i, o)| {
                tokio::spawn(owner_loop(
                    api.clone(),
                    o,
                    model.clone(),
                    stop.clone(),
                    seed ^ (u64::from(round) << 8) ^ i as u64,
                ))
            })
            .collect();
        // Occasionally an operator's forced rotation straight in the TA (as
        // kms-admin does); the companion's tick brings the meta table along.
        if rng.gen_bool(0.2) {
            let _ = tee(&dir)
                .call_async(&kms_proto::JwtRotateSecret {
                    mode: RotationMode::Force,
                })
                .await;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..1500))).await;
        let victim = rng.gen_range(0..5);
        let (kill_companion, kill_sim) = match victim {
            0 | 1 => (true, false),
            2 | 3 => (false, true),
            _ => (true, true),
        };
        if kill_companion {
            companion.kill9();
            kills.0 += 1;
        }
        if kill_sim {
            sim.kill9();
            kills.1 += 1;
        }
        // Let the survivors see the failure, then stop the owners.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..300))).await;
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            owners.push(t.await.unwrap());
        }
        if armed {
            let hooked = sim.exited();
            if hooked && !kill_sim {
                hook_crashes += 1;
                // The hook aborted a sealed write: the previous file stands.
                assert_eq!(
                    std::fs::read(&sealed).ok(),
                    before,
                    "{}",
                    ctx("a crash inside a sealed write changed sealed.bin".into())
                );
            }
            // Never keep the armed simulator beyond its round.
            sim.kill9();
        }
        // Restart what is down (the sealed store must open).
        if sim.exited() {
            sim = procs::start_sim(&b.sim, &dir, &[])
                .unwrap_or_else(|e| panic!("{}", ctx(format!("sealed store does not open: {e}"))));
        }
        if companion.exited() {
            companion = procs::start_companion(&b.companion, &dir, port, &companion_opts())
                .unwrap_or_else(|e| panic!("{}", ctx(e)));
        }
        // A surviving companion reconciles in the background once the TA
        // is back, and syncs the meta table on its next tick: poll.
        let mut last = String::new();
        let mut ok = false;
        for _ in 0..100 {
            let snapshot = {
                let m = model.lock().unwrap();
                Model {
                    agents: m.agents.clone(),
                }
            };
            match check(&dir, &api, &snapshot).await {
                Ok(()) => {
                    ok = true;
                    break;
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(ok, "{}", ctx(format!("invariant broken: {last}")));
    }
    let n = model.lock().unwrap().agents.len();
    eprintln!(
        "fault injection: {rounds} rounds, {n} agents, companion killed {} times, ta-sim killed {} times, {hook_crashes} crashes inside a sealed write; all invariants held",
        kills.0, kills.1
    );
    drop(companion);
    drop(sim);
    let _: Option<Proc> = None;
}
