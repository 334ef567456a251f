//! Start-up: every role of a process on one listener, from the same code whether the
//! process runs one role (Kubernetes) or all of them (`kubeestatehub all`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context as _;
use keh_command_api::CommandApi;
use keh_events::subject::SubjectLayout;
use keh_platform::health::Health;
use keh_projections::projector::Projector;
use keh_query_api::QueryApi;
use keh_relay::Relay;
use keh_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Roles;
use crate::cli::Settings;
use crate::openapi;

/// Starts `roles` on an already-bound listener (tests bind port 0) and runs until
/// `shutdown` is cancelled, then drains requests and background work.
pub async fn start(
    settings: Settings,
    roles: Roles,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let role_name = roles.name();
    settings
        .auth()
        .check()
        .map_err(|reason| anyhow::anyhow!("refusing to start: {reason}"))?;
    let http = settings
        .http()
        .map_err(|reason| anyhow::anyhow!("refusing to start: {reason}"))?;
    let pool = crate::commands::database(&settings, role_name).await?;
    let registry = Arc::new(prometheus::Registry::new());
    keh_platform::metrics::PoolMetrics::register(&registry, pool.clone())?;
    keh_platform::metrics::register_db_metrics(&registry)?;
    let mut health = Health::default();
    let mut api = axum::Router::new();
    let mut tasks = Tasks::default();
    let database: sqlx::postgres::PgConnectOptions = settings
        .database_url
        .expose()
        .parse()
        .context("parsing DATABASE_URL")?;
    let reconnected = Arc::new(AtomicU64::new(0));
    let nats = if roles.relay || roles.projector || roles.analytics || roles.query_api {
        Some(
            keh_relay::connect_nats(
                &settings.nats_url,
                &format!("kubeestatehub-{role_name}"),
                Arc::clone(&reconnected),
            )
            .await
            .context("configuring the NATS client")?,
        )
    } else {
        None
    };

    if roles.command_api {
        let store = Arc::new(Store::new(pool.clone(), settings.snapshot_every));
        let command_api = CommandApi::new(store, settings.media_allow_http);
        health = health.with(command_api.health());
        api = api.merge(command_api.router());
    }
    let auth = if roles.serves_api() {
        let auth = keh_auth::AuthService::start(pool.clone(), settings.auth())
            .await
            .context("loading the access-token signing keys")?;
        let watcher = auth.clone();
        let token = shutdown.clone();
        tasks.spawn("auth change listener", async move {
            watcher.watch(token.cancelled_owned()).await;
            Ok::<(), anyhow::Error>(())
        });
        auth
    } else {
        keh_auth::AuthService::new(pool.clone(), settings.auth())
    };
    if roles.query_api {
        let layout = SubjectLayout::new(settings.subject_prefix.clone(), settings.partitions);
        let query_api = QueryApi::new(
            pool.clone(),
            nats.clone(),
            settings.stream.clone(),
            layout,
            keh_query_api::feed::FeedLimits {
                anonymous_replay: settings.feed_anonymous_replay,
                max_streams: settings.feed_max_streams.max(1),
                max_per_caller: settings.feed_max_streams_per_caller.max(1),
            },
            shutdown.clone(),
        );
        health = health.with(query_api.health());
        api = api
            .merge(query_api.router())
            .merge(keh_auth::routes::router(auth.clone()));
    }
    if roles.serves_api() {
        let document = Arc::new(openapi::document().context("building the OpenAPI document")?);
        api = api.route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let document = Arc::clone(&document);
                async move { axum::Json(document.as_ref().clone()) }
            }),
        );
    }
    // Rate limits apply once the caller is known (the auth layer below runs first).
    let mut address_limit = None;
    if let Some(limit) = keh_auth::ratelimit::RateLimit::new(
        settings.rate_limit_per_second,
        settings.rate_limit_burst,
        keh_auth::ratelimit::TrustedProxies::new(settings.trusted_proxies.clone()),
    ) {
        let idle = Arc::clone(&limit);
        let token = shutdown.clone();
        tasks.spawn("rate limit sweeper", async move {
            loop {
                tokio::select! {
                    () = token.cancelled() => return Ok::<(), anyhow::Error>(()),
                    () = tokio::time::sleep(Duration::from_secs(60)) => idle.forget_idle(),
                }
            }
        });
        api = api.layer(axum::middleware::from_fn_with_state(
            Arc::clone(&limit),
            keh_auth::ratelimit::limit_callers,
        ));
        address_limit = Some(limit);
    }
    // Every API request's caller is resolved once, before any handler runs.
    let mut api = api.layer(axum::middleware::from_fn_with_state(
        auth,
        keh_auth::middleware::resolve,
    ));
    // Outermost: per address, so that made-up credentials are limited before being looked up.
    if let Some(limit) = address_limit {
        api = api.layer(axum::middleware::from_fn_with_state(
            limit,
            keh_auth::ratelimit::limit_addresses,
        ));
    }
    if let (true, Some(nats)) = (roles.relay, nats.clone()) {
        // Two lanes, each exactly once and in order: the public stream (private fields
        // removed) for outside subscribers and the live feed, the internal one (everything)
        // for the platform's consumers. Each has its own leader, checkpoint and reconcile.
        for (index, lane) in [settings.relay(), settings.relay_internal()]
            .into_iter()
            .enumerate()
        {
            let relay = Relay::new(
                lane,
                database.clone(),
                pool.clone(),
                nats.clone(),
                Arc::clone(&reconnected),
                &registry,
            )?;
            // Alone, the relay is ready when NATS is; next to the APIs, NATS being down must
            // not take them out of service (the relay catches up when NATS returns).
            if index == 0 {
                health = health.with(relay.health(!roles.serves_api()));
            }
            let token = shutdown.clone();
            let name = if index == 0 {
                "relay (public stream)"
            } else {
                "relay (internal stream)"
            };
            tasks.spawn(name, async move {
                relay.run(token).await;
                Ok::<(), anyhow::Error>(())
            });
        }
    }
    if let (true, Some(nats)) = (roles.projector, nats.clone()) {
        let projector = Projector::new(
            settings.projector(),
            database.clone(),
            pool.clone(),
            nats,
            &registry,
        )?;
        let token = shutdown.clone();
        tasks.spawn("projector", async move {
            projector.run(token).await;
            Ok::<(), anyhow::Error>(())
        });
    }
    if let (true, Some(nats)) = (roles.analytics, nats.clone()) {
        let consumer = Projector::with_applier(
            keh_analytics::store::MarketApplier,
            ("analytics", "keh_analytics_lag_seconds"),
            settings.analytics(),
            database.clone(),
            pool.clone(),
            nats,
            &registry,
        )?;
        let worker = keh_analytics::worker::AnalyticsWorker::new(
            pool.clone(),
            settings.analytics_worker(),
            &registry,
        )?;
        let token = shutdown.clone();
        tasks.spawn("analytics consumer", async move {
            consumer.run(token).await;
            Ok::<(), anyhow::Error>(())
        });
        let token = shutdown.clone();
        tasks.spawn("analytics worker", async move {
            worker.run(token).await;
            Ok::<(), anyhow::Error>(())
        });
    }

    let app = keh_http::app(api, health, registry, &http)?;
    let token = shutdown.clone();
    tasks.spawn("HTTP server", async move {
        keh_http::serve(listener, app, token)
            .await
            .context("serving HTTP")
    });

    tasks
        .run(&shutdown, Duration::from_millis(settings.shutdown_grace_ms))
        .await
        .and(close(pool).await)
}

/// The process's long-running work, each task named for the shutdown log.
#[derive(Default)]
struct Tasks {
    set: tokio::task::JoinSet<anyhow::Result<()>>,
    names: HashMap<tokio::task::Id, &'static str>,
}

impl Tasks {
    fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// Runs until `shutdown` (or until a task ends by itself, by failing or on a bug: that
    /// ends the process too), then lets the tasks drain for at most `grace`. What is still
    /// running then is named and stopped: a process that never exits is killed by its
    /// orchestrator with nothing said about why.
    async fn run(mut self, shutdown: &CancellationToken, grace: Duration) -> anyhow::Result<()> {
        let first = tokio::select! {
            () = shutdown.cancelled() => None,
            joined = self.set.join_next_with_id() => joined,
        };
        shutdown.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        let mut outcome = Ok(());
        if let Some(joined) = first {
            self.ended(joined, &mut outcome);
        }
        loop {
            match tokio::time::timeout_at(deadline, self.set.join_next_with_id()).await {
                Ok(Some(joined)) => self.ended(joined, &mut outcome),
                Ok(None) => return outcome,
                Err(_) => {
                    let mut waiting: Vec<&str> = self.names.values().copied().collect();
                    waiting.sort_unstable();
                    let waiting = waiting.join(", ");
                    tracing::error!(%waiting, ?grace, "shutdown: not drained in time; stopping what is left");
                    self.set.shutdown().await;
                    return Err(anyhow::anyhow!(
                        "shutdown: not drained within {grace:?}: {waiting}"
                    ));
                }
            }
        }
    }

    /// Records how a task ended; an error becomes the process's outcome.
    fn ended(
        &mut self,
        joined: Result<(tokio::task::Id, anyhow::Result<()>), tokio::task::JoinError>,
        outcome: &mut anyhow::Result<()>,
    ) {
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            Err(error) => (error.id(), Err(anyhow::anyhow!("task failed: {error}"))),
        };
        let name = self.names.remove(&id).unwrap_or("a task");
        match result {
            Ok(()) => tracing::debug!(task = name, "shutdown: drained"),
            Err(error) => {
                tracing::error!(
                    task = name,
                    error = format!("{error:#}"),
                    "task ended with an error"
                );
                *outcome = Err(error.context(name));
            }
        }
    }
}

/// Closes the pool once every task has ended: connections still checked out then belong
/// to work that outlived its task, and are waited for only briefly.
async fn close(pool: sqlx::PgPool) -> anyhow::Result<()> {
    let grace = Duration::from_secs(5);
    tokio::time::timeout(grace, pool.close())
        .await
        .map_err(|_| anyhow::anyhow!("shutdown: database connections still in use after {grace:?}"))
}
