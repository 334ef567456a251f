//! The dashboard (`web/`): plain ES modules and a stylesheet, and Chart.js from its npm
//! package, embedded in the binary so the dashboard needs no network beyond the platform;
//! and the API docs page (Swagger UI, from its npm package). Files are served under
//! content-hashed names given at build time (`build.rs`) and kept by browsers for ever;
//! the pages are revalidated by entity tag on every load.
//! Served with a strict Content-Security-Policy: scripts and styles only from here, no
//! inline script, nothing framed.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keh_http::Problem;

/// An embedded file and its entity tag (a digest computed at build time).
struct Embedded {
    body: &'static str,
    etag: &'static str,
}

/// A file under `/assets/`: by its content-hashed name (kept for ever by browsers), or by
/// its plain name (revalidated on every use, for links from before a release).
struct Asset {
    name: &'static str,
    hashed: &'static str,
    file: Embedded,
    media_type: &'static str,
}

// `INDEX`, `DOCS` (referring to hashed names) and `ASSETS`, made by build.rs.
include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// A file whose name changes with its content may be kept for ever.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// A file whose name stays: revalidated on every use (a 304 when unchanged).
const REVALIDATE: &str = "no-cache";

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `file` with the dashboard's security headers and `caching`; a 304 without a body when
/// the browser already has it (`If-None-Match` names its tag).
fn page(
    file: &Embedded,
    media_type: &'static str,
    caching: &'static str,
    request: &HeaderMap,
) -> Response {
    let headers: [(HeaderName, HeaderValue); 7] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(media_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static(caching)),
        (header::ETAG, HeaderValue::from_static(file.etag)),
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
    if keh_http::none_match(request, file.etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, file.body).into_response()
}

/// `/`: the dashboard; revalidated on every load, so a new release is picked up at once.
async fn index(request: HeaderMap) -> Response {
    page(&INDEX, "text/html; charset=utf-8", REVALIDATE, &request)
}

/// `/api/v1/docs`: the browsable API documentation.
async fn docs(request: HeaderMap) -> Response {
    page(&DOCS, "text/html; charset=utf-8", REVALIDATE, &request)
}

async fn asset(Path(name): Path<String>, request: HeaderMap) -> Result<Response, Problem> {
    if let Some(asset) = ASSETS.iter().find(|a| a.hashed == name) {
        return Ok(page(&asset.file, asset.media_type, IMMUTABLE, &request));
    }
    ASSETS
        .iter()
        .find(|a| a.name == name)
        .map(|asset| page(&asset.file, asset.media_type, REVALIDATE, &request))
        .ok_or_else(|| Problem::not_found(format!("no dashboard asset {name}")))
}

pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/api/v1/docs", get(docs))
        .route("/assets/{*name}", get(asset))
}
