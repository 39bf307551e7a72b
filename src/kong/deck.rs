//! Reading a decK declarative file: services, routes, `openid-connect` plugins at their three
//! scopes, CA certificate entities, and decK's `${{ env "DECK_..." }}` placeholders.

use serde_yaml_ng::{Mapping, Value};

use super::{ImportError, Note};

const PLUGIN: &str = "openid-connect";

/// Where a plugin applies. Kong runs the most specific one: route, then service, then global.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Global,
    Service(String),
    Route(String),
}

#[derive(Debug, Clone)]
pub struct Plugin {
    pub scope: Scope,
    /// Where it is in the file, for the report.
    pub location: String,
    pub config: Mapping,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub service: Option<String>,
    pub paths: Vec<String>,
    pub hosts: Vec<String>,
    pub methods: Vec<String>,
    /// Kong's `regex_priority`: orders routes with regex paths.
    pub regex_priority: i64,
    /// Kong's `strip_path` (default true): the upstream sees the path without the matched
    /// part. Matching does not depend on it.
    pub strip_path: bool,
    /// Kong match fields certbound's rules do not reproduce (`headers`, `snis`, ...).
    pub unsupported: Vec<&'static str>,
}

/// A plugin certbound does not import: its name, where it applies and where it is.
#[derive(Debug, Clone)]
pub struct OtherPlugin {
    pub name: String,
    pub scope: Scope,
    pub location: String,
}

/// Kong plugins that authenticate or refuse requests. On a route, dropping one would let
/// through requests Kong refuses.
const ACCESS_PLUGINS: &[&str] = &[
    "acl",
    "basic-auth",
    "bot-detection",
    "hmac-auth",
    "header-cert-auth",
    "ip-restriction",
    "jwe-decrypt",
    "jwt",
    "jwt-signer",
    "key-auth",
    "key-auth-enc",
    "ldap-auth",
    "ldap-auth-advanced",
    "mtls-auth",
    "oauth2",
    "oauth2-introspection",
    "opa",
    "request-termination",
    "saml",
    "session",
    "vault-auth",
];

#[derive(Debug, Clone)]
pub struct CaEntity {
    pub id: String,
    pub cert: Option<String>,
}

#[derive(Debug, Default)]
pub struct DeckFile {
    pub plugins: Vec<Plugin>,
    /// Enabled plugins other than openid-connect that decide who gets through (`key-auth`,
    /// `acl`, `request-termination`, ...): certbound cannot enforce them.
    pub access_plugins: Vec<OtherPlugin>,
    pub routes: Vec<Route>,
    pub ca_certificates: Vec<CaEntity>,
}

pub fn parse(
    source: &str,
    env: &dyn Fn(&str) -> Option<String>,
    notes: &mut Vec<Note>,
) -> Result<DeckFile, ImportError> {
    let mut root: Value = serde_yaml_ng::from_str(source)?;
    substitute(&mut root, "", env, notes);
    let Value::Mapping(root) = root else {
        return Err(ImportError::Format(
            "the file is not a decK mapping (`_format_version: \"3.0\"`, `services:`, `plugins:` ...)".into(),
        ));
    };
    match root.get("_format_version") {
        Some(Value::String(v)) if v.starts_with("3.") => {}
        Some(v) => {
            return Err(ImportError::Format(format!(
                "`_format_version` is {}, expected \"3.0\" (decK's format for Kong 3.x)",
                describe(v)
            )))
        }
        None => {
            return Err(ImportError::Format(
                "no `_format_version`: not a decK declarative file (expected `_format_version: \"3.0\"`)".into(),
            ))
        }
    }

    let mut file = DeckFile::default();
    for (i, service) in seq(&root, "services").iter().enumerate() {
        let name = entity_name(service).unwrap_or_else(|| format!("service-{i}"));
        for (j, p) in seq_of(service, "plugins").iter().enumerate() {
            push_plugin(
                &mut file,
                p,
                Scope::Service(name.clone()),
                format!("service {name} plugins[{j}]"),
                notes,
            );
        }
        for (j, r) in seq_of(service, "routes").iter().enumerate() {
            let route = read_route(r, Some(name.clone()), format!("{name}-route-{j}"));
            push_route(&mut file, route, r, notes);
        }
    }
    for (i, r) in seq(&root, "routes").iter().enumerate() {
        let service = r.get("service").and_then(reference);
        let route = read_route(r, service, format!("route-{i}"));
        push_route(&mut file, route, r, notes);
    }
    for (i, p) in seq(&root, "plugins").iter().enumerate() {
        let scope = if let Some(r) = p.get("route").and_then(reference) {
            Scope::Route(r)
        } else if let Some(s) = p.get("service").and_then(reference) {
            Scope::Service(s)
        } else {
            Scope::Global
        };
        push_plugin(&mut file, p, scope, format!("plugins[{i}]"), notes);
    }
    for (i, c) in seq(&root, "consumers").iter().enumerate() {
        for (k, p) in seq_of(c, "plugins").iter().enumerate() {
            if is_oidc(p) {
                notes.push(Note {
                    location: format!("consumers[{i}] plugins[{k}]"),
                    field: String::new(),
                    message: "a consumer-scoped openid-connect plugin applies only once another plugin identified the consumer; certbound has no consumers: not imported".into(),
                });
            }
        }
    }
    for c in seq(&root, "ca_certificates") {
        if let Some(id) = c.get("id").and_then(Value::as_str) {
            file.ca_certificates.push(CaEntity {
                id: id.to_string(),
                cert: c.get("cert").and_then(Value::as_str).map(str::to_string),
            });
        }
    }
    Ok(file)
}

fn is_oidc(p: &Value) -> bool {
    p.get("name").and_then(Value::as_str) == Some(PLUGIN)
}

/// A route and the plugins nested under it (`r` is its decK mapping).
fn push_route(file: &mut DeckFile, route: Route, r: &Value, notes: &mut Vec<Note>) {
    for (k, p) in seq_of(r, "plugins").iter().enumerate() {
        push_plugin(
            file,
            p,
            Scope::Route(route.name.clone()),
            format!("route {} plugins[{k}]", route.name),
            notes,
        );
    }
    file.routes.push(route);
}

fn push_plugin(
    file: &mut DeckFile,
    p: &Value,
    scope: Scope,
    location: String,
    notes: &mut Vec<Note>,
) {
    if !is_oidc(p) {
        let name = p.get("name").and_then(Value::as_str).unwrap_or("?");
        let enabled = p.get("enabled").and_then(Value::as_bool) != Some(false);
        if !enabled {
            return;
        }
        if ACCESS_PLUGINS.contains(&name) {
            file.access_plugins.push(OtherPlugin {
                name: name.to_string(),
                scope,
                location,
            });
        } else {
            notes.push(Note {
                location,
                field: name.to_string(),
                message: "not imported: certbound imports openid-connect plugins only (this one does not decide who gets through)".into(),
            });
        }
        return;
    }
    if p.get("consumer").is_some_and(|c| !c.is_null())
        || p.get("consumer_group").is_some_and(|c| !c.is_null())
    {
        notes.push(Note {
            location,
            field: "consumer".into(),
            message: "a consumer-scoped openid-connect plugin applies only once another plugin identified the consumer; certbound has no consumers: not imported".into(),
        });
        return;
    }
    if p.get("enabled").and_then(Value::as_bool) == Some(false) {
        notes.push(Note {
            location,
            field: "enabled".into(),
            message: "disabled in Kong, so it never runs: not imported".into(),
        });
        return;
    }
    let config = match p.get("config") {
        Some(Value::Mapping(m)) => m.clone(),
        _ => Mapping::new(),
    };
    file.plugins.push(Plugin {
        scope,
        location,
        config,
    });
}

fn read_route(r: &Value, service: Option<String>, fallback: String) -> Route {
    let strings = |key: &str| -> Vec<String> {
        seq_of(r, key)
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let mut unsupported: Vec<&'static str> = ["headers", "snis", "sources", "destinations"]
        .into_iter()
        .filter(|k| r.get(*k).is_some_and(|v| !is_empty(v)))
        .collect();
    // Kong's default is both; Envoy's routes do not tell them apart.
    let protocols = strings("protocols");
    if !protocols.is_empty()
        && !["http", "https"]
            .iter()
            .all(|p| protocols.iter().any(|q| q == p))
    {
        unsupported.push("protocols");
    }
    let hosts = strings("hosts");
    // Kong matches a host with a port against the port it was reached on, not the Host header.
    if hosts.iter().any(|h| h.contains(':')) {
        unsupported.push("hosts with a port");
    }
    Route {
        name: entity_name(r).unwrap_or(fallback),
        service,
        paths: strings("paths"),
        hosts,
        methods: strings("methods"),
        regex_priority: r.get("regex_priority").and_then(Value::as_i64).unwrap_or(0),
        strip_path: r.get("strip_path").and_then(Value::as_bool).unwrap_or(true),
        unsupported,
    }
}

/// An entity is named by `name`, else by `id`.
fn entity_name(v: &Value) -> Option<String> {
    ["name", "id"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
        .map(str::to_string)
}

/// decK refers to another entity by its name or id, as a string or as `{name: ...}`/`{id: ...}`.
fn reference(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Mapping(_) => entity_name(v),
        _ => None,
    }
}

fn seq<'a>(root: &'a Mapping, key: &str) -> &'a [Value] {
    match root.get(key) {
        Some(Value::Sequence(s)) => s,
        _ => &[],
    }
}

fn seq_of<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    match v.get(key) {
        Some(Value::Sequence(s)) => s,
        _ => &[],
    }
}

/// Null, or an empty list, table or string: a Kong field left at nothing.
pub fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Sequence(s) => s.is_empty(),
        Value::Mapping(m) => m.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// Whether a Kong field can hold a secret (by its name, never by its value): client
/// secrets and keys, session secrets, Redis and proxy credentials, extra header and argument
/// values sent to the IdP. Their values are never shown in the report or an error.
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "secret",
        "password",
        "passwd",
        "authorization",
        "private",
        "salt",
        "credential",
    ]
    .iter()
    .any(|w| k.contains(w))
        || k.ends_with("_values")
        || k.ends_with("_jwk")
        || k.ends_with("_key")
}

/// What the report says for `v`, the value of `key`: nothing of a secret, and a table with
/// its secret fields left out.
pub fn shown(key: &str, v: &Value) -> String {
    if is_secret(key) {
        return "a value not shown (the field can hold a secret)".into();
    }
    fn redact(v: &Value) -> Value {
        match v {
            Value::Mapping(m) => Value::Mapping(
                m.iter()
                    .map(|(k, v)| {
                        let secret = k.as_str().is_some_and(is_secret);
                        let v = if secret {
                            Value::String("(not shown)".into())
                        } else {
                            redact(v)
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            Value::Sequence(items) => Value::Sequence(items.iter().map(redact).collect()),
            other => other.clone(),
        }
    }
    describe(&redact(v))
}

pub fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => format!("\"{s}\""),
        other => serde_yaml_ng::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "a value".into()),
    }
}

/// decK renders `${{ env "DECK_NAME" }}` from the environment before it reads the file; only
/// `DECK_`-prefixed variables are allowed there. A string that was one placeholder takes the
/// type of what it resolves to (`true`, `300`), as it would after decK's textual rendering.
fn substitute(
    v: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    notes: &mut Vec<Note>,
) {
    match v {
        Value::String(s) => {
            let Some(out) = render(s, path, env, notes) else {
                return;
            };
            let whole = s.trim().starts_with("${{") && s.trim().ends_with("}}");
            *v = if whole {
                match serde_yaml_ng::from_str::<Value>(&out) {
                    Ok(parsed @ (Value::Bool(_) | Value::Number(_))) => parsed,
                    _ => Value::String(out),
                }
            } else {
                Value::String(out)
            };
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, &format!("{path}[{i}]"), env, notes);
            }
        }
        Value::Mapping(m) => {
            for (k, item) in m.iter_mut() {
                let key = k.as_str().unwrap_or("?");
                let child = if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                };
                substitute(item, &child, env, notes);
            }
        }
        _ => {}
    }
}

/// The string with every resolvable placeholder replaced, or `None` when it has none.
fn render(
    s: &str,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    notes: &mut Vec<Note>,
) -> Option<String> {
    if !s.contains("${{") {
        return None;
    }
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let placeholder = &rest[start..start + len + 2];
        let inner = placeholder[3..placeholder.len() - 2].trim();
        let name = inner
            .strip_prefix("env")
            .map(str::trim)
            .and_then(|n| n.strip_prefix('"'))
            .and_then(|n| n.strip_suffix('"'));
        match name.map(|n| (n, env(n))) {
            Some((_, Some(value))) => out.push_str(&value),
            Some((n, None)) => {
                notes.push(Note {
                    location: "placeholder".into(),
                    field: path.to_string(),
                    message: format!(
                        "`{n}` is not set in the environment: kept as `{placeholder}`; set {n} and import again, or edit the value"
                    ),
                });
                out.push_str(placeholder);
            }
            None => {
                notes.push(Note {
                    location: "placeholder".into(),
                    field: path.to_string(),
                    message: format!("`{placeholder}` is not decK's `${{{{ env \"DECK_...\" }}}}`: kept verbatim"),
                });
                out.push_str(placeholder);
            }
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    Some(out)
}
