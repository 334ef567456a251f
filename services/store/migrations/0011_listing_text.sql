-- The full-text search words of each listing live beside its row, in `listing_text`, not in
-- it. As a generated column of `listings` they were recomputed, and their GIN index
-- updated, on every projected event, although only creations and detail edits change them:
-- the tsvector and its index were a third of the cost of writing a listing row under a
-- stream of price changes (bench/VERSUS.md). Searches with `q` look the matching keys up in
-- `listing_text`.
--
-- Triggers keep it, whichever release of the projector writes the row (during a rolling
-- update the previous one still projects): once per statement, from the statement's rows,
-- only for listings that are new or whose words changed.

-- The words a listing is found by: address parts, city, postal code, subdivision and
-- public remarks (what the generated column held).
CREATE FUNCTION keh_listing_words(state jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(state->>'UnparsedAddress', '') || ' ' || coalesce(state->>'StreetNumber', '') || ' ' ||
           coalesce(state->>'StreetName', '') || ' ' || coalesce(state->>'City', '') || ' ' ||
           coalesce(state->>'PostalCode', '') || ' ' || coalesce(state->>'SubdivisionName', '') || ' ' ||
           coalesce(state->>'PublicRemarks', '')
$$;

-- The schema is the trigger's own (a rebuild fills `read_model_next`, then renames it).
CREATE FUNCTION keh_listing_text_written() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        EXECUTE format($f$
            INSERT INTO %I.listing_text (listing_key, search)
            SELECT listing_key, to_tsvector('simple', public.keh_listing_words(state)) FROM written
            ON CONFLICT (listing_key) DO UPDATE SET search = EXCLUDED.search$f$, TG_TABLE_SCHEMA);
    ELSE
        EXECUTE format($f$
            INSERT INTO %I.listing_text (listing_key, search)
            SELECT n.listing_key, to_tsvector('simple', public.keh_listing_words(n.state))
              FROM written n JOIN replaced o USING (listing_key)
             WHERE public.keh_listing_words(n.state) IS DISTINCT FROM public.keh_listing_words(o.state)
            ON CONFLICT (listing_key) DO UPDATE SET search = EXCLUDED.search$f$, TG_TABLE_SCHEMA);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION keh_create_read_model_text(target text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format($f$
        CREATE TABLE IF NOT EXISTS %I.listing_text (
            listing_key text     PRIMARY KEY,
            search      tsvector NOT NULL
        )$f$, target);
    EXECUTE format('CREATE INDEX IF NOT EXISTS listing_text_search_idx ON %I.listing_text USING gin (search)', target);
    EXECUTE format($f$
        CREATE OR REPLACE TRIGGER listings_text_inserted AFTER INSERT ON %I.listings
        REFERENCING NEW TABLE AS written
        FOR EACH STATEMENT EXECUTE FUNCTION public.keh_listing_text_written()$f$, target);
    EXECUTE format($f$
        CREATE OR REPLACE TRIGGER listings_text_updated AFTER UPDATE ON %I.listings
        REFERENCING OLD TABLE AS replaced NEW TABLE AS written
        FOR EACH STATEMENT EXECUTE FUNCTION public.keh_listing_text_written()$f$, target);
END
$$;

-- `listings.search` stays, no longer computed nor indexed, for the release before this one
-- (its `q` searches read it while a rolling update runs; listings it has not seen are
-- missing from them meanwhile). A later release drops it, as a contract step.
CREATE FUNCTION keh_retire_listing_search(target text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %I.listings ALTER COLUMN search DROP EXPRESSION IF EXISTS', target);
    EXECUTE format('DROP INDEX IF EXISTS %I.listings_search_idx', target);
END
$$;

CREATE OR REPLACE FUNCTION keh_create_read_model(target text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM keh_create_read_model_core(target);
    PERFORM keh_retire_listing_search(target);
    PERFORM keh_create_read_model_text(target);
    PERFORM keh_create_read_model_media(target);
    PERFORM keh_create_read_model_search(target);
    PERFORM keh_grant_read_model(target);
END
$$;

-- The live read model: the words move over as they are, then the column stops being kept.
SELECT keh_create_read_model_text('read_model');
INSERT INTO read_model.listing_text (listing_key, search)
SELECT listing_key, search FROM read_model.listings;
SELECT keh_retire_listing_search('read_model');
SELECT keh_grant_read_model('read_model');
