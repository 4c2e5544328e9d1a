-- Initial schema of the key companion (DESIGN §7).
-- Times are unix seconds (INTEGER). Hex strings are lowercase, 0x-prefixed
-- for Ethereum values, plain for digests.

-- Human wallets (one per TA wallet).
CREATE TABLE wallets (
    key_id          TEXT PRIMARY KEY,          -- wallet UUID (TA wallet id)
    description     TEXT NOT NULL DEFAULT '',
    key_usage       TEXT NOT NULL DEFAULT 'SIGN_VERIFY',
    key_spec        TEXT NOT NULL DEFAULT 'ECC_SECG_P256K1',
    origin          TEXT NOT NULL DEFAULT 'EXTERNAL_KMS',
    address         TEXT NOT NULL,             -- owner address m/44'/60'/0'/0/0
    public_key      TEXT NOT NULL,             -- owner key, SEC1 compressed hex
    derivation_path TEXT NOT NULL,
    rp_id           TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'ready',
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX wallets_address ON wallets(address);

-- The passkey bound to each wallet (the serialised webauthn-rs Passkey).
CREATE TABLE passkey_credentials (
    wallet_id       TEXT PRIMARY KEY REFERENCES wallets(key_id) ON DELETE CASCADE,
    credential_id   TEXT NOT NULL,             -- base64url
    public_key      TEXT NOT NULL,             -- P-256 SEC1 uncompressed hex
    passkey_json    TEXT NOT NULL,
    sign_count      INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX passkey_credentials_credential_id ON passkey_credentials(credential_id);

-- Addresses derived for a wallet (owner address and DeriveAddress results),
-- so Sign/SignHash may name an address instead of KeyId + path.
CREATE TABLE wallet_addresses (
    address         TEXT PRIMARY KEY,          -- 0x lowercase
    wallet_id       TEXT NOT NULL REFERENCES wallets(key_id) ON DELETE CASCADE,
    derivation_path TEXT NOT NULL,
    public_key      TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX wallet_addresses_wallet ON wallet_addresses(wallet_id);

-- WebAuthn ceremonies in progress (single use, 300 s).
CREATE TABLE challenges (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,             -- registration | authentication
    wallet_id       TEXT,                      -- bound wallet (authentication, change-passkey registration)
    purpose         TEXT NOT NULL,
    payload_digest  TEXT,                      -- hex SHA-256 payload digest the challenge commits to
    state_json      TEXT NOT NULL,             -- serialised webauthn-rs ceremony state
    metadata_json   TEXT,                      -- registration metadata (description, ...)
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    used_at         INTEGER
);
CREATE INDEX challenges_expires_at ON challenges(expires_at);

-- API keys: `kms_<id>_<secret>`; only SHA-256(secret) is stored.
CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY,
    secret_hash     TEXT NOT NULL,
    label           TEXT NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL,
    last_used_at    INTEGER,
    revoked_at      INTEGER
);

-- Agent keys m/44'/60'/0'/1/<agent_index>.
CREATE TABLE agent_keys (
    wallet_id       TEXT NOT NULL REFERENCES wallets(key_id) ON DELETE CASCADE,
    agent_index     INTEGER NOT NULL,
    label           TEXT NOT NULL DEFAULT '',
    status          TEXT NOT NULL,             -- pending | active | revoked | failed
    agent_address   TEXT,
    public_key      TEXT,
    credential_hash TEXT,                      -- hex SHA-256(jwt); the JWT itself is never stored
    credential_jwt  TEXT,                      -- always NULL (kept for upstream shape)
    kid             TEXT,
    generation      INTEGER,
    issued_at       INTEGER,
    expires_at      INTEGER,
    failure         TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    revoked_at      INTEGER,
    -- On-chain session (SessionKeyValidator), filled by a later issue.
    account         TEXT,
    targets         TEXT,                      -- JSON array of addresses
    spend_cap       TEXT,                      -- decimal wei
    valid_after     INTEGER,
    valid_until     INTEGER,
    revoker         TEXT,
    session_tx_hash TEXT,
    PRIMARY KEY (wallet_id, agent_index)
);
CREATE INDEX agent_keys_address ON agent_keys(agent_address);

-- JWT HMAC secret metadata, kept true to the TA's JwtSecretStatus.
CREATE TABLE jwt_secret_meta (
    kid             TEXT PRIMARY KEY,
    status          TEXT NOT NULL,             -- current | verify-only | retired
    created_at      INTEGER NOT NULL,
    retire_at       INTEGER,
    retired_at      INTEGER,
    updated_at      INTEGER NOT NULL
);

-- Agent intents (UserOperations); filled by a later issue.
CREATE TABLE intents (
    user_op_hash    TEXT PRIMARY KEY,
    key_id          TEXT NOT NULL,
    wallet_id       TEXT,
    agent_index     INTEGER,
    account         TEXT,
    status          TEXT NOT NULL,
    chain_id        INTEGER,
    entry_point     TEXT,
    calls_json      TEXT,
    user_op_json    TEXT,
    tx_hash         TEXT,
    error           TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX intents_key_id ON intents(key_id);

-- Append-only audit log; each row commits to the previous one.
CREATE TABLE audit_log (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    ts              INTEGER NOT NULL,
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    key_id          TEXT,
    outcome         TEXT NOT NULL,
    user_op_hash    TEXT,
    detail          TEXT,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
