//! Bad input: every case gets its 4xx `application/problem+json` naming the problem, and no
//! event is written.

use kubeestatehub::Roles;
use reqwest::Method;
use serde_json::json;

use crate::harness::*;

/// One bad request and what it must get.
pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) content_type: Option<&'static str>,
    pub(crate) body: String,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) status: u16,
    /// `type` suffix of the problem.
    pub(crate) kind: &'static str,
    /// The field the problem must name, if one.
    pub(crate) field: Option<&'static str>,
}

pub(crate) fn case(
    name: &'static str,
    method: Method,
    path: &str,
    body: serde_json::Value,
    status: u16,
    kind: &'static str,
    field: Option<&'static str>,
) -> Case {
    Case {
        name,
        method,
        path: path.to_owned(),
        content_type: Some("application/json"),
        body: body.to_string(),
        headers: Vec::new(),
        status,
        kind,
        field,
    }
}

#[tokio::test]
async fn bad_inputs_get_problem_json_and_write_nothing() {
    let db = TestDb::create().await;
    let app = TestApp::spawn(
        settings(&db, &nats_url(), &unique_id()),
        Roles {
            command_api: true,
            ..Roles::NONE
        },
    )
    .await;
    let listing_id = format!("MLS-{}", unique_id());
    let key = app
        .create_listing(
            json!({"PropertyType": "Residential", "ListPrice": 500000, "ListingId": listing_id}),
        )
        .await;
    let listing = format!("/api/v1/listings/{key}");
    let create = "/api/v1/listings";
    let valid = || json!({"PropertyType": "Residential", "ListPrice": 100000});
    let with = |field: &str, value: serde_json::Value| {
        let mut body = valid();
        body[field] = value;
        body
    };
    let post = Method::POST;

    let mut cases = vec![
        case(
            "price as a string",
            post.clone(),
            create,
            with("ListPrice", json!("abc")),
            422,
            "validation",
            Some("ListPrice"),
        ),
        case(
            "missing PropertyType",
            post.clone(),
            create,
            json!({"ListPrice": 1}),
            422,
            "validation",
            Some("PropertyType"),
        ),
        case(
            "negative price",
            post.clone(),
            create,
            with("ListPrice", json!(-5)),
            422,
            "validation",
            Some("ListPrice"),
        ),
        case(
            "zero price",
            post.clone(),
            create,
            with("ListPrice", json!(0)),
            422,
            "validation",
            Some("ListPrice"),
        ),
        case(
            "price with 3 decimals",
            post.clone(),
            create,
            with("ListPrice", json!(1.001)),
            422,
            "validation",
            Some("ListPrice"),
        ),
        case(
            "price beyond decimal(14,2)",
            post.clone(),
            create,
            with("ListPrice", json!(1e13)),
            422,
            "validation",
            Some("ListPrice"),
        ),
        case(
            "unknown PropertyType",
            post.clone(),
            create,
            with("PropertyType", json!("Castle")),
            422,
            "validation",
            Some("PropertyType"),
        ),
        case(
            "created Closed",
            post.clone(),
            create,
            with("StandardStatus", json!("Closed")),
            422,
            "validation",
            Some("StandardStatus"),
        ),
        case(
            "remarks over 4000 characters",
            post.clone(),
            create,
            with("PublicRemarks", json!("x".repeat(4001))),
            422,
            "validation",
            Some("PublicRemarks"),
        ),
        case(
            "city over 255 characters",
            post.clone(),
            create,
            with("City", json!("c".repeat(256))),
            422,
            "validation",
            Some("City"),
        ),
        case(
            "misspelt field",
            post.clone(),
            create,
            with("Listprice", json!(1)),
            422,
            "validation",
            Some("Listprice"),
        ),
        case(
            "latitude out of range",
            post.clone(),
            create,
            with("Latitude", json!(91)),
            422,
            "validation",
            Some("Latitude"),
        ),
        case(
            "negative bedrooms",
            post.clone(),
            create,
            with("BedroomsTotal", json!(-1)),
            422,
            "validation",
            Some("BedroomsTotal"),
        ),
        case(
            "fractional bedrooms",
            post.clone(),
            create,
            with("BedroomsTotal", json!(2.5)),
            422,
            "validation",
            Some("BedroomsTotal"),
        ),
        case(
            "impossible date",
            post.clone(),
            create,
            with("ListingContractDate", json!("2026-13-01")),
            422,
            "validation",
            Some("ListingContractDate"),
        ),
        case(
            "entry in the future",
            post.clone(),
            create,
            with("OriginalEntryTimestamp", json!("2099-01-01T00:00:00Z")),
            422,
            "validation",
            Some("OriginalEntryTimestamp"),
        ),
        case(
            "blank city",
            post.clone(),
            create,
            with("City", json!("   ")),
            422,
            "validation",
            Some("City"),
        ),
        case(
            "body is an array",
            post.clone(),
            create,
            json!([1, 2]),
            422,
            "validation",
            None,
        ),
        case(
            "duplicate ListingId",
            post.clone(),
            create,
            with("ListingId", json!(listing_id)),
            409,
            "listing-id-taken",
            Some("ListingId"),
        ),
        case(
            "duplicate ListingKey",
            post.clone(),
            create,
            with("ListingKey", json!(key)),
            409,
            "already-exists",
            Some("ListingKey"),
        ),
        case(
            "price of an unknown listing",
            post.clone(),
            "/api/v1/listings/no-such-listing/price",
            json!({"ListPrice": 1}),
            404,
            "not-found",
            Some("ListingKey"),
        ),
        case(
            "refused transition",
            post.clone(),
            &format!("{listing}/status"),
            json!({"StandardStatus": "Closed", "ClosePrice": 1, "CloseDate": "2026-01-01"}),
            422,
            "validation",
            Some("StandardStatus"),
        ),
        case(
            "unknown status",
            post.clone(),
            &format!("{listing}/status"),
            json!({"StandardStatus": "Sold"}),
            422,
            "validation",
            Some("StandardStatus"),
        ),
        case(
            "ClosePrice on a withdrawal",
            post.clone(),
            &format!("{listing}/status"),
            json!({"StandardStatus": "Withdrawn", "ClosePrice": 1}),
            422,
            "validation",
            Some("ClosePrice"),
        ),
        case(
            "media URL not http",
            post.clone(),
            &format!("{listing}/media"),
            json!({"MediaURL": "ftp://x/y.jpg", "MediaCategory": "Photo"}),
            422,
            "validation",
            Some("MediaURL"),
        ),
        case(
            "unknown media category",
            post.clone(),
            &format!("{listing}/media"),
            json!({"MediaURL": "https://x/y.jpg", "MediaCategory": "Selfie"}),
            422,
            "validation",
            Some("MediaCategory"),
        ),
        case(
            "open house ends before it starts",
            post.clone(),
            &format!("{listing}/open-houses"),
            json!({"OpenHouseStartTime": "2027-01-01T15:00:00Z", "OpenHouseEndTime": "2027-01-01T14:00:00Z"}),
            422,
            "validation",
            Some("OpenHouseEndTime"),
        ),
        case(
            "reorder with unknown keys",
            Method::PUT,
            &format!("{listing}/media/order"),
            json!({"MediaKeys": ["nope"]}),
            422,
            "validation",
            Some("MediaKeys"),
        ),
        case(
            "remove unknown media",
            Method::DELETE,
            &format!("{listing}/media/nope"),
            json!(null),
            404,
            "not-found",
            Some("MediaKey"),
        ),
        case(
            "cancel unknown open house",
            Method::DELETE,
            &format!("{listing}/open-houses/nope"),
            json!(null),
            404,
            "not-found",
            Some("OpenHouseKey"),
        ),
        case(
            "clear ListPrice",
            Method::PATCH,
            &listing,
            json!({"ListPrice": null}),
            422,
            "validation",
            Some("ListPrice"),
        ),
        case(
            "expiration before contract",
            Method::PATCH,
            &listing,
            json!({"ExpirationDate": "1999-01-01"}),
            422,
            "validation",
            Some("ExpirationDate"),
        ),
        case(
            "patch an unknown listing",
            Method::PATCH,
            "/api/v1/listings/nope",
            json!({"City": "X"}),
            404,
            "not-found",
            Some("ListingKey"),
        ),
        case(
            "unknown route",
            Method::GET,
            "/api/v1/listingz",
            json!(null),
            404,
            "not-found",
            None,
        ),
        case(
            "wrong method",
            Method::PUT,
            create,
            valid(),
            405,
            "method-not-allowed",
            None,
        ),
        case(
            "listing key too long",
            post.clone(),
            &format!("/api/v1/listings/{}/price", "k".repeat(300)),
            json!({"ListPrice": 1}),
            400,
            "invalid-path-parameter",
            Some("ListingKey"),
        ),
    ];
    cases.push(Case {
        content_type: None,
        ..case(
            "no content type",
            post.clone(),
            create,
            valid(),
            415,
            "unsupported-media-type",
            None,
        )
    });
    cases.push(Case {
        content_type: Some("text/plain"),
        ..case(
            "wrong content type",
            post.clone(),
            create,
            valid(),
            415,
            "unsupported-media-type",
            None,
        )
    });
    cases.push(Case {
        body: "{\"ListPrice\": ".to_owned(),
        ..case(
            "malformed JSON",
            post.clone(),
            create,
            json!(null),
            400,
            "malformed-json",
            None,
        )
    });
    cases.push(Case {
        body: format!("{{\"PublicRemarks\": \"{}\"}}", "x".repeat(70_000)),
        ..case(
            "body too large",
            post.clone(),
            create,
            json!(null),
            413,
            "body-too-large",
            None,
        )
    });
    cases.push(Case {
        headers: vec![("if-match", "abc".to_owned())],
        ..case(
            "malformed If-Match",
            post.clone(),
            &format!("{listing}/price"),
            json!({"ListPrice": 1}),
            400,
            "invalid-if-match",
            Some("If-Match"),
        )
    });
    cases.push(Case {
        headers: vec![("if-match", "\"9\"".to_owned())],
        ..case(
            "stale If-Match",
            post.clone(),
            &format!("{listing}/price"),
            json!({"ListPrice": 1}),
            412,
            "version-mismatch",
            None,
        )
    });
    cases.push(Case {
        headers: vec![("idempotency-key", "k".repeat(300))],
        ..case(
            "oversized Idempotency-Key",
            post.clone(),
            create,
            valid(),
            400,
            "invalid-idempotency-key",
            Some("Idempotency-Key"),
        )
    });
    assert!(cases.len() >= 25);

    let pool = db.pool().await;
    let mut failures = Vec::new();
    for case in cases {
        if let Some(failure) = answer_mismatch(&app, &case).await {
            failures.push(failure);
        }
        let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await
            .expect("count");
        if events != 1 {
            failures.push(format!("{}: wrote an event", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    pool.close().await;
    app.stop().await;
}

/// Sends `case`; describes how the answer differs from the expected problem, if it does.
pub(crate) async fn answer_mismatch(app: &TestApp, case: &Case) -> Option<String> {
    let mut request = app.client.request(case.method.clone(), app.url(&case.path));
    if let Some(content_type) = case.content_type {
        request = request.header("content-type", content_type);
    }
    if case.body != "null" {
        request = request.body(case.body.clone());
    }
    for (name, value) in &case.headers {
        request = request.header(*name, value);
    }
    let reply = app.send(request).await;
    let kind = format!("/api/v1/problems/{}", case.kind);
    let named = case.field.is_none_or(|f| {
        reply.body["errors"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["field"] == f))
    });
    if reply.status != case.status
        || reply.header("content-type") != Some("application/problem+json")
        || reply.body["type"] != kind
        || reply.body["status"] != case.status
        || reply.body["detail"].as_str().is_none_or(str::is_empty)
        || !named
    {
        return Some(format!(
            "{}: expected {} {kind} naming {:?}, got {} {:?} {}",
            case.name,
            case.status,
            case.field,
            reply.status,
            reply.header("content-type"),
            reply.body
        ));
    }
    None
}
