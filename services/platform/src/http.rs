//! The HTTP stack shared by every role, and `serve`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, OnResponse, TraceLayer};
use tracing::Level;

use crate::health::Health;
use crate::metrics::{self, HttpMetrics};
use crate::problem::{Problem, problem_for_plain_errors};

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
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_limit: 256 * 1024,
            request_timeout: Duration::from_secs(10),
            cors_origins: Vec::new(),
        }
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps the routers of the roles this process runs with health, metrics, fallbacks and the
/// common layers. Every error leaving it is `application/problem+json`.
pub fn app(
    api: Router,
    health: Health,
    registry: Arc<Registry>,
    settings: &HttpSettings,
) -> Result<Router, prometheus::Error> {
    let http_metrics = Arc::new(HttpMetrics::register(&registry)?);
    let health = Arc::new(health);
    let ready = Arc::clone(&health);
    let metrics_registry = Arc::clone(&registry);
    let ops = Router::new()
        .route(
            "/api/v1/health",
            get(move || {
                let health = Arc::clone(&health);
                async move { health.report().await }
            }),
        )
        .route(
            "/api/v1/health/ready",
            get(move || {
                let health = Arc::clone(&ready);
                async move { health.ready().await }
            }),
        )
        .route("/api/v1/health/live", get(|| async { Health::live() }))
        .route(
            "/metrics",
            get({
                let registry = Arc::clone(&metrics_registry);
                move || {
                    let registry = Arc::clone(&registry);
                    async move { metrics::render(&registry) }
                }
            }),
        )
        .route(
            "/api/v1/metrics",
            get(move || {
                let registry = Arc::clone(&metrics_registry);
                async move { metrics::render(&registry) }
            }),
        );
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
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid)))
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
    let method = request.method().as_str();
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
        .get(crate::telemetry::TRACEPARENT)
        .and_then(|v| v.to_str().ok());
    crate::telemetry::set_parent(&span, parent);
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
