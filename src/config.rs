//! Configuration in three steps: figment (TOML file, then `CERTBOUND_*` environment, nested with
//! `__`) into raw serde structs that refuse unknown keys; validated into `Config`, plain data
//! whose policies are the core's `Policy` values (no I/O but reading the files it names); then
//! `build` makes the running services (clients, stores, caches, fetchers). Every problem is
//! collected and reported at once, each naming its key; nothing bad is silently replaced by a
//! default.
//!
//! Key names follow Kong's openid-connect plugin where Kong has one, so a Kong user can copy
//! values over.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use figment::providers::Serialized;
use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Value};
use figment::Figment;
use ipnet::IpNet;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::Deserialize;

use certbound_adapters::http::IdpClient;
use certbound_core::cache::Settings as CacheSettings;
use certbound_core::cert::{HeaderFormat, TrustStore, XfccElements};
use certbound_core::defaults;
use certbound_core::dpop::{self, DpopMode, DpopPolicy, NonceIssuer};
use certbound_core::introspection::{ClientAuth, Settings as IntrospectionSettings};
use certbound_core::names::UnknownName;
use certbound_core::policy::{
    AuthMethod, CertSource, ClaimHeader, HeaderSource, KeySource, Limits, Policies, Policy, PopMode,
};
use certbound_core::revocation;
use certbound_core::token::KeySet;

mod build;
pub use build::Built;

/// `CERTBOUND_*` variables that belong to the command line, not to the configuration.
const NON_CONFIG_ENV: &[&str] = &["config", "log_format"];
/// Least `rediscovery_lifetime`: below it unknown `kid`s could make a JWKS fetch per request.
const MIN_REDISCOVERY_LIFETIME: Duration = Duration::from_secs(1);

/// Keys that apply to the whole process. Everything else at the top level is the default
/// policy, which `[policies.NAME]` tables override key by key.
const GLOBAL_KEYS: &[&str] = &[
    "grpc_listen",
    "admin_listen",
    "trusted_ips",
    "limits",
    "idp_ca_certificates",
    "ssl_verify",
    "timeout",
    "rediscovery_lifetime",
    "jwks_refresh_interval",
    "dpop_replay",
    "allow_insecure_http_for_tests",
    "grpc_tls",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    grpc_listen: Option<String>,
    admin_listen: Option<String>,
    idp_ca_certificates: Option<Vec<PathBuf>>,
    ssl_verify: Option<bool>,
    timeout: Option<u64>,
    rediscovery_lifetime: Option<u64>,
    jwks_refresh_interval: Option<u64>,
    trusted_ips: Option<Vec<String>>,
    limits: Option<RawLimits>,
    dpop_replay: Option<RawReplay>,
    allow_insecure_http_for_tests: Option<bool>,
    grpc_tls: Option<RawGrpcTls>,
}

/// `[grpc_tls]`: TLS on the gRPC listener, with optional client-certificate authentication.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrpcTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
}

/// The DPoP `jti` replay store, shared by every policy.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplay {
    store: Option<String>,
    redis_url: Option<String>,
    timeout: Option<u64>,
    max_entries: Option<u64>,
}

/// The keys one policy can set (top level for the default policy, `[policies.NAME]` for the
/// others).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    issuer: Option<String>,
    jwks_uri: Option<String>,
    jwks_file: Option<PathBuf>,
    client_id: Option<Vec<String>>,
    client_secret: Option<Vec<String>>,
    audience: Option<Vec<String>>,
    auth_methods: Option<Vec<String>>,
    leeway: Option<u64>,
    access_token_types: Option<Vec<String>>,
    proof_of_possession_mtls: Option<String>,
    proof_of_possession_auth_methods_validation: Option<bool>,
    upstream_headers_claims: Option<Vec<String>>,
    upstream_headers_names: Option<Vec<String>>,
    upstream_thumbprint_header: Option<String>,
    hide_credentials: Option<bool>,
    scopes_required: Option<Vec<String>>,
    scopes_claim: Option<Vec<String>>,
    audience_required: Option<Vec<String>>,
    audience_claim: Option<Vec<String>>,
    claims_forbidden: Option<Vec<String>>,
    introspection_endpoint: Option<String>,
    introspection_endpoint_auth_method: Option<String>,
    introspect_jwt_tokens: Option<bool>,
    cache_introspection: Option<bool>,
    cache_ttl: Option<u64>,
    cache_tokens: Option<bool>,
    token_cache_size: Option<u64>,
    certificate_cache_size: Option<u64>,
    proof_of_possession_mtls_from_header: Option<RawFromHeader>,
    proof_of_possession_dpop: Option<String>,
    dpop_proof_lifetime: Option<u64>,
    dpop_use_nonce: Option<bool>,
    dpop_nonce_secret: Option<String>,
    dpop_signing_alg_values: Option<Vec<String>>,
    dpop_htu_base_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_certificate_header_bytes: Option<usize>,
    max_chain_length: Option<usize>,
    max_token_bytes: Option<usize>,
    max_json_depth: Option<usize>,
    max_authorization_values: Option<usize>,
    max_introspection_calls: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFromHeader {
    certificate_header_name: Option<String>,
    certificate_chain_header_name: Option<String>,
    secure_source: Option<bool>,
    certificate_header_format: Option<String>,
    xfcc_elements: Option<String>,
    ca_certificates: Option<Vec<PathBuf>>,
    allow_partial_chain: Option<bool>,
    ssl_verify: Option<bool>,
    revocation_check_mode: Option<String>,
    cert_cache_ttl: Option<u64>,
    http_timeout: Option<u64>,
    revocation_wait: Option<u64>,
    ocsp_max_age: Option<u64>,
}

/// TLS on the gRPC listener (`[grpc_tls]`), read once at start: a change (or a renewed
/// certificate) needs a restart. PEM contents, checked by building the TLS acceptor.
#[derive(Clone, PartialEq, Eq)]
pub struct GrpcTls {
    pub cert_pem: Vec<u8>,
    /// The private key: never printed.
    pub key_pem: Vec<u8>,
    /// Roots a client (Envoy) certificate must chain to; `None`: no client authentication.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl GrpcTls {
    /// tonic's server TLS settings: this identity and, with `client_ca_pem`, a required client
    /// certificate (a handshake without one, or with one from another CA, fails).
    pub fn server_config(&self) -> tonic::transport::ServerTlsConfig {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        let tls =
            ServerTlsConfig::new().identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        match &self.client_ca_pem {
            Some(ca) => tls.client_ca_root(Certificate::from_pem(ca)),
            None => tls,
        }
    }
}

impl fmt::Debug for GrpcTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcTls")
            .field("client_auth", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// The DPoP `jti` replay store every policy shares (`[dpop_replay]`).
#[derive(Clone, PartialEq, Eq)]
pub enum ReplaySettings {
    /// In this process, at most `max_entries` proofs.
    Memory { max_entries: u64 },
    /// On Redis at `url`, every call bounded by `timeout`.
    Redis { url: String, timeout: Duration },
}

/// Never prints the Redis URL: it may carry a password.
impl fmt::Debug for ReplaySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory { max_entries } => f
                .debug_struct("Memory")
                .field("max_entries", max_entries)
                .finish(),
            Self::Redis { timeout, .. } => f
                .debug_struct("Redis")
                .field("timeout", timeout)
                .finish_non_exhaustive(),
        }
    }
}

/// How often signing keys are fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRefresh {
    /// Kong's `rediscovery_lifetime`: the least time between two fetches.
    pub min_interval: Duration,
    /// Periodic refresh, so rotations are seen even without an unknown `kid`.
    pub refresh_interval: Duration,
}

/// A validated configuration.
pub struct Config {
    pub grpc_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// `[grpc_tls]`; `None`: plaintext gRPC.
    pub grpc_tls: Option<GrpcTls>,
    pub policies: Policies,
    pub key_refresh: KeyRefresh,
    pub idp_client: IdpClient,
    pub replay: ReplaySettings,
    /// Every file the configuration was built from (the config file itself, CA bundles, JWKS
    /// files): a reload is due when one of them changes.
    pub files: Vec<PathBuf>,
    /// Accepted but permissive settings, each naming its key: `check-config` prints them and
    /// `serve` logs them at start-up and on every reload.
    pub warnings: Vec<Issue>,
}

/// One problem with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub key: String,
    pub message: String,
}

/// Its messages name keys and kinds of values, never a value: a mistyped `client_secret` or a
/// TOML syntax error on its line would otherwise print the secret (figment and the TOML parser
/// quote what they found).
#[derive(thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load configuration: {}", redacted(.0))]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration:\n{}", format_issues(.0))]
    Invalid(Vec<Issue>),
}

/// `Debug` is `Display`: the derived one would print figment's values.
impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What kind of value serde found, without the value.
fn kind_of(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual as A;
    match actual {
        A::Bool(_) => "a boolean",
        A::Unsigned(_) | A::Signed(_) | A::Float(_) => "a number",
        A::Char(_) | A::Str(_) => "a string",
        A::Bytes(_) => "bytes",
        A::Unit | A::Option => "no value",
        A::Seq => "a list",
        A::Map => "a table",
        _ => "a value",
    }
}

/// A figment error kind with every value it quotes left out.
fn kind_message(kind: &figment::error::Kind) -> String {
    use figment::error::Kind as K;
    match kind {
        K::InvalidType(actual, expected) => {
            format!("found {}, expected {expected}", kind_of(actual))
        }
        K::InvalidValue(actual, expected) => {
            format!("invalid {}, expected {expected}", kind_of(actual))
        }
        K::UnknownVariant(_, expected) => {
            format!("unknown value, expected one of {}", expected.join(", "))
        }
        K::ISizeOutOfRange(_) | K::USizeOutOfRange(_) => "number out of range".into(),
        K::Unsupported(actual) => format!("unsupported {}", kind_of(actual)),
        K::UnsupportedKey(actual, expected) => {
            format!("{} cannot be a key, expected {expected}", kind_of(actual))
        }
        // A parser's message (TOML syntax errors) quotes the offending line: keep its first
        // line (where) and its last (what), never the excerpt between them.
        K::Message(m) => {
            let lines: Vec<&str> = m
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.contains('|'))
                .collect();
            match lines.as_slice() {
                [] => "cannot be parsed".into(),
                [one] => (*one).to_string(),
                [first, .., last] => format!("{first}: {last}"),
            }
        }
        K::InvalidLength(..) | K::UnknownField(..) | K::MissingField(_) | K::DuplicateField(_) => {
            kind.to_string()
        }
    }
}

/// A figment error (and the ones chained to it) naming keys and sources, never values.
fn redacted(e: &figment::Error) -> String {
    e.clone()
        .into_iter()
        .map(|e| {
            let mut out = kind_message(&e.kind);
            if !e.path.is_empty() {
                out.push_str(&format!(" for key `{}`", e.path.join(".")));
            }
            if let Some(m) = &e.metadata {
                out.push_str(&format!(" in {}", m.name));
                if let Some(source) = &m.source {
                    out.push_str(&format!(" {source}"));
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn format_issues(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|i| format!("  - `{}`: {}", i.key, i.message))
        .collect::<Vec<_>>()
        .join("\n")
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("grpc_listen", &self.grpc_listen)
            .field("admin_listen", &self.admin_listen)
            .field("grpc_tls", &self.grpc_tls)
            .field("policies", &self.policies)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Logs every warning, one line per key (start-up and each reload).
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            tracing::warn!(key = %w.key, "{}", w.message);
        }
    }

    /// Loads `path`, then `CERTBOUND_*` environment overrides. Relative file paths in the
    /// config resolve against the config file's folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::Invalid(vec![Issue {
                key: "--config".into(),
                message: format!("{} is not a readable file", path.display()),
            }]));
        }
        let figment = Figment::new().merge(Toml::file(path)).merge(
            Env::prefixed("CERTBOUND_")
                .split("__")
                .ignore(NON_CONFIG_ENV),
        );
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = Self::from_figment(&figment, base)?;
        config.files.insert(0, path.to_path_buf());
        Ok(config)
    }

    /// Validates whatever `figment` holds; `base` anchors relative paths.
    pub fn from_figment(figment: &Figment, base: &Path) -> Result<Self, ConfigError> {
        let load = |e: figment::Error| ConfigError::Load(Box::new(e));
        // Re-extracted parts live in figment's "global" profile; name keys as the user wrote them.
        let load_part = |e: figment::Error| {
            ConfigError::Invalid(vec![Issue {
                key: e.path.join("."),
                message: kind_message(&e.kind),
            }])
        };
        let mut all: Dict = figment.extract().map_err(load)?;
        let named = match all.remove("policies") {
            None => Dict::new(),
            Some(Value::Dict(_, d)) => d,
            Some(_) => {
                return Err(ConfigError::Invalid(vec![Issue {
                    key: "policies".into(),
                    message: "must be a table of [policies.NAME] tables".into(),
                }]))
            }
        };
        let (global, default): (Dict, Dict) = all
            .into_iter()
            .partition(|(k, _)| GLOBAL_KEYS.contains(&k.as_str()));
        let global: RawGlobal = Figment::from(Serialized::globals(global))
            .extract()
            .map_err(load_part)?;
        let raw_default: RawPolicy = Figment::from(Serialized::globals(&default))
            .extract()
            .map_err(load_part)?;
        let mut raw_named = Vec::new();
        for (name, table) in named {
            let Value::Dict(_, overrides) = table else {
                return Err(ConfigError::Invalid(vec![Issue {
                    key: format!("policies.{name}"),
                    message: "must be a table".into(),
                }]));
            };
            // Key by key over the default policy; nested tables merge key by key too.
            let raw: RawPolicy = Figment::from(Serialized::globals(&default))
                .merge(Serialized::globals(overrides))
                .extract()
                .map_err(|e| {
                    ConfigError::Invalid(vec![Issue {
                        key: format!("policies.{name}.{}", e.path.join(".")),
                        message: kind_message(&e.kind),
                    }])
                })?;
            raw_named.push((name, raw));
        }
        let mut v = Validator {
            issues: Vec::new(),
            warnings: Vec::new(),
            base,
            scope: String::new(),
            files: Vec::new(),
            allow_http: false,
        };
        let config = v.config(global, raw_default, raw_named);
        match config {
            Some(c) if v.issues.is_empty() => Ok(c),
            _ => Err(ConfigError::Invalid(v.issues)),
        }
    }
}

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
    /// and together a TLS configuration tonic accepts (so a key that does not parse is a
    /// start-up error, not a listener that fails every handshake).
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
        if let Err(e) = tonic::transport::Server::builder().tls_config(tls.server_config()) {
            self.issue(
                "grpc_tls",
                format!(
                    "the certificate and key do not make a TLS server: {}",
                    certbound_adapters::http::error_chain(&e)
                ),
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
            files: std::mem::take(&mut self.files),
            warnings: std::mem::take(&mut self.warnings),
        })
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

        let cert_source = match raw.proof_of_possession_mtls_from_header {
            Some(h) => self
                .header_source(h, &shared.trusted_ips)
                .map(CertSource::Header),
            None => Some(CertSource::Peer),
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

        Some(Policy {
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
        Some(IntrospectionSettings {
            issuer: issuer?,
            endpoint,
            auth,
            client_id: client_id?,
            client_secret: client_secret?,
            cache,
            cache_ttl: Duration::from_secs(cache_ttl.max(1)),
            negative_ttl: Duration::from_secs(10),
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

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Serialized;

    fn dir_with_ca() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let ca = certbound_core::fixtures::Ca::root("test client CA").unwrap();
        std::fs::write(dir.path().join("client-ca.pem"), &ca.pem).unwrap();
        let key = certbound_core::fixtures::SigningKey::es256("k1").unwrap();
        std::fs::write(
            dir.path().join("jwks.json"),
            certbound_core::fixtures::jwks(&[&key]).to_string(),
        )
        .unwrap();
        dir
    }

    const GOOD: &str = r#"
        grpc_listen = "127.0.0.1:0"
        admin_listen = "127.0.0.1:1"
        issuer = "https://idp.example"
        jwks_file = "jwks.json"
        audience = ["https://api.example"]
        auth_methods = ["bearer"]
        leeway = 60
        proof_of_possession_mtls = "strict"
        upstream_headers_claims = ["sub"]
        upstream_headers_names = ["X-Consumer-Sub"]
        trusted_ips = ["10.0.0.0/8", "192.0.2.7"]
        [proof_of_possession_mtls_from_header]
        certificate_header_name = "X-Client-Cert"
        certificate_header_format = "url_encoded"
        ca_certificates = ["client-ca.pem"]
        allow_partial_chain = false
        ssl_verify = true
    "#;

    fn load(toml: &str, dir: &Path) -> Result<Config, ConfigError> {
        Config::from_figment(&Figment::new().merge(Toml::string(toml)), dir)
    }

    fn built(c: &Config) -> Built {
        c.build(&|_| None).unwrap()
    }

    fn issues(toml: &str, dir: &Path) -> Vec<Issue> {
        match load(toml, dir) {
            Err(ConfigError::Invalid(i)) => i,
            Err(e) => panic!("expected validation issues, got {e}"),
            Ok(_) => panic!("expected validation issues, config was accepted"),
        }
    }

    #[test]
    fn cache_keys_size_the_caches_and_every_policy_gets_its_own() {
        let dir = dir_with_ca();
        let e = built(&load(GOOD, dir.path()).unwrap()).engine;
        assert!(e.default.services.caches.caches_tokens());
        assert!(e.default.services.caches.caches_certificates());
        let toml =
            format!("{GOOD}\n[policies.other]\ncache_tokens = false\ncertificate_cache_size = 0\n");
        let e = built(&load(&toml, dir.path()).unwrap()).engine;
        let other = &e.named["other"].services;
        assert!(!other.caches.caches_tokens());
        assert!(!other.caches.caches_certificates());
        let toml = format!("{GOOD}\n[policies.same]\n");
        let e = built(&load(&toml, dir.path()).unwrap()).engine;
        assert!(!Arc::ptr_eq(
            &e.default.services.caches,
            &e.named["same"].services.caches
        ));
    }

    #[test]
    fn the_documented_example_loads() {
        let dir = dir_with_ca();
        let c = load(GOOD, dir.path()).unwrap();
        let p = &c.policies.default;
        assert_eq!(p.pop_mode, PopMode::Strict);
        assert_eq!(
            p.upstream_headers,
            vec![ClaimHeader {
                claim: "sub".into(),
                header: "x-consumer-sub".into()
            }]
        );
        match &p.cert_source {
            CertSource::Header(h) => {
                assert_eq!(h.name, "x-client-cert");
                assert_eq!(h.format, HeaderFormat::UrlEncoded);
            }
            CertSource::Peer => panic!("expected header source"),
        }
        let b = built(&c);
        assert!(
            b.engine.default.services.keys.is_ready(),
            "a static jwks_file is loaded at start"
        );
        assert!(b.key_fetches.is_empty());
    }

    #[test]
    fn without_from_header_the_peer_certificate_is_used_and_no_ca_is_needed() {
        let dir = dir_with_ca();
        let toml = "issuer = \"https://idp.example\"\n";
        let c = load(toml, dir.path()).unwrap();
        assert!(matches!(c.policies.default.cert_source, CertSource::Peer));
        assert_eq!(
            built(&c).key_fetches[0].source,
            KeySource::Discovery {
                issuer: "https://idp.example".into()
            }
        );
        assert_eq!(c.grpc_listen.to_string(), defaults::GRPC_LISTEN);
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let dir = dir_with_ca();
        let err = load(
            "issuer = \"https://idp.example\"\nisuer = \"typo\"\n",
            dir.path(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("isuer"), "{err}");
        let err = load(&format!("{GOOD}\nsecure_sorce = true\n"), dir.path()).unwrap_err();
        assert!(err.to_string().contains("secure_sorce"), "{err}");
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let dir = dir_with_ca();
        let toml = r#"
            grpc_listen = "nowhere"
            proof_of_possession_mtls = "sometimes"
            upstream_headers_claims = ["sub", "scope"]
            upstream_headers_names = ["x-sub"]
            [proof_of_possession_mtls_from_header]
            certificate_header_format = "der"
            ca_certificates = ["missing.pem"]
        "#;
        let keys: Vec<String> = issues(toml, dir.path())
            .into_iter()
            .map(|i| i.key)
            .collect();
        for k in [
            "grpc_listen",
            "issuer",
            "proof_of_possession_mtls",
            "upstream_headers_names",
            "proof_of_possession_mtls_from_header.certificate_header_name",
            "proof_of_possession_mtls_from_header.certificate_header_format",
            "proof_of_possession_mtls_from_header.ca_certificates",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} not in {keys:?}");
        }
    }

    #[test]
    fn pop_incompatible_auth_method_is_a_start_up_error_listing_compatible_ones() {
        let dir = dir_with_ca();
        let toml = format!(
            "{}\n",
            GOOD.replace(
                r#"auth_methods = ["bearer"]"#,
                r#"auth_methods = ["bearer", "password"]"#
            )
        );
        let i = issues(&toml, dir.path());
        assert_eq!(i.len(), 1);
        assert_eq!(i[0].key, "auth_methods");
        assert!(
            i[0].message.contains("bearer, introspection, session"),
            "{}",
            i[0].message
        );
    }

    #[test]
    fn unimplemented_methods_are_never_silently_ignored() {
        let dir = dir_with_ca();
        // Even with validation off, `password` would run without a binding check: refused
        // because certbound does not implement it.
        let toml = GOOD
            .replace(
                r#"auth_methods = ["bearer"]"#,
                r#"auth_methods = ["bearer", "password"]"#,
            )
            .replace(
                "leeway = 60",
                "leeway = 60\nproof_of_possession_auth_methods_validation = false",
            );
        let i = issues(&toml, dir.path());
        assert!(
            i[0].message.contains("not supported by certbound"),
            "{}",
            i[0].message
        );
        // Introspection needs the resource server's credentials.
        let toml = GOOD.replace(
            r#"auth_methods = ["bearer"]"#,
            r#"auth_methods = ["introspection"]"#,
        );
        let i = issues(&toml, dir.path());
        assert_eq!(i[0].key, "client_id");
        let with_creds = toml.replace(
            "leeway = 60",
            "leeway = 60\nclient_id = [\"rs\"]\nclient_secret = [\"s\"]",
        );
        assert!(load(&with_creds, dir.path()).is_ok());
        let toml = GOOD.replace(
            r#"auth_methods = ["bearer"]"#,
            r#"auth_methods = ["magic"]"#,
        );
        assert!(issues(&toml, dir.path())[0]
            .message
            .contains("not an auth method"));
    }

    #[test]
    fn a_ca_file_without_certificates_is_an_error() {
        let dir = dir_with_ca();
        std::fs::write(dir.path().join("empty.pem"), "nothing here\n").unwrap();
        let toml = GOOD.replace("client-ca.pem", "empty.pem");
        let i = issues(&toml, dir.path());
        assert_eq!(
            i[0].key,
            "proof_of_possession_mtls_from_header.ca_certificates"
        );
    }

    #[test]
    fn environment_style_overrides_apply_nested_keys() {
        let dir = dir_with_ca();
        // The same provider shape Env produces for CERTBOUND_PROOF_OF_POSSESSION_MTLS_FROM_HEADER__CERTIFICATE_HEADER_FORMAT.
        let figment = Figment::new()
            .merge(Toml::string(GOOD))
            .merge(Serialized::default(
                "proof_of_possession_mtls_from_header.certificate_header_format",
                "base64_encoded",
            ));
        let c = Config::from_figment(&figment, dir.path()).unwrap();
        match &c.policies.default.cert_source {
            CertSource::Header(h) => assert_eq!(h.format, HeaderFormat::Base64Encoded),
            CertSource::Peer => panic!("expected header source"),
        }
    }

    fn header_source(c: &Config) -> &HeaderSource {
        match &c.policies.default.cert_source {
            CertSource::Header(h) => h,
            CertSource::Peer => panic!("expected header source"),
        }
    }

    #[test]
    fn revocation_defaults_to_kongs_ignore_ca_error_with_kongs_timings() {
        let dir = dir_with_ca();
        let c = load(GOOD, dir.path()).unwrap();
        let settings = header_source(&c).revocation.as_ref().unwrap();
        assert!(built(&c).engine.default.services.revocation.is_some());
        assert_eq!(
            settings,
            &revocation::Settings {
                mode: revocation::Mode::IgnoreCaError,
                cache_ttl: Duration::from_millis(60_000),
                http_timeout: Duration::from_millis(30_000),
                wait: Duration::from_millis(500),
                ocsp_max_age: Duration::from_secs(3600),
            }
        );
        let c = load(&format!("{GOOD}ocsp_max_age = 600\n"), dir.path()).unwrap();
        let settings = header_source(&c).revocation.as_ref().unwrap();
        assert_eq!(settings.ocsp_max_age, Duration::from_secs(600));
    }

    #[test]
    fn revocation_modes_are_kongs_spelling_or_lower_case_and_skip_builds_no_checker() {
        let dir = dir_with_ca();
        for (value, mode) in [
            ("STRICT", Some(revocation::Mode::Strict)),
            ("strict", Some(revocation::Mode::Strict)),
            ("IGNORE_CA_ERROR", Some(revocation::Mode::IgnoreCaError)),
            ("ignore_ca_error", Some(revocation::Mode::IgnoreCaError)),
            ("SKIP", None),
            ("skip", None),
        ] {
            let toml = format!(
                "{GOOD}revocation_check_mode = \"{value}\"\ncert_cache_ttl = 1000\nhttp_timeout = 2000\nrevocation_wait = 300\n"
            );
            let c = load(&toml, dir.path()).unwrap();
            let got = header_source(&c).revocation.clone();
            assert_eq!(got.as_ref().map(|s| s.mode), mode, "{value}");
            assert_eq!(
                built(&c).engine.default.services.revocation.is_some(),
                mode.is_some(),
                "{value}"
            );
            if let Some(s) = got {
                assert_eq!(s.cache_ttl, Duration::from_millis(1000));
                assert_eq!(s.http_timeout, Duration::from_millis(2000));
                assert_eq!(s.wait, Duration::from_millis(300));
            }
        }
    }

    #[test]
    fn bad_revocation_values_name_their_keys() {
        let dir = dir_with_ca();
        let toml = format!(
            "{GOOD}revocation_check_mode = \"Strict\"\ncert_cache_ttl = 0\nhttp_timeout = 0\nrevocation_wait = 0\nocsp_max_age = 0\n"
        );
        let i = issues(&toml, dir.path());
        let keys: Vec<&str> = i.iter().map(|i| i.key.as_str()).collect();
        for k in [
            "revocation_check_mode",
            "cert_cache_ttl",
            "http_timeout",
            "revocation_wait",
            "ocsp_max_age",
        ] {
            let k = format!("proof_of_possession_mtls_from_header.{k}");
            assert!(keys.contains(&k.as_str()), "{k} not in {keys:?}");
        }
        assert!(
            i[0].message.contains("SKIP, IGNORE_CA_ERROR, STRICT"),
            "{}",
            i[0].message
        );
    }

    #[test]
    fn secure_source_without_trusted_ips_says_what_to_set() {
        let dir = dir_with_ca();
        let toml = GOOD.replace(r#"trusted_ips = ["10.0.0.0/8", "192.0.2.7"]"#, "");
        let i = issues(&toml, dir.path());
        assert_eq!(i[0].key, "trusted_ips");
        assert!(
            i[0].message.contains("secure_source = false"),
            "{}",
            i[0].message
        );
        let open = toml.replace(
            "ssl_verify = true\n",
            "ssl_verify = true\nsecure_source = false\n",
        );
        assert!(load(&open, dir.path()).is_ok());
    }

    #[test]
    fn trusted_ips_accept_addresses_and_ranges_and_refuse_garbage() {
        let dir = dir_with_ca();
        let c = load(GOOD, dir.path()).unwrap();
        let nets: Vec<String> = c
            .policies
            .default
            .trusted_ips
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, vec!["10.0.0.0/8", "192.0.2.7/32"]);
        let toml = GOOD.replace(r#""192.0.2.7""#, r#""192.0.2.300""#);
        assert_eq!(issues(&toml, dir.path())[0].key, "trusted_ips");
    }

    #[test]
    fn every_format_and_alias_is_accepted_and_unknown_ones_are_listed() {
        let dir = dir_with_ca();
        for f in [
            "base64_encoded",
            "url_encoded",
            "pem",
            "rfc9440",
            "xfcc",
            "traefik",
            "auto",
            "haproxy",
            "f5",
            "aws_alb",
            "apache",
        ] {
            let toml = GOOD.replace(
                r#"certificate_header_format = "url_encoded""#,
                &format!("certificate_header_format = \"{f}\""),
            );
            assert!(load(&toml, dir.path()).is_ok(), "{f}");
        }
        let toml = GOOD.replace(
            r#"certificate_header_format = "url_encoded""#,
            r#"certificate_header_format = "der""#,
        );
        assert!(issues(&toml, dir.path())[0].message.contains("rfc9440"));
    }

    #[test]
    fn xfcc_reads_one_element_unless_the_operator_asks_for_the_last() {
        let dir = dir_with_ca();
        let xfcc = GOOD.replace(r#""url_encoded""#, r#""xfcc""#);
        let elements = |c: &Config| match &c.policies.default.cert_source {
            CertSource::Header(h) => h.xfcc_elements,
            CertSource::Peer => panic!("expected header source"),
        };
        assert_eq!(
            elements(&load(&xfcc, dir.path()).unwrap()),
            XfccElements::One
        );
        let last = xfcc.replace(
            "ssl_verify = true\n",
            "ssl_verify = true\nxfcc_elements = \"last\"\n",
        );
        assert_eq!(
            elements(&load(&last, dir.path()).unwrap()),
            XfccElements::Last
        );
        let key = "proof_of_possession_mtls_from_header.xfcc_elements";
        assert_eq!(
            issues(&last.replace("\"last\"", "\"all\""), dir.path())[0].key,
            key
        );
        let not_xfcc = last.replace(r#""xfcc""#, r#""auto""#);
        assert_eq!(issues(&not_xfcc, dir.path())[0].key, key);
    }

    #[test]
    fn only_xfcc_may_go_without_ca_certificates_and_it_carries_its_own_chain() {
        let dir = dir_with_ca();
        let no_ca = GOOD.replace(r#"ca_certificates = ["client-ca.pem"]"#, "");
        assert_eq!(
            issues(&no_ca, dir.path())[0].key,
            "proof_of_possession_mtls_from_header.ca_certificates"
        );
        let xfcc = no_ca.replace(r#""url_encoded""#, r#""xfcc""#);
        let c = load(&xfcc, dir.path()).unwrap();
        match &c.policies.default.cert_source {
            CertSource::Header(h) => assert!(h.trust.is_none()),
            CertSource::Peer => panic!("expected header source"),
        }
        let with_chain = xfcc.replace(
            "ssl_verify = true\n",
            "ssl_verify = true\ncertificate_chain_header_name = \"x-chain\"\n",
        );
        assert_eq!(
            issues(&with_chain, dir.path())[0].key,
            "proof_of_possession_mtls_from_header.certificate_chain_header_name"
        );
    }

    #[test]
    fn limits_default_safely_and_refuse_values_outside_their_range() {
        let dir = dir_with_ca();
        assert_eq!(
            load(GOOD, dir.path()).unwrap().policies.default.limits,
            Limits::default()
        );
        let toml = format!("{GOOD}\n[limits]\nmax_chain_length = 3\nmax_token_bytes = 4096\nmax_json_depth = 4\nmax_certificate_header_bytes = 8192\n");
        let l = load(&toml, dir.path()).unwrap().policies.default.limits;
        assert_eq!(
            (
                l.max_chain_length,
                l.max_token_bytes,
                l.max_json_depth,
                l.max_certificate_header_bytes
            ),
            (3, 4096, 4, 8192)
        );
        let toml = format!("{GOOD}\n[limits]\nmax_chain_length = 0\nmax_token_bytes = 10000000\nmax_authorization_values = 9\n");
        let keys: Vec<String> = issues(&toml, dir.path())
            .into_iter()
            .map(|i| i.key)
            .collect();
        assert_eq!(
            keys,
            vec![
                "limits.max_chain_length",
                "limits.max_token_bytes",
                "limits.max_authorization_values"
            ]
        );
        let toml = format!("{GOOD}\n[limits]\nmax_authorization_values = 8\n");
        assert_eq!(
            load(&toml, dir.path())
                .unwrap()
                .policies
                .default
                .limits
                .max_authorization_values,
            Limits::CEILING.max_authorization_values
        );
    }

    #[test]
    fn max_introspection_calls_defaults_to_64_and_stays_within_1_to_1024() {
        let dir = dir_with_ca();
        let limits = |extra: &str| {
            load(&format!("{GOOD}\n[limits]\n{extra}\n"), dir.path())
                .map(|c| c.policies.default.limits.max_introspection_calls)
        };
        assert_eq!(limits("").unwrap(), 64);
        assert_eq!(limits("max_introspection_calls = 1024").unwrap(), 1024);
        for bad in [
            "max_introspection_calls = 0",
            "max_introspection_calls = 1025",
        ] {
            let keys: Vec<String> = issues(&format!("{GOOD}\n[limits]\n{bad}\n"), dir.path())
                .into_iter()
                .map(|i| i.key)
                .collect();
            assert_eq!(keys, vec!["limits.max_introspection_calls"], "{bad}");
        }
    }

    #[test]
    fn named_policies_override_key_by_key_and_errors_name_the_policy() {
        let dir = dir_with_ca();
        let toml = format!(
            "{GOOD}\n[policies.strict-api]\nscopes_required = [\"a b\", \"c\"]\nleeway = 5\n\
             [policies.strict-api.proof_of_possession_mtls_from_header]\ncertificate_header_format = \"rfc9440\"\n"
        );
        let c = load(&toml, dir.path()).unwrap();
        let p = &c.policies.named["strict-api"];
        assert_eq!(
            p.scopes_required,
            vec![
                vec!["a".to_string(), "b".to_string()],
                vec!["c".to_string()]
            ]
        );
        assert_eq!(p.leeway, 5);
        assert_eq!(p.audiences, c.policies.default.audiences, "inherited");
        match &p.cert_source {
            // The nested table merges key by key: the header name is inherited.
            CertSource::Header(h) => assert_eq!(
                (h.name.as_str(), h.format),
                ("x-client-cert", HeaderFormat::Rfc9440)
            ),
            CertSource::Peer => panic!("expected header source"),
        }
        let e = built(&c).engine;
        assert!(
            std::sync::Arc::ptr_eq(
                &e.named["strict-api"].services.keys,
                &e.default.services.keys
            ),
            "same issuer, one key store"
        );

        let err = load(
            &format!("{GOOD}\n[policies.x]\nscopes_requird = [\"a\"]\n"),
            dir.path(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("policies.x"), "{err}");
        let i = issues(
            &format!("{GOOD}\n[policies.y]\nproof_of_possession_mtls = \"maybe\"\n"),
            dir.path(),
        );
        assert_eq!(i[0].key, "policies.y.proof_of_possession_mtls");
    }

    #[test]
    fn jwks_uri_and_jwks_file_are_exclusive() {
        let dir = dir_with_ca();
        let toml = GOOD.replace(
            "jwks_file = \"jwks.json\"",
            "jwks_file = \"jwks.json\"\njwks_uri = \"https://idp.example/jwks\"",
        );
        assert_eq!(issues(&toml, dir.path())[0].key, "jwks_file");
    }

    #[test]
    fn dpop_keys_load_per_policy_with_kong_defaults() {
        let dir = dir_with_ca();
        let c = load(
            &format!(
                "{GOOD}\n[policies.d]\nproof_of_possession_dpop = \"strict\"\n\
                 dpop_use_nonce = true\ndpop_nonce_secret = \"{}\"\n\
                 dpop_signing_alg_values = [\"ES256\"]\n\
                 dpop_htu_base_url = \"https://API.example:443/\"\n",
                "s".repeat(32)
            ),
            dir.path(),
        )
        .unwrap();
        let default = &c.policies.default.dpop;
        assert_eq!(default.mode, DpopMode::Off, "Kong's default");
        assert_eq!(default.lifetime, 300);
        assert!(default.nonce.is_none());
        let d = &c.policies.named["d"].dpop;
        assert_eq!(d.mode, DpopMode::Strict);
        assert_eq!(d.algs, vec![jsonwebtoken::Algorithm::ES256]);
        assert!(d.nonce.is_some());
        assert_eq!(d.base_url.as_deref(), Some("https://api.example"));
        let e = built(&c).engine;
        assert!(
            Arc::ptr_eq(&e.named["d"].services.replay, &e.default.services.replay),
            "one replay store for the process"
        );
    }

    #[test]
    fn bad_dpop_keys_are_each_named() {
        let dir = dir_with_ca();
        let cases = [
            (
                "proof_of_possession_dpop = \"maybe\"",
                "policies.d.proof_of_possession_dpop",
            ),
            ("dpop_proof_lifetime = 0", "policies.d.dpop_proof_lifetime"),
            ("dpop_use_nonce = true", "policies.d.dpop_nonce_secret"),
            (
                "dpop_use_nonce = true\ndpop_nonce_secret = \"short\"",
                "policies.d.dpop_nonce_secret",
            ),
            (
                "dpop_signing_alg_values = [\"HS256\"]",
                "policies.d.dpop_signing_alg_values",
            ),
            (
                "dpop_signing_alg_values = []",
                "policies.d.dpop_signing_alg_values",
            ),
            (
                "dpop_htu_base_url = \"https://api.example/?q\"",
                "policies.d.dpop_htu_base_url",
            ),
            (
                "dpop_htu_base_url = \"ftp://api.example\"",
                "policies.d.dpop_htu_base_url",
            ),
        ];
        for (line, key) in cases {
            let i = issues(&format!("{GOOD}\n[policies.d]\n{line}\n"), dir.path());
            assert_eq!(i[0].key, key, "{line}");
        }
    }

    #[test]
    fn the_replay_store_is_checked_without_echoing_its_url() {
        let dir = dir_with_ca();
        for (table, key) in [
            ("store = \"redis\"", "dpop_replay.redis_url"),
            ("store = \"disk\"", "dpop_replay.store"),
            ("max_entries = 0", "dpop_replay.max_entries"),
            ("timeout = 0", "dpop_replay.timeout"),
            (
                "store = \"memory\"\nredis_url = \"redis://x\"",
                "dpop_replay.redis_url",
            ),
        ] {
            let i = issues(&format!("{GOOD}\n[dpop_replay]\n{table}\n"), dir.path());
            assert_eq!(i[0].key, key, "{table}");
        }
        let i = issues(
            &format!(
                "{GOOD}\n[dpop_replay]\nstore = \"redis\"\nredis_url = \"http://user:hunter2@x\"\n"
            ),
            dir.path(),
        );
        assert_eq!(i[0].key, "dpop_replay.redis_url");
        assert!(!i[0].message.contains("hunter2"), "{}", i[0].message);
        let c = load(
            &format!("{GOOD}\n[dpop_replay]\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:6379/0\"\n"),
            dir.path(),
        )
        .unwrap();
        assert!(matches!(
            *built(&c).engine.default.services.replay,
            certbound_core::dpop::ReplayStore::Shared(_)
        ));
    }

    #[test]
    fn listeners_default_to_loopback_not_every_interface() {
        let dir = dir_with_ca();
        let c = load("issuer = \"https://idp.example\"\n", dir.path()).unwrap();
        assert!(c.grpc_listen.ip().is_loopback(), "{}", c.grpc_listen);
        assert!(c.admin_listen.ip().is_loopback(), "{}", c.admin_listen);
        assert_eq!(c.grpc_listen.port(), 9191);
        assert_eq!(c.admin_listen.port(), 9192);
    }

    const INTROSPECTION: &str = "auth_methods = [\"bearer\", \"introspection\"]\nclient_id = [\"rs\"]\nclient_secret = [\"s\"]\n";

    #[test]
    fn plain_http_idp_urls_are_refused() {
        let dir = dir_with_ca();
        let bearer = GOOD.replace("auth_methods = [\"bearer\"]\n", "");
        let https_issuer = "issuer = \"https://idp.example\"";
        for (swap, key) in [
            (
                GOOD.replace(https_issuer, "issuer = \"http://idp.example\""),
                "issuer",
            ),
            (
                GOOD.replace(
                    "jwks_file = \"jwks.json\"",
                    "jwks_uri = \"http://idp.example/jwks\"",
                ),
                "jwks_uri",
            ),
            (
                format!(
                    "{INTROSPECTION}introspection_endpoint = \"http://idp.example/introspect\"\n{bearer}"
                ),
                "introspection_endpoint",
            ),
            (
                format!("{GOOD}\n[policies.other]\nissuer = \"http://other.example\"\n"),
                "policies.other.issuer",
            ),
        ] {
            let i = issues(&swap, dir.path());
            assert_eq!(i.len(), 1, "{i:?}");
            assert_eq!(i[0].key, key);
            assert!(i[0].message.contains("https"), "{}", i[0].message);
            assert!(
                i[0].message.contains("allow_insecure_http_for_tests"),
                "{}",
                i[0].message
            );
        }
    }

    #[test]
    fn plain_http_idp_urls_need_the_loudly_named_test_option() {
        let dir = dir_with_ca();
        let bearer = GOOD.replace("auth_methods = [\"bearer\"]\n", "");
        let toml = format!(
            "allow_insecure_http_for_tests = true\n{INTROSPECTION}introspection_endpoint = \"http://idp.example/introspect\"\n{}",
            bearer
                .replace("issuer = \"https://idp.example\"", "issuer = \"http://idp.example\"")
                .replace("jwks_file = \"jwks.json\"", "jwks_uri = \"http://idp.example/jwks\"")
        );
        let c = load(&toml, dir.path()).unwrap();
        assert!(c.idp_client.allow_insecure_http);
        assert!(
            c.warnings
                .iter()
                .any(|w| w.key == "allow_insecure_http_for_tests"),
            "{:?}",
            c.warnings
        );
        assert_eq!(c.policies.default.issuer, "http://idp.example");
        // Off by default.
        assert!(
            !load(GOOD, dir.path())
                .unwrap()
                .idp_client
                .allow_insecure_http
        );
    }

    #[test]
    fn grpc_tls_files_are_checked_at_start_and_the_key_is_never_printed() {
        let dir = dir_with_ca();
        let ca = certbound_core::fixtures::Ca::root("grpc ca").unwrap();
        let leaf = ca.server(&["localhost"]).unwrap();
        std::fs::write(dir.path().join("grpc.pem"), &leaf.pem).unwrap();
        std::fs::write(dir.path().join("grpc.key"), &leaf.key_pem).unwrap();
        std::fs::write(dir.path().join("garbage.key"), "not a key").unwrap();
        let with = |table: &str| format!("{GOOD}\n[grpc_tls]\n{table}\n");
        let ok = load(
            &with("cert_file = \"grpc.pem\"\nkey_file = \"grpc.key\"\nclient_ca_file = \"client-ca.pem\""),
            dir.path(),
        )
        .unwrap();
        let tls = ok.grpc_tls.as_ref().unwrap();
        assert!(tls.client_ca_pem.is_some());
        let printed = format!("{ok:?}");
        assert!(!printed.contains("PRIVATE KEY"), "{printed}");
        assert!(load(GOOD, dir.path()).unwrap().grpc_tls.is_none());
        for (table, key) in [
            ("cert_file = \"grpc.pem\"", "grpc_tls.key_file"),
            ("key_file = \"grpc.key\"", "grpc_tls.cert_file"),
            (
                "cert_file = \"grpc.pem\"\nkey_file = \"missing.key\"",
                "grpc_tls.key_file",
            ),
            (
                "cert_file = \"grpc.key\"\nkey_file = \"grpc.key\"",
                "grpc_tls.cert_file",
            ),
            (
                "cert_file = \"grpc.pem\"\nkey_file = \"garbage.key\"",
                "grpc_tls",
            ),
            (
                "cert_file = \"grpc.pem\"\nkey_file = \"grpc.key\"\nclient_ca_file = \"grpc.key\"",
                "grpc_tls.client_ca_file",
            ),
            (
                "cert_file = \"grpc.pem\"\nkey_file = \"grpc.key\"\nclient_ca = \"x\"",
                "client_ca",
            ),
        ] {
            let err = load(&with(table), dir.path()).unwrap_err().to_string();
            assert!(err.contains(key), "{table}: {err}");
            assert!(!err.contains("BEGIN PRIVATE"), "{table}: {err}");
        }
    }

    #[test]
    fn an_issuer_is_kept_exactly_as_configured_trailing_slash_included() {
        // Auth0's `iss` ends in `/`: trimming it made every such token fail the issuer check.
        let dir = dir_with_ca();
        let toml = GOOD.replace("https://idp.example\"", "https://idp.example/\"");
        let c = load(&toml, dir.path()).unwrap();
        assert_eq!(c.policies.default.issuer, "https://idp.example/");
        let c = load(GOOD, dir.path()).unwrap();
        assert_eq!(c.policies.default.issuer, "https://idp.example");
    }

    #[test]
    fn a_rediscovery_lifetime_below_one_second_is_refused() {
        let dir = dir_with_ca();
        let i = issues(&format!("rediscovery_lifetime = 0\n{GOOD}"), dir.path());
        assert_eq!(i.len(), 1, "{i:?}");
        assert_eq!(i[0].key, "rediscovery_lifetime");
        assert!(load(&format!("rediscovery_lifetime = 1\n{GOOD}"), dir.path()).is_ok());
    }

    #[test]
    fn permissive_token_defaults_are_warned_about_naming_their_keys() {
        let dir = dir_with_ca();
        // GOOD sets `audience` but keeps the default `access_token_types` (with `JWT`).
        let c = load(GOOD, dir.path()).unwrap();
        let keys: Vec<&str> = c.warnings.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(keys, ["access_token_types"]);
        assert!(c.warnings[0].message.contains("JWT"), "{:?}", c.warnings);
        // No audience: any audience the issuer ever used is accepted; per policy, named in full.
        let toml = format!(
            "{}\n[policies.open]\n",
            GOOD.replace("audience = [\"https://api.example\"]", "")
        );
        let c = load(&toml, dir.path()).unwrap();
        let mut keys: Vec<&str> = c.warnings.iter().map(|w| w.key.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "access_token_types",
                "audience",
                "policies.open.access_token_types",
                "policies.open.audience"
            ]
        );
        // Both set deliberately: nothing to warn about.
        let strict = format!("access_token_types = [\"at+jwt\"]\n{GOOD}");
        assert!(load(&strict, dir.path()).unwrap().warnings.is_empty());
    }
}
