//! The query API: what people search and read. It serves the read model the projector
//! maintains (`read_model` schema), time travel rebuilt from the event store, and a live
//! feed of listing events (Server-Sent Events from the JetStream stream).
//!
//! It also serves the market figures the analytics worker computed, and queues market
//! report jobs for it.
//!
//! Where things are: [`search`] (filters, sorts, cursors; the open-house list), [`listing`]
//! (one listing, as of an instant, its history), [`feed`] (the live feed and what a
//! client may cost), [`market`] (market series, summaries, report jobs), [`visibility`]
//! (who sees what), [`params`] (query strings), `web` (the dashboard's files); this file
//! holds the routes and the shared state.
//!
//! **Architecture invariant:** the query API writes nothing but report requests; private fields
//! (`keh_events::listing::PRIVATE_FIELDS`) are stored in the read model and removed here.

use std::sync::Arc;
use std::time::Duration;

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::Router;
use keh_events::subject::SubjectLayout;
use keh_http::Problem;
use keh_platform::health::Check;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub mod feed;
mod listing;
pub mod market;
pub mod params;
mod search;
mod visibility;
mod web;

const SCHEMA: &str = keh_projections::LIVE_SCHEMA;
/// Longest a read-your-writes request waits for the projection.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// Shared state of the query API: cloned for every request (axum's `State`), so one
/// reference count, not a copy of each part (the NATS client, two strings).
#[derive(Clone)]
pub struct QueryApi {
    shared: Arc<Shared>,
}

struct Shared {
    pool: PgPool,
    jetstream: Option<async_nats::jetstream::Context>,
    stream: String,
    layout: SubjectLayout,
    feed: Arc<feed::FeedGate>,
    /// Cancelled when the process shuts down: live feeds end then, so that the server's
    /// drain does not wait on streams that never finish (clients reconnect elsewhere with
    /// `Last-Event-ID`).
    shutdown: CancellationToken,
}

impl QueryApi {
    /// `nats`: the live feed needs it; without it `/api/v1/listing-events` answers 503.
    /// `shutdown`: when cancelled, every live feed ends.
    pub fn new(
        pool: PgPool,
        nats: Option<async_nats::Client>,
        stream: String,
        layout: SubjectLayout,
        feed: feed::FeedLimits,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                pool,
                jetstream: nats.map(async_nats::jetstream::new),
                stream,
                layout,
                feed: Arc::new(feed::FeedGate::new(feed)),
                shutdown,
            }),
        }
    }

    /// The documented routes of the query API (listings, the live feed, the market).
    pub fn routes() -> ApiRouter<Self> {
        ApiRouter::new()
            .api_route(
                "/api/v1/listings",
                get_with(search::search, search::search_docs),
            )
            .api_route(
                "/api/v1/listings/{ListingKey}",
                get_with(listing::read, listing::read_docs),
            )
            .api_route(
                "/api/v1/listings/{ListingKey}/history",
                get_with(listing::history, listing::history_docs),
            )
            .api_route(
                "/api/v1/listing-events",
                get_with(feed::live_feed, feed::live_feed_docs),
            )
            .api_route(
                "/api/v1/open-houses",
                get_with(search::open_houses, search::open_houses_docs),
            )
            .merge(market::routes())
    }

    /// The query API serving this state, with the dashboard's files.
    pub fn router(self) -> Router {
        Router::from(Self::routes())
            .merge(web::routes())
            .with_state(self)
    }

    /// Readiness: the read model answers.
    pub fn health(&self) -> Check {
        keh_platform::health::postgres(self.shared.pool.clone(), true)
    }
}

fn database_problem(error: &sqlx::Error) -> Problem {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            tracing::warn!(%error, "read model unavailable");
            Problem::unavailable("the read model is unavailable; retry later")
        }
        _ => {
            tracing::error!(%error, "query failed");
            Problem::internal()
        }
    }
}
