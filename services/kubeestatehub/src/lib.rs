//! The `kubeestatehub` binary's library: command line ([`cli`]) and start-up ([`run`],
//! [`start`]). Each role lives in its own crate; this crate only wires them together, so
//! that `all` and the single roles run the very same code.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context as _;
use keh_auth::AuthError;
use keh_command_api::CommandApi;
use keh_events::subject::SubjectLayout;
use keh_platform::health::Health;
use keh_projections::projector::Projector;
use keh_query_api::QueryApi;
use keh_relay::Relay;
use keh_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod cli;
pub mod import;
pub mod openapi;
pub mod seed;
pub mod telemetry;

use cli::{
    Cli, Command, ProjectionsCommand, RebuildTarget, Settings, SigningKeysCommand, UsersCommand,
};

/// The roles a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    pub command_api: bool,
    pub query_api: bool,
    pub relay: bool,
    pub projector: bool,
    pub analytics: bool,
}

impl Roles {
    pub const ALL: Self = Self {
        command_api: true,
        query_api: true,
        relay: true,
        projector: true,
        analytics: true,
    };
    /// The two APIs and nothing else (an API replica beside separate consumers).
    pub const APIS: Self = Self {
        command_api: true,
        query_api: true,
        relay: false,
        projector: false,
        analytics: false,
    };
    pub const NONE: Self = Self {
        command_api: false,
        query_api: false,
        relay: false,
        projector: false,
        analytics: false,
    };

    fn name(self) -> &'static str {
        match self {
            Self::ALL => "all",
            Self {
                command_api: true, ..
            } => "command-api",
            Self {
                query_api: true, ..
            } => "query-api",
            Self { relay: true, .. } => "relay",
            Self {
                projector: true, ..
            } => "projector",
            _ => "analytics",
        }
    }

    /// Whether this process serves API traffic (then NATS is not required for readiness).
    fn serves_api(self) -> bool {
        self.command_api || self.query_api
    }
}

/// Runs what the command line asks for.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // Held until the process ends: dropping it flushes the spans not yet exported.
    let _telemetry = crate::telemetry::init(
        cli.settings.log_format,
        &cli.settings.log,
        &cli.command.service_name(),
    );
    let settings = cli.settings;
    let roles = match cli.command {
        Command::Schema => {
            print!("{}", keh_events::schema::envelope_schema_pretty());
            return Ok(());
        }
        Command::Health { check } => return health_check(settings.http_addr, check).await,
        Command::Migrate => {
            let pool =
                keh_store::connect_lazy(settings.database_url.expose(), &settings.pool("migrate"))?;
            keh_store::migrate(&pool)
                .await
                .context("applying migrations")?;
            tracing::info!("migrations applied");
            if settings.jwt_secret.is_none() && keh_auth::keys::ensure_generated(&pool).await? {
                tracing::info!("made this installation's access-token signing key");
            }
            return Ok(());
        }
        Command::SigningKeys(command) => return signing_keys(&settings, command).await,
        Command::Projections(ProjectionsCommand::Rebuild { target }) => {
            return rebuild(&settings, target).await;
        }
        Command::Import { file } => return import_file(&settings, &file).await,
        Command::Users(command) => return create_user(&settings, command).await,
        Command::Seed {
            listings,
            months,
            seed,
            until,
            concurrency,
        } => {
            let until = until.map_or_else(chrono::Utc::now, |day| {
                day.and_hms_opt(23, 59, 59)
                    .map_or_else(chrono::Utc::now, |t| t.and_utc())
                    .min(chrono::Utc::now())
            });
            return seed_market(
                &settings,
                seed::SeedPlan {
                    listings,
                    months,
                    seed,
                    until,
                },
                concurrency,
            )
            .await;
        }
        Command::All => Roles::ALL,
        Command::CommandApi => Roles {
            command_api: true,
            ..Roles::NONE
        },
        Command::QueryApi => Roles {
            query_api: true,
            ..Roles::NONE
        },
        Command::Relay => Roles {
            relay: true,
            ..Roles::NONE
        },
        Command::Projector => Roles {
            projector: true,
            ..Roles::NONE
        },
        Command::Analytics => Roles {
            analytics: true,
            ..Roles::NONE
        },
    };
    let listener = TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("binding {}", settings.http_addr))?;
    start(
        settings,
        roles,
        listener,
        keh_platform::shutdown::on_signal(),
    )
    .await
}

/// `kubeestatehub health`: a GET on the local listener's health endpoint.
async fn health_check(addr: std::net::SocketAddr, check: cli::HealthCheck) -> anyhow::Result<()> {
    // A wildcard bind address is reached on loopback.
    let ip = match addr.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    let path = match check {
        cli::HealthCheck::Live => "/api/v1/health/live",
        cli::HealthCheck::Ready => "/api/v1/health/ready",
    };
    let url = format!(
        "http://{}{path}",
        std::net::SocketAddr::new(ip, addr.port())
    );
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    anyhow::ensure!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    Ok(())
}

/// `kubeestatehub signing-keys list|rotate`.
async fn signing_keys(settings: &Settings, command: SigningKeysCommand) -> anyhow::Result<()> {
    if settings.jwt_secret.is_some() {
        anyhow::bail!(
            "KEH_JWT_SECRET is set, so generated keys are not in use: rotate by moving the current secret to KEH_JWT_PREVIOUS_SECRETS and setting a new KEH_JWT_SECRET"
        );
    }
    let pool = keh_store::connect_lazy(settings.database_url.expose(), &settings.pool("keys"))?;
    if settings.migrate {
        keh_store::migrate(&pool)
            .await
            .context("applying migrations")?;
    }
    if let SigningKeysCommand::Rotate { retire_now } = command {
        let overlap = if retire_now {
            Duration::ZERO
        } else {
            settings.auth().access_ttl + Duration::from_secs(60)
        };
        let kid = keh_auth::keys::rotate(&pool, overlap).await?;
        println!(
            "key {kid} signs from now on; previous keys {}",
            if retire_now {
                "no longer verify".to_owned()
            } else {
                format!("verify for {} s more", overlap.as_secs())
            }
        );
    }
    for key in keh_auth::keys::list(&pool).await? {
        println!(
            "{}\tcreated {}\t{}",
            key.kid,
            key.created_at.to_rfc3339(),
            match key.retired_at {
                None => "signing".to_owned(),
                Some(at) => format!("retired {}", at.to_rfc3339()),
            }
        );
    }
    Ok(())
}

/// `kubeestatehub users create`.
async fn create_user(settings: &Settings, command: UsersCommand) -> anyhow::Result<()> {
    let UsersCommand::Create {
        username,
        role,
        agent_key,
        office_key,
        if_missing,
        generate_password,
    } = command;
    let role = keh_auth::Role::parse(&role)
        .ok_or_else(|| anyhow::anyhow!("--role must be admin, agent or viewer"))?;
    let mut generated = false;
    // An empty KEH_USER_PASSWORD counts as unset (compose passes `${VAR:-}` through).
    let password = match std::env::var("KEH_USER_PASSWORD")
        .map_err(|_| ())
        .and_then(|p| if p.is_empty() { Err(()) } else { Ok(p) })
    {
        Ok(password) => password,
        Err(()) if generate_password => {
            generated = true;
            keh_auth::tokens::random_secret()
        }
        Err(()) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let pool = keh_store::connect_lazy(settings.database_url.expose(), &settings.pool("users"))?;
    if settings.migrate {
        keh_store::migrate(&pool)
            .await
            .context("applying migrations")?;
    }
    let auth = keh_auth::AuthService::new(pool, settings.auth());
    let created = auth
        .create_user(
            "cli",
            keh_auth::service::NewUser {
                username: username.clone(),
                password: password.clone(),
                role,
                agent_key,
                office_key,
            },
        )
        .await;
    match created {
        Ok(user) => {
            println!(
                "created {} user {} ({})",
                user.role, user.username, user.user_id
            );
            if generated {
                println!(
                    "sign in as {} with the password {password} (shown only now: keep it in a password manager, then change it)",
                    user.username
                );
            }
            Ok(())
        }
        Err(AuthError::UserExists(_)) if if_missing => {
            println!("user {username} exists; nothing changed");
            Ok(())
        }
        // A refused field's message names the field.
        Err(error) => Err(anyhow::anyhow!(error.to_string())),
    }
}

/// A progress bar for `what`, counted in `unit`.
fn progress_bar(what: &str, unit: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

fn per_second(count: u64, seconds: f64) -> f64 {
    f64::from(u32::try_from(count).unwrap_or(u32::MAX)) / seconds.max(0.001)
}

/// `kubeestatehub projections rebuild`, with progress bars.
async fn rebuild(settings: &Settings, target: RebuildTarget) -> anyhow::Result<()> {
    let pool = keh_store::connect_lazy(settings.database_url.expose(), &settings.pool("rebuild"))?;
    if settings.migrate {
        keh_store::migrate(&pool)
            .await
            .context("applying migrations")?;
    }
    if matches!(target, RebuildTarget::All | RebuildTarget::ReadModel) {
        let bar = progress_bar("rebuilding read models", "events");
        bar.enable_steady_tick(Duration::from_millis(200));
        let started = std::time::Instant::now();
        let rebuilt = keh_projections::rebuild::rebuild(&pool, |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .await
        .context("rebuilding read models")?;
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            events = rebuilt.events,
            listings = rebuilt.listings,
            seconds,
            "read models rebuilt and swapped in"
        );
        println!(
            "rebuilt {} listings from {} events in {seconds:.1} s ({:.0} events/s)",
            rebuilt.listings,
            rebuilt.events,
            per_second(rebuilt.events, seconds)
        );
    }
    if matches!(target, RebuildTarget::All | RebuildTarget::Analytics) {
        let bar = progress_bar("rebuilding market analytics", "events");
        bar.enable_steady_tick(Duration::from_millis(200));
        let started = std::time::Instant::now();
        let rebuilt =
            keh_analytics::store::rebuild(&pool, chrono::Utc::now().date_naive(), |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
            .await
            .context("rebuilding market analytics")?;
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            events = rebuilt.events,
            listings = rebuilt.listings,
            series = rebuilt.series,
            seconds,
            "market analytics rebuilt"
        );
        println!(
            "rebuilt market facts of {} listings and {} series from {} events in {seconds:.1} s ({:.0} events/s)",
            rebuilt.listings,
            rebuilt.series,
            rebuilt.events,
            per_second(rebuilt.events, seconds)
        );
    }
    Ok(())
}

/// `kubeestatehub import FILE`, with a progress bar and a summary; fails when any row did.
async fn import_file(settings: &Settings, file: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading standard input")?;
    } else {
        bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    }
    let pool = keh_store::connect_lazy(settings.database_url.expose(), &settings.pool("import"))?;
    if settings.migrate {
        keh_store::migrate(&pool)
            .await
            .context("applying migrations")?;
    }
    let store = Arc::new(Store::new(pool, settings.snapshot_every));
    let mut ignored = std::collections::BTreeSet::new();
    let rows = import::read(&bytes, &mut ignored);
    let bar = indicatif::ProgressBar::new(u64::try_from(rows.len()).unwrap_or(0));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} importing [{bar:40}] {pos}/{len} rows ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let progress = bar.clone();
    let report = import::run(store, rows, move || progress.inc(1))
        .await
        .context("importing")?;
    bar.finish_and_clear();
    if !ignored.is_empty() {
        eprintln!(
            "ignored columns (not understood): {}",
            ignored.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    for failure in &report.failed {
        eprintln!(
            "line {}{}: {}",
            failure.line,
            failure
                .listing_key
                .as_ref()
                .map(|k| format!(" (ListingKey {k})"))
                .unwrap_or_default(),
            failure.message
        );
    }
    println!(
        "{} rows: {} imported or updated, {} unchanged, {} failed; {} events appended",
        report.rows,
        report.changed,
        report.unchanged,
        report.failed.len(),
        report.events
    );
    if report.failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "{} of {} rows failed (see above)",
            report.failed.len(),
            report.rows
        ))
    }
}

/// `kubeestatehub seed`, with a progress bar.
async fn seed_market(
    settings: &Settings,
    plan: seed::SeedPlan,
    concurrency: usize,
) -> anyhow::Result<()> {
    let pool = keh_store::connect_lazy(settings.database_url.expose(), &settings.pool("seed"))?;
    if settings.migrate {
        keh_store::migrate(&pool)
            .await
            .context("applying migrations")?;
    }
    let store = Arc::new(Store::new(pool, settings.snapshot_every));
    let planned = seed::plan(plan);
    let bar = indicatif::ProgressBar::new(u64::try_from(planned.len()).unwrap_or(0));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} seeding [{bar:40}] {pos}/{len} listings ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let progress = bar.clone();
    let seeded = seed::run(store, planned, concurrency, move |n| progress.inc(n))
        .await
        .context("seeding")?;
    bar.finish_and_clear();
    println!(
        "seeded {} listings ({} already there) with {} events in {:.1} s",
        seeded.listings,
        seeded.skipped,
        seeded.events,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

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
    let pool = keh_store::connect_lazy(settings.database_url.expose(), &settings.pool(role_name))?;
    if settings.migrate {
        keh_store::migrate(&pool)
            .await
            .context("applying migrations")?;
    }
    let registry = Arc::new(prometheus::Registry::new());
    keh_platform::metrics::PoolMetrics::register(&registry, pool.clone())?;
    keh_platform::metrics::register_db_metrics(&registry)?;
    let mut health = Health::default();
    let mut api = axum::Router::new();
    let mut tasks = tokio::task::JoinSet::new();
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
        tasks.spawn(async move {
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
        );
        health = health.with(query_api.health());
        api = api
            .merge(query_api.router())
            .merge(keh_auth::routes::router(auth.clone()));
    }
    if roles.serves_api() {
        let document = Arc::new(openapi::document());
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
        settings.trust_forwarded_for,
    ) {
        let idle = Arc::clone(&limit);
        let token = shutdown.clone();
        tasks.spawn(async move {
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
            tasks.spawn(async move {
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
        tasks.spawn(async move {
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
        tasks.spawn(async move {
            consumer.run(token).await;
            Ok::<(), anyhow::Error>(())
        });
        let token = shutdown.clone();
        tasks.spawn(async move {
            worker.run(token).await;
            Ok::<(), anyhow::Error>(())
        });
    }

    let app = keh_http::app(api, health, registry, &http)?;
    let token = shutdown.clone();
    tasks.spawn(async move {
        keh_http::serve(listener, app, token)
            .await
            .context("serving HTTP")
    });

    // The first task to end (normally because of shutdown) ends the process.
    let mut outcome = Ok(());
    while let Some(joined) = tasks.join_next().await {
        shutdown.cancel();
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(error)) => outcome = Err(error),
            Err(error) => outcome = Err(anyhow::anyhow!("task failed: {error}")),
        }
    }
    pool.close().await;
    outcome
}
