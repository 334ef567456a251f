//! `kubeestatehub import FILE`: the importer (`crate::import`) with a progress bar and a
//! summary.

use std::sync::Arc;

use anyhow::Context as _;
use keh_store::Store;

use crate::cli::Settings;
use crate::import;

/// `kubeestatehub import FILE`, with a progress bar and a summary; fails when any row did.
pub(crate) async fn import_file(settings: &Settings, file: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading standard input")?;
    } else {
        bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    }
    let pool = super::database(settings, "import").await?;
    let store = Arc::new(Store::new(pool, settings.snapshot_every));
    let mut ignored = std::collections::BTreeSet::new();
    let rows = import::read(&bytes, &mut ignored);
    let bar = super::progress_bar("importing", "rows");
    bar.set_length(rows.len() as u64);
    let progress = bar.clone();
    let report = import::run(store, rows, move || progress.inc(1))
        .await
        .context("importing")?;
    bar.finish_and_clear();
    if !ignored.is_empty() {
        eprintln!(
            "ignored columns (not understood): {}",
            ignored.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    for failure in &report.failed {
        eprintln!(
            "line {}{}: {}",
            failure.line,
            failure
                .listing_key
                .as_ref()
                .map(|k| format!(" (ListingKey {k})"))
                .unwrap_or_default(),
            failure.message
        );
    }
    println!(
        "{} rows: {} imported or updated, {} unchanged, {} failed; {} events appended",
        report.rows,
        report.changed,
        report.unchanged,
        report.failed.len(),
        report.events
    );
    if report.failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "{} of {} rows failed (see above)",
            report.failed.len(),
            report.rows
        ))
    }
}
