//! Problem details (RFC 9457). Every error a client sees is one of these.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// `wait` in the whole seconds `Retry-After` carries: rounded up, so a client never comes
/// back early.
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One offending field and the rule it broke.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct FieldError {
    /// RESO name (or JSON path) of the field; empty when the body as a whole is at fault.
    pub field: String,
    /// Stable rule name, e.g. `required`, `invalid-value`, `transition-not-allowed`.
    pub rule: String,
    pub message: String,
}

/// An error response. `kind` becomes the `type` URI `/api/v1/problems/{kind}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Problem {
    #[serde(skip)]
    pub status: StatusCode,
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    #[serde(rename = "status")]
    pub status_code: u16,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// For version conflicts: the listing's current version.
    #[serde(
        rename = "currentVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub current_version: Option<u64>,
    #[serde(skip)]
    pub retry_after_secs: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind: format!("/api/v1/problems/{kind}"),
            title: title.to_owned(),
            status_code: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            current_version: None,
            retry_after_secs: None,
        }
    }

    /// Adds a field error.
    pub fn with_field(
        mut self,
        field: impl Into<String>,
        rule: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        self.errors.push(FieldError {
            field: field.into(),
            rule: rule.into(),
            message: message.into(),
        });
        self
    }

    /// 422: the request is well-formed JSON, but these fields are not acceptable.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] if one.field.is_empty() => one.message.clone(),
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} fields are invalid", many.len()),
        };
        let mut problem = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "The request is invalid",
            detail,
        );
        problem.errors = errors;
        problem
    }

    pub fn bad_request(kind: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, "Bad request", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// Tells the client to retry after `wait`, rounded up to whole seconds (`Retry-After`).
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after_secs = Some(retry_after_secs(wait));
        self
    }

    /// 503: a dependency is down; the client may retry after `retry_after_secs`.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        let mut problem = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        );
        problem.retry_after_secs = Some(1);
        problem
    }

    /// 500: the cause is logged by the caller, never shown.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
            "an unexpected error occurred; it has been logged",
        )
    }

    /// A generic problem for a bare status (used by the catch-all).
    pub fn from_status(status: StatusCode) -> Self {
        let (kind, detail) = match status {
            StatusCode::NOT_FOUND => ("not-found", "no resource at this path"),
            StatusCode::METHOD_NOT_ALLOWED => (
                "method-not-allowed",
                "this method is not allowed on this resource",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => ("body-too-large", "the request body is too large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported-media-type",
                "send the body as application/json",
            ),
            StatusCode::REQUEST_TIMEOUT => ("timeout", "the request took too long"),
            StatusCode::GATEWAY_TIMEOUT => (
                "timeout",
                "the request took too long; a command may still have been applied: retry it with the same Idempotency-Key",
            ),
            StatusCode::SERVICE_UNAVAILABLE => {
                ("unavailable", "the service is unavailable; retry later")
            }
            s if s.is_server_error() => (
                "internal",
                "an unexpected error occurred; it has been logged",
            ),
            _ => ("bad-request", "the request was refused"),
        };
        Self::new(
            status,
            kind,
            status.canonical_reason().unwrap_or("Error"),
            detail,
        )
    }
}

/// A problem's statuses are documented by each route (`docs::Describe::errors`) and by
/// `docs::complete` for those every operation may give.
impl aide::OperationOutput for Problem {
    type Inner = Self;
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        // Never `Retry-After: 0`: a client would retry at once, in a loop.
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

/// Middleware body: any 4xx/5xx response without a JSON body (axum's own plain-text
/// rejections, tower-http's limits and timeouts, a 405) becomes problem+json, keeping its
/// headers.
pub async fn problem_for_plain_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // JSON error bodies (problem+json, or a health report) are already meant for clients.
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let essence = v.split(';').next().unwrap_or("").trim();
            essence == "application/json" || essence.ends_with("+json")
        });
    if is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let replacement = Problem::from_status(status).into_response();
    let (new_parts, body) = replacement.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &new_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, body)
}
