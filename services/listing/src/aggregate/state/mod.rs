//! The state of a listing, in RESO names, and how each event moves it (`apply` only moves
//! state; the rules are checked in the parent module before an event exists). The state is
//! also the aggregate's snapshot and the read model's row, so its serde form is stored.

use chrono::{DateTime, NaiveDate, Utc};
use keh_events::ListingKey;
use keh_events::listing::{ListingCreated, ListingDetails, ListingEvent, Text2k};
use keh_events::reso::{
    ChangeType, MediaCategory, OpenHouseType, Price, PropertyType, Remarks, ShortText,
    StandardStatus,
};
use serde::{Deserialize, Serialize};

mod read;

/// A media reference of a listing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Media {
    pub media_key: ShortText,
    #[serde(rename = "MediaURL")]
    pub media_url: Text2k,
    pub media_category: MediaCategory,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_description: Option<ShortText>,
    /// 0-based position.
    pub order: u32,
}

/// RESO `OpenHouseStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum OpenHouseStatus {
    Active,
    Canceled,
}

/// An open house of a listing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "PascalCase")]
pub struct OpenHouse {
    pub open_house_key: ShortText,
    pub open_house_date: NaiveDate,
    pub open_house_start_time: DateTime<Utc>,
    pub open_house_end_time: DateTime<Utc>,
    pub open_house_type: OpenHouseType,
    pub open_house_status: OpenHouseStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_house_remarks: Option<Remarks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub showing_agent_key: Option<ShortText>,
}

/// The full state of a listing, in RESO names. `Version` is the number of events applied.
/// Read back by a reader of its own (`read.rs`: the derived one would pay for `flatten`);
/// a field added here is added there too, or the round-trip test fails.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ListingState {
    pub listing_key: ListingKey,
    pub version: u64,
    pub standard_status: StandardStatus,
    pub property_type: PropertyType,
    pub list_price: Price,
    pub original_list_price: Price,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_list_price: Option<Price>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_price: Option<Price>,
    pub listing_contract_date: NaiveDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_market_date: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchase_contract_date: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_date: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub off_market_date: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn_date: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation_date: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer_agent_key: Option<ShortText>,
    pub original_entry_timestamp: DateTime<Utc>,
    /// Effective time of the latest change of any kind.
    pub modification_timestamp: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_change_timestamp: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_change_timestamp: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub details: ListingDetails,
    pub media: Vec<Media>,
    pub open_houses: Vec<OpenHouse>,
}

impl ListingState {
    pub(super) fn created(e: ListingCreated) -> Self {
        Self {
            listing_key: e.listing_key,
            version: 1,
            standard_status: e.standard_status,
            property_type: e.property_type,
            list_price: e.list_price,
            original_list_price: e.original_list_price,
            previous_list_price: None,
            close_price: None,
            listing_contract_date: e.listing_contract_date,
            on_market_date: e.on_market_date,
            purchase_contract_date: None,
            close_date: None,
            off_market_date: None,
            withdrawn_date: None,
            cancellation_date: None,
            buyer_agent_key: None,
            original_entry_timestamp: e.original_entry_timestamp,
            modification_timestamp: e.original_entry_timestamp,
            price_change_timestamp: None,
            status_change_timestamp: None,
            details: e.details,
            media: Vec::new(),
            open_houses: Vec::new(),
        }
    }

    pub(super) fn apply(&mut self, event: ListingEvent) {
        self.version += 1;
        self.modification_timestamp = event.effective_at();
        match event {
            // Handled by `Listing::apply_event`; a second creation is never emitted.
            ListingEvent::ListingCreated(_) => {}
            ListingEvent::ListingDetailsUpdated(e) => self.details.apply(&e.changes),
            ListingEvent::ListingPriceChanged(e) => {
                self.previous_list_price = Some(e.previous_list_price);
                self.list_price = e.list_price;
                self.price_change_timestamp = Some(e.price_change_timestamp);
            }
            ListingEvent::ListingStatusChanged(e) => {
                if e.change_type == ChangeType::BackOnMarket {
                    // The contract fell through or the listing returns: these no longer hold.
                    self.purchase_contract_date = None;
                    self.off_market_date = None;
                    self.withdrawn_date = None;
                }
                self.standard_status = e.standard_status;
                self.status_change_timestamp = Some(e.status_change_timestamp);
                let set = |slot: &mut Option<NaiveDate>, value: Option<NaiveDate>| {
                    if value.is_some() {
                        *slot = value;
                    }
                };
                set(&mut self.on_market_date, e.on_market_date);
                set(&mut self.purchase_contract_date, e.purchase_contract_date);
                set(&mut self.close_date, e.close_date);
                set(&mut self.off_market_date, e.off_market_date);
                set(&mut self.withdrawn_date, e.withdrawn_date);
                set(&mut self.cancellation_date, e.cancellation_date);
                if e.close_price.is_some() {
                    self.close_price = e.close_price;
                }
                if e.buyer_agent_key.is_some() {
                    self.buyer_agent_key = e.buyer_agent_key;
                }
            }
            ListingEvent::MediaAdded(e) => {
                let media = Media {
                    media_key: e.media_key,
                    media_url: e.media_url,
                    media_category: e.media_category,
                    short_description: e.short_description,
                    order: e.order,
                };
                let at = usize::try_from(e.order)
                    .unwrap_or(usize::MAX)
                    .min(self.media.len());
                self.media.insert(at, media);
                self.renumber_media();
            }
            ListingEvent::MediaRemoved(e) => {
                self.media.retain(|m| m.media_key != e.media_key);
                self.renumber_media();
            }
            ListingEvent::MediaReordered(e) => {
                let mut ordered = Vec::with_capacity(self.media.len());
                for key in &e.media_keys {
                    if let Some(i) = self.media.iter().position(|m| &m.media_key == key) {
                        ordered.push(self.media.remove(i));
                    }
                }
                // Anything the event did not name keeps its relative order at the end.
                ordered.append(&mut self.media);
                self.media = ordered;
                self.renumber_media();
            }
            ListingEvent::OpenHouseScheduled(e) => self.open_houses.push(OpenHouse {
                open_house_key: e.open_house_key,
                open_house_date: e.open_house_date,
                open_house_start_time: e.open_house_start_time,
                open_house_end_time: e.open_house_end_time,
                open_house_type: e.open_house_type,
                open_house_status: OpenHouseStatus::Active,
                open_house_remarks: e.open_house_remarks,
                showing_agent_key: e.showing_agent_key,
            }),
            ListingEvent::OpenHouseCanceled(e) => {
                if let Some(oh) = self
                    .open_houses
                    .iter_mut()
                    .find(|o| o.open_house_key == e.open_house_key)
                {
                    oh.open_house_status = OpenHouseStatus::Canceled;
                }
            }
        }
    }

    pub(super) fn renumber_media(&mut self) {
        for (i, media) in self.media.iter_mut().enumerate() {
            media.order = u32::try_from(i).unwrap_or(u32::MAX);
        }
    }
}
