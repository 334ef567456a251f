//! The stream side of leadership: the stream created or checked, and the reconciliation
//! that finds, on every (re)connect, the last event the stream holds and where in the store
//! to resume (law 12: the stream, not the checkpoint or the de-duplication window, decides).

use super::*;

impl Relay {
    /// Creates or updates the stream with explicit settings; its state as JetStream
    /// answered.
    pub(crate) async fn ensure_stream(&self) -> Result<stream::Info, RelayError> {
        let config = stream::Config {
            name: self.settings.stream.clone(),
            description: Some("KubeEstateHub listing events (published by the relay)".to_owned()),
            subjects: vec![self.layout.all()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            // Full (max_bytes) means refusing what does not fit, never dropping the oldest:
            // the relay waits and the stream keeps equal to the store.
            discard: stream::DiscardPolicy::New,
            max_age: self.settings.max_age,
            duplicate_window: self.settings.duplicate_window,
            num_replicas: self.settings.replicas,
            max_messages: -1,
            max_bytes: self.settings.max_bytes,
            max_messages_per_subject: -1,
            deny_delete: true,
            allow_direct: true,
            ..Default::default()
        };
        self.jetstream
            .create_or_update_stream(config)
            .await
            .map_err(js_error)
    }

    /// Finds where the stream ends in the store's order: the stream's last message names an
    /// event; publication resumes right after it. Walks back over messages the store does
    /// not know (a store restored to an earlier point) to the newest one it does.
    pub(crate) async fn reconcile(
        &self,
        leader: &mut PgConnection,
    ) -> Result<Position, RelayError> {
        self.metrics.reconciles.inc();
        // The answer to creating or updating the stream is its state: no second request.
        let state = self.ensure_stream().await?.state;
        let stream = self
            .jetstream
            .get_stream_no_info(&self.settings.stream)
            .await
            .map_err(js_error)?;
        let last = state.last_sequence;
        if state.messages == 0 {
            if last == 0 {
                tracing::info!(stream = %self.settings.stream, "stream is new: publishing from the start of the store");
                return Ok(Position {
                    cursor: Cursor::START,
                    stream_sequence: 0,
                });
            }
            // Emptied by its limits (max age) or a purge: everything up to the checkpoint was
            // published once; publishing it again would replay history to subscribers.
            let cursor = outbox::load_checkpoint(&mut *leader, &self.settings.stream)
                .await?
                .unwrap_or(Cursor::START);
            tracing::warn!(stream = %self.settings.stream, last, "stream holds no messages but has published before: resuming after the relay's checkpoint");
            return Ok(Position {
                cursor,
                stream_sequence: last,
            });
        }
        let first = state.first_sequence.max(1);
        let mut sequence = last;
        // Walk back only over messages that are readable but unknown to the store (a store
        // restored to an earlier point); any failure to read is retried as a whole, never
        // taken as "unknown", or the relay would rewind and publish twice.
        while sequence >= first && last - sequence < MAX_WALK_BACK {
            let message = match stream.get_raw_message(sequence).await {
                Ok(message) => Some(message),
                Err(error)
                    if matches!(
                        error.kind(),
                        async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound
                    ) =>
                {
                    None
                }
                Err(error) => return Err(js_error(error)),
            };
            let event_id = message
                .as_ref()
                .and_then(|m| m.headers.get(headers::MSG_ID))
                .and_then(|v| Uuid::parse_str(v.as_str()).ok());
            if let Some(event_id) = event_id
                && let Some(cursor) = outbox::cursor_of(&mut *leader, event_id).await?
            {
                if sequence != last {
                    tracing::error!(
                        orphaned = last - sequence,
                        "the stream holds events the store does not (store restored?); resuming after the newest event both know"
                    );
                }
                tracing::info!(stream_sequence = last, %event_id, "reconciled with the stream");
                return Ok(Position {
                    cursor,
                    stream_sequence: last,
                });
            }
            sequence -= 1;
        }
        Err(RelayError::StreamAheadOfStore(last - sequence))
    }
}
