//! The OpenAPI document, derived from the routers (aide).
//!
//! Each role adds its routes with `ApiRouter::api_route`, so a route that is served is a
//! route that is documented. What a handler reads is documented by its extractors (their
//! `OperationInput`): the path parameters of a typed `Path<T>`, the body of [`ApiJson`]
//! and of the command API's body, the headers of the command context. What only the route
//! knows — its id, summary, who may call it, its query parameters, its answers and the
//! errors it may give — the route says with [`Describe`]. [`complete`] then adds what every
//! operation shares (the errors any request may meet, the security alternatives) and the
//! document says once (title, tags, auth schemes).
//!
//! What the routes and extractors say is gathered under the operation's [`EXTENSION`]
//! key as plain JSON, and [`complete`] moves it into place: one format for every
//! fragment, and nothing to convert that could fail.
//!
//! [`ApiJson`]: crate::json::ApiJson

use aide::generate::GenContext;
use aide::openapi::Operation;
use aide::transform::TransformOperation;
use schemars::JsonSchema;
use serde_json::{Map, Value, json};

/// The operation extension that carries a route's own documentation until [`complete`].
pub const EXTENSION: &str = "x-keh";

/// Who may call an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No credentials needed (sign-in, probes).
    Open,
    /// Anonymous when `KEH_ANONYMOUS_READ` is on, else a token or key.
    Read,
    /// A token or an API key.
    Required,
    /// Loopback callers, or the operators' metrics token as a bearer token.
    Operator,
}

/// The schema of `T` (a `$ref` to `#/components/schemas/…` for named types), registered
/// in the document being generated.
pub fn schema<T: JsonSchema>() -> Value {
    aide::generate::in_context(|ctx| schema_in::<T>(ctx))
}

/// [`schema`], inside an extractor's `operation_input`.
pub fn schema_in<T: JsonSchema>(ctx: &mut GenContext) -> Value {
    ctx.schema.subschema_for::<T>().to_value()
}

/// Runs `change` on the route's own documentation, gathered under [`EXTENSION`].
fn with_extension(operation: &mut Operation, change: impl FnOnce(&mut Map<String, Value>)) {
    let slot = operation
        .extensions
        .entry(EXTENSION.to_owned())
        .or_insert_with(|| json!({}));
    if let Value::Object(own) = slot {
        change(own);
    }
}

/// Adds a parameter (`{"name", "in", "required", "schema", "description"}`).
pub fn add_parameter(operation: &mut Operation, parameter: Value) {
    with_extension(operation, |own| {
        if let Value::Array(items) = own.entry("parameters").or_insert_with(|| json!([])) {
            items.push(parameter);
        }
    });
}

/// Says who may call the operation.
pub fn set_access(operation: &mut Operation, access: Access) {
    let name = match access {
        Access::Open => "open",
        Access::Read => "read",
        Access::Required => "required",
        Access::Operator => "operator",
    };
    with_extension(operation, |own| {
        own.insert("access".to_owned(), json!(name));
    });
}

/// Documents a JSON request body of type `T` (for a body extractor's `operation_input`).
pub fn json_body<T: JsonSchema>(ctx: &mut GenContext, operation: &mut Operation) {
    let schema = schema_in::<T>(ctx);
    with_extension(operation, |own| {
        own.insert("body".to_owned(), schema);
    });
}

/// A parameter object.
pub fn parameter(
    name: &str,
    location: &str,
    required: bool,
    schema: Value,
    description: &str,
) -> Value {
    json!({"name": name, "in": location, "required": required, "schema": schema, "description": description})
}

/// An optional request header.
pub fn header(name: &str, schema: Value, description: &str) -> Value {
    parameter(name, "header", false, schema, description)
}

/// A JSON answer with `schema`.
pub fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// A JSON answer with `schema` and the resource's version as `ETag`.
pub fn tagged(description: &str, schema: Value) -> Value {
    json!({
        "description": description,
        "headers": {"ETag": {"description": "The listing's version, e.g. \"3\"", "schema": {"type": "string"}}},
        "content": {"application/json": {"schema": schema}},
    })
}

/// `{"items": [schema…]}`.
pub fn items(schema: Value) -> Value {
    json!({"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": schema}}})
}

/// A query parameter a handler accepts: the handler refuses any other (so the names it
/// accepts and the names the document lists are one list), and the document shows it.
#[derive(Clone, Copy, Debug)]
pub struct QueryParam {
    pub name: &'static str,
    /// Its schema (a function: schemas are JSON values, built when documented).
    pub schema: fn() -> Value,
    pub description: &'static str,
    pub form: QueryForm,
}

/// How a query parameter is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryForm {
    /// One value.
    Plain,
    /// Comma-separated values (`a,b,c`).
    List,
    /// One value, kept for old clients; documented as deprecated.
    Deprecated,
}

impl QueryParam {
    pub const fn new(name: &'static str, schema: fn() -> Value, description: &'static str) -> Self {
        Self {
            name,
            schema,
            description,
            form: QueryForm::Plain,
        }
    }

    pub const fn list(
        name: &'static str,
        schema: fn() -> Value,
        description: &'static str,
    ) -> Self {
        Self {
            form: QueryForm::List,
            ..Self::new(name, schema, description)
        }
    }

    pub const fn deprecated(
        name: &'static str,
        schema: fn() -> Value,
        description: &'static str,
    ) -> Self {
        Self {
            form: QueryForm::Deprecated,
            ..Self::new(name, schema, description)
        }
    }

    /// The parameter object.
    pub fn to_json(&self) -> Value {
        let mut parameter = parameter(self.name, "query", false, (self.schema)(), self.description);
        match self.form {
            QueryForm::Plain => {}
            QueryForm::List => {
                parameter["style"] = json!("form");
                parameter["explode"] = json!(false);
            }
            QueryForm::Deprecated => parameter["deprecated"] = json!(true),
        }
        parameter
    }
}

/// What a route says about itself, on top of what its extractors say.
pub trait Describe: Sized {
    /// The operation's id, tag and summary.
    fn named(self, id: &str, tag: &str, summary: &str) -> Self;
    /// Who may call it.
    fn access(self, access: Access) -> Self;
    /// The query parameters the handler accepts.
    fn queries(self, params: &[QueryParam]) -> Self;
    /// A parameter given whole (a header).
    fn param(self, parameter: Value) -> Self;
    /// A successful (or otherwise documented) answer.
    fn answer(self, status: u16, answer: Value) -> Self;
    /// The problem+json errors this operation gives beyond those of every operation.
    fn errors(self, codes: &[u16]) -> Self;
}

impl Describe for TransformOperation<'_> {
    fn named(self, id: &str, tag: &str, summary: &str) -> Self {
        self.id(id).tag(tag).summary(summary)
    }

    fn access(mut self, access: Access) -> Self {
        set_access(self.inner_mut(), access);
        self
    }

    fn queries(self, params: &[QueryParam]) -> Self {
        params
            .iter()
            .fold(self, |op, param| op.param(param.to_json()))
    }

    fn param(mut self, parameter: Value) -> Self {
        add_parameter(self.inner_mut(), parameter);
        self
    }

    fn answer(mut self, status: u16, answer: Value) -> Self {
        with_extension(self.inner_mut(), |own| {
            if let Value::Object(answers) = own.entry("answers").or_insert_with(|| json!({})) {
                answers.insert(status.to_string(), answer);
            }
        });
        self
    }

    fn errors(mut self, codes: &[u16]) -> Self {
        with_extension(self.inner_mut(), |own| {
            if let Value::Array(list) = own.entry("errors").or_insert_with(|| json!([])) {
                list.extend(codes.iter().map(|code| json!(code)));
            }
        });
        self
    }
}

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    })
}

/// What an error status means, wherever it is documented.
pub fn describe(code: u16) -> &'static str {
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

/// Errors any request may meet: a malformed one, limits, overload, an unavailable
/// dependency, a timeout.
const EVERY_OPERATION: [u16; 6] = [400, 414, 429, 431, 503, 504];

/// Moves each operation's own documentation ([`EXTENSION`]) into place and adds what
/// every operation shares: its parameters, body, answers, the problem+json errors (those it
/// names, those of every request, 401 where credentials are read, 413 and 415 where a
/// body is), and its security alternatives.
pub fn complete(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            complete_operation(operation);
        }
    }
}

fn complete_operation(operation: &mut Value) {
    let Some(operation) = operation.as_object_mut() else {
        return;
    };
    let own = match operation.remove(EXTENSION) {
        Some(Value::Object(own)) => own,
        _ => Map::new(),
    };
    if let Some(Value::Array(mut extra)) = own.get("parameters").cloned() {
        let parameters = operation.entry("parameters").or_insert_with(|| json!([]));
        if let Value::Array(list) = parameters {
            list.append(&mut extra);
        }
    }
    let has_body = if let Some(schema) = own.get("body") {
        operation.insert(
            "requestBody".to_owned(),
            json!({"required": true, "content": {"application/json": {"schema": schema}}}),
        );
        true
    } else {
        operation.contains_key("requestBody")
    };
    let access = own.get("access").and_then(Value::as_str).unwrap_or("open");
    operation.insert(
        "security".to_owned(),
        match access {
            "read" => json!([{}, {"bearerAuth": []}, {"apiKey": []}]),
            "required" => json!([{"bearerAuth": []}, {"apiKey": []}]),
            "operator" => json!([{}, {"bearerAuth": []}]),
            _ => json!([]),
        },
    );
    let mut responses = Map::new();
    if let Some(Value::Object(answers)) = own.get("answers") {
        responses.extend(answers.clone());
    }
    let mut codes: Vec<u16> = own
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .filter_map(|code| u16::try_from(code).ok())
        .collect();
    codes.extend(EVERY_OPERATION);
    if access != "open" {
        codes.push(401);
    }
    if has_body {
        codes.extend([413, 415]);
    }
    codes.sort_unstable();
    codes.dedup();
    for code in codes {
        responses
            .entry(code.to_string())
            .or_insert_with(|| problem_response(describe(code)));
    }
    operation.insert("responses".to_owned(), Value::Object(responses));
}
