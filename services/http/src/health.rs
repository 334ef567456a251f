//! Health endpoints: `/api/v1/health/live` (the process answers), `/api/v1/health/ready`
//! (every required dependency answers) and `/api/v1/health` (each dependency's status).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keh_platform::health::Health;

/// `/api/v1/health` and `/api/v1/health/ready`: 200 when every required dependency
/// answers, else 503; with `detailed`, every dependency's status, latency and error
/// (for operators: it names the platform's dependencies), else only the status.
pub async fn report(health: &Health, detailed: bool) -> Response {
    let report = health.run().await;
    let status = if report.is_ready() {
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
