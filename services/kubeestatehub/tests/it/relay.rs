//! The relay's guarantees: nothing lost while NATS is down, nothing rolled back published,
//! nothing skipped behind an in-flight transaction, one active relay at a time.

use std::time::Duration;

use futures::future::join_all;
use keh_events::listing::{ListingCreated, ListingDetails, ListingEvent};
use keh_events::reso::{Price, PropertyType, StandardStatus};
use kubeestatehub::Roles;
use serde_json::json;
use sqlx::{Connection, PgConnection};

use crate::harness::*;

fn body(i: usize) -> serde_json::Value {
    json!({"PropertyType": "Residential", "ListPrice": 200000 + i, "City": "Shelbyville"})
}

#[tokio::test]
async fn events_accepted_while_nats_is_down_are_published_in_order_after_it_returns() {
    let db = TestDb::create().await;
    let mut nats = PrivateNats::start().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats.url(), &id), Roles::ALL).await;
    let first = app.create_listing(body(0)).await;
    wait_for_stream(&nats.url(), &app.settings.stream, 1).await;

    nats.kill();
    // Commands keep being accepted: the command API needs PostgreSQL only.
    let ready = app
        .send(app.client.get(app.url("/api/v1/health/ready")))
        .await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let mut keys = vec![first];
    for i in 1..6 {
        keys.push(app.create_listing(body(i)).await);
    }
    for round in 0..3 {
        let changes = keys.iter().map(|key| {
            let request = app
                .client
                .post(app.url(&format!("/api/v1/listings/{key}/price")))
                .json(&json!({"ListPrice": 150000 + round}));
            app.send(request)
        });
        for reply in join_all(changes).await {
            assert_eq!(reply.status, 200, "{}", reply.body);
        }
    }
    // The outage shows on /metrics: the backlog grows and ages while NATS is away.
    let lane = format!("stream=\"{}\"", app.settings.stream);
    eventually(
        "the backlog gauge counts the 23 unpublished events",
        || async {
            app.metric_sum("keh_relay_backlog_events", &lane).await == 23.0
                && app.metric_sum("keh_relay_backlog_age_seconds", &lane).await > 0.0
        },
    )
    .await;
    nats.resume().await;

    let pool = db.pool().await;
    let stored = stored_events(&pool).await;
    assert_eq!(stored.len(), 24);
    eventually("the backlog gauge drains once NATS is back", || async {
        app.metric_sum("keh_relay_backlog_events", &lane).await == 0.0
    })
    .await;
    let published = wait_for_stream(&nats.url(), &app.settings.stream, stored.len()).await;
    assert_stream_equals_store(&published, &stored);
    // The relay's own counter: each event published once, none retried into a duplicate.
    // (It counts an event when its acknowledgement arrives, which can be just after a
    // subscriber already sees the message.)
    eventually("the relay counted 24 publications", || async {
        app.metric("keh_relay_published_total").await == 24.0
    })
    .await;
    assert_eq!(app.metric("keh_relay_duplicates_total").await, 0.0);
    pool.close().await;
    app.stop().await;
}

fn created_payload(key: &str) -> String {
    let event = ListingEvent::ListingCreated(ListingCreated {
        listing_key: keh_events::ListingKey::new(key).expect("key"),
        standard_status: StandardStatus::Active,
        property_type: PropertyType::Land,
        list_price: Price::new(100_000.into()).expect("price"),
        original_list_price: Price::new(100_000.into()).expect("price"),
        listing_contract_date: chrono::Utc::now().date_naive(),
        on_market_date: None,
        original_entry_timestamp: chrono::Utc::now(),
        details: ListingDetails::default(),
    });
    serde_json::to_string(&event).expect("payload")
}

/// Appends one event the way postgres-es does, inside the caller's transaction.
async fn append(connection: &mut PgConnection, key: &str) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('Listing', $1, 1, 'ListingCreated', '1', $2::json, '{}'::json)",
    )
    .bind(key)
    .bind(created_payload(key))
    .execute(connection)
    .await
    .expect("append");
}

#[tokio::test]
async fn rolled_back_events_are_never_published_and_late_commits_are_never_skipped() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;

    // A transaction that takes a global position first but commits last...
    let mut slow = PgConnection::connect(&db.url).await.expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut slow)
        .await
        .expect("begin");
    append(&mut slow, "late-commit").await;
    // ...one that rolls back...
    let mut doomed = PgConnection::connect(&db.url).await.expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut doomed)
        .await
        .expect("begin");
    append(&mut doomed, "rolled-back").await;
    sqlx::query("ROLLBACK")
        .execute(&mut doomed)
        .await
        .expect("rollback");
    // ...and a normal command committed meanwhile.
    app.create_listing(body(1)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let so_far = stream_messages(&nats_url(), &app.settings.stream).await;
    assert!(
        so_far.is_empty(),
        "nothing may pass a transaction still in flight: {so_far:?}"
    );

    sqlx::query("COMMIT")
        .execute(&mut slow)
        .await
        .expect("commit");
    let pool = db.pool().await;
    let stored = stored_events(&pool).await;
    assert_eq!(stored.len(), 2);
    let published = wait_for_stream(&nats_url(), &app.settings.stream, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let published_again = stream_messages(&nats_url(), &app.settings.stream).await;
    assert_eq!(published_again.len(), published.len());
    assert_stream_equals_store(&published_again, &stored);
    assert!(
        published_again
            .iter()
            .all(|m| m.header("KEH-Listing-Key").as_deref() != Some("rolled-back"))
    );
    assert_eq!(
        published_again[0].header("KEH-Listing-Key").as_deref(),
        Some("late-commit"),
        "global order is transaction order"
    );
    pool.close().await;
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}

#[tokio::test]
async fn two_relays_never_publish_concurrently_and_the_standby_takes_over() {
    let db = TestDb::create().await;
    let id = unique_id();
    let settings = settings(&db, &nats_url(), &id);
    let api = TestApp::spawn(
        settings.clone(),
        Roles {
            command_api: true,
            ..Roles::NONE
        },
    )
    .await;
    let relay_a = TestApp::spawn(
        settings.clone(),
        Roles {
            relay: true,
            ..Roles::NONE
        },
    )
    .await;
    let relay_b = TestApp::spawn(
        settings.clone(),
        Roles {
            relay: true,
            ..Roles::NONE
        },
    )
    .await;

    let creates = (0..20).map(|i| api.create_listing(body(i)));
    join_all(creates).await;
    wait_for_stream(&nats_url(), &settings.stream, 20).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = relay_a.metric("keh_relay_published_total").await;
    let b = relay_b.metric("keh_relay_published_total").await;
    assert_eq!(
        a + b,
        20.0,
        "each event published exactly once, by one relay"
    );
    assert!(a == 0.0 || b == 0.0, "both relays published: {a} and {b}");
    let (leader, standby) = if a > 0.0 {
        (relay_a, relay_b)
    } else {
        (relay_b, relay_a)
    };
    assert_eq!(leader.metric("keh_relay_leader").await, 1.0);
    assert_eq!(standby.metric("keh_relay_leader").await, 0.0);

    // The leader goes away; the standby takes over and carries on from the stream's end.
    leader.stop().await;
    join_all((20..30).map(|i| api.create_listing(body(i)))).await;
    let published = wait_for_stream(&nats_url(), &settings.stream, 30).await;
    let pool = db.pool().await;
    assert_stream_equals_store(&published, &stored_events(&pool).await);
    assert_eq!(standby.metric("keh_relay_published_total").await, 10.0);
    pool.close().await;
    standby.stop().await;
    api.stop().await;
    delete_stream(&nats_url(), &settings.stream).await;
}

#[tokio::test]
async fn a_deleted_stream_is_rebuilt_from_the_store() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    join_all((0..5).map(|i| app.create_listing(body(i)))).await;
    wait_for_stream(&nats_url(), &app.settings.stream, 5).await;
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;

    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    let published = wait_for_stream(&nats_url(), &app.settings.stream, 5).await;
    let pool = db.pool().await;
    assert_stream_equals_store(&published, &stored_events(&pool).await);
    pool.close().await;
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}

#[tokio::test]
async fn readiness_follows_the_dependencies_each_role_needs() {
    let db = TestDb::create().await;
    let mut nats = PrivateNats::start().await;
    let nats_url = nats.url();
    nats.kill();
    let id = unique_id();
    let all = TestApp::spawn(settings(&db, &nats_url, &id), Roles::ALL).await;
    let relay = TestApp::spawn(
        settings(&db, &nats_url, &id),
        Roles {
            relay: true,
            ..Roles::NONE
        },
    )
    .await;
    let ready = all
        .send(all.client.get(all.url("/api/v1/health/ready")))
        .await;
    assert_eq!(
        ready.status, 200,
        "the command API is ready without NATS: {}",
        ready.body
    );
    assert_eq!(
        all.send(all.client.get(all.url("/api/v1/health")))
            .await
            .body["checks"][1]["status"],
        "down"
    );
    let relay_ready = relay
        .send(relay.client.get(relay.url("/api/v1/health/ready")))
        .await;
    assert_eq!(relay_ready.status, 503, "the relay is ready only with NATS");
    assert_eq!(relay_ready.header("content-type"), Some("application/json"));
    nats.resume().await;
    eventually("relay never became ready", || async {
        relay
            .send(relay.client.get(relay.url("/api/v1/health/ready")))
            .await
            .status
            == 200
    })
    .await;
    let live = all
        .send(all.client.get(all.url("/api/v1/health/live")))
        .await;
    assert_eq!(live.status, 200);
    relay.stop().await;
    all.stop().await;
}

#[tokio::test]
async fn global_order_is_numeric_transaction_order_across_digit_boundaries() {
    let db = TestDb::create().await;
    let id = unique_id();
    let pool = db.pool().await;
    // Transaction ids given explicitly (old, finished ones), inserted so that neither the
    // position order nor a text order of the ids matches the transaction order.
    let ids = [1000_u64, 999, 100, 99, 10, 9];
    keh_store::migrate(&pool).await.expect("migrate");
    for tx in ids {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, tx_id)
             VALUES ('Listing', $1, 1, 'ListingCreated', '1', $2::json, '{}'::json, $3::text::xid8)",
        )
        .bind(format!("tx-{tx}"))
        .bind(created_payload(&format!("tx-{tx}")))
        .bind(tx.to_string())
        .execute(&pool)
        .await
        .expect("insert");
    }
    let app = TestApp::spawn(
        settings(&db, &nats_url(), &id),
        Roles {
            relay: true,
            ..Roles::NONE
        },
    )
    .await;
    let published = wait_for_stream(&nats_url(), &app.settings.stream, ids.len()).await;
    let order: Vec<String> = published
        .iter()
        .filter_map(|m| m.header("KEH-Listing-Key"))
        .collect();
    assert_eq!(
        order,
        ["tx-9", "tx-10", "tx-99", "tx-100", "tx-999", "tx-1000"]
    );
    pool.close().await;
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}

/// A stream at its byte limit (`KEH_STREAM_MAX_BYTES`, `discard: new`) refuses what does not
/// fit: the relay waits with the rest unpublished, the stream holds the store's beginning in
/// order, nothing is dropped; once the limit is raised and the relay restarted, it publishes
/// the rest and the stream equals the store.
#[tokio::test]
async fn a_full_stream_makes_the_relay_wait_and_loses_nothing() {
    let db = TestDb::create().await;
    let id = unique_id();
    let roles = Roles {
        command_api: true,
        relay: true,
        ..Roles::NONE
    };
    let mut small = settings(&db, &nats_url(), &id);
    small.stream_max_bytes = 6_000;
    let app = TestApp::spawn(small, roles).await;
    for i in 0..20 {
        app.create_listing(body(i)).await;
    }
    eventually(
        "the relay's publishes are refused by the full stream",
        || async { app.metric("keh_relay_publish_errors_total").await > 0.0 },
    )
    .await;
    let pool = db.pool().await;
    let stored = stored_events(&pool).await;
    assert_eq!(stored.len(), 20);
    let held = stream_messages(&nats_url(), &app.settings.stream).await;
    assert!(
        !held.is_empty() && held.len() < stored.len(),
        "the full stream holds {} of {} events",
        held.len(),
        stored.len()
    );
    assert_stream_equals_store(&held, &stored[..held.len()]);
    app.stop().await;

    // The operator raises the limit (here: none) and restarts the relay.
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), roles).await;
    let published = wait_for_stream(&nats_url(), &app.settings.stream, stored.len()).await;
    assert_stream_equals_store(&published, &stored);
    pool.close().await;
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}
