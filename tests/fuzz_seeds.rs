//! The committed fuzz seeds (`fuzz/seeds/`, written by `cargo run --example fuzz_seeds`) are
//! what they claim to be: the allow requests are allowed by the real Check handler over the
//! fuzz fixtures, the stolen ones are denied for the binding, the bound tokens verify and the
//! certificate values chain. Seeds that silently stop reaching the deep paths would leave the
//! fuzzer knocking at the front door.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use certbound::config::Config;
use certbound::grpc::AuthzService;
use certbound::metrics::Metrics;
use certbound_core::cert::{self, HeaderFormat, TrustStore, CHAIN_LEN_CEILING};
use certbound_core::fixtures::per_cert_source;
use certbound_core::token::{self, KeySet};
use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest};
use figment::providers::{Format, Toml};
use figment::Figment;
use prost::Message;

/// The fuzz targets' fixed time (`certbound_fuzz::NOW`).
const NOW: u64 = 1_800_000_000;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(fuzz_dir().join("seeds").join(target))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds for {target}");
    out
}

fn config() -> Config {
    let dir = fuzz_dir().join("fixtures");
    Config::from_figment(&Figment::from(Toml::file(dir.join("certbound.toml"))), &dir).unwrap()
}

#[test]
fn dpop_seeds_include_a_proof_that_verifies_and_broken_ones_that_do_not() {
    use certbound_core::dpop::{self, Expected};
    let want = Expected {
        method: "GET",
        uri: "https://api.fuzz.test/orders",
        token: "fuzz-access-token",
        jkt: None,
        lifetime: 300,
        leeway: 60,
        now: NOW,
    };
    let mut verified = Vec::new();
    let mut refused = 0;
    for (name, bytes) in seeds("dpop_proof") {
        let proof = String::from_utf8(bytes).unwrap();
        match dpop::parse(&proof, dpop::DEFAULT_ALGS, 16) {
            Ok(p) if dpop::verify(&p, &want).is_ok() => verified.push(name),
            _ => refused += 1,
        }
    }
    verified.sort();
    // "htu-with-query" is refused: RFC 9449 §4.2 leaves query and fragment out of `htu`.
    assert_eq!(verified, ["es256", "rs256", "with-nonce"]);
    assert!(refused >= 5, "only {refused} broken proofs");
}

#[tokio::test]
async fn check_request_seeds_reach_allow_and_the_binding_deny() {
    // As the check_request target builds it: a policy per header format, and "peer".
    let mut config = config();
    config.policies = per_cert_source(config.policies);
    let engine = config.build(&|_| None).unwrap().engine;
    let svc = AuthzService::new(
        Arc::new(arc_swap::ArcSwap::from_pointee(engine)),
        Arc::new(Metrics::new().unwrap()),
    );

    let mut allowed = 0;
    for (name, bytes) in seeds("check_request") {
        let req = CheckRequest::decode(bytes.as_slice()).unwrap();
        let status = svc
            .check(tonic::Request::new(req))
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        if name.starts_with("allow") {
            assert_eq!(status.code, 0, "{name}: {}", status.message);
            allowed += 1;
        } else if name.starts_with("stolen-") {
            assert_eq!(status.message, "binding_mismatch", "{name}");
        } else if name == "untrusted-hop" {
            // secure_source: the header from an address outside trusted_ips counts as absent.
            assert_eq!(status.message, "cert_missing", "{name}");
        } else if name == "insufficient-scope-payments" {
            assert_eq!(status.message, "insufficient_scope", "{name}");
        } else {
            assert_ne!(status.code, 0, "{name}");
        }
    }
    // One per header format, the peer certificate, the default policy, the payments policy and
    // Basic plus Bearer within max_authorization_values = 2.
    assert_eq!(allowed, HeaderFormat::ALL.len() + 4);
}

#[test]
fn token_seeds_include_tokens_that_verify_and_forgeries_that_do_not() {
    let keys =
        KeySet::from_jwks_json(&std::fs::read(fuzz_dir().join("fixtures/jwks.json")).unwrap())
            .unwrap();
    let config = config();
    let rules = config.policies.default.token_rules();
    for (name, bytes) in seeds("token_verify") {
        let result = token::verify(std::str::from_utf8(&bytes).unwrap(), &keys, &rules, NOW);
        let should_verify = matches!(
            name.as_str(),
            "es256-bound" | "rs256-bound" | "typ-jwt" | "audience-array" | "unbound" | "hex-cnf"
        );
        assert_eq!(result.is_ok(), should_verify, "{name}: {result:?}");
    }
}

#[test]
fn certificate_seeds_decode_and_chain_to_the_fixture_ca() {
    let trust =
        TrustStore::from_pem_files(&[fuzz_dir().join("fixtures/client-ca.pem")], false).unwrap();
    let verify = |value: &str, chain: Option<&str>, f: HeaderFormat| {
        let presented = cert::decode(value, f)?;
        let intermediates = match chain {
            Some(c) => cert::decode_chain(c, f)?,
            None => Vec::new(),
        };
        cert::verify(
            &presented,
            &intermediates,
            Some(&trust),
            CHAIN_LEN_CEILING,
            NOW,
        )
    };
    for (name, bytes) in seeds("cert_decode") {
        let text = std::str::from_utf8(&bytes).unwrap();
        // As the cert_decode target splits it: a chain header after the first newline.
        let (value, chain) = match text.split_once('\n') {
            Some((v, c)) if name.contains("chain-header") => (v, Some(c)),
            _ => (text, None),
        };
        let verified = HeaderFormat::ALL
            .iter()
            .any(|&f| verify(value, chain, f).is_ok());
        let decodes = HeaderFormat::ALL
            .iter()
            .any(|&f| cert::decode(value, f).is_ok());
        match name.as_str() {
            // Captured from the end-to-end stack's own PKI, a CA nobody trusts, and XFCC's Hash
            // alone (nothing to verify a chain with).
            "envoy-1.40-x-client-cert"
            | "untrusted-leaf"
            | "envoy-x-forwarded-client-cert-hash-only" => {
                assert!(decodes && !verified, "{name}")
            }
            // A SAN that forges an XFCC element naming alice's certificate: no format reads it.
            "envoy-x-forwarded-client-cert-forged-by-a-san" => {
                assert!(!decodes, "{name}")
            }
            _ => assert!(verified, "{name} does not verify in any format"),
        }
    }
    // The chain header is decoded and joins the path (the seed that reaches decode_chain).
    let (leaf, chain) = std::str::from_utf8(
        &seeds("cert_decode")
            .into_iter()
            .find(|(n, _)| n == "rfc-9440-client-cert-and-chain-header")
            .unwrap()
            .1,
    )
    .unwrap()
    .split_once('\n')
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .unwrap();
    assert_eq!(
        cert::decode_chain(&chain, HeaderFormat::Rfc9440)
            .unwrap()
            .len(),
        1
    );
    assert!(verify(&leaf, Some(&chain), HeaderFormat::Rfc9440).is_ok());
}
