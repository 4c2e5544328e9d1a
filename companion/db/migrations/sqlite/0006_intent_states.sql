-- Truthful intent statuses (issue 14 items 2 and 3): a state machine whose transitions are
-- guarded here as well as in every UPDATE (kms_db::IntentStatus), the evidence of each status,
-- and the background task's schedule.
--
-- Statuses: signed, pending (open); included, failed, dropped, replaced, cancelled (terminal).
--   signed  -> pending | included | failed | dropped | replaced | cancelled
--   pending -> included | failed | dropped | replaced | cancelled
-- A terminal status never changes (an `included` row can never become `failed`).
--
--   status_reason   why the intent has its status, a machine-readable code (kms_db::IntentReason:
--                   accepted, already_known, receipt, entry_point_event, execution_reverted,
--                   bundler_rejected, nonce_passed, expired, agent_revoked, ...)
--   evidence_json   what showed it (JSON): the receipt or EntryPoint event, the bundler's answer,
--                   the EntryPoint nonce seen and the operation that used it, the revocation
--   next_check_at   when the background task looks at the open intent next (unix seconds)
--   idle_checks     checks in a row that changed nothing: the exponent of its backoff (reset on
--                   every change)
--   settled_at      when it reached a terminal status
--   first_block     the latest block when the operation was built: its inclusion (or the
--                   operation that used its nonce) is searched for in the EntryPoint's events
--                   from there
ALTER TABLE intents ADD COLUMN status_reason TEXT;
ALTER TABLE intents ADD COLUMN evidence_json TEXT;
ALTER TABLE intents ADD COLUMN next_check_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE intents ADD COLUMN idle_checks INTEGER NOT NULL DEFAULT 0;
ALTER TABLE intents ADD COLUMN settled_at INTEGER;
ALTER TABLE intents ADD COLUMN first_block INTEGER;

-- The open intents, by when they are due (the background task's queue).
CREATE INDEX intents_due ON intents(next_check_at) WHERE status IN ('signed', 'pending');

-- Backstops of the guarded UPDATEs: only known statuses, only allowed transitions.
CREATE TRIGGER intents_status_known BEFORE INSERT ON intents
WHEN NEW.status NOT IN ('signed', 'pending', 'included', 'failed', 'dropped', 'replaced', 'cancelled')
BEGIN SELECT RAISE(ABORT, 'intents: unknown status'); END;

CREATE TRIGGER intents_status_transition BEFORE UPDATE OF status ON intents
WHEN NEW.status IS NOT OLD.status AND NOT (
    (OLD.status = 'signed'
        AND NEW.status IN ('pending', 'included', 'failed', 'dropped', 'replaced', 'cancelled'))
    OR (OLD.status = 'pending'
        AND NEW.status IN ('included', 'failed', 'dropped', 'replaced', 'cancelled')))
BEGIN SELECT RAISE(ABORT, 'intents: status transition not allowed'); END;
