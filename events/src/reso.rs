//! RESO Data Dictionary 2.0 vocabulary: closed enumerations and validated value types.
//!
//! Enumerations serialize in RESO's human spelling ("Active Under Contract") and also accept
//! the compact form ("ActiveUnderContract"). Value types validate on deserialization, so a
//! value of these types is always valid: an event can never carry a negative price or a
//! 5,000-character city name, whichever path built it.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Declares a closed RESO enumeration: serde names, the compact alias, `Display` and `FromStr`.
macro_rules! reso_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $(
                #[doc = $text]
                $variant,
            )+
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = Cow::<'de, str>::deserialize(deserializer)?;
                raw.parse().map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "description": concat!("RESO ", stringify!($name), " (the compact spelling without spaces is accepted too)"),
                    "enum": [$($text),+],
                })
            }
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// RESO's human spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            /// The compact spelling (the Rust variant name), used where spaces can't go.
            pub const fn compact(self) -> &'static str {
                match self {
                    $(Self::$variant => stringify!($variant),)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s || v.compact() == s)
                    .ok_or_else(|| UnknownValue {
                        kind: stringify!($name),
                        allowed: Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "),
                    })
            }
        }
    };
}

/// A string that is not a value of a closed RESO enumeration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {kind}; expected one of: {allowed}")]
pub struct UnknownValue {
    kind: &'static str,
    allowed: String,
}

reso_enum! {
    /// RESO `StandardStatus`: where a listing is in its lifecycle.
    StandardStatus {
        Active => "Active",
        ActiveUnderContract => "Active Under Contract",
        Canceled => "Canceled",
        Closed => "Closed",
        ComingSoon => "Coming Soon",
        Delete => "Delete",
        Expired => "Expired",
        Hold => "Hold",
        Incomplete => "Incomplete",
        Pending => "Pending",
        Withdrawn => "Withdrawn",
    }
}

impl StandardStatus {
    /// Statuses a listing never leaves.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Closed | Self::Canceled | Self::Delete)
    }

    /// "Active" for market metrics: Active or Active Under Contract.
    pub const fn is_active(self) -> bool {
        matches!(self, Self::Active | Self::ActiveUnderContract)
    }
}

reso_enum! {
    /// RESO `PropertyType`.
    PropertyType {
        Residential => "Residential",
        ResidentialLease => "Residential Lease",
        ResidentialIncome => "Residential Income",
        Land => "Land",
        Farm => "Farm",
        CommercialSale => "Commercial Sale",
        CommercialLease => "Commercial Lease",
        BusinessOpportunity => "Business Opportunity",
        ManufacturedInPark => "Manufactured In Park",
    }
}

reso_enum! {
    /// RESO `ChangeType`: what kind of change an event is, in the market's vocabulary.
    ChangeType {
        NewListing => "New Listing",
        PriceChange => "Price Change",
        BackOnMarket => "Back On Market",
        ActiveUnderContract => "Active Under Contract",
        Pending => "Pending",
        Closed => "Closed",
        Withdrawn => "Withdrawn",
        Expired => "Expired",
        Canceled => "Canceled",
        Hold => "Hold",
        ComingSoon => "Coming Soon",
        Deleted => "Deleted",
    }
}

reso_enum! {
    /// RESO `MediaCategory`.
    MediaCategory {
        AgentPhoto => "Agent Photo",
        BrandedVirtualTour => "Branded Virtual Tour",
        Document => "Document",
        FloorPlan => "Floor Plan",
        Logo => "Logo",
        OfficeLogo => "Office Logo",
        OfficePhoto => "Office Photo",
        Photo => "Photo",
        UnbrandedVirtualTour => "Unbranded Virtual Tour",
        Video => "Video",
    }
}

reso_enum! {
    /// RESO `OpenHouseType`.
    OpenHouseType {
        Broker => "Broker",
        Office => "Office",
        Public => "Public",
    }
}

reso_enum! {
    /// RESO `LivingAreaUnits`.
    LivingAreaUnits {
        SquareFeet => "Square Feet",
        SquareMeters => "Square Meters",
    }
}

reso_enum! {
    /// RESO `LotSizeUnits`.
    LotSizeUnits {
        Acres => "Acres",
        Hectares => "Hectares",
        SquareFeet => "Square Feet",
        SquareMeters => "Square Meters",
    }
}

/// Parses a JSON number exactly (never through `f64`): plain or scientific notation.
fn exact_decimal<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    let text = number.as_str();
    let parsed = if text.contains(['e', 'E']) {
        Decimal::from_scientific(text)
    } else {
        Decimal::from_str_exact(text)
    };
    parsed.map_err(|_| {
        serde::de::Error::custom(format_args!("{text} is not a decimal this system can hold"))
    })
}

fn decimal_as_number<S: Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
    rust_decimal::serde::arbitrary_precision::serialize(value, serializer)
}

/// A validated decimal: declares the newtype, its bounds, serde (exact JSON numbers) and schema.
macro_rules! bounded_decimal {
    ($(#[$meta:meta])* $name:ident, scale: $scale:expr, min: $min:expr, min_exclusive: $excl:expr, max: $max:expr, what: $what:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Decimal);

        impl $name {
            /// Largest number of decimal places accepted.
            pub const SCALE: u32 = $scale;

            /// Validates `value`; the error says which rule it broke.
            pub fn new(value: Decimal) -> Result<Self, String> {
                let min = Decimal::from($min);
                let max = Decimal::from($max);
                // Trailing zeros are not precision: 100.50 and 100.5 are the same price.
                let value = value.normalize();
                if value.scale() > $scale {
                    return Err(format!("must have at most {} decimal places", $scale));
                }
                if $excl && value <= min {
                    return Err(format!("must be greater than {min}"));
                }
                if !$excl && value < min {
                    return Err(format!("must be at least {min}"));
                }
                if value > max {
                    return Err(format!("must be at most {max}"));
                }
                Ok(Self(value))
            }

            /// The value.
            pub const fn get(self) -> Decimal {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                decimal_as_number(&self.0, serializer)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = exact_decimal(deserializer)?;
                Self::new(value).map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                let mut schema = json_schema!({
                    "type": "number",
                    "description": $what,
                    "maximum": $max,
                    "multipleOf": 10f64.powi(-($scale as i32)),
                });
                if $excl {
                    schema.insert("exclusiveMinimum".into(), ($min).into());
                } else {
                    schema.insert("minimum".into(), ($min).into());
                }
                schema
            }
        }
    };
}

bounded_decimal!(
    /// A price in the listing's currency: decimal(14,2), strictly positive.
    Price, scale: 2, min: 0, min_exclusive: true, max: 999_999_999_999i64, what: "a price (decimal 14,2, greater than 0)"
);
bounded_decimal!(
    /// An area (living area, lot size): up to 2 decimals, strictly positive.
    Area, scale: 2, min: 0, min_exclusive: true, max: 999_999_999i64, what: "an area (greater than 0, at most 2 decimals)"
);
bounded_decimal!(
    /// RESO `Latitude`: decimal(12,8) in [-90, 90].
    Latitude, scale: 8, min: -90, min_exclusive: false, max: 90, what: "a latitude in degrees (-90 to 90, at most 8 decimals)"
);
bounded_decimal!(
    /// RESO `Longitude`: decimal(12,8) in [-180, 180].
    Longitude, scale: 8, min: -180, min_exclusive: false, max: 180, what: "a longitude in degrees (-180 to 180, at most 8 decimals)"
);

/// Text of 1 to `MAX` characters without control characters (line breaks and tabs are
/// allowed in long texts, `MAX > 255`). Leading and trailing blanks are trimmed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text<const MAX: usize>(String);

/// A short RESO string field (names, keys, address parts): at most 255 characters.
pub type ShortText = Text<255>;
/// `PublicRemarks` / `PrivateRemarks`: at most 4000 characters.
pub type Remarks = Text<4000>;

impl<const MAX: usize> Text<MAX> {
    /// Validates and trims `value`.
    pub fn new(value: &str) -> Result<Self, String> {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err("must not be empty (use null to clear an optional field)".to_owned());
        }
        let count = trimmed.chars().count();
        if count > MAX {
            return Err(format!("must be at most {MAX} characters, got {count}"));
        }
        let multiline = MAX > 255;
        if trimmed
            .chars()
            .any(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\r' | '\t')))
        {
            return Err("must not contain control characters".to_owned());
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// Validates `value` as it is, without trimming (an identifier from a URL path: a key
    /// with surrounding whitespace is another key, never silently this one).
    pub fn exact(value: &str) -> Result<Self, String> {
        if value.trim() != value {
            return Err("must not begin or end with whitespace".to_owned());
        }
        Self::new(value)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> fmt::Display for Text<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<const MAX: usize> Serialize for Text<MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for Text<MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Cow::<'de, str>::deserialize(deserializer)?;
        Self::new(&raw).map_err(serde::de::Error::custom)
    }
}

impl<const MAX: usize> JsonSchema for Text<MAX> {
    fn schema_name() -> Cow<'static, str> {
        format!("Text{MAX}").into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "minLength": 1, "maxLength": MAX })
    }
}

#[cfg(test)]
mod tests;

/// An integer in `MIN..=MAX` (room counts, years).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BoundedInt<const MIN: i32, const MAX: i32>(i32);

/// `BedroomsTotal`, `BathroomsTotalInteger`: 0 to 999.
pub type RoomCount = BoundedInt<0, 999>;
/// `YearBuilt`: 1600 to 2200.
pub type Year = BoundedInt<1600, 2200>;

impl<const MIN: i32, const MAX: i32> BoundedInt<MIN, MAX> {
    /// Validates `value`.
    pub fn new(value: i64) -> Result<Self, String> {
        i32::try_from(value)
            .ok()
            .filter(|v| (MIN..=MAX).contains(v))
            .map(Self)
            .ok_or_else(|| format!("must be an integer from {MIN} to {MAX}, got {value}"))
    }

    /// The value.
    pub const fn get(self) -> i32 {
        self.0
    }
}

impl<const MIN: i32, const MAX: i32> Serialize for BoundedInt<MIN, MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i32(self.0)
    }
}

impl<'de, const MIN: i32, const MAX: i32> Deserialize<'de> for BoundedInt<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = i64::deserialize(deserializer)?;
        Self::new(value).map_err(serde::de::Error::custom)
    }
}

impl<const MIN: i32, const MAX: i32> JsonSchema for BoundedInt<MIN, MAX> {
    fn schema_name() -> Cow<'static, str> {
        format!("Integer{MIN}To{MAX}").into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "integer", "minimum": MIN, "maximum": MAX })
    }
}

#[cfg(test)]
mod exact_tests {
    use super::ShortText;

    #[test]
    fn path_keys_are_taken_as_they_are() {
        assert!(ShortText::exact("abc-1").is_ok());
        assert!(ShortText::exact(" abc").is_err());
        assert!(ShortText::exact("abc\u{b}\u{b}").is_err());
        assert!(ShortText::exact(&"k".repeat(256)).is_err());
        // Body fields are still trimmed.
        assert_eq!(
            ShortText::new(" abc ").map(|t| t.as_str().to_owned()),
            Ok("abc".to_owned())
        );
    }
}
