//! What the load consists of: new listings, the search mix, and the command mix over a
//! working set of listings (price changes, status changes, detail edits), deterministic
//! from the seed.

use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

const CITIES: &[(&str, &str, f64, f64, u64)] = &[
    // city, postal prefix, latitude, longitude, price level (percent)
    ("Springfield", "627", 39.78, -89.65, 100),
    ("Shelbyville", "624", 39.41, -88.79, 80),
    ("Capital City", "606", 41.88, -87.63, 190),
    ("Ogdenville", "617", 40.11, -88.24, 90),
    ("North Haverbrook", "618", 38.63, -90.20, 70),
    ("Brockway", "619", 37.73, -89.22, 60),
];
const TYPES: &[(&str, f64)] = &[
    ("Residential", 0.7),
    ("Land", 0.1),
    ("Residential Income", 0.1),
    ("Commercial Sale", 0.1),
];
const WORDS: &[&str] = &[
    "sunny",
    "renovated",
    "garden",
    "lake",
    "quiet",
    "garage",
    "pool",
    "corner",
    "views",
    "modern",
];

/// A new listing: a realistic spread of cities, types, prices and sizes.
pub fn listing(rng: &mut StdRng) -> Value {
    let (city, postal, lat, lon, level) = CITIES[rng.random_range(0..CITIES.len())];
    let roll: f64 = rng.random();
    let mut acc = 0.0;
    let kind = TYPES
        .iter()
        .find(|(_, share)| {
            acc += share;
            roll < acc
        })
        .map_or("Residential", |t| t.0);
    let beds = rng.random_range(1..6);
    let area: u64 = rng.random_range(60..400) * 10;
    // About 180 per square foot at level 100, give or take 30%, rounded to hundreds.
    let price = (area * 180 * level / 100 * rng.random_range(70..130) / 100 / 100 * 100).max(1000);
    let remarks: Vec<&str> = (0..4)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect();
    json!({
        "PropertyType": kind,
        "ListPrice": price,
        "City": city,
        "PostalCode": format!("{postal}{:02}", rng.random_range(0..40)),
        "BedroomsTotal": beds,
        "BathroomsTotalInteger": rng.random_range(1..=beds.min(4)),
        "LivingArea": area,
        "LivingAreaUnits": "Square Feet",
        "Latitude": serde_json::from_str::<Value>(&format!("{:.6}", lat + rng.random_range(-0.1..0.1))).unwrap_or(Value::Null),
        "Longitude": serde_json::from_str::<Value>(&format!("{:.6}", lon + rng.random_range(-0.1..0.1))).unwrap_or(Value::Null),
        "UnparsedAddress": format!("{} {} Street", rng.random_range(1..9999), ["Elm", "Oak", "Maple", "Main", "Lake"][rng.random_range(0..5)]),
        "PublicRemarks": remarks.join(" "),
    })
}

/// A search of the mix: city, price band, postal code, full text, map box, type, newest.
pub fn search_query(rng: &mut StdRng) -> String {
    let (city, postal, lat, lon, _) = CITIES[rng.random_range(0..CITIES.len())];
    match rng.random_range(0..7) {
        0 => format!(
            "/api/v1/listings?city={}&limit=20",
            city.replace(' ', "%20")
        ),
        1 => format!(
            "/api/v1/listings?status=Active&min_price={}&max_price={}&sort=ListPrice&limit=20",
            rng.random_range(1..4) * 100_000,
            rng.random_range(4..9) * 100_000
        ),
        2 => format!(
            "/api/v1/listings?postal_code={postal}{:02}&min_beds=3",
            rng.random_range(0..40)
        ),
        3 => format!(
            "/api/v1/listings?q={}&limit=20",
            WORDS[rng.random_range(0..WORDS.len())]
        ),
        4 => format!(
            "/api/v1/listings?bbox={:.3},{:.3},{:.3},{:.3}&limit=50",
            lon - 0.02,
            lat - 0.02,
            lon + 0.02,
            lat + 0.02
        ),
        5 => "/api/v1/listings?property_type=Land&min_area=1000&max_area=2500&sort=-ListPrice"
            .to_owned(),
        _ => "/api/v1/listings?limit=20".to_owned(),
    }
}

/// An operation of the command mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    PriceChange,
    StatusChange,
    DetailEdit,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::PriceChange => "price-change",
            Self::StatusChange => "status-change",
            Self::DetailEdit => "detail-edit",
        }
    }

    /// The mix: one create for four changes of existing listings (a market where most
    /// traffic is agents maintaining what they list).
    pub fn pick(rng: &mut StdRng) -> Self {
        match rng.random_range(0..100) {
            0..20 => Self::Create,
            20..50 => Self::PriceChange,
            50..70 => Self::StatusChange,
            _ => Self::DetailEdit,
        }
    }
}

/// A listing of the working set as the load generator last left it.
#[derive(Clone, Debug)]
pub struct Tracked {
    pub key: String,
    pub price: u64,
    /// Active (may go under contract) or Pending (may come back on market).
    pub pending: bool,
}

/// The request of `operation` on `listing` (unused for creates): method, path, body.
pub fn command(
    operation: Operation,
    listing: &Tracked,
    rng: &mut StdRng,
) -> (reqwest::Method, String, Value) {
    let path = |suffix: &str| format!("/api/v1/listings/{}{suffix}", listing.key);
    match operation {
        Operation::Create => (
            reqwest::Method::POST,
            "/api/v1/listings".to_owned(),
            self::listing(rng),
        ),
        Operation::PriceChange => {
            // Mostly reductions, like a real market; never below 1,000.
            let percent = rng.random_range(90..104);
            let price = (listing.price * percent / 100 / 100 * 100).max(1000);
            let price = if price == listing.price {
                price + 100
            } else {
                price
            };
            (
                reqwest::Method::POST,
                path("/price"),
                json!({ "ListPrice": price }),
            )
        }
        Operation::StatusChange => {
            let status = if listing.pending { "Active" } else { "Pending" };
            (
                reqwest::Method::POST,
                path("/status"),
                json!({ "StandardStatus": status }),
            )
        }
        Operation::DetailEdit => (
            reqwest::Method::PATCH,
            path(""),
            json!({
                "PublicRemarks": format!(
                    "{} {} {}",
                    WORDS[rng.random_range(0..WORDS.len())],
                    WORDS[rng.random_range(0..WORDS.len())],
                    WORDS[rng.random_range(0..WORDS.len())]
                ),
                "BedroomsTotal": rng.random_range(1..6),
            }),
        ),
    }
}

/// A JSON price (`250000`, `250000.00`) in whole currency units.
pub fn whole_price(value: &Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.to_string().split('.').next()?.parse().ok())
}

/// What a successful command changed in the tracked listing.
pub fn after(operation: Operation, listing: &mut Tracked, body: &Value) {
    match operation {
        Operation::PriceChange => {
            if let Some(price) = body.get("ListPrice").and_then(whole_price) {
                listing.price = price;
            }
        }
        Operation::StatusChange => listing.pending = !listing.pending,
        Operation::Create | Operation::DetailEdit => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_mix_is_deterministic_and_covers_every_operation() {
        let mut a = StdRng::seed_from_u64(7);
        let mut b = StdRng::seed_from_u64(7);
        let picks: Vec<_> = (0..1000).map(|_| Operation::pick(&mut a)).collect();
        assert_eq!(
            picks,
            (0..1000)
                .map(|_| Operation::pick(&mut b))
                .collect::<Vec<_>>()
        );
        for op in [
            Operation::Create,
            Operation::PriceChange,
            Operation::StatusChange,
            Operation::DetailEdit,
        ] {
            let n = picks.iter().filter(|p| **p == op).count();
            assert!(n > 100, "{op:?} picked {n} times");
        }
    }

    #[test]
    fn status_changes_alternate_between_active_and_pending() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut listing = Tracked {
            key: "k".into(),
            price: 250_000,
            pending: false,
        };
        let (_, path, body) = command(Operation::StatusChange, &listing, &mut rng);
        assert_eq!(path, "/api/v1/listings/k/status");
        assert_eq!(body["StandardStatus"], "Pending");
        after(Operation::StatusChange, &mut listing, &Value::Null);
        let (_, _, body) = command(Operation::StatusChange, &listing, &mut rng);
        assert_eq!(body["StandardStatus"], "Active");
        for _ in 0..100 {
            let (_, _, body) = command(Operation::PriceChange, &listing, &mut rng);
            let price = body["ListPrice"].as_u64().unwrap_or_default();
            assert!(price >= 1000 && price != listing.price);
        }
    }
}
