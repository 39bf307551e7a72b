#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const POP_FROM_HEADER: &str = include_str!("../../tests/kong/mtls-pop-from-header.yaml");
const SCOPES: &str = include_str!("../../tests/kong/services-and-routes.yaml");
const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn env(name: &str) -> Option<String> {
    match name {
        "DECK_ISSUER" => Some("https://idp.example/realms/master".into()),
        "DECK_CLIENT_ID" => Some("kong".into()),
        "DECK_CLIENT_SECRET" => Some("s3cret".into()),
        "DECK_CA_CERT_ID" => Some("0b8c6e2a-7c1f-4f6e-9d6b-2f0f5b3c1a11".into()),
        "DECK_CA_CERT_PEM" => Some(PEM.into()),
        "DECK_CACHE_TTL" => Some("120".into()),
        _ => None,
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn run(yaml: &str) -> Import {
    import(yaml, &env, &Options::default()).unwrap()
}

fn toml_of(i: &Import) -> toml::Table {
    toml::from_str(&i.toml).unwrap()
}

fn has_note(i: &Import, field: &str, words: &str) -> bool {
    i.notes
        .iter()
        .any(|n| n.field == field && n.message.contains(words))
}

fn global(plugin: &str) -> String {
    format!("_format_version: \"3.0\"\nplugins:\n  - name: openid-connect\n    config:\n{plugin}")
}

#[test]
fn documented_pop_from_header_example_becomes_the_default_policy() {
    let i = run(POP_FROM_HEADER);
    let t = toml_of(&i);
    assert_eq!(
        t["issuer"].as_str(),
        Some("https://idp.example/realms/master")
    );
    assert_eq!(t["client_id"].as_array().unwrap()[0].as_str(), Some("kong"));
    assert_eq!(t["proof_of_possession_mtls"].as_str(), Some("strict"));
    assert_eq!(t["auth_methods"].as_array().unwrap().len(), 1);
    let h = t["proof_of_possession_mtls_from_header"]
        .as_table()
        .unwrap();
    assert_eq!(h["certificate_header_name"].as_str(), Some("x-client-cert"));
    assert_eq!(
        h["certificate_header_format"].as_str(),
        Some("base64_encoded")
    );
    assert_eq!(h["ssl_verify"].as_bool(), Some(true));
    let ca = "kong-ca-0b8c6e2a-7c1f-4f6e-9d6b-2f0f5b3c1a11.pem";
    assert_eq!(
        h["ca_certificates"].as_array().unwrap()[0].as_str(),
        Some(ca)
    );
    assert_eq!(i.files, vec![(PathBuf::from(ca), PEM.to_string())]);
    assert!(t.get("policies").is_none());
    // The only note is the trusted proxies Kong keeps in kong.conf.
    assert_eq!(i.notes.len(), 1, "{:?}", i.notes);
    assert!(has_note(&i, "secure_source", "trusted_ips"));
}

#[test]
fn unset_placeholders_are_kept_verbatim_and_reported() {
    let i = import(POP_FROM_HEADER, &no_env, &Options::default()).unwrap();
    let t = toml_of(&i);
    assert_eq!(t["issuer"].as_str(), Some("${{ env \"DECK_ISSUER\" }}"));
    for var in [
        "DECK_ISSUER",
        "DECK_CLIENT_ID",
        "DECK_CLIENT_SECRET",
        "DECK_CA_CERT_ID",
    ] {
        assert!(
            i.notes.iter().any(|n| n.message.contains(var)),
            "{var}: {:?}",
            i.notes
        );
    }
    // The CA entity's id is unresolved too, so no PEM can be matched: the report says where
    // to put it.
    assert!(i.files.is_empty());
    assert!(has_note(
        &i,
        "proof_of_possession_mtls_from_header.ca_certificates",
        "put that CA's PEM in kong-ca-"
    ));
}

#[test]
fn a_whole_placeholder_takes_the_type_of_its_value() {
    let i = run(SCOPES);
    let t = toml_of(&i);
    let admin = t["policies"]["payments-admin"].as_table().unwrap();
    assert_eq!(admin["cache_ttl"].as_integer(), Some(120));
}

#[test]
fn routes_pick_the_most_specific_plugin_as_kong_does() {
    let i = run(SCOPES);
    let t = toml_of(&i);
    assert_eq!(t["unmatched_route"].as_str(), Some("deny"));
    let rule = |name: &str| {
        t["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"].as_str() == Some(name))
            .unwrap()
            .as_table()
            .unwrap()
            .clone()
    };
    assert_eq!(rule("payments-api")["policy"].as_str(), Some("payments"));
    assert_eq!(
        rule("payments-api")["hosts"][0].as_str(),
        Some("api.example")
    );
    assert_eq!(rule("payments-api")["methods"].as_array().unwrap().len(), 2);
    let admin = rule("payments-admin");
    assert_eq!(admin["policy"].as_str(), Some("payments-admin"));
    assert_eq!(admin["paths"][0].as_str(), Some("~/payments/admin/\\d+$"));
    // The global plugin is the default policy.
    assert_eq!(rule("status")["policy"].as_str(), Some("default"));
    // Envoy only routes: its routes carry no ext_authz settings at all.
    assert!(!i.envoy.contains("typed_per_filter_config"), "{}", i.envoy);
    let routes = envoy_routes(&i);
    let admin = &routes[position(&routes, "payments-admin")];
    assert_eq!(
        admin["match"]["safe_regex"]["regex"].as_str(),
        Some("/payments/admin/\\d+")
    );
    assert_eq!(admin["route"]["cluster"].as_str(), Some("payments"));
}

#[test]
fn a_route_plugin_does_not_inherit_its_service_plugin() {
    let i = run(SCOPES);
    let t = toml_of(&i);
    let admin = t["policies"]["payments-admin"].as_table().unwrap();
    // The service plugin requires scopes and hides credentials; Kong runs only the route's
    // plugin, which does neither.
    assert_eq!(admin["scopes_required"].as_array().unwrap().len(), 0);
    assert!(admin.get("hide_credentials").is_none());
    assert_eq!(admin["proof_of_possession_mtls"].as_str(), Some("optional"));
    let payments = t["policies"]["payments"].as_table().unwrap();
    assert_eq!(payments["scopes_required"].as_array().unwrap().len(), 2);
    assert_eq!(payments["hide_credentials"].as_bool(), Some(true));
    assert_eq!(payments["client_id"].as_array().unwrap().len(), 0);
    let h = payments["proof_of_possession_mtls_from_header"]
        .as_table()
        .unwrap();
    assert_eq!(h["revocation_check_mode"].as_str(), Some("STRICT"));
    // The default policy's secure_source and ssl_verify are written with Kong's defaults, so
    // the named policy does not take them over from the default one by inheritance.
    assert_eq!(h["secure_source"].as_bool(), Some(true));
}

#[test]
fn kong_audience_is_not_taken_for_a_token_check() {
    let i = run(SCOPES);
    let t = toml_of(&i);
    let payments = t["policies"]["payments"].as_table().unwrap();
    assert!(payments.get("audience").is_none());
    assert_eq!(
        payments["audience_required"].as_array().unwrap()[0].as_str(),
        Some("https://payments.example")
    );
    assert!(has_note(&i, "audience", "authorization endpoint"));
    assert!(has_note(&i, "cache_tokens_salt", "token-endpoint cache"));
}

#[test]
fn missing_proof_of_possession_is_written_as_kong_default_off() {
    let i = run(&global(
        "      issuer: https://idp.example\n      auth_methods: [bearer]\n",
    ));
    let t = toml_of(&i);
    assert_eq!(t["proof_of_possession_mtls"].as_str(), Some("off"));
    assert!(has_note(
        &i,
        "proof_of_possession_mtls",
        "Kong's default is `off`"
    ));
}

#[test]
fn unknown_proof_of_possession_mode_refuses_the_import() {
    let e = import(
        &global("      issuer: https://idp.example\n      proof_of_possession_mtls: sometimes\n"),
        &env,
        &Options::default(),
    )
    .unwrap_err();
    assert!(
        matches!(e, ImportError::Refused(ref n) if n[0].field == "proof_of_possession_mtls"),
        "{e}"
    );
}

#[test]
fn rules_certbound_cannot_enforce_refuse_the_import() {
    for rule in [
        "groups_required: [admins]",
        "roles_required: [admin]",
        "consumer_claim: [sub]",
    ] {
        let e = import(
            &global(&format!(
                "      issuer: https://idp.example\n      proof_of_possession_mtls: strict\n      {rule}\n"
            )),
            &env,
            &Options::default(),
        )
        .unwrap_err();
        assert!(matches!(e, ImportError::Refused(_)), "{rule}: {e}");
    }
    // Switched off or empty, they restrict nothing.
    let i = run(&global(
        "      issuer: https://idp.example\n      groups_required: []\n      proof_of_possession_dpop: \"off\"\n      consumer_claim: [sub]\n      consumer_optional: true\n",
    ));
    assert!(toml_of(&i).get("groups_required").is_none());
}

#[test]
fn dpop_keys_are_carried_and_the_nonce_secret_is_asked_for() {
    let i = run(&global(
        "      issuer: https://idp.example\n      proof_of_possession_dpop: optional\n      dpop_proof_lifetime: 120\n      dpop_use_nonce: true\n",
    ));
    let t = toml_of(&i);
    assert_eq!(t["proof_of_possession_dpop"].as_str(), Some("optional"));
    assert_eq!(t["dpop_proof_lifetime"].as_integer(), Some(120));
    assert_eq!(t["dpop_use_nonce"].as_bool(), Some(true));
    assert!(has_note(&i, "dpop_use_nonce", "dpop_nonce_secret"));
}

#[test]
fn unimplemented_auth_methods_are_dropped_and_reported() {
    let i = run(&global(
        "      issuer: https://idp.example\n      auth_methods: [bearer, session, password]\n",
    ));
    let t = toml_of(&i);
    assert_eq!(t["auth_methods"].as_array().unwrap().len(), 1);
    assert!(has_note(&i, "auth_methods", "session, password dropped"));

    let e = import(
        &global("      issuer: https://idp.example\n      auth_methods: [password]\n"),
        &env,
        &Options::default(),
    )
    .unwrap_err();
    assert!(matches!(e, ImportError::Refused(_)), "{e}");
}

#[test]
fn a_value_of_the_wrong_type_refuses_the_import() {
    let e = import(
        &global("      issuer: https://idp.example\n      cache_ttl: soon\n"),
        &env,
        &Options::default(),
    )
    .unwrap_err();
    assert!(
        matches!(e, ImportError::Refused(ref n) if n[0].field == "cache_ttl"),
        "{e}"
    );
}

#[test]
fn a_named_policy_that_cannot_drop_the_default_header_table_is_refused() {
    let yaml = format!(
        "{}services:\n  - name: s\n    plugins:\n      - name: openid-connect\n        config:\n          issuer: https://idp.example\n          proof_of_possession_mtls: strict\n",
        global("      issuer: https://idp.example\n      proof_of_possession_mtls: strict\n      proof_of_possession_mtls_from_header:\n        certificate_header_name: x-client-cert\n        certificate_header_format: url_encoded\n        ca_certificates: [ca]\n")
    );
    let e = import(&yaml, &env, &Options::default()).unwrap_err();
    assert!(
        matches!(e, ImportError::Refused(ref n) if n[0].field == "proof_of_possession_mtls_from_header"),
        "{e}"
    );
}

#[test]
fn a_route_no_plugin_covers_gets_a_rule_that_does_not_authenticate_and_is_reported() {
    let yaml = "_format_version: \"3.0\"\nservices:\n  - name: s\n    plugins:\n      - name: openid-connect\n        config: { issuer: \"https://idp.example\", auth_methods: [bearer], proof_of_possession_mtls: strict }\n    routes:\n      - { name: a, paths: [/a] }\n  - name: open\n    routes:\n      - { name: b, paths: [/b] }\n";
    let i = run(yaml);
    let c = config_of(&i);
    assert_eq!(decide(&c, "h", "/b/x", "GET"), "open");
    assert_eq!(decide(&c, "h", "/a", "GET"), "s");
    assert!(i
        .notes
        .iter()
        .any(|n| n.location == "route b" && n.message.contains("does not authenticate")));
    // check-config names it too.
    assert!(c
        .warnings
        .iter()
        .any(|w| w.key == "routes[1] (b)" && w.message.contains("authenticate = false")));
    assert!(!i.envoy.contains("disabled"), "{}", i.envoy);
    // No global plugin: the default policy is a copy of the only named one.
    let t = toml_of(&i);
    assert_eq!(t["proof_of_possession_mtls"].as_str(), Some("strict"));
    assert!(t["policies"].get("s").is_some());
}

#[test]
fn process_wide_keys_keep_tls_verification_unless_every_plugin_turns_it_off() {
    let yaml = format!(
        "{}services:\n  - name: s\n    plugins:\n      - name: openid-connect\n        config: {{ issuer: \"https://idp.example\", ssl_verify: true }}\n",
        global("      issuer: https://idp.example\n      ssl_verify: false\n      timeout: 5000\n")
    );
    let i = run(&yaml);
    let t = toml_of(&i);
    assert!(t.get("ssl_verify").is_none());
    assert_eq!(t["timeout"].as_integer(), Some(5000));
    assert!(has_note(&i, "ssl_verify", "stays on"));
    let i = run(&global(
        "      issuer: https://idp.example\n      ssl_verify: false\n",
    ));
    assert_eq!(toml_of(&i)["ssl_verify"].as_bool(), Some(false));
}

#[test]
fn the_discovery_url_form_of_issuer_becomes_the_issuer() {
    let i = run(&global(
        "      issuer: https://idp.example/realms/x/.well-known/openid-configuration\n",
    ));
    assert_eq!(
        toml_of(&i)["issuer"].as_str(),
        Some("https://idp.example/realms/x")
    );
}

#[test]
fn files_that_are_not_decks_for_kong_3_are_refused() {
    for (yaml, words) in [
        ("plugins: []\n", "_format_version"),
        ("_format_version: \"1.1\"\n", "\"3.0\""),
        (
            "_format_version: \"3.0\"\nplugins: []\n",
            "no enabled openid-connect",
        ),
        ("- a\n- b\n", "not a decK mapping"),
    ] {
        let e = import(yaml, &env, &Options::default()).unwrap_err();
        assert!(e.to_string().contains(words), "{yaml}: {e}");
    }
    assert!(matches!(
        import(":\n  - [", &env, &Options::default()),
        Err(ImportError::Yaml(_))
    ));
}

#[test]
fn disabled_and_consumer_plugins_are_skipped_and_reported() {
    let yaml = "_format_version: \"3.0\"\nplugins:\n  - name: openid-connect\n    config: { issuer: \"https://idp.example\" }\n  - name: openid-connect\n    enabled: false\n    service: s\n    config: { issuer: \"https://other.example\" }\n  - name: openid-connect\n    consumer: alice\n    config: { issuer: \"https://other.example\" }\n";
    let i = run(yaml);
    assert!(toml_of(&i).get("policies").is_none());
    assert!(has_note(&i, "enabled", "never runs"));
    assert!(has_note(&i, "consumer", "no consumers"));
}

/// The Envoy routes as YAML, in the order Envoy tries them.
fn envoy_routes(i: &Import) -> Vec<serde_yaml_ng::Value> {
    let y: serde_yaml_ng::Value = serde_yaml_ng::from_str(&i.envoy).unwrap();
    y["routes"].as_sequence().unwrap().clone()
}

fn position(routes: &[serde_yaml_ng::Value], name: &str) -> usize {
    routes
        .iter()
        .position(|r| r["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no route {name}"))
}

fn header_regex(route: &serde_yaml_ng::Value, header: &str) -> Option<String> {
    route["match"]["headers"]
        .as_sequence()?
        .iter()
        .find(|h| h["name"].as_str() == Some(header))
        .and_then(|h| h["string_match"]["safe_regex"]["regex"].as_str())
        .map(str::to_string)
}

const PROTECTED: &str =
    "          - name: openid-connect\n            config: { issuer: \"https://idp.example\", auth_methods: [bearer], proof_of_possession_mtls: strict }\n";

#[test]
fn a_catch_all_route_listed_first_does_not_shadow_a_longer_protected_path() {
    // Kong picks the longest plain path; Envoy the first match. decK order must not matter.
    let yaml = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: api\n    routes:\n      - name: docs\n        paths: [/]\n      - name: admin\n        paths: [/admin]\n        plugins:\n{PROTECTED}"
    );
    let i = run(&yaml);
    let routes = envoy_routes(&i);
    assert!(position(&routes, "admin") < position(&routes, "docs"));
    let admin = &routes[position(&routes, "admin")];
    assert!(admin["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["disabled"].is_null());
}

#[test]
fn kong_methods_and_hosts_become_envoy_header_matchers() {
    let yaml = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: api\n    routes:\n      - name: read\n        paths: [/items]\n        methods: [GET]\n      - name: write\n        paths: [/items]\n        methods: [POST, PUT]\n        hosts: [api.example, \"*.api.example\"]\n        plugins:\n{PROTECTED}"
    );
    let i = run(&yaml);
    let routes = envoy_routes(&i);
    let read = &routes[position(&routes, "read")];
    let write = &routes[position(&routes, "write")];
    assert_eq!(header_regex(read, ":method").as_deref(), Some("GET"));
    assert_eq!(header_regex(write, ":method").as_deref(), Some("POST|PUT"));
    assert_eq!(header_regex(read, ":authority"), None);
    let host = regex::Regex::new(&format!(
        "^(?:{})$",
        header_regex(write, ":authority").unwrap()
    ))
    .unwrap();
    for h in ["api.example", "API.example:8443", "a.b.api.example"] {
        assert!(host.is_match(h), "{h}");
    }
    for h in ["evil.example", "api.example.evil", "xapi.example"] {
        assert!(!host.is_match(h), "{h}");
    }
    // More match fields come first in Kong: the host-and-method route before the method-only one.
    assert!(position(&routes, "write") < position(&routes, "read"));
}

#[test]
fn a_regex_path_comes_before_plain_paths_as_in_kong() {
    let yaml = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: api\n    routes:\n      - name: open\n        paths: [/users/public/profile]\n      - name: users\n        paths: [\"~/users/\\\\w+\"]\n        plugins:\n{PROTECTED}"
    );
    let i = run(&yaml);
    let routes = envoy_routes(&i);
    assert!(position(&routes, "users") < position(&routes, "open"));
}

#[test]
fn routes_kong_ranks_equally_refuse_the_import() {
    for (what, open, protected) in [
        (
            "two overlapping regex paths of one regex_priority",
            "paths: [\"~/a/.*\"]",
            "paths: [\"~/a/b\"]",
        ),
        ("the same path twice", "paths: [/a]", "paths: [/a]"),
    ] {
        let yaml = format!(
            "_format_version: \"3.0\"\nservices:\n  - name: api\n    routes:\n      - name: open\n        {open}\n      - name: guarded\n        {protected}\n        plugins:\n{PROTECTED}"
        );
        let e = import(&yaml, &env, &Options::default()).unwrap_err();
        let ImportError::Refused(notes) = &e else {
            panic!("{what}: {e}")
        };
        assert!(
            notes
                .iter()
                .any(|n| n.message.contains("`open`") && n.message.contains("`guarded`")),
            "{what}: {e}"
        );
    }
}

#[test]
fn a_protected_route_matching_on_what_rules_cannot_say_refuses_the_import() {
    for (field, extra) in [
        ("headers", "headers: { x-version: [v2] }"),
        ("snis", "snis: [api.example]"),
        ("sources", "sources: [{ ip: 10.0.0.0/8 }]"),
        ("protocols", "protocols: [https]"),
        ("hosts with a port", "hosts: [\"api.example:8443\"]"),
    ] {
        let yaml = format!(
            "_format_version: \"3.0\"\nservices:\n  - name: api\n    routes:\n      - name: guarded\n        paths: [/a]\n        {extra}\n        plugins:\n{PROTECTED}"
        );
        let e = import(&yaml, &env, &Options::default()).unwrap_err();
        assert!(
            matches!(e, ImportError::Refused(ref n) if n[0].location == "route guarded" && n[0].message.contains(field)),
            "{field}: {e}"
        );
    }
    let pcre = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: api\n    routes:\n      - name: guarded\n        paths: [\"~/a(?=b)\"]\n        plugins:\n{PROTECTED}"
    );
    let e = import(&pcre, &env, &Options::default()).unwrap_err();
    assert!(
        e.to_string().contains("not a regex certbound compiles"),
        "{e}"
    );
}

#[test]
fn an_open_route_matching_on_what_rules_cannot_say_is_left_out_which_only_narrows() {
    // Kong serves HTTP requests for /admin without authentication and HTTPS ones through the
    // protected catch-all; certbound does not see the protocol, so the open route is left
    // out and every /admin request needs a token.
    let yaml = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: api\n    routes:\n      - name: open\n        paths: [/admin]\n        protocols: [http]\n      - name: guarded\n        paths: [/]\n        plugins:\n{PROTECTED}"
    );
    let i = run(&yaml);
    assert!(i
        .notes
        .iter()
        .any(|n| n.location == "route open" && n.message.contains("left out")));
    let c = config_of(&i);
    assert_eq!(decide(&c, "h", "/admin", "GET"), "guarded");
    assert_eq!(position(&envoy_routes(&i), "guarded"), 0);
    assert_eq!(envoy_routes(&i).len(), 1);
}

/// The decK file's routes loaded as check-config and serve load them.
fn config_of(i: &Import) -> certbound_config::Config {
    use figment::providers::{Format, Toml};
    use figment::Figment;
    let dir = tempfile::tempdir().unwrap();
    for (name, pem) in &i.files {
        std::fs::write(dir.path().join(name), pem).unwrap();
    }
    certbound_config::Config::from_figment(&Figment::new().merge(Toml::string(&i.toml)), dir.path())
        .unwrap_or_else(|e| panic!("{e}\n{}", i.toml))
}

/// What certbound does with a request: `open`, `deny`, `default`, or the policy's name.
fn decide(c: &certbound_config::Config, authority: &str, path: &str, method: &str) -> String {
    use certbound_core::routes::{Request, Selected};
    match c.routes.select(&Request {
        authority,
        path,
        method,
    }) {
        Selected::Policy(Some(name)) => name.to_string(),
        Selected::Policy(None) => "default".into(),
        Selected::Unauthenticated => "open".into(),
        Selected::Deny => "deny".into(),
    }
}

const PRECEDENCE: &str = include_str!("../../tests/kong/route-precedence.yaml");

/// Kong's decision for each request to the routes of `tests/kong/route-precedence.yaml`, one
/// `METHOD HOST PATH DECISION` a line; the end-to-end suite sends the same requests through
/// Envoy.
const KONG_DECISIONS: &str = include_str!("../../tests/kong/route-precedence.decisions");

fn kong_decisions() -> Vec<[&'static str; 4]> {
    KONG_DECISIONS
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            [f[0], f[1], f[2], f[3]]
        })
        .collect()
}

#[test]
fn the_imported_rules_give_kongs_decision_for_every_route() {
    let i = run(PRECEDENCE);
    let c = config_of(&i);
    let table = kong_decisions();
    assert!(table.len() >= 20, "{table:?}");
    for [method, host, path, kong] in table {
        assert_eq!(
            decide(&c, host, path, method),
            kong,
            "{method} {host}{path}"
        );
    }
}

#[test]
fn the_envoy_routes_follow_the_cores_ranking_and_carry_no_ext_authz_settings() {
    let i = run(PRECEDENCE);
    let routes = envoy_routes(&i);
    // Each route only matches and routes: nothing for a filter.
    for r in &routes {
        let keys: Vec<&str> = r
            .as_mapping()
            .unwrap()
            .keys()
            .filter_map(|k| k.as_str())
            .collect();
        assert_eq!(keys, ["name", "match", "route"], "{r:?}");
    }
    assert!(position(&routes, "docs-internal") < position(&routes, "docs"));
    assert!(position(&routes, "report-export") < position(&routes, "report"));
    assert!(position(&routes, "report") < position(&routes, "reports-index"));
    assert!(position(&routes, "admin-billing") < position(&routes, "admin"));
    assert!(position(&routes, "private-site") < position(&routes, "docs"));
    assert_eq!(
        routes[position(&routes, "docs")]["route"]["cluster"],
        "docs"
    );
}

#[test]
fn a_route_another_access_plugin_guards_refuses_the_import() {
    for (what, yaml) in [
        (
            "key-auth instead of openid-connect",
            "_format_version: \"3.0\"\nservices:\n  - name: api\n    routes:\n      - name: keyed\n        paths: [/k]\n        plugins:\n          - name: key-auth\n  - name: other\n    plugins:\n      - name: openid-connect\n        config: { issuer: \"https://idp.example\", auth_methods: [bearer] }\n    routes:\n      - { name: o, paths: [/o] }\n",
        ),
        (
            "acl beside openid-connect on the service",
            "_format_version: \"3.0\"\nservices:\n  - name: api\n    plugins:\n      - name: acl\n        config: { allow: [admins] }\n      - name: openid-connect\n        config: { issuer: \"https://idp.example\", auth_methods: [bearer] }\n    routes:\n      - name: keyed\n        paths: [/k]\n",
        ),
    ] {
        let e = import(yaml, &env, &Options::default()).unwrap_err();
        assert!(
            matches!(e, ImportError::Refused(ref n) if n.iter().any(|n| n.location == "route keyed" && n.message.contains("who gets through"))),
            "{what}: {e}"
        );
    }
    // A plugin that decides nothing about access is reported, and the route imported.
    let i = run("_format_version: \"3.0\"\nplugins:\n  - name: openid-connect\n    config: { issuer: \"https://idp.example\", auth_methods: [bearer] }\n  - name: rate-limiting\n    config: { minute: 5 }\nservices:\n  - name: api\n    routes:\n      - { name: a, paths: [/a] }\n");
    assert!(has_note(&i, "rate-limiting", "not imported"));
    assert_eq!(decide(&config_of(&i), "h", "/a", "GET"), "default");
}
