//! The envelope a subscriber receives: the event plus who, when, where in the order, and why.
//!
//! Published as the JSON body of each JetStream message; the most useful fields are repeated
//! as headers ([`headers`]) so that routers and filters need not parse the body.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{ListingKey, Sequence};
use crate::listing::ListingEvent;

/// One published listing event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "PascalCase")]
pub struct EventEnvelope {
    /// Unique id of this event; also the JetStream `Nats-Msg-Id`.
    pub event_id: Uuid,
    /// Payload schema version of `Data` (see `SCHEMA_VERSION`).
    pub schema_version: String,
    /// RESO `ListingKey` of the listing (the aggregate id).
    pub listing_key: ListingKey,
    /// 1-based position of this event in its listing's history; gapless per listing.
    pub sequence: Sequence,
    /// Position in the store's global order (increasing, not gapless: rolled-back
    /// transactions leave holes). Use it to order across listings, never to detect loss.
    pub global_position: i64,
    /// When the fact happened in business terms (may lie in the past).
    pub effective_at: DateTime<Utc>,
    /// When the event was committed to the store.
    pub recorded_at: DateTime<Utc>,
    /// Who issued the command. The internal stream names them (`user:NAME`,
    /// `api-key:NAME:ID`, `system:seed`, `system:import`); the public stream and the live
    /// feed carry only the kind (`user`, `api-key`, `system:…`, `anonymous`).
    pub actor: String,
    /// Ties together everything caused by one user action (from `X-Correlation-Id` or new).
    pub correlation_id: Uuid,
    /// The command (HTTP request) that produced this event.
    pub causation_id: Uuid,
    /// The partition of the listing (see the subject layout).
    pub partition: u32,
    /// The event itself: `EventType` and `Data`.
    #[serde(flatten)]
    pub event: ListingEvent,
}

/// Per-command metadata stored with each event (the `metadata` column) and carried into the
/// envelope. Keys are stable: they are read back by the relay and by consumers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    pub actor: String,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    /// `Idempotency-Key` scoped to the actor; recorded atomically with the events.
    pub idempotency_scope: Option<String>,
    /// Fingerprint of the request that used the idempotency key.
    pub request_hash: Option<String>,
    /// HTTP status the first answer had (201 for a create, else 200).
    pub response_status: Option<u16>,
    /// W3C trace context of the command, carried on to the consumers.
    pub traceparent: Option<String>,
}

impl Metadata {
    const ACTOR: &'static str = "actor";
    const CORRELATION: &'static str = "correlation_id";
    const CAUSATION: &'static str = "causation_id";
    const IDEMPOTENCY: &'static str = "idempotency_scope";
    const REQUEST_HASH: &'static str = "request_hash";
    const STATUS: &'static str = "response_status";
    const TRACEPARENT: &'static str = "traceparent";

    /// The map form stored by the event store.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::from([
            (Self::ACTOR.to_owned(), self.actor.clone()),
            (
                Self::CORRELATION.to_owned(),
                self.correlation_id.to_string(),
            ),
            (Self::CAUSATION.to_owned(), self.causation_id.to_string()),
        ]);
        let optional = [
            (Self::IDEMPOTENCY, self.idempotency_scope.clone()),
            (Self::REQUEST_HASH, self.request_hash.clone()),
            (Self::STATUS, self.response_status.map(|s| s.to_string())),
            (Self::TRACEPARENT, self.traceparent.clone()),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                map.insert(key.to_owned(), value);
            }
        }
        map
    }

    /// Reads the stored map back; missing or unparsable ids become the nil UUID rather than
    /// failing, so that a damaged metadata column never blocks publication of an event.
    pub fn from_map(map: &HashMap<String, String>) -> Self {
        let uuid = |key: &str| {
            map.get(key)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(Uuid::nil)
        };
        Self {
            actor: map
                .get(Self::ACTOR)
                .cloned()
                .unwrap_or_else(|| "anonymous".to_owned()),
            correlation_id: uuid(Self::CORRELATION),
            causation_id: uuid(Self::CAUSATION),
            idempotency_scope: map.get(Self::IDEMPOTENCY).cloned(),
            request_hash: map.get(Self::REQUEST_HASH).cloned(),
            response_status: map.get(Self::STATUS).and_then(|s| s.parse().ok()),
            traceparent: map.get(Self::TRACEPARENT).cloned(),
        }
    }
}

/// Header names set on every published message.
pub mod headers {
    /// JetStream de-duplication id: the event id.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    pub const EVENT_TYPE: &str = "KEH-Event-Type";
    pub const SCHEMA_VERSION: &str = "KEH-Schema-Version";
    pub const LISTING_KEY: &str = "KEH-Listing-Key";
    pub const SEQUENCE: &str = "KEH-Sequence";
    pub const GLOBAL_POSITION: &str = "KEH-Global-Position";
    pub const EFFECTIVE_AT: &str = "KEH-Effective-At";
    pub const RECORDED_AT: &str = "KEH-Recorded-At";
    pub const CORRELATION_ID: &str = "KEH-Correlation-Id";
    pub const CAUSATION_ID: &str = "KEH-Causation-Id";
    pub const CONTENT_TYPE: &str = "Content-Type";
    pub const TRACEPARENT: &str = "traceparent";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_through_the_stored_map() {
        let metadata = Metadata {
            actor: "anonymous".into(),
            correlation_id: Uuid::new_v4(),
            causation_id: Uuid::new_v4(),
            idempotency_scope: Some("anonymous:abc".into()),
            request_hash: Some("h".into()),
            response_status: Some(201),
            traceparent: None,
        };
        assert_eq!(Metadata::from_map(&metadata.to_map()), metadata);
    }

    #[test]
    fn envelope_round_trips_with_flattened_event() {
        let json = r#"{"EventId":"6f1c2f7e-93c4-4c55-9f5e-0d7b3f0f6a11","SchemaVersion":"1",
            "ListingKey":"k","Sequence":2,"GlobalPosition":7,"EffectiveAt":"2026-01-02T00:00:00Z",
            "RecordedAt":"2026-01-03T00:00:00Z","Actor":"anonymous",
            "CorrelationId":"6f1c2f7e-93c4-4c55-9f5e-0d7b3f0f6a11","CausationId":"6f1c2f7e-93c4-4c55-9f5e-0d7b3f0f6a11",
            "Partition":3,"EventType":"ListingPriceChanged","Data":{"ChangeType":"Price Change",
            "PreviousListPrice":500000,"ListPrice":489999.99,"PriceChangeTimestamp":"2026-01-02T00:00:00Z"}}"#;
        let envelope: EventEnvelope = serde_json::from_str(json).unwrap();
        assert_eq!(envelope.event.event_type(), "ListingPriceChanged");
        let again = serde_json::to_string(&envelope).unwrap();
        assert!(again.contains(r#""ListPrice":489999.99"#), "{again}");
        assert_eq!(
            serde_json::from_str::<EventEnvelope>(&again).unwrap(),
            envelope
        );
    }
}
