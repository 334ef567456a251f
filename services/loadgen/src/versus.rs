//! The side-by-side workload against the benchmark peer (cqrs-demo, the reference
//! application of cqrs-es): the same shape of load on both sides, so the two figures can be
//! divided.
//!
//! - ours: N listings created first, then each client sends one-event commands — a price
//!   change with a fresh price — to a random listing ([`price_changes`]);
//! - the peer: N accounts opened first, then deposits to a random account
//!   ([`open_accounts`], [`deposits`]); and GET by key on both sides ([`account_reads`]).
//!
//! Only 2xx answers count as done; a lost optimistic-concurrency race (our 409, the peer's
//! 400) is reported beside them by status.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::driver::{self, Bounds, Outcome, Pace};
use crate::stats::Summary;
use crate::workload::Tracked;
use crate::{Api, status_of};

/// Price changes to random listings of `listings`, each with a price no earlier command
/// sent (a repeated price would be a no-op, not an event).
pub async fn price_changes(
    api: &Api,
    listings: Vec<Tracked>,
    pace: Pace,
    bounds: Bounds,
    seed: u64,
) -> Summary {
    let api = api.clone();
    let keys: Arc<Vec<String>> = Arc::new(listings.into_iter().map(|l| l.key).collect());
    driver::drive("price-changes", pace, bounds, move |i| {
        let (api, keys) = (api.clone(), Arc::clone(&keys));
        async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(7_919).wrapping_add(i));
            let key = &keys[rng.random_range(0..keys.len().max(1))];
            // Distinct per request: 100,000.00 plus the request number in cents.
            let cents = 10_000_000 + i;
            let price = format!("{}.{:02}", cents / 100, cents % 100);
            let body: serde_json::Value =
                serde_json::from_str(&format!("{{\"ListPrice\": {price}}}")).unwrap_or_default();
            let status = status_of(
                api.request(
                    reqwest::Method::POST,
                    &format!("/api/v1/listings/{key}/price"),
                )
                .json(&body),
            )
            .await;
            Outcome {
                operation: None,
                status,
            }
        }
    })
    .await
}

/// The peer's account ids: `{prefix}-{n}`.
fn account(prefix: &str, n: u64) -> String {
    format!("{prefix}-{n}")
}

/// Request `i`'s account: one of the `count` opened, drawn from `seed` (mixed with
/// `salt`, so that different phases draw different sequences).
fn random_account(prefix: &str, count: u64, seed: u64, salt: u64, i: u64) -> String {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(salt).wrapping_add(i));
    account(prefix, rng.random_range(0..count.max(1)))
}

/// Opens `count` accounts on the peer.
pub async fn open_accounts(api: &Api, prefix: &str, count: u64, clients: usize) -> Summary {
    let api = api.clone();
    let prefix = prefix.to_owned();
    driver::drive(
        "open-accounts",
        Pace::Closed { clients },
        Bounds {
            count: Some(count),
            duration: None,
        },
        move |i| {
            let api = api.clone();
            let id = account(&prefix, i);
            async move {
                let status = status_of(
                    api.request(reqwest::Method::POST, &format!("/account/{id}"))
                        .json(&json!({ "OpenAccount": { "account_id": id } })),
                )
                .await;
                Outcome {
                    operation: None,
                    status,
                }
            }
        },
    )
    .await
}

/// Deposits to random accounts of the `count` opened.
pub async fn deposits(
    api: &Api,
    prefix: &str,
    count: u64,
    pace: Pace,
    bounds: Bounds,
    seed: u64,
) -> Summary {
    let api = api.clone();
    let prefix = prefix.to_owned();
    driver::drive("deposits", pace, bounds, move |i| {
        let api = api.clone();
        let id = random_account(&prefix, count, seed, 7_919, i);
        async move {
            let status = status_of(
                api.request(reqwest::Method::POST, &format!("/account/{id}"))
                    .json(&json!({ "DepositMoney": { "amount": 1.0 } })),
            )
            .await;
            Outcome {
                operation: None,
                status,
            }
        }
    })
    .await
}

/// GET of random accounts' views on the peer.
pub async fn account_reads(
    api: &Api,
    prefix: &str,
    count: u64,
    pace: Pace,
    bounds: Bounds,
    seed: u64,
) -> Summary {
    let prefix = prefix.to_owned();
    crate::run_reads(api, "account-reads", pace, bounds, move |i| {
        format!(
            "/account/{}",
            random_account(&prefix, count, seed, 104_729, i)
        )
    })
    .await
}
