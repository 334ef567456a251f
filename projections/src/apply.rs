//! Applying events to the read model: idempotent, order-aware per listing.
//!
//! Each listing row remembers the last sequence applied (`version`). An event at or below it
//! is a duplicate and is skipped; an event beyond `version + 1` means events are missing, and
//! they are read from the event store (the source of truth) and applied first. Nothing here
//! depends on the order or the number of times events arrive, so redeliveries, a restarted
//! consumer and the rebuild all converge on the same rows.

use std::collections::{BTreeMap, HashMap};

use keh_events::envelope::EventEnvelope;
use keh_events::{ListingKey, Sequence};
use keh_listing::{Listing, ListingState};
use keh_store::outbox;
use sqlx::PgConnection;

mod write;

use write::{write_history, write_listings, write_media, write_open_houses};

/// What a batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub applied: u64,
    pub duplicates: u64,
    /// Events read from the store to fill gaps.
    pub repaired: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("reading the event store: {0}")]
    Store(#[from] outbox::ReadError),
    #[error("listing {0}: stored read-model state cannot be read: {1}")]
    State(ListingKey, serde_json::Error),
    #[error("listing {listing}: events {from}..{to} are not in the event store")]
    Missing {
        listing: ListingKey,
        from: u64,
        to: u64,
    },
}

impl ApplyError {
    /// Whether trying again can never help (the data is at fault, not a connection).
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Database(_) | Self::Store(outbox::ReadError::Database(_)) => false,
            Self::Store(outbox::ReadError::Undecodable { .. })
            | Self::State(..)
            | Self::Missing { .. } => true,
        }
    }
}

/// A batch's events by listing, each listing's in sequence order; a second copy of an
/// event in the batch is counted as a duplicate.
pub type ByListing = BTreeMap<ListingKey, BTreeMap<Sequence, EventEnvelope>>;

/// Groups `events` by listing (see [`ByListing`]).
pub fn by_listing(events: Vec<EventEnvelope>, outcome: &mut Applied) -> ByListing {
    let mut grouped = ByListing::new();
    for event in events {
        let slot = grouped.entry(event.listing_key.clone()).or_default();
        if slot.insert(event.sequence, event).is_some() {
            outcome.duplicates += 1;
        }
    }
    grouped
}

/// Hands `step` each of one listing's events that follow `version` (the last sequence
/// applied, 0 for none), in order: duplicates are counted and skipped, and events missing
/// before one are read from the event store (the source of truth) and handed over first.
/// Returns the last sequence handed over (`None`: nothing new).
pub async fn in_order(
    connection: &mut PgConnection,
    key: &ListingKey,
    mut version: u64,
    events: BTreeMap<Sequence, EventEnvelope>,
    outcome: &mut Applied,
    mut step: impl FnMut(EventEnvelope) -> Result<(), ApplyError>,
) -> Result<Option<Sequence>, ApplyError> {
    let mut last = None;
    for (sequence, event) in events {
        if sequence.get() <= version {
            outcome.duplicates += 1;
            continue;
        }
        if sequence.get() > version + 1 {
            let missing = outbox::listing_events(
                &mut *connection,
                key,
                Sequence::try_from(version).ok(),
                Sequence::try_from(sequence.get() - 1).ok(),
                None,
                event.partition,
            )
            .await?;
            for stored in missing {
                outcome.repaired += 1;
                version = stored.envelope.sequence.get();
                step(stored.envelope)?;
            }
            if version != sequence.get() - 1 {
                // The store does not have them either: the message cannot apply.
                return Err(ApplyError::Missing {
                    listing: key.clone(),
                    from: version + 1,
                    to: sequence.get() - 1,
                });
            }
        }
        version = sequence.get();
        last = Some(sequence);
        outcome.applied += 1;
        step(event)?;
    }
    Ok(last)
}

/// A validated schema name (the live one or a rebuild's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema(String);

impl Schema {
    /// Lower-case letters, digits and underscores only: it is spliced into SQL.
    pub fn new(name: &str) -> Option<Self> {
        let valid = !name.is_empty()
            && name.len() < 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        valid.then(|| Self(name.to_owned()))
    }

    pub fn live() -> Self {
        Self(crate::LIVE_SCHEMA.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Makes this schema's tables the ones the transaction's unqualified names mean (`SET
    /// LOCAL search_path`, bound rather than spliced): the read model's statements are
    /// written once, checked at build time against the live schema, and write into a
    /// rebuild's schema just the same. A transaction writing the live schema also holds the
    /// rebuild's swap lock shared until it ends, in the same statement: no batch straddles
    /// a swap (the rebuild takes the lock exclusively to swap).
    pub async fn choose(&self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        let path = format!("{}, public", self.0);
        if self.0 == crate::LIVE_SCHEMA {
            sqlx::query!(
                "SELECT set_config('search_path', $1, true), pg_advisory_xact_lock_shared($2)",
                path,
                crate::projector::SWAP_LOCK,
            )
            .fetch_one(connection)
            .await?;
        } else {
            sqlx::query_scalar!("SELECT set_config('search_path', $1, true)", path)
                .fetch_one(connection)
                .await?;
        }
        Ok(())
    }
}

/// Applies `events` inside the caller's transaction (`connection` is in one).
pub async fn apply(
    connection: &mut PgConnection,
    schema: &Schema,
    events: Vec<EventEnvelope>,
) -> Result<Applied, ApplyError> {
    let mut outcome = Applied::default();
    let by_listing = by_listing(events, &mut outcome);
    if by_listing.is_empty() {
        return Ok(outcome);
    }
    schema.choose(connection).await?;
    // Every row of the batch, locked at once in key order: concurrent appliers lock in the
    // same order (no deadlock), and a batch costs a handful of statements, not a few per event.
    let keys: Vec<&ListingKey> = by_listing.keys().collect();
    // As text, parsed straight into the typed state (no `serde_json::Value` tree first).
    let rows = sqlx::query!(
        r#"SELECT listing_key AS "listing_key: ListingKey", version AS "version: Sequence",
                  state::text AS "state!"
             FROM listings WHERE listing_key = ANY($1)
            ORDER BY listing_key FOR UPDATE"#,
        &keys as _,
    )
    .fetch_all(&mut *connection)
    .await?;
    let mut current: HashMap<ListingKey, (Sequence, String)> = rows
        .into_iter()
        .map(|r| (r.listing_key, (r.version, r.state)))
        .collect();
    let mut changed = Vec::new();
    for (key, facts) in by_listing {
        if let Some(change) =
            advance(connection, &key, current.remove(&key), facts, &mut outcome).await?
        {
            changed.push(change);
        }
    }
    let written = write_listings(connection, &changed).await?;
    write_history(connection, &changed).await?;
    for change in changed
        .iter()
        .filter(|c| written.contains(c.state.listing_key.as_str()))
    {
        // A newer version already there (two appliers overlapped) is left alone.
        let touches = |types: &[&str]| {
            change
                .history
                .iter()
                .any(|f| types.contains(&f.event.event_type()))
        };
        // A new listing has neither media nor open houses: only their own events touch them.
        if touches(&["MediaAdded", "MediaRemoved", "MediaReordered"]) {
            write_media(connection, &change.state).await?;
        }
        if touches(&["OpenHouseScheduled", "OpenHouseCanceled"]) {
            write_open_houses(connection, &change.state).await?;
        }
    }
    Ok(outcome)
}

/// A listing moved forward by a batch.
struct Changed {
    state: ListingState,
    version: Sequence,
    history: Vec<EventEnvelope>,
}

/// Applies one listing's events to its current row (skipping duplicates, filling gaps from
/// the store). `None` when nothing new happened to it.
async fn advance(
    connection: &mut PgConnection,
    key: &ListingKey,
    row: Option<(Sequence, String)>,
    events: BTreeMap<Sequence, EventEnvelope>,
    outcome: &mut Applied,
) -> Result<Option<Changed>, ApplyError> {
    let (version, mut listing) = match row {
        Some((version, state)) => {
            let state: ListingState =
                serde_json::from_str(&state).map_err(|e| ApplyError::State(key.clone(), e))?;
            (version.get(), Listing::from_state(state))
        }
        None => (0, Listing::default()),
    };
    let mut history: Vec<EventEnvelope> = Vec::new();
    let last = in_order(connection, key, version, events, outcome, |event| {
        listing.apply_event(event.event.clone());
        history.push(event);
        Ok(())
    })
    .await?;
    let Some(version) = last else {
        return Ok(None);
    };
    Ok(listing.state().cloned().map(|state| Changed {
        state,
        version,
        history,
    }))
}
