//! The JSON body extractor: content type checked, size bounded, and every deserialization
//! error mapped to a problem that names the field (`serde_path_to_error`).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::problem::{FieldError, Problem};

/// A JSON request body of type `T`.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

/// Documents the body as `T`'s schema.
impl<T: schemars::JsonSchema> aide::OperationInput for ApiJson<T> {
    fn operation_input(
        ctx: &mut aide::generate::GenContext,
        operation: &mut aide::openapi::Operation,
    ) {
        crate::docs::json_body::<T>(ctx, operation);
    }
}

/// Whether a `Content-Type` is JSON (`application/json` or any `application/*+json`).
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = json_bytes(req, state).await?;
        parse(&bytes).map(ApiJson)
    }
}

/// The raw body of a JSON request: the content type is checked and the size bounded
/// (`DefaultBodyLimit`), without parsing (for callers that also fingerprint the body).
pub async fn json_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Problem> {
    {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if !is_json(&content_type) {
            let shown = if content_type.is_empty() {
                "no Content-Type".to_owned()
            } else {
                format!("Content-Type {content_type}")
            };
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                format!("expected application/json, got {shown}"),
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| match rejection {
                BytesRejection::FailedToBufferBody(_)
                    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
                {
                    Problem::from_status(StatusCode::PAYLOAD_TOO_LARGE)
                }
                other => Problem::bad_request("unreadable-body", other.body_text()),
            })?;
        Ok(bytes)
    }
}

/// Parses `bytes` as `T`, mapping errors to problems (400 for broken JSON, 422 for a
/// well-formed body whose fields are wrong).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    // Every body of this API is an object; serde would also read a struct from an array.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Err(e) => Problem::bad_request(
                    "malformed-json",
                    format!("the body is not valid JSON: {e}"),
                ),
                Ok(_) => Problem::validation(vec![FieldError {
                    field: String::new(),
                    rule: "invalid-type".to_owned(),
                    message: "the body must be a JSON object".to_owned(),
                }]),
            },
        );
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return Problem::bad_request(
                "malformed-json",
                format!("the body is not valid JSON: {inner}"),
            );
        }
        Problem::validation(vec![field_error(&path, &inner)])
    })?;
    deserializer.end().map_err(|e| {
        Problem::bad_request("malformed-json", format!("the body is not valid JSON: {e}"))
    })?;
    Ok(value)
}

/// Turns serde's message into (field, rule, message).
fn field_error(path: &str, error: &serde_json::Error) -> FieldError {
    let text = error.to_string();
    // serde appends " at line L column C": useful in a file, noise in an API.
    let message = text.split(" at line ").next().unwrap_or(&text).to_owned();
    let quoted = || message.split('`').nth(1).unwrap_or_default().to_owned();
    let join = |child: String| {
        if path == "." || path.is_empty() {
            child
        } else {
            format!("{path}.{child}")
        }
    };
    let (field, rule) = if message.starts_with("missing field") {
        (join(quoted()), "required")
    } else if message.starts_with("unknown field") {
        // The path already ends with the unknown field's name.
        (path.trim_start_matches('.').to_owned(), "unknown-field")
    } else if message.starts_with("invalid type") {
        (path.trim_start_matches('.').to_owned(), "invalid-type")
    } else {
        (path.trim_start_matches('.').to_owned(), "invalid-value")
    };
    FieldError {
        field: if field == "." { String::new() } else { field },
        rule: rule.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        #[serde(rename = "ListPrice")]
        list_price: u32,
        #[serde(rename = "Inner", default)]
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        #[serde(rename = "City")]
        city: String,
    }

    fn error(body: &str) -> Problem {
        parse::<Body>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn errors_name_the_field_and_rule() {
        let p = error(r#"{"ListPrice": "abc"}"#);
        assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            (p.errors[0].field.as_str(), p.errors[0].rule.as_str()),
            ("ListPrice", "invalid-type")
        );
        let p = error(r#"{}"#);
        assert_eq!(
            (p.errors[0].field.as_str(), p.errors[0].rule.as_str()),
            ("ListPrice", "required")
        );
        let p = error(r#"{"ListPrice": 1, "Listprice": 2}"#);
        assert_eq!(
            (p.errors[0].field.as_str(), p.errors[0].rule.as_str()),
            ("Listprice", "unknown-field")
        );
        let p = error(r#"{"ListPrice": 1, "Inner": {}}"#);
        assert_eq!(p.errors[0].field, "Inner.City");
        assert_eq!(error(r#"{"ListPrice": 1"#).status, StatusCode::BAD_REQUEST);
        assert_eq!(
            error(r#"{"ListPrice": 1} x"#).status,
            StatusCode::BAD_REQUEST
        );
        assert!(
            !error(r#"{"ListPrice": "abc"}"#).errors[0]
                .message
                .contains("line")
        );
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
    }
}
