//! One partition's consumer: a durable pull consumer read in batches, each applied through
//! the committer and acknowledged after it commits; what can never apply is parked.

use super::*;

/// Why a partition's consumer stopped; [`PartitionWorker::run`] decides from it how to go
/// on (wait for the stream, or retry with a growing pause).
#[derive(Debug, thiserror::Error)]
pub(super) enum ConsumeError {
    /// The stream does not exist yet: the relay creates it.
    #[error("the stream does not exist yet")]
    NoStream,
    #[error("JetStream: {0}")]
    JetStream(#[source] async_nats::Error),
    #[error("acknowledging a message: {0}")]
    Ack(#[source] async_nats::Error),
    #[error("the message stream ended")]
    Ended,
    #[error("parking a message: {0}")]
    Park(#[source] sqlx::Error),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

impl ConsumeError {
    pub(super) fn jetstream(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::JetStream(Box::new(error))
    }

    /// `error`, whose JetStream answer is `cause`: the stream's absence is [`Self::NoStream`].
    pub(super) fn from_jetstream(
        cause: jetstream::Error,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        if cause.error_code() == ErrorCode::STREAM_NOT_FOUND {
            Self::NoStream
        } else {
            Self::jetstream(error)
        }
    }
}

pub(super) struct PartitionWorker {
    pub(super) partition: u32,
    pub(super) name: String,
    pub(super) filter: String,
    pub(super) stream: String,
    pub(super) batch_size: usize,
    pub(super) ack_wait: Duration,
    pub(super) pool: PgPool,
    pub(super) jetstream: jetstream::Context,
    pub(super) metrics: ProjectorMetrics,
    pub(super) committer: mpsc::Sender<Submission>,
}

impl PartitionWorker {
    pub(super) async fn run(self, shutdown: CancellationToken) {
        let mut delay = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            match self.consume(&shutdown).await {
                Ok(()) => return,
                // Until the relay has created the stream there is nothing to consume.
                Err(ConsumeError::NoStream) => {
                    tracing::debug!(
                        partition = self.partition,
                        "waiting for the stream to exist"
                    );
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                }
                Err(error) => {
                    tracing::warn!(partition = self.partition, %error, "partition consumer failed; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    pub(super) async fn consume(&self, shutdown: &CancellationToken) -> Result<(), ConsumeError> {
        let stream = self
            .jetstream
            .get_stream(&self.stream)
            .await
            .map_err(|e| match e.kind() {
                GetStreamErrorKind::JetStream(cause) => ConsumeError::from_jetstream(cause, e),
                _ => ConsumeError::jetstream(e),
            })?;
        let consumer: jetstream::consumer::Consumer<pull::Config> = stream
            .get_or_create_consumer(
                &self.name,
                pull::Config {
                    durable_name: Some(self.name.clone()),
                    filter_subject: self.filter.clone(),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    max_ack_pending: i64::try_from(self.batch_size * 2).unwrap_or(1000),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| match e.kind() {
                ConsumerErrorKind::JetStream(cause) => ConsumeError::from_jetstream(cause, e),
                _ => ConsumeError::jetstream(e),
            })?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.batch_size)
            .messages()
            .await
            .map_err(ConsumeError::jetstream)?;
        loop {
            let first = tokio::select! {
                () = shutdown.cancelled() => {
                    // Acknowledgements are buffered by the client: send them before the
                    // partition is handed over, or its next owner gets them again.
                    let _ = self.jetstream.client().flush().await;
                    return Ok(());
                }
                next = messages.next() => next,
            };
            let Some(first) = first else {
                return Err(ConsumeError::Ended);
            };
            let mut batch = vec![first.map_err(ConsumeError::jetstream)?];
            // Take whatever else arrives within a millisecond of the previous one: low
            // latency when idle, large transactions under load. (Taking only what is ready
            // at once, `now_or_never`, stopped at the pull stream's first pending poll, a few
            // dozen messages: with a longer gathering window, the consumers then fell
            // behind the stream.) A message already here is taken without arming a timer.
            while batch.len() < self.batch_size {
                let next = match messages.next().now_or_never() {
                    Some(next) => next,
                    None => {
                        let waited =
                            tokio::time::timeout(Duration::from_millis(1), messages.next()).await;
                        let Ok(next) = waited else { break };
                        next
                    }
                };
                match next {
                    Some(Ok(message)) => batch.push(message),
                    Some(Err(error)) => return Err(ConsumeError::jetstream(error)),
                    None => break,
                }
            }
            self.process(batch).await?;
        }
    }

    /// Applies one batch; acknowledges after commit; parks what can never apply.
    pub(super) async fn process(&self, batch: Vec<jetstream::Message>) -> Result<(), ConsumeError> {
        let mut parsed = Vec::with_capacity(batch.len());
        for message in batch {
            match serde_json::from_slice::<EventEnvelope>(&message.payload) {
                Ok(envelope) => parsed.push((message, envelope)),
                Err(error) => self.park(&message, None, &error.to_string()).await?,
            }
        }
        if parsed.is_empty() {
            return Ok(());
        }
        let facts: Vec<EventEnvelope> = parsed.iter().map(|(_, f)| f.clone()).collect();
        // One span per traced message, continuing the trace its publisher put in the
        // `traceparent` header; each lasts until its batch is committed (or fails).
        let _spans: Vec<tracing::Span> = parsed
            .iter()
            .filter_map(|(message, fact)| self.apply_span(message, fact))
            .collect();
        match self.apply_committed(facts).await {
            Ok(()) => {
                for (message, _) in &parsed {
                    message.ack().await.map_err(ConsumeError::Ack)?;
                }
                Ok(())
            }
            Err(error) if !error.is_permanent() => {
                // Nothing was committed and the cause is passing (a connection): the whole
                // batch comes back after a pause.
                for (message, _) in &parsed {
                    let _ = message
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                }
                Err(error.into())
            }
            Err(error) => {
                // Some event can never apply: one message at a time, so that only its listing
                // is held back (its later events gap-repair into the same failure).
                tracing::warn!(partition = self.partition, %error, "a batch cannot apply; applying its messages one by one");
                for (message, fact) in parsed {
                    match self.apply_committed(vec![fact.clone()]).await {
                        Ok(()) => message.ack().await.map_err(ConsumeError::Ack)?,
                        Err(error) if error.is_permanent() => {
                            let delivered = message.info().map_or(1, |i| i.delivered);
                            if delivered >= MAX_ATTEMPTS {
                                self.park(&message, Some(&fact), &error.to_string()).await?;
                            } else {
                                let _ = message
                                    .ack_with(AckKind::Nak(Some(Duration::from_millis(500))))
                                    .await;
                            }
                        }
                        Err(error) => {
                            let _ = message
                                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                                .await;
                            return Err(error.into());
                        }
                    }
                }
                Ok(())
            }
        }
    }

    pub(super) fn apply_span(
        &self,
        message: &jetstream::Message,
        fact: &EventEnvelope,
    ) -> Option<tracing::Span> {
        let traceparent = message
            .headers
            .as_ref()?
            .get(keh_events::envelope::headers::TRACEPARENT)?
            .as_str();
        let span = tracing::info_span!(
            "apply",
            otel.name = %format_args!("apply {}", self.name),
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.consumer.group.name = %self.name,
            messaging.message.id = %fact.event_id,
            listing_key = %fact.listing_key,
            sequence = fact.sequence.get(),
        );
        keh_platform::telemetry::set_parent(&span, Some(traceparent));
        Some(span)
    }

    /// Applies `facts` through the replica's committer (in one committed transaction,
    /// maybe with other partitions' batches); returns once it has committed or failed.
    pub(super) async fn apply_committed(
        &self,
        facts: Vec<EventEnvelope>,
    ) -> Result<(), apply::ApplyError> {
        let (done, outcome) = oneshot::channel();
        let closed = || ApplyError::Database(sqlx::Error::PoolClosed);
        self.committer
            .send(Submission { facts, done })
            .await
            .map_err(|_| closed())?;
        outcome.await.map_err(|_| closed())?
    }

    pub(super) async fn park(
        &self,
        message: &jetstream::Message,
        fact: Option<&EventEnvelope>,
        reason: &str,
    ) -> Result<(), ConsumeError> {
        let event_id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(keh_events::envelope::headers::MSG_ID))
            .and_then(|v| Uuid::parse_str(v.as_str()).ok())
            .unwrap_or_else(Uuid::new_v4);
        let payload = String::from_utf8_lossy(&message.payload);
        sqlx::query!(
            "INSERT INTO parked_events (consumer, event_id, listing_key, sequence, subject, reason, payload)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT DO NOTHING",
            self.name,
            event_id,
            fact.map(|f| f.listing_key.as_str()),
            fact.map(|f| i64::from(f.sequence)),
            message.subject.as_str(),
            reason,
            payload.as_ref(),
        )
        .execute(&self.pool)
        .await
        .map_err(ConsumeError::Park)?;
        self.metrics.parked.inc();
        tracing::error!(consumer = %self.name, %event_id, reason, "parked an unprocessable message");
        message
            .ack_with(AckKind::Term)
            .await
            .map_err(ConsumeError::Ack)
    }
}
