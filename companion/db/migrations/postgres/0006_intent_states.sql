-- Truthful intent statuses (issue 14 items 2 and 3), PostgreSQL dialect of
-- migrations/sqlite/0006_intent_states.sql (see the comments there): the same columns, index
-- and guards; the guards are PL/pgSQL trigger functions raising the same messages.
ALTER TABLE intents ADD COLUMN status_reason TEXT;
ALTER TABLE intents ADD COLUMN evidence_json TEXT;
ALTER TABLE intents ADD COLUMN next_check_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE intents ADD COLUMN idle_checks BIGINT NOT NULL DEFAULT 0;
ALTER TABLE intents ADD COLUMN settled_at BIGINT;
ALTER TABLE intents ADD COLUMN first_block BIGINT;

CREATE INDEX intents_due ON intents(next_check_at) WHERE status IN ('signed', 'pending');

CREATE FUNCTION intents_status_known() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status NOT IN ('signed', 'pending', 'included', 'failed', 'dropped', 'replaced',
                          'cancelled') THEN
        RAISE EXCEPTION 'intents: unknown status';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER intents_status_known BEFORE INSERT ON intents
    FOR EACH ROW EXECUTE FUNCTION intents_status_known();

CREATE FUNCTION intents_status_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'intents: status transition not allowed';
END;
$$;
CREATE TRIGGER intents_status_transition BEFORE UPDATE OF status ON intents
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status AND NOT (
        (OLD.status = 'signed'
            AND NEW.status IN ('pending', 'included', 'failed', 'dropped', 'replaced', 'cancelled'))
        OR (OLD.status = 'pending'
            AND NEW.status IN ('included', 'failed', 'dropped', 'replaced', 'cancelled'))))
    EXECUTE FUNCTION intents_status_transition();
