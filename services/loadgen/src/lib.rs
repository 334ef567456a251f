//! `loadgen`: drives a running KubeEstateHub over HTTP as real clients would, and runs the
//! raw baselines its figures are compared with (`bench/run`).
//!
//! - [`workload`]: what is sent (new listings, the search mix, the command mix);
//! - [`driver`]: how it is paced (closed loop, or open loop at a fixed arrival rate);
//! - [`lag`]: event-to-visible lag on the live feed and in the query API;
//! - [`baseline`]: an empty axum handler, raw JetStream publish and consume;
//! - [`stats`]: latency histograms and the summary (`--json` for scripts);
//! - [`versus`]: the side-by-side workload against the benchmark peer (cqrs-demo).

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use tokio::sync::Mutex;

pub mod baseline;
pub mod driver;
pub mod lag;
pub mod stats;
pub mod versus;
pub mod workload;

use driver::{Bounds, Outcome, Pace};
use stats::Summary;
use workload::{Operation, Tracked};

/// The platform's HTTP API, as one signed-in client (or anonymous).
#[derive(Clone)]
pub struct Api {
    base: String,
    /// Where reads and sign-in go (the query API's role), when not `base`.
    query_base: Option<String>,
    client: reqwest::Client,
    token: Option<String>,
}

impl Api {
    pub fn new(base: &str, connections: usize) -> anyhow::Result<Self> {
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            query_base: None,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(connections)
                .timeout(Duration::from_secs(30))
                .build()?,
            token: None,
        })
    }

    /// Sends reads (GET) and sign-in to `base` instead: the query API running as a process
    /// of its own.
    pub fn with_query_base(mut self, base: Option<&str>) -> Self {
        self.query_base = base.map(|b| b.trim_end_matches('/').to_owned());
        self
    }

    /// Uses `token` (an access token or API key) for every request.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Signs in with a username and password (`POST /api/v1/auth/token`).
    pub async fn sign_in(self, username: &str, password: &str) -> anyhow::Result<Self> {
        let response = self
            .request(reqwest::Method::POST, "/api/v1/auth/token")
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "sign-in as {username}: {}",
            response.status()
        );
        let body: Value = response.json().await?;
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow::anyhow!("sign-in answer without access_token"))?;
        Ok(self.with_token(Some(token.to_owned())))
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let base = match &self.query_base {
            Some(query) if method == reqwest::Method::GET || path.starts_with("/api/v1/auth/") => {
                query
            }
            _ => &self.base,
        };
        let request = self.client.request(method, format!("{base}{path}"));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// The listing's version as the query API serves it (its `ETag`), if it serves it.
    pub async fn version_of(&self, key: &str) -> Option<u64> {
        let response = self
            .request(reqwest::Method::GET, &format!("/api/v1/listings/{key}"))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        etag_version(response.headers())
    }
}

/// `ETag: "7"` → 7 (the listing's version a command or read answered with).
pub fn etag_version(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers
        .get(reqwest::header::ETAG)?
        .to_str()
        .ok()?
        .trim_matches('"')
        .parse()
        .ok()
}

/// A status string for an outcome: the HTTP code, or why there was none.
pub fn failure_kind(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timeout".to_owned()
    } else {
        "connection".to_owned()
    }
}

/// A command's answer: status, and on success the listing's key, version and body.
struct Answer {
    status: String,
    accepted: Option<(String, u64, Value)>,
}

async fn send_command(api: &Api, method: reqwest::Method, path: &str, body: &Value) -> Answer {
    match api.request(method, path).json(body).send().await {
        Ok(response) => {
            let status = response.status();
            let version = etag_version(response.headers());
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let key = body
                .get("ListingKey")
                .and_then(Value::as_str)
                .map(str::to_owned);
            Answer {
                status: status.as_u16().to_string(),
                accepted: match (status.is_success(), key, version) {
                    (true, Some(key), Some(version)) => Some((key, version, body)),
                    _ => None,
                },
            }
        }
        Err(error) => Answer {
            status: failure_kind(&error),
            accepted: None,
        },
    }
}

/// Creates `count` listings (the working set of a command run); returns them.
pub async fn create_listings(api: &Api, count: usize, clients: usize, seed: u64) -> Vec<Tracked> {
    let created = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let sink = created.clone();
    let api = api.clone();
    driver::drive(
        "prepare",
        Pace::Closed { clients },
        Bounds {
            count: Some(count as u64),
            duration: None,
        },
        move |i| {
            let (api, sink) = (api.clone(), sink.clone());
            async move {
                let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(i));
                let body = workload::listing(&mut rng);
                let answer =
                    send_command(&api, reqwest::Method::POST, "/api/v1/listings", &body).await;
                if let Some((key, _, body)) = answer.accepted {
                    let price = body.get("ListPrice").and_then(workload::whole_price);
                    sink.lock().await.push(Tracked {
                        key,
                        price: price.unwrap_or(100_000),
                        pending: false,
                    });
                }
                Outcome {
                    operation: None,
                    status: answer.status,
                }
            }
        },
    )
    .await;
    std::mem::take(&mut *created.lock().await)
}

/// Settings of a command-mix run.
#[derive(Clone, Copy, Debug)]
pub struct CommandRun {
    pub pace: Pace,
    pub bounds: Bounds,
    pub seed: u64,
    /// Measure event-to-visible lag: every command on the live feed, this share of them in
    /// the query API (0 turns lag measurement off).
    pub lag_sample: f64,
}

/// The command mix over `working_set`: each request takes a listing nobody else is
/// changing at that moment (so the mix causes no version conflicts of its own).
pub async fn run_commands(
    api: &Api,
    working_set: Vec<Tracked>,
    run: CommandRun,
) -> anyhow::Result<Summary> {
    anyhow::ensure!(!working_set.is_empty(), "the working set is empty");
    let listings: Arc<Vec<Mutex<Tracked>>> =
        Arc::new(working_set.into_iter().map(Mutex::new).collect());
    let probe = if run.lag_sample > 0.0 {
        Some(lag::LagProbe::start(api.clone()).await?)
    } else {
        None
    };
    let (api_for_run, probe_for_run) = (api.clone(), probe.clone());
    let mut summary = driver::drive("commands", run.pace, run.bounds, move |i| {
        let (api, listings, probe) = (api_for_run.clone(), listings.clone(), probe_for_run.clone());
        async move {
            let mut rng = StdRng::seed_from_u64(run.seed.wrapping_mul(7_919).wrapping_add(i));
            let operation = Operation::pick(&mut rng);
            // A free listing of the working set (starting at a random one).
            let start = rand::Rng::random_range(&mut rng, 0..listings.len());
            let mut guard = None;
            for offset in 0..listings.len() {
                if let Ok(g) = listings[(start + offset) % listings.len()].try_lock() {
                    guard = Some(g);
                    break;
                }
            }
            let Some(mut listing) = guard else {
                return Outcome {
                    operation: Some(operation.name()),
                    status: "no-free-listing".to_owned(),
                };
            };
            let (method, path, body) = workload::command(operation, &listing, &mut rng);
            let answer = send_command(&api, method, &path, &body).await;
            if let Some((key, version, body)) = &answer.accepted {
                workload::after(operation, &mut listing, body);
                if let Some(probe) = &probe {
                    let sampled = rand::Rng::random_bool(&mut rng, run.lag_sample.clamp(0.0, 1.0));
                    probe.accepted(key, *version, sampled);
                }
            }
            Outcome {
                operation: Some(operation.name()),
                status: answer.status,
            }
        }
    })
    .await;
    if let Some(probe) = probe {
        let (lag, missing) = probe.finish().await;
        summary.lag = lag.into_iter().collect();
        summary.lag_missing = missing.into_iter().collect();
    }
    Ok(summary)
}

/// GETs of `paths(i)` (searches, or listings by key).
pub async fn run_reads<P>(api: &Api, what: &str, pace: Pace, bounds: Bounds, paths: P) -> Summary
where
    P: Fn(u64) -> String + Send + Sync + 'static,
{
    let api = api.clone();
    let paths = Arc::new(paths);
    driver::drive(what, pace, bounds, move |i| {
        let (api, paths) = (api.clone(), paths.clone());
        async move {
            let status = status_of(api.request(reqwest::Method::GET, &paths(i))).await;
            Outcome {
                operation: None,
                status,
            }
        }
    })
    .await
}

/// Sends `request` and reads its answer whole (the connection goes back to the pool only
/// then); returns its status, or `timeout` / `connection`.
pub async fn status_of(request: reqwest::RequestBuilder) -> String {
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16().to_string();
            let _ = response.bytes().await;
            status
        }
        Err(error) => failure_kind(&error),
    }
}

/// Keys of up to `limit` listings the query API serves (for get-by-key runs).
pub async fn listing_keys(api: &Api, limit: usize) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    while keys.len() < limit {
        let mut query = vec![("limit", "200".to_owned())];
        if let Some(cursor) = &after {
            query.push(("cursor", cursor.clone()));
        }
        let page: Value = api
            .request(reqwest::Method::GET, "/api/v1/listings")
            .query(&query)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let items = page
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        keys.extend(
            items
                .iter()
                .filter_map(|i| i.get("ListingKey").and_then(Value::as_str))
                .map(str::to_owned),
        );
        after = page
            .get("nextCursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if items.is_empty() || after.is_none() {
            break;
        }
    }
    keys.truncate(limit);
    Ok(keys)
}

/// Detail-edit latency on one listing with `events` changes behind it, and on fresh
/// listings (one client, sequential: the store's work per command, not queueing).
pub async fn history_latency(
    api: &Api,
    events: u64,
    samples: u64,
    seed: u64,
) -> anyhow::Result<(Summary, Summary)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let created = create_listings(api, 1, 1, seed).await;
    let long = created
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("could not create a listing"))?;
    for _ in 1..events {
        let (method, path, body) = workload::command(Operation::DetailEdit, &long, &mut rng);
        let answer = send_command(api, method, &path, &body).await;
        anyhow::ensure!(
            answer.accepted.is_some(),
            "building the history: {}",
            answer.status
        );
    }
    let fresh = create_listings(
        api,
        usize::try_from(samples).unwrap_or(200),
        8,
        seed ^ 0xf7e5,
    )
    .await;
    // The two kinds alternate, so that both see the same background work (the consumers
    // still applying the history just built): timing one after the other compared a busy
    // machine with an idle one.
    let mut long_run = EditRun::new();
    let mut fresh_run = EditRun::new();
    let started = std::time::Instant::now();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    for listing in &fresh {
        long_run.time(api, &long, &mut rng).await;
        fresh_run.time(api, listing, &mut rng).await;
    }
    let elapsed = started.elapsed();
    let on_long = long_run.summary("edit-long-history", elapsed);
    let on_fresh = fresh_run.summary("edit-fresh", elapsed);
    Ok((on_long, on_fresh))
}

/// Timed detail edits, one at a time.
struct EditRun {
    latencies: stats::Latencies,
    statuses: std::collections::BTreeMap<String, u64>,
}

impl EditRun {
    fn new() -> Self {
        Self {
            latencies: stats::Latencies::new(),
            statuses: std::collections::BTreeMap::new(),
        }
    }

    async fn time(&mut self, api: &Api, listing: &Tracked, rng: &mut StdRng) {
        let (method, path, body) = workload::command(Operation::DetailEdit, listing, rng);
        let sent = std::time::Instant::now();
        let answer = send_command(api, method, &path, &body).await;
        self.latencies.record(sent.elapsed());
        *self.statuses.entry(answer.status).or_insert(0) += 1;
    }

    fn summary(self, what: &'static str, elapsed: std::time::Duration) -> Summary {
        Summary {
            statuses: self.statuses,
            ..Summary::of_run(what, elapsed, self.latencies.count(), &self.latencies)
        }
    }
}
