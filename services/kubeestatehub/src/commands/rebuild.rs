//! `kubeestatehub projections rebuild`: read models and market analytics from the event
//! store, with progress bars.

use std::time::Duration;

use anyhow::Context as _;

use crate::cli::{RebuildTarget, Settings};

/// `kubeestatehub projections rebuild`, with progress bars.
pub(crate) async fn rebuild(settings: &Settings, target: RebuildTarget) -> anyhow::Result<()> {
    let pool = super::database(settings, "rebuild").await?;
    if matches!(target, RebuildTarget::All | RebuildTarget::ReadModel) {
        let (rebuilt, seconds) = with_progress("rebuilding read models", |progress| {
            keh_projections::rebuild::rebuild(&pool, settings.partitions, progress)
        })
        .await?;
        tracing::info!(
            events = rebuilt.events,
            listings = rebuilt.listings,
            seconds,
            "read models rebuilt and swapped in"
        );
        println!(
            "rebuilt {} listings from {} events in {seconds:.1} s ({:.0} events/s)",
            rebuilt.listings,
            rebuilt.events,
            super::per_second(rebuilt.events, seconds)
        );
    }
    if matches!(target, RebuildTarget::All | RebuildTarget::Analytics) {
        let today = chrono::Utc::now().date_naive();
        let (rebuilt, seconds) = with_progress("rebuilding market analytics", |progress| {
            keh_analytics::store::rebuild(&pool, today, settings.partitions, progress)
        })
        .await?;
        tracing::info!(
            events = rebuilt.events,
            listings = rebuilt.listings,
            series = rebuilt.series,
            seconds,
            "market analytics rebuilt"
        );
        println!(
            "rebuilt market facts of {} listings and {} series from {} events in {seconds:.1} s ({:.0} events/s)",
            rebuilt.listings,
            rebuilt.series,
            rebuilt.events,
            super::per_second(rebuilt.events, seconds)
        );
    }
    Ok(())
}

/// Runs one rebuild behind a progress bar fed by its `(done, total)` callback; returns what
/// it returned and how many seconds it took.
async fn with_progress<T, E, F, Fut>(what: &'static str, run: F) -> anyhow::Result<(T, f64)>
where
    F: FnOnce(Box<dyn Fn(u64, u64) + Send + Sync>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let bar = super::progress_bar(what, "events");
    bar.enable_steady_tick(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let progress = bar.clone();
    let outcome = run(Box::new(move |done, total| {
        progress.set_length(total);
        progress.set_position(done);
    }))
    .await
    .context(what)?;
    bar.finish_and_clear();
    Ok((outcome, started.elapsed().as_secs_f64()))
}
