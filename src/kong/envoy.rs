//! Envoy routes for the Kong routes, each picking its certbound policy through ext_authz's
//! per-route `context_extensions`.

use super::deck::DeckFile;
use super::mapping::{Choice, Plan};

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

pub fn render(file: &DeckFile, plan: &Plan) -> String {
    let mut out = String::from(
        "# Written by `certbound import-kong`: one Envoy route per Kong route and path, for a\n\
         # virtual host's `routes:`. Kong's hosts and methods are in the comments (Envoy matches\n\
         # hosts by virtual host); `cluster` is the Kong service's name: point it at your cluster.\n\
         # Kong's regex paths (`~...`) become `safe_regex`; other paths are prefixes, as in Kong.\n\
         routes:\n",
    );
    for route in &file.routes {
        let choice = plan.routes.get(&route.name).unwrap_or(&Choice::Unprotected);
        let cluster = route.service.clone().unwrap_or_else(|| "upstream".into());
        let (what, per_route) = match choice {
            Choice::Default => (
                format!("the default policy ({})", plan.default_origin),
                None,
            ),
            Choice::Named(name, origin) => (
                format!("policy {name} ({origin})"),
                Some(format!(
                    "      check_settings: {{ context_extensions: {{ policy: {} }} }}\n",
                    q(name)
                )),
            ),
            Choice::Unprotected => (
                "no authentication (no openid-connect plugin applies in Kong)".into(),
                Some("      disabled: true\n".into()),
            ),
        };
        out.push_str(&format!(
            "# Kong route {} (service {}): paths {}, hosts {}, methods {}; {what}\n",
            q(&route.name),
            q(route.service.as_deref().unwrap_or("-")),
            list(&route.paths),
            list(&route.hosts),
            list(&route.methods),
        ));
        let paths: Vec<String> = if route.paths.is_empty() {
            vec!["/".into()]
        } else {
            route.paths.clone()
        };
        for (i, path) in paths.iter().enumerate() {
            let name = if i == 0 {
                route.name.clone()
            } else {
                format!("{}-{}", route.name, i + 1)
            };
            let matcher = match path.strip_prefix('~') {
                // Kong anchors regex paths at the start only; Envoy's regex must match the
                // whole path.
                Some(re) => {
                    let re = match re.strip_suffix('$') {
                        Some(exact) => exact.to_string(),
                        None => format!("(?:{re}).*"),
                    };
                    format!("{{ safe_regex: {{ regex: {} }} }}", q(&re))
                }
                None => format!("{{ prefix: {} }}", q(path)),
            };
            out.push_str(&format!(
                "- name: {}\n  match: {matcher}\n  route: {{ cluster: {} }}\n",
                q(&name),
                q(&cluster)
            ));
            if let Some(body) = &per_route {
                out.push_str(&format!(
                    "  typed_per_filter_config:\n    envoy.filters.http.ext_authz:\n      \"@type\": {PER_ROUTE}\n{body}"
                ));
            }
        }
    }
    out
}
