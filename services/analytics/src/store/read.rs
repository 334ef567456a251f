//! What the query API and the reports read: a series' periods, the computed series, and
//! how many wait for recomputation.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;

use super::SeriesKey;
use crate::compute::Grain;
use crate::facts::AreaKind;

/// One period of a series, as the API and the reports show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
#[serde(rename_all = "PascalCase")]
pub struct MetricsRow {
    pub period_start: NaiveDate,
    pub period_end: NaiveDate,
    pub as_of: NaiveDate,
    pub new_listings: i32,
    pub active_listings: i32,
    pub inventory: i32,
    pub pending_sales: i32,
    pub home_sales: i32,
    pub price_changes: i32,
    #[serde(serialize_with = "number")]
    #[schemars(with = "Option<f64>")]
    pub median_list_price: Option<Decimal>,
    #[serde(rename = "MedianListPricePerSqFt", serialize_with = "number")]
    #[schemars(with = "Option<f64>")]
    pub median_list_price_per_sqft: Option<Decimal>,
    #[serde(serialize_with = "number")]
    #[schemars(with = "Option<f64>")]
    pub median_sale_price: Option<Decimal>,
    #[serde(rename = "MedianSalePricePerSqFt", serialize_with = "number")]
    #[schemars(with = "Option<f64>")]
    pub median_sale_price_per_sqft: Option<Decimal>,
    #[serde(serialize_with = "number")]
    #[schemars(with = "Option<f64>")]
    pub median_days_on_market: Option<Decimal>,
    #[serde(serialize_with = "number")]
    #[schemars(with = "Option<f64>")]
    pub sale_to_list_ratio: Option<Decimal>,
    #[serde(serialize_with = "number")]
    #[schemars(with = "Option<f64>")]
    pub sale_to_original_list_ratio: Option<Decimal>,
    #[serde(serialize_with = "number")]
    #[schemars(with = "Option<f64>")]
    pub sold_above_list: Option<Decimal>,
    #[serde(serialize_with = "number")]
    #[schemars(with = "Option<f64>")]
    pub price_drops: Option<Decimal>,
    #[serde(serialize_with = "number")]
    #[schemars(with = "Option<f64>")]
    pub months_of_supply: Option<Decimal>,
}

/// Decimals are JSON numbers, written exactly (never through `f64`).
fn number<S: serde::Serializer>(value: &Option<Decimal>, serializer: S) -> Result<S::Ok, S::Error> {
    rust_decimal::serde::arbitrary_precision_option::serialize(
        &value.map(|v| v.normalize()),
        serializer,
    )
}

/// The columns of [`MetricsRow`] (the CSV header uses the JSON names).
pub const METRIC_NAMES: &[&str] = &[
    "PeriodStart",
    "PeriodEnd",
    "AsOf",
    "NewListings",
    "ActiveListings",
    "Inventory",
    "PendingSales",
    "HomeSales",
    "PriceChanges",
    "MedianListPrice",
    "MedianListPricePerSqFt",
    "MedianSalePrice",
    "MedianSalePricePerSqFt",
    "MedianDaysOnMarket",
    "SaleToListRatio",
    "SaleToOriginalListRatio",
    "SoldAboveList",
    "PriceDrops",
    "MonthsOfSupply",
];

/// A series' periods whose start lies in `from..=to`, oldest first.
pub async fn series_rows(
    executor: impl sqlx::PgExecutor<'_>,
    key: &SeriesKey,
    grain: Grain,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<Vec<MetricsRow>, sqlx::Error> {
    sqlx::query_as!(
        MetricsRow,
        "SELECT period_start, period_end, as_of, new_listings, active_listings, inventory, pending_sales,
                home_sales, price_changes, median_list_price, median_list_price_per_sqft, median_sale_price,
                median_sale_price_per_sqft, median_days_on_market, sale_to_list_ratio,
                sale_to_original_list_ratio, sold_above_list, price_drops, months_of_supply
           FROM analytics.market_metrics
          WHERE area_kind = $1 AND area = $2 AND property_type = $3 AND period = $4
            AND ($5::date IS NULL OR period_start >= $5) AND ($6::date IS NULL OR period_start <= $6)
          ORDER BY period_start",
        key.kind.as_str(),
        key.area,
        key.property_type,
        grain.as_str(),
        from,
        to,
    )
    .fetch_all(executor)
    .await
}

/// A series the analytics worker has computed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
#[serde(rename_all = "PascalCase")]
pub struct SeriesRow {
    pub area_kind: String,
    pub area: String,
    pub property_type: String,
    pub listings: i32,
    pub first_date: NaiveDate,
}

/// Every computed series of `kind` (all kinds when `None`), optionally one property type.
pub async fn series_list(
    executor: impl sqlx::PgExecutor<'_>,
    kind: Option<AreaKind>,
    property_type: Option<&str>,
) -> Result<Vec<SeriesRow>, sqlx::Error> {
    sqlx::query_as!(
        SeriesRow,
        "SELECT area_kind, area, property_type, listings, first_date FROM analytics.series
          WHERE ($1::text IS NULL OR area_kind = $1) AND ($2::text IS NULL OR property_type = $2)
          ORDER BY area_kind, area, property_type",
        kind.map(AreaKind::as_str),
        property_type,
    )
    .fetch_all(executor)
    .await
}

/// Whether the series exists.
pub async fn series_exists(
    executor: impl sqlx::PgExecutor<'_>,
    key: &SeriesKey,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM analytics.series
                           WHERE area_kind = $1 AND area = $2 AND property_type = $3) AS "exists!""#,
        key.kind.as_str(),
        key.area,
        key.property_type,
    )
    .fetch_one(executor)
    .await
}

/// Series still waiting for recomputation (a measure of the worker's lag): those marked
/// and those whose marks are not folded yet.
pub async fn dirty_count(executor: impl sqlx::PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM (
             SELECT area_kind, area, property_type FROM analytics.dirty_series
             UNION SELECT area_kind, area, property_type FROM analytics.dirty_marks) d"#,
    )
    .fetch_one(executor)
    .await
}
