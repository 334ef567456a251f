//! What a command carries besides its body: preconditions, idempotency and correlation.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use keh_events::Metadata;
use keh_http::Problem;
use uuid::Uuid;

use keh_auth::Caller;
use keh_auth::principal::CommandScope;
use keh_store::Access;

/// `If-Match`: absent (or `*`: the listing must exist, which the command checks anyway) or
/// a list of strong entity tags `"N"` where N is a listing version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IfMatch {
    Any,
    Versions(Vec<u64>),
}

/// An `Idempotency-Key`, scoped to the actor so that two clients cannot collide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idempotency {
    pub scope: String,
}

/// The non-body parts of a command request.
#[derive(Clone, Debug)]
pub struct CommandContext {
    pub if_match: IfMatch,
    pub idempotency: Option<Idempotency>,
    pub actor: String,
    /// Who sent the command (answers show private fields only to those who may see them).
    pub caller: Caller,
    /// The listings the caller may change.
    pub access: Access,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    pub traceparent: Option<String>,
    /// Fingerprint of method, path and body (set once the body is read).
    pub digest: String,
}

impl CommandContext {
    pub(crate) fn with_digest(mut self, digest: String) -> Self {
        self.digest = digest;
        self
    }

    /// The metadata stored with the command's events.
    pub(crate) fn metadata(&self, status: u16) -> Metadata {
        Metadata {
            actor: self.actor.clone(),
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            idempotency_scope: self.idempotency.as_ref().map(|i| i.scope.clone()),
            request_hash: self.idempotency.as_ref().map(|_| self.digest.clone()),
            response_status: self.idempotency.as_ref().map(|_| status),
            traceparent: self.traceparent.clone(),
        }
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Problem> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value.to_str().map(Some).map_err(|_| {
            Problem::bad_request("invalid-header", format!("{name} must be visible ASCII"))
                .with_field(name, "invalid-value", "not visible ASCII")
        }),
    }
}

/// Parses `If-Match` (RFC 9110 §13.1.1): `*` or a list of strong tags. A weak tag never
/// matches (strong comparison), so it is refused as a mistake rather than silently failing.
pub fn parse_if_match(value: &str) -> Result<IfMatch, Problem> {
    let invalid = |reason: &str| {
        Problem::bad_request(
            "invalid-if-match",
            format!("If-Match {reason}; send the ETag of the listing, e.g. \"3\""),
        )
        .with_field("If-Match", "invalid-value", reason)
    };
    let value = value.trim();
    if value == "*" {
        return Ok(IfMatch::Any);
    }
    let mut versions = Vec::new();
    for tag in value.split(',').map(str::trim) {
        if tag.starts_with("W/") {
            return Err(invalid("must use strong entity tags (no W/)"));
        }
        let inner = tag
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .ok_or_else(|| invalid("must be a quoted entity tag"))?;
        versions.push(
            inner
                .parse::<u64>()
                .map_err(|_| invalid("must name a listing version"))?,
        );
    }
    if versions.is_empty() {
        return Err(invalid("is empty"));
    }
    Ok(IfMatch::Versions(versions))
}

/// Commands need credentials that may write, and take an `Idempotency-Key`.
impl aide::OperationInput for CommandContext {
    fn operation_input(
        _: &mut aide::generate::GenContext,
        operation: &mut aide::openapi::Operation,
    ) {
        keh_http::docs::set_access(operation, keh_http::docs::Access::Required);
        keh_http::docs::add_parameter(
            operation,
            keh_http::docs::header(
                "Idempotency-Key",
                serde_json::json!({"type": "string", "pattern": "^[!-~]{1,255}$"}),
                "A retried command with the same key is answered with the first answer and changes nothing",
            ),
        );
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CommandContext {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // Who may send commands is decided before the body is even read.
        let Ok(caller) = Caller::from_request_parts(parts, state).await;
        let access = match caller.require_write()? {
            CommandScope::Any => Access::Any,
            CommandScope::Agent {
                agent_key,
                office_key,
            } => Access::Agent {
                agent_key,
                office_key,
            },
        };
        let actor = caller.actor();
        let headers = &parts.headers;
        let if_match = match header_text(headers, header::IF_MATCH.as_str())? {
            None => IfMatch::Any,
            Some(value) => parse_if_match(value)?,
        };
        let idempotency = match header_text(headers, "idempotency-key")? {
            None => None,
            // Visible ASCII without spaces, as the API document says.
            Some(key)
                if key.is_empty()
                    || key.len() > 255
                    || !key.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                return Err(Problem::bad_request(
                    "invalid-idempotency-key",
                    "Idempotency-Key must be 1 to 255 characters",
                )
                .with_field(
                    "Idempotency-Key",
                    "invalid-value",
                    "1 to 255 visible ASCII characters",
                ));
            }
            Some(key) => Some(Idempotency {
                scope: format!("{}|{key}", caller.scope_id()),
            }),
        };
        let correlation_id = header_text(headers, "x-correlation-id")?
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(Uuid::new_v4);
        // The request span already continues the caller's `traceparent` (if any); the
        // events carry this span's context, so the relay and consumers join the same trace.
        let traceparent = keh_platform::telemetry::current_traceparent();
        Ok(Self {
            if_match,
            idempotency,
            actor,
            caller,
            access,
            correlation_id,
            causation_id: Uuid::new_v4(),
            traceparent,
            digest: String::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_forms() {
        assert_eq!(parse_if_match("*").unwrap(), IfMatch::Any);
        assert_eq!(parse_if_match("\"3\"").unwrap(), IfMatch::Versions(vec![3]));
        assert_eq!(
            parse_if_match("\"3\", \"4\"").unwrap(),
            IfMatch::Versions(vec![3, 4])
        );
        for bad in ["3", "W/\"3\"", "\"x\"", "", "\"-1\""] {
            assert!(parse_if_match(bad).is_err(), "{bad}");
        }
    }
}
