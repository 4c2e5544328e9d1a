-- ERC-7715 permission requests (issue 17 item 7), PostgreSQL dialect of
-- migrations/sqlite/0008_permission_requests.sql (see the comments there). `rowid` stands for
-- SQLite's implicit rowid (insertion order, the tie-break of `ORDER BY created_at DESC, rowid DESC`).
CREATE TABLE permission_requests (
    id              TEXT PRIMARY KEY,
    wallet_id       TEXT NOT NULL REFERENCES wallets(key_id) ON DELETE CASCADE,
    requester       TEXT NOT NULL,
    request_json    TEXT NOT NULL,
    session_json    TEXT NOT NULL,
    granted_json    TEXT NOT NULL,
    dropped_json    TEXT NOT NULL,
    status          TEXT NOT NULL
        CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
    key_id          TEXT,
    account         TEXT,
    credential_to   TEXT CHECK (credential_to IS NULL OR credential_to IN ('requester', 'owner')),
    result_json     TEXT,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    decided_at      BIGINT,
    rowid           BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE
);
CREATE INDEX permission_requests_wallet ON permission_requests(wallet_id, status);
