-- ERC-7715 permission requests (issue 17 item 7): a dapp's `wallet_grantPermissions` (POST /rpc)
-- becomes one row, which the owner approves or cancels on /ui; the JSON-RPC call waits on it
-- (bounded by --permission-request-timeout-secs). Nothing here is secret: an agent credential is
-- never stored (only handed over in memory to the waiting call, when the owner chose so).
--   id              random, 0x-less hex (16 bytes)
--   wallet_id       the owner's wallet the request names (by its owner address)
--   requester       who asked: the API key's actor (`api-key:<id>`, `open`)
--   request_json    the request's params[0] as received
--   session_json    the session it maps onto: the /kms/agent-sessions fields without keyId
--   granted_json    the permissions that will be granted (the request's format)
--   dropped_json    the `required: false` permissions that cannot be granted, with why
--   status          pending   waiting for the owner
--                   approved  the owner granted the session (key_id, account, result_json)
--                   rejected  the owner cancelled (the dapp got 4001)
--                   expired   nobody decided before expires_at (the dapp got -32011)
--   expires_at      when a pending request stops being answerable (unix s)
--   credential_to   who got the agent credential: `requester` or `owner`
--   result_json     the JSON-RPC result as answered, without the credential
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
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    decided_at      INTEGER
);
CREATE INDEX permission_requests_wallet ON permission_requests(wallet_id, status);
