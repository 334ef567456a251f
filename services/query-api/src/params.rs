//! Query-string parsing: every parameter known, typed, and every mistake a 400 that names it.

use std::collections::BTreeMap;
use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use keh_http::Problem;
use keh_http::docs::QueryParam;
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// The raw parameters of a request, each at most once.
#[derive(Debug, Default)]
pub struct Params {
    values: BTreeMap<String, String>,
}

/// The parameters a handler accepts are documented by its route (`Describe::queries`), from
/// the same list it checks them against (`Params::only`).
impl aide::OperationInput for Params {}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|e| {
            Problem::bad_request(
                "invalid-query-parameter",
                format!("the query string cannot be read: {e}"),
            )
        })?;
        let mut values = BTreeMap::new();
        for (name, value) in pairs {
            if values.insert(name.clone(), value).is_some() {
                return Err(invalid(&name, "repeated", "must be given at most once"));
            }
        }
        Ok(Self { values })
    }
}

/// A 400 naming the parameter.
pub fn invalid(name: &str, rule: &str, message: &str) -> Problem {
    Problem::bad_request(
        "invalid-query-parameter",
        format!("query parameter {name} {message}"),
    )
    .with_field(name, rule, message)
}

impl Params {
    /// Refuses parameters outside `allowed` (a misspelt filter must not silently match all).
    /// Refuses any parameter but `allowed`: the list the route documents.
    pub fn only(&self, allowed: &[QueryParam]) -> Result<(), Problem> {
        match self
            .values
            .keys()
            .find(|k| !allowed.iter().any(|p| p.name == k.as_str()))
        {
            Some(unknown) => {
                let known: Vec<&str> = allowed.iter().map(|p| p.name).collect();
                Err(invalid(
                    unknown,
                    "unknown-parameter",
                    &format!("is not known here; known: {}", known.join(", ")),
                ))
            }
            None => Ok(()),
        }
    }

    pub fn text(&self, name: &str) -> Result<Option<&str>, Problem> {
        match self.values.get(name).map(String::as_str) {
            Some(v) if v.trim().is_empty() => {
                Err(invalid(name, "invalid-value", "must not be empty"))
            }
            Some(v) if v.chars().count() > 255 => Err(invalid(
                name,
                "invalid-value",
                "must be at most 255 characters",
            )),
            Some(v) if v.chars().any(char::is_control) => Err(invalid(
                name,
                "invalid-value",
                "must not contain control characters",
            )),
            other => Ok(other),
        }
    }

    /// A value parsed with `FromStr`.
    pub fn parsed<T: FromStr>(&self, name: &str, what: &str) -> Result<Option<T>, Problem> {
        match self.text(name)? {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| invalid(name, "invalid-value", &format!("must be {what}"))),
        }
    }

    pub fn integer(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, Problem> {
        let value: Option<i64> = self.parsed(name, &format!("an integer from {min} to {max}"))?;
        match value {
            Some(v) if !(min..=max).contains(&v) => Err(invalid(
                name,
                "out-of-range",
                &format!("must be from {min} to {max}"),
            )),
            other => Ok(other),
        }
    }

    pub fn decimal(&self, name: &str) -> Result<Option<Decimal>, Problem> {
        let value: Option<Decimal> = self.parsed(name, "a decimal number")?;
        match value {
            Some(v) if v.is_sign_negative() => {
                Err(invalid(name, "out-of-range", "must not be negative"))
            }
            other => Ok(other),
        }
    }

    pub fn timestamp(&self, name: &str) -> Result<Option<DateTime<Utc>>, Problem> {
        self.parsed(name, "an RFC 3339 timestamp such as 2026-01-31T12:00:00Z")
    }

    pub fn boolean(&self, name: &str) -> Result<bool, Problem> {
        Ok(self.parsed::<bool>(name, "true or false")?.unwrap_or(false))
    }

    /// A comma-separated list of values parsed with `FromStr` (RESO enumerations).
    pub fn list<T: FromStr>(&self, name: &str, what: &str) -> Result<Vec<T>, Problem> {
        let Some(raw) = self.text(name)? else {
            return Ok(Vec::new());
        };
        raw.split(',')
            .map(|part| {
                part.trim().parse().map_err(|_| {
                    invalid(
                        name,
                        "invalid-value",
                        &format!("must list {what} separated by commas"),
                    )
                })
            })
            .collect()
    }
}

/// Schemas of query parameters, for the [`QueryParam`] lists beside the handlers.
pub(crate) mod schemas {
    use super::*;

    /// Free text: 1 to 255 characters.
    pub(crate) fn text() -> Value {
        json!({"type": "string", "minLength": 1, "maxLength": 255})
    }

    pub(crate) fn timestamp() -> Value {
        json!({"type": "string", "format": "date-time"})
    }

    pub(crate) fn date() -> Value {
        json!({"type": "string", "format": "date"})
    }

    pub(crate) fn decimal() -> Value {
        json!({"type": "number", "minimum": 0})
    }

    pub(crate) fn boolean() -> Value {
        json!({"type": "boolean"})
    }

    /// A page size of 1 to 200.
    pub(crate) fn page_size() -> Value {
        json!({"type": "integer", "minimum": 1, "maximum": 200})
    }
}
