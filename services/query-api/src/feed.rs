//! The live feed (`GET /api/v1/listing-events`, Server-Sent Events from the JetStream
//! stream), and what one client may cost: how many connections it may hold, and, without
//! credentials, how far back it may replay (each replayed event is read from the stream and
//! sent; a 100-byte request naming `last_event_id=0` would otherwise stream the whole
//! history).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aide::transform::TransformOperation;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use keh_auth::{Caller, Principal};
use keh_http::Problem;
use keh_http::docs::{self, Access, Describe as _, QueryParam};
use serde_json::{Value, json};

use crate::QueryApi;
use crate::params::{Params, invalid, schemas};

/// The limits (`KEH_FEED_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedLimits {
    /// Events an anonymous client may replay with `Last-Event-ID`.
    pub anonymous_replay: u64,
    /// Connections this process serves at once.
    pub max_streams: usize,
    /// Connections one caller (user, API key, anonymous address) may hold at once.
    pub max_per_caller: usize,
}

impl Default for FeedLimits {
    fn default() -> Self {
        Self {
            anonymous_replay: 10_000,
            max_streams: 1_000,
            max_per_caller: 8,
        }
    }
}

/// The open connections, per caller.
#[derive(Debug)]
pub struct FeedGate {
    limits: FeedLimits,
    open: Mutex<HashMap<String, usize>>,
}

/// One admitted connection; dropping it (the client went) frees its place.
#[derive(Debug)]
pub struct FeedPermit {
    gate: Arc<FeedGate>,
    key: String,
}

impl Drop for FeedPermit {
    fn drop(&mut self) {
        self.gate.with_open(|open| {
            if let Some(count) = open.get_mut(&self.key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    open.remove(&self.key);
                }
            }
        });
    }
}

impl FeedGate {
    pub fn new(limits: FeedLimits) -> Self {
        Self {
            limits,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn with_open<T>(&self, f: impl FnOnce(&mut HashMap<String, usize>) -> T) -> T {
        match self.open.lock() {
            Ok(mut guard) => f(&mut guard),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Admits one more connection of `caller`, or says why not: 429 when the caller holds
    /// its share, 503 when the process serves its most.
    pub fn admit(self: &Arc<Self>, caller: &Caller) -> Result<FeedPermit, Problem> {
        let key = caller.limit_key();
        self.with_open(|open| {
            let total: usize = open.values().sum();
            if total >= self.limits.max_streams {
                let mut problem = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "feed-full",
                    "Live feed full",
                    format!(
                        "this server serves {} live-feed connections at most; retry later",
                        self.limits.max_streams
                    ),
                );
                problem.retry_after_secs = Some(5);
                return Err(problem);
            }
            let count = open.entry(key.clone()).or_insert(0);
            if *count >= self.limits.max_per_caller {
                let mut problem = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too-many-feeds",
                    "Too many live-feed connections",
                    format!(
                        "a caller may hold {} live-feed connections at once; close one first",
                        self.limits.max_per_caller
                    ),
                );
                problem.retry_after_secs = Some(5);
                return Err(problem);
            }
            *count += 1;
            Ok(FeedPermit {
                gate: Arc::clone(self),
                key,
            })
        })
    }

    /// Checks a resume point against the stream's end (`end`, its last sequence): beyond it
    /// is a 400 (no such id was ever sent); an anonymous client further back than its replay
    /// allowance gets a 409 naming the ways to catch up.
    pub fn check_replay(&self, caller: &Caller, last_id: u64, end: u64) -> Result<(), Problem> {
        if last_id > end {
            return Err(Problem::bad_request(
                "invalid-last-event-id",
                format!("Last-Event-ID {last_id} is beyond the feed's last event ({end})"),
            )
            .with_field(
                "Last-Event-ID",
                "out-of-range",
                "not an id this feed has sent",
            ));
        }
        let behind = end - last_id;
        if matches!(caller.principal, Principal::Anonymous) && behind > self.limits.anonymous_replay
        {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "replay-too-deep",
                "Replay too deep",
                format!(
                    "{behind} events happened since Last-Event-ID {last_id}; without credentials the feed replays at most {}. Reconnect without Last-Event-ID and reload what you show (search with modified_since, or each listing's history), sign in (signed-in callers replay any depth), or read the NATS stream as a subscriber",
                    self.limits.anonymous_replay
                ),
            )
            .with_field(
                "Last-Event-ID",
                "too-old",
                "too far back for an anonymous client",
            ));
        }
        Ok(())
    }
}

fn event_types() -> Value {
    json!({"type": "string", "enum": keh_events::ListingEvent::TYPES})
}

fn stream_id() -> Value {
    json!({"type": "string", "pattern": "^[0-9]{1,19}$"})
}

fn credential() -> Value {
    json!({"type": "string", "minLength": 1})
}

/// What `GET /api/v1/listing-events` accepts.
const FEED_PARAMS: &[QueryParam] = &[
    QueryParam::new("listing_key", schemas::text, "Only this listing's events"),
    QueryParam::new("event_type", event_types, "Only this EventType"),
    QueryParam::new(
        "last_event_id",
        stream_id,
        "Resume after this id (as Last-Event-ID)",
    ),
    QueryParam::new(
        "ticket",
        credential,
        "A feed ticket (POST /api/v1/auth/feed-ticket; EventSource cannot send headers)",
    ),
    QueryParam::deprecated(
        "access_token",
        credential,
        "Deprecated (puts a bearer credential in URLs and logs): an access token; use ticket",
    ),
];

/// The documentation of `GET /api/v1/listing-events`.
pub(crate) fn live_feed_docs(op: TransformOperation<'_>) -> TransformOperation<'_> {
    op.named(
        "liveFeed",
        "Listings",
        "Live feed of listing events (Server-Sent Events; id = stream sequence, resumable with Last-Event-ID)",
    )
    .access(Access::Read)
    .queries(FEED_PARAMS)
    .param(docs::header(
        "Last-Event-ID",
        stream_id(),
        "Resume after this id",
    ))
    .answer(
        200,
        json!({"description": "An endless event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}),
    )
    .errors(&[403, 409])
}

/// `GET /api/v1/listing-events`: listing events as Server-Sent Events, from the JetStream
/// stream. `id` is the stream sequence: a client reconnecting with `Last-Event-ID` resumes
/// right after the last event it saw, missing and repeating nothing. Filters:
/// `listing_key`, `event_type`.
pub(crate) async fn live_feed(
    State(api): State<QueryApi>,
    caller: Caller,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, Problem> {
    caller.require_read()?;
    // `ticket` and `access_token` were read by the auth middleware (EventSource cannot send
    // headers).
    params.only(FEED_PARAMS)?;
    let listing_key = params.text("listing_key")?;
    let event_type = params.text("event_type")?;
    if let Some(t) = event_type
        && !keh_events::ListingEvent::TYPES.contains(&t)
    {
        return Err(invalid(
            "event_type",
            "invalid-value",
            &format!(
                "must be one of {}",
                keh_events::ListingEvent::TYPES.join(", ")
            ),
        ));
    }
    let last_id = match headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(params.text("last_event_id")?)
    {
        None => None,
        Some(raw) => Some(raw.trim().parse::<u64>().map_err(|_| {
            Problem::bad_request(
                "invalid-last-event-id",
                "Last-Event-ID must be an id this feed sent",
            )
            .with_field("Last-Event-ID", "invalid-value", "not a feed event id")
        })?),
    };
    let Some(jetstream) = api.shared.jetstream.clone() else {
        return Err(Problem::unavailable(
            "the live feed needs NATS, which this process is not connected to",
        ));
    };
    let filter = match (listing_key, event_type) {
        (Some(key), Some(t)) => format!(
            "{}{}",
            api.shared.layout.listing_filter(key).trim_end_matches('*'),
            t
        ),
        (Some(key), None) => api.shared.layout.listing_filter(key),
        (None, Some(t)) => api.shared.layout.event_type_filter(t),
        (None, None) => api.shared.layout.all(),
    };
    let deliver_policy = match last_id {
        Some(id) => async_nats::jetstream::consumer::DeliverPolicy::ByStartSequence {
            start_sequence: id.checked_add(1).ok_or_else(|| {
                Problem::bad_request(
                    "invalid-last-event-id",
                    "Last-Event-ID must be an id this feed sent",
                )
                .with_field(
                    "Last-Event-ID",
                    "invalid-value",
                    "not a feed event id",
                )
            })?,
        },
        None => async_nats::jetstream::consumer::DeliverPolicy::New,
    };
    // Counted before any work: beyond the limits nothing is read from the stream.
    let permit = api.shared.feed.admit(&caller)?;
    let mut stream = jetstream
        .get_stream(&api.shared.stream)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "live feed: stream unavailable");
            Problem::unavailable("the event stream is unavailable; retry later")
        })?;
    if let Some(id) = last_id {
        let end = stream
            .info()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "live feed: stream unavailable");
                Problem::unavailable("the event stream is unavailable; retry later")
            })?
            .state
            .last_sequence;
        api.shared.feed.check_replay(&caller, id, end)?;
    }
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: filter,
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "live feed: cannot create consumer");
            Problem::unavailable("the event stream is unavailable; retry later")
        })?;
    let messages = consumer.messages().await.map_err(|e| {
        tracing::warn!(error = %e, "live feed: cannot read");
        Problem::unavailable("the event stream is unavailable; retry later")
    })?;
    let ending = api.shared.shutdown.clone().cancelled_owned();
    Ok(Sse::new(events(messages, permit).take_until(ending))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// The feed's events; `permit` counts the connection until the client goes.
fn events(
    messages: async_nats::jetstream::consumer::pull::Ordered,
    permit: FeedPermit,
) -> impl Stream<Item = Result<Event, Infallible>> {
    messages.filter_map(move |message| {
        let _held = &permit;
        async move {
            let message = message
                .map_err(|e| tracing::warn!(error = %e, "live feed interrupted"))
                .ok()?;
            let sequence = message.info().ok()?.stream_sequence;
            let mut envelope: Value = serde_json::from_slice(&message.payload).ok()?;
            // The public stream is redacted by the relay; messages published before a
            // redaction rule existed are redacted here too.
            keh_events::public::redact_public(&mut envelope);
            let event_type = envelope
                .get("EventType")
                .and_then(Value::as_str)
                .unwrap_or("message")
                .to_owned();
            Some(Ok(Event::default()
                .id(sequence.to_string())
                .event(event_type)
                .data(envelope.to_string())))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(principal: Principal, address: &str) -> Caller {
        Caller {
            principal,
            address: address.to_owned(),
            ..Caller::default()
        }
    }

    #[test]
    fn connections_are_counted_per_caller_and_freed_when_dropped() {
        let gate = Arc::new(FeedGate::new(FeedLimits {
            anonymous_replay: 10,
            max_streams: 3,
            max_per_caller: 2,
        }));
        let a = caller(Principal::Anonymous, "ip:1");
        let b = caller(Principal::Anonymous, "ip:2");
        let first = gate.admit(&a).unwrap();
        let _second = gate.admit(&a).unwrap();
        assert_eq!(
            gate.admit(&a).unwrap_err().status,
            StatusCode::TOO_MANY_REQUESTS
        );
        let _third = gate.admit(&b).unwrap();
        assert_eq!(
            gate.admit(&b).unwrap_err().status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        drop(first);
        assert!(gate.admit(&a).is_ok());
    }

    #[test]
    fn anonymous_replay_is_bounded_and_ids_beyond_the_end_refused() {
        let gate = FeedGate::new(FeedLimits {
            anonymous_replay: 10,
            ..FeedLimits::default()
        });
        let anonymous = caller(Principal::Anonymous, "ip:1");
        let reader = caller(
            Principal::ApiKey {
                key_id: sqlx::types::Uuid::nil(),
                name: "r".into(),
                scopes: vec![],
            },
            "ip:1",
        );
        assert!(gate.check_replay(&anonymous, 90, 100).is_ok());
        assert_eq!(
            gate.check_replay(&anonymous, 89, 100).unwrap_err().status,
            StatusCode::CONFLICT
        );
        assert!(gate.check_replay(&reader, 0, 100).is_ok());
        assert_eq!(
            gate.check_replay(&reader, 101, 100).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }
}
