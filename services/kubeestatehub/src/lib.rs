//! The `kubeestatehub` binary's library: command line ([`cli`]) and start-up ([`run`],
//! [`start`]). Each role lives in its own crate; this crate only wires them together, so
//! that `all` and the single roles run the very same code.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use keh_command_api::CommandApi;
use keh_platform::health::Health;
use keh_relay::Relay;
use keh_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod cli;

use cli::{Cli, Command, Settings};

/// The roles a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    pub command_api: bool,
    pub relay: bool,
}

impl Roles {
    pub const ALL: Self = Self {
        command_api: true,
        relay: true,
    };
}

/// Runs what the command line asks for.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    keh_platform::telemetry::init(cli.settings.log_format, &cli.settings.log);
    let settings = cli.settings;
    let roles = match cli.command {
        Command::Schema => {
            print!("{}", keh_events::schema::envelope_schema_pretty());
            return Ok(());
        }
        Command::Migrate => {
            let pool =
                keh_store::connect_lazy(settings.database_url.expose(), &settings.pool("migrate"))?;
            keh_store::migrate(&pool)
                .await
                .context("applying migrations")?;
            tracing::info!("migrations applied");
            return Ok(());
        }
        Command::All => Roles::ALL,
        Command::CommandApi => Roles {
            command_api: true,
            relay: false,
        },
        Command::Relay => Roles {
            command_api: false,
            relay: true,
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

/// Starts `roles` on an already-bound listener (tests bind port 0) and runs until
/// `shutdown` is cancelled, then drains requests and the relay's pipeline.
pub async fn start(
    settings: Settings,
    roles: Roles,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let role_name = match (roles.command_api, roles.relay) {
        (true, true) => "all",
        (true, false) => "command-api",
        _ => "relay",
    };
    let pool = keh_store::connect_lazy(settings.database_url.expose(), &settings.pool(role_name))?;
    if settings.migrate {
        keh_store::migrate(&pool)
            .await
            .context("applying migrations")?;
    }
    let registry = Arc::new(prometheus::Registry::new());
    let mut health = Health::default();
    let mut api = axum::Router::new();
    let mut tasks = tokio::task::JoinSet::new();

    if roles.command_api {
        let store = Arc::new(Store::new(pool.clone(), settings.snapshot_every));
        let command_api = CommandApi::new(store);
        health = health.with(command_api.health());
        api = api.merge(command_api.router());
    }
    if roles.relay {
        let reconnected = Arc::new(AtomicBool::new(false));
        let nats = keh_relay::connect_nats(
            &settings.nats_url,
            &format!("kubeestatehub-{role_name}"),
            Arc::clone(&reconnected),
        )
        .await
        .context("configuring the NATS client")?;
        let database = settings
            .database_url
            .expose()
            .parse()
            .context("parsing DATABASE_URL")?;
        let relay = Relay::new(
            settings.relay(),
            database,
            pool.clone(),
            nats,
            reconnected,
            &registry,
        )?;
        // Alone, the relay is ready when NATS is; next to the command API, NATS being down
        // must not take the API out of service (the relay catches up when NATS returns).
        health = health.with(relay.health(!roles.command_api));
        let token = shutdown.clone();
        tasks.spawn(async move {
            relay.run(token).await;
            Ok::<(), anyhow::Error>(())
        });
    }

    let app = keh_platform::http::app(api, health, registry, &settings.http())?;
    let token = shutdown.clone();
    tasks.spawn(async move {
        keh_platform::http::serve(listener, app, token)
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
