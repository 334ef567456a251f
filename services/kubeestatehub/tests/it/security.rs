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
    let pool = db.pool().await;
    let auth = keh_auth::AuthService::new(pool.clone(), app.settings.auth());
    user(&auth, "ada", Role::Admin, None).await;
    let ada = sign_in(&app, "ada").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
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
            for (what, token) in [("own kid", token), ("real kid", stolen_kid), ("no kid", no_kid)] {
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
    let replica = TestApp::spawn(
        unconfigured(&db, &id),
        Roles {
            command_api: true,
            query_api: true,
            ..Roles::NONE
        },
    )
    .await;
    assert_eq!(me(&restarted, &ada).await, 200);
    assert_eq!(me(&replica, &ada).await, 200);
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM auth.signing_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(keys, 1, "one key per installation, however many processes start");
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
    let pool = db.pool().await;
    let auth = keh_auth::AuthService::new(pool.clone(), app.settings.auth());
    user(&auth, "ada", Role::Admin, None).await;
    let before = sign_in(&app, "ada").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // A rotation: the new key signs at once on every replica; the old one still verifies.
    let new_kid = keh_auth::keys::rotate(&pool, Duration::from_secs(600))
        .await
        .unwrap();
    let after = eventually_value(|| async {
        let token = sign_in(&replica, "ada").await["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        (jsonwebtoken::decode_header(&token).unwrap().kid.as_deref() == Some(new_kid.as_str()))
            .then_some(token)
    })
    .await;
    for instance in [&app, &replica] {
        assert_eq!(me(instance, &before).await, 200, "old key still verifies");
        assert_eq!(me(instance, &after).await, 200);
    }

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
    let fresh = sign_in(&replica, "ada").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
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
    let pool = db.pool().await;
    user(
        &keh_auth::AuthService::new(pool.clone(), app.settings.auth()),
        "ada",
        Role::Admin,
        None,
    )
    .await;
    let old = sign_in(&app, "ada").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.stop().await;

    let rotated = TestApp::spawn(with(&second, vec![first.clone()]), roles).await;
    assert_eq!(me(&rotated, &old).await, 200, "the previous secret verifies");
    let new = sign_in(&rotated, "ada").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(
        jsonwebtoken::decode_header(&new).unwrap().kid,
        jsonwebtoken::decode_header(&old).unwrap().kid
    );
    rotated.stop().await;

    let done = TestApp::spawn(with(&second, Vec::new()), roles).await;
    assert_eq!(me(&done, &old).await, 401, "a dropped secret verifies nothing");
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
    let replica = TestApp::spawn(
        settings(&db, &nats_url(), &id),
        Roles {
            command_api: true,
            query_api: true,
            ..Roles::NONE
        },
    )
    .await;
    let both = [&app, &replica];
    let pool = db.pool().await;
    let auth = keh_auth::AuthService::new(pool.clone(), app.settings.auth());
    for name in ["dora", "dan", "dee", "sam"] {
        user(&auth, name, Role::Agent, Some("AGENT-D")).await;
    }
    let admin = &app.client;
    let user_id = |name: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, uuid::Uuid>("SELECT user_id FROM auth.users WHERE username = $1")
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
    assert_eq!(again["user"]["role"], "viewer", "signing in again gives the new role");

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
        assert_eq!(me(instance, &sam_other).await, 200, "another session goes on");
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
