//! Policy selection by host, path and method: the configuration's `[[routes]]` rules, ranked
//! as Kong's router ranks routes, so that a decK file's routes keep Kong's meaning here.
//!
//! # Matching
//!
//! A rule matches a request when every field it sets matches (an empty field matches all):
//!
//! - `hosts`: the `:authority` without its port, case-insensitively; `*.example.com` is any
//!   name ending in `.example.com` (one label or more before it), `example.*` any name
//!   starting with `example.`; a host written with a port matches only that port.
//! - `paths`: a plain path is a prefix; `~` starts a regex, anchored at the start only (as Kong
//!   anchors it): an exact path is `~/payments$`. Paths are matched after normalization (query
//!   dropped, percent-encoded unreserved characters decoded, dot segments removed, repeated
//!   slashes merged), as Kong normalizes them, so that `/%70ayments` and `/a/../payments` are
//!   `/payments`.
//! - `methods`: exact, upper case.
//!
//! # Precedence
//!
//! Kong 3.x's `traditional_compatible` router (`kong/router/transform.lua`, `get_priority`,
//! after `split_routes_and_services_by_path`): each path of a rule is ranked on its own, and
//! the matching (rule, path) of highest [`Priority`] wins. Priorities compare field by field:
//!
//! 1. `match_weight`: the number of match fields set (methods, hosts, headers, snis, paths);
//! 2. `plain_host_only`: hosts set and none a wildcard, before any other;
//! 3. the number of header matchers (always 0 for `[[routes]]`, which match no headers);
//! 4. a regex path before a plain one;
//! 5. higher `regex_priority` (regex paths only);
//! 6. the longer plain path.
//!
//! Kong breaks remaining ties by something a configuration does not carry, so
//! [`Routes::findings`] lists overlapping rules of equal priority that name different
//! policies and the configuration refuses them; among equals that agree, file order decides.

/// Kong's priority of one route (and path), compared from the most significant field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Priority {
    pub match_weight: u8,
    pub plain_host_only: bool,
    pub headers: usize,
    pub regex: bool,
    pub regex_priority: i64,
    pub max_length: usize,
}

/// What Kong's priority is computed from: a route's fields as written (paths with Kong's `~`).
#[derive(Debug, Clone, Copy)]
pub struct KongFields<'a, H: AsRef<str>, P: AsRef<str>> {
    pub methods: bool,
    pub hosts: &'a [H],
    pub headers: usize,
    pub snis: bool,
    pub paths: &'a [P],
    pub regex_priority: i64,
}

impl Priority {
    /// Kong's priority of a route with these fields.
    pub fn kong<H: AsRef<str>, P: AsRef<str>>(f: KongFields<'_, H, P>) -> Self {
        let present = [
            f.methods,
            !f.hosts.is_empty(),
            f.headers > 0,
            f.snis,
            !f.paths.is_empty(),
        ];
        let regex = f.paths.iter().any(|p| p.as_ref().starts_with('~'));
        Priority {
            match_weight: present.iter().filter(|p| **p).count() as u8,
            plain_host_only: !f.hosts.is_empty()
                && !f.hosts.iter().any(|h| h.as_ref().contains('*')),
            headers: f.headers,
            regex,
            regex_priority: if regex { f.regex_priority } else { 0 },
            max_length: f
                .paths
                .iter()
                .map(AsRef::as_ref)
                .filter(|p| !p.starts_with('~'))
                .map(str::len)
                .max()
                .unwrap_or(0),
        }
    }
}

/// One host a rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// Lower case; with a port, only requests to that port match.
    Exact { host: String, port: Option<String> },
    /// `*.example.com`, kept as `.example.com`.
    Suffix(String),
    /// `example.*`, kept as `example.`.
    Prefix(String),
}

impl Host {
    /// `None` for a `*` anywhere but a whole leading or trailing label, or an empty name.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.to_ascii_lowercase();
        if let Some(rest) = s.strip_prefix('*') {
            let ok = rest.len() > 1 && rest.starts_with('.') && !rest.contains(['*', ':']);
            return ok.then(|| Host::Suffix(rest.to_string()));
        }
        if let Some(rest) = s.strip_suffix('*') {
            let ok = rest.len() > 1 && rest.ends_with('.') && !rest.contains(['*', ':']);
            return ok.then(|| Host::Prefix(rest.to_string()));
        }
        if s.contains('*') {
            return None;
        }
        let (host, port) = split_authority(&s);
        (!host.is_empty()
            && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
        .then(|| Host::Exact {
            host: host.to_string(),
            port: port.map(str::to_string),
        })
    }

    fn matches(&self, host: &str, port: Option<&str>) -> bool {
        match self {
            Host::Exact { host: h, port: p } => {
                h.eq_ignore_ascii_case(host) && p.as_deref().is_none_or(|p| Some(p) == port)
            }
            Host::Suffix(s) => {
                let at = host.len().wrapping_sub(s.len());
                host.len() > s.len()
                    && host.is_char_boundary(at)
                    && host[at..].eq_ignore_ascii_case(s)
            }
            Host::Prefix(p) => {
                host.len() > p.len()
                    && host.is_char_boundary(p.len())
                    && host[..p.len()].eq_ignore_ascii_case(p)
            }
        }
    }
}

/// An `:authority` as host and port (`[::1]:80` -> `[::1]`, `80`).
fn split_authority(authority: &str) -> (&str, Option<&str>) {
    let host_end = if authority.starts_with('[') {
        authority.find(']').map_or(authority.len(), |e| e + 1)
    } else {
        authority.find(':').unwrap_or(authority.len())
    };
    let (host, rest) = authority.split_at(host_end);
    (host, rest.strip_prefix(':'))
}

/// One path a rule matches.
#[derive(Debug, Clone)]
pub enum Path {
    Prefix(String),
    /// Compiled from `^(?:PATTERN)`; `source` is the pattern as written, without `~`.
    Regex {
        re: regex::Regex,
        source: String,
    },
}

impl Path {
    /// Kong's spelling: `~PATTERN` is a regex, anything else a prefix. `size_limit` bounds
    /// the compiled regex (bytes), so a configuration cannot make the matcher huge.
    pub fn parse(s: &str, size_limit: usize) -> Result<Self, regex::Error> {
        match s.strip_prefix('~') {
            Some(source) => Ok(Path::Regex {
                re: regex::RegexBuilder::new(&format!("^(?:{source})"))
                    .size_limit(size_limit)
                    .dfa_size_limit(size_limit)
                    .build()?,
                source: source.to_string(),
            }),
            None => Ok(Path::Prefix(s.to_string())),
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            Path::Prefix(p) => path.starts_with(p.as_str()),
            Path::Regex { re, .. } => re.is_match(path),
        }
    }

    /// As written, with Kong's `~` for a regex.
    pub fn spelling(&self) -> String {
        match self {
            Path::Prefix(p) => p.clone(),
            Path::Regex { source, .. } => format!("~{source}"),
        }
    }
}

/// One `[[routes]]` rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub hosts: Vec<Host>,
    pub paths: Vec<Path>,
    pub methods: Vec<String>,
    pub regex_priority: i64,
    /// The policy it selects; `None` is the default policy.
    pub policy: Option<String>,
    /// `authenticate = false`: the requests it wins are let through unchecked (a Kong route no
    /// authentication plugin covers). `policy` is then `None` and unused.
    pub unauthenticated: bool,
    /// Hosts as written, for Kong's `plain_host_only` and for messages.
    pub host_spellings: Vec<String>,
}

/// What happens to a request no rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unmatched {
    /// The default policy decides.
    #[default]
    Default,
    /// Denied (`no_matching_route`).
    Deny,
}

/// The request fields rules look at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `:authority` as sent (port included, if any).
    pub authority: &'a str,
    /// `:path` as sent (query included, if any).
    pub path: &'a str,
    pub method: &'a str,
}

/// What the rules chose for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selected<'a> {
    /// This policy; `None` is the default policy.
    Policy(Option<&'a str>),
    /// No rule matched and the configuration says deny.
    Deny,
    /// The winning rule says `authenticate = false`: allowed without any check.
    Unauthenticated,
}

/// One path of one rule, ranked.
#[derive(Debug, Clone, Copy)]
struct Entry {
    rule: usize,
    /// `None`: the rule has no paths.
    path: Option<usize>,
    priority: Priority,
}

/// The rules, ranked once at configuration load.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    rules: Vec<Rule>,
    /// Highest priority first; file order among equals.
    entries: Vec<Entry>,
    pub unmatched: Unmatched,
}

/// A rule that can never match, or two that Kong could rank either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Rule `rule` (index in file order) is matched first by `by` wherever it matches.
    Shadowed { rule: usize, by: usize },
    /// Rules of equal priority that can match the same request and choose different policies.
    Conflict { first: usize, second: usize },
}

impl Rule {
    fn priority(&self, path: Option<&Path>) -> Priority {
        let paths: Vec<String> = path.map(Path::spelling).into_iter().collect();
        Priority::kong(KongFields {
            methods: !self.methods.is_empty(),
            hosts: &self.host_spellings,
            headers: 0,
            snis: false,
            paths: &paths,
            regex_priority: self.regex_priority,
        })
    }

    /// Whether two rules decide the same way wherever they win.
    fn same_choice(&self, other: &Rule) -> bool {
        self.unauthenticated == other.unauthenticated
            && (self.unauthenticated || self.policy == other.policy)
    }

    fn matches_host_and_method(&self, host: &str, port: Option<&str>, method: &str) -> bool {
        (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(host, port)))
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
    }
}

impl Routes {
    pub fn new(rules: Vec<Rule>, unmatched: Unmatched) -> Self {
        let mut entries = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            if rule.paths.is_empty() {
                entries.push(Entry {
                    rule: i,
                    path: None,
                    priority: rule.priority(None),
                });
            }
            for (j, p) in rule.paths.iter().enumerate() {
                entries.push(Entry {
                    rule: i,
                    path: Some(j),
                    priority: rule.priority(Some(p)),
                });
            }
        }
        // Stable: file order among equal priorities.
        entries.sort_by_key(|e| std::cmp::Reverse(e.priority));
        Self {
            rules,
            entries,
            unmatched,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Every (rule, path) in the order requests try them, highest precedence first: rule
    /// indices in file order, and the path's index in the rule (`None`: the rule has no
    /// paths). Whoever writes these rules as ordered routes elsewhere (the Kong importer's
    /// Envoy routes) takes this order rather than ranking them again.
    pub fn ranked(&self) -> impl Iterator<Item = (usize, Option<usize>)> + '_ {
        self.entries.iter().map(|e| (e.rule, e.path))
    }

    /// The rule of highest precedence that matches, as its index in file order.
    pub fn matching(&self, req: &Request<'_>) -> Option<usize> {
        let (host, port) = split_authority(req.authority);
        let path = normalize_path(req.path);
        self.entries
            .iter()
            .find(|e| {
                let rule = &self.rules[e.rule];
                rule.matches_host_and_method(host, port, req.method)
                    && e.path.is_none_or(|p| rule.paths[p].matches(&path))
            })
            .map(|e| e.rule)
    }

    /// The policy for a request.
    pub fn select(&self, req: &Request<'_>) -> Selected<'_> {
        match self.matching(req) {
            Some(i) if self.rules[i].unauthenticated => Selected::Unauthenticated,
            Some(i) => Selected::Policy(self.rules[i].policy.as_deref()),
            None if self.unmatched == Unmatched::Deny => Selected::Deny,
            None => Selected::Policy(None),
        }
    }

    /// Rules that can never match (each of their paths is covered by one ranked before it) and
    /// conflicting rules. Only what is cheap to prove counts as covering: hosts and methods
    /// that include the other's, a shorter prefix, the same regex. For conflicts the other way
    /// round: only disjoint methods, disjoint exact hosts or prefixes neither of which
    /// extends the other rule out an overlap; a regex may overlap anything.
    pub fn findings(&self) -> Vec<Finding> {
        let mut out = Vec::new();
        for i in 0..self.rules.len() {
            let mine: Vec<usize> = (0..self.entries.len())
                .filter(|k| self.entries[*k].rule == i)
                .collect();
            let by = mine.iter().map(|k| {
                self.entries[..*k]
                    .iter()
                    .find(|a| a.rule != i && self.covers(a, &self.entries[*k]))
                    .map(|a| a.rule)
            });
            let by: Option<Vec<usize>> = by.collect();
            if let Some(first) = by.and_then(|b| b.first().copied()) {
                out.push(Finding::Shadowed { rule: i, by: first });
            }
        }
        for (k, a) in self.entries.iter().enumerate() {
            for b in &self.entries[k + 1..] {
                if a.priority != b.priority {
                    break;
                }
                let (ra, rb) = (&self.rules[a.rule], &self.rules[b.rule]);
                if a.rule == b.rule || ra.same_choice(rb) || !self.may_overlap(a, b) {
                    continue;
                }
                let f = Finding::Conflict {
                    first: a.rule.min(b.rule),
                    second: a.rule.max(b.rule),
                };
                if !out.contains(&f) {
                    out.push(f);
                }
            }
        }
        out
    }

    /// Whether every request `b` matches is also matched by `a` (proved cheaply, or `false`).
    fn covers(&self, a: &Entry, b: &Entry) -> bool {
        let (ra, rb) = (&self.rules[a.rule], &self.rules[b.rule]);
        let hosts = ra.hosts.is_empty()
            || (!rb.hosts.is_empty() && rb.hosts.iter().all(|h| ra.hosts.contains(h)));
        let methods = ra.methods.is_empty()
            || (!rb.methods.is_empty() && rb.methods.iter().all(|m| ra.methods.contains(m)));
        let path = match (a.path.map(|p| &ra.paths[p]), b.path.map(|p| &rb.paths[p])) {
            (None, _) => true,
            (Some(Path::Prefix(pa)), Some(Path::Prefix(pb))) => pb.starts_with(pa.as_str()),
            (Some(Path::Regex { source: sa, .. }), Some(Path::Regex { source: sb, .. })) => {
                sa == sb
            }
            _ => false,
        };
        hosts && methods && path
    }

    /// Whether some request could match both; `false` only when provably not.
    fn may_overlap(&self, a: &Entry, b: &Entry) -> bool {
        let (ra, rb) = (&self.rules[a.rule], &self.rules[b.rule]);
        if !ra.methods.is_empty()
            && !rb.methods.is_empty()
            && !ra.methods.iter().any(|m| rb.methods.contains(m))
        {
            return false;
        }
        let exact = |r: &Rule| {
            !r.hosts.is_empty() && r.hosts.iter().all(|h| matches!(h, Host::Exact { .. }))
        };
        if exact(ra) && exact(rb) && !ra.hosts.iter().any(|h| rb.hosts.contains(h)) {
            return false;
        }
        match (a.path.map(|p| &ra.paths[p]), b.path.map(|p| &rb.paths[p])) {
            (Some(Path::Prefix(p)), Some(Path::Prefix(q))) => {
                p.starts_with(q.as_str()) || q.starts_with(p.as_str())
            }
            _ => true,
        }
    }
}

/// The path Kong matches: the query dropped, percent-encoded unreserved characters decoded,
/// repeated slashes merged, dot segments removed (RFC 3986 5.2.4).
pub fn normalize_path(raw: &str) -> String {
    let raw = raw.split(['?', '#']).next().unwrap_or(raw);
    let bytes = raw.as_bytes();
    let mut decoded = String::with_capacity(raw.len());
    let mut rest = raw.char_indices();
    while let Some((i, c)) = rest.next() {
        let hex = |k: usize| bytes.get(k).and_then(|b| (*b as char).to_digit(16));
        if let (true, Some(h), Some(l)) = (c == '%', hex(i + 1), hex(i + 2)) {
            let b = (h * 16 + l) as u8;
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                decoded.push(b as char);
            } else {
                decoded.push_str(&raw[i..i + 3].to_ascii_uppercase());
            }
            rest.next();
            rest.next();
        } else {
            decoded.push(c);
        }
    }
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut path: String = out.iter().flat_map(|s| ["/", s]).collect();
    if path.is_empty() || matches!(decoded.rsplit('/').next(), Some("" | "." | "..")) {
        path.push('/');
    }
    path
}

#[cfg(test)]
mod tests;
