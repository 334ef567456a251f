//! Listing events: the facts the Listing aggregate records, in RESO vocabulary.
//!
//! The serde form of [`ListingEvent`] is what PostgreSQL stores in `events.payload` and what
//! the relay publishes as the envelope's `EventType`/`Data`. Changing it is changing a public
//! contract: add a field as optional, or add a new schema version with an upcaster; never
//! rewrite stored events.

use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::ids::ListingKey;
use crate::reso::{
    ChangeType, MediaCategory, OpenHouseType, Price, PropertyType, Remarks, ShortText,
    StandardStatus,
};

/// Version of the payload schema written by this code (the `event_version` column and the
/// `SchemaVersion` of the envelope).
pub const SCHEMA_VERSION: &str = "1";

/// Fields that only the listing's agent and administrators may see. The public stream and
/// the live feed never carry them; the internal stream (platform consumers only) does.
pub const PRIVATE_FIELDS: &[&str] = &["PrivateRemarks"];

/// Removes [`PRIVATE_FIELDS`] from a listing's state or an event's data, including the
/// `Changes` of a details update: the one place that decides what "public" means.
pub fn remove_private_fields(value: &mut serde_json::Value) {
    let Some(object) = value.as_object_mut() else {
        return;
    };
    for field in PRIVATE_FIELDS {
        object.remove(*field);
    }
    if let Some(changes) = object
        .get_mut("Changes")
        .and_then(serde_json::Value::as_object_mut)
    {
        for field in PRIVATE_FIELDS {
            changes.remove(*field);
        }
    }
}

impl ListingDetails {
    /// These details without [`PRIVATE_FIELDS`]: the typed twin of
    /// [`remove_private_fields`], for surfaces that build their answer from types (a test
    /// holds the two equal).
    pub fn without_private(mut self) -> Self {
        self.private_remarks = None;
        self
    }
}

/// Invokes `$mac!` with the list of descriptive listing fields, so that the full record
/// ([`ListingDetails`]), its patch ([`DetailsPatch`]) and the HTTP DTOs are generated from
/// one list and can never disagree.
#[macro_export]
macro_rules! with_detail_fields {
    ($mac:ident) => {
        $mac! {
            listing_id: $crate::reso::ShortText = "ListingId",
            property_sub_type: $crate::reso::ShortText = "PropertySubType",
            expiration_date: ::chrono::NaiveDate = "ExpirationDate",
            bedrooms_total: $crate::reso::RoomCount = "BedroomsTotal",
            bathrooms_total_integer: $crate::reso::RoomCount = "BathroomsTotalInteger",
            living_area: $crate::reso::Area = "LivingArea",
            living_area_units: $crate::reso::LivingAreaUnits = "LivingAreaUnits",
            lot_size_area: $crate::reso::Area = "LotSizeArea",
            lot_size_units: $crate::reso::LotSizeUnits = "LotSizeUnits",
            year_built: $crate::reso::Year = "YearBuilt",
            unparsed_address: $crate::reso::ShortText = "UnparsedAddress",
            street_number: $crate::reso::ShortText = "StreetNumber",
            street_name: $crate::reso::ShortText = "StreetName",
            unit_number: $crate::reso::ShortText = "UnitNumber",
            city: $crate::reso::ShortText = "City",
            state_or_province: $crate::reso::ShortText = "StateOrProvince",
            postal_code: $crate::reso::ShortText = "PostalCode",
            county_or_parish: $crate::reso::ShortText = "CountyOrParish",
            country: $crate::reso::ShortText = "Country",
            subdivision_name: $crate::reso::ShortText = "SubdivisionName",
            latitude: $crate::reso::Latitude = "Latitude",
            longitude: $crate::reso::Longitude = "Longitude",
            list_agent_key: $crate::reso::ShortText = "ListAgentKey",
            list_office_key: $crate::reso::ShortText = "ListOfficeKey",
            public_remarks: $crate::reso::Remarks = "PublicRemarks",
            private_remarks: $crate::reso::Remarks = "PrivateRemarks",
        }
    };
}

/// `Some(None)` for an explicit JSON `null`, `Some(Some(v))` for a value; a missing field is
/// `None` through `#[serde(default)]`. This is JSON merge-patch's distinction.
pub fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

macro_rules! define_details {
    ($($field:ident : $ty:ty = $name:literal),+ $(,)?) => {
        /// The descriptive fields of a listing (structure, location, people, remarks).
        /// Every field is optional; absent fields are omitted from JSON.
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
        pub struct ListingDetails {
            $(
                #[serde(rename = $name, default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )+
        }

        /// A change to [`ListingDetails`]: a field that is absent is unchanged, `null`
        /// clears it, a value sets it (JSON merge-patch semantics).
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
        pub struct DetailsPatch {
            $(
                #[serde(rename = $name, default, deserialize_with = "double_option", skip_serializing_if = "Option::is_none")]
                pub $field: Option<Option<$ty>>,
            )+
        }

        impl ListingDetails {
            /// The JSON names of the descriptive fields.
            pub const FIELDS: &'static [&'static str] = &[$($name),+];

            /// Reads the value of the descriptive field named `name` from `map`; `Ok(false)`
            /// when `name` is not one (the value is then still unread). For records that carry
            /// these fields at their own level: serde's `flatten` would first copy every field
            /// into an intermediate tree, the largest cost of reading such a record.
            pub fn read_field<'de, A: serde::de::MapAccess<'de>>(
                &mut self,
                name: &str,
                map: &mut A,
            ) -> Result<bool, A::Error> {
                match name {
                    $($name => self.$field = map.next_value()?,)+
                    _ => return Ok(false),
                }
                Ok(true)
            }

            /// Applies `patch` to these details.
            pub fn apply(&mut self, patch: &DetailsPatch) {
                $(
                    if let Some(value) = &patch.$field {
                        self.$field = value.clone();
                    }
                )+
            }

            /// The part of `patch` that would change these details (unchanged fields dropped).
            pub fn effective_changes(&self, patch: DetailsPatch) -> DetailsPatch {
                DetailsPatch {
                    $(
                        $field: patch.$field.filter(|value| *value != self.$field),
                    )+
                }
            }
        }

        impl DetailsPatch {
            /// Whether the patch changes nothing.
            pub fn is_empty(&self) -> bool {
                true $(&& self.$field.is_none())+
            }

            /// JSON names of the fields this patch sets or clears.
            pub fn field_names(&self) -> Vec<&'static str> {
                let mut names = Vec::new();
                $(
                    if self.$field.is_some() {
                        names.push($name);
                    }
                )+
                names
            }
        }
    };
}

with_detail_fields!(define_details);

/// A listing entered the system. Carries every core field; `OriginalListPrice` equals the
/// first `ListPrice`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ListingCreated {
    pub listing_key: ListingKey,
    pub standard_status: StandardStatus,
    pub property_type: PropertyType,
    pub list_price: Price,
    pub original_list_price: Price,
    /// Date the listing agreement was signed (business date).
    pub listing_contract_date: NaiveDate,
    /// Set when the listing is created Active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_market_date: Option<NaiveDate>,
    /// When the listing was first entered (effective time of this event).
    pub original_entry_timestamp: DateTime<Utc>,
    #[serde(flatten)]
    pub details: ListingDetails,
}

/// Descriptive fields changed. `Changes` holds only the fields that changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ListingDetailsUpdated {
    pub changes: DetailsPatch,
    pub modification_timestamp: DateTime<Utc>,
}

/// `ChangeType` "Price Change": the list price moved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ListingPriceChanged {
    pub change_type: ChangeType,
    pub previous_list_price: Price,
    pub list_price: Price,
    /// When the price changed (effective time).
    pub price_change_timestamp: DateTime<Utc>,
}

/// A lifecycle transition (see the status table in docs/api.md). Dates that the transition sets
/// are carried explicitly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ListingStatusChanged {
    pub change_type: ChangeType,
    pub previous_standard_status: StandardStatus,
    pub standard_status: StandardStatus,
    /// When the status changed (effective time).
    pub status_change_timestamp: DateTime<Utc>,
    /// First time on market (Incomplete/Coming Soon → Active).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_market_date: Option<NaiveDate>,
    /// Under contract (→ Active Under Contract, → Pending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchase_contract_date: Option<NaiveDate>,
    /// → Closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_date: Option<NaiveDate>,
    /// → Closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_price: Option<Price>,
    /// → Closed (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer_agent_key: Option<ShortText>,
    /// Left the market (→ Withdrawn, Expired, Canceled, Hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub off_market_date: Option<NaiveDate>,
    /// → Withdrawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn_date: Option<NaiveDate>,
    /// → Canceled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation_date: Option<NaiveDate>,
}

/// A photo or document reference was added at position `Order` (0-based).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "PascalCase")]
pub struct MediaAdded {
    pub media_key: ShortText,
    #[serde(rename = "MediaURL")]
    pub media_url: Text2k,
    pub media_category: MediaCategory,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_description: Option<ShortText>,
    pub order: u32,
    pub modification_timestamp: DateTime<Utc>,
}

/// A URL (media references): at most 2048 characters.
pub type Text2k = crate::reso::Text<2048>;

/// A media item was removed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "PascalCase")]
pub struct MediaRemoved {
    pub media_key: ShortText,
    pub modification_timestamp: DateTime<Utc>,
}

/// The media were put in a new order; `MediaKeys` lists every media key, first shown first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "PascalCase")]
pub struct MediaReordered {
    pub media_keys: Vec<ShortText>,
    pub modification_timestamp: DateTime<Utc>,
}

/// An open house was scheduled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "PascalCase")]
pub struct OpenHouseScheduled {
    pub open_house_key: ShortText,
    pub open_house_date: NaiveDate,
    pub open_house_start_time: DateTime<Utc>,
    pub open_house_end_time: DateTime<Utc>,
    pub open_house_type: OpenHouseType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_house_remarks: Option<Remarks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub showing_agent_key: Option<ShortText>,
    pub modification_timestamp: DateTime<Utc>,
}

/// An open house was canceled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "PascalCase")]
pub struct OpenHouseCanceled {
    pub open_house_key: ShortText,
    pub modification_timestamp: DateTime<Utc>,
}

/// Every event of a listing. Serialized adjacently tagged: `{"EventType": "...", "Data": {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "EventType", content = "Data")]
pub enum ListingEvent {
    ListingCreated(ListingCreated),
    ListingDetailsUpdated(ListingDetailsUpdated),
    ListingPriceChanged(ListingPriceChanged),
    ListingStatusChanged(ListingStatusChanged),
    MediaAdded(MediaAdded),
    MediaRemoved(MediaRemoved),
    MediaReordered(MediaReordered),
    OpenHouseScheduled(OpenHouseScheduled),
    OpenHouseCanceled(OpenHouseCanceled),
}

impl ListingEvent {
    /// Every event type name, as used in `EventType`, subjects and headers.
    pub const TYPES: &'static [&'static str] = &[
        "ListingCreated",
        "ListingDetailsUpdated",
        "ListingPriceChanged",
        "ListingStatusChanged",
        "MediaAdded",
        "MediaRemoved",
        "MediaReordered",
        "OpenHouseScheduled",
        "OpenHouseCanceled",
    ];

    /// The event type name.
    pub const fn event_type(&self) -> &'static str {
        match self {
            Self::ListingCreated(_) => "ListingCreated",
            Self::ListingDetailsUpdated(_) => "ListingDetailsUpdated",
            Self::ListingPriceChanged(_) => "ListingPriceChanged",
            Self::ListingStatusChanged(_) => "ListingStatusChanged",
            Self::MediaAdded(_) => "MediaAdded",
            Self::MediaRemoved(_) => "MediaRemoved",
            Self::MediaReordered(_) => "MediaReordered",
            Self::OpenHouseScheduled(_) => "OpenHouseScheduled",
            Self::OpenHouseCanceled(_) => "OpenHouseCanceled",
        }
    }

    /// When the fact happened in the business sense (law 13: may lie in the past).
    pub const fn effective_at(&self) -> DateTime<Utc> {
        match self {
            Self::ListingCreated(e) => e.original_entry_timestamp,
            Self::ListingDetailsUpdated(e) => e.modification_timestamp,
            Self::ListingPriceChanged(e) => e.price_change_timestamp,
            Self::ListingStatusChanged(e) => e.status_change_timestamp,
            Self::MediaAdded(e) => e.modification_timestamp,
            Self::MediaRemoved(e) => e.modification_timestamp,
            Self::MediaReordered(e) => e.modification_timestamp,
            Self::OpenHouseScheduled(e) => e.modification_timestamp,
            Self::OpenHouseCanceled(e) => e.modification_timestamp,
        }
    }
}

#[cfg(feature = "cqrs")]
impl cqrs_es::DomainEvent for ListingEvent {
    fn event_type(&self) -> String {
        Self::event_type(self).to_owned()
    }

    fn event_version(&self) -> String {
        SCHEMA_VERSION.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reso::{Latitude, RoomCount};
    use rust_decimal::Decimal;

    fn created() -> ListingEvent {
        ListingEvent::ListingCreated(ListingCreated {
            listing_key: ListingKey::new("L-1").unwrap(),
            standard_status: StandardStatus::Active,
            property_type: PropertyType::Residential,
            list_price: Price::new(Decimal::new(45_000_050, 2)).unwrap(),
            original_list_price: Price::new(Decimal::new(45_000_050, 2)).unwrap(),
            listing_contract_date: NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
            on_market_date: None,
            original_entry_timestamp: "2026-03-01T10:00:00Z".parse().unwrap(),
            details: ListingDetails {
                city: Some(ShortText::new("Springfield").unwrap()),
                latitude: Some(Latitude::new(Decimal::new(4_512_345_678, 8)).unwrap()),
                ..ListingDetails::default()
            },
        })
    }

    #[test]
    fn events_round_trip_through_json_with_exact_decimals() {
        let event = created();
        let json = serde_json::to_string(&event).unwrap();
        assert!(json.contains(r#""ListPrice":450000.5"#), "{json}");
        assert!(json.contains(r#""Latitude":45.12345678"#), "{json}");
        assert!(json.contains(r#""EventType":"ListingCreated""#), "{json}");
        // Through serde_json::Value too: that is how postgres-es reads payloads back.
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            serde_json::from_value::<ListingEvent>(value).unwrap(),
            event
        );
        assert_eq!(serde_json::from_str::<ListingEvent>(&json).unwrap(), event);
    }

    #[test]
    fn typed_and_json_removal_of_private_fields_agree() {
        assert_eq!(
            PRIVATE_FIELDS,
            ["PrivateRemarks"],
            "a new private field must be cleared by ListingDetails::without_private too"
        );
        let details: ListingDetails = serde_json::from_value(serde_json::json!({
            "ListingId": "MLS-1", "City": "Springfield", "PublicRemarks": "Sunny",
            "PrivateRemarks": "Lockbox 1234", "ListAgentKey": "agent-1"
        }))
        .unwrap();
        let mut by_json = serde_json::to_value(&details).unwrap();
        remove_private_fields(&mut by_json);
        let by_type = serde_json::to_value(details.without_private()).unwrap();
        assert_eq!(by_type, by_json);
        assert!(by_type.get("PrivateRemarks").is_none());
        assert_eq!(by_type["PublicRemarks"], "Sunny");
    }

    #[test]
    fn patch_distinguishes_absent_null_and_value() {
        let patch: DetailsPatch =
            serde_json::from_str(r#"{"City": null, "BedroomsTotal": 3}"#).unwrap();
        assert_eq!(patch.city, Some(None));
        assert_eq!(patch.bedrooms_total, Some(Some(RoomCount::new(3).unwrap())));
        assert_eq!(patch.postal_code, None);
        assert_eq!(patch.field_names(), vec!["BedroomsTotal", "City"]);
        let json = serde_json::to_string(&patch).unwrap();
        assert_eq!(serde_json::from_str::<DetailsPatch>(&json).unwrap(), patch);

        let mut details = ListingDetails {
            bedrooms_total: Some(RoomCount::new(3).unwrap()),
            city: Some(ShortText::new("X").unwrap()),
            ..ListingDetails::default()
        };
        let effective = details.effective_changes(patch);
        assert_eq!(
            effective.field_names(),
            vec!["City"],
            "unchanged BedroomsTotal dropped"
        );
        details.apply(&effective);
        assert_eq!(details.city, None);
    }

    #[test]
    fn every_type_name_is_listed() {
        assert_eq!(ListingEvent::TYPES.len(), 9);
        assert!(ListingEvent::TYPES.contains(&created().event_type()));
    }
}
