//! Users, sign-in and sessions, API keys and the audit log: the auth core, which answers
//! with [`AuthError`] and knows nothing of HTTP responses. This module holds the service,
//! its lifecycle (key reloads, the `LISTEN keh_auth` follower) and the checks every part
//! shares; `verify` (credentials to principals, signing), `sessions` (sign-in, refresh,
//! sign-out), `users` (and the audit log) and `api_keys` hold the rest.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::AuthSettings;
use crate::error::AuthError;
use crate::keys::{KeyRing, VerifyError};
use crate::policy;
use crate::principal::{Principal, Role, Scope};
use crate::standing::{CHANNEL, Change, PING_EVERY, SILENCE, Standing, Standings};
use crate::tokens::{self, API_KEY_PREFIX, Audience, Claims, ISSUER};

mod api_keys;
mod sessions;
mod users;
mod verify;

/// Failed sign-ins an account may have before each next attempt must wait.
pub const FREE_SIGN_IN_FAILURES: i32 = 5;
/// The longest wait between sign-in attempts on one account: doubling from one second
/// after [`FREE_SIGN_IN_FAILURES`], capped so that a third party guessing on purpose
/// cannot keep the owner out for long.
pub const MAX_SIGN_IN_DELAY: Duration = Duration::from_secs(30);
/// How long a live-feed ticket is valid (it only has to last until the feed connects).
pub const FEED_TICKET_TTL: Duration = Duration::from_secs(60);

/// What sign-in and refresh return (OAuth 2.0 token response names).
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: String,
    pub user: User,
}

/// A user as administrators see it (never the password hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct User {
    pub user_id: Uuid,
    pub username: String,
    pub role: String,
    pub agent_key: Option<String>,
    pub office_key: Option<String>,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

/// A new user.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub role: Role,
    pub agent_key: Option<String>,
    pub office_key: Option<String>,
}

/// A change to a user; absent fields are unchanged.
#[derive(Clone, Debug, Default)]
pub struct UserChange {
    pub role: Option<Role>,
    pub agent_key: Option<Option<String>>,
    pub office_key: Option<Option<String>>,
    pub disabled: Option<bool>,
    pub password: Option<String>,
}

/// An API key as administrators see it (never the key itself after creation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct ApiKey {
    pub key_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// One administrative action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct AuditEntry {
    pub audit_id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
}

/// A database error: unavailable when the store cannot be reached, else internal (and
/// logged).
fn database(error: &sqlx::Error) -> AuthError {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            AuthError::Unavailable("the user store is unavailable; retry later")
        }
        _ => {
            tracing::error!(%error, "auth query failed");
            AuthError::Internal
        }
    }
}

fn invalid(field: &'static str, rule: &'static str, message: impl Into<String>) -> AuthError {
    AuthError::Invalid {
        field,
        rule,
        message: message.into(),
    }
}

fn unauthorized(detail: impl Into<String>) -> AuthError {
    AuthError::Unauthenticated(detail.into())
}

fn check_password(
    settings: &AuthSettings,
    password: &str,
    username: &str,
) -> Result<(), AuthError> {
    settings
        .password_policy
        .check(password, username)
        .map_err(|message| invalid("password", "weak", message))
}

fn check_key(field: &'static str, value: Option<&str>) -> Result<(), AuthError> {
    match value {
        Some(v) if v.trim().is_empty() || v.chars().count() > 255 || has_control(v) => {
            Err(invalid(
                field,
                "invalid-value",
                "must be 1 to 255 characters, none of them control characters",
            ))
        }
        _ => Ok(()),
    }
}

fn has_control(value: &str) -> bool {
    value.chars().any(char::is_control)
}

/// Hashes a password with argon2id, off the async runtime (it is deliberately slow).
pub async fn hash_password(password: String) -> Result<String, AuthError> {
    tokio::task::spawn_blocking(move || {
        let mut salt = [0_u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r)
    .map_err(|error| {
        tracing::error!(%error, "password hashing failed");
        AuthError::Internal
    })
}

/// Checks a password against a stored hash, off the async runtime.
async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// Compared against when a username is unknown, so that both failures take as long.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Hl0JZbcXSfRCh9nsMRnQ4QLHmSmEJiRPB1cmB3E2bLY";

#[derive(sqlx::FromRow)]
struct Credentials {
    user_id: Uuid,
    username: String,
    password_hash: String,
    role: String,
    agent_key: Option<String>,
    office_key: Option<String>,
    disabled: bool,
    token_epoch: i64,
}

#[derive(sqlx::FromRow)]
struct Session {
    token_id: Uuid,
    family_id: Uuid,
    revoked_at: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
}

/// The user store and token issuer.
#[derive(Clone)]
pub struct AuthService {
    pool: PgPool,
    settings: Arc<AuthSettings>,
    keys: Arc<KeyRing>,
    standings: Arc<Standings>,
    /// When the generated keys were last read again for a token naming an unknown key.
    reloaded: Arc<Mutex<Option<Instant>>>,
}

impl AuthService {
    /// A service with the keys `settings` configure, or, without `KEH_JWT_SECRET`, with no
    /// key until [`AuthService::start`] loads the installation's (enough for managing
    /// users; signing and verifying need `start`).
    pub fn new(pool: PgPool, settings: AuthSettings) -> Self {
        let keys = match &settings.jwt_secret {
            Some(secret) => KeyRing::configured(secret, &settings.previous_jwt_secrets),
            None => KeyRing::empty_generated(),
        };
        Self {
            keys: Arc::new(keys),
            settings: Arc::new(settings),
            standings: Arc::new(Standings::default()),
            reloaded: Arc::new(Mutex::new(None)),
            pool,
        }
    }

    /// The service of a running API: configured keys, or the installation's generated ones
    /// (made now if there are none yet); usernames stored before canonical keys existed get
    /// theirs.
    pub async fn start(pool: PgPool, settings: AuthSettings) -> Result<Self, sqlx::Error> {
        let service = Self::new(pool, settings);
        service.keys.load_or_make(&service.pool).await?;
        service.backfill_username_keys().await;
        Ok(service)
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Keeps the cached token state true: listens on `keh_auth` until `shutdown`, dropping
    /// what a change makes stale (and reading generated keys again after a rotation). While
    /// the listener is down nothing is cached, so every request reads the database.
    pub async fn watch(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let connect = async {
                let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
                listener.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let connected = tokio::select! {
                () = &mut shutdown => return,
                connected = connect => connected,
            };
            match connected {
                Ok(listener) => {
                    let stopped = self.follow(listener, shutdown.as_mut()).await;
                    self.standings.set_listening(false);
                    if stopped {
                        return;
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot listen for auth changes; retrying"),
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Applies the changes `listener` hears until it is lost or silent (`false`) or
    /// `shutdown` comes (`true`). Caches token state meanwhile.
    async fn follow(
        &self,
        mut listener: sqlx::postgres::PgListener,
        mut shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> bool {
        // The listener lives in a task of its own, so that no `select!` ever drops a
        // half-read notification; `None` says the connection was lost.
        let (sender, mut notifications) = tokio::sync::mpsc::channel(256);
        let reader = tokio::spawn(async move {
            loop {
                let next = listener
                    .try_recv()
                    .await
                    .ok()
                    .flatten()
                    .map(|n| n.payload().to_owned());
                let lost = next.is_none();
                if sender.send(next).await.is_err() || lost {
                    return;
                }
            }
        });
        self.standings.set_listening(true);
        self.reload_keys().await;
        let mut heard = Instant::now();
        let mut ping = tokio::time::interval(PING_EVERY);
        let stopped = loop {
            let received = tokio::select! {
                () = &mut shutdown => break true,
                _ = ping.tick() => {
                    if heard.elapsed() > SILENCE {
                        tracing::warn!("the auth change listener went silent; not caching token state until it is back");
                        break false;
                    }
                    // Best effort: a failed ping shows up as silence.
                    let _ = sqlx::query!("SELECT pg_notify($1, 'ping')", CHANNEL)
                        .execute(&self.pool)
                        .await;
                    continue;
                }
                received = notifications.recv() => received.flatten(),
            };
            let Some(payload) = received else {
                tracing::warn!(
                    "lost the auth change listener; not caching token state until it is back"
                );
                break false;
            };
            heard = Instant::now();
            if let Some(change) = Change::parse(&payload) {
                self.standings.forget(&change);
                if change == Change::Keys {
                    self.reload_keys().await;
                }
            }
        };
        reader.abort();
        stopped
    }

    async fn reload_keys(&self) {
        if let Err(error) = self.keys.reload(&self.pool).await {
            tracing::warn!(%error, "cannot read the signing keys");
        }
    }

    /// Reads generated keys again for a token naming a key this process does not know
    /// (a rotation it has not heard of yet), at most once a second.
    async fn reload_for_unknown_key(&self) -> bool {
        if !self.keys.is_generated() {
            return false;
        }
        let due = match self.reloaded.lock() {
            Ok(mut last) => {
                let due = last.is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
                if due {
                    *last = Some(Instant::now());
                }
                due
            }
            Err(_) => false,
        };
        if due {
            self.reload_keys().await;
        }
        due
    }
}
