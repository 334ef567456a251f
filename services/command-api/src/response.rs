//! Outcomes as HTTP answers: the listing's state with its `ETag` (and `Location` for a
//! creation), and every `ExecuteError` mapped to problem+json in this one place.

use super::*;

pub(crate) fn no_listing(key: &ListingKey) -> Problem {
    Problem::not_found(format!("no listing has ListingKey {key}")).with_field(
        "ListingKey",
        "not-found",
        "no such listing",
    )
}

pub(crate) fn execute_problem_plain(error: ExecuteError) -> Problem {
    match error {
        ExecuteError::Unavailable(cause) => {
            tracing::warn!(error = %cause, "event store unavailable");
            Problem::unavailable("the event store is unavailable; retry later")
        }
        other => {
            tracing::error!(error = %other, cause = ?std::error::Error::source(&other), "command failed");
            Problem::internal()
        }
    }
}

pub(crate) fn execute_problem(error: ExecuteError, key: &ListingKey) -> Problem {
    match error {
        ExecuteError::Rule(rule) => {
            let field = rule.field.unwrap_or("");
            match rule.kind {
                ErrorKind::NotFound if rule.field.is_none() => no_listing(key),
                ErrorKind::NotFound => Problem::not_found(rule.message.clone()).with_field(
                    field,
                    rule.rule,
                    rule.message,
                ),
                ErrorKind::AlreadyExists => Problem::new(
                    StatusCode::CONFLICT,
                    "already-exists",
                    "Conflict",
                    rule.message.clone(),
                )
                .with_field(field, rule.rule, rule.message),
                ErrorKind::Rule => Problem::validation(vec![FieldError {
                    field: field.to_owned(),
                    rule: rule.rule.to_owned(),
                    message: rule.message,
                }]),
            }
        }
        ExecuteError::VersionMismatch { current } => {
            let mut problem = Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "version-mismatch",
                "Precondition failed",
                format!("If-Match does not match the listing's current version {current}"),
            );
            problem.current_version = Some(current);
            problem
        }
        ExecuteError::Forbidden(reason) => keh_auth::principal::forbidden(reason),
        other => execute_problem_plain(other),
    }
}

/// Characters escaped in a path segment (RFC 3986 unreserved ones stay as they are).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The listing as the caller may see it, with its version as `ETag`.
pub(crate) fn listing_response(
    listing: Listing,
    status: StatusCode,
    replayed: Option<HeaderValue>,
    caller: &keh_auth::Caller,
) -> Response {
    let Some(state) = listing.into_state() else {
        return Problem::not_found("no such listing").into_response();
    };
    let audience = keh_resources::Audience::of(&state, |agent, office| {
        caller.may_see_private(agent, office)
    });
    let mut headers = HeaderMap::new();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", state.version)) {
        headers.insert(header::ETAG, etag);
    }
    if status == StatusCode::CREATED {
        let encoded =
            percent_encoding::utf8_percent_encode(state.listing_key.as_str(), PATH_SEGMENT);
        if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/listings/{encoded}")) {
            headers.insert(header::LOCATION, location);
        }
    }
    if let Some(value) = replayed {
        headers.insert("idempotent-replayed", value);
    }
    let body = keh_resources::ListingResource::new(state, audience);
    (status, headers, Json(body)).into_response()
}
