//! Unit tests of `seed`.

use super::*;

fn small() -> SeedPlan {
    SeedPlan {
        listings: 300,
        months: 24,
        seed: 7,
        until: Utc.with_ymd_and_hms(2026, 6, 30, 0, 0, 0).unwrap(),
    }
}

#[test]
fn the_plan_is_deterministic_and_never_dated_after_until() {
    let a = plan(small());
    let b = plan(small());
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    let other = plan(SeedPlan { seed: 8, ..small() });
    assert_ne!(format!("{a:?}"), format!("{other:?}"));
    for listing in &a {
        for command in &listing.commands {
            let at = match command {
                ListingCommand::Create(c) => c.at,
                ListingCommand::ChangePrice(c) => c.at,
                ListingCommand::ChangeStatus(c) => c.at,
                _ => continue,
            };
            assert!(at <= small().until, "{at}");
        }
    }
}

#[test]
fn the_market_has_every_kind_of_lifecycle() {
    let listings = plan(small());
    let statuses: Vec<StandardStatus> = listings
        .iter()
        .filter_map(|l| {
            l.commands.iter().rev().find_map(|c| match c {
                ListingCommand::ChangeStatus(s) => Some(s.standard_status),
                _ => None,
            })
        })
        .collect();
    for wanted in [
        StandardStatus::Closed,
        StandardStatus::Withdrawn,
        StandardStatus::Expired,
        StandardStatus::Canceled,
    ] {
        assert!(statuses.contains(&wanted), "no {wanted} listing");
    }
    let back_on_market = listings.iter().any(|l| {
        l.commands.windows(2).any(|w| matches!((&w[0], &w[1]),
            (ListingCommand::ChangeStatus(a), ListingCommand::ChangeStatus(b)) if a.standard_status == StandardStatus::Pending && b.standard_status == StandardStatus::Active))
    });
    assert!(back_on_market);
    assert!(listings.iter().any(|l| {
        l.commands
            .iter()
            .filter(|c| matches!(c, ListingCommand::ChangePrice(_)))
            .count()
            >= 2
    }));
    let cities: std::collections::HashSet<_> = listings
        .iter()
        .filter_map(|l| match &l.commands[0] {
            ListingCommand::Create(c) => c.details.city.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(cities.len(), CITIES.len());
}
