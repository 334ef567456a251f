//! What an outside probe found, and must never find again: forgeable or immortal tokens,
//! unbounded metric labels, replay amplification, names on public surfaces, open metrics,
//! unthrottled guessing, unsafe media URLs, hidden listings readable, confusable usernames
//! and weak passwords, and the small leaks at the edges.

use std::time::{Duration, Instant};

use keh_auth::Role;
use keh_auth::keys::KeyRing;
use keh_auth::tokens::Claims;
use kubeestatehub::Roles;
use kubeestatehub::cli::Settings;
use serde_json::{Value, json};

use crate::auth::{sign_in, user};
use crate::harness::*;

/// The key the repository once shipped as a default, and the tests' own key: constants
/// anyone can read.
const PUBLISHED_KEYS: [&str; 2] = [
    "development-only-signing-key-never-use-in-production",
    TEST_SECRET,
];

/// Settings that configure no signing key, as `kubeestatehub all` without configuration.
fn unconfigured(db: &TestDb, id: &str) -> Settings {
    let mut settings = settings(db, &nats_url(), id);
    settings.jwt_secret = None;
    settings
}

/// Claims of an administrator that does not exist, valid for ten years.
fn forged_claims() -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        iss: "kubeestatehub".to_owned(),
        aud: "kubeestatehub-api".to_owned(),
        sub: uuid::Uuid::new_v4().to_string(),
        name: "admin".to_owned(),
        role: Role::Admin,
        agent_key: None,
        office_key: None,
        sid: uuid::Uuid::new_v4().to_string(),
        ver: 0,
        iat: now,
        exp: now + 10 * 365 * 24 * 3600,
        jti: "forged".to_owned(),
    }
}

/// The status of an admin read and of a command with `token`.
async fn admin_and_write(app: &TestApp, token: &str) -> (u16, u16) {
    let client = client_with(Some(token));
    let admin = app
        .send(client.get(app.url("/api/v1/admin/users")))
        .await
        .status;
    let write = app
        .send(
            client
                .post(app.url("/api/v1/listings"))
                .json(&json!({"PropertyType": "Land", "ListPrice": 1})),
        )
        .await
        .status;
    (admin, write)
}

async fn me(app: &TestApp, token: &str) -> u16 {
    app.send(client_with(Some(token)).get(app.url("/api/v1/auth/me")))
        .await
        .status
}

#[tokio::test]
async fn tokens_signed_with_a_published_key_are_refused_and_generated_keys_survive_restarts() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(unconfigured(&db, &id), Roles::ALL).await;
    let pool = users(&db, &app, &[("ada", Role::Admin, None)]).await;
    let ada = signed_in(&app, "ada").await;
    let real = claims_of(&ada);
    let generated_kid = jsonwebtoken::decode_header(&ada).unwrap().kid.unwrap();
    assert!(generated_kid.starts_with("g-"), "{generated_kid}");

    // Forged with every published key, under every key id: the constant's own, the
    // installation's real one, none; for a made-up admin and for the real one.
    let mut failures = Vec::new();
    for key in PUBLISHED_KEYS {
        let secret = keh_auth::Secret::new(key);
        let ring = KeyRing::configured(&secret, &[]);
        for claims in [forged_claims(), real.clone()] {
            let token = ring.sign(&claims).unwrap();
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            let encoding = jsonwebtoken::EncodingKey::from_secret(key.as_bytes());
            header.kid = Some(generated_kid.clone());
            let stolen_kid = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
            header.kid = None;
            let no_kid = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
            for (what, token) in [
                ("own kid", token),
                ("real kid", stolen_kid),
                ("no kid", no_kid),
            ] {
                let got = admin_and_write(&app, &token).await;
                if got != (401, 401) {
                    failures.push(format!("{key} / {what} / {}: {got:?}", claims.sub));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(admin_and_write(&app, &ada).await.0, 200);

    // The key is the installation's: a restart and a second replica accept the token.
    app.stop().await;
    let restarted = TestApp::spawn(unconfigured(&db, &id), Roles::ALL).await;
    let replica = TestApp::spawn(unconfigured(&db, &id), Roles::APIS).await;
    assert_eq!(me(&restarted, &ada).await, 200);
    assert_eq!(me(&replica, &ada).await, 200);
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM auth.signing_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        keys, 1,
        "one key per installation, however many processes start"
    );
    replica.stop().await;
    restarted.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}

#[tokio::test]
async fn a_configured_key_shorter_than_32_bytes_is_refused_at_start() {
    let db = TestDb::create().await;
    let mut settings = settings(&db, &nats_url(), &unique_id());
    settings.jwt_secret = Some(keh_auth::Secret::new("short-secret"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let outcome = kubeestatehub::start(
        settings,
        Roles::ALL,
        listener,
        tokio_util::sync::CancellationToken::new(),
    )
    .await;
    let error = outcome.expect_err("must refuse to start").to_string();
    assert!(error.contains("at least 32 bytes"), "{error}");
}

#[tokio::test]
async fn rotating_keys_keeps_sessions_and_retiring_one_ends_its_tokens_everywhere() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(unconfigured(&db, &id), Roles::ALL).await;
    let replica = TestApp::spawn(
        unconfigured(&db, &id),
        Roles {
            query_api: true,
            ..Roles::NONE
        },
    )
    .await;
    let pool = users(&db, &app, &[("ada", Role::Admin, None)]).await;
    let before = signed_in(&app, "ada").await;

    // A rotation: the new key signs at once on every replica; the old one still verifies.
    let new_kid = keh_auth::keys::rotate(&pool, Duration::from_secs(600))
        .await
        .unwrap();
    let after = eventually_value(|| async {
        let token = signed_in(&replica, "ada").await;
        (jsonwebtoken::decode_header(&token).unwrap().kid.as_deref() == Some(new_kid.as_str()))
            .then_some(token)
    })
    .await;
    for instance in [&app, &replica] {
        assert_eq!(me(instance, &before).await, 200, "old key still verifies");
        assert_eq!(me(instance, &after).await, 200);
    }

    // A retired key stops verifying when its time is up, with no further notification.
    let short = keh_auth::keys::rotate(&pool, Duration::from_secs(2))
        .await
        .unwrap();
    let during = eventually_value(|| async {
        let token = signed_in(&replica, "ada").await;
        (jsonwebtoken::decode_header(&token).unwrap().kid.as_deref() == Some(short.as_str()))
            .then_some(token)
    })
    .await;
    keh_auth::keys::rotate(&pool, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(me(&app, &during).await, 200, "within its overlap");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(me(&app, &during).await, 401, "after its overlap");
    assert_eq!(me(&replica, &during).await, 401, "after its overlap");

    // A leaked key retired now: its tokens stop at once everywhere; sign-in goes on.
    let retired_at = Instant::now();
    keh_auth::keys::rotate(&pool, Duration::ZERO).await.unwrap();
    for token in [&before, &after] {
        for instance in [&app, &replica] {
            while me(instance, token).await != 401 {
                assert!(
                    retired_at.elapsed() < Duration::from_secs(1),
                    "a retired key still verified after 1 s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let fresh = signed_in(&replica, "ada").await;
    assert_eq!(me(&app, &fresh).await, 200);
    replica.stop().await;
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}

#[tokio::test]
async fn a_configured_secret_rotates_through_previous_secrets() {
    let db = TestDb::create().await;
    let id = unique_id();
    let first = keh_auth::Secret::new("first-configured-secret-0123456789abcdef");
    let second = keh_auth::Secret::new("second-configured-secret-0123456789abcdef");
    let with = |current: &keh_auth::Secret, previous: Vec<keh_auth::Secret>| {
        let mut settings = settings(&db, &nats_url(), &id);
        settings.jwt_secret = Some(current.clone());
        settings.jwt_previous_secrets = previous;
        settings
    };
    let roles = Roles {
        query_api: true,
        ..Roles::NONE
    };
    let app = TestApp::spawn(with(&first, Vec::new()), roles).await;
    users(&db, &app, &[("ada", Role::Admin, None)]).await;
    let old = signed_in(&app, "ada").await;
    app.stop().await;

    let rotated = TestApp::spawn(with(&second, vec![first.clone()]), roles).await;
    assert_eq!(
        me(&rotated, &old).await,
        200,
        "the previous secret verifies"
    );
    let new = signed_in(&rotated, "ada").await;
    assert_ne!(
        jsonwebtoken::decode_header(&new).unwrap().kid,
        jsonwebtoken::decode_header(&old).unwrap().kid
    );
    rotated.stop().await;

    let done = TestApp::spawn(with(&second, Vec::new()), roles).await;
    assert_eq!(
        me(&done, &old).await,
        401,
        "a dropped secret verifies nothing"
    );
    assert_eq!(me(&done, &new).await, 200);
    done.stop().await;
}

/// Polls `check` until it gives a value (10 s at most).
async fn eventually_value<T, F, Fut>(check: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "never happened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `token` is refused on every instance, failing if that takes more than 1 s
/// from `since`.
async fn refused_within_a_second(instances: &[&TestApp], token: &str, since: Instant, what: &str) {
    for instance in instances {
        loop {
            let status = me(instance, token).await;
            if status == 401 {
                break;
            }
            assert_eq!(status, 200, "{what}");
            assert!(
                since.elapsed() < Duration::from_secs(1),
                "{what}: the token still worked after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn disabling_demoting_deleting_or_signing_out_ends_access_tokens_at_once_on_every_replica() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    let replica = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::APIS).await;
    let both = [&app, &replica];
    let agent = Some("AGENT-D");
    let pool = users(
        &db,
        &app,
        &[
            ("dora", Role::Agent, agent),
            ("dan", Role::Agent, agent),
            ("dee", Role::Agent, agent),
            ("sam", Role::Agent, agent),
        ],
    )
    .await;
    let admin = &app.client;
    let user_id = |name: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, uuid::Uuid>(
                "SELECT user_id FROM auth.users WHERE username = $1",
            )
            .bind(name)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };

    // Each token is in use (and cached) on both replicas before its user changes.
    let token = |session: &Value| session["access_token"].as_str().unwrap().to_owned();
    let dora = token(&sign_in(&app, "dora").await);
    let dan = token(&sign_in(&app, "dan").await);
    let dee = token(&sign_in(&app, "dee").await);
    let sam_session = sign_in(&app, "sam").await;
    let sam = token(&sam_session);
    let sam_other = token(&sign_in(&app, "sam").await);
    for t in [&dora, &dan, &dee, &sam, &sam_other] {
        for instance in both {
            assert_eq!(me(instance, t).await, 200);
        }
    }

    let since = Instant::now();
    let disabled = app
        .send(
            admin
                .patch(app.url(&format!("/api/v1/admin/users/{}", user_id("dora").await)))
                .json(&json!({"disabled": true})),
        )
        .await;
    assert_eq!(disabled.status, 200, "{}", disabled.body);
    refused_within_a_second(&both, &dora, since, "disabled").await;

    let since = Instant::now();
    let demoted = replica
        .send(
            client_with(Some(&app.token(Role::Admin, None).await))
                .patch(replica.url(&format!("/api/v1/admin/users/{}", user_id("dan").await)))
                .json(&json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(demoted.status, 200, "{}", demoted.body);
    refused_within_a_second(&both, &dan, since, "demoted").await;
    let again = sign_in(&app, "dan").await;
    assert_eq!(
        again["user"]["role"], "viewer",
        "signing in again gives the new role"
    );

    let since = Instant::now();
    sqlx::query("DELETE FROM auth.users WHERE username = 'dee'")
        .execute(&pool)
        .await
        .unwrap();
    refused_within_a_second(&both, &dee, since, "deleted").await;

    // Signing out ends that session's access token, not the user's other sessions.
    let since = Instant::now();
    let out = app
        .send(
            client_with(None)
                .post(app.url("/api/v1/auth/sign-out"))
                .json(&json!({"refresh_token": sam_session["refresh_token"]})),
        )
        .await;
    assert_eq!(out.status, 204);
    refused_within_a_second(&both, &sam, since, "signed out").await;
    for instance in both {
        assert_eq!(
            me(instance, &sam_other).await,
            200,
            "another session goes on"
        );
    }

    // A well-signed token for a user id that never existed.
    let ghost = KeyRing::configured(&keh_auth::Secret::new(TEST_SECRET), &[])
        .sign(&Claims {
            sub: uuid::Uuid::new_v4().to_string(),
            ..claims_of(&sam_other)
        })
        .unwrap();
    let reply = app
        .send(client_with(Some(&ghost)).get(app.url("/api/v1/auth/me")))
        .await;
    assert_eq!(reply.status, 401);
    assert!(
        reply.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("does not exist")),
        "{}",
        reply.body
    );
    replica.stop().await;
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}

/// An access token of `name` (a user with [`crate::auth::password_of`]), by signing in.
async fn signed_in(app: &TestApp, name: &str) -> String {
    sign_in(app, name).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Users made straight in `app`'s store (passwords from [`crate::auth::password_of`]);
/// returns a pool on its database.
async fn users(db: &TestDb, app: &TestApp, who: &[(&str, Role, Option<&str>)]) -> sqlx::PgPool {
    let pool = db.pool().await;
    let auth = keh_auth::AuthService::new(pool.clone(), app.settings.auth());
    for (name, role, agent_key) in who {
        user(&auth, name, *role, *agent_key).await;
    }
    pool
}

/// Reads `count` events of a live-feed response: their envelopes.
async fn feed_envelopes(mut response: reqwest::Response, count: usize) -> Vec<Value> {
    let mut envelopes = Vec::new();
    let mut buffer = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while envelopes.len() < count {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("feed events in time")
            .expect("chunk")
            .expect("feed open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) {
                envelopes.push(serde_json::from_str(data.trim()).expect("envelope"));
            }
        }
    }
    envelopes
}

fn is_problem(reply: &Reply, status: u16) -> bool {
    reply.status == status && reply.header("content-type") == Some("application/problem+json")
}

#[tokio::test]
async fn unknown_methods_and_routes_add_no_metric_series() {
    let db = TestDb::create().await;
    let app = TestApp::spawn(settings(&db, &nats_url(), &unique_id()), Roles::ALL).await;
    let scrape = || async {
        app.send(client_with(None).get(app.url("/metrics")))
            .await
            .body
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let before = scrape().await;
    for i in 0..100 {
        let method = reqwest::Method::from_bytes(format!("ZZZ{i}").as_bytes()).unwrap();
        let reply = app
            .send(client_with(None).request(method, app.url(&format!("/nope/{i}"))))
            .await;
        assert!(reply.status >= 400, "{}", reply.status);
        let reply = app
            .send(client_with(None).get(app.url(&format!("/api/v1/unknown-{i}"))))
            .await;
        assert!(is_problem(&reply, 404), "{}", reply.status);
    }
    let after = scrape().await;
    assert!(!after.contains("ZZZ") && !after.contains("/nope") && !after.contains("unknown-"));
    assert!(
        after.contains("method=\"OTHER\""),
        "unknown methods share a label"
    );
    assert!(
        after.len() < before.len() + 8_000,
        "200 requests with made-up methods and paths grew /metrics by {} bytes",
        after.len() - before.len()
    );
}

#[tokio::test]
async fn metrics_and_the_detailed_health_report_are_not_public() {
    let db = TestDb::create().await;
    let mut settings = settings(&db, &nats_url(), &unique_id());
    let token = "metrics-token-0123456789abcdef";
    settings.metrics_token = Some(keh_auth::Secret::new(token));
    let app = TestApp::spawn(settings, Roles::ALL).await;
    // Through a proxy (the Gateway), a caller is not local whatever its address.
    let outside = |bearer: Option<&str>, path: &str| {
        let mut request = client_with(bearer)
            .get(app.url(path))
            .header("x-forwarded-for", "203.0.113.9");
        if bearer.is_none() {
            request = request.header("x-real-ip", "203.0.113.9");
        }
        app.send(request)
    };
    let admin = app.token(Role::Admin, None).await;
    for path in ["/metrics", "/api/v1/metrics"] {
        for bearer in [None, Some("wrong-token"), Some(admin.as_str())] {
            let reply = outside(bearer, path).await;
            assert!(
                is_problem(&reply, 401),
                "{path} {bearer:?}: {}",
                reply.status
            );
            assert!(reply.header("www-authenticate").is_some());
        }
        let reply = outside(Some(token), path).await;
        assert_eq!(reply.status, 200, "{path} with the metrics token");
        assert!(
            reply
                .body
                .as_str()
                .unwrap()
                .contains("keh_http_requests_total")
        );
        // Local callers (kubeestatehub health, a sidecar, bench on a laptop) need no token.
        let local = app.send(client_with(None).get(app.url(path))).await;
        assert_eq!(local.status, 200);
    }
    for path in ["/api/v1/health", "/api/v1/health/ready"] {
        let public = outside(None, path).await;
        assert_eq!(public.status, 200, "{path}");
        assert_eq!(
            public.body,
            json!({"status": "ready"}),
            "{path}: a plain status"
        );
        let detailed = outside(Some(token), path).await;
        assert!(
            detailed.body["checks"].is_array(),
            "{path}: {}",
            detailed.body
        );
    }
    assert_eq!(outside(None, "/api/v1/health/live").await.status, 200);
}

#[tokio::test]
async fn edges_answer_problems_bounded_ids_and_sane_retry_delays() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    // 414 and 431 as problem+json.
    let long = app
        .send(client_with(None).get(app.url(&format!("/api/v1/listings?q={}", "a".repeat(9_000)))))
        .await;
    assert!(is_problem(&long, 414), "{} {}", long.status, long.body);
    let mut request = client_with(None).get(app.url("/api/v1/listings"));
    for i in 0..40 {
        request = request.header(format!("x-padding-{i}"), "p".repeat(1_000));
    }
    let headers = app.send(request).await;
    assert!(
        is_problem(&headers, 431),
        "{} {}",
        headers.status,
        headers.body
    );

    // A safe request id is echoed; anything else is replaced.
    for (sent, echoed) in [
        ("abc-123_x.y:z", true),
        ("<script>alert(1)</script>", false),
        ("a b", false),
        (&"x".repeat(200)[..], false),
    ] {
        let reply = app
            .send(
                client_with(None)
                    .get(app.url("/api/v1/health/live"))
                    .header("x-request-id", sent),
            )
            .await;
        let got = reply.header("x-request-id").unwrap_or_default().to_owned();
        assert_eq!(got == sent, echoed, "{sent} -> {got}");
        assert!(!got.is_empty());
    }

    // A resume point beyond the stream's end is a 400, not a silent wait.
    app.create_listing(json!({"PropertyType": "Land", "ListPrice": 1000}))
        .await;
    wait_for_stream(&nats_url(), &format!("KEH_T_{id}"), 1).await;
    let ahead = app
        .send(client_with(None).get(app.url("/api/v1/listing-events?last_event_id=999999")))
        .await;
    assert!(is_problem(&ahead, 400), "{} {}", ahead.status, ahead.body);
    assert!(ahead.body["detail"].as_str().unwrap().contains("beyond"));
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}

#[test]
fn a_retry_after_is_never_below_one_second() {
    use axum::response::IntoResponse as _;
    let mut problem = keh_http::Problem::from_status(axum::http::StatusCode::TOO_MANY_REQUESTS);
    problem.retry_after_secs = Some(0);
    let response = problem.into_response();
    assert_eq!(response.headers()["retry-after"], "1");
}

#[tokio::test]
async fn the_live_feed_takes_single_purpose_tickets_and_bounds_what_anonymous_callers_replay() {
    let db = TestDb::create().await;
    let id = unique_id();
    let mut settings = settings(&db, &nats_url(), &id);
    settings.feed_anonymous_replay = 5;
    settings.feed_max_streams_per_caller = 2;
    let app = TestApp::spawn(settings, Roles::ALL).await;
    for i in 0..12 {
        app.create_listing(json!({"PropertyType": "Land", "ListPrice": 1000 + i}))
            .await;
    }
    wait_for_stream(&nats_url(), &format!("KEH_T_{id}"), 12).await;
    let feed = |query: String, bearer: Option<String>| {
        let url = app.url(&format!("/api/v1/listing-events{query}"));
        async move {
            client_with(bearer.as_deref())
                .get(url)
                .send()
                .await
                .expect("feed")
        }
    };

    // Anonymous replay is bounded, with a way out named; recent resumption works.
    let deep = feed("?last_event_id=1".to_owned(), None).await;
    assert_eq!(deep.status(), 409);
    let problem: Value = deep.json().await.unwrap();
    assert_eq!(problem["type"], "/api/v1/problems/replay-too-deep");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("sign in") && detail.contains("history") && detail.contains("NATS"));
    let recent = feed("?last_event_id=9".to_owned(), None).await;
    assert_eq!(recent.status(), 200);
    assert_eq!(feed_envelopes(recent, 3).await.len(), 3);

    // A signed-in caller replays any depth, through a one-minute ticket.
    let viewer = app.token(Role::Viewer, None).await;
    let ticket = app
        .send(client_with(Some(&viewer)).post(app.url("/api/v1/auth/feed-ticket")))
        .await;
    assert_eq!(ticket.status, 200, "{}", ticket.body);
    assert_eq!(ticket.body["expires_in"], 60);
    let ticket = ticket.body["ticket"].as_str().unwrap().to_owned();
    let full = feed(format!("?last_event_id=0&ticket={ticket}"), None).await;
    assert_eq!(full.status(), 200);
    assert_eq!(feed_envelopes(full, 12).await.len(), 12);
    // Single purpose: a ticket opens nothing else, an access token is no ticket.
    assert_eq!(me(&app, &ticket).await, 401);
    assert_eq!(
        feed(format!("?ticket={viewer}"), None).await.status(),
        401,
        "an access token is not a ticket"
    );
    assert_eq!(feed("?ticket=garbage".to_owned(), None).await.status(), 401);
    let anonymous_ticket = app
        .send(client_with(None).post(app.url("/api/v1/auth/feed-ticket")))
        .await;
    assert!(is_problem(&anonymous_ticket, 401));
    // `?access_token=` still works for existing clients (deprecated).
    assert_eq!(
        feed(format!("?access_token={viewer}&last_event_id=0"), None)
            .await
            .status(),
        200
    );

    // Connections per caller are bounded: a third anonymous one from one address waits.
    let first = feed(String::new(), None).await;
    let second = feed(String::new(), None).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = feed(String::new(), None).await;
    assert_eq!(third.status(), 429);
    assert!(third.headers().get("retry-after").is_some());
    // Another caller has its own allowance.
    assert_eq!(
        feed(String::new(), Some(viewer.clone())).await.status(),
        200
    );
    drop((first, second));
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}

#[tokio::test]
async fn public_surfaces_name_no_user_or_key() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    users(&db, &app, &[("alice", Role::Agent, Some("AGENT-A"))]).await;
    let alice = signed_in(&app, "alice").await;
    let anonymous_feed = client_with(None)
        .get(app.url("/api/v1/listing-events"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous_feed.status(), 200);
    let created = app
        .send(
            client_with(Some(&alice))
                .post(app.url("/api/v1/listings"))
                .json(&json!({"PropertyType": "Residential", "ListPrice": 300000})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let key = created.body["ListingKey"].as_str().unwrap().to_owned();
    let key_reply = app
        .send(
            app.client
                .post(app.url("/api/v1/admin/api-keys"))
                .json(&json!({"name": "crm-sync", "scopes": ["write"]})),
        )
        .await;
    let api_key = key_reply.body["key"].as_str().unwrap().to_owned();
    let priced = app
        .send(
            client_with(Some(&api_key))
                .post(app.url(&format!("/api/v1/listings/{key}/price")))
                .json(&json!({"ListPrice": 290000})),
        )
        .await;
    assert_eq!(priced.status, 200, "{}", priced.body);
    wait_projected(&app, &key, 2).await;

    let actors = |items: &Value| -> Vec<String> {
        items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["Actor"].as_str().unwrap().to_owned())
            .collect()
    };
    let history = format!("/api/v1/listings/{key}/history");
    let anonymous = app.send(client_with(None).get(app.url(&history))).await;
    assert_eq!(actors(&anonymous.body["items"]), ["user", "api-key"]);
    let viewer = app.token(Role::Viewer, None).await;
    let as_viewer = app
        .send(client_with(Some(&viewer)).get(app.url(&history)))
        .await;
    assert_eq!(actors(&as_viewer.body["items"]), ["user", "api-key"]);
    let as_agent = app
        .send(client_with(Some(&alice)).get(app.url(&history)))
        .await;
    let named = actors(&as_agent.body["items"]);
    assert_eq!(named[0], "user:alice");
    assert!(named[1].starts_with("api-key:crm-sync:"), "{named:?}");

    let live: Vec<String> = feed_envelopes(anonymous_feed, 2)
        .await
        .iter()
        .map(|e| e["Actor"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(live, ["user", "api-key"], "the live feed");
    let public = wait_for_stream(&nats_url(), &format!("KEH_T_{id}"), 2).await;
    let published: Vec<&str> = public
        .iter()
        .map(|m| m.envelope["Actor"].as_str().unwrap())
        .collect();
    assert_eq!(published, ["user", "api-key"], "the public stream");
    assert_eq!(public.len(), 2, "one message per event");
    let internal = wait_for_stream(&nats_url(), &format!("KEH_T_{id}_INTERNAL"), 2).await;
    assert_eq!(
        internal[0].envelope["Actor"], "user:alice",
        "the platform's own lane"
    );
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}

#[tokio::test]
async fn sign_in_guessing_on_one_account_waits_longer_whatever_the_address() {
    let db = TestDb::create().await;
    let app = TestApp::spawn(settings(&db, &nats_url(), &unique_id()), Roles::ALL).await;
    let pool = users(
        &db,
        &app,
        &[("gina", Role::Viewer, None), ("hugo", Role::Viewer, None)],
    )
    .await;
    let attempt = |name: &'static str, password: String, address: usize| {
        let url = app.url("/api/v1/auth/token");
        let app = &app;
        async move {
            app.send(
                client_with(None)
                    .post(url)
                    .header("x-forwarded-for", format!("198.51.100.{address}"))
                    .json(&json!({"username": name, "password": password})),
            )
            .await
        }
    };
    for i in 0..keh_auth::service::FREE_SIGN_IN_FAILURES + 1 {
        let reply = attempt(
            "gina",
            "wrong guess".to_owned(),
            usize::try_from(i).unwrap(),
        )
        .await;
        assert_eq!(reply.status, 401, "attempt {i}: {}", reply.body);
    }
    // The failure past the free ones starts a wait of one second. Read from the database:
    // the guess's own password check can take longer than that on a busy machine, and a
    // second attempt would then find the wait already over.
    let wait_after_last_failure = || {
        sqlx::query_scalar::<_, f64>(
            "SELECT round(EXTRACT(EPOCH FROM blocked_until - last_failure))::float8
               FROM auth.sign_in_failures WHERE username_key = 'gina'",
        )
        .fetch_one(&pool)
    };
    assert_eq!(wait_after_last_failure().await.unwrap(), 1.0);
    // Each further failure doubles it: once two more waits have run out and been used, the
    // next one is 8 s, long enough for what follows to happen inside it.
    sqlx::query(
        "UPDATE auth.sign_in_failures SET failures = $1, blocked_until = now()
          WHERE username_key = 'gina'",
    )
    .bind(keh_auth::service::FREE_SIGN_IN_FAILURES + 3)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(
        attempt("gina", "wrong guess".to_owned(), 50).await.status,
        401
    );
    assert_eq!(wait_after_last_failure().await.unwrap(), 8.0);
    // Now even the right password waits, from any address; the account owner is told how
    // long, never 0 s.
    let refused = attempt("gina", crate::auth::password_of("gina"), 99).await;
    assert!(
        is_problem(&refused, 429),
        "{} {}",
        refused.status,
        refused.body
    );
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=8).contains(&retry), "Retry-After {retry}");
    // Other accounts are not affected, and case variants are the same account.
    assert_eq!(
        attempt("hugo", crate::auth::password_of("hugo"), 7)
            .await
            .status,
        200
    );
    assert_eq!(
        attempt("GINA", "wrong guess".to_owned(), 8).await.status,
        429
    );
    tokio::time::sleep(Duration::from_secs(retry) + Duration::from_millis(200)).await;
    assert_eq!(
        attempt("gina", crate::auth::password_of("gina"), 98)
            .await
            .status,
        200
    );
    // Guesses sent at once are counted at once: no more than the free ones get through, plus
    // the one that starts the wait and one more each time a wait (1 s, then 2 s, 4 s, …)
    // runs out before the last guess arrives (a busy machine can take seconds to hash 20
    // passwords). Checking before counting would let all 20 through.
    let started = std::time::Instant::now();
    let guesses =
        futures::future::join_all((0..20).map(|i| attempt("hugo", format!("guess {i}"), 100 + i)))
            .await;
    let elapsed = started.elapsed();
    let (mut waits_run_out, mut ends) = (0, Duration::from_secs(1));
    while ends <= elapsed {
        waits_run_out += 1;
        ends = ends * 2 + Duration::from_secs(1);
    }
    let checked = guesses.iter().filter(|r| r.status == 401).count();
    assert!(
        checked
            <= usize::try_from(keh_auth::service::FREE_SIGN_IN_FAILURES).unwrap()
                + 1
                + waits_run_out,
        "{checked} of 20 parallel guesses had their password checked in {elapsed:?}"
    );
    assert!(guesses.iter().all(|r| r.status == 401 || r.status == 429));
    // A name longer than any username is wrong, not a server error.
    assert_eq!(attempt("x", String::new(), 1).await.status, 401);
    let long = app
        .send(
            client_with(None)
                .post(app.url("/api/v1/auth/token"))
                .json(&json!({"username": "é".repeat(5_000), "password": "whatever it is"})),
        )
        .await;
    assert!(
        long.status == 401 || long.status == 422,
        "{} {}",
        long.status,
        long.body
    );
    // The delay doubles but is capped: a third party cannot lock an owner out for long.
    sqlx::query("UPDATE auth.sign_in_failures SET failures = 1000 WHERE username_key = 'gina'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO auth.sign_in_failures (username_key, failures) VALUES ('gina', 1000)
         ON CONFLICT (username_key) DO UPDATE SET failures = 1000, blocked_until = now()",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(attempt("gina", "wrong".to_owned(), 1).await.status, 401);
    let capped = attempt("gina", "wrong".to_owned(), 2).await;
    let retry: u64 = capped.header("retry-after").unwrap().parse().unwrap();
    assert!(
        retry <= keh_auth::service::MAX_SIGN_IN_DELAY.as_secs(),
        "Retry-After {retry}"
    );
}

#[tokio::test]
async fn unsafe_media_urls_are_refused_at_the_edge_and_redacted_where_old_ones_are_served() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    let pool = db.pool().await;
    let key = app
        .create_listing(json!({"PropertyType": "Residential", "ListPrice": 500000}))
        .await;
    let media = format!("/api/v1/listings/{key}/media");
    for bad in [
        "\"><script>alert(1)</script>",
        "https://user:pass@photos.example.com/1.jpg",
        "https://169.254.169.254/latest/meta-data/",
        "http://photos.example.com/1.jpg",
        "https://photos.example.com/a b.jpg",
        "https://localhost/1.jpg",
    ] {
        let reply = app
            .post(&media, &json!({"MediaURL": bad, "MediaCategory": "Photo"}))
            .await;
        assert!(
            is_problem(&reply, 422),
            "{bad}: {} {}",
            reply.status,
            reply.body
        );
        assert_eq!(reply.body["errors"][0]["field"], "MediaURL", "{bad}");
    }
    let good = app
        .post(
            &media,
            &json!({"MediaURL": "https://Photos.Example.com:443/a/../front.jpg", "MediaCategory": "Photo"}),
        )
        .await;
    assert_eq!(good.status, 200, "{}", good.body);
    assert_eq!(
        good.body["Media"][0]["MediaURL"],
        "https://photos.example.com/front.jpg"
    );

    // An event stored before the check (appended past the HTTP edge, as an old release
    // did) still loads, replays and rebuilds; wherever it is served its URL is null.
    let store = keh_store::Store::new(pool.clone(), 10);
    let command = keh_listing::ListingCommand::AddMedia(keh_listing::command::AddMedia {
        media_key: keh_events::reso::ShortText::new("old").unwrap(),
        media_url: keh_events::listing::Text2k::new("https://169.254.169.254/latest/meta-data/")
            .unwrap(),
        media_category: serde_json::from_value(json!("Photo")).unwrap(),
        short_description: None,
        order: None,
        at: chrono::Utc::now(),
    });
    let metadata = keh_events::Metadata {
        actor: "system:test".to_owned(),
        correlation_id: uuid::Uuid::new_v4(),
        causation_id: uuid::Uuid::new_v4(),
        ..keh_events::Metadata::default()
    };
    store
        .execute(&key, command, &metadata, None, &keh_store::Access::Any)
        .await
        .expect("an old event is stored");
    let read = wait_projected(&app, &key, 3).await;
    let urls: Vec<&Value> = read.body["Media"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["MediaURL"])
        .collect();
    assert_eq!(
        urls,
        [&json!("https://photos.example.com/front.jpg"), &Value::Null]
    );
    let history = app
        .send(
            app.client
                .get(app.url(&format!("/api/v1/listings/{key}/history"))),
        )
        .await;
    assert_eq!(history.body["items"][2]["Data"]["MediaURL"], Value::Null);
    let published = wait_for_stream(&nats_url(), &format!("KEH_T_{id}"), 3).await;
    assert_eq!(published.len(), 3, "one message per event");
    assert_eq!(published[2].envelope["Data"]["MediaURL"], Value::Null);
    let rebuilt = keh_projections::rebuild::rebuild(&pool, 4, |_, _| {}).await;
    assert!(rebuilt.is_ok(), "the old event rebuilds: {rebuilt:?}");
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}

#[tokio::test]
async fn deleted_and_incomplete_listings_are_seen_only_by_their_agent_and_administrators() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    users(
        &db,
        &app,
        &[
            ("alice", Role::Agent, Some("AGENT-A")),
            ("bob", Role::Agent, Some("AGENT-B")),
        ],
    )
    .await;
    let (alice, bob) = (signed_in(&app, "alice").await, signed_in(&app, "bob").await);
    let viewer = app.token(Role::Viewer, None).await;
    let create = |status: &'static str| {
        let app = &app;
        let alice = alice.clone();
        async move {
            let reply = app
                .send(
                    client_with(Some(&alice))
                        .post(app.url("/api/v1/listings"))
                        .json(&json!({"PropertyType": "Land", "ListPrice": 1000, "StandardStatus": status, "City": "Hidden Hollow"})),
                )
                .await;
            assert_eq!(reply.status, 201, "{}", reply.body);
            reply.body["ListingKey"].as_str().unwrap().to_owned()
        }
    };
    let incomplete = create("Incomplete").await;
    let deleted = create("Incomplete").await;
    let reply = app
        .send(
            client_with(Some(&alice))
                .post(app.url(&format!("/api/v1/listings/{deleted}/status")))
                .json(&json!({"StandardStatus": "Delete"})),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let active = create("Active").await;
    wait_projected(&app, &deleted, 2).await;
    let before_deletion = {
        let history = app
            .send(
                client_with(Some(&alice))
                    .get(app.url(&format!("/api/v1/listings/{deleted}/history"))),
            )
            .await;
        history.body["items"][0]["RecordedAt"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    wait_projected(&app, &active, 1).await;

    let search = |bearer: Option<String>, status: &'static str| {
        let app = &app;
        async move {
            let reply = app
                .send(client_with(bearer.as_deref()).get(app.url(&format!(
                    "/api/v1/listings?city=Hidden%20Hollow&count=true{status}"
                ))))
                .await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            let mut keys: Vec<String> = reply.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["ListingKey"].as_str().unwrap().to_owned())
                .collect();
            keys.sort();
            assert_eq!(reply.body["totalCount"], keys.len(), "the count agrees");
            keys
        }
    };
    let mut all = vec![incomplete.clone(), deleted.clone(), active.clone()];
    all.sort();
    for (who, bearer) in [
        ("anonymous", None),
        ("viewer", Some(viewer.clone())),
        ("another agent", Some(bob.clone())),
    ] {
        assert_eq!(
            search(bearer.clone(), "").await,
            vec![active.clone()],
            "{who}"
        );
        assert!(
            search(bearer.clone(), "&status=Delete").await.is_empty(),
            "{who}"
        );
        assert!(
            search(bearer.clone(), "&status=Incomplete")
                .await
                .is_empty(),
            "{who}"
        );
        for key in [&incomplete, &deleted] {
            for path in [
                format!("/api/v1/listings/{key}"),
                format!("/api/v1/listings/{key}?min_version=5&wait_ms=100"),
                format!(
                    "/api/v1/listings/{key}?as_of={}",
                    before_deletion.replace('+', "%2B")
                ),
                format!("/api/v1/listings/{key}/history"),
                format!(
                    "/api/v1/listings/{key}?as_of={}",
                    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
                ),
            ] {
                let reply = app
                    .send(client_with(bearer.as_deref()).get(app.url(&path)))
                    .await;
                assert!(is_problem(&reply, 404), "{who} {path}: {}", reply.status);
            }
        }
    }
    assert_eq!(search(Some(alice.clone()), "").await, all, "their agent");
    assert_eq!(
        search(Some(app.token(Role::Admin, None).await), "").await,
        all,
        "an administrator"
    );
    let own = app
        .send(client_with(Some(&alice)).get(app.url(&format!("/api/v1/listings/{deleted}"))))
        .await;
    assert_eq!(own.status, 200);
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}

#[tokio::test]
async fn look_alike_usernames_and_guessable_passwords_are_refused() {
    let db = TestDb::create().await;
    let mut production = settings(&db, &nats_url(), &unique_id());
    production.environment = kubeestatehub::cli::Environment::Production;
    let app = TestApp::spawn(production, Roles::ALL).await;
    let create = |username: &str, password: &str| {
        let app = &app;
        let body = json!({"username": username, "password": password, "role": "viewer"});
        async move {
            app.send(app.client.post(app.url("/api/v1/admin/users")).json(&body))
                .await
        }
    };
    let strong = "violet-lantern-orbit-57";
    assert_eq!(create("agenta", strong).await.status, 201);
    for (name, status) in [
        ("AGENTA", 409),
        ("AgentA", 409),
        ("ａｇｅｎｔａ", 409),
        ("\u{430}gent\u{430}", 422),
        ("agent\u{430}", 422),
    ] {
        let reply = create(name, strong).await;
        assert!(
            is_problem(&reply, status),
            "{name}: {} {}",
            reply.status,
            reply.body
        );
        assert_eq!(reply.body["errors"][0]["field"], "username", "{name}");
    }
    for weak in [
        "password1234",
        "1234567890",
        "aaaaaaaaaaaa",
        "qwertyuiop123",
        "admin-password",
        "agentb-password",
    ] {
        let reply = create("agentb", weak).await;
        assert!(
            is_problem(&reply, 422),
            "{weak}: {} {}",
            reply.status,
            reply.body
        );
        assert_eq!(reply.body["errors"][0]["field"], "password", "{weak}");
    }
    // Sign-in is by the canonical name too.
    let by_variant = app
        .send(
            client_with(None)
                .post(app.url("/api/v1/auth/token"))
                .json(&json!({"username": "AgentA", "password": strong})),
        )
        .await;
    assert_eq!(by_variant.status, 200, "{}", by_variant.body);
    assert_eq!(by_variant.body["user"]["username"], "agenta");
    // The documented development password stays allowed in development only.
    let development = TestApp::spawn(settings(&db, &nats_url(), &unique_id()), Roles::ALL).await;
    let reply = development
        .send(
            development
                .client
                .post(development.url("/api/v1/admin/users"))
                .json(
                    &json!({"username": "devadmin", "password": "admin-password", "role": "admin"}),
                ),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
}
