//! Chaos: the platform under load while its parts fail, on private PostgreSQL and NATS
//! servers this test starts on their own ports (the shared servers are never touched).
//!
//! Each role runs as a process of the real binary. While clients send the command mix
//! (retrying with the same `Idempotency-Key` after a 503 or a dropped connection, as a
//! careful client does, and dropping some requests mid-flight on purpose), the test kills
//! the relay, the projector and the analytics worker with SIGKILL, restarts NATS and
//! crashes PostgreSQL (`-m immediate`), in a random order at random moments
//! (`KEH_CHAOS_SEED` replays a run). Afterwards, with everything back:
//! - every command that got a 2xx has its event in the store, and every stored event
//!   belongs to exactly one acknowledged command (retries never appended twice);
//! - both JetStream streams hold exactly the store's events (same ids, no duplicates,
//!   per-listing order);
//! - the read model and the market aggregates equal a fresh rebuild;
//! - no database connection is left idle in a transaction;
//! - every refusal during the outages was a 503 with a problem+json body, none hung.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keh_loadgen::workload::{self, Operation, Tracked};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sqlx::PgPool;

use crate::harness::*;

const CLIENTS: usize = 12;
const WORKING_SET: usize = 36;
const LOAD: Duration = Duration::from_secs(30);
/// A request that takes longer than the server's own timeout (8 s here) plus this margin
/// hung.
const HANG: Duration = Duration::from_secs(12);
const SETTLE: Duration = Duration::from_secs(120);

/// A command the platform acknowledged with a 2xx.
#[derive(Debug)]
struct Ack {
    key: String,
    version: u64,
    create: bool,
}

#[derive(Default)]
struct Tally {
    acks: Vec<Ack>,
    /// Outcomes of single attempts: HTTP status, `dropped` (cut off by the client on
    /// purpose), `connection`.
    attempts: BTreeMap<String, u64>,
    /// What must not happen: a refusal without problem+json, a 4xx, a hang, a command that
    /// never got through.
    wrong: Vec<String>,
    /// Keys with a command that never got a definitive answer (their event count is
    /// unknown).
    uncertain: Vec<String>,
}

/// Sends one command until it gets a definitive answer, retrying with its
/// `Idempotency-Key`. Returns the answer's listing key, version and body on success.
async fn command_until_answered(
    client: &reqwest::Client,
    base: &str,
    (method, path, body): (reqwest::Method, String, Value),
    rng: &mut StdRng,
    tally: &Mutex<Tally>,
) -> Option<(String, u64, Value)> {
    let idempotency_key = uuid::Uuid::new_v4().to_string();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(90) {
        // Some attempts are cut off by the client mid-request, on purpose.
        let drop_it = rng.random_bool(0.08);
        let timeout = if drop_it {
            Duration::from_millis(rng.random_range(1..40))
        } else {
            HANG
        };
        let attempt = Instant::now();
        let sent = client
            .request(method.clone(), format!("{base}{path}"))
            .header("idempotency-key", &idempotency_key)
            .timeout(timeout)
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status();
                let content_type = response
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let etag = keh_loadgen::etag_version(response.headers());
                // The client's own deadline can cut the body off after the status arrived:
                // that attempt was dropped too, and the retry gets the first answer again.
                let answer: Value = match response.bytes().await {
                    Ok(body) => serde_json::from_slice(&body).unwrap_or(Value::Null),
                    Err(error) => {
                        let outcome = if error.is_timeout() && drop_it {
                            "dropped"
                        } else {
                            "connection"
                        };
                        *tally
                            .lock()
                            .unwrap()
                            .attempts
                            .entry(outcome.into())
                            .or_default() += 1;
                        tokio::time::sleep(Duration::from_millis(rng.random_range(50..250))).await;
                        continue;
                    }
                };
                *tally
                    .lock()
                    .unwrap()
                    .attempts
                    .entry(status.as_u16().to_string())
                    .or_default() += 1;
                if status.is_success() {
                    let key = answer["ListingKey"].as_str().map(str::to_owned);
                    match (key, etag) {
                        (Some(key), Some(version)) => return Some((key, version, answer)),
                        _ => {
                            tally.lock().unwrap().wrong.push(format!(
                                "{method} {path}: {status} without ListingKey or ETag: {answer}"
                            ));
                            return None;
                        }
                    }
                }
                // A refusal during an outage: a 503 with problem+json, then a retry.
                if status != reqwest::StatusCode::SERVICE_UNAVAILABLE
                    || !content_type.starts_with("application/problem+json")
                {
                    tally.lock().unwrap().wrong.push(format!(
                        "{method} {path}: {status} ({content_type}) {answer}"
                    ));
                    return None;
                }
            }
            Err(error) if error.is_timeout() && drop_it => {
                *tally
                    .lock()
                    .unwrap()
                    .attempts
                    .entry("dropped".into())
                    .or_default() += 1;
            }
            Err(error) if error.is_timeout() => {
                tally
                    .lock()
                    .unwrap()
                    .wrong
                    .push(format!("{method} {path}: no answer within {HANG:?} (hung)"));
            }
            Err(_) => {
                *tally
                    .lock()
                    .unwrap()
                    .attempts
                    .entry("connection".into())
                    .or_default() += 1;
            }
        }
        if attempt.elapsed() > HANG {
            tally.lock().unwrap().wrong.push(format!(
                "{method} {path}: an attempt took {:?}",
                attempt.elapsed()
            ));
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..250))).await;
    }
    tally
        .lock()
        .unwrap()
        .wrong
        .push(format!("{method} {path}: no definitive answer in 90 s"));
    None
}

/// One client: the command mix over its own listings (no two clients change the same
/// listing, so the mix causes no conflicts of its own) until `stop`.
async fn client_loop(
    client: reqwest::Client,
    base: String,
    mut listings: Vec<Tracked>,
    seed: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let operation = Operation::pick(&mut rng);
        let index = rng.random_range(0..listings.len());
        let request = workload::command(operation, &listings[index], &mut rng);
        let answer = command_until_answered(&client, &base, request, &mut rng, &tally).await;
        match answer {
            Some((key, version, body)) => {
                if operation == Operation::Create {
                    listings.push(Tracked {
                        key: key.clone(),
                        price: body["ListPrice"].as_u64().unwrap_or(100_000),
                        pending: false,
                    });
                } else {
                    workload::after(operation, &mut listings[index], &body);
                }
                tally.lock().unwrap().acks.push(Ack {
                    key,
                    version,
                    create: operation == Operation::Create,
                });
            }
            None if operation != Operation::Create => {
                let key = listings[index].key.clone();
                tally.lock().unwrap().uncertain.push(key);
            }
            None => {}
        }
    }
}

async fn stream_count(nats_url: &str, stream: &str) -> Option<u64> {
    let client = async_nats::connect(nats_url).await.ok()?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(stream).await.ok()?;
    Some(stream.info().await.ok()?.state.messages)
}

/// What each consumer group has not acknowledged yet (`None` while unreadable).
async fn consumers_pending(nats_url: &str, stream: &str) -> Option<u64> {
    let client = async_nats::connect(nats_url).await.ok()?;
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(stream).await.ok()?;
    let mut names = stream.consumer_names();
    let mut pending = 0;
    let mut count = 0;
    while let Some(Ok(name)) = futures::StreamExt::next(&mut names).await {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer(&name).await.ok()?;
        let info = consumer.info().await.ok()?;
        pending += info.num_pending + info.num_ack_pending as u64;
        count += 1;
    }
    (count > 0).then_some(pending)
}

async fn store_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_lost_or_duplicated_when_parts_fail_under_load() {
    let seed = std::env::var("KEH_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("chaos: seed {seed} (KEH_CHAOS_SEED={seed} replays this schedule)");
    let mut rng = StdRng::seed_from_u64(seed);

    let pg = PrivatePostgres::start().await;
    let admin = PgPool::connect(&pg.url("postgres")).await.unwrap();
    sqlx::query("CREATE DATABASE kubeestatehub")
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let mut nats = PrivateNats::start().await;
    let stream = "KEH_CHAOS".to_owned();
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", pg.url("kubeestatehub")),
        ("NATS_URL", nats.url()),
        ("KEH_STREAM", stream.clone()),
        ("KEH_SUBJECT_PREFIX", "chaos".to_owned()),
        ("KEH_PARTITIONS", "4".to_owned()),
        ("KEH_JWT_SECRET", TEST_SECRET.to_owned()),
        ("KEH_RATE_LIMIT_PER_SECOND", "0".to_owned()),
        ("KEH_MIGRATE", "false".to_owned()),
        ("KEH_LOG_FORMAT", "json".to_owned()),
        // Warnings, and the `listening on` line the harness waits for.
        ("KEH_LOG", "warn,keh_http=info".to_owned()),
        ("KEH_DB_MAX_CONNECTIONS", "8".to_owned()),
        ("KEH_DB_ACQUIRE_TIMEOUT_MS", "2000".to_owned()),
        ("KEH_REQUEST_TIMEOUT_MS", "8000".to_owned()),
        ("KEH_RELAY_IDLE_POLL_MS", "200".to_owned()),
        ("KEH_METRICS_REFRESH_MS", "500".to_owned()),
        ("KEH_PROJECTOR_ACK_WAIT_MS", "3000".to_owned()),
        ("KEH_PROJECTOR_HEARTBEAT_MS", "500".to_owned()),
        ("KEH_ANALYTICS_TICK_MS", "200".to_owned()),
        // A killed analytics worker's claims on dirty series expire after this.
        ("KEH_REPORT_LEASE_MS", "3000".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let migrated = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubeestatehub"))
        .arg("migrate")
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .await
        .unwrap();
    assert!(migrated.status.success(), "{migrated:?}");

    let api = RoleProcess::start("command-api", &env).await;
    let mut relay = RoleProcess::start("relay", &env).await;
    let mut projector = RoleProcess::start("projector", &env).await;
    let mut analytics = RoleProcess::start("analytics", &env).await;
    let client = client_with(Some(&admin_token(&pg.url("kubeestatehub")).await));

    // The working set, before any fault.
    let mut working_set = Vec::new();
    let mut created_at = HashMap::new();
    for i in 0..WORKING_SET {
        let body = workload::listing(&mut StdRng::seed_from_u64(seed ^ i as u64));
        let created = client
            .post(format!("{}/api/v1/listings", api.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let version = keh_loadgen::etag_version(created.headers()).unwrap();
        let created: Value = created.json().await.unwrap();
        created_at.insert(created["ListingKey"].as_str().unwrap().to_owned(), version);
        working_set.push(Tracked {
            key: created["ListingKey"].as_str().unwrap().to_owned(),
            price: created["ListPrice"].as_u64().unwrap_or(100_000),
            pending: false,
        });
    }

    // The load.
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let listings = working_set
                .iter()
                .skip(c)
                .step_by(CLIENTS)
                .cloned()
                .collect();
            tokio::spawn(client_loop(
                client.clone(),
                api.base.clone(),
                listings,
                seed.wrapping_add(c as u64 + 1),
                stop.clone(),
                tally.clone(),
            ))
        })
        .collect();

    // The faults: each kind once, plus a second relay kill, in a random order at random
    // moments of the load.
    #[derive(Clone, Copy, Debug)]
    enum Fault {
        KillRelay,
        KillProjector,
        KillAnalytics,
        RestartNats,
        CrashPostgres,
    }
    let mut faults = [
        Fault::KillRelay,
        Fault::KillProjector,
        Fault::KillAnalytics,
        Fault::RestartNats,
        Fault::CrashPostgres,
        Fault::KillRelay,
    ];
    for i in (1..faults.len()).rev() {
        faults.swap(i, rng.random_range(0..=i));
    }
    let load_started = Instant::now();
    let slot = LOAD.as_secs_f64() / (faults.len() as f64 + 1.0);
    let mut report = Vec::new();
    for (i, fault) in faults.iter().enumerate() {
        let at = Duration::from_secs_f64(slot * (i as f64 + rng.random_range(0.5..1.0)));
        tokio::time::sleep(at.saturating_sub(load_started.elapsed())).await;
        // PostgreSQL stays down longer than a request waits for a connection (2 s), so
        // that some commands are certainly refused while it is gone.
        let down = match fault {
            Fault::CrashPostgres => Duration::from_millis(rng.random_range(2500..3500)),
            _ => Duration::from_millis(rng.random_range(300..2500)),
        };
        let started = load_started.elapsed();
        match fault {
            Fault::KillRelay => {
                relay.kill().await;
                tokio::time::sleep(down).await;
                relay.resume().await;
            }
            Fault::KillProjector => {
                projector.kill().await;
                tokio::time::sleep(down).await;
                projector.resume().await;
            }
            Fault::KillAnalytics => {
                analytics.kill().await;
                tokio::time::sleep(down).await;
                analytics.resume().await;
            }
            Fault::RestartNats => {
                nats.kill();
                tokio::time::sleep(down).await;
                nats.resume().await;
            }
            Fault::CrashPostgres => {
                pg.crash().await;
                tokio::time::sleep(down).await;
                pg.resume().await;
            }
        }
        report.push(format!(
            "{:>5.1} s {fault:?}, down {:.1} s",
            started.as_secs_f64(),
            down.as_secs_f64()
        ));
    }
    tokio::time::sleep(LOAD.saturating_sub(load_started.elapsed())).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    futures::future::join_all(clients).await;
    println!("chaos: faults\n  {}", report.join("\n  "));

    for role in [&api, &relay, &projector, &analytics] {
        println!("chaos: {} logged errors:\n{}", role.role, role.errors());
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    println!(
        "chaos: {} commands acknowledged; attempts {:?}",
        tally.acks.len(),
        tally.attempts
    );
    assert!(
        tally.wrong.is_empty(),
        "wrong answers:\n{}",
        tally.wrong.join("\n")
    );
    assert!(
        tally.attempts.get("503").copied().unwrap_or_default() > 0,
        "no command was refused during the PostgreSQL outage: the outage had no effect"
    );
    assert!(tally.attempts.get("dropped").copied().unwrap_or_default() > 0);
    assert!(
        tally.acks.len() > 100,
        "too little load: {}",
        tally.acks.len()
    );

    // Everything back: the stream and the consumers catch up.
    let pool = PgPool::connect(&pg.url("kubeestatehub")).await.unwrap();
    let internal = format!("{stream}_INTERNAL");
    let stored = store_count(&pool).await;
    eventually_within("both streams hold every stored event", SETTLE, || async {
        stream_count(&nats.url(), &stream).await == u64::try_from(stored).ok()
            && stream_count(&nats.url(), &internal).await == u64::try_from(stored).ok()
    })
    .await;
    eventually_within("the consumers acknowledged everything", SETTLE, || async {
        consumers_pending(&nats.url(), &internal).await == Some(0)
    })
    .await;
    eventually_within("the read model caught up with the store", SETTLE, || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT NOT EXISTS (
                 SELECT 1 FROM (SELECT aggregate_id, max(sequence) AS v FROM events GROUP BY aggregate_id) e
                  LEFT JOIN read_model.listings l ON l.listing_key = e.aggregate_id
                  WHERE l.version IS DISTINCT FROM e.v)",
        )
        .fetch_one(&pool)
        .await
        .unwrap_or(false)
    })
    .await;
    crate::market::settled_within(&pool, SETTLE).await;

    // No connection of any role is stuck in a transaction.
    for _ in 0..4 {
        let stuck: Vec<(String, String)> = sqlx::query_as(
            "SELECT coalesce(application_name, ''), coalesce(query, '') FROM pg_stat_activity
              WHERE datname = 'kubeestatehub' AND state LIKE 'idle in transaction%'",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(
            stuck.is_empty(),
            "connections idle in transaction: {stuck:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Every acknowledged command is in the store, and every stored event was acknowledged
    // exactly once (a retried command never appended twice).
    let events: Vec<(String, i64)> =
        sqlx::query_as("SELECT aggregate_id, sequence FROM events ORDER BY 1, 2")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut stored_versions: HashMap<String, Vec<u64>> = HashMap::new();
    for (key, sequence) in events {
        stored_versions
            .entry(key)
            .or_default()
            .push(u64::try_from(sequence).unwrap());
    }
    let mut acknowledged: HashMap<&str, (u64, Vec<u64>)> = HashMap::new();
    for ack in &tally.acks {
        let stored = stored_versions
            .get(&ack.key)
            .unwrap_or_else(|| panic!("acknowledged listing {} is not in the store", ack.key));
        assert!(
            stored.contains(&ack.version),
            "acknowledged version {} of {} is not in the store ({stored:?})",
            ack.version,
            ack.key
        );
        let entry = acknowledged.entry(&ack.key).or_default();
        if ack.create {
            entry.0 = ack.version;
        } else {
            entry.1.push(ack.version);
        }
    }
    for (key, version) in &created_at {
        acknowledged.entry(key).or_default().0 = *version;
    }
    for (key, stored) in &stored_versions {
        if tally.uncertain.contains(key) {
            continue;
        }
        let Some((created, changes)) = acknowledged.get(key.as_str()) else {
            panic!("listing {key} is in the store but no command for it was acknowledged");
        };
        for version in stored {
            assert!(
                *version <= *created || changes.contains(version),
                "event {version} of {key} belongs to no acknowledged command (acknowledged: created at {created}, changes {changes:?})"
            );
        }
    }

    // Both streams equal the store: same ids, no duplicates, per-listing order.
    let store = stored_events(&pool).await;
    assert_stream_equals_store(&stream_messages(&nats.url(), &stream).await, &store);
    assert_stream_equals_store(&stream_messages(&nats.url(), &internal).await, &store);

    // The read model and the market aggregates equal a fresh rebuild.
    let live = (
        crate::queries::read_model_checksum(&pool).await,
        crate::market::metrics_checksum(&pool).await,
    );
    for role in [&mut relay, &mut projector, &mut analytics] {
        role.kill().await;
    }
    let rebuilt = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubeestatehub"))
        .args(["projections", "rebuild", "--target", "all"])
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .await
        .unwrap();
    assert!(rebuilt.status.success(), "{rebuilt:?}");
    let fresh = (
        crate::queries::read_model_checksum(&pool).await,
        crate::market::metrics_checksum(&pool).await,
    );
    assert_eq!(
        live, fresh,
        "live read model and market aggregates differ from a rebuild"
    );
    println!(
        "chaos: verified {} events in the store and on both streams, read model and {} market rows equal to a rebuild",
        store.len(),
        fresh.1.0
    );
    pool.close().await;
    drop(api);
}
