//! The verified-token and verified-certificate caches, through `pipeline::check` at an
//! injected time: a hit skips the verification, never outlives the token or the certificate,
//! never crosses policies, follows the issuer's key set, and never turns a failure into an
//! allow; through a real server: a reload with other trust anchors starts from empty caches.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use certbound_core::cache::{Lookup, Lookups, Settings};
use certbound_core::cert::{HeaderFormat, TrustStore, XfccElements};
use certbound_core::clock::now_unix;
use certbound_core::decision::{Decision, DenyReason};
use certbound_core::dpop::{access_token_hash, DpopMode, DpopPolicy};
use certbound_core::engine::{Active, Engine};
use certbound_core::fixtures::{bound_claims, jwks, url_encode_pem, Ca, Leaf, SigningKey};
use certbound_core::pipeline::{self, CheckInput, Outcome, PeerCertificate};
use certbound_core::policy::{CertSource, HeaderSource, Policy, PopMode};
use certbound_core::token::{KeySet, KeyStore};
use support::{Certbound, Req};

const ISS: &str = "https://idp.cache.test";
const AUD: &str = "https://api.cache.test";

struct World {
    root: Ca,
    inter: Ca,
    alice: Leaf,
    key: SigningKey,
    store: Arc<KeyStore>,
    now: u64,
}

impl World {
    fn new() -> Self {
        let now = now_unix();
        let root = Ca::root("cache test root").unwrap();
        let inter = root.intermediate("cache test intermediate").unwrap();
        let alice = inter.client("alice", now - 60, now + 86_400).unwrap();
        let key = SigningKey::es256("k").unwrap();
        let store = Arc::new(KeyStore::with_keys(keyset(&[&key])));
        Self {
            root,
            inter,
            alice,
            key,
            store,
            now,
        }
    }

    fn policy(&self, name: &str, audiences: &[&str]) -> Policy {
        let trust = TrustStore::from_der(vec![self.root.der.clone()], false).unwrap();
        Policy {
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            accepted_token_types: vec!["at+jwt".into()],
            cert_source: CertSource::Header(HeaderSource {
                name: "x-client-cert".into(),
                chain_name: None,
                format: HeaderFormat::UrlEncoded,
                xfcc_elements: XfccElements::One,
                trust: Some(Arc::new(trust)),
                secure_source: false,
                revocation: None,
                revocation_tls_verify: true,
            }),
            unknown_kid_wait: Duration::from_millis(10),
            ..Policy::new(name, ISS)
        }
    }

    /// `policy` in force, verifying with this world's key store.
    fn active(&self, policy: Policy) -> Active {
        Active::in_memory(policy, self.store.clone())
    }

    fn token(&self, claims: serde_json::Value) -> String {
        self.key.sign("at+jwt", &claims).unwrap()
    }

    fn bound_token(&self) -> String {
        self.token(bound_claims(ISS, AUD, "alice-app", &self.alice, self.now))
    }

    fn chain(&self) -> String {
        url_encode_pem(&(self.alice.pem.clone() + &self.inter.pem))
    }
}

fn keyset(keys: &[&SigningKey]) -> KeySet {
    KeySet::from_jwks_json(jwks(keys).to_string().as_bytes()).unwrap()
}

fn headers(token: &str, cert: &str) -> HashMap<String, String> {
    [
        ("authorization".to_string(), format!("Bearer {token}")),
        ("x-client-cert".to_string(), cert.to_string()),
    ]
    .into_iter()
    .collect()
}

/// A DPoP-bound token for `client`'s key, and proofs for `GET https://api.cache.test/orders`.
fn dpop_world<'a>(w: &'a World, client: &'a SigningKey) -> (String, impl Fn(&str) -> String + 'a) {
    let jkt = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(client.jwk.clone())
        .unwrap()
        .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
        .unwrap();
    let token = w.token(serde_json::json!({
        "iss": ISS, "aud": AUD, "sub": "spa", "iat": w.now, "exp": w.now + 600,
        "cnf": {"jkt": jkt},
    }));
    let ath = access_token_hash(&token);
    let proof = move |jti: &str| {
        client
            .dpop_proof(&serde_json::json!({
                "jti": jti, "htm": "GET", "htu": "https://api.cache.test/orders",
                "iat": w.now, "ath": ath,
            }))
            .unwrap()
    };
    (token, proof)
}

fn dpop_headers(scheme: &str, token: &str, proof: Option<&str>) -> HashMap<String, String> {
    let mut h: HashMap<String, String> = [
        (":method", "GET"),
        (":path", "/orders"),
        (":authority", "api.cache.test"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    h.insert("authorization".into(), format!("{scheme} {token}"));
    if let Some(p) = proof {
        h.insert("dpop".into(), p.into());
    }
    h
}

async fn check(
    policies: &Engine,
    policy: Option<&str>,
    h: &HashMap<String, String>,
    now: u64,
) -> Outcome {
    let input = CheckInput {
        headers: h,
        peer_certificate: PeerCertificate::None,
        policy_name: policy,
        source_ip: None,
    };
    pipeline::check(&input, policies, now).await
}

fn allowed(o: &Outcome) -> bool {
    matches!(o.decision, Decision::Allow { .. })
}

const MISS: Option<Lookup> = Some(Lookup::Miss);
const HIT: Option<Lookup> = Some(Lookup::Hit);

#[tokio::test]
async fn a_repeated_token_and_certificate_are_verified_once() {
    let w = World::new();
    let policies = Engine::single(w.active(w.policy("default", &[AUD])));
    let h = headers(&w.bound_token(), &w.chain());
    let first = check(&policies, None, &h, w.now).await;
    assert!(allowed(&first), "{first:?}");
    assert_eq!(
        first.cache,
        Lookups {
            token: MISS,
            certificate: MISS,
            certificate_der: MISS
        }
    );
    // Every later check is answered from the caches: no signature or chain verification.
    let mut verifications = 0;
    for i in 1..50 {
        let o = check(&policies, None, &h, w.now + i).await;
        assert!(allowed(&o), "{o:?}");
        assert_eq!(o.subject.as_deref(), Some("alice-app"));
        assert_eq!(o.thumbprint.as_deref(), Some(w.alice.x5t().as_str()));
        verifications += [o.cache.token, o.cache.certificate, o.cache.certificate_der]
            .iter()
            .filter(|l| **l != HIT && l.is_some())
            .count();
        assert_eq!((o.cache.token, o.cache.certificate), (HIT, HIT));
    }
    assert_eq!(verifications, 0);
}

#[tokio::test]
async fn a_cached_dpop_bound_token_still_needs_a_fresh_proof_on_every_request() {
    let w = World::new();
    let mut policy = w.policy("default", &[AUD]);
    policy.pop_mode = PopMode::Off;
    policy.dpop = DpopPolicy {
        mode: DpopMode::Strict,
        ..DpopPolicy::off()
    };
    let policies = Engine::single(w.active(policy));
    let client = SigningKey::es256("client").unwrap();
    let (token, proof) = dpop_world(&w, &client);

    let first = check(
        &policies,
        None,
        &dpop_headers("DPoP", &token, Some(&proof("a"))),
        w.now,
    )
    .await;
    assert!(allowed(&first), "{first:?}");
    assert_eq!(first.cache.token, MISS);
    let second = check(
        &policies,
        None,
        &dpop_headers("DPoP", &token, Some(&proof("b"))),
        w.now,
    )
    .await;
    assert!(allowed(&second), "{second:?}");
    assert_eq!(second.cache.token, HIT);

    // The token comes from the cache; the proof is checked anyway.
    for (h, reason) in [
        (
            dpop_headers("DPoP", &token, Some(&proof("b"))),
            DenyReason::DpopReplayed,
        ),
        (
            dpop_headers("DPoP", &token, None),
            DenyReason::DpopProofMissing,
        ),
        (
            dpop_headers("Bearer", &token, Some(&proof("c"))),
            DenyReason::DpopBearerDowngrade,
        ),
    ] {
        let o = check(&policies, None, &h, w.now).await;
        assert_eq!(o.cache.token, HIT);
        assert!(
            matches!(o.decision, Decision::Deny(r) if r == reason),
            "{reason:?}: {o:?}"
        );
    }
}

#[tokio::test]
async fn a_cached_token_is_refused_once_its_exp_has_passed() {
    let w = World::new();
    let policies = Engine::single(w.active(w.policy("default", &[AUD])));
    let mut claims = bound_claims(ISS, AUD, "alice-app", &w.alice, w.now);
    claims["exp"] = (w.now + 30).into();
    let h = headers(&w.token(claims), &w.chain());
    assert!(allowed(&check(&policies, None, &h, w.now).await));
    let at_exp = check(&policies, None, &h, w.now + 30).await;
    assert!(allowed(&at_exp));
    assert_eq!(at_exp.cache.token, HIT);
    let after = check(&policies, None, &h, w.now + 31).await;
    assert_eq!(after.decision, Decision::Deny(DenyReason::TokenExpired));
}

#[tokio::test]
async fn a_token_cached_under_one_policy_is_not_reused_by_another() {
    let w = World::new();
    let mut policies = Engine::single(w.active(w.policy("default", &[AUD])));
    policies.named.insert(
        "other-api".into(),
        Arc::new(w.active(w.policy("other-api", &["https://other.cache.test"]))),
    );
    let h = headers(&w.bound_token(), &w.chain());
    assert!(allowed(&check(&policies, None, &h, w.now).await));
    assert_eq!(check(&policies, None, &h, w.now).await.cache.token, HIT);
    let other = check(&policies, Some("other-api"), &h, w.now).await;
    assert_eq!(
        other.decision,
        Decision::Deny(DenyReason::TokenAudienceMismatch)
    );
    assert_eq!(other.cache.token, MISS);
}

#[tokio::test]
async fn a_key_removed_from_the_jwks_stops_tokens_it_verified() {
    let w = World::new();
    let policies = Engine::single(w.active(w.policy("default", &[AUD])));
    let h = headers(&w.bound_token(), &w.chain());
    assert!(allowed(&check(&policies, None, &h, w.now).await));
    assert_eq!(check(&policies, None, &h, w.now).await.cache.token, HIT);
    // The IdP rotated: the signing key is gone.
    w.store
        .publish(keyset(&[&SigningKey::es256("new").unwrap()]));
    let o = check(&policies, None, &h, w.now).await;
    assert_eq!(o.cache.token, MISS);
    assert_eq!(o.decision, Decision::Deny(DenyReason::TokenUnknownKey));
}

#[tokio::test]
async fn refetching_the_same_jwks_keeps_cached_tokens() {
    let w = World::new();
    let policies = Engine::single(w.active(w.policy("default", &[AUD])));
    let h = headers(&w.bound_token(), &w.chain());
    assert!(allowed(&check(&policies, None, &h, w.now).await));
    w.store.publish(keyset(&[&w.key]));
    assert_eq!(check(&policies, None, &h, w.now).await.cache.token, HIT);
}

#[tokio::test]
async fn failures_are_never_cached() {
    let w = World::new();
    let policies = Engine::single(w.active(w.policy("default", &[AUD])));
    let forged = {
        let t = w.bound_token();
        let (head, _) = t.rsplit_once('.').unwrap();
        format!("{head}.{}", "A".repeat(86))
    };
    let untrusted = Ca::root("nobody")
        .unwrap()
        .client("mallory", w.now - 60, w.now + 86_400)
        .unwrap();
    for _ in 0..3 {
        let o = check(&policies, None, &headers(&forged, &w.chain()), w.now).await;
        assert_eq!(
            o.decision,
            Decision::Deny(DenyReason::TokenSignatureInvalid)
        );
        assert_eq!(o.cache.token, MISS);
        let o = check(
            &policies,
            None,
            &headers(&w.bound_token(), &untrusted.url_encoded()),
            w.now,
        )
        .await;
        assert_eq!(o.decision, Decision::Deny(DenyReason::CertUntrusted));
        assert_eq!(o.cache.certificate, MISS);
    }
}

#[tokio::test]
async fn a_cached_certificate_is_not_used_past_its_not_after() {
    let w = World::new();
    let policies = Engine::single(w.active(w.policy("default", &[AUD])));
    let short = w.inter.client("short", w.now - 60, w.now + 100).unwrap();
    let mut claims = bound_claims(ISS, AUD, "short-app", &short, w.now);
    claims["exp"] = (w.now + 1000).into();
    let h = headers(
        &w.token(claims),
        &url_encode_pem(&(short.pem.clone() + &w.inter.pem)),
    );
    assert!(allowed(&check(&policies, None, &h, w.now).await));
    assert_eq!(
        check(&policies, None, &h, w.now + 99)
            .await
            .cache
            .certificate,
        HIT
    );
    let late = check(&policies, None, &h, w.now + 200).await;
    assert_eq!(late.cache.certificate, MISS);
    assert_eq!(late.decision, Decision::Deny(DenyReason::CertExpired));
}

#[tokio::test]
async fn the_same_certificate_in_another_encoding_is_not_verified_again() {
    let w = World::new();
    let policies = Engine::single(w.active(w.policy("default", &[AUD])));
    let token = w.bound_token();
    assert!(allowed(
        &check(&policies, None, &headers(&token, &w.chain()), w.now).await
    ));
    // Same certificates, other percent-escaping: another header value, the same DER.
    let other = w.chain().replace("%0A", "%0a");
    assert_ne!(other, w.chain());
    let o = check(&policies, None, &headers(&token, &other), w.now).await;
    assert!(allowed(&o), "{o:?}");
    assert_eq!((o.cache.certificate, o.cache.certificate_der), (MISS, HIT));
    // And from then on that value is known as it is.
    let o = check(&policies, None, &headers(&token, &other), w.now).await;
    assert_eq!(o.cache.certificate, HIT);
}

#[tokio::test]
async fn with_caches_off_every_check_verifies() {
    let w = World::new();
    let mut p = w.policy("default", &[AUD]);
    p.cache = Settings::OFF;
    let policies = Engine::single(w.active(p));
    let h = headers(&w.bound_token(), &w.chain());
    for _ in 0..3 {
        let o = check(&policies, None, &h, w.now).await;
        assert!(allowed(&o));
        assert_eq!(o.cache, Lookups::default());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_other_trust_anchors_does_not_reuse_verified_certificates() {
    let w = World::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwks.json"), jwks(&[&w.key]).to_string()).unwrap();
    std::fs::write(dir.path().join("ca-a.pem"), &w.root.pem).unwrap();
    let other_root = Ca::root("another root").unwrap();
    std::fs::write(dir.path().join("ca-b.pem"), &other_root.pem).unwrap();
    let config = |ca: &str| {
        format!(
            r#"
issuer = "{ISS}"
jwks_file = "jwks.json"
audience = ["{AUD}"]
[proof_of_possession_mtls_from_header]
certificate_header_name = "x-client-cert"
certificate_header_format = "url_encoded"
ca_certificates = ["{ca}"]
secure_source = false
"#
        )
    };
    let path = dir.path().join("certbound.toml");
    std::fs::write(&path, config("ca-a.pem")).unwrap();
    let (cb, reload) = Certbound::start_reloading(&path).await;
    cb.wait_ready().await;
    let req = Req::new().bearer(&w.bound_token()).cert(&w.chain());
    assert!(cb.check(&req).await.allowed());
    assert!(cb.check(&req).await.allowed());
    let hits =
        r#"certbound_cache_requests_total{cache="certificate",policy="default",result="hit"}"#;
    assert_eq!(cb.metric(hits).await, 1);

    std::fs::write(&path, config("ca-b.pem")).unwrap();
    reload.send(()).unwrap();
    let reloaded = r#"certbound_config_reloads_total{result="ok"}"#;
    for _ in 0..200 {
        if cb.metric(reloaded).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(cb.metric(reloaded).await, 1);
    let a = cb.check(&req).await;
    assert!(!a.allowed(), "{a:?}");
    assert_eq!(cb.decisions("deny", "cert_untrusted").await, 1);
    assert_eq!(
        cb.metric(hits).await,
        1,
        "nothing served from the old cache"
    );
    cb.stop().await.unwrap();
}
