//! Logs and traces.
//!
//! Logs: one JSON object per line on stdout (or human-readable text for a terminal); a log
//! line written inside a traced span carries `openTelemetry.traceId` and `spanId`.
//!
//! Traces: OpenTelemetry spans from `tracing` spans, exported over OTLP/HTTP (protobuf) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set. Everything
//! else comes from the standard `OTEL_*` variables, read by the OpenTelemetry SDK itself
//! (service name and resource, sampler, batch sizes, headers, timeout). Without an endpoint
//! spans still get W3C trace ids, so the context still travels (HTTP `traceparent` → event
//! metadata → NATS header → consumers) and logs still correlate.
//!
//! The context crosses process boundaries through `keh_platform::telemetry`; this module
//! installs what records and exports it, once, at start-up.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Keeps the trace pipeline alive; dropping it flushes the spans still queued for export.
#[must_use = "dropping the guard shuts the trace exporter down"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("trace exporter shutdown: {error}");
        }
    }
}

/// Whether `OTEL_*` asks for spans to be exported: an OTLP endpoint is set, and neither
/// `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` turns export off.
fn export_wanted(var: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let exporter_off =
        var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    !disabled
        && !exporter_off
        && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Installs the global subscriber (logs, and spans for OpenTelemetry) and the W3C
/// propagator. `filter` uses `RUST_LOG` syntax (`info,keh_relay=debug`); `service` names the
/// process in traces unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` does.
/// Calling it twice (tests) is harmless: the second call installs nothing.
pub fn init(format: LogFormat, filter: &str, service: &str) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let env = |name: &str| std::env::var(name).ok();
    let mut resource = opentelemetry_sdk::Resource::builder();
    let named_by_env = env("OTEL_SERVICE_NAME").is_some()
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
    if !named_by_env {
        resource = resource.with_service_name(service.to_owned());
    }
    let mut builder = SdkTracerProvider::builder().with_resource(resource.build());
    let mut export_error = None;
    if export_wanted(env) {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(error) => export_error = Some(error.to_string()),
        }
    }
    let provider = builder.build();
    let tracer = provider.tracer("kubeestatehub");

    let filter = || EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match format {
        LogFormat::Json => json_subscriber::fmt::layer()
            .with_writer(std::io::stdout)
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_opentelemetry_ids(true)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stdout)
            .boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(logs.with_filter(filter()))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(filter()),
        )
        .try_init()
        .is_ok();
    if let Some(error) = export_error {
        tracing::warn!(%error, "OTLP trace export is configured but could not start; spans are not exported");
    }
    Telemetry {
        provider: installed.then_some(provider),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keh_platform::telemetry::{current_traceparent, set_parent};

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn export_needs_an_endpoint_and_is_not_disabled() {
        assert!(!export_wanted(vars(&[])));
        assert!(!export_wanted(vars(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            " "
        )])));
        assert!(export_wanted(vars(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:4318"
        )])));
        assert!(export_wanted(vars(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://collector:4318/v1/traces"
        )])));
        assert!(!export_wanted(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ])));
        assert!(!export_wanted(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ])));
    }

    #[test]
    fn a_traceparent_survives_a_round_trip_through_a_span() {
        let _guard = init(LogFormat::Text, "info", "test");
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let span = tracing::info_span!("work");
        set_parent(&span, Some(incoming));
        let outgoing = span.in_scope(current_traceparent);
        let outgoing = outgoing.unwrap_or_default();
        assert!(
            outgoing.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{outgoing}"
        );
        assert!(
            !outgoing.contains("00f067aa0ba902b7"),
            "a child span gets its own id"
        );
        let fresh = tracing::info_span!("other").in_scope(current_traceparent);
        assert!(fresh.is_some_and(|t| !t.contains("4bf92f3577b34da6a3ce929d0e0e4736")));
    }
}
