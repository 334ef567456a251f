//! The command line: subcommands per role, and every setting as a flag backed by an
//! environment variable (`DATABASE_URL`, `NATS_URL`, everything else `KEH_*`).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::telemetry::LogFormat;
use clap::{ArgAction, Args, Parser, Subcommand};

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

/// A PostgreSQL URL whose password never appears in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(Self(s.to_owned()))
        } else {
            Err("must be a postgres:// or postgresql:// URL".to_owned())
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keep scheme and host, hide credentials.
        let shown = match self.0.split_once('@') {
            Some((_, host)) => format!("postgres://***@{host}"),
            None => self.0.clone(),
        };
        f.write_str(&shown)
    }
}

/// Every setting, with its environment variable and default.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// PostgreSQL connection URL (the event store and everything else).
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/kubeestatehub"
    )]
    pub database_url: DatabaseUrl,

    /// NATS server URL (JetStream enabled); `nats://user:password@host:4222` signs in.
    #[arg(
        long,
        global = true,
        env = "NATS_URL",
        hide_env_values = true,
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,

    /// Address the HTTP listener binds (APIs, health, metrics).
    #[arg(
        long,
        global = true,
        env = "KEH_HTTP_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub http_addr: SocketAddr,

    /// Log filter, `RUST_LOG` syntax (e.g. `info,keh_relay=debug`).
    #[arg(long, global = true, env = "KEH_LOG", default_value = "info")]
    pub log: String,

    /// Log format: one JSON object per line, or text for a terminal.
    #[arg(
        long,
        global = true,
        env = "KEH_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,

    /// Apply pending migrations at start-up (turn off when a Job runs `migrate`).
    #[arg(long, global = true, env = "KEH_MIGRATE", default_value_t = true, action = ArgAction::Set)]
    pub migrate: bool,

    /// Largest PostgreSQL pool of the process.
    #[arg(
        long,
        global = true,
        env = "KEH_DB_MAX_CONNECTIONS",
        default_value_t = 16
    )]
    pub db_max_connections: u32,

    /// How long a request waits for a database connection before a 503, in milliseconds.
    #[arg(
        long,
        global = true,
        env = "KEH_DB_ACQUIRE_TIMEOUT_MS",
        default_value_t = 3000
    )]
    pub db_acquire_timeout_ms: u64,

    /// Write an aggregate snapshot every N events (bounds the cost of loading a listing).
    #[arg(long, global = true, env = "KEH_SNAPSHOT_EVERY", default_value_t = 50)]
    pub snapshot_every: usize,

    /// Largest request body, in bytes (413 beyond).
    #[arg(
        long,
        global = true,
        env = "KEH_BODY_LIMIT_BYTES",
        default_value_t = 262_144
    )]
    pub body_limit_bytes: usize,

    /// Longest a request may take, in milliseconds (504 beyond).
    #[arg(
        long,
        global = true,
        env = "KEH_REQUEST_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub request_timeout_ms: u64,

    /// How long shutdown may take, in milliseconds: requests, live feeds and in-flight
    /// batches drain for at most this long, then what is left is stopped (and named in the
    /// log). Keep it below the orchestrator's grace period (Kubernetes: 30 s).
    #[arg(
        long,
        global = true,
        env = "KEH_SHUTDOWN_GRACE_MS",
        default_value_t = 25_000
    )]
    pub shutdown_grace_ms: u64,

    /// JetStream stream holding the listing events.
    #[arg(
        long,
        global = true,
        env = "KEH_STREAM",
        default_value = "KEH_LISTINGS"
    )]
    pub stream: String,

    /// First token(s) of every subject (`{prefix}.listing.{partition}.{key}.{EventType}`).
    #[arg(long, global = true, env = "KEH_SUBJECT_PREFIX", default_value = "keh")]
    pub subject_prefix: String,

    /// Number of partitions (fixed for the life of a stream; consumers scale up to it).
    #[arg(long, global = true, env = "KEH_PARTITIONS", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,

    /// Stream replicas (3 in production: a single replica is not durable storage).
    #[arg(long, global = true, env = "KEH_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,

    /// JetStream de-duplication window, in seconds.
    #[arg(
        long,
        global = true,
        env = "KEH_STREAM_DUPLICATE_WINDOW_SECS",
        default_value_t = 120
    )]
    pub stream_duplicate_window_secs: u64,

    /// Maximum age of stream messages in seconds (0: kept for ever).
    #[arg(
        long,
        global = true,
        env = "KEH_STREAM_MAX_AGE_SECS",
        default_value_t = 0
    )]
    pub stream_max_age_secs: u64,

    /// Events the relay reads and publishes per pipeline.
    #[arg(long, global = true, env = "KEH_RELAY_BATCH", default_value_t = 500)]
    pub relay_batch: i64,

    /// Relay poll interval when no notification arrives, in milliseconds.
    #[arg(
        long,
        global = true,
        env = "KEH_RELAY_IDLE_POLL_MS",
        default_value_t = 1000
    )]
    pub relay_idle_poll_ms: u64,

    /// How long the relay lets events gather after publishing less than a full pipeline,
    /// in milliseconds: under load, fewer and larger reads and pipelines for at most this
    /// much more latency (0: read again at once).
    #[arg(long, global = true, env = "KEH_RELAY_GATHER_MS", default_value_t = 10)]
    pub relay_gather_ms: u64,

    /// The least time, in milliseconds, between one transaction of a consumer replica's
    /// batches (the projector's; analytics has `KEH_ANALYTICS_GATHER_MS`) and the next:
    /// under load, fewer and larger transactions for at most this much more lag (0: at
    /// once). A partition's full batch (the consumer is behind) is committed without
    /// waiting.
    #[arg(
        long,
        global = true,
        env = "KEH_CONSUMER_GATHER_MS",
        default_value_t = 10
    )]
    pub consumer_gather_ms: u64,

    /// How often the relay's leader refreshes its backlog and consumer-lag gauges, in
    /// milliseconds.
    #[arg(
        long,
        global = true,
        env = "KEH_METRICS_REFRESH_MS",
        default_value_t = 5_000
    )]
    pub metrics_refresh_ms: u64,

    /// Events the projector applies per transaction.
    #[arg(
        long,
        global = true,
        env = "KEH_PROJECTOR_BATCH",
        default_value_t = 500
    )]
    pub projector_batch: usize,

    /// How long JetStream waits for the projector's acknowledgement before redelivering,
    /// in milliseconds.
    #[arg(
        long,
        global = true,
        env = "KEH_PROJECTOR_ACK_WAIT_MS",
        default_value_t = 30_000
    )]
    pub projector_ack_wait_ms: u64,

    /// Projector replicas heartbeat this often, in milliseconds; a replica silent for three
    /// heartbeats loses its partitions to the others.
    #[arg(
        long,
        global = true,
        env = "KEH_PROJECTOR_HEARTBEAT_MS",
        default_value_t = 2_000
    )]
    pub projector_heartbeat_ms: u64,

    /// Events the analytics worker folds into market facts per transaction.
    #[arg(
        long,
        global = true,
        env = "KEH_ANALYTICS_BATCH",
        default_value_t = 500
    )]
    pub analytics_batch: usize,

    /// Like `KEH_CONSUMER_GATHER_MS`, for the analytics consumer group alone: market figures
    /// are recomputed at most every `KEH_ANALYTICS_MIN_RECOMPUTE_INTERVAL_MS` anyway, so its
    /// batches can gather longer (fewer, larger transactions, each listing's facts written
    /// once per batch) without delaying what anyone sees.
    #[arg(
        long,
        global = true,
        env = "KEH_ANALYTICS_GATHER_MS",
        default_value_t = 250
    )]
    pub analytics_gather_ms: u64,

    /// How often the analytics worker looks for series to recompute and report jobs to
    /// build when idle, and at most how often a busy one gathers the consumers' dirty marks,
    /// in milliseconds.
    #[arg(
        long,
        global = true,
        env = "KEH_ANALYTICS_TICK_MS",
        default_value_t = 500
    )]
    pub analytics_tick_ms: u64,

    /// The shortest time between two recomputations of one market series, in milliseconds:
    /// changes to a series recomputed less than this ago wait and are folded into its next
    /// recomputation (at most this much later). Bounds the CPU the analytics worker spends
    /// on large series (the whole market) under a steady stream of commands.
    #[arg(
        long,
        global = true,
        env = "KEH_ANALYTICS_MIN_RECOMPUTE_INTERVAL_MS",
        default_value_t = 2_000
    )]
    pub analytics_min_recompute_interval_ms: u64,

    /// development or production (development accepts the documented development password
    /// `admin-password` for new users; production accepts only passwords that resist
    /// guessing).
    #[arg(
        long,
        global = true,
        env = "KEH_ENV",
        value_enum,
        default_value = "development"
    )]
    pub environment: Environment,

    /// Secret signing access tokens (HS256; at least 32 bytes, e.g. `openssl rand -base64
    /// 48`). Unset: a random key is generated once per installation and kept in the
    /// database, so replicas agree and restarts keep sessions (rotate it with
    /// `kubeestatehub signing-keys rotate`).
    #[arg(long, global = true, env = "KEH_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<keh_auth::Secret>,

    /// Previous signing secrets, comma-separated: they only verify, so tokens signed before
    /// a rotation of KEH_JWT_SECRET keep working until they expire.
    #[arg(
        long,
        global = true,
        env = "KEH_JWT_PREVIOUS_SECRETS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub jwt_previous_secrets: Vec<keh_auth::Secret>,

    /// Bearer token that reads /metrics, /api/v1/metrics and the detailed health report
    /// (Prometheus sends it). Unset: only callers on this machine's loopback may read them.
    /// Probes (/api/v1/health/live, /ready) and the plain /api/v1/health status stay open.
    #[arg(long, global = true, env = "KEH_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<keh_auth::Secret>,

    /// A file holding the metrics token (instead of KEH_METRICS_TOKEN; e.g. a mounted
    /// Secret, or the token compose generates).
    #[arg(long, global = true, env = "KEH_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<std::path::PathBuf>,

    /// How far back (in events) a caller without credentials may replay the live feed with
    /// Last-Event-ID: enough for a browser reconnecting after a sleep; beyond it, a 409 says
    /// how to catch up (signed in, paged history, or the NATS stream).
    #[arg(
        long,
        global = true,
        env = "KEH_FEED_ANONYMOUS_REPLAY",
        default_value_t = 10_000
    )]
    pub feed_anonymous_replay: u64,

    /// Live-feed connections this process serves at once (beyond: 503).
    #[arg(
        long,
        global = true,
        env = "KEH_FEED_MAX_STREAMS",
        default_value_t = 1_000
    )]
    pub feed_max_streams: usize,

    /// Live-feed connections one caller (user, API key, or anonymous address) may hold at
    /// once (beyond: 429).
    #[arg(
        long,
        global = true,
        env = "KEH_FEED_MAX_STREAMS_PER_CALLER",
        default_value_t = 8
    )]
    pub feed_max_streams_per_caller: usize,

    /// Accept `http://` MediaURLs (besides `https://`) in new commands.
    #[arg(long, global = true, env = "KEH_MEDIA_ALLOW_HTTP", default_value_t = false, action = ArgAction::Set)]
    pub media_allow_http: bool,

    /// Lifetime of access tokens, in seconds.
    #[arg(
        long,
        global = true,
        env = "KEH_ACCESS_TOKEN_TTL_SECS",
        default_value_t = 900
    )]
    pub access_token_ttl_secs: u64,

    /// Lifetime of refresh tokens (a session without activity), in seconds.
    #[arg(
        long,
        global = true,
        env = "KEH_REFRESH_TOKEN_TTL_SECS",
        default_value_t = 2_592_000
    )]
    pub refresh_token_ttl_secs: u64,

    /// Whether callers without credentials may read public listing and market data.
    #[arg(long, global = true, env = "KEH_ANONYMOUS_READ", default_value_t = true, action = ArgAction::Set)]
    pub anonymous_read: bool,

    /// Whether an agent may change every listing of their office (ListOfficeKey), not only
    /// their own (ListAgentKey).
    #[arg(long, global = true, env = "KEH_AGENT_OFFICE_ACCESS", default_value_t = false, action = ArgAction::Set)]
    pub agent_office_access: bool,

    /// Requests per second each caller may send (users and API keys by identity, anonymous
    /// callers by address); 0 turns rate limiting off.
    #[arg(
        long,
        global = true,
        env = "KEH_RATE_LIMIT_PER_SECOND",
        default_value_t = 100
    )]
    pub rate_limit_per_second: u32,

    /// Requests a caller may send at once above the steady rate.
    #[arg(
        long,
        global = true,
        env = "KEH_RATE_LIMIT_BURST",
        default_value_t = 200
    )]
    pub rate_limit_burst: u32,

    /// Take the client address from the first `X-Forwarded-For` hop (only behind a proxy
    /// that sets it).
    #[arg(long, global = true, env = "KEH_TRUST_FORWARDED_FOR", default_value_t = false, action = ArgAction::Set)]
    pub trust_forwarded_for: bool,

    /// Browser origins allowed to call the APIs (CORS), comma-separated, e.g.
    /// `https://app.example.com`; empty: no CORS.
    #[arg(
        long,
        global = true,
        env = "KEH_CORS_ORIGINS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub cors_origins: Vec<String>,

    /// How long a market report job stays reserved by the worker building it, in
    /// milliseconds; a job whose worker died is taken over after that.
    #[arg(
        long,
        global = true,
        env = "KEH_REPORT_LEASE_MS",
        default_value_t = 60_000
    )]
    pub report_lease_ms: u64,
}

impl Settings {
    /// The internal stream: every event with its private fields, for the platform's own
    /// consumers only (`{KEH_STREAM}_INTERNAL`, subjects `{KEH_SUBJECT_PREFIX}.internal.…`).
    pub fn internal_stream(&self) -> String {
        format!("{}_INTERNAL", self.stream)
    }

    pub fn internal_subject_prefix(&self) -> String {
        format!("{}.internal", self.subject_prefix)
    }

    /// The relay of the public stream (private fields removed; outside subscribers read it).
    pub fn relay(&self) -> keh_relay::RelaySettings {
        keh_relay::RelaySettings {
            stream: self.stream.clone(),
            subject_prefix: self.subject_prefix.clone(),
            partitions: self.partitions,
            replicas: self.stream_replicas,
            duplicate_window: Duration::from_secs(self.stream_duplicate_window_secs),
            max_age: Duration::from_secs(self.stream_max_age_secs),
            batch_size: self.relay_batch.max(1),
            idle_poll: Duration::from_millis(self.relay_idle_poll_ms.max(10)),
            gather: Duration::from_millis(self.relay_gather_ms),
            redact_private: true,
            metrics_every: Duration::from_millis(self.metrics_refresh_ms.max(10)),
            ..keh_relay::RelaySettings::default()
        }
    }

    /// The relay of the internal stream (everything, for the projector and the analytics
    /// worker).
    pub fn relay_internal(&self) -> keh_relay::RelaySettings {
        keh_relay::RelaySettings {
            stream: self.internal_stream(),
            subject_prefix: self.internal_subject_prefix(),
            redact_private: false,
            ..self.relay()
        }
    }

    /// The projector's settings.
    pub fn projector(&self) -> keh_projections::projector::ProjectorSettings {
        keh_projections::projector::ProjectorSettings {
            stream: self.internal_stream(),
            subject_prefix: self.internal_subject_prefix(),
            partitions: self.partitions,
            batch_size: self.projector_batch.max(1),
            ack_wait: Duration::from_millis(self.projector_ack_wait_ms.max(100)),
            heartbeat: Duration::from_millis(self.projector_heartbeat_ms.max(50)),
            gather: Duration::from_millis(self.consumer_gather_ms),
            ..keh_projections::projector::ProjectorSettings::default()
        }
    }

    /// The analytics consumer group's settings (same partitions and stream as the projector,
    /// its own durable consumers `analytics-p{N}`).
    pub fn analytics(&self) -> keh_projections::projector::ProjectorSettings {
        keh_projections::projector::ProjectorSettings {
            group: "analytics".to_owned(),
            batch_size: self.analytics_batch.max(1),
            gather: Duration::from_millis(self.analytics_gather_ms),
            ..self.projector()
        }
    }

    pub fn analytics_worker(&self) -> keh_analytics::worker::WorkerSettings {
        keh_analytics::worker::WorkerSettings {
            tick: Duration::from_millis(self.analytics_tick_ms.max(10)),
            report_lease: Duration::from_millis(self.report_lease_ms.max(100)),
            min_interval: Duration::from_millis(self.analytics_min_recompute_interval_ms),
            ..keh_analytics::worker::WorkerSettings::default()
        }
    }

    /// Sign-in and authorization settings.
    pub fn auth(&self) -> keh_auth::AuthSettings {
        keh_auth::AuthSettings {
            jwt_secret: self.jwt_secret.clone(),
            previous_jwt_secrets: self.jwt_previous_secrets.clone(),
            password_policy: keh_auth::policy::PasswordPolicy {
                allow_development_password: self.environment == Environment::Development,
            },
            access_ttl: Duration::from_secs(self.access_token_ttl_secs.max(1)),
            refresh_ttl: Duration::from_secs(self.refresh_token_ttl_secs.max(1)),
            anonymous_read: self.anonymous_read,
            office_access: self.agent_office_access,
            trust_forwarded_for: self.trust_forwarded_for,
        }
    }

    /// The HTTP settings; fails when the metrics token file cannot be read.
    pub fn http(&self) -> Result<keh_http::HttpSettings, String> {
        let ops_token = match (&self.metrics_token, &self.metrics_token_file) {
            (Some(token), _) => Some(token.expose().to_owned()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("reading KEH_METRICS_TOKEN_FILE {}: {e}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        }
        .filter(|token| !token.is_empty());
        if let Some(token) = &ops_token
            && token.len() < 16
        {
            return Err(
                "the metrics token must be at least 16 characters (e.g. `openssl rand -hex 32`)"
                    .to_owned(),
            );
        }
        let ops_token = ops_token.map(keh_http::OpsToken::new);
        Ok(keh_http::HttpSettings {
            ops_token,
            body_limit: self.body_limit_bytes,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            cors_origins: self
                .cors_origins
                .iter()
                .map(|o| o.trim())
                .filter(|o| !o.is_empty())
                .filter_map(|o| axum::http::HeaderValue::from_str(o).ok())
                .collect(),
        })
    }

    pub fn pool(&self, role: &str) -> keh_store::PoolSettings {
        keh_store::PoolSettings {
            max_connections: self.db_max_connections.max(2),
            acquire_timeout: Duration::from_millis(self.db_acquire_timeout_ms),
            application_name: format!("kubeestatehub-{role}"),
        }
    }
}
