//! Test harness: a fresh database per test, a private stream and subject prefix per test, the
//! real application on port 0, private NATS servers for outage tests.
//!
//! Servers come from `KEH_TEST_DATABASE_URL` (a database the tests may create databases
//! from; default: `DATABASE_URL` with database `postgres`) and `NATS_URL`. A missing server
//! fails the test with a message saying so: nothing is skipped.

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use kubeestatehub::cli::{DatabaseUrl, Settings};
use kubeestatehub::telemetry::LogFormat;
use kubeestatehub::{Roles, start};
use serde_json::Value;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Generous bound for eventual effects (correctness, not speed).
pub(crate) const EVENTUALLY: Duration = Duration::from_secs(20);

/// Polls `check` every 100 ms until it holds; fails the test saying `what` after
/// [`EVENTUALLY`].
pub(crate) async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(what, EVENTUALLY, check).await;
}

/// [`eventually`] with a bound of its own (for what takes longer, like settling after
/// faults).
pub(crate) async fn eventually_within<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    observe_within(what, within, || {
        let holds = check();
        async move { (holds.await, String::new()) }
    })
    .await;
}

/// [`eventually`] for a check that also describes what it saw: a failure names the last
/// observation, so that a failure in CI says which part did not hold.
pub(crate) async fn eventually_observed<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (bool, String)>,
{
    observe_within(what, EVENTUALLY, check).await;
}

async fn observe_within<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (bool, String)>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (holds, seen) = check().await;
        if holds {
            return;
        }
        let seen = if seen.is_empty() {
            String::new()
        } else {
            format!("; last seen: {seen}")
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} (after {within:?}{seen})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn admin_url() -> String {
    if let Ok(url) = std::env::var("KEH_TEST_DATABASE_URL") {
        return url;
    }
    match std::env::var("DATABASE_URL") {
        Ok(url) => match url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/postgres"),
            None => url,
        },
        Err(_) => "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
    }
}

pub(crate) fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A database of its own, dropped at the end of the test.
pub(crate) struct TestDb {
    pub(crate) name: String,
    pub(crate) url: String,
    admin: String,
}

impl TestDb {
    pub(crate) async fn create() -> Self {
        let admin = admin_url();
        let name = format!("keh_t_{}", Uuid::new_v4().simple());
        let pool = PgPool::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is required for this test ({admin}): {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .expect("create test database");
        pool.close().await;
        let url = match admin.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("unexpected database URL {admin}"),
        };
        Self { name, url, admin }
    }

    pub(crate) async fn pool(&self) -> PgPool {
        PgPool::connect(&self.url)
            .await
            .expect("connect to test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Async work cannot run in Drop: a short-lived runtime on its own thread does it.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let pool = PgPool::connect(&admin).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&pool)
                    .await
                    .ok()?;
                pool.close().await;
                Some(())
            })
        })
        .join();
    }
}

/// The key test instances sign access tokens with.
pub(crate) const TEST_SECRET: &str = "test-signing-key-0123456789abcdef0123456789";

/// A user with `role` made for a test, signed in without a password (tests mint the
/// sessions they need instead of signing in, except where sign-in itself is tested).
pub(crate) async fn token_for(
    database_url: &str,
    auth: keh_auth::AuthSettings,
    role: keh_auth::Role,
    agent_key: Option<&str>,
) -> String {
    let pool = PgPool::connect(database_url).await.expect("connect");
    let auth = keh_auth::AuthService::start(pool.clone(), auth)
        .await
        .expect("auth service");
    let user = auth
        .create_user(
            "test",
            keh_auth::service::NewUser {
                username: format!("test-{}-{}", role.as_str(), Uuid::new_v4().simple()),
                password: "kestrel-quarry-57-lantern".to_owned(),
                role,
                agent_key: agent_key.map(str::to_owned),
                office_key: None,
            },
        )
        .await
        .expect("user");
    let pair = auth.session_for(user.user_id).await.expect("session");
    pool.close().await;
    pair.access_token
}

/// What a token says, read without checking it (tests re-sign altered copies).
pub(crate) fn claims_of(token: &str) -> keh_auth::tokens::Claims {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.insecure_disable_signature_validation();
    validation.validate_aud = false;
    validation.validate_exp = false;
    jsonwebtoken::decode(
        token,
        &jsonwebtoken::DecodingKey::from_secret(b""),
        &validation,
    )
    .expect("claims")
    .claims
}

/// An administrator's access token on an instance that signs with [`TEST_SECRET`].
pub(crate) async fn admin_token(database_url: &str) -> String {
    let auth = keh_auth::AuthSettings {
        jwt_secret: Some(keh_auth::Secret::new(TEST_SECRET)),
        ..keh_auth::AuthSettings::default()
    };
    token_for(database_url, auth, keh_auth::Role::Admin, None).await
}

/// A client that sends `token` with every request.
pub(crate) fn client_with(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .default_headers(headers)
        .build()
        .expect("client")
}

/// Settings for a test: every field explicit, so nothing leaks in from the environment.
pub(crate) fn settings(db: &TestDb, nats_url: &str, id: &str) -> Settings {
    Settings {
        database_url: db.url.parse::<DatabaseUrl>().expect("database url"),
        nats_url: nats_url.to_owned(),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        log: std::env::var("KEH_TEST_LOG").unwrap_or_else(|_| "off".to_owned()),
        log_format: LogFormat::Text,
        migrate: true,
        db_max_connections: 10,
        db_acquire_timeout_ms: 3000,
        snapshot_every: 10,
        body_limit_bytes: 64 * 1024,
        request_timeout_ms: 10_000,
        // Below `stop`'s own limit, so that a task that does not drain is named.
        shutdown_grace_ms: 15_000,
        stream: format!("KEH_T_{id}"),
        subject_prefix: format!("t{id}"),
        partitions: 4,
        stream_replicas: 1,
        stream_duplicate_window_secs: 120,
        stream_max_age_secs: 0,
        stream_max_bytes: 0,
        relay_batch: 100,
        relay_idle_poll_ms: 200,
        relay_gather_ms: 3,
        consumer_gather_ms: 10,
        analytics_gather_ms: 10,
        metrics_refresh_ms: 200,
        projector_batch: 100,
        projector_ack_wait_ms: 2_000,
        projector_heartbeat_ms: 300,
        analytics_batch: 100,
        analytics_tick_ms: 100,
        // Tests compare figures right after each change; one test checks the interval.
        analytics_min_recompute_interval_ms: 0,
        report_lease_ms: 2_000,
        environment: kubeestatehub::cli::Environment::Development,
        jwt_secret: Some(keh_auth::Secret::new(TEST_SECRET)),
        jwt_previous_secrets: Vec::new(),
        metrics_token: None,
        metrics_token_file: None,
        feed_anonymous_replay: 10_000,
        feed_max_streams: 1_000,
        feed_max_streams_per_caller: 8,
        media_allow_http: false,
        access_token_ttl_secs: 900,
        refresh_token_ttl_secs: 3600,
        anonymous_read: true,
        agent_office_access: false,
        // Tests send bursts; the rate-limit test turns it on for itself.
        rate_limit_per_second: 0,
        rate_limit_burst: 0,
        trusted_proxies: Vec::new(),
        cors_origins: Vec::new(),
    }
}

/// Seeds a synthetic market through the command path (as `kubeestatehub seed` does).
pub(crate) async fn seed_market(
    pool: &PgPool,
    listings: usize,
    months: u32,
    seed: u64,
    until: chrono::DateTime<chrono::Utc>,
) {
    let plan = kubeestatehub::seed::SeedPlan {
        listings,
        months,
        seed,
        until,
    };
    let store = std::sync::Arc::new(keh_store::Store::new(pool.clone(), 10));
    kubeestatehub::seed::run(store, kubeestatehub::seed::plan(plan), 4, |_| {})
        .await
        .expect("seed");
}

/// The listing as the query API serves it once projected at `version` (the server waits up
/// to 10 s); fails the test unless it answers 200.
pub(crate) async fn wait_projected(app: &TestApp, key: &str, version: u64) -> Reply {
    let reply = app
        .send(app.client.get(app.url(&format!(
            "/api/v1/listings/{key}?min_version={version}&wait_ms=10000"
        ))))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply
}

/// A running application instance.
pub(crate) struct TestApp {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    pub(crate) settings: Settings,
    /// The database as its owner: tests make their users through it, whichever
    /// least-privileged login the instance itself uses.
    owner_url: String,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub(crate) async fn spawn(settings: Settings, roles: Roles) -> Self {
        let owner_url = settings.database_url.expose().to_owned();
        Self::spawn_as(settings, roles, owner_url).await
    }

    /// An instance whose database login is not the owner (`owner_url`).
    pub(crate) async fn spawn_as(settings: Settings, roles: Roles, owner_url: String) -> Self {
        // Tests in one binary share the global subscriber: the first one installs it and
        // keeps it (a trace pipeline without an exporter, never shut down).
        static TELEMETRY: std::sync::Once = std::sync::Once::new();
        TELEMETRY.call_once(|| {
            std::mem::forget(kubeestatehub::telemetry::init(
                settings.log_format,
                &settings.log,
                "kubeestatehub-test",
            ));
        });
        remove_old_test_streams().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(start(settings.clone(), roles, listener, shutdown.clone()));
        let mut app = Self {
            base,
            client: client_with(None),
            settings,
            owner_url,
            shutdown,
            task: Some(task),
        };
        app.wait_until(|status| status == 200, "/api/v1/health/live")
            .await;
        // Tests act as an administrator unless they say otherwise.
        app.client = client_with(Some(&app.token(keh_auth::Role::Admin, None).await));
        app
    }

    /// An access token of a new user with `role` on this instance.
    pub(crate) async fn token(&self, role: keh_auth::Role, agent_key: Option<&str>) -> String {
        token_for(&self.owner_url, self.settings.auth(), role, agent_key).await
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn wait_until(&self, ok: impl Fn(u16) -> bool, path: &str) {
        let deadline = tokio::time::Instant::now() + EVENTUALLY;
        loop {
            if let Ok(response) = self.client.get(self.url(path)).send().await
                && ok(response.status().as_u16())
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// POSTs JSON, returns status, headers and body.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> Reply {
        Reply::from(
            self.client
                .post(self.url(path))
                .json(body)
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    pub(crate) async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        Reply::from(request.send().await.expect("request")).await
    }

    /// Creates a listing and returns its key.
    pub(crate) async fn create_listing(&self, body: Value) -> String {
        let reply = self.post("/api/v1/listings", &body).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.body["ListingKey"]
            .as_str()
            .expect("ListingKey")
            .to_owned()
    }

    /// A value of this instance's `/metrics`.
    async fn metrics_text(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// The sum of a labelled metric's series whose labels contain `needle`.
    pub(crate) async fn metric_sum(&self, name: &str, needle: &str) -> f64 {
        self.metrics_text()
            .await
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(needle))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    }

    pub(crate) async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics_text().await;
        // Unlabelled, or labelled with this instance's public stream (the relays of the
        // public and the internal stream label their metrics with it).
        let labelled = format!("{{stream=\"{}\"}} ", self.settings.stream);
        text.lines()
            .find_map(|line| {
                line.strip_prefix(name).and_then(|rest| {
                    rest.strip_prefix(' ')
                        .or_else(|| rest.strip_prefix(labelled.as_str()))
                })
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Kills the instance abruptly (its tasks are dropped wherever they are), like `kill -9`.
    pub(crate) async fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Stops the instance and waits for it to drain; fails the test when it does not within
    /// [`EVENTUALLY`] or ends with an error.
    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            // A graceful shutdown that hangs or fails is a defect the test should show, not
            // a wait to sit out.
            // Beyond the application's own grace (it names what did not drain).
            let limit = Duration::from_secs(30);
            match tokio::time::timeout(limit, task).await {
                Err(_) => {
                    panic!("the application did not shut down within {limit:?} of being asked to")
                }
                Ok(Err(join)) => panic!("the application's task failed: {join}"),
                Ok(Ok(Err(error))) => panic!("the application ended with an error: {error:#}"),
                Ok(Ok(Ok(()))) => {}
            }
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A response, read completely.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Value,
}

impl Reply {
    async fn from(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Self {
            status,
            headers,
            body,
        }
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Unique id for stream and subject names.
/// Starts with the minute it was made (hex), so that streams left by crashed or earlier
/// runs can be recognised as old and removed.
pub(crate) fn unique_id() -> String {
    let random = &Uuid::new_v4().simple().to_string()[..8];
    format!("{:08X}{}", minutes_now(), random.to_uppercase())
}

fn minutes_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

/// Once per test run: deletes test streams (`KEH_T_…`) made more than an hour ago, so the
/// shared NATS server does not fill up with the streams of tests that did not clean up.
async fn remove_old_test_streams() {
    static ONCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    ONCE.get_or_init(|| async {
        let Ok(client) = async_nats::connect(nats_url()).await else {
            return;
        };
        let jetstream = async_nats::jetstream::new(client);
        let names: Vec<String> = jetstream
            .stream_names()
            .filter_map(|n| async move { n.ok() })
            .collect()
            .await;
        for name in names {
            let made = name
                .strip_prefix("KEH_T_")
                .and_then(|id| id.get(..8))
                .and_then(|hex| u64::from_str_radix(hex, 16).ok());
            if made.is_some_and(|minute| minutes_now().saturating_sub(minute) > 60) {
                let _ = jetstream.delete_stream(&name).await;
            }
        }
    })
    .await;
}

/// A message of the stream, as a subscriber sees it.
#[derive(Debug, Clone)]
pub(crate) struct Published {
    pub(crate) subject: String,
    pub(crate) headers: async_nats::HeaderMap,
    pub(crate) envelope: Value,
}

impl Published {
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.as_str().to_owned())
    }
}

/// Every message of `stream`, in stream order, read by an ordered consumer as an outside
/// subscriber would.
pub(crate) async fn stream_messages(nats_url: &str, stream: &str) -> Vec<Published> {
    let client = async_nats::connect(nats_url)
        .await
        .unwrap_or_else(|e| panic!("NATS is required ({nats_url}): {e}"));
    let jetstream = async_nats::jetstream::new(client);
    let Ok(mut handle) = jetstream.get_stream(stream).await else {
        return Vec::new();
    };
    let last = handle
        .info()
        .await
        .expect("stream info")
        .state
        .last_sequence;
    let mut messages = Vec::new();
    if last == 0 {
        return messages;
    }
    let consumer = handle
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("ordered consumer");
    let mut stream_of_messages = consumer.messages().await.expect("messages");
    while let Ok(Some(next)) =
        tokio::time::timeout(Duration::from_secs(5), stream_of_messages.next()).await
    {
        let message = next.expect("message");
        let info = message.info().expect("info");
        let sequence = info.stream_sequence;
        messages.push(Published {
            subject: message.subject.to_string(),
            headers: message.headers.clone().unwrap_or_default(),
            envelope: serde_json::from_slice(&message.payload).expect("envelope JSON"),
        });
        if sequence >= last {
            break;
        }
    }
    messages
}

/// Waits until `stream` holds `count` messages (or more), then returns them all.
pub(crate) async fn wait_for_stream(nats_url: &str, stream: &str, count: usize) -> Vec<Published> {
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    loop {
        let client = async_nats::connect(nats_url).await.expect("NATS");
        let jetstream = async_nats::jetstream::new(client);
        let held = match jetstream.get_stream(stream).await {
            Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        };
        if usize::try_from(held).unwrap_or(0) >= count {
            return stream_messages(nats_url, stream).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream {stream} holds {held} messages, expected {count}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes a test stream (best effort).
/// Deletes a test's streams: the public one and its internal twin.
pub(crate) async fn delete_stream(nats_url: &str, stream: &str) {
    if let Ok(client) = async_nats::connect(nats_url).await {
        let jetstream = async_nats::jetstream::new(client);
        let _ = jetstream.delete_stream(stream).await;
        let _ = jetstream.delete_stream(format!("{stream}_INTERNAL")).await;
    }
}

/// Event ids, listing keys and sequences in the store, in global order.
pub(crate) async fn stored_events(pool: &PgPool) -> Vec<(Uuid, String, i64)> {
    sqlx::query_as(
        "SELECT event_id, aggregate_id, sequence FROM events ORDER BY tx_id, global_position",
    )
    .fetch_all(pool)
    .await
    .expect("read events")
}

/// Checks the relay's invariants: the stream holds exactly the store's events (same ids,
/// no duplicates) and each listing's events in sequence order.
pub(crate) fn assert_stream_equals_store(published: &[Published], stored: &[(Uuid, String, i64)]) {
    let ids: Vec<String> = published
        .iter()
        .map(|p| p.header("Nats-Msg-Id").unwrap_or_default())
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "duplicate event ids in the stream");
    let mut expected: Vec<String> = stored.iter().map(|(id, _, _)| id.to_string()).collect();
    expected.sort();
    assert_eq!(
        unique, expected,
        "the stream must hold exactly the store's events"
    );
    let mut last: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for message in published {
        let key = message.envelope["ListingKey"]
            .as_str()
            .expect("ListingKey")
            .to_owned();
        let sequence = message.envelope["Sequence"].as_i64().expect("Sequence");
        let previous = last.insert(key.clone(), sequence).unwrap_or(0);
        assert_eq!(
            sequence,
            previous + 1,
            "listing {key}: sequence {sequence} follows {previous} in the stream"
        );
    }
}

/// A private NATS server with JetStream on its own port and storage, for outage tests.
pub(crate) struct PrivateNats {
    pub(crate) port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// A configuration file and the environment it reads (passwords).
    config: Option<(PathBuf, Vec<(String, String)>)>,
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl PrivateNats {
    pub(crate) async fn start() -> Self {
        Self::launch(None).await
    }

    /// A private server with a configuration file (users and permissions), on its own port
    /// and storage.
    pub(crate) async fn start_with_config(config: PathBuf, env: &[(&str, &str)]) -> Self {
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Self::launch(Some((config, env))).await
    }

    async fn launch(config: Option<(PathBuf, Vec<(String, String)>)>) -> Self {
        let dir = std::env::temp_dir().join(format!("keh-nats-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("nats dir");
        let mut nats = Self {
            port: free_port(),
            dir,
            child: None,
            config,
        };
        nats.resume().await;
        nats
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and storage.
    pub(crate) async fn resume(&mut self) {
        let binary = [
            "nats-server",
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
        ]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        })
        .expect("the nats-server binary is required for outage tests (./dev test installs it)");
        let mut command = Command::new(binary);
        if let Some((config, env)) = &self.config {
            command.arg("-c").arg(config).envs(env.iter().cloned());
        }
        let child = command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + EVENTUALLY;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "private nats-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server abruptly (SIGKILL): clients see the connection drop.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private PostgreSQL cluster on its own port and data folder, for tests that crash or
/// restart the database (never the shared server other tests use). As root, the cluster
/// belongs to the `postgres` system user (initdb refuses root).
pub(crate) struct PrivatePostgres {
    pub(crate) port: u16,
    dir: PathBuf,
    bin: PathBuf,
    /// Whether this process runs as root (then the server runs as `postgres`).
    as_root: bool,
}

impl PrivatePostgres {
    pub(crate) async fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
            .max_by_key(|b| {
                b.parent()
                    .and_then(|v| v.file_name())
                    .and_then(|v| v.to_str())
                    .and_then(|v| v.parse::<u32>().ok())
                    .unwrap_or_default()
            })
            .expect("PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin are required (Debian package postgresql)");
        let dir = PathBuf::from("/tmp").join(format!(
            "keh-pg-{}",
            &Uuid::new_v4().simple().to_string()[..12]
        ));
        std::fs::create_dir_all(&dir).expect("postgres dir");
        let as_root = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
        };
        let pg = Self {
            port: free_port(),
            dir,
            bin,
            as_root,
        };
        if pg.as_root {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&pg.dir)
                .status()
                .expect("chown");
            assert!(status.success(), "chown of the private PostgreSQL folder");
        }
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )
        .await;
        pg.resume().await;
        pg
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// A server program of the cluster, run as the cluster's owner.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let program = self.bin.join(program);
        let mut command = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command.args(args).current_dir("/").stdin(Stdio::null());
        command
    }

    /// Runs a server program to completion; fails the test if it fails.
    async fn run(&self, program: &str, args: &[&str]) {
        let output = tokio::process::Command::from(self.command(program, args))
            .output()
            .await
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub(crate) fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the server (again) on the same port and data.
    pub(crate) async fn resume(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .await;
    }

    /// Stops the server the way a crash would (`-m immediate`: no checkpoint, clients cut
    /// off; the next start recovers from the WAL).
    pub(crate) async fn crash(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        )
        .await;
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl", &["-D", &data, "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A role of the real binary in a process of its own (so that it can be killed with
/// SIGKILL), with the environment it is given; stdout lines are kept for diagnostics.
pub(crate) struct RoleProcess {
    pub(crate) role: &'static str,
    env: Vec<(String, String)>,
    child: Option<tokio::process::Child>,
    /// `http://ADDR` of its listener (changes with each start).
    pub(crate) base: String,
    pub(crate) log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl RoleProcess {
    pub(crate) async fn start(role: &'static str, env: &[(String, String)]) -> Self {
        let mut process = Self {
            role,
            env: env.to_vec(),
            child: None,
            base: String::new(),
            log: std::sync::Arc::default(),
        };
        process.resume().await;
        process
    }

    pub(crate) async fn resume(&mut self) {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubeestatehub"))
            .arg(self.role)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().cloned())
            .env("KEH_HTTP_ADDR", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.role));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let log = self.log.clone();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = line
                    .split("listening on http://")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.to_owned());
                }
                if let Ok(mut log) = log.lock() {
                    log.push(line);
                }
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .unwrap_or_else(|_| panic!("{} did not log `listening on` within 60 s", self.role))
            .unwrap_or_else(|_| panic!("{} exited before listening", self.role));
        self.base = format!("http://{addr}");
        self.child = Some(child);
    }

    /// SIGKILL: no graceful shutdown, no drain.
    pub(crate) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// The error lines it logged (for a report or a failure message).
    pub(crate) fn errors(&self) -> String {
        self.log.lock().map_or_else(
            |_| String::new(),
            |log| {
                log.iter()
                    .filter(|l| l.contains(r#""level":"ERROR""#))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            },
        )
    }
}
