//! Per-listing market facts: what the market metrics need to know about one listing, folded
//! from its events in sequence order.
//!
//! A listing is reduced to its attributes (property type, area, living area), its key dates
//! and prices, and a *timeline*: the status and list price after each status or price change,
//! dated by the event's effective date (law 13). Dates in the timeline never go backwards:
//! a change back-dated before an earlier change of the same listing takes effect on the
//! earlier change's date, so the timeline stays a well-formed sequence of spells.

use chrono::NaiveDate;
use keh_events::listing::{ListingCreated, ListingEvent, ListingStatusChanged};
use keh_events::reso::{LivingAreaUnits, StandardStatus};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Square metres in a square foot (exact: a foot is 0.3048 m).
pub const SQUARE_METRES_PER_SQUARE_FOOT: Decimal = Decimal::from_parts(9_290_304, 0, 0, false, 8);

/// One step of the timeline: the state after a status or price change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub date: NaiveDate,
    pub status: StandardStatus,
    pub price: Decimal,
    /// On a step of price changes only: how many of them changed the price. Price changes
    /// of one day after such a step are folded into it (the metrics see a day's last price
    /// and count its changes), so a listing repriced all day long keeps a short timeline.
    /// `None` on status steps (never folded into) and on steps stored before the folding:
    /// one change if the price differs from the previous step's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<u32>,
}

impl Step {
    /// How many price changes this step stands for (`previous`: the step before it).
    pub fn price_changes(&self, previous: &Self) -> u32 {
        self.changes
            .unwrap_or_else(|| u32::from(self.price != previous.price))
    }
}

/// What the market metrics know about one listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketFacts {
    pub property_type: String,
    pub city: Option<String>,
    pub postal_code: Option<String>,
    pub subdivision: Option<String>,
    pub living_area: Option<Decimal>,
    pub living_area_units: Option<LivingAreaUnits>,
    pub listing_contract_date: NaiveDate,
    /// First day on the market (never reset by a return to the market).
    pub on_market_date: Option<NaiveDate>,
    pub original_list_price: Decimal,
    pub close_price: Option<Decimal>,
    pub close_date: Option<NaiveDate>,
    /// Each time the listing went under contract (into Active Under Contract or Pending from
    /// a status that is neither), its `PurchaseContractDate`.
    pub contracts: Vec<NaiveDate>,
    /// The first time it went under contract or off the market (days on market end there).
    pub first_exit_date: Option<NaiveDate>,
    pub timeline: Vec<Step>,
}

/// Active or Active Under Contract: what the metrics call "active".
pub const fn is_active(status: StandardStatus) -> bool {
    matches!(
        status,
        StandardStatus::Active | StandardStatus::ActiveUnderContract
    )
}

const fn is_under_contract(status: StandardStatus) -> bool {
    matches!(
        status,
        StandardStatus::ActiveUnderContract | StandardStatus::Pending
    )
}

const fn leaves_market(status: StandardStatus) -> bool {
    matches!(
        status,
        StandardStatus::Withdrawn
            | StandardStatus::Expired
            | StandardStatus::Canceled
            | StandardStatus::Hold
            | StandardStatus::Closed
    )
}

fn square_feet(area: Option<Decimal>, units: Option<LivingAreaUnits>) -> Option<Decimal> {
    let area = area.filter(|a| *a > Decimal::ZERO)?;
    match units {
        Some(LivingAreaUnits::SquareMeters) => area.checked_div(SQUARE_METRES_PER_SQUARE_FOOT),
        _ => Some(area),
    }
}

impl MarketFacts {
    /// The facts of a new listing.
    pub fn created(e: &ListingCreated) -> Self {
        let d = &e.details;
        let price = e.list_price.get();
        let (date, status) = match e.on_market_date {
            Some(on_market) if is_active(e.standard_status) => (on_market, e.standard_status),
            _ => (e.listing_contract_date, e.standard_status),
        };
        Self {
            property_type: e.property_type.as_str().to_owned(),
            city: d.city.as_ref().map(|v| v.as_str().to_owned()),
            postal_code: d.postal_code.as_ref().map(|v| v.as_str().to_owned()),
            subdivision: d.subdivision_name.as_ref().map(|v| v.as_str().to_owned()),
            living_area: d.living_area.map(|a| a.get()),
            living_area_units: d.living_area_units,
            listing_contract_date: e.listing_contract_date,
            on_market_date: e.on_market_date,
            original_list_price: e.original_list_price.get(),
            close_price: None,
            close_date: None,
            contracts: Vec::new(),
            first_exit_date: None,
            timeline: vec![Step {
                date,
                status,
                price,
                changes: None,
            }],
        }
    }

    /// Folds one later event in. Returns the earliest date whose metrics it can change, or
    /// `None` when it changes nothing the metrics use.
    pub fn apply(&mut self, event: &ListingEvent) -> Option<NaiveDate> {
        let effective = event.effective_at().date_naive();
        match event {
            // A second creation is never emitted; the caller starts from `created`.
            ListingEvent::ListingCreated(_) => None,
            ListingEvent::ListingDetailsUpdated(e) => {
                let c = &e.changes;
                let mut touched = false;
                let mut set =
                    |slot: &mut Option<String>,
                     change: &Option<Option<keh_events::reso::ShortText>>| {
                        if let Some(value) = change {
                            *slot = value.as_ref().map(|v| v.as_str().to_owned());
                            touched = true;
                        }
                    };
                set(&mut self.city, &c.city);
                set(&mut self.postal_code, &c.postal_code);
                set(&mut self.subdivision, &c.subdivision_name);
                if let Some(area) = c.living_area {
                    self.living_area = area.map(|a| a.get());
                    touched = true;
                }
                if let Some(units) = c.living_area_units {
                    self.living_area_units = units;
                    touched = true;
                }
                if touched {
                    // Attributes apply to the listing's whole history.
                    Some(self.first_date())
                } else {
                    None
                }
            }
            ListingEvent::ListingPriceChanged(e) => {
                Some(self.reprice(effective, e.list_price.get()))
            }
            ListingEvent::ListingStatusChanged(e) => Some(self.change_status(e, effective)),
            ListingEvent::MediaAdded(_)
            | ListingEvent::MediaRemoved(_)
            | ListingEvent::MediaReordered(_)
            | ListingEvent::OpenHouseScheduled(_)
            | ListingEvent::OpenHouseCanceled(_) => None,
        }
    }

    /// Living area in square feet (converted from square metres), when known and positive.
    pub fn living_area_sqft(&self) -> Option<Decimal> {
        square_feet(self.living_area, self.living_area_units)
    }

    fn change_status(&mut self, e: &ListingStatusChanged, effective: NaiveDate) -> NaiveDate {
        let from = self.status();
        let to = e.standard_status;
        let price = self.price();
        // The step's date: a change back-dated before an earlier one counts from the earlier
        // one's date, for every date this change sets.
        let stepped = self.push(effective, to, price);
        let mut earliest = stepped;
        if let Some(date) = e.on_market_date
            && self.on_market_date.is_none()
        {
            let date = date.max(stepped);
            self.on_market_date = Some(date);
            earliest = earliest.min(date);
        }
        let contract_date = e.purchase_contract_date.unwrap_or(stepped);
        if is_under_contract(to) && !is_under_contract(from) {
            self.contracts.push(contract_date);
            earliest = earliest.min(contract_date);
        }
        if self.first_exit_date.is_none() && (is_under_contract(to) || leaves_market(to)) {
            let exit = if is_under_contract(to) {
                contract_date
            } else {
                stepped
            };
            self.first_exit_date = Some(exit);
            earliest = earliest.min(exit);
        }
        if to == StandardStatus::Closed {
            self.close_price = e.close_price.map(|p| p.get());
            self.close_date = e.close_date;
            if let Some(date) = e.close_date {
                earliest = earliest.min(date);
            }
        }
        earliest
    }

    /// Appends a status step; its date is clamped so that the timeline never goes backwards.
    fn push(&mut self, date: NaiveDate, status: StandardStatus, price: Decimal) -> NaiveDate {
        let date = self.clamp(date);
        self.timeline.push(Step {
            date,
            status,
            price,
            changes: None,
        });
        date
    }

    /// A price change: folded into the last step when that is a step of price changes of
    /// the same day (the status, every spell's first step and the day's last price stay as
    /// they were, the count of changes grows), else appended as a step of its own.
    fn reprice(&mut self, date: NaiveDate, price: Decimal) -> NaiveDate {
        let date = self.clamp(date);
        let status = self.status();
        match self.timeline.last_mut() {
            Some(last) if last.date == date && last.changes.is_some() => {
                let changed = u32::from(price != last.price);
                last.changes = last.changes.map(|n| n.saturating_add(changed));
                last.price = price;
            }
            last => {
                let changed = last.is_none_or(|l| price != l.price);
                self.timeline.push(Step {
                    date,
                    status,
                    price,
                    changes: Some(u32::from(changed)),
                });
            }
        }
        date
    }

    /// `date`, or the last step's date if that is later: the timeline never goes backwards.
    fn clamp(&self, date: NaiveDate) -> NaiveDate {
        self.timeline
            .last()
            .map_or(date, |last| date.max(last.date))
    }

    pub fn status(&self) -> StandardStatus {
        self.timeline
            .last()
            .map_or(StandardStatus::Incomplete, |s| s.status)
    }

    pub fn price(&self) -> Decimal {
        self.timeline
            .last()
            .map_or(self.original_list_price, |s| s.price)
    }

    /// The first date anything about this listing happened.
    pub fn first_date(&self) -> NaiveDate {
        self.timeline
            .first()
            .map_or(self.listing_contract_date, |s| s.date)
            .min(self.listing_contract_date)
            .min(self.on_market_date.unwrap_or(self.listing_contract_date))
    }

    /// The last date that matters to the metrics, or `None` while the listing is active (it
    /// counts in every period until it leaves).
    pub fn last_date(&self) -> Option<NaiveDate> {
        if is_active(self.status()) {
            return None;
        }
        let mut last = self.first_date();
        for date in self
            .timeline
            .iter()
            .map(|s| s.date)
            .chain(self.contracts.iter().copied())
            .chain(self.close_date)
            .chain(self.first_exit_date)
            .chain(self.on_market_date)
        {
            last = last.max(date);
        }
        Some(last)
    }

    /// The areas this listing belongs to, as `(kind, name)`.
    pub fn areas(&self) -> Vec<(AreaKind, String)> {
        let mut areas = vec![(AreaKind::Market, MARKET.to_owned())];
        for (kind, value) in [
            (AreaKind::City, &self.city),
            (AreaKind::PostalCode, &self.postal_code),
            (AreaKind::Subdivision, &self.subdivision),
        ] {
            if let Some(value) = value {
                areas.push((kind, value.clone()));
            }
        }
        areas
    }
}

/// The name of the whole market's area, and of "every property type".
pub const MARKET: &str = "All";
pub const ALL_TYPES: &str = "All";

/// How an area is named.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AreaKind {
    /// Every listing.
    Market,
    City,
    PostalCode,
    Subdivision,
}

impl AreaKind {
    pub const ALL: [Self; 4] = [
        Self::Market,
        Self::City,
        Self::PostalCode,
        Self::Subdivision,
    ];

    /// The API's and the tables' spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Market => "market",
            Self::City => "city",
            Self::PostalCode => "postal-code",
            Self::Subdivision => "subdivision",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == value)
    }

    /// The `listing_facts` column holding this kind's area (none for the whole market).
    pub const fn column(self) -> Option<&'static str> {
        match self {
            Self::Market => None,
            Self::City => Some("city"),
            Self::PostalCode => Some("postal_code"),
            Self::Subdivision => Some("subdivision"),
        }
    }
}

#[cfg(test)]
mod tests {
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
}
