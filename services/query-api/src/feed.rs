//! What one live-feed client may cost: how many connections it may hold, and, without
//! credentials, how far back it may replay (each replayed event is read from the stream and
//! sent; a 100-byte request naming `last_event_id=0` would otherwise stream the whole
//! history).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use keh_auth::{Caller, Principal};
use keh_http::Problem;

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
