-- An Idempotency-Key also remembers a refusal (422, 412) or a command that changed nothing,
-- so that a retry gets the first answer rather than a new decision. `problem` holds the
-- refusal's problem+json body; it is NULL for an answer that carried the listing's state.
ALTER TABLE idempotency_keys ADD COLUMN problem jsonb;
