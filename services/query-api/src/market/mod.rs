//! Market endpoints: the series, summaries and area lists the analytics worker computed
//! (here, with the request parsing both share), and market report jobs (`jobs`: the
//! query API queues them; an analytics worker builds them).

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, post_with};
use aide::transform::TransformOperation;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{Days, NaiveDate, Utc};
use keh_analytics::compute::Grain;
use keh_analytics::facts::{ALL_TYPES, AreaKind, MARKET};
use keh_analytics::reports::ReportJob;
use keh_analytics::reports::{self, ReportRequest};
use keh_analytics::store::{self, MetricsRow, SeriesKey, SeriesRow};
use keh_auth::Caller;
use keh_events::reso::PropertyType;
use keh_http::docs::{self, Access, Describe as _, QueryParam};
use keh_http::json::ApiJson;
use keh_http::{FieldError, Problem};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::params::{Params, invalid, schemas};
use crate::{QueryApi, database_problem};

mod jobs;

pub use jobs::ReportBody;
use jobs::{
    report_csv, report_csv_docs, report_json, report_json_docs, report_status, report_status_docs,
    request_report, request_report_docs,
};

/// The longest range a series or report may cover.
const MAX_RANGE_DAYS: u64 = 366 * 20;

pub(crate) fn routes() -> ApiRouter<QueryApi> {
    ApiRouter::new()
        .api_route("/api/v1/market/areas", get_with(areas, areas_docs))
        .api_route("/api/v1/market/series", get_with(series, series_docs))
        .api_route("/api/v1/market/summary", get_with(summary, summary_docs))
        .api_route(
            "/api/v1/market/reports",
            post_with(request_report, request_report_docs),
        )
        .api_route(
            "/api/v1/market/reports/{ReportId}",
            get_with(report_status, report_status_docs),
        )
        .api_route(
            "/api/v1/market/reports/{ReportId}/report.csv",
            get_with(report_csv, report_csv_docs),
        )
        .api_route(
            "/api/v1/market/reports/{ReportId}/report.json",
            get_with(report_json, report_json_docs),
        )
}

fn area_kinds() -> Value {
    json!({"type": "string", "enum": AreaKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>()})
}

/// A RESO property type, or `All`.
fn types_or_all() -> Value {
    let mut values: Vec<&str> = PropertyType::ALL.iter().map(|t| t.as_str()).collect();
    values.push(ALL_TYPES);
    json!({"type": "string", "enum": values})
}

fn periods() -> Value {
    json!({"type": "string", "enum": [Grain::Week.as_str(), Grain::Month.as_str()]})
}

/// What `GET /api/v1/market/areas` accepts.
const AREAS_PARAMS: &[QueryParam] = &[
    QueryParam::new("area_kind", area_kinds, "Only this kind"),
    QueryParam::new("property_type", types_or_all, "Only this property type"),
];

/// What `GET /api/v1/market/summary` accepts: one series.
const SUMMARY_PARAMS: &[QueryParam] = &[
    QueryParam::new("area_kind", area_kinds, "Kind of area (default market)"),
    QueryParam::new(
        "area",
        schemas::text,
        "The area (required unless area_kind is market)",
    ),
    QueryParam::new(
        "property_type",
        types_or_all,
        "A RESO PropertyType, or All (default)",
    ),
];

/// What `GET /api/v1/market/series` accepts: one series and a range of periods.
const SERIES_PARAMS: &[QueryParam] = &[
    SUMMARY_PARAMS[0],
    SUMMARY_PARAMS[1],
    SUMMARY_PARAMS[2],
    QueryParam::new("period", periods, "Period length (default month)"),
    QueryParam::new(
        "from",
        schemas::date,
        "Periods that end on or after this day",
    ),
    QueryParam::new(
        "to",
        schemas::date,
        "Periods that start on or before this day",
    ),
];

fn areas_docs(op: TransformOperation<'_>) -> TransformOperation<'_> {
    op.named(
        "marketAreas",
        "Market",
        "Every area and property type with market data",
    )
    .access(Access::Read)
    .queries(AREAS_PARAMS)
    .answer(
        200,
        docs::ok("Areas", docs::items(docs::schema::<SeriesRow>())),
    )
    .errors(&[403])
}

fn series_docs(op: TransformOperation<'_>) -> TransformOperation<'_> {
    let series = json!({
        "type": "object",
        "required": ["AreaKind", "Area", "PropertyType", "Period", "items"],
        "properties": {
            "AreaKind": {"type": "string"}, "Area": {"type": "string"},
            "PropertyType": {"type": "string"}, "Period": {"type": "string"},
            "items": {"type": "array", "items": docs::schema::<MetricsRow>()},
        },
    });
    op.named(
        "marketSeries",
        "Market",
        "Market metrics of one area and property type, per week or month",
    )
    .access(Access::Read)
    .queries(SERIES_PARAMS)
    .answer(200, docs::ok("The series", series))
    .errors(&[403, 404])
}

fn summary_docs(op: TransformOperation<'_>) -> TransformOperation<'_> {
    let row = json!({"anyOf": [docs::schema::<MetricsRow>(), {"type": "null"}]});
    let summary = json!({
        "type": "object",
        "properties": {
            "AreaKind": {"type": "string"}, "Area": {"type": "string"}, "PropertyType": {"type": "string"},
            "CurrentMonth": row, "PreviousMonth": row, "CurrentWeek": row, "PreviousWeek": row,
        },
    });
    op.named(
        "marketSummary",
        "Market",
        "This month and week against the previous ones",
    )
    .access(Access::Read)
    .queries(SUMMARY_PARAMS)
    .answer(200, docs::ok("The summary", summary))
    .errors(&[403, 404])
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
    params.only(AREAS_PARAMS)?;
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
    params.only(SERIES_PARAMS)?;
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
    params.only(SUMMARY_PARAMS)?;
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
