//! The trace context across process boundaries, as a W3C `traceparent` string:
//! [`current_traceparent`] writes the current span's, [`set_parent`] continues one. The
//! context travels HTTP `traceparent` → event metadata → NATS header → consumers. (The
//! subscriber and the OTLP exporter are installed by the binary at start-up.)

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C trace-context header (and event metadata key).
pub const TRACEPARENT: &str = "traceparent";

/// The current span's context as a W3C `traceparent`, or `None` outside any span.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Makes `span` continue the trace of `traceparent` (from an HTTP header, event metadata or
/// a NATS header). A missing or malformed value leaves `span` the root of a new trace.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    // Fails only when the span is disabled (filtered out): nothing to continue then.
    let _ = span.set_parent(context);
}
