//! Publication: a pipeline of messages in global order, each chained to the one before it by
//! its expected last sequence or message id, and the message an event becomes on each lane.

use super::*;

impl Relay {
    /// Publishes `batch` pipelined. Returns how far it got and how the pipeline ended.
    pub(crate) async fn publish(
        &self,
        batch: &[StoredEvent],
        start: Position,
    ) -> (Position, PipelineEnd) {
        let mut pending = Vec::with_capacity(batch.len());
        let mut failure = None;
        // Each message must land right after the previous one, and the stream checks it: the
        // first against the stream's last sequence (persisted, survives server restarts),
        // each next one against the previous message's id. Chaining on ids, not on computed
        // sequences, means that once one message is refused every later one is refused too:
        // with sequences, a later message could match a sequence that something else
        // produced and land after a hole.
        let mut previous: Option<Uuid> = None;
        for event in batch {
            let expected = match previous {
                None => Expected::Sequence(start.stream_sequence),
                Some(id) => Expected::MessageId(id),
            };
            previous = Some(event.envelope.event_id);
            let span = self.publish_span(event);
            let traceparent = span
                .as_ref()
                .and_then(|span| span.in_scope(keh_platform::telemetry::current_traceparent))
                .or_else(|| event.traceparent.clone());
            let message = match self.message(event, expected, traceparent) {
                Ok(message) => message,
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            };
            let subject = self.layout.event_subject(
                event.envelope.listing_key.as_str(),
                event.envelope.event.event_type(),
            );
            match self.jetstream.send_publish(subject, message).await {
                Ok(ack) => pending.push((event, ack, span)),
                Err(error) => {
                    failure = Some(js_error(error));
                    break;
                }
            }
        }
        let mut reached = start;
        let mut duplicate = None;
        // A message's span (if its event is traced) ends when its acknowledgement arrives.
        for (event, ack, _span) in pending {
            if failure.is_some() || duplicate.is_some() {
                // Everything after a failure is refused by the stream (wrong last sequence)
                // or is sorted out by the next reconciliation.
                break;
            }
            match ack.await {
                Ok(ack) if ack.duplicate => {
                    // Not stored again: the stream's sequence did not move, so the messages
                    // behind it in this pipeline are refused; they go again from here.
                    self.metrics.duplicates.inc();
                    reached.cursor = event.cursor;
                    duplicate = Some(event.envelope.event_id);
                }
                Ok(ack) => {
                    self.metrics.published.inc();
                    reached = Position {
                        cursor: event.cursor,
                        stream_sequence: ack.sequence,
                    };
                    self.metrics.lag.observe(
                        (chrono::Utc::now() - event.envelope.recorded_at)
                            .as_seconds_f64()
                            .max(0.0),
                    );
                }
                Err(error) => failure = Some(js_error(error)),
            }
        }
        let end = match (failure, duplicate) {
            (Some(error), _) => PipelineEnd::Failed(error),
            (None, Some(event_id)) => PipelineEnd::Duplicate(event_id),
            (None, None) => PipelineEnd::Complete,
        };
        (reached, end)
    }

    /// The span of one traced event's publication: a child of the command that stored it
    /// (its metadata's `traceparent`). Untraced events (seed, import) get none.
    pub(crate) fn publish_span(&self, event: &StoredEvent) -> Option<tracing::Span> {
        let traceparent = event.traceparent.as_deref()?;
        let span = tracing::info_span!(
            "publish",
            otel.name = %format_args!("publish {}", self.settings.stream),
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.destination.name = %self.settings.stream,
            messaging.message.id = %event.envelope.event_id,
            listing_key = %event.envelope.listing_key,
            sequence = event.envelope.sequence.get(),
        );
        keh_platform::telemetry::set_parent(&span, Some(traceparent));
        Some(span)
    }

    pub(crate) fn message(
        &self,
        event: &StoredEvent,
        expected: Expected,
        traceparent: Option<String>,
    ) -> Result<PublishMessage, RelayError> {
        let envelope = &event.envelope;
        let payload = if self.settings.redact_private {
            let mut value =
                serde_json::to_value(envelope).map_err(|e| RelayError::JetStream(e.to_string()))?;
            keh_events::public::redact_public(&mut value);
            serde_json::to_vec(&value)
        } else {
            serde_json::to_vec(envelope)
        }
        .map_err(|e| RelayError::JetStream(e.to_string()))?;
        let mut message = PublishMessage::build()
            .payload(Bytes::from(payload))
            .message_id(envelope.event_id.to_string())
            .header(headers::EVENT_TYPE, envelope.event.event_type())
            .header(headers::SCHEMA_VERSION, envelope.schema_version.as_str())
            .header(headers::LISTING_KEY, envelope.listing_key.as_str())
            .header(headers::SEQUENCE, envelope.sequence.to_string().as_str())
            .header(
                headers::GLOBAL_POSITION,
                envelope.global_position.to_string().as_str(),
            )
            .header(
                headers::EFFECTIVE_AT,
                envelope.effective_at.to_rfc3339().as_str(),
            )
            .header(
                headers::RECORDED_AT,
                envelope.recorded_at.to_rfc3339().as_str(),
            )
            .header(
                headers::CORRELATION_ID,
                envelope.correlation_id.to_string().as_str(),
            )
            .header(
                headers::CAUSATION_ID,
                envelope.causation_id.to_string().as_str(),
            )
            .header(headers::CONTENT_TYPE, "application/json");
        message = match expected {
            Expected::Sequence(sequence) => message.expected_last_sequence(sequence),
            Expected::MessageId(id) => message.expected_last_message_id(id.to_string()),
        };
        if let Some(traceparent) = traceparent {
            message = message.header(headers::TRACEPARENT, traceparent.as_str());
        }
        Ok(message)
    }
}

/// What a message requires of the stream before it is stored.
#[derive(Clone, Copy)]
pub(crate) enum Expected {
    /// The stream's last sequence is this.
    Sequence(u64),
    /// The stream's last message is this event.
    MessageId(Uuid),
}

/// How a publish pipeline ended.
pub(crate) enum PipelineEnd {
    Complete,
    /// JetStream reported this event as already stored.
    Duplicate(Uuid),
    Failed(RelayError),
}
