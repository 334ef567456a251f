//! The raw baselines our figures are divided by, measured in the same run on the same
//! machine:
//! - an empty axum handler (`loadgen serve-empty`, driven by the same client code as
//!   get-by-key);
//! - JetStream: a pipelined publish with `Nats-Msg-Id` (what the relay does, minus the
//!   event store), and a raw pull consumer acknowledging every message (what the projector
//!   does, minus PostgreSQL).

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use futures::StreamExt;
use tokio::net::TcpListener;

use crate::stats::{Latencies, Summary};

/// Serves `GET /` with an empty 200 on `listener` until the process ends.
pub async fn serve_empty(listener: TcpListener) -> std::io::Result<()> {
    let app = Router::new().route("/", get(|| async {}));
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}

/// Publishes `messages` messages of `payload` bytes into a fresh stream (file storage, one
/// replica: as the relay's default), `window` in flight at once with a `Nats-Msg-Id` each;
/// then reads them back with a pull consumer that acknowledges each. Deletes the stream.
pub async fn jetstream(
    nats_url: &str,
    messages: u64,
    payload: usize,
    window: usize,
) -> anyhow::Result<(Summary, Summary)> {
    let client = async_nats::connect(nats_url).await?;
    let js = jetstream::new(client);
    let name = format!("KEH_BENCH_{}", uuid::Uuid::new_v4().simple());
    let subject = format!("bench.{name}");
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("{subject}.>")],
        storage: stream::StorageType::File,
        num_replicas: 1,
        ..Default::default()
    })
    .await?;
    let result = publish_then_consume(&js, &name, &subject, messages, payload, window).await;
    let _ = js.delete_stream(&name).await;
    result
}

async fn publish_then_consume(
    js: &jetstream::Context,
    name: &str,
    subject: &str,
    messages: u64,
    payload: usize,
    window: usize,
) -> anyhow::Result<(Summary, Summary)> {
    let body = Bytes::from(vec![b'x'; payload]);
    let mut latencies = Latencies::new();
    let started = Instant::now();
    let mut sent = 0_u64;
    while sent < messages {
        let batch = (messages - sent).min(window.max(1) as u64);
        let mut acks = Vec::with_capacity(window);
        for i in sent..sent + batch {
            let message = async_nats::jetstream::message::PublishMessage::build()
                .payload(body.clone())
                .message_id(uuid::Uuid::new_v4().to_string());
            // 16 partitions, like the relay's subjects.
            let ack = js
                .send_publish(format!("{subject}.{}", i % 16), message)
                .await?;
            acks.push((Instant::now(), ack));
        }
        for (at, ack) in acks {
            ack.await?;
            latencies.record(at.elapsed());
        }
        sent += batch;
    }
    let published = Summary::of_run("jetstream-publish", started.elapsed(), messages, &latencies);

    let stream = js.get_stream(name).await?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("bench".to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    let mut received = 0_u64;
    let mut latencies = Latencies::new();
    while received < messages {
        let fetched = Instant::now();
        let mut batch = consumer
            .fetch()
            .max_messages(window.max(1))
            .expires(Duration::from_secs(2))
            .messages()
            .await?;
        let mut any = false;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow::anyhow!(e))?;
            message.ack().await.map_err(|e| anyhow::anyhow!(e))?;
            received += 1;
            any = true;
        }
        latencies.record(fetched.elapsed());
        anyhow::ensure!(
            any,
            "the consumer stopped receiving after {received} messages"
        );
    }
    let consumed = Summary::of_run("jetstream-consume", started.elapsed(), messages, &latencies);
    Ok((published, consumed))
}

/// Waits until `stream` holds `count` messages; the rate counts from its first message.
pub async fn wait_stream(
    nats_url: &str,
    stream: &str,
    count: u64,
    timeout: Duration,
) -> anyhow::Result<Summary> {
    let js = jetstream::new(async_nats::connect(nats_url).await?);
    let deadline = Instant::now() + timeout;
    let mut first: Option<Instant> = None;
    loop {
        let messages = match js.get_stream(stream).await {
            Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        };
        if messages > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if messages >= count {
            let elapsed = first.map_or(Duration::ZERO, |f| f.elapsed());
            return Ok(Summary::of_run(
                &format!("fill {stream}"),
                elapsed,
                count,
                &Latencies::new(),
            ));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{stream} holds {messages} of {count} messages after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deletes the streams whose names start with `prefix`; returns their names.
pub async fn delete_streams(nats_url: &str, prefix: &str) -> anyhow::Result<Vec<String>> {
    anyhow::ensure!(
        !prefix.is_empty(),
        "an empty prefix would delete every stream"
    );
    let js = jetstream::new(async_nats::connect(nats_url).await?);
    let names: Vec<String> = js
        .stream_names()
        .filter_map(|n| async move { n.ok() })
        .collect()
        .await;
    let mut deleted = Vec::new();
    for name in names.into_iter().filter(|n| n.starts_with(prefix)) {
        js.delete_stream(&name).await?;
        deleted.push(name);
    }
    Ok(deleted)
}
