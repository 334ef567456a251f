//! Rate limits per caller: a signed-in user or an API key by its identity, anonymous callers
//! by their address. Beyond the limit: 429 with `Retry-After`.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use keh_platform::Problem;

use crate::principal::{Caller, Principal};

/// A keyed token bucket.
pub struct RateLimit {
    limiter: DefaultKeyedRateLimiter<String>,
    trust_forwarded_for: bool,
}

impl RateLimit {
    /// `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: u32, burst: u32, trust_forwarded_for: bool) -> Option<Arc<Self>> {
        let per_second = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst.max(per_second.get())).unwrap_or(per_second);
        Some(Arc::new(Self {
            limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            trust_forwarded_for,
        }))
    }

    /// Forgets callers whose buckets are full again (bounds memory; call now and then).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    fn key(&self, request: &Request) -> String {
        let caller = request.extensions().get::<Caller>();
        match caller.map(|c| &c.principal) {
            Some(Principal::User { user_id, .. }) => format!("user:{user_id}"),
            Some(Principal::ApiKey { key_id, .. }) => format!("key:{key_id}"),
            _ => format!(
                "ip:{}",
                self.client_address(request)
                    .map_or_else(|| "unknown".to_owned(), |a| a.to_string())
            ),
        }
    }

    /// The peer's address, or the first `X-Forwarded-For` hop when the platform sits behind
    /// a proxy it trusts (`KEH_TRUST_FORWARDED_FOR`).
    fn client_address(&self, request: &Request) -> Option<IpAddr> {
        if self.trust_forwarded_for
            && let Some(first) = request
                .headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse().ok())
        {
            return Some(first);
        }
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip())
    }
}

/// The middleware (`from_fn_with_state(limit, rate_limit)`); runs after the caller is known.
pub async fn rate_limit(
    State(limit): State<Arc<RateLimit>>,
    request: Request,
    next: Next,
) -> Response {
    let key = limit.key(&request);
    match limit.limiter.check_key(&key) {
        Ok(()) => next.run(request).await,
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let mut problem = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
                "this caller sent more requests than its limit; retry after the Retry-After delay",
            );
            problem.retry_after_secs = Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
            problem.into_response()
        }
    }
}
