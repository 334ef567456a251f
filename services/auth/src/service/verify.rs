//! Who a credential is: access tokens, feed tickets and API keys verified against the
//! current standing of their user; tokens signed.

use super::*;

impl AuthService {
    /// The principal behind a bearer credential (an access token or an API key).
    pub async fn authenticate(&self, credential: &str) -> Result<Principal, AuthError> {
        if credential.starts_with(API_KEY_PREFIX) {
            let row = sqlx::query!(
                "SELECT key_id, name, scopes FROM auth.api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
                tokens::digest(credential),
            )
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| database(&e))?
            .map(|r| (r.key_id, r.name, r.scopes));
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
    pub(super) async fn verify(
        &self,
        token: &str,
        audience: Audience,
    ) -> Result<Principal, AuthError> {
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

    pub(super) fn sign(
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
}
