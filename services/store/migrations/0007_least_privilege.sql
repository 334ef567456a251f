-- Least privilege: one database role per platform role. These are group roles (NOLOGIN);
-- each deployment logs in as a user that belongs to exactly one of them, with
-- KEH_MIGRATE=false (migrations run as the owner, in a Job). `kubeestatehub all` on a laptop
-- keeps using the owner. What each may do:
--   keh_command    append events (and what their trigger records), snapshots, idempotency
--   keh_query      read everything it serves; write report requests and sign-in state
--   keh_relay      read events; keep its checkpoint
--   keh_projector  read events; write the read model, parked events, group membership
--   keh_analytics  read events; write the analytics tables, parked events, membership
-- Nobody but keh_command writes `events`, and nobody may UPDATE or DELETE it.

DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['keh_command', 'keh_query', 'keh_relay', 'keh_projector', 'keh_analytics'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', name);
        END IF;
    END LOOP;
END
$$;

GRANT USAGE ON SCHEMA public TO keh_command, keh_query, keh_relay, keh_projector, keh_analytics;

-- The event store: readable by every role (gap repair, as_of, backlog), appended by one.
GRANT SELECT ON events TO keh_command, keh_query, keh_relay, keh_projector, keh_analytics;
GRANT INSERT ON events TO keh_command;
GRANT SELECT, INSERT, UPDATE ON snapshots, idempotency_keys TO keh_command;
GRANT SELECT, INSERT, UPDATE, DELETE ON listing_ids TO keh_command;

GRANT SELECT, INSERT, UPDATE ON relay_checkpoints TO keh_relay;
GRANT SELECT ON relay_checkpoints TO keh_query;

GRANT SELECT, INSERT, UPDATE, DELETE ON parked_events, consumer_members TO keh_projector, keh_analytics;

-- Analytics: the worker owns its tables; the query API reads them and queues reports.
GRANT USAGE ON SCHEMA analytics TO keh_analytics, keh_query;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA analytics TO keh_analytics;
GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO keh_query;
GRANT INSERT ON analytics.reports TO keh_query;
GRANT USAGE ON SEQUENCE analytics.dirty_generation TO keh_analytics;

-- Sign-in state: written by the query API (which serves /auth and /admin); API keys are
-- checked by every API.
GRANT USAGE ON SCHEMA auth TO keh_query, keh_command;
GRANT SELECT, INSERT, UPDATE ON auth.users, auth.refresh_tokens, auth.api_keys TO keh_query;
GRANT SELECT, INSERT ON auth.audit_log TO keh_query;
GRANT SELECT ON auth.api_keys TO keh_command;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA auth TO keh_query;

-- The read model is recreated by rebuilds (a fresh schema swapped in): its grants are part
-- of creating it.
CREATE FUNCTION keh_grant_read_model(target text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO keh_projector, keh_query', target);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO keh_projector', target);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO keh_query', target);
END
$$;

CREATE OR REPLACE FUNCTION keh_create_read_model(target text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM keh_create_read_model_core(target);
    PERFORM keh_create_read_model_media(target);
    PERFORM keh_grant_read_model(target);
END
$$;

SELECT keh_grant_read_model('read_model');
