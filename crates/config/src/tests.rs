use super::*;
use certbound_core::cert::{HeaderFormat, XfccElements};
use certbound_core::defaults;
use certbound_core::dpop::DpopMode;
use certbound_core::policy::{CertSource, ClaimHeader, HeaderSource, KeySource, Limits, PopMode};
use certbound_core::revocation;
use figment::providers::Serialized;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn dir_with_ca() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ca = certbound_core::fixtures::Ca::root("test client CA").unwrap();
    std::fs::write(dir.path().join("client-ca.pem"), &ca.pem).unwrap();
    let key = certbound_core::fixtures::SigningKey::es256("k1").unwrap();
    std::fs::write(
        dir.path().join("jwks.json"),
        certbound_core::fixtures::jwks(&[&key]).to_string(),
    )
    .unwrap();
    dir
}

const GOOD: &str = r#"
    grpc_listen = "127.0.0.1:0"
    admin_listen = "127.0.0.1:1"
    issuer = "https://idp.example"
    jwks_file = "jwks.json"
    audience = ["https://api.example"]
    auth_methods = ["bearer"]
    leeway = 60
    proof_of_possession_mtls = "strict"
    upstream_headers_claims = ["sub"]
    upstream_headers_names = ["X-Consumer-Sub"]
    trusted_ips = ["10.0.0.0/8", "192.0.2.7"]
    [proof_of_possession_mtls_from_header]
    certificate_header_name = "X-Client-Cert"
    certificate_header_format = "url_encoded"
    ca_certificates = ["client-ca.pem"]
    allow_partial_chain = false
    ssl_verify = true
"#;

fn load(toml: &str, dir: &Path) -> Result<Config, ConfigError> {
    Config::from_figment(&Figment::new().merge(Toml::string(toml)), dir)
}

fn built(c: &Config) -> Built {
    c.build(&|_| None).unwrap()
}

fn issues(toml: &str, dir: &Path) -> Vec<Issue> {
    match load(toml, dir) {
        Err(ConfigError::Invalid(i)) => i,
        Err(e) => panic!("expected validation issues, got {e}"),
        Ok(_) => panic!("expected validation issues, config was accepted"),
    }
}

#[test]
fn dynamic_metadata_defaults_to_every_field_but_the_ids_and_names_only_known_ones() {
    use certbound_core::answer::{LogField, LogFields};
    let dir = dir_with_ca();
    let c = load(GOOD, dir.path()).unwrap();
    let default = LogFields::ALL
        .without(LogField::RequestId)
        .without(LogField::TraceId);
    assert_eq!(c.dynamic_metadata, default);
    assert_eq!(built(&c).engine.log_fields, default);
    let toml = format!("dynamic_metadata = [\"request_id\", \"trace_id\"]\n{GOOD}");
    let c = load(&toml, dir.path()).unwrap();
    assert_eq!(
        c.dynamic_metadata,
        LogFields::of([LogField::RequestId, LogField::TraceId])
    );
    let toml = format!("dynamic_metadata = [\"reason\", \"sub\"]\n{GOOD}");
    let c = load(&toml, dir.path()).unwrap();
    assert_eq!(
        c.dynamic_metadata,
        LogFields::of([LogField::Reason, LogField::Sub])
    );
    let toml = format!("dynamic_metadata = []\n{GOOD}");
    let c = load(&toml, dir.path()).unwrap();
    assert_eq!(built(&c).engine.log_fields, LogFields::NONE);
    let toml = format!("dynamic_metadata = [\"reason\", \"token\"]\n{GOOD}");
    let i = issues(&toml, dir.path());
    assert_eq!(i.len(), 1, "{i:?}");
    assert_eq!(i[0].key, "dynamic_metadata");
    assert!(
        i[0].message.contains("`token` is not one of"),
        "{}",
        i[0].message
    );
    assert!(i[0].message.contains("client_id"), "{}", i[0].message);
}

#[test]
fn cache_keys_size_the_caches_and_every_policy_gets_its_own() {
    let dir = dir_with_ca();
    let e = built(&load(GOOD, dir.path()).unwrap()).engine;
    assert!(e.default.services.caches.caches_tokens());
    assert!(e.default.services.caches.caches_certificates());
    let toml =
        format!("{GOOD}\n[policies.other]\ncache_tokens = false\ncertificate_cache_size = 0\n");
    let e = built(&load(&toml, dir.path()).unwrap()).engine;
    let other = &e.named["other"].services;
    assert!(!other.caches.caches_tokens());
    assert!(!other.caches.caches_certificates());
    let toml = format!("{GOOD}\n[policies.same]\n");
    let e = built(&load(&toml, dir.path()).unwrap()).engine;
    assert!(!Arc::ptr_eq(
        &e.default.services.caches,
        &e.named["same"].services.caches
    ));
}

#[test]
fn the_documented_example_loads() {
    let dir = dir_with_ca();
    let c = load(GOOD, dir.path()).unwrap();
    let p = &c.policies.default;
    assert_eq!(p.pop_mode, PopMode::Strict);
    assert_eq!(
        p.upstream_headers,
        vec![ClaimHeader {
            claim: "sub".into(),
            header: "x-consumer-sub".into()
        }]
    );
    match &p.cert_source {
        CertSource::Header(h) => {
            assert_eq!(h.name, "x-client-cert");
            assert_eq!(h.format, HeaderFormat::UrlEncoded);
        }
        _ => panic!("expected header source"),
    }
    let b = built(&c);
    assert!(
        b.engine.default.services.keys.is_ready(),
        "a static jwks_file is loaded at start"
    );
    assert!(b.key_fetches.is_empty());
}

#[test]
fn without_from_header_the_peer_certificate_is_used_and_no_ca_is_needed() {
    let dir = dir_with_ca();
    let toml = "issuer = \"https://idp.example\"\n";
    let c = load(toml, dir.path()).unwrap();
    assert!(matches!(c.policies.default.cert_source, CertSource::Peer));
    assert_eq!(
        built(&c).key_fetches[0].source,
        KeySource::Discovery {
            issuer: "https://idp.example".into()
        }
    );
    assert_eq!(c.grpc_listen.to_string(), defaults::GRPC_LISTEN);
}

#[test]
fn unknown_keys_are_errors_that_name_the_key() {
    let dir = dir_with_ca();
    let err = load(
        "issuer = \"https://idp.example\"\nisuer = \"typo\"\n",
        dir.path(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("isuer"), "{err}");
    let err = load(&format!("{GOOD}\nsecure_sorce = true\n"), dir.path()).unwrap_err();
    assert!(err.to_string().contains("secure_sorce"), "{err}");
}

#[test]
fn all_problems_are_reported_at_once() {
    let dir = dir_with_ca();
    let toml = r#"
        grpc_listen = "nowhere"
        proof_of_possession_mtls = "sometimes"
        upstream_headers_claims = ["sub", "scope"]
        upstream_headers_names = ["x-sub"]
        [proof_of_possession_mtls_from_header]
        certificate_header_format = "der"
        ca_certificates = ["missing.pem"]
    "#;
    let keys: Vec<String> = issues(toml, dir.path())
        .into_iter()
        .map(|i| i.key)
        .collect();
    for k in [
        "grpc_listen",
        "issuer",
        "proof_of_possession_mtls",
        "upstream_headers_names",
        "proof_of_possession_mtls_from_header.certificate_header_name",
        "proof_of_possession_mtls_from_header.certificate_header_format",
        "proof_of_possession_mtls_from_header.ca_certificates",
    ] {
        assert!(keys.iter().any(|x| x == k), "{k} not in {keys:?}");
    }
}

#[test]
fn every_bad_named_policy_is_reported_with_the_others_issues() {
    let dir = dir_with_ca();
    let toml = format!(
        "{GOOD}\n[policies.a]\nscopes_requird = [\"x\"]\n[policies.b]\nleeway = \"soon\"\n\
         [policies.c]\nproof_of_possession_mtls = \"sometimes\"\n"
    );
    let keys: Vec<String> = issues(&toml, dir.path())
        .into_iter()
        .map(|i| i.key)
        .collect();
    for want in [
        "policies.a",
        "policies.b.leeway",
        "policies.c.proof_of_possession_mtls",
    ] {
        assert!(
            keys.iter().any(|k| k.starts_with(want)),
            "{want} missing from {keys:?}"
        );
    }
}

#[test]
fn pop_incompatible_auth_method_is_a_start_up_error_listing_compatible_ones() {
    let dir = dir_with_ca();
    let toml = format!(
        "{}\n",
        GOOD.replace(
            r#"auth_methods = ["bearer"]"#,
            r#"auth_methods = ["bearer", "password"]"#
        )
    );
    let i = issues(&toml, dir.path());
    assert_eq!(i.len(), 1);
    assert_eq!(i[0].key, "auth_methods");
    assert!(
        i[0].message.contains("bearer, introspection, session"),
        "{}",
        i[0].message
    );
}

#[test]
fn unimplemented_methods_are_never_silently_ignored() {
    let dir = dir_with_ca();
    // Even with validation off, `password` would run without a binding check: refused
    // because certbound does not implement it.
    let toml = GOOD
        .replace(
            r#"auth_methods = ["bearer"]"#,
            r#"auth_methods = ["bearer", "password"]"#,
        )
        .replace(
            "leeway = 60",
            "leeway = 60\nproof_of_possession_auth_methods_validation = false",
        );
    let i = issues(&toml, dir.path());
    assert!(
        i[0].message.contains("not supported by certbound"),
        "{}",
        i[0].message
    );
    // Introspection needs the resource server's credentials.
    let toml = GOOD.replace(
        r#"auth_methods = ["bearer"]"#,
        r#"auth_methods = ["introspection"]"#,
    );
    let i = issues(&toml, dir.path());
    assert_eq!(i[0].key, "client_id");
    let with_creds = toml.replace(
        "leeway = 60",
        "leeway = 60\nclient_id = [\"rs\"]\nclient_secret = [\"s\"]",
    );
    assert!(load(&with_creds, dir.path()).is_ok());
    let toml = GOOD.replace(
        r#"auth_methods = ["bearer"]"#,
        r#"auth_methods = ["magic"]"#,
    );
    assert!(issues(&toml, dir.path())[0]
        .message
        .contains("not an auth method"));
}

#[test]
fn a_ca_file_without_certificates_is_an_error() {
    let dir = dir_with_ca();
    std::fs::write(dir.path().join("empty.pem"), "nothing here\n").unwrap();
    let toml = GOOD.replace("client-ca.pem", "empty.pem");
    let i = issues(&toml, dir.path());
    assert_eq!(
        i[0].key,
        "proof_of_possession_mtls_from_header.ca_certificates"
    );
}

#[test]
fn environment_style_overrides_apply_nested_keys() {
    let dir = dir_with_ca();
    // The same provider shape Env produces for CERTBOUND_PROOF_OF_POSSESSION_MTLS_FROM_HEADER__CERTIFICATE_HEADER_FORMAT.
    let figment = Figment::new()
        .merge(Toml::string(GOOD))
        .merge(Serialized::default(
            "proof_of_possession_mtls_from_header.certificate_header_format",
            "base64_encoded",
        ));
    let c = Config::from_figment(&figment, dir.path()).unwrap();
    match &c.policies.default.cert_source {
        CertSource::Header(h) => assert_eq!(h.format, HeaderFormat::Base64Encoded),
        _ => panic!("expected header source"),
    }
}

fn header_source(c: &Config) -> &HeaderSource {
    match &c.policies.default.cert_source {
        CertSource::Header(h) => h,
        _ => panic!("expected header source"),
    }
}

#[test]
fn revocation_defaults_to_kongs_ignore_ca_error_with_kongs_timings() {
    let dir = dir_with_ca();
    let c = load(GOOD, dir.path()).unwrap();
    let settings = header_source(&c).revocation.as_ref().unwrap();
    assert!(built(&c).engine.default.services.revocation.is_some());
    assert_eq!(
        settings,
        &revocation::Settings {
            mode: revocation::Mode::IgnoreCaError,
            cache_ttl: Duration::from_millis(60_000),
            http_timeout: Duration::from_millis(30_000),
            wait: Duration::from_millis(500),
            ocsp_max_age: Duration::from_secs(3600),
        }
    );
    let c = load(&format!("{GOOD}ocsp_max_age = 600\n"), dir.path()).unwrap();
    let settings = header_source(&c).revocation.as_ref().unwrap();
    assert_eq!(settings.ocsp_max_age, Duration::from_secs(600));
}

#[test]
fn revocation_modes_are_kongs_spelling_or_lower_case_and_skip_builds_no_checker() {
    let dir = dir_with_ca();
    for (value, mode) in [
        ("STRICT", Some(revocation::Mode::Strict)),
        ("strict", Some(revocation::Mode::Strict)),
        ("IGNORE_CA_ERROR", Some(revocation::Mode::IgnoreCaError)),
        ("ignore_ca_error", Some(revocation::Mode::IgnoreCaError)),
        ("SKIP", None),
        ("skip", None),
    ] {
        let toml = format!(
            "{GOOD}revocation_check_mode = \"{value}\"\ncert_cache_ttl = 1000\nhttp_timeout = 2000\nrevocation_wait = 300\n"
        );
        let c = load(&toml, dir.path()).unwrap();
        let got = header_source(&c).revocation.clone();
        assert_eq!(got.as_ref().map(|s| s.mode), mode, "{value}");
        assert_eq!(
            built(&c).engine.default.services.revocation.is_some(),
            mode.is_some(),
            "{value}"
        );
        if let Some(s) = got {
            assert_eq!(s.cache_ttl, Duration::from_millis(1000));
            assert_eq!(s.http_timeout, Duration::from_millis(2000));
            assert_eq!(s.wait, Duration::from_millis(300));
        }
    }
}

#[test]
fn bad_revocation_values_name_their_keys() {
    let dir = dir_with_ca();
    let toml = format!(
        "{GOOD}revocation_check_mode = \"Strict\"\ncert_cache_ttl = 0\nhttp_timeout = 0\nrevocation_wait = 0\nocsp_max_age = 0\n"
    );
    let i = issues(&toml, dir.path());
    let keys: Vec<&str> = i.iter().map(|i| i.key.as_str()).collect();
    for k in [
        "revocation_check_mode",
        "cert_cache_ttl",
        "http_timeout",
        "revocation_wait",
        "ocsp_max_age",
    ] {
        let k = format!("proof_of_possession_mtls_from_header.{k}");
        assert!(keys.contains(&k.as_str()), "{k} not in {keys:?}");
    }
    assert!(
        i[0].message.contains("SKIP, IGNORE_CA_ERROR, STRICT"),
        "{}",
        i[0].message
    );
}

#[test]
fn secure_source_without_trusted_ips_says_what_to_set() {
    let dir = dir_with_ca();
    let toml = GOOD.replace(r#"trusted_ips = ["10.0.0.0/8", "192.0.2.7"]"#, "");
    let i = issues(&toml, dir.path());
    assert_eq!(i[0].key, "trusted_ips");
    assert!(
        i[0].message.contains("secure_source = false"),
        "{}",
        i[0].message
    );
    let open = toml.replace(
        "ssl_verify = true\n",
        "ssl_verify = true\nsecure_source = false\n",
    );
    assert!(load(&open, dir.path()).is_ok());
}

#[test]
fn trusted_ips_accept_addresses_and_ranges_and_refuse_garbage() {
    let dir = dir_with_ca();
    let c = load(GOOD, dir.path()).unwrap();
    let nets: Vec<String> = c
        .policies
        .default
        .trusted_ips
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, vec!["10.0.0.0/8", "192.0.2.7/32"]);
    let toml = GOOD.replace(r#""192.0.2.7""#, r#""192.0.2.300""#);
    assert_eq!(issues(&toml, dir.path())[0].key, "trusted_ips");
}

#[test]
fn every_format_and_alias_is_accepted_and_unknown_ones_are_listed() {
    let dir = dir_with_ca();
    for f in [
        "base64_encoded",
        "url_encoded",
        "pem",
        "rfc9440",
        "xfcc",
        "traefik",
        "auto",
        "haproxy",
        "f5",
        "aws_alb",
        "apache",
    ] {
        let toml = GOOD.replace(
            r#"certificate_header_format = "url_encoded""#,
            &format!("certificate_header_format = \"{f}\""),
        );
        assert!(load(&toml, dir.path()).is_ok(), "{f}");
    }
    let toml = GOOD.replace(
        r#"certificate_header_format = "url_encoded""#,
        r#"certificate_header_format = "der""#,
    );
    assert!(issues(&toml, dir.path())[0].message.contains("rfc9440"));
}

#[test]
fn xfcc_reads_one_element_unless_the_operator_asks_for_the_last() {
    let dir = dir_with_ca();
    let xfcc = GOOD.replace(r#""url_encoded""#, r#""xfcc""#);
    let elements = |c: &Config| match &c.policies.default.cert_source {
        CertSource::Header(h) => h.xfcc_elements,
        _ => panic!("expected header source"),
    };
    assert_eq!(
        elements(&load(&xfcc, dir.path()).unwrap()),
        XfccElements::One
    );
    let last = xfcc.replace(
        "ssl_verify = true\n",
        "ssl_verify = true\nxfcc_elements = \"last\"\n",
    );
    assert_eq!(
        elements(&load(&last, dir.path()).unwrap()),
        XfccElements::Last
    );
    let key = "proof_of_possession_mtls_from_header.xfcc_elements";
    assert_eq!(
        issues(&last.replace("\"last\"", "\"all\""), dir.path())[0].key,
        key
    );
    let not_xfcc = last.replace(r#""xfcc""#, r#""auto""#);
    assert_eq!(issues(&not_xfcc, dir.path())[0].key, key);
}

#[test]
fn only_xfcc_may_go_without_ca_certificates_and_it_carries_its_own_chain() {
    let dir = dir_with_ca();
    let no_ca = GOOD.replace(r#"ca_certificates = ["client-ca.pem"]"#, "");
    assert_eq!(
        issues(&no_ca, dir.path())[0].key,
        "proof_of_possession_mtls_from_header.ca_certificates"
    );
    let xfcc = no_ca.replace(r#""url_encoded""#, r#""xfcc""#);
    let c = load(&xfcc, dir.path()).unwrap();
    match &c.policies.default.cert_source {
        CertSource::Header(h) => assert!(h.trust.is_none()),
        _ => panic!("expected header source"),
    }
    let with_chain = xfcc.replace(
        "ssl_verify = true\n",
        "ssl_verify = true\ncertificate_chain_header_name = \"x-chain\"\n",
    );
    assert_eq!(
        issues(&with_chain, dir.path())[0].key,
        "proof_of_possession_mtls_from_header.certificate_chain_header_name"
    );
}

#[test]
fn limits_default_safely_and_refuse_values_outside_their_range() {
    let dir = dir_with_ca();
    assert_eq!(
        load(GOOD, dir.path()).unwrap().policies.default.limits,
        Limits::default()
    );
    let toml = format!("{GOOD}\n[limits]\nmax_chain_length = 3\nmax_token_bytes = 4096\nmax_json_depth = 4\nmax_certificate_header_bytes = 8192\n");
    let l = load(&toml, dir.path()).unwrap().policies.default.limits;
    assert_eq!(
        (
            l.max_chain_length,
            l.max_token_bytes,
            l.max_json_depth,
            l.max_certificate_header_bytes
        ),
        (3, 4096, 4, 8192)
    );
    let toml = format!("{GOOD}\n[limits]\nmax_chain_length = 0\nmax_token_bytes = 10000000\nmax_authorization_values = 9\n");
    let keys: Vec<String> = issues(&toml, dir.path())
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(
        keys,
        vec![
            "limits.max_chain_length",
            "limits.max_token_bytes",
            "limits.max_authorization_values"
        ]
    );
    let toml = format!("{GOOD}\n[limits]\nmax_authorization_values = 8\n");
    assert_eq!(
        load(&toml, dir.path())
            .unwrap()
            .policies
            .default
            .limits
            .max_authorization_values,
        Limits::CEILING.max_authorization_values
    );
}

#[test]
fn max_introspection_calls_defaults_to_64_and_stays_within_1_to_1024() {
    let dir = dir_with_ca();
    let limits = |extra: &str| {
        load(&format!("{GOOD}\n[limits]\n{extra}\n"), dir.path())
            .map(|c| c.policies.default.limits.max_introspection_calls)
    };
    assert_eq!(limits("").unwrap(), 64);
    assert_eq!(limits("max_introspection_calls = 1024").unwrap(), 1024);
    for bad in [
        "max_introspection_calls = 0",
        "max_introspection_calls = 1025",
    ] {
        let keys: Vec<String> = issues(&format!("{GOOD}\n[limits]\n{bad}\n"), dir.path())
            .into_iter()
            .map(|i| i.key)
            .collect();
        assert_eq!(keys, vec!["limits.max_introspection_calls"], "{bad}");
    }
}

#[test]
fn named_policies_override_key_by_key_and_errors_name_the_policy() {
    let dir = dir_with_ca();
    let toml = format!(
        "{GOOD}\n[policies.strict-api]\nscopes_required = [\"a b\", \"c\"]\nleeway = 5\n\
         [policies.strict-api.proof_of_possession_mtls_from_header]\ncertificate_header_format = \"rfc9440\"\n"
    );
    let c = load(&toml, dir.path()).unwrap();
    let p = &c.policies.named["strict-api"];
    assert_eq!(
        p.scopes_required,
        vec![
            vec!["a".to_string(), "b".to_string()],
            vec!["c".to_string()]
        ]
    );
    assert_eq!(p.leeway, 5);
    assert_eq!(p.audiences, c.policies.default.audiences, "inherited");
    match &p.cert_source {
        // The nested table merges key by key: the header name is inherited.
        CertSource::Header(h) => assert_eq!(
            (h.name.as_str(), h.format),
            ("x-client-cert", HeaderFormat::Rfc9440)
        ),
        _ => panic!("expected header source"),
    }
    let e = built(&c).engine;
    assert!(
        std::sync::Arc::ptr_eq(
            &e.named["strict-api"].services.keys,
            &e.default.services.keys
        ),
        "same issuer, one key store"
    );

    let err = load(
        &format!("{GOOD}\n[policies.x]\nscopes_requird = [\"a\"]\n"),
        dir.path(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("policies.x"), "{err}");
    let i = issues(
        &format!("{GOOD}\n[policies.y]\nproof_of_possession_mtls = \"maybe\"\n"),
        dir.path(),
    );
    assert_eq!(i[0].key, "policies.y.proof_of_possession_mtls");
}

#[test]
fn jwks_uri_and_jwks_file_are_exclusive() {
    let dir = dir_with_ca();
    let toml = GOOD.replace(
        "jwks_file = \"jwks.json\"",
        "jwks_file = \"jwks.json\"\njwks_uri = \"https://idp.example/jwks\"",
    );
    assert_eq!(issues(&toml, dir.path())[0].key, "jwks_file");
}

#[test]
fn dpop_keys_load_per_policy_with_kong_defaults() {
    let dir = dir_with_ca();
    let c = load(
        &format!(
            "{GOOD}\n[policies.d]\nproof_of_possession_dpop = \"strict\"\n\
             dpop_use_nonce = true\ndpop_nonce_secret = \"{}\"\n\
             dpop_signing_alg_values = [\"ES256\"]\n\
             dpop_htu_base_url = \"https://API.example:443/\"\n",
            "s".repeat(32)
        ),
        dir.path(),
    )
    .unwrap();
    let default = &c.policies.default.dpop;
    assert_eq!(default.mode, DpopMode::Off, "Kong's default");
    assert_eq!(default.lifetime, 300);
    assert!(default.nonce.is_none());
    let d = &c.policies.named["d"].dpop;
    assert_eq!(d.mode, DpopMode::Strict);
    assert_eq!(d.algs, vec![jsonwebtoken::Algorithm::ES256]);
    assert!(d.nonce.is_some());
    assert_eq!(d.base_url.as_deref(), Some("https://api.example"));
    let e = built(&c).engine;
    assert!(
        Arc::ptr_eq(&e.named["d"].services.replay, &e.default.services.replay),
        "one replay store for the process"
    );
}

#[test]
fn bad_dpop_keys_are_each_named() {
    let dir = dir_with_ca();
    let cases = [
        (
            "proof_of_possession_dpop = \"maybe\"",
            "policies.d.proof_of_possession_dpop",
        ),
        ("dpop_proof_lifetime = 0", "policies.d.dpop_proof_lifetime"),
        ("dpop_use_nonce = true", "policies.d.dpop_nonce_secret"),
        (
            "dpop_use_nonce = true\ndpop_nonce_secret = \"short\"",
            "policies.d.dpop_nonce_secret",
        ),
        (
            "dpop_signing_alg_values = [\"HS256\"]",
            "policies.d.dpop_signing_alg_values",
        ),
        (
            "dpop_signing_alg_values = []",
            "policies.d.dpop_signing_alg_values",
        ),
        (
            "dpop_htu_base_url = \"https://api.example/?q\"",
            "policies.d.dpop_htu_base_url",
        ),
        (
            "dpop_htu_base_url = \"ftp://api.example\"",
            "policies.d.dpop_htu_base_url",
        ),
    ];
    for (line, key) in cases {
        let i = issues(&format!("{GOOD}\n[policies.d]\n{line}\n"), dir.path());
        assert_eq!(i[0].key, key, "{line}");
    }
}

#[test]
fn the_replay_store_is_checked_without_echoing_its_url() {
    let dir = dir_with_ca();
    for (table, key) in [
        ("store = \"redis\"", "dpop_replay.redis_url"),
        ("store = \"disk\"", "dpop_replay.store"),
        ("max_entries = 0", "dpop_replay.max_entries"),
        ("timeout = 0", "dpop_replay.timeout"),
        (
            "store = \"memory\"\nredis_url = \"redis://x\"",
            "dpop_replay.redis_url",
        ),
    ] {
        let i = issues(&format!("{GOOD}\n[dpop_replay]\n{table}\n"), dir.path());
        assert_eq!(i[0].key, key, "{table}");
    }
    let i = issues(
        &format!(
            "{GOOD}\n[dpop_replay]\nstore = \"redis\"\nredis_url = \"http://user:hunter2@x\"\n"
        ),
        dir.path(),
    );
    assert_eq!(i[0].key, "dpop_replay.redis_url");
    assert!(!i[0].message.contains("hunter2"), "{}", i[0].message);
    let c = load(
        &format!(
            "{GOOD}\n[dpop_replay]\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:6379/0\"\n"
        ),
        dir.path(),
    )
    .unwrap();
    assert!(matches!(
        *built(&c).engine.default.services.replay,
        certbound_core::dpop::ReplayStore::Shared(_)
    ));
}

#[test]
fn listeners_default_to_loopback_not_every_interface() {
    let dir = dir_with_ca();
    let c = load("issuer = \"https://idp.example\"\n", dir.path()).unwrap();
    assert!(c.grpc_listen.ip().is_loopback(), "{}", c.grpc_listen);
    assert!(c.admin_listen.ip().is_loopback(), "{}", c.admin_listen);
    assert_eq!(c.grpc_listen.port(), 9191);
    assert_eq!(c.admin_listen.port(), 9192);
}

const INTROSPECTION: &str = "auth_methods = [\"bearer\", \"introspection\"]\nclient_id = [\"rs\"]\nclient_secret = [\"s\"]\n";

#[test]
fn plain_http_idp_urls_are_refused() {
    let dir = dir_with_ca();
    let bearer = GOOD.replace("auth_methods = [\"bearer\"]\n", "");
    let https_issuer = "issuer = \"https://idp.example\"";
    for (swap, key) in [
        (
            GOOD.replace(https_issuer, "issuer = \"http://idp.example\""),
            "issuer",
        ),
        (
            GOOD.replace(
                "jwks_file = \"jwks.json\"",
                "jwks_uri = \"http://idp.example/jwks\"",
            ),
            "jwks_uri",
        ),
        (
            format!(
                "{INTROSPECTION}introspection_endpoint = \"http://idp.example/introspect\"\n{bearer}"
            ),
            "introspection_endpoint",
        ),
        (
            format!("{GOOD}\n[policies.other]\nissuer = \"http://other.example\"\n"),
            "policies.other.issuer",
        ),
    ] {
        let i = issues(&swap, dir.path());
        assert_eq!(i.len(), 1, "{i:?}");
        assert_eq!(i[0].key, key);
        assert!(i[0].message.contains("https"), "{}", i[0].message);
        assert!(
            i[0].message.contains("allow_insecure_http_for_tests"),
            "{}",
            i[0].message
        );
    }
}

#[test]
fn plain_http_idp_urls_need_the_loudly_named_test_option() {
    let dir = dir_with_ca();
    let bearer = GOOD.replace("auth_methods = [\"bearer\"]\n", "");
    let toml = format!(
        "allow_insecure_http_for_tests = true\n{INTROSPECTION}introspection_endpoint = \"http://idp.example/introspect\"\n{}",
        bearer
            .replace("issuer = \"https://idp.example\"", "issuer = \"http://idp.example\"")
            .replace("jwks_file = \"jwks.json\"", "jwks_uri = \"http://idp.example/jwks\"")
    );
    let c = load(&toml, dir.path()).unwrap();
    assert!(c.idp_client.allow_insecure_http);
    assert!(
        c.warnings
            .iter()
            .any(|w| w.key == "allow_insecure_http_for_tests"),
        "{:?}",
        c.warnings
    );
    assert_eq!(c.policies.default.issuer, "http://idp.example");
    // Off by default.
    assert!(
        !load(GOOD, dir.path())
            .unwrap()
            .idp_client
            .allow_insecure_http
    );
}

#[test]
fn grpc_tls_files_are_checked_at_start_and_the_key_is_never_printed() {
    let dir = dir_with_ca();
    let ca = certbound_core::fixtures::Ca::root("grpc ca").unwrap();
    let leaf = ca.server(&["localhost"]).unwrap();
    std::fs::write(dir.path().join("grpc.pem"), &leaf.pem).unwrap();
    std::fs::write(dir.path().join("grpc.key"), &leaf.key_pem).unwrap();
    std::fs::write(dir.path().join("garbage.key"), "not a key").unwrap();
    let with = |table: &str| format!("{GOOD}\n[grpc_tls]\n{table}\n");
    let ok = load(
        &with(
            "cert_file = \"grpc.pem\"\nkey_file = \"grpc.key\"\nclient_ca_file = \"client-ca.pem\"",
        ),
        dir.path(),
    )
    .unwrap();
    let tls = ok.grpc_tls.as_ref().unwrap();
    assert!(tls.client_ca_pem.is_some());
    let printed = format!("{ok:?}");
    assert!(!printed.contains("PRIVATE KEY"), "{printed}");
    assert!(load(GOOD, dir.path()).unwrap().grpc_tls.is_none());
    for (table, key) in [
        ("cert_file = \"grpc.pem\"", "grpc_tls.key_file"),
        ("key_file = \"grpc.key\"", "grpc_tls.cert_file"),
        (
            "cert_file = \"grpc.pem\"\nkey_file = \"missing.key\"",
            "grpc_tls.key_file",
        ),
        (
            "cert_file = \"grpc.key\"\nkey_file = \"grpc.key\"",
            "grpc_tls.cert_file",
        ),
        (
            "cert_file = \"grpc.pem\"\nkey_file = \"garbage.key\"",
            "grpc_tls",
        ),
        (
            "cert_file = \"grpc.pem\"\nkey_file = \"grpc.key\"\nclient_ca_file = \"grpc.key\"",
            "grpc_tls.client_ca_file",
        ),
        (
            "cert_file = \"grpc.pem\"\nkey_file = \"grpc.key\"\nclient_ca = \"x\"",
            "client_ca",
        ),
    ] {
        let err = load(&with(table), dir.path()).unwrap_err().to_string();
        assert!(err.contains(key), "{table}: {err}");
        assert!(!err.contains("BEGIN PRIVATE"), "{table}: {err}");
    }
}

#[test]
fn an_issuer_is_kept_exactly_as_configured_trailing_slash_included() {
    // Auth0's `iss` ends in `/`: trimming it made every such token fail the issuer check.
    let dir = dir_with_ca();
    let toml = GOOD.replace("https://idp.example\"", "https://idp.example/\"");
    let c = load(&toml, dir.path()).unwrap();
    assert_eq!(c.policies.default.issuer, "https://idp.example/");
    let c = load(GOOD, dir.path()).unwrap();
    assert_eq!(c.policies.default.issuer, "https://idp.example");
}

#[test]
fn a_rediscovery_lifetime_below_one_second_is_refused() {
    let dir = dir_with_ca();
    let i = issues(&format!("rediscovery_lifetime = 0\n{GOOD}"), dir.path());
    assert_eq!(i.len(), 1, "{i:?}");
    assert_eq!(i[0].key, "rediscovery_lifetime");
    assert!(load(&format!("rediscovery_lifetime = 1\n{GOOD}"), dir.path()).is_ok());
}

#[test]
fn permissive_token_defaults_are_warned_about_naming_their_keys() {
    let dir = dir_with_ca();
    // GOOD sets `audience` but keeps the default `access_token_types` (with `JWT`).
    let c = load(GOOD, dir.path()).unwrap();
    let keys: Vec<&str> = c.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(keys, ["access_token_types"]);
    assert!(c.warnings[0].message.contains("JWT"), "{:?}", c.warnings);
    // No audience: any audience the issuer ever used is accepted; per policy, named in full.
    let toml = format!(
        "{}\n[policies.open]\n",
        GOOD.replace("audience = [\"https://api.example\"]", "")
    );
    let c = load(&toml, dir.path()).unwrap();
    let mut keys: Vec<&str> = c.warnings.iter().map(|w| w.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "access_token_types",
            "audience",
            "policies.open.access_token_types",
            "policies.open.audience"
        ]
    );
    // Both set deliberately: nothing to warn about.
    let strict = format!("access_token_types = [\"at+jwt\"]\n{GOOD}");
    assert!(load(&strict, dir.path()).unwrap().warnings.is_empty());
}

#[test]
fn introspection_inactive_ttl_defaults_to_10_seconds_and_stays_within_cache_ttl() {
    let dir = dir_with_ca();
    // The introspection keys belong to the default policy: before GOOD's first table.
    let bearer = GOOD.replace("auth_methods = [\"bearer\"]\n", "");
    let settings = |extra: &str| {
        let c = load(&format!("{INTROSPECTION}{extra}{bearer}"), dir.path()).unwrap();
        c.policies.default.introspection.clone().unwrap()
    };
    assert_eq!(settings("").negative_ttl, Duration::from_secs(10));
    assert_eq!(
        settings("introspection_inactive_ttl = 60\n").negative_ttl,
        Duration::from_secs(60)
    );
    for bad in ["0", "3601"] {
        let i = issues(
            &format!("{INTROSPECTION}introspection_inactive_ttl = {bad}\n{bearer}"),
            dir.path(),
        );
        assert_eq!(i[0].key, "introspection_inactive_ttl", "{bad}");
    }
}

#[test]
fn routes_load_in_kong_order_and_select_their_policies() {
    use certbound_core::routes::{Request, Selected, Unmatched};
    let dir = dir_with_ca();
    let toml = format!(
        r#"unmatched_route = "deny"
{GOOD}
[policies.strict]
leeway = 0
[[routes]]
name = "everything under api"
hosts = ["*.example.com"]
paths = ["/"]
policy = "default"
[[routes]]
hosts = ["*.example.com"]
paths = ["/payments", "~/accounts/\\d+$"]
methods = ["GET", "POST"]
policy = "strict"
"#
    );
    let c = load(&toml, dir.path()).unwrap();
    assert_eq!(c.routes.unmatched, Unmatched::Deny);
    assert_eq!(c.routes.rules().len(), 2);
    let engine = built(&c).engine;
    let pick = |authority, path, method| {
        engine.routes.select(&Request {
            authority,
            path,
            method,
        })
    };
    assert_eq!(
        pick("api.example.com", "/payments/1", "POST"),
        Selected::Policy(Some("strict"))
    );
    assert_eq!(
        pick("api.example.com", "/accounts/7", "GET"),
        Selected::Policy(Some("strict"))
    );
    assert_eq!(
        pick("api.example.com", "/payments/1", "DELETE"),
        Selected::Policy(None)
    );
    assert_eq!(pick("other.org", "/payments", "GET"), Selected::Deny);
    assert!(
        !c.warnings.iter().any(|w| w.key.starts_with("routes")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn bad_routes_are_reported_each_naming_its_key() {
    let dir = dir_with_ca();
    let toml = format!(
        r#"unmatched_route = "maybe"
{GOOD}
[[routes]]
hosts = ["a.*.com"]
paths = ["relative", "~(unclosed"]
methods = ["get"]
policy = "nope"
[[routes]]
regex_priority = 1
policy = "default"
[[routes]]
paths = ["/a"]
"#
    );
    let keys: Vec<String> = issues(&toml, dir.path())
        .into_iter()
        .map(|i| i.key)
        .collect();
    for key in [
        "unmatched_route",
        "routes[0].hosts",
        "routes[0].paths",
        "routes[0].methods",
        "routes[0].policy",
        "routes[1]",
        "routes[2].policy",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} not in {keys:?}");
    }
    assert_eq!(
        keys.iter().filter(|k| *k == "routes[0].paths").count(),
        2,
        "{keys:?}"
    );
}

#[test]
fn a_route_regex_over_the_size_limit_is_refused() {
    let dir = dir_with_ca();
    let toml = format!(
        "{GOOD}\n[[routes]]\npaths = [\"~(\\\\w{{1,1000}}){{1,1000}}\"]\npolicy = \"default\"\n"
    );
    let i = issues(&toml, dir.path());
    assert_eq!(i.len(), 1, "{i:?}");
    assert_eq!(i[0].key, "routes[0].paths");
}

#[test]
fn conflicting_routes_are_errors_and_shadowed_ones_warnings() {
    let dir = dir_with_ca();
    let conflict = format!(
        r#"{GOOD}
[policies.strict]
leeway = 0
[[routes]]
hosts = ["*.example.com"]
paths = ["/a"]
policy = "default"
[[routes]]
hosts = ["api.*"]
paths = ["/a"]
policy = "strict"
"#
    );
    let i = issues(&conflict, dir.path());
    assert_eq!(i.len(), 1, "{i:?}");
    assert_eq!(i[0].key, "routes");
    assert!(i[0].message.contains("routes[0] and routes[1]"), "{i:?}");

    let shadowed = format!(
        r#"{GOOD}
[[routes]]
name = "first"
hosts = ["api.example.com"]
paths = ["/a"]
policy = "default"
[[routes]]
name = "second"
hosts = ["api.example.com"]
paths = ["/a"]
policy = "default"
"#
    );
    let c = load(&shadowed, dir.path()).unwrap();
    let routes: Vec<&Issue> = c
        .warnings
        .iter()
        .filter(|w| w.key.starts_with("routes"))
        .collect();
    assert_eq!(routes.len(), 1, "{:?}", c.warnings);
    assert_eq!(routes[0].key, "routes[1] (second)");
    assert!(routes[0].message.contains("routes[0] (first)"));
}

#[test]
fn a_rule_that_does_not_authenticate_is_warned_about_and_names_no_policy() {
    use certbound_core::routes::{Request, Selected};
    let dir = dir_with_ca();
    let toml = format!(
        r#"unmatched_route = "deny"
{GOOD}
[[routes]]
name = "docs"
paths = ["/docs"]
authenticate = false
[[routes]]
paths = ["/docs/internal"]
policy = "default"
"#
    );
    let c = load(&toml, dir.path()).unwrap();
    let open: Vec<&Issue> = c
        .warnings
        .iter()
        .filter(|w| w.message.contains("authenticate = false"))
        .collect();
    assert_eq!(open.len(), 1, "{:?}", c.warnings);
    assert_eq!(open[0].key, "routes[0] (docs)");
    let engine = built(&c).engine;
    let pick = |path| {
        engine.routes.select(&Request {
            authority: "api.example",
            path,
            method: "GET",
        })
    };
    assert_eq!(pick("/docs/guide"), Selected::Unauthenticated);
    assert_eq!(pick("/docs/internal/x"), Selected::Policy(None));
    assert_eq!(pick("/other"), Selected::Deny);

    let both = format!(
        "{GOOD}\n[[routes]]\npaths = [\"/a\"]\nauthenticate = false\npolicy = \"default\"\n"
    );
    let i = issues(&both, dir.path());
    assert_eq!(i.len(), 1, "{i:?}");
    assert_eq!(i[0].key, "routes[0].policy");
}

#[test]
fn resource_publishes_metadata_and_named_policies_inherit_or_replace_it() {
    let dir = dir_with_ca();
    let c = load(
        &format!(
            "resource = \"https://api.example/orders\"\n{GOOD}\n\
             [policies.same]\nleeway = 30\n\
             [policies.other]\nresource = \"https://api.example/admin\"\n\
             proof_of_possession_mtls = \"off\"\nproof_of_possession_dpop = \"strict\"\n\
             [policies.none]\nresource = \"https://api.example/none\"\n"
        ),
        dir.path(),
    )
    .unwrap();
    let m = c.policies.default.metadata.as_deref().unwrap();
    assert_eq!(
        m.url,
        "https://api.example/.well-known/oauth-protected-resource/orders"
    );
    for member in [
        r#""resource":"https://api.example/orders""#,
        r#""authorization_servers":["https://idp.example"]"#,
        r#""tls_client_certificate_bound_access_tokens":true"#,
    ] {
        assert!(m.document.contains(member), "{member} in {}", m.document);
    }
    assert_eq!(
        c.policies.named["same"].metadata, c.policies.default.metadata,
        "inherited: same resource, same document"
    );
    let other = c.policies.named["other"].metadata.as_deref().unwrap();
    for member in [
        r#""dpop_bound_access_tokens_required":true"#,
        r#""tls_client_certificate_bound_access_tokens":false"#,
    ] {
        assert!(
            other.document.contains(member),
            "{member} in {}",
            other.document
        );
    }
    let plain = load(GOOD, dir.path()).unwrap();
    assert!(plain.policies.default.metadata.is_none(), "no key: off");
}

#[test]
fn resource_must_be_an_https_url_without_fragment() {
    let dir = dir_with_ca();
    for bad in [
        "http://api.example",
        "api.example/orders",
        "https://api.example/orders#top",
        "https://api.example/?q=1",
        "https://",
        "https://api.example/a b",
    ] {
        let i = issues(&format!("resource = \"{bad}\"\n{GOOD}"), dir.path());
        assert_eq!(i.len(), 1, "{bad}: {i:?}");
        assert_eq!(i[0].key, "resource", "{bad}");
        assert!(i[0].message.contains(bad), "{bad}: {}", i[0].message);
        let i = issues(
            &format!("{GOOD}\n[policies.p]\nresource = \"{bad}\"\n"),
            dir.path(),
        );
        assert_eq!(i[0].key, "policies.p.resource", "{bad}");
    }
}

#[test]
fn two_policies_cannot_publish_different_documents_at_one_url() {
    let dir = dir_with_ca();
    let i = issues(
        &format!(
            "resource = \"https://api.example/orders\"\n{GOOD}\n\
             [policies.scoped]\nscopes_required = [\"orders:write\"]\n"
        ),
        dir.path(),
    );
    assert_eq!(i.len(), 1, "{i:?}");
    assert_eq!(i[0].key, "policies.scoped.resource");
    assert!(
        i[0].message.contains("policy `default`"),
        "{}",
        i[0].message
    );
}

/// `GOOD` up to its `[proof_of_possession_mtls_from_header]` table: Envoy's peer certificate.
fn without_header_table() -> String {
    GOOD.split("[proof_of_possession_mtls_from_header]")
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_mesh_table_reads_the_local_sidecars_element_with_its_local_id_and_allowed_spiffe_ids() {
    use certbound_core::cert::SpiffePattern;
    let dir = dir_with_ca();
    let peer = without_header_table();
    let mesh = format!(
        "{peer}[proof_of_possession_mtls_from_mesh]\n\
         local_spiffe_id = \"spiffe://cluster.local/ns/api/sa/api\"\n\
         allowed_spiffe_ids = [\"spiffe://cluster.local/ns/shop/sa/checkout\", \"spiffe://cluster.local/ns/batch/\"]\n"
    );
    let c = load(&mesh, dir.path()).unwrap();
    let CertSource::Mesh(m) = &c.policies.default.cert_source else {
        panic!("expected mesh source");
    };
    assert_eq!(
        m.local_spiffe_id.as_deref(),
        Some("spiffe://cluster.local/ns/api/sa/api")
    );
    assert_eq!(
        m.allowed_spiffe_ids,
        [
            SpiffePattern::Exact("spiffe://cluster.local/ns/shop/sa/checkout".into()),
            SpiffePattern::Under("spiffe://cluster.local/ns/batch/".into()),
        ]
    );
    let mesh_warnings = |c: &Config| -> Vec<String> {
        c.warnings
            .iter()
            .filter(|w| w.key.starts_with("proof_of_possession_mtls_from_mesh"))
            .map(|w| w.key.clone())
            .collect()
    };
    assert!(mesh_warnings(&c).is_empty(), "{:?}", c.warnings);
    // Both keys are optional: an empty table binds to any peer the mesh lets through, with a
    // warning that gateway-forwarded requests are refused without the local ID.
    let bare = load(
        &format!("{peer}[proof_of_possession_mtls_from_mesh]\n"),
        dir.path(),
    )
    .unwrap();
    match &bare.policies.default.cert_source {
        CertSource::Mesh(m) => {
            assert!(m.local_spiffe_id.is_none() && m.allowed_spiffe_ids.is_empty())
        }
        _ => panic!("expected mesh source"),
    }
    assert_eq!(
        mesh_warnings(&bare),
        ["proof_of_possession_mtls_from_mesh.local_spiffe_id"]
    );
}

#[test]
fn a_mesh_table_refuses_ids_that_are_not_spiffe_ids_a_second_source_and_a_binding_turned_off() {
    let dir = dir_with_ca();
    let peer = without_header_table();
    const T: &str = "proof_of_possession_mtls_from_mesh";
    let bad = format!(
        "{peer}[{T}]\nlocal_spiffe_id = \"spiffe://cluster.local/ns/api/\"\n\
         allowed_spiffe_ids = [\"spiffe://cluster.local/ns/a\", \"https://x/y\", \"spiffe://td/ns/../a\"]\n"
    );
    let keys: Vec<String> = issues(&bad, dir.path())
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(
        keys,
        [
            format!("{T}.local_spiffe_id"),
            format!("{T}.allowed_spiffe_ids[1]"),
            format!("{T}.allowed_spiffe_ids[2]"),
        ]
    );
    let both = format!("{GOOD}\n[{T}]\n");
    assert_eq!(issues(&both, dir.path())[0].key, T);
    let off = format!("{peer}[{T}]\n").replace(
        "proof_of_possession_mtls = \"strict\"",
        "proof_of_possession_mtls = \"off\"",
    );
    assert_eq!(issues(&off, dir.path())[0].key, T);
}

#[test]
fn tracing_is_off_without_the_table_and_its_keys_are_checked() {
    let dir = dir_with_ca();
    assert!(load(GOOD, dir.path()).unwrap().tracing.is_none());
    let on = load(
        &format!("{GOOD}\n[tracing]\notlp_endpoint = \"http://127.0.0.1:4317\"\n"),
        dir.path(),
    )
    .unwrap();
    assert_eq!(
        on.tracing,
        Some(TracingSettings {
            otlp_endpoint: "http://127.0.0.1:4317".into(),
            sample_ratio: defaults::tracing::SAMPLE_RATIO,
            service_name: defaults::tracing::SERVICE_NAME.into(),
            export_timeout: Duration::from_millis(defaults::tracing::EXPORT_TIMEOUT_MS),
        })
    );
    let set = load(
        &format!(
            "{GOOD}\n[tracing]\notlp_endpoint = \"http://collector:4317/\"\nsample_ratio = 0.25\nservice_name = \"authz\"\nexport_timeout = 500\n"
        ),
        dir.path(),
    )
    .unwrap()
    .tracing
    .unwrap();
    assert_eq!(set.sample_ratio, 0.25);
    assert_eq!(set.service_name, "authz");
    assert_eq!(set.export_timeout, Duration::from_millis(500));
    for (table, key) in [
        ("sample_ratio = 0.5", "tracing.otlp_endpoint"),
        (
            "otlp_endpoint = \"127.0.0.1:4317\"",
            "tracing.otlp_endpoint",
        ),
        (
            "otlp_endpoint = \"https://otlp.example:4317\"",
            "tracing.otlp_endpoint",
        ),
        (
            "otlp_endpoint = \"http://127.0.0.1:4317/v1/traces\"",
            "tracing.otlp_endpoint",
        ),
        (
            "otlp_endpoint = \"http://127.0.0.1:4317\"\nsample_ratio = 1.5",
            "tracing.sample_ratio",
        ),
        (
            "otlp_endpoint = \"http://127.0.0.1:4317\"\nexport_timeout = 0",
            "tracing.export_timeout",
        ),
        (
            "otlp_endpoint = \"http://127.0.0.1:4317\"\nservice_name = \" \"",
            "tracing.service_name",
        ),
    ] {
        let i = issues(&format!("{GOOD}\n[tracing]\n{table}\n"), dir.path());
        assert_eq!(i.len(), 1, "{table}: {i:?}");
        assert_eq!(i[0].key, key, "{table}");
    }
    let tls = issues(
        &format!("{GOOD}\n[tracing]\notlp_endpoint = \"https://otlp.example:4317\"\n"),
        dir.path(),
    );
    assert!(tls[0].message.contains("collector"), "{}", tls[0].message);
}
