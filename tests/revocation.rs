//! Revocation (Kong's `revocation_check_mode`) through a real certbound server over gRPC, with
//! OCSP answers and CRLs served by a local HTTP(S) server: every mode against good, revoked and
//! unknown answers, a responder that is down or slow, CRLs, TLS to the responder, and one fetch
//! for many concurrent checks of one certificate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use certbound_core::clock::now_unix;
use certbound_core::fixtures::{
    bound_claims, jwks, revoked_status, Ca, Leaf, OcspAnswer, SigningKey,
};
use support::{revocation_checks, Answer, Certbound, Req, RevocationServer};
use x509_ocsp::CertStatus;

const ISS: &str = "https://idp.revocation.test";
const AUD: &str = "https://api.test";

/// Client PKI (root -> intermediate -> leaves), a signing key, and a directory with the files
/// certbound's config names.
struct World {
    dir: tempfile::TempDir,
    inter: Ca,
    key: SigningKey,
    now: u64,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = Ca::root("revocation test root").unwrap();
        let inter = root.intermediate("revocation test intermediate").unwrap();
        let key = SigningKey::es256("k").unwrap();
        std::fs::write(dir.path().join("client-ca.pem"), &root.pem).unwrap();
        std::fs::write(dir.path().join("jwks.json"), jwks(&[&key]).to_string()).unwrap();
        Self {
            dir,
            inter,
            key,
            now: now_unix(),
        }
    }

    fn leaf(&self, cn: &str, ocsp: Option<&str>, crl: Option<&str>) -> Leaf {
        self.inter
            .client_with_urls(cn, self.now - 3600, self.now + 86_400, ocsp, crl)
            .unwrap()
    }

    fn ocsp(&self, leaf: &Leaf, status: CertStatus) -> Vec<u8> {
        OcspAnswer::new(&self.inter, leaf, status, self.now - 60)
            .next_update(self.now + 3600)
            .der()
            .unwrap()
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    async fn certbound(&self, revocation: &str) -> Certbound {
        let toml = format!(
            r#"
issuer = "{ISS}"
jwks_file = "jwks.json"
audience = ["{AUD}"]
proof_of_possession_mtls = "strict"
upstream_headers_claims = ["sub"]
upstream_headers_names  = ["x-consumer-sub"]
trusted_ips = ["127.0.0.1"]
[proof_of_possession_mtls_from_header]
certificate_header_name = "x-client-cert"
certificate_header_format = "url_encoded"
ca_certificates = ["client-ca.pem"]
{revocation}
"#
        );
        let cb = Certbound::start(&toml, self.path()).await;
        cb.wait_ready().await;
        cb
    }

    /// A request with a token bound to `leaf` and `leaf` + intermediate in the header.
    fn request(&self, leaf: &Leaf) -> Req {
        let token = self
            .key
            .sign("at+jwt", &bound_claims(ISS, AUD, "client", leaf, self.now))
            .unwrap();
        let chain = certbound_core::fixtures::url_encode_pem(&(leaf.pem.clone() + &self.inter.pem));
        Req::new().bearer(&token).cert(&chain)
    }
}

#[track_caller]
fn assert_allowed(what: &str, a: &Answer) {
    assert!(a.allowed(), "{what}: expected allow, got {a:?}");
}

#[track_caller]
fn assert_denied(what: &str, a: &Answer, description: &str) {
    assert!(!a.allowed(), "{what}: expected deny, got {a:?}");
    assert_eq!(a.http_status, 401, "{what}: {a:?}");
    let challenge = a.www_authenticate.as_deref().unwrap_or("");
    assert!(
        challenge.contains("error=\"invalid_token\"")
            && challenge.contains(&format!("error_description=\"{description}\"")),
        "{what}: {challenge}"
    );
}

const REVOKED: &str = "client certificate revoked";
const UNKNOWN: &str = "client certificate revocation status unknown";

fn mode(m: &str) -> String {
    format!("revocation_check_mode = \"{m}\"\n")
}

/// A URL nothing listens on: the responder is down.
fn closed_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/ocsp")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocsp_good_allows_and_revoked_denies_cert_revoked_in_both_checking_modes() {
    let w = World::new();
    let responder = RevocationServer::start(None).await;
    let alice = w.leaf("alice", Some(&responder.ocsp_url()), None);
    let bob = w.leaf("bob", Some(&responder.ocsp_url()), None);
    responder.answer_for(&alice, w.ocsp(&alice, CertStatus::good()));
    responder.answer_for(&bob, w.ocsp(&bob, revoked_status(w.now - 600).unwrap()));
    for m in ["IGNORE_CA_ERROR", "STRICT"] {
        let cb = w.certbound(&mode(m)).await;
        assert_allowed(m, &cb.check(&w.request(&alice)).await);
        let a = cb.check(&w.request(&bob)).await;
        assert_denied(m, &a, REVOKED);
        assert_eq!(cb.decisions("deny", "cert_revoked").await, 1, "{m}");
        assert_eq!(revocation_checks(&cb, "ocsp", "good").await, 1, "{m}");
        assert_eq!(revocation_checks(&cb, "ocsp", "revoked").await, 1, "{m}");
        // Cached: asking again does not reach the responder.
        let hits = responder.ocsp_hits();
        assert_allowed(m, &cb.check(&w.request(&alice)).await);
        assert_denied(m, &cb.check(&w.request(&bob)).await, REVOKED);
        assert_eq!(responder.ocsp_hits(), hits, "{m}: served from the cache");
        // The revoked certificate came from the verified-certificate cache, and was still
        // denied: revocation runs on cached certificates too.
        let cert_hits =
            r#"certbound_cache_requests_total{cache="certificate",policy="default",result="hit"}"#;
        assert_eq!(cb.metric(cert_hits).await, 2, "{m}");
        cb.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_mode_is_ignore_ca_error_and_honours_a_revocation() {
    let w = World::new();
    let responder = RevocationServer::start(None).await;
    let bob = w.leaf("bob", Some(&responder.ocsp_url()), None);
    responder.answer_for(&bob, w.ocsp(&bob, revoked_status(w.now - 600).unwrap()));
    let cb = w.certbound("").await;
    assert_denied("default", &cb.check(&w.request(&bob)).await, REVOKED);
    cb.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_ocsp_status_passes_ignore_ca_error_and_fails_strict() {
    let w = World::new();
    let responder = RevocationServer::start(None).await;
    let carol = w.leaf("carol", Some(&responder.ocsp_url()), None);
    responder.answer_for(&carol, w.ocsp(&carol, CertStatus::unknown()));
    let lenient = w.certbound(&mode("IGNORE_CA_ERROR")).await;
    let strict = w.certbound(&mode("STRICT")).await;
    assert_allowed("ignore", &lenient.check(&w.request(&carol)).await);
    let a = strict.check(&w.request(&carol)).await;
    assert_denied("strict", &a, UNKNOWN);
    assert_eq!(strict.decisions("deny", "cert_revocation_unknown").await, 1);
    assert_eq!(revocation_checks(&strict, "ocsp", "unknown").await, 1);
    lenient.stop().await.unwrap();
    strict.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responder_that_is_down_passes_ignore_ca_error_and_fails_strict() {
    let w = World::new();
    let alice = w.leaf("alice", Some(&closed_url()), None);
    let lenient = w.certbound(&mode("IGNORE_CA_ERROR")).await;
    let strict = w.certbound(&mode("STRICT")).await;
    assert_allowed("ignore", &lenient.check(&w.request(&alice)).await);
    assert_denied("strict", &strict.check(&w.request(&alice)).await, UNKNOWN);
    assert_eq!(revocation_checks(&strict, "ocsp", "error").await, 1);
    lenient.stop().await.unwrap();
    strict.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_without_ocsp_or_crl_passes_ignore_ca_error_and_fails_strict() {
    let w = World::new();
    let plain = w.leaf("plain", None, None);
    let lenient = w.certbound(&mode("IGNORE_CA_ERROR")).await;
    let strict = w.certbound(&mode("STRICT")).await;
    assert_allowed("ignore", &lenient.check(&w.request(&plain)).await);
    assert_denied("strict", &strict.check(&w.request(&plain)).await, UNKNOWN);
    lenient.stop().await.unwrap();
    strict.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_never_asks_and_lets_a_revoked_certificate_through() {
    let w = World::new();
    let responder = RevocationServer::start(None).await;
    let bob = w.leaf("bob", Some(&responder.ocsp_url()), None);
    responder.answer_for(&bob, w.ocsp(&bob, revoked_status(w.now - 600).unwrap()));
    let cb = w.certbound(&mode("SKIP")).await;
    assert_allowed("skip", &cb.check(&w.request(&bob)).await);
    assert_eq!(responder.ocsp_hits(), 0);
    cb.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_responder_is_waited_for_only_revocation_wait_and_its_answer_is_cached() {
    let w = World::new();
    let responder = RevocationServer::start(None).await;
    let alice = w.leaf("alice", Some(&responder.ocsp_url()), None);
    responder.answer_for(&alice, w.ocsp(&alice, CertStatus::good()));
    responder.set_delay(Duration::from_millis(1500));
    let cb = w
        .certbound(&(mode("STRICT") + "revocation_wait = 200\nhttp_timeout = 5000\n"))
        .await;
    let started = Instant::now();
    assert_denied(
        "not known yet",
        &cb.check(&w.request(&alice)).await,
        UNKNOWN,
    );
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "the check waited {:?}",
        started.elapsed()
    );
    // The fetch finished in the background: a later check finds the answer without asking.
    let mut answer = cb.check(&w.request(&alice)).await;
    for _ in 0..40 {
        if answer.allowed() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer = cb.check(&w.request(&alice)).await;
    }
    assert_allowed("after the background fetch", &answer);
    assert_eq!(responder.ocsp_hits(), 1);
    cb.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_of_one_certificate_cause_one_fetch() {
    let w = World::new();
    let responder = RevocationServer::start(None).await;
    let alice = w.leaf("alice", Some(&responder.ocsp_url()), None);
    responder.answer_for(&alice, w.ocsp(&alice, CertStatus::good()));
    responder.set_delay(Duration::from_millis(300));
    let cb = std::sync::Arc::new(
        w.certbound(&(mode("STRICT") + "revocation_wait = 5000\n"))
            .await,
    );
    let req = w.request(&alice);
    let checks: Vec<_> = (0..16)
        .map(|_| {
            let (cb, req) = (cb.clone(), req.clone());
            tokio::spawn(async move { cb.check(&req).await })
        })
        .collect();
    for c in checks {
        assert_allowed("concurrent", &c.await.unwrap());
    }
    assert_eq!(responder.ocsp_hits(), 1);
    assert_eq!(revocation_checks(&cb, "ocsp", "good").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_from_the_distribution_point_decides_when_there_is_no_ocsp() {
    let w = World::new();
    let server = RevocationServer::start(None).await;
    let alice = w.leaf("alice", None, Some(&server.crl_url()));
    let bob = w.leaf("bob", None, Some(&server.crl_url()));
    server.set_crl(w.inter.crl(&[&bob], w.now - 60, w.now + 3600).unwrap());
    let cb = w.certbound(&mode("STRICT")).await;
    assert_allowed("alice", &cb.check(&w.request(&alice)).await);
    assert_denied("bob", &cb.check(&w.request(&bob)).await, REVOKED);
    assert_eq!(server.crl_hits(), 1, "one download for both certificates");
    assert_eq!(revocation_checks(&cb, "crl", "good").await, 1);
    assert_eq!(revocation_checks(&cb, "crl", "revoked").await, 1);
    cb.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocsp_comes_first_and_the_crl_is_asked_when_the_responder_fails() {
    let w = World::new();
    let server = RevocationServer::start(None).await;
    let bob = w.leaf("bob", Some(&closed_url()), Some(&server.crl_url()));
    server.set_crl(w.inter.crl(&[&bob], w.now - 60, w.now + 3600).unwrap());
    let cb = w.certbound(&mode("IGNORE_CA_ERROR")).await;
    assert_denied("bob", &cb.check(&w.request(&bob)).await, REVOKED);
    assert_eq!(revocation_checks(&cb, "ocsp", "error").await, 1);
    assert_eq!(revocation_checks(&cb, "crl", "revoked").await, 1);
    cb.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_verify_governs_tls_to_an_https_responder() {
    let w = World::new();
    // The responder's TLS certificate comes from a CA nobody trusts.
    let tls_ca = Ca::root("responder TLS CA").unwrap();
    let tls = tls_ca.server(&["127.0.0.1"]).unwrap();
    let responder = RevocationServer::start(Some(&tls)).await;
    let bob = w.leaf("bob", Some(&responder.ocsp_url()), None);
    responder.answer_for(&bob, w.ocsp(&bob, revoked_status(w.now - 600).unwrap()));
    let verifying = w.certbound(&(mode("STRICT") + "ssl_verify = true\n")).await;
    assert_denied(
        "ssl_verify = true, untrusted TLS",
        &verifying.check(&w.request(&bob)).await,
        UNKNOWN,
    );
    assert_eq!(responder.ocsp_hits(), 0, "the TLS handshake failed first");
    let lax = w
        .certbound(&(mode("STRICT") + "ssl_verify = false\n"))
        .await;
    assert_denied(
        "ssl_verify = false",
        &lax.check(&w.request(&bob)).await,
        REVOKED,
    );
    assert_eq!(responder.ocsp_hits(), 1);
    verifying.stop().await.unwrap();
    lax.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_is_not_asked_for_a_request_that_fails_a_local_check() {
    let w = World::new();
    let responder = RevocationServer::start(None).await;
    let alice = w.leaf("alice", Some(&responder.ocsp_url()), None);
    let bob = w.leaf("bob", Some(&responder.ocsp_url()), None);
    responder.answer_for(&alice, w.ocsp(&alice, CertStatus::good()));
    let cb = w.certbound(&mode("STRICT")).await;
    // alice's token with bob's certificate: a binding mismatch, decided without the network.
    let stolen = w.request(&alice);
    let bobs_chain = certbound_core::fixtures::url_encode_pem(&(bob.pem.clone() + &w.inter.pem));
    let mut req = Req::new();
    req.headers = stolen
        .headers
        .iter()
        .filter(|(k, _)| k != "x-client-cert")
        .cloned()
        .collect();
    let a = cb.check(&req.cert(&bobs_chain)).await;
    assert!(!a.allowed());
    assert_eq!(cb.decisions("deny", "binding_mismatch").await, 1);
    assert_eq!(responder.ocsp_hits(), 0);
    cb.stop().await.unwrap();
}
