-- Several companions on one database (issue 19 item 3), PostgreSQL dialect of
-- migrations/sqlite/0009_replicas.sql (see the comments there).
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
