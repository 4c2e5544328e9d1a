//! Prometheus metrics in the text exposition format, without a metrics
//! framework: request counts by route and status, TEE call latency
//! histograms by command, and signature counts by kind.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The registry.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    tee: Mutex<BTreeMap<(&'static str, &'static str), Histogram>>,
    signatures: Mutex<BTreeMap<&'static str, u64>>,
    audit_dropped: AtomicU64,
    audit_commits: AtomicU64,
    sign_batches: AtomicU64,
    sign_batched: AtomicU64,
    audit_committed_events: AtomicU64,
    audit_lost: AtomicU64,
    audit_withheld: AtomicU64,
    audit_checkpoints: Mutex<BTreeMap<&'static str, u64>>,
    audit_anchored_seq: AtomicU64,
    rotation_ticks: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Count a finished request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((method.to_owned(), route.to_owned(), status))
                .or_default() += 1;
        }
    }

    /// Record a TEE call's latency and outcome (`ok`, `ta_error`,
    /// `unavailable`).
    pub fn observe_tee(&self, command: &'static str, outcome: &'static str, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Ok(mut m) = self.tee.lock() {
            let h = m.entry((command, outcome)).or_default();
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.counts[i] += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        }
    }

    /// Count a signature made (`agent_userop`, `hash`, `message`,
    /// `transaction`).
    pub fn count_signature(&self, kind: &'static str) {
        if let Ok(mut m) = self.signatures.lock() {
            *m.entry(kind).or_default() += 1;
        }
    }

    /// Count one `SignAgentUserOps` call carrying `requests` agent signatures.
    pub fn count_sign_batch(&self, requests: u64) {
        self.sign_batches.fetch_add(1, Ordering::Relaxed);
        self.sign_batched.fetch_add(requests, Ordering::Relaxed);
    }

    /// (`SignAgentUserOps` calls, agent signatures they carried) so far.
    pub fn sign_batches(&self) -> (u64, u64) {
        (
            self.sign_batches.load(Ordering::Relaxed),
            self.sign_batched.load(Ordering::Relaxed),
        )
    }

    /// Count an audit event that could not be queued.
    pub fn count_audit_dropped(&self) {
        self.audit_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Count one committed audit batch of `events` events.
    pub fn count_audit_commit(&self, events: u64) {
        self.audit_commits.fetch_add(1, Ordering::Relaxed);
        self.audit_committed_events
            .fetch_add(events, Ordering::Relaxed);
    }

    /// Count audit events lost (their batch failed through every retry).
    pub fn count_audit_lost(&self, events: u64) {
        self.audit_lost.fetch_add(events, Ordering::Relaxed);
    }

    /// Count a signature withheld because its audit event could not be committed.
    pub fn count_audit_withheld(&self) {
        self.audit_withheld.fetch_add(1, Ordering::Relaxed);
    }

    /// Count an audit checkpoint run (`ok`, `error`) and, when it succeeded, the row the TA's
    /// anchor is at.
    pub fn observe_audit_checkpoint(&self, outcome: &'static str, anchored_seq: Option<u64>) {
        if let Ok(mut m) = self.audit_checkpoints.lock() {
            *m.entry(outcome).or_default() += 1;
        }
        if let Some(seq) = anchored_seq {
            self.audit_anchored_seq.store(seq, Ordering::Relaxed);
        }
    }

    /// Count a tick of the JWT rotation task by what this replica did: `ran` (it holds the
    /// rotation lease), `skipped` (another replica holds it), `error` (the lease could not be
    /// read).
    pub fn count_rotation_tick(&self, outcome: &'static str) {
        if let Ok(mut m) = self.rotation_ticks.lock() {
            *m.entry(outcome).or_default() += 1;
        }
    }

    /// (batches committed, events committed) so far.
    pub fn audit_commits(&self) -> (u64, u64) {
        (
            self.audit_commits.load(Ordering::Relaxed),
            self.audit_committed_events.load(Ordering::Relaxed),
        )
    }

    /// Number of signatures of `kind` made so far.
    pub fn signatures(&self, kind: &str) -> u64 {
        self.signatures
            .lock()
            .map(|m| m.get(kind).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP kms_http_requests_total HTTP requests by method, route and status.\n");
        out.push_str("# TYPE kms_http_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((method, route, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "kms_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
        }
        out.push_str(
            "# HELP kms_tee_call_duration_seconds Latency of TEE calls by command and outcome.\n",
        );
        out.push_str("# TYPE kms_tee_call_duration_seconds histogram\n");
        if let Ok(m) = self.tee.lock() {
            for ((cmd, outcome), h) in m.iter() {
                let labels = format!("command=\"{cmd}\",outcome=\"{outcome}\"");
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "kms_tee_call_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "kms_tee_call_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "kms_tee_call_duration_seconds_sum{{{labels}}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "kms_tee_call_duration_seconds_count{{{labels}}} {}",
                    h.count
                );
            }
        }
        out.push_str("# HELP kms_signatures_total Signatures made by the TA, by kind.\n");
        out.push_str("# TYPE kms_signatures_total counter\n");
        if let Ok(m) = self.signatures.lock() {
            for (kind, n) in m.iter() {
                let _ = writeln!(out, "kms_signatures_total{{kind=\"{kind}\"}} {n}");
            }
        }
        out.push_str(
            "# HELP kms_audit_events_dropped_total Audit events that could not be queued.\n",
        );
        out.push_str("# TYPE kms_audit_events_dropped_total counter\n");
        let _ = writeln!(
            out,
            "kms_audit_events_dropped_total {}",
            self.audit_dropped.load(Ordering::Relaxed)
        );
        let counters = [
            (
                "kms_tee_sign_batches_total",
                "SignAgentUserOps calls: agent signatures sent to the TA together.",
                &self.sign_batches,
            ),
            (
                "kms_tee_sign_batched_requests_total",
                "Agent signatures sent in SignAgentUserOps calls (divided by \
                 kms_tee_sign_batches_total: signatures per call).",
                &self.sign_batched,
            ),
            (
                "kms_audit_commits_total",
                "Audit batches committed (one transaction each; group commit).",
                &self.audit_commits,
            ),
            (
                "kms_audit_committed_events_total",
                "Audit events committed (divided by kms_audit_commits_total: events per commit).",
                &self.audit_committed_events,
            ),
            (
                "kms_audit_events_lost_total",
                "Audit events whose batch failed through every retry.",
                &self.audit_lost,
            ),
            (
                "kms_audit_signatures_withheld_total",
                "Signatures not released because their audit event could not be committed.",
                &self.audit_withheld,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
        out.push_str(
            "# HELP kms_audit_checkpoints_total Audit checkpoint runs (TA-signed anchors) by outcome.\n",
        );
        out.push_str("# TYPE kms_audit_checkpoints_total counter\n");
        if let Ok(m) = self.audit_checkpoints.lock() {
            for (outcome, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "kms_audit_checkpoints_total{{outcome=\"{outcome}\"}} {n}"
                );
            }
        }
        out.push_str(
            "# HELP kms_audit_anchored_seq The last audit row the TA's anchor covers (as of the last successful checkpoint run).\n",
        );
        out.push_str("# TYPE kms_audit_anchored_seq gauge\n");
        let _ = writeln!(
            out,
            "kms_audit_anchored_seq {}",
            self.audit_anchored_seq.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP kms_jwt_rotation_ticks_total Ticks of the JWT rotation task by outcome (ran: this replica holds the rotation lease; skipped: another one does).\n",
        );
        out.push_str("# TYPE kms_jwt_rotation_ticks_total counter\n");
        if let Ok(m) = self.rotation_ticks.lock() {
            for (outcome, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "kms_jwt_rotation_ticks_total{{outcome=\"{outcome}\"}} {n}"
                );
            }
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.observe_request("POST", "/kms/sign-agent", 200);
        m.observe_request("POST", "/kms/sign-agent", 200);
        m.observe_tee("SignAgentUserOp", "ok", Duration::from_millis(3));
        m.count_signature("agent_userop");
        let t = m.render();
        assert!(t.contains(
            "kms_http_requests_total{method=\"POST\",route=\"/kms/sign-agent\",status=\"200\"} 2"
        ));
        assert!(t.contains(
            "kms_tee_call_duration_seconds_bucket{command=\"SignAgentUserOp\",outcome=\"ok\",le=\"0.005\"} 1"
        ));
        assert!(t.contains(
            "kms_tee_call_duration_seconds_bucket{command=\"SignAgentUserOp\",outcome=\"ok\",le=\"0.001\"} 0"
        ));
        assert!(t.contains("kms_signatures_total{kind=\"agent_userop\"} 1"));
        assert_eq!(m.signatures("agent_userop"), 1);
    }
}
