//! The Listing aggregate (cqrs-es): `handle` checks the rules and emits events; `apply` only
//! moves state (`state`: the state's types and how each event moves it; `resources`: the
//! rules of media and open houses).

use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use keh_events::listing::{
    DetailsPatch, ListingCreated, ListingDetailsUpdated, ListingEvent, ListingPriceChanged,
    ListingStatusChanged, MediaAdded, MediaRemoved, MediaReordered, OpenHouseCanceled,
    OpenHouseScheduled,
};
use keh_events::reso::{ChangeType, Price, ShortText, StandardStatus};
use serde::{Deserialize, Serialize};

use crate::command::{
    AddMedia, CancelOpenHouse, ChangeStatus, CreateListing, ListingCommand, RemoveMedia,
    ReorderMedia, ScheduleOpenHouse, UpdateDetails,
};
use crate::error::ListingError;
use crate::lifecycle;

mod resources;
mod state;

pub use state::{ListingState, Media, OpenHouse, OpenHouseStatus};

/// Most media items a listing may hold (keeps the aggregate, and every load, bounded).
pub const MAX_MEDIA: usize = 200;
/// Most open houses (scheduled or canceled) a listing may hold.
pub const MAX_OPEN_HOUSES: usize = 200;
/// Longest open house.
const MAX_OPEN_HOUSE_HOURS: i64 = 24;

/// The Listing aggregate: nothing until created, then its state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    state: Option<ListingState>,
}

impl Listing {
    /// The state, if the listing exists.
    pub fn state(&self) -> Option<&ListingState> {
        self.state.as_ref()
    }

    /// The state, if the listing exists, taken out of the aggregate.
    pub fn into_state(self) -> Option<ListingState> {
        self.state
    }

    /// A listing in a known state (e.g. read back from a read model).
    pub fn from_state(state: ListingState) -> Self {
        Self { state: Some(state) }
    }

    /// Number of events applied (0 for a listing that does not exist).
    pub fn version(&self) -> u64 {
        self.state.as_ref().map_or(0, |s| s.version)
    }

    fn existing(&self) -> Result<&ListingState, ListingError> {
        self.state
            .as_ref()
            .ok_or_else(|| ListingError::not_found(None, "no listing has this ListingKey"))
    }

    /// Decides `commands` one after the other on a copy, without storing anything: whether
    /// they would all be accepted, and the resulting listing (a dry run, e.g. for imports).
    pub fn simulate(
        &self,
        commands: impl IntoIterator<Item = ListingCommand>,
    ) -> Result<Self, ListingError> {
        let mut listing = self.clone();
        for command in commands {
            for event in listing.decide(command)? {
                listing.apply_event(event);
            }
        }
        Ok(listing)
    }

    fn decide(&self, command: ListingCommand) -> Result<Vec<ListingEvent>, ListingError> {
        match command {
            ListingCommand::Create(c) => self.create(c),
            ListingCommand::UpdateDetails(c) => self.existing()?.update_details(c),
            ListingCommand::ChangePrice(c) => {
                let state = self.existing()?;
                Ok(state
                    .change_price(c.list_price, c.at)?
                    .into_iter()
                    .collect())
            }
            ListingCommand::ChangeStatus(c) => self.existing()?.change_status(c).map(|e| vec![e]),
            ListingCommand::AddMedia(c) => self.existing()?.add_media(c).map(|e| vec![e]),
            ListingCommand::RemoveMedia(c) => self.existing()?.remove_media(c).map(|e| vec![e]),
            ListingCommand::ReorderMedia(c) => self.existing()?.reorder_media(c),
            ListingCommand::ScheduleOpenHouse(c) => {
                self.existing()?.schedule_open_house(c).map(|e| vec![e])
            }
            ListingCommand::CancelOpenHouse(c) => {
                self.existing()?.cancel_open_house(c).map(|e| vec![e])
            }
        }
    }

    fn create(&self, c: CreateListing) -> Result<Vec<ListingEvent>, ListingError> {
        if self.state.is_some() {
            return Err(ListingError::exists(
                "ListingKey",
                "a listing with this ListingKey already exists",
            ));
        }
        if !lifecycle::INITIAL.contains(&c.standard_status) {
            return Err(ListingError::rule(
                "StandardStatus",
                "initial-status",
                format!(
                    "a new listing starts as Incomplete, Coming Soon or Active, not {}",
                    c.standard_status
                ),
            ));
        }
        check_expiration(c.details.expiration_date, c.listing_contract_date)?;
        let on_market_date = match (c.standard_status, c.on_market_date) {
            (StandardStatus::Active, date) => Some(date.unwrap_or(c.listing_contract_date)),
            (_, None) => None,
            (status, Some(_)) => {
                return Err(ListingError::rule(
                    "OnMarketDate",
                    "field-not-applicable",
                    format!("OnMarketDate is set when the listing goes Active, not while {status}"),
                ));
            }
        };
        if let Some(date) = on_market_date
            && date < c.listing_contract_date
        {
            return Err(before_contract("OnMarketDate"));
        }
        Ok(vec![ListingEvent::ListingCreated(ListingCreated {
            listing_key: c.listing_key,
            standard_status: c.standard_status,
            property_type: c.property_type,
            list_price: c.list_price,
            original_list_price: c.list_price,
            listing_contract_date: c.listing_contract_date,
            on_market_date,
            original_entry_timestamp: c.at,
            details: c.details,
        })])
    }

    /// Moves the state by one event (the same code the aggregate uses, so read models and
    /// the write side can never disagree on what an event means).
    pub fn apply_event(&mut self, event: ListingEvent) {
        if let ListingEvent::ListingCreated(e) = event {
            self.state = Some(ListingState::created(e));
        } else if let Some(state) = self.state.as_mut() {
            state.apply(event);
        }
    }
}

fn before_contract(field: &'static str) -> ListingError {
    ListingError::rule(
        field,
        "before-contract-date",
        format!("{field} must not be before ListingContractDate"),
    )
}

fn check_expiration(
    expiration: Option<NaiveDate>,
    contract: NaiveDate,
) -> Result<(), ListingError> {
    match expiration {
        Some(date) if date < contract => Err(before_contract("ExpirationDate")),
        _ => Ok(()),
    }
}

fn not_applicable(field: &'static str, to: StandardStatus) -> ListingError {
    ListingError::rule(
        field,
        "field-not-applicable",
        format!("{field} does not apply to a change to {to}"),
    )
}

impl ListingState {
    fn refuse_if_deleted(&self) -> Result<(), ListingError> {
        if self.standard_status == StandardStatus::Delete {
            return Err(ListingError::rule(
                "StandardStatus",
                "listing-deleted",
                "the listing is deleted",
            ));
        }
        Ok(())
    }

    fn update_details(&self, c: UpdateDetails) -> Result<Vec<ListingEvent>, ListingError> {
        self.refuse_if_deleted()?;
        let changes: DetailsPatch = self.details.effective_changes(c.patch);
        if let Some(expiration) = &changes.expiration_date {
            check_expiration(*expiration, self.listing_contract_date)?;
        }
        let mut events = Vec::new();
        if !changes.is_empty() {
            events.push(ListingEvent::ListingDetailsUpdated(ListingDetailsUpdated {
                changes,
                modification_timestamp: c.at,
            }));
        }
        if let Some(price) = c.list_price {
            events.extend(self.change_price(price, c.at)?);
        }
        Ok(events)
    }

    fn change_price(
        &self,
        list_price: Price,
        at: DateTime<Utc>,
    ) -> Result<Option<ListingEvent>, ListingError> {
        if list_price == self.list_price {
            return Ok(None);
        }
        if !lifecycle::allows_price_change(self.standard_status) {
            return Err(ListingError::rule(
                "ListPrice",
                "price-change-not-allowed",
                format!(
                    "the list price cannot change while the listing is {}",
                    self.standard_status
                ),
            ));
        }
        Ok(Some(ListingEvent::ListingPriceChanged(
            ListingPriceChanged {
                change_type: ChangeType::PriceChange,
                previous_list_price: self.list_price,
                list_price,
                price_change_timestamp: at,
            },
        )))
    }

    fn change_status(&self, c: ChangeStatus) -> Result<ListingEvent, ListingError> {
        let from = self.standard_status;
        let to = c.standard_status;
        if !lifecycle::is_allowed(from, to) {
            let allowed = lifecycle::allowed_targets(from);
            let allowed = if allowed.is_empty() {
                format!("{from} is terminal")
            } else {
                let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
                format!("from {from} a listing may go to: {}", names.join(", "))
            };
            return Err(ListingError::rule(
                "StandardStatus",
                "transition-not-allowed",
                format!("a listing cannot go from {from} to {to}; {allowed}"),
            ));
        }
        let date = c.at.date_naive();
        if date < self.listing_contract_date {
            return Err(before_contract("StatusChangeTimestamp"));
        }
        let closing = to == StandardStatus::Closed;
        for (present, field) in [
            (c.close_price.is_some(), "ClosePrice"),
            (c.close_date.is_some(), "CloseDate"),
            (c.buyer_agent_key.is_some(), "BuyerAgentKey"),
        ] {
            if present && !closing {
                return Err(not_applicable(field, to));
            }
        }
        let under_contract = matches!(
            to,
            StandardStatus::ActiveUnderContract | StandardStatus::Pending
        );
        if c.purchase_contract_date.is_some() && !(under_contract || closing) {
            return Err(not_applicable("PurchaseContractDate", to));
        }
        if let Some(d) = c.purchase_contract_date
            && d < self.listing_contract_date
        {
            return Err(before_contract("PurchaseContractDate"));
        }
        let mut event = ListingStatusChanged {
            change_type: lifecycle::change_type(from, to),
            previous_standard_status: from,
            standard_status: to,
            status_change_timestamp: c.at,
            on_market_date: None,
            purchase_contract_date: None,
            close_date: None,
            close_price: None,
            buyer_agent_key: None,
            off_market_date: None,
            withdrawn_date: None,
            cancellation_date: None,
        };
        if to == StandardStatus::Active && self.on_market_date.is_none() {
            event.on_market_date = Some(date);
        }
        if under_contract {
            event.purchase_contract_date = Some(c.purchase_contract_date.unwrap_or(date));
        }
        if closing {
            let close_price = c.close_price.ok_or_else(|| {
                ListingError::rule(
                    "ClosePrice",
                    "required",
                    "a Closed listing needs a ClosePrice greater than 0",
                )
            })?;
            let close_date = c.close_date.ok_or_else(|| {
                ListingError::rule(
                    "CloseDate",
                    "required",
                    "a Closed listing needs a CloseDate",
                )
            })?;
            if close_date < self.listing_contract_date {
                return Err(before_contract("CloseDate"));
            }
            event.close_price = Some(close_price);
            event.close_date = Some(close_date);
            event.buyer_agent_key = c.buyer_agent_key;
            if self.purchase_contract_date.is_none() {
                event.purchase_contract_date = c.purchase_contract_date;
            }
        }
        if lifecycle::leaves_market(to) && self.off_market_date.is_none() {
            event.off_market_date = Some(date);
        }
        match to {
            StandardStatus::Withdrawn => event.withdrawn_date = Some(date),
            StandardStatus::Canceled => event.cancellation_date = Some(date),
            _ => {}
        }
        Ok(ListingEvent::ListingStatusChanged(event))
    }
}

impl Aggregate for Listing {
    const TYPE: &'static str = "Listing";
    type Command = ListingCommand;
    type Event = ListingEvent;
    type Error = ListingError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.apply_event(event);
    }
}

/// Applies `events` to a fresh listing (rebuilds state, e.g. as of a version).
pub fn replay(events: impl IntoIterator<Item = ListingEvent>) -> Listing {
    let mut listing = Listing::default();
    for event in events {
        listing.apply_event(event);
    }
    listing
}

#[cfg(test)]
mod tests;
