//! The identifiers every layer passes around: which listing ([`ListingKey`]) and where in its
//! history ([`Sequence`]). Each is valid by construction, so no layer converts them with a
//! fallback: a key is never silently truncated, a sequence never silently saturated.
//!
//! Both serialize as the plain JSON string and number the event contract documents. With the
//! `sqlx` feature (the crates that talk to PostgreSQL) they are also `TEXT` and `BIGINT`
//! column values, checked when they are read back.

use std::fmt;

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// RESO `ListingKey`: the system key of a listing (a UUID for listings created here, the
/// source's key for imported ones). 1 to 255 characters, none of them a control character,
/// no whitespace at either end (a key with a space is another key, never silently this one).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ListingKey(String);

/// Why a string is not a `ListingKey`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ListingKeyError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most 255 characters, got {0}")]
    TooLong(usize),
    #[error("must not begin or end with whitespace")]
    Whitespace,
    #[error("must not contain control characters")]
    Control,
}

impl ListingKey {
    /// The longest key, in characters (RESO's string length for keys).
    pub const MAX_CHARS: usize = 255;

    /// Validates `value` as it is.
    pub fn new(value: impl Into<String>) -> Result<Self, ListingKeyError> {
        let value = value.into();
        if value.is_empty() {
            return Err(ListingKeyError::Empty);
        }
        let count = value.chars().count();
        if count > Self::MAX_CHARS {
            return Err(ListingKeyError::TooLong(count));
        }
        if value.trim() != value {
            return Err(ListingKeyError::Whitespace);
        }
        if value.chars().any(char::is_control) {
            return Err(ListingKeyError::Control);
        }
        Ok(Self(value))
    }

    /// A new key for a listing created here.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ListingKey {
    type Error = ListingKeyError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<ListingKey> for String {
    fn from(key: ListingKey) -> Self {
        key.0
    }
}

impl std::str::FromStr for ListingKey {
    type Err = ListingKeyError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::new(value)
    }
}

impl AsRef<str> for ListingKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for ListingKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ListingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The 1-based position of an event in its listing's history: gapless per listing, and the
/// listing's version once that event is applied. Stored as `BIGINT`, so at most `i64::MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Sequence(u64);

/// A number outside `1..=i64::MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a sequence is from 1 to {max}, got {0}", max = i64::MAX)]
pub struct SequenceError(pub i128);

impl Sequence {
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<i128> for Sequence {
    type Error = SequenceError;

    fn try_from(value: i128) -> Result<Self, Self::Error> {
        if (1..=i128::from(i64::MAX)).contains(&value) {
            u64::try_from(value)
                .map(Self)
                .map_err(|_| SequenceError(value))
        } else {
            Err(SequenceError(value))
        }
    }
}

impl TryFrom<u64> for Sequence {
    type Error = SequenceError;

    fn try_from(value: u64) -> Result<Self, Self::Error> {
        Self::try_from(i128::from(value))
    }
}

impl TryFrom<i64> for Sequence {
    type Error = SequenceError;

    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::try_from(i128::from(value))
    }
}

impl TryFrom<usize> for Sequence {
    type Error = SequenceError;

    fn try_from(value: usize) -> Result<Self, Self::Error> {
        u64::try_from(value).map_or(Err(SequenceError(i128::MAX)), Self::try_from)
    }
}

impl From<Sequence> for u64 {
    fn from(sequence: Sequence) -> Self {
        sequence.0
    }
}

impl From<Sequence> for i64 {
    fn from(sequence: Sequence) -> Self {
        // In range by construction (`1..=i64::MAX`).
        i64::try_from(sequence.0).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl JsonSchema for ListingKey {
    fn schema_name() -> Cow<'static, str> {
        "ListingKey".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": Self::MAX_CHARS,
            "description": "RESO ListingKey: no control characters, no whitespace at either end"
        })
    }
}

impl JsonSchema for Sequence {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Sequence".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "integer", "format": "uint64", "minimum": 1, "maximum": i64::MAX })
    }
}

#[cfg(feature = "sqlx")]
mod sql {
    //! `TEXT` and `BIGINT` column values; what is read back is checked like any input.

    use sqlx::encode::IsNull;
    use sqlx::error::BoxDynError;
    use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef, Postgres};
    use sqlx::{Decode, Encode, Type};

    use super::{ListingKey, Sequence};

    impl Type<Postgres> for ListingKey {
        fn type_info() -> PgTypeInfo {
            <String as Type<Postgres>>::type_info()
        }

        fn compatible(ty: &PgTypeInfo) -> bool {
            <String as Type<Postgres>>::compatible(ty)
        }
    }

    impl PgHasArrayType for ListingKey {
        fn array_type_info() -> PgTypeInfo {
            <String as PgHasArrayType>::array_type_info()
        }
    }

    impl Encode<'_, Postgres> for ListingKey {
        fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
            <&str as Encode<Postgres>>::encode(self.as_str(), buf)
        }
    }

    impl Decode<'_, Postgres> for ListingKey {
        fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
            let text = <String as Decode<Postgres>>::decode(value)?;
            Ok(Self::new(text)?)
        }
    }

    impl Type<Postgres> for Sequence {
        fn type_info() -> PgTypeInfo {
            <i64 as Type<Postgres>>::type_info()
        }
    }

    impl PgHasArrayType for Sequence {
        fn array_type_info() -> PgTypeInfo {
            <i64 as PgHasArrayType>::array_type_info()
        }
    }

    impl Encode<'_, Postgres> for Sequence {
        fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
            <i64 as Encode<Postgres>>::encode(i64::from(*self), buf)
        }
    }

    impl Decode<'_, Postgres> for Sequence {
        fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
            let number = <i64 as Decode<Postgres>>::decode(value)?;
            Ok(Self::try_from(number)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_key_is_taken_as_it_is_or_refused() {
        assert_eq!(ListingKey::new("MLS-1 A").unwrap().as_str(), "MLS-1 A");
        assert_eq!(ListingKey::new(""), Err(ListingKeyError::Empty));
        assert_eq!(ListingKey::new(" k"), Err(ListingKeyError::Whitespace));
        assert_eq!(ListingKey::new("a\u{0}b"), Err(ListingKeyError::Control));
        assert_eq!(
            ListingKey::new("x".repeat(256)),
            Err(ListingKeyError::TooLong(256))
        );
        // Characters, not bytes.
        assert!(ListingKey::new("é".repeat(255)).is_ok());
        assert!(serde_json::from_str::<ListingKey>("\"\"").is_err());
        assert_eq!(
            serde_json::to_string(&ListingKey::new("k/1").unwrap()).unwrap(),
            "\"k/1\""
        );
    }

    #[test]
    fn a_sequence_is_from_one_to_the_largest_bigint() {
        assert_eq!(Sequence::try_from(0_i64), Err(SequenceError(0)));
        assert_eq!(Sequence::try_from(-3_i64), Err(SequenceError(-3)));
        assert_eq!(Sequence::try_from(i64::MAX).map(i64::from), Ok(i64::MAX));
        assert!(Sequence::try_from(u64::MAX).is_err());
        assert!(serde_json::from_str::<Sequence>("0").is_err());
        assert_eq!(serde_json::from_str::<Sequence>("7").unwrap().get(), 7);
        assert_eq!(
            serde_json::to_string(&Sequence::try_from(1_u64).unwrap()).unwrap(),
            "1"
        );
    }
}
