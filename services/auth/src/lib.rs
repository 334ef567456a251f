//! Who is calling, and what they may do.
//!
//! - [`principal`]: the caller of a request (anonymous, a signed-in user with a role, or an
//!   API key with scopes) and the checks every API makes against it;
//! - [`keys`]: the keys that sign and verify tokens (configured, or generated per
//!   installation and kept in the database), with rotation;
//! - [`tokens`]: JWT access tokens and feed tickets, and the random secrets behind refresh
//!   tokens and API keys (stored only as digests);
//! - [`standing`]: the state behind a token (user, epoch, session), checked on every
//!   request and cached only while change notifications arrive;
//! - [`policy`]: what usernames and passwords must be;
//! - [`service`]: users, sign-in and sessions, API keys, the audit log (PostgreSQL, schema
//!   `auth`);
//! - [`routes`]: `/api/v1/auth/*` and the administrators' `/api/v1/admin/*`;
//! - [`middleware`]: resolves the caller of every request from its credentials.
//!
//! **Architecture invariant:** handlers never read `Authorization` themselves; they take
//! the [`Caller`](principal::Caller) the middleware resolved.

pub mod error;
pub mod keys;
pub mod middleware;
pub mod policy;
pub mod principal;
pub mod ratelimit;
pub mod routes;
pub mod service;
pub mod standing;
pub mod tokens;

use std::fmt;
use std::time::Duration;

pub use error::AuthError;
pub use principal::{Caller, Principal, Role, Scope};
pub use service::AuthService;

/// A secret whose `Debug` output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Authentication and authorization settings.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    /// HMAC key signing access tokens (HS256); none: keys generated for the installation
    /// and kept in the database ([`keys`]).
    pub jwt_secret: Option<Secret>,
    /// Keys that only verify (the previous `jwt_secret` while its tokens may still be
    /// used).
    pub previous_jwt_secrets: Vec<Secret>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// Whether callers without credentials may read public listing and market data.
    pub anonymous_read: bool,
    /// Whether an agent may change every listing of their office, not only their own.
    pub office_access: bool,
    pub password_policy: policy::PasswordPolicy,
    /// The proxies whose `X-Forwarded-For` names the client (the Gateway).
    pub trusted_proxies: ratelimit::TrustedProxies,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            previous_jwt_secrets: Vec::new(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            anonymous_read: true,
            office_access: false,
            password_policy: policy::PasswordPolicy::default(),
            trusted_proxies: ratelimit::TrustedProxies::default(),
        }
    }
}

/// The shortest configured signing secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

impl AuthSettings {
    /// Refuses configured keys too short to resist guessing (in every environment: a
    /// development installation can be reachable too).
    pub fn check(&self) -> Result<(), String> {
        for (name, secret) in self.jwt_secret.iter().map(|s| ("KEH_JWT_SECRET", s)).chain(
            self.previous_jwt_secrets
                .iter()
                .map(|s| ("KEH_JWT_PREVIOUS_SECRETS", s)),
        ) {
            if secret.expose().len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "{name} must be at least {MIN_SECRET_BYTES} bytes long (e.g. `openssl rand -base64 48`), or leave KEH_JWT_SECRET unset to use a generated key"
                ));
            }
        }
        Ok(())
    }
}
