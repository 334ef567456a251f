//! NATS subject layout, listing-key encoding and partitioning.
//!
//! ```text
//! {prefix}.listing.{partition}.{listing-token}.{EventType}
//! ```
//! - everything: `{prefix}.listing.>`
//! - one partition (what a consumer replica owns): `{prefix}.listing.{p}.>`
//! - one listing: `{prefix}.listing.*.{token}.*`
//! - one event type: `{prefix}.listing.*.*.ListingPriceChanged`
//!
//! `partition = fnv1a32(UTF-8 bytes of ListingKey) mod partitions`; the partition count is
//! fixed for the life of a stream (changing it moves listings between partitions).
//! A listing token is the key with every byte outside `[A-Za-z0-9_-]` written as `~XX`
//! (uppercase hex): injective, readable for UUID keys, and never a NATS wildcard or separator.

use std::fmt::Write as _;

/// FNV-1a, 32 bit: tiny, stable across languages and releases (unlike `std`'s hasher).
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// The partition of a listing.
pub fn partition_of(listing_key: &str, partitions: u32) -> u32 {
    fnv1a32(listing_key.as_bytes()) % partitions.max(1)
}

/// Encodes a listing key as one subject token.
pub fn encode_key(listing_key: &str) -> String {
    let mut token = String::with_capacity(listing_key.len());
    for byte in listing_key.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            token.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(token, "~{byte:02X}");
        }
    }
    token
}

/// Decodes a token made by [`encode_key`]; `None` if it is not one.
pub fn decode_key(token: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(token.len());
    let mut iter = token.bytes();
    while let Some(byte) = iter.next() {
        if byte == b'~' {
            let hex = [iter.next()?, iter.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            if hex.bytes().any(|b| b.is_ascii_lowercase()) {
                return None;
            }
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
        } else if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            bytes.push(byte);
        } else {
            return None;
        }
    }
    String::from_utf8(bytes).ok()
}

/// The subjects of one deployment (the prefix lets tests and tenants share a server).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectLayout {
    prefix: String,
    partitions: u32,
}

impl SubjectLayout {
    /// `prefix` must be one or more NATS tokens without wildcards; `partitions >= 1`.
    pub fn new(prefix: impl Into<String>, partitions: u32) -> Self {
        Self {
            prefix: prefix.into(),
            partitions: partitions.max(1),
        }
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    pub fn partition_of(&self, listing_key: &str) -> u32 {
        partition_of(listing_key, self.partitions)
    }

    /// The subject an event of `listing_key` is published on.
    pub fn event_subject(&self, listing_key: &str, event_type: &str) -> String {
        format!(
            "{}.listing.{}.{}.{}",
            self.prefix,
            self.partition_of(listing_key),
            encode_key(listing_key),
            event_type
        )
    }

    /// Every listing event.
    pub fn all(&self) -> String {
        format!("{}.listing.>", self.prefix)
    }

    /// One partition.
    pub fn partition_filter(&self, partition: u32) -> String {
        format!("{}.listing.{partition}.>", self.prefix)
    }

    /// One listing.
    pub fn listing_filter(&self, listing_key: &str) -> String {
        format!(
            "{}.listing.{}.{}.*",
            self.prefix,
            self.partition_of(listing_key),
            encode_key(listing_key)
        )
    }

    /// One event type.
    pub fn event_type_filter(&self, event_type: &str) -> String {
        format!("{}.listing.*.*.{event_type}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_encode_to_one_safe_token_and_back() {
        for key in [
            "6f1c2f7e-93c4-4c55-9f5e-0d7b3f0f6a11",
            "MLS.123 *>",
            "~7E",
            "é",
            "a~b",
        ] {
            let token = encode_key(key);
            assert!(!token.is_empty());
            assert!(!token.contains(['.', '*', '>', ' ']), "{token}");
            assert_eq!(decode_key(&token).as_deref(), Some(key));
        }
        assert_eq!(encode_key("ab-9_Z"), "ab-9_Z");
        assert_eq!(encode_key("a.b"), "a~2Eb");
        assert_eq!(decode_key("a~2eb"), None, "only the canonical form decodes");
        assert_eq!(decode_key("a.b"), None);
    }

    #[test]
    fn partitions_are_stable_and_in_range() {
        // Pinned values: a subscriber in another language must compute the same.
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
        for i in 0..1000 {
            assert!(partition_of(&format!("key-{i}"), 8) < 8);
        }
    }

    #[test]
    fn subjects_match_their_filters() {
        let layout = SubjectLayout::new("keh", 8);
        let subject = layout.event_subject("L.1", "ListingCreated");
        let p = layout.partition_of("L.1");
        assert_eq!(subject, format!("keh.listing.{p}.L~2E1.ListingCreated"));
        assert_eq!(
            layout.listing_filter("L.1"),
            format!("keh.listing.{p}.L~2E1.*")
        );
        assert_eq!(layout.partition_filter(p), format!("keh.listing.{p}.>"));
        assert_eq!(
            layout.event_type_filter("ListingCreated"),
            "keh.listing.*.*.ListingCreated"
        );
    }
}
