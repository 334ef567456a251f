//! `loadgen`: drives a running KubeEstateHub over HTTP, as real clients would, and reports
//! throughput, latency percentiles and errors by status.
//!
//! - `loadgen create`: creates listings through the command API (a realistic spread of
//!   cities, types, prices and sizes; deterministic from `--seed`);
//! - `loadgen search`: a mix of searches against the query API for a fixed duration.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::Mutex;

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Drives KubeEstateHub over HTTP and reports latency percentiles"
)]
struct Cli {
    /// Base URL of the platform.
    #[arg(
        long,
        env = "KEH_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32, global = true)]
    concurrency: usize,
    /// Random seed (the same seed sends the same requests).
    #[arg(long, default_value_t = 42, global = true)]
    seed: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create listings through the command API.
    Create {
        #[arg(long, default_value_t = 1000)]
        count: u64,
    },
    /// Run a search mix against the query API.
    Search {
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
}

const CITIES: &[(&str, &str, f64, f64, u64)] = &[
    // city, postal prefix, latitude, longitude, price level (percent)
    ("Springfield", "627", 39.78, -89.65, 100),
    ("Shelbyville", "624", 39.41, -88.79, 80),
    ("Capital City", "606", 41.88, -87.63, 190),
    ("Ogdenville", "617", 40.11, -88.24, 90),
    ("North Haverbrook", "618", 38.63, -90.20, 70),
    ("Brockway", "619", 37.73, -89.22, 60),
];
const TYPES: &[(&str, f64)] = &[
    ("Residential", 0.7),
    ("Land", 0.1),
    ("Residential Income", 0.1),
    ("Commercial Sale", 0.1),
];
const WORDS: &[&str] = &[
    "sunny",
    "renovated",
    "garden",
    "lake",
    "quiet",
    "garage",
    "pool",
    "corner",
    "views",
    "modern",
];

fn listing(rng: &mut StdRng) -> Value {
    let (city, postal, lat, lon, level) = CITIES[rng.random_range(0..CITIES.len())];
    let roll: f64 = rng.random();
    let mut acc = 0.0;
    let kind = TYPES
        .iter()
        .find(|(_, share)| {
            acc += share;
            roll < acc
        })
        .map_or("Residential", |t| t.0);
    let beds = rng.random_range(1..6);
    let area: u64 = rng.random_range(60..400) * 10;
    // About 180 per square foot at level 100, give or take 30%, rounded to hundreds.
    let price = (area * 180 * level / 100 * rng.random_range(70..130) / 100 / 100 * 100).max(1000);
    let remarks: Vec<&str> = (0..4)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect();
    json!({
        "PropertyType": kind,
        "ListPrice": price,
        "City": city,
        "PostalCode": format!("{postal}{:02}", rng.random_range(0..40)),
        "BedroomsTotal": beds,
        "BathroomsTotalInteger": rng.random_range(1..=beds.min(4)),
        "LivingArea": area,
        "LivingAreaUnits": "Square Feet",
        "Latitude": serde_json::from_str::<Value>(&format!("{:.6}", lat + rng.random_range(-0.1..0.1))).unwrap_or(Value::Null),
        "Longitude": serde_json::from_str::<Value>(&format!("{:.6}", lon + rng.random_range(-0.1..0.1))).unwrap_or(Value::Null),
        "UnparsedAddress": format!("{} {} Street", rng.random_range(1..9999), ["Elm", "Oak", "Maple", "Main", "Lake"][rng.random_range(0..5)]),
        "PublicRemarks": remarks.join(" "),
    })
}

fn search_query(rng: &mut StdRng) -> String {
    let (city, postal, lat, lon, _) = CITIES[rng.random_range(0..CITIES.len())];
    match rng.random_range(0..7) {
        0 => format!(
            "/api/v1/listings?city={}&limit=20",
            city.replace(' ', "%20")
        ),
        1 => format!(
            "/api/v1/listings?status=Active&min_price={}&max_price={}&sort=ListPrice&limit=20",
            rng.random_range(1..4) * 100_000,
            rng.random_range(4..9) * 100_000
        ),
        2 => format!(
            "/api/v1/listings?postal_code={postal}{:02}&min_beds=3",
            rng.random_range(0..40)
        ),
        3 => format!(
            "/api/v1/listings?q={}&limit=20",
            WORDS[rng.random_range(0..WORDS.len())]
        ),
        4 => format!(
            "/api/v1/listings?bbox={:.3},{:.3},{:.3},{:.3}&limit=50",
            lon - 0.02,
            lat - 0.02,
            lon + 0.02,
            lat + 0.02
        ),
        5 => "/api/v1/listings?property_type=Land&min_area=1000&max_area=2500&sort=-ListPrice"
            .to_owned(),
        _ => "/api/v1/listings?limit=20".to_owned(),
    }
}

/// Latencies and outcomes of one run.
#[derive(Default)]
struct Report {
    latencies: Vec<Duration>,
    statuses: BTreeMap<String, u64>,
}

impl Report {
    fn print(&mut self, what: &str, elapsed: Duration) {
        self.latencies.sort();
        let n = self.latencies.len();
        // Nearest-rank percentile, `per_mille` of 1000.
        let pct = |per_mille: usize| {
            let index = (n * per_mille).div_ceil(1000).saturating_sub(1);
            self.latencies
                .get(index)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        println!(
            "{what}: {n} requests in {:.1} s = {:.0}/s; latency ms p50 {:.2} p95 {:.2} p99 {:.2} max {:.2}; statuses {:?}",
            elapsed.as_secs_f64(),
            n as f64 / elapsed.as_secs_f64().max(0.001),
            pct(500),
            pct(950),
            pct(990),
            pct(1000),
            self.statuses
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(cli.concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let report = Arc::new(Mutex::new(Report::default()));
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let (label, deadline, count) = match cli.command {
        Command::Create { count } => ("create", None, count),
        Command::Search { seconds } => (
            "search",
            Some(started + Duration::from_secs(seconds)),
            u64::MAX,
        ),
    };
    let workers = (0..cli.concurrency).map(|worker| {
        let client = client.clone();
        let report = Arc::clone(&report);
        let next = Arc::clone(&next);
        let url = cli.url.clone();
        let mut rng = StdRng::seed_from_u64(cli.seed.wrapping_add(worker as u64));
        async move {
            let mut local = Report::default();
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d)
                    || next.fetch_add(1, Ordering::Relaxed) >= count
                {
                    break;
                }
                let request = match deadline {
                    None => client
                        .post(format!("{url}/api/v1/listings"))
                        .json(&listing(&mut rng)),
                    Some(_) => client.get(format!("{url}{}", search_query(&mut rng))),
                };
                let sent = Instant::now();
                let status = match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16().to_string();
                        let _ = response.bytes().await;
                        status
                    }
                    Err(error) => format!(
                        "error: {}",
                        if error.is_timeout() {
                            "timeout"
                        } else {
                            "connection"
                        }
                    ),
                };
                local.latencies.push(sent.elapsed());
                *local.statuses.entry(status).or_default() += 1;
            }
            let mut shared = report.lock().await;
            shared.latencies.extend(local.latencies);
            for (status, n) in local.statuses {
                *shared.statuses.entry(status).or_default() += n;
            }
        }
    });
    futures::future::join_all(workers).await;
    report.lock().await.print(label, started.elapsed());
    Ok(())
}
