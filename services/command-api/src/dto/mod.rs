//! Request bodies (RESO names, unknown fields refused) and their conversion into commands.
//!
//! Types parse the values (a `Price` is already positive with two decimals); what is left
//! here are the checks that need the clock or several fields, each reported per field.

use chrono::{DateTime, NaiveDate, Utc};
use keh_events::ListingKey;
use keh_events::listing::{DetailsPatch, ListingDetails, Text2k, double_option};
use keh_events::reso::{
    MediaCategory, OpenHouseType, Price, PropertyType, Remarks, ShortText, StandardStatus,
};
use keh_http::FieldError;
use keh_listing::command::{
    AddMedia, ChangePrice, ChangeStatus, CreateListing, ReorderMedia, ScheduleOpenHouse,
    UpdateDetails,
};
use serde::Deserialize;

mod checks;

use checks::{Checks, business_date, effective, expiration_in_range, min_date, too_old};

macro_rules! define_requests {
    ($($field:ident : $ty:ty = $name:literal),+ $(,)?) => {
        /// `POST /api/v1/listings`.
        #[derive(Debug, Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct CreateListingRequest {
            /// Optional: a system key for imported listings; a UUID is assigned otherwise.
            #[serde(rename = "ListingKey", default)]
            pub listing_key: Option<ShortText>,
            /// Incomplete, Coming Soon or Active (the default).
            #[serde(rename = "StandardStatus", default)]
            pub standard_status: Option<StandardStatus>,
            #[serde(rename = "PropertyType")]
            pub property_type: PropertyType,
            #[serde(rename = "ListPrice")]
            pub list_price: Price,
            /// Defaults to the date of `OriginalEntryTimestamp`.
            #[serde(rename = "ListingContractDate", default)]
            pub listing_contract_date: Option<NaiveDate>,
            #[serde(rename = "OnMarketDate", default)]
            pub on_market_date: Option<NaiveDate>,
            /// Effective time of the creation; defaults to now.
            #[serde(rename = "OriginalEntryTimestamp", default)]
            pub original_entry_timestamp: Option<DateTime<Utc>>,
            $(
                #[serde(rename = $name, default)]
                pub $field: Option<$ty>,
            )+
        }

        impl CreateListingRequest {
            fn take_details(&mut self) -> ListingDetails {
                ListingDetails { $($field: self.$field.take(),)+ }
            }
        }

        /// `PATCH /api/v1/listings/{ListingKey}` (JSON merge-patch: absent = unchanged,
        /// null = cleared).
        #[derive(Debug, Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct PatchListingRequest {
            #[serde(rename = "ListPrice", default, deserialize_with = "double_option")]
            pub list_price: Option<Option<Price>>,
            #[serde(rename = "ModificationTimestamp", default)]
            pub modification_timestamp: Option<DateTime<Utc>>,
            $(
                #[serde(rename = $name, default, deserialize_with = "double_option")]
                pub $field: Option<Option<$ty>>,
            )+
        }

        impl PatchListingRequest {
            fn take_patch(&mut self) -> DetailsPatch {
                DetailsPatch { $($field: self.$field.take(),)+ }
            }
        }
    };
}

keh_events::with_detail_fields!(define_requests);

impl CreateListingRequest {
    pub(crate) fn into_command(
        mut self,
        generated_key: ListingKey,
        now: DateTime<Utc>,
    ) -> Result<CreateListing, Vec<FieldError>> {
        let mut checks = Checks::default();
        let listing_key = match self.listing_key.take() {
            Some(text) => checks.take(ListingKey::new(text.as_str()).map_err(|e| FieldError {
                field: "ListingKey".to_owned(),
                rule: "invalid".to_owned(),
                message: format!("ListingKey {e}"),
            })),
            None => Some(generated_key),
        };
        let at = checks.take(effective(
            self.original_entry_timestamp,
            "OriginalEntryTimestamp",
            now,
        ));
        let contract = checks.take(business_date(
            self.listing_contract_date
                .unwrap_or_else(|| at.unwrap_or(now).date_naive()),
            "ListingContractDate",
            now,
        ));
        let on_market = match self.on_market_date {
            Some(date) => checks
                .take(business_date(date, "OnMarketDate", now))
                .map(Some),
            None => Some(None),
        };
        if let Some(expiration) = self.expiration_date {
            checks.take(expiration_in_range(expiration));
        }
        let details = self.take_details();
        let value = match (listing_key, at, contract, on_market) {
            (Some(listing_key), Some(at), Some(listing_contract_date), Some(on_market_date)) => {
                Some(CreateListing {
                    listing_key,
                    standard_status: self.standard_status.unwrap_or(StandardStatus::Active),
                    property_type: self.property_type,
                    list_price: self.list_price,
                    listing_contract_date,
                    on_market_date,
                    details,
                    at,
                })
            }
            _ => None,
        };
        checks.finish(value)
    }
}

impl PatchListingRequest {
    /// `ListingId` the patch sets, if any (it must be free).
    pub(crate) fn new_listing_id(&self) -> Option<&ShortText> {
        self.listing_id.as_ref().and_then(Option::as_ref)
    }

    pub(crate) fn into_command(
        mut self,
        now: DateTime<Utc>,
    ) -> Result<UpdateDetails, Vec<FieldError>> {
        let mut checks = Checks::default();
        let at = checks.take(effective(
            self.modification_timestamp,
            "ModificationTimestamp",
            now,
        ));
        if let Some(Some(expiration)) = self.expiration_date {
            checks.take(expiration_in_range(expiration));
        }
        let list_price = match self.list_price {
            Some(None) => {
                checks.0.push(FieldError {
                    field: "ListPrice".to_owned(),
                    rule: "required".to_owned(),
                    message: "ListPrice cannot be cleared".to_owned(),
                });
                None
            }
            other => other.flatten(),
        };
        let patch = self.take_patch();
        checks.finish(at.map(|at| UpdateDetails {
            patch,
            list_price,
            at,
        }))
    }
}

/// `POST /api/v1/listings/{ListingKey}/price`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct ChangePriceRequest {
    pub list_price: Price,
    #[serde(default)]
    pub price_change_timestamp: Option<DateTime<Utc>>,
}

impl ChangePriceRequest {
    pub(crate) fn into_command(self, now: DateTime<Utc>) -> Result<ChangePrice, Vec<FieldError>> {
        let mut checks = Checks::default();
        let at = checks.take(effective(
            self.price_change_timestamp,
            "PriceChangeTimestamp",
            now,
        ));
        checks.finish(at.map(|at| ChangePrice {
            list_price: self.list_price,
            at,
        }))
    }
}

/// `POST /api/v1/listings/{ListingKey}/status`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct ChangeStatusRequest {
    pub standard_status: StandardStatus,
    #[serde(default)]
    pub status_change_timestamp: Option<DateTime<Utc>>,
    #[serde(default)]
    pub purchase_contract_date: Option<NaiveDate>,
    #[serde(default)]
    pub close_date: Option<NaiveDate>,
    #[serde(default)]
    pub close_price: Option<Price>,
    #[serde(default)]
    pub buyer_agent_key: Option<ShortText>,
}

impl ChangeStatusRequest {
    pub(crate) fn into_command(self, now: DateTime<Utc>) -> Result<ChangeStatus, Vec<FieldError>> {
        let mut checks = Checks::default();
        let at = checks.take(effective(
            self.status_change_timestamp,
            "StatusChangeTimestamp",
            now,
        ));
        let purchase = self
            .purchase_contract_date
            .map(|d| checks.take(business_date(d, "PurchaseContractDate", now)));
        let close = self
            .close_date
            .map(|d| checks.take(business_date(d, "CloseDate", now)));
        let value = at.map(|at| ChangeStatus {
            standard_status: self.standard_status,
            purchase_contract_date: purchase.flatten(),
            close_date: close.flatten(),
            close_price: self.close_price,
            buyer_agent_key: self.buyer_agent_key,
            at,
        });
        checks.finish(value)
    }
}

/// `POST /api/v1/listings/{ListingKey}/media`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct AddMediaRequest {
    #[serde(default)]
    pub media_key: Option<ShortText>,
    #[serde(rename = "MediaURL")]
    pub media_url: Text2k,
    pub media_category: MediaCategory,
    #[serde(default)]
    pub short_description: Option<ShortText>,
    #[serde(default)]
    pub order: Option<u32>,
    #[serde(default)]
    pub modification_timestamp: Option<DateTime<Utc>>,
}

impl AddMediaRequest {
    /// Checks the URL here, at the command's edge (absolute `https`, or `http` where
    /// allowed; no credentials; a public host; stored in normal form), not in the event
    /// value type: events stored before this check must still load.
    pub(crate) fn into_command(
        self,
        generated_key: ShortText,
        edge: Edge,
    ) -> Result<AddMedia, Vec<FieldError>> {
        let mut checks = Checks::default();
        let at = checks.take(effective(
            self.modification_timestamp,
            "ModificationTimestamp",
            edge.now,
        ));
        let url = checks.take(
            keh_events::public::check_media_url(self.media_url.as_str(), edge.allow_http_media)
                .and_then(|normal| Text2k::new(&normal))
                .map_err(|message| FieldError {
                    field: "MediaURL".to_owned(),
                    rule: "invalid-url".to_owned(),
                    message: format!("MediaURL {message}"),
                }),
        );
        let value = at.zip(url).map(|(at, media_url)| AddMedia {
            media_key: self.media_key.unwrap_or(generated_key),
            media_url,
            media_category: self.media_category,
            short_description: self.short_description,
            order: self.order,
            at,
        });
        checks.finish(value)
    }
}

/// `PUT /api/v1/listings/{ListingKey}/media/order`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct ReorderMediaRequest {
    pub media_keys: Vec<ShortText>,
    #[serde(default)]
    pub modification_timestamp: Option<DateTime<Utc>>,
}

impl ReorderMediaRequest {
    pub(crate) fn into_command(self, now: DateTime<Utc>) -> Result<ReorderMedia, Vec<FieldError>> {
        let mut checks = Checks::default();
        let at = checks.take(effective(
            self.modification_timestamp,
            "ModificationTimestamp",
            now,
        ));
        checks.finish(at.map(|at| ReorderMedia {
            media_keys: self.media_keys,
            at,
        }))
    }
}

/// `POST /api/v1/listings/{ListingKey}/open-houses`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct ScheduleOpenHouseRequest {
    #[serde(default)]
    pub open_house_key: Option<ShortText>,
    /// Defaults to the (UTC) date of `OpenHouseStartTime`.
    #[serde(default)]
    pub open_house_date: Option<NaiveDate>,
    pub open_house_start_time: DateTime<Utc>,
    pub open_house_end_time: DateTime<Utc>,
    #[serde(default)]
    pub open_house_type: Option<OpenHouseType>,
    #[serde(default)]
    pub open_house_remarks: Option<Remarks>,
    #[serde(default)]
    pub showing_agent_key: Option<ShortText>,
    #[serde(default)]
    pub modification_timestamp: Option<DateTime<Utc>>,
}

impl ScheduleOpenHouseRequest {
    pub(crate) fn into_command(
        self,
        generated_key: ShortText,
        now: DateTime<Utc>,
    ) -> Result<ScheduleOpenHouse, Vec<FieldError>> {
        let mut checks = Checks::default();
        let at = checks.take(effective(
            self.modification_timestamp,
            "ModificationTimestamp",
            now,
        ));
        if self.open_house_start_time.date_naive() < min_date() {
            checks.0.push(too_old("OpenHouseStartTime"));
        }
        let value = at.map(|at| ScheduleOpenHouse {
            open_house_key: self.open_house_key.unwrap_or(generated_key),
            open_house_date: self
                .open_house_date
                .unwrap_or_else(|| self.open_house_start_time.date_naive()),
            open_house_start_time: self.open_house_start_time,
            open_house_end_time: self.open_house_end_time,
            open_house_type: self.open_house_type.unwrap_or(OpenHouseType::Public),
            open_house_remarks: self.open_house_remarks,
            showing_agent_key: self.showing_agent_key,
            at,
        });
        checks.finish(value)
    }
}

/// What a command is decided against at the edge besides its body: the time, and the
/// installation's rules for values that leave the platform (media URLs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Edge {
    pub(crate) now: DateTime<Utc>,
    pub(crate) allow_http_media: bool,
}

/// A request body that becomes one command on an existing listing.
pub(crate) trait CommandBody: serde::de::DeserializeOwned + Send {
    fn command(self, now: DateTime<Utc>) -> Result<keh_listing::ListingCommand, Vec<FieldError>>;

    /// The command, decided with the edge's rules (most bodies need only the time).
    fn command_at(self, edge: Edge) -> Result<keh_listing::ListingCommand, Vec<FieldError>> {
        self.command(edge.now)
    }

    /// The `ListingId` the command would set (it must be free).
    fn listing_id(&self) -> Option<ShortText> {
        None
    }
}

/// A fresh key for a listing or a sub-resource.
pub(crate) fn new_key() -> ShortText {
    let key = uuid::Uuid::new_v4().to_string();
    // A UUID is always 36 plain characters: the fallback cannot happen.
    ShortText::new(&key).unwrap_or_else(|_| fallback_key())
}

#[allow(clippy::unwrap_used)]
fn fallback_key() -> ShortText {
    ShortText::new("key").unwrap()
}

impl CommandBody for PatchListingRequest {
    fn command(self, now: DateTime<Utc>) -> Result<keh_listing::ListingCommand, Vec<FieldError>> {
        self.into_command(now)
            .map(keh_listing::ListingCommand::UpdateDetails)
    }

    fn listing_id(&self) -> Option<ShortText> {
        self.new_listing_id().cloned()
    }
}

impl CommandBody for ChangePriceRequest {
    fn command(self, now: DateTime<Utc>) -> Result<keh_listing::ListingCommand, Vec<FieldError>> {
        self.into_command(now)
            .map(keh_listing::ListingCommand::ChangePrice)
    }
}

impl CommandBody for ChangeStatusRequest {
    fn command(self, now: DateTime<Utc>) -> Result<keh_listing::ListingCommand, Vec<FieldError>> {
        self.into_command(now)
            .map(keh_listing::ListingCommand::ChangeStatus)
    }
}

impl CommandBody for AddMediaRequest {
    fn command(self, now: DateTime<Utc>) -> Result<keh_listing::ListingCommand, Vec<FieldError>> {
        self.command_at(Edge {
            now,
            allow_http_media: false,
        })
    }

    fn command_at(self, edge: Edge) -> Result<keh_listing::ListingCommand, Vec<FieldError>> {
        self.into_command(new_key(), edge)
            .map(keh_listing::ListingCommand::AddMedia)
    }
}

impl CommandBody for ReorderMediaRequest {
    fn command(self, now: DateTime<Utc>) -> Result<keh_listing::ListingCommand, Vec<FieldError>> {
        self.into_command(now)
            .map(keh_listing::ListingCommand::ReorderMedia)
    }
}

impl CommandBody for ScheduleOpenHouseRequest {
    fn command(self, now: DateTime<Utc>) -> Result<keh_listing::ListingCommand, Vec<FieldError>> {
        self.into_command(new_key(), now)
            .map(keh_listing::ListingCommand::ScheduleOpenHouse)
    }
}
