//! Latency histograms (HdrHistogram: exact enough percentiles at any count, constant memory)
//! and the run summary printed for people and, with `--json`, for `bench/run`.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies in microseconds, 1 µs to 10 min, 3 significant digits.
#[derive(Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        // The bounds are constants that `new_with_bounds` accepts; `auto` lets a longer value
        // widen the histogram instead of failing.
        let mut histogram = Histogram::new_with_bounds(1, 600_000_000, 3)
            .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()));
        histogram.auto(true);
        Self(histogram)
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let _ = self.0.record(micros);
    }

    pub fn merge(&mut self, other: &Self) {
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn percentiles(&self) -> Percentiles {
        let ms = |q: f64| {
            if self.0.is_empty() {
                0.0
            } else {
                round2(self.0.value_at_quantile(q) as f64 / 1000.0)
            }
        };
        Percentiles {
            count: self.0.len(),
            p50_ms: ms(0.50),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            max_ms: if self.0.is_empty() {
                0.0
            } else {
                round2(self.0.max() as f64 / 1000.0)
            },
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n {} p50 {:.2} p95 {:.2} p99 {:.2} max {:.2} ms",
            self.count, self.p50_ms, self.p95_ms, self.p99_ms, self.max_ms
        )
    }
}

/// What one run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// The workload (`commands`, `search`, `get`, `jetstream-publish`, …).
    pub what: String,
    pub seconds: f64,
    /// Requests (or messages) completed, whatever their outcome.
    pub requests: u64,
    /// Completed per second.
    pub throughput: f64,
    pub latency: Percentiles,
    /// Outcomes: HTTP status codes, `timeout`, `connection`.
    pub statuses: BTreeMap<String, u64>,
    /// Latency per operation of a mix.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub operations: BTreeMap<String, Percentiles>,
    /// Event-to-visible lag: command accepted → visible in the query API (`query`) and on
    /// the SSE feed (`sse`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lag: BTreeMap<String, Percentiles>,
    /// Lag probes that never saw their event (within 10 s).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lag_missing: BTreeMap<String, u64>,
}

impl Summary {
    /// `count` completions of `what` in `elapsed`, with their latencies (rounded for people:
    /// seconds to 10 ms, throughput to whole units).
    pub fn of_run(what: &str, elapsed: Duration, count: u64, latencies: &Latencies) -> Self {
        let seconds = elapsed.as_secs_f64();
        Self {
            what: what.to_owned(),
            seconds: round2(seconds),
            requests: count,
            throughput: (count as f64 / seconds.max(0.001)).round(),
            latency: latencies.percentiles(),
            ..Self::default()
        }
    }

    pub fn print(&self, json: bool) {
        if json {
            if let Ok(line) = serde_json::to_string(self) {
                println!("{line}");
            }
            return;
        }
        println!(
            "{}: {} in {:.1} s = {:.0}/s; latency {}; outcomes {:?}",
            self.what, self.requests, self.seconds, self.throughput, self.latency, self.statuses
        );
        for (operation, percentiles) in &self.operations {
            println!("  {operation}: {percentiles}");
        }
        for (kind, percentiles) in &self.lag {
            println!("  event-to-visible lag ({kind}): {percentiles}");
        }
        for (kind, missing) in &self.lag_missing {
            println!("  lag probes that never saw their event ({kind}): {missing}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_within_the_histogram_precision() {
        let mut latencies = Latencies::new();
        for ms in 1..=100 {
            latencies.record(Duration::from_millis(ms));
        }
        let p = latencies.percentiles();
        assert_eq!(p.count, 100);
        assert!((p.p50_ms - 50.0).abs() < 0.1, "{p:?}");
        assert!((p.p99_ms - 99.0).abs() < 0.1, "{p:?}");
        assert!((p.max_ms - 100.0).abs() < 0.1, "{p:?}");
        let mut other = Latencies::new();
        other.record(Duration::from_secs(2));
        latencies.merge(&other);
        assert!((latencies.percentiles().max_ms - 2000.0).abs() < 2.0);
        assert_eq!(Latencies::new().percentiles(), Percentiles::default());
    }
}
