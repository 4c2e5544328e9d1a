//! The stretch of the audit chain this process appended last, kept in memory for the TA's
//! checkpoints ([`AuditTail`]).
//!
//! A checkpoint hands the TA the hashes of the rows after its anchor. Read back from the
//! database, that is every row's ten columns decoded and re-hashed: under a steady signing load
//! this was the largest single cost of the companion after the commit itself (about a sixth of
//! its CPU per signature). The writer computed those hashes a moment earlier, so it keeps them:
//! [`crate::AuditAppender`] records each stretch it commits here, and
//! [`crate::Db::anchor_audit_log_from`] sends the TA the remembered hashes instead of reading
//! the rows, when — and only when — the memory is exactly the chain's continuation:
//!
//! * it starts at or before the TA's anchor, and its hash of the anchor's row is the TA's
//!   `row_head` (the genesis hash for row 0);
//! * it reaches the table's last row as read at the start of the run, and its hash of that row
//!   is the stored one.
//!
//! Anything else (another writer's rows in between: `kms-admin`, another companion on the same
//! database; an append whose outcome was unknown; a log shorter than the memory) takes the
//! database path, which reads and re-checks every row as before. The hashes anchored from memory
//! are the ones computed from the events as they were committed, so a row edited in the table
//! after its commit is not anchored in its edited form: `kms-admin audit verify` recomputes every
//! row and reports it against the checkpoint.

use std::collections::VecDeque;
use std::sync::Mutex;

use kms_proto::B256;

/// Most row hashes kept (32 bytes each: 2 MiB). Past it the oldest half is forgotten, and a
/// checkpoint that still needs those rows reads them from the database.
pub const MAX_TAIL_ROWS: usize = 65_536;

/// The rows this process's audit writer committed last, one unbroken stretch of the chain (see
/// the module docs). Cheap to share behind an `Arc`; every method takes a short lock.
#[derive(Debug, Default)]
pub struct AuditTail {
    inner: Mutex<Stretch>,
}

/// Rows `after + 1 ..= after + hashes.len()`, chained after `prev` (the hash of row `after`);
/// `prev` is `None` while nothing is known.
#[derive(Debug, Default)]
struct Stretch {
    after: i64,
    prev: Option<B256>,
    hashes: VecDeque<B256>,
}

impl Stretch {
    fn end(&self) -> i64 {
        self.after + self.hashes.len() as i64
    }

    /// The remembered hash of row `seq` (`prev` for `after`).
    fn hash_of(&self, seq: i64) -> Option<&B256> {
        if seq == self.after {
            return self.prev.as_ref();
        }
        let i = usize::try_from(seq - self.after - 1).ok()?;
        self.hashes.get(i)
    }
}

impl AuditTail {
    /// A new, empty tail.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stretch> {
        // The data is a cache: a panic elsewhere while holding it leaves nothing half-done
        // that matters (at worst a stretch that no longer matches, which is never used).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rows `after + 1 ..` with these hashes were committed, chained after `prev` (the hash of
    /// row `after`). Extends the stretch when it continues it, else starts a new one.
    pub fn committed(&self, after: i64, prev: &B256, hashes: &[B256]) {
        let mut s = self.lock();
        let continues = s.prev.is_some() && s.end() == after && s.hash_of(after) == Some(prev);
        if !continues {
            *s = Stretch {
                after,
                prev: Some(*prev),
                hashes: VecDeque::new(),
            };
        }
        s.hashes.extend(hashes.iter().copied());
        if s.hashes.len() > MAX_TAIL_ROWS {
            let drop = s.hashes.len() - MAX_TAIL_ROWS / 2;
            let last_dropped = s.hashes.drain(..drop).next_back();
            s.prev = last_dropped;
            s.after += drop as i64;
        }
    }

    /// Forget everything (an append whose outcome is unknown).
    pub fn forget(&self) {
        *self.lock() = Stretch::default();
    }

    /// The hashes of rows `seq + 1 ..= min(last.0, seq + max)`, when the stretch holds row
    /// `seq` with hash `head` and row `last.0` with hash `last.1` (the table's last row);
    /// `None` otherwise, or when there is nothing after `seq`.
    pub fn rows_after(
        &self,
        seq: i64,
        head: &B256,
        last: (i64, &B256),
        max: usize,
    ) -> Option<Vec<B256>> {
        let s = self.lock();
        s.prev?;
        if seq >= last.0 || s.hash_of(seq) != Some(head) || s.hash_of(last.0) != Some(last.1) {
            return None;
        }
        let from = usize::try_from(seq - s.after).ok()?;
        let to = usize::try_from(last.0 - s.after).ok()?.min(from + max);
        Some(s.hashes.range(from..to).copied().collect())
    }

    /// The TA has anchored through row `seq`: forget the rows before it.
    pub fn anchored(&self, seq: i64) {
        let mut s = self.lock();
        if s.prev.is_none() || seq <= s.after || seq > s.end() {
            return;
        }
        let drop = usize::try_from(seq - s.after).unwrap_or(0);
        let last_dropped = s.hashes.drain(..drop).next_back();
        s.prev = last_dropped;
        s.after = seq;
    }

    /// How many row hashes are held.
    pub fn len(&self) -> usize {
        self.lock().hashes.len()
    }

    /// Whether no row hash is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u8) -> B256 {
        [i; 32]
    }

    #[test]
    fn extends_a_continuing_stretch_and_restarts_on_a_gap() {
        let t = AuditTail::new();
        t.committed(0, &h(0), &[h(1), h(2)]);
        t.committed(2, &h(2), &[h(3)]);
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.rows_after(0, &h(0), (3, &h(3)), 10),
            Some(vec![h(1), h(2), h(3)])
        );
        // Another writer's row 4 in between: the next stretch starts after it.
        t.committed(4, &h(4), &[h(5)]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.rows_after(0, &h(0), (5, &h(5)), 10), None);
        assert_eq!(t.rows_after(4, &h(4), (5, &h(5)), 10), Some(vec![h(5)]));
        // Same seq, other prev hash: not a continuation either.
        t.committed(5, &h(9), &[h(6)]);
        assert_eq!(t.rows_after(4, &h(4), (6, &h(6)), 10), None);
        assert_eq!(t.rows_after(5, &h(9), (6, &h(6)), 10), Some(vec![h(6)]));
    }

    #[test]
    fn rows_after_only_when_both_ends_match() {
        let t = AuditTail::new();
        assert_eq!(t.rows_after(0, &h(0), (1, &h(1)), 10), None, "empty");
        t.committed(0, &h(0), &[h(1), h(2), h(3)]);
        assert_eq!(t.rows_after(0, &h(7), (3, &h(3)), 10), None, "other head");
        assert_eq!(t.rows_after(0, &h(0), (3, &h(7)), 10), None, "other last");
        assert_eq!(t.rows_after(0, &h(0), (4, &h(4)), 10), None, "table ahead");
        assert_eq!(
            t.rows_after(3, &h(3), (3, &h(3)), 10),
            None,
            "nothing after"
        );
        assert_eq!(t.rows_after(1, &h(1), (2, &h(2)), 10), Some(vec![h(2)]));
        assert_eq!(
            t.rows_after(0, &h(0), (3, &h(3)), 2),
            Some(vec![h(1), h(2)])
        );
    }

    #[test]
    fn anchored_forgets_what_the_ta_holds() {
        let t = AuditTail::new();
        t.committed(0, &h(0), &[h(1), h(2), h(3)]);
        t.anchored(2);
        assert_eq!(t.len(), 1);
        assert_eq!(t.rows_after(0, &h(0), (3, &h(3)), 10), None);
        assert_eq!(t.rows_after(2, &h(2), (3, &h(3)), 10), Some(vec![h(3)]));
        t.anchored(9); // past the end: nothing known about it, kept as is
        assert_eq!(t.len(), 1);
        t.forget();
        assert!(t.is_empty());
        assert_eq!(t.rows_after(2, &h(2), (3, &h(3)), 10), None);
    }

    #[test]
    fn bounded() {
        let t = AuditTail::new();
        let hashes: Vec<B256> = (0..=MAX_TAIL_ROWS as u32)
            .map(|i| {
                let mut b = [0; 32];
                b[..4].copy_from_slice(&i.to_be_bytes());
                b
            })
            .collect();
        // Rows 1..=MAX+1 with hashes 0..=MAX.
        t.committed(0, &[0xff; 32], &hashes);
        assert_eq!(t.len(), MAX_TAIL_ROWS / 2);
        let last = MAX_TAIL_ROWS as i64 + 1;
        let first_kept = last - (MAX_TAIL_ROWS / 2) as i64 + 1;
        // The row before the first kept is still known by hash; earlier ones are not.
        let before = &hashes[(first_kept - 2) as usize];
        assert!(t
            .rows_after(first_kept - 1, before, (last, &hashes[MAX_TAIL_ROWS]), 1)
            .is_some());
        assert_eq!(
            t.rows_after(0, &[0xff; 32], (last, &hashes[MAX_TAIL_ROWS]), 1),
            None
        );
    }
}
