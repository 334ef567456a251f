//! The identifiers in the API's paths, as the handlers take them (`Path<ListingPath>`…)
//! and the document names them (`{ListingKey}`…). A key is taken as written and checked
//! by the handler, which answers a bad one with a problem naming the parameter.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;

/// A key in a path: 1 to 255 characters, no surrounding whitespace, no control characters.
fn key(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string", "minLength": 1, "maxLength": 255,
        "pattern": "^[^\\s\\x00-\\x1f\\x7f]([^\\x00-\\x1f\\x7f]*[^\\s\\x00-\\x1f\\x7f])?$"
    })
}

/// `/api/v1/listings/{ListingKey}…`
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListingPath {
    /// The listing's system key.
    #[serde(rename = "ListingKey")]
    #[schemars(schema_with = "key")]
    pub listing_key: String,
}

/// `/api/v1/listings/{ListingKey}/media/{MediaKey}`
#[derive(Debug, Deserialize, JsonSchema)]
pub struct MediaPath {
    /// The listing's system key.
    #[serde(rename = "ListingKey")]
    #[schemars(schema_with = "key")]
    pub listing_key: String,
    /// The media item's key.
    #[serde(rename = "MediaKey")]
    #[schemars(schema_with = "key")]
    pub media_key: String,
}

/// `/api/v1/listings/{ListingKey}/open-houses/{OpenHouseKey}`
#[derive(Debug, Deserialize, JsonSchema)]
pub struct OpenHousePath {
    /// The listing's system key.
    #[serde(rename = "ListingKey")]
    #[schemars(schema_with = "key")]
    pub listing_key: String,
    /// The open house's key.
    #[serde(rename = "OpenHouseKey")]
    #[schemars(schema_with = "key")]
    pub open_house_key: String,
}
