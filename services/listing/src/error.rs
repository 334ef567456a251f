//! Why a command was refused.

/// What kind of refusal: the HTTP layer maps these to 404, 409 and 422.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The listing (or a media item / open house of it) does not exist.
    NotFound,
    /// The listing (or the media/open-house key) already exists.
    AlreadyExists,
    /// A business rule refuses the command.
    Rule,
}

/// A refused command: which field, which rule, and a sentence for people.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ListingError {
    pub kind: ErrorKind,
    /// The RESO name of the offending field, when one field is to blame.
    pub field: Option<&'static str>,
    /// A stable, machine-readable rule name (listed in docs/api.md).
    pub rule: &'static str,
    pub message: String,
}

impl ListingError {
    pub(crate) fn rule(
        field: &'static str,
        rule: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind: ErrorKind::Rule,
            field: Some(field),
            rule,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(field: Option<&'static str>, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::NotFound,
            field,
            rule: "not-found",
            message: message.into(),
        }
    }

    pub(crate) fn exists(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::AlreadyExists,
            field: Some(field),
            rule: "already-exists",
            message: message.into(),
        }
    }
}
