//! Health: the checks of a process's dependencies, and the readiness report they add up to
//! (served by `keh-http` as `/api/v1/health` and `/api/v1/health/ready`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::Serialize;

type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// One dependency check.
#[derive(Clone)]
pub struct Check {
    name: &'static str,
    /// Whether readiness depends on it (a role serving commands needs PostgreSQL, not NATS).
    required: bool,
    probe: Probe,
}

impl Check {
    pub fn new<F>(name: &'static str, required: bool, probe: F) -> Self
    where
        F: Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static,
    {
        Self {
            name,
            required,
            probe: Arc::new(probe),
        }
    }
}

/// PostgreSQL answers a trivial query on `pool`.
pub fn postgres(pool: sqlx::PgPool, required: bool) -> Check {
    Check::new("postgres", required, move || {
        let pool = pool.clone();
        Box::pin(async move {
            sqlx::query_scalar!("SELECT 1 AS one")
                .fetch_one(&pool)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    })
}

/// The checks of one process.
#[derive(Clone, Default)]
pub struct Health {
    checks: Vec<Check>,
}

/// One dependency's status in a [`Report`].
#[derive(Serialize)]
pub struct CheckReport {
    name: &'static str,
    status: &'static str,
    required: bool,
    latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Every check's outcome, and whether the process is ready (`status`: `ready` when every
/// required dependency answers, else `not-ready`).
#[derive(Serialize)]
pub struct Report {
    pub status: &'static str,
    pub checks: Vec<CheckReport>,
}

impl Report {
    pub fn is_ready(&self) -> bool {
        self.status == "ready"
    }
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Health {
    /// Adds a check (a check already present by name is kept once).
    pub fn with(mut self, check: Check) -> Self {
        if let Some(existing) = self.checks.iter_mut().find(|c| c.name == check.name) {
            existing.required |= check.required;
        } else {
            self.checks.push(check);
        }
        self
    }

    pub fn merge(mut self, other: Self) -> Self {
        for check in other.checks {
            self = self.with(check);
        }
        self
    }

    /// Runs every probe at once, each bounded by a timeout.
    pub async fn run(&self) -> Report {
        let probes = self.checks.iter().map(|check| async move {
            let started = Instant::now();
            let outcome = match tokio::time::timeout(PROBE_TIMEOUT, (check.probe)()).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
            };
            CheckReport {
                name: check.name,
                status: if outcome.is_ok() { "up" } else { "down" },
                required: check.required,
                latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                error: outcome.err(),
            }
        });
        let checks = futures::future::join_all(probes).await;
        let ready = checks.iter().all(|c| !c.required || c.status == "up");
        Report {
            status: if ready { "ready" } else { "not-ready" },
            checks,
        }
    }
}
