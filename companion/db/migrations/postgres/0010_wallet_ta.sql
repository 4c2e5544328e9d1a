-- Several TEE devices (issue 19 item 4), PostgreSQL dialect of
-- migrations/sqlite/0010_wallet_ta.sql (see the comments there).
ALTER TABLE wallets ADD COLUMN ta_id TEXT;
