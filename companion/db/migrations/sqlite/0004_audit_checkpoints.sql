-- Anchored audit (issue 13 item 5): the checkpoints of the audit log signed by the TA's audit
-- key (kms_proto::audit). Each one commits, through the TA's anchor, to every audit_log row up to
-- `seq`; `kms-admin audit verify` checks them against the TA's own last checkpoint.
--   idx        the TA's checkpoint number (1, 2, ...): a gap is a checkpoint missing here. The
--              same number twice (a fork) happens only after the TA's state was restored
--              (kms-admin accept-restore): the TA numbers again from the restored checkpoint;
--              both are kept, as evidence
--   seq        the last audit_log row it covers
--   anchor     hex SHA-256 anchor over the row hashes 1..=seq (kms-audit-anchor/v1)
--   row_head   hex hash of row seq
--   ta_time    the TA clock when it was signed (unix seconds)
--   key_id     hex id of the TA's audit key
--   signature  hex r||s||v over the checkpoint digest (kms-audit-checkpoint/v1)
--   created_at when this row was written (host clock)
CREATE TABLE audit_checkpoints (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    idx         INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    anchor      TEXT NOT NULL,
    row_head    TEXT NOT NULL,
    ta_time     INTEGER NOT NULL,
    key_id      TEXT NOT NULL,
    signature   TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (idx, signature)
);
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
