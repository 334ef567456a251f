//! Sign-in (with per-account delays after failures), sessions and their rotation with reuse
//! detection, sign-out.

use super::*;

impl AuthService {
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
    pub(super) async fn claim_attempt(&self, key: &str) -> Result<Option<Duration>, AuthError> {
        let claimed = sqlx::query_scalar!(
            r#"WITH stale AS (
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
             SELECT EXISTS (SELECT 1 FROM claimed) AS "claimed!""#,
            key,
            FREE_SIGN_IN_FAILURES,
            MAX_SIGN_IN_DELAY.as_secs_f64(),
        )
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
        let wait = sqlx::query_scalar!(
            "SELECT EXTRACT(EPOCH FROM blocked_until - clock_timestamp())::float8
               FROM auth.sign_in_failures WHERE username_key = $1",
            key,
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| database(&e))?
        .flatten();
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
        let found = sqlx::query_as!(
            Credentials,
            "SELECT user_id, username, password_hash, role, agent_key, office_key, disabled, token_epoch
               FROM auth.users
              WHERE username_key = $1 OR username = $2
              ORDER BY (username = $2) DESC, username_key NULLS LAST LIMIT 1",
            key,
            username.trim(),
        )
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
        sqlx::query!(
            "DELETE FROM auth.sign_in_failures WHERE username_key = $1",
            key
        )
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
        let credentials = sqlx::query_as!(
            Credentials,
            "SELECT user_id, username, password_hash, role, agent_key, office_key, disabled, token_epoch
               FROM auth.users WHERE user_id = $1",
            user_id,
        )
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
    pub(super) async fn issue(
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
        let user = sqlx::query_as!(
            User,
            r#"WITH current AS (
                 SELECT user_id FROM auth.users
                  WHERE user_id = $2 AND token_epoch = $6 AND NOT disabled
                    FOR SHARE),
             issued AS (
                 INSERT INTO auth.refresh_tokens (token_id, user_id, token_hash, family_id, expires_at)
                 SELECT $1, user_id, $3, $4, now() + $5::interval FROM current)
             SELECT u.user_id AS "user_id!", u.username AS "username!", u.role AS "role!",
                    u.agent_key, u.office_key, u.disabled AS "disabled!", u.created_at AS "created_at!"
               FROM auth.users u JOIN current USING (user_id)"#,
            Uuid::new_v4(),
            c.user_id,
            tokens::digest(&refresh_token),
            family_id,
            format!("{} seconds", self.settings.refresh_ttl.as_secs()) as _,
            c.token_epoch,
        )
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
        let row = sqlx::query_as!(
            Session,
            "SELECT token_id, family_id, revoked_at, expires_at FROM auth.refresh_tokens
              WHERE token_hash = $1 FOR UPDATE",
            tokens::digest(refresh_token),
        )
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
            sqlx::query!(
                "UPDATE auth.refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
                family_id,
            )
            .execute(&mut *tx)
                .await
                .map_err(|e| database(&e))?;
            tx.commit().await.map_err(|e| database(&e))?;
            return Err(unauthorized("the refresh token was revoked; sign in again"));
        }
        if expires_at < Utc::now() {
            return Err(unauthorized("the refresh token has expired; sign in again"));
        }
        let credentials = sqlx::query_as!(
            Credentials,
            "UPDATE auth.refresh_tokens t SET revoked_at = now() FROM auth.users u
              WHERE t.token_id = $1 AND u.user_id = t.user_id
             RETURNING u.user_id, u.username, u.password_hash, u.role, u.agent_key, u.office_key, u.disabled, u.token_epoch",
            token_id,
        )
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
    pub async fn sign_out(&self, refresh_token: &str) -> Result<(), AuthError> {
        sqlx::query!(
            "UPDATE auth.refresh_tokens SET revoked_at = now()
              WHERE family_id = (SELECT family_id FROM auth.refresh_tokens WHERE token_hash = $1)
                AND revoked_at IS NULL",
            tokens::digest(refresh_token),
        )
        .execute(&self.pool)
        .await
        .map_err(|e| database(&e))?;
        Ok(())
    }
}
