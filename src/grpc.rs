//! The Envoy ext_authz v3 adapter: CheckRequest -> pipeline -> CheckResponse.
//!
//! `check` always returns `Ok(CheckResponse)`. A denial is a non-OK status with a
//! `DeniedHttpResponse`: returning a gRPC error would hand the decision to Envoy's
//! `failure_mode_allow`, which a fail-open deployment would turn into an allow.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::Instant;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction,
    HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value as ProtoValue};
use envoy_types::pb::google::rpc;

use crate::metrics::Metrics;
use crate::otel::{self, Tracing};
use certbound_core::answer::{self, Answer, Denial, Document, LogFields};
use certbound_core::clock;
use certbound_core::correlation::{self, Correlation};
use certbound_core::decision::{Decision, DenyReason};
use certbound_core::engine::Engine;
use certbound_core::pipeline::{self, CheckInput, Outcome, PeerCertificate};
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;

/// Largest CheckRequest checked. Headers are capped far below this. A larger one is answered
/// with the deny `request_too_large`, by the handler: a limit enforced by the transport would
/// be a gRPC error, which Envoy's `failure_mode_allow` turns into an allow.
pub const MAX_CHECK_REQUEST_BYTES: usize = 1024 * 1024;
/// Largest CheckRequest the transport decodes (only to answer it with a deny): well above what
/// Envoy sends with its own ceilings (request headers 8 MiB with `max_request_headers_kb`) plus
/// a buffered body of a few MiB. Bounds memory per stream.
pub const MAX_DECODED_CHECK_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// gRPC codes carried in `CheckResponse.status`.
const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;
const UNAUTHENTICATED: i32 = 16;

pub struct AuthzService {
    /// Swapped whole on reload; a check keeps the snapshot it started with.
    engine: Arc<ArcSwap<Engine>>,
    metrics: Arc<Metrics>,
    /// `[tracing]`; `None`: no spans.
    tracing: Option<Arc<Tracing>>,
    /// Tests only: every check panics, to prove a panic is still answered with a deny.
    #[cfg(test)]
    panic_in_check: bool,
}

impl AuthzService {
    pub fn new(engine: Arc<ArcSwap<Engine>>, metrics: Arc<Metrics>) -> Self {
        Self {
            engine,
            metrics,
            tracing: None,
            #[cfg(test)]
            panic_in_check: false,
        }
    }

    /// Every check also makes a span with `tracing`.
    pub fn with_tracing(mut self, tracing: Option<Arc<Tracing>>) -> Self {
        self.tracing = tracing;
        self
    }

    /// The pipeline's outcome for one CheckRequest.
    async fn decide(&self, input: &CheckInput<'_>) -> Outcome {
        #[cfg(test)]
        if self.panic_in_check {
            panic!("injected panic");
        }
        let engine = self.engine.load_full();
        pipeline::check(input, &engine, clock::now_unix()).await
    }
}

static EMPTY_HEADERS: std::sync::LazyLock<HashMap<String, String>> =
    std::sync::LazyLock::new(HashMap::new);

/// An outcome no policy decided.
fn undecided(reason: DenyReason) -> Outcome {
    Outcome {
        decision: Decision::Deny(reason),
        ..Outcome::default()
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let started = Instant::now();
        let (grpc_metadata, _, req) = request.into_parts();
        let attrs = req.attributes.as_ref();
        let http = attrs
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let headers = http.map_or(&*EMPTY_HEADERS, |h| &h.headers);
        let input = CheckInput {
            headers,
            peer_certificate: PeerCertificate::url_encoded_pem(
                attrs
                    .and_then(|a| a.source.as_ref())
                    .map_or("", |s| s.certificate.as_str()),
            ),
            policy_name: attrs
                .and_then(|a| a.context_extensions.get("policy"))
                .map(String::as_str),
            source_ip: attrs.and_then(source_ip),
        };
        let too_large = prost::Message::encoded_len(&req) > MAX_CHECK_REQUEST_BYTES;
        if !too_large {
            if let Some(m) = self.engine.load().published(headers) {
                // Public data, answered before any check: not a decision.
                return Ok(tonic::Response::new(published(answer::document(m))));
            }
        }
        let span = self
            .tracing
            .as_ref()
            .map(|t| t.start_check(&grpc_metadata, headers));
        let outcome = if too_large {
            undecided(DenyReason::RequestTooLarge)
        } else {
            // A panic must not become a gRPC error, which `failure_mode_allow` would turn into
            // an allow: it is answered with a deny.
            match AssertUnwindSafe(self.decide(&input)).catch_unwind().await {
                Ok(outcome) => outcome,
                Err(_) => {
                    // The panic message is not logged: it may quote request data.
                    tracing::error!(
                        policy = input.policy_name.unwrap_or_default(),
                        "a check panicked; answered with a deny"
                    );
                    undecided(DenyReason::InternalError)
                }
            }
        };
        self.metrics
            .record(&outcome, started.elapsed().as_secs_f64());
        let ids = ids(&grpc_metadata, headers, http.map_or("", |h| h.id.as_str()));
        if let Decision::Deny(reason) = &outcome.decision {
            tracing::info!(
                reason = reason.as_str(),
                policy = %outcome.policy,
                status = reason.http_status(),
                path = http.map_or("", |h| h.path.split('?').next().unwrap_or("")),
                cert = outcome.thumbprint.as_deref().map_or("", |t| &t[..8.min(t.len())]),
                request_id = ids.request_id.unwrap_or_default(),
                trace_id = ids.trace_id.unwrap_or_default(),
                "deny"
            );
        }
        if let Some(span) = span {
            otel::finish(span, &outcome);
        }
        Ok(tonic::Response::new(response(
            &outcome,
            ids,
            certbound_core::extract::host(headers),
            self.engine.load().log_fields,
        )))
    }
}

/// The request's ids. The trace is the gRPC call's own `traceparent` when Envoy traces (its
/// ext_authz span: the trace Envoy's access log and tracer show), else the checked request's;
/// the request id is `x-request-id`, else the CheckRequest's `id` (Envoy fills it with the same).
fn ids<'a>(
    grpc_metadata: &'a tonic::metadata::MetadataMap,
    headers: &'a HashMap<String, String>,
    http_id: &'a str,
) -> Correlation<'a> {
    let mut ids = Correlation::of(headers);
    if let Some(trace) = grpc_metadata
        .get(correlation::TRACEPARENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(correlation::trace_id)
    {
        ids.trace_id = Some(trace);
    }
    if ids.request_id.is_none() {
        ids.request_id = correlation::request_id(http_id);
    }
    ids
}

/// The IP of the hop that connected to Envoy (`attributes.source.address`).
fn source_ip(
    attrs: &envoy_types::pb::envoy::service::auth::v3::AttributeContext,
) -> Option<std::net::IpAddr> {
    use envoy_types::pb::envoy::config::core::v3::address::Address;
    match attrs.source.as_ref()?.address.as_ref()?.address.as_ref()? {
        Address::SocketAddress(sa) => sa.address.parse().ok(),
        _ => None,
    }
}

/// Builds the CheckResponse for an outcome. `host` becomes the challenge's `realm`; `fields`
/// are the access-log fields of its dynamic metadata (none: no metadata at all), `ids` the
/// request's ids they may name.
pub fn response(
    outcome: &Outcome,
    ids: Correlation<'_>,
    host: Option<&str>,
    fields: LogFields,
) -> CheckResponse {
    let mut resp = match Answer::of(outcome, host) {
        Answer::Allow { set, remove } => CheckResponse {
            status: Some(rpc::Status {
                code: OK,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: set.iter().map(|h| overwrite(&h.name, &h.value)).collect(),
                headers_to_remove: remove,
                ..Default::default()
            })),
            ..Default::default()
        },
        Answer::Deny(denial) => denied(denial),
    };
    if fields != LogFields::NONE {
        resp.dynamic_metadata = Some(metadata(outcome, ids, fields));
    }
    resp
}

/// What Envoy's access log and later filters can read under
/// `envoy.filters.http.ext_authz`: the policy, the decision and its reason, and who it was.
fn metadata(outcome: &Outcome, ids: Correlation<'_>, fields: LogFields) -> Struct {
    Struct {
        fields: answer::log_fields(outcome, ids, fields)
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    ProtoValue {
                        kind: Some(Kind::StringValue(v.to_string())),
                    },
                )
            })
            .collect(),
    }
}

/// The RFC 9728 metadata document as Envoy's local reply. ext_authz sends a local reply only
/// for a non-OK status; its HTTP status (200) is what the client sees.
fn published(doc: Document) -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status {
            code: PERMISSION_DENIED,
            message: "protected_resource_metadata".to_string(),
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(doc.status),
            }),
            headers: doc
                .headers
                .iter()
                .map(|h| overwrite(h.name, &h.value))
                .collect(),
            body: doc.body,
        })),
        ..Default::default()
    }
}

fn denied(denial: Denial) -> CheckResponse {
    let code = if denial.status == 401 {
        UNAUTHENTICATED
    } else {
        PERMISSION_DENIED
    };
    let mut seen_challenge = false;
    let headers = denial
        .headers
        .iter()
        .map(|h| {
            let mut o = overwrite(h.name, &h.value);
            if h.name == "www-authenticate" {
                if seen_challenge {
                    // One header line per challenge.
                    o.append_action = HeaderAppendAction::AppendIfExistsOrAdd as i32;
                }
                seen_challenge = true;
            }
            o
        })
        .collect();
    CheckResponse {
        status: Some(rpc::Status {
            code,
            message: denial.reason.as_str().to_string(),
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(denial.status),
            }),
            headers,
            body: denial.body,
        })),
        ..Default::default()
    }
}

fn overwrite(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            value: value.to_string(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real server on port 0 with `service`, and a real tonic client for it.
    async fn serve(
        service: AuthzService,
    ) -> envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient<
        tonic::transport::Channel,
    > {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tonic::transport::Server::builder()
            .add_service(envoy_types::ext_authz::v3::pb::AuthorizationServer::new(
                service,
            ))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(
            format!("http://{addr}"),
        )
        .await
        .unwrap()
    }

    fn policies(dir: &std::path::Path) -> Arc<ArcSwap<Engine>> {
        let key = certbound_core::fixtures::SigningKey::es256("k").unwrap();
        std::fs::write(
            dir.join("jwks.json"),
            certbound_core::fixtures::jwks(&[&key]).to_string(),
        )
        .unwrap();
        let path = dir.join("certbound.toml");
        std::fs::write(
            &path,
            "issuer = \"https://idp.test\"\njwks_file = \"jwks.json\"\nproof_of_possession_mtls = \"off\"\n",
        )
        .unwrap();
        let config = crate::config::Config::load(&path).unwrap();
        Arc::new(ArcSwap::from_pointee(
            config.build(&|_| None).unwrap().engine,
        ))
    }

    fn http_request(headers: &[(&str, &str)]) -> CheckRequest {
        use envoy_types::pb::envoy::service::auth::v3::{attribute_context, AttributeContext};
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(attribute_context::Request {
                    http: Some(attribute_context::HttpRequest {
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    #[tokio::test]
    async fn the_metadata_path_is_answered_with_the_document_and_challenges_name_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = certbound_core::fixtures::SigningKey::es256("k").unwrap();
        std::fs::write(
            dir.path().join("jwks.json"),
            certbound_core::fixtures::jwks(&[&key]).to_string(),
        )
        .unwrap();
        let path = dir.path().join("certbound.toml");
        std::fs::write(
            &path,
            "issuer = \"https://idp.test\"\njwks_file = \"jwks.json\"\nresource = \"https://api.test/v1\"\n",
        )
        .unwrap();
        let engine = crate::config::Config::load(&path)
            .unwrap()
            .build(&|_| None)
            .unwrap()
            .engine;
        let metrics = Arc::new(Metrics::new().unwrap());
        let service = AuthzService::new(Arc::new(ArcSwap::from_pointee(engine)), metrics.clone());
        let mut client = serve(service).await;

        let metadata = client
            .check(http_request(&[
                (":method", "GET"),
                (":path", "/.well-known/oauth-protected-resource/v1"),
                (":authority", "api.test"),
            ]))
            .await
            .unwrap()
            .into_inner();
        assert_ne!(
            metadata.status.unwrap().code,
            OK,
            "Envoy replies only to a non-OK"
        );
        match metadata.http_response {
            Some(HttpResponse::DeniedResponse(d)) => {
                assert_eq!(d.status.unwrap().code, 200);
                let doc: serde_json::Value = serde_json::from_str(&d.body).unwrap();
                assert_eq!(doc["resource"], "https://api.test/v1");
                assert_eq!(doc["authorization_servers"][0], "https://idp.test");
            }
            other => panic!("expected a local reply, got {other:?}"),
        }
        let rendered = metrics.render();
        assert!(
            rendered
                .lines()
                .filter(|l| l.starts_with("certbound_decisions_total{"))
                .all(|l| l.ends_with(" 0")),
            "serving metadata is not a decision: {rendered}"
        );

        let bare = client
            .check(http_request(&[
                (":method", "GET"),
                (":path", "/v1/orders"),
                (":authority", "api.test"),
            ]))
            .await
            .unwrap()
            .into_inner();
        match bare.http_response {
            Some(HttpResponse::DeniedResponse(d)) => {
                assert_eq!(d.status.unwrap().code, 401);
                let challenge = d
                    .headers
                    .iter()
                    .filter_map(|h| h.header.as_ref())
                    .find(|h| h.key == "www-authenticate")
                    .map(|h| h.value.clone());
                assert_eq!(
                    challenge.as_deref(),
                    Some("Bearer realm=\"api.test\", resource_metadata=\"https://api.test/.well-known/oauth-protected-resource/v1\"")
                );
            }
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_panicking_check_is_answered_with_a_counted_deny_not_a_grpc_error() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new().unwrap());
        let mut service = AuthzService::new(policies(dir.path()), metrics.clone());
        service.panic_in_check = true;
        let mut client = serve(service).await;
        let resp = client
            .check(CheckRequest::default())
            .await
            .expect("a panic must not become a gRPC error")
            .into_inner();
        assert_eq!(resp.status.as_ref().unwrap().code, PERMISSION_DENIED);
        assert_eq!(resp.status.as_ref().unwrap().message, "internal_error");
        match resp.http_response {
            Some(HttpResponse::DeniedResponse(d)) => {
                assert_eq!(d.status.unwrap().code, 500);
            }
            other => panic!("expected a denial, got {other:?}"),
        }
        assert!(metrics
            .render()
            .contains(r#"certbound_decisions_total{decision="deny",policy="(none)",reason="internal_error"} 1"#));
    }

    #[test]
    fn a_response_carries_the_configured_log_fields_and_none_without_any() {
        use certbound_core::answer::LogField;
        let outcome = Outcome {
            decision: Decision::Deny(DenyReason::MissingToken),
            policy: "default".into(),
            ..Outcome::default()
        };
        let only_reason = response(
            &outcome,
            Correlation::default(),
            None,
            LogFields::of([LogField::Reason]),
        );
        let fields = only_reason.dynamic_metadata.expect("metadata").fields;
        assert_eq!(fields.keys().collect::<Vec<_>>(), ["reason"]);
        assert!(
            response(&outcome, Correlation::default(), None, LogFields::NONE)
                .dynamic_metadata
                .is_none()
        );
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn traceparent(flags: &str) -> String {
        format!("00-{TRACE}-00f067aa0ba902b7-{flags}")
    }

    fn traced(ratio: f64) -> (Arc<Tracing>, opentelemetry_sdk::trace::InMemorySpanExporter) {
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let settings = crate::config::TracingSettings {
            otlp_endpoint: "http://127.0.0.1:4317".into(),
            sample_ratio: ratio,
            service_name: "certbound".into(),
            export_timeout: std::time::Duration::from_secs(1),
        };
        (
            Arc::new(Tracing::with_exporter(&settings, exporter.clone())),
            exporter,
        )
    }

    /// Checks `headers` with `traceparent` (if any) in the gRPC call's metadata, as Envoy sends
    /// its ext_authz span; returns the deny reason and the spans exported.
    async fn check_traced(
        ratio: f64,
        grpc_traceparent: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (String, Vec<opentelemetry_sdk::trace::SpanData>) {
        let dir = tempfile::tempdir().unwrap();
        let (tracing, exporter) = traced(ratio);
        let service = AuthzService::new(policies(dir.path()), Arc::new(Metrics::new().unwrap()))
            .with_tracing(Some(tracing.clone()));
        let mut client = serve(service).await;
        let mut request = tonic::Request::new(http_request(headers));
        if let Some(tp) = grpc_traceparent {
            request
                .metadata_mut()
                .insert("traceparent", tp.parse().unwrap());
        }
        let resp = client.check(request).await.unwrap().into_inner();
        tracing.force_flush();
        (
            resp.status.unwrap().message,
            exporter.get_finished_spans().unwrap(),
        )
    }

    #[tokio::test]
    async fn a_check_span_is_the_child_of_envoys_span_and_carries_only_its_decision() {
        let token = "eyJhbGciOiJFUzI1NiJ9.c2VjcmV0LXRva2VuLWJvZHk.c2lnbmF0dXJl";
        let bearer = format!("Bearer {token}");
        let sampled = traceparent("01");
        let (reason, spans) = check_traced(
            1.0,
            Some(&sampled),
            &[("authorization", &bearer), ("x-request-id", "req-7")],
        )
        .await;
        assert_eq!(spans.len(), 1, "{spans:?}");
        let span = &spans[0];
        assert_eq!(span.name, otel::SPAN_NAME);
        assert_eq!(span.span_kind, opentelemetry::trace::SpanKind::Server);
        assert_eq!(span.span_context.trace_id().to_string(), TRACE);
        assert_eq!(span.parent_span_id.to_string(), "00f067aa0ba902b7");
        let attributes: HashMap<String, String> = span
            .attributes
            .iter()
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect();
        let want: HashMap<String, String> = [
            (otel::DECISION, "deny"),
            (otel::REASON, reason.as_str()),
            (otel::POLICY, "default"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(attributes, want);
        let everything = format!("{span:?}");
        for secret in [token, "c2VjcmV0LXRva2VuLWJvZHk", "req-7"] {
            assert!(!everything.contains(secret), "{secret} is in the span");
        }
    }

    #[tokio::test]
    async fn an_unsampled_parent_makes_no_span_and_a_parentless_check_follows_the_ratio() {
        let unsampled = traceparent("00");
        let (_, spans) = check_traced(1.0, Some(&unsampled), &[]).await;
        assert!(spans.is_empty(), "Envoy did not sample: {spans:?}");
        let (_, spans) = check_traced(0.0, None, &[]).await;
        assert!(spans.is_empty(), "ratio 0 without a parent: {spans:?}");
        let (_, spans) = check_traced(1.0, None, &[]).await;
        assert_eq!(spans.len(), 1, "ratio 1 without a parent");
        assert_eq!(
            spans[0].parent_span_id,
            opentelemetry::trace::SpanId::INVALID,
            "a root span"
        );
        let sampled = traceparent("01");
        let (_, spans) = check_traced(0.0, Some(&sampled), &[]).await;
        assert_eq!(spans.len(), 1, "a sampled parent wins over ratio 0");
    }

    #[tokio::test]
    async fn without_envoys_span_the_check_continues_the_requests_own_trace() {
        let sampled = traceparent("01");
        let (_, spans) = check_traced(0.0, None, &[("traceparent", &sampled)]).await;
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].span_context.trace_id().to_string(), TRACE);
    }

    #[test]
    fn the_ids_prefer_envoys_trace_and_fall_back_to_the_check_requests_id() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        let mut headers = HashMap::new();
        headers.insert(
            "traceparent".to_string(),
            "00-11111111111111111111111111111111-00f067aa0ba902b7-01".to_string(),
        );
        let from_headers = ids(&metadata, &headers, "envoy-id");
        assert_eq!(
            from_headers.trace_id,
            Some("11111111111111111111111111111111")
        );
        assert_eq!(from_headers.request_id, Some("envoy-id"));
        metadata.insert("traceparent", traceparent("01").parse().unwrap());
        headers.insert("x-request-id".to_string(), "req-1".to_string());
        let both = ids(&metadata, &headers, "envoy-id");
        assert_eq!(
            both.trace_id,
            Some(TRACE),
            "Envoy's own span names the trace"
        );
        assert_eq!(both.request_id, Some("req-1"));
        assert_eq!(
            ids(&metadata, &headers, "bad id\n").request_id,
            Some("req-1")
        );
        assert_eq!(
            ids(
                &tonic::metadata::MetadataMap::new(),
                &HashMap::new(),
                "bad id\n"
            ),
            Correlation::default()
        );
    }

    #[test]
    fn the_metadata_names_the_request_and_trace_ids_when_configured() {
        use certbound_core::answer::LogField;
        let outcome = Outcome {
            decision: Decision::Deny(DenyReason::MissingToken),
            policy: "default".into(),
            ..Outcome::default()
        };
        let ids = Correlation {
            request_id: Some("req-1"),
            trace_id: Some(TRACE),
        };
        let fields = response(
            &outcome,
            ids,
            None,
            LogFields::of([LogField::RequestId, LogField::TraceId]),
        )
        .dynamic_metadata
        .expect("metadata")
        .fields;
        let text = |k: &str| match fields.get(k).and_then(|v| v.kind.as_ref()) {
            Some(Kind::StringValue(s)) => s.clone(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(text("request_id"), "req-1");
        assert_eq!(text("trace_id"), TRACE);
        let defaults = response(
            &outcome,
            ids,
            None,
            certbound_core::defaults::DYNAMIC_METADATA,
        )
        .dynamic_metadata
        .expect("metadata")
        .fields;
        assert!(!defaults.contains_key("request_id") && !defaults.contains_key("trace_id"));
    }

    #[test]
    fn denied_response_is_never_an_ok_status() {
        for r in DenyReason::ALL {
            let outcome = Outcome {
                decision: Decision::Deny(r),
                ..Outcome::default()
            };
            let resp = response(&outcome, Correlation::default(), Some("h"), LogFields::ALL);
            assert_ne!(resp.status.unwrap().code, OK, "{r:?}");
        }
    }

    fn dpop_denial(
        mode: certbound_core::dpop::DpopMode,
        reason: DenyReason,
    ) -> Vec<HeaderValueOption> {
        let outcome = Outcome {
            decision: Decision::Deny(reason),
            dpop: Some(certbound_core::dpop::Challenge {
                mode,
                algs: "ES256".into(),
                nonce: Some("n0nce".into()),
            }),
            ..Outcome::default()
        };
        match response(
            &outcome,
            Correlation::default(),
            Some("api.test"),
            LogFields::ALL,
        )
        .http_response
        {
            Some(HttpResponse::DeniedResponse(d)) => d.headers,
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    fn header<'h>(headers: &'h [HeaderValueOption], name: &str) -> Vec<(&'h str, i32)> {
        headers
            .iter()
            .filter_map(|h| h.header.as_ref().map(|v| (v, h.append_action)))
            .filter(|(v, _)| v.key == name)
            .map(|(v, a)| (v.value.as_str(), a))
            .collect()
    }

    #[test]
    fn optional_dpop_answers_bearer_then_dpop_challenges_on_their_own_lines() {
        let h = dpop_denial(
            certbound_core::dpop::DpopMode::Optional,
            DenyReason::DpopStale,
        );
        let www = header(&h, "www-authenticate");
        assert_eq!(www.len(), 2, "{www:?}");
        assert_eq!(www[0].0, "Bearer realm=\"api.test\"");
        assert_eq!(www[0].1, HeaderAppendAction::OverwriteIfExistsOrAdd as i32);
        assert!(www[1]
            .0
            .starts_with("DPoP algs=\"ES256\", error=\"invalid_dpop_proof\""));
        assert_eq!(www[1].1, HeaderAppendAction::AppendIfExistsOrAdd as i32);
        assert_eq!(header(&h, "dpop-nonce")[0].0, "n0nce");
    }

    #[test]
    fn strict_dpop_answers_one_dpop_challenge_carrying_token_errors_too() {
        let h = dpop_denial(
            certbound_core::dpop::DpopMode::Strict,
            DenyReason::TokenExpired,
        );
        let www = header(&h, "www-authenticate");
        assert_eq!(www.len(), 1, "{www:?}");
        assert!(
            www[0]
                .0
                .starts_with("DPoP algs=\"ES256\", error=\"invalid_token\""),
            "{www:?}"
        );
    }

    #[test]
    fn dpop_policies_answer_non_401_denials_as_before() {
        for (reason, challenges) in [
            (DenyReason::InsufficientScope, 1),
            (DenyReason::DpopReplayStoreUnavailable, 0),
        ] {
            let h = dpop_denial(certbound_core::dpop::DpopMode::Strict, reason);
            let www = header(&h, "www-authenticate");
            assert_eq!(www.len(), challenges, "{reason:?}: {www:?}");
            assert!(www.iter().all(|(v, _)| v.starts_with("Bearer ")), "{www:?}");
        }
    }
}
