//! What the auth core refuses, as a type. The service returns it; the HTTP edge turns it
//! into problem+json (`From<AuthError> for Problem`, the one mapping), and the command line
//! matches on it instead of on status codes.

use std::time::Duration;

use axum::http::StatusCode;
use keh_http::Problem;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No, bad, expired or revoked credentials (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// A field breaks a rule: a weak password, a malformed key (422).
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        rule: &'static str,
        message: String,
    },
    /// A user with this name, or one that looks the same, exists (409).
    #[error("a user named {0}, or one whose name looks the same, exists")]
    UserExists(String),
    /// No such user or API key (404).
    #[error("{0}")]
    NotFound(String),
    /// A feed ticket asked for by a caller that needs none (400).
    #[error(
        "tickets are for signed-in users; anonymous callers need none and API keys go in the X-API-Key header"
    )]
    NoTicketNeeded,
    /// Too many failed sign-ins on the account: wait this long (429).
    #[error("too many failed sign-ins for this account; wait {} s before trying again", keh_http::problem::retry_after_secs(*.0).max(1))]
    Throttled(Duration),
    /// The user store or the signing keys cannot be reached yet (503).
    #[error("{0}")]
    Unavailable(&'static str),
    /// A fault of ours, logged where it happened; the caller learns nothing more (500).
    #[error("internal error")]
    Internal,
}

impl From<AuthError> for Problem {
    fn from(error: AuthError) -> Self {
        let detail = error.to_string();
        match error {
            AuthError::Unauthenticated(_) => crate::principal::unauthorized(detail),
            AuthError::Invalid {
                field,
                rule,
                message,
            } => Problem::validation(vec![keh_http::FieldError {
                field: field.to_owned(),
                rule: rule.to_owned(),
                message,
            }]),
            AuthError::UserExists(_) => {
                Problem::new(StatusCode::CONFLICT, "user-exists", "Conflict", detail).with_field(
                    "username",
                    "exists",
                    "choose another username (case, width and look-alike letters do not make a name different)",
                )
            }
            AuthError::NotFound(_) => Problem::not_found(detail),
            AuthError::NoTicketNeeded => Problem::bad_request("no-ticket-needed", detail),
            AuthError::Throttled(wait) => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "sign-in-throttled",
                "Too Many Requests",
                detail,
            )
            .retry_after(wait),
            AuthError::Unavailable(_) => Problem::unavailable(detail),
            AuthError::Internal => Problem::internal(),
        }
    }
}
