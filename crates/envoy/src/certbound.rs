//! certbound's pipeline as the filter: the same configuration file, policies, decisions and
//! answers as the ext_authz service, inside Envoy.
//!
//! - Configuration (`filter_config`: the path of a certbound TOML file) is loaded, validated
//!   and built with `certbound-config`, exactly as `certbound serve` does; an invalid file is
//!   logged with certbound's own error text and Envoy refuses the filter (fail closed). The
//!   listener keys (`grpc_listen`, `admin_listen`, `[grpc_tls]`) mean nothing here and are
//!   ignored, with a log line.
//! - Network work (JWKS fetches, introspection, OCSP/CRL, Redis) runs on a small tokio runtime
//!   the module owns, never on Envoy's threads.
//! - A check is polled once inside the request-headers hook: with warm caches it completes
//!   there. Otherwise the request is held, the check finishes on the module's runtime, and the
//!   scheduler resumes the stream on its own worker to apply the answer.
//! - The per-route config (a `StringValue`) names the policy, as `context_extensions: {policy}`
//!   does for ext_authz; a route without one uses the default policy.
//! - A `GET` of a policy's RFC 9728 metadata path is answered with the document, before any
//!   check, as the ext_authz service answers it.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use certbound_adapters::jwks::{self, FetchObserver};
use certbound_config::Config;
use certbound_core::answer::{self, Answer, LogField};
use certbound_core::clock;
use certbound_core::correlation::{self, Correlation};
use certbound_core::decision::{Decision, DenyReason};
use certbound_core::dpop::DpopMode;
use certbound_core::engine::Engine;
use certbound_core::extract;
use certbound_core::pipeline::{self, CheckInput, Outcome, PeerCertificate};
use certbound_core::policy::{CertSource, XFCC_HEADER};
use futures_util::FutureExt;
use tokio::sync::watch;

use crate::abi::{
    self, attribute, CounterId, EnvoyFilter, EnvoyFilterConfig, HeadersStatus, HttpFilterModule,
    LogLevel,
};

/// The event that resumes a held stream once its check is decided.
const EVENT_DECIDED: u64 = 1;
/// Threads of the module's runtime: network work only (checks mostly complete inline).
const RUNTIME_THREADS: usize = 2;
/// Envoy's dynamic metadata namespace for the access-log fields.
const METADATA_NAMESPACE: &str = "certbound";
/// The request headers every check reads besides each policy's certificate headers. Envoy
/// keeps the `Host` header as `:authority` (HTTP/1 and HTTP/2 alike). The request and trace
/// ids are read apart, only for what needs them (a deny line, or access-log fields that ask).
const CHECK_HEADERS: &[&str] = &["authorization", ":authority"];
/// What a request for RFC 9728 metadata is recognised by, read only when a policy publishes.
const METADATA_HEADERS: &[&str] = &[":method", ":path"];
/// What a DPoP proof is checked against, read only when a policy takes DPoP.
const DPOP_HEADERS: &[&str] = &["dpop", ":method", ":path"];
/// What `[[routes]]` rules match on (`:authority` is always read), read only when there are rules.
const ROUTE_HEADERS: &[&str] = &[":method", ":path"];

/// Shared by every stream of one filter configuration (all worker threads).
pub struct FilterConfig {
    engine: Arc<Engine>,
    /// Every header any policy reads, lower case.
    headers: Vec<String>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Dropped with the configuration: stops the key fetchers.
    _stop: watch::Sender<bool>,
    decisions: Option<CounterId>,
}

impl Drop for FilterConfig {
    fn drop(&mut self) {
        // Never block Envoy's main thread on the module's tasks.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A route's policy name.
pub struct RoutePolicy(pub String);

/// One stream: the check's outcome once a held request is decided.
#[derive(Default)]
pub struct Certbound {
    decided: Option<Arc<Mutex<Option<Outcome>>>>,
    host: Option<String>,
}

/// Counts JWKS fetches in the log only (Envoy's stats are defined per filter configuration).
struct LogFetches;

impl FetchObserver for LogFetches {
    fn fetched(&self, ok: bool) {
        if !ok {
            abi::log(
                LogLevel::Warn,
                "certbound: a signing key fetch failed; keeping the keys already loaded",
            );
        }
    }
}

/// The configuration path from `filter_config`: a `StringValue` arrives as its raw bytes (plain
/// Envoy); a JSON string or `{"config": "<path>"}` is what a `Struct` or a JSON value arrives as
/// (Envoy Gateway's `EnvoyExtensionPolicy.dynamicModule[].config`).
fn config_path(raw: &[u8]) -> Result<String, String> {
    const WHAT: &str = "filter_config (the path of a certbound configuration file)";
    let trimmed = raw.trim_ascii();
    if trimmed.first().is_some_and(|b| *b == b'{' || *b == b'"') {
        let value: serde_json::Value =
            serde_json::from_slice(trimmed).map_err(|_| format!("{WHAT} is not valid JSON"))?;
        let path = match &value {
            serde_json::Value::String(s) => Some(s.as_str()),
            serde_json::Value::Object(o) => o.get("config").and_then(|v| v.as_str()),
            _ => None,
        };
        let path = path.ok_or_else(|| {
            format!("{WHAT}: a JSON value must be a string or {{\"config\": \"<path>\"}}")
        })?;
        return text(path.as_bytes(), WHAT);
    }
    text(raw, WHAT)
}

fn text(raw: &[u8], what: &str) -> Result<String, String> {
    let text = std::str::from_utf8(raw).map_err(|_| format!("{what} is not UTF-8"))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("{what} is empty"));
    }
    Ok(text.to_string())
}

impl FilterConfig {
    fn load(raw: &[u8]) -> Result<FilterConfig, String> {
        let path = config_path(raw)?;
        let config =
            Config::load(std::path::Path::new(&path)).map_err(|e| format!("{path}: {e}"))?;
        for w in &config.warnings {
            abi::log(
                LogLevel::Warn,
                &format!("certbound: `{}`: {}", w.key, w.message),
            );
        }
        abi::log(
            LogLevel::Info,
            "certbound: grpc_listen, admin_listen and [grpc_tls] are ignored inside Envoy",
        );
        if config.tracing.is_some() {
            abi::log(
                LogLevel::Info,
                "certbound: [tracing] is ignored inside Envoy, whose own tracer traces the request",
            );
        }
        let built = config
            .build(&|_| None)
            .map_err(|e| format!("{path}: {e}"))?;
        let client = config
            .idp_client
            .keys_client()
            .map_err(|e| format!("{path}: the IdP HTTPS client: {e}"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("certbound")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the module's threads: {e}"))?;
        let (stop, stopped) = watch::channel(false);
        for fetch in built.key_fetches {
            runtime.spawn(jwks::run(
                fetch,
                client.clone(),
                Arc::new(LogFetches),
                stopped.clone(),
            ));
        }
        let mut headers: Vec<String> = CHECK_HEADERS.iter().map(|h| h.to_string()).collect();
        if !built.engine.routes.is_empty() {
            headers.extend(ROUTE_HEADERS.iter().map(|h| h.to_string()));
        }
        if built.engine.publishes() {
            headers.extend(METADATA_HEADERS.iter().map(|h| h.to_string()));
        }
        for active in built.engine.iter() {
            if active.policy.dpop.mode != DpopMode::Off {
                headers.extend(DPOP_HEADERS.iter().map(|h| h.to_string()));
            }
            match &active.policy.cert_source {
                CertSource::Header(source) => {
                    headers.push(source.name.clone());
                    headers.extend(source.chain_name.clone());
                }
                CertSource::Mesh(_) => headers.push(XFCC_HEADER.to_string()),
                CertSource::Peer => {}
            }
        }
        headers.sort();
        headers.dedup();
        Ok(FilterConfig {
            engine: Arc::new(built.engine),
            headers,
            runtime: Some(runtime),
            _stop: stop,
            decisions: None,
        })
    }

    /// One counter call per request, labelled like the service's `certbound_decisions_total`:
    /// the policy that decided (a name this configuration holds, or `pipeline::NO_POLICY`), the
    /// decision and its reason.
    fn count(&self, envoy: &EnvoyFilter<'_>, outcome: &Outcome) {
        let Some(id) = self.decisions else { return };
        let (d, reason) = match &outcome.decision {
            Decision::Allow { reason, .. } => ("allow", reason.as_str()),
            Decision::Deny(reason) => ("deny", reason.as_str()),
        };
        envoy.increment_counter(id, &[outcome.policy_label(), d, reason], 1);
    }
}

/// What the pipeline reads, owned, so a held check can finish on another thread.
struct Request {
    headers: HashMap<String, String>,
    policy: Option<String>,
    source_ip: Option<IpAddr>,
    /// Envoy's own mTLS: the digest of the client certificate it verified.
    peer: PeerCertificate<'static>,
}

impl Request {
    fn read(config: &FilterConfig, envoy: &EnvoyFilter<'_>) -> Request {
        let mut headers = HashMap::with_capacity(config.headers.len());
        for name in &config.headers {
            let (first, count) = envoy.request_header(name);
            let Some(first) = first else { continue };
            let value = if count > 1 {
                // Joined as Envoy joins a repeated header for ext_authz, so both faces see the
                // same value (and a second `authorization` is refused the same way).
                envoy
                    .request_header_values(name)
                    .iter()
                    .map(|v| text_lossy(v))
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                text_lossy(first)
            };
            headers.insert(name.clone(), value);
        }
        let source_ip = envoy
            .attribute_string(attribute::SOURCE_ADDRESS)
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .map(|a| a.ip());
        let peer = envoy
            .attribute_string(attribute::SHA256_PEER_CERTIFICATE_DIGEST)
            .map_or(PeerCertificate::None, PeerCertificate::sha256_hex);
        Request {
            headers,
            policy: envoy.route_config().map(|p| p.0.clone()),
            source_ip,
            peer,
        }
    }

    async fn check(self, engine: Arc<Engine>) -> Outcome {
        let input = CheckInput {
            headers: &self.headers,
            peer_certificate: self.peer,
            policy_name: self.policy.as_deref(),
            source_ip: self.source_ip,
        };
        pipeline::check(&input, &engine, clock::now_unix()).await
    }
}

/// A header value as text; bytes that are not UTF-8 become U+FFFD (the check then denies a
/// token or certificate that carried them: neither is valid with U+FFFD in it).
fn text_lossy(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(value).into_owned(),
    }
}

/// The module's deny log line: what the ext_authz service logs, in Envoy's log. Only names
/// from certbound's tables and configuration, and ids `correlation` found well formed.
/// A header sent exactly once, as text. A repeated id header is no id: ext_authz sees it
/// comma-joined, which neither id's grammar accepts, so both faces drop it alike.
fn single_header(envoy: &EnvoyFilter<'_>, name: &str) -> Option<String> {
    match envoy.request_header(name) {
        (Some(value), 1) => std::str::from_utf8(value).ok().map(str::to_string),
        _ => None,
    }
}

fn deny_line(reason: DenyReason, policy: &str, ids: Correlation<'_>) -> String {
    format!(
        "certbound: deny reason={} policy={} status={} request_id={} trace_id={}",
        reason.as_str(),
        policy,
        reason.http_status(),
        ids.request_id.unwrap_or_default(),
        ids.trace_id.unwrap_or_default()
    )
}

/// An outcome no policy decided.
fn undecided(reason: DenyReason) -> Outcome {
    Outcome {
        decision: Decision::Deny(reason),
        ..Outcome::default()
    }
}

type Check = Pin<Box<dyn Future<Output = Outcome> + Send>>;

impl Certbound {
    /// Applies `outcome`: a local reply for a deny, the upstream headers for an allow, and the
    /// access-log fields either way. Returns whether the request goes on.
    fn apply(&self, config: &FilterConfig, envoy: &mut EnvoyFilter<'_>, outcome: &Outcome) -> bool {
        config.count(envoy, outcome);
        let fields = config.engine.log_fields;
        let denied = matches!(outcome.decision, Decision::Deny(_));
        // Two header reads per request otherwise, on the path whose every ABI call counts.
        let (request_id, trace_id) =
            if denied || fields.contains(LogField::RequestId) || fields.contains(LogField::TraceId)
            {
                (
                    single_header(envoy, correlation::REQUEST_ID_HEADER)
                        .and_then(|v| correlation::request_id(&v).map(str::to_string)),
                    single_header(envoy, correlation::TRACEPARENT_HEADER)
                        .and_then(|v| correlation::trace_id(&v).map(str::to_string)),
                )
            } else {
                (None, None)
            };
        let ids = Correlation {
            request_id: request_id.as_deref(),
            trace_id: trace_id.as_deref(),
        };
        envoy.set_metadata_strings(
            METADATA_NAMESPACE,
            &answer::log_fields(outcome, ids, fields),
        );
        if let Decision::Deny(reason) = &outcome.decision {
            abi::log(LogLevel::Info, &deny_line(*reason, &outcome.policy, ids));
        }
        match Answer::of(outcome, self.host.as_deref()) {
            Answer::Allow { set, remove } => {
                for name in &remove {
                    envoy.remove_request_header(name);
                }
                for h in &set {
                    envoy.set_request_header(&h.name, h.value.as_bytes());
                }
                true
            }
            Answer::Deny(denial) => {
                let headers: Vec<(&str, &[u8])> = denial
                    .headers
                    .iter()
                    .map(|h| (h.name, h.value.as_bytes()))
                    .collect();
                envoy.send_response(
                    u32::from(denial.status),
                    &headers,
                    denial.body.as_bytes(),
                    &format!("certbound_{}", denial.reason.as_str()),
                );
                false
            }
        }
    }
}

impl HttpFilterModule for Certbound {
    type Config = FilterConfig;
    type RouteConfig = RoutePolicy;

    fn config_new(
        envoy: &EnvoyFilterConfig<'_>,
        _filter_name: &[u8],
        filter_config: &[u8],
    ) -> Option<FilterConfig> {
        let mut config = match FilterConfig::load(filter_config) {
            Ok(config) => config,
            Err(why) => {
                abi::log(LogLevel::Error, &format!("certbound: {why}"));
                return None;
            }
        };
        config.decisions = envoy.define_counter("decisions", &["policy", "decision", "reason"]);
        if config.decisions.is_none() {
            abi::log(
                LogLevel::Warn,
                "certbound: Envoy refused the decisions counter; decisions are not counted",
            );
        }
        Some(config)
    }

    fn route_config_new(_filter_name: &[u8], config: &[u8]) -> Option<RoutePolicy> {
        match text(config, "the per-route config (a policy name)") {
            Ok(name) => Some(RoutePolicy(name)),
            Err(why) => {
                abi::log(LogLevel::Error, &format!("certbound: {why}"));
                None
            }
        }
    }

    fn stream_new(_config: &FilterConfig) -> Certbound {
        Certbound::default()
    }

    fn on_request_headers(
        &mut self,
        config: &FilterConfig,
        envoy: &mut EnvoyFilter<'_>,
        _end_of_stream: bool,
    ) -> HeadersStatus {
        let request = Request::read(config, envoy);
        if let Some(m) = config.engine.published(&request.headers) {
            // Public data, answered before any check: not a decision, so not counted as one.
            let doc = answer::document(m);
            let headers: Vec<(&str, &[u8])> = doc
                .headers
                .iter()
                .map(|h| (h.name, h.value.as_bytes()))
                .collect();
            envoy.send_response(
                u32::from(doc.status),
                &headers,
                doc.body.as_bytes(),
                "certbound_protected_resource_metadata",
            );
            return HeadersStatus::StopIteration;
        }
        self.host = extract::host(&request.headers).map(str::to_string);
        let Some(runtime) = &config.runtime else {
            // Only during teardown: nothing can decide, so nothing passes.
            self.apply(config, envoy, &undecided(DenyReason::InternalError));
            return HeadersStatus::StopIteration;
        };
        let policy = request.policy.clone();
        // A panic inside the check is a deny with certbound's own answer, as in ext_authz.
        let mut check: Check = Box::pin(
            AssertUnwindSafe(request.check(config.engine.clone()))
                .catch_unwind()
                .map(move |result| {
                    result.unwrap_or_else(|_| {
                        abi::log(
                            LogLevel::Error,
                            &format!(
                                "certbound: a check panicked (policy {}); answered with a deny",
                                policy.as_deref().unwrap_or("default")
                            ),
                        );
                        undecided(DenyReason::InternalError)
                    })
                }),
        );
        // Polled once here, inside the runtime so timers and tasks it creates belong to it.
        let first = {
            let _in_runtime = runtime.enter();
            check.as_mut().poll(&mut Context::from_waker(Waker::noop()))
        };
        match first {
            Poll::Ready(outcome) => {
                if self.apply(config, envoy, &outcome) {
                    HeadersStatus::Continue
                } else {
                    HeadersStatus::StopIteration
                }
            }
            Poll::Pending => {
                let slot = Arc::new(Mutex::new(None));
                self.decided = Some(slot.clone());
                let scheduler = envoy.new_scheduler();
                runtime.spawn(async move {
                    let outcome = check.await;
                    if let Ok(mut slot) = slot.lock() {
                        *slot = Some(outcome);
                    }
                    scheduler.commit(EVENT_DECIDED);
                });
                HeadersStatus::StopIteration
            }
        }
    }

    fn on_scheduled(&mut self, config: &FilterConfig, envoy: &mut EnvoyFilter<'_>, event_id: u64) {
        if event_id != EVENT_DECIDED {
            return;
        }
        let outcome = self
            .decided
            .take()
            .and_then(|slot| slot.lock().ok().and_then(|mut o| o.take()))
            .unwrap_or_else(|| undecided(DenyReason::InternalError));
        if self.apply(config, envoy, &outcome) {
            envoy.continue_decoding();
        }
    }

    fn count_panic(config: &FilterConfig, envoy: &EnvoyFilter<'_>) {
        config.count(envoy, &undecided(DenyReason::InternalError));
    }

    fn holds_request(&self) -> bool {
        self.decided.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_config_is_a_path_as_a_string_value_a_json_string_or_a_config_object() {
        let want = Ok("/etc/certbound/certbound.toml".to_string());
        assert_eq!(config_path(b"/etc/certbound/certbound.toml"), want);
        assert_eq!(config_path(br#""/etc/certbound/certbound.toml""#), want);
        assert_eq!(
            config_path(br#"{"config": "/etc/certbound/certbound.toml"}"#),
            want
        );
        for bad in [
            &br#"{"path": "/x"}"#[..],
            b"{",
            br#"{"config": 5}"#,
            br#""""#,
        ] {
            assert!(
                config_path(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn filter_config_must_be_a_non_empty_utf8_path() {
        assert_eq!(
            text(b" /etc/certbound/certbound.toml\n", "x"),
            Ok("/etc/certbound/certbound.toml".to_string())
        );
        assert!(text(b"", "x").is_err());
        assert!(text(b"\xff", "x").is_err());
    }

    #[test]
    fn an_invalid_configuration_file_is_refused_with_certbounds_own_error() {
        let dir = std::env::temp_dir().join(format!("certbound-envoy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "issuer = \"https://idp.example\"\nno_such_key = 1\n").ok();
        let err = match FilterConfig::load(path.to_string_lossy().as_bytes()) {
            Ok(_) => panic!("an unknown key was accepted"),
            Err(e) => e,
        };
        assert!(err.contains("no_such_key"), "{err}");
        let missing = match FilterConfig::load(b"/nonexistent/certbound.toml") {
            Ok(_) => panic!("a missing file was accepted"),
            Err(e) => e,
        };
        assert!(missing.contains("not a readable file"), "{missing}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_deny_line_names_the_reason_policy_and_the_ids() {
        let ids = Correlation {
            request_id: Some("req-1"),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        };
        assert_eq!(
            deny_line(DenyReason::BindingMismatch, "strict", ids),
            "certbound: deny reason=binding_mismatch policy=strict status=401 \
             request_id=req-1 trace_id=4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(
            deny_line(DenyReason::MissingToken, "default", Correlation::default())
                .ends_with("request_id= trace_id="),
            "absent ids are empty"
        );
    }

    #[test]
    fn route_config_names_a_policy() {
        let policy = Certbound::route_config_new(b"certbound", b"strict");
        assert_eq!(policy.map(|p| p.0), Some("strict".to_string()));
        assert!(Certbound::route_config_new(b"certbound", b"").is_none());
    }
}
