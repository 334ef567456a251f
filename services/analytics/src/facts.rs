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
mod tests;
