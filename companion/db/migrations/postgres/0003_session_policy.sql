-- Bounded sessions (issue 12), PostgreSQL dialect of migrations/sqlite/0003_session_policy.sql.
ALTER TABLE agent_keys ADD COLUMN session_json TEXT;
ALTER TABLE intents ADD COLUMN max_gas_cost_wei TEXT;
ALTER TABLE intents ADD COLUMN token_amounts_json TEXT;
