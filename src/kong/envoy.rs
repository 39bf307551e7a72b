//! Envoy routes for the Kong routes: routing to the Kong services' clusters, nothing else.
//!
//! certbound picks every request's policy from the `[[routes]]` rules (`super::rules`), so
//! these routes carry no ext_authz settings: one ext_authz filter on the listener checks every
//! request. They only choose the upstream, in the order the core ranks the rules (Kong's
//! precedence; Envoy takes the first match), so that a request reaches the service of the Kong
//! route whose rule decided it. A request no route matches gets Envoy's 404, as Kong answers.

use super::rules::Imported;

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

pub fn render(imported: &Imported<'_>) -> String {
    let mut out = String::from(
        "# Written by `certbound import-kong`: routing only. certbound chooses each request's\n\
         # policy itself from the [[routes]] rules in certbound.toml (Kong's precedence), so these\n\
         # routes carry no ext_authz settings: put ONE ext_authz filter on the listener and set\n\
         # no per-route ext_authz config (a per-route `context_extensions.policy` would override\n\
         # the rules). They pick the Kong service's cluster (`cluster` is the service's name:\n\
         # point it at yours), in Kong's order of precedence for a virtual host with\n\
         # `domains: [\"*\"]`: keep them together and in this order. A request none matches gets\n\
         # Envoy's 404 (Kong's answer); certbound denies it too (`unmatched_route = \"deny\"`).\n\
         # Kong matches the normalized path: set the connection manager's `normalize_path: true`\n\
         # and `merge_slashes: true`.\n\
         routes:\n",
    );
    let mut seen = std::collections::BTreeMap::<&str, usize>::new();
    for (rule, path) in imported.routes.ranked() {
        let (route, _) = imported.kong[rule];
        let count = seen.entry(route.name.as_str()).or_insert(0);
        *count += 1;
        let name = if *count == 1 {
            route.name.clone()
        } else {
            format!("{}-{count}", route.name)
        };
        let cluster = route.service.clone().unwrap_or_else(|| "upstream".into());
        out.push_str(&format!(
            "# Kong route {} (service {}): paths {}, hosts {}, methods {}\n",
            q(&route.name),
            q(route.service.as_deref().unwrap_or("-")),
            list(&route.paths),
            list(&route.hosts),
            list(&route.methods),
        ));
        let path = match path.map(|j| route.paths[j].as_str()) {
            // Kong anchors regex paths at the start only; Envoy's regex must match the
            // whole path.
            Some(p) => match p.strip_prefix('~') {
                Some(re) => {
                    let re = match re.strip_suffix('$') {
                        Some(exact) => exact.to_string(),
                        None => format!("(?:{re}).*"),
                    };
                    format!("safe_regex: {{ regex: {} }}", q(&re))
                }
                None => format!("prefix: {}", q(p)),
            },
            None => format!("prefix: {}", q("/")),
        };
        out.push_str(&format!("- name: {}\n  match:\n    {path}\n", q(&name)));
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
    }
    out
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
