//! API keys: created (the secret shown once, its digest stored), listed, revoked.

use super::*;

impl AuthService {
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
        let created = sqlx::query_as!(
            ApiKey,
            "INSERT INTO auth.api_keys (key_id, name, prefix, key_hash, scopes, created_by)
             VALUES ($1, $2, $3, $4, $5, $6)
             RETURNING key_id, name, prefix, scopes, created_at, revoked_at",
            Uuid::new_v4(),
            name,
            prefix,
            tokens::digest(&key),
            &scope_names as &[&str],
            created_by,
        )
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
        sqlx::query_as!(
            ApiKey,
            "SELECT key_id, name, prefix, scopes, created_at, revoked_at FROM auth.api_keys ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| database(&e))
    }

    /// Revokes an API key (audited); it stops working at once.
    pub async fn revoke_api_key(&self, actor: &str, key_id: Uuid) -> Result<ApiKey, AuthError> {
        let mut tx = self.pool.begin().await.map_err(|e| database(&e))?;
        let key = sqlx::query_as!(
            ApiKey,
            "UPDATE auth.api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE key_id = $1
             RETURNING key_id, name, prefix, scopes, created_at, revoked_at",
            key_id,
        )
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
}
