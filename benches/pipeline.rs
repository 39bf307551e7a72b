//! In-process cost of one check, cold (no caches) and warm (token and certificate cached), next
//! to what each cannot go below, measured in the same run: for the cold path the signature
//! verification, the chain verification, the header decode and the SHA-256; for the warm path a
//! bare hit in both caches (hash the token and the header value, two lookups).
//!
//! `cargo bench --bench pipeline` (docs/benchmarks.md)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use certbound_core::cache::{self, Settings};
use certbound_core::cert::{self, HeaderFormat, TrustStore, XfccElements};
use certbound_core::clock::now_unix;
use certbound_core::engine::{Active, Engine};
use certbound_core::fixtures::{bound_claims, jwks, Ca, Layout, SigningKey};
use certbound_core::pipeline::{self, CheckInput, PeerCertificate};
use certbound_core::policy::{CertSource, ClaimHeader, HeaderSource, Policy};
use certbound_core::token::{self, KeySet, KeyStore, TokenRules};
use criterion::{criterion_group, criterion_main, Criterion};

const ISS: &str = "https://idp.bench";
const AUD: &str = "https://api.bench";

struct Setup {
    cold: Engine,
    warm: Engine,
    headers: HashMap<String, String>,
    token: String,
    keys: Arc<KeySet>,
    trust: Arc<TrustStore>,
    cert_header: String,
    format: HeaderFormat,
}

fn setup(key: SigningKey, format: HeaderFormat) -> Setup {
    let now = now_unix();
    let root = Ca::root("bench root").unwrap();
    let inter = root.intermediate("bench intermediate").unwrap();
    let alice = inter.client("alice", now - 60, now + 86_400).unwrap();
    let token = key
        .sign("at+jwt", &bound_claims(ISS, AUD, "alice-app", &alice, now))
        .unwrap();
    // The intermediate is configured too, for RFC 9440 whose Client-Cert carries the leaf only.
    let trust =
        Arc::new(TrustStore::from_der(vec![root.der.clone(), inter.der.clone()], false).unwrap());
    let keyset = KeySet::from_jwks_json(jwks(&[&key]).to_string().as_bytes()).unwrap();
    let cert_header = match format {
        // nginx's $ssl_client_escaped_cert, the most common setup.
        HeaderFormat::UrlEncoded => {
            certbound_core::fixtures::url_encode_pem(&(alice.pem.clone() + &inter.pem))
        }
        other => {
            certbound_core::fixtures::encode_for(
                other,
                &[alice.der.as_ref(), inter.der.as_ref()],
                &Layout::default(),
            )
            .expect("every format has an encoding")
            .value
        }
    };
    let store = Arc::new(KeyStore::with_keys(
        KeySet::from_jwks_json(jwks(&[&key]).to_string().as_bytes()).unwrap(),
    ));
    let policy = Policy {
        audiences: vec![AUD.into()],
        accepted_token_types: vec!["at+jwt".into()],
        cert_source: CertSource::Header(HeaderSource {
            name: "x-client-cert".into(),
            format,
            xfcc_elements: XfccElements::One,
            trust: Some(trust.clone()),
            chain_name: None,
            secure_source: false,
            revocation: None,
            revocation_tls_verify: true,
        }),
        upstream_headers: vec![ClaimHeader {
            claim: "sub".into(),
            header: "x-consumer-sub".into(),
        }],
        unknown_kid_wait: Duration::from_millis(10),
        cache: Settings::OFF,
        ..Policy::new("default", ISS)
    };
    let warm = Policy {
        cache: Settings::default(),
        ..policy.clone()
    };
    let headers: HashMap<String, String> = [
        (":authority", "api.bench"),
        ("authorization", &format!("Bearer {token}")),
        ("x-client-cert", &cert_header),
        ("user-agent", "bench"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Setup {
        cold: Engine::single(Active::in_memory(policy, store.clone())),
        warm: Engine::single(Active::in_memory(warm, store)),
        headers,
        token,
        keys: Arc::new(keyset),
        trust,
        cert_header,
        format,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut cases = vec![
        (
            "rs256/url_encoded".to_string(),
            SigningKey::rs256("k").unwrap(),
            HeaderFormat::UrlEncoded,
        ),
        (
            "es256/url_encoded".to_string(),
            SigningKey::es256("k").unwrap(),
            HeaderFormat::UrlEncoded,
        ),
    ];
    for format in HeaderFormat::ALL {
        if format != HeaderFormat::UrlEncoded {
            let name = format!("rs256/{}", format.as_str());
            cases.push((name, SigningKey::rs256("k").unwrap(), format));
        }
    }
    for (name, key, format) in cases {
        let s = setup(key, format);
        let now = now_unix();
        let mut g = c.benchmark_group(name);
        let input = CheckInput {
            headers: &s.headers,
            peer_certificate: PeerCertificate::None,
            policy_name: None,
            source_ip: None,
        };
        let allowed = |out: pipeline::Outcome| {
            assert!(
                matches!(
                    out.decision,
                    certbound_core::decision::Decision::Allow { .. }
                ),
                "{:?}",
                out.decision
            )
        };
        g.bench_function("cold", |b| {
            b.iter(|| allowed(rt.block_on(pipeline::check(black_box(&input), &s.cold, now))))
        });
        // One check fills the caches; every measured one is a hit on both.
        allowed(rt.block_on(pipeline::check(&input, &s.warm, now)));
        g.bench_function("warm", |b| {
            b.iter(|| allowed(rt.block_on(pipeline::check(black_box(&input), &s.warm, now))))
        });
        let caches = &s.warm.default.services.caches;
        g.bench_function("floor/cache_hits", |b| {
            b.iter(|| {
                let t = caches.token(&cache::token_key(black_box(&s.token)), now);
                // The pipeline keys on the value as extracted (trimmed).
                let value = black_box(s.cert_header.trim());
                let c = caches.cert_by_header(&cache::header_key(&[value]), now);
                assert!(t.is_some() && c.is_some());
            })
        });
        let types = vec!["at+jwt".to_string()];
        let aud = vec![AUD.to_string()];
        let rules = TokenRules {
            issuer: ISS,
            audiences: &aud,
            leeway: 0,
            accepted_types: &types,
            max_bytes: 16 * 1024,
            max_json_depth: 16,
        };
        g.bench_function("floor/token_verify", |b| {
            b.iter(|| token::verify(black_box(&s.token), &s.keys, &rules, now).unwrap())
        });
        let chain = cert::decode(&s.cert_header, s.format).unwrap().chain;
        g.bench_function("floor/chain_verify", |b| {
            b.iter(|| s.trust.verify(black_box(&chain), now).unwrap())
        });
        g.bench_function("floor/header_decode", |b| {
            b.iter(|| cert::decode(black_box(&s.cert_header), s.format).unwrap())
        });
        g.bench_function("floor/sha256", |b| {
            b.iter(|| cert::thumbprint(black_box(chain[0].as_ref())))
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
