//! Event-to-visible lag: from the moment the command API accepted a command (its 2xx
//! answer arrived) until the change is visible to readers, on two paths:
//! - `sse`: the event arrives on the live feed (`GET /api/v1/listing-events`), watched by
//!   one Server-Sent Events connection for the whole run;
//! - `query`: the query API serves the listing at that version (`GET /api/v1/listings/{key}`
//!   polled every 2 ms, for a sample of the commands).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::Api;
use crate::stats::{Latencies, Percentiles};

/// How long a probe waits for its event before counting it missing.
const GIVE_UP: Duration = Duration::from_secs(10);

/// Either side of a (listing, version) pair may be seen first: the SSE event can beat the
/// HTTP answer to the client.
enum Seen {
    Accepted(Instant),
    Arrived,
}

#[derive(Default)]
struct State {
    pending: HashMap<(String, u64), Seen>,
    sse: Latencies,
    query: Latencies,
    query_missing: u64,
    query_in_flight: u64,
}

/// Collects lag measurements for a run.
#[derive(Clone)]
pub struct LagProbe {
    state: Arc<Mutex<State>>,
    api: Api,
    feed: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl LagProbe {
    /// Opens the SSE connection; returns once the feed answered.
    pub async fn start(api: Api) -> anyhow::Result<Self> {
        let state = Arc::new(Mutex::new(State::default()));
        let response = api
            .request(reqwest::Method::GET, "/api/v1/listing-events")
            .header("accept", "text/event-stream")
            .timeout(Duration::from_secs(24 * 3600))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "live feed: {}",
            response.status()
        );
        let watched = state.clone();
        let feed = tokio::spawn(async move {
            let mut events = response.bytes_stream().eventsource();
            while let Some(Ok(event)) = events.next().await {
                let arrived = Instant::now();
                let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
                    continue;
                };
                let (Some(key), Some(sequence)) = (
                    data.get("ListingKey").and_then(Value::as_str),
                    data.get("Sequence").and_then(Value::as_u64),
                ) else {
                    continue;
                };
                if let Ok(mut state) = watched.lock() {
                    let id = (key.to_owned(), sequence);
                    match state.pending.remove(&id) {
                        Some(Seen::Accepted(at)) => state.sse.record(arrived - at),
                        // Only commands of this run are accepted; other events are ignored
                        // once the run ends (see `finish`).
                        Some(Seen::Arrived) | None => {
                            state.pending.insert(id, Seen::Arrived);
                        }
                    }
                }
            }
        });
        Ok(Self {
            state,
            api,
            feed: Arc::new(Mutex::new(Some(feed))),
        })
    }

    /// Records that the command API accepted `key` at `version`; with `probe_query`, also
    /// polls the query API until it serves that version.
    pub fn accepted(&self, key: &str, version: u64, probe_query: bool) {
        let at = Instant::now();
        if let Ok(mut state) = self.state.lock() {
            let id = (key.to_owned(), version);
            match state.pending.remove(&id) {
                // The event beat the answer: it was visible at once.
                Some(Seen::Arrived) => state.sse.record(Duration::ZERO),
                _ => {
                    state.pending.insert(id, Seen::Accepted(at));
                }
            }
        }
        if probe_query {
            if let Ok(mut state) = self.state.lock() {
                state.query_in_flight += 1;
            }
            let api = self.api.clone();
            let state = self.state.clone();
            let key = key.to_owned();
            tokio::spawn(async move {
                let seen = loop {
                    if at.elapsed() > GIVE_UP {
                        break None;
                    }
                    if api.version_of(&key).await.is_some_and(|v| v >= version) {
                        break Some(at.elapsed());
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                };
                if let Ok(mut state) = state.lock() {
                    state.query_in_flight -= 1;
                    match seen {
                        Some(lag) => state.query.record(lag),
                        None => state.query_missing += 1,
                    }
                }
            });
        }
    }

    /// Waits for the stragglers (at most [`GIVE_UP`] more), closes the feed and returns the lag
    /// percentiles and the number of events never seen, per path.
    pub async fn finish(&self) -> (Vec<(String, Percentiles)>, Vec<(String, u64)>) {
        let deadline = Instant::now() + GIVE_UP;
        loop {
            let waiting = self.state.lock().map_or(0, |s| {
                s.pending
                    .values()
                    .filter(|v| matches!(v, Seen::Accepted(_)))
                    .count() as u64
                    + s.query_in_flight
            });
            if waiting == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(feed) = self.feed.lock().ok().and_then(|mut f| f.take()) {
            feed.abort();
        }
        let Ok(state) = self.state.lock() else {
            return (Vec::new(), Vec::new());
        };
        let sse_missing = state
            .pending
            .values()
            .filter(|v| matches!(v, Seen::Accepted(_)))
            .count() as u64;
        (
            vec![
                ("sse".to_owned(), state.sse.percentiles()),
                ("query".to_owned(), state.query.percentiles()),
            ],
            vec![
                ("sse".to_owned(), sse_missing),
                ("query".to_owned(), state.query_missing),
            ],
        )
    }
}
