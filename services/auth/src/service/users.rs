//! Users: creation, listing and changes, the audit log, and the canonical-name backfill.

use super::*;

impl AuthService {
    /// Gives usernames stored before canonical keys existed their key. Two old names that
    /// now compare equal keep signing in by their exact spelling (the second gets no key);
    /// an operator should rename one.
    pub(super) async fn backfill_username_keys(&self) {
        let rows = match sqlx::query!(
            "SELECT user_id, username FROM auth.users WHERE username_key IS NULL",
        )
        .fetch_all(&self.pool)
        .await
        {
            Ok(rows) => rows.into_iter().map(|r| (r.user_id, r.username)),
            // A role that may not read usernames (the command API's) leaves it to the
            // query API.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => return,
            Err(error) => {
                tracing::warn!(%error, "cannot read usernames without a canonical key");
                return;
            }
        };
        for (user_id, username) in rows {
            let updated = sqlx::query!(
                "UPDATE auth.users SET username_key = $2 WHERE user_id = $1 AND username_key IS NULL",
                user_id,
                policy::username_key(&username),
            )
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

    pub(super) async fn audit(
        &self,
        tx: &mut sqlx::PgConnection,
        actor: &str,
        action: &str,
        target: &str,
        details: serde_json::Value,
    ) -> Result<(), AuthError> {
        sqlx::query!(
            "INSERT INTO auth.audit_log (actor, action, target, details) VALUES ($1, $2, $3, $4)",
            actor,
            action,
            target,
            details,
        )
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
        let user = sqlx::query_as!(
            User,
            "INSERT INTO auth.users (user_id, username, password_hash, role, agent_key, office_key, username_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT DO NOTHING
             RETURNING user_id, username, role, agent_key, office_key, disabled, created_at",
            Uuid::new_v4(),
            username,
            hash,
            new.role.as_str(),
            new.agent_key,
            new.office_key,
            name.key,
        )
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
        sqlx::query_as!(
            User,
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
        let user = sqlx::query_as!(
            User,
            "UPDATE auth.users SET
                 role = COALESCE($2, role),
                 agent_key = CASE WHEN $3 THEN $4 ELSE agent_key END,
                 office_key = CASE WHEN $5 THEN $6 ELSE office_key END,
                 disabled = COALESCE($7, disabled),
                 password_hash = COALESCE($8, password_hash),
                 updated_at = now()
              WHERE user_id = $1
             RETURNING user_id, username, role, agent_key, office_key, disabled, created_at",
            user_id,
            change.role.map(Role::as_str),
            change.agent_key.is_some(),
            change.agent_key.clone().flatten(),
            change.office_key.is_some(),
            change.office_key.clone().flatten(),
            change.disabled,
            hash.as_ref(),
        )
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
            sqlx::query!(
                "UPDATE auth.refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
                user_id,
            )
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

    /// The latest administrative actions, newest first.
    pub async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>, AuthError> {
        sqlx::query_as!(
            AuditEntry,
            "SELECT audit_id, at, actor, action, target, details FROM auth.audit_log ORDER BY audit_id DESC LIMIT $1",
            limit,
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| database(&e))
    }
}
