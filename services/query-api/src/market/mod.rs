//! Market endpoints: the series, summaries and area lists the analytics worker computed
//! (here, with the request parsing both share), and market report jobs (`jobs`: the
//! query API queues them; an analytics worker builds them).

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{Days, NaiveDate, Utc};
use keh_analytics::compute::Grain;
use keh_analytics::facts::{ALL_TYPES, AreaKind, MARKET};
use keh_analytics::reports::{self, ReportRequest};
use keh_analytics::store::{self, SeriesKey};
use keh_auth::Caller;
use keh_events::reso::PropertyType;
use keh_http::json::ApiJson;
use keh_http::{FieldError, Problem};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::params::{Params, invalid};
use crate::{QueryApi, database_problem};

mod jobs;

pub use jobs::ReportBody;
use jobs::{report_csv, report_json, report_status, request_report};

/// The longest range a series or report may cover.
const MAX_RANGE_DAYS: u64 = 366 * 20;

pub(crate) fn routes() -> Router<QueryApi> {
    Router::new()
        .route("/api/v1/market/areas", get(areas))
        .route("/api/v1/market/series", get(series))
        .route("/api/v1/market/summary", get(summary))
        .route("/api/v1/market/reports", post(request_report))
        .route("/api/v1/market/reports/{id}", get(report_status))
        .route("/api/v1/market/reports/{id}/report.csv", get(report_csv))
        .route("/api/v1/market/reports/{id}/report.json", get(report_json))
}

/// A field of a market request, in the query string and in a report body alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    AreaKind,
    Area,
    PropertyType,
    Period,
    From,
    To,
}

impl Field {
    /// Its name as a query parameter.
    fn query_name(self) -> &'static str {
        match self {
            Self::AreaKind => "area_kind",
            Self::Area => "area",
            Self::PropertyType => "property_type",
            Self::Period => "period",
            Self::From => "from",
            Self::To => "to",
        }
    }

    /// Its name in a report request's body (RESO-style PascalCase).
    fn body_name(self) -> &'static str {
        match self {
            Self::AreaKind => "AreaKind",
            Self::Area => "Area",
            Self::PropertyType => "PropertyType",
            Self::Period => "Period",
            Self::From => "From",
            Self::To => "To",
        }
    }
}

/// A field that is not acceptable: which one, the rule it breaks and why.
#[derive(Debug)]
struct Refusal {
    field: Field,
    rule: &'static str,
    message: String,
}

fn refused(field: Field, rule: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        field,
        rule,
        message: message.into(),
    }
}

const KINDS: &str = "market, city, postal-code or subdivision";

fn parse_kind(value: Option<&str>) -> Result<AreaKind, Refusal> {
    match value {
        None => Ok(AreaKind::Market),
        Some(v) => AreaKind::parse(v.trim())
            .ok_or_else(|| refused(Field::AreaKind, "invalid-value", format!("must be {KINDS}"))),
    }
}

/// The series a request names: an area of a kind (`market` needs none) and a RESO property
/// type (human or compact spelling) or `All`.
fn parse_series(
    kind: Option<&str>,
    area: Option<&str>,
    property_type: Option<&str>,
) -> Result<SeriesKey, Refusal> {
    let kind = parse_kind(kind)?;
    let area = match (kind, area.map(str::trim)) {
        (AreaKind::Market, None) => MARKET.to_owned(),
        (AreaKind::Market, Some(v)) if v == MARKET => MARKET.to_owned(),
        (AreaKind::Market, Some(_)) => {
            return Err(refused(
                Field::Area,
                "invalid-value",
                format!("must be {MARKET} (or absent) for the whole market"),
            ));
        }
        (_, None) => {
            return Err(refused(
                Field::Area,
                "required",
                format!("is required for area kind {}", kind.as_str()),
            ));
        }
        (_, Some(v))
            if v.is_empty() || v.chars().count() > 255 || v.chars().any(char::is_control) =>
        {
            return Err(refused(
                Field::Area,
                "invalid-value",
                "must be 1 to 255 characters, none of them control characters",
            ));
        }
        (_, Some(v)) => v.to_owned(),
    };
    let property_type = match property_type.map(str::trim) {
        None => ALL_TYPES.to_owned(),
        Some(v) if v == ALL_TYPES => ALL_TYPES.to_owned(),
        Some(v) => v
            .parse::<PropertyType>()
            .map_err(|_| {
                refused(
                    Field::PropertyType,
                    "invalid-value",
                    format!("must be a RESO PropertyType or {ALL_TYPES}"),
                )
            })?
            .as_str()
            .to_owned(),
    };
    Ok(SeriesKey {
        kind,
        area,
        property_type,
    })
}

fn parse_grain(value: Option<&str>) -> Result<Grain, Refusal> {
    match value {
        None => Ok(Grain::Month),
        Some(v) => Grain::parse(v.trim())
            .ok_or_else(|| refused(Field::Period, "invalid-value", "must be week or month")),
    }
}

fn check_range(from: Option<NaiveDate>, to: Option<NaiveDate>) -> Result<(), Refusal> {
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            return Err(refused(Field::From, "out-of-range", "must not be after to"));
        }
        if from
            .checked_add_days(Days::new(MAX_RANGE_DAYS))
            .is_some_and(|limit| to > limit)
        {
            return Err(refused(
                Field::To,
                "out-of-range",
                "the range must not exceed 20 years",
            ));
        }
    }
    Ok(())
}

/// A refused query parameter, under its query name.
fn query_problem(refusal: Refusal) -> Problem {
    invalid(refusal.field.query_name(), refusal.rule, &refusal.message)
}

fn date_param(params: &Params, name: &str) -> Result<Option<NaiveDate>, Problem> {
    params.parsed(name, "a date such as 2026-01-31")
}

fn unknown_series(key: &SeriesKey) -> Problem {
    Problem::not_found(format!(
        "no market data for {} {} and property type {}",
        key.kind.as_str(),
        key.area,
        key.property_type
    ))
    .with_field(
        "area",
        "not-found",
        "no listing counts in this area and property type",
    )
}

/// `GET /api/v1/market/areas[?area_kind=…][&property_type=…]`: every area with data.
async fn areas(
    State(api): State<QueryApi>,
    caller: Caller,
    params: Params,
) -> Result<Response, Problem> {
    caller.require_read()?;
    params.only(&["area_kind", "property_type"])?;
    let kind = params
        .text("area_kind")?
        .map(|k| parse_kind(Some(k)).map_err(query_problem))
        .transpose()?;
    let property_type = params
        .text("property_type")?
        .map(|t| {
            parse_series(None, None, Some(t))
                .map(|key| key.property_type)
                .map_err(query_problem)
        })
        .transpose()?;
    let _timer = keh_platform::metrics::db_timer("market.areas");
    let items = store::series_list(&api.shared.pool, kind, property_type.as_deref())
        .await
        .map_err(|e| database_problem(&e))?;
    Ok(Json(json!({ "items": items })).into_response())
}

/// `GET /api/v1/market/series?area_kind=…&area=…&property_type=…&period=week|month&from=…&to=…`.
async fn series(
    State(api): State<QueryApi>,
    caller: Caller,
    params: Params,
) -> Result<Response, Problem> {
    caller.require_read()?;
    params.only(&["area_kind", "area", "property_type", "period", "from", "to"])?;
    let key = parse_series(
        params.text("area_kind")?,
        params.text("area")?,
        params.text("property_type")?,
    )
    .map_err(query_problem)?;
    let grain = parse_grain(params.text("period")?).map_err(query_problem)?;
    let from = date_param(&params, "from")?;
    let to = date_param(&params, "to")?;
    check_range(from, to).map_err(query_problem)?;
    let _timer = keh_platform::metrics::db_timer("market.series");
    if !store::series_exists(&api.shared.pool, &key)
        .await
        .map_err(|e| database_problem(&e))?
    {
        return Err(unknown_series(&key));
    }
    let items = store::series_rows(
        &api.shared.pool,
        &key,
        grain,
        from.map(|d| grain.start_of(d)),
        to,
    )
    .await
    .map_err(|e| database_problem(&e))?;
    Ok(Json(json!({
        "AreaKind": key.kind.as_str(),
        "Area": key.area,
        "PropertyType": key.property_type,
        "Period": grain.as_str(),
        "items": items,
    }))
    .into_response())
}

/// `GET /api/v1/market/summary?area_kind=…&area=…&property_type=…`: the current month and
/// week (as of today) next to the previous complete month and week.
async fn summary(
    State(api): State<QueryApi>,
    caller: Caller,
    params: Params,
) -> Result<Response, Problem> {
    caller.require_read()?;
    params.only(&["area_kind", "area", "property_type"])?;
    let key = parse_series(
        params.text("area_kind")?,
        params.text("area")?,
        params.text("property_type")?,
    )
    .map_err(query_problem)?;
    let _timer = keh_platform::metrics::db_timer("market.summary");
    if !store::series_exists(&api.shared.pool, &key)
        .await
        .map_err(|e| database_problem(&e))?
    {
        return Err(unknown_series(&key));
    }
    let today = Utc::now().date_naive();
    let mut body = json!({
        "AreaKind": key.kind.as_str(),
        "Area": key.area,
        "PropertyType": key.property_type,
    });
    for (grain, current, previous) in [
        (Grain::Month, "CurrentMonth", "PreviousMonth"),
        (Grain::Week, "CurrentWeek", "PreviousWeek"),
    ] {
        let start = grain.start_of(today);
        let before = grain.start_of(start.pred_opt().unwrap_or(start));
        let rows = store::series_rows(&api.shared.pool, &key, grain, Some(before), Some(start))
            .await
            .map_err(|e| database_problem(&e))?;
        let pick = |s: NaiveDate| {
            rows.iter()
                .find(|r| r.period_start == s)
                .map_or(serde_json::Value::Null, |r| json!(r))
        };
        body[current] = pick(start);
        body[previous] = pick(before);
    }
    Ok(Json(body).into_response())
}
