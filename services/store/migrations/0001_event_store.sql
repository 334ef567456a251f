-- The event store: postgres-es 0.5's tables, plus what a transactional outbox needs.
--
-- postgres-es names its columns on every INSERT, so the defaulted columns below are filled
-- by PostgreSQL itself, inside the appending transaction:
--   event_id         the event's public identity (JetStream Nats-Msg-Id);
--   global_position  insertion order across listings (NOT commit order, may have holes);
--   tx_id            the appending transaction: readers take only rows whose transaction
--                    is older than every running one, so no in-flight event is ever skipped;
--   recorded_at      when the event was stored (as_of uses this; business dates live in the payload).
CREATE TABLE events (
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL CHECK (sequence >= 0),
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    payload         json        NOT NULL,
    metadata        json        NOT NULL,
    event_id        uuid        NOT NULL DEFAULT gen_random_uuid(),
    global_position bigint      NOT NULL GENERATED ALWAYS AS IDENTITY,
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_event_id_key ON events (event_id);
-- The relay's cursor: (tx_id, global_position) is the global publication order.
CREATE INDEX events_global_order_idx ON events (tx_id, global_position);

CREATE TABLE snapshots (
    aggregate_type   text   NOT NULL,
    aggregate_id     text   NOT NULL,
    last_sequence    bigint NOT NULL CHECK (last_sequence >= 0),
    current_snapshot bigint NOT NULL CHECK (current_snapshot >= 0),
    payload          json   NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- Idempotency keys, written by the trigger below in the same transaction as the events
-- they produced: a key is recorded if and only if its events are.
CREATE TABLE idempotency_keys (
    scope           text        PRIMARY KEY,
    aggregate_id    text        NOT NULL,
    request_hash    text        NOT NULL,
    response_status integer     NOT NULL,
    last_sequence   bigint      NOT NULL,
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);

-- ListingId (the MLS number) is unique among listings: reserved atomically with the event
-- that sets it, released when a listing changes it.
CREATE TABLE listing_ids (
    listing_id  text PRIMARY KEY,
    listing_key text NOT NULL UNIQUE
);

-- Where each relay (one per stream) has published up to, for backlog metrics. The stream
-- itself is the authority on restart (the relay reconciles with it on every connect).
CREATE TABLE relay_checkpoints (
    stream          text        PRIMARY KEY,
    tx_id           xid8        NOT NULL,
    global_position bigint      NOT NULL,
    event_id        uuid,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION keh_events_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    idem_scope text := NEW.metadata->>'idempotency_scope';
    changes    jsonb;
    new_id     text;
BEGIN
    IF idem_scope IS NOT NULL THEN
        -- Every event of the first request's transaction shares the key; any other
        -- transaction using it fails with a unique violation (the store reports a conflict
        -- and the command API then answers with the first request's result).
        INSERT INTO idempotency_keys AS k (scope, aggregate_id, request_hash, response_status, last_sequence)
        VALUES (idem_scope, NEW.aggregate_id, coalesce(NEW.metadata->>'request_hash', ''),
                coalesce((NEW.metadata->>'response_status')::integer, 200), NEW.sequence)
        ON CONFLICT (scope) DO UPDATE SET last_sequence = greatest(k.last_sequence, EXCLUDED.last_sequence)
            WHERE k.tx_id = pg_current_xact_id();
        IF NOT FOUND THEN
            RAISE unique_violation USING MESSAGE = 'idempotency key already used', CONSTRAINT = 'idempotency_keys_pkey';
        END IF;
    END IF;

    IF NEW.event_type = 'ListingCreated' THEN
        new_id := NEW.payload->'Data'->>'ListingId';
        IF new_id IS NOT NULL THEN
            INSERT INTO listing_ids (listing_id, listing_key) VALUES (new_id, NEW.aggregate_id);
        END IF;
    ELSIF NEW.event_type = 'ListingDetailsUpdated' THEN
        changes := NEW.payload::jsonb->'Data'->'Changes';
        IF changes ? 'ListingId' THEN
            DELETE FROM listing_ids WHERE listing_key = NEW.aggregate_id;
            new_id := changes->>'ListingId';
            IF new_id IS NOT NULL THEN
                INSERT INTO listing_ids (listing_id, listing_key) VALUES (new_id, NEW.aggregate_id);
            END IF;
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER events_before_insert BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION keh_events_before_insert();

-- Wake the relay. NOTIFY is delivered at commit, and only then; a rolled-back append
-- notifies nobody. Identical notifications of one transaction are folded into one.
CREATE FUNCTION keh_events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('keh_events', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION keh_events_notify();
