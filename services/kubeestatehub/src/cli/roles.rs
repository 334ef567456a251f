//! What each role's settings are: `Settings` read as the typed settings of the relay, the
//! projector, the analytics worker, auth, HTTP and the pool.

use std::time::Duration;

use super::{Environment, Settings};

impl Settings {
    /// The internal stream: every event with its private fields, for the platform's own
    /// consumers only (`{KEH_STREAM}_INTERNAL`, subjects `{KEH_SUBJECT_PREFIX}.internal.…`).
    pub fn internal_stream(&self) -> String {
        format!("{}_INTERNAL", self.stream)
    }

    pub fn internal_subject_prefix(&self) -> String {
        format!("{}.internal", self.subject_prefix)
    }

    /// The relay of the public stream (private fields removed; outside subscribers read it).
    pub fn relay(&self) -> keh_relay::RelaySettings {
        keh_relay::RelaySettings {
            stream: self.stream.clone(),
            subject_prefix: self.subject_prefix.clone(),
            partitions: self.partitions,
            replicas: self.stream_replicas,
            duplicate_window: Duration::from_secs(self.stream_duplicate_window_secs),
            max_age: Duration::from_secs(self.stream_max_age_secs),
            // 0 in the setting (no limit) is JetStream's -1.
            max_bytes: if self.stream_max_bytes > 0 {
                self.stream_max_bytes
            } else {
                -1
            },
            batch_size: self.relay_batch.max(1),
            idle_poll: Duration::from_millis(self.relay_idle_poll_ms.max(10)),
            gather: Duration::from_millis(self.relay_gather_ms),
            redact_private: true,
            metrics_every: Duration::from_millis(self.metrics_refresh_ms.max(10)),
            ..keh_relay::RelaySettings::default()
        }
    }

    /// The relay of the internal stream (everything, for the projector and the analytics
    /// worker).
    pub fn relay_internal(&self) -> keh_relay::RelaySettings {
        keh_relay::RelaySettings {
            stream: self.internal_stream(),
            subject_prefix: self.internal_subject_prefix(),
            redact_private: false,
            ..self.relay()
        }
    }

    /// The projector's settings.
    pub fn projector(&self) -> keh_projections::projector::ProjectorSettings {
        keh_projections::projector::ProjectorSettings {
            stream: self.internal_stream(),
            subject_prefix: self.internal_subject_prefix(),
            partitions: self.partitions,
            batch_size: self.projector_batch.max(1),
            ack_wait: Duration::from_millis(self.projector_ack_wait_ms.max(100)),
            heartbeat: Duration::from_millis(self.projector_heartbeat_ms.max(50)),
            gather: Duration::from_millis(self.consumer_gather_ms),
            ..keh_projections::projector::ProjectorSettings::default()
        }
    }

    /// The analytics consumer group's settings (same partitions and stream as the projector,
    /// its own durable consumers `analytics-p{N}`).
    pub fn analytics(&self) -> keh_projections::projector::ProjectorSettings {
        keh_projections::projector::ProjectorSettings {
            group: "analytics".to_owned(),
            batch_size: self.analytics_batch.max(1),
            gather: Duration::from_millis(self.analytics_gather_ms),
            ..self.projector()
        }
    }

    pub fn analytics_worker(&self) -> keh_analytics::worker::WorkerSettings {
        keh_analytics::worker::WorkerSettings {
            tick: Duration::from_millis(self.analytics_tick_ms.max(10)),
            report_lease: Duration::from_millis(self.report_lease_ms.max(100)),
            min_interval: Duration::from_millis(self.analytics_min_recompute_interval_ms),
            ..keh_analytics::worker::WorkerSettings::default()
        }
    }

    /// Sign-in and authorization settings.
    pub fn auth(&self) -> keh_auth::AuthSettings {
        keh_auth::AuthSettings {
            jwt_secret: self.jwt_secret.clone(),
            previous_jwt_secrets: self.jwt_previous_secrets.clone(),
            password_policy: keh_auth::policy::PasswordPolicy {
                allow_development_password: self.environment == Environment::Development,
            },
            access_ttl: Duration::from_secs(self.access_token_ttl_secs.max(1)),
            refresh_ttl: Duration::from_secs(self.refresh_token_ttl_secs.max(1)),
            anonymous_read: self.anonymous_read,
            office_access: self.agent_office_access,
            trusted_proxies: keh_auth::ratelimit::TrustedProxies::new(self.trusted_proxies.clone()),
        }
    }

    /// The HTTP settings; fails when the metrics token file cannot be read.
    pub fn http(&self) -> Result<keh_http::HttpSettings, String> {
        let ops_token = match (&self.metrics_token, &self.metrics_token_file) {
            (Some(token), _) => Some(token.expose().to_owned()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("reading KEH_METRICS_TOKEN_FILE {}: {e}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        }
        .filter(|token| !token.is_empty());
        if let Some(token) = &ops_token
            && token.len() < 16
        {
            return Err(
                "the metrics token must be at least 16 characters (e.g. `openssl rand -hex 32`)"
                    .to_owned(),
            );
        }
        let ops_token = ops_token.map(keh_http::OpsToken::new);
        Ok(keh_http::HttpSettings {
            ops_token,
            body_limit: self.body_limit_bytes,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            cors_origins: self
                .cors_origins
                .iter()
                .map(|o| o.trim())
                .filter(|o| !o.is_empty())
                .filter_map(|o| axum::http::HeaderValue::from_str(o).ok())
                .collect(),
        })
    }

    pub fn pool(&self, role: &str) -> keh_store::PoolSettings {
        keh_store::PoolSettings {
            max_connections: self.db_max_connections.max(2),
            acquire_timeout: Duration::from_millis(self.db_acquire_timeout_ms),
            application_name: format!("kubeestatehub-{role}"),
        }
    }
}
