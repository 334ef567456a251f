//! Market reports: a client asks for a series over a date range; an analytics worker builds
//! it in the background as CSV and JSON; the client polls the job and downloads the result.
//!
//! A job is claimed with a lease (`running` until `lease_until`). A worker that dies
//! mid-build leaves the lease to run out, and the job is claimed again, by it after its
//! restart or by another replica. After [`MAX_ATTEMPTS`] claims the job fails visibly.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::compute::Grain;
use crate::facts::AreaKind;
use crate::store::{self, METRIC_NAMES, SeriesKey};

/// Claims of one job before it is marked failed.
pub const MAX_ATTEMPTS: i32 = 3;

/// What a client asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportRequest {
    pub series: SeriesKey,
    pub grain: Grain,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub requested_by: String,
}

/// A job as clients see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ReportJob {
    pub report_id: Uuid,
    pub status: String,
    pub area_kind: String,
    pub area: String,
    pub property_type: String,
    pub period: String,
    #[serde(rename = "From")]
    pub from_date: NaiveDate,
    #[serde(rename = "To")]
    pub to_date: NaiveDate,
    pub requested_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(rename = "Rows", skip_serializing_if = "Option::is_none")]
    pub row_count: Option<i32>,
}

/// Queues a report; returns the job.
pub async fn request(pool: &PgPool, request: &ReportRequest) -> Result<ReportJob, sqlx::Error> {
    sqlx::query_as!(
        ReportJob,
        "INSERT INTO analytics.reports
             (report_id, area_kind, area, property_type, period, from_date, to_date, requested_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         RETURNING report_id, status, area_kind, area, property_type, period, from_date, to_date,
                   requested_at, started_at, finished_at, attempts, error, row_count",
        Uuid::new_v4(),
        request.series.kind.as_str(),
        request.series.area,
        request.series.property_type,
        request.grain.as_str(),
        request.from,
        request.to,
        request.requested_by,
    )
    .fetch_one(pool)
    .await
}

/// A job, if it exists.
pub async fn job(pool: &PgPool, report_id: Uuid) -> Result<Option<ReportJob>, sqlx::Error> {
    sqlx::query_as!(
        ReportJob,
        "SELECT report_id, status, area_kind, area, property_type, period, from_date, to_date,
                requested_at, started_at, finished_at, attempts, error, row_count
           FROM analytics.reports WHERE report_id = $1",
        report_id,
    )
    .fetch_optional(pool)
    .await
}

/// A finished report's files.
#[derive(Clone, Debug)]
pub struct ReportFiles {
    pub csv: String,
    pub json: serde_json::Value,
}

/// The files of a finished report (`None` while it is not done).
pub async fn files(pool: &PgPool, report_id: Uuid) -> Result<Option<ReportFiles>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT csv, json FROM analytics.reports WHERE report_id = $1 AND status = 'done'",
        report_id,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|r| {
        let (csv, json) = (r.csv, r.json);
        Some(ReportFiles {
            csv: csv?,
            json: json?,
        })
    }))
}

/// Claims the oldest job that is queued or whose lease ran out, builds it and stores the
/// result. Returns whether there was one.
pub async fn process_next(pool: &PgPool, lease: Duration) -> Result<bool, sqlx::Error> {
    let claimed = sqlx::query_as!(
        ReportJob,
        "UPDATE analytics.reports r
            SET status = 'running', attempts = r.attempts + 1, started_at = now(),
                lease_until = now() + $1::interval
           FROM (SELECT report_id AS next_id FROM analytics.reports
                  WHERE status = 'queued' OR (status = 'running' AND lease_until < now())
                  ORDER BY requested_at
                  LIMIT 1 FOR UPDATE SKIP LOCKED) next
          WHERE r.report_id = next.next_id
         RETURNING report_id, status, area_kind, area, property_type, period, from_date, to_date,
                   requested_at, started_at, finished_at, attempts, error, row_count",
        format!("{} milliseconds", lease.as_millis()) as _,
    )
    .fetch_optional(pool)
    .await?;
    let Some(job) = claimed else {
        return Ok(false);
    };
    let report_id = job.report_id;
    let (from, to) = (job.from_date, job.to_date);
    if job.attempts > MAX_ATTEMPTS {
        fail(
            pool,
            report_id,
            "the report could not be built after repeated attempts",
        )
        .await?;
        return Ok(true);
    }
    let (Some(kind), Some(grain)) = (AreaKind::parse(&job.area_kind), Grain::parse(&job.period))
    else {
        fail(
            pool,
            report_id,
            "the report's area kind or period is not known",
        )
        .await?;
        return Ok(true);
    };
    let (area, property_type) = (job.area, job.property_type);
    let series = SeriesKey {
        kind,
        area,
        property_type,
    };
    let rows =
        store::series_rows(pool, &series, grain, Some(grain.start_of(from)), Some(to)).await?;
    let items: Vec<serde_json::Value> = rows
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()
        .map_err(|e| sqlx::Error::Protocol(format!("serializing a report row: {e}")))?;
    let csv = to_csv(&items).map_err(|e| sqlx::Error::Protocol(format!("writing CSV: {e}")))?;
    let json = serde_json::json!({
        "ReportId": report_id,
        "AreaKind": series.kind.as_str(),
        "Area": series.area,
        "PropertyType": series.property_type,
        "Period": grain.as_str(),
        "From": from,
        "To": to,
        "GeneratedAt": Utc::now(),
        "Items": items,
    });
    sqlx::query!(
        "UPDATE analytics.reports
            SET status = 'done', finished_at = now(), lease_until = NULL, row_count = $2, csv = $3, json = $4
          WHERE report_id = $1 AND status = 'running'",
        report_id,
        i32::try_from(rows.len()).unwrap_or(i32::MAX),
        csv,
        json,
    )
    .execute(pool)
    .await?;
    tracing::info!(%report_id, rows = rows.len(), "market report built");
    Ok(true)
}

async fn fail(pool: &PgPool, report_id: Uuid, reason: &str) -> Result<(), sqlx::Error> {
    tracing::error!(%report_id, reason, "market report failed");
    sqlx::query!(
        "UPDATE analytics.reports SET status = 'failed', finished_at = now(), lease_until = NULL, error = $2
          WHERE report_id = $1",
        report_id,
        reason,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// One line per period, the JSON names as header; an empty cell where a figure is absent.
fn to_csv(items: &[serde_json::Value]) -> Result<String, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(METRIC_NAMES)?;
    for item in items {
        let record: Vec<String> = METRIC_NAMES
            .iter()
            .map(|name| match item.get(*name) {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            })
            .collect();
        writer.write_record(&record)?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
