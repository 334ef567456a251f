//! Who is calling, and what they may do.
//!
//! - [`principal`]: the caller of a request (anonymous, a signed-in user with a role, or an
//!   API key with scopes) and the checks every API makes against it;
//! - [`tokens`]: JWT access tokens, and the random secrets behind refresh tokens and API
//!   keys (stored only as digests);
//! - [`service`]: users, sign-in and sessions, API keys, the audit log (PostgreSQL, schema
//!   `auth`);
//! - [`routes`]: `/api/v1/auth/*` and the administrators' `/api/v1/admin/*`;
//! - [`middleware`]: resolves the caller of every request from its credentials.
//!
//! **Architecture invariant:** handlers never read `Authorization` themselves; they take
//! the [`Caller`](principal::Caller) the middleware resolved.

pub mod middleware;
pub mod principal;
pub mod ratelimit;
pub mod routes;
pub mod service;
pub mod tokens;

use std::fmt;
use std::time::Duration;

pub use principal::{Caller, Principal, Role, Scope};
pub use service::AuthService;

/// The signing key of development setups. The binary refuses to start with it in
/// production.
pub const DEVELOPMENT_SECRET: &str = "development-only-signing-key-never-use-in-production";

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
    /// HMAC key signing access tokens (HS256).
    pub jwt_secret: Secret,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// Whether callers without credentials may read public listing and market data.
    pub anonymous_read: bool,
    /// Whether an agent may change every listing of their office, not only their own.
    pub office_access: bool,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: Secret::new(DEVELOPMENT_SECRET),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            anonymous_read: true,
            office_access: false,
        }
    }
}

impl AuthSettings {
    /// Refuses settings that must not reach production: the development signing key, or a
    /// key too short to resist guessing.
    pub fn check_production(&self) -> Result<(), String> {
        if self.jwt_secret.expose() == DEVELOPMENT_SECRET {
            return Err(
                "KEH_JWT_SECRET is the development key; set a random secret of at least 32 bytes"
                    .to_owned(),
            );
        }
        if self.jwt_secret.expose().len() < 32 {
            return Err("KEH_JWT_SECRET must be at least 32 bytes long in production".to_owned());
        }
        Ok(())
    }
}
