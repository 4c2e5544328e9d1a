-- jwt_secret_meta per TA (issue 19, several TEE devices; docs/DEPLOY.md): each TA has its own
-- JWT secrets, so each TA's kids are recorded under its name instead of the table mirroring the
-- TA of whichever companion synced it last.
--   ta_id   the TA's identity, as wallets.ta_id: its operator key's address (`0x` lowercase
--           hex). '' for the rows recorded before this column (and for a TA that has no operator
--           key yet): the next sync by a TA records them under that TA's name (the one TA a
--           database had until then), so their history is kept.
-- SQLite cannot change a primary key in place: the table is rebuilt with its rows.
CREATE TABLE jwt_secret_meta_per_ta (
    ta_id           TEXT NOT NULL DEFAULT '',
    kid             TEXT NOT NULL,
    status          TEXT NOT NULL,             -- current | verify-only | retired
    created_at      INTEGER NOT NULL,
    retire_at       INTEGER,
    retired_at      INTEGER,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (ta_id, kid)
);
INSERT INTO jwt_secret_meta_per_ta (ta_id, kid, status, created_at, retire_at, retired_at, updated_at)
    SELECT '', kid, status, created_at, retire_at, retired_at, updated_at FROM jwt_secret_meta;
DROP TABLE jwt_secret_meta;
ALTER TABLE jwt_secret_meta_per_ta RENAME TO jwt_secret_meta;
