//! Pacing: a closed loop (a fixed number of clients, each sending its next request when the
//! last one answers) or an open loop (requests start at a fixed arrival rate whether or not
//! earlier ones have answered). In the open loop a request's latency counts from the moment
//! it was due, not from when a client was free to send it, so a stalled server cannot hide
//! its queue (no coordinated omission).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::stats::{Latencies, Summary};

/// How requests are paced.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// `clients` clients in a loop.
    Closed { clients: usize },
    /// `rate` requests per second, at most `max_in_flight` at once (beyond that a request
    /// waits for a slot, and the wait counts in its latency).
    Open { rate: f64, max_in_flight: usize },
}

/// When a run ends: after `count` requests, or at `until`, whichever comes first.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub count: Option<u64>,
    pub duration: Option<Duration>,
}

/// One request's outcome.
pub struct Outcome {
    /// Operation name, for per-operation latency (`None`: only the overall figures).
    pub operation: Option<&'static str>,
    /// HTTP status, or `timeout` / `connection`.
    pub status: String,
}

#[derive(Default)]
struct Recorder {
    overall: Latencies,
    operations: BTreeMap<&'static str, Latencies>,
    statuses: BTreeMap<String, u64>,
}

impl Recorder {
    fn record(&mut self, outcome: Outcome, latency: Duration) {
        self.overall.record(latency);
        if let Some(operation) = outcome.operation {
            self.operations
                .entry(operation)
                .or_default()
                .record(latency);
        }
        *self.statuses.entry(outcome.status).or_default() += 1;
    }
}

/// Runs `request(i)` for i = 0, 1, … as `pace` and `bounds` say; returns the summary.
pub async fn drive<F, Fut>(what: &str, pace: Pace, bounds: Bounds, request: F) -> Summary
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let request = Arc::new(request);
    let recorder = Arc::new(Mutex::new(Recorder::default()));
    let started = Instant::now();
    let deadline = bounds.duration.map(|d| started + d);
    let count = bounds.count.unwrap_or(u64::MAX);
    match pace {
        Pace::Closed { clients } => {
            let next = Arc::new(AtomicU64::new(0));
            let clients = (0..clients.max(1)).map(|_| {
                let (request, recorder, next) = (request.clone(), recorder.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count || deadline.is_some_and(|d| Instant::now() >= d) {
                            break;
                        }
                        let sent = Instant::now();
                        let outcome = request(i).await;
                        let latency = sent.elapsed();
                        if let Ok(mut r) = recorder.lock() {
                            r.record(outcome, latency);
                        }
                    }
                })
            });
            futures::future::join_all(clients).await;
        }
        Pace::Open {
            rate,
            max_in_flight,
        } => {
            let slots = Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1)));
            let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let mut tasks = Vec::new();
            let mut i = 0_u64;
            loop {
                let due = started + interval.mul_f64(i as f64);
                if i >= count || deadline.is_some_and(|d| due >= d) {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let (request, recorder, slots) = (request.clone(), recorder.clone(), slots.clone());
                tasks.push(tokio::spawn(async move {
                    let Ok(_slot) = slots.acquire_owned().await else {
                        return;
                    };
                    let outcome = request(i).await;
                    let latency = due.elapsed();
                    if let Ok(mut r) = recorder.lock() {
                        r.record(outcome, latency);
                    }
                }));
                i += 1;
            }
            futures::future::join_all(tasks).await;
        }
    }
    let recorder = match recorder.lock() {
        Ok(mut r) => std::mem::take(&mut *r),
        Err(_) => Recorder::default(),
    };
    Summary {
        statuses: recorder.statuses,
        operations: recorder
            .operations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.percentiles()))
            .collect(),
        ..Summary::of_run(
            what,
            started.elapsed(),
            recorder.overall.count(),
            &recorder.overall,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_loop_sends_exactly_the_count() {
        let summary = drive(
            "t",
            Pace::Closed { clients: 4 },
            Bounds {
                count: Some(100),
                duration: None,
            },
            |i| async move {
                Outcome {
                    operation: Some(if i % 2 == 0 { "even" } else { "odd" }),
                    status: "200".to_owned(),
                }
            },
        )
        .await;
        assert_eq!(summary.requests, 100);
        assert_eq!(summary.statuses["200"], 100);
        assert_eq!(summary.operations["even"].count, 50);
    }

    #[tokio::test]
    async fn an_open_loop_counts_queueing_in_latency() {
        // One slot, requests due every 10 ms, each taking 50 ms: later requests wait for
        // the slot, and that wait is part of their latency.
        let summary = drive(
            "t",
            Pace::Open {
                rate: 100.0,
                max_in_flight: 1,
            },
            Bounds {
                count: Some(10),
                duration: None,
            },
            |_| async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Outcome {
                    operation: None,
                    status: "200".to_owned(),
                }
            },
        )
        .await;
        assert_eq!(summary.requests, 10);
        assert!(summary.latency.max_ms >= 400.0, "{:?}", summary.latency);
    }
}
