//! The demo market goes through the command path and shows up in the query API.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use kubeestatehub::Roles;
use kubeestatehub::seed::{self, SeedPlan};

use crate::harness::*;

#[tokio::test]
async fn the_seeded_market_is_projected_and_a_rerun_adds_nothing() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    let plan = SeedPlan {
        listings: 40,
        months: 24,
        seed: 3,
        until: chrono::Utc.with_ymd_and_hms(2026, 6, 30, 0, 0, 0).unwrap(),
    };
    let store = Arc::new(keh_store::Store::new(db.pool().await, 10));
    let first = seed::run(Arc::clone(&store), seed::plan(plan), 4, |_| {})
        .await
        .expect("seed");
    assert_eq!((first.listings, first.skipped), (40, 0));
    assert!(
        first.events > 80,
        "lifecycles, not just creations: {first:?}"
    );

    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    loop {
        let reply = app
            .send(
                app.client
                    .get(app.url("/api/v1/listings?count=true&limit=1")),
            )
            .await;
        if reply.body["totalCount"] == 40 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "seeded market not projected: {}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closed = app
        .send(
            app.client
                .get(app.url("/api/v1/listings?status=Closed&count=true")),
        )
        .await;
    assert!(
        closed.body["totalCount"].as_i64().unwrap_or(0) > 0,
        "{}",
        closed.body
    );
    let history = app
        .send(
            app.client
                .get(app.url("/api/v1/listings/seed-3-0000000/history")),
        )
        .await;
    let items = history.body["items"].as_array().expect("history");
    assert_eq!(items[0]["Actor"], "system:seed");
    assert!(
        items[0]["EffectiveAt"].as_str().unwrap_or_default() < "2026-07-01",
        "back-dated"
    );

    let again = seed::run(store, seed::plan(plan), 4, |_| {})
        .await
        .expect("seed again");
    assert_eq!((again.listings, again.skipped, again.events), (0, 40, 0));
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}
