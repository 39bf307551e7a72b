//! Test harness: a local HTTPS OpenID provider (discovery + JWKS), a real certbound server on
//! loopback port 0, and a tonic client that sends CheckRequests as Envoy does.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use certbound::config::Config;
use certbound::server::{self, Listeners};
use certbound_core::fixtures::{Ca, Leaf};
use envoy_types::ext_authz::v3::pb::{HeaderAppendAction, HttpResponse};
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{
    attribute_context, AttributeContext, CheckRequest,
};
use figment::providers::{Format, Toml};
use figment::Figment;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// How the test IdP treats a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdpMode {
    /// Serves discovery and the JWKS.
    Up,
    /// Closes every connection as soon as it is accepted (a crashed or restarting IdP).
    Refuse,
    /// Accepts, completes TLS, reads the request and answers nothing until the mode changes
    /// (an overloaded or wedged IdP).
    Hang,
}

/// A minimal OpenID provider over HTTPS: discovery and a JWKS that tests can replace, a switch
/// to make it refuse or hang, and counters of key requests (discovery or JWKS) in flight.
pub struct TestIdp {
    pub issuer: String,
    pub ca_path: PathBuf,
    jwks: Arc<RwLock<Value>>,
    jwks_hits: Arc<AtomicUsize>,
    /// token -> introspection response; anything else is `{"active": false}`.
    introspection: Arc<RwLock<HashMap<String, Value>>>,
    introspection_calls: Arc<AtomicUsize>,
    mode: watch::Sender<IdpMode>,
    requests: Arc<Requests>,
    /// Introspection requests, counted like the key requests.
    introspections: Arc<Requests>,
    task: JoinHandle<()>,
}

/// Key requests (discovery and JWKS) as the IdP saw them.
#[derive(Default)]
struct Requests {
    started: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Counts one request in flight until dropped: answered, or abandoned by hyper.
struct InFlight(Arc<Requests>);

impl InFlight {
    fn enter(r: &Arc<Requests>) -> Self {
        r.started.fetch_add(1, Ordering::SeqCst);
        let now = r.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        r.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(r.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The resource server's credentials at the test IdP (client_secret_basic).
pub const RS_CLIENT: (&str, &str) = ("rs-client", "rs secret+/=");

impl TestIdp {
    pub async fn start(dir: &Path, jwks: Value) -> Self {
        let ca = Ca::root("test IdP CA").unwrap();
        let leaf = ca.server(&["127.0.0.1", "localhost"]).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // One file per IdP: tests may run several in one folder.
        let ca_path = dir.join(format!("idp-ca-{}.pem", addr.port()));
        std::fs::write(&ca_path, &ca.pem).unwrap();
        let issuer = format!("https://127.0.0.1:{}", addr.port());
        let jwks = Arc::new(RwLock::new(jwks));
        let jwks_hits = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Requests::default());
        let introspections = Arc::new(Requests::default());
        let (mode, _) = watch::channel(IdpMode::Up);
        let acceptor = tls_acceptor(&leaf);
        let introspection = Arc::new(RwLock::new(HashMap::new()));
        let introspection_calls = Arc::new(AtomicUsize::new(0));
        let state = (
            issuer.clone(),
            jwks.clone(),
            jwks_hits.clone(),
            introspection.clone(),
            introspection_calls.clone(),
            mode.clone(),
            requests.clone(),
            introspections.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (issuer, jwks, hits, answers, calls, mode, requests, introspections) =
                    state.clone();
                if *mode.borrow() == IdpMode::Refuse {
                    drop(tcp);
                    continue;
                }
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let st = IdpState {
                                issuer: issuer.clone(),
                                jwks: jwks.clone(),
                                hits: hits.clone(),
                                answers: answers.clone(),
                                calls: calls.clone(),
                                requests: requests.clone(),
                                introspections: introspections.clone(),
                                mode: mode.subscribe(),
                            };
                            idp_route(req, st)
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self {
            issuer,
            ca_path,
            jwks,
            jwks_hits,
            introspection,
            introspection_calls,
            mode,
            requests,
            introspections,
            task,
        }
    }

    /// What `/introspect` answers for `token`.
    pub fn set_introspection(&self, token: &str, response: Value) {
        self.introspection
            .write()
            .unwrap()
            .insert(token.to_string(), response);
    }

    pub fn introspection_calls(&self) -> usize {
        self.introspection_calls.load(Ordering::SeqCst)
    }

    /// Introspection requests received (answered or not) so far.
    pub fn introspections_started(&self) -> usize {
        self.introspections.started.load(Ordering::SeqCst)
    }

    /// Introspection requests being answered (or hung) right now.
    pub fn introspections_in_flight(&self) -> usize {
        self.introspections.in_flight.load(Ordering::SeqCst)
    }

    /// The most introspection requests ever in flight at once.
    pub fn max_introspections_in_flight(&self) -> usize {
        self.introspections.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn set_jwks(&self, jwks: Value) {
        *self.jwks.write().unwrap() = jwks;
    }

    pub fn jwks_hits(&self) -> usize {
        self.jwks_hits.load(Ordering::SeqCst)
    }

    pub fn set_mode(&self, mode: IdpMode) {
        self.mode.send_replace(mode);
    }

    /// Key requests (discovery or JWKS) received so far.
    pub fn key_requests(&self) -> usize {
        self.requests.started.load(Ordering::SeqCst)
    }

    /// Key requests being answered (or hung) right now.
    pub fn key_requests_in_flight(&self) -> usize {
        self.requests.in_flight.load(Ordering::SeqCst)
    }

    /// The most key requests ever in flight at once since the last reset.
    pub fn max_key_requests_in_flight(&self) -> usize {
        self.requests.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn reset_max_in_flight(&self) {
        let now = self.requests.in_flight.load(Ordering::SeqCst);
        self.requests.max_in_flight.store(now, Ordering::SeqCst);
    }
}

impl Drop for TestIdp {
    fn drop(&mut self) {
        // Release hung requests so their tasks end with the test.
        self.mode.send_replace(IdpMode::Up);
        self.task.abort();
    }
}

struct IdpState {
    issuer: String,
    jwks: Arc<RwLock<Value>>,
    hits: Arc<AtomicUsize>,
    answers: Arc<RwLock<HashMap<String, Value>>>,
    calls: Arc<AtomicUsize>,
    requests: Arc<Requests>,
    introspections: Arc<Requests>,
    mode: watch::Receiver<IdpMode>,
}

async fn idp_route(
    req: Request<hyper::body::Incoming>,
    mut st: IdpState,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let key_request = matches!(
        req.uri().path(),
        "/.well-known/openid-configuration" | "/jwks"
    );
    let _in_flight = key_request.then(|| InFlight::enter(&st.requests));
    let _introspecting =
        (req.uri().path() == "/introspect").then(|| InFlight::enter(&st.introspections));
    // Hang until the test changes the mode (or the IdP is dropped).
    let now = *st
        .mode
        .wait_for(|m| *m != IdpMode::Hang)
        .await
        .map_err(|_| std::io::Error::other("IdP gone"))?;
    if now == IdpMode::Refuse {
        // A pooled keep-alive connection from before the outage: failing the service makes
        // hyper drop it unanswered.
        return Err(std::io::Error::other("IdP refusing"));
    }
    Ok(idp_answer(req, st).await)
}

async fn idp_answer(req: Request<hyper::body::Incoming>, st: IdpState) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    let issuer = &st.issuer;
    let ok = |v: Value| Response::new(Full::new(Bytes::from(v.to_string())));
    match req.uri().path() {
        "/.well-known/openid-configuration" => ok(json!({
            "issuer": issuer, "jwks_uri": format!("{issuer}/jwks"),
            "introspection_endpoint": format!("{issuer}/introspect"),
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        })),
        "/jwks" => {
            st.hits.fetch_add(1, Ordering::SeqCst);
            ok(st.jwks.read().unwrap().clone())
        }
        "/introspect" => {
            st.calls.fetch_add(1, Ordering::SeqCst);
            let auth = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let form = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let form = String::from_utf8_lossy(&form).to_string();
            let token = form
                .split('&')
                .find_map(|kv| kv.strip_prefix("token="))
                .map(|t| {
                    percent_encoding::percent_decode_str(&t.replace('+', " "))
                        .decode_utf8_lossy()
                        .to_string()
                })
                .unwrap_or_default();
            let enc = |s: &str| {
                percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            };
            let expected = {
                use base64::Engine;
                let raw = format!("{}:{}", enc(RS_CLIENT.0), enc(RS_CLIENT.1));
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                )
            };
            if auth.as_deref() != Some(expected.as_str()) {
                let mut r = ok(json!({"error": "invalid_client"}));
                *r.status_mut() = StatusCode::UNAUTHORIZED;
                return r;
            }
            ok(st
                .answers
                .read()
                .unwrap()
                .get(&token)
                .cloned()
                .unwrap_or(json!({"active": false})))
        }
        _ => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    }
}

fn tls_acceptor(leaf: &Leaf) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(leaf.der.as_ref().to_vec())], key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A certbound server running in this process on loopback port 0.
pub struct Certbound {
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), server::ServeError>>>,
}

impl Certbound {
    /// Starts a server from `toml` (relative paths resolve against `dir`). The listen keys are
    /// ignored: the harness binds port 0.
    pub async fn start(toml: &str, dir: &Path) -> Self {
        let config = Config::from_figment(&Figment::new().merge(Toml::string(toml)), dir)
            .unwrap_or_else(|e| panic!("test config refused: {e}"));
        let listeners = Listeners::bind(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let grpc = listeners.grpc.local_addr().unwrap();
        let admin = listeners.admin.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server::serve(config, listeners, async {
            let _ = rx.await;
        }));
        Self {
            grpc,
            admin,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Starts a server from a config file that reloads when `trigger` fires.
    pub async fn start_reloading(path: &Path) -> (Self, tokio::sync::mpsc::UnboundedSender<()>) {
        Self::start_watching(path, None).await
    }

    /// Starts a server from a config file that reloads when `trigger` fires and, with
    /// `poll_interval`, when a poll finds the config or a file it names changed (as `serve` does).
    pub async fn start_watching(
        path: &Path,
        poll_interval: Option<Duration>,
    ) -> (Self, tokio::sync::mpsc::UnboundedSender<()>) {
        let config = Config::load(path).unwrap_or_else(|e| panic!("test config refused: {e}"));
        let listeners = Listeners::bind(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let grpc = listeners.grpc.local_addr().unwrap();
        let admin = listeners.admin.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let (trigger, reload_rx) = tokio::sync::mpsc::unbounded_channel();
        let reload = server::Reload {
            path: path.to_path_buf(),
            poll_interval,
            trigger: reload_rx,
            loaded: server::FileStates::of(&config.files),
        };
        let task = tokio::spawn(server::serve_with_reload(
            config,
            listeners,
            async {
                let _ = rx.await;
            },
            Some(reload),
        ));
        (
            Self {
                grpc,
                admin,
                stop: Some(tx),
                task: Some(task),
            },
            trigger,
        )
    }

    /// A counter or gauge's value from /metrics (0 when absent).
    pub async fn metric(&self, series: &str) -> u64 {
        let (_, text) = self.admin_get("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0)
    }

    /// Waits (bounded) until /readyz answers 200.
    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if self.readyz().await == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("certbound did not become ready");
    }

    pub async fn readyz(&self) -> u16 {
        self.admin_get("/readyz").await.0
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let resp = reqwest::get(format!("http://{}{path}", self.admin))
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// Current value of `certbound_decisions_total{decision, reason}`, summed over policies.
    pub async fn decisions(&self, decision: &str, reason: &str) -> u64 {
        let (_, text) = self.admin_get("/metrics").await;
        let (decision, reason) = (
            format!("{{decision=\"{decision}\","),
            format!(",reason=\"{reason}\"}} "),
        );
        text.lines()
            .filter_map(|l| l.strip_prefix("certbound_decisions_total"))
            .filter(|l| l.starts_with(&decision))
            .filter_map(|l| l.split_once(&reason).map(|(_, v)| v))
            .map(|v| v.trim().parse::<u64>().unwrap())
            .sum()
    }

    pub async fn check(&self, req: &Req) -> Answer {
        check_at(self.grpc, req).await
    }

    /// `grpc.health.v1` status of the ext_authz service, `None` while the server does not know
    /// the service yet.
    pub async fn grpc_health(
        &self,
    ) -> Option<tonic_health::pb::health_check_response::ServingStatus> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let resp = client
            .check(tonic_health::pb::HealthCheckRequest {
                service: "envoy.service.auth.v3.Authorization".into(),
            })
            .await
            .ok()?
            .into_inner();
        tonic_health::pb::health_check_response::ServingStatus::try_from(resp.status).ok()
    }

    /// Sends the shutdown signal and waits for `serve` to return.
    pub async fn stop(mut self) -> Result<(), server::ServeError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("shutdown hung")
            .unwrap()
    }
}

/// One Check over a new connection to `grpc`, as Envoy sends it.
pub async fn check_at(grpc: SocketAddr, req: &Req) -> Answer {
    let mut client = AuthorizationClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let resp = client
        .check(req.to_proto())
        .await
        .expect("Check must never fail at the gRPC level")
        .into_inner();
    Answer::from_proto(resp)
}

impl Drop for Certbound {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A request as Envoy describes it in a CheckRequest.
#[derive(Clone, Default)]
pub struct Req {
    pub headers: Vec<(String, String)>,
    pub peer_certificate: String,
    pub policy: Option<String>,
    pub source_ip: Option<String>,
}

impl Req {
    pub fn new() -> Self {
        Self::default().header(":authority", "api.test")
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn cert(self, value: &str) -> Self {
        self.header("x-client-cert", value)
    }

    pub fn peer(mut self, pem_url_encoded: &str) -> Self {
        self.peer_certificate = pem_url_encoded.to_string();
        self
    }

    /// The address Envoy saw the request come from (default 127.0.0.1).
    pub fn source(mut self, ip: &str) -> Self {
        self.source_ip = Some(ip.to_string());
        self
    }

    pub fn policy(mut self, name: &str) -> Self {
        self.policy = Some(name.to_string());
        self
    }

    /// Envoy joins repeated headers with ','.
    fn merged_headers(&self) -> HashMap<String, String> {
        let mut map: HashMap<String, String> = HashMap::new();
        for (k, v) in &self.headers {
            map.entry(k.clone())
                .and_modify(|cur| {
                    cur.push(',');
                    cur.push_str(v);
                })
                .or_insert_with(|| v.clone());
        }
        map
    }

    pub fn to_proto(&self) -> CheckRequest {
        let source = attribute_context::Peer {
            certificate: self.peer_certificate.clone(),
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: self.source_ip.clone().unwrap_or_else(|| "127.0.0.1".into()),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(40000)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(source),
                request: Some(attribute_context::Request {
                    http: Some(attribute_context::HttpRequest {
                        method: "GET".into(),
                        path: "/accounts?x=1".into(),
                        host: "api.test".into(),
                        headers: self.merged_headers(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                context_extensions: self
                    .policy
                    .iter()
                    .map(|p| ("policy".to_string(), p.clone()))
                    .collect(),
                ..Default::default()
            }),
        }
    }
}

/// The parts of a CheckResponse the tests assert on.
#[derive(Debug)]
pub struct Answer {
    pub grpc_code: i32,
    /// `status.message`: the deny reason (`DenyReason::as_str`), empty on allow.
    pub reason: String,
    pub http_status: u16,
    pub www_authenticate: Option<String>,
    pub body: String,
    /// Headers set on the upstream request, all with overwrite semantics.
    pub upstream: HashMap<String, String>,
    pub upstream_removed: Vec<String>,
    /// `dynamic_metadata` as strings.
    pub metadata: HashMap<String, String>,
}

impl Answer {
    fn from_proto(resp: envoy_types::ext_authz::v3::pb::CheckResponse) -> Self {
        let (grpc_code, reason) = resp
            .status
            .map_or((-1, String::new()), |s| (s.code, s.message));
        let mut a = Answer {
            grpc_code,
            reason,
            http_status: 0,
            www_authenticate: None,
            body: String::new(),
            upstream: HashMap::new(),
            upstream_removed: Vec::new(),
            metadata: resp
                .dynamic_metadata
                .map(|m| {
                    m.fields
                        .into_iter()
                        .filter_map(|(k, v)| match v.kind {
                            Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(
                                s,
                            )) => Some((k, s)),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        match resp.http_response {
            Some(HttpResponse::OkResponse(ok)) => {
                a.http_status = 200;
                for h in ok.headers {
                    assert_eq!(
                        h.append_action,
                        HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                        "upstream headers must overwrite client-sent copies"
                    );
                    let hv = h.header.unwrap();
                    a.upstream.insert(hv.key, hv.value);
                }
                a.upstream_removed = ok.headers_to_remove;
            }
            Some(HttpResponse::DeniedResponse(d)) => {
                a.http_status = d.status.map_or(0, |s| s.code as u16);
                a.body = d.body;
                a.www_authenticate = d
                    .headers
                    .into_iter()
                    .filter_map(|h| h.header)
                    .find(|h| h.key == "www-authenticate")
                    .map(|h| h.value);
            }
            Some(other) => panic!("unexpected http_response {other:?}"),
            None => {}
        }
        a
    }

    pub fn allowed(&self) -> bool {
        self.grpc_code == 0
    }
}

/// The client PKI used across tests: root -> intermediate -> alice, bob; plus certificates
/// that must fail for a specific reason.
pub struct Pki {
    pub root: Ca,
    pub inter: Ca,
    pub alice: Leaf,
    pub bob: Leaf,
    pub expired: Leaf,
    pub untrusted: Leaf,
    pub server_only: Leaf,
}

impl Pki {
    pub fn new(now: u64) -> Self {
        let root = Ca::root("test client root").unwrap();
        let inter = root.intermediate("test client intermediate").unwrap();
        let alice = inter.client("alice", now - 3600, now + 86_400).unwrap();
        let bob = inter.client("bob", now - 3600, now + 86_400).unwrap();
        let expired = inter
            .client("expired", now - 10 * 86_400, now - 86_400)
            .unwrap();
        let untrusted = Ca::root("nobody trusts this")
            .unwrap()
            .client("mallory", now - 3600, now + 86_400)
            .unwrap();
        let server_only = inter.server(&["server-only.test"]).unwrap();
        Self {
            root,
            inter,
            alice,
            bob,
            expired,
            untrusted,
            server_only,
        }
    }

    /// `url_encoded` header value: leaf followed by the intermediate, as nginx sends a chain.
    pub fn chain_header(&self, leaf: &Leaf) -> String {
        certbound_core::fixtures::url_encode_pem(&(leaf.pem.clone() + &self.inter.pem))
    }

    pub fn write_root(&self, dir: &Path) -> PathBuf {
        let p = dir.join("client-ca.pem");
        std::fs::write(&p, &self.root.pem).unwrap();
        p
    }
}

/// A local OCSP responder and CRL server (plain HTTP, or HTTPS with `tls`): answers OCSP POSTs
/// on `/ocsp` from a table keyed by serial number and serves `/crl`, after an optional delay,
/// counting every request.
pub struct RevocationServer {
    pub base: String,
    state: Arc<RevocationState>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct RevocationState {
    ocsp: RwLock<HashMap<Vec<u8>, Vec<u8>>>,
    crl: RwLock<Option<Vec<u8>>>,
    delay: RwLock<Duration>,
    ocsp_hits: AtomicUsize,
    crl_hits: AtomicUsize,
}

impl RevocationServer {
    pub async fn start(tls: Option<&Leaf>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let acceptor = tls.map(tls_acceptor);
        let state = Arc::new(RevocationState::default());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (state, acceptor) = (shared.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(state.answer(req).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match acceptor {
                        Some(a) => match a.accept(tcp).await {
                            Ok(tls) => http.serve_connection(TokioIo::new(tls), svc).await,
                            Err(_) => return,
                        },
                        None => http.serve_connection(TokioIo::new(tcp), svc).await,
                    };
                });
            }
        });
        Self {
            base: format!("{scheme}://127.0.0.1:{}", addr.port()),
            state,
            task,
        }
    }

    pub fn ocsp_url(&self) -> String {
        format!("{}/ocsp", self.base)
    }

    pub fn crl_url(&self) -> String {
        format!("{}/crl", self.base)
    }

    /// The DER OCSPResponse to give for `leaf`.
    pub fn answer_for(&self, leaf: &Leaf, response: Vec<u8>) {
        self.state
            .ocsp
            .write()
            .unwrap()
            .insert(leaf.serial().unwrap(), response);
    }

    pub fn set_crl(&self, der: Vec<u8>) {
        *self.state.crl.write().unwrap() = Some(der);
    }

    pub fn set_delay(&self, d: Duration) {
        *self.state.delay.write().unwrap() = d;
    }

    pub fn ocsp_hits(&self) -> usize {
        self.state.ocsp_hits.load(Ordering::SeqCst)
    }

    pub fn crl_hits(&self) -> usize {
        self.state.crl_hits.load(Ordering::SeqCst)
    }
}

impl RevocationState {
    async fn answer(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        use der::{Decode, Encode};
        use http_body_util::BodyExt;
        let delay = *self.delay.read().unwrap();
        tokio::time::sleep(delay).await;
        let path = req.uri().path().to_string();
        let body = match path.as_str() {
            "/ocsp" => {
                self.ocsp_hits.fetch_add(1, Ordering::SeqCst);
                assert_eq!(req.method(), hyper::Method::POST);
                assert_eq!(
                    req.headers()["content-type"].to_str().unwrap(),
                    "application/ocsp-request"
                );
                let raw = req.into_body().collect().await.unwrap().to_bytes();
                let request = x509_ocsp::OcspRequest::from_der(&raw).unwrap();
                let serial = request.tbs_request.request_list[0]
                    .req_cert
                    .serial_number
                    .as_bytes()
                    .to_vec();
                self.ocsp
                    .read()
                    .unwrap()
                    .get(&serial)
                    .cloned()
                    .unwrap_or_else(|| x509_ocsp::OcspResponse::unauthorized().to_der().unwrap())
            }
            "/crl" => {
                self.crl_hits.fetch_add(1, Ordering::SeqCst);
                match self.crl.read().unwrap().clone() {
                    Some(crl) => crl,
                    None => return status(StatusCode::NOT_FOUND),
                }
            }
            _ => return status(StatusCode::NOT_FOUND),
        };
        Response::new(Full::new(Bytes::from(body)))
    }
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = code;
    r
}

impl Drop for RevocationServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `certbound_revocation_checks_total{method, result}` from a certbound's /metrics.
pub async fn revocation_checks(cb: &Certbound, method: &str, result: &str) -> u64 {
    let (_, text) = cb.admin_get("/metrics").await;
    let prefix =
        format!("certbound_revocation_checks_total{{method=\"{method}\",result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}
