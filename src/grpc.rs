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
use certbound_core::answer::{self, Answer, Denial, Document, LogFields};
use certbound_core::clock;
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
    /// Tests only: every check panics, to prove a panic is still answered with a deny.
    #[cfg(test)]
    panic_in_check: bool,
}

impl AuthzService {
    pub fn new(engine: Arc<ArcSwap<Engine>>, metrics: Arc<Metrics>) -> Self {
        Self {
            engine,
            metrics,
            #[cfg(test)]
            panic_in_check: false,
        }
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
        let req = request.into_inner();
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
        if let Decision::Deny(reason) = &outcome.decision {
            tracing::info!(
                reason = reason.as_str(),
                policy = %outcome.policy,
                status = reason.http_status(),
                path = http.map_or("", |h| h.path.split('?').next().unwrap_or("")),
                cert = outcome.thumbprint.as_deref().map_or("", |t| &t[..8.min(t.len())]),
                "deny"
            );
        }
        Ok(tonic::Response::new(response(
            &outcome,
            certbound_core::extract::host(headers),
            self.engine.load().log_fields,
        )))
    }
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
/// are the access-log fields of its dynamic metadata (none: no metadata at all).
pub fn response(outcome: &Outcome, host: Option<&str>, fields: LogFields) -> CheckResponse {
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
        resp.dynamic_metadata = Some(metadata(outcome, fields));
    }
    resp
}

/// What Envoy's access log and later filters can read under
/// `envoy.filters.http.ext_authz`: the policy, the decision and its reason, and who it was.
fn metadata(outcome: &Outcome, fields: LogFields) -> Struct {
    Struct {
        fields: answer::log_fields(outcome, fields)
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
        let only_reason = response(&outcome, None, LogFields::of([LogField::Reason]));
        let fields = only_reason.dynamic_metadata.expect("metadata").fields;
        assert_eq!(fields.keys().collect::<Vec<_>>(), ["reason"]);
        assert!(response(&outcome, None, LogFields::NONE)
            .dynamic_metadata
            .is_none());
    }

    #[test]
    fn denied_response_is_never_an_ok_status() {
        for r in DenyReason::ALL {
            let outcome = Outcome {
                decision: Decision::Deny(r),
                ..Outcome::default()
            };
            let resp = response(&outcome, Some("h"), LogFields::ALL);
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
        match response(&outcome, Some("api.test"), LogFields::ALL).http_response {
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
