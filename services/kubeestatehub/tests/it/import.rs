//! Import: historical rows become the events that lead there; bad rows are reported, good
//! ones imported; a re-import appends nothing.

use std::collections::BTreeSet;
use std::sync::Arc;

use kubeestatehub::import;

use crate::harness::*;

const FILE: &[u8] = b"ListingKey,ListingId,StandardStatus,PropertyType,ListPrice,OriginalListPrice,ListingContractDate,PurchaseContractDate,CloseDate,ClosePrice,WithdrawnDate,City,BedroomsTotal,Notes
IMP-1,MLS-I1,Closed,Residential,410000,425000,2025-03-01,2025-04-10,2025-05-20,405000.50,,Springfield,3,first
IMP-2,MLS-I2,Active,Residential,300000,,2026-01-15,,,,,Shelbyville,,
IMP-3,MLS-I3,Withdrawn,Land,90000,,2025-06-01,,,,2025-09-01,Ogdenville,,
IMP-4,MLS-I4,Active,Residential,12x,,2026-01-15,,,,,Springfield,,bad number
IMP-5,MLS-I5,Sold,Residential,200000,,2026-01-15,,,,,Springfield,,unknown status
,MLS-I6,Active,Residential,200000,,2026-01-15,,,,,Springfield,,missing key
IMP-7,MLS-I7,Active,Residential,200000,,2026-01-15,,,,,Caf\xe9 City,,wrong encoding
IMP-2,MLS-I2,Active,Residential,300000,,2026-01-15,,,,,Shelbyville,,duplicate row
IMP-8,MLS-I8,Closed,Residential,200000,,2026-01-15,,,,,Springfield,,closed without price
";

#[tokio::test]
async fn a_malformed_file_reports_each_bad_row_and_imports_the_rest() {
    let db = TestDb::create().await;
    let pool = db.pool().await;
    keh_store::migrate(&pool).await.expect("migrate");
    let store = Arc::new(keh_store::Store::new(pool.clone(), 10));
    let mut ignored = BTreeSet::new();
    let report = import::run(Arc::clone(&store), import::read(FILE, &mut ignored), || {})
        .await
        .expect("import");
    assert_eq!(ignored.into_iter().collect::<Vec<_>>(), ["Notes"]);
    let failed: Vec<(usize, String)> = report
        .failed
        .iter()
        .map(|f| (f.line, f.message.clone()))
        .collect();
    let lines: Vec<usize> = failed.iter().map(|f| f.0).collect();
    assert_eq!(lines, [5, 6, 7, 8, 9, 10], "{failed:#?}");
    assert!(failed[0].1.contains("ListPrice"), "{}", failed[0].1);
    assert!(failed[1].1.contains("StandardStatus"), "{}", failed[1].1);
    assert!(failed[2].1.contains("ListingKey"), "{}", failed[2].1);
    assert!(failed[3].1.contains("UTF-8"), "{}", failed[3].1);
    assert!(failed[4].1.contains("repeats line 3"), "{}", failed[4].1);
    assert!(failed[5].1.contains("ClosePrice"), "{}", failed[5].1);
    assert_eq!(report.changed, 3, "IMP-1, IMP-2 and IMP-3");
    let partial: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = 'IMP-8'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(partial, 0, "a row refused half-way appends nothing");

    // The closed sale: created at the original price, reduced, pending, closed, on its dates.
    let history: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT event_type, payload->'Data'->>'StandardStatus', coalesce(payload->'Data'->>'StatusChangeTimestamp', payload->'Data'->>'PriceChangeTimestamp', payload->'Data'->>'OriginalEntryTimestamp')
           FROM events WHERE aggregate_id = 'IMP-1' ORDER BY sequence",
    )
    .fetch_all(&pool)
    .await
    .expect("history")
    .into_iter()
    .map(|(t, s, at): (String, Option<String>, String)| (t, s.unwrap_or_default(), at[..10].to_owned()))
    .collect();
    assert_eq!(
        history,
        [
            (
                "ListingCreated".into(),
                "Active".into(),
                "2025-03-01".into()
            ),
            (
                "ListingPriceChanged".into(),
                String::new(),
                "2025-04-09".into()
            ),
            (
                "ListingStatusChanged".into(),
                "Pending".into(),
                "2025-04-10".into()
            ),
            (
                "ListingStatusChanged".into(),
                "Closed".into(),
                "2025-05-20".into()
            ),
        ]
    );
    let listing = store.load("IMP-1").await.expect("load");
    let state = listing.state().expect("state");
    assert_eq!(
        state.close_price.map(|p| p.get().to_string()),
        Some("405000.5".into())
    );
    assert_eq!(state.original_list_price.get().to_string(), "425000");

    // Nothing is lost: importing again appends nothing and reports the same bad rows.
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .expect("count");
    let mut ignored = BTreeSet::new();
    let again = import::run(store, import::read(FILE, &mut ignored), || {})
        .await
        .expect("import again");
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(before, after, "a re-import appends nothing");
    assert_eq!(again.events, 0);
    assert_eq!(again.unchanged, 3);
    assert_eq!(again.failed.len(), 6);
    pool.close().await;
}

#[tokio::test]
async fn json_lines_update_existing_listings_with_what_changed() {
    let db = TestDb::create().await;
    let pool = db.pool().await;
    keh_store::migrate(&pool).await.expect("migrate");
    let store = Arc::new(keh_store::Store::new(pool.clone(), 10));
    let first = br#"{"ListingKey":"J-1","PropertyType":"Residential","ListPrice":250000,"ListingContractDate":"2026-02-01","City":"Springfield"}"#;
    let mut ignored = BTreeSet::new();
    let report = import::run(Arc::clone(&store), import::read(first, &mut ignored), || {})
        .await
        .expect("import");
    assert_eq!((report.changed, report.events), (1, 1));
    // Later file: a price cut, a new detail, and a status change; empty fields stay as they are.
    let second = br#"{"ListingKey":"J-1","ListPrice":240000,"BedroomsTotal":4,"StandardStatus":"Pending","PurchaseContractDate":"2026-03-01"}"#;
    let report = import::run(
        Arc::clone(&store),
        import::read(second, &mut ignored),
        || {},
    )
    .await
    .expect("import");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.events, 3, "details, price, status");
    let listing = store.load("J-1").await.expect("load");
    let state = listing.state().expect("state");
    assert_eq!(state.standard_status.as_str(), "Pending");
    assert_eq!(state.list_price.get().to_string(), "240000");
    assert_eq!(
        state.details.city.as_ref().map(|c| c.as_str()),
        Some("Springfield")
    );
    assert_eq!(state.details.bedrooms_total.map(|b| b.get()), Some(4));
    pool.close().await;
}
