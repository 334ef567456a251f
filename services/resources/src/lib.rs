//! The listing as the HTTP API represents it: what the command API answers and the query
//! API serves (`ListingResource`), built from the aggregate's [`ListingState`].
//!
//! The aggregate's state is also its snapshot and the read model's stored row; this type
//! is the public contract (its serde form and its OpenAPI schema). A change to the state
//! changes what is stored; only a change here changes what callers receive, and the
//! mapping below is where the two meet.
//!
//! What a reader may not see is left out by type: private fields unless the reader is the
//! listing's agent or an administrator ([`Audience`]), and media URLs that are not safe to
//! follow for everyone (`null`, as `keh_events::public` decides for every public surface).

pub mod paths;

use chrono::{DateTime, NaiveDate, Utc};
use keh_events::ListingKey;
use keh_events::listing::{ListingDetails, Text2k};
use keh_events::public::is_servable_media_url;
use keh_events::reso::{
    MediaCategory, OpenHouseType, Price, PropertyType, Remarks, ShortText, StandardStatus,
};
use keh_listing::{ListingState, Media, OpenHouse, OpenHouseStatus};
use serde::Serialize;

/// Who a listing is represented for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// Anyone: no private fields.
    Public,
    /// The listing's agent (or office) and administrators: private fields too.
    Private,
}

impl Audience {
    /// The audience a reader is for the listing whose state is `state`, given whether it may
    /// see the private fields of a listing of that agent and office
    /// (`keh_auth::Caller::may_see_private`).
    pub fn of(
        state: &ListingState,
        may_see_private: impl FnOnce(Option<&str>, Option<&str>) -> bool,
    ) -> Self {
        let details = &state.details;
        if may_see_private(
            details.list_agent_key.as_ref().map(|k| k.as_str()),
            details.list_office_key.as_ref().map(|k| k.as_str()),
        ) {
            Self::Private
        } else {
            Self::Public
        }
    }
}

/// A listing, in RESO names. `Version` is the number of events applied; it is also the
/// listing's `ETag` and what `If-Match` takes back.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "PascalCase")]
#[schemars(rename = "Listing")]
pub struct ListingResource {
    pub listing_key: ListingKey,
    pub version: u64,
    pub standard_status: StandardStatus,
    pub property_type: PropertyType,
    pub list_price: Price,
    pub original_list_price: Price,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_list_price: Option<Price>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_price: Option<Price>,
    pub listing_contract_date: NaiveDate,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_market_date: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purchase_contract_date: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_date: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub off_market_date: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withdrawn_date: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancellation_date: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_agent_key: Option<ShortText>,
    pub original_entry_timestamp: DateTime<Utc>,
    /// Effective time of the latest change of any kind.
    pub modification_timestamp: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_change_timestamp: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_change_timestamp: Option<DateTime<Utc>>,
    /// The descriptive fields; `PrivateRemarks` only for the listing's agent and
    /// administrators.
    #[serde(flatten)]
    pub details: ListingDetails,
    /// Photos and documents, first shown first.
    pub media: Vec<MediaResource>,
    pub open_houses: Vec<OpenHouseResource>,
}

/// A photo or document of a listing.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "PascalCase")]
#[schemars(rename = "Media")]
pub struct MediaResource {
    pub media_key: ShortText,
    /// `null` when the stored URL is not safe to follow (stored before URLs were checked).
    #[serde(rename = "MediaURL")]
    pub media_url: Option<Text2k>,
    pub media_category: MediaCategory,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub short_description: Option<ShortText>,
    /// 0-based position.
    pub order: u32,
}

/// An open house of a listing.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "PascalCase")]
#[schemars(rename = "OpenHouse")]
pub struct OpenHouseResource {
    pub open_house_key: ShortText,
    pub open_house_date: NaiveDate,
    pub open_house_start_time: DateTime<Utc>,
    pub open_house_end_time: DateTime<Utc>,
    pub open_house_type: OpenHouseType,
    pub open_house_status: OpenHouseStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_house_remarks: Option<Remarks>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub showing_agent_key: Option<ShortText>,
}

impl ListingResource {
    /// `state` as `audience` may see it.
    pub fn new(state: ListingState, audience: Audience) -> Self {
        let details = match audience {
            Audience::Private => state.details,
            Audience::Public => state.details.without_private(),
        };
        Self {
            listing_key: state.listing_key,
            version: state.version,
            standard_status: state.standard_status,
            property_type: state.property_type,
            list_price: state.list_price,
            original_list_price: state.original_list_price,
            previous_list_price: state.previous_list_price,
            close_price: state.close_price,
            listing_contract_date: state.listing_contract_date,
            on_market_date: state.on_market_date,
            purchase_contract_date: state.purchase_contract_date,
            close_date: state.close_date,
            off_market_date: state.off_market_date,
            withdrawn_date: state.withdrawn_date,
            cancellation_date: state.cancellation_date,
            buyer_agent_key: state.buyer_agent_key,
            original_entry_timestamp: state.original_entry_timestamp,
            modification_timestamp: state.modification_timestamp,
            price_change_timestamp: state.price_change_timestamp,
            status_change_timestamp: state.status_change_timestamp,
            details,
            media: state.media.into_iter().map(MediaResource::from).collect(),
            open_houses: state
                .open_houses
                .into_iter()
                .map(OpenHouseResource::from)
                .collect(),
        }
    }
}

impl From<Media> for MediaResource {
    fn from(media: Media) -> Self {
        Self {
            media_key: media.media_key,
            media_url: Some(media.media_url).filter(|url| is_servable_media_url(url.as_str())),
            media_category: media.media_category,
            short_description: media.short_description,
            order: media.order,
        }
    }
}

impl From<OpenHouse> for OpenHouseResource {
    fn from(house: OpenHouse) -> Self {
        Self {
            open_house_key: house.open_house_key,
            open_house_date: house.open_house_date,
            open_house_start_time: house.open_house_start_time,
            open_house_end_time: house.open_house_end_time,
            open_house_type: house.open_house_type,
            open_house_status: house.open_house_status,
            open_house_remarks: house.open_house_remarks,
            showing_agent_key: house.showing_agent_key,
        }
    }
}

#[cfg(test)]
mod tests;
