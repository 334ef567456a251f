//! The keys that sign and verify tokens. No key is ever a constant of the code:
//!
//! - **Configured**: `KEH_JWT_SECRET` signs; each of `KEH_JWT_PREVIOUS_SECRETS` only
//!   verifies (rotation: move the old secret there until its tokens have expired).
//! - **Generated** (no `KEH_JWT_SECRET`): random keys kept in `auth.signing_keys`, made once
//!   per installation by the first process that finds none, so every replica agrees and a
//!   restart keeps sessions. The newest key signs; older ones verify until their
//!   `retired_at` (`kubeestatehub signing-keys rotate` sets it one token lifetime ahead, or
//!   to now with `--retire-now` when a key leaked).
//!
//! Every token names its key in the `kid` header; a token whose key is unknown, retired or
//! was never ours is refused.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::Secret;
use crate::tokens::{Audience, Claims, ISSUER};

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the token has expired")]
    Expired,
    #[error("the token names a signing key this installation does not have")]
    UnknownKey,
    #[error("the token is not valid")]
    Invalid,
}

/// Why a token could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("no signing key is loaded")]
    NoKey,
    #[error("signing failed: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
}

/// Where the keys come from.
#[derive(Clone, Debug)]
pub enum KeySource {
    Configured {
        current: Secret,
        previous: Vec<Secret>,
    },
    Generated,
}

/// One key as operators see it (never the secret).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KeyInfo {
    pub kid: String,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
    pub signing: bool,
}

struct Keys {
    signer: Option<(String, EncodingKey)>,
    /// Each verifying key with the instant it stops verifying, if any: checked at every
    /// verification, so a key retires on time without waiting for a reload.
    verifiers: HashMap<String, (DecodingKey, Option<DateTime<Utc>>)>,
}

/// The signing key and the verifying keys of one process.
pub struct KeyRing {
    source: KeySource,
    keys: RwLock<Arc<Keys>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("generated", &matches!(self.source, KeySource::Generated))
            .finish_non_exhaustive()
    }
}

/// The key id of a configured secret: derived from it (every replica agrees) by a one-way
/// hash (the id reveals nothing of the secret).
pub fn configured_kid(secret: &Secret) -> String {
    let digest = Sha256::digest(secret.expose().as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("c-{hex}")
}

const KEYS_LOCK: &str = "keh.signing_keys";

impl KeyRing {
    /// Keys from configuration.
    pub fn configured(current: &Secret, previous: &[Secret]) -> Self {
        let mut verifiers = HashMap::new();
        for secret in std::iter::once(current).chain(previous) {
            verifiers.insert(
                configured_kid(secret),
                (DecodingKey::from_secret(secret.expose().as_bytes()), None),
            );
        }
        Self {
            source: KeySource::Configured {
                current: current.clone(),
                previous: previous.to_vec(),
            },
            keys: RwLock::new(Arc::new(Keys {
                signer: Some((
                    configured_kid(current),
                    EncodingKey::from_secret(current.expose().as_bytes()),
                )),
                verifiers,
            })),
        }
    }

    /// A ring for generated keys that has not read them yet ([`KeyRing::reload`]).
    pub fn empty_generated() -> Self {
        Self {
            source: KeySource::Generated,
            keys: RwLock::new(Arc::new(Keys {
                signer: None,
                verifiers: HashMap::new(),
            })),
        }
    }

    /// Loads the installation's generated keys, making the first one if there are none
    /// and this role may write them. Configured keys need nothing.
    pub async fn load_or_make(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        if self.reload(pool).await? {
            return Ok(());
        }
        match ensure_generated(pool).await {
            Ok(_) => {}
            // A least-privileged role cannot make one: the migrate Job or the query API
            // does; until then this role verifies nothing and signs nothing.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => {
                tracing::warn!(
                    "no signing key yet and this role may not create one; waiting for `kubeestatehub migrate`"
                );
            }
            Err(error) => return Err(error),
        }
        self.reload(pool).await.map(|_| ())
    }

    /// Whether keys come from the database (and can change under a running process).
    pub fn is_generated(&self) -> bool {
        matches!(self.source, KeySource::Generated)
    }

    /// Reads the generated keys again (after a rotation, or a token naming a key this
    /// process has not loaded yet). Returns whether a signing key is loaded. Configured
    /// keys never change.
    pub async fn reload(&self, pool: &PgPool) -> Result<bool, sqlx::Error> {
        if !self.is_generated() {
            return Ok(true);
        }
        let rows: Vec<(String, Vec<u8>, Option<DateTime<Utc>>)> = sqlx::query!(
            "SELECT kid, secret, retired_at FROM auth.signing_keys
              WHERE retired_at IS NULL OR retired_at > now()
              ORDER BY created_at DESC, kid",
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| (r.kid, r.secret, r.retired_at))
        .collect();
        let signer = rows
            .iter()
            .find(|(_, _, retired)| retired.is_none())
            .map(|(kid, secret, _)| (kid.clone(), EncodingKey::from_secret(secret)));
        let verifiers = rows
            .iter()
            .map(|(kid, secret, retired)| {
                (kid.clone(), (DecodingKey::from_secret(secret), *retired))
            })
            .collect();
        let signing = signer.is_some();
        let keys = Arc::new(Keys { signer, verifiers });
        match self.keys.write() {
            Ok(mut guard) => *guard = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
        Ok(signing)
    }

    fn current(&self) -> Arc<Keys> {
        match self.keys.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Signs claims with the current key, naming it in `kid`.
    pub fn sign(&self, claims: &Claims) -> Result<String, SignError> {
        let keys = self.current();
        let (kid, key) = keys.signer.as_ref().ok_or(SignError::NoKey)?;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, key)?)
    }

    /// The claims of a valid, unexpired token for `audience`, signed by a key of this ring.
    pub fn verify(&self, token: &str, audience: Audience) -> Result<Claims, VerifyError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Invalid)?;
        if header.alg != Algorithm::HS256 {
            return Err(VerifyError::Invalid);
        }
        let kid = header.kid.ok_or(VerifyError::Invalid)?;
        let keys = self.current();
        let key = match keys.verifiers.get(&kid) {
            Some((key, retired)) if retired.is_none_or(|at| at > Utc::now()) => key,
            _ => return Err(VerifyError::UnknownKey),
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|d| d.claims)
            .map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => VerifyError::Expired,
                _ => VerifyError::Invalid,
            })
    }
}

/// Makes this installation's first signing key unless one is in use. Returns whether it
/// made one. Replicas starting together agree: one makes it under a transaction lock, the
/// others find it.
pub async fn ensure_generated(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtext($1))", KEYS_LOCK)
        .execute(&mut *tx)
        .await?;
    let signing = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM auth.signing_keys WHERE retired_at IS NULL) AS "signing!""#,
    )
    .fetch_one(&mut *tx)
    .await?;
    if signing {
        return Ok(false);
    }
    insert_key(&mut tx).await?;
    tx.commit().await?;
    Ok(true)
}

async fn insert_key(tx: &mut sqlx::PgConnection) -> Result<String, sqlx::Error> {
    let mut secret = [0_u8; 64];
    rand::rng().fill_bytes(&mut secret);
    let kid = format!("g-{}", &crate::tokens::random_secret()[..16]);
    sqlx::query!(
        "INSERT INTO auth.signing_keys (kid, secret) VALUES ($1, $2)",
        kid,
        secret.as_slice(),
    )
    .execute(tx)
    .await?;
    Ok(kid)
}

/// Rotates the generated keys: a new key signs from now on; the previous ones verify for
/// `overlap` more (the access-token lifetime, so no session breaks), or stop at once when
/// `overlap` is zero (a leaked key). Every replica picks the change up at once
/// (`NOTIFY keh_auth`). Returns the new key's id.
pub async fn rotate(pool: &PgPool, overlap: Duration) -> Result<String, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtext($1))", KEYS_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::query!(
        "UPDATE auth.signing_keys SET retired_at = now() + make_interval(secs => $1)
          WHERE retired_at IS NULL OR retired_at > now() + make_interval(secs => $1)",
        overlap.as_secs_f64(),
    )
    .execute(&mut *tx)
    .await?;
    let kid = insert_key(&mut tx).await?;
    tx.commit().await?;
    Ok(kid)
}

/// The generated keys, newest first (retired ones included).
pub async fn list(pool: &PgPool) -> Result<Vec<KeyInfo>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT kid, created_at, retired_at FROM auth.signing_keys ORDER BY created_at DESC, kid",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.kid, r.created_at, r.retired_at))
        .map(|(kid, created_at, retired_at)| KeyInfo {
            kid,
            created_at,
            signing: retired_at.is_none(),
            retired_at,
        })
        .collect())
}
