//! Access tokens (JWT, HS256) and the random secrets behind refresh tokens and API keys.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::principal::Role;

const ISSUER: &str = "kubeestatehub";

/// What an access token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user id.
    pub sub: String,
    pub name: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub office_key: Option<String>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// Signs and verifies access tokens.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenKeys {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// An access token for a user, valid for `ttl`.
    pub fn issue(
        &self,
        user_id: Uuid,
        name: &str,
        role: Role,
        agent_key: Option<String>,
        office_key: Option<String>,
        ttl: Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            iss: ISSUER.to_owned(),
            sub: user_id.to_string(),
            name: name.to_owned(),
            role,
            agent_key,
            office_key,
            iat: now,
            exp: now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
            jti: Uuid::new_v4().to_string(),
        };
        self.sign(&claims)
    }

    /// Signs arbitrary claims (tests mint expired tokens with it).
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    /// The claims of a valid, unexpired token signed with this key.
    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map(|d| d.claims)
    }
}

/// 32 random bytes, URL-safe.
pub fn random_secret() -> String {
    let mut bytes = [0_u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of a high-entropy secret (refresh token, API key).
pub fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// API keys look like `keh_{8 characters}_{secret}`; the first part is shown in listings.
pub const API_KEY_PREFIX: &str = "keh_";

/// A new API key and its public prefix.
pub fn new_api_key() -> (String, String) {
    let secret = random_secret();
    let prefix: String = secret.chars().take(8).collect();
    (
        format!("{API_KEY_PREFIX}{prefix}_{secret}"),
        format!("{API_KEY_PREFIX}{prefix}"),
    )
}
