use keh_listing::ListingState;
use serde_json::{Value, json};

use super::{Audience, ListingResource};

/// A stored state with every kind of field: private remarks, a safe and an unsafe media
/// URL, an open house.
fn state() -> ListingState {
    serde_json::from_value(json!({
        "ListingKey": "L-1", "Version": 4, "StandardStatus": "Active",
        "PropertyType": "Residential", "ListPrice": 450000.50, "OriginalListPrice": 460000,
        "PreviousListPrice": 460000, "ListingContractDate": "2026-03-01",
        "OnMarketDate": "2026-03-02", "OriginalEntryTimestamp": "2026-03-01T10:00:00Z",
        "ModificationTimestamp": "2026-03-05T10:00:00Z",
        "PriceChangeTimestamp": "2026-03-05T10:00:00Z",
        "ListingId": "MLS-1", "City": "Springfield", "ListAgentKey": "agent-1",
        "PublicRemarks": "Sunny", "PrivateRemarks": "Lockbox 1234",
        "Media": [
            {"MediaKey": "m1", "MediaURL": "https://photos.example.com/1.jpg",
             "MediaCategory": "Photo", "Order": 0},
            {"MediaKey": "m2", "MediaURL": "http://169.254.169.254/latest",
             "MediaCategory": "Photo", "ShortDescription": "old", "Order": 1}
        ],
        "OpenHouses": [
            {"OpenHouseKey": "o1", "OpenHouseDate": "2026-03-07",
             "OpenHouseStartTime": "2026-03-07T14:00:00Z",
             "OpenHouseEndTime": "2026-03-07T16:00:00Z", "OpenHouseType": "Public",
             "OpenHouseStatus": "Active"}
        ]
    }))
    .expect("a valid stored state")
}

/// What the JSON surgery of `keh_events::public` makes of the stored state.
fn by_json(with_private: bool) -> Value {
    let mut value = serde_json::to_value(state()).unwrap();
    keh_events::public::served(&mut value, with_private);
    value
}

#[test]
fn the_resource_is_the_state_as_every_public_surface_redacts_it() {
    for (audience, with_private) in [(Audience::Public, false), (Audience::Private, true)] {
        let resource = serde_json::to_value(ListingResource::new(state(), audience)).unwrap();
        assert_eq!(resource, by_json(with_private), "{audience:?}");
    }
}

#[test]
fn private_remarks_and_unsafe_urls_are_left_out() {
    let public = serde_json::to_value(ListingResource::new(state(), Audience::Public)).unwrap();
    assert!(public.get("PrivateRemarks").is_none(), "{public}");
    assert_eq!(public["PublicRemarks"], "Sunny");
    assert_eq!(
        public["Media"][0]["MediaURL"],
        "https://photos.example.com/1.jpg"
    );
    assert_eq!(public["Media"][1]["MediaURL"], Value::Null);
    let private = serde_json::to_value(ListingResource::new(state(), Audience::Private)).unwrap();
    assert_eq!(private["PrivateRemarks"], "Lockbox 1234");
    assert_eq!(
        private["Media"][1]["MediaURL"],
        Value::Null,
        "unsafe for everyone"
    );
    assert_eq!(private["ListPrice"], json!(450000.50));
}
