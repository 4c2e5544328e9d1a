//! Agent signatures gathered into one TA call (`SignAgentUserOps`) when many agents sign at once.
//!
//! Every `SignAgentUserOp` of the companion goes through one [`SignBatcher`]. At most `parallel`
//! calls are at the TA at a time (one per TA session; by default one per core, so that the TA
//! signs on every core). A request that finds a call free makes it at once, in its own task, as
//! the plain `SignAgentUserOp` it always was; while all are out, new requests wait in a queue,
//! and a dispatcher task sends every request that waited (up to
//! [`kms_proto::MAX_AGENT_SIGNATURES_PER_CALL`]) in the next call that comes free. So under load
//! one socket exchange (on the board: one world switch) carries many signatures instead of one
//! each, and without load nothing is added.
//!
//! Nothing is weaker for it. The TA checks each request of a batch exactly as it checks one alone
//! (the credential's MAC, claims, generation, revocation and lifetime, against the state the
//! requests before it left), and answers each on its own: one refused credential refuses its own
//! request only. A batch is never split or re-sent: if the call fails after its bytes may have
//! reached the TA, every request of it fails with that error (`maybe_executed`), as a lone call
//! does. A batch runs in a task of its own, so a request given up by its caller (a closed
//! connection, a timeout) does not cut short the others.
//!
//! Metrics: every request is counted as a `SignAgentUserOp` TA call with its own outcome (so the
//! count says how many signatures reached the TA), and each call of two or more as a
//! `SignAgentUserOps` (and in `kms_tee_sign_batches_total` and
//! `kms_tee_sign_batched_requests_total`: their ratio is the mean batch).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use kms_proto::{
    AgentSignature, CommandId, SignAgentUserOp, SignAgentUserOps, MAX_AGENT_SIGNATURES_PER_CALL,
};
use kms_tee_client::TeeError;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::Tee;

/// What one request adds to a call's encoding besides its credential (ids, hash, account,
/// lengths), rounded up.
const REQUEST_OVERHEAD: usize = 128;

/// Most bytes of requests in one call: half the TA's message limit.
const BATCH_BYTES: usize = kms_proto::MAX_MESSAGE_LEN / 2;

/// One request waiting for its batch, and where its answer goes.
struct Queued {
    req: SignAgentUserOp,
    answer: oneshot::Sender<Result<AgentSignature, TeeError>>,
}

/// The queue of agent signatures and its dispatcher (started with the first request that
/// waits).
pub(super) struct SignBatcher {
    max: usize,
    /// One permit per call that may be at the TA at once.
    free: Arc<Semaphore>,
    queue: OnceLock<mpsc::UnboundedSender<Queued>>,
}

impl SignBatcher {
    /// A batcher of at most `max` requests per call (1 to
    /// [`MAX_AGENT_SIGNATURES_PER_CALL`]) and at most `parallel` calls at the TA at once (0: one
    /// per core, and at least two, so that one call can be on its way while another is signed).
    /// With `max` 1 there is no batching and no bound: each request is its own call at once.
    pub(super) fn new(max: usize, parallel: usize) -> Self {
        let parallel = match parallel {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .max(2),
            n => n,
        };
        Self {
            max: max.clamp(1, MAX_AGENT_SIGNATURES_PER_CALL),
            free: Arc::new(Semaphore::new(parallel)),
            queue: OnceLock::new(),
        }
    }

    /// Sign `req`: at once in this task while a call is free (a lone request, no hand-off),
    /// else queued for the next batch. `tee` makes the calls (a client without this batcher:
    /// the dispatcher must not keep the batcher, and with it its own queue, alive).
    pub(super) async fn sign(
        &self,
        tee: impl FnOnce() -> Tee,
        req: SignAgentUserOp,
        caller: &Tee,
    ) -> Result<AgentSignature, TeeError> {
        // Batches of one: each request its own call, as many at once as come (no queue).
        if self.max == 1 {
            return caller.try_call(&req).await;
        }
        // The semaphore is fair: a permit freed while the dispatcher waits goes to it, so this
        // cannot overtake requests already queued.
        if let Ok(permit) = self.free.clone().try_acquire_owned() {
            let r = caller.try_call(&req).await;
            drop(permit);
            return r;
        }
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(dispatch(rx, tee(), self.max, self.free.clone()));
            tx
        });
        let (answer, answered) = oneshot::channel();
        queue
            .send(Queued { req, answer })
            .map_err(|_| TeeError::Unavailable {
                reason: "the TA call dispatcher has stopped".to_owned(),
                maybe_executed: false,
            })?;
        answered.await.unwrap_or_else(|_| {
            Err(TeeError::Unavailable {
                reason: "the TA call task ended without an answer".to_owned(),
                maybe_executed: true,
            })
        })
    }
}

/// Take batches out of the queue as calls to the TA come free; ends when every
/// [`SignBatcher`] handle is gone.
async fn dispatch(
    mut queue: mpsc::UnboundedReceiver<Queued>,
    tee: Tee,
    max: usize,
    free: Arc<Semaphore>,
) {
    // A request that did not fit in the last call starts the next one.
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(q) => q,
            None => match queue.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        let Ok(permit) = free.clone().acquire_owned().await else {
            return;
        };
        // Every request that waited for the permit goes in this call, within `max` and within
        // half the TA's message limit (a request is its credential and under 100 bytes more;
        // only current credentials, which the TA minted, get this far).
        let mut bytes = first.req.jwt.len() + REQUEST_OVERHEAD;
        let mut batch = vec![first];
        let mut next = None;
        while batch.len() < max {
            match queue.try_recv() {
                Ok(q) if bytes + q.req.jwt.len() + REQUEST_OVERHEAD <= BATCH_BYTES => {
                    bytes += q.req.jwt.len() + REQUEST_OVERHEAD;
                    batch.push(q);
                }
                Ok(q) => {
                    next = Some(q);
                    break;
                }
                Err(_) => break,
            }
        }
        let tee = tee.clone();
        tokio::spawn(async move {
            run(&tee, batch).await;
            drop(permit);
        });
        carried = next;
    }
}

/// One batch: a lone request as `SignAgentUserOp`, more as one `SignAgentUserOps`.
async fn run(tee: &Tee, mut batch: Vec<Queued>) {
    if batch.len() == 1 {
        let Queued { req, answer } = batch.remove(0);
        let _ = answer.send(tee.try_call(&req).await);
        return;
    }
    let n = batch.len();
    let (requests, answers): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|q| (q.req, q.answer)).unzip();
    let started = Instant::now();
    tee.metrics.count_sign_batch(n as u64);
    let answered = tee.try_call(&SignAgentUserOps { requests }).await;
    let elapsed = started.elapsed();
    let each: Vec<Result<AgentSignature, TeeError>> = match answered {
        Ok(each) if each.len() == n => each.into_iter().map(|r| r.map_err(TeeError::Ta)).collect(),
        // The TA answered another number of requests than it was sent: none can be trusted.
        Ok(_) => vec![Err(TeeError::Protocol(kms_proto::ProtoError::Malformed)); n],
        Err(e) => vec![Err(e); n],
    };
    for (answer, r) in answers.into_iter().zip(each) {
        tee.observe(CommandId::SignAgentUserOp, &r, elapsed);
        let _ = answer.send(r);
    }
}

#[cfg(test)]
mod tests {
    //! The batcher's own logic against a scripted transport: which calls it makes, and where each
    //! answer goes. (That the TA answers a batch exactly as it answers each request alone is the
    //! TA core's test; the HTTP path with the real ta-sim is in the server's tests.)

    use super::*;
    use crate::tee::SignError;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Mutex;
    use std::task::Poll;

    use kms_proto::{
        decode_request, encode_response, JwtError, SignAgentUserOps, TaError, WalletId,
    };
    use kms_tee_client::{TeeClient, TeeTransport};

    /// The agent index the scripted TA refuses.
    const REVOKED: u32 = 7;

    /// What the scripted transport does with a `SignAgentUserOps` call.
    #[derive(Clone, Copy)]
    enum Batches {
        /// Answer each request.
        Answer,
        /// Answer one request fewer than were sent.
        DropOne,
        /// Fail the call after it may have reached the TA.
        Lose,
    }

    /// A transport that records each call's command and number of requests, holds the first
    /// call until `open` is sent, and answers each request with its own hash and index.
    struct Scripted {
        calls: Mutex<Vec<(CommandId, usize)>>,
        entered: Mutex<Option<std::sync::mpsc::Sender<()>>>,
        gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
        batches: Batches,
    }

    fn answer(r: &SignAgentUserOp) -> Result<AgentSignature, TaError> {
        if r.agent_index == REVOKED {
            return Err(TaError::Jwt(JwtError::AgentRevoked));
        }
        Ok(AgentSignature {
            signature: r.user_op_hash.to_vec(),
            agent_address: [r.agent_index as u8; 20],
        })
    }

    impl TeeTransport for Scripted {
        fn invoke(&self, cmd: u32, input: &[u8]) -> Result<Vec<u8>, TeeError> {
            if let Some(entered) = self.entered.lock().unwrap().take() {
                let gate = self.gate.lock().unwrap().take().unwrap();
                entered.send(()).unwrap();
                gate.recv().unwrap();
            }
            if cmd == CommandId::SignAgentUserOp.as_u32() {
                let r = decode_request::<SignAgentUserOp>(input).unwrap();
                self.calls
                    .lock()
                    .unwrap()
                    .push((CommandId::SignAgentUserOp, 1));
                return Ok(encode_response(answer(&r).as_ref()));
            }
            assert_eq!(cmd, CommandId::SignAgentUserOps.as_u32());
            let b = decode_request::<SignAgentUserOps>(input).unwrap();
            self.calls
                .lock()
                .unwrap()
                .push((CommandId::SignAgentUserOps, b.requests.len()));
            let mut each: Vec<_> = b.requests.iter().map(answer).collect();
            match self.batches {
                Batches::Answer => {}
                Batches::DropOne => {
                    each.pop();
                }
                Batches::Lose => {
                    return Err(TeeError::Unavailable {
                        reason: "session lost".into(),
                        maybe_executed: true,
                    })
                }
            }
            Ok(encode_response(Ok(&each)))
        }
    }

    fn request(index: u32, n: u8) -> SignAgentUserOp {
        SignAgentUserOp {
            wallet_id: WalletId([1; 16]),
            agent_index: index,
            jwt: "a.b.c".into(),
            user_op_hash: [n; 32],
            account: [0xAA; 20],
        }
    }

    /// Poll `f` once (a request is queued by its first poll).
    async fn poll_once<F: Future + ?Sized>(f: Pin<&mut F>) {
        let mut f = Some(f);
        std::future::poll_fn(move |cx| {
            let _ = f.take().unwrap().poll(cx);
            Poll::Ready(())
        })
        .await
    }

    type Answer = Pin<Box<dyn Future<Output = Result<AgentSignature, SignError>> + Send>>;

    /// One lone request held at the TA, then `later` (index, hash) requests queued behind it;
    /// returns the first answer, the later answers in order, the transport's calls and the tee.
    async fn held_then(
        max: usize,
        batches: Batches,
        later: &[(u32, u8)],
    ) -> (
        Result<AgentSignature, SignError>,
        Vec<Result<AgentSignature, SignError>>,
        Vec<(CommandId, usize)>,
        Tee,
    ) {
        let later = later.iter().map(|&(i, n)| request(i, n)).collect();
        held_then_requests(max, batches, later).await
    }

    /// [`held_then`] with the later requests given whole.
    async fn held_then_requests(
        max: usize,
        batches: Batches,
        later: Vec<SignAgentUserOp>,
    ) -> (
        Result<AgentSignature, SignError>,
        Vec<Result<AgentSignature, SignError>>,
        Vec<(CommandId, usize)>,
        Tee,
    ) {
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (open, gate) = std::sync::mpsc::channel();
        let transport = Arc::new(Scripted {
            calls: Mutex::default(),
            entered: Mutex::new(Some(entered_tx)),
            gate: Mutex::new(Some(gate)),
            batches,
        });
        let tee = Tee::standalone(TeeClient::new(transport.clone())).with_sign_batching(max, 1);
        let first = tokio::spawn({
            let tee = tee.clone();
            async move { tee.agent_signature(request(0, 100)).await }
        });
        tokio::task::spawn_blocking(move || entered.recv().unwrap())
            .await
            .unwrap();
        let mut waiting: Vec<Answer> = later
            .into_iter()
            .map(|r| {
                let tee = tee.clone();
                Box::pin(async move { tee.agent_signature(r).await }) as Answer
            })
            .collect();
        for f in &mut waiting {
            poll_once(f.as_mut()).await;
        }
        open.send(()).unwrap();
        let first = first.await.unwrap();
        let mut later = Vec::new();
        for f in waiting {
            later.push(f.await);
        }
        let calls = transport.calls.lock().unwrap().clone();
        (first, later, calls, tee)
    }

    fn signed(r: &Result<AgentSignature, SignError>) -> (Vec<u8>, [u8; 20]) {
        let s = r.as_ref().expect("signed");
        (s.signature.clone(), s.agent_address)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_waiting_behind_a_call_go_together_and_each_gets_its_own_answer() {
        let later = [(1, 1), (2, 2), (REVOKED, 3), (3, 4), (REVOKED, 5), (4, 6)];
        let (first, answers, calls, tee) = held_then(64, Batches::Answer, &later).await;
        assert_eq!(signed(&first), (vec![100; 32], [0; 20]));
        assert_eq!(
            calls,
            vec![
                (CommandId::SignAgentUserOp, 1),
                (CommandId::SignAgentUserOps, 6)
            ]
        );
        for ((index, n), a) in later.iter().zip(&answers) {
            if *index == REVOKED {
                assert!(
                    matches!(
                        a,
                        Err(SignError::Tee(TeeError::Ta(TaError::Jwt(
                            JwtError::AgentRevoked
                        ))))
                    ),
                    "{a:?}"
                );
            } else {
                assert_eq!(signed(a), (vec![*n; 32], [*index as u8; 20]));
            }
        }
        assert_eq!(tee.metrics.sign_batches(), (1, 6));
        let text = tee.metrics.render();
        assert!(text.contains(
            "kms_tee_call_duration_seconds_count{command=\"SignAgentUserOp\",outcome=\"ok\"} 5"
        ));
        assert!(text.contains(
            "kms_tee_call_duration_seconds_count{command=\"SignAgentUserOp\",outcome=\"ta_error\"} 2"
        ));
        assert!(text.contains(
            "kms_tee_call_duration_seconds_count{command=\"SignAgentUserOps\",outcome=\"ok\"} 1"
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_takes_at_most_max_requests() {
        let later: Vec<(u32, u8)> = (10..=18).map(|n| (n, n as u8)).collect();
        let (_, answers, calls, _) = held_then(4, Batches::Answer, &later).await;
        assert_eq!(
            calls,
            vec![
                (CommandId::SignAgentUserOp, 1),
                (CommandId::SignAgentUserOps, 4),
                (CommandId::SignAgentUserOps, 4),
                (CommandId::SignAgentUserOp, 1),
            ]
        );
        for ((index, n), a) in later.iter().zip(&answers) {
            assert_eq!(signed(a), (vec![*n; 32], [*index as u8; 20]));
        }
        // Batches of 1: each alone, and none waits behind the held call.
        let (_, answers, calls, tee) = held_then(1, Batches::Answer, &later[..3]).await;
        assert_eq!(calls, vec![(CommandId::SignAgentUserOp, 1); 4]);
        assert_eq!(answers.iter().filter(|a| a.is_ok()).count(), 3);
        assert_eq!(tee.metrics.sign_batches(), (0, 0));
    }

    /// Large credentials: a call holds at most half the TA's message limit of requests; the one
    /// that does not fit starts the next call.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_stays_within_half_the_message_limit() {
        let big = "x".repeat(40 * 1024);
        let later: Vec<SignAgentUserOp> = (10..=18)
            .map(|n| SignAgentUserOp {
                jwt: big.clone(),
                ..request(n, n as u8)
            })
            .collect();
        assert!(4 * (big.len() + REQUEST_OVERHEAD) > BATCH_BYTES);
        assert!(3 * (big.len() + REQUEST_OVERHEAD) <= BATCH_BYTES);
        let (_, answers, calls, _) = held_then_requests(64, Batches::Answer, later).await;
        assert_eq!(
            calls,
            vec![
                (CommandId::SignAgentUserOp, 1),
                (CommandId::SignAgentUserOps, 3),
                (CommandId::SignAgentUserOps, 3),
                (CommandId::SignAgentUserOps, 3),
            ]
        );
        for (n, a) in (10..=18u32).zip(&answers) {
            assert_eq!(signed(a), (vec![n as u8; 32], [n as u8; 20]));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_call_fails_each_of_its_requests_and_nothing_is_resent() {
        let later = [(1, 1), (2, 2), (3, 3)];
        let (first, answers, calls, tee) = held_then(64, Batches::Lose, &later).await;
        assert!(first.is_ok());
        for a in &answers {
            assert!(
                matches!(
                    a,
                    Err(SignError::Tee(TeeError::Unavailable {
                        maybe_executed: true,
                        ..
                    }))
                ),
                "{a:?}"
            );
        }
        assert_eq!(calls.len(), 2, "the batch is not sent again: {calls:?}");
        assert!(
            tee.reconcile.is_dirty(),
            "a call that may have run is reconciled"
        );

        // An answer with another number of results than requests: none is trusted.
        let (_, answers, _, _) = held_then(64, Batches::DropOne, &later).await;
        for a in &answers {
            assert!(
                matches!(a, Err(SignError::Tee(TeeError::Protocol(_)))),
                "{a:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_reaches_the_ta_while_it_is_found_rolled_back() {
        let (entered_tx, _entered) = std::sync::mpsc::channel();
        let (_open, gate) = std::sync::mpsc::channel();
        let transport = Arc::new(Scripted {
            calls: Mutex::default(),
            entered: Mutex::new(Some(entered_tx)),
            gate: Mutex::new(Some(gate)),
            batches: Batches::Answer,
        });
        let tee = Tee::standalone(TeeClient::new(transport.clone()));
        tee.reconcile.set_rolled_back("test".into());
        let r = tee.agent_signature(request(1, 1)).await;
        assert!(matches!(r, Err(SignError::RolledBack(_))), "{r:?}");
        assert!(transport.calls.lock().unwrap().is_empty());
    }
}
