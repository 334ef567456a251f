//! `kubeestatehub seed`: a realistic synthetic market, written through the command path.
//!
//! The plan is pure and deterministic (same `--seed` and `--until`, same commands): listings
//! across several cities and postal codes, listed over the past months with spring
//! seasonality and a price level per city, then a lifecycle each: price drops (and the odd
//! raise), pending and closed above or below list, back on market, withdrawn, expired,
//! canceled, or still active. Every step is back-dated through its effective timestamp.
//! The commands then run through the Listing aggregate and the event store, exactly as HTTP
//! commands do; read models are never written directly.

use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use keh_events::listing::ListingDetails;
use keh_events::reso::{
    Area, Latitude, LivingAreaUnits, Longitude, Price, PropertyType, RoomCount, ShortText,
    StandardStatus, Year,
};
use keh_events::{ListingKey, Metadata};
use keh_listing::ListingCommand;
use keh_listing::command::{ChangePrice, ChangeStatus, CreateListing};
use keh_store::{ExecuteError, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use uuid::Uuid;

/// A city of the synthetic market.
struct City {
    name: &'static str,
    postal_prefix: &'static str,
    latitude: f64,
    longitude: f64,
    /// Price per square foot, in whole currency units.
    price_per_sqft: i64,
    subdivisions: &'static [&'static str],
}

const CITIES: &[City] = &[
    City {
        name: "Springfield",
        postal_prefix: "627",
        latitude: 39.78,
        longitude: -89.65,
        price_per_sqft: 180,
        subdivisions: &["Evergreen Terrace", "Cypress Creek", "Old Town"],
    },
    City {
        name: "Shelbyville",
        postal_prefix: "624",
        latitude: 39.41,
        longitude: -88.79,
        price_per_sqft: 150,
        subdivisions: &["Lakeside", "Mill Park"],
    },
    City {
        name: "Capital City",
        postal_prefix: "606",
        latitude: 41.88,
        longitude: -87.63,
        price_per_sqft: 340,
        subdivisions: &["Riverside", "Harbor View", "Uptown"],
    },
    City {
        name: "Ogdenville",
        postal_prefix: "617",
        latitude: 40.11,
        longitude: -88.24,
        price_per_sqft: 165,
        subdivisions: &["North Fields"],
    },
    City {
        name: "North Haverbrook",
        postal_prefix: "618",
        latitude: 38.63,
        longitude: -90.20,
        price_per_sqft: 120,
        subdivisions: &["Monorail Heights", "Canal District"],
    },
];

/// Relative listing activity by calendar month (spring peak, winter trough).
const SEASON: [u32; 12] = [6, 7, 10, 12, 13, 12, 10, 9, 8, 7, 5, 4];

/// One listing's commands, in order.
#[derive(Clone, Debug)]
pub struct PlannedListing {
    pub listing_key: String,
    pub commands: Vec<ListingCommand>,
}

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct SeedPlan {
    pub listings: usize,
    pub months: u32,
    pub seed: u64,
    /// The market ends here: nothing is dated later.
    pub until: DateTime<Utc>,
}

fn text(value: &str) -> Option<ShortText> {
    ShortText::new(value).ok()
}

fn money(units: i64) -> Option<Price> {
    Price::new(Decimal::from(units)).ok()
}

/// A decimal with `places` decimals from a float (coordinates).
fn fixed(value: f64, places: u32) -> Decimal {
    let scale = 10_i64.pow(places);
    #[allow(clippy::cast_possible_truncation)]
    let scaled = (value * scale as f64).round() as i64;
    Decimal::new(scaled, places)
}

/// Rounds to hundreds (list prices end in 00).
fn round_price(value: f64) -> i64 {
    #[allow(clippy::cast_possible_truncation)]
    let hundreds = (value / 100.0).round() as i64;
    (hundreds * 100).max(1_000)
}

/// A listing date in the window, weighted by season.
fn listing_date(rng: &mut StdRng, start: NaiveDate, days: i64) -> NaiveDate {
    loop {
        let date = start + Duration::days(rng.random_range(0..days.max(1)));
        let weight = SEASON[date.month0() as usize];
        if rng.random_range(0..13) < weight {
            return date;
        }
    }
}

fn at(date: NaiveDate, rng: &mut StdRng) -> DateTime<Utc> {
    let seconds = rng.random_range(8 * 3600..19 * 3600);
    Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap_or_default())
        + Duration::seconds(seconds)
}

/// The deterministic plan.
pub fn plan(plan: SeedPlan) -> Vec<PlannedListing> {
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let end = plan.until.date_naive();
    let start = end - Duration::days(i64::from(plan.months) * 30);
    let window = (end - start).num_days();
    (0..plan.listings)
        .map(|i| {
            let key = format!("seed-{}-{i:07}", plan.seed);
            let commands = plan_listing(&mut rng, &key, start, window, plan.until);
            PlannedListing {
                listing_key: key,
                commands,
            }
        })
        .collect()
}

fn plan_listing(
    rng: &mut StdRng,
    key: &str,
    start: NaiveDate,
    window: i64,
    until: DateTime<Utc>,
) -> Vec<ListingCommand> {
    let city = &CITIES[rng.random_range(0..CITIES.len())];
    let kind = match rng.random_range(0..100) {
        0..75 => PropertyType::Residential,
        75..85 => PropertyType::ResidentialIncome,
        85..93 => PropertyType::Land,
        _ => PropertyType::CommercialSale,
    };
    let area: i64 = match kind {
        PropertyType::Land => rng.random_range(40..200) * 100,
        PropertyType::CommercialSale => rng.random_range(20..120) * 100,
        _ => rng.random_range(70..420) * 10,
    };
    let per_sqft = match kind {
        PropertyType::Land => city.price_per_sqft as f64 / 8.0,
        _ => city.price_per_sqft as f64,
    };
    let mut price = round_price(area as f64 * per_sqft * rng.random_range(0.75..1.3));
    let list_date = listing_date(rng, start, window);
    let beds = rng.random_range(1..6);
    let details = ListingDetails {
        listing_id: text(&format!("MLS{}", &key[key.len() - 7..])),
        bedrooms_total: (kind != PropertyType::Land)
            .then(|| RoomCount::new(beds).ok())
            .flatten(),
        bathrooms_total_integer: (kind != PropertyType::Land)
            .then(|| RoomCount::new(rng.random_range(1..=beds.min(4))).ok())
            .flatten(),
        living_area: (kind != PropertyType::Land)
            .then(|| Area::new(Decimal::from(area)).ok())
            .flatten(),
        living_area_units: (kind != PropertyType::Land).then_some(LivingAreaUnits::SquareFeet),
        lot_size_area: Area::new(Decimal::from(area * rng.random_range(2..6))).ok(),
        year_built: (kind != PropertyType::Land)
            .then(|| Year::new(rng.random_range(1920..2025)).ok())
            .flatten(),
        street_number: text(&rng.random_range(1..9999).to_string()),
        street_name: text(
            [
                "Elm Street",
                "Oak Avenue",
                "Maple Drive",
                "Main Street",
                "Lake Road",
                "Cedar Lane",
            ][rng.random_range(0..6)],
        ),
        city: text(city.name),
        state_or_province: text("IL"),
        postal_code: text(&format!(
            "{}{:02}",
            city.postal_prefix,
            rng.random_range(1..30)
        )),
        country: text("US"),
        subdivision_name: text(city.subdivisions[rng.random_range(0..city.subdivisions.len())]),
        latitude: Latitude::new(fixed(city.latitude + rng.random_range(-0.08..0.08), 6)).ok(),
        longitude: Longitude::new(fixed(city.longitude + rng.random_range(-0.08..0.08), 6)).ok(),
        list_agent_key: text(&format!("agent-{}", rng.random_range(1..60))),
        public_remarks: keh_events::reso::Remarks::new(
            [
                "Sunny and renovated, close to schools.",
                "Quiet street near the lake.",
                "Corner lot with a large garden.",
                "Modern kitchen, open plan living.",
                "Needs some love: priced to sell.",
            ][rng.random_range(0..5)],
        )
        .ok(),
        ..ListingDetails::default()
    };
    details_with_address(key, list_date, details, rng, kind, &mut price, until)
}

#[allow(clippy::too_many_lines)]
fn details_with_address(
    key: &str,
    list_date: NaiveDate,
    mut details: ListingDetails,
    rng: &mut StdRng,
    kind: PropertyType,
    price: &mut i64,
    until: DateTime<Utc>,
) -> Vec<ListingCommand> {
    details.unparsed_address = match (&details.street_number, &details.street_name) {
        (Some(n), Some(s)) => text(&format!("{n} {s}")),
        _ => None,
    };
    let mut commands = Vec::new();
    let (Ok(listing_key), Some(list_price)) = (ListingKey::new(key), money(*price)) else {
        return commands;
    };
    commands.push(ListingCommand::Create(CreateListing {
        listing_key,
        standard_status: StandardStatus::Active,
        property_type: kind,
        list_price,
        listing_contract_date: list_date,
        on_market_date: None,
        details,
        at: at(list_date, rng).min(until),
    }));
    let mut day = list_date;
    let push_status = |commands: &mut Vec<ListingCommand>,
                       rng: &mut StdRng,
                       day: NaiveDate,
                       to: StandardStatus,
                       close: Option<(i64, NaiveDate)>| {
        let at = at(day, rng);
        if at > until {
            return false;
        }
        commands.push(ListingCommand::ChangeStatus(ChangeStatus {
            standard_status: to,
            purchase_contract_date: None,
            close_date: close.map(|c| c.1),
            close_price: close.and_then(|c| money(c.0)),
            buyer_agent_key: close
                .and_then(|_| text(&format!("agent-{}", rng.random_range(1..60)))),
            at,
        }));
        true
    };
    // Price moves while on the market: mostly drops, sometimes a raise.
    let drops = match rng.random_range(0..100) {
        0..55 => 0,
        55..85 => 1,
        85..96 => 2,
        _ => 3,
    };
    for _ in 0..drops {
        day += Duration::days(rng.random_range(10..45));
        let factor = if rng.random_range(0..10) == 0 {
            rng.random_range(1.02..1.06)
        } else {
            rng.random_range(0.92..0.98)
        };
        *price = round_price(*price as f64 * factor);
        let at = at(day, rng);
        if at > until {
            return commands;
        }
        if let Some(list_price) = money(*price) {
            commands.push(ListingCommand::ChangePrice(ChangePrice { list_price, at }));
        }
    }
    // Some deals fall through once: pending, then back on market.
    if rng.random_range(0..100) < 8 {
        day += Duration::days(rng.random_range(7..40));
        if !push_status(&mut commands, rng, day, StandardStatus::Pending, None) {
            return commands;
        }
        day += Duration::days(rng.random_range(5..25));
        if !push_status(&mut commands, rng, day, StandardStatus::Active, None) {
            return commands;
        }
    }
    let outcome = rng.random_range(0..100);
    match outcome {
        // Sold: under contract, then closed, mostly near list, with a few outliers.
        0..62 => {
            day += Duration::days(rng.random_range(5..90));
            if rng.random_range(0..3) == 0
                && !push_status(
                    &mut commands,
                    rng,
                    day,
                    StandardStatus::ActiveUnderContract,
                    None,
                )
            {
                return commands;
            }
            if !push_status(
                &mut commands,
                rng,
                day + Duration::days(1),
                StandardStatus::Pending,
                None,
            ) {
                return commands;
            }
            day += Duration::days(rng.random_range(20..50));
            let ratio = match rng.random_range(0..100) {
                0..2 => rng.random_range(0.3..0.45),
                2..4 => rng.random_range(1.6..2.2),
                _ => rng.random_range(0.93..1.07),
            };
            let close_price = round_price(*price as f64 * ratio);
            push_status(
                &mut commands,
                rng,
                day,
                StandardStatus::Closed,
                Some((close_price, day)),
            );
        }
        62..75 => {
            day += Duration::days(rng.random_range(20..120));
            push_status(&mut commands, rng, day, StandardStatus::Withdrawn, None);
        }
        75..87 => {
            // Expired after a long time on the market (some over a year).
            day += Duration::days(rng.random_range(150..420));
            push_status(&mut commands, rng, day, StandardStatus::Expired, None);
        }
        87..91 => {
            day += Duration::days(rng.random_range(10..60));
            push_status(&mut commands, rng, day, StandardStatus::Canceled, None);
        }
        // Still on the market.
        _ => {}
    }
    commands
}

/// What a seeding run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seeded {
    pub listings: u64,
    /// Listings that already existed (a re-run): left as they are.
    pub skipped: u64,
    pub events: u64,
}

/// Runs the plan through the event store, `concurrency` listings at a time. `progress` is
/// called after each listing.
pub async fn run(
    store: Arc<Store>,
    plan: Vec<PlannedListing>,
    concurrency: usize,
    progress: impl Fn(u64) + Send + Sync + 'static,
) -> Result<Seeded, ExecuteError> {
    let progress = Arc::new(progress);
    let queue = Arc::new(tokio::sync::Mutex::new(plan.into_iter()));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let store = Arc::clone(&store);
        let queue = Arc::clone(&queue);
        let progress = Arc::clone(&progress);
        workers.spawn(async move {
            let mut seeded = Seeded::default();
            loop {
                let Some(listing) = queue.lock().await.next() else {
                    return Ok::<_, ExecuteError>(seeded);
                };
                let metadata = Metadata {
                    actor: "system:seed".to_owned(),
                    correlation_id: Uuid::new_v4(),
                    causation_id: Uuid::new_v4(),
                    ..Metadata::default()
                };
                let mut skipped = false;
                for command in listing.commands {
                    match store
                        .execute(
                            &listing.listing_key,
                            command,
                            &metadata,
                            None,
                            &keh_store::Access::Any,
                        )
                        .await
                    {
                        Ok(done) => seeded.events += done.appended as u64,
                        Err(ExecuteError::Rule(rule))
                            if rule.kind == keh_listing::ErrorKind::AlreadyExists =>
                        {
                            skipped = true;
                            break;
                        }
                        Err(error) => return Err(error),
                    }
                }
                if skipped {
                    seeded.skipped += 1;
                } else {
                    seeded.listings += 1;
                }
                progress(1);
            }
        });
    }
    let mut total = Seeded::default();
    while let Some(joined) = workers.join_next().await {
        let part = joined.map_err(|e| ExecuteError::Internal(Box::new(e)))??;
        total.listings += part.listings;
        total.skipped += part.skipped;
        total.events += part.events;
    }
    Ok(total)
}

#[cfg(test)]
mod tests;
