//! Least privilege in PostgreSQL: each role runs as its own database role and can do its
//! job, and nothing more (the query API's role cannot append to the event table).

use kubeestatehub::Roles;
use serde_json::json;
use sqlx::PgPool;

use crate::harness::*;

/// A login role of `group`, unique to this test; dropped by `drop_logins`.
async fn login(admin: &PgPool, group: &str, id: &str) -> String {
    let name = format!("keh_t_{group}_{id}").to_lowercase();
    sqlx::query(&format!("CREATE ROLE {name} LOGIN IN ROLE keh_{group}"))
        .execute(admin)
        .await
        .expect("create login");
    name
}

fn url_as(db: &TestDb, user: &str) -> String {
    let (_, rest) = db.url.split_once("://").expect("url");
    let (_, host) = rest.split_once('@').expect("user@host");
    format!("postgres://{user}@{host}")
}

#[tokio::test]
async fn each_role_runs_as_its_own_database_role_and_no_more() {
    let db = TestDb::create().await;
    let id = unique_id();
    let admin = db.pool().await;
    keh_store::migrate(&admin).await.expect("migrate");
    let mut logins = Vec::new();
    let mut apps = Vec::new();
    let base = settings(&db, &nats_url(), &id);
    for (group, roles) in [
        (
            "command",
            Roles {
                command_api: true,
                ..Roles::NONE
            },
        ),
        (
            "query",
            Roles {
                query_api: true,
                ..Roles::NONE
            },
        ),
        (
            "relay",
            Roles {
                relay: true,
                ..Roles::NONE
            },
        ),
        (
            "projector",
            Roles {
                projector: true,
                ..Roles::NONE
            },
        ),
        (
            "analytics",
            Roles {
                analytics: true,
                ..Roles::NONE
            },
        ),
    ] {
        let user = login(&admin, group, &id).await;
        let mut settings = base.clone();
        settings.database_url = url_as(&db, &user).parse().expect("url");
        settings.migrate = false;
        apps.push(TestApp::spawn_as(settings, roles, db.url.clone()).await);
        logins.push(user);
    }
    let (command, query) = (&apps[0], &apps[1]);

    // The whole pipeline works with each role's own privileges.
    let created = command
        .post(
            "/api/v1/listings",
            &json!({"PropertyType": "Residential", "ListPrice": 350000, "City": "Springfield",
                    "StandardStatus": "Active", "PrivateRemarks": "key under the mat"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let key = created.body["ListingKey"].as_str().unwrap().to_owned();
    // MLS numbers are reserved and released by the event table's trigger, as the command role.
    for listing_id in ["MLS-1", "MLS-2"] {
        let patched = command
            .send(
                command
                    .client
                    .patch(command.url(&format!("/api/v1/listings/{key}")))
                    .json(&json!({ "ListingId": listing_id })),
            )
            .await;
        assert_eq!(patched.status, 200, "{}", patched.body);
    }
    // The projector (own role) projected it.
    wait_projected(query, &key, 3).await;
    eventually(
        "the analytics worker (own role) computes the market",
        || async {
            query
                .send(
                    query
                        .client
                        .get(query.url("/api/v1/market/areas?area_kind=city")),
                )
                .await
                .body["items"]
                .as_array()
                .is_some_and(|items| !items.is_empty())
        },
    )
    .await;
    let report = query
        .post(
            "/api/v1/market/reports",
            &json!({"AreaKind": "city", "Area": "Springfield", "From": "2026-01-01", "To": "2026-12-31"}),
        )
        .await;
    assert_eq!(
        report.status, 202,
        "the query API queues reports: {}",
        report.body
    );
    let key_made = query
        .post(
            "/api/v1/admin/api-keys",
            &json!({"name": "integration", "scopes": ["read"]}),
        )
        .await;
    assert_eq!(
        key_made.status, 201,
        "the query API writes sign-in state: {}",
        key_made.body
    );
    let api_key = key_made.body["key"].as_str().unwrap();
    let with_key = command
        .send(
            client_with(Some(api_key))
                .post(command.url("/api/v1/listings"))
                .json(&json!({"PropertyType": "Land", "ListPrice": 1})),
        )
        .await;
    assert_eq!(
        with_key.status, 403,
        "the command API reads API keys: {}",
        with_key.body
    );

    // And nothing more.
    let refused = |user: &str, sql: &'static str| {
        let url = url_as(&db, user);
        async move {
            let pool = PgPool::connect(&url).await.expect("connect");
            let error = sqlx::query(sql).execute(&pool).await.expect_err(sql);
            pool.close().await;
            match error {
                sqlx::Error::Database(e) => e.code().map(|c| c.to_string()),
                other => Some(other.to_string()),
            }
        }
    };
    let insert_event = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                        VALUES ('Listing', 'forged', 1, 'ListingCreated', '1', '{}', '{}')";
    let denied = Some("42501".to_owned());
    assert_eq!(
        refused(&logins[1], insert_event).await,
        denied,
        "query API appending an event"
    );
    for user in &logins[2..] {
        assert_eq!(
            refused(user, insert_event).await,
            denied,
            "{user} appending an event"
        );
    }
    for user in &logins {
        assert_eq!(
            refused(user, "DELETE FROM events").await,
            denied,
            "{user} deleting events"
        );
        assert_eq!(
            refused(user, "UPDATE events SET event_type = 'x'").await,
            denied,
            "{user} rewriting events"
        );
    }
    assert_eq!(
        refused(&logins[1], "UPDATE read_model.listings SET list_price = 1").await,
        denied
    );
    assert_eq!(
        refused(&logins[2], "DELETE FROM read_model.listings").await,
        denied
    );
    assert_eq!(
        refused(&logins[3], "DELETE FROM analytics.market_metrics").await,
        denied
    );
    assert_eq!(refused(&logins[0], "DELETE FROM auth.users").await, denied);

    for app in apps {
        app.stop().await;
    }
    admin.close().await;
    drop(db);
    let postgres = PgPool::connect(&admin_url()).await.expect("admin");
    for user in logins {
        let _ = sqlx::query(&format!("DROP ROLE IF EXISTS {user}"))
            .execute(&postgres)
            .await;
    }
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}
