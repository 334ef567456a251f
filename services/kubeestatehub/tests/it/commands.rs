//! The command API end to end: responses, versions, idempotency, concurrency, publication.

use std::time::Duration;

use futures::future::join_all;
use keh_events::EventEnvelope;
use kubeestatehub::Roles;
use serde_json::{Value, json};

use crate::harness::*;

fn house() -> Value {
    json!({
        "PropertyType": "Residential",
        "ListPrice": 450000.50,
        "ListingId": format!("MLS-{}", unique_id()),
        "City": "Springfield",
        "PostalCode": "62701",
        "BedroomsTotal": 3,
        "LivingArea": 1850,
        "LivingAreaUnits": "Square Feet",
        "Latitude": 39.78172100,
        "Longitude": -89.65014800,
        "PublicRemarks": "Sunny <b>corner</b> lot",
        "PrivateRemarks": "Lockbox 1234"
    })
}

async fn event_count(db: &TestDb) -> i64 {
    let pool = db.pool().await;
    let count = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .expect("count");
    pool.close().await;
    count
}

/// A price change through `app`, with `If-Match: "version"` when one is given.
async fn price(app: &TestApp, key: &str, value: u64, version: Option<u64>) -> Reply {
    let mut request = app
        .client
        .post(app.url(&format!("/api/v1/listings/{key}/price")))
        .json(&json!({"ListPrice": value}));
    if let Some(version) = version {
        request = request.header("if-match", format!("\"{version}\""));
    }
    app.send(request).await
}

#[tokio::test]
async fn create_returns_state_and_is_published_with_the_documented_contract() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;

    let reply = app.post("/api/v1/listings", &house()).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let key = reply.body["ListingKey"].as_str().expect("key").to_owned();
    assert_eq!(
        reply.header("location"),
        Some(format!("/api/v1/listings/{key}").as_str())
    );
    assert_eq!(reply.header("etag"), Some("\"1\""));
    assert_eq!(reply.body["Version"], 1);
    assert_eq!(reply.body["StandardStatus"], "Active");
    assert_eq!(
        reply.body["ListPrice"].to_string(),
        "450000.5",
        "prices are exact JSON numbers"
    );
    assert_eq!(reply.body["OriginalListPrice"].to_string(), "450000.5");
    assert_eq!(reply.body["Latitude"].to_string(), "39.781721");

    // The event is in PostgreSQL...
    let pool = db.pool().await;
    let stored = stored_events(&pool).await;
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].1.as_str(), stored[0].2), (key.as_str(), 1));

    // ...and on the stream with the documented subject and headers. (How soon is measured
    // by `bench/run`'s lag phase, not timed here: a loaded CI machine would make it flaky.)
    let published = wait_for_stream(&nats_url(), &app.settings.stream, 1).await;
    let message = &published[0];
    let partition = keh_events::subject::partition_of(&key, app.settings.partitions);
    assert_eq!(
        message.subject,
        format!(
            "t{id}.listing.{partition}.{}.ListingCreated",
            keh_events::subject::encode_key(&key)
        )
    );
    assert_eq!(message.header("Nats-Msg-Id"), Some(stored[0].0.to_string()));
    assert_eq!(
        message.header("KEH-Event-Type").as_deref(),
        Some("ListingCreated")
    );
    assert_eq!(message.header("KEH-Listing-Key"), Some(key.clone()));
    assert_eq!(message.header("KEH-Sequence").as_deref(), Some("1"));
    assert_eq!(message.header("KEH-Schema-Version").as_deref(), Some("1"));
    assert_eq!(
        message.header("Content-Type").as_deref(),
        Some("application/json")
    );
    let envelope: EventEnvelope =
        serde_json::from_value(message.envelope.clone()).expect("envelope matches the contract");
    assert_eq!(envelope.event_id, stored[0].0);
    assert_eq!(envelope.partition, partition);
    assert_eq!(
        message.envelope["Data"]["ListPrice"].to_string(),
        "450000.5"
    );
    // The public stream says what kind of actor acted, never who (the internal stream,
    // for the platform's consumers, names them).
    assert_eq!(message.envelope["Actor"], "user");

    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
    pool.close().await;
}

#[tokio::test]
async fn commands_move_the_listing_through_its_lifecycle_with_etags() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    let key = app.create_listing(house()).await;
    let path = format!("/api/v1/listings/{key}");

    // A stale If-Match is 412 and names the current version; the right one succeeds.
    let stale = app
        .send(
            app.client
                .post(app.url(&format!("{path}/price")))
                .header("if-match", "\"7\"")
                .json(&json!({"ListPrice": 440000})),
        )
        .await;
    assert_eq!(stale.status, 412, "{}", stale.body);
    assert_eq!(stale.body["currentVersion"], 1);
    let priced = app
        .send(
            app.client
                .post(app.url(&format!("{path}/price")))
                .header("if-match", "\"1\"")
                .json(&json!({"ListPrice": 440000})),
        )
        .await;
    assert_eq!(priced.status, 200, "{}", priced.body);
    assert_eq!(priced.header("etag"), Some("\"2\""));
    assert_eq!(priced.body["PreviousListPrice"], 450000.5);

    let patched = app
        .send(
            app.client
                .patch(app.url(&path))
                .header("content-type", "application/merge-patch+json")
                .body(
                    json!({"BedroomsTotal": 4, "PrivateRemarks": null, "ListPrice": 435000})
                        .to_string(),
                ),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(
        patched.body["Version"], 4,
        "details and price are two events"
    );
    assert!(patched.body.get("PrivateRemarks").is_none());

    let media = app
        .post(
            &format!("{path}/media"),
            &json!({"MediaURL": "https://img.example.com/1.jpg", "MediaCategory": "Photo"}),
        )
        .await;
    assert_eq!(media.status, 200, "{}", media.body);
    let media_key = media.body["Media"][0]["MediaKey"]
        .as_str()
        .expect("media key")
        .to_owned();
    let open_house = app
        .post(
            &format!("{path}/open-houses"),
            &json!({
        "OpenHouseStartTime": "2027-01-10T14:00:00Z", "OpenHouseEndTime": "2027-01-10T16:00:00Z"}),
        )
        .await;
    assert_eq!(open_house.status, 200, "{}", open_house.body);
    let oh_key = open_house.body["OpenHouses"][0]["OpenHouseKey"]
        .as_str()
        .expect("oh key")
        .to_owned();
    assert_eq!(
        app.send(
            app.client
                .delete(app.url(&format!("{path}/open-houses/{oh_key}")))
        )
        .await
        .status,
        200
    );
    assert_eq!(
        app.send(
            app.client
                .delete(app.url(&format!("{path}/media/{media_key}")))
        )
        .await
        .status,
        200
    );

    for (body, version) in [
        (
            json!({"StandardStatus": "Pending", "PurchaseContractDate": chrono::Utc::now().date_naive()}),
            9,
        ),
        (
            json!({"StandardStatus": "Closed", "ClosePrice": 441000, "CloseDate": chrono::Utc::now().date_naive()}),
            10,
        ),
    ] {
        let reply = app.post(&format!("{path}/status"), &body).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["Version"], version);
    }
    // The query API answers once its projection has reached the version the command returned.
    let read = app
        .send(app.client.get(app.url(&format!("{path}?min_version=10"))))
        .await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.body["StandardStatus"], "Closed");
    assert!(
        read.body.get("PrivateRemarks").is_none(),
        "private fields are not served"
    );
    assert_eq!(read.body["ClosePrice"], 441000);
    assert_eq!(read.header("etag"), Some("\"10\""));
    assert_eq!(event_count(&db).await, 10);
    app.stop().await;
}

#[tokio::test]
async fn an_idempotent_retry_returns_the_first_answer_and_creates_no_event() {
    let db = TestDb::create().await;
    let app = TestApp::spawn(
        settings(&db, &nats_url(), &unique_id()),
        Roles {
            command_api: true,
            ..Roles::NONE
        },
    )
    .await;
    let body = house();
    let create = || {
        app.client
            .post(app.url("/api/v1/listings"))
            .header("idempotency-key", "create-1")
            .json(&body)
    };
    let first = app.send(create()).await;
    let second = app.send(create()).await;
    assert_eq!((first.status, second.status), (201, 201), "{}", second.body);
    assert_eq!(
        first.body, second.body,
        "the retry returns the first answer"
    );
    assert_eq!(second.header("location"), first.header("location"));
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(event_count(&db).await, 1);

    // Attempts of one create that meet in one group commit (a client retrying while its
    // dropped first attempt is still queued): each draws a new listing key and, without a
    // ListingId, only the Idempotency-Key tells them apart, yet one listing is created and
    // every attempt is answered with it. The group is made to form: while a lock holds the
    // first append of the appender back, the attempts queue up behind it.
    let mut anonymous = house();
    anonymous
        .as_object_mut()
        .expect("object")
        .remove("ListingId");
    let create_with = |idempotency_key: &'static str| {
        app.send(
            app.client
                .post(app.url("/api/v1/listings"))
                .header("idempotency-key", idempotency_key)
                .json(&anonymous),
        )
    };
    let pool = db.pool().await;
    let mut lock = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE idempotency_keys IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let held_back = create_with("create-2");
    let attempts = async {
        // Behind the one held back.
        tokio::time::sleep(Duration::from_millis(300)).await;
        join_all((0..8).map(|_| create_with("create-3"))).await
    };
    let release = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        lock.rollback().await.expect("rollback");
    };
    let (held_back, attempts, ()) = tokio::join!(held_back, attempts, release);
    assert_eq!(held_back.status, 201, "{}", held_back.body);
    for reply in &attempts {
        assert_eq!(reply.status, 201, "{}", reply.body);
        assert_eq!(
            reply.body["ListingKey"], attempts[0].body["ListingKey"],
            "every attempt answers with the one listing created"
        );
    }
    assert_eq!(
        event_count(&db).await,
        3,
        "the first create, the one held back and one of the eight attempts"
    );
    pool.close().await;

    // Concurrent retries of one price change: one event, every answer the same.
    let key = first.body["ListingKey"].as_str().expect("key");
    let price = |_| {
        app.send(
            app.client
                .post(app.url(&format!("/api/v1/listings/{key}/price")))
                .header("idempotency-key", "price-1")
                .json(&json!({"ListPrice": 400000})),
        )
    };
    let replies = join_all((0..8).map(price)).await;
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["Version"], 2);
    }
    assert_eq!(event_count(&db).await, 4);

    // The same key for another request is refused.
    let other = app
        .send(
            app.client
                .post(app.url(&format!("/api/v1/listings/{key}/price")))
                .header("idempotency-key", "price-1")
                .json(&json!({"ListPrice": 1})),
        )
        .await;
    assert_eq!(other.status, 422, "{}", other.body);
    assert_eq!(
        other.body["type"],
        "/api/v1/problems/idempotency-key-reused"
    );
    assert_eq!(event_count(&db).await, 4);

    // A refusal is an answer too: the retry gets it again, even once the listing would now
    // accept the command, and nothing is appended.
    let close = || {
        app.client
            .post(app.url(&format!("/api/v1/listings/{key}/status")))
            .header("idempotency-key", "close-1")
            .json(&json!({"StandardStatus": "Closed", "ClosePrice": 390000, "CloseDate": chrono::Utc::now().date_naive()}))
    };
    let refused = app.send(close()).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    let pending = app
        .post(
            &format!("/api/v1/listings/{key}/status"),
            &json!({"StandardStatus": "Pending"}),
        )
        .await;
    assert_eq!(pending.status, 200, "{}", pending.body);
    let retried = app.send(close()).await;
    assert_eq!((retried.status, &retried.body), (422, &refused.body));
    assert_eq!(
        retried.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(retried.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        event_count(&db).await,
        5,
        "three creates, price, pending: the retry appended nothing"
    );
    app.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_writers_on_one_listing_append_exactly_one_event_each_accepted() {
    let db = TestDb::create().await;
    let app = TestApp::spawn(
        settings(&db, &nats_url(), &unique_id()),
        Roles {
            command_api: true,
            ..Roles::NONE
        },
    )
    .await;
    let key = app.create_listing(house()).await;
    let url = app.url(&format!("/api/v1/listings/{key}/price"));
    let writers = (0..50).map(|i| {
        let mut request = app
            .client
            .post(&url)
            .json(&json!({"ListPrice": 300000 + i}));
        if i % 2 == 0 {
            request = request.header("if-match", "\"1\"");
        }
        app.send(request)
    });
    let replies = join_all(writers).await;
    let accepted = replies.iter().filter(|r| r.status == 200).count();
    for reply in &replies {
        assert!(
            matches!(reply.status, 200 | 409 | 412),
            "unexpected {}: {}",
            reply.status,
            reply.body
        );
        assert_eq!(
            reply
                .header("content-type")
                .map(|c| c.starts_with("application/")),
            Some(true)
        );
    }
    assert!(accepted >= 1);
    let pool = db.pool().await;
    let sequences: Vec<i64> = sqlx::query_scalar("SELECT sequence FROM events ORDER BY sequence")
        .fetch_all(&pool)
        .await
        .expect("sequences");
    assert_eq!(
        sequences,
        (1..=i64::try_from(accepted + 1).expect("count")).collect::<Vec<_>>(),
        "one event per accepted command, no gap"
    );
    pool.close().await;
    app.stop().await;
}

#[tokio::test]
async fn a_long_history_loads_through_snapshots_to_the_same_state() {
    let db = TestDb::create().await;
    let app = TestApp::spawn(
        settings(&db, &nats_url(), &unique_id()),
        Roles {
            command_api: true,
            ..Roles::NONE
        },
    )
    .await;
    let key = app.create_listing(house()).await;
    let mut last = None;
    for i in 0..35 {
        let reply = app
            .post(
                &format!("/api/v1/listings/{key}/price"),
                &json!({"ListPrice": 400000 + i}),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        last = Some(reply);
    }
    let pool = db.pool().await;
    let snapshot: i64 = sqlx::query_scalar("SELECT last_sequence FROM snapshots")
        .fetch_one(&pool)
        .await
        .expect("snapshot written");
    assert_eq!(snapshot, 30, "snapshot every 10 events");
    // The last command loaded the listing from the snapshot at 30 plus 5 events.
    let read = last.expect("replies");
    assert_eq!(read.body["Version"], 36);
    assert_eq!(read.body["ListPrice"], 400034);
    assert_eq!(read.body["PreviousListPrice"], 400033);
    pool.close().await;
    app.stop().await;
}

#[tokio::test]
async fn replicas_that_cached_an_older_state_decide_on_the_stored_one() {
    // Each command API keeps the listings it last appended to; another replica's append
    // makes that entry old. Nothing may be decided on it: not a 412 for the true version,
    // not an append where the stored state says "no change", not a refusal.
    let db = TestDb::create().await;
    let id = unique_id();
    let settings = settings(&db, &nats_url(), &id);
    let roles = Roles::APIS;
    let one = TestApp::spawn(settings.clone(), roles).await;
    let two = TestApp::spawn(settings, roles).await;
    let key = one
        .create_listing(json!({"PropertyType": "Residential", "ListPrice": 100000}))
        .await;
    assert_eq!(price(&one, &key, 110_000, None).await.status, 200);
    // The other replica moves the listing on: the first one's entry is now old.
    assert_eq!(price(&two, &key, 120_000, None).await.status, 200);
    let current = price(&one, &key, 130_000, Some(3)).await;
    assert_eq!(
        current.status, 200,
        "If-Match of the stored version: {}",
        current.body
    );
    assert_eq!(current.header("etag"), Some("\"4\""));
    // For the second replica (which last saw 120,000) this is a change; for the store, none.
    let unchanged = price(&two, &key, 130_000, None).await;
    assert_eq!(unchanged.status, 200, "{}", unchanged.body);
    assert_eq!(unchanged.header("etag"), Some("\"4\""));
    assert_eq!(
        event_count(&db).await,
        4,
        "no event for a change the store does not see"
    );
    // A status change allowed from the stored state is allowed, through either replica.
    let pending = two
        .send(
            two.client
                .post(two.url(&format!("/api/v1/listings/{key}/status")))
                .json(&json!({"StandardStatus": "Pending"})),
        )
        .await;
    assert_eq!(pending.status, 200, "{}", pending.body);
    let back = one
        .send(
            one.client
                .post(one.url(&format!("/api/v1/listings/{key}/status")))
                .json(&json!({"StandardStatus": "Active"})),
        )
        .await;
    assert_eq!(
        back.status, 200,
        "back on market from Pending: {}",
        back.body
    );
    assert_eq!(back.header("etag"), Some("\"6\""));
    two.stop().await;
    one.stop().await;
}

#[tokio::test]
async fn appends_decided_on_states_another_replica_replaced_are_decided_again_and_the_rest_commit()
{
    // Replica one has every listing cached; replica two then changes half of them, so
    // one's entries for those are old. One's concurrent changes to all of them share group
    // transactions: each old one takes a taken sequence, is decided again on the stored
    // state and appended; the others are written without it. Every change is a 200, each
    // appends exactly one event, and the last price is the one sent.
    let db = TestDb::create().await;
    let id = unique_id();
    let settings = settings(&db, &nats_url(), &id);
    let one = TestApp::spawn(settings.clone(), Roles::APIS).await;
    let two = TestApp::spawn(settings, Roles::APIS).await;
    let mut keys = Vec::new();
    for _ in 0..16 {
        let key = one
            .create_listing(json!({"PropertyType": "Residential", "ListPrice": 100000}))
            .await;
        assert_eq!(price(&one, &key, 110_000, None).await.status, 200);
        keys.push(key);
    }
    for key in keys.iter().step_by(2) {
        assert_eq!(price(&two, key, 120_000, None).await.status, 200);
    }
    let before = event_count(&db).await;
    let replies = join_all(
        keys.iter()
            .enumerate()
            .map(|(i, key)| price(&one, key, 200_000 + 1_000 * i as u64, None)),
    )
    .await;
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply.status, 200, "listing {i}: {}", reply.body);
        let version = if i % 2 == 0 { "\"4\"" } else { "\"3\"" };
        assert_eq!(reply.header("etag"), Some(version), "listing {i}");
    }
    assert_eq!(event_count(&db).await, before + 16, "one event per change");
    let pool = db.pool().await;
    for (i, key) in keys.iter().enumerate() {
        let stored: String = sqlx::query_scalar(
            "SELECT payload::jsonb->'Data'->>'ListPrice' FROM events
              WHERE aggregate_id = $1 ORDER BY sequence DESC LIMIT 1",
        )
        .bind(key)
        .fetch_one(&pool)
        .await
        .unwrap_or_default();
        assert_eq!(stored, (200_000 + 1_000 * i).to_string(), "listing {i}");
    }
    pool.close().await;
    two.stop().await;
    one.stop().await;
}

#[tokio::test]
async fn concurrent_commands_commit_together_and_one_refusal_costs_the_others_nothing() {
    // Concurrent appends share a transaction (group commit). Two of these creates claim the
    // same ListingId: whichever loses gets its 409, and every other create its 201 — as if
    // each had committed alone.
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::APIS).await;
    let replies = join_all((0..24).map(|i| {
        let listing_id = if i < 2 {
            "MLS-SHARED".to_owned()
        } else {
            format!("MLS-{i}")
        };
        let body = json!({"PropertyType": "Land", "ListPrice": 1000 + i, "ListingId": listing_id});
        let app = &app;
        async move { app.post("/api/v1/listings", &body).await }
    }))
    .await;
    let shared: Vec<u16> = replies[..2].iter().map(|r| r.status).collect();
    assert!(
        shared.contains(&201) && shared.contains(&409),
        "one claim of the shared ListingId wins: {shared:?}"
    );
    for reply in &replies[2..] {
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    assert_eq!(event_count(&db).await, 23);
    app.stop().await;
}
