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
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
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
    proxies: TrustedProxies,
}

/// The proxies in front of the APIs whose `X-Forwarded-For` is believed
/// (`KEH_TRUSTED_PROXIES`: the Gateway's addresses). Empty: the peer is the client, whatever
/// a header says.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    pub fn new(ranges: Vec<IpNet>) -> Self {
        Self(ranges.into())
    }

    fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|range| range.contains(&ip))
    }

    /// The client behind `peer`: `peer` itself unless it is a trusted proxy; then, walking
    /// `X-Forwarded-For` from the right (each proxy appends the address it was reached
    /// from), the first hop that is not a trusted proxy. Entries left of it are whatever the
    /// client wrote and are never believed.
    fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.contains(client) {
            return client;
        }
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .rev()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.rsplit(','));
        for hop in hops {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                break;
            };
            client = ip.to_canonical();
            if !self.contains(client) {
                break;
            }
        }
        client
    }
}

/// The client's address (see [`TrustedProxies`]). IPv6 clients are grouped by /64, the
/// block one client usually holds.
pub fn client_address(request: &Request, proxies: &TrustedProxies) -> String {
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| proxies.client(info.0.ip(), request.headers()));
    match client {
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
    pub fn new(per_second: u32, burst: u32, proxies: TrustedProxies) -> Option<Arc<Self>> {
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
            proxies,
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
        client_address(request, &self.proxies)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(ranges: &[&str]) -> TrustedProxies {
        TrustedProxies::new(ranges.iter().map(|r| r.parse().unwrap()).collect())
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_header_from_a_peer_that_is_not_a_trusted_proxy_is_ignored() {
        let headers = forwarded(&["203.0.113.9"]);
        assert_eq!(
            proxies(&[]).client(ip("198.51.100.7"), &headers),
            ip("198.51.100.7")
        );
        assert_eq!(
            proxies(&["10.0.0.0/8"]).client(ip("198.51.100.7"), &headers),
            ip("198.51.100.7"),
            "a client reaching the pod directly cannot name another address"
        );
    }

    #[test]
    fn behind_trusted_proxies_the_client_is_the_last_untrusted_hop() {
        let trusted = proxies(&["10.0.0.0/8", "fd00::/8"]);
        // The client wrote a made-up first entry; the Gateway appended the real address.
        let headers = forwarded(&["192.0.2.1, 203.0.113.9"]);
        assert_eq!(trusted.client(ip("10.1.2.3"), &headers), ip("203.0.113.9"));
        // Two proxies: the inner one appended the outer one's address.
        let headers = forwarded(&["192.0.2.1", "203.0.113.9, 10.9.9.9"]);
        assert_eq!(trusted.client(ip("10.1.2.3"), &headers), ip("203.0.113.9"));
        // An IPv4 peer seen as an IPv4-mapped IPv6 address is the same peer.
        assert_eq!(
            trusted.client(ip("::ffff:10.1.2.3"), &forwarded(&["203.0.113.9"])),
            ip("203.0.113.9")
        );
        // Nothing appended, or garbage: the proxy itself is what is known.
        assert_eq!(
            trusted.client(ip("10.1.2.3"), &HeaderMap::new()),
            ip("10.1.2.3")
        );
        assert_eq!(
            trusted.client(ip("10.1.2.3"), &forwarded(&["203.0.113.9, not-an-address"])),
            ip("10.1.2.3")
        );
    }
}
