//! `kubeestatehub seed`: the demo market (`crate::seed`) with a progress bar.

use std::sync::Arc;

use anyhow::Context as _;
use keh_store::Store;

use crate::cli::Settings;
use crate::seed;

/// `kubeestatehub seed`, with a progress bar.
pub(crate) async fn seed_market(
    settings: &Settings,
    plan: seed::SeedPlan,
    concurrency: usize,
) -> anyhow::Result<()> {
    let pool = super::database(settings, "seed").await?;
    let store = Arc::new(Store::new(pool, settings.snapshot_every));
    let planned = seed::plan(plan);
    let bar = super::progress_bar("seeding", "listings");
    bar.set_length(planned.len() as u64);
    let started = std::time::Instant::now();
    let progress = bar.clone();
    let seeded = seed::run(store, planned, concurrency, move |n| progress.inc(n))
        .await
        .context("seeding")?;
    bar.finish_and_clear();
    println!(
        "seeded {} listings ({} already there) with {} events in {:.1} s",
        seeded.listings,
        seeded.skipped,
        seeded.events,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
