-- Several TEE devices (issue 19 item 4; docs/DEPLOY.md): the TA holding each wallet's seed.
--   ta_id   the TA's identity: its operator key's address (`0x` lowercase hex; created once in
--           the TA from its own randomness, never changed). NULL: a wallet registered before this
--           column; the first companion to start on the database after the upgrade records its
--           own TA on them (the one TA a database had until then).
ALTER TABLE wallets ADD COLUMN ta_id TEXT;
