//! `kubeestatehub import FILE`: listings from a RESO-named CSV or JSON-lines file, through
//! the command path.
//!
//! `ListingKey` identifies the listing. A new listing gets the events that lead to the row's
//! status, dated by the row's dates (a Closed row: created on `ListingContractDate`, pending
//! on `PurchaseContractDate`, closed on `CloseDate` at `ClosePrice`). An existing listing
//! gets only what differs (details, price, status), so importing the same file again
//! appends nothing. An empty cell leaves a field unchanged. A bad row is reported with its
//! line and the offending fields, and the others are imported.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use keh_events::listing::{DetailsPatch, ListingDetails};
use keh_events::reso::{Price, PropertyType, ShortText, StandardStatus};
use keh_events::{ListingKey, Metadata};
use keh_http::FieldError;
use keh_listing::command::{ChangePrice, ChangeStatus, CreateListing, UpdateDetails};
use keh_listing::{Listing, ListingCommand, lifecycle};
use keh_store::{ExecuteError, Store};
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

/// Columns that hold numbers (a CSV cell is text; these become JSON numbers).
const NUMERIC: &[&str] = &[
    "ListPrice",
    "OriginalListPrice",
    "ClosePrice",
    "BedroomsTotal",
    "BathroomsTotalInteger",
    "LivingArea",
    "LotSizeArea",
    "YearBuilt",
    "Latitude",
    "Longitude",
];

macro_rules! define_row {
    ($($field:ident : $ty:ty = $name:literal),+ $(,)?) => {
        /// One row of an import file (RESO names).
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ImportRow {
            #[serde(rename = "ListingKey")]
            pub listing_key: ShortText,
            #[serde(rename = "StandardStatus", default)]
            pub standard_status: Option<StandardStatus>,
            #[serde(rename = "PropertyType", default)]
            pub property_type: Option<PropertyType>,
            #[serde(rename = "ListPrice", default)]
            pub list_price: Option<Price>,
            #[serde(rename = "OriginalListPrice", default)]
            pub original_list_price: Option<Price>,
            #[serde(rename = "ListingContractDate", default)]
            pub listing_contract_date: Option<NaiveDate>,
            #[serde(rename = "OnMarketDate", default)]
            pub on_market_date: Option<NaiveDate>,
            #[serde(rename = "PurchaseContractDate", default)]
            pub purchase_contract_date: Option<NaiveDate>,
            #[serde(rename = "CloseDate", default)]
            pub close_date: Option<NaiveDate>,
            #[serde(rename = "ClosePrice", default)]
            pub close_price: Option<Price>,
            #[serde(rename = "BuyerAgentKey", default)]
            pub buyer_agent_key: Option<ShortText>,
            #[serde(rename = "WithdrawnDate", default)]
            pub withdrawn_date: Option<NaiveDate>,
            #[serde(rename = "OffMarketDate", default)]
            pub off_market_date: Option<NaiveDate>,
            #[serde(rename = "CancellationDate", default)]
            pub cancellation_date: Option<NaiveDate>,
            #[serde(rename = "ModificationTimestamp", default)]
            pub modification_timestamp: Option<DateTime<Utc>>,
            $(
                #[serde(rename = $name, default)]
                pub $field: Option<$ty>,
            )+
        }

        impl ImportRow {
            /// Every column this import understands.
            pub const COLUMNS: &'static [&'static str] = &[
                "ListingKey", "StandardStatus", "PropertyType", "ListPrice", "OriginalListPrice",
                "ListingContractDate", "OnMarketDate", "PurchaseContractDate", "CloseDate", "ClosePrice",
                "BuyerAgentKey", "WithdrawnDate", "OffMarketDate", "CancellationDate", "ModificationTimestamp",
                $($name),+
            ];

            fn details(&self) -> ListingDetails {
                ListingDetails { $($field: self.$field.clone(),)+ }
            }

            /// Cells present become "set"; absent cells leave the field as it is.
            fn patch(&self) -> DetailsPatch {
                DetailsPatch { $($field: self.$field.clone().map(Some),)+ }
            }
        }
    };
}

keh_events::with_detail_fields!(define_row);

/// A row that could not be imported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowError {
    /// Line of the file (1 is the CSV header).
    pub line: usize,
    pub listing_key: Option<String>,
    pub message: String,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub rows: usize,
    /// Rows that appended events.
    pub changed: usize,
    /// Rows already reflected in the store.
    pub unchanged: usize,
    pub events: u64,
    pub failed: Vec<RowError>,
    /// Columns present in the file that this import does not understand (ignored).
    pub ignored_columns: BTreeSet<String>,
}

/// A parsed row, or why it could not be read.
type RawRow = (usize, Result<Map<String, Value>, String>);

/// Reads a file: JSON lines when its first non-blank byte is `{`, else CSV with a header.
pub fn read(bytes: &[u8], ignored: &mut BTreeSet<String>) -> Vec<RawRow> {
    let json_lines = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let rows = if json_lines {
        read_json_lines(bytes)
    } else {
        read_csv(bytes)
    };
    for (_, row) in &rows {
        if let Ok(map) = row {
            ignored.extend(
                map.keys()
                    .filter(|k| !ImportRow::COLUMNS.contains(&k.as_str()))
                    .cloned(),
            );
        }
    }
    rows.into_iter()
        .map(|(line, row)| {
            (
                line,
                row.map(|mut map| {
                    map.retain(|k, _| ImportRow::COLUMNS.contains(&k.as_str()));
                    map
                }),
            )
        })
        .collect()
}

fn read_json_lines(bytes: &[u8]) -> Vec<RawRow> {
    bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| line.iter().any(|b| !b.is_ascii_whitespace()))
        .map(|(index, line)| {
            let row = std::str::from_utf8(line)
                .map_err(|_| "the line is not valid UTF-8 (save the file as UTF-8)".to_owned())
                .and_then(|text| {
                    serde_json::from_str::<Map<String, Value>>(text)
                        .map_err(|e| format!("not a JSON object: {e}"))
                });
            (index + 1, row)
        })
        .collect()
}

fn read_csv(bytes: &[u8]) -> Vec<RawRow> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let headers: Vec<String> = match reader.byte_headers() {
        Ok(headers) => headers
            .iter()
            .map(|h| {
                String::from_utf8_lossy(h)
                    .trim()
                    .trim_start_matches('\u{feff}')
                    .to_owned()
            })
            .collect(),
        Err(error) => return vec![(1, Err(format!("the header cannot be read: {error}")))],
    };
    reader
        .byte_records()
        .enumerate()
        .map(|(index, record)| {
            let line = record
                .as_ref()
                .ok()
                .and_then(|r| r.position())
                .map_or(index + 2, |p| {
                    usize::try_from(p.line()).unwrap_or(index + 2)
                });
            let row = record
                .map_err(|e| format!("unreadable CSV: {e}"))
                .and_then(|record| {
                    if record.len() != headers.len() {
                        return Err(format!(
                            "{} cells where the header has {}",
                            record.len(),
                            headers.len()
                        ));
                    }
                    let mut map = Map::new();
                    for (name, cell) in headers.iter().zip(record.iter()) {
                        let cell = std::str::from_utf8(cell)
                            .map_err(|_| {
                                format!("{name}: not valid UTF-8 (save the file as UTF-8)")
                            })?
                            .trim();
                        if cell.is_empty() {
                            continue;
                        }
                        // Numbers go in as JSON numbers, parsed exactly; anything else stays text
                        // and is refused by the field's type with its name.
                        let value = if NUMERIC.contains(&name.as_str()) {
                            serde_json::from_str::<serde_json::Number>(cell)
                                .map_or_else(|_| Value::String(cell.to_owned()), Value::Number)
                        } else {
                            Value::String(cell.to_owned())
                        };
                        map.insert(name.clone(), value);
                    }
                    Ok(map)
                });
            (line, row)
        })
        .collect()
}

fn noon(date: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&date.and_hms_opt(12, 0, 0).unwrap_or_default())
        .min(Utc::now())
}

/// The commands that bring `listing` to what `row` says.
fn plan(row: &ImportRow, listing: &Listing) -> Result<Vec<ListingCommand>, String> {
    let target = row.standard_status.unwrap_or(StandardStatus::Active);
    let mut commands = Vec::new();
    let current = match listing.state() {
        Some(state) => state.standard_status,
        None => {
            let property_type = row
                .property_type
                .ok_or("PropertyType: required for a new listing")?;
            let list_price = row
                .list_price
                .ok_or("ListPrice: required for a new listing")?;
            let contract = row
                .listing_contract_date
                .or(row.on_market_date)
                .unwrap_or_else(|| Utc::now().date_naive());
            let initial = match target {
                StandardStatus::ComingSoon => StandardStatus::ComingSoon,
                StandardStatus::Incomplete | StandardStatus::Delete => StandardStatus::Incomplete,
                _ => StandardStatus::Active,
            };
            commands.push(ListingCommand::Create(CreateListing {
                listing_key: ListingKey::new(row.listing_key.as_str())
                    .map_err(|e| format!("ListingKey {e}"))?,
                standard_status: initial,
                property_type,
                list_price: row.original_list_price.unwrap_or(list_price),
                listing_contract_date: contract,
                on_market_date: (initial == StandardStatus::Active)
                    .then_some(row.on_market_date)
                    .flatten(),
                details: row.details(),
                at: noon(contract),
            }));
            if row
                .original_list_price
                .is_some_and(|original| original != list_price)
            {
                // The price moved before the listing's next milestone (or a day after listing).
                let next = [
                    row.purchase_contract_date,
                    row.withdrawn_date,
                    row.off_market_date,
                    row.cancellation_date,
                    row.close_date,
                ]
                .into_iter()
                .flatten()
                .min();
                let day = next.map_or(contract + chrono::Duration::days(1), |d| {
                    (d - chrono::Duration::days(1)).max(contract)
                });
                commands.push(ListingCommand::ChangePrice(ChangePrice {
                    list_price,
                    at: noon(day),
                }));
            }
            initial
        }
    };
    if listing.state().is_some() {
        let at = row.modification_timestamp.unwrap_or_else(Utc::now);
        commands.push(ListingCommand::UpdateDetails(UpdateDetails {
            patch: row.patch(),
            list_price: row.list_price,
            at,
        }));
    }
    if target != current {
        let status = |to: StandardStatus, day: Option<NaiveDate>| {
            let closing = to == StandardStatus::Closed;
            ListingCommand::ChangeStatus(ChangeStatus {
                standard_status: to,
                purchase_contract_date: matches!(
                    to,
                    StandardStatus::Pending | StandardStatus::ActiveUnderContract
                )
                .then_some(row.purchase_contract_date)
                .flatten(),
                close_date: closing.then_some(row.close_date).flatten(),
                close_price: closing.then_some(row.close_price).flatten(),
                buyer_agent_key: closing.then(|| row.buyer_agent_key.clone()).flatten(),
                at: noon(day.unwrap_or_else(|| Utc::now().date_naive())),
            })
        };
        let off_market = row.off_market_date;
        let day_of = |to: StandardStatus| match to {
            StandardStatus::Pending | StandardStatus::ActiveUnderContract => {
                row.purchase_contract_date
            }
            StandardStatus::Closed => row.close_date,
            StandardStatus::Withdrawn => row.withdrawn_date.or(off_market),
            StandardStatus::Expired => row.expiration_date.or(off_market),
            StandardStatus::Canceled => row.cancellation_date.or(off_market),
            StandardStatus::Hold => off_market,
            _ => row.listing_contract_date,
        };
        // A sale passes through Pending when it cannot close directly.
        if target == StandardStatus::Closed
            && !lifecycle::is_allowed(current, target)
            && lifecycle::is_allowed(current, StandardStatus::Pending)
        {
            commands.push(status(
                StandardStatus::Pending,
                row.purchase_contract_date.or(row.close_date),
            ));
        }
        commands.push(status(target, day_of(target)));
    }
    Ok(commands)
}

/// Imports `rows` through the event store. `progress` is called once per row.
pub async fn run(
    store: Arc<Store>,
    rows: Vec<RawRow>,
    progress: impl Fn() + Send + Sync,
) -> Result<ImportReport, ExecuteError> {
    let mut report = ImportReport {
        rows: rows.len(),
        ..ImportReport::default()
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    let metadata = Metadata {
        actor: "system:import".to_owned(),
        correlation_id: Uuid::new_v4(),
        causation_id: Uuid::new_v4(),
        ..Metadata::default()
    };
    for (line, raw) in rows {
        progress();
        let fail = |report: &mut ImportReport, key: Option<String>, message: String| {
            report.failed.push(RowError {
                line,
                listing_key: key,
                message,
            });
        };
        let map = match raw {
            Ok(map) => map,
            Err(message) => {
                fail(&mut report, None, message);
                continue;
            }
        };
        let key_hint = map
            .get("ListingKey")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let row: ImportRow = match serde_json::to_vec(&map)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                keh_http::json::parse::<ImportRow>(&bytes)
                    .map_err(|problem| describe(&problem.errors, &problem.detail))
            }) {
            Ok(row) => row,
            Err(message) => {
                fail(&mut report, key_hint, message);
                continue;
            }
        };
        let key = row.listing_key.as_str().to_owned();
        if let Some(first) = seen.insert(key.clone(), line) {
            fail(
                &mut report,
                Some(key),
                format!("ListingKey repeats line {first}: one row per listing"),
            );
            continue;
        }
        let listing = store.load(&key).await?;
        let commands = match plan(&row, &listing) {
            Ok(commands) => commands,
            Err(message) => {
                fail(&mut report, Some(key), message);
                continue;
            }
        };
        // A dry run first: a row the aggregate would refuse half-way appends nothing at all.
        if let Err(rule) = listing.simulate(commands.clone()) {
            let message = match rule.field {
                Some(field) => format!("{field}: {}", rule.message),
                None => rule.message,
            };
            fail(&mut report, Some(key), message);
            continue;
        }
        let mut appended = 0;
        let mut failure = None;
        for command in commands {
            match store
                .execute(&key, command, &metadata, None, &keh_store::Access::Any)
                .await
            {
                Ok(done) => appended += done.appended,
                Err(ExecuteError::Rule(rule)) => {
                    failure = Some(match rule.field {
                        Some(field) => format!("{field}: {}", rule.message),
                        None => rule.message,
                    });
                    break;
                }
                Err(ExecuteError::Conflict) => {
                    failure = Some(
                        "another change to this listing happened meanwhile; import the row again"
                            .to_owned(),
                    );
                    break;
                }
                Err(other) => return Err(other),
            }
        }
        report.events += appended as u64;
        match failure {
            Some(message) => fail(&mut report, Some(key), message),
            None if appended > 0 => report.changed += 1,
            None => report.unchanged += 1,
        }
    }
    Ok(report)
}

fn describe(errors: &[FieldError], detail: &str) -> String {
    if errors.is_empty() {
        return detail.to_owned();
    }
    errors
        .iter()
        .map(|e| {
            if e.field.is_empty() {
                e.message.clone()
            } else {
                format!("{}: {}", e.field, e.message)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests;
