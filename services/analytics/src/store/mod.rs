//! The analytics tables: the analytics consumer group's applier (`apply`: market facts and
//! dirty series, in the batch's transaction), the recomputation of dirty series and the
//! clock (`recompute`), the rebuild (`rebuild`), and the reads the query API and the
//! reports serve (`read`). This module holds what they share: series keys and errors.

use keh_projections::apply::ApplyError;

mod apply;
mod read;
mod rebuild;
mod recompute;

pub use apply::{MarketApplier, apply_facts, fold_marks, mark_dirty};
pub use read::{
    METRIC_NAMES, MetricsRow, SeriesRow, dirty_count, series_exists, series_list, series_rows,
};
pub use rebuild::{Rebuilt, rebuild};
pub use recompute::{advance_clock, recompute_dirty, recompute_series};

use crate::facts::{ALL_TYPES, AreaKind, MARKET, MarketFacts};

/// How many years back market figures are computed.
pub const HISTORY_YEARS: u32 = 30;

/// Taken shared by every analytics batch and exclusively by a rebuild, so that a rebuild
/// sees no batch half-way.
pub const ANALYTICS_LOCK: i64 = 0x6b65_685f_616e_616c;

/// A series: one area and one property type (or every type, [`ALL_TYPES`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub kind: AreaKind,
    pub area: String,
    pub property_type: String,
}

/// Ordered as the table's key in byte order (`COLLATE "C"`): every writer of
/// `dirty_series` locks its rows in this order, so two writers never deadlock.
impl Ord for SeriesKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.kind.as_str(), &self.area, &self.property_type).cmp(&(
            other.kind.as_str(),
            &other.area,
            &other.property_type,
        ))
    }
}

impl PartialOrd for SeriesKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl SeriesKey {
    pub fn market() -> Self {
        Self {
            kind: AreaKind::Market,
            area: MARKET.to_owned(),
            property_type: ALL_TYPES.to_owned(),
        }
    }
}

/// The series a listing's facts count in.
pub fn series_of(facts: &MarketFacts) -> Vec<SeriesKey> {
    let mut keys = Vec::new();
    for (kind, area) in facts.areas() {
        for property_type in [facts.property_type.as_str(), ALL_TYPES] {
            keys.push(SeriesKey {
                kind,
                area: area.clone(),
                property_type: property_type.to_owned(),
            });
        }
    }
    keys
}

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("listing {0}: stored market facts cannot be read: {1}")]
    Facts(String, serde_json::Error),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}
