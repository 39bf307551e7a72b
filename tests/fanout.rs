//! What unauthenticated requests can make certbound ask the IdP: nothing without a certificate
//! the policy accepts, and never more than `limits.max_introspection_calls` calls at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use certbound_core::clock::now_unix;
use certbound_core::fixtures::{bound_claims, jwks, SigningKey};
use support::{check_at, Answer, Certbound, IdpMode, Pki, Req, TestIdp, RS_CLIENT};

const AUD: &str = "https://api.test";

/// Strict binding, certificates from `x-client-cert` (trusted from 127.0.0.1 only), opaque
/// tokens introspected, JWTs verified locally.
fn config(idp: &TestIdp, extra: &str) -> String {
    format!(
        r#"
issuer = "{iss}"
idp_ca_certificates = ["{ca}"]
audience = ["{AUD}"]
auth_methods = ["bearer", "introspection"]
client_id = ["{id}"]
client_secret = ["{secret}"]
leeway = 0
rediscovery_lifetime = 1
proof_of_possession_mtls = "strict"
trusted_ips = ["127.0.0.1/32"]
[proof_of_possession_mtls_from_header]
certificate_header_name = "x-client-cert"
certificate_header_format = "url_encoded"
ca_certificates = ["client-ca.pem"]
{extra}
"#,
        iss = idp.issuer,
        ca = idp.ca_path.display(),
        id = RS_CLIENT.0,
        secret = RS_CLIENT.1,
    )
}

/// A token nobody issued, different every time.
fn random_token(i: usize) -> String {
    use sha2::Digest;
    let seed = format!("{i}-{:?}", std::time::SystemTime::now());
    format!("{:x}", sha2::Sha256::digest(seed.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_tokens_without_a_certificate_the_policy_accepts_cause_no_idp_call() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix();
    let pki = Pki::new(now);
    pki.write_root(dir.path());
    let key = SigningKey::es256("k").unwrap();
    let idp = TestIdp::start(dir.path(), jwks(&[&key])).await;
    let cb = Certbound::start(&config(&idp, ""), dir.path()).await;
    cb.wait_ready().await;
    // Past `rediscovery_lifetime` (1 s, the least allowed) since the start-up fetch, so an
    // unknown `kid` reaching the key store would refetch the JWKS at once.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let jwks_before = idp.jwks_hits();
    let alice = pki.chain_header(&pki.alice);
    let stranger = pki.chain_header(&pki.untrusted);
    // A JWT signed with a key the IdP never published: verifying it would refetch the JWKS.
    let rogue = SigningKey::es256("rogue").unwrap();
    let unknown_kid = rogue
        .sign(
            "at+jwt",
            &bound_claims(&idp.issuer, AUD, "x", &pki.alice, now),
        )
        .unwrap();

    for i in 0..50 {
        let token = random_token(i);
        let cases = [
            ("no certificate", Req::new().bearer(&token), "cert_missing"),
            (
                "certificate from an untrusted hop",
                Req::new().bearer(&token).cert(&alice).source("192.0.2.7"),
                "cert_missing",
            ),
            (
                "undecodable certificate",
                Req::new().bearer(&token).cert("not%20a%20certificate"),
                "cert_malformed",
            ),
            (
                "certificate from an unknown CA",
                Req::new().bearer(&token).cert(&stranger),
                "cert_untrusted",
            ),
            (
                "unknown kid, no certificate",
                Req::new().bearer(&unknown_kid),
                "cert_missing",
            ),
        ];
        for (name, req, reason) in cases {
            let a = cb.check(&req).await;
            assert!(!a.allowed(), "{name}: {a:?}");
            assert_eq!(a.reason, reason, "{name}: {a:?}");
            assert_eq!(a.http_status, 401, "{name}: {a:?}");
        }
    }
    assert_eq!(idp.introspections_started(), 0, "the IdP was asked");
    assert_eq!(idp.jwks_hits(), jwks_before, "the JWKS was refetched");
    cb.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_calls_in_flight_never_exceed_max_introspection_calls() {
    const BOUND: usize = 4;
    const FLOOD: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix();
    let pki = Pki::new(now);
    pki.write_root(dir.path());
    let key = SigningKey::es256("k").unwrap();
    let idp = TestIdp::start(dir.path(), jwks(&[&key])).await;
    let cb = Certbound::start(
        &config(
            &idp,
            &format!("[limits]\nmax_introspection_calls = {BOUND}"),
        ),
        dir.path(),
    )
    .await;
    cb.wait_ready().await;
    let alice = pki.chain_header(&pki.alice);
    // Resolve the introspection endpoint first, so the held calls are introspections.
    let warm = cb.check(&Req::new().bearer("warm-up").cert(&alice)).await;
    assert_eq!(warm.reason, "token_inactive", "{warm:?}");

    idp.set_mode(IdpMode::Hang);
    let grpc = cb.grpc;
    let flood: Vec<_> = (0..FLOOD)
        .map(|i| {
            let req = Req::new().bearer(&random_token(i)).cert(&alice);
            tokio::spawn(async move { check_at(grpc, &req).await })
        })
        .collect();
    // The IdP holds every call it gets: BOUND of the flood reach it and wait there, the rest
    // are answered at once. Bounded waits for those states; nothing here measures time.
    let mut waited = 0;
    while idp.introspections_in_flight() < BOUND
        || flood.iter().filter(|h| h.is_finished()).count() < FLOOD - BOUND
    {
        waited += 1;
        assert!(
            waited < 3000,
            "in flight: {}, answered: {}",
            idp.introspections_in_flight(),
            flood.iter().filter(|h| h.is_finished()).count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(idp.max_introspections_in_flight(), BOUND);
    let mut refused = 0;
    let mut held = Vec::new();
    for h in flood {
        if h.is_finished() {
            let a: Answer = h.await.unwrap();
            assert_eq!(a.reason, "introspection_unavailable", "{a:?}");
            assert_eq!(a.http_status, 503, "{a:?}");
            refused += 1;
        } else {
            held.push(h);
        }
    }
    assert_eq!(refused, FLOOD - BOUND);
    assert_eq!(
        cb.metric("certbound_introspection_saturated_total").await,
        (FLOOD - BOUND) as u64
    );
    assert_eq!(
        cb.decisions("deny", "introspection_unavailable").await,
        (FLOOD - BOUND) as u64
    );

    // Released, the held calls get their answers; the slots are free again.
    idp.set_mode(IdpMode::Up);
    for h in held {
        let a = h.await.unwrap();
        assert_eq!(a.reason, "token_inactive", "{a:?}");
    }
    let after = cb.check(&Req::new().bearer("after").cert(&alice)).await;
    assert_eq!(after.reason, "token_inactive", "{after:?}");
    assert_eq!(idp.max_introspections_in_flight(), BOUND);
    assert_eq!(idp.introspection_calls(), 1 + BOUND + 1);
    cb.stop().await.unwrap();
}
