//! Given/when/then tests of the Listing aggregate.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use cqrs_es::test::TestFramework;
use keh_events::ListingKey;
use keh_events::listing::{
    DetailsPatch, ListingCreated, ListingDetails, ListingEvent, ListingPriceChanged,
    ListingStatusChanged, MediaAdded,
};
use keh_events::reso::{
    ChangeType, MediaCategory, OpenHouseType, Price, PropertyType, ShortText, StandardStatus,
};
use rust_decimal::Decimal;

use super::*;
use crate::command::*;
use crate::error::ErrorKind;

type Framework = TestFramework<Listing>;

fn text(s: &str) -> ShortText {
    ShortText::new(s).unwrap()
}

fn price(units: i64) -> Price {
    Price::new(Decimal::from(units)).unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn created(status: StandardStatus) -> ListingEvent {
    ListingEvent::ListingCreated(ListingCreated {
        listing_key: ListingKey::new("L-1").unwrap(),
        standard_status: status,
        property_type: PropertyType::Residential,
        list_price: price(500_000),
        original_list_price: price(500_000),
        listing_contract_date: day("2026-01-10"),
        on_market_date: (status == StandardStatus::Active).then(|| day("2026-01-10")),
        original_entry_timestamp: at("2026-01-10T09:00:00Z"),
        details: ListingDetails::default(),
    })
}

/// A history that leaves the listing in `status` (events are facts: no rule applies).
fn history_in(status: StandardStatus) -> Vec<ListingEvent> {
    let mut events = vec![created(StandardStatus::Incomplete)];
    if status != StandardStatus::Incomplete {
        events.push(ListingEvent::ListingStatusChanged(ListingStatusChanged {
            change_type: ChangeType::NewListing,
            previous_standard_status: StandardStatus::Incomplete,
            standard_status: status,
            status_change_timestamp: at("2026-01-11T09:00:00Z"),
            on_market_date: Some(day("2026-01-11")),
            purchase_contract_date: None,
            close_date: None,
            close_price: None,
            buyer_agent_key: None,
            off_market_date: None,
            withdrawn_date: None,
            cancellation_date: None,
        }));
    }
    events
}

fn change_to(status: StandardStatus) -> ChangeStatus {
    let closing = status == StandardStatus::Closed;
    ChangeStatus {
        standard_status: status,
        purchase_contract_date: None,
        close_date: closing.then(|| day("2026-02-20")),
        close_price: closing.then(|| price(510_000)),
        buyer_agent_key: None,
        at: at("2026-02-20T12:00:00Z"),
    }
}

fn error_of(given: Vec<ListingEvent>, command: ListingCommand) -> ListingError {
    Framework::with(())
        .given(given)
        .when(command)
        .inspect_result()
        .unwrap_err()
}

fn events_of(given: Vec<ListingEvent>, command: ListingCommand) -> Vec<ListingEvent> {
    Framework::with(())
        .given(given)
        .when(command)
        .inspect_result()
        .unwrap()
}

/// The lifecycle table exactly as the design brief states it, written independently of
/// `lifecycle.rs` so that a mistake there shows up here.
const BRIEF_TABLE: &[(&str, &[&str])] = &[
    ("Incomplete", &["Coming Soon", "Active", "Delete"]),
    (
        "Coming Soon",
        &["Active", "Withdrawn", "Hold", "Canceled", "Expired"],
    ),
    (
        "Active",
        &[
            "Active Under Contract",
            "Pending",
            "Withdrawn",
            "Hold",
            "Canceled",
            "Expired",
        ],
    ),
    (
        "Active Under Contract",
        &["Active", "Pending", "Closed", "Withdrawn", "Canceled"],
    ),
    ("Pending", &["Active", "Closed", "Canceled"]),
    ("Hold", &["Active", "Withdrawn", "Canceled", "Expired"]),
    ("Withdrawn", &["Active", "Canceled", "Expired"]),
    ("Expired", &["Active", "Canceled"]),
    ("Closed", &[]),
    ("Canceled", &[]),
    ("Delete", &[]),
];

#[test]
fn every_allowed_and_every_refused_transition() {
    let mut allowed_seen = 0;
    let mut refused_seen = 0;
    for &from in StandardStatus::ALL {
        let (_, targets) = BRIEF_TABLE
            .iter()
            .find(|(name, _)| *name == from.as_str())
            .unwrap();
        for &to in StandardStatus::ALL {
            let result = Framework::with(())
                .given(history_in(from))
                .when(ListingCommand::ChangeStatus(change_to(to)))
                .inspect_result();
            if targets.contains(&to.as_str()) {
                allowed_seen += 1;
                let events =
                    result.unwrap_or_else(|e| panic!("{from} -> {to} must be allowed: {e}"));
                let [ListingEvent::ListingStatusChanged(e)] = events.as_slice() else {
                    panic!("{from} -> {to}: one status event expected, got {events:?}");
                };
                assert_eq!((e.previous_standard_status, e.standard_status), (from, to));
                assert_eq!(e.change_type, lifecycle::change_type(from, to));
            } else {
                refused_seen += 1;
                let error = result.expect_err(&format!("{from} -> {to} must be refused"));
                assert_eq!(error.kind, ErrorKind::Rule);
                assert_eq!(error.rule, "transition-not-allowed", "{from} -> {to}");
                assert_eq!(error.field, Some("StandardStatus"));
            }
        }
    }
    assert_eq!(allowed_seen, 31);
    assert_eq!(refused_seen, 11 * 11 - 31);
}

#[test]
fn change_types_follow_reso_vocabulary() {
    use StandardStatus as S;
    assert_eq!(
        lifecycle::change_type(S::ComingSoon, S::Active),
        ChangeType::NewListing
    );
    assert_eq!(
        lifecycle::change_type(S::Pending, S::Active),
        ChangeType::BackOnMarket
    );
    assert_eq!(
        lifecycle::change_type(S::Expired, S::Active),
        ChangeType::BackOnMarket
    );
    assert_eq!(
        lifecycle::change_type(S::Incomplete, S::Delete),
        ChangeType::Deleted
    );
}

#[test]
fn create_emits_created_with_original_price_and_on_market_date() {
    let command = CreateListing {
        listing_key: ListingKey::new("L-1").unwrap(),
        standard_status: StandardStatus::Active,
        property_type: PropertyType::Residential,
        list_price: price(500_000),
        listing_contract_date: day("2026-01-10"),
        on_market_date: None,
        details: ListingDetails::default(),
        at: at("2026-01-10T09:00:00Z"),
    };
    Framework::with(())
        .given_no_previous_events()
        .when(ListingCommand::Create(command.clone()))
        .then_expect_events(vec![created(StandardStatus::Active)]);

    let again = error_of(
        vec![created(StandardStatus::Active)],
        ListingCommand::Create(command.clone()),
    );
    assert_eq!(again.kind, ErrorKind::AlreadyExists);

    let closed = CreateListing {
        standard_status: StandardStatus::Closed,
        ..command.clone()
    };
    assert_eq!(
        error_of(vec![], ListingCommand::Create(closed)).rule,
        "initial-status"
    );

    let early = CreateListing {
        on_market_date: Some(day("2026-01-01")),
        ..command.clone()
    };
    assert_eq!(
        error_of(vec![], ListingCommand::Create(early)).rule,
        "before-contract-date"
    );

    let expiring = CreateListing {
        details: ListingDetails {
            expiration_date: Some(day("2025-12-31")),
            ..ListingDetails::default()
        },
        ..command
    };
    let error = error_of(vec![], ListingCommand::Create(expiring));
    assert_eq!(
        (error.field, error.rule),
        (Some("ExpirationDate"), "before-contract-date")
    );
}

#[test]
fn commands_on_a_missing_listing_are_not_found() {
    let error = error_of(
        vec![],
        ListingCommand::ChangePrice(ChangePrice {
            list_price: price(1),
            at: at("2026-02-01T00:00:00Z"),
        }),
    );
    assert_eq!(error.kind, ErrorKind::NotFound);
}

#[test]
fn price_changes_carry_old_and_new_and_are_refused_when_terminal_or_expired() {
    let change = ChangePrice {
        list_price: price(480_000),
        at: at("2026-02-01T00:00:00Z"),
    };
    Framework::with(())
        .given(history_in(StandardStatus::Active))
        .when(ListingCommand::ChangePrice(change.clone()))
        .then_expect_events(vec![ListingEvent::ListingPriceChanged(
            ListingPriceChanged {
                change_type: ChangeType::PriceChange,
                previous_list_price: price(500_000),
                list_price: price(480_000),
                price_change_timestamp: change.at,
            },
        )]);
    // The same price again is a no-op, not an event.
    assert!(
        events_of(
            history_in(StandardStatus::Active),
            ListingCommand::ChangePrice(ChangePrice {
                list_price: price(500_000),
                ..change
            })
        )
        .is_empty()
    );
    for status in [
        StandardStatus::Closed,
        StandardStatus::Canceled,
        StandardStatus::Delete,
        StandardStatus::Expired,
    ] {
        let error = error_of(
            history_in(status),
            ListingCommand::ChangePrice(change.clone()),
        );
        assert_eq!(
            (error.field, error.rule),
            (Some("ListPrice"), "price-change-not-allowed"),
            "{status}"
        );
    }
    for status in [
        StandardStatus::Incomplete,
        StandardStatus::ComingSoon,
        StandardStatus::Pending,
        StandardStatus::Hold,
        StandardStatus::Withdrawn,
    ] {
        assert_eq!(
            events_of(
                history_in(status),
                ListingCommand::ChangePrice(change.clone())
            )
            .len(),
            1,
            "{status}"
        );
    }
}

#[test]
fn closing_needs_price_and_date_not_before_contract() {
    let given = history_in(StandardStatus::Pending);
    let no_price = ChangeStatus {
        close_price: None,
        ..change_to(StandardStatus::Closed)
    };
    let error = error_of(given.clone(), ListingCommand::ChangeStatus(no_price));
    assert_eq!((error.field, error.rule), (Some("ClosePrice"), "required"));
    let no_date = ChangeStatus {
        close_date: None,
        ..change_to(StandardStatus::Closed)
    };
    assert_eq!(
        error_of(given.clone(), ListingCommand::ChangeStatus(no_date)).field,
        Some("CloseDate")
    );
    let early = ChangeStatus {
        close_date: Some(day("2026-01-09")),
        ..change_to(StandardStatus::Closed)
    };
    let error = error_of(given.clone(), ListingCommand::ChangeStatus(early));
    assert_eq!(
        (error.field, error.rule),
        (Some("CloseDate"), "before-contract-date")
    );

    let events = events_of(
        given,
        ListingCommand::ChangeStatus(change_to(StandardStatus::Closed)),
    );
    let ListingEvent::ListingStatusChanged(e) = &events[0] else {
        panic!()
    };
    assert_eq!(
        (e.close_price, e.close_date),
        (Some(price(510_000)), Some(day("2026-02-20")))
    );
}

#[test]
fn fields_that_do_not_apply_to_a_transition_are_refused() {
    let with_price = ChangeStatus {
        close_price: Some(price(1)),
        ..change_to(StandardStatus::Withdrawn)
    };
    let error = error_of(
        history_in(StandardStatus::Active),
        ListingCommand::ChangeStatus(with_price),
    );
    assert_eq!(
        (error.field, error.rule),
        (Some("ClosePrice"), "field-not-applicable")
    );
    let with_contract = ChangeStatus {
        purchase_contract_date: Some(day("2026-02-01")),
        ..change_to(StandardStatus::Hold)
    };
    assert_eq!(
        error_of(
            history_in(StandardStatus::Active),
            ListingCommand::ChangeStatus(with_contract)
        )
        .field,
        Some("PurchaseContractDate")
    );
}

#[test]
fn transitions_set_their_dates() {
    let pending = events_of(
        history_in(StandardStatus::Active),
        ListingCommand::ChangeStatus(change_to(StandardStatus::Pending)),
    );
    let ListingEvent::ListingStatusChanged(e) = &pending[0] else {
        panic!()
    };
    assert_eq!(e.purchase_contract_date, Some(day("2026-02-20")));
    let withdrawn = events_of(
        history_in(StandardStatus::Active),
        ListingCommand::ChangeStatus(change_to(StandardStatus::Withdrawn)),
    );
    let ListingEvent::ListingStatusChanged(e) = &withdrawn[0] else {
        panic!()
    };
    assert_eq!(
        (e.withdrawn_date, e.off_market_date),
        (Some(day("2026-02-20")), Some(day("2026-02-20")))
    );
    let live = events_of(
        history_in(StandardStatus::ComingSoon),
        ListingCommand::ChangeStatus(change_to(StandardStatus::Active)),
    );
    let ListingEvent::ListingStatusChanged(e) = &live[0] else {
        panic!()
    };
    assert_eq!(e.change_type, ChangeType::NewListing);

    // Back on market keeps the first on-market date (days on market do not reset).
    let mut given = history_in(StandardStatus::Pending);
    let mut listing = replay(given.clone());
    let first_on_market = listing.state().unwrap().on_market_date;
    let back = events_of(
        given.clone(),
        ListingCommand::ChangeStatus(change_to(StandardStatus::Active)),
    );
    given.extend(back.clone());
    listing = replay(given);
    let ListingEvent::ListingStatusChanged(e) = &back[0] else {
        panic!()
    };
    assert_eq!(
        (e.change_type, e.on_market_date),
        (ChangeType::BackOnMarket, None)
    );
    assert_eq!(listing.state().unwrap().on_market_date, first_on_market);
    assert_eq!(listing.state().unwrap().purchase_contract_date, None);
}

#[test]
fn status_change_before_contract_date_is_refused() {
    let early = ChangeStatus {
        at: at("2026-01-01T00:00:00Z"),
        ..change_to(StandardStatus::Pending)
    };
    let error = error_of(
        history_in(StandardStatus::Active),
        ListingCommand::ChangeStatus(early),
    );
    assert_eq!(
        (error.field, error.rule),
        (Some("StatusChangeTimestamp"), "before-contract-date")
    );
}

#[test]
fn details_patch_emits_only_real_changes_and_price_change_separately() {
    let patch: DetailsPatch =
        serde_json::from_str(r#"{"City": "Springfield", "BedroomsTotal": null}"#).unwrap();
    let events = events_of(
        history_in(StandardStatus::Active),
        ListingCommand::UpdateDetails(UpdateDetails {
            patch: patch.clone(),
            list_price: Some(price(450_000)),
            at: at("2026-02-01T00:00:00Z"),
        }),
    );
    assert_eq!(events.len(), 2, "{events:?}");
    let ListingEvent::ListingDetailsUpdated(e) = &events[0] else {
        panic!()
    };
    assert_eq!(
        e.changes.field_names(),
        vec!["City"],
        "BedroomsTotal was already empty"
    );
    assert!(matches!(events[1], ListingEvent::ListingPriceChanged(_)));

    let same = events_of(
        history_in(StandardStatus::Active),
        ListingCommand::UpdateDetails(UpdateDetails {
            patch: DetailsPatch::default(),
            list_price: Some(price(500_000)),
            at: at("2026-02-01T00:00:00Z"),
        }),
    );
    assert!(same.is_empty());
    let error = error_of(
        history_in(StandardStatus::Closed),
        ListingCommand::UpdateDetails(UpdateDetails {
            patch,
            list_price: Some(price(450_000)),
            at: at("2026-02-01T00:00:00Z"),
        }),
    );
    assert_eq!(error.rule, "price-change-not-allowed");
}

fn add_media(key: &str, order: Option<u32>) -> ListingCommand {
    ListingCommand::AddMedia(AddMedia {
        media_key: text(key),
        media_url: keh_events::listing::Text2k::new("https://example.com/a.jpg").unwrap(),
        media_category: MediaCategory::Photo,
        short_description: None,
        order,
        at: at("2026-02-01T00:00:00Z"),
    })
}

#[test]
fn media_are_added_ordered_reordered_and_removed() {
    let mut given = history_in(StandardStatus::Active);
    for (key, order) in [("a", None), ("b", None), ("c", Some(0))] {
        let events = events_of(given.clone(), add_media(key, order));
        given.extend(events);
    }
    let order = |events: &[ListingEvent]| -> Vec<String> {
        replay(events.to_vec())
            .state()
            .unwrap()
            .media
            .iter()
            .map(|m| m.media_key.to_string())
            .collect()
    };
    assert_eq!(order(&given), ["c", "a", "b"]);
    assert!(matches!(
        &given.last(),
        Some(ListingEvent::MediaAdded(MediaAdded { order: 0, .. }))
    ));

    assert_eq!(
        error_of(given.clone(), add_media("a", None)).kind,
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        error_of(given.clone(), add_media("d", Some(9))).rule,
        "out-of-range"
    );

    let reorder = |keys: &[&str]| {
        ListingCommand::ReorderMedia(ReorderMedia {
            media_keys: keys.iter().map(|k| text(k)).collect(),
            at: at("2026-02-02T00:00:00Z"),
        })
    };
    assert_eq!(
        error_of(given.clone(), reorder(&["a", "b"])).rule,
        "not-a-permutation"
    );
    assert_eq!(
        error_of(given.clone(), reorder(&["a", "a", "b"])).rule,
        "not-a-permutation"
    );
    assert!(
        events_of(given.clone(), reorder(&["c", "a", "b"])).is_empty(),
        "same order is a no-op"
    );
    given.extend(events_of(given.clone(), reorder(&["b", "c", "a"])));
    assert_eq!(order(&given), ["b", "c", "a"]);

    let remove = |key: &str| {
        ListingCommand::RemoveMedia(RemoveMedia {
            media_key: text(key),
            at: at("2026-02-03T00:00:00Z"),
        })
    };
    given.extend(events_of(given.clone(), remove("c")));
    assert_eq!(order(&given), ["b", "a"]);
    assert_eq!(error_of(given, remove("c")).kind, ErrorKind::NotFound);
}

#[test]
fn media_count_is_bounded() {
    let mut listing = replay(history_in(StandardStatus::Active));
    let mut given = history_in(StandardStatus::Active);
    for i in 0..MAX_MEDIA {
        let ListingCommand::AddMedia(c) = add_media(&format!("m{i}"), None) else {
            unreachable!()
        };
        let event = listing.state().unwrap().add_media(c).unwrap();
        listing.apply_event(event.clone());
        given.push(event);
    }
    assert_eq!(
        error_of(given, add_media("one-more", None)).rule,
        "media-limit"
    );
}

fn open_house(key: &str, hours: i64) -> ListingCommand {
    let start = at("2026-03-01T14:00:00Z");
    ListingCommand::ScheduleOpenHouse(ScheduleOpenHouse {
        open_house_key: text(key),
        open_house_date: day("2026-03-01"),
        open_house_start_time: start,
        open_house_end_time: start + TimeDelta::hours(hours),
        open_house_type: OpenHouseType::Public,
        open_house_remarks: None,
        showing_agent_key: None,
        at: at("2026-02-01T00:00:00Z"),
    })
}

#[test]
fn open_houses_are_scheduled_and_canceled_while_marketed() {
    let mut given = history_in(StandardStatus::Active);
    given.extend(events_of(given.clone(), open_house("oh1", 2)));
    assert_eq!(
        error_of(given.clone(), open_house("oh1", 2)).kind,
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        error_of(given.clone(), open_house("oh2", 0)).rule,
        "end-before-start"
    );
    assert_eq!(
        error_of(given.clone(), open_house("oh2", 25)).rule,
        "too-long"
    );
    assert_eq!(
        error_of(history_in(StandardStatus::Closed), open_house("oh2", 2)).rule,
        "open-house-not-allowed"
    );

    let cancel = |key: &str| {
        ListingCommand::CancelOpenHouse(CancelOpenHouse {
            open_house_key: text(key),
            at: at("2026-02-02T00:00:00Z"),
        })
    };
    assert_eq!(
        error_of(given.clone(), cancel("nope")).kind,
        ErrorKind::NotFound
    );
    given.extend(events_of(given.clone(), cancel("oh1")));
    assert_eq!(
        replay(given.clone()).state().unwrap().open_houses[0].open_house_status,
        OpenHouseStatus::Canceled
    );
    assert_eq!(error_of(given, cancel("oh1")).rule, "already-canceled");
}

#[test]
fn deleted_listings_refuse_changes() {
    let error = error_of(history_in(StandardStatus::Delete), add_media("a", None));
    assert_eq!(error.rule, "listing-deleted");
}

#[test]
fn version_counts_applied_events_and_state_round_trips_as_snapshot() {
    let mut given = history_in(StandardStatus::Active);
    given.extend(events_of(given.clone(), add_media("a", None)));
    let listing = replay(given);
    assert_eq!(listing.version(), 3);
    let json = serde_json::to_value(&listing).unwrap();
    assert_eq!(serde_json::from_value::<Listing>(json).unwrap(), listing);
}
