//! The anchored audit log: checkpoints signed in the TA, and the verification of the whole log
//! against them (see [`kms_proto::audit`] for what the TA chains and signs).
//!
//! * [`Db::anchor_audit_log`] brings the TA's anchor up to the end of the log: it stores the
//!   TA's last checkpoint if this table lacks it (a crash between the TA's signature and the
//!   insert), checks that the rows after it chain from its row head, and has the TA sign them,
//!   [`MAX_CHECKPOINT_ROWS`] at a time, each checkpoint stored in `audit_checkpoints`.
//! * [`Db::verify_anchored`] recomputes the chain and the anchor over every row and checks them
//!   against every stored checkpoint (signature by the TA's audit key, taken from the TA) and
//!   against the TA's own last checkpoint: a log shorter than the TA anchored (tail deleted), a
//!   different anchor at the TA's row (rewritten, even consistently re-hashed), a checkpoint
//!   missing from the table or not signed by the TA: each is a [`AuditProblem`] with a stable
//!   `code`. Rows after the TA's last checkpoint are not anchored yet (counted, not judged).
//!
//! After `kms-admin accept-restore` the TA's anchor is the restored copy's: it numbers its
//! checkpoints again from there, and the ones it signed before the restore (past its last one,
//! or under a number now used twice) are kept beside the new ones. They still carry the TA's
//! signature and are checked against the log; the report notes the restore
//! (`ta_anchor_restored`) instead of failing, since nothing in them is wrong, but the TA no
//! longer pins the rows they cover.

use std::collections::BTreeMap;
use std::future::Future;

use k256::ecdsa::signature::hazmat::PrehashVerifier;
use kms_proto::audit::{
    anchor_step, checkpoint_digest, key_id, ANCHOR_GENESIS, MAX_CHECKPOINT_ROWS,
};
use kms_proto::{AuditAnchorInfo, AuditCheckpoint, SignedCheckpoint, B256};
use serde::Serialize;

use crate::audit::{row_fault, GENESIS_HASH};
use crate::{AuditTail, Db, DbError, Result};

/// A checkpoint as stored in `audit_checkpoints` (hex fields).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredCheckpoint {
    /// The TA's checkpoint number.
    pub idx: i64,
    /// The last row it covers.
    pub seq: i64,
    /// Hex anchor over rows `1..=seq`.
    pub anchor: String,
    /// Hex hash of row `seq`.
    pub row_head: String,
    /// TA clock when signed.
    pub ta_time: i64,
    /// Hex id of the audit key.
    pub key_id: String,
    /// Hex `r ‖ s ‖ v`.
    pub signature: String,
    /// When the row was written (host clock).
    pub created_at: i64,
}

fn b256(hex_str: &str) -> Option<B256> {
    hex::decode(hex_str).ok()?.try_into().ok()
}

impl StoredCheckpoint {
    /// The row for `cp`, written at `now`.
    pub fn from_signed(cp: &SignedCheckpoint, now: i64) -> Self {
        Self {
            idx: i64::try_from(cp.index).unwrap_or(i64::MAX),
            seq: i64::try_from(cp.seq).unwrap_or(i64::MAX),
            anchor: hex::encode(cp.anchor),
            row_head: hex::encode(cp.row_head),
            ta_time: i64::try_from(cp.ta_time).unwrap_or(i64::MAX),
            key_id: hex::encode(cp.key_id),
            signature: hex::encode(&cp.signature),
            created_at: now,
        }
    }

    /// The checkpoint it holds (`None` if a field is not what the TA writes).
    pub fn to_signed(&self) -> Option<SignedCheckpoint> {
        Some(SignedCheckpoint {
            index: u64::try_from(self.idx).ok()?,
            seq: u64::try_from(self.seq).ok()?,
            anchor: b256(&self.anchor)?,
            row_head: b256(&self.row_head)?,
            ta_time: u64::try_from(self.ta_time).ok()?,
            key_id: b256(&self.key_id)?,
            signature: hex::decode(&self.signature).ok()?,
        })
    }
}

/// Whether `cp` is signed by `public_key` (SEC1) and names its key id.
pub fn checkpoint_signed_by(cp: &SignedCheckpoint, public_key: &[u8]) -> bool {
    let Ok(vk) = k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key) else {
        return false;
    };
    let Some(sig) = cp
        .signature
        .get(..64)
        .and_then(|s| k256::ecdsa::Signature::from_slice(s).ok())
    else {
        return false;
    };
    cp.signature.len() == 65
        && cp.key_id == key_id(public_key)
        && vk.verify_prehash(&checkpoint_digest(cp), &sig).is_ok()
}

/// What [`Db::insert_audit_checkpoint`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// Stored.
    New,
    /// The same checkpoint was already stored.
    Present,
    /// Stored beside another checkpoint of the same number (the TA's state was restored).
    Fork,
}

/// Why [`Db::anchor_audit_log`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError<E> {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The rows after the TA's anchor do not chain from it: nothing was sent to the TA (the TA
    /// would anchor a broken chain forever). `kms-admin audit verify` says more.
    #[error("the audit log does not chain from the TA's anchor at row {seq}: {reason}; not anchoring it")]
    Chain {
        /// The first row that does not chain.
        seq: i64,
        /// Why.
        reason: String,
    },
    /// The TA refused or could not be reached.
    #[error("TA: {0}")]
    Ta(E),
}

/// What [`Db::anchor_audit_log`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Anchored {
    /// Checkpoints the TA signed in this call (each stored).
    pub signed: Vec<SignedCheckpoint>,
    /// Whether the TA's last checkpoint was missing from the table and was stored now.
    pub recovered: bool,
    /// Checkpoints stored beside another of the same number (after a restore of the TA).
    pub forks: u64,
    /// The row the TA's anchor is at now.
    pub seq: u64,
    /// Rows whose hashes came from the writer's memory ([`AuditTail`]) instead of the table.
    pub from_memory: u64,
}

/// One finding of [`Db::verify_anchored`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditProblem {
    /// Stable code: `chain_broken`, `log_truncated`, `anchor_mismatch`, `checkpoint_missing`,
    /// `checkpoint_bad_signature`, `checkpoint_mismatch`, `checkpoint_malformed`,
    /// `ta_anchor_invalid`; as a note, `ta_anchor_restored`.
    pub code: &'static str,
    /// What it means, for people.
    pub message: String,
    /// The row concerned, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// The checkpoint concerned (the first of a range), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<i64>,
    /// How many checkpoints from `index` (a range of missing ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
}

/// The TA's anchor as [`Db::verify_anchored`] used it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaAnchorSummary {
    /// Hex SEC1 compressed audit public key (`None`: the TA has no audit key yet).
    pub public_key: Option<String>,
    /// Hex key id.
    pub key_id: Option<String>,
    /// The TA's last checkpoint: number, row, hex anchor, hex row head, TA time.
    pub index: u64,
    /// Its row (0: nothing anchored yet).
    pub seq: u64,
    /// Its anchor (hex).
    pub anchor: Option<String>,
    /// Its row head (hex).
    pub row_head: Option<String>,
    /// When the TA signed it (TA clock, unix seconds).
    pub ta_time: Option<u64>,
}

/// The result of [`Db::verify_anchored`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditReport {
    /// No problem found.
    pub ok: bool,
    /// Rows in the log.
    pub rows: u64,
    /// The last row's seq (0 for an empty log).
    pub last_seq: i64,
    /// Rows covered by the TA's last checkpoint (`seq` 1 to `anchoredSeq`).
    pub anchored_seq: u64,
    /// Rows after it: not anchored yet (the next checkpoint covers them).
    pub unanchored_rows: u64,
    /// Checkpoints stored in the table.
    pub checkpoints: u64,
    /// The TA's anchor.
    pub ta: TaAnchorSummary,
    /// What does not verify (empty when `ok`).
    pub problems: Vec<AuditProblem>,
    /// What is worth knowing but verifies (`ta_anchor_restored`: the TA's state was restored
    /// after it signed checkpoints stored here).
    pub notes: Vec<AuditProblem>,
}

fn problem(code: &'static str, message: String) -> AuditProblem {
    AuditProblem {
        code,
        message,
        seq: None,
        index: None,
        count: None,
    }
}

impl Db {
    /// Store a checkpoint the TA signed. Storing one already stored changes nothing
    /// ([`Stored::Present`]). A different checkpoint of the same TA (audit key id) under a number
    /// already stored is stored beside it ([`Stored::Fork`]): the TA numbers again from an older
    /// checkpoint only after its state was restored (`kms-admin accept-restore`), and both are
    /// kept as evidence. Another TA's checkpoints (several TAs over one database) have numbers of
    /// their own.
    pub async fn insert_audit_checkpoint(&self, cp: &SignedCheckpoint, now: i64) -> Result<Stored> {
        let row = StoredCheckpoint::from_signed(cp, now);
        let done = sqlx::query(
            "INSERT INTO audit_checkpoints (idx, seq, anchor, row_head, ta_time, key_id, \
             signature, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT(idx, signature) DO NOTHING",
        )
        .bind(row.idx)
        .bind(row.seq)
        .bind(&row.anchor)
        .bind(&row.row_head)
        .bind(row.ta_time)
        .bind(&row.key_id)
        .bind(&row.signature)
        .bind(row.created_at)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(Stored::Present);
        }
        // Numbers are the TA's own: another TA's checkpoint under the same number is no fork.
        let same_number: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_checkpoints WHERE idx = $1 AND key_id = $2",
        )
        .bind(row.idx)
        .bind(&row.key_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(if same_number > 1 {
            Stored::Fork
        } else {
            Stored::New
        })
    }

    /// The first checkpoint stored under number `idx`.
    pub async fn audit_checkpoint(&self, idx: i64) -> Result<Option<StoredCheckpoint>> {
        Ok(sqlx::query_as::<_, StoredCheckpoint>(
            "SELECT idx, seq, anchor, row_head, ta_time, key_id, signature, created_at \
             FROM audit_checkpoints WHERE idx = $1 ORDER BY id LIMIT 1",
        )
        .bind(idx)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Every stored checkpoint, by number.
    pub async fn audit_checkpoints(&self) -> Result<Vec<StoredCheckpoint>> {
        Ok(sqlx::query_as::<_, StoredCheckpoint>(
            "SELECT idx, seq, anchor, row_head, ta_time, key_id, signature, created_at \
             FROM audit_checkpoints ORDER BY idx, id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The last row's seq (0 for an empty log).
    pub async fn audit_last_seq(&self) -> Result<i64> {
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM audit_log")
            .fetch_one(&self.pool)
            .await?;
        Ok(last.unwrap_or(0))
    }

    /// Bring the TA's anchor up to the end of the log. `ta` is what the TA's `AuditAnchor`
    /// answered; `sign` sends one `AuditCheckpoint` to the TA. Returns what was signed; with
    /// nothing new, nothing is sent.
    ///
    /// The TA's last checkpoint is stored first if the table lacks it (so a crash between a
    /// signature and its insert loses nothing). The rows sent must chain from the TA's row head
    /// (prev links, recomputed hashes, no gap); otherwise nothing is sent
    /// ([`AnchorError::Chain`]). A TA that refuses because another checkpoint came first
    /// (`AuditCheckpointOutOfStep`) comes back as [`AnchorError::Ta`]: read its anchor again.
    pub async fn anchor_audit_log<F, Fut, E>(
        &self,
        ta: &AuditAnchorInfo,
        sign: F,
    ) -> std::result::Result<Anchored, AnchorError<E>>
    where
        F: FnMut(AuditCheckpoint) -> Fut,
        Fut: Future<Output = std::result::Result<SignedCheckpoint, E>>,
    {
        self.anchor_audit_log_from(ta, None, sign).await
    }

    /// [`Db::anchor_audit_log`], taking the row hashes from `tail` (the audit writer's memory
    /// of what it committed) where it is exactly the chain's continuation from the TA's anchor
    /// to the table's last row, and from the table otherwise (see [`AuditTail`]).
    pub async fn anchor_audit_log_from<F, Fut, E>(
        &self,
        ta: &AuditAnchorInfo,
        tail: Option<&AuditTail>,
        mut sign: F,
    ) -> std::result::Result<Anchored, AnchorError<E>>
    where
        F: FnMut(AuditCheckpoint) -> Fut,
        Fut: Future<Output = std::result::Result<SignedCheckpoint, E>>,
    {
        let mut out = Anchored::default();
        // The table's last row as of now: the memory is used only up to it, and only if it
        // holds that very row.
        let last = match tail {
            Some(_) => self.audit_last_row().await?,
            None => None,
        };
        let (mut seq, mut head) = match &ta.last {
            Some(last) => {
                match self
                    .insert_audit_checkpoint(last, crate::now_secs())
                    .await?
                {
                    Stored::Present => {}
                    Stored::New => out.recovered = true,
                    Stored::Fork => {
                        out.recovered = true;
                        out.forks += 1;
                    }
                }
                (last.seq, last.row_head)
            }
            None => (0, ANCHOR_GENESIS),
        };
        out.seq = seq;
        loop {
            let after = i64::try_from(seq).unwrap_or(i64::MAX);
            let remembered = match (tail, &last) {
                (Some(t), Some((last_seq, last_hash))) => {
                    t.rows_after(after, &head, (*last_seq, last_hash), MAX_CHECKPOINT_ROWS)
                }
                _ => None,
            };
            let hashes = match remembered {
                Some(hashes) => {
                    out.from_memory += hashes.len() as u64;
                    hashes
                }
                None => self.chained_row_hashes(after, &head).await?,
            };
            if hashes.is_empty() {
                return Ok(out);
            }
            let full = hashes.len() == MAX_CHECKPOINT_ROWS;
            let cp = sign(AuditCheckpoint {
                after_seq: seq,
                row_hashes: hashes,
            })
            .await
            .map_err(AnchorError::Ta)?;
            if self.insert_audit_checkpoint(&cp, crate::now_secs()).await? == Stored::Fork {
                out.forks += 1;
            }
            if let Some(t) = tail {
                t.anchored(i64::try_from(cp.seq).unwrap_or(i64::MAX));
            }
            (seq, head) = (cp.seq, cp.row_head);
            out.seq = seq;
            out.signed.push(cp);
            if !full {
                return Ok(out);
            }
        }
    }

    /// The hashes of the rows after `after` (at most [`MAX_CHECKPOINT_ROWS`]), read from the
    /// table and checked to chain from `head` (the hash of row `after`; ignored for row 0,
    /// whose successor chains from the genesis hash).
    async fn chained_row_hashes<E>(
        &self,
        after: i64,
        head: &B256,
    ) -> std::result::Result<Vec<B256>, AnchorError<E>> {
        let rows = self.audit_rows(after, MAX_CHECKPOINT_ROWS as u32).await?;
        let mut prev = if after == 0 {
            GENESIS_HASH.to_owned()
        } else {
            hex::encode(head)
        };
        let mut hashes = Vec::with_capacity(rows.len());
        for (i, r) in rows.iter().enumerate() {
            let expect = after + 1 + i as i64;
            if let Some(reason) = row_fault(r, expect, &prev) {
                return Err(AnchorError::Chain {
                    seq: r.seq,
                    reason: reason.to_owned(),
                });
            }
            let Some(h) = b256(&r.hash) else {
                return Err(AnchorError::Chain {
                    seq: r.seq,
                    reason: "row hash is not 32 bytes of hex".to_owned(),
                });
            };
            hashes.push(h);
            prev.clone_from(&r.hash);
        }
        Ok(hashes)
    }

    /// The table's last row: its `seq` and hash (`None` when empty or the hash is not what
    /// this crate writes).
    async fn audit_last_row(&self) -> Result<Option<(i64, B256)>> {
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.and_then(|(seq, hash)| Some((seq, b256(&hash)?))))
    }

    /// Verify the whole log against the stored checkpoints and the TA's anchor `ta` (read from
    /// the TA, never from this database: the audit key is the TA's). See the module docs.
    pub async fn verify_anchored(&self, ta: &AuditAnchorInfo) -> Result<AuditReport> {
        let mut problems = Vec::new();
        let mut notes = Vec::new();
        let key = ta.public_key.as_deref();
        let ta_last = ta.last.as_ref();
        if let Some(last) = ta_last {
            if !key.is_some_and(|k| checkpoint_signed_by(last, k)) {
                problems.push(problem(
                    "ta_anchor_invalid",
                    "the TA's own last checkpoint does not verify under its audit key".into(),
                ));
            }
        }
        let ta_index = ta_last.map_or(0, |l| l.index);
        let ta_seq = ta_last.map_or(0, |l| l.seq);

        // The stored checkpoints: signed by the TA's key, none missing. Checkpoints the TA no
        // longer has (numbered past its last one, or a second line of numbers: forks) exist
        // only if its state was restored since they were signed: a note, and they are still
        // checked against the log like the others.
        //
        // Several TAs over one database each anchor the one log with checkpoints of their own
        // (their own audit key and numbers): only this TA's are checked here, the others are
        // counted in a note. A row claiming this TA's key id is this TA's whatever its
        // signature says (one that does not verify is a problem); relabelling this TA's rows
        // as another's leaves its numbers missing, which is one too.
        let own_id = key.map(|k| hex::encode(key_id(k)));
        let (stored, others): (Vec<StoredCheckpoint>, Vec<StoredCheckpoint>) = self
            .audit_checkpoints()
            .await?
            .into_iter()
            .partition(|row| match &own_id {
                Some(own) => row.key_id.eq_ignore_ascii_case(own),
                // A TA without an audit key: every row is checked (and fails).
                None => true,
            });
        if !others.is_empty() {
            let ids: std::collections::BTreeSet<&str> =
                others.iter().map(|r| r.key_id.as_str()).collect();
            notes.push(AuditProblem {
                count: Some(others.len() as i64),
                ..problem(
                    "other_ta_checkpoints",
                    format!(
                        "{} checkpoint(s) signed by {} other audit key(s) (key id {}) are \
                         stored here: another TA anchors this log too, and is verified against \
                         its own anchor",
                        others.len(),
                        ids.len(),
                        ids.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                )
            });
        }
        let mut expected: BTreeMap<i64, Vec<SignedCheckpoint>> = BTreeMap::new();
        let mut present: BTreeMap<i64, u64> = BTreeMap::new();
        let mut superseded = Vec::new();
        for row in &stored {
            *present.entry(row.idx).or_default() += 1;
            let at = |code, message: String| AuditProblem {
                index: Some(row.idx),
                seq: Some(row.seq),
                ..problem(code, message)
            };
            let Some(cp) = row.to_signed() else {
                problems.push(at(
                    "checkpoint_malformed",
                    format!("checkpoint {} is not what the TA writes", row.idx),
                ));
                continue;
            };
            if !key.is_some_and(|k| checkpoint_signed_by(&cp, k)) {
                problems.push(at(
                    "checkpoint_bad_signature",
                    format!(
                        "checkpoint {} is not signed by the TA's audit key{}",
                        cp.index,
                        if key.is_none() {
                            " (the TA has no audit key)"
                        } else {
                            ""
                        }
                    ),
                ));
                continue;
            }
            if cp.index > ta_index || (cp.index == ta_index && Some(&cp) != ta_last) {
                superseded.push(cp.index);
            }
            expected.entry(row.seq).or_default().push(cp);
        }
        let restored: std::collections::BTreeSet<i64> = present
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(i, _)| *i)
            .chain(superseded.iter().map(|i| *i as i64))
            .collect();
        if let Some(first) = restored.first() {
            notes.push(AuditProblem {
                index: Some(*first),
                count: Some(restored.len() as i64),
                ..problem(
                    "ta_anchor_restored",
                    format!(
                        "the TA's state was restored (kms-admin accept-restore) after it signed \
                         checkpoints stored here: number(s) {} are past its last one \
                         ({ta_index}) or stored twice. They carry the TA's signature and are \
                         checked against the log, but the TA itself no longer pins the rows \
                         they cover beyond its own checkpoint",
                        restored
                            .iter()
                            .map(i64::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            });
        }
        let mut missing_from = None;
        for i in 1..=i64::try_from(ta_index).unwrap_or(i64::MAX) + 1 {
            let missing = i <= ta_index as i64 && !present.contains_key(&i);
            match (missing, missing_from) {
                (true, None) => missing_from = Some(i),
                (false, Some(from)) => {
                    problems.push(AuditProblem {
                        index: Some(from),
                        count: Some(i - from),
                        ..problem(
                            "checkpoint_missing",
                            if i - from == 1 {
                                format!("checkpoint {from} (signed by the TA) is missing from the table")
                            } else {
                                format!(
                                    "checkpoints {from} to {} (signed by the TA) are missing from the table",
                                    i - 1
                                )
                            },
                        )
                    });
                    missing_from = None;
                }
                _ => {}
            }
        }

        // The rows: the chain, and the anchor at every checkpoint's row and at the TA's.
        let mut prev = GENESIS_HASH.to_owned();
        let mut anchor = ANCHOR_GENESIS;
        let mut expect_seq = 1i64;
        let mut rows = 0u64;
        let mut last_seq = 0i64;
        let mut unanchored = 0u64;
        let mut chain_reported = false;
        let mut reached: std::collections::BTreeSet<i64> = std::collections::BTreeSet::new();
        let mut ta_checked = false;
        loop {
            let page = self.audit_rows(last_seq, 1000).await?;
            if page.is_empty() {
                break;
            }
            for r in page {
                rows += 1;
                if !chain_reported {
                    if let Some(reason) = row_fault(&r, expect_seq, &prev) {
                        chain_reported = true;
                        problems.push(AuditProblem {
                            seq: Some(r.seq),
                            ..problem("chain_broken", format!("row {}: {reason}", r.seq))
                        });
                    }
                }
                let h = b256(&r.hash).unwrap_or_default();
                let step_seq = u64::try_from(r.seq).unwrap_or(0);
                anchor = anchor_step(&anchor, step_seq, &h);
                if let Some(cps) = expected.get(&r.seq) {
                    reached.insert(r.seq);
                    for cp in cps {
                        if cp.anchor != anchor || cp.row_head != h {
                            problems.push(AuditProblem {
                                index: Some(cp.index as i64),
                                seq: Some(r.seq),
                                ..problem(
                                    "checkpoint_mismatch",
                                    format!(
                                        "rows 1 to {} are not the rows checkpoint {} anchored \
                                         (rewritten, inserted or deleted)",
                                        r.seq, cp.index
                                    ),
                                )
                            });
                        }
                    }
                }
                if let Some(last) = ta_last.filter(|l| l.seq == step_seq) {
                    ta_checked = true;
                    if last.anchor != anchor || last.row_head != h {
                        problems.push(AuditProblem {
                            seq: Some(r.seq),
                            index: Some(last.index as i64),
                            ..problem(
                                "anchor_mismatch",
                                format!(
                                    "rows 1 to {} do not match the TA's anchor: the log was \
                                     rewritten (rows edited, inserted or deleted, and re-hashed)",
                                    r.seq
                                ),
                            )
                        });
                    }
                }
                if step_seq > ta_seq {
                    unanchored += 1;
                }
                prev = r.hash;
                expect_seq = r.seq + 1;
                last_seq = r.seq;
            }
        }
        if ta_seq > 0 && !ta_checked {
            problems.push(AuditProblem {
                seq: Some(last_seq),
                index: ta_last.map(|l| l.index as i64),
                ..problem(
                    "log_truncated",
                    format!(
                        "the TA anchored rows up to {ta_seq}, the log has {} ending at row \
                         {last_seq}: rows were deleted",
                        rows
                    ),
                )
            });
        }
        for (seq, cps) in &expected {
            if !reached.contains(seq) {
                for cp in cps {
                    problems.push(AuditProblem {
                        index: Some(cp.index as i64),
                        seq: Some(*seq),
                        ..problem(
                            "log_truncated",
                            format!(
                                "checkpoint {} covers rows up to {seq}, which the log no longer has",
                                cp.index
                            ),
                        )
                    });
                }
            }
        }
        Ok(AuditReport {
            ok: problems.is_empty(),
            rows,
            last_seq,
            anchored_seq: ta_seq,
            unanchored_rows: unanchored,
            checkpoints: stored.len() as u64,
            ta: TaAnchorSummary {
                public_key: key.map(hex::encode),
                key_id: key.map(|k| hex::encode(key_id(k))),
                index: ta_index,
                seq: ta_seq,
                anchor: ta_last.map(|l| hex::encode(l.anchor)),
                row_head: ta_last.map(|l| hex::encode(l.row_head)),
                ta_time: ta_last.map(|l| l.ta_time),
            },
            problems,
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::temp_db;
    use crate::AuditEvent;

    /// The TA's side of the anchor, as `ta/core/src/audit.rs` does it (the real TA is checked
    /// against this database by kms-admin's tests).
    struct FakeTa {
        key: k256::ecdsa::SigningKey,
        last: Option<SignedCheckpoint>,
        now: u64,
    }

    impl FakeTa {
        fn new(seed: u8) -> Self {
            Self {
                key: k256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap(),
                last: None,
                now: 1_800_000_000,
            }
        }

        fn public_key(&self) -> Vec<u8> {
            self.key
                .verifying_key()
                .to_encoded_point(true)
                .as_bytes()
                .to_vec()
        }

        fn info(&self) -> AuditAnchorInfo {
            AuditAnchorInfo {
                public_key: Some(self.public_key()),
                last: self.last.clone(),
            }
        }

        fn checkpoint(
            &mut self,
            req: AuditCheckpoint,
        ) -> std::result::Result<SignedCheckpoint, String> {
            let (index, mut seq, mut anchor) = self
                .last
                .as_ref()
                .map_or((0, 0, ANCHOR_GENESIS), |l| (l.index, l.seq, l.anchor));
            if req.after_seq != seq {
                return Err(format!("out of step: {seq}"));
            }
            for h in &req.row_hashes {
                seq += 1;
                anchor = anchor_step(&anchor, seq, h);
            }
            self.now += 1;
            let mut cp = SignedCheckpoint {
                index: index + 1,
                seq,
                anchor,
                row_head: *req.row_hashes.last().unwrap(),
                ta_time: self.now,
                key_id: key_id(&self.public_key()),
                signature: Vec::new(),
            };
            let (sig, recid) = self
                .key
                .sign_prehash_recoverable(&checkpoint_digest(&cp))
                .unwrap();
            cp.signature = sig.to_bytes().to_vec();
            cp.signature.push(27 + recid.is_y_odd() as u8);
            self.last = Some(cp.clone());
            Ok(cp)
        }

        async fn anchor(&mut self, db: &Db) -> Anchored {
            let info = self.info();
            db.anchor_audit_log(&info, |req| std::future::ready(self.checkpoint(req)))
                .await
                .unwrap()
        }
    }

    fn ev(i: usize) -> AuditEvent {
        AuditEvent {
            ts: 100 + i as i64,
            actor: "agent:w:0".into(),
            action: "SignAgentUserOp".into(),
            key_id: Some("w:0".into()),
            outcome: "ok".into(),
            user_op_hash: Some(format!("0x{i:064x}")),
            detail: None,
        }
    }

    async fn append(db: &Db, from: usize, n: usize) {
        let events: Vec<AuditEvent> = (from..from + n).map(ev).collect();
        db.append_audit(&events).await.unwrap();
    }

    async fn sql(db: &Db, q: &str) {
        match q.strip_prefix("DROP TRIGGER ") {
            Some(name) => crate::testing::drop_trigger(db, name).await,
            None => {
                sqlx::query(q).execute(db.pool()).await.unwrap();
            }
        }
    }

    fn codes(r: &AuditReport) -> Vec<&'static str> {
        r.problems.iter().map(|p| p.code).collect()
    }

    /// A log of 10 rows anchored in two checkpoints (7 and 10), then 3 more rows.
    async fn anchored_log() -> (tempfile::TempDir, Db, FakeTa) {
        let (dir, db) = temp_db().await;
        let mut ta = FakeTa::new(7);
        append(&db, 0, 7).await;
        ta.anchor(&db).await;
        append(&db, 7, 3).await;
        ta.anchor(&db).await;
        append(&db, 10, 3).await;
        (dir, db, ta)
    }

    #[tokio::test]
    async fn an_intact_log_verifies_and_counts_what_is_not_anchored_yet() {
        let (_d, db, ta) = anchored_log().await;
        let r = db.verify_anchored(&ta.info()).await.unwrap();
        assert!(r.ok, "{r:#?}");
        assert_eq!(
            (
                r.rows,
                r.last_seq,
                r.anchored_seq,
                r.unanchored_rows,
                r.checkpoints
            ),
            (13, 13, 10, 3, 2)
        );
        assert_eq!(r.ta.index, 2);
        // Nothing to anchor is a no-op; then the last three rows are anchored.
        let mut ta = ta;
        let done = ta.anchor(&db).await;
        assert_eq!((done.signed.len(), done.seq), (1, 13));
        assert_eq!(ta.anchor(&db).await.signed.len(), 0);
        let r = db.verify_anchored(&ta.info()).await.unwrap();
        assert!(r.ok && r.unanchored_rows == 0, "{r:#?}");
    }

    #[tokio::test]
    async fn a_deleted_tail_is_caught() {
        let (_d, db, ta) = anchored_log().await;
        // Before the anchor, the old chain check cannot see it: a prefix of a chain is a chain.
        sql(&db, "DROP TRIGGER audit_log_no_delete").await;
        sql(&db, "DELETE FROM audit_log WHERE seq > 8").await;
        assert!(db.verify_audit_chain().await.unwrap().is_ok());
        let r = db.verify_anchored(&ta.info()).await.unwrap();
        assert!(!r.ok);
        assert_eq!(codes(&r), vec!["log_truncated", "log_truncated"], "{r:#?}");
        assert_eq!(r.problems[0].seq, Some(8));
        assert_eq!(r.last_seq, 8);
    }

    #[tokio::test]
    async fn a_consistently_rewritten_log_is_caught() {
        let (_d, db, ta) = anchored_log().await;
        // Rewrite everything: other contents, every hash recomputed, same number of rows.
        sql(&db, "DROP TRIGGER audit_log_no_delete").await;
        sql(&db, "DELETE FROM audit_log").await;
        let mut events: Vec<AuditEvent> = (0..13).map(ev).collect();
        events[3].outcome = "refused:credential_revoked".into();
        db.append_audit(&events).await.unwrap();
        assert!(db.verify_audit_chain().await.unwrap().is_ok());
        let r = db.verify_anchored(&ta.info()).await.unwrap();
        assert!(!r.ok);
        assert_eq!(
            codes(&r),
            vec![
                "checkpoint_mismatch",
                "checkpoint_mismatch",
                "anchor_mismatch"
            ],
            "{r:#?}"
        );
        assert!(r.problems.iter().all(|p| p.code != "chain_broken"));
    }

    #[tokio::test]
    async fn a_missing_or_forged_checkpoint_is_caught() {
        let (_d, db, ta) = anchored_log().await;
        sql(&db, "DROP TRIGGER audit_checkpoints_no_delete").await;
        sql(&db, "DELETE FROM audit_checkpoints WHERE idx = 1").await;
        let r = db.verify_anchored(&ta.info()).await.unwrap();
        assert_eq!(codes(&r), vec!["checkpoint_missing"], "{r:#?}");
        assert_eq!(
            (r.problems[0].index, r.problems[0].count),
            (Some(1), Some(1))
        );

        // A checkpoint under the TA's key id but signed by another key, numbered past the TA's:
        // both reported.
        let mut other = FakeTa::new(9);
        other.last = ta.last.clone();
        let mut forged = other
            .checkpoint(AuditCheckpoint {
                after_seq: 10,
                row_hashes: vec![[1; 32]],
            })
            .unwrap();
        forged.key_id = key_id(&ta.public_key());
        db.insert_audit_checkpoint(&forged, 0).await.unwrap();
        let r = db.verify_anchored(&ta.info()).await.unwrap();
        assert_eq!(
            codes(&r),
            vec!["checkpoint_bad_signature", "checkpoint_missing"],
            "{r:#?}"
        );
    }

    /// Several TAs over one database anchor the one log, each with its own key and numbers:
    /// neither's checkpoints count as a fork or a problem of the other's, each verifies against
    /// its own anchor, and what the other stored is noted; a tampered log fails for both.
    #[tokio::test]
    async fn two_tas_anchor_one_log_each_verified_against_its_own() {
        let (_d, db, mut a) = anchored_log().await;
        let mut b = FakeTa::new(9);
        let done = b.anchor(&db).await;
        assert_eq!((done.signed.len(), done.forks, done.seq), (1, 0, 13));
        append(&db, 13, 2).await;
        assert_eq!(a.anchor(&db).await.forks, 0);
        assert_eq!(b.anchor(&db).await.forks, 0);
        for (ta, own, other) in [(&a, 3, 2), (&b, 2, 3)] {
            let r = db.verify_anchored(&ta.info()).await.unwrap();
            assert!(r.ok, "{r:#?}");
            assert_eq!((r.checkpoints, r.anchored_seq), (own, 15));
            let note = r
                .notes
                .iter()
                .find(|n| n.code == "other_ta_checkpoints")
                .unwrap_or_else(|| panic!("{r:#?}"));
            assert_eq!(note.count, Some(other));
        }
        // One row edited: the verification against either TA catches it.
        sql(&db, "DROP TRIGGER audit_log_no_update").await;
        sql(&db, "UPDATE audit_log SET actor = 'x' WHERE seq = 2").await;
        for ta in [&a, &b] {
            let r = db.verify_anchored(&ta.info()).await.unwrap();
            assert_eq!(codes(&r), vec!["chain_broken"], "{r:#?}");
        }
        // This TA's checkpoints relabelled as another TA's are missing from its own.
        sql(
            &db,
            "UPDATE audit_log SET actor = 'agent:w:0' WHERE seq = 2",
        )
        .await;
        sql(&db, "DROP TRIGGER audit_checkpoints_no_update").await;
        let other_id = hex::encode(key_id(&b.public_key()));
        sql(
            &db,
            &format!(
                "UPDATE audit_checkpoints SET key_id = '{other_id}' WHERE idx = 1 AND key_id <> '{other_id}'"
            ),
        )
        .await;
        let r = db.verify_anchored(&a.info()).await.unwrap();
        assert_eq!(codes(&r), vec!["checkpoint_missing"], "{r:#?}");
    }

    #[tokio::test]
    async fn after_a_restore_of_the_ta_the_old_checkpoints_are_kept_and_noted() {
        let (_d, db, mut ta) = anchored_log().await;
        // The TA's state goes back to its first checkpoint (an operator accepted a restore).
        let first = db
            .audit_checkpoint(1)
            .await
            .unwrap()
            .unwrap()
            .to_signed()
            .unwrap();
        ta.last = Some(first);
        // It numbers again from there: checkpoint 2 a second time, stored beside the old one;
        // nothing wedges.
        let done = ta.anchor(&db).await;
        assert_eq!((done.signed.len(), done.forks), (1, 1));
        assert_eq!(db.audit_checkpoints().await.unwrap().len(), 3);
        let r = db.verify_anchored(&ta.info()).await.unwrap();
        assert!(r.ok, "{r:#?}");
        assert_eq!(
            r.notes.iter().map(|n| n.code).collect::<Vec<_>>(),
            vec!["ta_anchor_restored"]
        );
        // An old checkpoint that no longer matches the log still fails.
        sql(&db, "DROP TRIGGER audit_log_no_delete").await;
        sql(&db, "DELETE FROM audit_log").await;
        append(&db, 100, 13).await;
        let r = db.verify_anchored(&ta.info()).await.unwrap();
        assert!(codes(&r).contains(&"checkpoint_mismatch"), "{r:#?}");
    }

    #[tokio::test]
    async fn anchoring_recovers_the_tas_last_checkpoint_and_refuses_a_broken_chain() {
        let (_d, db) = temp_db().await;
        let mut ta = FakeTa::new(7);
        append(&db, 0, 3).await;
        // The TA signed, the host crashed before storing it.
        let lost = ta
            .checkpoint(AuditCheckpoint {
                after_seq: 0,
                row_hashes: db
                    .audit_rows(0, 10)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| b256(&r.hash).unwrap())
                    .collect(),
            })
            .unwrap();
        let r = db.verify_anchored(&ta.info()).await.unwrap();
        assert_eq!(codes(&r), vec!["checkpoint_missing"]);
        let done = ta.anchor(&db).await;
        assert!(done.recovered && done.signed.is_empty());
        assert_eq!(
            db.audit_checkpoint(1).await.unwrap().unwrap().to_signed(),
            Some(lost)
        );
        assert!(db.verify_anchored(&ta.info()).await.unwrap().ok);

        // A row edited after the anchor: the next anchoring sends nothing to the TA.
        append(&db, 3, 2).await;
        sql(&db, "DROP TRIGGER audit_log_no_update").await;
        sql(&db, "UPDATE audit_log SET actor = 'x' WHERE seq = 5").await;
        let (err, calls) = ta.refused(&db, None).await;
        assert!(matches!(err, AnchorError::Chain { seq: 5, .. }), "{err}");
        assert_eq!(calls, 0);
    }

    #[tokio::test]
    async fn a_long_gap_is_anchored_in_several_checkpoints() {
        let (_d, db) = temp_db().await;
        let mut ta = FakeTa::new(7);
        append(&db, 0, MAX_CHECKPOINT_ROWS + 5).await;
        let done = ta.anchor(&db).await;
        assert_eq!(done.signed.len(), 2);
        assert_eq!(done.seq, MAX_CHECKPOINT_ROWS as u64 + 5);
        let r = db.verify_anchored(&ta.info()).await.unwrap();
        assert!(r.ok && r.checkpoints == 2, "{r:#?}");
    }

    /// An appender that remembers what it commits, and events `from..from + n` through it.
    async fn remembering(db: &Db) -> (crate::AuditAppender, std::sync::Arc<AuditTail>) {
        let tail = std::sync::Arc::new(AuditTail::new());
        let a = db.audit_appender(false).await.unwrap();
        (a.remembering(tail.clone()), tail)
    }

    async fn append_through(a: &mut crate::AuditAppender, from: usize, n: usize) {
        let events: Vec<AuditEvent> = (from..from + n).map(ev).collect();
        a.append(&events).await.unwrap();
    }

    /// A fresh log with `n` rows appended through a remembering appender.
    async fn remembered_log(
        n: usize,
    ) -> (
        tempfile::TempDir,
        Db,
        crate::AuditAppender,
        std::sync::Arc<AuditTail>,
    ) {
        let (dir, db) = temp_db().await;
        let (mut a, tail) = remembering(&db).await;
        append_through(&mut a, 0, n).await;
        (dir, db, a, tail)
    }

    impl FakeTa {
        async fn anchor_from(&mut self, db: &Db, tail: &AuditTail) -> Anchored {
            let info = self.info();
            db.anchor_audit_log_from(&info, Some(tail), |req| {
                std::future::ready(self.checkpoint(req))
            })
            .await
            .unwrap()
        }

        /// [`FakeTa::anchor_from`]'s rows taken from memory, and the row anchored after it.
        async fn anchored_from(&mut self, db: &Db, tail: &AuditTail) -> (u64, u64) {
            let done = self.anchor_from(db, tail).await;
            (done.from_memory, done.seq)
        }

        /// An anchoring that fails: its error, and how many checkpoints were asked of the TA.
        async fn refused(
            &mut self,
            db: &Db,
            tail: Option<&AuditTail>,
        ) -> (AnchorError<String>, u32) {
            let info = self.info();
            let mut calls = 0;
            let err = db
                .anchor_audit_log_from(&info, tail, |req| {
                    calls += 1;
                    std::future::ready(self.checkpoint(req))
                })
                .await
                .unwrap_err();
            (err, calls)
        }
    }

    #[tokio::test]
    async fn the_writers_memory_anchors_what_the_table_holds() {
        let (_d, db) = temp_db().await;
        let (mut a, tail) = remembering(&db).await;
        // The first batch goes through the write transaction, the next ones (on SQLite) in one
        // statement: both remember what they commit.
        append_through(&mut a, 0, 3).await;
        append_through(&mut a, 3, 4).await;
        append_through(&mut a, 7, 1).await;
        let single = match db.backend() {
            crate::Backend::Sqlite => 2,
            crate::Backend::Postgres => 0,
        };
        assert_eq!(a.single_statement_appends(), single);
        assert_eq!(tail.len(), 8);
        // One TA anchors from memory, another (same key, its own state) from the table.
        let (mut mem, mut table) = (FakeTa::new(7), FakeTa::new(7));
        assert_eq!(mem.anchored_from(&db, &tail).await, (8, 8));
        table.anchor(&db).await;
        let (m, t) = (mem.last.clone().unwrap(), table.last.clone().unwrap());
        assert_eq!((m.anchor, m.row_head, m.seq), (t.anchor, t.row_head, t.seq));
        // What the TA anchored is forgotten; the next rows come from memory again.
        assert!(tail.is_empty());
        append_through(&mut a, 8, 2).await;
        assert_eq!(mem.anchored_from(&db, &tail).await, (2, 10));
        assert!(db.verify_anchored(&mem.info()).await.unwrap().ok);
    }

    #[tokio::test]
    async fn another_writers_rows_are_read_from_the_table() {
        let (_d, db, mut a, tail) = remembered_log(3).await;
        // kms-admin (or another companion) appends in between: the writer's next batch starts
        // a new stretch after it, and the TA's anchor is not in it.
        append(&db, 3, 2).await;
        append_through(&mut a, 5, 2).await;
        assert_eq!(tail.len(), 2);
        let mut ta = FakeTa::new(7);
        assert_eq!(ta.anchored_from(&db, &tail).await, (0, 7));
        // The memory at the new anchor: used again for what the writer adds after it.
        append_through(&mut a, 7, 3).await;
        assert_eq!(ta.anchored_from(&db, &tail).await, (3, 10));
        // Another writer last: the table's last row is not in memory.
        append(&db, 10, 1).await;
        assert_eq!(ta.anchored_from(&db, &tail).await, (0, 11));
        assert!(db.verify_anchored(&ta.info()).await.unwrap().ok);
    }

    #[tokio::test]
    async fn a_table_that_differs_from_the_memory_is_read_and_checked() {
        let (_d, db, _a, tail) = remembered_log(5).await;
        // The last row's stored hash no longer the one committed: the table is read, and its
        // broken chain refused as without memory.
        sql(&db, "DROP TRIGGER audit_log_no_update").await;
        sql(&db, "UPDATE audit_log SET hash = prev_hash WHERE seq = 5").await;
        let (err, calls) = FakeTa::new(7).refused(&db, Some(&*tail)).await;
        assert!(matches!(err, AnchorError::Chain { seq: 5, .. }), "{err}");
        assert_eq!(calls, 0);

        // A table shorter than the memory (its tail deleted): the memory is used only up to
        // the table's last row, and the writer's next batch starts a stretch after it.
        let (_d, db, mut a, tail) = remembered_log(5).await;
        sql(&db, "DROP TRIGGER audit_log_no_delete").await;
        sql(&db, "DELETE FROM audit_log WHERE seq > 3").await;
        let mut ta = FakeTa::new(7);
        assert_eq!(ta.anchored_from(&db, &tail).await, (3, 3));
        append_through(&mut a, 5, 2).await;
        assert_eq!(ta.anchored_from(&db, &tail).await, (2, 5));
        assert!(db.verify_anchored(&ta.info()).await.unwrap().ok);
    }

    #[tokio::test]
    async fn a_row_edited_after_its_commit_is_anchored_as_committed_and_reported() {
        let (_d, db, _a, tail) = remembered_log(4).await;
        // Row 2's content edited in the table before the checkpoint (its hash left alone).
        sql(&db, "DROP TRIGGER audit_log_no_update").await;
        sql(
            &db,
            "UPDATE audit_log SET outcome = 'refused:x' WHERE seq = 2",
        )
        .await;
        let mut ta = FakeTa::new(7);
        assert_eq!(ta.anchored_from(&db, &tail).await, (4, 4));
        // The anchor holds the committed row: verification points at the edit.
        let r = db.verify_anchored(&ta.info()).await.unwrap();
        assert!(!r.ok);
        assert!(
            r.problems.iter().any(|p| p.seq == Some(2)),
            "{:#?}",
            r.problems
        );
    }

    #[tokio::test]
    async fn a_failed_append_leaves_nothing_remembered() {
        let (_d, db, mut a, tail) = remembered_log(3).await;
        assert_eq!(tail.len(), 3);
        crate::testing::refuse_audit_inserts(&db, "audit log unavailable").await;
        let events: Vec<AuditEvent> = (3..5).map(ev).collect();
        assert!(a.append(&events).await.is_err());
        assert!(tail.is_empty(), "an append of unknown outcome is forgotten");
        crate::testing::drop_trigger(&db, "audit_log_refuse").await;
        // The next batch starts a stretch from the table's head; the rows before it are read.
        append_through(&mut a, 3, 2).await;
        assert_eq!(tail.len(), 2);
        let mut ta = FakeTa::new(7);
        assert_eq!(ta.anchored_from(&db, &tail).await, (0, 5));
        assert!(db.verify_anchored(&ta.info()).await.unwrap().ok);
    }

    #[tokio::test]
    async fn a_long_memory_is_anchored_in_several_checkpoints() {
        let (_d, db) = temp_db().await;
        let (mut a, tail) = remembering(&db).await;
        for i in 0..(MAX_CHECKPOINT_ROWS + 5).div_ceil(128) {
            let n = 128.min(MAX_CHECKPOINT_ROWS + 5 - i * 128);
            append_through(&mut a, i * 128, n).await;
        }
        let mut ta = FakeTa::new(7);
        let done = ta.anchor_from(&db, &tail).await;
        assert_eq!(done.signed.len(), 2);
        assert_eq!(done.from_memory, MAX_CHECKPOINT_ROWS as u64 + 5);
        assert!(db.verify_anchored(&ta.info()).await.unwrap().ok);
    }

    #[tokio::test]
    async fn a_full_sync_append_chains_like_any_other() {
        let (_d, db) = temp_db().await;
        db.append_audit_synced(&[ev(0), ev(1)], true).await.unwrap();
        db.append_audit_synced(&[ev(2)], false).await.unwrap();
        let v = db.verify_audit_chain().await.unwrap();
        assert!(v.is_ok() && v.rows == 3, "{v:?}");
        if db.backend() == crate::Backend::Sqlite {
            // The pooled connection went back to NORMAL (1).
            let mode: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(db.pool())
                .await
                .unwrap();
            assert_eq!(mode, 1);
        } else {
            // PostgreSQL commits durably on every connection (never turned off here).
            let mode: String = sqlx::query_scalar("SHOW synchronous_commit")
                .fetch_one(db.pool())
                .await
                .unwrap();
            assert_eq!(mode, "on");
        }
    }
}
