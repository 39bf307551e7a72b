//! No secrets in logs: every log line certbound (and the libraries under it) writes while a real
//! server allows and denies is captured, at TRACE, in text and JSON, and searched for the tokens
//! and certificates that were sent.
//!
//! Deny lines name the request and trace ids a request came with, and only well-formed ones.
//!
//! This test binary installs the global subscriber (with `log` records forwarded, as `main`
//! does), so it holds exactly one test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::io::Write;
use std::sync::{Arc, Mutex};

use certbound_core::clock::now_unix;
use certbound_core::fixtures::{bound_claims, jwks, url_encode_pem, Leaf, SigningKey};
use serde_json::json;
use support::{Certbound, IdpMode, Pki, Req, TestIdp};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const AUD: &str = "https://api.test";
/// A run of this many characters of a certificate's base64 (or of the header value that carried
/// it) in the log counts as a leaked certificate.
const CERT_RUN: usize = 40;
/// The ids a deny line names (sent as Envoy sends them), and ids that are not ids.
const REQUEST_ID: &str = "req-logs-7";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const FORGED_REQUEST_ID: &str = "forged\nreason=allow";
const FORGED_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 forged";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn config(idp: &TestIdp, format: &str) -> String {
    format!(
        r#"
issuer = "{iss}"
idp_ca_certificates = ["{ca}"]
audience = ["{AUD}"]
rediscovery_lifetime = 1
timeout = 2000
trusted_ips = ["127.0.0.1"]
[proof_of_possession_mtls_from_header]
certificate_header_name = "x-client-cert"
certificate_header_format = "{format}"
ca_certificates = ["client-ca.pem"]
"#,
        iss = idp.issuer,
        ca = idp.ca_path.display()
    )
}

/// Everything a request sent that must not be logged.
#[derive(Default)]
struct Secrets {
    tokens: Vec<String>,
    cert_values: Vec<String>,
}

impl Secrets {
    fn token(&mut self, t: &str) -> String {
        self.tokens.push(t.to_string());
        t.to_string()
    }
    fn cert(&mut self, v: &str) -> String {
        self.cert_values.push(v.to_string());
        v.to_string()
    }
    /// The certificate's own base64 body too, whatever the header's encoding.
    fn leaf(&mut self, leaf: &Leaf) {
        let body: String = leaf
            .pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        self.cert_values.push(body);
    }
}

#[test]
fn logs_never_contain_tokens_or_certificates() {
    let capture = Capture::default();
    let writer = capture.clone();
    let json_writer = capture.clone();
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("trace"))
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone()),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(move || json_writer.clone()),
        )
        .try_init()
        .expect("the only subscriber in this test binary");

    let secrets = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(allow_and_deny());
    let log = capture.text();

    // The capture worked and saw the decisions: without this the test would pass vacuously.
    for needle in [
        "reason=\"binding_mismatch\"",
        "\"reason\":\"binding_mismatch\"",
        "reason=\"cert_malformed\"",
        "reason=\"token_signature_invalid\"",
        "reason=\"token_unknown_key\"",
        "reason=\"malformed_authorization\"",
        "signing keys loaded",
        "signing key refresh failed",
        "request_id=\"req-logs-7\" trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"",
        "\"request_id\":\"req-logs-7\"",
        "\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\"",
    ] {
        assert!(log.contains(needle), "{needle:?} not in the captured log");
    }
    // Ids that are not ids are dropped, not escaped into the line.
    for forged in ["forged", "reason=allow"] {
        assert!(!log.contains(forged), "{forged:?} reached the log");
    }

    for token in &secrets.tokens {
        assert!(!log.contains(token.as_str()), "a token was logged");
        for segment in token.split('.').filter(|s| s.len() >= 8) {
            assert!(
                !log.contains(segment),
                "a token segment was logged: {}...",
                &segment[..8]
            );
        }
    }
    let runs: HashSet<&str> = secrets
        .cert_values
        .iter()
        .flat_map(|v| (0..=v.len().saturating_sub(CERT_RUN)).filter_map(|i| v.get(i..i + CERT_RUN)))
        .collect();
    for i in 0..=log.len().saturating_sub(CERT_RUN) {
        if let Some(run) = log.get(i..i + CERT_RUN) {
            assert!(
                !runs.contains(run),
                "{CERT_RUN} characters of a certificate were logged: {run}"
            );
        }
    }
}

/// Allows and denies of every kind against two servers (url_encoded and base64_encoded
/// headers); returns what was sent.
async fn allow_and_deny() -> Secrets {
    let mut s = Secrets::default();
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix();
    let pki = Pki::new(now);
    pki.write_root(dir.path());
    let key = SigningKey::es256("k1").unwrap();
    let rotated = SigningKey::es256("k2").unwrap();
    let stranger = SigningKey::es256("k1").unwrap();
    let idp = TestIdp::start(dir.path(), jwks(&[&key])).await;
    let url = Certbound::start(&config(&idp, "url_encoded"), dir.path()).await;
    let b64 = Certbound::start(&config(&idp, "base64_encoded"), dir.path()).await;
    url.wait_ready().await;
    b64.wait_ready().await;

    for leaf in [&pki.alice, &pki.bob, &pki.untrusted, &pki.expired] {
        s.leaf(leaf);
    }
    s.leaf(&Leaf {
        pem: pki.inter.pem.clone(),
        der: pki.inter.der.clone(),
        key_pem: String::new(),
    });
    let claims = bound_claims(&idp.issuer, AUD, "alice-app", &pki.alice, now);
    let alice = s.token(&key.sign("at+jwt", &claims).unwrap());
    let alice_cert = s.cert(&pki.chain_header(&pki.alice));
    let bob_cert = s.cert(&pki.chain_header(&pki.bob));
    let damaged = s.cert(&alice_cert.replace("MII", "XXX"));
    let untrusted = s.cert(&pki.untrusted.url_encoded());
    let expired_cert = s.cert(&pki.chain_header(&pki.expired));
    let forged = {
        let parts: Vec<&str> = alice.split('.').collect();
        let mut c = claims.clone();
        c["sub"] = "admin".into();
        use base64::Engine;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c.to_string());
        s.token(&format!("{}.{payload}.{}", parts[0], parts[2]))
    };
    let other_signer = s.token(&stranger.sign("at+jwt", &claims).unwrap());
    let unknown_kid = s.token(&rotated.sign("at+jwt", &claims).unwrap());
    let mut expired_claims = claims.clone();
    expired_claims["exp"] = json!(now - 10);
    let expired = s.token(&key.sign("at+jwt", &expired_claims).unwrap());
    let opaque = s.token("opaque-RmFrZVJlZnJlc2hUb2tlblRoYXRJc0xvbmc");
    let huge = s.token(&"A".repeat(20_000));

    for _ in 0..3 {
        let a = url
            .check(&Req::new().bearer(&alice).cert(&alice_cert))
            .await;
        assert!(a.allowed(), "{a:?}");
    }
    let denied = [
        Req::new().bearer(&alice).cert(&bob_cert),
        Req::new().bearer(&alice).cert(&damaged),
        Req::new().bearer(&alice).cert(&untrusted),
        Req::new().bearer(&alice).cert(&expired_cert),
        Req::new().bearer(&alice),
        Req::new().bearer(&forged).cert(&alice_cert),
        Req::new().bearer(&other_signer).cert(&alice_cert),
        Req::new().bearer(&unknown_kid).cert(&alice_cert),
        Req::new().bearer(&expired).cert(&alice_cert),
        Req::new().bearer(&opaque).cert(&alice_cert),
        Req::new().bearer(&huge).cert(&alice_cert),
        Req::new().bearer(&alice).bearer(&alice).cert(&alice_cert),
        Req::new()
            .header("authorization", &format!("Bearer {alice} trailing"))
            .cert(&alice_cert),
        Req::new()
            .bearer(&alice)
            .cert(&alice_cert)
            .cert(&alice_cert),
        Req::new()
            .bearer(&alice)
            .cert(&alice_cert)
            .policy("payments"),
    ];
    for req in &denied {
        let a = url.check(req).await;
        assert!(!a.allowed(), "{a:?}");
    }
    let traceparent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    for (request_id, traceparent) in [
        (REQUEST_ID, traceparent.as_str()),
        (FORGED_REQUEST_ID, FORGED_TRACEPARENT),
    ] {
        let req = Req::new()
            .bearer(&alice)
            .cert(&bob_cert)
            .header("x-request-id", request_id)
            .header("traceparent", traceparent);
        assert_eq!(url.check(&req).await.reason, "binding_mismatch");
    }

    // base64_encoded: the header carries the certificate's base64 body itself.
    let alice_b64 = s.cert(&pki.alice.base64_der());
    let chain_b64 = s.cert(&{
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .encode([pki.alice.der.as_ref(), pki.inter.der.as_ref()].concat())
    });
    assert!(b64
        .check(&Req::new().bearer(&alice).cert(&chain_b64))
        .await
        .allowed());
    let bob_b64 = s.cert(&pki.bob.base64_der());
    for req in [
        Req::new().bearer(&alice).cert(&bob_b64),
        Req::new().bearer(&alice).cert(&alice_b64),
        Req::new().bearer(&forged).cert(&chain_b64),
        Req::new()
            .bearer(&alice)
            .cert(&url_encode_pem(&pki.alice.pem)),
    ] {
        assert!(!b64.check(&req).await.allowed());
    }

    // An IdP outage while a token names an unknown kid: the refresh failure is logged too. First
    // let `rediscovery_lifetime` (1 s) pass since the refresh the first unknown kid caused.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    idp.set_mode(IdpMode::Refuse);
    let a = url
        .check(&Req::new().bearer(&unknown_kid).cert(&alice_cert))
        .await;
    assert_eq!(a.reason, "token_unknown_key");
    idp.set_mode(IdpMode::Up);

    url.stop().await.unwrap();
    b64.stop().await.unwrap();
    s
}
