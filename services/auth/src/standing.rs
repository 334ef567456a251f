//! The state behind an access token, checked on every request: does its user still exist,
//! is it enabled, is the token's epoch still the user's, is its session still open.
//!
//! Reading that from PostgreSQL on every request would double the cost of a command, so it
//! is cached per (user, session) — but only while this process listens on the `keh_auth`
//! channel, on which the database announces every change (triggers of migration 0009): a
//! change drops the affected entries at once, on every replica. Entries also expire after
//! [`CACHE_TTL`], the listener proves itself alive by hearing its own pings, and nothing is
//! cached while it is down or silent, so a lost notification can never keep a revoked token
//! alive for long. The state is always read from the primary (the
//! pool every command uses), never from a replica that may lag.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use uuid::Uuid;

/// How long an entry is trusted without a notification.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// How often a listener pings itself through the database; a listener that has heard
/// nothing (not even its own pings) for [`SILENCE`] is taken for lost, and nothing is
/// cached until it is back (a half-open connection, a failover, or a pooler that does not
/// pass notifications on would otherwise fail silently).
pub const PING_EVERY: Duration = Duration::from_millis(500);
pub const SILENCE: Duration = Duration::from_millis(1_500);
/// The channel the database announces changes on.
pub const CHANNEL: &str = "keh_auth";
/// Beyond this many entries the cache starts over (a bound on memory, not an eviction
/// policy: entries are cheap to read again).
const MAX_ENTRIES: usize = 100_000;

/// What the database says about a token's user and session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// No such user (deleted, or never existed).
    NoUser,
    User {
        epoch: i64,
        disabled: bool,
        session_open: bool,
    },
}

/// A change announced on [`CHANNEL`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    User(Uuid),
    Session(Uuid),
    Keys,
}

impl Change {
    pub fn parse(payload: &str) -> Option<Self> {
        match payload.split_once(':') {
            Some(("user", id)) => id.parse().ok().map(Self::User),
            Some(("session", id)) => id.parse().ok().map(Self::Session),
            None if payload == "keys" => Some(Self::Keys),
            _ => None,
        }
    }
}

/// The cache of standings.
#[derive(Debug, Default)]
pub struct Standings {
    entries: Mutex<HashMap<(Uuid, Uuid), (Standing, Instant)>>,
    listening: AtomicBool,
    /// Moves with every change applied, so a read that raced a change is not cached.
    generation: AtomicU64,
}

impl Standings {
    /// The standing of `user` with session `session`, from the cache or the database.
    pub async fn get(
        &self,
        pool: &PgPool,
        user: Uuid,
        session: Uuid,
    ) -> Result<Standing, sqlx::Error> {
        let listening = self.listening.load(Ordering::Acquire);
        let generation = self.generation.load(Ordering::Acquire);
        if listening && let Some(standing) = self.cached(user, session) {
            return Ok(standing);
        }
        let row = sqlx::query!(
            r#"SELECT u.token_epoch, u.disabled,
                    EXISTS (SELECT 1 FROM auth.refresh_tokens t
                             WHERE t.family_id = $2 AND t.user_id = u.user_id AND t.revoked_at IS NULL)
                    AS "session_open!"
               FROM auth.users u WHERE u.user_id = $1"#,
            user,
            session,
        )
        .fetch_optional(pool)
        .await?
        .map(|r| (r.token_epoch, r.disabled, r.session_open));
        let standing = row.map_or(Standing::NoUser, |(epoch, disabled, session_open)| {
            Standing::User {
                epoch,
                disabled,
                session_open,
            }
        });
        // Only cache what was read while listening: a change made before the listener
        // (re)connected may not have been announced to us.
        if listening && self.listening.load(Ordering::Acquire) {
            self.with_entries(|entries| {
                if self.generation.load(Ordering::Acquire) != generation {
                    return;
                }
                if entries.len() >= MAX_ENTRIES {
                    entries.clear();
                }
                entries.insert((user, session), (standing, Instant::now()));
            });
        }
        Ok(standing)
    }

    fn cached(&self, user: Uuid, session: Uuid) -> Option<Standing> {
        self.with_entries(|entries| {
            entries
                .get(&(user, session))
                .filter(|(_, at)| at.elapsed() < CACHE_TTL)
                .map(|(standing, _)| *standing)
        })
    }

    fn with_entries<T>(
        &self,
        f: impl FnOnce(&mut HashMap<(Uuid, Uuid), (Standing, Instant)>) -> T,
    ) -> T {
        match self.entries.lock() {
            Ok(mut guard) => f(&mut guard),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Applies an announced change.
    pub fn forget(&self, change: &Change) {
        self.with_entries(|entries| {
            self.generation.fetch_add(1, Ordering::AcqRel);
            match change {
                Change::User(id) => entries.retain(|(user, _), _| user != id),
                Change::Session(id) => entries.retain(|(_, session), _| session != id),
                Change::Keys => {}
            }
        });
    }

    /// The listener is (re)connected (`true`) or lost (`false`); either way, what was
    /// cached may have missed a change.
    pub fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Release);
        self.with_entries(|entries| {
            self.generation.fetch_add(1, Ordering::AcqRel);
            entries.clear();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse() {
        let id = Uuid::new_v4();
        assert_eq!(Change::parse(&format!("user:{id}")), Some(Change::User(id)));
        assert_eq!(
            Change::parse(&format!("session:{id}")),
            Some(Change::Session(id))
        );
        assert_eq!(Change::parse("keys"), Some(Change::Keys));
        assert_eq!(Change::parse("user:nope"), None);
        assert_eq!(Change::parse("other"), None);
    }
}
