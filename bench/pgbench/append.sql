-- The event store's database work for one command, as postgres-es 0.5 does it: read the
-- listing's snapshot and its events after it, then append one event in a transaction (the
-- events table's trigger runs as it does for real commands). Each pgbench client works on
-- listings of its own, so clients never conflict.
\set n random(1, 1000)
SELECT payload, last_sequence FROM snapshots
 WHERE aggregate_type = 'Listing' AND aggregate_id = 'pgb-' || :client_id || '-' || :n;
SELECT sequence, payload FROM events
 WHERE aggregate_type = 'Listing' AND aggregate_id = 'pgb-' || :client_id || '-' || :n
 ORDER BY sequence;
BEGIN;
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT 'Listing', 'pgb-' || :client_id || '-' || :n, coalesce(max(sequence), 0) + 1,
       'ListingPriceChanged', '1.0',
       '{"ListingPriceChanged":{"ListPrice":249900,"PreviousListPrice":259900,"PriceChangeTimestamp":"2026-11-20T10:00:00Z"}}',
       '{"actor":"bench","correlation_id":"00000000-0000-0000-0000-000000000000","causation_id":"00000000-0000-0000-0000-000000000000"}'
  FROM events
 WHERE aggregate_type = 'Listing' AND aggregate_id = 'pgb-' || :client_id || '-' || :n;
COMMIT;
