use proptest::prelude::*;

use super::*;

const LIMIT: usize = 1 << 20;

fn rule(hosts: &[&str], paths: &[&str], methods: &[&str], policy: &str) -> Rule {
    Rule {
        hosts: hosts.iter().map(|h| Host::parse(h).unwrap()).collect(),
        host_spellings: hosts.iter().map(|h| h.to_string()).collect(),
        paths: paths
            .iter()
            .map(|p| Path::parse(p, LIMIT).unwrap())
            .collect(),
        methods: methods.iter().map(|m| m.to_string()).collect(),
        regex_priority: 0,
        policy: (policy != "default").then(|| policy.to_string()),
        unauthenticated: false,
    }
}

fn pick<'a>(
    routes: &'a Routes,
    authority: &'a str,
    path: &'a str,
    method: &'a str,
) -> Selected<'a> {
    routes.select(&Request {
        authority,
        path,
        method,
    })
}

#[test]
fn wildcard_hosts_match_subdomains_and_top_level_names_but_not_the_bare_name() {
    let r = Routes::new(
        vec![
            rule(&["*.example.com"], &[], &[], "sub"),
            rule(&["api.*"], &[], &[], "tld"),
        ],
        Unmatched::Deny,
    );
    assert_eq!(
        pick(&r, "a.b.example.com", "/", "GET"),
        Selected::Policy(Some("sub"))
    );
    assert_eq!(
        pick(&r, "WWW.Example.COM:8443", "/", "GET"),
        Selected::Policy(Some("sub"))
    );
    assert_eq!(
        pick(&r, "api.example.org", "/", "GET"),
        Selected::Policy(Some("tld"))
    );
    assert_eq!(pick(&r, "example.com", "/", "GET"), Selected::Deny);
    assert_eq!(pick(&r, "badexample.com", "/", "GET"), Selected::Deny);
    assert_eq!(pick(&r, "api", "/", "GET"), Selected::Deny);
}

#[test]
fn a_host_written_with_a_port_matches_only_that_port() {
    let r = Routes::new(
        vec![rule(&["api.example.com:8443"], &[], &[], "p")],
        Unmatched::Deny,
    );
    assert_eq!(
        pick(&r, "api.example.com:8443", "/", "GET"),
        Selected::Policy(Some("p"))
    );
    assert_eq!(pick(&r, "api.example.com:443", "/", "GET"), Selected::Deny);
    assert_eq!(pick(&r, "api.example.com", "/", "GET"), Selected::Deny);
    let any = Routes::new(
        vec![rule(&["api.example.com"], &[], &[], "p")],
        Unmatched::Deny,
    );
    assert_eq!(
        pick(&any, "api.example.com:443", "/", "GET"),
        Selected::Policy(Some("p"))
    );
}

#[test]
fn malformed_host_patterns_are_refused() {
    for bad in [
        "",
        "*",
        "a.*.com",
        "*example.com",
        "example*",
        "*.",
        "a.example.com:x",
    ] {
        assert_eq!(Host::parse(bad), None, "{bad}");
    }
}

#[test]
fn regex_paths_are_anchored_at_the_start_only_and_see_no_query() {
    let r = Routes::new(
        vec![
            rule(&[], &["~/accounts/\\d+$"], &[], "exact"),
            rule(&[], &["~/v\\d/"], &[], "versioned"),
        ],
        Unmatched::Deny,
    );
    assert_eq!(
        pick(&r, "h", "/accounts/42", "GET"),
        Selected::Policy(Some("exact"))
    );
    assert_eq!(
        pick(&r, "h", "/accounts/42?x=1", "GET"),
        Selected::Policy(Some("exact"))
    );
    assert_eq!(pick(&r, "h", "/accounts/42/x", "GET"), Selected::Deny);
    assert_eq!(pick(&r, "h", "/x/accounts/42", "GET"), Selected::Deny);
    assert_eq!(
        pick(&r, "h", "/v2/items", "GET"),
        Selected::Policy(Some("versioned"))
    );
}

#[test]
fn paths_are_matched_after_normalization() {
    let r = Routes::new(
        vec![rule(&[], &["/payments"], &[], "strict")],
        Unmatched::Deny,
    );
    for p in [
        "/%70ayments",
        "/public/../payments",
        "//payments",
        "/./payments/x",
    ] {
        assert_eq!(
            pick(&r, "h", p, "GET"),
            Selected::Policy(Some("strict")),
            "{p}"
        );
    }
    assert_eq!(normalize_path("/a/b/../c/?q"), "/a/c/");
    assert_eq!(normalize_path("/a%2fb"), "/a%2Fb");
    assert_eq!(normalize_path("/.."), "/");
    assert_eq!(normalize_path(""), "/");
}

#[test]
fn methods_restrict_a_rule() {
    let r = Routes::new(
        vec![rule(&[], &["/"], &["POST"], "writes")],
        Unmatched::Default,
    );
    assert_eq!(
        pick(&r, "h", "/x", "POST"),
        Selected::Policy(Some("writes"))
    );
    assert_eq!(pick(&r, "h", "/x", "GET"), Selected::Policy(None));
}

#[test]
fn precedence_follows_kong_regex_then_longest_path_then_plain_hosts() {
    let mut low = rule(&[], &["~/a"], &[], "regex-low");
    low.regex_priority = 1;
    let mut high = rule(&[], &["~/a/b"], &[], "regex-high");
    high.regex_priority = 2;
    let r = Routes::new(
        vec![
            rule(&[], &["/a"], &[], "short"),
            rule(&[], &["/a/b/c"], &[], "long"),
            low,
            high,
        ],
        Unmatched::Deny,
    );
    assert_eq!(
        pick(&r, "h", "/a/b/c", "GET"),
        Selected::Policy(Some("regex-high"))
    );
    assert_eq!(
        pick(&r, "h", "/a/c", "GET"),
        Selected::Policy(Some("regex-low"))
    );

    let plain = Routes::new(
        vec![
            rule(&[], &["/a"], &[], "short"),
            rule(&[], &["/a/b/c"], &[], "long"),
        ],
        Unmatched::Deny,
    );
    assert_eq!(
        pick(&plain, "h", "/a/b/c/d", "GET"),
        Selected::Policy(Some("long"))
    );
    assert_eq!(
        pick(&plain, "h", "/a/b", "GET"),
        Selected::Policy(Some("short"))
    );

    let hosts = Routes::new(
        vec![
            rule(&["*.example.com"], &["/a/b"], &[], "wild"),
            rule(&["api.example.com"], &["/a"], &[], "exact"),
        ],
        Unmatched::Deny,
    );
    // Kong ranks plain hosts above path length.
    assert_eq!(
        pick(&hosts, "api.example.com", "/a/b", "GET"),
        Selected::Policy(Some("exact"))
    );
    assert_eq!(
        pick(&hosts, "x.example.com", "/a/b", "GET"),
        Selected::Policy(Some("wild"))
    );

    let weight = Routes::new(
        vec![
            rule(&[], &["/a/b/c"], &[], "path-only"),
            rule(&[], &["/a"], &["GET"], "path-and-method"),
        ],
        Unmatched::Deny,
    );
    assert_eq!(
        pick(&weight, "h", "/a/b/c", "GET"),
        Selected::Policy(Some("path-and-method"))
    );
    assert_eq!(
        pick(&weight, "h", "/a/b/c", "PUT"),
        Selected::Policy(Some("path-only"))
    );
}

#[test]
fn unmatched_requests_get_the_default_policy_or_are_denied() {
    let rules = || vec![rule(&[], &["/a"], &[], "p")];
    let d = Routes::new(rules(), Unmatched::Default);
    assert_eq!(pick(&d, "h", "/b", "GET"), Selected::Policy(None));
    let deny = Routes::new(rules(), Unmatched::Deny);
    assert_eq!(pick(&deny, "h", "/b", "GET"), Selected::Deny);
}

#[test]
fn a_rule_behind_one_matching_a_superset_is_reported_shadowed() {
    let r = Routes::new(
        vec![
            rule(&["a.example.com"], &["/a"], &["GET"], "p"),
            rule(&["a.example.com"], &["/a"], &["GET"], "p"),
            rule(&["a.example.com"], &["/a/b"], &["GET"], "p"),
        ],
        Unmatched::Default,
    );
    assert_eq!(r.findings(), vec![Finding::Shadowed { rule: 1, by: 0 }]);
}

#[test]
fn equal_priority_overlapping_rules_with_different_policies_conflict() {
    let r = Routes::new(
        vec![
            rule(&["*.example.com"], &["/a"], &[], "p"),
            rule(&["api.*"], &["/b"], &[], "q"),
            rule(&["*.example.com"], &["/a"], &[], "p"),
            rule(&["x.*"], &["/a"], &[], "q"),
        ],
        Unmatched::Default,
    );
    let f = r.findings();
    assert!(
        f.contains(&Finding::Conflict {
            first: 0,
            second: 3
        }),
        "{f:?}"
    );
    assert!(
        f.contains(&Finding::Conflict {
            first: 2,
            second: 3
        }),
        "{f:?}"
    );
    // `/a` and `/b` cannot overlap; rules 0 and 2 agree.
    assert!(
        !f.iter().any(|x| matches!(
            x,
            Finding::Conflict {
                first: 0,
                second: 1
            } | Finding::Conflict {
                first: 1,
                second: _
            } | Finding::Conflict {
                first: 0,
                second: 2
            }
        )),
        "{f:?}"
    );
}

fn unauthenticated(paths: &[&str]) -> Rule {
    Rule {
        unauthenticated: true,
        policy: None,
        ..rule(&[], paths, &[], "default")
    }
}

#[test]
fn a_rule_that_does_not_authenticate_wins_only_where_kong_would_pick_it() {
    let r = Routes::new(
        vec![
            unauthenticated(&["/"]),
            rule(&[], &["/admin"], &[], "admin"),
            rule(&[], &["/items"], &["POST"], "default"),
            unauthenticated(&["/items"]),
        ],
        Unmatched::Deny,
    );
    assert_eq!(pick(&r, "h", "/guide", "GET"), Selected::Unauthenticated);
    assert_eq!(
        pick(&r, "h", "/admin/x", "GET"),
        Selected::Policy(Some("admin"))
    );
    // The `..` cannot climb out of a protected path into an open one or back.
    assert_eq!(
        pick(&r, "h", "/guide/../admin", "GET"),
        Selected::Policy(Some("admin"))
    );
    assert_eq!(pick(&r, "h", "/items", "POST"), Selected::Policy(None));
    assert_eq!(pick(&r, "h", "/items", "GET"), Selected::Unauthenticated);
}

#[test]
fn an_open_rule_and_a_protected_one_of_equal_precedence_conflict() {
    let r = Routes::new(
        vec![unauthenticated(&["/a"]), rule(&[], &["/a"], &[], "default")],
        Unmatched::Deny,
    );
    assert_eq!(
        r.findings(),
        vec![
            Finding::Shadowed { rule: 1, by: 0 },
            Finding::Conflict {
                first: 0,
                second: 1
            }
        ]
    );
    let same = Routes::new(
        vec![unauthenticated(&["/a"]), unauthenticated(&["/a/b"])],
        Unmatched::Deny,
    );
    assert!(same
        .findings()
        .iter()
        .all(|f| !matches!(f, Finding::Conflict { .. })));
}

#[test]
fn ranked_lists_every_path_of_every_rule_in_precedence_order() {
    let r = Routes::new(
        vec![
            rule(&[], &["/", "/longer"], &[], "default"),
            rule(&[], &["~/r"], &[], "default"),
        ],
        Unmatched::Default,
    );
    assert_eq!(
        r.ranked().collect::<Vec<_>>(),
        vec![(1, Some(0)), (0, Some(1)), (0, Some(0))]
    );
}

#[test]
fn a_regex_larger_than_the_size_limit_is_refused() {
    assert!(Path::parse("~(a{1,1000}){1,1000}", 1 << 16).is_err());
    assert!(Path::parse("~/a/\\d+$", 1 << 16).is_ok());
}

// The reference: every matching (rule, path) with its key spelled out as the module docs
// define it, sorted, first taken.
const HOSTS: &[&str] = &[
    "a.example.com",
    "b.example.com",
    "*.example.com",
    "a.example.*",
];
const PATHS: &[&str] = &["/", "/a", "/a/b", "/ab", "~/a/\\d+$", "~/a"];
const METHODS: &[&str] = &["GET", "POST"];
const POLICIES: &[&str] = &["default", "p1", "p2"];
const REQ_HOSTS: &[&str] = &[
    "a.example.com",
    "b.example.com",
    "c.example.com",
    "a.example.org",
    "A.EXAMPLE.COM:8080",
];
const REQ_PATHS: &[&str] = &["/", "/a", "/a/1", "/a/b/c", "/ab", "/b"];
const REQ_METHODS: &[&str] = &["GET", "POST", "PUT"];

#[derive(Debug, Clone)]
struct Spec {
    hosts: Vec<usize>,
    paths: Vec<usize>,
    methods: Vec<usize>,
    regex_priority: i64,
    policy: usize,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        proptest::sample::subsequence((0..HOSTS.len()).collect::<Vec<_>>(), 0..=2),
        proptest::sample::subsequence((0..PATHS.len()).collect::<Vec<_>>(), 0..=2),
        proptest::sample::subsequence((0..METHODS.len()).collect::<Vec<_>>(), 0..=2),
        0i64..3,
        0..POLICIES.len(),
    )
        .prop_map(|(hosts, paths, methods, regex_priority, policy)| Spec {
            hosts,
            paths,
            methods,
            regex_priority,
            policy,
        })
}

fn reference_host(pattern: &str, authority: &str) -> bool {
    let host = authority
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if let Some(suffix) = pattern.strip_prefix('*') {
        host.ends_with(suffix) && host.len() > suffix.len()
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        host.starts_with(prefix) && host.len() > prefix.len()
    } else {
        host == pattern
    }
}

fn reference_path(pattern: &str, path: &str) -> bool {
    match pattern {
        "~/a/\\d+$" => path
            .strip_prefix("/a/")
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())),
        "~/a" => path.starts_with("/a"),
        plain => path.starts_with(plain),
    }
}

/// (fields set, plain hosts only, is regex, regex_priority, plain path length)
fn reference_key(s: &Spec, path: Option<&str>) -> (u8, bool, bool, i64, usize) {
    let regex = path.is_some_and(|p| p.starts_with('~'));
    (
        u8::from(!s.hosts.is_empty()) + u8::from(!s.methods.is_empty()) + u8::from(path.is_some()),
        !s.hosts.is_empty() && s.hosts.iter().all(|h| !HOSTS[*h].contains('*')),
        regex,
        if regex { s.regex_priority } else { 0 },
        path.filter(|p| !regex && !p.is_empty()).map_or(0, str::len),
    )
}

fn reference(specs: &[Spec], authority: &str, path: &str, method: &str) -> Option<usize> {
    let mut candidates = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let host_ok =
            s.hosts.is_empty() || s.hosts.iter().any(|h| reference_host(HOSTS[*h], authority));
        let method_ok = s.methods.is_empty() || s.methods.iter().any(|m| METHODS[*m] == method);
        if !(host_ok && method_ok) {
            continue;
        }
        let paths: Vec<Option<&str>> = if s.paths.is_empty() {
            vec![None]
        } else {
            s.paths.iter().map(|p| Some(PATHS[*p])).collect()
        };
        for p in paths {
            if p.is_none_or(|p| reference_path(p, path)) {
                candidates.push((reference_key(s, p), i));
            }
        }
    }
    // Highest key first; the earlier rule among equal keys.
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    candidates.first().map(|c| c.1)
}

proptest! {
    #[test]
    fn selection_equals_the_reference_precedence(
        specs in proptest::collection::vec(spec(), 0..8),
        host in 0..REQ_HOSTS.len(),
        path in 0..REQ_PATHS.len(),
        method in 0..REQ_METHODS.len(),
    ) {
        let rules: Vec<Rule> = specs
            .iter()
            .map(|s| {
                let mut r = rule(
                    &s.hosts.iter().map(|h| HOSTS[*h]).collect::<Vec<_>>(),
                    &s.paths.iter().map(|p| PATHS[*p]).collect::<Vec<_>>(),
                    &s.methods.iter().map(|m| METHODS[*m]).collect::<Vec<_>>(),
                    POLICIES[s.policy],
                );
                r.regex_priority = s.regex_priority;
                r
            })
            .collect();
        let routes = Routes::new(rules, Unmatched::Deny);
        let (a, p, m) = (REQ_HOSTS[host], REQ_PATHS[path], REQ_METHODS[method]);
        let got = routes.matching(&Request { authority: a, path: p, method: m });
        prop_assert_eq!(got, reference(&specs, a, p, m));
    }
}
