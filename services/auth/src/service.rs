//! Users, sign-in and sessions, API keys and the audit log.

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
                    let _ = sqlx::query("SELECT pg_notify($1, 'ping')")
                        .bind(CHANNEL)
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

    /// The principal behind a bearer credential (an access token or an API key).
    pub async fn authenticate(&self, credential: &str) -> Result<Principal, AuthError> {
        if credential.starts_with(API_KEY_PREFIX) {
            let row: Option<(Uuid, String, Vec<String>)> = sqlx::query_as(
                "SELECT key_id, name, scopes FROM auth.api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
            )
            .bind(tokens::digest(credential))
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| database(&e))?;
            let (key_id, name, scopes) =
                row.ok_or_else(|| unauthorized("the API key is unknown or revoked"))?;
            return Ok(Principal::ApiKey {
                key_id,
                name,
                scopes: scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
            });
        }
        self.verify(credential, Audience::Api).await
    }

    /// The user behind a live-feed ticket (`?ticket=`).
    pub async fn authenticate_ticket(&self, ticket: &str) -> Result<Principal, AuthError> {
        self.verify(ticket, Audience::Feed).await
    }

    /// Checks a token's signature, expiry and audience, then the state behind it: its user
    /// exists and is enabled, its epoch is the user's, its session is open.
    async fn verify(&self, token: &str, audience: Audience) -> Result<Principal, AuthError> {
        let what = match audience {
            Audience::Api => "access token",
            Audience::Feed => "feed ticket",
        };
        let mut verified = self.keys.verify(token, audience);
        if matches!(verified, Err(VerifyError::UnknownKey)) && self.reload_for_unknown_key().await {
            verified = self.keys.verify(token, audience);
        }
        let claims = verified.map_err(|error| match error {
            VerifyError::Expired => unauthorized(format!(
                "the {what} has expired; refresh it or sign in again"
            )),
            VerifyError::UnknownKey | VerifyError::Invalid => {
                unauthorized(format!("the {what} is not valid"))
            }
        })?;
        let invalid = || unauthorized(format!("the {what} is not valid"));
        let user_id = Uuid::parse_str(&claims.sub).map_err(|_| invalid())?;
        let session = Uuid::parse_str(&claims.sid).map_err(|_| invalid())?;
        let standing = self
            .standings
            .get(&self.pool, user_id, session)
            .await
            .map_err(|e| database(&e))?;
        match standing {
            Standing::NoUser => Err(unauthorized(format!(
                "the {what} is for a user that does not exist"
            ))),
            Standing::User { disabled: true, .. } => Err(unauthorized("the account is disabled")),
            Standing::User { epoch, .. } if epoch != claims.ver => Err(unauthorized(
                "the account changed since this token was issued (role, keys or password); refresh it or sign in again",
            )),
            Standing::User {
                session_open: false,
                ..
            } => Err(unauthorized(
                "the session was signed out or revoked; sign in again",
            )),
            Standing::User { .. } => Ok(Principal::User {
                user_id,
                username: claims.name,
                role: claims.role,
                agent_key: claims.agent_key,
                office_key: claims.office_key,
                session,
                epoch: claims.ver,
            }),
        }
    }

    fn sign(
        &self,
        audience: Audience,
        c: &Credentials,
        role: Role,
        session: Uuid,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            iss: ISSUER.to_owned(),
            aud: audience.as_str().to_owned(),
            sub: c.user_id.to_string(),
            name: c.username.clone(),
            role,
            agent_key: c.agent_key.clone(),
            office_key: c.office_key.clone(),
            sid: session.to_string(),
            ver: c.token_epoch,
            iat: now,
            exp: now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
            jti: Uuid::new_v4().to_string(),
        };
        self.keys.sign(&claims).map_err(|error| {
            tracing::error!(%error, "signing a token failed");
            AuthError::Unavailable("no signing key is available yet; retry later")
        })
    }

    /// A live-feed ticket for a signed-in user: valid for [`FEED_TICKET_TTL`], only for
    /// `GET /api/v1/listing-events?ticket=`, and only while the user's session is.
    pub fn feed_ticket(&self, principal: &Principal) -> Result<String, AuthError> {
        let Principal::User {
            user_id,
            username,
            role,
            agent_key,
            office_key,
            session,
            epoch,
        } = principal
        else {
            return Err(AuthError::NoTicketNeeded);
        };
        let credentials = Credentials {
            user_id: *user_id,
            username: username.clone(),
            password_hash: String::new(),
            role: role.as_str().to_owned(),
            agent_key: agent_key.clone(),
            office_key: office_key.clone(),
            disabled: false,
            token_epoch: *epoch,
        };
        self.sign(
            Audience::Feed,
            &credentials,
            *role,
            *session,
            FEED_TICKET_TTL,
        )
    }

    /// Claims one sign-in attempt on the account with this key, counted as a failure until
    /// it succeeds; or, when the account must wait, how long. Claiming and counting are one
    /// statement, so parallel guesses cannot all pass a check made before any of them is
    /// counted: past [`FREE_SIGN_IN_FAILURES`] each claim pushes the next one back, twice as
    /// far each time, up to [`MAX_SIGN_IN_DELAY`]. Rows of names nobody has failed on for a
    /// day are cleared on the way.
    ///
    /// Times are the clock's when the row is claimed (`clock_timestamp()`), not the
    /// statement's start (`now()`): a claim that queued behind others for the row's lock
    /// compares the wait they left with the time it gets the row, so a guess that arrived
    /// within the free ones is not refused for having started before the one ahead of it.
    async fn claim_attempt(&self, key: &str) -> Result<Option<Duration>, AuthError> {
        let claimed: bool = sqlx::query_scalar(
            "WITH stale AS (
                 DELETE FROM auth.sign_in_failures
                  WHERE last_failure < now() - interval '1 day' AND username_key <> $1),
             claimed AS (
                 INSERT INTO auth.sign_in_failures AS f (username_key, failures, last_failure, blocked_until)
                 VALUES ($1, 1, clock_timestamp(), clock_timestamp())
                 ON CONFLICT (username_key) DO UPDATE SET
                     failures = f.failures + 1,
                     last_failure = clock_timestamp(),
                     blocked_until = clock_timestamp() + make_interval(secs =>
                         CASE WHEN f.failures + 1 > $2
                              THEN least($3, power(2, least(f.failures - $2, 20)))
                              ELSE 0 END)
                  WHERE f.blocked_until <= clock_timestamp()
                 RETURNING 1)
             SELECT EXISTS (SELECT 1 FROM claimed)",
        )
        .bind(key)
        .bind(FREE_SIGN_IN_FAILURES)
        .bind(MAX_SIGN_IN_DELAY.as_secs_f64())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| database(&e))?;
        if claimed {
            return Ok(None);
        }
        // Refused: the row is in a wait. How long is read afresh, as the statement above
        // sees the table as it was when it started, possibly before a concurrent first
        // failure inserted the row. A row gone meanwhile (its owner signed in) still
        // refused this attempt: the caller may retry at once.
        let wait: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM blocked_until - clock_timestamp())::float8
               FROM auth.sign_in_failures WHERE username_key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| database(&e))?;
        Ok(Some(
            Duration::try_from_secs_f64(wait.unwrap_or_default().max(0.0))
                .unwrap_or(MAX_SIGN_IN_DELAY),
        ))
    }

    /// Signs a user in: an access token and a new session's refresh token. An account with
    /// too many recent failures must wait first (429), whichever address the attempts come
    /// from; a success clears its count.
    pub async fn sign_in(&self, username: &str, password: &str) -> Result<TokenPair, AuthError> {
        let refused = || unauthorized("the username or the password is wrong");
        // No stored username has control characters (and PostgreSQL refuses NUL) or is
        // longer than a username may be: such a name is wrong, and is not counted.
        if has_control(username) || username.chars().count() > policy::MAX_USERNAME {
            verify_password(password.to_owned(), DUMMY_HASH.to_owned()).await;
            return Err(refused());
        }
        let key = policy::username_key(username);
        if let Some(wait) = self.claim_attempt(&key).await? {
            return Err(AuthError::Throttled(wait));
        }
        // An exact spelling first: two names stored before canonical keys existed may share
        // a key, and each must still reach its own account.
        let found: Option<Credentials> = sqlx::query_as(
            "SELECT user_id, username, password_hash, role, agent_key, office_key, disabled, token_epoch
               FROM auth.users
              WHERE username_key = $1 OR username = $2
              ORDER BY (username = $2) DESC, username_key NULLS LAST LIMIT 1",
        )
        .bind(&key)
        .bind(username.trim())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| database(&e))?;
        let hash = found
            .as_ref()
            .map_or_else(|| DUMMY_HASH.to_owned(), |c| c.password_hash.clone());
        let matches = verify_password(password.to_owned(), hash).await;
        let Some(credentials) = found.filter(|c| matches && !c.disabled) else {
            return Err(refused());
        };
        sqlx::query("DELETE FROM auth.sign_in_failures WHERE username_key = $1")
            .bind(&key)
            .execute(&self.pool)
            .await
            .map_err(|e| database(&e))?;
        let mut connection = self.pool.acquire().await.map_err(|e| database(&e))?;
        self.issue(&mut connection, credentials, Uuid::new_v4())
            .await
    }

    /// A new session for a user, without a password: for trusted callers only (the command
    /// line, tests), never reachable over HTTP.
    pub async fn session_for(&self, user_id: Uuid) -> Result<TokenPair, AuthError> {
        let credentials: Credentials = sqlx::query_as(
            "SELECT user_id, username, password_hash, role, agent_key, office_key, disabled, token_epoch
               FROM auth.users WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| database(&e))?
        .ok_or_else(|| AuthError::NotFound(format!("no user has id {user_id}")))?;
        let mut connection = self.pool.acquire().await.map_err(|e| database(&e))?;
        self.issue(&mut connection, credentials, Uuid::new_v4())
            .await
    }

    /// An access token and a refresh token of session `family_id`, stored through
    /// `connection` (a refresh passes its transaction: the new token exists as soon as the
    /// old one is revoked, so reuse detection cannot miss it).
    async fn issue(
        &self,
        connection: &mut sqlx::PgConnection,
        c: Credentials,
        family_id: Uuid,
    ) -> Result<TokenPair, AuthError> {
        let role = Role::parse(&c.role).ok_or(AuthError::Internal)?;
        let access_token =
            self.sign(Audience::Api, &c, role, family_id, self.settings.access_ttl)?;
        let refresh_token = tokens::random_secret();
        // The session is stored only if the user is still as read (same epoch, enabled),
        // under a share lock on the user's row: a concurrent password change or disabling
        // either waits for this session and then revokes it, or has committed first and
        // this finds the epoch moved. Either way no session outlives it.
        let user = sqlx::query_as::<_, User>(
            "WITH current AS (
                 SELECT user_id FROM auth.users
                  WHERE user_id = $2 AND token_epoch = $6 AND NOT disabled
                    FOR SHARE),
             issued AS (
                 INSERT INTO auth.refresh_tokens (token_id, user_id, token_hash, family_id, expires_at)
                 SELECT $1, user_id, $3, $4, now() + $5::interval FROM current)
             SELECT u.user_id, u.username, u.role, u.agent_key, u.office_key, u.disabled, u.created_at
               FROM auth.users u JOIN current USING (user_id)",
        )
        .bind(Uuid::new_v4())
        .bind(c.user_id)
        .bind(tokens::digest(&refresh_token))
        .bind(family_id)
        .bind(format!("{} seconds", self.settings.refresh_ttl.as_secs()))
        .bind(c.token_epoch)
        .fetch_optional(connection)
        .await
        .map_err(|e| database(&e))?
        .ok_or_else(|| unauthorized("the account changed while signing in; sign in again"))?;
        Ok(TokenPair {
            access_token,
            token_type: "Bearer",
            expires_in: self.settings.access_ttl.as_secs(),
            refresh_token,
            user,
        })
    }

    /// Exchanges a refresh token for a new pair (the old one is revoked: rotation). A token
    /// used after its rotation revokes its whole session, since someone else may hold it.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, AuthError> {
        let mut tx = self.pool.begin().await.map_err(|e| database(&e))?;
        let row: Option<Session> = sqlx::query_as(
            "SELECT token_id, family_id, revoked_at, expires_at FROM auth.refresh_tokens
              WHERE token_hash = $1 FOR UPDATE",
        )
        .bind(tokens::digest(refresh_token))
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| database(&e))?;
        let Session {
            token_id,
            family_id,
            revoked_at,
            expires_at,
        } = row.ok_or_else(|| unauthorized("the refresh token is not known"))?;
        if revoked_at.is_some() {
            sqlx::query("UPDATE auth.refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL")
                .bind(family_id)
                .execute(&mut *tx)
                .await
                .map_err(|e| database(&e))?;
            tx.commit().await.map_err(|e| database(&e))?;
            return Err(unauthorized("the refresh token was revoked; sign in again"));
        }
        if expires_at < Utc::now() {
            return Err(unauthorized("the refresh token has expired; sign in again"));
        }
        let credentials: Credentials = sqlx::query_as(
            "UPDATE auth.refresh_tokens t SET revoked_at = now() FROM auth.users u
              WHERE t.token_id = $1 AND u.user_id = t.user_id
             RETURNING u.user_id, u.username, u.password_hash, u.role, u.agent_key, u.office_key, u.disabled, u.token_epoch",
        )
        .bind(token_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| database(&e))?;
        if credentials.disabled {
            tx.commit().await.map_err(|e| database(&e))?;
            return Err(unauthorized("the account is disabled"));
        }
        let pair = self.issue(&mut tx, credentials, family_id).await?;
        tx.commit().await.map_err(|e| database(&e))?;
        Ok(pair)
    }

    /// Gives usernames stored before canonical keys existed their key. Two old names that
    /// now compare equal keep signing in by their exact spelling (the second gets no key);
    /// an operator should rename one.
    async fn backfill_username_keys(&self) {
        let rows: Vec<(Uuid, String)> = match sqlx::query_as(
            "SELECT user_id, username FROM auth.users WHERE username_key IS NULL",
        )
        .fetch_all(&self.pool)
        .await
        {
            Ok(rows) => rows,
            // A role that may not read usernames (the command API's) leaves it to the
            // query API.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => return,
            Err(error) => {
                tracing::warn!(%error, "cannot read usernames without a canonical key");
                return;
            }
        };
        for (user_id, username) in rows {
            let updated = sqlx::query(
                "UPDATE auth.users SET username_key = $2 WHERE user_id = $1 AND username_key IS NULL",
            )
            .bind(user_id)
            .bind(policy::username_key(&username))
            .execute(&self.pool)
            .await;
            match updated {
                Ok(_) => {}
                // A role that may not write users (the command API's) leaves it to the
                // query API.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => return,
                Err(error) => {
                    tracing::warn!(%error, %username, "username looks like another user's; rename one of them");
                }
            }
        }
    }

    /// Ends a session: its refresh tokens are revoked.
    pub async fn sign_out(&self, refresh_token: &str) -> Result<(), AuthError> {
        sqlx::query(
            "UPDATE auth.refresh_tokens SET revoked_at = now()
              WHERE family_id = (SELECT family_id FROM auth.refresh_tokens WHERE token_hash = $1)
                AND revoked_at IS NULL",
        )
        .bind(tokens::digest(refresh_token))
        .execute(&self.pool)
        .await
        .map_err(|e| database(&e))?;
        Ok(())
    }

    async fn audit(
        &self,
        tx: &mut sqlx::PgConnection,
        actor: &str,
        action: &str,
        target: &str,
        details: serde_json::Value,
    ) -> Result<(), AuthError> {
        sqlx::query(
            "INSERT INTO auth.audit_log (actor, action, target, details) VALUES ($1, $2, $3, $4)",
        )
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(details)
        .execute(tx)
        .await
        .map_err(|e| database(&e))?;
        Ok(())
    }

    /// Creates a user (audited as `actor`).
    pub async fn create_user(&self, actor: &str, new: NewUser) -> Result<User, AuthError> {
        let name = policy::username(&new.username)
            .map_err(|message| invalid("username", "invalid-value", message))?;
        let username = name.display.clone();
        check_password(&self.settings, &new.password, &username)?;
        check_key("agent_key", new.agent_key.as_deref())?;
        check_key("office_key", new.office_key.as_deref())?;
        if new.role == Role::Agent && new.agent_key.is_none() {
            return Err(invalid(
                "agent_key",
                "required",
                "an agent needs the ListAgentKey they act for",
            ));
        }
        let hash = hash_password(new.password).await?;
        let mut tx = self.pool.begin().await.map_err(|e| database(&e))?;
        let user: Option<User> = sqlx::query_as(
            "INSERT INTO auth.users (user_id, username, password_hash, role, agent_key, office_key, username_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT DO NOTHING
             RETURNING user_id, username, role, agent_key, office_key, disabled, created_at",
        )
        .bind(Uuid::new_v4())
        .bind(&username)
        .bind(hash)
        .bind(new.role.as_str())
        .bind(&new.agent_key)
        .bind(&new.office_key)
        .bind(&name.key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| database(&e))?;
        let user = user.ok_or_else(|| AuthError::UserExists(username.clone()))?;
        self.audit(
            &mut tx,
            actor,
            "user.create",
            &user.user_id.to_string(),
            serde_json::json!({"username": user.username, "role": user.role, "agent_key": user.agent_key, "office_key": user.office_key}),
        )
        .await?;
        tx.commit().await.map_err(|e| database(&e))?;
        Ok(user)
    }

    pub async fn users(&self) -> Result<Vec<User>, AuthError> {
        sqlx::query_as(
            "SELECT user_id, username, role, agent_key, office_key, disabled, created_at
               FROM auth.users ORDER BY username",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| database(&e))
    }

    /// Changes a user (audited). Disabling a user or changing their password ends their
    /// sessions.
    pub async fn update_user(
        &self,
        actor: &str,
        user_id: Uuid,
        change: UserChange,
    ) -> Result<User, AuthError> {
        if let Some(password) = &change.password {
            check_password(&self.settings, password, "")?;
        }
        if let Some(Some(key)) = &change.agent_key {
            check_key("agent_key", Some(key))?;
        }
        if let Some(Some(key)) = &change.office_key {
            check_key("office_key", Some(key))?;
        }
        let hash = match change.password.clone() {
            Some(password) => Some(hash_password(password).await?),
            None => None,
        };
        let mut tx = self.pool.begin().await.map_err(|e| database(&e))?;
        let user: Option<User> = sqlx::query_as(
            "UPDATE auth.users SET
                 role = COALESCE($2, role),
                 agent_key = CASE WHEN $3 THEN $4 ELSE agent_key END,
                 office_key = CASE WHEN $5 THEN $6 ELSE office_key END,
                 disabled = COALESCE($7, disabled),
                 password_hash = COALESCE($8, password_hash),
                 updated_at = now()
              WHERE user_id = $1
             RETURNING user_id, username, role, agent_key, office_key, disabled, created_at",
        )
        .bind(user_id)
        .bind(change.role.map(Role::as_str))
        .bind(change.agent_key.is_some())
        .bind(change.agent_key.clone().flatten())
        .bind(change.office_key.is_some())
        .bind(change.office_key.clone().flatten())
        .bind(change.disabled)
        .bind(hash.as_ref())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|error| match &error {
            sqlx::Error::Database(e) if e.is_check_violation() => invalid(
                "agent_key",
                "required",
                "an agent needs the ListAgentKey they act for",
            ),
            _ => database(&error),
        })?;
        let user = user.ok_or_else(|| AuthError::NotFound(format!("no user has id {user_id}")))?;
        if change.disabled == Some(true) || hash.is_some() {
            sqlx::query("UPDATE auth.refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL")
                .bind(user_id)
                .execute(&mut *tx)
                .await
                .map_err(|e| database(&e))?;
        }
        self.audit(
            &mut tx,
            actor,
            "user.update",
            &user_id.to_string(),
            serde_json::json!({
                "role": change.role.map(Role::as_str),
                "agent_key": change.agent_key,
                "office_key": change.office_key,
                "disabled": change.disabled,
                "password_changed": hash.is_some(),
            }),
        )
        .await?;
        tx.commit().await.map_err(|e| database(&e))?;
        Ok(user)
    }

    /// Creates an API key; the key itself is returned this once and never stored.
    pub async fn create_api_key(
        &self,
        actor: &str,
        created_by: Option<Uuid>,
        name: &str,
        scopes: &[Scope],
    ) -> Result<(ApiKey, String), AuthError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 || has_control(name) {
            return Err(invalid(
                "name",
                "invalid-value",
                "must be 1 to 100 characters, none of them control characters",
            ));
        }
        if scopes.is_empty() {
            return Err(invalid(
                "scopes",
                "required",
                "give at least one of read, write, import",
            ));
        }
        let (key, prefix) = tokens::new_api_key();
        let mut scope_names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        scope_names.sort_unstable();
        scope_names.dedup();
        let mut tx = self.pool.begin().await.map_err(|e| database(&e))?;
        let created: ApiKey = sqlx::query_as(
            "INSERT INTO auth.api_keys (key_id, name, prefix, key_hash, scopes, created_by)
             VALUES ($1, $2, $3, $4, $5, $6)
             RETURNING key_id, name, prefix, scopes, created_at, revoked_at",
        )
        .bind(Uuid::new_v4())
        .bind(name)
        .bind(&prefix)
        .bind(tokens::digest(&key))
        .bind(&scope_names)
        .bind(created_by)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| database(&e))?;
        self.audit(
            &mut tx,
            actor,
            "api-key.create",
            &created.key_id.to_string(),
            serde_json::json!({"name": name, "prefix": prefix, "scopes": scope_names}),
        )
        .await?;
        tx.commit().await.map_err(|e| database(&e))?;
        Ok((created, key))
    }

    pub async fn api_keys(&self) -> Result<Vec<ApiKey>, AuthError> {
        sqlx::query_as(
            "SELECT key_id, name, prefix, scopes, created_at, revoked_at FROM auth.api_keys ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| database(&e))
    }

    /// Revokes an API key (audited); it stops working at once.
    pub async fn revoke_api_key(&self, actor: &str, key_id: Uuid) -> Result<ApiKey, AuthError> {
        let mut tx = self.pool.begin().await.map_err(|e| database(&e))?;
        let key: Option<ApiKey> = sqlx::query_as(
            "UPDATE auth.api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE key_id = $1
             RETURNING key_id, name, prefix, scopes, created_at, revoked_at",
        )
        .bind(key_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| database(&e))?;
        let key = key.ok_or_else(|| AuthError::NotFound(format!("no API key has id {key_id}")))?;
        self.audit(
            &mut tx,
            actor,
            "api-key.revoke",
            &key_id.to_string(),
            serde_json::json!({"name": key.name}),
        )
        .await?;
        tx.commit().await.map_err(|e| database(&e))?;
        Ok(key)
    }

    /// The latest administrative actions, newest first.
    pub async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>, AuthError> {
        sqlx::query_as(
            "SELECT audit_id, at, actor, action, target, details FROM auth.audit_log ORDER BY audit_id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| database(&e))
    }
}
