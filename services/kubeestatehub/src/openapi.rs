//! The OpenAPI 3 document of every HTTP API, served at `/api/v1/openapi.json`.
//!
//! Schemas are generated from the Rust types the handlers parse and answer with (schemars,
//! the same derive that documents the event contract); operations are listed here, one
//! entry per route. A test holds this list and the routers to each other, and schemathesis
//! holds the running API to this document. Long because it lists every operation by hand:
//! deriving them from the handlers (utoipa or aide) would make the list, and this file's
//! length, go away.

use keh_analytics::reports::ReportJob;
use keh_analytics::store::{MetricsRow, SeriesRow};
use keh_auth::routes::{CreateApiKey, CreateUser, RefreshBody, SignIn, UpdateUser};
use keh_auth::service::{ApiKey, AuditEntry, TokenPair, User};
use keh_command_api::dto::{
    AddMediaRequest, ChangePriceRequest, ChangeStatusRequest, CreateListingRequest,
    PatchListingRequest, ReorderMediaRequest, ScheduleOpenHouseRequest,
};
use keh_http::Problem;
use keh_query_api::market::ReportBody;
use keh_resources::ListingResource;
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Value, json};

/// Who may call an operation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// No credentials needed (sign-in, probes).
    None,
    /// Anonymous when `KEH_ANONYMOUS_READ` is on, else a token or key.
    Read,
    /// A token or an API key.
    Required,
}

struct Doc {
    generator: SchemaGenerator,
    paths: serde_json::Map<String, Value>,
}

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    })
}

fn describe(code: u16) -> &'static str {
    match code {
        400 => "Malformed request: a path, query or header parameter, or malformed JSON",
        401 => "No, malformed, expired or revoked credentials",
        403 => "The caller may not do this",
        404 => "No such resource",
        405 => "Method not allowed",
        409 => {
            "Conflict: a concurrent change, a taken key, a report not ready yet, or a replay further back than an anonymous client may"
        }
        412 => "If-Match does not name the current version",
        413 => "Body too large",
        414 => "The request target is longer than 8 KiB",
        415 => "Not JSON",
        431 => "The request headers are larger than 32 KiB",
        422 => "Well-formed, but a field is not acceptable (field errors name it)",
        429 => "Too many requests (Retry-After says when to retry)",
        503 => "A dependency is unavailable; retry later (Retry-After)",
        504 => "The request took too long",
        _ => "Error",
    }
}

fn param(name: &str, location: &str, required: bool, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": location, "required": required, "schema": schema, "description": description})
}

fn query(name: &str, schema: Value, description: &str) -> Value {
    param(name, "query", false, schema, description)
}

fn path(name: &str, description: &str) -> Value {
    // Taken as it is: no surrounding whitespace, no control characters.
    param(
        name,
        "path",
        true,
        json!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[^\\s\\x00-\\x1f\\x7f]([^\\x00-\\x1f\\x7f]*[^\\s\\x00-\\x1f\\x7f])?$"}),
        description,
    )
}

fn uuid_path(name: &str, description: &str) -> Value {
    param(
        name,
        "path",
        true,
        json!({"type": "string", "format": "uuid"}),
        description,
    )
}

fn text() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 255})
}

/// A RESO property type, or `All`.
fn types_or_all() -> Value {
    let mut values: Vec<&str> = PROPERTY_TYPES.to_vec();
    values.push("All");
    json!({"type": "string", "enum": values})
}

/// A comma-separated list of enumeration values (`a,b,c`).
fn enum_list(values: &[&str]) -> Value {
    json!({"type": "array", "minItems": 1, "items": {"type": "string", "enum": values}})
}

fn list_query(name: &str, values: &[&str], description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "style": "form", "explode": false,
           "schema": enum_list(values), "description": description})
}

const STATUSES: &[&str] = &[
    "Active",
    "Active Under Contract",
    "Canceled",
    "Closed",
    "Coming Soon",
    "Delete",
    "Expired",
    "Hold",
    "Incomplete",
    "Pending",
    "Withdrawn",
];
const PROPERTY_TYPES: &[&str] = &[
    "Residential",
    "Residential Lease",
    "Residential Income",
    "Land",
    "Farm",
    "Commercial Sale",
    "Commercial Lease",
    "Business Opportunity",
    "Manufactured In Park",
];

/// OpenAPI 3.0 schemas are JSON Schema draft 4 in this respect: `exclusiveMinimum` is a
/// flag next to `minimum`, not a number. The shared RESO types describe themselves in
/// 2020-12 terms (for the event contract); this rewrites them. It also drops `"default":
/// null` (an absent optional field is simply absent), which some tools misread.
fn draft4_bounds(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("default").is_some_and(Value::is_null) {
                map.remove("default");
            }
            for (bound, flag) in [
                ("minimum", "exclusiveMinimum"),
                ("maximum", "exclusiveMaximum"),
            ] {
                if let Some(limit) = map.get(flag).filter(|v| v.is_number()).cloned() {
                    map.insert(bound.to_owned(), limit);
                    map.insert(flag.to_owned(), Value::Bool(true));
                }
            }
            for child in map.values_mut() {
                draft4_bounds(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(draft4_bounds),
        _ => {}
    }
}

fn date() -> Value {
    json!({"type": "string", "format": "date"})
}

fn timestamp() -> Value {
    json!({"type": "string", "format": "date-time"})
}

fn integer(min: i64, max: i64) -> Value {
    json!({"type": "integer", "minimum": min, "maximum": max})
}

fn decimal() -> Value {
    json!({"type": "number", "minimum": 0})
}

impl Doc {
    fn schema<T: JsonSchema>(&mut self) -> Value {
        self.generator.subschema_for::<T>().to_value()
    }

    #[allow(clippy::too_many_arguments)]
    fn op(
        &mut self,
        method: &str,
        route: &str,
        id: &str,
        tag: &str,
        summary: &str,
        auth: Auth,
        parameters: Vec<Value>,
        body: Option<Value>,
        answers: Vec<(u16, Value)>,
        errors: &[u16],
    ) {
        let mut responses = serde_json::Map::new();
        for (code, answer) in answers {
            responses.insert(code.to_string(), answer);
        }
        let mut codes: Vec<u16> = errors.to_vec();
        codes.extend([400, 414, 429, 431, 503, 504]);
        if auth != Auth::None {
            codes.push(401);
        }
        if body.is_some() {
            codes.extend([413, 415]);
        }
        codes.sort_unstable();
        codes.dedup();
        for code in codes {
            responses.insert(code.to_string(), problem_response(describe(code)));
        }
        let mut operation = json!({
            "operationId": id,
            "tags": [tag],
            "summary": summary,
            "parameters": parameters,
            "responses": responses,
        });
        operation["security"] = match auth {
            Auth::None => json!([]),
            Auth::Read => json!([{}, {"bearerAuth": []}, {"apiKey": []}]),
            Auth::Required => json!([{"bearerAuth": []}, {"apiKey": []}]),
        };
        if let Some(schema) = body {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": schema}},
            });
        }
        let item = self
            .paths
            .entry(route.to_owned())
            .or_insert_with(|| json!({}));
        item[method] = operation;
    }
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn items(schema: Value) -> Value {
    json!({"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": schema}}})
}

fn listing_answer(listing: &Value, description: &str) -> Value {
    json!({
        "description": description,
        "headers": {"ETag": {"description": "The listing's version, e.g. \"3\"", "schema": {"type": "string"}}},
        "content": {"application/json": {"schema": listing}},
    })
}

/// Paths of the API the document covers, as the routers declare them (`{param}` syntax).
pub fn document() -> Value {
    let mut doc = Doc {
        generator: SchemaSettings::openapi3().into_generator(),
        paths: serde_json::Map::new(),
    };
    let listing = doc.schema::<ListingResource>();
    let _problem = doc.schema::<Problem>();
    let listing_key = path("ListingKey", "The listing's system key");
    let if_match = param(
        "If-Match",
        "header",
        false,
        json!({"type": "string", "pattern": "^(\\*|\"[0-9]{1,19}\"( *, *\"[0-9]{1,19}\")*)$"}),
        "The listing's ETag (\"N\"): the command applies only at that version (412 otherwise)",
    );
    let idempotency = param(
        "Idempotency-Key",
        "header",
        false,
        json!({"type": "string", "pattern": "^[!-~]{1,255}$"}),
        "A retried command with the same key is answered with the first answer and changes nothing",
    );
    let command_errors: &[u16] = &[403, 404, 409, 412, 422];

    // ---- Commands.
    let body = doc.schema::<CreateListingRequest>();
    doc.op(
        "post",
        "/api/v1/listings",
        "createListing",
        "Commands",
        "Create a listing",
        Auth::Required,
        vec![idempotency.clone()],
        Some(body),
        vec![
            (
                201,
                listing_answer(&listing, "Created; Location names the listing"),
            ),
            (
                200,
                listing_answer(&listing, "An idempotent replay of a creation"),
            ),
        ],
        &[403, 409, 422],
    );
    let body = doc.schema::<PatchListingRequest>();
    doc.op(
        "patch",
        "/api/v1/listings/{ListingKey}",
        "updateListing",
        "Commands",
        "Change descriptive fields (JSON merge-patch; a changed ListPrice is a price change)",
        Auth::Required,
        vec![listing_key.clone(), if_match.clone(), idempotency.clone()],
        Some(body),
        vec![(
            200,
            listing_answer(&listing, "The listing after the change"),
        )],
        command_errors,
    );
    let keyed: [(&str, &str, &str, Value); 4] = [
        (
            "price",
            "changePrice",
            "Change the list price",
            doc.schema::<ChangePriceRequest>(),
        ),
        (
            "status",
            "changeStatus",
            "Change the status (the lifecycle table applies)",
            doc.schema::<ChangeStatusRequest>(),
        ),
        (
            "media",
            "addMedia",
            "Add a media reference",
            doc.schema::<AddMediaRequest>(),
        ),
        (
            "open-houses",
            "scheduleOpenHouse",
            "Schedule an open house",
            doc.schema::<ScheduleOpenHouseRequest>(),
        ),
    ];
    for (segment, id, summary, body) in keyed {
        doc.op(
            "post",
            &format!("/api/v1/listings/{{ListingKey}}/{segment}"),
            id,
            "Commands",
            summary,
            Auth::Required,
            vec![listing_key.clone(), if_match.clone(), idempotency.clone()],
            Some(body),
            vec![(
                200,
                listing_answer(&listing, "The listing after the change"),
            )],
            command_errors,
        );
    }
    let body = doc.schema::<ReorderMediaRequest>();
    doc.op(
        "put",
        "/api/v1/listings/{ListingKey}/media/order",
        "reorderMedia",
        "Commands",
        "Put the media in a new order",
        Auth::Required,
        vec![listing_key.clone(), if_match.clone(), idempotency.clone()],
        Some(body),
        vec![(
            200,
            listing_answer(&listing, "The listing after the change"),
        )],
        command_errors,
    );
    for (route, id, summary, key) in [
        (
            "/api/v1/listings/{ListingKey}/media/{MediaKey}",
            "removeMedia",
            "Remove a media reference",
            "MediaKey",
        ),
        (
            "/api/v1/listings/{ListingKey}/open-houses/{OpenHouseKey}",
            "cancelOpenHouse",
            "Cancel an open house",
            "OpenHouseKey",
        ),
    ] {
        doc.op(
            "delete",
            route,
            id,
            "Commands",
            summary,
            Auth::Required,
            vec![
                listing_key.clone(),
                path(key, key),
                if_match.clone(),
                idempotency.clone(),
            ],
            None,
            vec![(
                200,
                listing_answer(&listing, "The listing after the change"),
            )],
            command_errors,
        );
    }

    // ---- Listings (reads).
    let page = json!({
        "type": "object",
        "required": ["items", "nextCursor"],
        "properties": {
            "items": {"type": "array", "items": listing},
            "nextCursor": {"type": "string", "nullable": true, "description": "Pass as cursor for the next page; null on the last page"},
            "totalCount": {"type": "integer", "description": "With count=true"},
        },
    });
    doc.op(
        "get",
        "/api/v1/listings",
        "searchListings",
        "Listings",
        "Search listings (filters combine with AND; keyset pagination)",
        Auth::Read,
        vec![
            list_query("status", STATUSES, "StandardStatus values, comma-separated"),
            list_query("property_type", PROPERTY_TYPES, "PropertyType values, comma-separated"),
            query("city", text(), "City (case-insensitive)"),
            query("postal_code", text(), "PostalCode"),
            query("min_price", decimal(), "Lowest ListPrice"),
            query("max_price", decimal(), "Highest ListPrice"),
            query("min_beds", integer(0, 999), "Fewest BedroomsTotal"),
            query("min_baths", integer(0, 999), "Fewest BathroomsTotalInteger"),
            query("min_area", decimal(), "Smallest LivingArea"),
            query("max_area", decimal(), "Largest LivingArea"),
            query("bbox", json!({"type": "string", "pattern": "^-?[0-9]{1,3}(\\.[0-9]{1,8})?(,-?[0-9]{1,3}(\\.[0-9]{1,8})?){3}$"}), "minLon,minLat,maxLon,maxLat (minimum first)"),
            query("q", text(), "Words in the address, city, postal code, subdivision or public remarks"),
            query("modified_since", timestamp(), "Changes recorded since this instant"),
            query("sort", json!({"type": "string", "enum": ["ModificationTimestamp", "-ModificationTimestamp", "ListPrice", "-ListPrice", "ListingKey", "-ListingKey"]}), "Sort order"),
            query("limit", integer(1, 200), "Page size (default 50)"),
            query("cursor", json!({"type": "string", "minLength": 1}), "nextCursor of the previous page"),
            query("count", json!({"type": "boolean"}), "Add totalCount"),
        ],
        None,
        vec![(200, ok("A page of listings", page))],
        &[403],
    );
    doc.op(
        "get",
        "/api/v1/listings/{ListingKey}",
        "getListing",
        "Listings",
        "A listing (private fields only for its agent and administrators)",
        Auth::Read,
        vec![
            listing_key.clone(),
            query(
                "as_of",
                timestamp(),
                "The listing as recorded at this instant (from the event store)",
            ),
            query(
                "min_version",
                integer(1, i64::MAX),
                "Wait until the read model reached this version",
            ),
            query(
                "wait_ms",
                integer(0, 10_000),
                "How long to wait for min_version (default 5000)",
            ),
            param(
                "If-None-Match",
                "header",
                false,
                json!({"type": "string"}),
                "ETags the client has (\"N\", W/\"N\", or *): a 304 without a body if the listing is at one of them",
            ),
        ],
        None,
        vec![
            (200, listing_answer(&listing, "The listing")),
            (
                304,
                json!({
                    "description": "The client's copy (If-None-Match) is current: no body",
                    "headers": {"ETag": {"schema": {"type": "string"}, "description": "\"N\": the listing's version"}},
                }),
            ),
        ],
        &[403, 404],
    );
    let history = json!({
        "type": "object",
        "required": ["ListingKey", "items"],
        "properties": {
            "ListingKey": {"type": "string"},
            "items": {"type": "array", "items": {
                "type": "object",
                "required": ["Sequence", "EventId", "EventType", "EffectiveAt", "RecordedAt", "Actor", "CorrelationId", "Data"],
                "properties": {
                    "Sequence": {"type": "integer"},
                    "EventId": {"type": "string", "format": "uuid"},
                    "EventType": {"type": "string"},
                    "EffectiveAt": {"type": "string", "format": "date-time"},
                    "RecordedAt": {"type": "string", "format": "date-time"},
                    "Actor": {"type": "string"},
                    "CorrelationId": {"type": "string", "format": "uuid"},
                    "Data": {"type": "object", "description": "The event's data (docs/schema/listing-event.v1.json)"},
                },
            }},
        },
    });
    doc.op(
        "get",
        "/api/v1/listings/{ListingKey}/history",
        "listingHistory",
        "Listings",
        "Every event of a listing, oldest first",
        Auth::Read,
        vec![listing_key],
        None,
        vec![(200, ok("The history", history))],
        &[403, 404],
    );
    doc.op(
        "get",
        "/api/v1/listing-events",
        "liveFeed",
        "Listings",
        "Live feed of listing events (Server-Sent Events; id = stream sequence, resumable with Last-Event-ID)",
        Auth::Read,
        vec![
            query("listing_key", text(), "Only this listing's events"),
            query("event_type", json!({"type": "string", "enum": keh_events::ListingEvent::TYPES}), "Only this EventType"),
            query("last_event_id", json!({"type": "string", "pattern": "^[0-9]{1,19}$"}), "Resume after this id (as Last-Event-ID)"),
            query("ticket", json!({"type": "string", "minLength": 1}), "A feed ticket (POST /api/v1/auth/feed-ticket; EventSource cannot send headers)"),
            json!({"name": "access_token", "in": "query", "required": false, "deprecated": true, "schema": {"type": "string", "minLength": 1}, "description": "Deprecated (puts a bearer credential in URLs and logs): an access token; use ticket"}),
            param("Last-Event-ID", "header", false, json!({"type": "string", "pattern": "^[0-9]{1,19}$"}), "Resume after this id"),
        ],
        None,
        vec![(200, json!({"description": "An endless event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}))],
        &[403, 409],
    );
    let open_house = json!({
        "type": "object",
        "properties": {
            "ListingKey": {"type": "string"}, "OpenHouseKey": {"type": "string"},
            "OpenHouseDate": {"type": "string", "format": "date"},
            "OpenHouseStartTime": {"type": "string", "format": "date-time"},
            "OpenHouseEndTime": {"type": "string", "format": "date-time"},
            "OpenHouseType": {"type": "string"},
            "OpenHouseRemarks": {"type": "string", "nullable": true},
            "UnparsedAddress": {"type": "string", "nullable": true},
            "City": {"type": "string", "nullable": true},
            "PostalCode": {"type": "string", "nullable": true},
        },
    });
    doc.op(
        "get",
        "/api/v1/open-houses",
        "openHouses",
        "Listings",
        "Scheduled open houses in a time window, soonest first",
        Auth::Read,
        vec![
            query("from", timestamp(), "Window start (default now)"),
            query("to", timestamp(), "Window end (exclusive)"),
            query("city", text(), "City"),
            query("postal_code", text(), "PostalCode"),
            query("limit", integer(1, 200), "At most (default 50)"),
        ],
        None,
        vec![(200, ok("Open houses", items(open_house)))],
        &[403],
    );

    // ---- Market.
    let series_params = || {
        vec![
            query(
                "area_kind",
                json!({"type": "string", "enum": ["market", "city", "postal-code", "subdivision"]}),
                "Kind of area (default market)",
            ),
            query(
                "area",
                text(),
                "The area (required unless area_kind is market)",
            ),
            query(
                "property_type",
                types_or_all(),
                "A RESO PropertyType, or All (default)",
            ),
        ]
    };
    let row = doc.schema::<MetricsRow>();
    let series_row = doc.schema::<SeriesRow>();
    doc.op(
        "get",
        "/api/v1/market/areas",
        "marketAreas",
        "Market",
        "Every area and property type with market data",
        Auth::Read,
        vec![
            query(
                "area_kind",
                json!({"type": "string", "enum": ["market", "city", "postal-code", "subdivision"]}),
                "Only this kind",
            ),
            query("property_type", types_or_all(), "Only this property type"),
        ],
        None,
        vec![(200, ok("Areas", items(series_row)))],
        &[403],
    );
    let mut params = series_params();
    params.extend([
        query(
            "period",
            json!({"type": "string", "enum": ["week", "month"]}),
            "Period length (default month)",
        ),
        query("from", date(), "Periods that end on or after this day"),
        query("to", date(), "Periods that start on or before this day"),
    ]);
    let series = json!({
        "type": "object",
        "required": ["AreaKind", "Area", "PropertyType", "Period", "items"],
        "properties": {
            "AreaKind": {"type": "string"}, "Area": {"type": "string"},
            "PropertyType": {"type": "string"}, "Period": {"type": "string"},
            "items": {"type": "array", "items": row},
        },
    });
    doc.op(
        "get",
        "/api/v1/market/series",
        "marketSeries",
        "Market",
        "Market metrics of one area and property type, per week or month",
        Auth::Read,
        params,
        None,
        vec![(200, ok("The series", series))],
        &[403, 404],
    );
    let nullable_row = json!({"allOf": [row], "nullable": true});
    let summary = json!({
        "type": "object",
        "properties": {
            "AreaKind": {"type": "string"}, "Area": {"type": "string"}, "PropertyType": {"type": "string"},
            "CurrentMonth": nullable_row, "PreviousMonth": nullable_row,
            "CurrentWeek": nullable_row, "PreviousWeek": nullable_row,
        },
    });
    doc.op(
        "get",
        "/api/v1/market/summary",
        "marketSummary",
        "Market",
        "This month and week against the previous ones",
        Auth::Read,
        series_params(),
        None,
        vec![(200, ok("The summary", summary))],
        &[403, 404],
    );
    let job = doc.schema::<ReportJob>();
    let body = doc.schema::<ReportBody>();
    doc.op(
        "post",
        "/api/v1/market/reports",
        "requestReport",
        "Market",
        "Queue a market report (built in the background)",
        Auth::Required,
        vec![],
        Some(body),
        vec![(
            202,
            json!({
                "description": "Queued; Location names the job",
                "headers": {"Location": {"schema": {"type": "string"}}},
                "content": {"application/json": {"schema": job}},
            }),
        )],
        &[403, 422],
    );
    let report_id = uuid_path("ReportId", "The report job");
    doc.op(
        "get",
        "/api/v1/market/reports/{ReportId}",
        "reportStatus",
        "Market",
        "A report job (Downloads once done)",
        Auth::Read,
        vec![report_id.clone()],
        None,
        vec![(200, ok("The job", job))],
        &[403, 404],
    );
    doc.op(
        "get",
        "/api/v1/market/reports/{ReportId}/report.csv",
        "reportCsv",
        "Market",
        "A finished report as CSV",
        Auth::Read,
        vec![report_id.clone()],
        None,
        vec![(200, json!({"description": "The report", "content": {"text/csv": {"schema": {"type": "string"}}}}))],
        &[403, 404, 409],
    );
    doc.op(
        "get",
        "/api/v1/market/reports/{ReportId}/report.json",
        "reportJson",
        "Market",
        "A finished report as JSON",
        Auth::Read,
        vec![report_id],
        None,
        vec![(200, ok("The report", json!({"type": "object"})))],
        &[403, 404, 409],
    );

    // ---- Sign-in and administration.
    let pair = doc.schema::<TokenPair>();
    let body = doc.schema::<SignIn>();
    doc.op(
        "post",
        "/api/v1/auth/token",
        "signIn",
        "Auth",
        "Sign in: an access token and a refresh token",
        Auth::None,
        vec![],
        Some(body),
        vec![(200, ok("Signed in", pair.clone()))],
        &[401, 422, 429],
    );
    let body = doc.schema::<RefreshBody>();
    doc.op(
        "post",
        "/api/v1/auth/refresh",
        "refreshToken",
        "Auth",
        "A new token pair for a refresh token (which is revoked)",
        Auth::None,
        vec![],
        Some(body.clone()),
        vec![(200, ok("Refreshed", pair))],
        &[401, 422],
    );
    doc.op(
        "post",
        "/api/v1/auth/sign-out",
        "signOut",
        "Auth",
        "End a session (its refresh tokens are revoked)",
        Auth::None,
        vec![],
        Some(body),
        vec![(204, json!({"description": "Signed out"}))],
        &[422],
    );
    doc.op(
        "get",
        "/api/v1/auth/me",
        "whoAmI",
        "Auth",
        "Who the credentials say the caller is",
        Auth::Read,
        vec![],
        None,
        vec![(200, ok("The caller", json!({"type": "object", "required": ["kind", "actor"], "properties": {"kind": {"type": "string", "enum": ["anonymous", "user", "api-key"]}, "actor": {"type": "string"}}})))],
        &[],
    );
    doc.op(
        "post",
        "/api/v1/auth/feed-ticket",
        "feedTicket",
        "Auth",
        "A one-minute ticket that opens the live feed (GET /api/v1/listing-events?ticket=…) and nothing else",
        Auth::Required,
        vec![],
        None,
        vec![(200, ok("The ticket", json!({"type": "object", "required": ["ticket", "expires_in"], "properties": {"ticket": {"type": "string"}, "expires_in": {"type": "integer", "minimum": 1}}})))],
        &[],
    );
    let user = doc.schema::<User>();
    let body = doc.schema::<CreateUser>();
    doc.op(
        "get",
        "/api/v1/admin/users",
        "listUsers",
        "Admin",
        "Every user",
        Auth::Required,
        vec![],
        None,
        vec![(200, ok("Users", items(user.clone())))],
        &[403],
    );
    doc.op(
        "post",
        "/api/v1/admin/users",
        "createUser",
        "Admin",
        "Create a user (audited)",
        Auth::Required,
        vec![],
        Some(body),
        vec![(201, ok("Created", user.clone()))],
        &[403, 409, 422],
    );
    let body = doc.schema::<UpdateUser>();
    doc.op(
        "patch",
        "/api/v1/admin/users/{UserId}",
        "updateUser",
        "Admin",
        "Change a user's role, keys, password or disabled flag (audited)",
        Auth::Required,
        vec![uuid_path("UserId", "The user")],
        Some(body),
        vec![(200, ok("Changed", user))],
        &[403, 404, 422],
    );
    let key = doc.schema::<ApiKey>();
    let body = doc.schema::<CreateApiKey>();
    doc.op(
        "get",
        "/api/v1/admin/api-keys",
        "listApiKeys",
        "Admin",
        "Every API key (never the keys themselves)",
        Auth::Required,
        vec![],
        None,
        vec![(200, ok("API keys", items(key.clone())))],
        &[403],
    );
    doc.op(
        "post",
        "/api/v1/admin/api-keys",
        "createApiKey",
        "Admin",
        "Create an API key; the key is in this answer only (audited)",
        Auth::Required,
        vec![],
        Some(body),
        vec![(201, ok("Created", json!({"allOf": [key, {"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}, "note": {"type": "string"}}}]})))],
        &[403, 422],
    );
    doc.op(
        "delete",
        "/api/v1/admin/api-keys/{KeyId}",
        "revokeApiKey",
        "Admin",
        "Revoke an API key (audited)",
        Auth::Required,
        vec![uuid_path("KeyId", "The API key")],
        None,
        vec![(200, ok("Revoked", key))],
        &[403, 404],
    );
    let entry = doc.schema::<AuditEntry>();
    doc.op(
        "get",
        "/api/v1/admin/audit",
        "auditLog",
        "Admin",
        "Administrative actions, newest first",
        Auth::Required,
        vec![query("limit", integer(1, 1000), "At most (default 100)")],
        None,
        vec![(200, ok("Audit log", items(entry)))],
        &[403],
    );

    // ---- Operations.
    let health = json!({"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}, "checks": {"type": "array", "items": {"type": "object"}}}});
    for (route, id, summary, not_ready) in [
        (
            "/api/v1/health/live",
            "live",
            "The process serves requests",
            false,
        ),
        (
            "/api/v1/health/ready",
            "ready",
            "Every required dependency answers",
            true,
        ),
        (
            "/api/v1/health",
            "health",
            "Each dependency's status and latency (for loopback callers or the metrics token; others get the status only)",
            true,
        ),
    ] {
        let mut answers = vec![(200, ok("Status", health.clone()))];
        if not_ready {
            answers.push((503, ok("Not ready", health.clone())));
        }
        doc.paths.insert(
            route.to_owned(),
            json!({"get": {
                "operationId": id, "tags": ["Operations"], "summary": summary, "security": [],
                "responses": answers.into_iter().map(|(c, a)| (c.to_string(), a)).collect::<serde_json::Map<_, _>>(),
            }}),
        );
    }
    doc.paths.insert(
        "/api/v1/metrics".to_owned(),
        json!({"get": {
            "operationId": "metrics", "tags": ["Operations"], "summary": "Prometheus metrics (loopback callers, or the metrics token as a bearer token)", "security": [{}, {"bearerAuth": []}],
            "responses": {
                "200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
                "401": problem_response("Neither a loopback caller nor the metrics token"),
            },
        }}),
    );
    doc.paths.insert(
        "/api/v1/openapi.json".to_owned(),
        json!({"get": {
            "operationId": "openapi", "tags": ["Operations"], "summary": "This document", "security": [],
            "responses": {"200": {"description": "OpenAPI 3", "content": {"application/json": {"schema": {"type": "object"}}}}},
        }}),
    );

    let schemas = doc.generator.take_definitions(true);
    let mut document = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "KubeEstateHub API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Listings (commands and queries), market analytics, sign-in and administration. JSON bodies use RESO Data Dictionary names; every error is application/problem+json (RFC 9457).",
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "Commands", "description": "Changes to listings (agents, administrators, write/import API keys)"},
            {"name": "Listings", "description": "Reading listings"},
            {"name": "Market", "description": "Market metrics and reports"},
            {"name": "Auth", "description": "Sign-in and sessions"},
            {"name": "Admin", "description": "Users, API keys, audit log (administrators)"},
            {"name": "Operations", "description": "Health, metrics, this document"},
        ],
        "paths": doc.paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT or API key", "description": "An access token from POST /api/v1/auth/token, or an API key (keh_…)"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    });
    draft4_bounds(&mut document);
    document
}
