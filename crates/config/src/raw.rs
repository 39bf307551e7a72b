//! The first step: whatever figment holds (file, then environment) into raw serde structs that
//! refuse unknown keys. The default policy is the top level; each `[policies.NAME]` table is
//! merged over it key by key. Every table that does not fit is reported, not just the first.

use std::path::PathBuf;

use figment::providers::Serialized;
use figment::value::{Dict, Value};
use figment::Figment;
use serde::Deserialize;

use super::{kind_message, ConfigError, Issue};

/// `CERTBOUND_*` variables that belong to the command line, not to the configuration.
pub(super) const NON_CONFIG_ENV: &[&str] = &["config", "log_format"];

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
    "dynamic_metadata",
    "routes",
    "unmatched_route",
    "tracing",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGlobal {
    pub(super) grpc_listen: Option<String>,
    pub(super) admin_listen: Option<String>,
    pub(super) idp_ca_certificates: Option<Vec<PathBuf>>,
    pub(super) ssl_verify: Option<bool>,
    pub(super) timeout: Option<u64>,
    pub(super) rediscovery_lifetime: Option<u64>,
    pub(super) jwks_refresh_interval: Option<u64>,
    pub(super) trusted_ips: Option<Vec<String>>,
    pub(super) limits: Option<RawLimits>,
    pub(super) dpop_replay: Option<RawReplay>,
    pub(super) allow_insecure_http_for_tests: Option<bool>,
    pub(super) grpc_tls: Option<RawGrpcTls>,
    pub(super) dynamic_metadata: Option<Vec<String>>,
    pub(super) routes: Option<Vec<RawRoute>>,
    pub(super) unmatched_route: Option<String>,
    /// `[tracing]`: OpenTelemetry spans of checks; off when absent.
    pub(super) tracing: Option<RawTracing>,
}

/// One `[[routes]]` rule: which requests (Kong's route fields) get which policy.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: Option<String>,
    pub(super) hosts: Option<Vec<String>>,
    pub(super) paths: Option<Vec<String>>,
    pub(super) methods: Option<Vec<String>>,
    pub(super) regex_priority: Option<i64>,
    pub(super) policy: Option<String>,
}

/// `[grpc_tls]`: TLS on the gRPC listener, with optional client-certificate authentication.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGrpcTls {
    pub(super) cert_file: Option<PathBuf>,
    pub(super) key_file: Option<PathBuf>,
    pub(super) client_ca_file: Option<PathBuf>,
}

/// The DPoP `jti` replay store, shared by every policy.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReplay {
    pub(super) store: Option<String>,
    pub(super) redis_url: Option<String>,
    pub(super) timeout: Option<u64>,
    pub(super) max_entries: Option<u64>,
}

/// The keys one policy can set (top level for the default policy, `[policies.NAME]` for the
/// others).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub(super) issuer: Option<String>,
    pub(super) jwks_uri: Option<String>,
    pub(super) jwks_file: Option<PathBuf>,
    pub(super) client_id: Option<Vec<String>>,
    pub(super) client_secret: Option<Vec<String>>,
    pub(super) audience: Option<Vec<String>>,
    pub(super) auth_methods: Option<Vec<String>>,
    pub(super) leeway: Option<u64>,
    pub(super) access_token_types: Option<Vec<String>>,
    pub(super) proof_of_possession_mtls: Option<String>,
    pub(super) proof_of_possession_auth_methods_validation: Option<bool>,
    pub(super) upstream_headers_claims: Option<Vec<String>>,
    pub(super) upstream_headers_names: Option<Vec<String>>,
    pub(super) upstream_thumbprint_header: Option<String>,
    pub(super) hide_credentials: Option<bool>,
    pub(super) scopes_required: Option<Vec<String>>,
    pub(super) scopes_claim: Option<Vec<String>>,
    pub(super) audience_required: Option<Vec<String>>,
    pub(super) audience_claim: Option<Vec<String>>,
    pub(super) claims_forbidden: Option<Vec<String>>,
    pub(super) introspection_endpoint: Option<String>,
    pub(super) introspection_endpoint_auth_method: Option<String>,
    pub(super) introspect_jwt_tokens: Option<bool>,
    pub(super) cache_introspection: Option<bool>,
    pub(super) introspection_inactive_ttl: Option<u64>,
    pub(super) cache_ttl: Option<u64>,
    pub(super) cache_tokens: Option<bool>,
    pub(super) token_cache_size: Option<u64>,
    pub(super) certificate_cache_size: Option<u64>,
    pub(super) proof_of_possession_mtls_from_header: Option<RawFromHeader>,
    pub(super) proof_of_possession_dpop: Option<String>,
    pub(super) dpop_proof_lifetime: Option<u64>,
    pub(super) dpop_use_nonce: Option<bool>,
    pub(super) dpop_nonce_secret: Option<String>,
    pub(super) dpop_signing_alg_values: Option<Vec<String>>,
    pub(super) dpop_htu_base_url: Option<String>,
    pub(super) resource: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_certificate_header_bytes: Option<usize>,
    pub(super) max_chain_length: Option<usize>,
    pub(super) max_token_bytes: Option<usize>,
    pub(super) max_json_depth: Option<usize>,
    pub(super) max_authorization_values: Option<usize>,
    pub(super) max_introspection_calls: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFromHeader {
    pub(super) certificate_header_name: Option<String>,
    pub(super) certificate_chain_header_name: Option<String>,
    pub(super) secure_source: Option<bool>,
    pub(super) certificate_header_format: Option<String>,
    pub(super) xfcc_elements: Option<String>,
    pub(super) ca_certificates: Option<Vec<PathBuf>>,
    pub(super) allow_partial_chain: Option<bool>,
    pub(super) ssl_verify: Option<bool>,
    pub(super) revocation_check_mode: Option<String>,
    pub(super) cert_cache_ttl: Option<u64>,
    pub(super) http_timeout: Option<u64>,
    pub(super) revocation_wait: Option<u64>,
    pub(super) ocsp_max_age: Option<u64>,
}

/// A configuration as written: the process-wide keys, the default policy and the named ones.
pub(super) struct Raw {
    pub(super) global: RawGlobal,
    pub(super) default: RawPolicy,
    pub(super) named: Vec<(String, RawPolicy)>,
    /// Named tables that did not fit: validation still checks every other policy, and these
    /// are reported with what it finds.
    pub(super) issues: Vec<Issue>,
}

/// Reads every table of `figment`, collecting every table that does not fit. Without usable
/// process-wide keys or default policy nothing can be validated (the named policies build on
/// it): those issues are returned at once.
pub(super) fn read(figment: &Figment) -> Result<Raw, ConfigError> {
    let mut all: Dict = figment
        .extract()
        .map_err(|e| ConfigError::Load(Box::new(e)))?;
    let mut issues = Vec::new();
    // Re-extracted parts live in figment's "global" profile; name keys as the user wrote them.
    let mut issue = |prefix: &str, e: figment::Error| {
        issues.push(Issue {
            key: format!("{prefix}{}", e.path.join(".")),
            message: kind_message(&e.kind),
        })
    };
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
    let global: Option<RawGlobal> = Figment::from(Serialized::globals(global))
        .extract()
        .map_err(|e| issue("", e))
        .ok();
    let raw_default: Option<RawPolicy> = Figment::from(Serialized::globals(&default))
        .extract()
        .map_err(|e| issue("", e))
        .ok();
    let mut raw_named = Vec::new();
    let mut shape = Vec::new();
    for (name, table) in named {
        let Value::Dict(_, overrides) = table else {
            shape.push(Issue {
                key: format!("policies.{name}"),
                message: "must be a table".into(),
            });
            continue;
        };
        // Key by key over the default policy; nested tables merge key by key too.
        let raw: Result<RawPolicy, _> = Figment::from(Serialized::globals(&default))
            .merge(Serialized::globals(overrides))
            .extract();
        match raw {
            Ok(raw) => raw_named.push((name, raw)),
            Err(e) => issue(&format!("policies.{name}."), e),
        }
    }
    issues.extend(shape);
    match (global, raw_default) {
        (Some(global), Some(default)) => Ok(Raw {
            global,
            default,
            named: raw_named,
            issues,
        }),
        _ => Err(ConfigError::Invalid(issues)),
    }
}

/// `[tracing]`: one OpenTelemetry span per check (its decision, deny reason and policy; never a
/// token or certificate), exported over OTLP/gRPC. Read once at start: a change needs a restart.
/// The Envoy module ignores the table (Envoy traces the request itself).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTracing {
    /// Where spans go: an OTLP/gRPC receiver as `http://host:port` (an OpenTelemetry Collector
    /// on the node, usually `http://127.0.0.1:4317`). No default: without it nothing is traced,
    /// exported or paid for beyond one branch per check.
    pub(super) otlp_endpoint: Option<String>,
    /// Share of checks that start a trace when the request comes without a parent (Envoy sends
    /// its ext_authz span as `traceparent`, and its sampling decision then holds), 0.0 to 1.0.
    /// Default 1.0.
    pub(super) sample_ratio: Option<f64>,
    /// `service.name` of the exported spans. Default `certbound`.
    pub(super) service_name: Option<String>,
    /// Milliseconds one export may take. Default 10000.
    pub(super) export_timeout: Option<u64>,
}
