//! Group commit of concurrent appends: every command that has decided its events hands them
//! here, and one task writes all the appends waiting at that moment in one transaction (one
//! `INSERT` of every row, one WAL flush), instead of one transaction each.
//!
//! The rows are the very rows postgres-es writes (same table, columns and values), and the
//! table's defaults and trigger (event id, global order, idempotency keys, `ListingId`
//! reservations) run for each of them as they do for postgres-es's own inserts. A listing
//! appears at most once per transaction. Anything that makes the transaction fail — another
//! writer got to a sequence first, a taken `ListingId`, two attempts of one request (one
//! `Idempotency-Key`, each with its own new listing), the database going away — sends
//! every append of the batch back to its command, which commits it alone through
//! postgres-es: so each keeps exactly the outcome (and error) it would have had alone.

use std::collections::{HashMap, HashSet};

use cqrs_es::DomainEvent;
use keh_events::ListingEvent;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

/// One command's events, as rows of the `events` table.
pub(crate) struct Append {
    pub(crate) listing_key: String,
    /// The sequence of the listing's last stored event (the first row is the next one).
    pub(crate) after: usize,
    pub(crate) events: Vec<ListingEvent>,
    pub(crate) metadata: HashMap<String, String>,
}

/// What became of an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Appended {
    /// Committed.
    Committed,
    /// Not written (the group's statement was refused for another reason than a listing's
    /// sequence): commit it alone.
    Alone,
    /// Not written: decided on a state that another append has replaced meanwhile (one
    /// ahead of it in the same group, or one that took its sequence first). Decide again on
    /// the stored state; this answer comes only once the append ahead of it is done.
    Stale,
    /// The connection failed with the outcome unknown (at `COMMIT`, say): the command must
    /// not be tried again blindly; its client retries (with its `Idempotency-Key`).
    Unknown,
}

struct Request {
    append: Append,
    done: oneshot::Sender<Appended>,
}

/// The handle commands append through.
#[derive(Clone)]
pub(crate) struct Appender {
    requests: mpsc::Sender<Request>,
}

impl Appender {
    /// Starts the appending task (it ends when the last handle is dropped).
    pub(crate) fn start(pool: PgPool) -> Self {
        let (requests, queue) = mpsc::channel(1024);
        tokio::spawn(run(pool, queue));
        Self { requests }
    }

    /// Appends in the next group transaction.
    pub(crate) async fn append(&self, append: Append) -> Appended {
        let (done, outcome) = oneshot::channel();
        if self.requests.send(Request { append, done }).await.is_err() {
            return Appended::Alone;
        }
        outcome.await.unwrap_or(Appended::Unknown)
    }
}

async fn run(pool: PgPool, mut queue: mpsc::Receiver<Request>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while let Ok(next) = queue.try_recv() {
            batch.push(next);
        }
        // A listing once per transaction: a second append of one was decided on the same
        // state as the first, so it is stale once the first is written (it is told so
        // after the write, and decides again on the stored state; sent to commit alone at
        // once, it would race the group, and where it won the whole group failed).
        let mut listings = HashSet::new();
        let mut group = Vec::with_capacity(batch.len());
        let mut stale = Vec::new();
        for request in batch {
            if listings.insert(request.append.listing_key.clone()) {
                group.push(request);
            } else {
                stale.push(request);
            }
        }
        // An append whose sequence another writer took is stale: the group is written
        // again without it (the others are still good).
        let outcome = loop {
            match write(&pool, &group).await {
                Ok(()) => break Appended::Committed,
                Err(Failure::Taken(key)) => {
                    tracing::debug!(listing = %key, "an append of the group was stale; writing the others again");
                    let (taken, rest): (Vec<Request>, Vec<Request>) = group
                        .into_iter()
                        .partition(|request| request.append.listing_key == key);
                    stale.extend(taken);
                    group = rest;
                    if group.is_empty() {
                        break Appended::Committed;
                    }
                }
                // The statement was refused: nothing was written.
                Err(Failure::Refused(error)) => {
                    tracing::debug!(%error, appends = group.len(), "group append refused; each command commits alone");
                    break Appended::Alone;
                }
                Err(Failure::Unknown(error)) => {
                    tracing::warn!(%error, appends = group.len(), "group append failed with its outcome unknown");
                    break Appended::Unknown;
                }
            }
        };
        for request in group {
            let _ = request.done.send(outcome);
        }
        for request in stale {
            let _ = request.done.send(Appended::Stale);
        }
    }
}

/// Why a group was not written.
enum Failure {
    /// Nothing was written: this listing's next sequence was already taken (by another
    /// writer, or a replica); that one append is stale.
    Taken(String),
    /// Before anything could be committed: the database refused the statement (a unique
    /// key, the trigger), or a value could not be encoded.
    Refused(sqlx::Error),
    /// The connection failed: the transaction may or may not have committed.
    Unknown(sqlx::Error),
}

/// Writes every row of `group` in one transaction (one statement).
async fn write(pool: &PgPool, group: &[Request]) -> Result<(), Failure> {
    let refused = |e: sqlx::Error| match e {
        sqlx::Error::Database(_) => taken(&e, group).map_or(Failure::Refused(e), Failure::Taken),
        sqlx::Error::Encode(_) => Failure::Refused(e),
        other => Failure::Unknown(other),
    };
    let rows: usize = group.iter().map(|r| r.append.events.len()).sum();
    let mut ids = Vec::with_capacity(rows);
    let mut sequences = Vec::with_capacity(rows);
    let mut types = Vec::with_capacity(rows);
    let mut versions = Vec::with_capacity(rows);
    let mut payloads = Vec::with_capacity(rows);
    let mut metadata = Vec::with_capacity(rows);
    for Request { append, .. } in group {
        let meta = serde_json::to_string(&append.metadata)
            .map_err(|e| Failure::Refused(sqlx::Error::Encode(Box::new(e))))?;
        for (offset, event) in append.events.iter().enumerate() {
            ids.push(append.listing_key.clone());
            sequences.push(
                i64::try_from(append.after + offset + 1)
                    .map_err(|e| Failure::Refused(sqlx::Error::Encode(Box::new(e))))?,
            );
            types.push(DomainEvent::event_type(event));
            versions.push(DomainEvent::event_version(event));
            payloads.push(
                serde_json::to_string(event)
                    .map_err(|e| Failure::Refused(sqlx::Error::Encode(Box::new(e))))?,
            );
            metadata.push(meta.clone());
        }
    }
    // Nothing is sent before a connection is had: failing to get one is a refusal.
    let mut connection = pool.acquire().await.map_err(Failure::Refused)?;
    // One statement, outside `BEGIN`/`COMMIT`: its own transaction, committed before the
    // answer arrives, in one round trip instead of three. A database error means it rolled
    // back (refused); a lost connection leaves its outcome unknown.
    // Through `jsonb` to `json`, as postgres-es's bound `serde_json::Value` (a `jsonb`
    // parameter) arrives in the `json` columns: the stored text is the same either way.
    sqlx::query!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'Listing', id, seq, ty, ver, p::jsonb::json, m::jsonb::json
           FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[])
                AS r(id, seq, ty, ver, p, m)",
        &ids,
        &sequences,
        &types,
        &versions,
        &payloads,
        &metadata,
    )
    .execute(&mut *connection)
    .await
    .map(|_| ())
    .map_err(refused)
}

/// The listing of `group` whose sequence `error` says was taken: a unique violation of the
/// events' primary key, whose detail names the key (`Key (aggregate_type, aggregate_id,
/// sequence)=(Listing, {key}, {n}) already exists.`), matched against the group's listings
/// rather than parsed, as a key may hold commas.
fn taken(error: &sqlx::Error, group: &[Request]) -> Option<String> {
    let sqlx::Error::Database(database) = error else {
        return None;
    };
    if database.constraint() != Some("events_pkey") {
        return None;
    }
    let detail = database
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?
        .detail()?;
    let mut named = group
        .iter()
        .map(|r| &r.append.listing_key)
        .filter(|key| detail.contains(&format!("=(Listing, {key}, ")));
    let key = named.next()?;
    named.next().is_none().then(|| key.clone())
}
