//! The market metrics of one series (area × property type) over a run of periods, from the
//! market facts of its listings. Pure: no I/O, no clock (the caller says what "today" is).
//!
//! Definitions (`docs/market.md` states them for API users):
//! - a listing is *active* in a period when one of its active spells (Active or Active Under
//!   Contract, from the day it became active to the day it left, both included) overlaps
//!   the period up to its as-of date (the period's last day, or today for the period in
//!   progress); *inventory* counts listings active at the end of the as-of date;
//! - its *period-end price* is its list price at the end of the as-of date, or when it left
//!   the market in the period; its *period-start price* the one at the end of the day before
//!   the period, or when it came on the market in the period.

use chrono::{Datelike, Days, NaiveDate};
use rust_decimal::{Decimal, RoundingStrategy};

use crate::facts::{MarketFacts, Step, is_active};

/// The length of a period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Grain {
    /// ISO weeks, Monday to Sunday.
    Week,
    /// Calendar months.
    Month,
}

impl Grain {
    pub const ALL: [Self; 2] = [Self::Week, Self::Month];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Week => "week",
            Self::Month => "month",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == value)
    }

    /// The first day of the period holding `date`.
    pub fn start_of(self, date: NaiveDate) -> NaiveDate {
        match self {
            Self::Week => date - Days::new(u64::from(date.weekday().num_days_from_monday())),
            Self::Month => date.with_day(1).unwrap_or(date),
        }
    }

    /// The first day of the period after the one starting at `start`.
    pub fn next(self, start: NaiveDate) -> NaiveDate {
        match self {
            Self::Week => start + Days::new(7),
            Self::Month => start
                .checked_add_months(chrono::Months::new(1))
                .unwrap_or(NaiveDate::MAX),
        }
    }

    /// The last day of the period starting at `start`.
    pub fn end_of(self, start: NaiveDate) -> NaiveDate {
        self.next(start).pred_opt().unwrap_or(start)
    }
}

/// One period's figures. Medians and means are `None` when nothing qualifies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeriodMetrics {
    pub period_start: NaiveDate,
    pub period_end: NaiveDate,
    /// The figures hold as of the end of this day (the period's last day, or today).
    pub as_of: NaiveDate,
    pub new_listings: i64,
    pub active_listings: i64,
    pub inventory: i64,
    pub pending_sales: i64,
    pub home_sales: i64,
    pub price_changes: i64,
    pub median_list_price: Option<Decimal>,
    pub median_list_price_per_sqft: Option<Decimal>,
    pub median_sale_price: Option<Decimal>,
    pub median_sale_price_per_sqft: Option<Decimal>,
    pub median_days_on_market: Option<Decimal>,
    pub sale_to_list_ratio: Option<Decimal>,
    pub sale_to_original_list_ratio: Option<Decimal>,
    pub sold_above_list: Option<Decimal>,
    pub price_drops: Option<Decimal>,
    pub months_of_supply: Option<Decimal>,
}

/// Accumulates one period.
#[derive(Default)]
struct Tally {
    new_listings: i64,
    active: i64,
    inventory: i64,
    pending: i64,
    price_changes: i64,
    list_prices: Vec<Decimal>,
    list_per_sqft: Vec<Decimal>,
    sale_prices: Vec<Decimal>,
    sale_per_sqft: Vec<Decimal>,
    days_on_market: Vec<Decimal>,
    sale_to_list: Vec<Decimal>,
    sale_to_original: Vec<Decimal>,
    sold_above: i64,
    drops: i64,
}

/// Computes `grain` periods from the one holding `from` through the one holding `today`.
/// `listings` must hold every listing of the series that can touch those periods.
pub fn compute<'a>(
    listings: impl IntoIterator<Item = &'a MarketFacts>,
    grain: Grain,
    from: NaiveDate,
    today: NaiveDate,
) -> Vec<PeriodMetrics> {
    let mut starts = Vec::new();
    let mut start = grain.start_of(from);
    let last = grain.start_of(today);
    while start <= last {
        starts.push(start);
        start = grain.next(start);
    }
    let mut tallies: Vec<Tally> = starts.iter().map(|_| Tally::default()).collect();
    let index_of = |date: NaiveDate| starts.partition_point(|s| *s <= date).checked_sub(1);
    for listing in listings {
        let first = listing.first_date();
        let last = listing.last_date().unwrap_or(today).min(today);
        if last < first {
            continue;
        }
        let lo = index_of(first).unwrap_or(0);
        let Some(hi) = index_of(last) else { continue };
        for i in lo..=hi {
            let s = starts[i];
            let e = grain.end_of(s).min(today);
            tally(listing, s, e, &mut tallies[i]);
        }
    }
    starts
        .iter()
        .zip(tallies)
        .map(|(&s, t)| finish(grain, s, today, t))
        .collect()
}

fn within(date: NaiveDate, s: NaiveDate, e: NaiveDate) -> bool {
    s <= date && date <= e
}

/// The timeline's spells of activity: `(first step, step that ended it)`.
fn spells(timeline: &[Step]) -> Vec<(usize, Option<usize>)> {
    let mut spells = Vec::new();
    let mut open: Option<usize> = None;
    for (i, step) in timeline.iter().enumerate() {
        match (open, is_active(step.status)) {
            (None, true) => open = Some(i),
            (Some(a), false) => {
                spells.push((a, Some(i)));
                open = None;
            }
            _ => {}
        }
    }
    if let Some(a) = open {
        spells.push((a, None));
    }
    spells
}

/// The step in force at the end of `day`.
fn at_end_of(timeline: &[Step], day: NaiveDate) -> Option<&Step> {
    timeline.iter().take_while(|s| s.date <= day).last()
}

fn tally(listing: &MarketFacts, s: NaiveDate, e: NaiveDate, t: &mut Tally) {
    let timeline = &listing.timeline;
    if listing.on_market_date.is_some_and(|d| within(d, s, e)) {
        t.new_listings += 1;
    }
    if listing.contracts.iter().any(|d| within(*d, s, e)) {
        t.pending += 1;
    }
    t.price_changes += timeline
        .windows(2)
        .filter(|w| within(w[1].date, s, e))
        .map(|w| i64::from(w[1].price_changes(&w[0])))
        .sum::<i64>();
    if let Some(exit) = listing.first_exit_date.filter(|d| within(*d, s, e)) {
        let start = listing
            .on_market_date
            .filter(|d| *d <= exit)
            .unwrap_or(listing.listing_contract_date);
        let days = (exit - start).num_days().max(0);
        t.days_on_market.push(Decimal::from(days));
    }
    let sqft = listing.living_area_sqft();
    if let (Some(close_price), Some(close_date)) = (listing.close_price, listing.close_date)
        && listing.status() == keh_events::reso::StandardStatus::Closed
        && within(close_date, s, e)
    {
        let list = listing.price();
        t.sale_prices.push(close_price);
        if let Some(per) = sqft.and_then(|a| close_price.checked_div(a)) {
            t.sale_per_sqft.push(per);
        }
        if close_price > list {
            t.sold_above += 1;
        }
        for (base, ratios) in [
            (list, &mut t.sale_to_list),
            (listing.original_list_price, &mut t.sale_to_original),
        ] {
            if let Some(ratio) = close_price.checked_div(base)
                && (ratio - Decimal::ONE).abs() < Decimal::new(5, 1)
            {
                ratios.push(ratio);
            }
        }
    }
    if at_end_of(timeline, e).is_some_and(|step| is_active(step.status)) {
        t.inventory += 1;
    }
    let overlapping: Vec<(usize, Option<usize>)> = spells(timeline)
        .into_iter()
        .filter(|(a, b)| timeline[*a].date <= e && b.is_none_or(|b| timeline[b].date >= s))
        .collect();
    let (Some(&(a, _)), Some(&(_, b))) = (overlapping.first(), overlapping.last()) else {
        return;
    };
    t.active += 1;
    let start_price = if timeline[a].date < s {
        s.pred_opt()
            .and_then(|day| at_end_of(timeline, day))
            .map_or(timeline[a].price, |step| step.price)
    } else {
        timeline[a].price
    };
    let end_price = match b {
        Some(b) if timeline[b].date <= e => timeline[b - 1].price,
        _ => at_end_of(timeline, e).map_or(timeline[a].price, |step| step.price),
    };
    t.list_prices.push(end_price);
    if let Some(per) = sqft.and_then(|a| end_price.checked_div(a)) {
        t.list_per_sqft.push(per);
    }
    if end_price < start_price {
        t.drops += 1;
    }
}

fn money(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven)
}

fn ratio(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(4, RoundingStrategy::MidpointNearestEven)
}

/// Exact median: the middle value, or the mean of the two middle values.
fn median(mut values: Vec<Decimal>) -> Option<Decimal> {
    values.sort_unstable();
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / Decimal::TWO),
    }
}

fn mean(values: &[Decimal]) -> Option<Decimal> {
    let sum: Decimal = values.iter().sum();
    sum.checked_div(Decimal::from(values.len()))
}

fn share(part: i64, whole: i64) -> Option<Decimal> {
    Decimal::from(part)
        .checked_div(Decimal::from(whole))
        .map(ratio)
}

fn finish(grain: Grain, s: NaiveDate, today: NaiveDate, t: Tally) -> PeriodMetrics {
    let period_end = grain.end_of(s);
    let home_sales = i64::try_from(t.sale_prices.len()).unwrap_or(0);
    PeriodMetrics {
        period_start: s,
        period_end,
        as_of: period_end.min(today),
        new_listings: t.new_listings,
        active_listings: t.active,
        inventory: t.inventory,
        pending_sales: t.pending,
        home_sales,
        price_changes: t.price_changes,
        median_list_price: median(t.list_prices).map(money),
        median_list_price_per_sqft: median(t.list_per_sqft).map(money),
        median_sale_price: median(t.sale_prices).map(money),
        median_sale_price_per_sqft: median(t.sale_per_sqft).map(money),
        median_days_on_market: median(t.days_on_market).map(|d| d.round_dp(1)),
        sale_to_list_ratio: mean(&t.sale_to_list).map(ratio),
        sale_to_original_list_ratio: mean(&t.sale_to_original).map(ratio),
        sold_above_list: share(t.sold_above, home_sales),
        price_drops: share(t.drops, t.active),
        months_of_supply: match grain {
            Grain::Month => share(t.inventory, home_sales),
            Grain::Week => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap_or(NaiveDate::MIN)
    }

    #[test]
    fn periods_are_iso_weeks_and_calendar_months() {
        // 2026-11-26 is a Thursday.
        assert_eq!(Grain::Week.start_of(day("2026-11-26")), day("2026-11-23"));
        assert_eq!(Grain::Week.end_of(day("2026-11-23")), day("2026-11-29"));
        assert_eq!(Grain::Month.start_of(day("2026-02-14")), day("2026-02-01"));
        assert_eq!(Grain::Month.end_of(day("2024-02-01")), day("2024-02-29"));
        assert_eq!(Grain::Month.next(day("2026-12-01")), day("2027-01-01"));
    }

    #[test]
    fn medians_are_exact_and_even_counts_take_the_mean_of_the_middle_two() {
        let d = |v: i64| Decimal::from(v);
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![d(3), d(1), d(2)]), Some(d(2)));
        assert_eq!(
            median(vec![d(4), d(1), d(2), d(3)]),
            Some(Decimal::new(25, 1))
        );
        // Half a cent rounds to even.
        assert_eq!(money(Decimal::new(100_005, 3)), Decimal::new(10_000, 2));
        assert_eq!(money(Decimal::new(100_015, 3)), Decimal::new(10_002, 2));
    }
}
