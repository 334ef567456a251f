//! Health: `/api/v1/health/live` (the process answers), `/api/v1/health/ready` (every
//! required dependency answers) and `/api/v1/health` (each dependency's status).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
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
            sqlx::query("SELECT 1")
                .execute(&pool)
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

#[derive(Serialize)]
struct CheckReport {
    name: &'static str,
    status: &'static str,
    required: bool,
    latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct Report {
    status: &'static str,
    checks: Vec<CheckReport>,
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

    async fn run(&self) -> Report {
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

    /// `/api/v1/health` and `/api/v1/health/ready`: 200 when every required dependency
    /// answers, else 503; with `detailed`, every dependency's status, latency and error
    /// (for operators: it names the platform's dependencies), else only the status.
    pub async fn report(&self, detailed: bool) -> Response {
        let report = self.run().await;
        let status = if report.status == "ready" {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        if detailed {
            (status, Json(report)).into_response()
        } else {
            (status, Json(serde_json::json!({ "status": report.status }))).into_response()
        }
    }

    /// `/api/v1/health/live`: the process is serving.
    pub fn live() -> Response {
        Json(serde_json::json!({ "status": "live" })).into_response()
    }
}
