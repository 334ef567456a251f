//! The `kubeestatehub` binary's library: command line ([`cli`]), the dispatch ([`run`]),
//! start-up of the roles ([`start`], in `startup`), the subcommands that do a job and exit
//! (`commands`: one module each), and what those jobs use: the importer ([`import`]), the
//! demo market ([`seed`]), the OpenAPI document ([`openapi`]) and the log and trace
//! pipeline ([`telemetry`]). Each role lives in its own crate; this crate only wires them
//! together, so that `all` and the single roles run the very same code.

use anyhow::Context as _;
use tokio::net::TcpListener;

pub mod cli;
mod commands;
pub mod import;
pub mod openapi;
pub mod seed;
mod startup;
pub mod telemetry;

use cli::{Cli, Command, ProjectionsCommand};
pub use startup::start;

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

    pub(crate) fn name(self) -> &'static str {
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
    pub(crate) fn serves_api(self) -> bool {
        self.command_api || self.query_api
    }
}

/// Runs what the command line asks for.
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
        Command::Health { check } => {
            return commands::health::health_check(settings.http_addr, check).await;
        }
        Command::Migrate => return commands::migrate(&settings).await,
        Command::SigningKeys(command) => {
            return commands::keys::signing_keys(&settings, command).await;
        }
        Command::Projections(ProjectionsCommand::Rebuild { target }) => {
            return commands::rebuild::rebuild(&settings, target).await;
        }
        Command::Import { file } => return commands::import::import_file(&settings, &file).await,
        Command::Users(command) => return commands::users::create_user(&settings, command).await,
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
            return commands::seed::seed_market(
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
