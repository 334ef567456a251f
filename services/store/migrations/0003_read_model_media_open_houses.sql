-- Media and open houses get tables of their own in the read model (for queries across
-- listings, such as upcoming open houses in a city). The function that creates a read-model
-- schema learns to create them too, and the live schema gets them now; a rebuild fills them.

CREATE FUNCTION keh_create_read_model_media(target text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format($f$
        CREATE TABLE %I.listing_media (
            listing_key       text    NOT NULL,
            media_key         text    NOT NULL,
            media_order       integer NOT NULL,
            media_url         text    NOT NULL,
            media_category    text    NOT NULL,
            short_description text,
            PRIMARY KEY (listing_key, media_key)
        )$f$, target);
    EXECUTE format($f$
        CREATE TABLE %I.listing_open_houses (
            listing_key             text        NOT NULL,
            open_house_key          text        NOT NULL,
            open_house_date         date        NOT NULL,
            open_house_start_time   timestamptz NOT NULL,
            open_house_end_time     timestamptz NOT NULL,
            open_house_type         text        NOT NULL,
            open_house_status       text        NOT NULL,
            open_house_remarks      text,
            showing_agent_key       text,
            PRIMARY KEY (listing_key, open_house_key)
        )$f$, target);
    EXECUTE format('CREATE INDEX ON %I.listing_open_houses (open_house_start_time) WHERE open_house_status = ''Active''', target);
END
$$;

-- `keh_create_read_model` keeps its name and signature (the rebuild calls it) and now also
-- creates the media and open-house tables.
ALTER FUNCTION keh_create_read_model(text) RENAME TO keh_create_read_model_core;

CREATE FUNCTION keh_create_read_model(target text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM keh_create_read_model_core(target);
    PERFORM keh_create_read_model_media(target);
END
$$;

SELECT keh_create_read_model_media('read_model');

-- Fill the new tables from the state the live read model already holds.
INSERT INTO read_model.listing_media (listing_key, media_key, media_order, media_url, media_category, short_description)
SELECT l.listing_key, m->>'MediaKey', (m->>'Order')::integer, m->>'MediaURL', m->>'MediaCategory', m->>'ShortDescription'
  FROM read_model.listings l, jsonb_array_elements(l.state->'Media') m;

INSERT INTO read_model.listing_open_houses (listing_key, open_house_key, open_house_date, open_house_start_time,
        open_house_end_time, open_house_type, open_house_status, open_house_remarks, showing_agent_key)
SELECT l.listing_key, o->>'OpenHouseKey', (o->>'OpenHouseDate')::date, (o->>'OpenHouseStartTime')::timestamptz,
       (o->>'OpenHouseEndTime')::timestamptz, o->>'OpenHouseType', o->>'OpenHouseStatus', o->>'OpenHouseRemarks',
       o->>'ShowingAgentKey'
  FROM read_model.listings l, jsonb_array_elements(l.state->'OpenHouses') o;
