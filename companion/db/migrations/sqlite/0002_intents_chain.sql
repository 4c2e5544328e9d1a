-- Intents on chain (issue 5): what an agent intent became.
--   nonce            the UserOperation's nonce (0x hex, key ‖ sequence)
--   value_wei        total native value of its calls (decimal wei), for the in-flight budget
--   idempotency_key  the client's Idempotency-Key, unique per agent key
--   receipt_json     the bundler's receipt once included
ALTER TABLE intents ADD COLUMN nonce TEXT;
ALTER TABLE intents ADD COLUMN value_wei TEXT;
ALTER TABLE intents ADD COLUMN idempotency_key TEXT;
ALTER TABLE intents ADD COLUMN receipt_json TEXT;
CREATE UNIQUE INDEX intents_idempotency ON intents(key_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX intents_status ON intents(status);
