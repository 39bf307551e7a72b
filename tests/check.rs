//! End-to-end checks against a real certbound server over gRPC, with discovery and JWKS served
//! by a local HTTPS OpenID provider. Each case asserts the decision, the HTTP status and
//! challenge Envoy would send, the upstream headers, and the metric it was counted under.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use certbound_core::clock::now_unix;
use certbound_core::fixtures::{bound_claims, jwks, Ca, SigningKey};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use support::{Answer, Certbound, Pki, Req, TestIdp, RS_CLIENT};

const AUD: &str = "https://api.test";

fn header_mode_config(idp: &TestIdp, format: &str) -> String {
    format!(
        r#"
issuer = "{iss}"
idp_ca_certificates = ["{ca}"]
audience = ["{AUD}"]
auth_methods = ["bearer"]
leeway = 0
rediscovery_lifetime = 1
proof_of_possession_mtls = "strict"
upstream_headers_claims = ["sub", "client_id"]
upstream_headers_names  = ["x-consumer-sub", "x-client-id"]
trusted_ips = ["127.0.0.1/32", "::1"]
[proof_of_possession_mtls_from_header]
certificate_header_name = "x-client-cert"
certificate_header_format = "{format}"
ca_certificates = ["client-ca.pem"]
"#,
        iss = idp.issuer,
        ca = idp.ca_path.display()
    )
}

/// Triggers a reload and waits until `series` (a reload counter) has moved past `before`.
async fn reload_and_wait(
    cb: &Certbound,
    reload: &tokio::sync::mpsc::UnboundedSender<()>,
    series: &str,
    before: u64,
) {
    reload.send(()).unwrap();
    for _ in 0..250 {
        if cb.metric(series).await > before {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{series} stayed at {before}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_turns_ssl_verify_back_on_applies_to_the_next_jwks_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix();
    let pki = Pki::new(now);
    pki.write_root(dir.path());
    let k1 = SigningKey::es256("k1").unwrap();
    let idp = TestIdp::start(dir.path(), jwks(&[&k1])).await;
    let path = dir.path().join("certbound.toml");
    // No IdP CA configured: the IdP is reachable only while TLS verification is off.
    let trusting = header_mode_config(&idp, "url_encoded").replace(
        &format!("idp_ca_certificates = [\"{}\"]", idp.ca_path.display()),
        "",
    );
    let lax = format!("ssl_verify = false\n{trusting}");
    std::fs::write(&path, &lax).unwrap();
    let (cb, reload) = Certbound::start_reloading(&path).await;
    cb.wait_ready().await;
    let request = |key: &SigningKey| {
        let token = key
            .sign(
                "at+jwt",
                &bound_claims(&idp.issuer, AUD, "alice-app", &pki.alice, now),
            )
            .unwrap();
        Req::new()
            .bearer(&token)
            .cert(&pki.chain_header(&pki.alice))
    };
    assert!(cb.check(&request(&k1)).await.allowed());

    // The operator turns verification back on: the IdP's certificate is not trusted any more.
    std::fs::write(&path, format!("ssl_verify = true\n{trusting}")).unwrap();
    let ok = "certbound_config_reloads_total{result=\"ok\"}";
    reload_and_wait(&cb, &reload, ok, 0).await;
    // The IdP rotates to a key certbound has not seen; a check asks for a refresh once
    // `rediscovery_lifetime` has passed. With verification on, the untrusted IdP is not believed.
    let k2 = SigningKey::es256("k2").unwrap();
    idp.set_jwks(jwks(&[&k1, &k2]));
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let hits = idp.jwks_hits();
    let a = cb.check(&request(&k2)).await;
    assert!(
        !a.allowed(),
        "a key fetched without TLS verification: {a:?}"
    );
    assert_eq!(cb.decisions("deny", "token_unknown_key").await, 1);
    assert_eq!(idp.jwks_hits(), hits, "the TLS handshake failed first");
    // Keys loaded before the change keep serving.
    assert!(cb.check(&request(&k1)).await.allowed());
    cb.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_ca_file_the_config_names_refuses_the_reload_visibly_until_the_config_drops_it()
{
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix();
    let pki = Pki::new(now);
    pki.write_root(dir.path());
    let key = SigningKey::es256("k").unwrap();
    let idp = TestIdp::start(dir.path(), jwks(&[&key])).await;
    let path = dir.path().join("certbound.toml");
    // A second CA bundle the operator means to stop trusting.
    let old_ca = Ca::root("retired client CA").unwrap();
    std::fs::write(dir.path().join("retired-ca.pem"), &old_ca.pem).unwrap();
    let both = header_mode_config(&idp, "url_encoded").replace(
        "ca_certificates = [\"client-ca.pem\"]",
        "ca_certificates = [\"client-ca.pem\", \"retired-ca.pem\"]",
    );
    std::fs::write(&path, &both).unwrap();
    let (cb, reload) = Certbound::start_reloading(&path).await;
    cb.wait_ready().await;
    let ok = "certbound_config_reloads_total{result=\"ok\"}";
    let error = "certbound_config_reloads_total{result=\"error\"}";
    let last = "certbound_config_last_reload_successful";
    assert_eq!(cb.metric(last).await, 1, "a fresh start counts as loaded");

    // Deleting the file does not stop trusting the CA: the reload is refused and says so.
    std::fs::remove_file(dir.path().join("retired-ca.pem")).unwrap();
    reload_and_wait(&cb, &reload, error, 0).await;
    assert_eq!(
        cb.metric(last).await,
        0,
        "the refusal is visible as a state"
    );
    assert_eq!(cb.metric(ok).await, 0);

    // The documented way: drop the file from the configuration; the reload then succeeds.
    std::fs::write(&path, both.replace(", \"retired-ca.pem\"", "")).unwrap();
    reload_and_wait(&cb, &reload, ok, 0).await;
    assert_eq!(cb.metric(last).await, 1);
    cb.stop().await.unwrap();
}

/// What a case expects.
enum Expect {
    Allow {
        reason: &'static str,
        sub: Option<&'static str>,
    },
    Deny {
        reason: &'static str,
        status: u16,
        error: Option<&'static str>,
    },
}

#[track_caller]
fn assert_answer(name: &str, a: &Answer, expect: &Expect) {
    match expect {
        Expect::Allow { sub, .. } => {
            assert!(a.allowed(), "{name}: expected allow, got {a:?}");
            assert_eq!(a.http_status, 200, "{name}");
            if let Some(sub) = sub {
                assert_eq!(
                    a.upstream.get("x-consumer-sub").map(String::as_str),
                    Some(*sub),
                    "{name}: {a:?}"
                );
            }
        }
        Expect::Deny { status, error, .. } => {
            assert!(!a.allowed(), "{name}: expected deny, got {a:?}");
            assert_eq!(a.http_status, *status, "{name}: {a:?}");
            let challenge = a.www_authenticate.as_deref().unwrap_or("");
            match (status, error) {
                (401 | 400 | 403, Some(e)) => {
                    assert!(
                        challenge.starts_with("Bearer realm=\"api.test\""),
                        "{name}: {challenge}"
                    );
                    assert!(
                        challenge.contains(&format!("error=\"{e}\"")),
                        "{name}: {challenge}"
                    );
                    assert!(
                        challenge.contains("error_description=\""),
                        "{name}: {challenge}"
                    );
                }
                (401, None) => assert_eq!(challenge, "Bearer realm=\"api.test\"", "{name}"),
                _ => assert!(a.www_authenticate.is_none(), "{name}: {challenge}"),
            }
            let message = match status {
                400 => "Bad Request",
                401 => "Unauthorized",
                403 => "Forbidden",
                _ => "Service Unavailable",
            };
            assert_eq!(a.body, format!("{{\"message\":\"{message}\"}}"), "{name}");
        }
    }
}

async fn run_case(cb: &Certbound, name: &str, req: Req, expect: Expect) -> Answer {
    let (decision, reason) = match &expect {
        Expect::Allow { reason, .. } => ("allow", *reason),
        Expect::Deny { reason, .. } => ("deny", *reason),
    };
    let before = cb.decisions(decision, reason).await;
    let answer = cb.check(&req).await;
    assert_answer(name, &answer, &expect);
    assert_eq!(
        cb.decisions(decision, reason).await,
        before + 1,
        "{name}: counted under {decision}/{reason}"
    );
    answer
}

fn deny(reason: &'static str) -> Expect {
    Expect::Deny {
        reason,
        status: 401,
        error: Some("invalid_token"),
    }
}

/// A token shaped by hand, for headers jsonwebtoken refuses to produce.
fn raw_token(header: Value, claims: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_mode_allows_and_denies_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix();
    let pki = Pki::new(now);
    pki.write_root(dir.path());
    let rs256 = SigningKey::rs256("rs256").unwrap();
    let rs384 = SigningKey::rsa("rs384", Algorithm::RS384).unwrap();
    let rs512 = SigningKey::rsa("rs512", Algorithm::RS512).unwrap();
    let ps256 = SigningKey::rsa("ps256", Algorithm::PS256).unwrap();
    let es256 = SigningKey::es256("es256").unwrap();
    let es384 = SigningKey::es384("es384").unwrap();
    let eddsa = SigningKey::ed25519("eddsa").unwrap();
    let idp = TestIdp::start(
        dir.path(),
        jwks(&[&rs256, &rs384, &rs512, &ps256, &es256, &es384, &eddsa]),
    )
    .await;
    let cb = Certbound::start(&header_mode_config(&idp, "url_encoded"), dir.path()).await;
    cb.wait_ready().await;

    let iss = idp.issuer.as_str();
    let alice_claims = bound_claims(iss, AUD, "alice-app", &pki.alice, now);
    let alice_token = es256.sign("at+jwt", &alice_claims).unwrap();
    let alice_cert = pki.chain_header(&pki.alice);
    let with = |claims: Value| es256.sign("at+jwt", &claims).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut c = alice_claims.clone();
        f(c.as_object_mut().unwrap());
        with(c)
    };

    // Every supported algorithm, each bound to alice.
    for key in [&rs256, &rs384, &rs512, &ps256, &es256, &es384, &eddsa] {
        let token = key.sign("at+jwt", &alice_claims).unwrap();
        let a = run_case(
            &cb,
            &format!("{:?} bound token", key.alg),
            Req::new().bearer(&token).cert(&alice_cert),
            Expect::Allow {
                reason: "bound",
                sub: Some("alice-app"),
            },
        )
        .await;
        assert_eq!(
            a.upstream.get("x-client-id").map(String::as_str),
            Some("alice-app")
        );
    }

    let hs256_with_public_key = {
        let mut h = jsonwebtoken::Header::new(Algorithm::HS256);
        h.kid = Some("es256".into());
        h.typ = Some("at+jwt".into());
        let secret = es256.jwk.to_string();
        jsonwebtoken::encode(
            &h,
            &alice_claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let forged_signature = {
        let parts: Vec<&str> = alice_token.split('.').collect();
        let mut c = alice_claims.clone();
        c["sub"] = "admin".into();
        format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(c.to_string()),
            parts[2]
        )
    };
    let stranger = SigningKey::es256("stranger").unwrap();
    let hex_cnf = {
        let hex: String = certbound_core::cert::thumbprint(pki.alice.der.as_ref())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        edit(&|c| {
            c.insert("cnf".into(), json!({ "x5t#S256": hex }));
        })
    };

    let cases: Vec<(&str, Req, Expect)> = vec![
        (
            "client-sent claim header is overwritten",
            Req::new()
                .bearer(&alice_token)
                .cert(&alice_cert)
                .header("x-consumer-sub", "admin"),
            Expect::Allow {
                reason: "bound",
                sub: Some("alice-app"),
            },
        ),
        (
            "lower-case bearer scheme",
            Req::new()
                .header("authorization", &format!("bearer {alice_token}"))
                .cert(&alice_cert),
            Expect::Allow {
                reason: "bound",
                sub: Some("alice-app"),
            },
        ),
        (
            "no token at all",
            Req::new().cert(&alice_cert),
            Expect::Deny {
                reason: "missing_token",
                status: 401,
                error: None,
            },
        ),
        (
            "basic credentials only",
            Req::new()
                .header("authorization", "Basic dXNlcjpwdw==")
                .cert(&alice_cert),
            Expect::Deny {
                reason: "missing_token",
                status: 401,
                error: None,
            },
        ),
        (
            "two authorization headers",
            Req::new()
                .bearer(&alice_token)
                .bearer(&alice_token)
                .cert(&alice_cert),
            Expect::Deny {
                reason: "malformed_authorization",
                status: 400,
                error: Some("invalid_request"),
            },
        ),
        (
            "bearer with spaces inside",
            Req::new()
                .header("authorization", "Bearer a b")
                .cert(&alice_cert),
            Expect::Deny {
                reason: "malformed_authorization",
                status: 400,
                error: Some("invalid_request"),
            },
        ),
        (
            "stolen token with another client's certificate",
            Req::new()
                .bearer(&alice_token)
                .cert(&pki.chain_header(&pki.bob)),
            deny("binding_mismatch"),
        ),
        (
            "no certificate header",
            Req::new().bearer(&alice_token),
            deny("cert_missing"),
        ),
        (
            "empty certificate header",
            Req::new().bearer(&alice_token).cert(""),
            deny("cert_missing"),
        ),
        (
            "leaf without its intermediate",
            Req::new()
                .bearer(&alice_token)
                .cert(&pki.alice.url_encoded()),
            deny("cert_untrusted"),
        ),
        (
            "expired certificate",
            Req::new()
                .bearer(&alice_token)
                .cert(&pki.chain_header(&pki.expired)),
            deny("cert_expired"),
        ),
        (
            "certificate from an untrusted CA",
            Req::new()
                .bearer(&alice_token)
                .cert(&pki.untrusted.url_encoded()),
            deny("cert_untrusted"),
        ),
        (
            "server-only certificate",
            Req::new()
                .bearer(&alice_token)
                .cert(&pki.chain_header(&pki.server_only)),
            deny("cert_not_for_client_auth"),
        ),
        (
            "damaged certificate header",
            Req::new()
                .bearer(&alice_token)
                .cert(&alice_cert.replace("MII", "XXX")),
            deny("cert_malformed"),
        ),
        (
            "certificate header is not PEM",
            Req::new().bearer(&alice_token).cert("hello"),
            deny("cert_malformed"),
        ),
        (
            "certificate header sent twice",
            Req::new()
                .bearer(&alice_token)
                .cert(&alice_cert)
                .cert(&alice_cert),
            deny("cert_header_duplicate"),
        ),
        (
            "certificate header from an untrusted hop is ignored",
            Req::new()
                .bearer(&alice_token)
                .cert(&alice_cert)
                .source("203.0.113.9"),
            deny("cert_missing"),
        ),
        (
            "trusted hop over an IPv4-mapped IPv6 address",
            Req::new()
                .bearer(&alice_token)
                .cert(&alice_cert)
                .source("::ffff:127.0.0.1"),
            Expect::Allow {
                reason: "bound",
                sub: Some("alice-app"),
            },
        ),
        (
            "trusted IPv6 hop",
            Req::new()
                .bearer(&alice_token)
                .cert(&alice_cert)
                .source("::1"),
            Expect::Allow {
                reason: "bound",
                sub: Some("alice-app"),
            },
        ),
        (
            "oversized certificate header",
            Req::new().bearer(&alice_token).cert(&"A".repeat(40 * 1024)),
            deny("cert_header_too_large"),
        ),
        (
            "unbound token under strict",
            Req::new()
                .bearer(&edit(&|c| {
                    c.remove("cnf");
                }))
                .cert(&alice_cert),
            deny("token_not_bound"),
        ),
        (
            "hex thumbprint in cnf",
            Req::new().bearer(&hex_cnf).cert(&alice_cert),
            deny("binding_malformed"),
        ),
        (
            "cnf that is not an object",
            Req::new()
                .bearer(&edit(&|c| {
                    c.insert("cnf".into(), json!("x"));
                }))
                .cert(&alice_cert),
            deny("binding_malformed"),
        ),
        (
            "forged claims",
            Req::new().bearer(&forged_signature).cert(&alice_cert),
            deny("token_signature_invalid"),
        ),
        (
            "expired token",
            Req::new()
                .bearer(&edit(&|c| {
                    c.insert("exp".into(), json!(now - 10));
                }))
                .cert(&alice_cert),
            deny("token_expired"),
        ),
        (
            "token not yet valid",
            Req::new()
                .bearer(&edit(&|c| {
                    c.insert("nbf".into(), json!(now + 600));
                }))
                .cert(&alice_cert),
            deny("token_not_yet_valid"),
        ),
        (
            "wrong issuer",
            Req::new()
                .bearer(&edit(&|c| {
                    c.insert("iss".into(), json!("https://evil.test"));
                }))
                .cert(&alice_cert),
            deny("token_issuer_mismatch"),
        ),
        (
            "wrong audience",
            Req::new()
                .bearer(&edit(&|c| {
                    c.insert("aud".into(), json!("https://other.test"));
                }))
                .cert(&alice_cert),
            deny("token_audience_mismatch"),
        ),
        (
            "missing audience",
            Req::new()
                .bearer(&edit(&|c| {
                    c.remove("aud");
                }))
                .cert(&alice_cert),
            deny("token_missing_claim"),
        ),
        (
            "missing exp",
            Req::new()
                .bearer(&edit(&|c| {
                    c.remove("exp");
                }))
                .cert(&alice_cert),
            deny("token_missing_claim"),
        ),
        (
            "HS256 signed with the public key",
            Req::new().bearer(&hs256_with_public_key).cert(&alice_cert),
            deny("token_algorithm_not_allowed"),
        ),
        (
            "alg none",
            Req::new()
                .bearer(&raw_token(
                    json!({"alg": "none", "typ": "at+jwt", "kid": "es256"}),
                    &alice_claims,
                    b"",
                ))
                .cert(&alice_cert),
            deny("token_malformed"),
        ),
        (
            "wrong typ",
            Req::new()
                .bearer(&es256.sign("dpop+jwt", &alice_claims).unwrap())
                .cert(&alice_cert),
            deny("token_type_not_allowed"),
        ),
        (
            "key the IdP never published",
            Req::new()
                .bearer(&stranger.sign("at+jwt", &alice_claims).unwrap())
                .cert(&alice_cert),
            deny("token_unknown_key"),
        ),
        (
            "garbage token",
            Req::new().bearer("abc").cert(&alice_cert),
            deny("token_malformed"),
        ),
        (
            "oversized token",
            Req::new().bearer(&"a".repeat(20 * 1024)).cert(&alice_cert),
            deny("token_too_large"),
        ),
        (
            "unknown policy",
            Req::new()
                .bearer(&alice_token)
                .cert(&alice_cert)
                .policy("payments"),
            Expect::Deny {
                reason: "unknown_policy",
                status: 403,
                error: None,
            },
        ),
    ];
    for (name, req, expect) in cases {
        run_case(&cb, name, req, expect).await;
    }

    // A claim the token lacks: the header is removed rather than passed through from the client.
    let no_sub = edit(&|c| {
        c.remove("sub");
    });
    let a = run_case(
        &cb,
        "token without sub",
        Req::new()
            .bearer(&no_sub)
            .cert(&alice_cert)
            .header("x-consumer-sub", "admin"),
        Expect::Allow {
            reason: "bound",
            sub: None,
        },
    )
    .await;
    assert!(!a.upstream.contains_key("x-consumer-sub"));
    assert_eq!(a.upstream_removed, vec!["x-consumer-sub".to_string()]);

    // Health after the whole matrix.
    assert_eq!(cb.admin_get("/healthz").await.0, 200);
    cb.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kongs_documented_base64_check_works_with_a_jwks_uri() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix();
    let pki = Pki::new(now);
    // Kong's tutorial trusts the CA that signed the client directly: here the intermediate,
    // which needs allow_partial_chain.
    std::fs::write(dir.path().join("client-ca.pem"), &pki.inter.pem).unwrap();
    let key = SigningKey::rs256("k").unwrap();
    let idp = TestIdp::start(dir.path(), jwks(&[&key])).await;
    let toml = header_mode_config(&idp, "base64_encoded").replace(
        &format!("issuer = \"{}\"", idp.issuer),
        &format!("issuer = \"{0}\"\njwks_uri = \"{0}/jwks\"", idp.issuer),
    ) + "allow_partial_chain = true\n";
    let cb = Certbound::start(&toml, dir.path()).await;
    cb.wait_ready().await;
    let token = key
        .sign(
            "JWT",
            &bound_claims(&idp.issuer, AUD, "api-client", &pki.alice, now),
        )
        .unwrap();
    // BASE64_CERT=$(openssl x509 -in client.crt -outform DER | base64 | tr -d '\n')
    run_case(
        &cb,
        "kong tutorial: with header",
        Req::new().bearer(&token).cert(&pki.alice.base64_der()),
        Expect::Allow {
            reason: "bound",
            sub: Some("api-client"),
        },
    )
    .await;
    run_case(
        &cb,
        "kong tutorial: without header",
        Req::new().bearer(&token),
        deny("cert_missing"),
    )
    .await;
    // `base64 | ...` without `tr -d '\n'` wraps at 76 columns.
    let wrapped: String = pki
        .alice
        .base64_der()
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    run_case(
        &cb,
        "kong tutorial: wrapped base64",
        Req::new().bearer(&token).cert(&wrapped),
        Expect::Allow {
            reason: "bound",
            sub: Some("api-client"),
        },
    )
    .await;
    run_case(
        &cb,
        "base64 of bob's certificate",
        Req::new().bearer(&token).cert(&pki.bob.base64_der()),
        deny("binding_mismatch"),
    )
    .await;
    cb.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_mode_binds_envoys_own_mtls_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix();
    let pki = Pki::new(now);
    let key = SigningKey::es256("k").unwrap();
    let idp = TestIdp::start(dir.path(), jwks(&[&key])).await;
    let toml = format!(
        "issuer = \"{}\"\nidp_ca_certificates = [\"{}\"]\nproof_of_possession_mtls = \"strict\"\nupstream_headers_claims = [\"sub\"]\nupstream_headers_names = [\"x-consumer-sub\"]\n",
        idp.issuer,
        idp.ca_path.display()
    );
    let cb = Certbound::start(&toml, dir.path()).await;
    cb.wait_ready().await;
    let token = key
        .sign(
            "at+jwt",
            &bound_claims(&idp.issuer, AUD, "alice-app", &pki.alice, now),
        )
        .unwrap();
    run_case(
        &cb,
        "peer: alice",
        Req::new().bearer(&token).peer(&pki.alice.url_encoded()),
        Expect::Allow {
            reason: "bound",
            sub: Some("alice-app"),
        },
    )
    .await;
    run_case(
        &cb,
        "peer: bob presents alice's token",
        Req::new().bearer(&token).peer(&pki.bob.url_encoded()),
        deny("binding_mismatch"),
    )
    .await;
    run_case(
        &cb,
        "peer: no peer certificate",
        Req::new().bearer(&token),
        deny("cert_missing"),
    )
    .await;
    // In peer mode a certificate header is not a certificate source: sending alice's
    // certificate in a header while connected as bob changes nothing.
    run_case(
        &cb,
        "peer: header cannot override the TLS peer",
        Req::new()
            .bearer(&token)
            .peer(&pki.bob.url_encoded())
            .cert(&pki.alice.url_encoded()),
        deny("binding_mismatch"),
    )
    .await;
    run_case(
        &cb,
        "peer: garbage peer certificate",
        Req::new().bearer(&token).peer("%%%"),
        deny("cert_malformed"),
    )
    .await;
    cb.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_mode_checks_only_bound_tokens_and_off_checks_none() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix();
    let pki = Pki::new(now);
    pki.write_root(dir.path());
    let key = SigningKey::es256("k").unwrap();
    let idp = TestIdp::start(dir.path(), jwks(&[&key])).await;
    let optional = Certbound::start(
        &header_mode_config(&idp, "url_encoded").replace("\"strict\"", "\"optional\""),
        dir.path(),
    )
    .await;
    let off = Certbound::start(
        &header_mode_config(&idp, "url_encoded").replace("\"strict\"", "\"off\""),
        dir.path(),
    )
    .await;
    optional.wait_ready().await;
    off.wait_ready().await;
    let bound = key
        .sign(
            "at+jwt",
            &bound_claims(&idp.issuer, AUD, "alice-app", &pki.alice, now),
        )
        .unwrap();
    let mut unbound_claims = bound_claims(&idp.issuer, AUD, "alice-app", &pki.alice, now);
    unbound_claims.as_object_mut().unwrap().remove("cnf");
    let unbound = key.sign("at+jwt", &unbound_claims).unwrap();
    let alice = pki.chain_header(&pki.alice);
    let bob = pki.chain_header(&pki.bob);

    run_case(
        &optional,
        "optional: unbound without certificate",
        Req::new().bearer(&unbound),
        Expect::Allow {
            reason: "unbound_optional",
            sub: Some("alice-app"),
        },
    )
    .await;
    run_case(
        &optional,
        "optional: bound without certificate",
        Req::new().bearer(&bound),
        deny("cert_missing"),
    )
    .await;
    run_case(
        &optional,
        "optional: bound with the wrong certificate",
        Req::new().bearer(&bound).cert(&bob),
        deny("binding_mismatch"),
    )
    .await;
    run_case(
        &optional,
        "optional: bound with its certificate",
        Req::new().bearer(&bound).cert(&alice),
        Expect::Allow {
            reason: "bound",
            sub: Some("alice-app"),
        },
    )
    .await;
    run_case(
        &optional,
        "optional: a present but untrusted certificate still denies",
        Req::new()
            .bearer(&unbound)
            .cert(&pki.untrusted.url_encoded()),
        deny("cert_untrusted"),
    )
    .await;
    run_case(
        &off,
        "off: bound token with the wrong certificate",
        Req::new().bearer(&bound).cert(&bob),
        Expect::Allow {
            reason: "pop_off",
            sub: Some("alice-app"),
        },
    )
    .await;
    let foreign = key
        .sign(
            "at+jwt",
            &bound_claims("https://evil.test", AUD, "alice-app", &pki.alice, now),
        )
        .unwrap();
    run_case(
        &off,
        "off: the token is still verified",
        Req::new().bearer(&foreign),
        deny("token_issuer_mismatch"),
    )
    .await;
    optional.stop().await.unwrap();
    off.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_at_the_idp_is_picked_up_on_the_first_unknown_kid() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix();
    let pki = Pki::new(now);
    pki.write_root(dir.path());
    let old = SigningKey::es256("old").unwrap();
    let new = SigningKey::rs256("new").unwrap();
    let idp = TestIdp::start(dir.path(), jwks(&[&old])).await;
    let cb = Certbound::start(&header_mode_config(&idp, "url_encoded"), dir.path()).await;
    cb.wait_ready().await;
    let claims = bound_claims(&idp.issuer, AUD, "alice-app", &pki.alice, now);
    let cert = pki.chain_header(&pki.alice);
    run_case(
        &cb,
        "before rotation",
        Req::new()
            .bearer(&new.sign("at+jwt", &claims).unwrap())
            .cert(&cert),
        deny("token_unknown_key"),
    )
    .await;
    let hits = idp.jwks_hits();
    idp.set_jwks(jwks(&[&new]));
    // The first unknown `kid` just asked; the next fetch may come `rediscovery_lifetime` later
    // (1 s here, the least allowed).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    run_case(
        &cb,
        "after rotation",
        Req::new()
            .bearer(&new.sign("at+jwt", &claims).unwrap())
            .cert(&cert),
        Expect::Allow {
            reason: "bound",
            sub: Some("alice-app"),
        },
    )
    .await;
    assert!(
        idp.jwks_hits() > hits,
        "the new key came from a fresh JWKS fetch"
    );
    let (_, metrics) = cb.admin_get("/metrics").await;
    assert!(
        metrics.contains("certbound_jwks_refresh_total{result=\"ok\"}"),
        "{metrics}"
    );
    cb.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_every_check_is_denied_and_the_server_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix();
    let pki = Pki::new(now);
    pki.write_root(dir.path());
    // An issuer nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let toml = format!(
        "issuer = \"https://{closed}\"\ntimeout = 300\ntrusted_ips = [\"127.0.0.1\"]\n[proof_of_possession_mtls_from_header]\ncertificate_header_name = \"x-client-cert\"\ncertificate_header_format = \"url_encoded\"\nca_certificates = [\"client-ca.pem\"]\n"
    );
    let cb = Certbound::start(&toml, dir.path()).await;
    let key = SigningKey::es256("k").unwrap();
    let token = key
        .sign(
            "at+jwt",
            &bound_claims(&format!("https://{closed}"), AUD, "a", &pki.alice, now),
        )
        .unwrap();
    assert_eq!(cb.readyz().await, 503);
    run_case(
        &cb,
        "keys never loaded",
        Req::new()
            .bearer(&token)
            .cert(&pki.chain_header(&pki.alice)),
        Expect::Deny {
            reason: "keys_unavailable",
            status: 503,
            error: None,
        },
    )
    .await;
    assert_eq!(
        cb.admin_get("/healthz").await.0,
        200,
        "alive even when not ready"
    );
    cb.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_reports_serving_once_keys_are_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::es256("k").unwrap();
    let idp = TestIdp::start(dir.path(), jwks(&[&key])).await;
    let toml = format!(
        "issuer = \"{}\"\nidp_ca_certificates = [\"{}\"]\n",
        idp.issuer,
        idp.ca_path.display()
    );
    let cb = Certbound::start(&toml, dir.path()).await;
    cb.wait_ready().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cb.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut serving = false;
    for _ in 0..50 {
        let resp = client
            .check(tonic_health::pb::HealthCheckRequest {
                service: "envoy.service.auth.v3.Authorization".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if resp.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
            serving = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(serving, "gRPC health never reported SERVING");
    // The loaded-keys gauge follows (it is refreshed with readiness, every 200 ms).
    let mut gauge = String::new();
    for _ in 0..50 {
        let (_, text) = cb.admin_get("/metrics").await;
        gauge = text
            .lines()
            .find(|l| l.starts_with("certbound_jwks_keys "))
            .unwrap_or("")
            .to_string();
        if gauge == "certbound_jwks_keys 1" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(gauge, "certbound_jwks_keys 1");
    cb.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkrequest_without_attributes_is_a_clean_deny() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::es256("k").unwrap();
    let idp = TestIdp::start(dir.path(), jwks(&[&key])).await;
    let toml = format!(
        "issuer = \"{}\"\nidp_ca_certificates = [\"{}\"]\n",
        idp.issuer,
        idp.ca_path.display()
    );
    let cb = Certbound::start(&toml, dir.path()).await;
    cb.wait_ready().await;
    let mut client = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(format!("http://{}", cb.grpc))
        .await
        .unwrap();
    let resp = client
        .check(envoy_types::ext_authz::v3::pb::CheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.status.unwrap().code, 16);
    cb.stop().await.unwrap();
}

/// One certbound per format, each fed the value its terminator would send for alice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_header_format_binds_the_same_certificate() {
    use base64::engine::general_purpose::STANDARD;
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix();
    let pki = Pki::new(now);
    pki.write_root(dir.path());
    let key = SigningKey::es256("k").unwrap();
    let idp = TestIdp::start(dir.path(), jwks(&[&key])).await;
    let token = key
        .sign(
            "at+jwt",
            &bound_claims(&idp.issuer, AUD, "alice-app", &pki.alice, now),
        )
        .unwrap();
    let hex = |t: &[u8]| t.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let alice_hash = hex(&certbound_core::cert::thumbprint(pki.alice.der.as_ref()));
    let folded = |pem: &str| pem.trim_end().replace('\n', " ");
    let b64 = |der: &[u8]| STANDARD.encode(der);

    // (format, extra config, certificate header, chain header)
    let cases: Vec<(&str, &str, String, Option<String>)> = vec![
        (
            "rfc9440",
            "certificate_chain_header_name = \"client-cert-chain\"\n",
            format!(":{}:", b64(pki.alice.der.as_ref())),
            Some(format!(":{}:", b64(pki.inter.der.as_ref()))),
        ),
        (
            "pem",
            "",
            format!("{} {}", folded(&pki.alice.pem), folded(&pki.inter.pem)),
            None,
        ),
        (
            "apache",
            "certificate_chain_header_name = \"x-client-chain\"\n",
            folded(&pki.alice.pem),
            Some(folded(&pki.inter.pem)),
        ),
        (
            "traefik",
            "",
            format!(
                "{},{}",
                b64(pki.alice.der.as_ref()),
                b64(pki.inter.der.as_ref())
            )
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
            .replace(',', "%2C"),
            None,
        ),
        (
            "xfcc",
            "",
            format!(
                "By=spiffe://mesh/gw;Hash={alice_hash};Chain=\"{}\";Subject=\"CN=alice\"",
                pki.chain_header(&pki.alice)
            ),
            None,
        ),
        (
            "haproxy",
            "certificate_chain_header_name = \"x-ssl-chain\"\n",
            b64(pki.alice.der.as_ref()),
            Some(b64(pki.inter.der.as_ref())),
        ),
        ("aws_alb", "", pki.chain_header(&pki.alice), None),
        ("auto", "", pki.chain_header(&pki.alice), None),
        (
            "auto",
            "certificate_chain_header_name = \"client-cert-chain\"\n",
            format!(":{}:", b64(pki.alice.der.as_ref())),
            Some(format!(":{}:", b64(pki.inter.der.as_ref()))),
        ),
    ];
    for (format, extra, value, chain) in cases {
        let toml = header_mode_config(&idp, format)
            .replace("\nca_certificates", &format!("\n{extra}ca_certificates"));
        let cb = Certbound::start(&toml, dir.path()).await;
        cb.wait_ready().await;
        let chain_name = extra.split('"').nth(1);
        let mut req = Req::new().bearer(&token).cert(&value);
        if let (Some(name), Some(chain)) = (chain_name, &chain) {
            req = req.header(name, chain);
        }
        run_case(
            &cb,
            &format!("{format}: alice"),
            req,
            Expect::Allow {
                reason: "bound",
                sub: Some("alice-app"),
            },
        )
        .await;
        if chain.is_some() {
            // Without its intermediates the leaf does not reach the root.
            run_case(
                &cb,
                &format!("{format}: chain header missing"),
                Req::new().bearer(&token).cert(&value),
                deny("cert_untrusted"),
            )
            .await;
        }
        cb.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xfcc_hash_alone_binds_when_the_mesh_verified_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix();
    let pki = Pki::new(now);
    pki.write_root(dir.path());
    let key = SigningKey::es256("k").unwrap();
    let idp = TestIdp::start(dir.path(), jwks(&[&key])).await;
    let token = key
        .sign(
            "at+jwt",
            &bound_claims(&idp.issuer, AUD, "alice-app", &pki.alice, now),
        )
        .unwrap();
    let hex = |t: &[u8]| t.iter().map(|b| format!("{b:02x}")).collect::<String>();
    // Istio's default XFCC: By, Hash, Subject, URI; no Cert. One element, as SANITIZE_SET writes.
    let xfcc = |leaf: &certbound_core::fixtures::Leaf| {
        format!(
            "By=spiffe://cluster.local/ns/api/sa/api;Hash={};Subject=\"\";URI=spiffe://cluster.local/ns/client/sa/alice",
            hex(&certbound_core::cert::thumbprint(leaf.der.as_ref()))
        )
    };
    let base = header_mode_config(&idp, "xfcc").replace("x-client-cert", "x-forwarded-client-cert");
    let mesh = Certbound::start(
        &base.replace("ca_certificates = [\"client-ca.pem\"]", ""),
        dir.path(),
    )
    .await;
    let with_ca = Certbound::start(&base, dir.path()).await;
    mesh.wait_ready().await;
    with_ca.wait_ready().await;
    let req = |leaf| {
        Req::new()
            .bearer(&token)
            .header("x-forwarded-client-cert", &xfcc(leaf))
    };
    run_case(
        &mesh,
        "xfcc hash: alice",
        req(&pki.alice),
        Expect::Allow {
            reason: "bound",
            sub: Some("alice-app"),
        },
    )
    .await;
    run_case(
        &mesh,
        "xfcc hash: bob",
        req(&pki.bob),
        deny("binding_mismatch"),
    )
    .await;
    // A hop appended to the header: not asked for (xfcc_elements), so refused as a duplicate.
    let appended = format!(
        "By=spiffe://cluster.local/ns/edge/sa/lb;Hash={};Subject=\"\";URI=spiffe://cluster.local/ns/x/sa/y,{}",
        hex(&[0u8; 32]),
        xfcc(&pki.alice)
    );
    run_case(
        &mesh,
        "xfcc two elements",
        Req::new()
            .bearer(&token)
            .header("x-forwarded-client-cert", &appended),
        deny("cert_header_duplicate"),
    )
    .await;
    run_case(
        &with_ca,
        "xfcc hash only, chain required",
        req(&pki.alice),
        deny("cert_unverifiable"),
    )
    .await;
    mesh.stop().await.unwrap();
    with_ca.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_policy_binds_the_element_the_local_sidecar_appended_and_checks_the_callers_spiffe_id()
{
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix();
    let pki = Pki::new(now);
    pki.write_root(dir.path());
    let key = SigningKey::es256("k").unwrap();
    let idp = TestIdp::start(dir.path(), jwks(&[&key])).await;
    let token = key
        .sign(
            "at+jwt",
            &bound_claims(&idp.issuer, AUD, "alice-app", &pki.alice, now),
        )
        .unwrap();
    let hex = |leaf: &certbound_core::fixtures::Leaf| {
        certbound_core::cert::thumbprint(leaf.der.as_ref())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    const LOCAL: &str = "spiffe://cluster.local/ns/api/sa/api";
    // What an Istio inbound sidecar appends for the caller `uri` (APPEND_FORWARD).
    let sidecar = |leaf, uri: &str| format!("By={LOCAL};Hash={};Subject=\"\";URI={uri}", hex(leaf));
    let peer_mode = header_mode_config(&idp, "xfcc");
    let peer_mode = peer_mode
        .split("[proof_of_possession_mtls_from_header]")
        .next()
        .unwrap();
    let cb = Certbound::start(
        &format!(
            "{peer_mode}[proof_of_possession_mtls_from_mesh]\n\
             local_spiffe_id = \"{LOCAL}\"\n\
             allowed_spiffe_ids = [\"spiffe://cluster.local/ns/shop/\"]\n"
        ),
        dir.path(),
    )
    .await;
    cb.wait_ready().await;
    let req = |xfcc: &str| {
        Req::new()
            .bearer(&token)
            .header("x-forwarded-client-cert", xfcc)
    };
    let alice = sidecar(&pki.alice, "spiffe://cluster.local/ns/shop/sa/alice");
    let bob = sidecar(&pki.bob, "spiffe://cluster.local/ns/shop/sa/bob");
    let allow = || Expect::Allow {
        reason: "bound",
        sub: Some("alice-app"),
    };
    run_case(&cb, "mesh: alice", req(&alice), allow()).await;
    run_case(&cb, "mesh: bob", req(&bob), deny("binding_mismatch")).await;
    // What the caller sent before the sidecar's element does not count.
    let forged = format!(
        "Hash={};URI=spiffe://cluster.local/ns/shop/sa/alice",
        hex(&pki.alice)
    );
    run_case(
        &cb,
        "mesh: bob forging alice first",
        req(&format!("{forged},{bob}")),
        deny("binding_mismatch"),
    )
    .await;
    run_case(
        &cb,
        "mesh: alice behind a gateway's element",
        req(&format!(
            "Hash={};Subject=\"\";URI=urn:edge;DNS=edge.test,{alice}",
            hex(&pki.bob)
        )),
        allow(),
    )
    .await;
    run_case(
        &cb,
        "mesh: another workload's element",
        req(&alice.replace(LOCAL, "spiffe://cluster.local/ns/x/sa/x")),
        deny("mesh_element_not_local"),
    )
    .await;
    run_case(
        &cb,
        "mesh: a caller outside the allowed namespace",
        req(&sidecar(
            &pki.alice,
            "spiffe://cluster.local/ns/batch/sa/alice",
        )),
        Expect::Deny {
            reason: "mesh_identity_not_allowed",
            status: 403,
            error: None,
        },
    )
    .await;
    // No element (no mTLS, or no sidecar): the allow-list denies even an optional binding.
    run_case(
        &cb,
        "mesh: no element",
        Req::new().bearer(&token),
        deny("cert_missing"),
    )
    .await;
    cb.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_limits_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix();
    let pki = Pki::new(now);
    pki.write_root(dir.path());
    let key = SigningKey::es256("k").unwrap();
    let idp = TestIdp::start(dir.path(), jwks(&[&key])).await;
    let claims = bound_claims(&idp.issuer, AUD, "alice-app", &pki.alice, now);
    let token = key.sign("at+jwt", &claims).unwrap();
    let chain = pki.chain_header(&pki.alice);
    let mut deep_claims = claims.clone();
    deep_claims["groups"] = json!([[["a"]]]);
    let deep = key.sign("at+jwt", &deep_claims).unwrap();
    // Each limit set just above what alice's real request needs.
    let limits = format!(
        "[limits]\nmax_certificate_header_bytes = {}\nmax_chain_length = 2\nmax_token_bytes = {}\nmax_json_depth = 3\n",
        chain.len(),
        token.len()
    );
    let cb = Certbound::start(
        &format!("{}\n{limits}", header_mode_config(&idp, "url_encoded")),
        dir.path(),
    )
    .await;
    cb.wait_ready().await;
    run_case(
        &cb,
        "within every limit",
        Req::new().bearer(&token).cert(&chain),
        Expect::Allow {
            reason: "bound",
            sub: Some("alice-app"),
        },
    )
    .await;
    run_case(
        &cb,
        "header one byte over",
        Req::new().bearer(&token).cert(&format!("{chain}%0A")),
        deny("cert_header_too_large"),
    )
    .await;
    let three = certbound_core::fixtures::url_encode_pem(
        &(pki.alice.pem.clone() + &pki.inter.pem + &pki.root.pem),
    );
    run_case(
        &cb,
        "token over the limit",
        Req::new().bearer(&format!("{token}AAAA")).cert(&chain),
        deny("token_too_large"),
    )
    .await;
    run_case(
        &cb,
        "claims nested too deep",
        Req::new().bearer(&deep).cert(&chain),
        deny("token_too_large"),
    )
    .await;
    cb.stop().await.unwrap();

    // The chain limit alone, with room in the header for three certificates.
    let limits = "[limits]\nmax_chain_length = 2\n";
    let cb = Certbound::start(
        &format!("{}\n{limits}", header_mode_config(&idp, "url_encoded")),
        dir.path(),
    )
    .await;
    cb.wait_ready().await;
    run_case(
        &cb,
        "three certificates, limit two",
        Req::new().bearer(&token).cert(&three),
        deny("cert_chain_too_long"),
    )
    .await;
    let malformed = || Expect::Deny {
        reason: "malformed_authorization",
        status: 400,
        error: Some("invalid_request"),
    };
    let basic_then_bearer = format!("Basic dXNlcjpwYXNz, Bearer {token}");
    run_case(
        &cb,
        "two authorization values, default limit one",
        Req::new()
            .header("authorization", &basic_then_bearer)
            .cert(&chain),
        malformed(),
    )
    .await;
    cb.stop().await.unwrap();

    // Room for two Authorization values: exactly one of them must be the Bearer credential.
    let limits = "[limits]\nmax_authorization_values = 2\n";
    let cb = Certbound::start(
        &format!("{}\n{limits}", header_mode_config(&idp, "url_encoded")),
        dir.path(),
    )
    .await;
    cb.wait_ready().await;
    let auth = |v: &str| Req::new().header("authorization", v).cert(&chain);
    run_case(
        &cb,
        "Basic and Bearer within the limit",
        auth(&basic_then_bearer),
        Expect::Allow {
            reason: "bound",
            sub: Some("alice-app"),
        },
    )
    .await;
    run_case(
        &cb,
        "three values, limit two",
        auth(&format!("{basic_then_bearer}, DPoP x")),
        malformed(),
    )
    .await;
    run_case(
        &cb,
        "two Bearer values within the limit",
        auth(&format!("Bearer {token}, Bearer {token}")),
        malformed(),
    )
    .await;
    run_case(
        &cb,
        "no Bearer value within the limit",
        auth("Basic dXNlcjpwYXNz, DPoP x"),
        Expect::Deny {
            reason: "missing_token",
            status: 401,
            error: None,
        },
    )
    .await;
    cb.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_policies_override_the_default_and_apply_kongs_authorization_rules() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix();
    let pki = Pki::new(now);
    pki.write_root(dir.path());
    let key = SigningKey::es256("k").unwrap();
    let partner_key = SigningKey::rs256("p").unwrap();
    let idp = TestIdp::start(dir.path(), jwks(&[&key])).await;
    let partner = TestIdp::start(dir.path(), jwks(&[&partner_key])).await;
    let toml = format!(
        "{}\n\
         [policies.payments]\n\
         scopes_required = [\"payments:read payments:write\", \"admin\"]\n\
         audience_required = [\"{AUD}\"]\n\
         claims_forbidden = [\"act\"]\n\
         hide_credentials = true\n\
         upstream_headers_claims = [\"realm_access.roles\", \"scope\"]\n\
         upstream_headers_names = [\"x-roles\", \"x-scope\"]\n\n\
         [policies.partner]\n\
         issuer = \"{partner_iss}\"\n\
         [policies.partner.proof_of_possession_mtls_from_header]\n\
         certificate_header_format = \"base64_encoded\"\n",
        header_mode_config(&idp, "url_encoded").replace(
            "[proof_of_possession_mtls_from_header]",
            "upstream_thumbprint_header = \"x-client-cert-x5t\"\n[proof_of_possession_mtls_from_header]"
        ),
        partner_iss = partner.issuer,
    )
    // The partner IdP has its own CA: trust both for HTTPS to the IdPs.
    .replace(
        &format!("idp_ca_certificates = [\"{}\"]", idp.ca_path.display()),
        &format!("idp_ca_certificates = [\"{}\", \"{}\"]", idp.ca_path.display(), partner.ca_path.display()),
    );
    let cb = Certbound::start(&toml, dir.path()).await;
    cb.wait_ready().await;
    let cert = pki.chain_header(&pki.alice);
    let token = |scope: &str, extra: Value| {
        let mut c = bound_claims(&idp.issuer, AUD, "alice-app", &pki.alice, now);
        c["scope"] = scope.into();
        c["realm_access"] = json!({"roles": ["teller", "auditor"]});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        key.sign("at+jwt", &c).unwrap()
    };
    let pay = |t: &str| Req::new().bearer(t).cert(&cert).policy("payments");

    // The default policy: no scope rules; the thumbprint header is set.
    let a = run_case(
        &cb,
        "default policy",
        Req::new().bearer(&token("openid", json!({}))).cert(&cert),
        Expect::Allow {
            reason: "bound",
            sub: Some("alice-app"),
        },
    )
    .await;
    assert_eq!(a.upstream.get("x-client-cert-x5t"), Some(&pki.alice.x5t()));
    assert_eq!(
        a.metadata.get("policy").map(String::as_str),
        Some("default")
    );
    assert_eq!(a.metadata.get("x5t"), Some(&pki.alice.x5t()));
    assert_eq!(a.metadata.get("sub").map(String::as_str), Some("alice-app"));

    // payments: all words of one alternative, or the other alternative.
    let a = run_case(
        &cb,
        "payments: both scopes",
        pay(&token("openid payments:read payments:write", json!({}))),
        Expect::Allow {
            reason: "bound",
            sub: None,
        },
    )
    .await;
    assert_eq!(
        a.upstream.get("x-roles").map(String::as_str),
        Some("teller,auditor")
    );
    assert_eq!(
        a.upstream.get("x-scope").map(String::as_str),
        Some("openid payments:read payments:write")
    );
    let mut removed = a.upstream_removed.clone();
    removed.sort();
    // Its own header mapping replaces the default's (x-consumer-sub, x-client-id are not set),
    // and hide_credentials strips the credentials.
    assert!(!a.upstream.contains_key("x-consumer-sub"));
    assert_eq!(
        removed,
        vec!["authorization", "x-client-cert"],
        "hide_credentials"
    );
    assert_eq!(
        a.metadata.get("policy").map(String::as_str),
        Some("payments")
    );
    run_case(
        &cb,
        "payments: the other alternative",
        pay(&token("admin", json!({}))),
        Expect::Allow {
            reason: "bound",
            sub: None,
        },
    )
    .await;
    let a = run_case(
        &cb,
        "payments: half of an alternative",
        pay(&token("payments:read", json!({}))),
        Expect::Deny {
            reason: "insufficient_scope",
            status: 403,
            error: Some("insufficient_scope"),
        },
    )
    .await;
    assert!(a
        .www_authenticate
        .unwrap()
        .ends_with("scope=\"payments:read payments:write\""));
    run_case(
        &cb,
        "payments: scope as an array",
        pay(&token(
            "",
            json!({"scope": ["payments:write", "payments:read"]}),
        )),
        Expect::Allow {
            reason: "bound",
            sub: None,
        },
    )
    .await;
    run_case(
        &cb,
        "payments: forbidden claim",
        pay(&token("admin", json!({"act": {"sub": "someone-else"}}))),
        Expect::Deny {
            reason: "forbidden_claim",
            status: 403,
            error: Some("insufficient_scope"),
        },
    )
    .await;
    // `audience` (401 invalid_token) still applies in every policy; audience_required is on top.
    run_case(
        &cb,
        "payments: audience outside `audience`",
        pay(&token("admin", json!({"aud": "https://other.test"}))),
        deny("token_audience_mismatch"),
    )
    .await;
    run_case(
        &cb,
        "payments: binding still enforced",
        Req::new()
            .bearer(&token("admin", json!({})))
            .cert(&pki.chain_header(&pki.bob))
            .policy("payments"),
        deny("binding_mismatch"),
    )
    .await;

    // partner: another issuer with its own keys (each policy's keys come from its own issuer,
    // so a token from the other issuer names a key this policy does not have), and its own
    // header format.
    // base64_encoded: leaf and intermediate as concatenated DER.
    let partner_cert = {
        use base64::engine::general_purpose::STANDARD;
        STANDARD.encode([pki.alice.der.as_ref(), pki.inter.der.as_ref()].concat())
    };
    let partner_token = partner_key
        .sign(
            "at+jwt",
            &bound_claims(&partner.issuer, AUD, "partner-app", &pki.alice, now),
        )
        .unwrap();
    run_case(
        &cb,
        "partner: its issuer",
        Req::new()
            .bearer(&partner_token)
            .cert(&partner_cert)
            .policy("partner"),
        Expect::Allow {
            reason: "bound",
            sub: Some("partner-app"),
        },
    )
    .await;
    run_case(
        &cb,
        "partner token on the default policy",
        Req::new().bearer(&partner_token).cert(&cert),
        deny("token_unknown_key"),
    )
    .await;
    run_case(
        &cb,
        "default token on the partner policy",
        Req::new()
            .bearer(&token("admin", json!({})))
            .cert(&partner_cert)
            .policy("partner"),
        deny("token_unknown_key"),
    )
    .await;
    run_case(
        &cb,
        "unknown policy",
        Req::new()
            .bearer(&token("admin", json!({})))
            .cert(&cert)
            .policy("nope"),
        Expect::Deny {
            reason: "unknown_policy",
            status: 403,
            error: None,
        },
    )
    .await;
    cb.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tokens_are_introspected_bound_cached_and_routed_as_kong_does() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix();
    let pki = Pki::new(now);
    pki.write_root(dir.path());
    let key = SigningKey::es256("k").unwrap();
    let idp = TestIdp::start(dir.path(), jwks(&[&key])).await;
    let toml = header_mode_config(&idp, "url_encoded").replace(
        "auth_methods = [\"bearer\"]",
        &format!("auth_methods = [\"bearer\", \"introspection\"]\nclient_id = [\"{}\"]\nclient_secret = [\"{}\"]", RS_CLIENT.0, RS_CLIENT.1),
    );
    let cb = Certbound::start(&toml, dir.path()).await;
    cb.wait_ready().await;
    let cert = pki.chain_header(&pki.alice);
    let active = |extra: Value| {
        let mut r = json!({"active": true, "iss": idp.issuer, "aud": AUD, "sub": "alice-app", "client_id": "alice-app",
                            "exp": now + 600, "token_type": "Bearer", "cnf": {"x5t#S256": pki.alice.x5t()}});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };
    idp.set_introspection("opaque-alice", active(json!({})));
    let mut unbound = active(json!({}));
    unbound.as_object_mut().unwrap().remove("cnf");
    idp.set_introspection("opaque-unbound", unbound);
    idp.set_introspection("opaque-expired", active(json!({"exp": now - 30})));
    idp.set_introspection(
        "opaque-other-aud",
        active(json!({"aud": "https://other.test"})),
    );
    idp.set_introspection("opaque-revoked", json!({"active": false}));
    idp.set_introspection("opaque-truthy", json!({"active": "true", "sub": "x"}));

    run_case(
        &cb,
        "opaque: alice",
        Req::new().bearer("opaque-alice").cert(&cert),
        Expect::Allow {
            reason: "bound",
            sub: Some("alice-app"),
        },
    )
    .await;
    run_case(
        &cb,
        "opaque: stolen with bob's certificate",
        Req::new()
            .bearer("opaque-alice")
            .cert(&pki.chain_header(&pki.bob)),
        deny("binding_mismatch"),
    )
    .await;
    run_case(
        &cb,
        "opaque: unbound under strict",
        Req::new().bearer("opaque-unbound").cert(&cert),
        deny("token_not_bound"),
    )
    .await;
    run_case(
        &cb,
        "opaque: expired",
        Req::new().bearer("opaque-expired").cert(&cert),
        deny("token_expired"),
    )
    .await;
    run_case(
        &cb,
        "opaque: wrong audience",
        Req::new().bearer("opaque-other-aud").cert(&cert),
        deny("token_audience_mismatch"),
    )
    .await;
    run_case(
        &cb,
        "opaque: inactive",
        Req::new().bearer("opaque-revoked").cert(&cert),
        deny("token_inactive"),
    )
    .await;
    run_case(
        &cb,
        "opaque: active must be exactly true",
        Req::new().bearer("opaque-truthy").cert(&cert),
        deny("token_inactive"),
    )
    .await;
    run_case(
        &cb,
        "opaque: unknown to the IdP",
        Req::new().bearer("never-issued").cert(&cert),
        deny("token_inactive"),
    )
    .await;

    // Cached by token hash: repeating a checked token (active or not) asks the IdP nothing.
    let calls = idp.introspection_calls();
    for t in ["opaque-alice", "opaque-revoked"] {
        cb.check(&Req::new().bearer(t).cert(&cert)).await;
    }
    assert_eq!(idp.introspection_calls(), calls);
    // At most one introspection of the same token in flight.
    idp.set_introspection("opaque-burst", active(json!({})));
    let burst_req = Req::new().bearer("opaque-burst").cert(&cert);
    let burst = (0..16).map(|_| cb.check(&burst_req));
    let answers = futures::future::join_all(burst).await;
    assert!(answers.iter().all(Answer::allowed));
    assert_eq!(idp.introspection_calls(), calls + 1);

    // JWT-shaped tokens go to bearer when it is on: the IdP is not asked.
    let jwt = key
        .sign(
            "at+jwt",
            &bound_claims(&idp.issuer, AUD, "alice-app", &pki.alice, now),
        )
        .unwrap();
    let calls = idp.introspection_calls();
    run_case(
        &cb,
        "JWT with both methods on",
        Req::new().bearer(&jwt).cert(&cert),
        Expect::Allow {
            reason: "bound",
            sub: Some("alice-app"),
        },
    )
    .await;
    assert_eq!(idp.introspection_calls(), calls);
    cb.stop().await.unwrap();

    // With introspect_jwt_tokens, JWTs are introspected too (this IdP does not know the JWT).
    let cb = Certbound::start(
        &toml.replace("leeway = 0", "leeway = 0\nintrospect_jwt_tokens = true"),
        dir.path(),
    )
    .await;
    cb.wait_ready().await;
    run_case(
        &cb,
        "JWT introspected",
        Req::new().bearer(&jwt).cert(&cert),
        deny("token_inactive"),
    )
    .await;
    cb.stop().await.unwrap();

    // Wrong client credentials: the IdP refuses (401), which is not an answer about the token.
    let bad = Certbound::start(&toml.replace(RS_CLIENT.1, "wrong"), dir.path()).await;
    bad.wait_ready().await;
    run_case(
        &bad,
        "introspection refused",
        Req::new().bearer("opaque-alice").cert(&cert),
        Expect::Deny {
            reason: "introspection_unavailable",
            status: 503,
            error: None,
        },
    )
    .await;
    bad.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_swaps_the_config_without_failing_a_check_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix();
    let pki = Pki::new(now);
    pki.write_root(dir.path());
    let key = SigningKey::es256("k").unwrap();
    let idp = TestIdp::start(dir.path(), jwks(&[&key])).await;
    let path = dir.path().join("certbound.toml");
    let v1 = header_mode_config(&idp, "url_encoded");
    std::fs::write(&path, &v1).unwrap();
    let (cb, reload) = Certbound::start_reloading(&path).await;
    cb.wait_ready().await;
    let token = key
        .sign(
            "at+jwt",
            &bound_claims(&idp.issuer, AUD, "alice-app", &pki.alice, now),
        )
        .unwrap();
    let req = Req::new()
        .bearer(&token)
        .cert(&pki.chain_header(&pki.alice));

    // Load: four clients checking back to back for the whole test.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, req, grpc) = (stop.clone(), req.clone(), cb.grpc);
        load.push(tokio::spawn(async move {
            let mut client = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(format!("http://{grpc}")).await.unwrap();
            let (mut ok, mut failed) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client.check(req.to_proto()).await {
                    Ok(r) if r.get_ref().status.as_ref().is_some_and(|s| s.code == 0) => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        }));
    }

    let header_now = || async {
        cb.check(&req)
            .await
            .upstream
            .keys()
            .filter(|k| k.starts_with("x-"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(header_now().await.contains(&"x-consumer-sub".to_string()));
    // A valid change: another upstream header name. Applied on the trigger (SIGHUP in `serve`).
    for round in 0..3 {
        let name = format!("x-sub-v{round}");
        std::fs::write(
            &path,
            v1.replace("\"x-consumer-sub\"", &format!("\"{name}\"")),
        )
        .unwrap();
        let before = cb
            .metric("certbound_config_reloads_total{result=\"ok\"}")
            .await;
        reload.send(()).unwrap();
        for _ in 0..100 {
            if cb
                .metric("certbound_config_reloads_total{result=\"ok\"}")
                .await
                > before
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(header_now().await.contains(&name), "round {round}");
    }
    // An invalid change is refused; the previous config keeps serving.
    std::fs::write(&path, v1.replace("url_encoded", "carrier_pigeon")).unwrap();
    reload.send(()).unwrap();
    for _ in 0..100 {
        if cb
            .metric("certbound_config_reloads_total{result=\"error\"}")
            .await
            == 1
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        cb.metric("certbound_config_reloads_total{result=\"error\"}")
            .await,
        1
    );
    assert!(header_now().await.contains(&"x-sub-v2".to_string()));
    assert!(cb.readyz().await == 200, "keys survive reloads");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for task in load {
        let (ok, failed) = task.await.unwrap();
        assert_eq!(failed, 0, "a check failed during a reload");
        total += ok;
    }
    assert!(total > 0);
    cb.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_pick_the_policy_by_host_path_and_method_unless_the_route_names_one() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix();
    let pki = Pki::new(now);
    pki.write_root(dir.path());
    let key = SigningKey::es256("k").unwrap();
    let idp = TestIdp::start(dir.path(), jwks(&[&key])).await;
    let toml = format!(
        "unmatched_route = \"deny\"\n{}\n\
         [policies.strict]\n\
         scopes_required = [\"payments\"]\n\n\
         [[routes]]\n\
         hosts = [\"api.test\"]\n\
         paths = [\"/\"]\n\
         policy = \"default\"\n\n\
         [[routes]]\n\
         hosts = [\"api.test\"]\n\
         paths = [\"/payments\", \"~/accounts/\\\\d+$\"]\n\
         methods = [\"POST\"]\n\
         policy = \"strict\"\n",
        header_mode_config(&idp, "url_encoded"),
    );
    let cb = Certbound::start(&toml, dir.path()).await;
    cb.wait_ready().await;
    let cert = pki.chain_header(&pki.alice);
    let token = key
        .sign(
            "at+jwt",
            &bound_claims(&idp.issuer, AUD, "alice-app", &pki.alice, now),
        )
        .unwrap();
    let to = |authority: &str, method: &str, path: &str| {
        Req::default()
            .header(":authority", authority)
            .bearer(&token)
            .cert(&cert)
            .header(":method", method)
            .header(":path", path)
    };
    let req = |method: &str, path: &str| to("api.test", method, path);
    let strict = || Expect::Deny {
        reason: "insufficient_scope",
        status: 403,
        error: Some("insufficient_scope"),
    };
    let allowed = || Expect::Allow {
        reason: "bound",
        sub: Some("alice-app"),
    };
    run_case(
        &cb,
        "POST /payments: strict",
        req("POST", "/payments/1?x=1"),
        strict(),
    )
    .await;
    run_case(
        &cb,
        "POST /accounts/7: strict",
        req("POST", "/accounts/7"),
        strict(),
    )
    .await;
    run_case(
        &cb,
        "GET /payments: default",
        req("GET", "/payments/1"),
        allowed(),
    )
    .await;
    run_case(
        &cb,
        "POST /accounts/7/x: default",
        req("POST", "/accounts/7/x"),
        allowed(),
    )
    .await;
    run_case(
        &cb,
        "the route's context_extensions win",
        req("GET", "/public").policy("strict"),
        strict(),
    )
    .await;
    run_case(
        &cb,
        "no rule for the host: denied",
        to("other.test", "GET", "/"),
        Expect::Deny {
            reason: "no_matching_route",
            status: 403,
            error: None,
        },
    )
    .await;
}
