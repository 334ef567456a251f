//! Access tokens and feed tickets (JWT, HS256, signed by the [`KeyRing`](crate::keys::KeyRing)),
//! and the random secrets behind refresh tokens and API keys.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::principal::Role;

pub const ISSUER: &str = "kubeestatehub";

/// What a token is for. An access token is refused where a feed ticket is expected and the
/// other way round, so a ticket leaked through a URL or a log opens nothing but the feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// Every API (`Authorization: Bearer`).
    Api,
    /// Only `GET /api/v1/listing-events` (`?ticket=`), for a minute.
    Feed,
}

impl Audience {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Api => "kubeestatehub-api",
            Self::Feed => "kubeestatehub-feed",
        }
    }
}

/// What a token says. `sid` and `ver` tie it to state that is checked on every request: the
/// session it belongs to (signed out: refused) and the user's token epoch when it was
/// issued (disabled, demoted, password changed: the epoch moved, refused).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    pub name: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub office_key: Option<String>,
    /// The session (refresh-token family) the token was issued for.
    pub sid: String,
    /// The user's token epoch at issue.
    pub ver: i64,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
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
