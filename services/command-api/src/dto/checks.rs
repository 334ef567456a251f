//! The checks of request fields that need the clock or several fields (types parse the
//! rest), each failure reported per field and all of them at once.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use keh_http::FieldError;

/// How far in the future an effective timestamp may lie (clock skew between systems).
const FUTURE_TOLERANCE: TimeDelta = TimeDelta::minutes(5);

/// Validates an optional effective timestamp (defaults to `now`; never in the future).
pub(super) fn effective(
    value: Option<DateTime<Utc>>,
    field: &str,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, FieldError> {
    match value {
        None => Ok(now),
        Some(at) if at > now + FUTURE_TOLERANCE => Err(FieldError {
            field: field.to_owned(),
            rule: "in-the-future".to_owned(),
            message: format!("{field} must not lie in the future"),
        }),
        Some(at) if at.date_naive() < min_date() => Err(too_old(field)),
        Some(at) => Ok(at),
    }
}

pub(super) fn min_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or(NaiveDate::MIN)
}

pub(super) fn too_old(field: &str) -> FieldError {
    FieldError {
        field: field.to_owned(),
        rule: "too-old".to_owned(),
        message: format!("{field} must be in 1900 or later"),
    }
}

/// Business dates may not lie after today (+1 day for time zones), nor before 1900.
pub(super) fn business_date(
    value: NaiveDate,
    field: &str,
    now: DateTime<Utc>,
) -> Result<NaiveDate, FieldError> {
    if value > (now + TimeDelta::days(1)).date_naive() {
        return Err(FieldError {
            field: field.to_owned(),
            rule: "in-the-future".to_owned(),
            message: format!("{field} must not lie in the future"),
        });
    }
    if value < min_date() {
        return Err(too_old(field));
    }
    Ok(value)
}

/// Collects the field errors of several checks: all of them are reported at once.
#[derive(Default)]
pub(crate) struct Checks(pub(crate) Vec<FieldError>);

impl Checks {
    pub(super) fn take<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        result.map_err(|e| self.0.push(e)).ok()
    }

    pub(super) fn finish<T>(self, value: Option<T>) -> Result<T, Vec<FieldError>> {
        match value {
            Some(value) if self.0.is_empty() => Ok(value),
            _ => Err(self.0),
        }
    }
}

/// Expiration dates are future-facing but not absurd.
pub(super) fn expiration_in_range(date: NaiveDate) -> Result<NaiveDate, FieldError> {
    let max = NaiveDate::from_ymd_opt(2200, 12, 31).unwrap_or(NaiveDate::MAX);
    if date < min_date() || date > max {
        return Err(FieldError {
            field: "ExpirationDate".to_owned(),
            rule: "out-of-range".to_owned(),
            message: "ExpirationDate must be between 1900 and 2200".to_owned(),
        });
    }
    Ok(date)
}
