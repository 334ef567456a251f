//! `kubeestatehub signing-keys list|rotate`: the generated token-signing keys.

use std::time::Duration;

use crate::cli::{Settings, SigningKeysCommand};

/// `kubeestatehub signing-keys list|rotate`.
pub(crate) async fn signing_keys(
    settings: &Settings,
    command: SigningKeysCommand,
) -> anyhow::Result<()> {
    if settings.jwt_secret.is_some() {
        anyhow::bail!(
            "KEH_JWT_SECRET is set, so generated keys are not in use: rotate by moving the current secret to KEH_JWT_PREVIOUS_SECRETS and setting a new KEH_JWT_SECRET"
        );
    }
    let pool = super::database(settings, "keys").await?;
    if let SigningKeysCommand::Rotate { retire_now } = command {
        let overlap = if retire_now {
            Duration::ZERO
        } else {
            settings.auth().access_ttl + Duration::from_secs(60)
        };
        let kid = keh_auth::keys::rotate(&pool, overlap).await?;
        println!(
            "key {kid} signs from now on; previous keys {}",
            if retire_now {
                "no longer verify".to_owned()
            } else {
                format!("verify for {} s more", overlap.as_secs())
            }
        );
    }
    for key in keh_auth::keys::list(&pool).await? {
        println!(
            "{}\tcreated {}\t{}",
            key.kid,
            key.created_at.to_rfc3339(),
            match key.retired_at {
                None => "signing".to_owned(),
                Some(at) => format!("retired {}", at.to_rfc3339()),
            }
        );
    }
    Ok(())
}
