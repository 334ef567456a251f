//! The OpenAPI document against the running API: every documented operation is served, and
//! schemathesis (from PyPI) finds no 5xx and no answer that breaks the document.

use std::path::PathBuf;

use kubeestatehub::Roles;
use reqwest::Method;

use crate::harness::*;

#[tokio::test]
async fn every_documented_operation_is_served() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    let document = app
        .send(app.client.get(app.url("/api/v1/openapi.json")))
        .await;
    assert_eq!(document.status, 200);
    assert_eq!(document.body["openapi"], "3.1.0");
    let paths = document.body["paths"].as_object().expect("paths");
    assert!(paths.len() >= 30, "{} paths", paths.len());
    // Two roles serve these paths (reads are the query API's, changes the command API's):
    // the document keeps the operations of both.
    for (path, methods) in [
        ("/api/v1/listings", ["get", "post"]),
        ("/api/v1/listings/{ListingKey}", ["get", "patch"]),
    ] {
        for method in methods {
            assert!(
                paths[path].get(method).is_some(),
                "{method} {path} is not documented: {}",
                paths[path]
            );
        }
    }
    let mut missing = Vec::new();
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("path item") {
            if operation["operationId"] == "liveFeed" {
                continue; // an endless stream; tested in queries.rs
            }
            let concrete = path
                .split('/')
                .map(|segment| {
                    if segment.starts_with('{') {
                        "00000000-0000-0000-0000-000000000000"
                    } else {
                        segment
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let mut request = app.client.request(method.clone(), app.url(&concrete));
            if operation.get("requestBody").is_some() {
                request = request.json(&serde_json::json!({}));
            }
            let reply = app.send(request).await;
            let unrouted = reply.status == 405
                || (reply.status == 404 && reply.body["detail"] == "no resource at this path");
            if unrouted {
                missing.push(format!("{method} {path}: {} {}", reply.status, reply.body));
            }
            let status = reply.status.to_string();
            if operation["responses"].get(&status).is_none() {
                missing.push(format!(
                    "{method} {path}: {status} is not documented: {}",
                    reply.body
                ));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    let docs = app.send(app.client.get(app.url("/api/v1/docs"))).await;
    assert_eq!(docs.status, 200);
    app.stop().await;
}

fn schemathesis() -> String {
    std::env::var("KEH_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".to_owned())
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let db = TestDb::create().await;
    let id = unique_id();
    let app = TestApp::spawn(settings(&db, &nats_url(), &id), Roles::ALL).await;
    let pool = db.pool().await;
    seed_market(&pool, 20, 12, 9, chrono::Utc::now()).await;
    crate::market::settled(&pool).await;

    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    let token = app.token(keh_auth::Role::Admin, None).await;
    let output = tokio::process::Command::new(schemathesis())
        .arg("--no-color")
        .arg("--config-file")
        .arg(&config)
        .args(["run", &app.url("/api/v1/openapi.json"), "--url", &app.base])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        // An endless event stream; the live feed has its own tests.
        .args(["--exclude-operation-id", "liveFeed"])
        // One worker: CPython 3.11's `ast.parse`, which hypothesis calls, is not safe to run
        // from several threads at once ("AST constructor recursion depth mismatch").
        .args(["--max-examples", "25", "--workers", "1", "--seed", "7"])
        .kill_on_drop(true)
        .output()
        .await
        .expect("schemathesis (PyPI) must be installed: ./dev test installs it, or set KEH_SCHEMATHESIS");
    let report = String::from_utf8_lossy(&output.stdout);
    // The run's summary is part of the test's output.
    let summary = report.split("SUMMARY").nth(1).unwrap_or(&report).to_owned();
    println!("schemathesis summary:{summary}");
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    app.stop().await;
    delete_stream(&nats_url(), &format!("KEH_T_{id}")).await;
}
