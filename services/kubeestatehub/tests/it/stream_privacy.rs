//! Private fields never reach those who may not see them: not the public stream, not the
//! live feed, not an outside subscriber of a NATS server running the shipped permissions.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use kubeestatehub::Roles;
use serde_json::json;

use crate::harness::*;

const SECRET: &str = "seller accepts 20% below list";

#[tokio::test]
async fn outside_subscribers_get_public_subjects_only_and_no_private_field() {
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/kustomize/base/nats/nats.conf");
    let nats = PrivateNats::start_with_config(
        config,
        &[
            ("NATS_PLATFORM_PASSWORD", "platform-pw"),
            ("NATS_SUBSCRIBER_PASSWORD", "subscriber-pw"),
        ],
    )
    .await;
    let db = TestDb::create().await;
    let platform_url = format!("nats://platform:platform-pw@127.0.0.1:{}", nats.port);
    let mut settings = settings(&db, &platform_url, &unique_id());
    // The shipped permissions name the default stream and subjects.
    settings.stream = "KEH_LISTINGS".to_owned();
    settings.subject_prefix = "keh".to_owned();
    let app = TestApp::spawn(settings, Roles::ALL).await;
    let created = app
        .post(
            "/api/v1/listings",
            &json!({"PropertyType": "Residential", "ListPrice": 515000, "City": "Springfield",
                    "PrivateRemarks": SECRET}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let key = created.body["ListingKey"].as_str().unwrap().to_owned();
    let patched = app
        .send(
            app.client
                .patch(app.url(&format!("/api/v1/listings/{key}")))
                .json(&json!({"PrivateRemarks": format!("{SECRET}, still")})),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    // The platform's own consumers get everything (the read model holds it, for those who
    // may see it).
    let read = wait_projected(&app, &key, 2).await;
    assert_eq!(
        read.body["PrivateRemarks"],
        format!("{SECRET}, still"),
        "{}",
        read.body
    );

    // An outside subscriber with the subscriber's credentials.
    let (errors_tx, mut errors) = tokio::sync::mpsc::unbounded_channel();
    let outside = async_nats::ConnectOptions::with_user_and_password(
        "subscriber".to_owned(),
        "subscriber-pw".to_owned(),
    )
    .event_callback(move |event| {
        let errors_tx = errors_tx.clone();
        async move {
            if let async_nats::Event::ServerError(error) = event {
                let _ = errors_tx.send(error.to_string());
            }
        }
    })
    .connect(nats.url())
    .await
    .expect("subscriber connects");
    let js = jetstream::new(outside.clone());

    // The public stream: both events, without the private remarks.
    let stream = js
        .get_stream("KEH_LISTINGS")
        .await
        .expect("public stream readable");
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: "keh.listing.>".to_owned(),
            ..Default::default()
        })
        .await
        .expect("consumer on the public stream");
    let mut messages = consumer
        .fetch()
        .max_messages(10)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("fetch");
    let mut seen = 0;
    while let Some(message) = messages.next().await {
        let message = message.expect("message");
        let text = String::from_utf8_lossy(&message.payload).into_owned();
        assert!(
            !text.contains(SECRET) && !text.contains("PrivateRemarks"),
            "{text}"
        );
        seen += 1;
        message.ack().await.expect("ack");
    }
    assert_eq!(seen, 2, "both events are on the public stream");

    // The internal stream and subjects are refused.
    let internal = tokio::time::timeout(
        Duration::from_secs(5),
        js.get_stream("KEH_LISTINGS_INTERNAL"),
    )
    .await;
    assert!(
        !matches!(internal, Ok(Ok(_))),
        "the internal stream must be refused to outside subscribers"
    );
    let mut spy = outside
        .subscribe("keh.internal.>")
        .await
        .expect("subscribe call");
    let platform = async_nats::ConnectOptions::with_user_and_password(
        "platform".to_owned(),
        "platform-pw".to_owned(),
    )
    .connect(nats.url())
    .await
    .expect("platform connects");
    platform
        .publish(
            "keh.internal.listing.0.probe.ListingCreated",
            "probe".into(),
        )
        .await
        .expect("publish");
    platform.flush().await.expect("flush");
    let received = tokio::time::timeout(Duration::from_secs(1), spy.next()).await;
    assert!(
        !matches!(received, Ok(Some(_))),
        "an outside subscriber received an internal subject"
    );
    let mut violations = Vec::new();
    while let Ok(Some(error)) =
        tokio::time::timeout(Duration::from_millis(500), errors.recv()).await
    {
        violations.push(error);
    }
    assert!(
        violations
            .iter()
            .any(|e| e.contains("Permissions Violation") && e.contains("keh.internal")),
        "the server refuses the subscription: {violations:?}"
    );

    // The live feed (anonymous) from the start of the stream: no private field either.
    let mut response = client_with(None)
        .get(app.url("/api/v1/listing-events?last_event_id=0"))
        .send()
        .await
        .expect("feed");
    let mut text = String::new();
    while text.matches("data:").count() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .expect("feed chunk")
            .expect("feed open")
            .expect("feed still open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains(&key) && !text.contains(SECRET), "{text}");
    app.stop().await;
}
