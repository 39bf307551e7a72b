//! Kong's routes as certbound `[[routes]]` rules: certbound, not Envoy's route order, picks the
//! policy of every request, with the core's matcher and Kong 3's precedence
//! (`certbound_core::routes`), so Envoy needs one ext_authz filter and no per-route settings.
//!
//! A route no openid-connect plugin covers is served by Kong without authentication; its rule
//! says `authenticate = false`, which certbound honours only where that rule wins, exactly as
//! Kong's router would pick the route. A request no Kong route matches is a 404 in Kong; the
//! imported configuration denies it (`unmatched_route = "deny"`).
//!
//! What a rule cannot say (a route matching on headers, SNIs, addresses, one protocol, or a
//! host with a port; a path regex certbound's regex dialect does not compile) is never dropped
//! into a wider match: a protected route with such a field refuses the import; an unprotected
//! one is left out and reported, which only narrows access (the requests it would have taken
//! get the next rule's policy, or are denied). Nor is another Kong plugin that decides who
//! gets through (`key-auth`, `acl`, `ip-restriction`, `request-termination`, ...): a route it
//! applies to refuses the import, whether or not openid-connect protects it too.

use certbound_core::defaults;
use certbound_core::routes::{Finding, Host, Path, Routes, Rule, Unmatched};
use toml::Value as T;

use super::deck::{DeckFile, Route, Scope};
use super::mapping::{Choice, Plan};
use super::{ImportError, Note};

/// The rules, each with the Kong route it came from (same index as the rule).
pub struct Imported<'a> {
    pub routes: Routes,
    pub kong: Vec<(&'a Route, &'a Choice)>,
}

const UNPROTECTED: Choice = Choice::Unprotected;

pub fn build<'a>(
    file: &'a DeckFile,
    plan: &'a Plan,
    notes: &mut Vec<Note>,
) -> Result<Imported<'a>, ImportError> {
    let mut refusals = Vec::new();
    let mut rules = Vec::new();
    let mut kong = Vec::new();
    let mut stripped = Vec::new();
    for route in &file.routes {
        let choice = plan.routes.get(&route.name).unwrap_or(&UNPROTECTED);
        for p in &file.access_plugins {
            let applies = match &p.scope {
                Scope::Global => true,
                Scope::Service(s) => route.service.as_ref() == Some(s),
                Scope::Route(r) => *r == route.name,
            };
            if applies {
                refusals.push(Note {
                    location: format!("route {}", route.name),
                    field: p.name.clone(),
                    message: format!(
                        "Kong also runs `{}` ({}) on it, which decides who gets through; certbound cannot enforce it, and without it the route would let through requests Kong refuses",
                        p.name, p.location
                    ),
                });
            }
        }
        let (rule, problems) = rule_of(route, choice);
        if problems.is_empty() {
            if route.strip_path && !route.paths.is_empty() {
                stripped.push(route.name.as_str());
            }
            rules.push(rule);
            kong.push((route, choice));
        } else if *choice == Choice::Unprotected {
            notes.push(Note {
                location: format!("route {}", route.name),
                field: String::new(),
                message: format!(
                    "left out: {}. Kong serves it without authentication; without its rule the requests it would take get the policy of the next rule that matches, or are denied",
                    problems.join("; ")
                ),
            });
        } else {
            refusals.push(Note {
                location: format!("route {}", route.name),
                field: String::new(),
                message: format!(
                    "{}; it is protected by {}, and a rule without what it matches on would take requests Kong gives other routes",
                    problems.join("; "),
                    describe(choice, plan)
                ),
            });
        }
    }
    if !refusals.is_empty() {
        return Err(ImportError::Refused(refusals));
    }
    let routes = Routes::new(rules, Unmatched::Deny);
    for finding in routes.findings() {
        match finding {
            Finding::Conflict { first, second } => {
                let ((a, ca), (b, cb)) = (kong[first], kong[second]);
                refusals.push(Note {
                    location: format!("routes {}, {}", a.name, b.name),
                    field: String::new(),
                    message: format!(
                        "routes `{}` ({}) and `{}` ({}) can match the same request and Kong ranks them equally (its tie-break is not in the decK file): set `regex_priority`, or make their paths, hosts or methods tell them apart",
                        a.name,
                        describe(ca, plan),
                        b.name,
                        describe(cb, plan)
                    ),
                });
            }
            Finding::Shadowed { rule, by } => notes.push(Note {
                location: format!("route {}", kong[rule].0.name),
                field: String::new(),
                message: format!(
                    "never chosen: route `{}` ranks higher wherever it matches (in Kong too)",
                    kong[by].0.name
                ),
            }),
        }
    }
    if !refusals.is_empty() {
        return Err(ImportError::Refused(refusals));
    }
    if !stripped.is_empty() {
        notes.push(Note {
            location: format!("routes {}", stripped.join(", ")),
            field: "strip_path".into(),
            message: "Kong (by default) removes the matched path before calling the upstream; the Envoy routes forward the path as sent: add a `regex_rewrite` where the upstream expects the stripped path. Matching is the same either way".into(),
        });
    }
    Ok(Imported { routes, kong })
}

/// The rule for one Kong route, and what it cannot express (the rule is unusable unless that
/// is empty).
fn rule_of(route: &Route, choice: &Choice) -> (Rule, Vec<String>) {
    let mut problems: Vec<String> = route
        .unsupported
        .iter()
        .map(|f| format!("it matches on {f}, which certbound's rules do not"))
        .collect();
    if route.paths.is_empty() && route.hosts.is_empty() && route.methods.is_empty() {
        problems.push("it sets none of paths, hosts, methods".into());
    }
    let mut hosts = Vec::new();
    for h in &route.hosts {
        match Host::parse(h) {
            Some(host) => hosts.push(host),
            None => problems.push(format!("host `{h}` is not a name or a `*` wildcard label")),
        }
    }
    let mut paths = Vec::new();
    for p in &route.paths {
        if !p.starts_with('/') && !p.starts_with('~') {
            problems.push(format!("path `{p}` starts with neither `/` nor `~`"));
            continue;
        }
        match Path::parse(p, defaults::ROUTE_REGEX_SIZE_LIMIT) {
            Ok(path) => paths.push(path),
            Err(e) => problems.push(format!("path `{p}` is not a regex certbound compiles: {e}")),
        }
    }
    if let Some(m) = route
        .methods
        .iter()
        .find(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
    {
        problems.push(format!("method `{m}` is not an upper-case name"));
    }
    let (policy, unauthenticated) = match choice {
        Choice::Default => (None, false),
        Choice::Named(name, _) => (Some(name.clone()), false),
        Choice::Unprotected => (None, true),
    };
    let rule = Rule {
        hosts,
        paths,
        methods: route.methods.clone(),
        regex_priority: route.regex_priority,
        policy,
        unauthenticated,
        host_spellings: route.hosts.clone(),
    };
    (rule, problems)
}

fn describe(choice: &Choice, plan: &Plan) -> String {
    match choice {
        Choice::Default => format!("the default policy ({})", plan.default_origin),
        Choice::Named(name, origin) => format!("policy {name} ({origin})"),
        Choice::Unprotected => {
            "no authentication (no openid-connect plugin applies in Kong)".into()
        }
    }
}

/// `unmatched_route` and the `[[routes]]` array, in file order, for certbound.toml.
pub fn toml(imported: &Imported<'_>) -> toml::Table {
    let strings = |v: &[String]| T::Array(v.iter().cloned().map(T::String).collect());
    let rules = imported
        .kong
        .iter()
        .map(|(route, choice)| {
            let mut t = toml::Table::new();
            t.insert("name".into(), T::String(route.name.clone()));
            for (key, v) in [
                ("hosts", &route.hosts),
                ("paths", &route.paths),
                ("methods", &route.methods),
            ] {
                if !v.is_empty() {
                    t.insert(key.into(), strings(v));
                }
            }
            if route.regex_priority != 0 {
                t.insert("regex_priority".into(), T::Integer(route.regex_priority));
            }
            match choice {
                Choice::Default => {
                    t.insert("policy".into(), T::String("default".into()));
                }
                Choice::Named(name, _) => {
                    t.insert("policy".into(), T::String(name.clone()));
                }
                Choice::Unprotected => {
                    t.insert("authenticate".into(), T::Boolean(false));
                }
            }
            T::Table(t)
        })
        .collect();
    let mut out = toml::Table::new();
    out.insert("unmatched_route".into(), T::String("deny".into()));
    out.insert("routes".into(), T::Array(rules));
    out
}
