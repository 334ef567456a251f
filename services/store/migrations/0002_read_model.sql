-- Read models (the projector's tables). They live in the schema `read_model`; a rebuild
-- creates the same tables in a fresh schema, fills it from the event store and swaps the
-- schemas in one transaction, so readers never see a half-built model. Everything here can
-- be dropped and rebuilt from `events`.

-- Creates the read-model tables in schema `target` (also used by `projections rebuild`).
CREATE FUNCTION keh_create_read_model(target text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE SCHEMA %I', target);

    -- Current state of each listing: searchable columns plus the full state (RESO names).
    -- `state` holds private fields too; the query API removes them for readers who may not
    -- see them.
    EXECUTE format($f$
        CREATE TABLE %I.listings (
            listing_key             text PRIMARY KEY,
            version                 bigint        NOT NULL,
            standard_status         text          NOT NULL,
            property_type           text          NOT NULL,
            list_price              numeric(14,2) NOT NULL,
            city                    text,
            postal_code             text,
            bedrooms_total          integer,
            bathrooms_total_integer integer,
            living_area             numeric(14,2),
            latitude                numeric(12,8),
            longitude               numeric(12,8),
            modification_timestamp  timestamptz   NOT NULL,
            recorded_at             timestamptz   NOT NULL,
            state                   jsonb         NOT NULL,
            search                  tsvector GENERATED ALWAYS AS (
                to_tsvector('simple',
                    coalesce(state->>'UnparsedAddress', '') || ' ' || coalesce(state->>'StreetNumber', '') || ' ' ||
                    coalesce(state->>'StreetName', '') || ' ' || coalesce(state->>'City', '') || ' ' ||
                    coalesce(state->>'PostalCode', '') || ' ' || coalesce(state->>'SubdivisionName', '') || ' ' ||
                    coalesce(state->>'PublicRemarks', ''))) STORED
        )$f$, target);
    EXECUTE format('CREATE INDEX ON %I.listings (standard_status, listing_key)', target);
    EXECUTE format('CREATE INDEX ON %I.listings (property_type, listing_key)', target);
    EXECUTE format('CREATE INDEX ON %I.listings (lower(city), listing_key)', target);
    EXECUTE format('CREATE INDEX ON %I.listings (postal_code, listing_key)', target);
    EXECUTE format('CREATE INDEX ON %I.listings (list_price, listing_key)', target);
    EXECUTE format('CREATE INDEX ON %I.listings (modification_timestamp, listing_key)', target);
    EXECUTE format('CREATE INDEX ON %I.listings (recorded_at, listing_key)', target);
    EXECUTE format('CREATE INDEX ON %I.listings USING gin (search)', target);
    EXECUTE format('CREATE INDEX ON %I.listings USING gist (point(longitude::float8, latitude::float8))', target);

    -- Every event of every listing: the timeline (who did what, when).
    EXECUTE format($f$
        CREATE TABLE %I.listing_events (
            listing_key    text        NOT NULL,
            sequence       bigint      NOT NULL,
            event_id       uuid        NOT NULL,
            event_type     text        NOT NULL,
            effective_at   timestamptz NOT NULL,
            recorded_at    timestamptz NOT NULL,
            actor          text        NOT NULL,
            correlation_id uuid        NOT NULL,
            data           jsonb       NOT NULL,
            PRIMARY KEY (listing_key, sequence)
        )$f$, target);
END
$$;

SELECT keh_create_read_model('read_model');

-- Messages the projector could not apply, parked for people to look at. A parked event
-- blocks nothing but its own listing (whose later events wait behind it).
CREATE TABLE parked_events (
    consumer    text        NOT NULL,
    event_id    uuid        NOT NULL,
    listing_key text,
    sequence    bigint,
    subject     text        NOT NULL,
    reason      text        NOT NULL,
    payload     text        NOT NULL,
    parked_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Consumer group membership: each replica heartbeats here, and owns a fair share of the
-- partitions (held as session advisory locks, released when its session ends).
CREATE TABLE consumer_members (
    consumer_group text        NOT NULL,
    member_id      uuid        NOT NULL,
    heartbeat_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, member_id)
);
