-- An Idempotency-Key belongs to one listing's append, not to a transaction.
--
-- The trigger let every row of the transaction that first used a key share it: all the
-- events of one command are written together. Since the command API writes the appends of
-- concurrent commands in one group transaction, two attempts of one create (a client
-- retrying while its dropped first attempt is still being written) can meet in that
-- transaction. Each attempt draws its own listing key, so both rows were accepted and two
-- listings were created for one request, one of them answered to nobody.
--
-- Now a key is shared only by rows of the same listing in the same transaction. Any other
-- use is the unique violation it always was: the group is refused, each of its commands
-- commits alone, and the later attempt is answered with the first one's result.
CREATE OR REPLACE FUNCTION keh_events_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    idem_scope text := NEW.metadata->>'idempotency_scope';
    changes    jsonb;
    new_id     text;
BEGIN
    IF idem_scope IS NOT NULL THEN
        INSERT INTO idempotency_keys AS k (scope, aggregate_id, request_hash, response_status, last_sequence)
        VALUES (idem_scope, NEW.aggregate_id, coalesce(NEW.metadata->>'request_hash', ''),
                coalesce((NEW.metadata->>'response_status')::integer, 200), NEW.sequence)
        ON CONFLICT (scope) DO UPDATE SET last_sequence = greatest(k.last_sequence, EXCLUDED.last_sequence)
            WHERE k.tx_id = pg_current_xact_id() AND k.aggregate_id = EXCLUDED.aggregate_id;
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
