//! OpenTelemetry spans of checks (`[tracing]`): one server span per Check, the child of the span
//! Envoy sends as `traceparent` in the gRPC call's metadata (its ext_authz span) and sampled as
//! that parent was. A call without one continues the `traceparent` of the checked request, if
//! any; a check with no parent at all starts a trace with probability `sample_ratio`.
//!
//! A span carries the decision, its reason and the policy: names from certbound's own tables and
//! configuration. It never sees a header, a token, a claim or a certificate: `finish` is handed
//! the outcome alone.
//!
//! Spans leave from the batch processor's own thread over OTLP/gRPC, through a bounded queue
//! that drops when full, so a slow or absent receiver never holds a check. With tracing off the
//! service holds no `Tracing` at all and pays one branch per check.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, Span, SpanExporter};
use opentelemetry_sdk::Resource;

use certbound_config::TracingSettings;
use certbound_core::decision::Decision;
use certbound_core::pipeline::Outcome;

/// OpenTelemetry's RPC span name for the call a span stands for: `package.Service/Method`.
pub const SPAN_NAME: &str = "envoy.service.auth.v3.Authorization/Check";
/// The span attributes, under certbound's own namespace.
pub const DECISION: &str = "certbound.decision";
pub const REASON: &str = "certbound.reason";
pub const POLICY: &str = "certbound.policy";

#[derive(Debug, thiserror::Error)]
#[error("the OTLP exporter to {endpoint}: {source}")]
pub struct TracingError {
    endpoint: String,
    source: opentelemetry_otlp::ExporterBuildError,
}

/// The tracer of one process, with its exporter.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl Tracing {
    /// Exports to `settings.otlp_endpoint`. Call inside the tokio runtime: tonic's channel
    /// lives there (it connects on the first export, so a receiver that is not up yet is fine).
    pub fn start(settings: &TracingSettings) -> Result<Self, TracingError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(settings.otlp_endpoint.clone())
            .with_timeout(settings.export_timeout)
            .build()
            .map_err(|source| TracingError {
                endpoint: settings.otlp_endpoint.clone(),
                source,
            })?;
        Ok(Self::with_exporter(settings, exporter))
    }

    /// Exports to `exporter` (tests hand an in-memory one).
    pub fn with_exporter(
        settings: &TracingSettings,
        exporter: impl SpanExporter + 'static,
    ) -> Self {
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))))
            // Only the configured name: no resource detectors reading the environment.
            .with_resource(
                Resource::builder_empty()
                    .with_service_name(settings.service_name.clone())
                    .build(),
            )
            .with_batch_exporter(exporter)
            .build();
        let tracer = provider.tracer("certbound");
        Self {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
        }
    }

    /// The span of one check, started now. Its parent: the gRPC call's `traceparent` (Envoy's
    /// ext_authz span), else the checked request's.
    pub fn start_check(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        headers: &HashMap<String, String>,
    ) -> Span {
        let mut parent = self.propagator.extract(&Metadata(metadata));
        if !parent.span().span_context().is_valid() {
            parent = self.propagator.extract(&Headers(headers));
        }
        self.start_under(&parent)
    }

    fn start_under(&self, parent: &Context) -> Span {
        self.tracer
            .span_builder(SPAN_NAME)
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, parent)
    }

    /// Sends what is still queued, then stops the exporter (at shutdown; blocks up to the
    /// export timeout).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "exporting the last spans failed");
        }
    }

    #[cfg(test)]
    pub fn force_flush(&self) {
        let _ = self.provider.force_flush();
    }
}

/// Ends a check's span with its decision, reason and policy.
pub fn finish(mut span: Span, outcome: &Outcome) {
    if span.is_recording() {
        let (decision, reason) = match &outcome.decision {
            Decision::Allow { reason, .. } => ("allow", reason.as_str()),
            Decision::Deny(reason) => ("deny", reason.as_str()),
        };
        span.set_attributes([
            KeyValue::new(DECISION, decision),
            KeyValue::new(REASON, reason),
            KeyValue::new(POLICY, outcome.policy.clone()),
        ]);
    }
    span.end();
}

/// gRPC metadata as the propagator reads it (ASCII values only).
struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// The checked request's headers (lower-case names, as Envoy sends them).
struct Headers<'a>(&'a HashMap<String, String>);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}
