//! The anchored audit log: what the TA chains and signs, defined once for the TA, the companion
//! and the verifier (`kms-admin audit verify`).
//!
//! The companion's audit log is a hash chain of rows (`companion/db`, `kms-audit/v1`): each
//! row's hash covers its fields and the previous row's hash. On its own such a chain proves
//! nothing to someone who controls the host: the tail can be cut off, or the whole chain
//! rewritten and re-hashed. So the TA keeps an **anchor** over the row hashes,
//!
//! ```text
//! anchor_0   = 32 zero bytes
//! anchor_seq = SHA-256("kms-audit-anchor/v1" ‖ anchor_{seq-1} ‖ seq (u64 BE) ‖ row_hash_seq)
//! ```
//!
//! in its sealed state (rollback-protected by its monotonic counter), and advances it only
//! itself: [`AuditCheckpoint`] hands it the 32-byte hashes of the rows after the last
//! checkpoint, the TA folds them into its stored anchor, stores the new `(seq, anchor)` and
//! signs it with a key of its own (secp256k1, made from TA randomness on the first checkpoint,
//! never exported, used for nothing else). The host never names an anchor: a new checkpoint
//! extends the previous one by construction, so once rows `1..=seq` are anchored no rewrite of
//! them, and no deletion, can match the TA's anchor again.
//!
//! The signed message is [`checkpoint_digest`] (domain-separated, with the key id), and the
//! checkpoints are numbered (`index` 1, 2, ...), so a verifier holding the TA's last one can
//! tell a log cut short (fewer rows than the TA anchored), a rewritten one (another anchor at
//! the TA's `seq`), and a checkpoint missing from the host's table (a gap in the numbers).

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::types::B256;
use crate::{Command, CommandId};

/// The anchor before the first row.
pub const ANCHOR_GENESIS: B256 = [0; 32];

/// Most row hashes one [`AuditCheckpoint`] takes (128 KiB of hashes); the host sends a longer
/// gap as several checkpoints.
pub const MAX_CHECKPOINT_ROWS: usize = 4096;

/// One step of the anchor: `SHA-256("kms-audit-anchor/v1" ‖ prev ‖ seq ‖ row_hash)`.
pub fn anchor_step(prev: &B256, seq: u64, row_hash: &B256) -> B256 {
    let mut h = Sha256::new();
    h.update(b"kms-audit-anchor/v1");
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(row_hash);
    h.finalize().into()
}

/// The audit key's id: `SHA-256("kms-audit-key/v1" ‖ SEC1 compressed public key)`.
pub fn key_id(public_key: &[u8]) -> B256 {
    let mut h = Sha256::new();
    h.update(b"kms-audit-key/v1");
    h.update(public_key);
    h.finalize().into()
}

/// The digest the TA signs for a checkpoint (every field but the signature):
/// `SHA-256("kms-audit-checkpoint/v1" ‖ key_id ‖ index ‖ seq ‖ anchor ‖ row_head ‖ ta_time)`,
/// integers u64 big-endian. Signed raw (ECDSA secp256k1, RFC 6979, low-S).
pub fn checkpoint_digest(cp: &SignedCheckpoint) -> B256 {
    let mut h = Sha256::new();
    h.update(b"kms-audit-checkpoint/v1");
    h.update(cp.key_id);
    h.update(cp.index.to_be_bytes());
    h.update(cp.seq.to_be_bytes());
    h.update(cp.anchor);
    h.update(cp.row_head);
    h.update(cp.ta_time.to_be_bytes());
    h.finalize().into()
}

/// Anchor the host's audit log (command id 25).
///
/// `row_hashes` are the hashes of rows `after_seq + 1 ..= after_seq + len`, in order (1 to
/// [`MAX_CHECKPOINT_ROWS`]). The TA refuses the call unless `after_seq` is the `seq` of its own
/// last checkpoint (0 before the first): [`crate::TaError::AuditCheckpointOutOfStep`] naming
/// its `seq` (another checkpoint came first; read [`AuditAnchor`] and start again from there).
/// It folds the hashes into its stored anchor with [`anchor_step`], stores the result and
/// returns it signed. No passkey: it only ever adds a commitment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCheckpoint {
    /// The `seq` of the TA's last checkpoint, as the host read it.
    pub after_seq: u64,
    /// The hashes of the rows that follow it, in order.
    pub row_hashes: Vec<B256>,
}

/// A checkpoint signed by the TA's audit key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    /// Its number: 1 for the first checkpoint the TA signed, then 2, 3, ...
    pub index: u64,
    /// The last row it covers.
    pub seq: u64,
    /// The anchor over rows `1..=seq`.
    pub anchor: B256,
    /// The hash of row `seq` (32 zero bytes for `seq` 0).
    pub row_head: B256,
    /// The TA clock when it was signed (unix seconds).
    pub ta_time: u64,
    /// [`key_id`] of the audit key.
    pub key_id: B256,
    /// `r ‖ s ‖ v` (65 bytes) over [`checkpoint_digest`].
    pub signature: Vec<u8>,
}

impl Command for AuditCheckpoint {
    const ID: CommandId = CommandId::AuditCheckpoint;
    type Output = SignedCheckpoint;
}

/// The audit key and the TA's last checkpoint (command id 26). Changes nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAnchor {}

/// What [`AuditAnchor`] answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAnchorInfo {
    /// The audit key, SEC1 compressed (33 bytes); `None` until the first checkpoint.
    pub public_key: Option<Vec<u8>>,
    /// The last checkpoint the TA signed (the one its anchor is at); `None` before the first.
    pub last: Option<SignedCheckpoint>,
}

impl Command for AuditAnchor {
    const ID: CommandId = CommandId::AuditAnchor;
    type Output = AuditAnchorInfo;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp() -> SignedCheckpoint {
        SignedCheckpoint {
            index: 1,
            seq: 2,
            anchor: [3; 32],
            row_head: [4; 32],
            ta_time: 5,
            key_id: [6; 32],
            signature: Vec::new(),
        }
    }

    #[test]
    fn the_anchor_depends_on_order_position_and_every_hash() {
        let a = anchor_step(&ANCHOR_GENESIS, 1, &[1; 32]);
        let ab = anchor_step(&a, 2, &[2; 32]);
        let b = anchor_step(&ANCHOR_GENESIS, 1, &[2; 32]);
        let ba = anchor_step(&b, 2, &[1; 32]);
        assert_ne!(ab, ba);
        assert_ne!(a, anchor_step(&ANCHOR_GENESIS, 2, &[1; 32]));
        assert_ne!(ab, anchor_step(&a, 2, &[3; 32]));
    }

    #[test]
    fn every_field_is_signed_but_the_signature() {
        let base = checkpoint_digest(&cp());
        let variants: [fn(&mut SignedCheckpoint); 6] = [
            |c| c.index += 1,
            |c| c.seq += 1,
            |c| c.anchor[0] ^= 1,
            |c| c.row_head[0] ^= 1,
            |c| c.ta_time += 1,
            |c| c.key_id[0] ^= 1,
        ];
        for f in variants {
            let mut c = cp();
            f(&mut c);
            assert_ne!(checkpoint_digest(&c), base);
        }
        let mut c = cp();
        c.signature = alloc::vec![1; 65];
        assert_eq!(checkpoint_digest(&c), base);
    }
}
