//! The second step: raw tables into a `Config` of plain data, the policies as the core's
//! `Policy` values. No I/O but reading the files the configuration names (CA bundles, JWKS
//! files, the gRPC listener's certificate). Every problem is collected, each naming its key
//! (`policies.NAME.` for a named policy), and reported at once; nothing bad is replaced by a
//! default.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use certbound_adapters::http::IdpClient;
use certbound_core::answer::{LogField, LogFields};
use certbound_core::cache::Settings as CacheSettings;
use certbound_core::cert::{HeaderFormat, SpiffePattern, TrustStore, XfccElements};
use certbound_core::defaults;
use certbound_core::dpop::{self, DpopMode, DpopPolicy, NonceIssuer};
use certbound_core::introspection::{ClientAuth, Settings as IntrospectionSettings};
use certbound_core::names::UnknownName;
use certbound_core::policy::{
    AuthMethod, CertSource, ClaimHeader, HeaderSource, KeySource, Limits, MeshSource, Policies,
    Policy, PopMode,
};
use certbound_core::resource::{Metadata, Resource};
use certbound_core::revocation;
use certbound_core::routes::{Finding, Host, Path as RoutePath, Routes, Rule, Unmatched};
use certbound_core::token::KeySet;

use super::raw::{
    Raw, RawFromHeader, RawFromMesh, RawGlobal, RawGrpcTls, RawLimits, RawPolicy, RawReplay,
    RawRoute, RawTracing,
};
use super::{Config, ConfigError, GrpcTls, Issue, KeyRefresh, ReplaySettings, TracingSettings};

/// Validates `raw`; `base` anchors relative paths.
pub(super) fn validate(raw: Raw, base: &Path) -> Result<Config, ConfigError> {
    let mut v = Validator {
        issues: raw.issues,
        warnings: Vec::new(),
        base,
        scope: String::new(),
        files: Vec::new(),
        allow_http: false,
    };
    let config = v.config(raw.global, raw.default, raw.named);
    match config {
        Some(c) if v.issues.is_empty() => Ok(c),
        _ => Err(ConfigError::Invalid(v.issues)),
    }
}

/// Least `rediscovery_lifetime`: below it unknown `kid`s could make a JWKS fetch per request.
const MIN_REDISCOVERY_LIFETIME: Duration = Duration::from_secs(1);

/// A policy's DPoP keys as written.
struct DpopKeys {
    mode: Option<String>,
    lifetime: Option<u64>,
    use_nonce: Option<bool>,
    nonce_secret: Option<String>,
    algs: Option<Vec<String>>,
    base_url: Option<String>,
}

/// Settings every policy takes from the top level.
struct Shared {
    trusted_ips: Vec<IpNet>,
    limits: Limits,
    unknown_kid_wait: Duration,
}

struct Validator<'a> {
    issues: Vec<Issue>,
    warnings: Vec<Issue>,
    base: &'a Path,
    /// `policies.NAME.` while a named policy is validated, so issues name the full key.
    scope: String,
    files: Vec<PathBuf>,
    /// `allow_insecure_http_for_tests`.
    allow_http: bool,
}

impl Validator<'_> {
    fn issue(&mut self, key: &str, message: impl Into<String>) {
        self.issues.push(Issue {
            key: format!("{}{key}", self.scope),
            message: message.into(),
        });
    }

    /// Accepted, but worth the operator's attention.
    fn warn(&mut self, key: &str, message: impl Into<String>) {
        self.warnings.push(Issue {
            key: format!("{}{key}", self.scope),
            message: message.into(),
        });
    }

    fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// `[grpc_tls]`: both files of the identity, optionally the client CA, each readable PEM,
    /// and together a TLS server configuration rustls accepts (so a key that does not parse or
    /// does not match the certificate is a start-up error, not a listener that fails every
    /// handshake).
    fn grpc_tls(&mut self, raw: RawGrpcTls) -> Option<GrpcTls> {
        let mut read = |key: &str, path: Option<PathBuf>, what: &str| -> Option<Vec<u8>> {
            let Some(path) = path else {
                self.issue(
                    &format!("grpc_tls.{key}"),
                    format!("required with [grpc_tls]: {what}"),
                );
                return None;
            };
            let path = self.path(&path);
            self.files.push(path.clone());
            match std::fs::read(&path) {
                Ok(pem) => Some(pem),
                Err(e) => {
                    self.issue(
                        &format!("grpc_tls.{key}"),
                        format!("{}: {e}", path.display()),
                    );
                    None
                }
            }
        };
        let cert = read(
            "cert_file",
            raw.cert_file,
            "the listener's certificate chain (PEM)",
        );
        let key = read("key_file", raw.key_file, "its private key (PEM)");
        let client_ca = match raw.client_ca_file {
            Some(p) => Some(read("client_ca_file", Some(p), "")?),
            None => None,
        };
        let (cert_pem, key_pem) = (cert?, key?);
        if CertificateDer::pem_slice_iter(&cert_pem).next().is_none() {
            self.issue("grpc_tls.cert_file", "holds no PEM certificate");
            return None;
        }
        if let Some(ca) = &client_ca {
            let roots = CertificateDer::pem_slice_iter(ca).collect::<Result<Vec<_>, _>>();
            if !roots.is_ok_and(|r| !r.is_empty()) {
                self.issue("grpc_tls.client_ca_file", "holds no PEM certificate");
                return None;
            }
        }
        let tls = GrpcTls {
            cert_pem,
            key_pem,
            client_ca_pem: client_ca,
        };
        if let Err(e) = tls_server(&tls) {
            self.issue(
                "grpc_tls",
                format!("the certificate and key do not make a TLS server: {e}"),
            );
            return None;
        }
        Some(tls)
    }

    /// `url` is an https URL (or http with `allow_insecure_http_for_tests`); otherwise an issue
    /// on `key`.
    fn idp_url(&mut self, key: &str, url: &str) -> bool {
        let https = has_scheme(url, "https://");
        if https || (self.allow_http && has_scheme(url, "http://")) {
            return true;
        }
        let message = if has_scheme(url, "http://") {
            format!(
                "`{url}` is plain http: use an https URL (anyone on the path could supply the \
                 signing keys or read the introspection credentials); \
                 `allow_insecure_http_for_tests = true` allows it for local tests only"
            )
        } else {
            format!(
                "`{url}` is not an https URL (`allow_insecure_http_for_tests = true` also \
                 allows http, for local tests only)"
            )
        };
        self.issue(key, message);
        false
    }

    fn addr(&mut self, key: &str, value: Option<String>, default: &str) -> Option<SocketAddr> {
        let value = value.unwrap_or_else(|| default.to_string());
        match value.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.issue(
                    key,
                    format!("`{value}` is not an address like 0.0.0.0:9191"),
                );
                None
            }
        }
    }

    fn config(
        &mut self,
        global: RawGlobal,
        default: RawPolicy,
        named: Vec<(String, RawPolicy)>,
    ) -> Option<Config> {
        let grpc_listen = self.addr("grpc_listen", global.grpc_listen, defaults::GRPC_LISTEN);
        let admin_listen = self.addr("admin_listen", global.admin_listen, defaults::ADMIN_LISTEN);
        if let (Some(g), Some(a)) = (grpc_listen, admin_listen) {
            if g == a && g.port() != 0 {
                self.issue("admin_listen", "must differ from grpc_listen");
            }
        }
        let grpc_tls = global.grpc_tls.and_then(|t| self.grpc_tls(t));
        let timeout = Duration::from_millis(global.timeout.unwrap_or(defaults::TIMEOUT_MS));
        if timeout.is_zero() {
            self.issue("timeout", "must be more than 0 milliseconds");
        }
        self.allow_http = global
            .allow_insecure_http_for_tests
            .unwrap_or(defaults::ALLOW_INSECURE_HTTP_FOR_TESTS);
        if self.allow_http {
            self.warn(
                "allow_insecure_http_for_tests",
                "plain-http IdP URLs are accepted, so anyone on the path can supply signing keys and read introspection credentials; never use it outside local tests",
            );
        }
        let idp_client = IdpClient {
            extra_roots: self.idp_roots(global.idp_ca_certificates.unwrap_or_default()),
            verify_tls: global.ssl_verify.unwrap_or(defaults::SSL_VERIFY),
            timeout,
            allow_insecure_http: self.allow_http,
        };
        let min_interval = Duration::from_secs(
            global
                .rediscovery_lifetime
                .unwrap_or(defaults::REDISCOVERY_LIFETIME_SECS),
        );
        if min_interval < MIN_REDISCOVERY_LIFETIME {
            // 0 would let every token with an unknown `kid` cause a JWKS fetch: no limit at all.
            self.issue(
                "rediscovery_lifetime",
                format!(
                    "must be at least {} second: it is the only limit on JWKS fetches that unknown `kid`s cause",
                    MIN_REDISCOVERY_LIFETIME.as_secs()
                ),
            );
        }
        let refresh_interval = Duration::from_secs(
            global
                .jwks_refresh_interval
                .unwrap_or(defaults::JWKS_REFRESH_INTERVAL_SECS),
        );
        if refresh_interval.is_zero() {
            self.issue("jwks_refresh_interval", "must be more than 0 seconds");
        }
        let limits = self.limits(global.limits.unwrap_or_default());
        let shared = Shared {
            trusted_ips: self.trusted_ips(global.trusted_ips.unwrap_or_default()),
            limits,
            unknown_kid_wait: certbound_core::policy::UNKNOWN_KID_WAIT.min(timeout),
        };
        let replay = self.replay_store(global.dpop_replay.unwrap_or_default());
        let dynamic_metadata = match global.dynamic_metadata {
            None => defaults::DYNAMIC_METADATA,
            Some(names) => {
                let mut fields = Vec::new();
                for name in &names {
                    match name.parse::<LogField>() {
                        Ok(field) => fields.push(field),
                        Err(e) => self.issue("dynamic_metadata", e.to_string()),
                    }
                }
                LogFields::of(fields)
            }
        };

        let tracing = global.tracing.and_then(|t| self.tracing(t));

        let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
        let routes = self.routes(
            global.routes.unwrap_or_default(),
            global.unmatched_route.as_deref(),
            &names,
        );
        let default = self.policy("default", default, &shared);
        let mut policies = HashMap::new();
        for (name, raw) in named {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                self.issue(
                    &format!("policies.{name}"),
                    "policy names are letters, digits, '-', '_' and '.'",
                );
                continue;
            }
            self.scope = format!("policies.{name}.");
            let policy = self.policy(&name, raw, &shared);
            self.scope.clear();
            if let Some(p) = policy {
                policies.insert(name, Arc::new(p));
            }
        }
        self.one_document_per_resource(default.as_ref(), &policies);
        Some(Config {
            grpc_listen: grpc_listen?,
            admin_listen: admin_listen?,
            grpc_tls,
            policies: Policies {
                default: Arc::new(default?),
                named: policies,
            },
            key_refresh: KeyRefresh {
                min_interval,
                refresh_interval,
            },
            idp_client,
            replay: replay?,
            dynamic_metadata,
            routes: Arc::new(routes),
            tracing,
            files: std::mem::take(&mut self.files),
            warnings: std::mem::take(&mut self.warnings),
        })
    }

    /// `[[routes]]` and `unmatched_route`. Conflicting rules (equal Kong priority, overlapping,
    /// different policies: Kong's choice between them is not in the configuration) are
    /// errors; rules that can never match are warnings.
    fn routes(&mut self, raw: Vec<RawRoute>, unmatched: Option<&str>, names: &[&str]) -> Routes {
        let unmatched = match unmatched {
            None | Some("default") => Unmatched::Default,
            Some("deny") => Unmatched::Deny,
            Some(_) => {
                self.issue("unmatched_route", "must be \"default\" or \"deny\"");
                Unmatched::Default
            }
        };
        let mut rules = Vec::new();
        let mut labels = Vec::new();
        for (i, r) in raw.into_iter().enumerate() {
            let key = format!("routes[{i}]");
            labels.push(match &r.name {
                Some(n) => format!("{key} ({n})"),
                None => key.clone(),
            });
            let (hosts, paths, methods) = (
                r.hosts.unwrap_or_default(),
                r.paths.unwrap_or_default(),
                r.methods.unwrap_or_default(),
            );
            if hosts.is_empty() && paths.is_empty() && methods.is_empty() {
                self.issue(&key, "needs at least one of hosts, paths, methods");
            }
            let mut ok = true;
            let mut parsed_hosts = Vec::new();
            for h in &hosts {
                match Host::parse(h) {
                    Some(host) => parsed_hosts.push(host),
                    None => {
                        ok = false;
                        self.issue(
                            &format!("{key}.hosts"),
                            "a host is a name, optionally with :PORT, or has one `*` as its whole first or last label",
                        );
                    }
                }
            }
            let mut parsed_paths = Vec::new();
            for p in &paths {
                if !p.starts_with('/') && !p.starts_with('~') {
                    ok = false;
                    self.issue(
                        &format!("{key}.paths"),
                        "a path starts with `/` (a prefix) or `~` (a regex)",
                    );
                    continue;
                }
                match RoutePath::parse(p, defaults::ROUTE_REGEX_SIZE_LIMIT) {
                    Ok(path) => parsed_paths.push(path),
                    Err(e) => {
                        ok = false;
                        // The regex crate's message quotes the pattern: configuration, not a secret.
                        self.issue(&format!("{key}.paths"), format!("not a usable regex: {e}"));
                    }
                }
            }
            if methods
                .iter()
                .any(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
            {
                ok = false;
                self.issue(
                    &format!("{key}.methods"),
                    "methods are upper-case names (GET, POST)",
                );
            }
            let unauthenticated = r.authenticate == Some(false);
            let policy = match r.policy.as_deref() {
                Some(_) if unauthenticated => {
                    ok = false;
                    self.issue(
                        &format!("{key}.policy"),
                        "a rule with `authenticate = false` checks nothing, so it names no policy",
                    );
                    None
                }
                None if unauthenticated => {
                    // Loud on purpose: the one way a configuration lets requests through
                    // without a token.
                    self.warn(
                        labels.last().map_or(&key, |l| l),
                        "`authenticate = false`: the requests this rule wins go upstream without any check",
                    );
                    None
                }
                None => {
                    ok = false;
                    self.issue(
                        &format!("{key}.policy"),
                        "required: a [policies.NAME] or \"default\"",
                    );
                    None
                }
                Some("default") => None,
                Some(n) if names.contains(&n) => Some(n.to_string()),
                Some(_) => {
                    ok = false;
                    self.issue(
                        &format!("{key}.policy"),
                        "names no [policies.NAME] table (nor \"default\")",
                    );
                    None
                }
            };
            if ok {
                rules.push(Rule {
                    hosts: parsed_hosts,
                    host_spellings: hosts,
                    paths: parsed_paths,
                    methods,
                    regex_priority: r.regex_priority.unwrap_or(0),
                    policy,
                    unauthenticated,
                });
            } else {
                // Keeps indices aligned for the findings below: an invalid rule fails the
                // configuration anyway.
                labels.pop();
            }
        }
        let routes = Routes::new(rules, unmatched);
        for finding in routes.findings() {
            match finding {
                Finding::Shadowed { rule, by } => {
                    let message = format!(
                        "can never match: {} matches first wherever it matches",
                        labels[by]
                    );
                    let key = labels[rule].clone();
                    self.warn(&key, message);
                }
                Finding::Conflict { first, second } => {
                    let message = format!(
                        "{} and {} can match the same request with equal precedence and choose different policies; Kong's choice between them is not in the configuration: set regex_priority, or make their paths, hosts or methods tell them apart",
                        labels[first], labels[second]
                    );
                    self.issue("routes", message);
                }
            }
        }
        routes
    }

    fn policy(&mut self, name: &str, raw: RawPolicy, shared: &Shared) -> Option<Policy> {
        let issuer = match raw.issuer {
            // Exactly as written: `iss` is compared byte for byte (RFC 8414 §3.3, OpenID
            // Discovery §4.3), and issuers such as Auth0's end in `/`.
            Some(i) if self.idp_url("issuer", &i) => Some(i),
            Some(_) => None,
            None => {
                self.issue(
                    "issuer",
                    "required: the `iss` every token must carry (and the discovery base)",
                );
                None
            }
        };
        let keys = self.key_source(issuer.clone(), raw.jwks_uri, raw.jwks_file.as_deref());

        if let Some(secrets) = &raw.client_secret {
            let ids = raw.client_id.as_ref().map_or(0, Vec::len);
            if secrets.len() > ids {
                self.issue("client_secret", "has more entries than client_id");
            }
        }

        let audiences = raw.audience.unwrap_or_default();
        if audiences.iter().any(|a| a.is_empty()) {
            self.issue("audience", "entries must not be empty");
        }

        let pop_mode: Option<PopMode> = self.mode(
            "proof_of_possession_mtls",
            raw.proof_of_possession_mtls
                .as_deref()
                .unwrap_or(defaults::PROOF_OF_POSSESSION_MTLS),
        );
        let methods = self.auth_methods(
            raw.auth_methods,
            // A bad mode is already an issue; the methods are still checked, as under `strict`.
            pop_mode.unwrap_or(PopMode::Strict),
            raw.proof_of_possession_auth_methods_validation
                .unwrap_or(defaults::PROOF_OF_POSSESSION_AUTH_METHODS_VALIDATION),
        );

        let upstream_headers =
            self.upstream_headers(raw.upstream_headers_claims, raw.upstream_headers_names);
        let upstream_thumbprint_header = self.header_name(
            "upstream_thumbprint_header",
            raw.upstream_thumbprint_header,
            false,
        );

        if audiences.is_empty() {
            self.warn(
                "audience",
                "not set: tokens from this issuer are accepted whatever their `aud`, so a token the issuer minted for another service is accepted here (RFC 8725 §3.11); list this API's audience",
            );
        }
        if raw.access_token_types.is_none() {
            self.warn(
                "access_token_types",
                "not set: the default accepts `typ: JWT` besides `at+jwt`, so an ID token or any other JWT of the issuer passes the type check (RFC 9068 §4, RFC 8725 §3.11); set [\"at+jwt\", \"application/at+jwt\"] if the issuer types its access tokens",
            );
        }
        let accepted_token_types = raw.access_token_types.unwrap_or_else(|| {
            defaults::ACCESS_TOKEN_TYPES
                .iter()
                .map(|t| t.to_string())
                .collect()
        });
        if accepted_token_types.is_empty() {
            self.issue("access_token_types", "must list at least one JOSE `typ`");
        }

        let scopes_required =
            self.alternatives("scopes_required", raw.scopes_required.unwrap_or_default());
        let audience_required = self.alternatives(
            "audience_required",
            raw.audience_required.unwrap_or_default(),
        );
        let scopes_claim =
            self.claim_path("scopes_claim", raw.scopes_claim, defaults::SCOPES_CLAIM);
        let audience_claim = self.claim_path(
            "audience_claim",
            raw.audience_claim,
            defaults::AUDIENCE_CLAIM,
        );
        let claims_forbidden = raw.claims_forbidden.unwrap_or_default();
        if claims_forbidden.iter().any(String::is_empty) {
            self.issue("claims_forbidden", "entries must not be empty");
        }

        let cert_source = match (
            raw.proof_of_possession_mtls_from_header,
            raw.proof_of_possession_mtls_from_mesh,
        ) {
            (Some(_), Some(_)) => {
                self.issue(
                    "proof_of_possession_mtls_from_mesh",
                    "a policy takes its certificate from one place: remove this table or \
                     proof_of_possession_mtls_from_header (named policies inherit the default \
                     policy's)",
                );
                None
            }
            (Some(h), None) => self
                .header_source(h, &shared.trusted_ips)
                .map(CertSource::Header),
            (None, Some(m)) => self.mesh_source(m, pop_mode).map(CertSource::Mesh),
            (None, None) => Some(CertSource::Peer),
        };

        let dpop = self.dpop(DpopKeys {
            mode: raw.proof_of_possession_dpop,
            lifetime: raw.dpop_proof_lifetime,
            use_nonce: raw.dpop_use_nonce,
            nonce_secret: raw.dpop_nonce_secret,
            algs: raw.dpop_signing_alg_values,
            base_url: raw.dpop_htu_base_url,
        });

        let introspection = if methods.contains(&AuthMethod::Introspection) {
            let settings = self.introspection_settings(
                issuer.clone(),
                raw.introspection_endpoint,
                raw.introspection_endpoint_auth_method,
                raw.client_id.as_ref().and_then(|c| c.first().cloned()),
                raw.client_secret.as_ref().and_then(|c| c.first().cloned()),
                raw.cache_introspection
                    .unwrap_or(defaults::CACHE_INTROSPECTION),
                raw.cache_ttl.unwrap_or(defaults::CACHE_TTL_SECS),
                raw.introspection_inactive_ttl
                    .unwrap_or(defaults::INTROSPECTION_INACTIVE_TTL_SECS),
            );
            settings.map(Some)
        } else {
            Some(None)
        };

        let caches = CacheSettings {
            tokens: if raw.cache_tokens.unwrap_or(defaults::CACHE_TOKENS) {
                raw.token_cache_size.unwrap_or(defaults::TOKEN_CACHE_SIZE)
            } else {
                0
            },
            certificates: raw
                .certificate_cache_size
                .unwrap_or(defaults::CERTIFICATE_CACHE_SIZE),
            ttl: Duration::from_secs(raw.cache_ttl.unwrap_or(defaults::CACHE_TTL_SECS)),
        };

        let resource = match raw.resource.map(|r| (r.parse::<Resource>(), r)) {
            None => Some(None),
            Some((Ok(r), _)) => Some(Some(r)),
            Some((Err(e), r)) => {
                self.issue("resource", format!("`{r}` {e}"));
                None
            }
        };

        let mut policy = Policy {
            name: name.to_string(),
            issuer: issuer?,
            audiences,
            leeway: raw.leeway.unwrap_or(defaults::LEEWAY_SECS),
            accepted_token_types,
            pop_mode: pop_mode?,
            cert_source: cert_source?,
            upstream_headers: upstream_headers?,
            upstream_thumbprint_header: upstream_thumbprint_header?,
            hide_credentials: raw.hide_credentials.unwrap_or(defaults::HIDE_CREDENTIALS),
            scopes_required,
            scopes_claim,
            audience_required,
            audience_claim,
            claims_forbidden,
            trusted_ips: shared.trusted_ips.clone(),
            limits: shared.limits,
            keys: keys?,
            bearer: methods.contains(&AuthMethod::Bearer),
            introspection: introspection?,
            introspect_jwt_tokens: raw
                .introspect_jwt_tokens
                .unwrap_or(defaults::INTROSPECT_JWT_TOKENS),
            unknown_kid_wait: shared.unknown_kid_wait,
            cache: caches,
            dpop: dpop?,
            metadata: None,
        };
        if let Some(r) = resource? {
            policy.publish(r);
        }
        Some(policy)
    }

    /// One metadata URL, one document: policies that inherit or repeat a `resource` must
    /// publish the same thing (a named policy inherits the top level's `resource` unless it
    /// sets its own).
    fn one_document_per_resource(
        &mut self,
        default: Option<&Policy>,
        named: &HashMap<String, Arc<Policy>>,
    ) {
        let mut names: Vec<&String> = named.keys().collect();
        names.sort();
        let policies = default
            .into_iter()
            .chain(names.into_iter().map(|n| &*named[n]));
        let mut seen: Vec<(&str, &Metadata)> = Vec::new();
        for p in policies {
            let Some(m) = p.metadata.as_deref() else {
                continue;
            };
            if let Some((other, _)) = seen
                .iter()
                .find(|(_, s)| s.url == m.url && s.document != m.document)
            {
                let key = match p.name.as_str() {
                    "default" => "resource".to_string(),
                    n => format!("policies.{n}.resource"),
                };
                self.issue(
                    &key,
                    format!(
                        "policy `{}` publishes different metadata at {} than policy `{other}` (other issuer, binding or scopes): give each policy its own `resource`",
                        p.name, m.url
                    ),
                );
            }
            seen.push((&p.name, m));
        }
    }

    /// `[tracing]`: off without `otlp_endpoint`; the other keys then have nothing to apply to.
    fn tracing(&mut self, raw: RawTracing) -> Option<TracingSettings> {
        let ratio = raw.sample_ratio.unwrap_or(defaults::tracing::SAMPLE_RATIO);
        if !(0.0..=1.0).contains(&ratio) {
            self.issue("tracing.sample_ratio", "must be from 0.0 to 1.0");
        }
        let export_timeout = raw
            .export_timeout
            .unwrap_or(defaults::tracing::EXPORT_TIMEOUT_MS);
        if export_timeout == 0 {
            self.issue("tracing.export_timeout", "must be more than 0 milliseconds");
        }
        let service_name = raw
            .service_name
            .unwrap_or_else(|| defaults::tracing::SERVICE_NAME.to_string());
        if service_name.trim().is_empty() {
            self.issue("tracing.service_name", "must not be empty");
        }
        let Some(endpoint) = raw.otlp_endpoint else {
            self.issue(
                "tracing.otlp_endpoint",
                "required with [tracing] (an OTLP/gRPC receiver, http://127.0.0.1:4317); remove the table to turn tracing off",
            );
            return None;
        };
        let authority = endpoint.strip_prefix("http://").unwrap_or_default();
        let host_port = authority.strip_suffix('/').unwrap_or(authority);
        if host_port.is_empty()
            || host_port.contains(['/', '?', '#', '@'])
            || !host_port.contains(':')
        {
            let why = if has_scheme(&endpoint, "https://") {
                "OTLP over TLS is not supported: export to a collector on the node (http://127.0.0.1:4317), which forwards over TLS"
            } else {
                "is not an OTLP/gRPC endpoint like http://127.0.0.1:4317 (scheme, host and port only)"
            };
            self.issue("tracing.otlp_endpoint", why);
            return None;
        }
        Some(TracingSettings {
            otlp_endpoint: endpoint,
            sample_ratio: ratio.clamp(0.0, 1.0),
            service_name,
            export_timeout: Duration::from_millis(export_timeout.max(1)),
        })
    }

    fn replay_store(&mut self, raw: RawReplay) -> Option<ReplaySettings> {
        let timeout = raw.timeout.unwrap_or(defaults::dpop_replay::TIMEOUT_MS);
        if timeout == 0 {
            self.issue("dpop_replay.timeout", "must be more than 0 milliseconds");
        }
        match raw.store.as_deref().unwrap_or(defaults::dpop_replay::STORE) {
            "memory" => {
                if raw.redis_url.is_some() {
                    self.issue("dpop_replay.redis_url", "only with store = \"redis\"");
                }
                let max = raw
                    .max_entries
                    .unwrap_or(defaults::dpop_replay::MAX_ENTRIES);
                if max == 0 {
                    self.issue("dpop_replay.max_entries", "must be at least 1");
                }
                Some(ReplaySettings::Memory {
                    max_entries: max.max(1),
                })
            }
            "redis" => {
                let Some(url) = raw.redis_url else {
                    self.issue(
                        "dpop_replay.redis_url",
                        "required with store = \"redis\" (redis://host:6379/0)",
                    );
                    return None;
                };
                match certbound_adapters::replay::is_redis_url(&url) {
                    true => Some(ReplaySettings::Redis {
                        url,
                        timeout: Duration::from_millis(timeout.max(1)),
                    }),
                    false => {
                        // The URL may carry a password: never echo it.
                        self.issue(
                            "dpop_replay.redis_url",
                            "is not a redis:// or rediss:// URL",
                        );
                        None
                    }
                }
            }
            other => {
                self.issue(
                    "dpop_replay.store",
                    format!("`{other}` is not one of memory, redis"),
                );
                None
            }
        }
    }

    fn dpop(&mut self, raw: DpopKeys) -> Option<DpopPolicy> {
        let mode: Option<DpopMode> = self.mode(
            "proof_of_possession_dpop",
            raw.mode
                .as_deref()
                .unwrap_or(defaults::PROOF_OF_POSSESSION_DPOP),
        );
        let lifetime = raw.lifetime.unwrap_or(defaults::DPOP_PROOF_LIFETIME_SECS);
        if lifetime == 0 {
            self.issue("dpop_proof_lifetime", "must be more than 0 seconds");
        }
        let algs = match raw.algs {
            None => Some(dpop::DEFAULT_ALGS.to_vec()),
            Some(names) => {
                let mut algs = Vec::new();
                for n in &names {
                    match n.parse::<jsonwebtoken::Algorithm>() {
                        Ok(a) if dpop::DEFAULT_ALGS.contains(&a) => algs.push(a),
                        _ => self.issue(
                            "dpop_signing_alg_values",
                            format!(
                                "`{n}` is not an asymmetric JWS algorithm (known: {})",
                                dpop::DEFAULT_ALGS
                                    .iter()
                                    .map(|a| format!("{a:?}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ),
                    }
                }
                if names.is_empty() {
                    self.issue(
                        "dpop_signing_alg_values",
                        "must list at least one algorithm",
                    );
                }
                Some(algs)
            }
        };
        let nonce = match (
            raw.use_nonce.unwrap_or(defaults::DPOP_USE_NONCE),
            raw.nonce_secret,
        ) {
            (false, _) => Some(None),
            (true, Some(secret)) if secret.len() >= dpop::MIN_SECRET_BYTES => {
                Some(Some(Arc::new(NonceIssuer::new(secret.as_bytes()))))
            }
            (true, Some(_)) => {
                self.issue(
                    "dpop_nonce_secret",
                    format!(
                        "must be at least {} bytes (the same value on every replica)",
                        dpop::MIN_SECRET_BYTES
                    ),
                );
                None
            }
            (true, None) => {
                self.issue(
                    "dpop_nonce_secret",
                    "required with dpop_use_nonce = true: nonces are an HMAC under this secret, shared by every replica",
                );
                None
            }
        };
        let base_url = match raw.base_url {
            None => Some(None),
            Some(u) => match dpop::normalize_htu(&u) {
                Some(n) if !u.contains(['?', '#']) => {
                    Some(Some(n.trim_end_matches('/').to_string()))
                }
                _ => {
                    self.issue(
                        "dpop_htu_base_url",
                        format!("`{u}` is not an http(s) URL without query or fragment"),
                    );
                    None
                }
            },
        };
        Some(DpopPolicy {
            mode: mode?,
            lifetime,
            algs: algs?,
            nonce: nonce?,
            base_url: base_url?,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn introspection_settings(
        &mut self,
        issuer: Option<String>,
        endpoint: Option<String>,
        auth: Option<String>,
        client_id: Option<String>,
        client_secret: Option<String>,
        cache: bool,
        cache_ttl: u64,
        inactive_ttl: u64,
    ) -> Option<IntrospectionSettings> {
        if let Some(e) = &endpoint {
            self.idp_url("introspection_endpoint", e);
        }
        let auth = match auth.as_deref() {
            None => None,
            Some(a) => match a.parse::<ClientAuth>() {
                Ok(a) => Some(a),
                Err(e) => {
                    self.issue("introspection_endpoint_auth_method", e.to_string());
                    return None;
                }
            },
        };
        if client_id.is_none() || client_secret.is_none() {
            self.issue(
                "client_id",
                "introspection authenticates with client_id[0] and client_secret[0]: set both",
            );
            return None;
        }
        if cache_ttl == 0 {
            self.issue("cache_ttl", "must be more than 0 seconds");
        }
        if inactive_ttl == 0 || inactive_ttl > cache_ttl {
            self.issue(
                "introspection_inactive_ttl",
                format!(
                    "must be from 1 to cache_ttl ({cache_ttl}) seconds: an inactive answer is never \
                     remembered longer than an active one"
                ),
            );
        }
        Some(IntrospectionSettings {
            issuer: issuer?,
            endpoint,
            auth,
            client_id: client_id?,
            client_secret: client_secret?,
            cache,
            cache_ttl: Duration::from_secs(cache_ttl.max(1)),
            negative_ttl: Duration::from_secs(inactive_ttl.clamp(1, cache_ttl.max(1))),
            max_entries: 100_000,
            max_negative_entries: 10_000,
        })
    }

    /// Kong's AND/OR encoding: each entry is an alternative; the space-separated words in one
    /// entry are all required.
    fn alternatives(&mut self, key: &str, entries: Vec<String>) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for e in entries {
            let words: Vec<String> = e.split_whitespace().map(str::to_string).collect();
            if words.is_empty() {
                self.issue(key, "entries must not be empty");
            } else {
                out.push(words);
            }
        }
        out
    }

    /// A claim path (Kong's `scopes_claim`/`audience_claim`: an array of nested object keys).
    fn claim_path(&mut self, key: &str, path: Option<Vec<String>>, default: &str) -> Vec<String> {
        let path = path.unwrap_or_else(|| vec![default.to_string()]);
        if path.is_empty() || path.iter().any(String::is_empty) {
            self.issue(
                key,
                "must be a non-empty list of claim names (a path into nested objects)",
            );
        }
        path
    }

    fn key_source(
        &mut self,
        issuer: Option<String>,
        jwks_uri: Option<String>,
        jwks_file: Option<&Path>,
    ) -> Option<KeySource> {
        match (jwks_uri, jwks_file) {
            (Some(_), Some(_)) => {
                self.issue("jwks_file", "set either jwks_uri or jwks_file, not both");
                None
            }
            (Some(uri), None) if self.idp_url("jwks_uri", &uri) => Some(KeySource::Uri(uri)),
            (Some(_), None) => None,
            (None, Some(file)) => {
                let path = self.path(file);
                self.files.push(path.clone());
                let loaded = std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|body| KeySet::from_jwks_json(&body).map_err(|e| e.to_string()));
                match loaded {
                    Ok(keys) => Some(KeySource::File {
                        path,
                        keys: Arc::new(keys),
                    }),
                    Err(e) => {
                        self.issue("jwks_file", format!("{}: {e}", path.display()));
                        None
                    }
                }
            }
            (None, None) => issuer.map(|issuer| KeySource::Discovery { issuer }),
        }
    }

    fn auth_methods(
        &mut self,
        methods: Option<Vec<String>>,
        pop: PopMode,
        validate: bool,
    ) -> Vec<AuthMethod> {
        let methods = methods.unwrap_or_else(|| {
            defaults::AUTH_METHODS
                .iter()
                .map(|m| m.to_string())
                .collect()
        });
        if methods.is_empty() {
            self.issue("auth_methods", "must list at least one method");
        }
        let mut out = Vec::new();
        for m in &methods {
            match m.parse::<AuthMethod>() {
                Err(e) => self.issue(
                    "auth_methods",
                    format!("`{m}` is not an auth method (known: {})", e.expected()),
                ),
                Ok(method) if pop != PopMode::Off && validate && !method.can_carry_binding() => {
                    self.issue(
                        "auth_methods",
                        format!(
                            "`{m}` cannot carry a certificate binding while proof_of_possession_mtls is on and proof_of_possession_auth_methods_validation = true; compatible methods: {}",
                            AuthMethod::POP_COMPATIBLE_NAMES.join(", ")
                        ),
                    )
                }
                Ok(method) if !method.is_implemented() => self.issue(
                    "auth_methods",
                    format!(
                        "`{m}` is not supported by certbound (supported: {})",
                        AuthMethod::IMPLEMENTED_NAMES.join(", ")
                    ),
                ),
                Ok(method) => out.push(method),
            }
        }
        out
    }

    fn upstream_headers(
        &mut self,
        claims: Option<Vec<String>>,
        names: Option<Vec<String>>,
    ) -> Option<Vec<ClaimHeader>> {
        let claims = claims.unwrap_or_default();
        let names = names.unwrap_or_default();
        if claims.len() != names.len() {
            self.issue(
                "upstream_headers_names",
                format!(
                    "has {} entries but upstream_headers_claims has {}",
                    names.len(),
                    claims.len()
                ),
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (claim, name) in claims.into_iter().zip(names) {
            if claim.is_empty() {
                self.issue("upstream_headers_claims", "entries must not be empty");
                ok = false;
            }
            if !is_header_name(&name) {
                self.issue(
                    "upstream_headers_names",
                    format!("`{name}` is not a valid header name"),
                );
                ok = false;
            }
            out.push(ClaimHeader {
                claim,
                header: name.to_ascii_lowercase(),
            });
        }
        ok.then_some(out)
    }

    fn mesh_source(&mut self, raw: RawFromMesh, pop_mode: Option<PopMode>) -> Option<MeshSource> {
        const T: &str = "proof_of_possession_mtls_from_mesh";
        if pop_mode == Some(PopMode::Off) {
            self.issue(
                T,
                "proof_of_possession_mtls = \"off\" reads no certificate: remove this table or turn the binding on",
            );
        }
        let mut ok = true;
        let local_spiffe_id = match raw.local_spiffe_id {
            Some(id) => match id.parse::<SpiffePattern>() {
                Ok(SpiffePattern::Exact(id)) => Some(id),
                Ok(SpiffePattern::Under(_)) => {
                    self.issue(
                        &format!("{T}.local_spiffe_id"),
                        "one workload's SPIFFE ID, without a trailing `/`",
                    );
                    ok = false;
                    None
                }
                Err(e) => {
                    self.issue(
                        &format!("{T}.local_spiffe_id"),
                        format!("`{id}` is not a SPIFFE ID: {e}"),
                    );
                    ok = false;
                    None
                }
            },
            None => {
                self.warn(
                    &format!("{T}.local_spiffe_id"),
                    "not set: requests whose sidecar element follows another hop's (through a gateway) are refused as ambiguous; set it to this workload's SPIFFE ID",
                );
                None
            }
        };
        let mut allowed_spiffe_ids = Vec::new();
        for (i, value) in raw
            .allowed_spiffe_ids
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            match value.parse::<SpiffePattern>() {
                Ok(p) => allowed_spiffe_ids.push(p),
                Err(e) => {
                    self.issue(
                        &format!("{T}.allowed_spiffe_ids[{i}]"),
                        format!("`{value}` is not a SPIFFE ID: {e} (an ID, or an ID ending in `/` for every ID below it)"),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(MeshSource {
            local_spiffe_id,
            allowed_spiffe_ids,
        })
    }

    fn header_source(&mut self, raw: RawFromHeader, trusted_ips: &[IpNet]) -> Option<HeaderSource> {
        const T: &str = "proof_of_possession_mtls_from_header";
        let revocation = self.revocation_settings(&raw);
        let name = self.header_name(
            &format!("{T}.certificate_header_name"),
            raw.certificate_header_name,
            true,
        );
        let chain_name = self.header_name(
            &format!("{T}.certificate_chain_header_name"),
            raw.certificate_chain_header_name,
            false,
        );
        let format = match raw.certificate_header_format.as_deref() {
            Some(f) => self.mode(&format!("{T}.certificate_header_format"), f),
            None => {
                self.issue(
                    &format!("{T}.certificate_header_format"),
                    format!("required: one of {}", HeaderFormat::expected()),
                );
                None
            }
        };
        if format == Some(HeaderFormat::Xfcc) && matches!(chain_name, Some(Some(_))) {
            self.issue(
                &format!("{T}.certificate_chain_header_name"),
                "xfcc carries the chain itself (its `Chain` key); remove this key",
            );
        }
        // Envoy's SANITIZE_SET writes one element; more only where the operator says hops append.
        let xfcc_elements = match raw.xfcc_elements.as_deref() {
            None => self.mode(
                &format!("{T}.xfcc_elements"),
                defaults::from_header::XFCC_ELEMENTS,
            ),
            Some(e) => match (e.parse::<XfccElements>(), format) {
                (Ok(e), Some(HeaderFormat::Xfcc)) => Some(e),
                (Ok(_), _) => {
                    self.issue(
                        &format!("{T}.xfcc_elements"),
                        "only applies to certificate_header_format = \"xfcc\" (auto reads one element)",
                    );
                    None
                }
                (Err(e), _) => {
                    self.issue(&format!("{T}.xfcc_elements"), e.to_string());
                    None
                }
            },
        };
        let secure_source = raw
            .secure_source
            .unwrap_or(defaults::from_header::SECURE_SOURCE);
        if secure_source && trusted_ips.is_empty() {
            self.issue(
                "trusted_ips",
                format!(
                    "{T}.secure_source = true (the default) honours the certificate header only from trusted proxies: \
                     list their addresses, e.g. trusted_ips = [\"10.0.0.0/8\"], or set {T}.secure_source = false \
                     if nothing but the proxy can reach Envoy"
                ),
            );
        }
        let cas: Vec<PathBuf> = raw
            .ca_certificates
            .unwrap_or_default()
            .iter()
            .map(|p| self.path(p))
            .collect();
        self.files.extend(cas.iter().cloned());
        let trust = if cas.is_empty() {
            if format != Some(HeaderFormat::Xfcc) {
                self.issue(
                    &format!("{T}.ca_certificates"),
                    "required: at least one PEM file of trusted client CAs (only xfcc may leave it empty)",
                );
                return None;
            }
            None
        } else {
            match TrustStore::from_pem_files(
                &cas,
                raw.allow_partial_chain
                    .unwrap_or(defaults::from_header::ALLOW_PARTIAL_CHAIN),
            ) {
                Ok(t) => Some(Arc::new(t)),
                Err(e) => {
                    self.issue(&format!("{T}.ca_certificates"), e.to_string());
                    return None;
                }
            }
        };
        // Revocation needs the verified path's issuer: no trust store (xfcc without CAs), no check.
        let revocation = revocation?.filter(|_| trust.is_some());
        Some(HeaderSource {
            name: name??,
            chain_name: chain_name?,
            format: format?,
            xfcc_elements: xfcc_elements?,
            trust,
            secure_source,
            revocation,
            // Kong gives `ssl_verify` in this table to TLS towards OCSP/CRL endpoints; chain
            // verification against ca_certificates is always on, whatever it says.
            revocation_tls_verify: raw.ssl_verify.unwrap_or(defaults::from_header::SSL_VERIFY),
        })
    }

    /// A mode key's value in the mode's spelling; `None` after recording an issue that lists
    /// the spellings.
    fn mode<M: FromStr<Err = UnknownName>>(&mut self, key: &str, value: &str) -> Option<M> {
        match value.parse() {
            Ok(m) => Some(m),
            Err(e) => {
                self.issue(key, e.to_string());
                None
            }
        }
    }

    /// A header name: `Some(Some(name))` when valid, `Some(None)` when absent and optional,
    /// `None` after recording an issue.
    fn header_name(
        &mut self,
        key: &str,
        value: Option<String>,
        required: bool,
    ) -> Option<Option<String>> {
        match value {
            Some(n) if is_header_name(&n) => Some(Some(n.to_ascii_lowercase())),
            Some(n) => {
                self.issue(key, format!("`{n}` is not a valid header name"));
                None
            }
            None if required => {
                self.issue(key, "required");
                None
            }
            None => Some(None),
        }
    }

    fn limits(&mut self, raw: RawLimits) -> Limits {
        let d = Limits::default();
        let c = Limits::CEILING;
        let mut pick = |key: &str, value: Option<usize>, default: usize, ceiling: usize| match value
        {
            None => default,
            Some(v) if (1..=ceiling).contains(&v) => v,
            Some(v) => {
                self.issue(
                    &format!("limits.{key}"),
                    format!("{v} is outside 1..={ceiling}"),
                );
                default
            }
        };
        Limits {
            max_certificate_header_bytes: pick(
                "max_certificate_header_bytes",
                raw.max_certificate_header_bytes,
                d.max_certificate_header_bytes,
                c.max_certificate_header_bytes,
            ),
            max_chain_length: pick(
                "max_chain_length",
                raw.max_chain_length,
                d.max_chain_length,
                c.max_chain_length,
            ),
            max_token_bytes: pick(
                "max_token_bytes",
                raw.max_token_bytes,
                d.max_token_bytes,
                c.max_token_bytes,
            ),
            max_json_depth: pick(
                "max_json_depth",
                raw.max_json_depth,
                d.max_json_depth,
                c.max_json_depth,
            ),
            max_authorization_values: pick(
                "max_authorization_values",
                raw.max_authorization_values,
                d.max_authorization_values,
                c.max_authorization_values,
            ),
            max_introspection_calls: pick(
                "max_introspection_calls",
                raw.max_introspection_calls,
                d.max_introspection_calls,
                c.max_introspection_calls,
            ),
        }
    }

    fn trusted_ips(&mut self, raw: Vec<String>) -> Vec<IpNet> {
        let mut out = Vec::new();
        for entry in raw {
            let parsed = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => out.push(net.trunc()),
                Err(_) => self.issue(
                    "trusted_ips",
                    format!("`{entry}` is not an IP address or CIDR range"),
                ),
            }
        }
        out
    }

    /// `Some(None)`: valid, no checking (SKIP). `None`: invalid (issues recorded).
    fn revocation_settings(&mut self, raw: &RawFromHeader) -> Option<Option<revocation::Settings>> {
        const T: &str = "proof_of_possession_mtls_from_header";
        let mode: Option<revocation::Mode> = self.mode(
            &format!("{T}.revocation_check_mode"),
            raw.revocation_check_mode
                .as_deref()
                .unwrap_or(defaults::from_header::REVOCATION_CHECK_MODE),
        );
        let mut millis = |key: &str, value: Option<u64>, default: u64| {
            let d = Duration::from_millis(value.unwrap_or(default));
            if d.is_zero() {
                self.issue(&format!("{T}.{key}"), "must be more than 0 milliseconds");
                return None;
            }
            Some(d)
        };
        let cache_ttl = millis(
            "cert_cache_ttl",
            raw.cert_cache_ttl,
            defaults::from_header::CERT_CACHE_TTL_MS,
        );
        let http_timeout = millis(
            "http_timeout",
            raw.http_timeout,
            defaults::from_header::HTTP_TIMEOUT_MS,
        );
        let wait = millis(
            "revocation_wait",
            raw.revocation_wait,
            defaults::from_header::REVOCATION_WAIT_MS,
        );
        // A replayed answer without nextUpdate stops counting this long after it was signed.
        let ocsp_max_age = match raw
            .ocsp_max_age
            .unwrap_or(defaults::from_header::OCSP_MAX_AGE_SECS)
        {
            0 => {
                self.issue(&format!("{T}.ocsp_max_age"), "must be more than 0 seconds");
                None
            }
            s => Some(Duration::from_secs(s)),
        };
        let mode = mode?;
        let settings = revocation::Settings {
            mode,
            cache_ttl: cache_ttl?,
            http_timeout: http_timeout?,
            wait: wait?,
            ocsp_max_age: ocsp_max_age?,
        };
        Some((mode != revocation::Mode::Skip).then_some(settings))
    }

    fn idp_roots(&mut self, files: Vec<PathBuf>) -> Vec<CertificateDer<'static>> {
        let mut roots = Vec::new();
        for f in files {
            let path = self.path(&f);
            self.files.push(path.clone());
            let certs: Result<Vec<_>, _> =
                CertificateDer::pem_file_iter(&path).and_then(|it| it.collect());
            match certs {
                Ok(c) if !c.is_empty() => roots.extend(c),
                Ok(_) => self.issue(
                    "idp_ca_certificates",
                    format!("{} holds no PEM certificate", path.display()),
                ),
                Err(e) => self.issue("idp_ca_certificates", format!("{}: {e}", path.display())),
            }
        }
        roots
    }
}

/// `s` starts with `scheme` (ASCII case-insensitive) and has something after it.
fn has_scheme(s: &str, scheme: &str) -> bool {
    s.len() > scheme.len()
        && s.get(..scheme.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(scheme))
}

fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(':')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "host" | "content-length" | "transfer-encoding" | "connection"
        )
}

/// The TLS server `tls` describes, as the gRPC listener will build it: the chain with its key
/// and, with a client CA, required client certificates. Errors never quote the key.
fn tls_server(tls: &GrpcTls) -> Result<rustls::ServerConfig, String> {
    use rustls::server::WebPkiClientVerifier;
    use rustls_pki_types::PrivateKeyDer;
    let certs = CertificateDer::pem_slice_iter(&tls.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem)
        .map_err(|_| "the key file holds no usable PEM private key".to_string())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &tls.client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                roots
                    .add(cert.map_err(|e| format!("client CA: {e}"))?)
                    .map_err(|e| format!("client CA: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("client CA: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())
}
