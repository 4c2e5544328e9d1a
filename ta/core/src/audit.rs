//! The audit anchor (see [`kms_proto::audit`]): a secp256k1 key of its own and the last
//! checkpoint, in one sealed record.
//!
//! [`AuditCheckpoint`] folds the row hashes the host sends into the stored anchor, so a new
//! checkpoint always extends the previous one: the host chooses which hashes come next, never
//! what came before. The record lives in the sealed state, whose version is checked against the
//! monotonic counter (see [`crate::rollback`]): putting back an older copy, to make the TA
//! forget checkpoints it signed, is refused like any other rollback.
//!
//! The key is made from TA randomness on the first checkpoint, in the same write as that
//! checkpoint; it signs nothing but checkpoint digests (domain-separated:
//! [`kms_proto::audit::checkpoint_digest`]) and is never exported.

use kms_proto::audit::{
    anchor_step, checkpoint_digest, key_id, ANCHOR_GENESIS, MAX_CHECKPOINT_ROWS,
};
use kms_proto::{
    AuditAnchor, AuditAnchorInfo, AuditCheckpoint, SignedCheckpoint, StorageFault, TaError,
};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::keys::DerivedKey;
use crate::records::{self, RECORD_VERSION};
use crate::{Clock, Entropy, MonotonicCounter, SealedStorage, TaCore, WriteOp};

/// Storage key of the audit record.
pub(crate) const AUDIT_KEY: &str = "audit";

/// The audit key and the last checkpoint it signed.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub(crate) struct AuditRecord {
    pub version: u8,
    pub secret: [u8; 32],
    pub created_at: u64,
    /// The last checkpoint (`None` only in a record written before its first one, which the
    /// core never does: the key is created with the first checkpoint).
    #[zeroize(skip)]
    pub last: Option<SignedCheckpoint>,
}

fn signer(record: &AuditRecord) -> Result<DerivedKey, TaError> {
    let sk =
        k256::ecdsa::SigningKey::from_slice(&record.secret).map_err(|_| StorageFault::Corrupt)?;
    Ok(DerivedKey::from_signing_key(sk))
}

impl<S: SealedStorage, E: Entropy, C: Clock, M: MonotonicCounter> TaCore<S, E, C, M> {
    fn audit_record(&mut self) -> Result<Option<AuditRecord>, TaError> {
        match self.storage.read(AUDIT_KEY)? {
            Some(bytes) => Ok(Some(records::decode(&Zeroizing::new(bytes))?)),
            None => Ok(None),
        }
    }

    /// [`AuditAnchor`]: the audit key and the last checkpoint.
    pub(crate) fn audit_anchor(&mut self, _: AuditAnchor) -> Result<AuditAnchorInfo, TaError> {
        let Some(record) = self.audit_record()? else {
            return Ok(AuditAnchorInfo {
                public_key: None,
                last: None,
            });
        };
        Ok(AuditAnchorInfo {
            public_key: Some(signer(&record)?.public_key.to_vec()),
            last: record.last.clone(),
        })
    }

    /// [`AuditCheckpoint`]: extend the anchor by the given row hashes, store it, sign it.
    pub(crate) fn audit_checkpoint(
        &mut self,
        req: AuditCheckpoint,
    ) -> Result<SignedCheckpoint, TaError> {
        if req.row_hashes.is_empty() || req.row_hashes.len() > MAX_CHECKPOINT_ROWS {
            return Err(TaError::AuditBatchInvalid {
                max: MAX_CHECKPOINT_ROWS as u32,
            });
        }
        let now = self.clock.now();
        let mut record = match self.audit_record()? {
            Some(r) => r,
            None => loop {
                let secret = self.random::<32>()?;
                if k256::ecdsa::SigningKey::from_slice(&secret[..]).is_ok() {
                    break AuditRecord {
                        version: RECORD_VERSION,
                        secret: *secret,
                        created_at: now,
                        last: None,
                    };
                }
            },
        };
        let (index, mut seq, mut anchor) = match &record.last {
            Some(l) => (l.index, l.seq, l.anchor),
            None => (0, 0, ANCHOR_GENESIS),
        };
        if req.after_seq != seq {
            return Err(TaError::AuditCheckpointOutOfStep { anchored_seq: seq });
        }
        for h in &req.row_hashes {
            seq = seq.checked_add(1).ok_or(TaError::LimitReached)?;
            anchor = anchor_step(&anchor, seq, h);
        }
        let key = signer(&record)?;
        let mut checkpoint = SignedCheckpoint {
            index: index.checked_add(1).ok_or(TaError::LimitReached)?,
            seq,
            anchor,
            row_head: *req.row_hashes.last().ok_or(TaError::Internal)?,
            ta_time: now,
            key_id: key_id(&key.public_key),
            signature: alloc::vec::Vec::new(),
        };
        checkpoint.signature = key.sign_digest(&checkpoint_digest(&checkpoint))?.to_vec();
        record.last = Some(checkpoint.clone());
        let bytes = records::encode(&record)?;
        self.commit(&[WriteOp::Put(AUDIT_KEY, &bytes)])?;
        Ok(checkpoint)
    }
}
