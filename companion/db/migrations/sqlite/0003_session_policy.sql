-- Bounded sessions (issue 12): the whole grant, and what each intent charges its session.
--   agent_keys.session_json     the SessionGrant as granted (targets with their selectors, token
--                               caps, gas cap, paymaster, usage limit, window, revoker), JSON
--   intents.max_gas_cost_wei    the operation's maximum gas cost charged to the gas budget
--                               (decimal wei), for the in-flight gas budget
--   intents.token_amounts_json  token amounts it counts against token caps, {"0xtoken": "amount"}
ALTER TABLE agent_keys ADD COLUMN session_json TEXT;
ALTER TABLE intents ADD COLUMN max_gas_cost_wei TEXT;
ALTER TABLE intents ADD COLUMN token_amounts_json TEXT;
