//! The command line: subcommands per role (here), every setting as a flag backed by an
//! environment variable (`settings`: `DATABASE_URL`, `NATS_URL`, everything else `KEH_*`),
//! and what each role's settings are (`roles`).

use clap::{Parser, Subcommand};

mod roles;
mod settings;

pub use settings::{DatabaseUrl, Settings};

/// KubeEstateHub: an event-sourced real-estate listings platform.
///
/// Every role runs from this one binary, alone (one per Kubernetes Deployment) or all
/// together in one process (`all`, for a laptop). Every option can be set by the
/// environment variable shown in brackets.
#[derive(Debug, Parser)]
#[command(name = "kubeestatehub", version, max_term_width = 100, after_help = TRACES_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Command,
}

/// The health endpoint `kubeestatehub health` asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HealthCheck {
    Live,
    Ready,
}

/// The OpenTelemetry variables (read by the OpenTelemetry SDK, not by clap).
pub const TRACES_HELP: &str = "\
Traces (OpenTelemetry, the standard variables):
  OTEL_EXPORTER_OTLP_ENDPOINT         OTLP/HTTP collector (e.g. http://collector:4318); spans are
                                      exported only when this or the traces endpoint is set
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT  full traces URL (default: the endpoint + /v1/traces)
  OTEL_EXPORTER_OTLP_HEADERS          headers for the collector (key1=value1,key2=value2)
  OTEL_EXPORTER_OTLP_TIMEOUT          export timeout in milliseconds [default: 10000]
  OTEL_SERVICE_NAME                   service name [default: kubeestatehub-<subcommand>]
  OTEL_RESOURCE_ATTRIBUTES            extra resource attributes (key1=value1,...)
  OTEL_TRACES_SAMPLER                 sampler [default: parentbased_always_on]
  OTEL_TRACES_SAMPLER_ARG             the sampler's ratio, for *traceidratio
  OTEL_BSP_SCHEDULE_DELAY             batch export interval in milliseconds [default: 5000]
  OTEL_TRACES_EXPORTER                none turns export off
  OTEL_SDK_DISABLED                   true turns export off
Logs written inside a traced span carry openTelemetry.traceId and spanId.";

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Every role in one process, serving every HTTP route on one listener.
    All,
    /// The command API (HTTP commands appended to the event store).
    CommandApi,
    /// The query API (search, listings, history, time travel, live feed).
    QueryApi,
    /// The relay (publishes committed events to JetStream; serves health and metrics).
    Relay,
    /// The projector (JetStream → read model; serves health and metrics).
    Projector,
    /// The analytics worker (JetStream → market facts → market metrics per area, property
    /// type and period; builds market reports; serves health and metrics).
    Analytics,
    /// Read-model and analytics maintenance.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Import listings from a RESO-named CSV (with a header) or JSON-lines file through the
    /// command path; bad rows are reported and the others imported; exits non-zero when any
    /// row failed. Importing the same file again appends nothing.
    Import {
        /// The file (`-` reads standard input).
        file: std::path::PathBuf,
    },
    /// Generate a realistic synthetic market through the command path (deterministic from
    /// --seed; listings that already exist are left alone, so a re-run adds nothing).
    Seed {
        /// Number of listings.
        #[arg(long, default_value_t = 3000)]
        listings: usize,
        /// How many months back the market starts.
        #[arg(long, default_value_t = 24)]
        months: u32,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Last day of the market (default: today, UTC).
        #[arg(long)]
        until: Option<chrono::NaiveDate>,
        /// Listings written at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// User administration (bootstrap the first administrator here; afterwards, the admin
    /// API works too).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Apply database migrations (and make the installation's first signing key when
    /// KEH_JWT_SECRET is unset), then exit.
    Migrate,
    /// The keys generated for signing access tokens (used when KEH_JWT_SECRET is unset).
    #[command(subcommand)]
    SigningKeys(SigningKeysCommand),
    /// Print the JSON Schema of the published event envelope, then exit.
    Schema,
    /// Ask the role running on this machine's KEH_HTTP_ADDR whether it is healthy: exits 0
    /// when it answers 2xx (a container health check that needs no shell or curl).
    Health {
        /// Which check: `live` (the process serves) or `ready` (it can do its work).
        #[arg(long, value_enum, default_value = "live")]
        check: HealthCheck,
    },
}

impl Command {
    /// The name traces give this process unless `OTEL_SERVICE_NAME` says otherwise:
    /// `kubeestatehub-` and the subcommand (`kubeestatehub-relay`, `kubeestatehub-all`, …).
    pub fn service_name(&self) -> String {
        let sub = match self {
            Self::All => "all",
            Self::CommandApi => "command-api",
            Self::QueryApi => "query-api",
            Self::Relay => "relay",
            Self::Projector => "projector",
            Self::Analytics => "analytics",
            Self::Projections(_) => "projections",
            Self::Import { .. } => "import",
            Self::Seed { .. } => "seed",
            Self::Users(_) => "users",
            Self::Migrate => "migrate",
            Self::SigningKeys(_) => "signing-keys",
            Self::Schema => "schema",
            Self::Health { .. } => "health",
        };
        format!("kubeestatehub-{sub}")
    }
}

/// `kubeestatehub projections …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum ProjectionsCommand {
    /// Replay the event store into fresh read-model tables and swap them in atomically
    /// (the query API keeps serving the old ones until the swap); then rebuild the market
    /// analytics (facts, series, metrics; report jobs are kept) in one transaction.
    Rebuild {
        /// What to rebuild.
        #[arg(long, value_enum, default_value = "all")]
        target: RebuildTarget,
    },
}

/// `kubeestatehub users …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum UsersCommand {
    /// Create a user. The password is read from KEH_USER_PASSWORD, or generated
    /// (--generate-password), or else read from the first line of standard input (never
    /// from the command line, where `ps` would show it).
    Create {
        #[arg(long)]
        username: String,
        /// admin, agent or viewer.
        #[arg(long, default_value = "admin")]
        role: String,
        /// The RESO ListAgentKey an agent acts for (required for agents).
        #[arg(long)]
        agent_key: Option<String>,
        /// The agent's RESO ListOfficeKey.
        #[arg(long)]
        office_key: Option<String>,
        /// Succeed without changes when the user exists (for idempotent bootstrap scripts).
        #[arg(long)]
        if_missing: bool,
        /// Generate a strong random password and print it once (when KEH_USER_PASSWORD is
        /// unset): the first-administrator bootstrap of a fresh installation.
        #[arg(long)]
        generate_password: bool,
    },
}

/// `kubeestatehub signing-keys …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum SigningKeysCommand {
    /// List the keys (id, created, retired; never the secret).
    List,
    /// Make a new key that signs from now on. The previous keys keep verifying for one
    /// access-token lifetime (KEH_ACCESS_TOKEN_TTL_SECS), so nobody is signed out; with
    /// --retire-now they stop at once (a leaked key: every access token signed with it is
    /// refused; sessions continue through their refresh tokens). Every running replica
    /// switches at once.
    Rotate {
        #[arg(long)]
        retire_now: bool,
    },
}

/// Where the binary runs: development accepts the documented development password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Environment {
    Development,
    Production,
}

/// What `projections rebuild` rebuilds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RebuildTarget {
    All,
    ReadModel,
    Analytics,
}
