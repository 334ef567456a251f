//! Unit tests of `facts`.

use super::*;
use crate::compute::{Grain, compute};
use serde_json::json;

fn day(n: u64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 5).unwrap_or(NaiveDate::MIN) + chrono::Days::new(n)
}

fn event(value: serde_json::Value) -> ListingEvent {
    serde_json::from_value(value).unwrap_or_else(|e| panic!("test event: {e}"))
}

fn price_changed(on: NaiveDate, hour: u32, price: i64) -> ListingEvent {
    event(json!({"EventType": "ListingPriceChanged", "Data": {
        "ChangeType": "Price Change", "PreviousListPrice": 1, "ListPrice": price,
        "PriceChangeTimestamp": format!("{on}T{hour:02}:00:00Z")}}))
}

fn status_changed(on: NaiveDate, from: &str, to: &str) -> ListingEvent {
    let kind = if to == "Active" { "Back On Market" } else { to };
    let mut data = json!({"ChangeType": kind, "PreviousStandardStatus": from,
        "StandardStatus": to, "StatusChangeTimestamp": format!("{on}T12:00:00Z")});
    if to == "Closed" {
        data["CloseDate"] = json!(on.to_string());
        data["ClosePrice"] = json!(400_000);
    }
    event(json!({"EventType": "ListingStatusChanged", "Data": data}))
}

/// Folding a day's price changes into one step changes no figure: every metric of every
/// week and month equals the one computed from a timeline with a step per change (the
/// rule before the folding, written out here apart), over pseudo-random histories with
/// several changes a day, back-dated changes, spells off and on the market, and a close.
#[test]
fn folding_a_days_price_changes_changes_no_metric() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |bound: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % bound
    };
    let statuses = [
        "Active",
        "Active Under Contract",
        "Pending",
        "Withdrawn",
        "Hold",
    ];
    for listing in 0..200 {
        let created = event(json!({"EventType": "ListingCreated", "Data": {
            "ListingKey": format!("l{listing}"), "StandardStatus": "Active",
            "PropertyType": "Residential", "ListPrice": 500_000,
            "OriginalListPrice": 500_000, "ListingContractDate": day(0).to_string(),
            "OnMarketDate": day(0).to_string(), "City": "Springfield",
            "OriginalEntryTimestamp": format!("{}T08:00:00Z", day(0)),
            "LivingArea": 1500}}));
        let ListingEvent::ListingCreated(created) = created else {
            panic!("not a creation")
        };
        let mut folded = MarketFacts::created(&created);
        let mut reference = folded.clone();
        let mut today = day(0);
        let mut status = "Active";
        for _ in 0..next(60) {
            today = today + chrono::Days::new(next(3));
            // Now and then a change back-dated a few days (clamped to the last step).
            let on = today - chrono::Days::new(if next(8) == 0 { next(4) } else { 0 });
            if next(5) == 0 {
                let to = statuses[usize::try_from(next(5)).unwrap_or(0)];
                if to != status {
                    let change = status_changed(on, status, to);
                    folded.apply(&change);
                    reference.apply(&change);
                    status = to;
                }
            } else {
                // Prices repeat now and then: a change to the same price counts nothing.
                let price = 450_000 + 10_000 * i64::try_from(next(5)).unwrap_or(0);
                let change = price_changed(on, u32::try_from(next(24)).unwrap_or(0), price);
                folded.apply(&change);
                let date = reference.clamp(on);
                let status = reference.status();
                reference.timeline.push(Step {
                    date,
                    status,
                    price: Decimal::from(price),
                    changes: None,
                });
            }
        }
        if next(3) == 0 {
            let close = status_changed(today, status, "Closed");
            folded.apply(&close);
            reference.apply(&close);
        }
        for grain in Grain::ALL {
            for until in [today, today + chrono::Days::new(40)] {
                assert_eq!(
                    compute([&folded], grain, day(0), until),
                    compute([&reference], grain, day(0), until),
                    "listing {listing}, {grain:?} until {until}: {folded:?}"
                );
            }
        }
        assert!(folded.timeline.len() <= reference.timeline.len());
    }
}

/// A listing repriced all day long keeps one step for the day; a status change still
/// starts a step of its own.
#[test]
fn a_days_price_changes_make_one_step() {
    let created = event(json!({"EventType": "ListingCreated", "Data": {
        "ListingKey": "k", "StandardStatus": "Active", "PropertyType": "Residential",
        "ListPrice": 500_000, "OriginalListPrice": 500_000,
        "ListingContractDate": day(0).to_string(), "OnMarketDate": day(0).to_string(),
        "OriginalEntryTimestamp": format!("{}T08:00:00Z", day(0))}}));
    let ListingEvent::ListingCreated(created) = created else {
        panic!("not a creation")
    };
    let mut facts = MarketFacts::created(&created);
    for (hour, price) in [(9, 490_000), (10, 480_000), (11, 480_000), (12, 470_000)] {
        facts.apply(&price_changed(day(1), hour, price));
    }
    assert_eq!(facts.timeline.len(), 2);
    assert_eq!(facts.timeline[1].changes, Some(3));
    assert_eq!(facts.price(), Decimal::from(470_000));
    facts.apply(&status_changed(day(1), "Active", "Pending"));
    facts.apply(&price_changed(day(1), 14, 460_000));
    assert_eq!(facts.timeline.len(), 4);
    assert_eq!(facts.status(), StandardStatus::Pending);
}
