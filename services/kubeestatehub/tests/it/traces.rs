//! Traces and logs as an operator gets them: the real binary, configured only by the
//! standard `OTEL_*` variables, exports over OTLP/HTTP to a receiver in this test. One trace
//! runs from the client's `traceparent` through the command, the event store, both relay
//! lanes and every consumer's apply; JSON log lines written inside it carry its id. The
//! image's health check (`kubeestatehub health`) is asked of the same process.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::process::Command;

use crate::harness::*;

/// A span as the receiver got it.
#[derive(Clone, Debug)]
struct SpanSeen {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

type Spans = Arc<Mutex<Vec<SpanSeen>>>;

/// `POST /v1/traces` (OTLP/HTTP, protobuf), as a collector serves it.
async fn export(
    State(spans): State<Spans>,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], Vec<u8>) {
    let content = [(header::CONTENT_TYPE, "application/x-protobuf")];
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, content, Vec::new());
    };
    let mut seen = spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                AnyValue::StringValue(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                seen.push(SpanSeen {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                });
            }
        }
    }
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    (StatusCode::OK, content, answer)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn one_trace_runs_from_the_command_to_every_consumer_and_logs_carry_its_id() {
    let spans: Spans = Arc::default();
    let receiver = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", receiver.local_addr().unwrap());
    let app = Router::new()
        .route("/v1/traces", post(export))
        .with_state(spans.clone());
    tokio::spawn(async move { axum::serve(receiver, app).await });

    let db = TestDb::create().await;
    let id = unique_id();
    let stream = format!("KEH_T_{id}");
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", db.url.clone()),
        ("NATS_URL", nats_url()),
        ("KEH_STREAM", stream.clone()),
        ("KEH_SUBJECT_PREFIX", format!("t{id}")),
        ("KEH_PARTITIONS", "2".to_owned()),
        ("KEH_JWT_SECRET", TEST_SECRET.to_owned()),
        ("KEH_RELAY_IDLE_POLL_MS", "100".to_owned()),
        ("KEH_LOG_FORMAT", "json".to_owned()),
        // The HTTP layer logs each response at debug, inside the request's span.
        ("KEH_LOG", "info,tower_http=debug".to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut process = RoleProcess::start("all", &env).await;
    let base = process.base.clone();
    let address = base.trim_start_matches("http://").to_owned();

    // The caller's own trace: everything the platform does for this command joins it.
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let caller_span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    let client = client_with(Some(&admin_token(&db.url).await));
    let created = client
        .post(format!("{base}/api/v1/listings"))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({"PropertyType": "Residential", "ListPrice": 410000, "City": "Tracy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());

    let named = |spans: &[SpanSeen], prefix: &str| -> Vec<SpanSeen> {
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id && s.name.starts_with(prefix))
            .cloned()
            .collect()
    };
    let internal = format!("publish {stream}_INTERNAL");
    let complete = |seen: &[SpanSeen]| {
        named(seen, "POST /api/v1/listings").len() == 1
            && named(seen, "event_store.execute").len() == 1
            && named(seen, &format!("publish {stream}")).len() == 2
            && named(seen, &internal).len() == 1
            && named(seen, "apply projector").len() == 1
            && named(seen, "apply analytics").len() == 1
    };
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while !complete(&spans.lock().unwrap()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing spans of the command, a relay lane or a consumer; received: {:#?}",
            spans.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let seen = spans.lock().unwrap().clone();
    let one = |prefix: &str| named(&seen, prefix).remove(0);
    let request = one("POST /api/v1/listings");
    assert_eq!(request.service, "kubeestatehub-all");
    assert_eq!(
        request.parent_span_id, caller_span,
        "the request continues the caller's span"
    );
    assert_eq!(one("event_store.execute").parent_span_id, request.span_id);
    let published = one(&internal);
    assert_eq!(
        published.parent_span_id, request.span_id,
        "the relay continues the trace the event carries"
    );
    for consumer in ["apply projector", "apply analytics"] {
        assert_eq!(
            one(consumer).parent_span_id,
            published.span_id,
            "{consumer} continues the trace of the internal lane's message"
        );
    }

    // The public lane carries the trace too, for outside subscribers.
    let messages = wait_for_stream(&nats_url(), &stream, 1).await;
    let traceparent = messages[0].header("traceparent").unwrap_or_default();
    assert!(
        traceparent.starts_with(&format!("00-{trace_id}-")),
        "public message traceparent: {traceparent}"
    );

    // Logs: JSON, one object per line; the lines written inside the trace carry its id.
    let logged = process.log.lock().unwrap().clone();
    assert!(!logged.is_empty());
    let parsed: Vec<Value> = logged
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(
        parsed
            .iter()
            .any(|l| l["openTelemetry"]["traceId"] == trace_id.as_str()),
        "no log line carries trace id {trace_id}:\n{}",
        logged.join("\n")
    );

    // The image's health check (no shell): the binary asks its own listener.
    let health = || {
        Command::new(env!("CARGO_BIN_EXE_kubeestatehub"))
            .args(["health", "--check", "ready"])
            .env_clear()
            .env("KEH_HTTP_ADDR", &address)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    };
    assert!(
        health().await.unwrap().success(),
        "health check of a ready instance"
    );
    process.kill().await;
    assert!(
        !health().await.unwrap().success(),
        "health check of a stopped instance"
    );
    delete_stream(&nats_url(), &stream).await;
    delete_stream(&nats_url(), &format!("{stream}_INTERNAL")).await;
}
