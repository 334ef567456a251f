//! Commands of the Listing aggregate. Every value here is already well-formed (types parse
//! at the edge); what remains to decide is whether the listing's state allows it.

use chrono::{DateTime, NaiveDate, Utc};
use keh_events::ListingKey;
use keh_events::listing::{DetailsPatch, ListingDetails, Text2k};
use keh_events::reso::{
    MediaCategory, OpenHouseType, Price, PropertyType, Remarks, ShortText, StandardStatus,
};

/// Everything the Listing aggregate can be asked to do.
#[derive(Clone, Debug, PartialEq)]
pub enum ListingCommand {
    Create(CreateListing),
    UpdateDetails(UpdateDetails),
    ChangePrice(ChangePrice),
    ChangeStatus(ChangeStatus),
    AddMedia(AddMedia),
    RemoveMedia(RemoveMedia),
    ReorderMedia(ReorderMedia),
    ScheduleOpenHouse(ScheduleOpenHouse),
    CancelOpenHouse(CancelOpenHouse),
}

#[derive(Clone, Debug, PartialEq)]
pub struct CreateListing {
    pub listing_key: ListingKey,
    pub standard_status: StandardStatus,
    pub property_type: PropertyType,
    pub list_price: Price,
    pub listing_contract_date: NaiveDate,
    /// Only for listings created Active; defaults to `listing_contract_date`.
    pub on_market_date: Option<NaiveDate>,
    pub details: ListingDetails,
    /// Effective time (RESO `OriginalEntryTimestamp`).
    pub at: DateTime<Utc>,
}

/// PATCH of the descriptive fields; a changed `ListPrice` becomes a price change.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateDetails {
    pub patch: DetailsPatch,
    pub list_price: Option<Price>,
    /// Effective time (RESO `ModificationTimestamp`).
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChangePrice {
    pub list_price: Price,
    /// Effective time (RESO `PriceChangeTimestamp`).
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChangeStatus {
    pub standard_status: StandardStatus,
    pub purchase_contract_date: Option<NaiveDate>,
    pub close_date: Option<NaiveDate>,
    pub close_price: Option<Price>,
    pub buyer_agent_key: Option<ShortText>,
    /// Effective time (RESO `StatusChangeTimestamp`).
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AddMedia {
    pub media_key: ShortText,
    pub media_url: Text2k,
    pub media_category: MediaCategory,
    pub short_description: Option<ShortText>,
    /// 0-based position; appended when absent.
    pub order: Option<u32>,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RemoveMedia {
    pub media_key: ShortText,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReorderMedia {
    pub media_keys: Vec<ShortText>,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleOpenHouse {
    pub open_house_key: ShortText,
    pub open_house_date: NaiveDate,
    pub open_house_start_time: DateTime<Utc>,
    pub open_house_end_time: DateTime<Utc>,
    pub open_house_type: OpenHouseType,
    pub open_house_remarks: Option<Remarks>,
    pub showing_agent_key: Option<ShortText>,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CancelOpenHouse {
    pub open_house_key: ShortText,
    pub at: DateTime<Utc>,
}
