//! Transport to and from certbound: the IdP URLs it fetches from (https only, redirects never
//! downgraded, credentials never re-sent on a redirect) and the optional TLS, with client
//! certificates, on the gRPC listener.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use certbound::config::Config;
use certbound_core::fixtures::{jwks, Ca, SigningKey};
use certbound_core::policy::KeySource;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use figment::providers::{Format, Toml};
use figment::Figment;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use support::{Certbound, Req};
use tokio::net::TcpListener;

/// One canned answer: status, extra headers, body.
type Canned = (u16, Vec<(&'static str, String)>, String);

/// A request as a scripted server saw it: path, `authorization` header, body.
type Seen = (String, Option<String>, String);

/// A local HTTP(S) server answering fixed responses by path and recording every request.
struct Scripted {
    /// `https://127.0.0.1:PORT` or `http://127.0.0.1:PORT`.
    base: String,
    answers: Arc<Mutex<HashMap<String, Canned>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Scripted {
    /// Serves plain HTTP, or HTTPS with a certificate from `ca` when given.
    async fn start(ca: Option<&Ca>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = ca.map(|ca| {
            let leaf = ca.server(&["127.0.0.1"]).unwrap();
            let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![CertificateDer::from(leaf.der.to_vec())], key)
                .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let answers: Arc<Mutex<HashMap<String, Canned>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (a, s) = (answers.clone(), seen.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (a, s, acceptor) = (a.clone(), s.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<_>| {
                        let (a, s) = (a.clone(), s.clone());
                        async move { Ok::<_, std::io::Error>(answer(req, &a, &s).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match acceptor {
                        Some(acc) => {
                            let Ok(tls) = acc.accept(tcp).await else {
                                return;
                            };
                            http.serve_connection(TokioIo::new(tls), svc).await
                        }
                        None => http.serve_connection(TokioIo::new(tcp), svc).await,
                    };
                });
            }
        });
        Self {
            base: format!("{scheme}://127.0.0.1:{port}"),
            answers,
            seen,
            task,
        }
    }

    fn answer(&self, path: &str, status: u16, headers: &[(&'static str, String)], body: &str) {
        self.answers.lock().unwrap().insert(
            path.to_string(),
            (status, headers.to_vec(), body.to_string()),
        );
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    answers: &Mutex<HashMap<String, Canned>>,
    seen: &Mutex<Vec<Seen>>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = req.into_body().collect().await.unwrap().to_bytes();
    seen.lock().unwrap().push((
        path.clone(),
        auth,
        String::from_utf8_lossy(&body).to_string(),
    ));
    let (status, headers, body) =
        answers
            .lock()
            .unwrap()
            .get(&path)
            .cloned()
            .unwrap_or((404, Vec::new(), String::new()));
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

/// A configuration that trusts `ca` for the IdP, with `extra` top-level keys.
fn config(dir: &Path, ca: &Ca, issuer: &str, extra: &str) -> Config {
    let ca_path = dir.join("idp-ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    std::fs::write(dir.join("jwks.json"), jwks_body()).unwrap();
    let toml = format!(
        "issuer = \"{issuer}\"\nidp_ca_certificates = [\"{}\"]\n{extra}\n",
        ca_path.display()
    );
    Config::from_figment(&Figment::new().merge(Toml::string(&toml)), dir)
        .unwrap_or_else(|e| panic!("config refused: {e}"))
}

fn jwks_body() -> String {
    jwks(&[&SigningKey::es256("k1").unwrap()]).to_string()
}

#[tokio::test]
async fn discovery_pointing_jwks_uri_at_plain_http_loads_no_keys() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::root("idp ca").unwrap();
    let idp = Scripted::start(Some(&ca)).await;
    let plain = Scripted::start(None).await;
    plain.answer("/jwks", 200, &[], &jwks_body());
    let discovery = json!({"issuer": idp.base, "jwks_uri": format!("{}/jwks", plain.base)});
    idp.answer(
        "/.well-known/openid-configuration",
        200,
        &[],
        &discovery.to_string(),
    );
    let c = config(dir.path(), &ca, &idp.base, "");
    let client = c.idp_client.keys_client().unwrap();
    let source = KeySource::Discovery {
        issuer: idp.base.clone(),
    };
    let err = certbound_adapters::jwks::fetch(&client, &source)
        .await
        .expect_err("keys from a plain-http jwks_uri were accepted");
    assert!(err.to_string().contains("https"), "{err}");
    assert!(plain.seen().is_empty(), "the plain-http URL was contacted");
}

#[tokio::test]
async fn a_redirect_from_https_to_plain_http_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::root("idp ca").unwrap();
    let idp = Scripted::start(Some(&ca)).await;
    let plain = Scripted::start(None).await;
    plain.answer("/jwks", 200, &[], &jwks_body());
    idp.answer(
        "/jwks",
        302,
        &[("location", format!("{}/jwks", plain.base))],
        "",
    );
    let c = config(
        dir.path(),
        &ca,
        &idp.base,
        &format!("jwks_uri = \"{}/jwks\"", idp.base),
    );
    let client = c.idp_client.keys_client().unwrap();
    let source = KeySource::Uri(format!("{}/jwks", idp.base));
    certbound_adapters::jwks::fetch(&client, &source)
        .await
        .expect_err("a redirect to plain http was followed");
    assert!(plain.seen().is_empty(), "the plain-http URL was contacted");
}

#[tokio::test]
async fn a_redirect_from_https_to_https_is_still_followed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::root("idp ca").unwrap();
    let idp = Scripted::start(Some(&ca)).await;
    idp.answer("/jwks", 200, &[], &jwks_body());
    idp.answer(
        "/old-jwks",
        301,
        &[("location", format!("{}/jwks", idp.base))],
        "",
    );
    let c = config(dir.path(), &ca, &idp.base, "");
    let client = c.idp_client.keys_client().unwrap();
    let keys =
        certbound_adapters::jwks::fetch(&client, &KeySource::Uri(format!("{}/old-jwks", idp.base)))
            .await
            .unwrap();
    assert_eq!(keys.len(), 1);
}

/// The introspection endpoint answers 307/308 to somewhere else: certbound must not re-send
/// the token and its client credentials there, and the token is not accepted.
#[tokio::test]
async fn introspection_credentials_are_never_resent_on_a_redirect() {
    for (status, method) in [
        (307, "client_secret_post"),
        (308, "client_secret_post"),
        (307, "client_secret_basic"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::root("idp ca").unwrap();
        let idp = Scripted::start(Some(&ca)).await;
        let elsewhere = Scripted::start(Some(&ca)).await;
        elsewhere.answer(
            "/collect",
            200,
            &[],
            &json!({"active": true, "sub": "attacker"}).to_string(),
        );
        idp.answer(
            "/introspect",
            status,
            &[("location", format!("{}/collect", elsewhere.base))],
            "",
        );
        let c = config(
            dir.path(),
            &ca,
            &idp.base,
            &format!(
                "jwks_file = \"jwks.json\"\nauth_methods = [\"introspection\"]\nproof_of_possession_mtls = \"off\"\nclient_id = [\"rs\"]\nclient_secret = [\"hunter2-secret\"]\nintrospection_endpoint = \"{}/introspect\"\nintrospection_endpoint_auth_method = \"{method}\"",
                idp.base
            ),
        );
        let built = c.build(&|_| None).unwrap();
        let introspector = built.engine.default.services.introspector.clone().unwrap();
        let got = introspector.introspect("opaque-token", 0).await;
        assert!(
            got.is_err(),
            "{status} {method}: the redirect's answer counted"
        );
        assert_eq!(idp.seen().len(), 1, "{status} {method}");
        assert!(
            elsewhere.seen().is_empty(),
            "{status} {method}: credentials re-sent to the redirect target: {:?}",
            elsewhere.seen()
        );
    }
}

/// A Check over TLS to `grpc`, presenting `identity` when given.
async fn tls_check(
    grpc: std::net::SocketAddr,
    server_ca: &Ca,
    identity: Option<(&str, &str)>,
) -> Result<(), String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&server_ca.pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Endpoint::from_shared(format!("https://{grpc}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let answer = AuthorizationClient::new(channel)
        .check(Req::new().bearer("not-a-token").to_proto())
        .await
        .map_err(|e| format!("{e:?}"))?
        .into_inner();
    // A real decision came back: a deny for a token that is not one.
    assert_ne!(answer.status.map(|s| s.code), Some(0));
    Ok(())
}

#[tokio::test]
async fn grpc_tls_with_client_auth_answers_envoy_and_refuses_callers_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::root("grpc server ca").unwrap();
    let server = server_ca.server(&["localhost"]).unwrap();
    let envoy_ca = Ca::root("envoy client ca").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let envoy = envoy_ca.client("envoy", now - 3600, now + 86_400).unwrap();
    let stranger_ca = Ca::root("someone else").unwrap();
    let stranger = stranger_ca
        .client("stranger", now - 3600, now + 86_400)
        .unwrap();
    let d = dir.path();
    std::fs::write(d.join("grpc.pem"), &server.pem).unwrap();
    std::fs::write(d.join("grpc.key"), &server.key_pem).unwrap();
    std::fs::write(d.join("envoy-ca.pem"), &envoy_ca.pem).unwrap();
    std::fs::write(
        d.join("jwks.json"),
        jwks(&[&SigningKey::es256("k1").unwrap()]).to_string(),
    )
    .unwrap();
    let toml = "issuer = \"https://idp.test\"\njwks_file = \"jwks.json\"\nproof_of_possession_mtls = \"off\"\n[grpc_tls]\ncert_file = \"grpc.pem\"\nkey_file = \"grpc.key\"\nclient_ca_file = \"envoy-ca.pem\"\n";
    let certbound = Certbound::start(toml, d).await;
    let grpc = certbound.grpc;

    tls_check(grpc, &server_ca, Some((&envoy.pem, &envoy.key_pem)))
        .await
        .expect("Envoy's client certificate was refused");
    let err = tls_check(grpc, &server_ca, None)
        .await
        .expect_err("a caller without a client certificate got an answer");
    assert!(!err.is_empty());
    tls_check(grpc, &server_ca, Some((&stranger.pem, &stranger.key_pem)))
        .await
        .expect_err("a client certificate from another CA got an answer");
    // Plaintext gRPC is not served at all.
    let plain = AuthorizationClient::connect(format!("http://{grpc}")).await;
    let refused = match plain {
        Err(_) => true,
        Ok(mut c) => c.check(Req::new().to_proto()).await.is_err(),
    };
    assert!(refused, "plaintext gRPC was answered on a TLS listener");
}
