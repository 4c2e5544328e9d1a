-- The kind of account a session is on (issue 16 item 4), recorded at grant:
--   account_kind   agent-account  the project's AgentAccount (the validator's own path; an agent's
--                                 nonce key is its key address)
--                  erc7579        a third-party ERC-7579 account with SessionKeyValidator installed
--                                 as its validator module (ERC-7579 execute calldata; an agent's
--                                 nonce key is validator ‖ lane ‖ period)
--   lane           on an erc7579 account, the lane the validator gave the agent key there at its
--                  first grant (getSession(account, key).lane, 1..65535), read once the grant is
--                  included; NULL on agent-account, and on an erc7579 grant not yet included
-- Every session recorded before this migration is on an AgentAccount.
ALTER TABLE agent_sessions ADD COLUMN account_kind TEXT NOT NULL DEFAULT 'agent-account'
    CHECK (account_kind IN ('agent-account', 'erc7579'));
ALTER TABLE agent_sessions ADD COLUMN lane INTEGER
    CHECK (lane IS NULL OR (lane BETWEEN 1 AND 65535));
