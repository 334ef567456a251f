//! The subcommands that do a job and exit (every role's start-up is `crate::startup`):
//! one module each, sharing the database connection and the progress bar.

use anyhow::Context as _;

use crate::cli::Settings;

pub(crate) mod health;
pub(crate) mod import;
pub(crate) mod keys;
pub(crate) mod rebuild;
pub(crate) mod seed;
pub(crate) mod users;

/// A pool for the job or role `name` (its `application_name`), with the migrations applied
/// first unless `KEH_MIGRATE=false`.
pub(crate) async fn database(settings: &Settings, name: &str) -> anyhow::Result<sqlx::PgPool> {
    let pool = keh_store::connect_lazy(settings.database_url.expose(), &settings.pool(name))?;
    if settings.migrate {
        keh_store::migrate(&pool)
            .await
            .context("applying migrations")?;
    }
    Ok(pool)
}

/// `kubeestatehub migrate`: the migrations, and, without `KEH_JWT_SECRET`, the
/// installation's first token-signing key.
pub(crate) async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let pool = keh_store::connect_lazy(settings.database_url.expose(), &settings.pool("migrate"))?;
    keh_store::migrate(&pool)
        .await
        .context("applying migrations")?;
    tracing::info!("migrations applied");
    if settings.jwt_secret.is_none() && keh_auth::keys::ensure_generated(&pool).await? {
        tracing::info!("made this installation's access-token signing key");
    }
    Ok(())
}

/// A progress bar for `what`, counted in `unit`.
pub(crate) fn progress_bar(what: &str, unit: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

pub(crate) fn per_second(count: u64, seconds: f64) -> f64 {
    f64::from(u32::try_from(count).unwrap_or(u32::MAX)) / seconds.max(0.001)
}
