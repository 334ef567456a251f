//! Market report jobs: `POST /api/v1/market/reports` queues one (202 with its `Location`),
//! its status, and its files once an analytics worker has built them.

use super::*;

/// The body of `POST /api/v1/market/reports`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ReportBody {
    /// market (default), city, postal-code or subdivision.
    #[serde(default)]
    pub area_kind: Option<String>,
    /// The area; `All` for the whole market.
    pub area: String,
    /// A RESO PropertyType or All (default).
    #[serde(default)]
    pub property_type: Option<String>,
    /// week or month (default).
    #[serde(default)]
    pub period: Option<String>,
    pub from: NaiveDate,
    pub to: NaiveDate,
}

/// `/api/v1/market/reports/{ReportId}…`
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(super) struct ReportPath {
    /// The report job.
    #[serde(rename = "ReportId")]
    #[schemars(with = "Uuid")]
    report_id: String,
}

/// The documentation of `POST /api/v1/market/reports`.
pub(super) fn request_report_docs(op: TransformOperation<'_>) -> TransformOperation<'_> {
    op.named(
        "requestReport",
        "Market",
        "Queue a market report (built in the background)",
    )
    .access(Access::Required)
    .answer(
        202,
        json!({
            "description": "Queued; Location names the job",
            "headers": {"Location": {"schema": {"type": "string"}}},
            "content": {"application/json": {"schema": docs::schema::<ReportJob>()}},
        }),
    )
    .errors(&[403, 422])
}

/// The documentation of `GET /api/v1/market/reports/{ReportId}`.
pub(super) fn report_status_docs(op: TransformOperation<'_>) -> TransformOperation<'_> {
    op.named(
        "reportStatus",
        "Market",
        "A report job (Downloads once done)",
    )
    .access(Access::Read)
    .answer(200, docs::ok("The job", docs::schema::<ReportJob>()))
    .errors(&[403, 404])
}

/// The documentation of `GET /api/v1/market/reports/{ReportId}/report.csv`.
pub(super) fn report_csv_docs(op: TransformOperation<'_>) -> TransformOperation<'_> {
    op.named("reportCsv", "Market", "A finished report as CSV")
        .access(Access::Read)
        .answer(
            200,
            json!({"description": "The report", "content": {"text/csv": {"schema": {"type": "string"}}}}),
        )
        .errors(&[403, 404, 409])
}

/// The documentation of `GET /api/v1/market/reports/{ReportId}/report.json`.
pub(super) fn report_json_docs(op: TransformOperation<'_>) -> TransformOperation<'_> {
    op.named("reportJson", "Market", "A finished report as JSON")
        .access(Access::Read)
        .answer(200, docs::ok("The report", json!({"type": "object"})))
        .errors(&[403, 404, 409])
}

/// A refused body field, under its body name.
fn body_problem(refusal: Refusal) -> Problem {
    Problem::validation(vec![FieldError {
        field: refusal.field.body_name().to_owned(),
        rule: refusal.rule.to_owned(),
        message: refusal.message,
    }])
}

fn report_location(id: Uuid) -> String {
    format!("/api/v1/market/reports/{id}")
}

/// `POST /api/v1/market/reports`: 202 with the queued job and its `Location`.
pub(super) async fn request_report(
    State(api): State<QueryApi>,
    caller: Caller,
    ApiJson(body): ApiJson<ReportBody>,
) -> Result<Response, Problem> {
    caller.require_identified()?;
    let series = parse_series(
        body.area_kind.as_deref(),
        Some(body.area.as_str()),
        body.property_type.as_deref(),
    )
    .map_err(body_problem)?;
    let grain = parse_grain(body.period.as_deref()).map_err(body_problem)?;
    check_range(Some(body.from), Some(body.to)).map_err(body_problem)?;
    if !store::series_exists(&api.shared.pool, &series)
        .await
        .map_err(|e| database_problem(&e))?
    {
        return Err(Problem::validation(vec![FieldError {
            field: "Area".to_owned(),
            rule: "not-found".to_owned(),
            message: unknown_series(&series).detail,
        }]));
    }
    let job = reports::request(
        &api.shared.pool,
        &ReportRequest {
            series,
            grain,
            from: body.from,
            to: body.to,
            requested_by: caller.actor(),
        },
    )
    .await
    .map_err(|e| database_problem(&e))?;
    let mut response = (StatusCode::ACCEPTED, Json(job_body(&job))).into_response();
    if let Ok(location) = HeaderValue::from_str(&report_location(job.report_id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

fn job_body(job: &reports::ReportJob) -> serde_json::Value {
    let mut body = json!(job);
    if job.status == "done" {
        let base = report_location(job.report_id);
        body["Downloads"] = json!({
            "csv": format!("{base}/report.csv"),
            "json": format!("{base}/report.json"),
        });
    }
    body
}

fn parse_id(raw: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| {
        Problem::bad_request("invalid-path-parameter", "the report id must be a UUID").with_field(
            "ReportId",
            "invalid-value",
            "must be a UUID",
        )
    })
}

fn no_report(id: Uuid) -> Problem {
    Problem::not_found(format!("no market report has id {id}"))
}

/// `GET /api/v1/market/reports/{ReportId}`: the job's status (and its downloads once done).
pub(super) async fn report_status(
    State(api): State<QueryApi>,
    caller: Caller,
    Path(path): Path<ReportPath>,
) -> Result<Response, Problem> {
    caller.require_read()?;
    let id = parse_id(&path.report_id)?;
    let job = reports::job(&api.shared.pool, id)
        .await
        .map_err(|e| database_problem(&e))?
        .ok_or_else(|| no_report(id))?;
    Ok(Json(job_body(&job)).into_response())
}

async fn report_files(api: &QueryApi, raw: &str) -> Result<(Uuid, reports::ReportFiles), Problem> {
    let id = parse_id(raw)?;
    if let Some(files) = reports::files(&api.shared.pool, id)
        .await
        .map_err(|e| database_problem(&e))?
    {
        return Ok((id, files));
    }
    let job = reports::job(&api.shared.pool, id)
        .await
        .map_err(|e| database_problem(&e))?
        .ok_or_else(|| no_report(id))?;
    Err(Problem::new(
        StatusCode::CONFLICT,
        "report-not-ready",
        "Report not ready",
        format!(
            "the report is {}; poll {} until it is done",
            job.status,
            report_location(id)
        ),
    ))
}

fn attachment(id: Uuid, extension: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "attachment; filename=\"market-report-{id}.{extension}\""
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// A finished report's file as an attachment named `market-report-ID.EXTENSION`.
async fn download(
    api: &QueryApi,
    caller: &Caller,
    path: &ReportPath,
    extension: &str,
    body: impl FnOnce(reports::ReportFiles) -> Response,
) -> Result<Response, Problem> {
    caller.require_read()?;
    let (id, files) = report_files(api, &path.report_id).await?;
    let mut response = body(files);
    response
        .headers_mut()
        .insert(header::CONTENT_DISPOSITION, attachment(id, extension));
    Ok(response)
}

/// `GET /api/v1/market/reports/{ReportId}/report.csv`.
pub(super) async fn report_csv(
    State(api): State<QueryApi>,
    caller: Caller,
    Path(path): Path<ReportPath>,
) -> Result<Response, Problem> {
    download(&api, &caller, &path, "csv", |files| {
        let csv = HeaderValue::from_static("text/csv; charset=utf-8");
        ([(header::CONTENT_TYPE, csv)], files.csv).into_response()
    })
    .await
}

/// `GET /api/v1/market/reports/{ReportId}/report.json`.
pub(super) async fn report_json(
    State(api): State<QueryApi>,
    caller: Caller,
    Path(path): Path<ReportPath>,
) -> Result<Response, Problem> {
    download(&api, &caller, &path, "json", |files| {
        Json(files.json).into_response()
    })
    .await
}
