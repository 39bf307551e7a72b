//! One Kong `openid-connect` plugin configuration to one certbound policy, and the plan that
//! assigns every Kong route its policy.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_yaml_ng::{Mapping, Value};
use toml::Value as T;

use super::deck::{is_empty, is_secret, shown, DeckFile, Plugin, Scope};
use super::{ImportError, Note, Options};
use certbound_core::defaults::{self, from_header};
use certbound_core::dpop::DpopMode;
use certbound_core::introspection::ClientAuth;
use certbound_core::policy::{AuthMethod, PopMode};

const HEADER_TABLE: &str = "proof_of_possession_mtls_from_header";
/// Kong's `proof_of_possession_mtls` default; certbound's is `strict`, so an unset key is
/// written out.
const KONG_POP_MODE: PopMode = PopMode::Off;

/// Policy keys with the same name, type and meaning in Kong and certbound.
const STRING_LISTS: &[&str] = &[
    "client_id",
    "client_secret",
    "scopes_required",
    "scopes_claim",
    "audience_required",
    "audience_claim",
    "claims_forbidden",
    "upstream_headers_claims",
    "upstream_headers_names",
];
const BOOLS: &[&str] = &[
    "proof_of_possession_auth_methods_validation",
    "hide_credentials",
    "introspect_jwt_tokens",
    "cache_introspection",
    "dpop_use_nonce",
];
const NUMBERS: &[&str] = &["leeway", "cache_ttl", "dpop_proof_lifetime"];
const STRINGS: &[&str] = &["introspection_endpoint", "proof_of_possession_dpop"];
/// Kong's booleans that certbound has only once per process.
const PROCESS_BOOLS: &[&str] = &["ssl_verify"];
/// Kong's numbers that certbound has only once per process.
const PROCESS_NUMBERS: &[&str] = &["timeout", "rediscovery_lifetime"];

const HEADER_STRINGS: &[&str] = &[
    "certificate_header_name",
    "certificate_header_format",
    "revocation_check_mode",
];
const HEADER_BOOLS: &[&str] = &["secure_source", "ssl_verify", "allow_partial_chain"];
const HEADER_NUMBERS: &[&str] = &["cert_cache_ttl", "http_timeout"];

/// Kong fields that make no difference to checking an access token, with why.
const IRRELEVANT: &[(&str, &str)] = &[
    (
        "scopes",
        "the scopes Kong requests from the IdP in login flows; certbound runs no login flow",
    ),
    (
        "bearer_token_param_type",
        "certbound reads the token from `Authorization: Bearer` only",
    ),
    (
        "cache_tokens",
        "Kong's token-endpoint cache; certbound caches keys and introspection results itself",
    ),
    (
        "cache_tokens_salt",
        "Kong's token-endpoint cache; certbound caches keys and introspection results itself",
    ),
    ("cache_user_info", "certbound does not call userinfo"),
    (
        "unauthorized_error_message",
        "certbound's 401 body is fixed (`{\"message\":\"Unauthorized\"}`, Kong's default)",
    ),
    ("forbidden_error_message", "certbound's 403 body is fixed"),
    (
        "display_errors",
        "certbound's error descriptions are static; details go to its log",
    ),
    (
        "expose_error_code",
        "certbound always sends RFC 6750 error codes",
    ),
];

/// Kong rules that deny requests certbound would let through; dropping them would widen access.
fn restrictive(key: &str, v: &Value, config: &Mapping) -> Option<String> {
    match key {
        "groups_required" | "roles_required" if !is_empty(v) => Some(format!(
            "certbound has no `{key}` rule; without it every token with a valid binding would pass"
        )),
        "consumer_claim"
            if !is_empty(v)
                && config.get("consumer_optional").and_then(Value::as_bool) != Some(true) =>
        {
            Some(
                "Kong denies tokens that map to no Kong consumer; certbound has no consumers"
                    .into(),
            )
        }
        _ => None,
    }
}

/// Why a value of the wrong type was refused; an unset decK placeholder says which to set.
fn not_a(key: &str, v: &Value, what: &str) -> String {
    let placeholder = v.as_str().is_some_and(|s| s.contains("${{"));
    format!(
        "{} is not {what}{}",
        shown(key, v),
        if placeholder {
            " (an unset decK placeholder: set its variable and import again)"
        } else {
            ""
        }
    )
}

/// One certbound policy: its keys, and its certificate-header table if it has one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyOut {
    pub keys: toml::Table,
    pub header: Option<toml::Table>,
}

/// Which policy certbound picks for a Kong route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The global plugin's.
    Default,
    /// A service or route plugin's `[policies.NAME]`; `String` says which plugin.
    Named(String, String),
    /// No openid-connect plugin applies in Kong: the route is not authenticated there.
    Unprotected,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub process: toml::Table,
    pub default: PolicyOut,
    pub default_origin: String,
    pub named: BTreeMap<String, PolicyOut>,
    pub routes: BTreeMap<String, Choice>,
    pub files: Vec<(PathBuf, String)>,
}

struct Ctx<'a> {
    location: String,
    notes: &'a mut Vec<Note>,
    refusals: &'a mut Vec<Note>,
}

impl Ctx<'_> {
    fn note(&mut self, field: &str, message: impl Into<String>) {
        self.notes.push(Note {
            location: self.location.clone(),
            field: field.into(),
            message: message.into(),
        });
    }
    fn refuse(&mut self, field: &str, message: impl Into<String>) {
        self.refusals.push(Note {
            location: self.location.clone(),
            field: field.into(),
            message: message.into(),
        });
    }
}

pub fn plan(
    file: &DeckFile,
    ca_entities: &BTreeMap<String, Option<String>>,
    options: &Options,
    notes: &mut Vec<Note>,
) -> Result<Plan, ImportError> {
    let mut refusals = Vec::new();
    let mut plan = Plan::default();
    let mut process: Vec<(String, toml::Table)> = Vec::new();
    let mut mapped: Vec<(&Plugin, PolicyOut)> = Vec::new();

    for (i, p) in file.plugins.iter().enumerate() {
        if file.plugins[..i].iter().any(|q| q.scope == p.scope) {
            refusals.push(Note {
                location: p.location.clone(),
                field: String::new(),
                message: "a second openid-connect plugin on the same scope; Kong allows one".into(),
            });
            continue;
        }
        let mut ctx = Ctx {
            location: p.location.clone(),
            notes,
            refusals: &mut refusals,
        };
        let (policy, proc_keys) = map_plugin(&p.config, ca_entities, &mut plan.files, &mut ctx);
        process.push((p.location.clone(), proc_keys));
        mapped.push((p, policy));
    }
    if mapped.is_empty() && refusals.is_empty() {
        return Err(ImportError::Format(
            "the file has no enabled openid-connect plugin: nothing to import".into(),
        ));
    }
    plan.process = merge_process(&process, notes);
    if !options.trusted_ips.is_empty() {
        plan.process.insert(
            "trusted_ips".into(),
            T::Array(options.trusted_ips.iter().cloned().map(T::String).collect()),
        );
    }

    // Name every service and route plugin's policy after its service or route.
    let mut names: BTreeMap<String, (String, PolicyOut)> = BTreeMap::new();
    let mut by_scope: Vec<(Scope, String)> = Vec::new();
    let mut global = None;
    for (p, policy) in &mapped {
        match &p.scope {
            Scope::Global => global = Some((p.location.clone(), policy.clone())),
            Scope::Service(n) | Scope::Route(n) => {
                let base = policy_name(n);
                let mut name = base.clone();
                let mut k = 2;
                while names.contains_key(&name) {
                    name = format!("{base}-{k}");
                    k += 1;
                }
                names.insert(name.clone(), (p.location.clone(), policy.clone()));
                by_scope.push((p.scope.clone(), name));
            }
        }
    }
    match global {
        Some((location, policy)) => {
            plan.default = policy;
            plan.default_origin = location;
        }
        None => {
            if let Some((name, (location, policy))) = names.iter().next() {
                plan.default = policy.clone();
                plan.default_origin = format!("a copy of policy {name} ({location})");
                notes.push(Note {
                    location: "plugins".into(),
                    field: String::new(),
                    message: format!(
                        "no global openid-connect plugin: the default policy (no imported rule names it) is a copy of policy `{name}`"
                    ),
                });
            }
        }
    }
    for (name, (location, policy)) in names {
        let mut ctx = Ctx {
            location,
            notes,
            refusals: &mut refusals,
        };
        let complete = complete_named(policy, &plan.default, &mut ctx);
        plan.named.insert(name, complete);
    }

    for route in &file.routes {
        let own = by_scope
            .iter()
            .find(|(s, _)| *s == Scope::Route(route.name.clone()));
        let service = route.service.as_ref().and_then(|svc| {
            by_scope
                .iter()
                .find(|(s, _)| *s == Scope::Service(svc.clone()))
        });
        let choice = match (own, service) {
            (Some((_, n)), _) => {
                Choice::Named(n.clone(), format!("the plugin of route {}", route.name))
            }
            (None, Some((_, n))) => Choice::Named(
                n.clone(),
                format!(
                    "the plugin of service {}",
                    route.service.clone().unwrap_or_default()
                ),
            ),
            (None, None) if mapped.iter().any(|(p, _)| p.scope == Scope::Global) => Choice::Default,
            (None, None) => {
                notes.push(Note {
                    location: format!("route {}", route.name),
                    field: String::new(),
                    message: "no openid-connect plugin applies to it in Kong, so Kong does not authenticate it; its rule says `authenticate = false`, and certbound lets the requests it wins through unchecked — check that this is intended".into(),
                });
                Choice::Unprotected
            }
        };
        plan.routes.insert(route.name.clone(), choice);
    }
    for (scope, name) in &by_scope {
        let used = file.routes.iter().any(|r| match scope {
            Scope::Route(n) => r.name == *n,
            Scope::Service(n) => r.service.as_deref() == Some(n),
            Scope::Global => true,
        });
        if !used {
            notes.push(Note {
                location: format!("policy {name}"),
                field: String::new(),
                message: "its Kong service or route has no route in the file; the policy is written but no rule picks it".into(),
            });
        }
    }

    let header_tables = std::iter::once(&plan.default).chain(plan.named.values());
    let secure_source = header_tables
        .filter_map(|p| p.header.as_ref())
        .any(|h| h.get("secure_source").and_then(T::as_bool) != Some(false));
    if secure_source && options.trusted_ips.is_empty() {
        notes.push(Note {
            location: "proof_of_possession_mtls_from_header".into(),
            field: "secure_source".into(),
            message: "on, and Kong takes its trusted proxies from kong.conf's `trusted_ips`, which is not in a decK file: set certbound's `trusted_ips` (or import with --trusted-ip) to the addresses of the TLS terminators; until then check-config refuses the file".into(),
        });
    }

    if refusals.is_empty() {
        Ok(plan)
    } else {
        Err(ImportError::Refused(refusals))
    }
}

/// Policy names are letters, digits, '-', '_' and '.'.
fn policy_name(kong: &str) -> String {
    let name: String = kong
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        "unnamed".into()
    } else {
        name
    }
}

/// Kong's value for a key its plugin did not set, so a named policy does not inherit the
/// default policy's instead. certbound took each of these defaults from Kong (see `defaults`).
fn kong_default(key: &str) -> Option<T> {
    let list = |v: &[&str]| T::Array(v.iter().map(|s| T::String((*s).into())).collect());
    Some(match key {
        "client_id"
        | "client_secret"
        | "scopes_required"
        | "audience_required"
        | "claims_forbidden"
        | "upstream_headers_claims"
        | "upstream_headers_names" => list(&[]),
        "scopes_claim" => list(&[defaults::SCOPES_CLAIM]),
        "audience_claim" => list(&[defaults::AUDIENCE_CLAIM]),
        "hide_credentials" => T::Boolean(defaults::HIDE_CREDENTIALS),
        "introspect_jwt_tokens" => T::Boolean(defaults::INTROSPECT_JWT_TOKENS),
        "cache_introspection" => T::Boolean(defaults::CACHE_INTROSPECTION),
        "proof_of_possession_auth_methods_validation" => {
            T::Boolean(defaults::PROOF_OF_POSSESSION_AUTH_METHODS_VALIDATION)
        }
        "cache_ttl" => integer(defaults::CACHE_TTL_SECS),
        "proof_of_possession_dpop" => T::String(defaults::PROOF_OF_POSSESSION_DPOP.into()),
        "dpop_use_nonce" => T::Boolean(defaults::DPOP_USE_NONCE),
        "dpop_proof_lifetime" => integer(defaults::DPOP_PROOF_LIFETIME_SECS),
        "leeway" => integer(defaults::LEEWAY_SECS),
        // Keys of the certificate-header table.
        "allow_partial_chain" => T::Boolean(from_header::ALLOW_PARTIAL_CHAIN),
        "secure_source" => T::Boolean(from_header::SECURE_SOURCE),
        "ssl_verify" => T::Boolean(from_header::SSL_VERIFY),
        "cert_cache_ttl" => integer(from_header::CERT_CACHE_TTL_MS),
        "http_timeout" => integer(from_header::HTTP_TIMEOUT_MS),
        "revocation_check_mode" => T::String(from_header::REVOCATION_CHECK_MODE.into()),
        _ => return None,
    })
}

/// A default as a TOML integer; every default is far below `i64::MAX`.
fn integer(n: u64) -> T {
    T::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

fn complete_named(mut policy: PolicyOut, default: &PolicyOut, ctx: &mut Ctx<'_>) -> PolicyOut {
    for key in default.keys.keys() {
        if policy.keys.contains_key(key) {
            continue;
        }
        match kong_default(key) {
            Some(v) => {
                policy.keys.insert(key.clone(), v);
            }
            None => ctx.note(
                key,
                format!(
                    "not set here, but certbound's named policies inherit the default policy's `{key}` ({}); set it in this policy if Kong's default differs",
                    if is_secret(key) {
                        "not shown".to_string()
                    } else {
                        default.keys.get(key).map(ToString::to_string).unwrap_or_default()
                    }
                ),
            ),
        }
    }
    match (&mut policy.header, &default.header) {
        (Some(own), Some(inherited)) => {
            for key in inherited.keys() {
                if !own.contains_key(key) {
                    if let Some(v) = kong_default(key) {
                        own.insert(key.clone(), v);
                    }
                }
            }
        }
        (None, Some(_)) => {
            let pop = policy
                .keys
                .get("proof_of_possession_mtls")
                .and_then(T::as_str)
                .and_then(|m| m.parse().ok())
                .unwrap_or(KONG_POP_MODE);
            if pop != PopMode::Off {
                ctx.refuse(
                    HEADER_TABLE,
                    "this plugin binds to the certificate of the TLS handshake while the default policy reads it from a header; certbound's named policies inherit the header table and cannot drop it. Give this plugin a proof_of_possession_mtls_from_header too, or serve it from a separate certbound",
                );
            }
        }
        _ => {}
    }
    policy
}

/// Process-wide keys: the global plugin's value, else the first plugin's; disagreements are
/// reported, and TLS verification stays on unless every plugin turned it off.
fn merge_process(per_plugin: &[(String, toml::Table)], notes: &mut Vec<Note>) -> toml::Table {
    let mut out = toml::Table::new();
    for key in PROCESS_BOOLS.iter().chain(PROCESS_NUMBERS) {
        let values: Vec<(&String, &T)> = per_plugin
            .iter()
            .filter_map(|(loc, t)| t.get(*key).map(|v| (loc, v)))
            .collect();
        let Some((_, first)) = values.first() else {
            continue;
        };
        let all_same = values.iter().all(|(_, v)| v == first);
        if *key == "ssl_verify" {
            let all_off = values.len() == per_plugin.len()
                && values.iter().all(|(_, v)| v.as_bool() == Some(false));
            if all_off {
                out.insert((*key).into(), T::Boolean(false));
            } else if values.iter().any(|(_, v)| v.as_bool() == Some(false)) {
                notes.push(Note {
                    location: "plugins".into(),
                    field: (*key).into(),
                    message: "certbound verifies the IdP's TLS certificate for the whole process; some plugins turned it off, so it stays on for all (add the IdP's CA to `idp_ca_certificates`)".into(),
                });
            }
            continue;
        }
        out.insert((*key).into(), (*first).clone());
        if !all_same {
            notes.push(Note {
                location: "plugins".into(),
                field: (*key).into(),
                message: format!(
                    "one value for the whole process in certbound; the plugins disagree, {first} was kept"
                ),
            });
        }
    }
    out
}

/// Where certbound's DPoP differs from Kong's, or needs a key Kong does not have.
fn dpop_notes(config: &Mapping, ctx: &mut Ctx<'_>) {
    let mode = config
        .get("proof_of_possession_dpop")
        .and_then(Value::as_str)
        .and_then(|m| m.parse().ok());
    if mode == Some(DpopMode::Strict) {
        ctx.note(
            "proof_of_possession_dpop",
            "strict: certbound also requires the token to carry `cnf.jkt` (Kong accepts a proof with an unbound token); unbound tokens are denied",
        );
    }
    if config.get("dpop_use_nonce").and_then(Value::as_bool) == Some(true) {
        ctx.note(
            "dpop_use_nonce",
            "certbound's nonces are an HMAC under `dpop_nonce_secret` (at least 32 bytes, the same on every replica; Kong keeps its own): set it from the environment (CERTBOUND_DPOP_NONCE_SECRET, or CERTBOUND_POLICIES__<NAME>__DPOP_NONCE_SECRET); until then check-config refuses the file",
        );
    }
}

fn map_plugin(
    config: &Mapping,
    ca_entities: &BTreeMap<String, Option<String>>,
    files: &mut Vec<(PathBuf, String)>,
    ctx: &mut Ctx<'_>,
) -> (PolicyOut, toml::Table) {
    let mut out = PolicyOut::default();
    let mut process = toml::Table::new();
    let mut pop_seen = false;
    let mut methods_seen = false;
    dpop_notes(config, ctx);
    for (k, v) in config {
        let Some(key) = k.as_str() else { continue };
        if v.is_null() {
            continue;
        }
        if let Some(why) = restrictive(key, v, config) {
            ctx.refuse(key, why);
            continue;
        }
        if STRING_LISTS.contains(&key) {
            if let Some(list) = string_list(key, v, ctx) {
                out.keys.insert(key.into(), list);
            }
        } else if BOOLS.contains(&key) || PROCESS_BOOLS.contains(&key) {
            match v.as_bool() {
                Some(b) if PROCESS_BOOLS.contains(&key) => {
                    process.insert(key.into(), T::Boolean(b));
                }
                Some(b) => {
                    out.keys.insert(key.into(), T::Boolean(b));
                }
                None => ctx.refuse(key, not_a(key, v, "true or false")),
            }
        } else if NUMBERS.contains(&key) || PROCESS_NUMBERS.contains(&key) {
            match number(v) {
                Some(n) if PROCESS_NUMBERS.contains(&key) => {
                    process.insert(key.into(), T::Integer(n));
                }
                Some(n) => {
                    out.keys.insert(key.into(), T::Integer(n));
                }
                None => ctx.refuse(key, not_a(key, v, "a whole number")),
            }
        } else if STRINGS.contains(&key) {
            match v.as_str() {
                Some(s) => {
                    out.keys.insert(key.into(), T::String(s.into()));
                }
                None => ctx.refuse(key, not_a(key, v, "a string")),
            }
        } else {
            match key {
                "issuer" => match v.as_str() {
                    Some(s) => {
                        let issuer = match s.strip_suffix("/.well-known/openid-configuration") {
                            Some(base) => {
                                ctx.note(key, "Kong accepts the discovery URL; certbound's `issuer` is the token's `iss` (discovery is derived from it): the `/.well-known/openid-configuration` suffix was removed; `iss` is compared byte for byte, so if the IdP's `iss` ends in `/` (Auth0's does), add it back");
                                base
                            }
                            None => s,
                        };
                        out.keys.insert(key.into(), T::String(issuer.into()));
                    }
                    None => ctx.refuse(key, not_a(key, v, "a string")),
                },
                "auth_methods" => {
                    methods_seen = true;
                    if let Some(T::Array(list)) = string_list(key, v, ctx) {
                        let wanted: Vec<&str> = list.iter().filter_map(T::as_str).collect();
                        out.keys.insert(key.into(), methods(&wanted, ctx));
                    }
                }
                "proof_of_possession_mtls" => match v.as_str().map(str::parse::<PopMode>) {
                    Some(Ok(m)) => {
                        pop_seen = true;
                        out.keys.insert(key.into(), T::String(m.as_str().into()));
                    }
                    _ => {
                        // Strictest first.
                        let names: Vec<&str> = PopMode::NAMES.into_iter().rev().collect();
                        let expected = format!("one of {}", names.join(", "));
                        ctx.refuse(key, not_a(key, v, &expected))
                    }
                },
                "introspection_endpoint_auth_method" => {
                    match v.as_str().map(str::parse::<ClientAuth>) {
                        Some(Ok(m)) => {
                            out.keys.insert(key.into(), T::String(m.as_str().into()));
                        }
                        _ => ctx.note(
                            key,
                            format!(
                                "{}: certbound authenticates to the introspection endpoint with {} only; left to what the IdP advertises",
                                shown(key, v),
                                ClientAuth::NAMES.join(" or ")
                            ),
                        ),
                    }
                }
                "audience" => ctx.note(
                    key,
                    "Kong sends `audience` to the IdP's authorization endpoint; it does not check tokens with it. certbound's `audience` is a token check (`aud` must contain one), so it was not set: use `audience_required` (carried over) or set `audience` yourself",
                ),
                HEADER_TABLE => match v {
                    Value::Mapping(m) => {
                        out.header = Some(map_header(m, ca_entities, files, ctx));
                    }
                    _ => ctx.refuse(key, "is not a table"),
                },
                _ => {
                    let why = IRRELEVANT
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map(|(_, why)| (*why).to_string())
                        .unwrap_or_else(|| {
                            "no certbound equivalent (certbound verifies access tokens only: no login flows, sessions, consumers or Kong caches)".into()
                        });
                    if !is_empty(v) {
                        ctx.note(key, format!("{}: {why}", shown(key, v)));
                    }
                }
            }
        }
    }
    if !pop_seen {
        ctx.note(
            "proof_of_possession_mtls",
            format!(
                "not set: Kong's default is `{kong}` (tokens are not bound to a certificate); written as `{kong}` because certbound's default is `{ours}`",
                kong = KONG_POP_MODE.as_str(),
                ours = defaults::PROOF_OF_POSSESSION_MTLS,
            ),
        );
        out.keys.insert(
            "proof_of_possession_mtls".into(),
            T::String(KONG_POP_MODE.as_str().into()),
        );
    }
    if !methods_seen {
        ctx.note(
            "auth_methods",
            format!(
                "not set: Kong's default enables every method; certbound implements {}, so only those were written",
                AuthMethod::IMPLEMENTED_NAMES.join(" and ")
            ),
        );
        out.keys
            .insert("auth_methods".into(), methods(&AuthMethod::NAMES, ctx));
    }
    if !out.keys.contains_key("issuer") {
        ctx.refuse("issuer", "missing; Kong requires it too");
    }
    (out, process)
}

/// The methods certbound implements, as written; the others are reported as dropped.
fn methods(wanted: &[&str], ctx: &mut Ctx<'_>) -> T {
    let implemented = |m: &str| m.parse().is_ok_and(AuthMethod::is_implemented);
    let kept: Vec<T> = wanted
        .iter()
        .filter(|m| implemented(m))
        .map(|m| T::String((*m).into()))
        .collect();
    let dropped: Vec<&str> = wanted.iter().copied().filter(|m| !implemented(m)).collect();
    if !dropped.is_empty() && wanted.len() != AuthMethod::ALL.len() {
        ctx.note(
            "auth_methods",
            format!(
                "{} dropped: certbound implements {} only (requests using them are denied)",
                dropped.join(", "),
                AuthMethod::IMPLEMENTED_NAMES.join(" and ")
            ),
        );
    }
    if kept.is_empty() {
        ctx.refuse(
            "auth_methods",
            format!(
                "none of the methods is one certbound implements ({})",
                AuthMethod::IMPLEMENTED_NAMES.join(", ")
            ),
        );
    }
    T::Array(kept)
}

fn map_header(
    m: &Mapping,
    ca_entities: &BTreeMap<String, Option<String>>,
    files: &mut Vec<(PathBuf, String)>,
    ctx: &mut Ctx<'_>,
) -> toml::Table {
    let mut out = toml::Table::new();
    for (k, v) in m {
        let Some(key) = k.as_str() else { continue };
        let field = format!("{HEADER_TABLE}.{key}");
        if v.is_null() {
            continue;
        }
        if HEADER_STRINGS.contains(&key) {
            match v.as_str() {
                Some(s) => {
                    out.insert(key.into(), T::String(s.into()));
                }
                None => ctx.refuse(&field, not_a(&field, v, "a string")),
            }
        } else if HEADER_BOOLS.contains(&key) {
            match v.as_bool() {
                Some(b) => {
                    out.insert(key.into(), T::Boolean(b));
                }
                None => ctx.refuse(&field, not_a(&field, v, "true or false")),
            }
        } else if HEADER_NUMBERS.contains(&key) {
            match number(v) {
                Some(n) => {
                    out.insert(key.into(), T::Integer(n));
                }
                None => ctx.refuse(&field, not_a(&field, v, "a whole number")),
            }
        } else if key == "ca_certificates" {
            if let Some(T::Array(ids)) = string_list(&field, v, ctx) {
                let paths = ids
                    .iter()
                    .filter_map(T::as_str)
                    .map(|id| T::String(ca_file(id, ca_entities, files, ctx)))
                    .collect();
                out.insert(key.into(), T::Array(paths));
            }
        } else if !is_empty(v) {
            ctx.note(
                &field,
                format!(
                    "{}: not supported by certbound (OCSP and CRL requests go out directly)",
                    shown(key, v)
                ),
            );
        }
    }
    out
}

/// Kong's `ca_certificates` holds CA Certificate entity ids; certbound's holds PEM files.
/// An entity in the same file with its `cert` is written out; otherwise the file is named and
/// the report says what to put there.
fn ca_file(
    id: &str,
    ca_entities: &BTreeMap<String, Option<String>>,
    files: &mut Vec<(PathBuf, String)>,
    ctx: &mut Ctx<'_>,
) -> String {
    let safe: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_".contains(*c))
        .collect();
    let name = format!(
        "kong-ca-{}.pem",
        if safe.is_empty() { "unnamed" } else { &safe }
    );
    match ca_entities.get(id) {
        Some(Some(pem)) if pem.contains("-----BEGIN CERTIFICATE-----") => {
            if !files.iter().any(|(p, _)| p.as_os_str() == name.as_str()) {
                files.push((PathBuf::from(&name), pem.clone()));
            }
        }
        _ => ctx.note(
            &format!("{HEADER_TABLE}.ca_certificates"),
            format!(
                "`{id}` is a Kong CA Certificate entity that is not in this file (or has no `cert`): put that CA's PEM in {name}, next to the certbound configuration"
            ),
        ),
    }
    name
}

fn string_list(key: &str, v: &Value, ctx: &mut Ctx<'_>) -> Option<T> {
    let items: Vec<&Value> = match v {
        Value::Sequence(s) => s.iter().collect(),
        Value::String(_) => vec![v],
        _ => {
            ctx.refuse(key, not_a(key, v, "a list of strings"));
            return None;
        }
    };
    let mut out = Vec::new();
    for item in items {
        match item.as_str() {
            Some(s) => out.push(T::String(s.into())),
            None => {
                ctx.refuse(key, not_a(key, item, "a string"));
                return None;
            }
        }
    }
    Some(T::Array(out))
}

fn number(v: &Value) -> Option<i64> {
    v.as_i64().filter(|n| *n >= 0).or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 9.0e15)
            .map(|f| f as i64)
    })
}

/// The configuration: `routes` (`unmatched_route` and the `[[routes]]` rules) goes in as it
/// is.
pub fn render_toml(plan: &Plan, routes: toml::Table) -> Result<String, ImportError> {
    let mut root = plan.process.clone();
    root.extend(routes);
    root.extend(plan.default.keys.clone());
    if let Some(h) = &plan.default.header {
        root.insert(HEADER_TABLE.into(), T::Table(h.clone()));
    }
    let mut policies = toml::Table::new();
    for (name, p) in &plan.named {
        let mut t = p.keys.clone();
        if let Some(h) = &p.header {
            t.insert(HEADER_TABLE.into(), T::Table(h.clone()));
        }
        policies.insert(name.clone(), T::Table(t));
    }
    if !policies.is_empty() {
        root.insert("policies".into(), T::Table(policies));
    }
    let body = toml::to_string(&root)
        .map_err(|e| ImportError::Format(format!("cannot write the TOML: {e}")))?;
    Ok(format!(
        "# Written by `certbound import-kong`. The top level is the default policy ({}).\n# Each [policies.NAME] is one Kong service or route plugin; the [[routes]] rules (one per Kong\n# route, ranked as Kong ranks them) pick it, and a request no rule matches is denied, as Kong\n# answers 404.\n# certbound listens on loopback by default; where Envoy runs elsewhere (another container or\n# pod) add, for example:\n#   grpc_listen = \"0.0.0.0:9191\"\n#   admin_listen = \"0.0.0.0:9192\"\n\n{body}",
        plan.default_origin
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A named policy is completed with Kong's values, which certbound's defaults must still be.
    #[test]
    fn kong_defaults_are_kongs_documented_values() {
        let int = |k: &str| kong_default(k).and_then(|v| v.as_integer());
        let boolean = |k: &str| kong_default(k).and_then(|v| v.as_bool());
        let string = |k: &str| kong_default(k).and_then(|v| v.as_str().map(str::to_string));
        assert_eq!(int("cache_ttl"), Some(3600));
        assert_eq!(int("dpop_proof_lifetime"), Some(300));
        assert_eq!(int("leeway"), Some(0));
        assert_eq!(int("cert_cache_ttl"), Some(60_000));
        assert_eq!(int("http_timeout"), Some(30_000));
        assert_eq!(string("proof_of_possession_dpop").as_deref(), Some("off"));
        assert_eq!(
            string("revocation_check_mode").as_deref(),
            Some("IGNORE_CA_ERROR")
        );
        for key in [
            "hide_credentials",
            "introspect_jwt_tokens",
            "allow_partial_chain",
        ] {
            assert_eq!(boolean(key), Some(false), "{key}");
        }
        for key in [
            "cache_introspection",
            "proof_of_possession_auth_methods_validation",
            "secure_source",
            "ssl_verify",
        ] {
            assert_eq!(boolean(key), Some(true), "{key}");
        }
        assert_eq!(KONG_POP_MODE.as_str(), "off");
    }
}
