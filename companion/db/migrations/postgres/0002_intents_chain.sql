-- Intents on chain (issue 5), PostgreSQL dialect of migrations/sqlite/0002_intents_chain.sql.
ALTER TABLE intents ADD COLUMN nonce TEXT;
ALTER TABLE intents ADD COLUMN value_wei TEXT;
ALTER TABLE intents ADD COLUMN idempotency_key TEXT;
ALTER TABLE intents ADD COLUMN receipt_json TEXT;
CREATE UNIQUE INDEX intents_idempotency ON intents(key_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX intents_status ON intents(status);
