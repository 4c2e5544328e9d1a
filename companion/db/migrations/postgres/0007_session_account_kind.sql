-- The kind of account a session is on (issue 16 item 4), PostgreSQL dialect of
-- migrations/sqlite/0007_session_account_kind.sql (see the comments there).
ALTER TABLE agent_sessions ADD COLUMN account_kind TEXT NOT NULL DEFAULT 'agent-account'
    CHECK (account_kind IN ('agent-account', 'erc7579'));
ALTER TABLE agent_sessions ADD COLUMN lane BIGINT
    CHECK (lane IS NULL OR (lane BETWEEN 1 AND 65535));
