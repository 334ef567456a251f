//! Reading a stored [`ListingState`] without serde's `flatten`. The derived reader of a
//! flattened field first copies every field it does not know into an intermediate tree and
//! then reads the descriptive fields from that copy: measured with perf, half of what a GET
//! by key spent decoding the state, and the projector pays it for every event it applies.
//! Here each field is read once, in place; the descriptive ones by [`ListingDetails::read_field`].

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::ListingState;
use keh_events::listing::ListingDetails;

impl<'de> Deserialize<'de> for ListingState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(StateVisitor)
    }
}

struct StateVisitor;

/// Declares the outer fields once: the required ones must be present, the optional ones
/// default to `None`; any other name is a descriptive field or ignored (as the derived reader
/// ignored unknown fields).
macro_rules! read_state {
    ($map:ident, required { $($r:ident = $rn:literal),+ $(,)? }, optional { $($o:ident = $on:literal),+ $(,)? }) => {{
        let mut details = ListingDetails::default();
        $(let mut $r = None;)+
        $(let mut $o = None;)+
        while let Some(name) = $map.next_key::<FieldName<'de>>()? {
            match name.as_str() {
                $($rn => $r = Some($map.next_value()?),)+
                $($on => $o = $map.next_value()?,)+
                other => {
                    if !details.read_field(other, &mut $map)? {
                        $map.next_value::<IgnoredAny>()?;
                    }
                }
            }
        }
        Ok(ListingState {
            $($r: $r.ok_or_else(|| de::Error::missing_field($rn))?,)+
            $($o,)+
            details,
        })
    }};
}

impl<'de> Visitor<'de> for StateVisitor {
    type Value = ListingState;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a listing's state (an object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ListingState, A::Error> {
        read_state!(
            map,
            required {
                listing_key = "ListingKey",
                version = "Version",
                standard_status = "StandardStatus",
                property_type = "PropertyType",
                list_price = "ListPrice",
                original_list_price = "OriginalListPrice",
                listing_contract_date = "ListingContractDate",
                original_entry_timestamp = "OriginalEntryTimestamp",
                modification_timestamp = "ModificationTimestamp",
                media = "Media",
                open_houses = "OpenHouses",
            },
            optional {
                previous_list_price = "PreviousListPrice",
                close_price = "ClosePrice",
                on_market_date = "OnMarketDate",
                purchase_contract_date = "PurchaseContractDate",
                close_date = "CloseDate",
                off_market_date = "OffMarketDate",
                withdrawn_date = "WithdrawnDate",
                cancellation_date = "CancellationDate",
                buyer_agent_key = "BuyerAgentKey",
                price_change_timestamp = "PriceChangeTimestamp",
                status_change_timestamp = "StatusChangeTimestamp",
            }
        )
    }
}

/// A field name, borrowed from the input when it can be (no allocation per field).
enum FieldName<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl FieldName<'_> {
    fn as_str(&self) -> &str {
        match self {
            Self::Borrowed(name) => name,
            Self::Owned(name) => name,
        }
    }
}

impl<'de> Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = FieldName<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a field name")
            }

            fn visit_borrowed_str<E: de::Error>(self, name: &'de str) -> Result<Self::Value, E> {
                Ok(FieldName::Borrowed(name))
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
                Ok(FieldName::Owned(name.to_owned()))
            }

            fn visit_string<E: de::Error>(self, name: String) -> Result<Self::Value, E> {
                Ok(FieldName::Owned(name))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// A state with every field present, descriptive ones included.
    fn full() -> Value {
        serde_json::from_str(
            r#"{
            "ListingKey": "L-1", "Version": 7, "StandardStatus": "Closed",
            "PropertyType": "Residential", "ListPrice": 450000.5, "OriginalListPrice": 460000,
            "PreviousListPrice": 455000, "ClosePrice": 449000,
            "ListingContractDate": "2026-01-10", "OnMarketDate": "2026-01-11",
            "PurchaseContractDate": "2026-02-01", "CloseDate": "2026-03-01",
            "OffMarketDate": "2026-02-01", "WithdrawnDate": "2026-01-20",
            "CancellationDate": "2026-01-21", "BuyerAgentKey": "agent-2",
            "OriginalEntryTimestamp": "2026-01-10T09:00:00Z",
            "ModificationTimestamp": "2026-03-01T09:00:00Z",
            "PriceChangeTimestamp": "2026-01-15T09:00:00Z",
            "StatusChangeTimestamp": "2026-03-01T09:00:00Z",
            "ListingId": "MLS-1", "PropertySubType": "Single Family Residence",
            "ExpirationDate": "2027-01-10", "BedroomsTotal": 3, "BathroomsTotalInteger": 2,
            "LivingArea": 1850.5, "LivingAreaUnits": "Square Feet", "LotSizeArea": 0.25,
            "LotSizeUnits": "Acres", "YearBuilt": 1987, "UnparsedAddress": "1 Elm St",
            "StreetNumber": "1", "StreetName": "Elm St", "UnitNumber": "2B",
            "City": "Springfield", "StateOrProvince": "IL", "PostalCode": "62701",
            "CountyOrParish": "Sangamon", "Country": "US", "SubdivisionName": "Oak Park",
            "Latitude": 39.781721, "Longitude": -89.650148, "ListAgentKey": "agent-1",
            "ListOfficeKey": "office-1", "PublicRemarks": "Sunny", "PrivateRemarks": "Lockbox",
            "Media": [{"MediaKey": "m-1", "MediaURL": "https://example.com/1.jpg",
                       "MediaCategory": "Photo", "Order": 0}],
            "OpenHouses": [{"OpenHouseKey": "o-1", "OpenHouseDate": "2026-01-17",
                            "OpenHouseStartTime": "2026-01-17T14:00:00Z",
                            "OpenHouseEndTime": "2026-01-17T16:00:00Z",
                            "OpenHouseType": "Public", "OpenHouseStatus": "Active"}]
        }"#,
        )
        .unwrap()
    }

    #[test]
    fn every_field_is_read_back_from_text_and_from_a_tree() {
        let stored = full();
        let details = stored
            .as_object()
            .map(|fields| {
                ListingDetails::FIELDS
                    .iter()
                    .filter(|name| fields.contains_key(**name))
                    .count()
            })
            .unwrap_or_default();
        assert_eq!(
            details,
            ListingDetails::FIELDS.len(),
            "the sample lacks a field"
        );
        // From text (names borrowed, as the read model's rows are read)...
        let state: ListingState = serde_json::from_str(&stored.to_string()).unwrap();
        assert_eq!(serde_json::to_value(&state).unwrap(), stored);
        // ...and from a tree (names owned, as cqrs-es reads snapshots).
        let again: ListingState = serde_json::from_value(stored).unwrap();
        assert_eq!(again, state);
    }

    #[test]
    fn absent_optional_fields_are_none_and_unknown_ones_are_ignored() {
        let mut stored = full();
        let fields = stored.as_object_mut().unwrap();
        fields.retain(|name, _| {
            [
                "ListingKey",
                "Version",
                "StandardStatus",
                "PropertyType",
                "ListPrice",
                "OriginalListPrice",
                "ListingContractDate",
                "OriginalEntryTimestamp",
                "ModificationTimestamp",
                "Media",
                "OpenHouses",
            ]
            .contains(&name.as_str())
        });
        fields.insert("SomethingNew".to_owned(), json!({"nested": [1, 2]}));
        fields.insert("ClosePrice".to_owned(), Value::Null);
        let state: ListingState = serde_json::from_value(stored).unwrap();
        assert_eq!(state.close_price, None);
        assert_eq!(state.details, ListingDetails::default());
    }

    #[test]
    fn a_missing_or_mistyped_field_is_an_error_that_names_it() {
        let mut stored = full();
        stored.as_object_mut().unwrap().remove("ListPrice");
        let error = serde_json::from_value::<ListingState>(stored).unwrap_err();
        assert!(error.to_string().contains("ListPrice"), "{error}");

        let mut stored = full();
        stored["City"] = json!(42);
        assert!(serde_json::from_str::<ListingState>(&stored.to_string()).is_err());
        assert!(serde_json::from_str::<ListingState>("[1, 2]").is_err());
    }
}
