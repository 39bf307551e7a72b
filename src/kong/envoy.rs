//! Envoy routes for the Kong routes, each picking its certbound policy through ext_authz's
//! per-route `context_extensions`.
//!
//! Envoy takes the first route that matches; Kong's router (`traditional_compatible`, Kong
//! 3.x) takes the one of highest priority: more match fields (methods, hosts, headers, snis,
//! paths) first, then plain hosts before wildcards, more headers, regex paths before plain
//! ones, higher `regex_priority`, and the longest plain path. The routes are written in that
//! order, hosts and methods as `:authority` and `:method` matchers, so Envoy's first match is
//! Kong's match. Where two routes that can match the same request are protected differently
//! and Kong's choice between them cannot be reproduced (a tie, or a match field Envoy's routes
//! do not carry), the import is refused: guessing could open a protected route.

use std::cmp::Ordering;

use certbound_core::routes::{KongFields, Priority};

use super::deck::{DeckFile, Route};
use super::mapping::{Choice, Plan};
use super::{ImportError, Note};

const PER_ROUTE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute";

/// A YAML double-quoted scalar (JSON's string syntax is a subset of YAML's).
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn list(items: &[String]) -> String {
    format!(
        "[{}]",
        items.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
    )
}

/// `s` as a literal in an RE2 pattern.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Kong's priority of a route (`certbound_core::routes` defines it and its order).
fn priority(route: &Route, paths: &[&str]) -> Priority {
    Priority::kong(KongFields {
        methods: !route.methods.is_empty(),
        hosts: &route.hosts,
        headers: route.headers,
        snis: route.unsupported.contains(&"snis"),
        paths,
        regex_priority: route.regex_priority,
    })
}

/// One Envoy route: one path of one Kong route.
struct Entry<'a> {
    route: &'a Route,
    choice: &'a Choice,
    name: String,
    /// `None`: the Kong route has no paths and matches every path.
    path: Option<&'a str>,
    /// Kong 3 splits a route with several paths into one route per path; an older router
    /// ranks the route as a whole. Both are kept and must agree wherever it matters.
    split: Priority,
    whole: Priority,
}

/// Whether some request could match both; `false` only when provably not.
fn may_overlap(a: &Entry<'_>, b: &Entry<'_>) -> bool {
    let (ra, rb) = (a.route, b.route);
    if !ra.methods.is_empty()
        && !rb.methods.is_empty()
        && !ra
            .methods
            .iter()
            .any(|m| rb.methods.iter().any(|n| m.eq_ignore_ascii_case(n)))
    {
        return false;
    }
    let exact = |r: &Route| !r.hosts.is_empty() && r.hosts.iter().all(|h| !h.contains('*'));
    if exact(ra)
        && exact(rb)
        && !ra.hosts.iter().any(|h| {
            rb.hosts
                .iter()
                .any(|g| host_only(h).eq_ignore_ascii_case(host_only(g)))
        })
    {
        return false;
    }
    match (a.path, b.path) {
        (Some(p), Some(q)) if !p.starts_with('~') && !q.starts_with('~') => {
            p.starts_with(q) || q.starts_with(p)
        }
        _ => true,
    }
}

fn host_only(h: &str) -> &str {
    h.split(':').next().unwrap_or(h)
}

/// Why Envoy's first match could differ from Kong's choice between `first` (written first)
/// and `second`, or `None` when it cannot.
fn unproven(first: &Entry<'_>, second: &Entry<'_>) -> Option<String> {
    for e in [first, second] {
        if let Some(field) = e.route.unsupported.first() {
            return Some(format!(
                "route `{}` also matches on {field}, which the Envoy routes do not carry",
                e.route.name
            ));
        }
    }
    match (
        first.split.cmp(&second.split),
        first.whole.cmp(&second.whole),
    ) {
        (Ordering::Greater, Ordering::Greater) => None,
        _ => Some(
            "Kong ranks them equally (its tie-break is not in the decK file): set `regex_priority`, or make their paths, hosts or methods tell them apart".into(),
        ),
    }
}

fn describe_choice(choice: &Choice, plan: &Plan) -> String {
    match choice {
        Choice::Default => format!("the default policy ({})", plan.default_origin),
        Choice::Named(name, origin) => format!("policy {name} ({origin})"),
        Choice::Unprotected => {
            "no authentication (no openid-connect plugin applies in Kong)".into()
        }
    }
}

pub fn render(file: &DeckFile, plan: &Plan) -> Result<String, ImportError> {
    const UNPROTECTED: Choice = Choice::Unprotected;
    let mut entries: Vec<Entry<'_>> = Vec::new();
    for route in &file.routes {
        let choice = plan.routes.get(&route.name).unwrap_or(&UNPROTECTED);
        let all: Vec<&str> = route.paths.iter().map(String::as_str).collect();
        let whole = priority(route, &all);
        let paths: Vec<Option<&str>> = if all.is_empty() {
            vec![None]
        } else {
            all.iter().copied().map(Some).collect()
        };
        for (i, path) in paths.into_iter().enumerate() {
            entries.push(Entry {
                route,
                choice,
                name: if i == 0 {
                    route.name.clone()
                } else {
                    format!("{}-{}", route.name, i + 1)
                },
                path,
                split: priority(route, path.as_slice()),
                whole,
            });
        }
    }
    // Highest Kong priority first; a stable sort keeps the file's order among equals.
    entries.sort_by_key(|e| std::cmp::Reverse(e.split));

    let mut refusals = Vec::new();
    for (i, first) in entries.iter().enumerate() {
        for second in &entries[i + 1..] {
            if first.choice == second.choice || !may_overlap(first, second) {
                continue;
            }
            if let Some(why) = unproven(first, second) {
                let (a, b) = (&first.route.name, &second.route.name);
                if refusals
                    .iter()
                    .any(|n: &Note| n.location == format!("routes {a}, {b}"))
                {
                    continue;
                }
                refusals.push(Note {
                    location: format!("routes {a}, {b}"),
                    field: String::new(),
                    message: format!(
                        "routes `{a}` ({}) and `{b}` ({}) can match the same request, and Envoy cannot be made to pick the one Kong picks: {why}",
                        describe_choice(first.choice, plan),
                        describe_choice(second.choice, plan),
                    ),
                });
            }
        }
    }
    if !refusals.is_empty() {
        return Err(ImportError::Refused(refusals));
    }

    let mut out = String::from(
        "# Written by `certbound import-kong`: one Envoy route per Kong route and path, for a\n\
         # virtual host with `domains: [\"*\"]`. They are in Kong's order of precedence (Envoy takes\n\
         # the first match): keep them together and in this order, and put no route of your own\n\
         # before them. Kong's hosts and methods are `:authority` and `:method` matchers;\n\
         # `cluster` is the Kong service's name: point it at your cluster. Kong's regex paths\n\
         # (`~...`) become `safe_regex`; other paths are prefixes, as in Kong. Kong matches the\n\
         # normalized path: set the connection manager's `normalize_path: true` and\n\
         # `merge_slashes: true`.\n\
         routes:\n",
    );
    for e in &entries {
        let route = e.route;
        let cluster = route.service.clone().unwrap_or_else(|| "upstream".into());
        let per_route = match e.choice {
            Choice::Default => None,
            Choice::Named(name, _) => Some(format!(
                "      check_settings: {{ context_extensions: {{ policy: {} }} }}\n",
                q(name)
            )),
            Choice::Unprotected => Some("      disabled: true\n".into()),
        };
        out.push_str(&format!(
            "# Kong route {} (service {}): paths {}, hosts {}, methods {}; {}\n",
            q(&route.name),
            q(route.service.as_deref().unwrap_or("-")),
            list(&route.paths),
            list(&route.hosts),
            list(&route.methods),
            describe_choice(e.choice, plan),
        ));
        let path = match e.path.map(|p| (p, p.strip_prefix('~'))) {
            // Kong anchors regex paths at the start only; Envoy's regex must match the
            // whole path.
            Some((_, Some(re))) => {
                let re = match re.strip_suffix('$') {
                    Some(exact) => exact.to_string(),
                    None => format!("(?:{re}).*"),
                };
                format!("safe_regex: {{ regex: {} }}", q(&re))
            }
            Some((p, None)) => format!("prefix: {}", q(p)),
            None => format!("prefix: {}", q("/")),
        };
        out.push_str(&format!("- name: {}\n  match:\n    {path}\n", q(&e.name)));
        let mut headers = Vec::new();
        if !route.hosts.is_empty() {
            headers.push((":authority", hosts_regex(&route.hosts)));
        }
        if !route.methods.is_empty() {
            let methods: Vec<String> = route.methods.iter().map(|m| escape(m)).collect();
            headers.push((":method", methods.join("|")));
        }
        if !headers.is_empty() {
            out.push_str("    headers:\n");
            for (name, re) in headers {
                out.push_str(&format!(
                    "    - name: {}\n      string_match: {{ safe_regex: {{ regex: {} }} }}\n",
                    q(name),
                    q(&re)
                ));
            }
        }
        out.push_str(&format!("  route: {{ cluster: {} }}\n", q(&cluster)));
        if let Some(body) = &per_route {
            out.push_str(&format!(
                "  typed_per_filter_config:\n    envoy.filters.http.ext_authz:\n      \"@type\": {PER_ROUTE}\n{body}"
            ));
        }
    }
    Ok(out)
}

/// Kong's hosts as one RE2 pattern for the whole `:authority`: case-insensitive, a port
/// allowed after a host without one (Kong matches the host without its port), `*.example`
/// any subdomain, `example.*` any top-level name.
fn hosts_regex(hosts: &[String]) -> String {
    const PORT: &str = "(:[0-9]+)?";
    let alternatives: Vec<String> = hosts
        .iter()
        .map(|h| {
            if let Some(rest) = h.strip_prefix("*.") {
                format!("[^:]+\\.{}{PORT}", escape(rest))
            } else if let Some(rest) = h.strip_suffix(".*") {
                format!("{}\\.[^:]+{PORT}", escape(rest))
            } else if h.contains(':') {
                escape(h)
            } else {
                format!("{}{PORT}", escape(h))
            }
        })
        .collect();
    format!("(?i)(?:{})", alternatives.join("|"))
}
