//! The HTTP stack shared by every role, and `serve`.

use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use aide::transform::TransformOperation;
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware;
use axum::response::IntoResponse;
use prometheus::Registry;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, OnResponse, TraceLayer};
use tracing::Level;

use keh_platform::health::Health;

use crate::docs::{self, Access, Describe as _};
use crate::health;
use crate::metrics::{self, HttpMetrics};
use crate::problem::{Problem, problem_for_plain_errors};

/// The bearer token that reads metrics and the detailed health report (Prometheus sends
/// it); `Debug` never shows it.
#[derive(Clone)]
pub struct OpsToken(Arc<str>);

impl OpsToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(Arc::from(token.into()))
    }
}

impl std::fmt::Debug for OpsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpsToken(***)")
    }
}

/// Longest request target (path and query) answered; beyond it, 414 problem+json.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header bytes (names and values) a request may carry; beyond, 431 problem+json.
/// (Past hyper's own limits — 100 headers, a request target of about 64 KiB, about 400 KiB
/// of head — the connection's parser answers a bare 431 or 414 before any of this code
/// runs.)
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Longest `X-Request-Id` taken from a client (else a new one is made).
const MAX_REQUEST_ID: usize = 128;

/// Limits applied to every request.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Largest request body accepted (413 beyond).
    pub body_limit: usize,
    /// Longest a request may take (504 beyond; a command already submitted still completes,
    /// so its outcome is unknown to the client, who retries with the same Idempotency-Key).
    pub request_timeout: Duration,
    /// Browser origins allowed to call the APIs (CORS); none: no CORS headers at all.
    pub cors_origins: Vec<HeaderValue>,
    /// Who may read `/metrics`, `/api/v1/metrics` and the detailed health report besides
    /// callers on loopback: those sending this bearer token.
    pub ops_token: Option<OpsToken>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_limit: 256 * 1024,
            request_timeout: Duration::from_secs(10),
            cors_origins: Vec::new(),
            ops_token: None,
        }
    }
}

/// Whether a request may read what operators read (metrics, the detailed health report):
/// it comes from this machine's loopback, not through a proxy (a proxy on the same machine
/// would make every caller look local), or it carries the ops token.
fn ops_allowed(request: &Request, token: Option<&OpsToken>) -> bool {
    let headers = request.headers();
    let proxied = ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|name| headers.contains_key(*name));
    let local = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|info| info.0.ip().is_loopback());
    if local && !proxied {
        return true;
    }
    let Some(token) = token else { return false };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, sent)| {
            scheme.eq_ignore_ascii_case("bearer") && same_secret(sent.trim(), &token.0)
        })
}

/// Compares two secrets in time that depends only on their lengths.
fn same_secret(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

fn ops_refused() -> axum::response::Response {
    let mut response = Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Unauthorized",
        "metrics and the detailed health report need the metrics token (KEH_METRICS_TOKEN) as Authorization: Bearer",
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"kubeestatehub-metrics\""),
    );
    response
}

/// Middleware: a request target or header block larger than the limits gets a 414 or 431
/// problem+json before anything else reads it.
async fn limit_sizes(request: Request, next: middleware::Next) -> axum::response::Response {
    let uri = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if uri > MAX_URI_BYTES {
        return Problem::new(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            "URI Too Long",
            format!("the request target has {uri} bytes; at most {MAX_URI_BYTES} are accepted"),
        )
        .into_response();
    }
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers > MAX_HEADER_BYTES {
        return Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            "Request Header Fields Too Large",
            format!(
                "the request headers have {headers} bytes; at most {MAX_HEADER_BYTES} are accepted"
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// Middleware: a client's `X-Request-Id` is kept only if it is short and made of safe
/// characters (letters, digits, `-`, `_`, `.`, `:`), else dropped so a new one is made: it
/// is echoed in answers and written to logs.
async fn sanitize_request_id(mut request: Request) -> Request {
    let safe = request.headers().get(REQUEST_ID).is_none_or(|value| {
        let bytes = value.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    });
    if !safe {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Whether a request's `If-None-Match` names `etag` (or is `*`): the client has that
/// representation, and gets a 304 without a body. Comparison is weak (RFC 9110 13.1.2): a
/// `W/` prefix on either side is ignored.
pub fn none_match(request: &axum::http::HeaderMap, etag: &str) -> bool {
    let ours = etag.trim_start_matches("W/");
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == ours)
}

/// What the operators' endpoints read: the dependency checks, the metrics, and the token
/// that opens the detailed views to callers other than loopback ones.
#[derive(Clone)]
pub struct Ops {
    health: Arc<Health>,
    registry: Arc<Registry>,
    token: Option<OpsToken>,
}

fn status_schema() -> serde_json::Value {
    json!({"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}, "checks": {"type": "array", "items": {"type": "object"}}}})
}

/// The documentation of a probe (`not_ready`: it answers 503 while a dependency is down).
fn probe(
    id: &'static str,
    summary: &'static str,
    not_ready: bool,
) -> impl FnOnce(TransformOperation<'_>) -> TransformOperation<'_> {
    move |op| {
        let op = op
            .named(id, "Operations", summary)
            .access(Access::Open)
            .answer(200, docs::ok("Status", status_schema()));
        if not_ready {
            op.answer(503, docs::ok("Not ready", status_schema()))
        } else {
            op
        }
    }
}

fn metrics_docs(op: TransformOperation<'_>) -> TransformOperation<'_> {
    op.named(
        "metrics",
        "Operations",
        "Prometheus metrics (loopback callers, or the metrics token as a bearer token)",
    )
    .access(Access::Operator)
    .answer(
        200,
        json!({"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}),
    )
    .answer(
        401,
        json!({"description": "Neither a loopback caller nor the metrics token", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}),
    )
}

/// The operators' endpoints, documented: probes, the health report, the metrics page.
pub fn ops_routes() -> ApiRouter<Ops> {
    ApiRouter::new()
        .api_route(
            "/api/v1/health",
            get_with(
                health_report,
                probe(
                    "health",
                    "Each dependency's status and latency (for loopback callers or the metrics token; others get the status only)",
                    true,
                ),
            ),
        )
        .api_route(
            "/api/v1/health/ready",
            get_with(
                health_report,
                probe("ready", "Every required dependency answers", true),
            ),
        )
        .api_route(
            "/api/v1/health/live",
            get_with(live, probe("live", "The process serves requests", false)),
        )
        .api_route("/api/v1/metrics", get_with(metrics_page, metrics_docs))
        // The conventional path for scrapers; the same page.
        .route("/metrics", axum::routing::get(metrics_page))
}

async fn health_report(State(ops): State<Ops>, request: Request) -> axum::response::Response {
    health::report(&ops.health, ops_allowed(&request, ops.token.as_ref())).await
}

async fn live() -> axum::response::Response {
    health::live()
}

async fn metrics_page(State(ops): State<Ops>, request: Request) -> axum::response::Response {
    if ops_allowed(&request, ops.token.as_ref()) {
        metrics::render(&ops.registry)
    } else {
        ops_refused()
    }
}

/// Wraps the routers of the roles this process runs with health, metrics, fallbacks and the
/// common layers. Every error leaving it is `application/problem+json`.
pub fn app(
    api: Router,
    health: Health,
    registry: Arc<Registry>,
    settings: &HttpSettings,
) -> Result<Router, prometheus::Error> {
    let http_metrics = Arc::new(HttpMetrics::register(&registry)?);
    let ops = Router::from(ops_routes().with_state(Ops {
        health: Arc::new(health),
        registry: Arc::clone(&registry),
        token: settings.ops_token.clone(),
    }));
    let cors = (!settings.cors_origins.is_empty()).then(|| {
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(settings.cors_origins.clone()))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PATCH,
                Method::PUT,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_MATCH,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("x-correlation-id"),
            ])
            .expose_headers([
                header::ETAG,
                header::LOCATION,
                header::RETRY_AFTER,
                HeaderName::from_static("idempotent-replayed"),
                REQUEST_ID,
            ])
            .max_age(Duration::from_secs(600))
    });
    Ok(api
        .merge(ops)
        .fallback(|| async { Problem::from_status(StatusCode::NOT_FOUND) })
        .layer(middleware::from_fn_with_state(http_metrics, metrics::track))
        .layer(middleware::map_response(problem_for_plain_errors))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            settings.request_timeout,
        ))
        .layer(DefaultBodyLimit::max(settings.body_limit))
        .layer(CatchPanicLayer::custom(|_| {
            Problem::internal().into_response()
        }))
        // gzip or br as the client accepts; never the live feed (its events must not wait
        // in a compressor's buffer), images or tiny bodies (tower-http's default predicate).
        .layer(CompressionLayer::new())
        .layer(tower::util::option_layer(cors))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(
                    |response: &axum::http::Response<_>,
                     latency: Duration,
                     span: &tracing::Span| {
                        let status = response.status();
                        span.record("http.response.status_code", status.as_u16());
                        if status.is_server_error() {
                            span.record("otel.status_code", "ERROR");
                        }
                        DefaultOnResponse::new()
                            .level(Level::DEBUG)
                            .on_response(response, latency, span);
                    },
                )
                .on_failure(()),
        )
        // Inside the request-id layers, so that a 414 or 431 carries its id too.
        .layer(middleware::from_fn(limit_sizes))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(middleware::map_request(sanitize_request_id)))
}

/// The span of one request, named by route template (never the raw path, which would make
/// every listing its own operation), continuing the caller's trace when it sends a W3C
/// `traceparent`. Commands copy this span's context into their events' metadata, so the
/// trace goes on through the relay to every consumer.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str());
    let method = metrics::method_label(request.method());
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        url.path = request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        request_id = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
    );
    let parent = request
        .headers()
        .get(keh_platform::telemetry::TRACEPARENT)
        .and_then(|v| v.to_str().ok());
    keh_platform::telemetry::set_parent(&span, parent);
    span
}

/// Serves `app` on an already-bound listener until `shutdown` is cancelled, then drains
/// in-flight requests. Logs `listening on http://ADDR` once accepting.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!("listening on http://{addr}");
    // The peer address feeds per-address rate limits of anonymous callers.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}
