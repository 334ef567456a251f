//! Users, sign-in and sessions, API keys and the audit log.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use keh_platform::Problem;
use rand::RngCore;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::AuthSettings;
use crate::principal::{Principal, Role, Scope, unauthorized};
use crate::tokens::{self, API_KEY_PREFIX, TokenKeys};

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 10;
const MAX_PASSWORD: usize = 1024;

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

fn database(error: &sqlx::Error) -> Problem {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            Problem::unavailable("the user store is unavailable; retry later")
        }
        _ => {
            tracing::error!(%error, "auth query failed");
            Problem::internal()
        }
    }
}

fn invalid(field: &str, rule: &str, message: impl Into<String>) -> Problem {
    Problem::validation(vec![keh_platform::FieldError {
        field: field.to_owned(),
        rule: rule.to_owned(),
        message: message.into(),
    }])
}

fn check_password(password: &str) -> Result<(), Problem> {
    let length = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&length) {
        return Err(invalid(
            "password",
            "length",
            format!("must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"),
        ));
    }
    Ok(())
}

fn check_key(field: &str, value: Option<&str>) -> Result<(), Problem> {
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
pub async fn hash_password(password: String) -> Result<String, Problem> {
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
        Problem::internal()
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
    keys: TokenKeys,
}

impl AuthService {
    pub fn new(pool: PgPool, settings: AuthSettings) -> Self {
        Self {
            keys: TokenKeys::new(settings.jwt_secret.expose().as_bytes()),
            settings: Arc::new(settings),
            pool,
        }
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    /// The principal behind a bearer credential (an access token or an API key).
    pub async fn authenticate(&self, credential: &str) -> Result<Principal, Problem> {
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
        let claims = self.keys.verify(credential).map_err(|error| {
            use jsonwebtoken::errors::ErrorKind;
            match error.kind() {
                ErrorKind::ExpiredSignature => {
                    unauthorized("the access token has expired; refresh it or sign in again")
                }
                _ => unauthorized("the access token is not valid"),
            }
        })?;
        let user_id = Uuid::parse_str(&claims.sub)
            .map_err(|_| unauthorized("the access token is not valid"))?;
        Ok(Principal::User {
            user_id,
            username: claims.name,
            role: claims.role,
            agent_key: claims.agent_key,
            office_key: claims.office_key,
        })
    }

    /// Signs a user in: an access token and a new session's refresh token.
    pub async fn sign_in(&self, username: &str, password: &str) -> Result<TokenPair, Problem> {
        // No stored username has control characters (and PostgreSQL refuses NUL).
        let username = if has_control(username) { "" } else { username };
        let found: Option<Credentials> = sqlx::query_as(
            "SELECT user_id, username, password_hash, role, agent_key, office_key, disabled
               FROM auth.users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| database(&e))?;
        let hash = found
            .as_ref()
            .map_or_else(|| DUMMY_HASH.to_owned(), |c| c.password_hash.clone());
        let matches = verify_password(password.to_owned(), hash).await;
        let refused = || unauthorized("the username or the password is wrong");
        let credentials = found
            .filter(|c| matches && !c.disabled)
            .ok_or_else(refused)?;
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
    ) -> Result<TokenPair, Problem> {
        let role = Role::parse(&c.role).ok_or_else(Problem::internal)?;
        let access_token = self
            .keys
            .issue(
                c.user_id,
                &c.username,
                role,
                c.agent_key.clone(),
                c.office_key.clone(),
                self.settings.access_ttl,
            )
            .map_err(|error| {
                tracing::error!(%error, "signing an access token failed");
                Problem::internal()
            })?;
        let refresh_token = tokens::random_secret();
        let user = sqlx::query_as::<_, User>(
            "WITH issued AS (
                 INSERT INTO auth.refresh_tokens (token_id, user_id, token_hash, family_id, expires_at)
                 VALUES ($1, $2, $3, $4, now() + $5::interval))
             SELECT user_id, username, role, agent_key, office_key, disabled, created_at
               FROM auth.users WHERE user_id = $2",
        )
        .bind(Uuid::new_v4())
        .bind(c.user_id)
        .bind(tokens::digest(&refresh_token))
        .bind(family_id)
        .bind(format!("{} seconds", self.settings.refresh_ttl.as_secs()))
        .fetch_one(connection)
        .await
        .map_err(|e| database(&e))?;
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
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, Problem> {
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
             RETURNING u.user_id, u.username, u.password_hash, u.role, u.agent_key, u.office_key, u.disabled",
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

    /// Ends a session: its refresh tokens are revoked.
    pub async fn sign_out(&self, refresh_token: &str) -> Result<(), Problem> {
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
    ) -> Result<(), Problem> {
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
    pub async fn create_user(&self, actor: &str, new: NewUser) -> Result<User, Problem> {
        let username = new.username.trim().to_owned();
        if username.is_empty() || username.chars().count() > 100 || has_control(&username) {
            return Err(invalid(
                "username",
                "invalid-value",
                "must be 1 to 100 characters, none of them control characters",
            ));
        }
        check_password(&new.password)?;
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
            "INSERT INTO auth.users (user_id, username, password_hash, role, agent_key, office_key)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (username) DO NOTHING
             RETURNING user_id, username, role, agent_key, office_key, disabled, created_at",
        )
        .bind(Uuid::new_v4())
        .bind(&username)
        .bind(hash)
        .bind(new.role.as_str())
        .bind(&new.agent_key)
        .bind(&new.office_key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| database(&e))?;
        let user = user.ok_or_else(|| {
            Problem::new(
                StatusCode::CONFLICT,
                "user-exists",
                "Conflict",
                format!("a user named {username} exists"),
            )
            .with_field("username", "exists", "choose another username")
        })?;
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

    pub async fn users(&self) -> Result<Vec<User>, Problem> {
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
    ) -> Result<User, Problem> {
        if let Some(password) = &change.password {
            check_password(password)?;
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
        let user = user.ok_or_else(|| Problem::not_found(format!("no user has id {user_id}")))?;
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
    ) -> Result<(ApiKey, String), Problem> {
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

    pub async fn api_keys(&self) -> Result<Vec<ApiKey>, Problem> {
        sqlx::query_as(
            "SELECT key_id, name, prefix, scopes, created_at, revoked_at FROM auth.api_keys ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| database(&e))
    }

    /// Revokes an API key (audited); it stops working at once.
    pub async fn revoke_api_key(&self, actor: &str, key_id: Uuid) -> Result<ApiKey, Problem> {
        let mut tx = self.pool.begin().await.map_err(|e| database(&e))?;
        let key: Option<ApiKey> = sqlx::query_as(
            "UPDATE auth.api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE key_id = $1
             RETURNING key_id, name, prefix, scopes, created_at, revoked_at",
        )
        .bind(key_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| database(&e))?;
        let key = key.ok_or_else(|| Problem::not_found(format!("no API key has id {key_id}")))?;
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
    pub async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>, Problem> {
        sqlx::query_as(
            "SELECT audit_id, at, actor, action, target, details FROM auth.audit_log ORDER BY audit_id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| database(&e))
    }
}
