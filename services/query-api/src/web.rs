//! The dashboard (`web/`): plain ES modules and a stylesheet, and Chart.js from its npm
//! package, embedded in the binary so the dashboard needs no network beyond the platform;
//! and the API docs page (Swagger UI, from its npm package).
//! Served with a strict Content-Security-Policy: scripts and styles only from here, no
//! inline script, nothing framed.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keh_platform::Problem;

macro_rules! web {
    ($path:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/", $path))
    };
}

const INDEX: &str = web!("index.html");
const DOCS: &str = web!("docs.html");

/// `/assets/{name}` → (content, media type).
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", web!("src/app.js"), JS),
    ("api.js", web!("src/api.js"), JS),
    ("dom.js", web!("src/dom.js"), JS),
    ("reso.js", web!("src/reso.js"), JS),
    ("live.js", web!("src/live.js"), JS),
    ("signin.js", web!("src/signin.js"), JS),
    ("listings.js", web!("src/listings.js"), JS),
    ("detail.js", web!("src/detail.js"), JS),
    ("market.js", web!("src/market.js"), JS),
    ("activity.js", web!("src/activity.js"), JS),
    (
        "style.css",
        web!("src/style.css"),
        "text/css; charset=utf-8",
    ),
    ("favicon.svg", web!("src/favicon.svg"), "image/svg+xml"),
    ("docs.js", web!("src/docs.js"), JS),
    (
        "vendor/chart.umd.min.js",
        web!("node_modules/chart.js/dist/chart.umd.min.js"),
        JS,
    ),
    (
        "vendor/swagger-ui-bundle.js",
        web!("node_modules/swagger-ui-dist/swagger-ui-bundle.js"),
        JS,
    ),
    (
        "vendor/swagger-ui.css",
        web!("node_modules/swagger-ui-dist/swagger-ui.css"),
        "text/css; charset=utf-8",
    ),
];

const JS: &str = "text/javascript; charset=utf-8";

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn page(body: &'static str, media_type: &'static str) -> Response {
    let headers: [(HeaderName, HeaderValue); 6] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(media_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    (headers, body).into_response()
}

async fn index() -> Response {
    page(INDEX, "text/html; charset=utf-8")
}

/// `/api/v1/docs`: the browsable API documentation.
async fn docs() -> Response {
    page(DOCS, "text/html; charset=utf-8")
}

async fn asset(Path(name): Path<String>) -> Result<Response, Problem> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, body, media_type)| page(body, media_type))
        .ok_or_else(|| Problem::not_found(format!("no dashboard asset {name}")))
}

pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/api/v1/docs", get(docs))
        .route("/assets/{*name}", get(asset))
}
