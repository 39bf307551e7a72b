//! Writes the fuzz crate's fixtures and seed corpora from real shapes:
//!
//! ```sh
//! cargo run --example fuzz_seeds
//! ```
//!
//! `fuzz/fixtures/`: the client root and intermediate (`client-ca.pem`), the issuer's public
//! keys (`jwks.json`) and the config the Check handler target serves (`certbound.toml`). The
//! private keys are thrown away; nothing written is a secret. The two Envoy 1.40 CheckRequests
//! captured from the end-to-end stack (`envoy-1.40-checkrequest-*.json`) are read, not written.
//!
//! `fuzz/seeds/<target>/`: small real samples per target (replaced wholesale on each run):
//! certificate header values in every known encoding (RFC 9440 with its chain header, XFCC with
//! only a `Hash`), bound JWTs and the classic forgeries, header maps behind the two limit bytes
//! the `extract` target reads, DPoP proofs (valid and broken), and CheckRequests (protobuf) that reach allow and every step's
//! deny, under the default policy, the named `payments` policy and one policy per source.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use certbound_core::cert::HeaderFormat;
use certbound_core::dpop::access_token_hash;
use certbound_core::fixtures::{
    encode_for, header_encodings, jwks, url_encode_pem, Ca, Layout, Leaf, SigningKey,
};
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::{
    attribute_context, AttributeContext, CheckRequest,
};
use prost::Message;
use serde_json::{json, Value};

const ISSUER: &str = "https://idp.fuzz.test";
const AUDIENCE: &str = "https://api.fuzz.test";
/// The request the `dpop_proof` target checks proofs against, at its fixed time.
const DPOP_URI: &str = "https://api.fuzz.test/orders";
const DPOP_TOKEN: &str = "fuzz-access-token";
const DPOP_NOW: u64 = 1_800_000_000;
/// Validity of every certificate and token written: 2020-01-01 to 2096-10-02.
const FROM: u64 = 1_577_836_800;
const UNTIL: u64 = 4_000_000_000;

fn main() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let fixtures = fuzz.join("fixtures");
    let seeds = Seeds::new(&fuzz.join("seeds"));

    let root = Ca::root("certbound fuzz client root").unwrap();
    let inter = root.intermediate("certbound fuzz intermediate").unwrap();
    let alice = inter.client("alice", FROM, UNTIL).unwrap();
    let bob = inter.client("bob", FROM, UNTIL).unwrap();
    let stranger_ca = Ca::root("nobody trusts this").unwrap();
    let untrusted = stranger_ca.client("mallory", FROM, UNTIL).unwrap();
    let es256 = SigningKey::es256("fuzz-es256").unwrap();
    let rs256 = SigningKey::rs256("fuzz-rs256").unwrap();
    let unpublished = SigningKey::es256("not-in-jwks").unwrap();

    std::fs::write(
        fixtures.join("client-ca.pem"),
        format!("{}{}", root.pem, inter.pem),
    )
    .unwrap();
    std::fs::write(
        fixtures.join("jwks.json"),
        serde_json::to_string_pretty(&jwks(&[&es256, &rs256])).unwrap(),
    )
    .unwrap();
    std::fs::write(fixtures.join("certbound.toml"), CONFIG).unwrap();

    let header_sample = read_json(&fixtures.join("envoy-1.40-checkrequest-header.json"));
    let peer_sample = read_json(&fixtures.join("envoy-1.40-checkrequest-peer.json"));
    let sample_headers = |v: &Value| -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = v["attributes"]["request"]["http"]["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        h.sort();
        h
    };
    let envoy_headers = sample_headers(&header_sample);
    let envoy_token = envoy_headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .and_then(|(_, v)| v.strip_prefix("Bearer "))
        .unwrap()
        .to_string();
    let envoy_cert = envoy_headers
        .iter()
        .find(|(k, _)| k == "x-client-cert")
        .unwrap()
        .1
        .clone();

    // cert_decode: every known encoding of a leaf and of a chain, in two layouts.
    let chain: Vec<&[u8]> = vec![alice.der.as_ref(), inter.der.as_ref()];
    let wrapped = Layout {
        wrap: 76,
        strip_padding: true,
        pem_line_end: "\r\n",
        ..Layout::default()
    };
    for (tag, c, layout) in [
        ("chain", &chain[..], &Layout::default()),
        ("leaf", &chain[..1], &Layout::default()),
        ("chain-wrapped", &chain[..], &wrapped),
    ] {
        for e in header_encodings(c, layout) {
            seeds.write("cert_decode", &format!("{}-{tag}", slug(e.shape)), &e.value);
        }
    }
    // A chain header after the first newline: RFC 9440's Client-Cert-Chain (an sf-list).
    seeds.write(
        "cert_decode",
        "rfc-9440-client-cert-and-chain-header",
        &format!(
            ":{}:\n:{}:",
            STANDARD.encode(alice.der.as_ref()),
            STANDARD.encode(inter.der.as_ref())
        ),
    );
    // An Istio sidecar's XFCC: no Cert, the binding rests on Hash alone.
    let hash: String = certbound_core::cert::thumbprint(alice.der.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    seeds.write(
        "cert_decode",
        "envoy-x-forwarded-client-cert-hash-only",
        &format!("By=spiffe://cluster.local/ns/a/sa/api;Hash={hash};Subject=\"\";URI=spiffe://cluster.local/ns/b/sa/client"),
    );
    // Envoy writes URI and DNS SANs unquoted: a client SAN forging a second element that names
    // alice's certificate next to the client's own (`untrusted` stands in for the client).
    let untrusted_hash: String = certbound_core::cert::thumbprint(untrusted.der.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    seeds.write(
        "cert_decode",
        "envoy-x-forwarded-client-cert-forged-by-a-san",
        &format!(
            "Hash={untrusted_hash};Cert=\"{}\";Subject=\"CN=m\";URI=urn:x,Chain={};DNS=m.test",
            untrusted.url_encoded(),
            url_encode_pem(&alice.pem)
        ),
    );
    seeds.write("cert_decode", "envoy-1.40-x-client-cert", &envoy_cert);
    seeds.write("cert_decode", "untrusted-leaf", &untrusted.url_encoded());

    // token_verify: bound tokens, the classic forgeries, and the captured one.
    let claims = |sub: &str, leaf: &Leaf| {
        json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "client_id": sub,
            "iat": FROM, "exp": UNTIL, "jti": format!("{sub}-fuzz"),
            "cnf": { "x5t#S256": leaf.x5t() },
        })
    };
    let alice_claims = claims("alice-app", &alice);
    let alice_token = es256.sign("at+jwt", &alice_claims).unwrap();
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut c = alice_claims.clone();
        f(&mut c);
        es256.sign("at+jwt", &c).unwrap()
    };
    let raw = |header: Value, sig: &[u8]| {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(alice_claims.to_string()),
            URL_SAFE_NO_PAD.encode(sig)
        )
    };
    let hs256 = {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some("fuzz-es256".into());
        h.typ = Some("at+jwt".into());
        let secret = es256.jwk.to_string();
        jsonwebtoken::encode(
            &h,
            &alice_claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let tokens = [
        ("es256-bound", alice_token.clone()),
        ("rs256-bound", rs256.sign("at+jwt", &alice_claims).unwrap()),
        ("typ-jwt", es256.sign("JWT", &alice_claims).unwrap()),
        ("expired", edit(&|c| c["exp"] = json!(FROM))),
        ("not-yet-valid", edit(&|c| c["nbf"] = json!(UNTIL - 1))),
        (
            "wrong-audience",
            edit(&|c| c["aud"] = json!("https://other.test")),
        ),
        (
            "audience-array",
            edit(&|c| c["aud"] = json!(["x", AUDIENCE])),
        ),
        (
            "no-exp",
            edit(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        (
            "unbound",
            edit(&|c| {
                c.as_object_mut().unwrap().remove("cnf");
            }),
        ),
        ("hex-cnf", edit(&|c| c["cnf"] = json!({"x5t#S256": "00ff"}))),
        (
            "unknown-kid",
            unpublished.sign("at+jwt", &alice_claims).unwrap(),
        ),
        ("hs256-with-public-key", hs256),
        (
            "alg-none",
            raw(
                json!({"alg": "none", "typ": "at+jwt", "kid": "fuzz-es256"}),
                b"",
            ),
        ),
        (
            "no-typ",
            raw(json!({"alg": "ES256", "kid": "fuzz-es256"}), &[7; 64]),
        ),
        ("envoy-1.40", envoy_token.clone()),
    ];
    for (name, t) in &tokens {
        seeds.write("token_verify", name, t);
    }

    // dpop_proof: proofs for `GET https://api.fuzz.test/orders` with `fuzz-access-token` at the
    // targets' fixed time, and the ways a proof goes wrong.
    let proof_claims = json!({
        "jti": "fuzz-proof-1", "htm": "GET", "htu": DPOP_URI, "iat": DPOP_NOW,
        "ath": access_token_hash(DPOP_TOKEN),
    });
    let proof_edit = |f: &dyn Fn(&mut Value)| {
        let mut c = proof_claims.clone();
        f(&mut c);
        es256.dpop_proof(&c).unwrap()
    };
    let mut private_jwk = es256.jwk.clone();
    private_jwk["d"] = json!(URL_SAFE_NO_PAD.encode([1u8; 32]));
    let proofs = [
        ("es256", es256.dpop_proof(&proof_claims).unwrap()),
        ("rs256", rs256.dpop_proof(&proof_claims).unwrap()),
        ("with-nonce", proof_edit(&|c| c["nonce"] = json!("n-1"))),
        ("wrong-method", proof_edit(&|c| c["htm"] = json!("POST"))),
        (
            "htu-with-query",
            proof_edit(&|c| c["htu"] = json!("HTTPS://API.fuzz.test:443/orders?x=1")),
        ),
        ("stale", proof_edit(&|c| c["iat"] = json!(DPOP_NOW - 3600))),
        ("wrong-ath", proof_edit(&|c| c["ath"] = json!("AAAA"))),
        (
            "private-jwk",
            raw_jws(
                json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": private_jwk}),
                &proof_claims,
                &[7; 64],
            ),
        ),
        (
            "typ-jwt",
            raw_jws(
                json!({"alg": "ES256", "typ": "JWT", "jwk": es256.jwk}),
                &proof_claims,
                &[7; 64],
            ),
        ),
    ];
    for (name, p) in &proofs {
        seeds.write("dpop_proof", name, p);
    }

    // extract: two limit bytes (Authorization values - 1, header bytes / 16; the defaults),
    // then header maps as `name: value` lines.
    let lines = |h: &[(String, String)]| -> String {
        let mut out = String::from("\u{0}\u{7f}");
        out.extend(h.iter().map(|(k, v)| format!("{k}: {v}\n")));
        out
    };
    seeds.write("extract", "envoy-1.40-header", &lines(&envoy_headers));
    seeds.write(
        "extract",
        "envoy-1.40-peer",
        &lines(&sample_headers(&peer_sample)),
    );
    let alice_header = url_encode_pem(&(alice.pem.clone() + &inter.pem));
    seeds.write(
        "extract",
        "two-authorization-headers",
        &format!("\u{1}\u{7f}authorization: Bearer {alice_token}\nauthorization: Bearer {alice_token}\nx-client-cert: {alice_header}\n"),
    );
    seeds.write(
        "extract",
        "basic-and-empty-cert",
        "\u{0}\u{7f}authorization: Basic dXNlcjpwYXNz\nx-client-cert: \nhost: api.test\n",
    );
    seeds.write(
        "extract",
        "basic-and-bearer-within-a-limit-of-two",
        &format!("\u{1}\u{7f}authorization: Basic dXNlcjpwYXNz\nauthorization: Bearer {alice_token}\nx-client-cert: {alice_header}\n"),
    );

    // check_request: the captured requests, then allow and a stolen token per source.
    let mut requests: Vec<(String, CheckRequest)> = vec![
        (
            "envoy-1.40-header".into(),
            from_envoy_json(&header_sample, None),
        ),
        (
            "envoy-1.40-peer".into(),
            from_envoy_json(&peer_sample, Some("peer")),
        ),
        ("empty".into(), CheckRequest::default()),
    ];
    let bob_chain: Vec<&[u8]> = vec![bob.der.as_ref(), inter.der.as_ref()];
    for format in HeaderFormat::ALL {
        let (Some(own), Some(other)) = (
            encode_for(format, &chain, &Layout::default()),
            encode_for(format, &bob_chain, &Layout::default()),
        ) else {
            panic!(
                "no known encoding decodes as {}: add one to fixtures::header_encodings",
                format.as_str()
            );
        };
        for (what, value) in [("allow", own.value), ("stolen", other.value)] {
            let headers = vec![
                ("authorization".into(), format!("Bearer {alice_token}")),
                ("x-client-cert".into(), value),
            ];
            requests.push((
                format!("{what}-{}", format.as_str()),
                request(headers, "", Some(format.as_str())),
            ));
        }
    }
    let bearer = vec![("authorization".into(), format!("Bearer {alice_token}"))];
    requests.push((
        "allow-peer".into(),
        request(bearer.clone(), &alice.url_encoded(), Some("peer")),
    ));
    requests.push((
        "stolen-peer".into(),
        request(bearer, &bob.url_encoded(), Some("peer")),
    ));
    requests.push((
        "allow-default-policy".into(),
        request(
            vec![
                ("authorization".into(), format!("Bearer {alice_token}")),
                ("x-client-cert".into(), alice_header.clone()),
            ],
            "",
            None,
        ),
    ));
    requests.push((
        "unknown-policy".into(),
        request(
            vec![("authorization".into(), format!("Bearer {alice_token}"))],
            "",
            Some("payments"),
        ),
    ));
    let scoped = es256
        .sign(
            "at+jwt",
            &json!({
                "iss": ISSUER, "aud": AUDIENCE, "sub": "alice-app", "client_id": "alice-app",
                "iat": FROM, "exp": UNTIL, "scope": "payments:read",
                "realm_access": {"roles": ["teller"]},
                "cnf": { "x5t#S256": alice.x5t() },
            }),
        )
        .unwrap();
    let with_cert = |auth: String| {
        vec![
            ("authorization".to_string(), auth),
            ("x-client-cert".to_string(), alice_header.clone()),
        ]
    };
    requests.push((
        "allow-payments".into(),
        request(with_cert(format!("Bearer {scoped}")), "", Some("payments")),
    ));
    requests.push((
        "insufficient-scope-payments".into(),
        request(
            with_cert(format!("Bearer {alice_token}")),
            "",
            Some("payments"),
        ),
    ));
    requests.push((
        "allow-basic-and-bearer-within-the-limit".into(),
        request(
            with_cert(format!("Basic dXNlcjpwYXNz, Bearer {alice_token}")),
            "",
            None,
        ),
    ));
    let mut untrusted_hop = request(with_cert(format!("Bearer {alice_token}")), "", None);
    untrusted_hop.attributes.as_mut().unwrap().source = Some(attribute_context::Peer {
        address: socket(
            &json!({"address": {"socket_address": {"address": "192.0.2.66", "port_value": 40000}}}),
        ),
        ..Default::default()
    });
    requests.push(("untrusted-hop".into(), untrusted_hop));
    for (name, req) in requests {
        seeds.write_bytes("check_request", &name, &req.encode_to_vec());
    }
    println!("wrote {} and {}", fixtures.display(), seeds.root.display());
}

const CONFIG: &str = r#"# Written by `cargo run --example fuzz_seeds`: what the check_request fuzz target serves.
# The target adds one policy per header format (named after it) and one named "peer".
issuer = "https://idp.fuzz.test"
jwks_file = "jwks.json"
audience = ["https://api.fuzz.test"]
proof_of_possession_mtls = "strict"
upstream_headers_claims = ["sub", "client_id"]
upstream_headers_names = ["x-consumer-sub", "x-client-id"]
upstream_thumbprint_header = "x-client-cert-x5t"
# The seeds come from 127.0.0.1; the fuzzer's other addresses exercise secure_source.
trusted_ips = ["127.0.0.1"]

[proof_of_possession_mtls_from_header]
certificate_header_name = "x-client-cert"
certificate_header_format = "url_encoded"
ca_certificates = ["client-ca.pem"]
# Nothing here is fetched: the fixture certificates name no OCSP responder or CRL.
revocation_check_mode = "IGNORE_CA_ERROR"

[limits]
max_authorization_values = 2

# Kong's authorization rules, picked with context_extensions: {policy: payments}.
[policies.payments]
scopes_required = ["payments:read", "admin"]
audience_required = ["https://api.fuzz.test"]
claims_forbidden = ["act"]
hide_credentials = true
upstream_headers_claims = ["realm_access.roles", "scope"]
upstream_headers_names = ["x-roles", "x-scope"]
"#;

struct Seeds {
    root: PathBuf,
    written: std::cell::RefCell<std::collections::HashSet<(String, Vec<u8>)>>,
}

impl Seeds {
    /// Empties the seed folders this generator owns.
    fn new(root: &Path) -> Self {
        for target in [
            "cert_decode",
            "token_verify",
            "extract",
            "check_request",
            "dpop_proof",
        ] {
            let dir = root.join(target);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
        }
        Self {
            root: root.to_path_buf(),
            written: Default::default(),
        }
    }

    fn write(&self, target: &str, name: &str, value: &str) {
        self.write_bytes(target, name, value.as_bytes());
    }

    /// Writes one seed, unless the target already has one with the same content.
    fn write_bytes(&self, target: &str, name: &str, bytes: &[u8]) {
        if !self
            .written
            .borrow_mut()
            .insert((target.to_string(), bytes.to_vec()))
        {
            return;
        }
        std::fs::write(self.root.join(target).join(name), bytes).unwrap();
    }
}

/// A compact JWS with the given header and claims and a signature that proves nothing.
fn raw_jws(header: Value, claims: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.to_ascii_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn socket(v: &Value) -> Option<Address> {
    let sa = &v["address"]["socket_address"];
    Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: sa["address"].as_str()?.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(
                u32::try_from(sa["port_value"].as_u64()?).ok()?,
            )),
            ..Default::default()
        })),
    })
}

/// A CheckRequest from Envoy's JSON (proto field names), as captured by the end-to-end stack.
fn from_envoy_json(v: &Value, policy: Option<&str>) -> CheckRequest {
    let a = &v["attributes"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let peer = |p: &Value| attribute_context::Peer {
        address: socket(p),
        principal: s(&p["principal"]),
        certificate: s(&p["certificate"]),
        ..Default::default()
    };
    let http = &a["request"]["http"];
    let headers: HashMap<String, String> = http["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), s(v)))
        .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(&a["source"])),
            destination: Some(peer(&a["destination"])),
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    id: s(&http["id"]),
                    method: s(&http["method"]),
                    headers,
                    path: s(&http["path"]),
                    host: s(&http["host"]),
                    scheme: s(&http["scheme"]),
                    protocol: s(&http["protocol"]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: policy
                .map(|p| HashMap::from([("policy".to_string(), p.to_string())]))
                .unwrap_or_default(),
            ..Default::default()
        }),
    }
}

/// A CheckRequest as Envoy sends one for `GET /accounts` from 127.0.0.1.
fn request(
    mut headers: Vec<(String, String)>,
    peer_certificate: &str,
    policy: Option<&str>,
) -> CheckRequest {
    headers.push((":authority".into(), "api.fuzz.test".into()));
    headers.push((":method".into(), "GET".into()));
    headers.push((":path".into(), "/accounts".into()));
    let v = json!({
        "attributes": {
            "source": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 40000}},
                "certificate": peer_certificate,
            },
            "request": {"http": {
                "method": "GET", "path": "/accounts", "host": "api.fuzz.test",
                "scheme": "https", "protocol": "HTTP/1.1",
                "headers": headers.into_iter().collect::<HashMap<_, _>>(),
            }},
        }
    });
    from_envoy_json(&v, policy)
}
