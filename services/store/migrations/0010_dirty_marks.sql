-- Analytics appliers mark series dirty by appending here, instead of upserting the rows of
-- `analytics.dirty_series` that every partition shares (the whole market, each city): under
-- a steady stream of commands the partitions' batches queued on those row locks, and each
-- held its transaction open while it waited (which also holds the relay back, law 3). The
-- worker folds the marks into `dirty_series` before it claims series to recompute.

CREATE TABLE analytics.dirty_marks (
    area_kind     text NOT NULL,
    area          text NOT NULL,
    property_type text NOT NULL,
    dirty_from    date NOT NULL
);

GRANT SELECT, INSERT, DELETE ON analytics.dirty_marks TO keh_analytics;
GRANT SELECT ON analytics.dirty_marks TO keh_query;
