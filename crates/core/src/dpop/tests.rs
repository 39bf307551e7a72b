use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Map, Value};

use super::*;

const NOW: u64 = 1_800_000_000;
const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln";
const URI: &str = "https://api.test/orders";

/// A client's DPoP key.
struct Client {
    key: rcgen::KeyPair,
    alg: Algorithm,
}

impl Client {
    fn es256() -> Self {
        Self {
            key: rcgen::KeyPair::generate().unwrap(),
            alg: Algorithm::ES256,
        }
    }

    fn es384() -> Self {
        Self {
            key: rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
            alg: Algorithm::ES384,
        }
    }

    fn ed25519() -> Self {
        Self {
            key: rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
            alg: Algorithm::EdDSA,
        }
    }

    fn jwk(&self) -> Value {
        let raw = self.key.public_key_raw();
        match self.alg {
            Algorithm::EdDSA => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(raw)})
            }
            _ => {
                let (crv, n) = if self.alg == Algorithm::ES384 {
                    ("P-384", 48)
                } else {
                    ("P-256", 32)
                };
                json!({"kty": "EC", "crv": crv,
                       "x": URL_SAFE_NO_PAD.encode(&raw[1..1 + n]),
                       "y": URL_SAFE_NO_PAD.encode(&raw[1 + n..1 + 2 * n])})
            }
        }
    }

    fn jkt(&self) -> String {
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(self.jwk()).unwrap();
        jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .unwrap()
    }

    /// Signs any header and claims, for shapes a well-behaved client never makes.
    fn sign_raw(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let pem = self.key.serialize_pem();
        let key = match self.alg {
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        };
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, self.alg).unwrap();
        format!("{input}.{sig}")
    }

    fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": format!("{:?}", self.alg), "jwk": self.jwk()})
    }

    fn proof_with(&self, claims: Value) -> String {
        self.sign_raw(&self.header(), &claims)
    }

    fn proof(&self) -> String {
        self.proof_with(good_claims())
    }
}

fn good_claims() -> Value {
    json!({"jti": "e1j3V_bKic8-LAEB", "htm": "GET", "htu": URI, "iat": NOW,
           "ath": access_token_hash(TOKEN)})
}

fn with(mut claims: Value, k: &str, v: Value) -> Value {
    claims[k] = v;
    claims
}

fn parse_ok(proof: &str) -> Result<Proof, DpopError> {
    parse(proof, DEFAULT_ALGS, 16)
}

fn expected(jkt: Option<&str>) -> Expected<'_> {
    Expected {
        method: "GET",
        uri: URI,
        token: TOKEN,
        jkt,
        lifetime: 300,
        leeway: 5,
        now: NOW,
    }
}

fn check_proof(client: &Client, proof: &str) -> Result<(), DpopError> {
    let jkt = client.jkt();
    verify(&parse_ok(proof)?, &expected(Some(&jkt)))
}

#[test]
fn a_well_formed_proof_verifies_for_es256_es384_and_eddsa() {
    for c in [Client::es256(), Client::es384(), Client::ed25519()] {
        let p = parse_ok(&c.proof()).unwrap();
        assert_eq!(p.alg, c.alg);
        assert_eq!(p.jkt, c.jkt());
        assert_eq!(check_proof(&c, &c.proof()), Ok(()), "{:?}", c.alg);
    }
}

#[test]
fn thumbprint_matches_rfc_7638_example() {
    // RFC 7638 §3.1.
    let jwk = json!({"kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"});
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk).unwrap();
    assert_eq!(
        jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .unwrap(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

#[test]
fn ath_is_base64url_sha256_of_the_token() {
    // RFC 9449 §7.1's example token and its ath.
    assert_eq!(
        access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    );
}

#[test]
fn a_proof_with_a_critical_header_extension_is_refused() {
    // RFC 7515 §4.1.11, as for access tokens: certbound understands no extension.
    let c = Client::es256();
    for crit in [json!(["exp"]), json!(["urn:example:x"]), json!([])] {
        let mut h = c.header();
        h["crit"] = crit.clone();
        assert_eq!(
            parse_ok(&c.sign_raw(&h, &good_claims())),
            Err(DpopError::Malformed),
            "crit = {crit}"
        );
    }
}

#[test]
fn wrong_typ_is_refused() {
    let c = Client::es256();
    for typ in [json!("JWT"), json!("at+jwt"), Value::Null] {
        let mut h = c.header();
        h["typ"] = typ;
        assert_eq!(
            parse_ok(&c.sign_raw(&h, &good_claims())),
            Err(DpopError::WrongType)
        );
    }
}

#[test]
fn algorithms_outside_the_allow_list_are_refused() {
    let c = Client::es256();
    assert_eq!(
        parse(&c.proof(), &[Algorithm::RS256], 16),
        Err(DpopError::AlgorithmNotAllowed)
    );
    for alg in ["none", "HS256", "XYZ"] {
        let mut h = c.header();
        h["alg"] = json!(alg);
        assert_eq!(
            parse_ok(&c.sign_raw(&h, &good_claims())),
            Err(DpopError::AlgorithmNotAllowed),
            "{alg}"
        );
    }
}

#[test]
fn a_private_missing_or_unfit_jwk_is_refused() {
    let c = Client::es256();
    let mut private = c.header();
    private["jwk"]["d"] = json!("c2VjcmV0");
    let mut missing = c.header();
    missing.as_object_mut().unwrap().remove("jwk");
    let mut symmetric = c.header();
    symmetric["jwk"] = json!({"kty": "oct", "k": "c2VjcmV0"});
    // An ES384 header with a P-256 key.
    let mut curve = c.header();
    curve["alg"] = json!("ES384");
    for h in [private, missing, symmetric, curve] {
        assert_eq!(
            parse_ok(&c.sign_raw(&h, &good_claims())),
            Err(DpopError::BadKey),
            "{h}"
        );
    }
}

#[test]
fn a_proof_signed_by_another_key_is_refused() {
    let (c, other) = (Client::es256(), Client::es256());
    // c's public key in the header, other's signature.
    let forged = other.sign_raw(&c.header(), &good_claims());
    assert_eq!(parse_ok(&forged), Err(DpopError::SignatureInvalid));
    // A valid proof by `other` does not match a token bound to c's key.
    let p = parse_ok(&other.proof()).unwrap();
    assert_eq!(
        verify(&p, &expected(Some(&c.jkt()))),
        Err(DpopError::KeyMismatch)
    );
}

#[test]
fn tampered_claims_break_the_signature() {
    let c = Client::es256();
    let proof = c.proof();
    let mut parts: Vec<&str> = proof.split('.').collect();
    let claims = URL_SAFE_NO_PAD.encode(with(good_claims(), "htm", json!("POST")).to_string());
    parts[1] = &claims;
    assert_eq!(parse_ok(&parts.join(".")), Err(DpopError::SignatureInvalid));
}

#[test]
fn missing_or_mistyped_claims_are_malformed() {
    let c = Client::es256();
    for name in ["jti", "htm", "htu", "iat"] {
        let mut claims = good_claims();
        claims.as_object_mut().unwrap().remove(name);
        assert_eq!(
            parse_ok(&c.proof_with(claims)),
            Err(DpopError::Malformed),
            "{name}"
        );
    }
    for (name, v) in [
        ("jti", json!(5)),
        ("htm", json!(["GET"])),
        ("iat", json!("now")),
        ("ath", json!(1)),
        ("nonce", json!({})),
        ("jti", json!("x".repeat(MAX_JTI_BYTES + 1))),
    ] {
        assert_eq!(
            parse_ok(&c.proof_with(with(good_claims(), name, v))),
            Err(DpopError::Malformed),
            "{name}"
        );
    }
}

#[test]
fn malformed_serializations_are_refused_without_panicking() {
    for p in [
        "",
        ".",
        "a.b",
        "a.b.c.d",
        "e30.e30.",
        "e30.e30.c2ln",
        "!!!.e30.c2ln",
        "W10.e30.c2ln",
    ] {
        assert!(parse_ok(p).is_err(), "{p}");
    }
}

#[test]
fn oversized_and_deeply_nested_proofs_are_refused() {
    let c = Client::es256();
    let big = "a".repeat(MAX_PROOF_BYTES + 1);
    assert_eq!(parse_ok(&big), Err(DpopError::TooLarge));
    let mut deep = json!(1);
    for _ in 0..20 {
        deep = json!([deep]);
    }
    assert_eq!(
        parse_ok(&c.proof_with(with(good_claims(), "x", deep))),
        Err(DpopError::TooLarge)
    );
}

#[test]
fn htm_must_equal_the_method() {
    let c = Client::es256();
    for m in ["POST", "get"] {
        assert_eq!(
            check_proof(&c, &c.proof_with(with(good_claims(), "htm", json!(m)))),
            Err(DpopError::MethodMismatch),
            "{m}"
        );
    }
}

#[test]
fn htu_must_equal_the_uri_up_to_normalization() {
    let c = Client::es256();
    for same in ["https://API.test/orders", "https://api.test:443/orders"] {
        assert_eq!(
            check_proof(&c, &c.proof_with(with(good_claims(), "htu", json!(same)))),
            Ok(()),
            "{same}"
        );
    }
    for other in [
        "http://api.test/orders",
        "https://api.test/orders/",
        "https://api.test/other",
        "https://evil.test/orders",
        "https://api.test:8443/orders",
        "https://user@api.test/orders",
        "/orders",
    ] {
        assert_eq!(
            check_proof(&c, &c.proof_with(with(good_claims(), "htu", json!(other)))),
            Err(DpopError::UriMismatch),
            "{other}"
        );
    }
}

#[test]
fn htu_with_a_query_or_fragment_is_malformed() {
    let c = Client::es256();
    for htu in [
        "https://api.test/orders?x=1",
        "https://api.test/orders?",
        "https://api.test/orders#frag",
    ] {
        assert_eq!(
            parse_ok(&c.proof_with(with(good_claims(), "htu", json!(htu)))),
            Err(DpopError::Malformed),
            "{htu}"
        );
    }
}

#[test]
fn iat_must_lie_within_lifetime_and_leeway() {
    let c = Client::es256();
    // lifetime 300, leeway 5.
    for ok in [NOW, NOW - 305, NOW + 5] {
        assert_eq!(
            check_proof(&c, &c.proof_with(with(good_claims(), "iat", json!(ok)))),
            Ok(()),
            "{ok}"
        );
    }
    for stale in [NOW - 306, NOW + 6, 0] {
        assert_eq!(
            check_proof(&c, &c.proof_with(with(good_claims(), "iat", json!(stale)))),
            Err(DpopError::Stale),
            "{stale}"
        );
    }
}

#[test]
fn ath_must_hash_the_presented_token() {
    let c = Client::es256();
    let mut no_ath = good_claims();
    no_ath.as_object_mut().unwrap().remove("ath");
    for claims in [
        no_ath,
        with(good_claims(), "ath", json!(access_token_hash("another"))),
    ] {
        assert_eq!(
            check_proof(&c, &c.proof_with(claims)),
            Err(DpopError::TokenHashMismatch)
        );
    }
}

// --- the pipeline step ---------------------------------------------------------------------

/// A policy's DPoP rules with the replay store its checks record proofs in.
struct Setup {
    rules: DpopPolicy,
    replay: ReplayStore,
}

impl std::ops::Deref for Setup {
    type Target = DpopPolicy;
    fn deref(&self) -> &DpopPolicy {
        &self.rules
    }
}

impl std::ops::DerefMut for Setup {
    fn deref_mut(&mut self) -> &mut DpopPolicy {
        &mut self.rules
    }
}

fn policy(mode: DpopMode) -> Setup {
    Setup {
        rules: DpopPolicy {
            mode,
            lifetime: 300,
            algs: DEFAULT_ALGS.to_vec(),
            nonce: None,
            base_url: None,
        },
        replay: ReplayStore::memory(1000),
    }
}

/// A shared replay store that cannot be reached.
struct Unreachable;

impl ReplayBackend for Unreachable {
    fn first_use<'a>(&'a self, _: &'a [u8; 32], _: u64) -> FirstUseFuture<'a> {
        Box::pin(async { Err(ReplayError::Unavailable("connection refused".into())) })
    }
}

fn headers(proof: Option<&str>) -> HashMap<String, String> {
    let mut h: HashMap<String, String> = [
        (":method", "GET"),
        (":path", "/orders?page=2"),
        (":authority", "api.test"),
        (":scheme", "http"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(p) = proof {
        h.insert("dpop".into(), p.into());
    }
    h
}

fn claims(jkt: Option<&str>) -> Map<String, Value> {
    let mut c = json!({"sub": "alice"});
    if let Some(j) = jkt {
        c["cnf"] = json!({ "jkt": j });
    }
    c.as_object().unwrap().clone()
}

async fn run(
    p: &Setup,
    scheme: Scheme,
    h: &HashMap<String, String>,
    c: &Map<String, Value>,
) -> Result<AllowReason, DenyReason> {
    check(
        &p.rules,
        &Request {
            headers: h,
            scheme,
            token: TOKEN,
            jkt: &token_jkt(c),
            mtls: AllowReason::UnboundOptional,
            max_json_depth: 16,
            leeway: 5,
            now: NOW,
            replay: &p.replay,
        },
    )
    .await
}

#[tokio::test]
async fn a_valid_proof_for_a_bound_token_passes_once() {
    let client = Client::es256();
    let (p, h, c) = (
        policy(DpopMode::Strict),
        headers(Some(&client.proof())),
        claims(Some(&client.jkt())),
    );
    assert_eq!(
        run(&p, Scheme::Dpop, &h, &c).await,
        Ok(AllowReason::DpopBound)
    );
    assert_eq!(
        run(&p, Scheme::Dpop, &h, &c).await,
        Err(DenyReason::DpopReplayed)
    );
}

#[tokio::test]
async fn a_dpop_bound_token_sent_as_bearer_is_refused_in_every_mode() {
    let client = Client::es256();
    let c = claims(Some(&client.jkt()));
    let h = headers(Some(&client.proof()));
    for mode in [DpopMode::Off, DpopMode::Optional, DpopMode::Strict] {
        assert_eq!(
            run(&policy(mode), Scheme::Bearer, &h, &c).await,
            Err(DenyReason::DpopBearerDowngrade),
            "{mode:?}"
        );
    }
}

#[tokio::test]
async fn with_dpop_off_a_jkt_token_passes_only_when_its_certificate_was_proven() {
    let p = policy(DpopMode::Off);
    let client = Client::es256();
    let c = claims(Some(&client.jkt()));
    let h = headers(None);
    let j = token_jkt(&c);
    let req = |mtls| Request {
        headers: &h,
        scheme: Scheme::Bearer,
        token: TOKEN,
        jkt: &j,
        mtls,
        max_json_depth: 16,
        leeway: 5,
        now: NOW,
        replay: &p.replay,
    };
    assert_eq!(
        check(&p.rules, &req(AllowReason::Bound)).await,
        Ok(AllowReason::Bound)
    );
    for mtls in [AllowReason::UnboundOptional, AllowReason::PopOff] {
        assert_eq!(
            check(&p.rules, &req(mtls)).await,
            Err(DenyReason::DpopBearerDowngrade)
        );
    }
}

#[tokio::test]
async fn optional_passes_unbound_bearer_tokens_and_strict_does_not() {
    let h = headers(None);
    let c = claims(None);
    assert_eq!(
        run(&policy(DpopMode::Optional), Scheme::Bearer, &h, &c).await,
        Ok(AllowReason::UnboundOptional)
    );
    assert_eq!(
        run(&policy(DpopMode::Strict), Scheme::Bearer, &h, &c).await,
        Err(DenyReason::DpopProofMissing)
    );
}

#[tokio::test]
async fn strict_refuses_a_token_without_cnf_jkt_even_with_a_proof() {
    let client = Client::es256();
    assert_eq!(
        run(
            &policy(DpopMode::Strict),
            Scheme::Dpop,
            &headers(Some(&client.proof())),
            &claims(None)
        )
        .await,
        Err(DenyReason::DpopTokenNotBound)
    );
}

#[tokio::test]
async fn the_dpop_scheme_needs_exactly_one_proof() {
    let client = Client::es256();
    let c = claims(Some(&client.jkt()));
    let p = policy(DpopMode::Optional);
    assert_eq!(
        run(&p, Scheme::Dpop, &headers(None), &c).await,
        Err(DenyReason::DpopProofMissing)
    );
    let two = format!("{}, {}", client.proof(), client.proof());
    assert_eq!(
        run(&p, Scheme::Dpop, &headers(Some(&two)), &c).await,
        Err(DenyReason::DpopProofInvalid)
    );
}

#[tokio::test]
async fn proof_failures_map_to_their_own_deny_reasons() {
    let client = Client::es256();
    let c = claims(Some(&client.jkt()));
    let p = policy(DpopMode::Strict);
    let cases = [
        (
            with(good_claims(), "htm", json!("POST")),
            DenyReason::DpopMethodMismatch,
        ),
        (
            with(good_claims(), "htu", json!("https://api.test/other")),
            DenyReason::DpopUriMismatch,
        ),
        (
            with(good_claims(), "iat", json!(NOW - 1000)),
            DenyReason::DpopStale,
        ),
        (
            with(good_claims(), "ath", json!("x")),
            DenyReason::DpopTokenHashMismatch,
        ),
    ];
    for (claims, reason) in cases {
        assert_eq!(
            run(
                &p,
                Scheme::Dpop,
                &headers(Some(&client.proof_with(claims))),
                &c
            )
            .await,
            Err(reason)
        );
    }
    let other = Client::es256();
    assert_eq!(
        run(&p, Scheme::Dpop, &headers(Some(&other.proof())), &c).await,
        Err(DenyReason::DpopKeyMismatch)
    );
}

#[tokio::test]
async fn htu_is_checked_against_the_configured_base_url() {
    let client = Client::es256();
    let c = claims(Some(&client.jkt()));
    let mut p = policy(DpopMode::Strict);
    p.base_url = Some("https://public.example/api".into());
    let claims_for =
        |jti: &str, htu: &str| with(with(good_claims(), "htu", json!(htu)), "jti", json!(jti));
    let proof = client.proof_with(claims_for("a", "https://public.example/api/orders"));
    assert_eq!(
        run(&p, Scheme::Dpop, &headers(Some(&proof)), &c).await,
        Ok(AllowReason::DpopBound)
    );
    // The URL Envoy saw is not the one the client addressed.
    let proof = client.proof_with(claims_for("b", URI));
    assert_eq!(
        run(&p, Scheme::Dpop, &headers(Some(&proof)), &c).await,
        Err(DenyReason::DpopUriMismatch)
    );
}

#[tokio::test]
async fn nonces_are_required_when_configured_and_checked_statelessly() {
    let client = Client::es256();
    let c = claims(Some(&client.jkt()));
    let mut p = policy(DpopMode::Strict);
    let issuer = Arc::new(NonceIssuer::new(&[9u8; 32]));
    p.nonce = Some(issuer.clone());
    let proof = client.proof();
    assert_eq!(
        run(&p, Scheme::Dpop, &headers(Some(&proof)), &c).await,
        Err(DenyReason::DpopNonceRequired)
    );
    let wrong = client.proof_with(with(good_claims(), "nonce", json!("stale")));
    assert_eq!(
        run(&p, Scheme::Dpop, &headers(Some(&wrong)), &c).await,
        Err(DenyReason::DpopNonceRequired)
    );
    let good = client.proof_with(with(good_claims(), "nonce", json!(issuer.issue(NOW))));
    assert_eq!(
        run(&p, Scheme::Dpop, &headers(Some(&good)), &c).await,
        Ok(AllowReason::DpopBound)
    );
}

#[tokio::test]
async fn an_unreachable_replay_store_denies() {
    let client = Client::es256();
    let mut p = policy(DpopMode::Strict);
    p.replay = ReplayStore::Shared(Arc::new(Unreachable));
    assert_eq!(
        run(
            &p,
            Scheme::Dpop,
            &headers(Some(&client.proof())),
            &claims(Some(&client.jkt()))
        )
        .await,
        Err(DenyReason::DpopReplayStoreUnavailable)
    );
}

#[tokio::test]
async fn a_non_string_cnf_jkt_is_a_malformed_binding() {
    let mut c = claims(None);
    c.insert("cnf".into(), json!({"jkt": 5}));
    assert_eq!(
        run(
            &policy(DpopMode::Optional),
            Scheme::Bearer,
            &headers(None),
            &c
        )
        .await,
        Err(DenyReason::BindingMalformed)
    );
}

#[test]
fn challenges_carry_algs_and_the_right_error() {
    let c = Challenge {
        mode: DpopMode::Strict,
        algs: "ES256 RS256".into(),
        nonce: None,
    };
    assert_eq!(
        challenge(&c, DenyReason::DpopStale),
        "DPoP algs=\"ES256 RS256\", error=\"invalid_dpop_proof\", error_description=\"DPoP proof iat outside its lifetime\""
    );
    assert_eq!(
        challenge(&c, DenyReason::DpopNonceRequired),
        "DPoP algs=\"ES256 RS256\", error=\"use_dpop_nonce\", error_description=\"DPoP nonce required\""
    );
    assert!(challenge(&c, DenyReason::TokenExpired).contains("error=\"invalid_token\""));
    assert_eq!(
        challenge(&c, DenyReason::MissingToken),
        "DPoP algs=\"ES256 RS256\""
    );
    let optional = Challenge {
        mode: DpopMode::Optional,
        ..c
    };
    // In optional mode the Bearer challenge carries non-DPoP errors.
    assert_eq!(
        challenge(&optional, DenyReason::TokenExpired),
        "DPoP algs=\"ES256 RS256\""
    );
}

#[test]
fn fixture_proofs_verify_for_rsa_pss_and_ec_keys() {
    use crate::fixtures::SigningKey;
    for key in [
        SigningKey::rs256("r").unwrap(),
        SigningKey::rsa("p", Algorithm::PS256).unwrap(),
        SigningKey::es256("e").unwrap(),
    ] {
        let proof = key.dpop_proof(&good_claims()).unwrap();
        let p = parse_ok(&proof).unwrap();
        assert_eq!(p.alg, key.alg);
        assert_eq!(verify(&p, &expected(Some(&p.jkt))), Ok(()), "{:?}", key.alg);
        // An RSA key is never accepted for an EC algorithm, nor the reverse.
        let mut claims_only = proof.split('.');
        let (h, c) = (claims_only.next().unwrap(), claims_only.next().unwrap());
        let mut header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
        header["alg"] = json!(if key.alg == Algorithm::ES256 {
            "RS256"
        } else {
            "ES256"
        });
        let swapped = format!(
            "{}.{c}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            proof.rsplit('.').next().unwrap()
        );
        assert_eq!(parse_ok(&swapped), Err(DpopError::BadKey), "{:?}", key.alg);
    }
}

#[test]
fn every_mode_parses_from_its_name_and_an_unknown_one_lists_them() {
    for (m, name) in DpopMode::ALL.into_iter().zip(DpopMode::NAMES) {
        assert_eq!(name.parse(), Ok(m));
        assert_eq!(m.as_str(), name);
    }
    let e = "on".parse::<DpopMode>().unwrap_err();
    assert_eq!(e.to_string(), "`on` is not one of off, optional, strict");
}
