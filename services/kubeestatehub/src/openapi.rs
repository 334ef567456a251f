//! The OpenAPI 3.1 document of every HTTP API, served at `/api/v1/openapi.json`.
//!
//! Derived from the routers (`keh_http::docs`): each role's documented routes are the very
//! routes it serves, their handlers' extractors say what they read (path parameters,
//! headers, bodies), and each route says the rest beside it. This module only gathers the
//! roles' routes and adds what the document says once: title, tags and auth schemes.

use aide::axum::ApiRouter;
use aide::openapi::OpenApi;
use keh_http::Problem;
use serde_json::{Value, json};

/// The document, from the roles' routes.
pub fn document() -> Result<Value, serde_json::Error> {
    // Registered before the first routes are gathered, with their schemas: every problem
    // answer refers to it.
    let _ = keh_http::docs::schema::<Problem>();
    // Each role's routes on their own (their states differ), merged path by path: the
    // command and query APIs serve different methods of the same paths.
    let mut document = json!({"paths": {}, "components": {"schemas": {}}});
    for part in [
        gather(keh_command_api::CommandApi::routes())?,
        gather(keh_query_api::QueryApi::routes())?,
        gather(keh_auth::routes::routes())?,
        gather(keh_http::stack::ops_routes())?,
    ] {
        merge(&mut document, &part);
    }
    keh_http::docs::complete(&mut document);
    // This document's own route, added where it is served (`startup`).
    document["paths"]["/api/v1/openapi.json"] = json!({"get": {
        "operationId": "openapi", "tags": ["Operations"], "summary": "This document", "security": [],
        "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}},
    }});
    document["openapi"] = json!("3.1.0");
    document["info"] = json!({
        "title": "KubeEstateHub API",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "Listings (commands and queries), market analytics, sign-in and administration. JSON bodies use RESO Data Dictionary names; every error is application/problem+json (RFC 9457).",
    });
    document["servers"] = json!([{"url": "/"}]);
    document["tags"] = json!([
        {"name": "Commands", "description": "Changes to listings (agents, administrators, write/import API keys)"},
        {"name": "Listings", "description": "Reading listings"},
        {"name": "Market", "description": "Market metrics and reports"},
        {"name": "Auth", "description": "Sign-in and sessions"},
        {"name": "Admin", "description": "Users, API keys, audit log (administrators)"},
        {"name": "Operations", "description": "Health, metrics, this document"},
    ]);
    document["components"]["securitySchemes"] = json!({
        "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT or API key", "description": "An access token from POST /api/v1/auth/token, or an API key (keh_…)"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    });
    drop_null_defaults(&mut document);
    tiny_steps_as_words(&mut document);
    drop_unreferenced_schemas(&mut document);
    Ok(document)
}

/// The document of one role's routes.
fn gather<S: Clone + Send + Sync + 'static>(
    routes: ApiRouter<S>,
) -> Result<Value, serde_json::Error> {
    let mut api = OpenApi::default();
    let _ = routes.finish_api(&mut api);
    serde_json::to_value(&api)
}

/// Adds `part`'s operations (method by method: two roles may serve one path) and its
/// schemas to `document`.
fn merge(document: &mut Value, part: &Value) {
    for (path, item) in part["paths"].as_object().into_iter().flatten() {
        for (method, operation) in item.as_object().into_iter().flatten() {
            document["paths"][path][method] = operation.clone();
        }
    }
    for (name, schema) in part["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
    {
        document["components"]["schemas"][name] = schema.clone();
    }
}

/// Drops component schemas nothing refers to (those of the path parameters, which the
/// document lists as parameters instead).
fn drop_unreferenced_schemas(document: &mut Value) {
    const PREFIX: &str = "#/components/schemas/";
    fn refs(value: &Value, found: &mut std::collections::BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                if let Some(name) = map
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|r| r.strip_prefix(PREFIX))
                {
                    found.insert(name.to_owned());
                }
                map.values().for_each(|v| refs(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }
    loop {
        let mut used = std::collections::BTreeSet::new();
        refs(&document["paths"], &mut used);
        let Some(schemas) = document["components"]["schemas"].as_object_mut() else {
            return;
        };
        for schema in schemas.values() {
            refs(schema, &mut used);
        }
        let before = schemas.len();
        schemas.retain(|name, _| used.contains(name));
        if schemas.len() == before {
            return;
        }
    }
}

/// States a `multipleOf` below 10⁻⁶ (coordinates: 10⁻⁸) in words instead. JavaScript
/// writes such numbers in exponent form (`1e-8`), which Swagger UI 5 cannot read
/// (`stringifyConstraints` looks for a decimal point), and the docs page would render no
/// operation at all. The server still refuses more decimal places, with a 422 naming the
/// field; the event contract's schema keeps the keyword.
fn tiny_steps_as_words(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let step = map.get("multipleOf").and_then(Value::as_f64);
            if let Some(step) = step.filter(|s| *s > 0.0 && *s < 1e-6) {
                map.remove("multipleOf");
                let places = (-step.log10()).round();
                let note = format!("At most {places} decimal places.");
                let description = match map.get("description").and_then(Value::as_str) {
                    Some(text) => format!("{text} {note}"),
                    None => note,
                };
                map.insert("description".to_owned(), Value::String(description));
            }
            map.values_mut().for_each(tiny_steps_as_words);
        }
        Value::Array(items) => items.iter_mut().for_each(tiny_steps_as_words),
        _ => {}
    }
}

/// Drops `"default": null` (an absent optional field is simply absent), which some tools
/// misread as a value to send.
fn drop_null_defaults(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("default").is_some_and(Value::is_null) {
                map.remove("default");
            }
            map.values_mut().for_each(drop_null_defaults);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null_defaults),
        _ => {}
    }
}
