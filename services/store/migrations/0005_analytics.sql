-- The analytics worker's tables (schema `analytics`). Facts, dirty marks, series and
-- metrics can all be deleted and rebuilt from `events` (`kubeestatehub analytics rebuild`);
-- report jobs are requests from clients and survive a rebuild.

CREATE SCHEMA analytics;

-- What each listing contributes to the market, folded from its events (see
-- services/analytics/src/facts.rs). The columns are what series are selected by.
CREATE TABLE analytics.listing_facts (
    listing_key   text PRIMARY KEY,
    version       bigint      NOT NULL,
    property_type text        NOT NULL,
    city          text,
    postal_code   text,
    subdivision   text,
    first_date    date        NOT NULL,
    -- NULL while the listing is active: it then counts in every period until it leaves.
    last_date     date,
    facts         jsonb       NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON analytics.listing_facts (city, property_type);
CREATE INDEX ON analytics.listing_facts (postal_code, property_type);
CREATE INDEX ON analytics.listing_facts (subdivision, property_type);
CREATE INDEX ON analytics.listing_facts (last_date);

-- Series whose metrics must be recomputed from `dirty_from` on. Written in the same
-- transaction as the facts that made them dirty (each mark bumps `generation`). A worker
-- claims a series for a while (`claimed_until`), recomputes it without holding any lock the
-- appliers need, and removes the mark only if no new mark arrived meanwhile.
-- Generations come from one sequence, so a mark made after a row was removed never looks
-- like an earlier one.
CREATE SEQUENCE analytics.dirty_generation;
CREATE TABLE analytics.dirty_series (
    area_kind     text   NOT NULL,
    area          text   NOT NULL,
    property_type text   NOT NULL,
    dirty_from    date   NOT NULL,
    generation    bigint NOT NULL DEFAULT nextval('analytics.dirty_generation'),
    claimed_until timestamptz,
    PRIMARY KEY (area_kind, area, property_type)
);

-- Every series that has listings: the areas the API lists.
CREATE TABLE analytics.series (
    area_kind     text        NOT NULL,
    area          text        NOT NULL,
    property_type text        NOT NULL,
    listings      integer     NOT NULL,
    first_date    date        NOT NULL,
    computed_at   timestamptz NOT NULL,
    PRIMARY KEY (area_kind, area, property_type)
);

-- One row per series and period (definitions in README "Market metrics").
CREATE TABLE analytics.market_metrics (
    area_kind                   text    NOT NULL,
    area                        text    NOT NULL,
    property_type               text    NOT NULL,
    period                      text    NOT NULL CHECK (period IN ('week', 'month')),
    period_start                date    NOT NULL,
    period_end                  date    NOT NULL,
    as_of                       date    NOT NULL,
    new_listings                integer NOT NULL,
    active_listings             integer NOT NULL,
    inventory                   integer NOT NULL,
    pending_sales               integer NOT NULL,
    home_sales                  integer NOT NULL,
    price_changes               integer NOT NULL,
    median_list_price           numeric(16,2),
    median_list_price_per_sqft  numeric(16,2),
    median_sale_price           numeric(16,2),
    median_sale_price_per_sqft  numeric(16,2),
    median_days_on_market       numeric(10,1),
    sale_to_list_ratio          numeric(10,4),
    sale_to_original_list_ratio numeric(10,4),
    sold_above_list             numeric(10,4),
    price_drops                 numeric(10,4),
    months_of_supply            numeric(14,4),
    PRIMARY KEY (area_kind, area, property_type, period, period_start)
);

-- The last day the metrics were computed for: when the date changes, every series is
-- recomputed for the new periods (listings stay active without any event).
CREATE TABLE analytics.clock (
    id    boolean PRIMARY KEY DEFAULT true CHECK (id),
    today date    NOT NULL
);

-- Market report jobs: requested through the query API, built by an analytics worker.
-- A job a worker claimed and did not finish (it died) is claimed again once its lease ends.
CREATE TABLE analytics.reports (
    report_id     uuid        PRIMARY KEY,
    status        text        NOT NULL DEFAULT 'queued'
                              CHECK (status IN ('queued', 'running', 'done', 'failed')),
    area_kind     text        NOT NULL,
    area          text        NOT NULL,
    property_type text        NOT NULL,
    period        text        NOT NULL,
    from_date     date        NOT NULL,
    to_date       date        NOT NULL,
    requested_by  text        NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    lease_until   timestamptz,
    attempts      integer     NOT NULL DEFAULT 0,
    error         text,
    row_count     integer,
    csv           text,
    json          jsonb
);
CREATE INDEX ON analytics.reports (requested_at) WHERE status IN ('queued', 'running');
