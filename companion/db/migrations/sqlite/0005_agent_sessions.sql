-- Sessions are rows of their own (issue 14 item 1): one row per grant of a session to an agent key
-- on one of its owner's accounts, so that an agent granted on several accounts keeps every one of
-- them, and a grant that never lands never replaces anything.
--   account         the owner's smart account (0x lowercase)
--   status          pending        the owner's operation was submitted; not known to be included
--                   active         included and executed successfully: a live session on chain
--                   failed         never became a session: refused by the bundler, its execution
--                                  reverted, or dropped (the owner's nonce passed without it, or
--                                  it was not included in time); `error` says which
--                   superseded     a later grant to the same agent on the same account replaced it
--                                  on chain (the validator keeps one session per agent and account)
--                   revoked        revoked on chain by the operator (or found revoked or absent)
--                   revoke_failed  the operator's revokeSession failed (`error`); still live on
--                                  chain, retried by the next revocation
--   grant_json      the SessionGrant as granted (kms_chain::session::SessionGrant, JSON); NULL for
--                   sessions recorded before grants carried functions, tokens and a gas cap
--   targets         the addresses it may call (targets then tokens), JSON array
--   spend_cap       native-value cap (decimal wei); valid_after/valid_until its window (unix s)
--   revoker         who may revoke it besides the account (the operator key)
--   user_op_hash    the owner's UserOperation that grants it; user_op_json that operation (the
--                   background task looks its receipt up, and checks the owner's nonce)
--   tx_hash         the bundle transaction that included the grant
--   revoke_tx_hash  the operator's revokeSession transaction
--   activated_at    when it became active (the most recently activated active session is the one
--                   an intent uses when it names no account)
CREATE TABLE agent_sessions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    wallet_id       TEXT NOT NULL,
    agent_index     INTEGER NOT NULL,
    account         TEXT NOT NULL,
    status          TEXT NOT NULL,
    grant_json      TEXT,
    targets         TEXT,
    spend_cap       TEXT,
    valid_after     INTEGER,
    valid_until     INTEGER,
    revoker         TEXT,
    user_op_hash    TEXT,
    user_op_json    TEXT,
    tx_hash         TEXT,
    error           TEXT,
    revoke_tx_hash  TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    activated_at    INTEGER,
    revoked_at      INTEGER,
    FOREIGN KEY (wallet_id, agent_index) REFERENCES agent_keys(wallet_id, agent_index)
        ON DELETE CASCADE
);
CREATE INDEX agent_sessions_agent ON agent_sessions(wallet_id, agent_index);
CREATE INDEX agent_sessions_status ON agent_sessions(status);
CREATE INDEX agent_sessions_user_op ON agent_sessions(user_op_hash);

-- The one session each agent_keys row held (the last grant, recorded at submission and again at
-- inclusion) becomes an `active` row: whether a grant recorded without its transaction was ever
-- included is not known, and its operation was not kept, so it cannot be settled; as `active` the
-- next revocation sends revokeSession for it, and a session that is not on chain is reported so
-- (`not_on_chain`) and closed. Revoked agents' sessions too: revoking again finds them revoked on
-- chain (or revokes them) and closes them.
INSERT INTO agent_sessions (wallet_id, agent_index, account, status, grant_json, targets,
    spend_cap, valid_after, valid_until, revoker, tx_hash, created_at, updated_at, activated_at)
SELECT wallet_id, agent_index, lower(account), 'active', session_json, targets, spend_cap,
    valid_after, valid_until, revoker, session_tx_hash, updated_at, updated_at, updated_at
FROM agent_keys WHERE account IS NOT NULL;

-- The session columns of agent_keys are gone: nothing can read a session from them any more.
ALTER TABLE agent_keys DROP COLUMN account;
ALTER TABLE agent_keys DROP COLUMN targets;
ALTER TABLE agent_keys DROP COLUMN spend_cap;
ALTER TABLE agent_keys DROP COLUMN valid_after;
ALTER TABLE agent_keys DROP COLUMN valid_until;
ALTER TABLE agent_keys DROP COLUMN revoker;
ALTER TABLE agent_keys DROP COLUMN session_tx_hash;
ALTER TABLE agent_keys DROP COLUMN session_json;
