//! Sign-in, roles, API keys and authorization: every refused request gets the right
//! 401/403 problem+json and writes no event.

use keh_auth::Role;
use keh_auth::keys::KeyRing;
use keh_auth::service::NewUser;
use keh_auth::tokens::Claims;
use kubeestatehub::Roles;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;

pub(crate) async fn user(
    auth: &keh_auth::AuthService,
    name: &str,
    role: Role,
    agent_key: Option<&str>,
) {
    auth.create_user(
        "test",
        NewUser {
            username: name.to_owned(),
            password: password_of(name),
            role,
            agent_key: agent_key.map(str::to_owned),
            office_key: None,
        },
    )
    .await
    .expect("user");
}

/// The password test users get: strong enough for the password policy.
pub(crate) fn password_of(name: &str) -> String {
    format!("{name}-kestrel-quarry-57")
}

pub(crate) async fn sign_in(app: &TestApp, name: &str) -> Value {
    let reply = app
        .send(
            client_with(None)
                .post(app.url("/api/v1/auth/token"))
                .json(&json!({"username": name, "password": password_of(name)})),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body
}

async fn event_count(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A request and the answer it must get.
struct Case {
    name: &'static str,
    credential: Option<String>,
    method: Method,
    path: String,
    body: Value,
    status: u16,
    detail: &'static str,
}

#[tokio::test]
async fn unauthorized_and_forbidden_requests_are_refused_and_write_nothing() {
    let db = TestDb::create().await;
    let id = unique_id();
    let settings = settings(&db, &nats_url(), &id);
    let app = TestApp::spawn(settings.clone(), Roles::ALL).await;
    let pool = db.pool().await;
    let auth = keh_auth::AuthService::new(pool.clone(), settings.auth());
    user(&auth, "ada", Role::Admin, None).await;
    user(&auth, "alice", Role::Agent, Some("AGENT-A")).await;
    user(&auth, "bob", Role::Agent, Some("AGENT-B")).await;
    user(&auth, "victor", Role::Viewer, None).await;
    let ada = sign_in(&app, "ada").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let alice_session = sign_in(&app, "alice").await;
    let alice = alice_session["access_token"].as_str().unwrap().to_owned();
    let bob = sign_in(&app, "bob").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let victor = sign_in(&app, "victor").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Alice's listing, with private remarks; its agent is Alice without her saying so.
    let created = app
        .send(
            client_with(Some(&alice))
                .post(app.url("/api/v1/listings"))
                .json(&json!({
                    "PropertyType": "Residential", "ListPrice": 400000, "City": "Springfield",
                    "PrivateRemarks": "seller is relocating",
                })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["ListAgentKey"], "AGENT-A");
    let key = created.body["ListingKey"].as_str().unwrap().to_owned();

    // API keys, made by the administrator through the admin API.
    let a = &app;
    let admin = client_with(Some(&ada));
    let make_key = |name: &'static str, scopes: Value| {
        let admin = admin.clone();
        let url = a.url("/api/v1/admin/api-keys");
        async move {
            let reply = a
                .send(
                    admin
                        .post(url)
                        .json(&json!({"name": name, "scopes": scopes})),
                )
                .await;
            assert_eq!(reply.status, 201, "{}", reply.body);
            reply.body
        }
    };
    let reader = make_key("subscriber", json!(["read"])).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let writer = make_key("importer", json!(["write", "import"])).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = make_key("old", json!(["write"])).await;
    let revoked_id = revoked["key_id"].as_str().unwrap();
    let reply = app
        .send(admin.delete(app.url(&format!("/api/v1/admin/api-keys/{revoked_id}"))))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let revoked = revoked["key"].as_str().unwrap().to_owned();

    // Valid in every way but its expiry, for a user who exists and a session that is open.
    let ada_claims = |secret: &str, exp: i64| {
        let claims = claims_of(&ada);
        KeyRing::configured(&keh_auth::Secret::new(secret), &[])
            .sign(&Claims { exp, ..claims })
            .unwrap()
    };
    let expired = ada_claims(TEST_SECRET, chrono::Utc::now().timestamp() - 600);
    let forged = ada_claims(
        "another key that is not the platform's own key",
        chrono::Utc::now().timestamp() + 600,
    );

    let create = "/api/v1/listings".to_owned();
    let price = format!("/api/v1/listings/{key}/price");
    let new = json!({"PropertyType": "Residential", "ListPrice": 1});
    let cut = json!({"ListPrice": 390000});
    let c = |name,
             credential: Option<&str>,
             method: Method,
             path: &str,
             body: &Value,
             status,
             detail| Case {
        name,
        credential: credential.map(str::to_owned),
        method,
        path: path.to_owned(),
        body: body.clone(),
        status,
        detail,
    };
    let post = Method::POST;
    let cases = vec![
        c(
            "no token",
            None,
            post.clone(),
            &create,
            &new,
            401,
            "sign in",
        ),
        c(
            "malformed token",
            Some("Bearer not.a.token"),
            post.clone(),
            &create,
            &new,
            401,
            "not valid",
        ),
        c(
            "not a bearer token",
            Some("Basic YWRhOnB3"),
            post.clone(),
            &create,
            &new,
            401,
            "Bearer",
        ),
        c(
            "expired token",
            Some(&format!("Bearer {expired}")),
            post.clone(),
            &create,
            &new,
            401,
            "expired",
        ),
        c(
            "token signed with another key",
            Some(&format!("Bearer {forged}")),
            post.clone(),
            &create,
            &new,
            401,
            "not valid",
        ),
        c(
            "viewer sends a command",
            Some(&format!("Bearer {victor}")),
            post.clone(),
            &price,
            &cut,
            403,
            "viewers",
        ),
        c(
            "another agent's listing",
            Some(&format!("Bearer {bob}")),
            post.clone(),
            &price,
            &cut,
            403,
            "another agent",
        ),
        c(
            "another agent's listing, details",
            Some(&format!("Bearer {bob}")),
            Method::PATCH,
            &format!("/api/v1/listings/{key}"),
            &json!({"City": "Elsewhere"}),
            403,
            "another agent",
        ),
        c(
            "creating a listing for another agent",
            Some(&format!("Bearer {bob}")),
            post.clone(),
            &create,
            &json!({"PropertyType": "Land", "ListPrice": 1, "ListAgentKey": "AGENT-A"}),
            403,
            "ListAgentKey",
        ),
        c(
            "giving one's listing away",
            Some(&format!("Bearer {alice}")),
            Method::PATCH,
            &format!("/api/v1/listings/{key}"),
            &json!({"ListAgentKey": "AGENT-B"}),
            403,
            "ListAgentKey",
        ),
        c(
            "revoked API key",
            Some(&format!("Bearer {revoked}")),
            post.clone(),
            &create,
            &new,
            401,
            "revoked",
        ),
        c(
            "revoked API key in X-API-Key",
            None,
            post.clone(),
            &create,
            &new,
            401,
            "revoked",
        ),
        c(
            "read-only API key sends a command",
            Some(&format!("Bearer {reader}")),
            post.clone(),
            &create,
            &new,
            403,
            "scope",
        ),
        c(
            "agent on the admin API",
            Some(&format!("Bearer {alice}")),
            Method::GET,
            "/api/v1/admin/users",
            &Value::Null,
            403,
            "administrators",
        ),
        c(
            "anonymous on the admin API",
            None,
            Method::POST,
            "/api/v1/admin/api-keys",
            &json!({"name": "x", "scopes": ["write"]}),
            401,
            "administrator",
        ),
        c(
            "anonymous report request",
            None,
            post.clone(),
            "/api/v1/market/reports",
            &json!({"Area": "All", "From": "2026-01-01", "To": "2026-02-01"}),
            401,
            "sign in",
        ),
    ];
    let before = event_count(&pool).await;
    let mut failures = Vec::new();
    for case in &cases {
        let mut request = client_with(None).request(case.method.clone(), app.url(&case.path));
        if let Some(credential) = &case.credential {
            request = request.header("authorization", credential);
        }
        if case.name == "revoked API key in X-API-Key" {
            request = request.header("x-api-key", &revoked);
        }
        if !case.body.is_null() {
            request = request.json(&case.body);
        }
        let reply = app.send(request).await;
        let kind = if case.status == 401 {
            "unauthorized"
        } else {
            "forbidden"
        };
        let ok = reply.status == case.status
            && reply.header("content-type") == Some("application/problem+json")
            && reply.body["type"] == format!("/api/v1/problems/{kind}")
            && reply.body["detail"]
                .as_str()
                .is_some_and(|d| d.contains(case.detail))
            && (case.status != 401 || reply.header("www-authenticate").is_some());
        if !ok {
            failures.push(format!(
                "{}: expected {} ({}), got {} {}",
                case.name, case.status, case.detail, reply.status, reply.body
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        event_count(&pool).await,
        before,
        "a refused request wrote an event"
    );

    // What is allowed works: the listing's agent, an administrator, a write key.
    for (price_now, (who, token)) in [380_000, 370_000, 360_000].into_iter().zip([
        ("alice", alice.as_str()),
        ("ada", ada.as_str()),
        ("importer", writer.as_str()),
    ]) {
        let reply = app
            .send(
                client_with(Some(token))
                    .post(app.url(&price))
                    .json(&json!({"ListPrice": price_now})),
            )
            .await;
        assert!(
            reply.status == 200,
            "{who}: {} {}",
            reply.status,
            reply.body
        );
        // The answer shows private remarks only to the listing's agent and administrators.
        assert_eq!(
            reply.body.get("PrivateRemarks").is_some(),
            who != "importer",
            "{who}: {}",
            reply.body
        );
    }
    let projected = app
        .send(client_with(Some(&ada)).get(app.url(&format!(
            "/api/v1/listings/{key}?min_version=4&wait_ms=5000"
        ))))
        .await;
    assert_eq!(projected.status, 200, "{}", projected.body);
    let history = app
        .send(client_with(Some(&ada)).get(app.url(&format!("/api/v1/listings/{key}/history"))))
        .await;
    let actors: Vec<&str> = history.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["Actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors[0], "user:alice");
    assert!(
        actors[1..].contains(&"user:ada")
            && actors.iter().any(|a| a.starts_with("api-key:importer:")),
        "{actors:?}"
    );

    // Private remarks: the listing's agent and administrators only.
    let read = |token: Option<String>| {
        let url = a.url(&format!(
            "/api/v1/listings/{key}?min_version=4&wait_ms=5000"
        ));
        async move { a.send(client_with(token.as_deref()).get(url)).await.body }
    };
    assert_eq!(
        read(Some(alice.clone())).await["PrivateRemarks"],
        "seller is relocating"
    );
    assert_eq!(
        read(Some(ada.clone())).await["PrivateRemarks"],
        "seller is relocating"
    );
    for other in [
        Some(bob.clone()),
        Some(victor.clone()),
        Some(reader.clone()),
        None,
    ] {
        let body = read(other).await;
        assert!(
            body.get("PrivateRemarks").is_none() && body["ListingKey"] == key.as_str(),
            "{body}"
        );
    }

    // Refresh tokens rotate; a used one is revoked, and using it again ends the session.
    let refresh = |token: Value| {
        let url = a.url("/api/v1/auth/refresh");
        async move {
            a.send(
                client_with(None)
                    .post(url)
                    .json(&json!({"refresh_token": token})),
            )
            .await
        }
    };
    let first = alice_session["refresh_token"].clone();
    let rotated = refresh(first.clone()).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let reused = refresh(first).await;
    assert_eq!(reused.status, 401, "{}", reused.body);
    assert!(reused.body["detail"].as_str().unwrap().contains("revoked"));
    let after_reuse = refresh(rotated.body["refresh_token"].clone()).await;
    assert_eq!(
        after_reuse.status, 401,
        "reuse of a rotated token revokes the whole session"
    );
    // Signing out revokes too.
    let session = sign_in(&app, "bob").await;
    let out = app
        .send(
            client_with(None)
                .post(app.url("/api/v1/auth/sign-out"))
                .json(&json!({"refresh_token": session["refresh_token"]})),
        )
        .await;
    assert_eq!(out.status, 204);
    assert_eq!(refresh(session["refresh_token"].clone()).await.status, 401);
    // A wrong password, and an unknown user, get the same answer.
    for (name, password) in [("alice", "wrong password"), ("nobody", "whatever-password")] {
        let reply = app
            .send(
                client_with(None)
                    .post(app.url("/api/v1/auth/token"))
                    .json(&json!({"username": name, "password": password})),
            )
            .await;
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.body["detail"],
            "the username or the password is wrong"
        );
    }

    // Administrative actions are audited.
    let audit = app.send(admin.get(app.url("/api/v1/admin/audit"))).await;
    let actions: Vec<&str> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "api-key.create").count(),
        3,
        "{actions:?}"
    );
    assert!(
        actions.contains(&"api-key.revoke") && actions.contains(&"user.create"),
        "{actions:?}"
    );
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}

#[tokio::test]
async fn anonymous_reading_can_be_turned_off() {
    let db = TestDb::create().await;
    let id = unique_id();
    let mut settings = settings(&db, &nats_url(), &id);
    settings.anonymous_read = false;
    let app = TestApp::spawn(settings, Roles::ALL).await;
    let anonymous = app
        .send(client_with(None).get(app.url("/api/v1/listings")))
        .await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let market = app
        .send(client_with(None).get(app.url("/api/v1/market/areas")))
        .await;
    assert_eq!(market.status, 401);
    let viewer = app.token(Role::Viewer, None).await;
    // The live feed takes the token as a query parameter (browsers' EventSource cannot send
    // headers); a bad one is refused, not read as anonymous.
    let feed = |query: String| {
        let url = app.url(&format!("/api/v1/listing-events{query}"));
        async move {
            client_with(None)
                .get(url)
                .send()
                .await
                .expect("feed")
                .status()
                .as_u16()
        }
    };
    assert_eq!(feed(String::new()).await, 401);
    // Past authentication (200, or 503 while the relay has not created the stream yet).
    let authorized = feed(format!("?access_token={viewer}")).await;
    assert!(authorized == 200 || authorized == 503, "{authorized}");
    assert_eq!(feed("?access_token=garbage".to_owned()).await, 401);
    let signed_in = app
        .send(client_with(Some(&viewer)).get(app.url("/api/v1/listings")))
        .await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    // Probes stay open.
    let live = app
        .send(client_with(None).get(app.url("/api/v1/health/live")))
        .await;
    assert_eq!(live.status, 200);
    app.stop().await;
}

#[tokio::test]
async fn callers_beyond_their_rate_get_429_with_retry_after_and_others_do_not() {
    let db = TestDb::create().await;
    let mut settings = settings(&db, &nats_url(), &unique_id());
    settings.rate_limit_per_second = 1;
    settings.rate_limit_burst = 3;
    let app = TestApp::spawn(settings, Roles::ALL).await;
    let anonymous = client_with(None);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let reply = app
            .send(anonymous.get(app.url("/api/v1/market/areas")))
            .await;
        statuses.push(reply.status);
        if reply.status == 429 {
            assert_eq!(
                reply.header("content-type"),
                Some("application/problem+json")
            );
            assert_eq!(reply.body["type"], "/api/v1/problems/rate-limited");
            let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=2).contains(&retry), "Retry-After {retry}");
        }
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    // Another caller has its own budget; probes are never limited.
    let viewer = client_with(Some(&app.token(Role::Viewer, None).await));
    let reply = app.send(viewer.get(app.url("/api/v1/market/areas"))).await;
    assert_eq!(reply.status, 200);
    for _ in 0..5 {
        let reply = app
            .send(anonymous.get(app.url("/api/v1/health/live")))
            .await;
        assert_eq!(reply.status, 200);
    }
    // Sign-in attempts have their own strict budget per address.
    let mut sign_ins = Vec::new();
    for _ in 0..12 {
        let reply = app
            .send(
                client_with(None)
                    .post(app.url("/api/v1/auth/token"))
                    .json(&json!({"username": "nobody", "password": "guess-guess"})),
            )
            .await;
        sign_ins.push(reply.status);
    }
    assert!(sign_ins.contains(&429), "{sign_ins:?}");

    app.stop().await;
}

/// Anonymous callers are limited by address: behind a trusted proxy the address it appended
/// to `X-Forwarded-For`, from anyone else the peer's, whatever the header says.
#[tokio::test]
async fn only_a_trusted_proxy_names_the_client_a_rate_limit_keys_on() {
    let budget = |trusted: Vec<ipnet::IpNet>| async move {
        let db = TestDb::create().await;
        let mut settings = settings(&db, &nats_url(), &unique_id());
        settings.rate_limit_per_second = 1;
        settings.rate_limit_burst = 2;
        settings.trusted_proxies = trusted;
        let app = TestApp::spawn(settings, Roles::ALL).await;
        let mut statuses = Vec::new();
        // Three clients behind the proxy, two requests each (within each one's burst).
        for client in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
            for _ in 0..2 {
                let request = client_with(None)
                    .get(app.url("/api/v1/market/areas"))
                    .header("x-forwarded-for", format!("192.0.2.99, {client}"));
                statuses.push(app.send(request).await.status);
            }
        }
        app.stop().await;
        statuses
    };
    // The test's requests come from loopback: trusted, each forwarded client has its own
    // budget (the made-up leftmost entry is never believed).
    let behind_the_gateway = budget(vec!["127.0.0.0/8".parse().unwrap()]).await;
    assert_eq!(behind_the_gateway, [200; 6], "{behind_the_gateway:?}");
    // Not trusted: the header names no one; all six share the peer's budget.
    let direct = budget(Vec::new()).await;
    assert!(direct.contains(&429), "{direct:?}");
}

#[tokio::test]
async fn cors_answers_only_the_configured_origins() {
    let db = TestDb::create().await;
    let mut settings = settings(&db, &nats_url(), &unique_id());
    settings.cors_origins = vec!["https://app.example.com".to_owned()];
    let app = TestApp::spawn(settings, Roles::ALL).await;
    let preflight = |origin: &'static str| {
        client_with(None)
            .request(Method::OPTIONS, app.url("/api/v1/listings"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,if-match",
            )
    };
    let allowed = app.send(preflight("https://app.example.com")).await;
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(
        allowed
            .header("access-control-allow-headers")
            .is_some_and(|h| h.contains("if-match") && h.contains("authorization"))
    );
    let refused = app.send(preflight("https://evil.example.net")).await;
    assert_eq!(refused.header("access-control-allow-origin"), None);
    let simple = app
        .send(
            client_with(None)
                .get(app.url("/api/v1/listings"))
                .header("origin", "https://app.example.com"),
        )
        .await;
    assert_eq!(
        simple.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(
        simple
            .header("access-control-expose-headers")
            .is_some_and(|h| h.contains("etag"))
    );
    app.stop().await;
}
