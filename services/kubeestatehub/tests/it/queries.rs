//! The read side: projection, search, history, time travel, live feed, rebuild.

use std::collections::HashSet;
use std::time::Duration;

use futures::future::join_all;
use kubeestatehub::Roles;
use serde_json::{Value, json};

use crate::harness::*;

fn listing(i: usize, city: &str) -> Value {
    json!({
        "PropertyType": if i.is_multiple_of(3) { "Land" } else { "Residential" },
        "ListPrice": 100000 + i * 1000,
        "City": city,
        "PostalCode": format!("6270{}", i % 5),
        "BedroomsTotal": i % 6,
        "BathroomsTotalInteger": i % 4,
        "LivingArea": 800 + i * 10,
        "Latitude": decimal(&format!("39.{:03}", 700 + i)),
        "Longitude": decimal(&format!("-89.{:03}", 600 + i)),
        "UnparsedAddress": format!("{} Elm Street", 100 + i),
        "PublicRemarks": if i.is_multiple_of(2) { "Quiet street near the lake" } else { "Corner lot with garden" },
        "PrivateRemarks": "gate code 4321"
    })
}

/// An exact JSON number (no binary floating point on the way).
fn decimal(text: &str) -> Value {
    serde_json::from_str(text).expect("number")
}

/// Row-by-row fingerprint of the read model.
pub(crate) async fn checksum(db: &TestDb) -> (i64, String, String, String) {
    let pool = db.pool().await;
    let sums = read_model_checksum(&pool).await;
    pool.close().await;
    sums
}

/// Row-by-row fingerprint of the read model in `pool`'s database.
pub(crate) async fn read_model_checksum(pool: &sqlx::PgPool) -> (i64, String, String, String) {
    let row: (i64, Option<String>, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM read_model.listings),
                (SELECT md5(string_agg(l.listing_key || ':' || l.version || ':' || l.recorded_at || ':' || l.state::text || ':' || coalesce(t.search::text, 'no text row'), ',' ORDER BY l.listing_key))
                   FROM read_model.listings l LEFT JOIN read_model.listing_text t USING (listing_key)),
                (SELECT md5(string_agg(listing_key || ':' || sequence || ':' || event_id || ':' || data::text, ',' ORDER BY listing_key, sequence)) FROM read_model.listing_events),
                (SELECT md5(coalesce((SELECT string_agg(m::text, ',' ORDER BY m.listing_key, m.media_key) FROM read_model.listing_media m), '')
                         || coalesce((SELECT string_agg(o::text, ',' ORDER BY o.listing_key, o.open_house_key) FROM read_model.listing_open_houses o), '')))",
    )
    .fetch_one(pool)
    .await
    .expect("checksum");
    (
        row.0,
        row.1.unwrap_or_default(),
        row.2.unwrap_or_default(),
        row.3.unwrap_or_default(),
    )
}

#[tokio::test]
async fn commands_become_visible_through_search_get_and_history() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    let mut keys = Vec::new();
    for i in 0..12 {
        keys.push(
            app.create_listing(listing(
                i,
                if i < 8 { "Springfield" } else { "Capital City" },
            ))
            .await,
        );
    }
    let key = keys[1].clone();
    let path = format!("/api/v1/listings/{key}");
    app.send(
        app.client
            .patch(app.url(&path))
            .json(&json!({"BedroomsTotal": 5, "City": "Shelbyville"})),
    )
    .await;
    app.post(&format!("{path}/price"), &json!({"ListPrice": 99000}))
        .await;
    let status = app
        .post(
            &format!("{path}/status"),
            &json!({"StandardStatus": "Pending"}),
        )
        .await;
    assert_eq!(status.body["Version"], 4);
    for k in &keys {
        wait_projected(&app, k, 1).await;
    }
    let read = wait_projected(&app, &key, 4).await;
    assert_eq!(read.body["StandardStatus"], "Pending");
    assert_eq!(read.body["ListPrice"], 99000);
    assert_eq!(read.body["City"], "Shelbyville");
    assert_eq!(read.header("etag"), Some("\"4\""));
    // Administrators see private remarks; anonymous readers never do.
    assert!(read.body.get("PrivateRemarks").is_some(), "{}", read.body);
    let anonymous = app
        .send(client_with(None).get(app.url(&format!("/api/v1/listings/{key}"))))
        .await;
    assert_eq!(anonymous.status, 200);
    assert!(anonymous.body.get("PrivateRemarks").is_none());

    let search = |query: &str| {
        app.send(
            app.client
                .get(app.url(&format!("/api/v1/listings?{query}"))),
        )
    };
    let keys_of = |reply: &Reply| -> Vec<String> {
        reply.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["ListingKey"].as_str().expect("key").to_owned())
            .collect()
    };
    let pending = search("status=Pending&count=true").await;
    assert_eq!(keys_of(&pending), vec![key.clone()]);
    assert_eq!(pending.body["totalCount"], 1);
    // One value binds as `=`, several as `ANY`: both filter the same way.
    let active = search("status=Active&count=true").await;
    let either = search("status=Active,Pending&count=true").await;
    assert_eq!(
        either.body["totalCount"],
        active.body["totalCount"].as_i64().expect("count") + 1,
        "{}",
        either.body
    );
    let springfield = search("city=springfield&count=true").await;
    assert_eq!(springfield.body["totalCount"], 7, "{}", springfield.body);
    let land = search("property_type=Land&min_price=100000&max_price=105000").await;
    assert_eq!(
        keys_of(&land),
        vec![keys[3].clone(), keys[0].clone()],
        "newest first by default"
    );
    let text = search("q=lake%20quiet&min_beds=4&sort=ListPrice").await;
    let expected: Vec<String> = [4usize, 10].iter().map(|i| keys[*i].clone()).collect();
    assert_eq!(keys_of(&text), expected);
    let boxed = search("bbox=-89.6035,39.7005,-89.6015,39.7035&sort=ListingKey").await;
    let mut in_box: Vec<String> = [2usize, 3].iter().map(|i| keys[*i].clone()).collect();
    in_box.sort();
    assert_eq!(keys_of(&boxed), in_box, "{}", boxed.body);
    let areas = search("min_area=900&max_area=910&min_baths=2").await;
    assert_eq!(keys_of(&areas), vec![keys[11].clone(), keys[10].clone()]);
    let later = search("modified_since=2099-01-01T00:00:00Z").await;
    assert!(keys_of(&later).is_empty());
    // The words follow detail edits (the city moved to Shelbyville before the price and
    // status changes, which leave the text as it is), and only what the listing says now.
    let moved = search("q=shelbyville").await;
    assert_eq!(keys_of(&moved), vec![key.clone()], "{}", moved.body);
    let edited = format!("/api/v1/listings/{}", keys[2]);
    app.send(
        app.client
            .patch(app.url(&edited))
            .json(&json!({"PublicRemarks": "Sunny courtyard"})),
    )
    .await;
    wait_projected(&app, &keys[2], 2).await;
    let courtyard = search("q=courtyard").await;
    assert_eq!(
        keys_of(&courtyard),
        vec![keys[2].clone()],
        "{}",
        courtyard.body
    );
    let lake = search("q=lake&count=true").await;
    assert_eq!(lake.body["totalCount"], 5, "{}", lake.body);

    let history = app
        .send(app.client.get(app.url(&format!("{path}/history"))))
        .await;
    let items = history.body["items"].as_array().expect("history");
    let types: Vec<&str> = items
        .iter()
        .map(|i| i["EventType"].as_str().expect("type"))
        .collect();
    assert_eq!(
        types,
        [
            "ListingCreated",
            "ListingDetailsUpdated",
            "ListingPriceChanged",
            "ListingStatusChanged"
        ]
    );
    assert!(
        items[0]["Actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("user:test-admin-")),
        "administrators see who acted: {}",
        items[0]["Actor"]
    );
    assert!(items[0]["Data"].get("PrivateRemarks").is_some());
    let anonymous = app
        .send(client_with(None).get(app.url(&format!("/api/v1/listings/{key}/history"))))
        .await;
    assert!(
        anonymous.body["items"][0]["Data"]
            .get("PrivateRemarks")
            .is_none(),
        "history hides private fields from those who may not see them"
    );
    assert!(items[0]["RecordedAt"].is_string() && items[0]["EffectiveAt"].is_string());
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}

#[tokio::test]
async fn as_of_returns_the_state_the_history_says() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    let key = app.create_listing(listing(1, "Springfield")).await;
    let path = format!("/api/v1/listings/{key}");
    for price in [95000, 90000, 85000] {
        app.post(&format!("{path}/price"), &json!({"ListPrice": price}))
            .await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    wait_projected(&app, &key, 4).await;
    let history = app
        .send(app.client.get(app.url(&format!("{path}/history"))))
        .await;
    let items = history.body["items"].as_array().expect("items").clone();
    for item in &items {
        let at = item["RecordedAt"].as_str().expect("recorded");
        let then = app
            .send(
                app.client
                    .get(app.url(&format!("{path}?as_of={}", at.replace('+', "%2B")))),
            )
            .await;
        assert_eq!(then.status, 200, "{}", then.body);
        assert_eq!(then.body["Version"], item["Sequence"], "as of {at}");
        let expected_price = item["Data"]["ListPrice"].clone();
        assert_eq!(then.body["ListPrice"], expected_price, "as of {at}");
    }
    let before = app
        .send(
            app.client
                .get(app.url(&format!("{path}?as_of=2000-01-01T00:00:00Z"))),
        )
        .await;
    assert_eq!(before.status, 404);
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}

#[tokio::test]
async fn malformed_query_parameters_get_problem_json() {
    let db = TestDb::create().await;
    let app = TestApp::spawn(
        settings(&db, &nats_url(), &unique_id()),
        Roles {
            query_api: true,
            ..Roles::NONE
        },
    )
    .await;
    let cases = [
        ("/api/v1/listings?min_price=abc", "min_price"),
        ("/api/v1/listings?min_price=-1", "min_price"),
        ("/api/v1/listings?limit=0", "limit"),
        ("/api/v1/listings?limit=1000", "limit"),
        ("/api/v1/listings?status=Sold", "status"),
        ("/api/v1/listings?property_type=Castle", "property_type"),
        ("/api/v1/listings?bbox=1,2,3", "bbox"),
        ("/api/v1/listings?bbox=10,10,5,5", "bbox"),
        ("/api/v1/listings?sort=price", "sort"),
        ("/api/v1/listings?cursor=not-a-cursor", "cursor"),
        (
            "/api/v1/listings?modified_since=yesterday",
            "modified_since",
        ),
        ("/api/v1/listings?count=maybe", "count"),
        ("/api/v1/listings?colour=red", "colour"),
        ("/api/v1/listings?city=a&city=b", "city"),
        ("/api/v1/listings?min_beds=1.5", "min_beds"),
        ("/api/v1/listings/some-key?as_of=soon", "as_of"),
        ("/api/v1/listings/some-key?min_version=0", "min_version"),
        (
            "/api/v1/listings/some-key?as_of=2026-01-01T00:00:00Z&min_version=2",
            "as_of",
        ),
        ("/api/v1/listing-events?event_type=Nope", "event_type"),
    ];
    let mut failures = Vec::new();
    for (path, field) in cases {
        let reply = app.send(app.client.get(app.url(path))).await;
        let named = reply.body["errors"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["field"] == field));
        if reply.status != 400
            || reply.header("content-type") != Some("application/problem+json")
            || !named
        {
            failures.push(format!("{path}: {} {}", reply.status, reply.body));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    app.stop().await;
}

#[tokio::test]
async fn pagination_over_concurrent_inserts_neither_repeats_nor_skips() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    let before: Vec<String> =
        join_all((0..25).map(|i| app.create_listing(listing(i, "Ogdenville")))).await;
    for key in &before {
        wait_projected(&app, key, 1).await;
    }
    for sort in ["-ModificationTimestamp", "ListPrice", "ListingKey"] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut round = 0;
        loop {
            // Listings keep arriving while the client pages through.
            app.create_listing(listing(100 + round, "Ogdenville")).await;
            round += 1;
            let mut url = format!("/api/v1/listings?city=Ogdenville&limit=4&sort={sort}");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page = app.send(app.client.get(app.url(&url))).await;
            assert_eq!(page.status, 200, "{}", page.body);
            for item in page.body["items"].as_array().expect("items") {
                seen.push(item["ListingKey"].as_str().expect("key").to_owned());
            }
            match page.body["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
            assert!(round < 100, "pagination does not end");
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "{sort}: a row appeared twice");
        for key in &before {
            assert!(unique.contains(key), "{sort}: listing {key} was skipped");
        }
    }
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}

/// Reads SSE events (id, event type, listing key) until `count` arrived.
async fn read_sse(mut response: reqwest::Response, count: usize) -> Vec<(u64, String, String)> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while events.len() < count {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("SSE events in time")
            .expect("chunk")
            .expect("stream open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
            };
            if let (Some(id), Some(data)) = (field("id:"), field("data:")) {
                let envelope: Value = serde_json::from_str(&data).expect("envelope");
                assert!(
                    envelope["Data"].get("PrivateRemarks").is_none(),
                    "the feed hides private fields"
                );
                events.push((
                    id.parse().expect("id"),
                    field("event:").unwrap_or_default(),
                    envelope["ListingKey"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                ));
            }
        }
    }
    events
}

#[tokio::test]
async fn an_sse_client_resuming_with_last_event_id_misses_and_repeats_nothing() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    app.create_listing(listing(0, "Springfield")).await;
    wait_for_stream(&nats_url(), &app.settings.stream, 1).await;

    let feed = app
        .client
        .get(app.url("/api/v1/listing-events"))
        .send()
        .await
        .expect("feed");
    assert_eq!(
        feed.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let first_keys: Vec<String> =
        join_all((1..4).map(|i| app.create_listing(listing(i, "Springfield")))).await;
    let first = read_sse(feed, 3).await;
    let mut got: Vec<String> = first.iter().map(|e| e.2.clone()).collect();
    got.sort();
    let mut want = first_keys.clone();
    want.sort();
    assert_eq!(got, want, "new events only, not the one before connecting");
    let last_id = first.last().expect("events").0;

    // Disconnected: more changes happen meanwhile.
    let missed: Vec<String> =
        join_all((4..8).map(|i| app.create_listing(listing(i, "Springfield")))).await;
    let resumed = app
        .client
        .get(app.url("/api/v1/listing-events"))
        .header("last-event-id", last_id.to_string())
        .send()
        .await
        .expect("feed");
    let second = read_sse(resumed, 4).await;
    let ids: Vec<u64> = second.iter().map(|e| e.0).collect();
    assert_eq!(
        ids,
        (last_id + 1..=last_id + 4).collect::<Vec<_>>(),
        "resumes right after the last seen id"
    );
    let mut got: Vec<String> = second.iter().map(|e| e.2.clone()).collect();
    got.sort();
    let mut want = missed;
    want.sort();
    assert_eq!(got, want);
    assert!(second.iter().all(|e| e.1 == "ListingCreated"));

    // Filtered: one listing only.
    let one = &first_keys[0];
    let filtered = app
        .client
        .get(app.url(&format!(
            "/api/v1/listing-events?listing_key={one}&last_event_id=0"
        )))
        .send()
        .await
        .expect("feed");
    let events = read_sse(filtered, 1).await;
    assert_eq!(events[0].2, *one);
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}

#[tokio::test]
async fn duplicates_are_skipped_and_a_killed_projector_converges_to_the_rebuild() {
    let db = TestDb::create().await;
    let id = unique_id();
    let settings = settings(&db, &nats_url(), &id);
    let writer = TestApp::spawn(
        settings.clone(),
        Roles {
            command_api: true,
            query_api: true,
            relay: true,
            projector: false,
            analytics: false,
        },
    )
    .await;
    let keys: Vec<String> =
        join_all((0..20).map(|i| writer.create_listing(listing(i, "Springfield")))).await;
    for (i, key) in keys.iter().enumerate().take(5) {
        let media = writer.post(&format!("/api/v1/listings/{key}/media"), &json!({"MediaURL": format!("https://img.example.com/{i}.jpg"), "MediaCategory": "Photo"})).await;
        assert_eq!(media.status, 200, "{}", media.body);
        let open_house = writer.post(&format!("/api/v1/listings/{key}/open-houses"), &json!({"OpenHouseStartTime": "2027-05-01T14:00:00Z", "OpenHouseEndTime": "2027-05-01T16:00:00Z"})).await;
        assert_eq!(open_house.status, 200, "{}", open_house.body);
    }
    for round in 0..4 {
        let requests = keys.iter().map(|k| {
            let request = writer
                .client
                .post(writer.url(&format!("/api/v1/listings/{k}/price")))
                .json(&json!({"ListPrice": 50000 + round}));
            writer.send(request)
        });
        join_all(requests).await;
    }
    wait_for_stream(&nats_url(), &settings.stream, 110).await;

    // A projector that is aborted mid-work, then started again.
    let projector = TestApp::spawn(
        settings.clone(),
        Roles {
            projector: true,
            ..Roles::NONE
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    projector.abort().await;
    let projector = TestApp::spawn(
        settings.clone(),
        Roles {
            projector: true,
            ..Roles::NONE
        },
    )
    .await;
    for (i, key) in keys.iter().enumerate() {
        wait_projected(&writer, key, if i < 5 { 7 } else { 5 }).await;
    }
    let live = checksum(&db).await;
    assert_eq!(live.0, 20);

    // Duplicates on the stream the projector reads (same events under new message ids)
    // change nothing.
    let messages = stream_messages(&nats_url(), &format!("{}_INTERNAL", settings.stream)).await;
    let duplicates_before = projector.metric("keh_projector_duplicates_total").await;
    let client = async_nats::connect(nats_url()).await.expect("nats");
    let jetstream = async_nats::jetstream::new(client);
    for message in messages.iter().take(30) {
        let ack = jetstream
            .publish(message.subject.clone(), message.envelope.to_string().into())
            .await
            .expect("publish");
        ack.await.expect("ack");
    }
    eventually("duplicates not consumed", || async {
        projector.metric("keh_projector_duplicates_total").await >= duplicates_before + 30.0
    })
    .await;
    assert_eq!(
        checksum(&db).await,
        live,
        "redelivered events changed the read model"
    );

    // A rebuild from the event store gives exactly the live read model, and queries keep
    // answering while it runs.
    let pool = db.pool().await;
    let probe_key = keys[0].clone();
    let probing = {
        let client = writer.client.clone();
        let url = writer.url(&format!("/api/v1/listings/{probe_key}"));
        tokio::spawn(async move {
            let mut failures = 0;
            for _ in 0..60 {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {}
                    _ => failures += 1,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            failures
        })
    };
    // The indexes and triggers of the read model, as the migrations made them: the rebuild
    // drops its tables' secondary indexes and search-word triggers for the load and must
    // put every one back, enabled.
    let shape = || {
        let pool = pool.clone();
        async move {
            let indexes: Vec<String> = sqlx::query_scalar(
                "SELECT tablename || ': ' || replace(indexdef, 'read_model.', '') FROM pg_indexes
                  WHERE schemaname = 'read_model' ORDER BY 1",
            )
            .fetch_all(&pool)
            .await
            .expect("indexes");
            let triggers: Vec<String> = sqlx::query_scalar(
                "SELECT c.relname || '.' || t.tgname || ' ' || t.tgenabled::text FROM pg_trigger t
                   JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = 'read_model' AND NOT t.tgisinternal ORDER BY 1",
            )
            .fetch_all(&pool)
            .await
            .expect("triggers");
            (indexes, triggers)
        }
    };
    let migrated = shape().await;
    assert!(
        migrated.0.len() > 10 && migrated.1.len() >= 2,
        "{migrated:?}"
    );
    let rebuilt = keh_projections::rebuild::rebuild(&pool, 4, |_, _| {})
        .await
        .expect("rebuild");
    assert_eq!(rebuilt.listings, 20);
    assert_eq!(
        shape().await,
        migrated,
        "the rebuilt read model lacks an index or a trigger of the migrated one"
    );
    // The read-model tables for which `condition` holds.
    let tables_where = |condition: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(&format!(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = 'read_model' AND c.relkind = 'r' AND {condition}"
            ))
            .fetch_all(&pool)
            .await
            .expect("read-model tables")
        }
    };
    // The swapped-in tables come with planner statistics (never-analyzed tables have
    // reltuples -1, and PostgreSQL guesses plans for them) ...
    let unanalyzed = tables_where("c.reltuples < 0").await;
    assert!(
        unanalyzed.is_empty(),
        "rebuilt tables without statistics: {unanalyzed:?}"
    );
    // ... and with the least-privilege grants of the tables they replace (0007).
    let ungranted = tables_where(
        "NOT (has_table_privilege('keh_query', c.oid, 'SELECT')
              AND has_table_privilege('keh_projector', c.oid, 'INSERT, UPDATE, DELETE'))",
    )
    .await;
    assert!(
        ungranted.is_empty(),
        "rebuilt tables the roles cannot use: {ungranted:?}"
    );
    assert_eq!(
        probing.await.expect("probe"),
        0,
        "queries failed during the rebuild"
    );
    assert_eq!(
        checksum(&db).await,
        live,
        "the rebuild differs from the live projection"
    );
    pool.close().await;
    projector.stop().await;
    writer.stop().await;
    delete_stream(&nats_url(), &settings.stream).await;
}

#[tokio::test]
async fn a_poison_message_is_parked_and_blocks_nothing_else() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    let first = app.create_listing(listing(0, "Springfield")).await;
    wait_projected(&app, &first, 1).await;

    // Something that is not an event envelope lands on every partition.
    let client = async_nats::connect(nats_url()).await.expect("nats");
    let jetstream = async_nats::jetstream::new(client);
    for partition in 0..app.settings.partitions {
        // The platform's consumers read the internal stream.
        let subject = format!("t{id}.internal.listing.{partition}.garbage.ListingCreated");
        jetstream
            .publish(subject, "{not json".into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    let keys: Vec<String> =
        join_all((1..9).map(|i| app.create_listing(listing(i, "Springfield")))).await;
    for key in &keys {
        wait_projected(&app, key, 1).await;
    }
    let pool = db.pool().await;
    let parked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM parked_events WHERE consumer LIKE 'projector-p%'")
            .fetch_one(&pool)
            .await
            .expect("parked");
    assert_eq!(parked, i64::from(app.settings.partitions));
    assert_eq!(
        app.metric("keh_projector_parked_total").await,
        f64::from(app.settings.partitions)
    );
    // The analytics consumer group parks them too, on its own.
    eventually("the analytics worker parks the poison messages", || async {
        app.metric("keh_analytics_parked_total").await == f64::from(app.settings.partitions)
    })
    .await;
    pool.close().await;
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}

#[tokio::test]
async fn projector_replicas_share_partitions_and_take_over_from_each_other() {
    let db = TestDb::create().await;
    let id = unique_id();
    let settings = settings(&db, &nats_url(), &id);
    let api = TestApp::spawn(
        settings.clone(),
        Roles {
            command_api: true,
            query_api: true,
            relay: true,
            projector: false,
            analytics: false,
        },
    )
    .await;
    api.create_listing(listing(0, "Springfield")).await;
    wait_for_stream(&nats_url(), &settings.stream, 1).await;
    let a = TestApp::spawn(
        settings.clone(),
        Roles {
            projector: true,
            ..Roles::NONE
        },
    )
    .await;
    let b = TestApp::spawn(
        settings.clone(),
        Roles {
            projector: true,
            ..Roles::NONE
        },
    )
    .await;
    eventually("partitions not shared two and two", || async {
        a.metric("keh_projector_partitions_owned").await == 2.0
            && b.metric("keh_projector_partitions_owned").await == 2.0
    })
    .await;
    let keys: Vec<String> =
        join_all((1..13).map(|i| api.create_listing(listing(i, "Springfield")))).await;
    for key in &keys {
        wait_projected(&api, key, 1).await;
    }
    let (applied_a, applied_b) = (
        a.metric("keh_projector_applied_total").await,
        b.metric("keh_projector_applied_total").await,
    );
    assert_eq!(applied_a + applied_b, 13.0, "each event applied once");

    // One replica leaves: the other takes every partition and carries on.
    a.stop().await;
    eventually("partitions not taken over", || async {
        b.metric("keh_projector_partitions_owned").await == 4.0
    })
    .await;
    let more: Vec<String> =
        join_all((13..21).map(|i| api.create_listing(listing(i, "Springfield")))).await;
    for key in &more {
        wait_projected(&api, key, 1).await;
    }
    b.stop().await;
    api.stop().await;
    delete_stream(&nats_url(), &settings.stream).await;
}

#[tokio::test]
async fn upcoming_open_houses_are_listed_by_city_and_time() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    let springfield = app.create_listing(listing(1, "Springfield")).await;
    let shelbyville = app.create_listing(listing(2, "Shelbyville")).await;
    let schedule = |key: &str, start: &str, end: &str| {
        let request = app
            .client
            .post(app.url(&format!("/api/v1/listings/{key}/open-houses")))
            .json(&json!({"OpenHouseStartTime": start, "OpenHouseEndTime": end}));
        app.send(request)
    };
    let late = schedule(&springfield, "2027-06-02T14:00:00Z", "2027-06-02T16:00:00Z").await;
    schedule(&springfield, "2027-06-01T10:00:00Z", "2027-06-01T12:00:00Z").await;
    let other = schedule(&shelbyville, "2027-06-01T09:00:00Z", "2027-06-01T11:00:00Z").await;
    let canceled_key = other.body["OpenHouses"][0]["OpenHouseKey"]
        .as_str()
        .expect("key")
        .to_owned();
    let cancel = app
        .send(app.client.delete(app.url(&format!(
            "/api/v1/listings/{shelbyville}/open-houses/{canceled_key}"
        ))))
        .await;
    assert_eq!(cancel.status, 200);
    wait_projected(&app, &springfield, 3).await;
    wait_projected(&app, &shelbyville, 3).await;
    let all = app
        .send(
            app.client
                .get(app.url("/api/v1/open-houses?from=2027-01-01T00:00:00Z")),
        )
        .await;
    let starts: Vec<&str> = all.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["OpenHouseStartTime"].as_str().expect("start"))
        .collect();
    assert_eq!(
        starts,
        ["2027-06-01T10:00:00Z", "2027-06-02T14:00:00Z"],
        "canceled ones are left out; soonest first"
    );
    let in_city = app
        .send(
            app.client
                .get(app.url("/api/v1/open-houses?from=2027-01-01T00:00:00Z&city=shelbyville")),
        )
        .await;
    assert!(in_city.body["items"].as_array().expect("items").is_empty());
    let window = app
        .send(
            app.client.get(
                app.url("/api/v1/open-houses?from=2027-06-02T00:00:00Z&to=2027-06-03T00:00:00Z"),
            ),
        )
        .await;
    assert_eq!(
        window.body["items"][0]["OpenHouseKey"],
        late.body["OpenHouses"][0]["OpenHouseKey"]
    );
    let bad = app
        .send(app.client.get(app.url("/api/v1/open-houses?from=tomorrow")))
        .await;
    assert_eq!(bad.status, 400);
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}

#[tokio::test]
async fn an_event_that_cannot_apply_is_parked_and_holds_back_only_its_listing() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    let keys: Vec<String> =
        join_all((0..12).map(|i| app.create_listing(listing(i, "Springfield")))).await;
    for key in &keys {
        wait_projected(&app, key, 1).await;
    }
    // The read-model row of one listing is damaged: its next event can never apply.
    let broken = keys[0].clone();
    let pool = db.pool().await;
    sqlx::query(
        "UPDATE read_model.listings SET state = '{\"damaged\": true}' WHERE listing_key = $1",
    )
    .bind(&broken)
    .execute(&pool)
    .await
    .expect("damage");
    let changes = keys.iter().map(|k| {
        let request = app
            .client
            .post(app.url(&format!("/api/v1/listings/{k}/price")))
            .json(&json!({"ListPrice": 77000}));
        app.send(request)
    });
    join_all(changes).await;
    for key in &keys[1..] {
        wait_projected(&app, key, 2).await;
    }
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    loop {
        let parked: Option<(String, i64, String)> =
            sqlx::query_as("SELECT listing_key, sequence, reason FROM parked_events")
                .fetch_optional(&pool)
                .await
                .expect("parked");
        if let Some((key, sequence, reason)) = parked {
            assert_eq!((key.as_str(), sequence), (broken.as_str(), 2));
            assert!(reason.contains("cannot be read"), "{reason}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the unappliable event was not parked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.metric("keh_projector_parked_total").await, 1.0);
    pool.close().await;
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}

#[tokio::test]
async fn consumer_lag_on_metrics_grows_while_the_projector_is_stopped_and_drains_after() {
    let db = TestDb::create().await;
    let id = unique_id();
    let settings = settings(&db, &nats_url(), &id);
    let everything = TestApp::spawn(settings.clone(), Roles::ALL).await;
    let first = everything.create_listing(listing(0, "Springfield")).await;
    wait_projected(&everything, &first, 1).await;
    // The analytics worker has applied it too (so that neither group starts behind).
    let pool = db.pool().await;
    eventually("the analytics worker applies the first event", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM analytics.listing_facts WHERE listing_key = $1",
        )
        .bind(&first)
        .fetch_one(&pool)
        .await
        .unwrap_or(0)
            == 1
    })
    .await;
    pool.close().await;
    everything.stop().await;

    // No projector: the relay's leader sees the projector's consumers fall behind.
    let writer = TestApp::spawn(
        settings.clone(),
        Roles {
            projector: false,
            analytics: false,
            ..Roles::ALL
        },
    )
    .await;
    join_all((1..6).map(|i| writer.create_listing(listing(i, "Springfield")))).await;
    let internal = format!("stream=\"{}_INTERNAL\"", settings.stream);
    // The pool's state is exported too.
    assert_eq!(writer.metric("keh_db_pool_max_connections").await, 10.0);
    let connections = writer.metric_sum("keh_db_pool_connections", "state=").await;
    assert!(connections >= 1.0, "pool connections: {connections}");
    // So are database operation timings (a process-wide histogram: at least this test's).
    let appends = writer
        .metric_sum(
            "keh_db_operation_duration_seconds_count",
            "operation=\"event_store.append\"",
        )
        .await;
    assert!(appends >= 5.0, "event_store.append timings: {appends}");
    // Each consumer's gauge is refreshed on its own: wait until every one has seen the five
    // events. Each group may also have the first event to deliver again: a message is
    // acknowledged after its transaction commits, and a process that stops between the two
    // leaves it unacknowledged (the next owner skips it as a duplicate).
    eventually_observed(
        "pending messages of the stopped consumers are exported",
        || async {
            let projector = writer
                .metric_sum("keh_consumer_pending_messages", "consumer=\"projector-p")
                .await;
            let analytics = writer
                .metric_sum("keh_consumer_pending_messages", "consumer=\"analytics-p")
                .await;
            let stream = writer
                .metric_sum("keh_consumer_pending_messages", &internal)
                .await;
            (
                (5.0..=6.0).contains(&projector)
                    && (5.0..=6.0).contains(&analytics)
                    && stream == projector + analytics,
                format!("projector {projector}, analytics {analytics}, stream {stream}"),
            )
        },
    )
    .await;

    // The projector comes back and drains its partitions.
    let projector = TestApp::spawn(
        settings.clone(),
        Roles {
            projector: true,
            ..Roles::NONE
        },
    )
    .await;
    eventually_observed("the projector's lag drains", || async {
        let pending = writer
            .metric_sum("keh_consumer_pending_messages", "consumer=\"projector-p")
            .await;
        (pending == 0.0, format!("projector pending {pending}"))
    })
    .await;
    let lag_samples = projector.metric("keh_projection_lag_seconds_count").await;
    assert!(lag_samples >= 1.0, "projection lag samples: {lag_samples}");
    let applies = projector
        .metric_sum(
            "keh_db_operation_duration_seconds_count",
            "operation=\"projector.apply\"",
        )
        .await;
    assert!(applies >= 1.0, "projector.apply timings: {applies}");
    projector.stop().await;
    writer.stop().await;
    delete_stream(&nats_url(), &settings.stream).await;
}

#[tokio::test]
async fn clients_revalidate_without_bodies_and_get_compressed_answers() {
    // A listing the client has (If-None-Match names its version) is a 304 without a body,
    // until it changes; dashboard files carry build-time tags and revalidate the same way;
    // JSON and files are gzip or br as the client accepts, the live feed never.
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    let key = app.create_listing(listing(1, "Springfield")).await;
    let get = |path: String, tag: Option<&str>| {
        let mut request = app.client.get(app.url(&path));
        if let Some(tag) = tag {
            request = request.header("if-none-match", tag);
        }
        request.send()
    };
    let first = get(format!("/api/v1/listings/{key}?min_version=1"), None)
        .await
        .expect("get");
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["etag"], "\"1\"");
    for tag in ["\"1\"", "W/\"1\"", "\"7\", \"1\"", "*"] {
        let again = get(format!("/api/v1/listings/{key}"), Some(tag))
            .await
            .expect("get");
        assert_eq!(again.status(), 304, "If-None-Match: {tag}");
        assert_eq!(again.headers()["etag"], "\"1\"");
        assert!(
            again.bytes().await.expect("body").is_empty(),
            "a 304 has no body"
        );
    }
    let other = get(format!("/api/v1/listings/{key}"), Some("\"2\""))
        .await
        .expect("get");
    assert_eq!(other.status(), 200, "another version than the client's");
    let changed = app
        .post(
            &format!("/api/v1/listings/{key}/price"),
            &json!({"ListPrice": 123456}),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    let newer = get(
        format!("/api/v1/listings/{key}?min_version=2"),
        Some("\"1\""),
    )
    .await
    .expect("get");
    assert_eq!(
        newer.status(),
        200,
        "the listing changed since the client's copy"
    );
    assert_eq!(newer.headers()["etag"], "\"2\"");

    // Dashboard files: a tag each, a 304 for the tag the client has.
    for path in ["/", "/assets/app.js", "/assets/vendor/chart.umd.min.js"] {
        let file = get(path.to_owned(), None).await.expect("file");
        assert_eq!(file.status(), 200, "{path}");
        let tag = file.headers()["etag"].to_str().expect("tag").to_owned();
        assert!(
            tag.len() == 34 && tag.starts_with('"'),
            "{path}: strong tag {tag}"
        );
        let again = get(path.to_owned(), Some(&tag)).await.expect("file");
        assert_eq!(again.status(), 304, "{path}");
        assert!(again.bytes().await.expect("body").is_empty());
        let stale = get(path.to_owned(), Some("\"0123\"")).await.expect("file");
        assert_eq!(stale.status(), 200, "{path} with an old tag");
    }

    // The page refers to content-hashed files, which browsers may keep for ever; the page
    // itself is revalidated on every load.
    let page = get("/".to_owned(), None).await.expect("page");
    assert_eq!(page.headers()["cache-control"], "no-cache");
    let html = page.text().await.expect("html");
    let scripts: Vec<&str> = html
        .split("src=\"/assets/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert_eq!(scripts.len(), 2, "{html}");
    for script in scripts {
        assert!(
            script.starts_with("app.") || script.starts_with("vendor/chart.umd.min."),
            "{script}"
        );
        // One more dot than the plain name: the content hash.
        assert_eq!(
            script.matches('.').count(),
            if script.starts_with("app.") { 2 } else { 4 },
            "{script}"
        );
        let file = get(format!("/assets/{script}"), None).await.expect("file");
        assert_eq!(file.status(), 200, "{script}");
        assert_eq!(
            file.headers()["cache-control"],
            "public, max-age=31536000, immutable",
            "{script}"
        );
        if script.starts_with("app.") {
            let module = file.text().await.expect("module");
            assert!(
                !module.contains("'./api.js'") && module.contains("'./api."),
                "imports refer to hashed names: {module}"
            );
        }
    }

    // Compression as accepted.
    for (accept, expected) in [
        ("gzip", Some("gzip")),
        ("br", Some("br")),
        ("identity", None),
    ] {
        for path in [
            "/api/v1/listings?limit=5",
            "/assets/vendor/chart.umd.min.js",
        ] {
            let response = app
                .client
                .get(app.url(path))
                .header("accept-encoding", accept)
                .send()
                .await
                .expect("get");
            assert_eq!(response.status(), 200);
            assert_eq!(
                response
                    .headers()
                    .get("content-encoding")
                    .and_then(|v| v.to_str().ok()),
                expected,
                "{path} with Accept-Encoding: {accept}"
            );
        }
    }
    let chart = app
        .client
        .get(app.url("/assets/vendor/chart.umd.min.js"))
        .header("accept-encoding", "br")
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert!(
        chart.len() < 100_000,
        "Chart.js compressed: {} bytes",
        chart.len()
    );
    let feed = app
        .client
        .get(app.url("/api/v1/listing-events"))
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .expect("feed");
    assert_eq!(feed.status(), 200);
    assert!(
        feed.headers().get("content-encoding").is_none(),
        "the live feed is never compressed"
    );
    drop(feed);
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}

#[tokio::test]
async fn open_live_feeds_end_when_the_process_shuts_down_so_it_drains_at_once() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    app.create_listing(listing(0, "Springfield")).await;
    wait_for_stream(&nats_url(), &app.settings.stream, 1).await;
    let mut feed = app
        .client
        .get(app.url("/api/v1/listing-events?last_event_id=0"))
        .send()
        .await
        .expect("feed");
    assert_eq!(feed.status(), 200);
    // The first event arrives, and the stream stays open.
    let first = tokio::time::timeout(Duration::from_secs(5), feed.chunk())
        .await
        .expect("a first chunk")
        .expect("the feed is open");
    assert!(first.is_some());
    // Shutting down ends the stream instead of waiting for the client to leave: `stop`
    // fails the test if the drain takes longer than its limit.
    let started = std::time::Instant::now();
    app.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?} with a live feed open",
        started.elapsed()
    );
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = feed.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the live feed was not ended by the shutdown");
}
