//! Every setting: its flag, environment variable, default and help, in one declaration
//! (`--help` prints it, and the documentation test holds `docs/configuration.md` to it).
//! Long because it is a list, one documented field per setting.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use clap::{ArgAction, Args};

use crate::telemetry::LogFormat;

use super::Environment;

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

    /// Most bytes each stream may hold (0: no limit). A full stream refuses what would not
    /// fit (`discard: new`): the relay waits, nothing is lost, dropped or reordered, and the
    /// `KehStreamNearlyFull` alert fires well before; raise it (or the volume) and restart
    /// the relay.
    #[arg(long, global = true, env = "KEH_STREAM_MAX_BYTES", default_value_t = 0,
          value_parser = clap::value_parser!(i64).range(0..))]
    pub stream_max_bytes: i64,

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

    /// Address ranges of the proxies in front of the APIs (the Gateway), comma-separated
    /// CIDRs, e.g. `10.0.0.0/8`: behind one of them the client is the last
    /// `X-Forwarded-For` hop no trusted proxy holds (for rate limits and live-feed
    /// allowances); empty: the peer is the client, whatever a header says.
    #[arg(
        long,
        global = true,
        env = "KEH_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,

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
