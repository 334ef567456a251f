//! Rate limits. Three token buckets, each beyond its limit answered 429 with `Retry-After`:
//! - per caller, after authentication: a user or an API key by identity, anonymous callers
//!   by address (`limit_callers`);
//! - per address, before authentication, five times the caller rate, so that requests with
//!   made-up credentials (each a database lookup) are bounded too (`limit_addresses`);
//! - sign-in attempts per address, strictly (password guessing, and argon2 is expensive).

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use keh_http::Problem;

use crate::principal::Caller;

/// Sign-in attempts per address: one a second, ten at once.
const SIGN_IN_PER_SECOND: u32 = 1;
const SIGN_IN_BURST: u32 = 10;
const SIGN_IN_PATH: &str = "/api/v1/auth/token";

/// The keyed token buckets.
pub struct RateLimit {
    callers: DefaultKeyedRateLimiter<String>,
    addresses: DefaultKeyedRateLimiter<String>,
    sign_ins: DefaultKeyedRateLimiter<String>,
    trust_forwarded_for: bool,
}

/// The client's address: the peer, or behind a trusted proxy the hop it appended last
/// to `X-Forwarded-For` (the leftmost entries are whatever the client wrote). IPv6
/// clients are grouped by /64, the block one client usually holds.
pub fn client_address(request: &Request, trust_forwarded_for: bool) -> String {
    let forwarded = trust_forwarded_for
        .then(|| {
            request
                .headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse::<IpAddr>().ok())
        })
        .flatten();
    let peer = || {
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip())
    };
    match forwarded.or_else(peer) {
        Some(IpAddr::V6(v6)) => {
            let segments = v6.segments();
            format!(
                "ip:{:x}:{:x}:{:x}:{:x}::/64",
                segments[0], segments[1], segments[2], segments[3]
            )
        }
        Some(ip) => format!("ip:{ip}"),
        None => "ip:unknown".to_owned(),
    }
}

fn keyed(per_second: NonZeroU32, burst: NonZeroU32) -> DefaultKeyedRateLimiter<String> {
    RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst.max(per_second)))
}

impl RateLimit {
    /// `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: u32, burst: u32, trust_forwarded_for: bool) -> Option<Arc<Self>> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        let five = |n: NonZeroU32| n.saturating_mul(NonZeroU32::MIN.saturating_add(4));
        Some(Arc::new(Self {
            callers: keyed(rate, burst),
            addresses: keyed(five(rate), five(burst)),
            sign_ins: keyed(
                NonZeroU32::new(SIGN_IN_PER_SECOND).unwrap_or(NonZeroU32::MIN),
                NonZeroU32::new(SIGN_IN_BURST).unwrap_or(NonZeroU32::MIN),
            ),
            trust_forwarded_for,
        }))
    }

    /// Forgets callers whose buckets are full again (bounds memory; call now and then).
    pub fn forget_idle(&self) {
        for limiter in [&self.callers, &self.addresses, &self.sign_ins] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    fn address(&self, request: &Request) -> String {
        client_address(request, self.trust_forwarded_for)
    }
}

fn too_many(wait: std::time::Duration, detail: &str) -> Response {
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "Too many requests",
        detail,
    )
    .retry_after(wait)
    .into_response()
}

fn check(
    limiter: &DefaultKeyedRateLimiter<String>,
    key: &String,
) -> Result<(), std::time::Duration> {
    limiter
        .check_key(key)
        .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
}

/// Per caller, once the caller is known (`from_fn_with_state(limit, limit_callers)` inside
/// the auth layer).
pub async fn limit_callers(
    State(limit): State<Arc<RateLimit>>,
    request: Request,
    next: Next,
) -> Response {
    let key = request
        .extensions()
        .get::<Caller>()
        .map_or_else(|| limit.address(&request), Caller::limit_key);
    match check(&limit.callers, &key) {
        Ok(()) => next.run(request).await,
        Err(wait) => too_many(
            wait,
            "this caller sent more requests than its limit; retry after the Retry-After delay",
        ),
    }
}

/// Per address, before credentials are looked at (`from_fn_with_state(limit,
/// limit_addresses)` outside the auth layer); sign-in attempts have their own, strict limit.
pub async fn limit_addresses(
    State(limit): State<Arc<RateLimit>>,
    request: Request,
    next: Next,
) -> Response {
    let key = limit.address(&request);
    if let Err(wait) = check(&limit.addresses, &key) {
        return too_many(
            wait,
            "this address sent more requests than its limit; retry after the Retry-After delay",
        );
    }
    if request.uri().path() == SIGN_IN_PATH
        && let Err(wait) = check(&limit.sign_ins, &key)
    {
        return too_many(
            wait,
            "too many sign-in attempts from this address; retry later",
        );
    }
    next.run(request).await
}
