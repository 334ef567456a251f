//! Market analytics against an independent computation.
//!
//! The expected figures are computed here, from the events in the store, by a deliberately
//! plain method that shares nothing with the analytics worker: it walks every day of every
//! period and asks what the listing's status and price were (the worker reasons about
//! spells of activity instead). Every figure of every period of every series must match.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use kubeestatehub::Roles;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::harness::*;

fn d(s: &str) -> NaiveDate {
    s.parse().expect("date")
}

fn at(s: &str) -> String {
    format!("{s}T15:00:00Z")
}

/// Listings that exercise the edge cases, written through the HTTP command API.
async fn edge_market(app: &TestApp) {
    let create = |key: &str, status: &str, price: i64, contract: &str, on_market: Option<&str>| {
        let mut body = json!({
            "ListingKey": key, "StandardStatus": status, "PropertyType": "Residential",
            "ListPrice": price, "ListingContractDate": contract,
            "OriginalEntryTimestamp": at(contract),
            "City": "Edgeville", "PostalCode": "99901", "SubdivisionName": "Corner Lots",
            "LivingArea": 1500, "LivingAreaUnits": "Square Feet",
        });
        if let Some(on_market) = on_market {
            body["OnMarketDate"] = json!(on_market);
        }
        body
    };
    let status =
        |to: &str, date: &str| json!({"StandardStatus": to, "StatusChangeTimestamp": at(date)});
    let close = |date: &str, price: i64| json!({"StandardStatus": "Closed", "StatusChangeTimestamp": at(date), "CloseDate": date, "ClosePrice": price});
    let price =
        |value: i64, date: &str| json!({"ListPrice": value, "PriceChangeTimestamp": at(date)});
    let mut square_metres = create(
        "edge-sqm",
        "Active",
        280_000,
        "2025-03-12",
        Some("2025-03-12"),
    );
    square_metres["LivingArea"] = json!(120);
    square_metres["LivingAreaUnits"] = json!("Square Meters");
    let mut land = create(
        "edge-land",
        "Active",
        90_000,
        "2025-04-07",
        Some("2025-04-07"),
    );
    land["PropertyType"] = json!("Land");
    land["LivingArea"] = Value::Null;
    let steps: Vec<(Value, Vec<(&str, Value)>)> = vec![
        // Sold far above list: excluded from the sale-to-list ratio (+80%).
        (
            create(
                "edge-high",
                "Active",
                100_000,
                "2025-03-03",
                Some("2025-03-03"),
            ),
            vec![
                ("status", status("Pending", "2025-03-20")),
                ("status", close("2025-04-02", 180_000)),
            ],
        ),
        // Sold far below list (-62.5%).
        (
            create(
                "edge-low",
                "Active",
                400_000,
                "2025-03-05",
                Some("2025-03-05"),
            ),
            vec![
                ("status", status("Pending", "2025-03-25")),
                ("status", close("2025-04-10", 150_000)),
            ],
        ),
        // Under contract, closed above list.
        (
            create(
                "edge-above",
                "Active",
                300_000,
                "2025-03-10",
                Some("2025-03-10"),
            ),
            vec![
                ("status", status("Active Under Contract", "2025-03-28")),
                ("status", close("2025-04-15", 310_000)),
            ],
        ),
        // On the market for well over a year, two price drops, still active.
        (
            create(
                "edge-long",
                "Active",
                500_000,
                "2024-01-15",
                Some("2024-01-15"),
            ),
            vec![
                ("price", price(490_000, "2024-06-01")),
                ("price", price(470_000, "2025-01-10")),
            ],
        ),
        // Raised then lowered within one week and one month.
        (
            create(
                "edge-wobble",
                "Active",
                250_000,
                "2025-05-01",
                Some("2025-05-01"),
            ),
            vec![
                ("price", price(260_000, "2025-05-06")),
                ("price", price(245_000, "2025-05-08")),
                ("price", price(240_000, "2025-05-20")),
                ("status", status("Withdrawn", "2025-07-15")),
            ],
        ),
        // Back on market after a failed contract; days on market do not reset.
        (
            create(
                "edge-back",
                "Active",
                350_000,
                "2025-02-03",
                Some("2025-02-03"),
            ),
            vec![
                ("status", status("Pending", "2025-02-20")),
                ("status", status("Active", "2025-03-05")),
                ("price", price(340_000, "2025-03-06")),
                ("status", status("Pending", "2025-04-01")),
                ("status", close("2025-04-29", 335_000)),
            ],
        ),
        // Withdrawn on a month's last day, relisted the next day, expired at a quarter end.
        (
            create(
                "edge-relist",
                "Active",
                420_000,
                "2025-06-02",
                Some("2025-06-02"),
            ),
            vec![
                ("status", status("Withdrawn", "2025-06-30")),
                ("status", status("Active", "2025-07-01")),
                ("price", price(415_000, "2025-07-01")),
                ("status", status("Expired", "2025-09-30")),
            ],
        ),
        // Coming soon, on the market later, on hold, back, canceled.
        (
            create("edge-hold", "Coming Soon", 275_000, "2025-01-10", None),
            vec![
                ("status", status("Active", "2025-02-01")),
                ("status", status("Hold", "2025-02-15")),
                ("status", status("Active", "2025-03-01")),
                ("status", status("Canceled", "2025-03-20")),
            ],
        ),
        // Living area in square metres; the sale closes in the next month.
        (
            square_metres,
            vec![
                ("status", status("Active Under Contract", "2025-03-31")),
                ("status", close("2025-05-01", 275_000)),
            ],
        ),
        // Another property type, no living area.
        (land, vec![("price", price(85_000, "2025-06-16"))]),
    ];
    for (body, changes) in steps {
        let key = app.create_listing(body).await;
        for (kind, change) in changes {
            let reply = app
                .post(&format!("/api/v1/listings/{key}/{kind}"), &change)
                .await;
            assert!(reply.status < 300, "{key} {kind} {change}: {}", reply.body);
        }
    }
}

/// One listing as the test understands it.
#[derive(Debug, Default)]
struct Model {
    property_type: String,
    areas: Vec<(&'static str, String)>,
    living_area: Option<Decimal>,
    units: Option<String>,
    contract: Option<NaiveDate>,
    on_market: Option<NaiveDate>,
    original: Decimal,
    /// (date, status, price) after creation and after each status or price change.
    states: Vec<(NaiveDate, String, Decimal)>,
    contracts: Vec<NaiveDate>,
    exit: Option<NaiveDate>,
    close: Option<(NaiveDate, Decimal)>,
    price_changes: Vec<NaiveDate>,
}

fn is_active(status: &str) -> bool {
    status == "Active" || status == "Active Under Contract"
}

fn decimal(value: &Value) -> Decimal {
    value
        .to_string()
        .trim_matches('"')
        .parse()
        .expect("decimal")
}

fn date_of(value: &Value) -> NaiveDate {
    let text = value.as_str().expect("date text");
    text.parse::<DateTime<Utc>>()
        .map(|t| t.date_naive())
        .unwrap_or_else(|_| d(text))
}

impl Model {
    fn set_area(&mut self, kind: &'static str, value: &Value) {
        self.areas.retain(|(k, _)| *k != kind);
        if let Some(v) = value.as_str() {
            self.areas.push((kind, v.to_owned()));
        }
    }

    fn apply(&mut self, event_type: &str, data: &Value) {
        let status_now = self.states.last().map(|s| s.1.clone()).unwrap_or_default();
        let price_now = self.states.last().map(|s| s.2).unwrap_or_default();
        match event_type {
            "ListingCreated" => {
                self.property_type = data["PropertyType"].as_str().unwrap().to_owned();
                self.set_area("city", &data["City"]);
                self.set_area("postal-code", &data["PostalCode"]);
                self.set_area("subdivision", &data["SubdivisionName"]);
                self.living_area = data.get("LivingArea").map(decimal);
                self.units = data
                    .get("LivingAreaUnits")
                    .and_then(|u| u.as_str())
                    .map(str::to_owned);
                self.contract = Some(d(data["ListingContractDate"].as_str().unwrap()));
                self.on_market = data.get("OnMarketDate").map(date_of);
                self.original = decimal(&data["OriginalListPrice"]);
                let status = data["StandardStatus"].as_str().unwrap().to_owned();
                let date = if is_active(&status) {
                    self.on_market.unwrap()
                } else {
                    self.contract.unwrap()
                };
                self.states
                    .push((date, status, decimal(&data["ListPrice"])));
            }
            "ListingDetailsUpdated" => {
                let changes = &data["Changes"];
                for (field, kind) in [
                    ("City", "city"),
                    ("PostalCode", "postal-code"),
                    ("SubdivisionName", "subdivision"),
                ] {
                    if let Some(v) = changes.get(field) {
                        self.set_area(kind, v);
                    }
                }
                if let Some(v) = changes.get("LivingArea") {
                    self.living_area = (!v.is_null()).then(|| decimal(v));
                }
                if let Some(v) = changes.get("LivingAreaUnits") {
                    self.units = v.as_str().map(str::to_owned);
                }
            }
            "ListingPriceChanged" => {
                let date = date_of(&data["PriceChangeTimestamp"]);
                self.price_changes.push(date);
                self.states
                    .push((date, status_now, decimal(&data["ListPrice"])));
            }
            "ListingStatusChanged" => {
                let date = date_of(&data["StatusChangeTimestamp"]);
                let to = data["StandardStatus"].as_str().unwrap().to_owned();
                if let Some(v) = data.get("OnMarketDate") {
                    self.on_market.get_or_insert(date_of(v));
                }
                let contract_now = matches!(to.as_str(), "Active Under Contract" | "Pending");
                let contract_before =
                    matches!(status_now.as_str(), "Active Under Contract" | "Pending");
                let contract_date = data.get("PurchaseContractDate").map_or(date, date_of);
                if contract_now && !contract_before {
                    self.contracts.push(contract_date);
                }
                let leaves = matches!(
                    to.as_str(),
                    "Withdrawn" | "Expired" | "Canceled" | "Hold" | "Closed"
                );
                if self.exit.is_none() && (contract_now || leaves) {
                    self.exit = Some(if contract_now { contract_date } else { date });
                }
                if to == "Closed" {
                    self.close = Some((date_of(&data["CloseDate"]), decimal(&data["ClosePrice"])));
                }
                self.states.push((date, to, price_now));
            }
            _ => {}
        }
    }

    fn first_date(&self) -> NaiveDate {
        let mut first = self.contract.unwrap();
        for (date, ..) in &self.states {
            first = first.min(*date);
        }
        first
    }

    fn sqft(&self) -> Option<Decimal> {
        let area = self.living_area.filter(|a| *a > Decimal::ZERO)?;
        Some(if self.units.as_deref() == Some("Square Meters") {
            // 1 ft = 0.3048 m.
            area / (Decimal::new(3048, 4) * Decimal::new(3048, 4))
        } else {
            area
        })
    }

    /// The state at the end of `day` (after every change dated on or before it).
    fn end_of(&self, day: NaiveDate) -> Option<&(NaiveDate, String, Decimal)> {
        self.states.iter().rev().find(|s| s.0 <= day)
    }

    /// The state at the start of `day`.
    fn start_of(&self, day: NaiveDate) -> Option<&(NaiveDate, String, Decimal)> {
        self.states.iter().rev().find(|s| s.0 < day)
    }

    fn active_during(&self, day: NaiveDate) -> bool {
        self.start_of(day).is_some_and(|s| is_active(&s.1))
            || self.states.iter().any(|s| s.0 == day && is_active(&s.1))
    }
}

async fn models(pool: &PgPool) -> BTreeMap<String, Model> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT aggregate_id, event_type, payload::text FROM events ORDER BY aggregate_id, sequence",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut models: BTreeMap<String, Model> = BTreeMap::new();
    for (key, event_type, payload) in rows {
        let payload: Value = serde_json::from_str(&payload).unwrap();
        let data = payload.get("Data").unwrap_or(&payload);
        let model = models.entry(key.clone()).or_default();
        model.apply(&event_type, data);
        assert!(
            model.states.windows(2).all(|w| w[0].0 <= w[1].0),
            "{key}: the test expects changes in date order"
        );
    }
    models
}

fn median(mut values: Vec<Decimal>) -> Option<Decimal> {
    if values.is_empty() {
        return None;
    }
    values.sort();
    let n = values.len();
    Some(if n.is_multiple_of(2) {
        (values[n / 2 - 1] + values[n / 2]) / Decimal::from(2)
    } else {
        values[n / 2]
    })
}

fn cents(v: Decimal) -> Decimal {
    v.round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven)
}

fn four(v: Decimal) -> Decimal {
    v.round_dp_with_strategy(4, RoundingStrategy::MidpointNearestEven)
}

/// The figures of one period, computed day by day.
fn expected(
    listings: &[&Model],
    s: NaiveDate,
    e: NaiveDate,
    monthly: bool,
) -> BTreeMap<&'static str, Option<Decimal>> {
    let days: Vec<NaiveDate> = s.iter_days().take_while(|day| *day <= e).collect();
    let inside = |date: NaiveDate| s <= date && date <= e;
    let (mut new, mut active, mut inventory, mut pending, mut changes) = (0, 0, 0, 0, 0);
    let (mut list_prices, mut list_psf, mut sale_prices, mut sale_psf, mut dom) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut to_list, mut to_original, mut above, mut drops) = (vec![], vec![], 0, 0);
    for l in listings {
        if l.on_market.is_some_and(inside) {
            new += 1;
        }
        if l.contracts.iter().any(|d| inside(*d)) {
            pending += 1;
        }
        changes += l.price_changes.iter().filter(|d| inside(**d)).count();
        if l.end_of(e).is_some_and(|st| is_active(&st.1)) {
            inventory += 1;
        }
        if let Some(exit) = l.exit.filter(|d| inside(*d)) {
            let start = l
                .on_market
                .filter(|m| *m <= exit)
                .unwrap_or(l.contract.unwrap());
            dom.push(Decimal::from((exit - start).num_days().max(0)));
        }
        let final_price = l.states.last().unwrap().2;
        if let Some((date, price)) = l.close.filter(|(date, _)| inside(*date)) {
            let _ = date;
            sale_prices.push(price);
            if let Some(a) = l.sqft() {
                sale_psf.push(price / a);
            }
            if price > final_price {
                above += 1;
            }
            let r = price / final_price;
            if (r - Decimal::ONE).abs() < Decimal::new(5, 1) {
                to_list.push(r);
            }
            let r = price / l.original;
            if (r - Decimal::ONE).abs() < Decimal::new(5, 1) {
                to_original.push(r);
            }
        }
        if !days.iter().any(|day| l.active_during(*day)) {
            continue;
        }
        active += 1;
        // Price at the period's end, or just before the last change in it that took the
        // listing off the market.
        let end_price = if l.end_of(e).is_some_and(|st| is_active(&st.1)) {
            l.end_of(e).unwrap().2
        } else {
            let mut price = None;
            let mut previous: Option<&(NaiveDate, String, Decimal)> = None;
            for st in &l.states {
                if let Some(p) = previous
                    && inside(st.0)
                    && is_active(&p.1)
                    && !is_active(&st.1)
                {
                    price = Some(p.2);
                }
                previous = Some(st);
            }
            price.expect("left the market in the period")
        };
        // Price at the period's start, or right after the first change in it that put the
        // listing on the market.
        let start_price = if l.start_of(s).is_some_and(|st| is_active(&st.1)) {
            l.start_of(s).unwrap().2
        } else {
            let mut previous_active = false;
            let mut price = None;
            for st in &l.states {
                if price.is_none() && inside(st.0) && is_active(&st.1) && !previous_active {
                    price = Some(st.2);
                }
                previous_active = is_active(&st.1);
            }
            price.expect("came on the market in the period")
        };
        list_prices.push(end_price);
        if let Some(a) = l.sqft() {
            list_psf.push(end_price / a);
        }
        if end_price < start_price {
            drops += 1;
        }
    }
    let sales = sale_prices.len();
    let share = |part: usize, whole: usize| {
        (whole > 0).then(|| four(Decimal::from(part) / Decimal::from(whole)))
    };
    let mean = |v: &Vec<Decimal>| {
        (!v.is_empty()).then(|| four(v.iter().sum::<Decimal>() / Decimal::from(v.len())))
    };
    let count = |n: usize| Some(Decimal::from(n));
    BTreeMap::from([
        ("NewListings", count(new)),
        ("ActiveListings", count(active)),
        ("Inventory", count(inventory)),
        ("PendingSales", count(pending)),
        ("HomeSales", count(sales)),
        ("PriceChanges", count(changes)),
        ("MedianListPrice", median(list_prices).map(cents)),
        ("MedianListPricePerSqFt", median(list_psf).map(cents)),
        ("MedianSalePrice", median(sale_prices).map(cents)),
        ("MedianSalePricePerSqFt", median(sale_psf).map(cents)),
        ("MedianDaysOnMarket", median(dom)),
        ("SaleToListRatio", mean(&to_list)),
        ("SaleToOriginalListRatio", mean(&to_original)),
        ("SoldAboveList", share(above, sales)),
        ("PriceDrops", share(drops, active)),
        (
            "MonthsOfSupply",
            if monthly {
                share(inventory, sales)
            } else {
                None
            },
        ),
    ])
}

/// Every metrics row and series, as text, in order.
pub(crate) async fn metrics_checksum(pool: &PgPool) -> (i64, String) {
    sqlx::query_as(
        "SELECT count(*), md5(string_agg(m::text, '|' ORDER BY area_kind, area, property_type, period, period_start))
           FROM analytics.market_metrics m",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Waits until the worker has folded every stored event and recomputed every series.
pub(crate) async fn settled(pool: &PgPool) {
    settled_within(pool, EVENTUALLY).await;
}

/// [`settled`], waiting up to `within`.
pub(crate) async fn settled_within(pool: &PgPool, within: Duration) {
    eventually_within("the analytics worker never caught up with the event store", within, || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT NOT EXISTS (SELECT 1 FROM analytics.dirty_series)
                AND NOT EXISTS (SELECT 1 FROM analytics.dirty_marks)
                AND (SELECT count(*) FROM analytics.listing_facts f
                      WHERE f.version = (SELECT max(sequence) FROM events e WHERE e.aggregate_id = f.listing_key))
                    = (SELECT count(DISTINCT aggregate_id) FROM events)",
        )
        .fetch_one(pool)
        .await
        .unwrap_or(false)
    })
    .await;
}

fn period_starts(first: NaiveDate, today: NaiveDate, monthly: bool) -> Vec<NaiveDate> {
    let start = |date: NaiveDate| {
        if monthly {
            date.with_day(1).unwrap()
        } else {
            date - chrono::Days::new(u64::from(date.weekday().num_days_from_monday()))
        }
    };
    let mut starts = vec![start(first)];
    while let Some(next) = starts.last().map(|s| {
        if monthly {
            s.checked_add_months(chrono::Months::new(1)).unwrap()
        } else {
            *s + chrono::Days::new(7)
        }
    }) {
        if next > today {
            break;
        }
        starts.push(next);
    }
    starts
}

#[tokio::test]
async fn market_metrics_match_an_independent_day_by_day_computation() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    let pool = db.pool().await;
    seed_market(
        &pool,
        60,
        24,
        11,
        Utc.with_ymd_and_hms(2026, 6, 30, 0, 0, 0).unwrap(),
    )
    .await;
    edge_market(&app).await;
    settled(&pool).await;

    let models = models(&pool).await;
    assert_eq!(models.len(), 70);
    let today = Utc::now().date_naive();
    let mut series: BTreeMap<(String, String, String), Vec<&Model>> = BTreeMap::new();
    for model in models.values() {
        let mut areas = vec![("market", "All".to_owned())];
        areas.extend(model.areas.iter().cloned());
        for (kind, area) in areas {
            for property_type in [model.property_type.clone(), "All".to_owned()] {
                series
                    .entry((kind.to_owned(), area.clone(), property_type))
                    .or_default()
                    .push(model);
            }
        }
    }
    let listed = app
        .send(app.client.get(app.url("/api/v1/market/areas")))
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let listed: BTreeSet<(String, String, String)> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["AreaKind"].as_str().unwrap().to_owned(),
                i["Area"].as_str().unwrap().to_owned(),
                i["PropertyType"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        series.keys().cloned().collect::<BTreeSet<_>>(),
        "the areas listed"
    );

    let mut compared = 0;
    for ((kind, area, property_type), listings) in &series {
        let first = listings.iter().map(|l| l.first_date()).min().unwrap();
        for (period, monthly) in [("week", false), ("month", true)] {
            let reply = app
                .send(app.client.get(app.url("/api/v1/market/series")).query(&[
                    ("area_kind", kind.as_str()),
                    ("area", area.as_str()),
                    ("property_type", property_type.as_str()),
                    ("period", period),
                ]))
                .await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            let items = reply.body["items"].as_array().unwrap();
            let starts: Vec<NaiveDate> = items
                .iter()
                .map(|i| d(i["PeriodStart"].as_str().unwrap()))
                .collect();
            assert_eq!(
                starts,
                period_starts(first, today, monthly),
                "{kind} {area} {property_type} {period}: periods"
            );
            for item in items {
                let s = d(item["PeriodStart"].as_str().unwrap());
                let as_of = d(item["AsOf"].as_str().unwrap());
                let end = d(item["PeriodEnd"].as_str().unwrap());
                assert_eq!(as_of, end.min(today), "as-of date");
                let want = expected(listings, s, as_of, monthly);
                for (name, value) in want {
                    let got = item.get(name).filter(|v| !v.is_null()).map(decimal);
                    assert_eq!(
                        got.map(|g| g.normalize()),
                        value.map(|v| v.normalize()),
                        "{kind} {area} {property_type} {period} {s}: {name}"
                    );
                }
                compared += 1;
            }
        }
    }
    assert!(compared > 1000, "compared {compared} periods");

    // The edge cases really are in the data.
    let edge = app
        .send(app.client.get(app.url("/api/v1/market/series?area_kind=city&area=Edgeville&period=month&from=2025-04-01&to=2025-04-30")))
        .await;
    let april = &edge.body["items"][0];
    assert_eq!(april["HomeSales"], 4, "{april}");
    // edge-high (1.8) and edge-low (0.375) are outliers, left out of the mean.
    let kept = (Decimal::from(310) / Decimal::from(300) + Decimal::from(335) / Decimal::from(340))
        / Decimal::from(2);
    assert_eq!(decimal(&april["SaleToListRatio"]), four(kept), "{april}");

    // Law 1: a rebuild from the event store gives exactly what the live path computed.
    app.stop().await;
    let live = metrics_checksum(&pool).await;
    let rebuilt = keh_analytics::store::rebuild(&pool, today, 4, |_, _| {})
        .await
        .expect("rebuild");
    assert_eq!(rebuilt.listings, 70);
    assert_eq!(
        metrics_checksum(&pool).await,
        live,
        "rebuild differs from the live path"
    );
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}

/// Creates a few Springfield listings and waits until the market series has them.
async fn small_market(app: &TestApp, pool: &PgPool) {
    for (i, price) in [310_000, 290_000, 450_000].into_iter().enumerate() {
        app.create_listing(json!({
            "ListingKey": format!("small-{i}"), "StandardStatus": "Active",
            "PropertyType": "Residential", "ListPrice": price,
            "ListingContractDate": "2026-01-05", "OnMarketDate": "2026-01-05",
            "OriginalEntryTimestamp": at("2026-01-05"),
            "City": "Springfield", "PostalCode": "62701", "LivingArea": 1800,
        }))
        .await;
    }
    settled(pool).await;
}

/// A series recomputed moments ago waits `KEH_ANALYTICS_MIN_RECOMPUTE_INTERVAL_MS` before its
/// next recomputation, which then includes every change made meanwhile; a series quiet for
/// longer is recomputed at once.
#[tokio::test]
async fn a_series_is_recomputed_at_most_once_per_interval() {
    const INTERVAL: Duration = Duration::from_secs(6);
    let db = TestDb::create().await;
    let id = unique_id();
    let mut settings = settings(&db, &nats_url(), &id);
    settings.analytics_min_recompute_interval_ms = u64::try_from(INTERVAL.as_millis()).unwrap();
    let app = TestApp::spawn(settings, Roles::ALL).await;
    let pool = db.pool().await;
    let market = |pool: PgPool| async move {
        sqlx::query_as::<_, (DateTime<Utc>, i32)>(
            "SELECT computed_at, listings FROM analytics.series
              WHERE area_kind = 'market' AND property_type = 'All'",
        )
        .fetch_optional(&pool)
        .await
        .unwrap()
    };
    small_market(&app, &pool).await;
    let (first, listings) = market(pool.clone()).await.expect("market series");
    assert_eq!(listings, 3);

    app.create_listing(json!({
        "ListingKey": "small-late", "StandardStatus": "Active",
        "PropertyType": "Residential", "ListPrice": 333_000,
        "ListingContractDate": "2026-01-06", "OnMarketDate": "2026-01-06",
        "OriginalEntryTimestamp": at("2026-01-06"),
        "City": "Springfield", "PostalCode": "62701", "LivingArea": 1700,
    }))
    .await;
    eventually("the new listing's market facts", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM analytics.listing_facts")
            .fetch_one(&pool)
            .await
            .unwrap()
            == 4
    })
    .await;
    let waiting: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM analytics.dirty_series WHERE area_kind = 'market' AND property_type = 'All')
             OR EXISTS (SELECT 1 FROM analytics.dirty_marks WHERE area_kind = 'market' AND property_type = 'All')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let (unchanged, _) = market(pool.clone()).await.expect("market series");
    let since = (Utc::now() - first).to_std().unwrap_or_default();
    if since < INTERVAL - Duration::from_secs(1) {
        assert!(
            waiting,
            "the market series was recomputed {since:?} after the last time"
        );
        assert_eq!(unchanged, first);
    }
    settled(&pool).await;
    let (second, listings) = market(pool.clone()).await.expect("market series");
    assert_eq!(
        listings, 4,
        "the waiting change is in the next recomputation"
    );
    assert!(
        (second - first).to_std().unwrap_or_default() >= INTERVAL,
        "recomputed {:?} after the previous time, interval {INTERVAL:?}",
        second - first
    );
}

async fn report_status(app: &TestApp, location: &str) -> Value {
    let reply = app.send(app.client.get(app.url(location))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body
}

#[tokio::test]
async fn a_report_requested_before_a_worker_restart_completes_after_it() {
    let db = TestDb::create().await;
    let id = unique_id();
    let settings = settings(&db, &nats_url(), &id);
    let pool = db.pool().await;
    let everything = TestApp::spawn(settings.clone(), Roles::ALL).await;
    small_market(&everything, &pool).await;
    // The analytics worker dies (kill -9); the APIs stay up.
    everything.abort().await;
    let api = TestApp::spawn(
        settings.clone(),
        Roles {
            analytics: false,
            ..Roles::ALL
        },
    )
    .await;
    let requested = api
        .post(
            "/api/v1/market/reports",
            &json!({"AreaKind": "city", "Area": "Springfield", "PropertyType": "Residential",
                    "Period": "month", "From": "2026-01-01", "To": "2026-12-31"}),
        )
        .await;
    assert_eq!(requested.status, 202, "{}", requested.body);
    let location = requested.header("location").expect("Location").to_owned();
    assert_eq!(requested.body["Status"], "queued");
    let early = api
        .send(api.client.get(api.url(&format!("{location}/report.csv"))))
        .await;
    assert_eq!(early.status, 409, "{}", early.body);
    assert_eq!(early.body["type"], "/api/v1/problems/report-not-ready");

    // A second job was claimed by a worker that died mid-build: its lease has run out.
    let orphan = api
        .post(
            "/api/v1/market/reports",
            &json!({"Area": "All", "Period": "week", "From": "2026-01-01", "To": "2026-02-01"}),
        )
        .await;
    assert_eq!(orphan.status, 202, "{}", orphan.body);
    let orphan = orphan.header("location").expect("Location").to_owned();
    sqlx::query(
        "UPDATE analytics.reports SET status = 'running', attempts = 1, lease_until = now() - interval '1 second'
          WHERE report_id = $1",
    )
    .bind(uuid::Uuid::parse_str(orphan.rsplit('/').next().unwrap()).unwrap())
    .execute(&pool)
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(report_status(&api, &location).await["Status"], "queued");

    // The worker comes back.
    let worker = TestApp::spawn(
        settings.clone(),
        Roles {
            analytics: true,
            ..Roles::NONE
        },
    )
    .await;
    for location in [&location, &orphan] {
        eventually("the report is built after the restart", || async {
            report_status(&api, location).await["Status"] == "done"
        })
        .await;
    }
    let job = report_status(&api, &location).await;
    assert_eq!(job["Downloads"]["csv"], format!("{location}/report.csv"));
    assert_eq!(report_status(&api, &orphan).await["Attempts"], 2);

    let json_file = api
        .send(api.client.get(api.url(&format!("{location}/report.json"))))
        .await;
    assert_eq!(json_file.status, 200, "{}", json_file.body);
    let series = api
        .send(api.client.get(api.url(
            "/api/v1/market/series?area_kind=city&area=Springfield&property_type=Residential&period=month&from=2026-01-01&to=2026-12-31",
        )))
        .await;
    assert_eq!(
        json_file.body["Items"], series.body["items"],
        "the report holds the series"
    );
    assert_eq!(json_file.body["Items"][0]["NewListings"], 3);

    let csv = api
        .client
        .get(api.url(&format!("{location}/report.csv")))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(
        csv.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    let csv = csv.text().await.unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[..3], ["PeriodStart", "PeriodEnd", "AsOf"]);
    let january: Vec<&str> = lines.next().unwrap().split(',').collect();
    let column = |name: &str| january[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(column("PeriodStart"), "2026-01-01");
    assert_eq!(column("NewListings"), "3");
    assert_eq!(column("MedianListPrice"), "310000");
    assert_eq!(
        lines.count() + 1,
        json_file.body["Items"].as_array().unwrap().len()
    );

    // Business figures for Prometheus.
    eventually("business metrics are published", || async {
        let text = worker
            .client
            .get(worker.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.contains("keh_market_active_inventory{area=\"Springfield\",area_kind=\"city\"} 3")
            && text.contains("keh_market_active_inventory{area=\"All\",area_kind=\"market\"} 3")
    })
    .await;
    worker.stop().await;
    api.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}

#[tokio::test]
async fn bad_market_requests_get_problem_json() {
    use crate::bad_input::{Case, answer_mismatch, case};
    use reqwest::Method;
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    let pool = db.pool().await;
    small_market(&app, &pool).await;
    let get = |name, path: &str, status, kind, field| Case {
        content_type: None,
        ..case(name, Method::GET, path, Value::Null, status, kind, field)
    };
    let series = "/api/v1/market/series";
    let reports = "/api/v1/market/reports";
    let report = |body: Value, name, status, kind, field| {
        case(name, Method::POST, reports, body, status, kind, field)
    };
    let q = "invalid-query-parameter";
    let mut cases = vec![
        get(
            "unknown area kind",
            &format!("{series}?area_kind=galaxy"),
            400,
            q,
            Some("area_kind"),
        ),
        get(
            "city without area",
            &format!("{series}?area_kind=city"),
            400,
            q,
            Some("area"),
        ),
        get(
            "area for the whole market",
            &format!("{series}?area=Springfield"),
            400,
            q,
            Some("area"),
        ),
        get(
            "unknown period",
            &format!("{series}?period=day"),
            400,
            q,
            Some("period"),
        ),
        get(
            "impossible date",
            &format!("{series}?from=2025-13-01"),
            400,
            q,
            Some("from"),
        ),
        get(
            "range backwards",
            &format!("{series}?from=2026-02-01&to=2026-01-01"),
            400,
            q,
            Some("from"),
        ),
        get(
            "range too long",
            &format!("{series}?from=1900-01-01&to=2026-01-01"),
            400,
            q,
            Some("to"),
        ),
        get(
            "unknown property type",
            &format!("{series}?property_type=Castle"),
            400,
            q,
            Some("property_type"),
        ),
        get(
            "misspelt parameter",
            &format!("{series}?areakind=city"),
            400,
            q,
            Some("areakind"),
        ),
        get(
            "repeated parameter",
            &format!("{series}?period=week&period=month"),
            400,
            q,
            Some("period"),
        ),
        get(
            "unknown area",
            &format!("{series}?area_kind=city&area=Atlantis"),
            404,
            "not-found",
            Some("area"),
        ),
        get(
            "summary of an unknown area",
            "/api/v1/market/summary?area_kind=subdivision&area=Nowhere",
            404,
            "not-found",
            Some("area"),
        ),
        get(
            "areas of an unknown kind",
            "/api/v1/market/areas?area_kind=planet",
            400,
            q,
            Some("area_kind"),
        ),
        get(
            "report id not a UUID",
            &format!("{reports}/12345"),
            400,
            "invalid-path-parameter",
            Some("ReportId"),
        ),
        get(
            "unknown report",
            &format!("{reports}/{}", uuid::Uuid::new_v4()),
            404,
            "not-found",
            None,
        ),
        get(
            "download of an unknown report",
            &format!("{reports}/{}/report.json", uuid::Uuid::new_v4()),
            404,
            "not-found",
            None,
        ),
        report(
            json!({"Area": "All", "From": "2026-01-01"}),
            "report without To",
            422,
            "validation",
            Some("To"),
        ),
        report(
            json!({"Area": "All", "From": "2026-02-01", "To": "2026-01-01"}),
            "report range backwards",
            422,
            "validation",
            Some("From"),
        ),
        report(
            json!({"Area": "All", "From": "2026-01-01", "To": "2026-02-01", "Period": "year"}),
            "report period unknown",
            422,
            "validation",
            Some("Period"),
        ),
        report(
            json!({"From": "2026-01-01", "To": "2026-02-01", "AreaKind": "city", "Area": "Atlantis"}),
            "report of an unknown area",
            422,
            "validation",
            Some("Area"),
        ),
        report(
            json!({"Area": "All", "From": "2026-01-01", "To": "2026-02-01", "Colour": "red"}),
            "report with an unknown field",
            422,
            "validation",
            None,
        ),
        report(
            json!({"From": "01/02/2026", "To": "2026-02-01"}),
            "report date in another format",
            422,
            "validation",
            Some("From"),
        ),
    ];
    cases.push(Case {
        content_type: Some("text/csv"),
        ..report(
            json!({"Area": "All", "From": "2026-01-01", "To": "2026-02-01"}),
            "report as CSV",
            415,
            "unsupported-media-type",
            None,
        )
    });
    cases.push(Case {
        body: "{\"From\": ".to_owned(),
        ..report(
            Value::Null,
            "report malformed JSON",
            400,
            "malformed-json",
            None,
        )
    });
    let mut failures = Vec::new();
    for case in &cases {
        if let Some(failure) = answer_mismatch(&app, case).await {
            failures.push(failure);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM analytics.reports")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0, "no refused request queued a report");
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}
