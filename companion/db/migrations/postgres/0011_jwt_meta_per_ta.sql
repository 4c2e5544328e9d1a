-- jwt_secret_meta per TA (issue 19), PostgreSQL dialect of
-- migrations/sqlite/0011_jwt_meta_per_ta.sql (see the comments there). The rows recorded before
-- get ta_id '' and are kept.
ALTER TABLE jwt_secret_meta ADD COLUMN ta_id TEXT NOT NULL DEFAULT '';
ALTER TABLE jwt_secret_meta DROP CONSTRAINT jwt_secret_meta_pkey;
ALTER TABLE jwt_secret_meta ADD PRIMARY KEY (ta_id, kid);
