//! Properties of the parsers of hostile input and of the binding, over generated certificates.
//!
//! Generating keys is slow, so a small pool of certificates is made once per run and proptest
//! picks from it, permutes it and varies the encoding (line wrapping, line ends, padding,
//! surrounding whitespace). Header formats are always taken from `HeaderFormat::ALL`, never
//! named, so a format added to the enum is covered here without touching this file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use certbound::config::Config;
use certbound::grpc::AuthzService;
use certbound::metrics::Metrics;
use certbound_core::bind::{self, PopMode};
use certbound_core::cert::{self, HeaderFormat, Thumbprint};
use certbound_core::clock::now_unix;
use certbound_core::extract;
use certbound_core::fixtures::{
    bound_claims, decoded_chain, encode_for, header_encodings, jwks, pem_text, url_encode_pem, Ca,
    Layout, Leaf, SigningKey,
};
use certbound_core::token::Binding;
use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest};
use envoy_types::pb::envoy::service::auth::v3::{attribute_context, AttributeContext};
use figment::providers::{Format, Toml};
use figment::Figment;
use proptest::prelude::*;
use proptest::sample::select;

const ISSUER: &str = "https://idp.properties.test";
const AUDIENCE: &str = "https://api.test";
const LEAVES: usize = 4;

/// root -> intermediate -> a few client leaves, a signing key, and one token bound to each leaf.
struct Pool {
    root: Ca,
    inter: Ca,
    leaves: Vec<Leaf>,
    key: SigningKey,
    tokens: Vec<String>,
}

static POOL: LazyLock<Pool> = LazyLock::new(|| {
    let now = now_unix();
    let root = Ca::root("properties root").unwrap();
    let inter = root.intermediate("properties intermediate").unwrap();
    let leaves: Vec<Leaf> = (0..LEAVES)
        .map(|i| {
            inter
                .client(&format!("client{i}"), now - 3600, now + 86_400)
                .unwrap()
        })
        .collect();
    let key = SigningKey::es256("prop").unwrap();
    let tokens = leaves
        .iter()
        .enumerate()
        .map(|(i, leaf)| {
            key.sign(
                "at+jwt",
                &bound_claims(ISSUER, AUDIENCE, &format!("app{i}"), leaf, now),
            )
            .unwrap()
        })
        .collect();
    Pool {
        root,
        inter,
        leaves,
        key,
        tokens,
    }
});

fn layout() -> impl Strategy<Value = Layout> {
    (
        prop_oneof![Just(0usize), 1usize..=120],
        select(vec!["\n", "\r\n", " ", "\t"]),
        any::<bool>(),
        select(vec!["\n", "\r\n"]),
        select(vec![64usize, 76]),
        select(vec!["", " ", "\t", "  "]),
        select(vec!["", " ", "\t", "  "]),
    )
        .prop_map(
            |(wrap, wrap_with, strip_padding, pem_line_end, pem_width, lead, trail)| Layout {
                wrap,
                wrap_with,
                strip_padding,
                pem_line_end,
                pem_width,
                lead,
                trail,
            },
        )
}

/// The leaf alone, or leaf + intermediate (+ root: some terminators send the whole chain).
fn chain_of(pool: &Pool, leaf: usize, extra: usize) -> Vec<&[u8]> {
    let mut chain = vec![pool.leaves[leaf].der.as_ref()];
    if extra >= 1 {
        chain.push(pool.inter.der.as_ref());
    }
    if extra >= 2 {
        chain.push(pool.root.der.as_ref());
    }
    chain
}

const SAN_PIECES: usize = 22;

/// Text a SAN can hold that means something in XFCC: separators, quotes, keys, and whole
/// forged pairs naming the victim's certificate.
fn san_piece(i: usize, victim: &Leaf) -> String {
    let hash = hex(&cert::thumbprint(victim.der.as_ref()));
    let pem = url_encode_pem(&victim.pem);
    match i {
        0 => "urn:x".into(),
        1 => ",".into(),
        2 => ";".into(),
        3 => "\"".into(),
        4 => "\\".into(),
        5 => "=".into(),
        6 => "Hash=".into(),
        7 => "Cert=".into(),
        8 => "URI=".into(),
        9 => "DNS=".into(),
        10 => "By=".into(),
        11 => hash,
        12 => pem,
        13 => format!(",Hash={hash}"),
        14 => format!(";Hash={hash}"),
        15 => format!(",Chain={pem}"),
        16 => format!(",Cert=\"{pem}\""),
        17 => format!(";Chain=\"{pem}\""),
        18 => format!(",By=spiffe://gw;Hash={hash};Subject=\"\""),
        19 => ";DNS=a".into(),
        20 => "a\",Hash=".into(),
        _ => " ".into(),
    }
}

fn hex(t: &[u8]) -> String {
    t.iter().map(|b| format!("{b:02x}")).collect()
}

proptest! {
    /// A certificate in every supported format decodes to the same DER: each format accepts at
    /// least one of the known encodings, and whatever any format accepts (its own encodings and
    /// anyone else's) is exactly the chain that was encoded, never another certificate.
    #[test]
    fn every_format_decodes_a_certificate_to_the_same_der(
        leaf in 0..LEAVES, extra in 0usize..=2, layout in layout(),
    ) {
        let pool = &*POOL;
        let chain = chain_of(pool, leaf, extra);
        let values = header_encodings(&chain, &layout);
        for format in HeaderFormat::ALL {
            let mut accepted = Vec::new();
            for e in &values {
                if let Ok(got) = decoded_chain(&e.value, format) {
                    prop_assert_eq!(
                        &got, &e.chain,
                        "{} decoded {} to another chain", format.as_str(), e.shape
                    );
                    accepted.push(e.shape);
                }
            }
            prop_assert!(
                !accepted.is_empty(),
                "{} accepts none of the known encodings: add one to fixtures::header_encodings",
                format.as_str()
            );
        }
    }

    /// Envoy writes `URI` and `DNS` SANs unquoted, so the client's certificate chooses that text.
    /// Whatever it holds (commas, semicolons, quotes, backslashes, forged keys naming another
    /// certificate), the XFCC decoder in either element mode refuses the header or reads the
    /// certificate Envoy verified: never another one.
    #[test]
    fn xfcc_sans_never_make_the_header_name_another_certificate(
        uri in proptest::collection::vec(0usize..SAN_PIECES, 0..6),
        dns in proptest::collection::vec(0usize..SAN_PIECES, 0..6),
        cert in any::<bool>(),
        prefix in any::<bool>(),
    ) {
        let pool = &*POOL;
        let (mallory, victim) = (&pool.leaves[0], &pool.leaves[1]);
        let san = |pieces: &[usize]| pieces.iter().map(|&i| san_piece(i, victim)).collect::<String>();
        let element = format!(
            "By=spiffe://gw;Hash={}{};Subject=\"CN=mallory\";URI={};DNS={}",
            hex(&cert::thumbprint(mallory.der.as_ref())),
            if cert { format!(";Cert=\"{}\"", url_encode_pem(&mallory.pem)) } else { String::new() },
            san(&uri),
            san(&dns),
        );
        // An appending hop after a client-sent copy: the earlier text is the client's.
        let value = if prefix {
            format!("Hash={};Subject=\"\",{element}", hex(&cert::thumbprint(victim.der.as_ref())))
        } else {
            element
        };
        for elements in [cert::XfccElements::One, cert::XfccElements::Last] {
            for format in [HeaderFormat::Xfcc, HeaderFormat::Auto] {
                if let Ok(p) = cert::decode_with(&value, format, elements) {
                    prop_assert_eq!(p.hash, Some(cert::thumbprint(mallory.der.as_ref())), "{}", value);
                    if let Some(leaf) = p.chain.first() {
                        prop_assert_eq!(leaf.as_ref(), mallory.der.as_ref(), "{}", value);
                    }
                }
            }
        }
    }

    /// The same SANs in the element an inbound mesh sidecar appends (`APPEND_FORWARD`, `By` =
    /// the local workload), after whatever the caller sent: reading the mesh peer, with or
    /// without `local_spiffe_id`, refuses the header or names the certificate the sidecar
    /// verified, never the victim's.
    #[test]
    fn mesh_sans_never_make_the_sidecars_element_name_another_certificate(
        uri in proptest::collection::vec(0usize..SAN_PIECES, 0..6),
        dns in proptest::collection::vec(0usize..SAN_PIECES, 0..6),
        prefix in 0usize..3,
    ) {
        let pool = &*POOL;
        let (mallory, victim) = (&pool.leaves[0], &pool.leaves[1]);
        let san = |pieces: &[usize]| pieces.iter().map(|&i| san_piece(i, victim)).collect::<String>();
        let v = hex(&cert::thumbprint(victim.der.as_ref()));
        let element = format!(
            "By=spiffe://gw;Hash={};Subject=\"\";URI={};DNS={}",
            hex(&cert::thumbprint(mallory.der.as_ref())),
            san(&uri),
            san(&dns),
        );
        let value = match prefix {
            0 => element,
            1 => format!("Hash={v};Subject=\"\",{element}"),
            _ => format!("By=spiffe://gw;Hash={v};URI=spiffe://v,{element}"),
        };
        for local in [Some("spiffe://gw"), None] {
            if let Ok(peer) = cert::decode_mesh(&value, local) {
                prop_assert_eq!(peer.hash, cert::thumbprint(mallory.der.as_ref()), "{}", value);
            }
        }
    }

    /// RFC 8705 §3 in strict mode: a thumbprint is accepted only when the token's
    /// `cnf.x5t#S256` is exactly its canonical base64url. Near misses include the two slack bits
    /// of the last character (43 characters carry 258 bits for a 256-bit hash).
    #[test]
    fn strict_binding_never_accepts_another_thumbprint(
        bound in any::<[u8; 32]>(),
        presented in any::<[u8; 32]>(),
        last in select(URL_SAFE_CHARS.chars().collect::<Vec<_>>()),
        junk in ".{0,64}",
        pick in 0u8..4,
    ) {
        let canonical = URL_SAFE_NO_PAD.encode(bound);
        let claimed = match pick {
            0 => canonical.clone(),
            1 => format!("{}{last}", &canonical[..42]),
            2 => junk,
            _ => canonical.to_ascii_uppercase(),
        };
        let result = bind::check(PopMode::Strict, &Binding::X5tS256(claimed.clone()), Some(&presented));
        if result.is_ok() {
            prop_assert_eq!(&claimed, &URL_SAFE_NO_PAD.encode(presented));
        }
        prop_assert_eq!(
            bind::check(PopMode::Strict, &Binding::X5tS256(canonical), Some(&presented)).is_ok(),
            bound == presented
        );
        prop_assert!(bind::check(PopMode::Strict, &Binding::Unbound, Some(&presented)).is_err());
        prop_assert!(bind::check(PopMode::Strict, &Binding::Malformed, Some(&presented)).is_err());
    }

    /// `bearer_token` never panics, never accepts more comma-separated values than its limit
    /// (Envoy's join of a repeated header) nor two Bearer values, and what it returns is one
    /// RFC 6750 b64token taken from the header.
    #[test]
    fn bearer_token_never_accepts_more_values_than_its_limit(
        max_values in 1usize..4,
        scheme in select(vec!["Bearer ", "bearer ", "BEARER\t", " Bearer  ", "Basic ", ""]),
        rest in prop_oneof![
            "\\PC{0,64}",
            "[A-Za-z0-9._~+/=, \t-]{0,64}",
            "[A-Za-z0-9._~+/-]{1,40}(, ?Bearer [A-Za-z0-9._~+/-]{1,40})?",
        ],
    ) {
        let value = format!("{scheme}{rest}");
        let headers = HashMap::from([("authorization".to_string(), value.clone())]);
        if let Ok(token) = extract::bearer_token(&headers, max_values) {
            prop_assert!(value.split(',').count() <= max_values, "accepted {value:?}");
            prop_assert!(
                value
                    .split(',')
                    .filter(|v| v
                        .trim_matches([' ', '\t'])
                        .split([' ', '\t'])
                        .next()
                        .is_some_and(|s| s.eq_ignore_ascii_case("bearer")))
                    .count()
                    == 1,
                "accepted {value:?}"
            );
            prop_assert!(!token.is_empty());
            prop_assert!(value.contains(token));
            prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric()
                || b"-._~+/=".contains(&b)), "{token:?}");
        }
    }
}

const URL_SAFE_CHARS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// One ext_authz service per certificate source: each header format from `HeaderFormat::ALL`,
/// plus Envoy's own peer certificate. All trust the pool's root and the pool's signing key, in
/// strict mode.
struct Services {
    by_source: Vec<(Source, AuthzService)>,
}

#[derive(Debug, Clone, Copy)]
enum Source {
    Header(HeaderFormat),
    Peer,
}

fn services(pool: &Pool) -> Services {
    let dir = tempfile::tempdir().unwrap();
    // The intermediate is configured next to the root, so a leaf sent alone chains too (RFC 9440
    // and XFCC hops may send only the leaf).
    std::fs::write(
        dir.path().join("client-ca.pem"),
        format!("{}{}", pool.root.pem, pool.inter.pem),
    )
    .unwrap();
    std::fs::write(dir.path().join("jwks.json"), jwks(&[&pool.key]).to_string()).unwrap();
    let base = format!(
        "issuer = \"{ISSUER}\"\njwks_file = \"jwks.json\"\naudience = [\"{AUDIENCE}\"]\nproof_of_possession_mtls = \"strict\"\n"
    );
    let header = |f: HeaderFormat| {
        format!(
            "{base}[proof_of_possession_mtls_from_header]\nsecure_source = false\ncertificate_header_name = \"x-client-cert\"\ncertificate_header_format = \"{}\"\nca_certificates = [\"client-ca.pem\"]\n",
            f.as_str()
        )
    };
    let mut sources: Vec<(Source, String)> = HeaderFormat::ALL
        .iter()
        .map(|&f| (Source::Header(f), header(f)))
        .collect();
    sources.push((Source::Peer, base.clone()));
    let by_source = sources
        .into_iter()
        .map(|(source, toml)| {
            let config =
                Config::from_figment(&Figment::new().merge(Toml::string(&toml)), dir.path())
                    .unwrap_or_else(|e| panic!("{source:?}: {e}"));
            let built = config.build(&|_| None).unwrap();
            let policies = Arc::new(arc_swap::ArcSwap::from_pointee(built.engine));
            (
                source,
                AuthzService::new(policies, Arc::new(Metrics::new().unwrap())),
            )
        })
        .collect();
    Services { by_source }
}

fn check_request(token: &str, source: Source, cert_value: &str) -> CheckRequest {
    let mut headers = HashMap::from([
        ("authorization".to_string(), format!("Bearer {token}")),
        (":authority".to_string(), "api.test".to_string()),
    ]);
    let mut peer = attribute_context::Peer::default();
    match source {
        Source::Header(_) => {
            headers.insert("x-client-cert".into(), cert_value.to_string());
        }
        Source::Peer => peer.certificate = cert_value.to_string(),
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer),
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: "GET".into(),
                    path: "/".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// (gRPC status code, its message: the deny reason, empty on allow).
fn decide(rt: &tokio::runtime::Runtime, svc: &AuthzService, req: CheckRequest) -> (i32, String) {
    let resp = rt
        .block_on(svc.check(tonic::Request::new(req)))
        .expect("check never fails at the gRPC level")
        .into_inner();
    let status = resp.status.unwrap_or_default();
    (status.code, status.message)
}

/// A value for `source` that the source's decoder reads back as it was encoded.
fn value_for(source: Source, chain: &[&[u8]], layout: &Layout) -> Option<String> {
    match source {
        Source::Header(f) => encode_for(f, chain, layout).map(|e| e.value),
        // Envoy's `attributes.source.certificate`: URL-encoded PEM.
        Source::Peer => Some(url_encode_pem(&pem_text(chain, layout))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A token bound to certificate A is never allowed with any other certificate: another
    /// trusted, valid client certificate B (in every header format and in peer mode) is denied
    /// `binding_mismatch`; B in any other encoding, and A's own certificate with any byte
    /// changed, in any encoding, are never allowed. The same token with A is allowed, so the
    /// denials are the binding's doing and not a broken setup.
    #[test]
    fn a_token_bound_to_one_certificate_is_never_allowed_with_another(
        a in 0..LEAVES,
        b in 0..LEAVES - 1,
        extra in 0usize..=2,
        layout in layout(),
        flip_at in any::<prop::sample::Index>(),
        flip_bits in 1u8..=255,
    ) {
        let pool = &*POOL;
        let b = if b >= a { b + 1 } else { b };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let token = &pool.tokens[a];
        let mut mutated = pool.leaves[a].der.as_ref().to_vec();
        let at = flip_at.index(mutated.len());
        mutated[at] ^= flip_bits;
        for (source, svc) in &SERVICES.by_source {
            let chain_a = chain_of(pool, a, extra);
            let chain_b = chain_of(pool, b, extra);
            let own = value_for(*source, &chain_a, &layout)
                .ok_or_else(|| TestCaseError::fail(format!("{source:?}: no encoding decodes")))?;
            let (code, reason) = decide(&rt, svc, check_request(token, *source, &own));
            prop_assert_eq!(code, 0, "{:?}: A's token with A's certificate: {}", source, reason);

            let other = value_for(*source, &chain_b, &layout)
                .ok_or_else(|| TestCaseError::fail(format!("{source:?}: no encoding decodes")))?;
            let (code, reason) = decide(&rt, svc, check_request(token, *source, &other));
            prop_assert_ne!(code, 0, "{:?}: A's token allowed with B's certificate", source);
            prop_assert_eq!(reason, "binding_mismatch", "{:?}", source);

            let mut damaged = chain_a.clone();
            damaged[0] = &mutated;
            let others = header_encodings(&chain_b, &layout)
                .into_iter()
                .chain(header_encodings(&damaged, &layout));
            for e in others {
                let (code, reason) = decide(&rt, svc, check_request(token, *source, &e.value));
                prop_assert_ne!(
                    code, 0,
                    "{:?}: allowed with {} of another certificate ({}; A changed at byte {})",
                    source, e.shape, reason, at
                );
            }
        }
    }
}

static SERVICES: LazyLock<Services> = LazyLock::new(|| services(&POOL));

#[test]
fn the_pool_thumbprints_are_distinct() {
    // The binding property is only meaningful if the pool's certificates differ.
    let prints: std::collections::HashSet<Thumbprint> = POOL
        .leaves
        .iter()
        .map(|l| cert::thumbprint(l.der.as_ref()))
        .collect();
    assert_eq!(prints.len(), LEAVES);
}
