//! Configuration in three steps: figment (TOML file, then `CERTBOUND_*` environment, nested with
//! `__`) into raw serde structs that refuse unknown keys; validated into `Config`, plain data
//! whose policies are the core's `Policy` values (no I/O but reading the files it names); then
//! `build` makes the running services (clients, stores, caches, fetchers). Every problem is
//! collected and reported at once, each naming its key; nothing bad is silently replaced by a
//! default.
//!
//! Key names follow Kong's openid-connect plugin where Kong has one, so a Kong user can copy
//! values over.
//!
//! The raw structs are also the configuration's schema: `schema` publishes them as JSON Schema
//! (`certbound config-schema`) and generates docs/configuration.md from them.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;

use certbound_adapters::http::IdpClient;
use certbound_core::answer::LogFields;
use certbound_core::policy::Policies;
use certbound_core::routes::Routes;

mod build;
mod raw;
pub mod schema;
#[cfg(test)]
mod tests;
mod validate;

pub use build::Built;
use raw::NON_CONFIG_ENV;

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

/// OpenTelemetry tracing of checks (`[tracing]`), read once at start.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// The OTLP/gRPC receiver, `http://host:port`.
    pub otlp_endpoint: String,
    /// Share of parentless checks that start a trace, 0.0 to 1.0.
    pub sample_ratio: f64,
    pub service_name: String,
    pub export_timeout: Duration,
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
    /// `dynamic_metadata`: the access-log fields every answer carries.
    pub dynamic_metadata: LogFields,
    /// `[[routes]]` and `unmatched_route`: the policy by host, path and method.
    pub routes: Arc<Routes>,
    /// `[tracing]`; `None`: no spans, no exporter.
    pub tracing: Option<TracingSettings>,
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
pub(crate) fn kind_message(kind: &figment::error::Kind) -> String {
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

    /// Validates whatever `figment` holds; `base` anchors relative paths. Every problem in
    /// every policy is reported at once.
    pub fn from_figment(figment: &Figment, base: &Path) -> Result<Self, ConfigError> {
        let raw = raw::read(figment)?;
        validate::validate(raw, base)
    }
}
