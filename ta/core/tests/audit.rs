//! The audit anchor (`AuditCheckpoint`, `AuditAnchor`): a checkpoint extends the TA's stored
//! anchor and nothing else, is signed by a key of the TA's own, and cannot be rolled back.

mod common;

use common::*;
use k256::ecdsa::signature::hazmat::PrehashVerifier;
use kms_proto::audit::{
    anchor_step, checkpoint_digest, key_id, ANCHOR_GENESIS, MAX_CHECKPOINT_ROWS,
};
use kms_proto::*;
use kms_ta::STATE_VERSION_KEY;

fn row(i: u8) -> [u8; 32] {
    [i; 32]
}

fn fold(hashes: &[[u8; 32]]) -> [u8; 32] {
    hashes
        .iter()
        .enumerate()
        .fold(ANCHOR_GENESIS, |a, (i, h)| anchor_step(&a, i as u64 + 1, h))
}

fn checkpoint(
    h: &mut Harness,
    after_seq: u64,
    rows: &[[u8; 32]],
) -> Result<SignedCheckpoint, TaError> {
    h.call(&AuditCheckpoint {
        after_seq,
        row_hashes: rows.to_vec(),
    })
}

fn anchor(h: &mut Harness) -> AuditAnchorInfo {
    h.call(&AuditAnchor {}).unwrap()
}

fn verifies(public_key: &[u8], cp: &SignedCheckpoint) -> bool {
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key).unwrap();
    let sig = k256::ecdsa::Signature::from_slice(&cp.signature[..64]).unwrap();
    cp.signature.len() == 65 && vk.verify_prehash(&checkpoint_digest(cp), &sig).is_ok()
}

fn sealed_version(h: &Harness) -> u64 {
    h.storage
        .map
        .borrow()
        .get(STATE_VERSION_KEY)
        .map(|b| u64::from_be_bytes(b.as_slice().try_into().unwrap()))
        .unwrap_or(0)
}

#[test]
fn checkpoints_extend_the_anchor_and_are_signed_by_the_audit_key() {
    let mut h = Harness::new();
    // Before the first checkpoint: no key, no checkpoint, and reading creates nothing.
    assert_eq!(
        anchor(&mut h),
        AuditAnchorInfo {
            public_key: None,
            last: None
        }
    );
    assert_eq!(sealed_version(&h), 0);

    let rows: Vec<[u8; 32]> = (1..=5).map(row).collect();
    let first = checkpoint(&mut h, 0, &rows[..3]).unwrap();
    assert_eq!((first.index, first.seq), (1, 3));
    assert_eq!(first.anchor, fold(&rows[..3]));
    assert_eq!(first.row_head, rows[2]);
    assert_eq!(first.ta_time, T0);
    let info = anchor(&mut h);
    let pk = info.public_key.clone().unwrap();
    assert_eq!(pk.len(), 33);
    assert_eq!(first.key_id, key_id(&pk));
    assert!(verifies(&pk, &first));
    assert_eq!(info.last.as_ref(), Some(&first));

    // The next one starts where the first ends; its anchor covers every row from the first.
    h.advance(60);
    let second = checkpoint(&mut h, 3, &rows[3..]).unwrap();
    assert_eq!((second.index, second.seq), (2, 5));
    assert_eq!(second.anchor, fold(&rows));
    assert_eq!(second.row_head, rows[4]);
    assert_eq!(second.ta_time, T0 + 60);
    assert!(verifies(&pk, &second));
    assert_eq!(anchor(&mut h).last, Some(second.clone()));

    // A signature does not carry over to another checkpoint (every field is signed).
    let mut forged = second.clone();
    forged.seq = 4;
    assert!(!verifies(&pk, &forged));

    // The key and the anchor survive a restart; the key is not the operator key.
    h.restart();
    let after = anchor(&mut h);
    assert_eq!(after.public_key.as_deref(), Some(pk.as_slice()));
    assert_eq!(after.last, Some(second));
    let op = h
        .call(&OperatorKey {
            create_if_missing: true,
        })
        .unwrap();
    assert_ne!(op.public_key, pk);
}

#[test]
fn a_checkpoint_that_does_not_extend_the_last_one_is_refused() {
    let mut h = Harness::new();
    let rows: Vec<[u8; 32]> = (1..=3).map(row).collect();
    let first = checkpoint(&mut h, 0, &rows).unwrap();
    let version = sealed_version(&h);
    let out_of_step = Err(TaError::AuditCheckpointOutOfStep { anchored_seq: 3 });
    // A rewritten history, from the start or from inside the anchored rows: refused.
    assert_eq!(
        checkpoint(&mut h, 0, &[row(9), row(9), row(9), row(9)]),
        out_of_step
    );
    assert_eq!(checkpoint(&mut h, 2, &[row(9), row(9)]), out_of_step);
    // A gap (rows skipped): refused too.
    assert_eq!(checkpoint(&mut h, 4, &[row(9)]), out_of_step);
    // Empty and oversize batches.
    let invalid = Err(TaError::AuditBatchInvalid {
        max: MAX_CHECKPOINT_ROWS as u32,
    });
    assert_eq!(checkpoint(&mut h, 3, &[]), invalid);
    assert_eq!(
        checkpoint(&mut h, 3, &vec![row(1); MAX_CHECKPOINT_ROWS + 1]),
        invalid
    );
    // Nothing changed.
    assert_eq!(sealed_version(&h), version);
    assert_eq!(anchor(&mut h).last, Some(first));
    // The largest batch is taken.
    let big = checkpoint(&mut h, 3, &vec![row(7); MAX_CHECKPOINT_ROWS]).unwrap();
    assert_eq!(big.seq, 3 + MAX_CHECKPOINT_ROWS as u64);
}

#[test]
fn a_rolled_back_checkpoint_is_refused() {
    let mut h = Harness::new();
    checkpoint(&mut h, 0, &[row(1), row(2)]).unwrap();
    let older = h.storage.map.borrow().clone();
    let newer = checkpoint(&mut h, 2, &[row(3)]).unwrap();
    // The host puts the older sealed state back, to make the TA forget the newer checkpoint
    // (and anchor a rewritten row 3): the TA refuses it.
    *h.storage.map.borrow_mut() = older;
    h.restart();
    let refused = |r: Result<(), TaError>| matches!(r, Err(TaError::StateRolledBack { .. }));
    assert!(refused(h.call(&AuditAnchor {}).map(|_| ())));
    assert!(refused(checkpoint(&mut h, 2, &[row(9)]).map(|_| ())));
    assert!(kms_ta::touches_state(CommandId::AuditCheckpoint));
    assert!(kms_ta::touches_state(CommandId::AuditAnchor));
    // Explicitly accepting the restore is the operator's decision; the anchor is then the
    // restored one (documented: checkpoints signed since the copy are no longer in the TA).
    h.call(&AcceptRestore {}).unwrap();
    let after = anchor(&mut h).last.unwrap();
    assert_eq!((after.index, after.seq), (1, 2));
    assert_ne!(after, newer);
}
