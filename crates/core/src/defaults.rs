//! The value of every configuration key that has a default, one constant per key, each saying
//! where its number comes from.
//!
//! The configuration loader, `Limits::default`, DPoP and the Kong importer all read these, so a
//! default is written once. Modes are given by their configuration spelling (parsed with the
//! mode's `FromStr`), which keeps this module free of imports from the rest of the crate: it is
//! the ground floor everything else may build on.

/// Loopback: an ext_authz port reachable by anyone is a decision oracle (it answers `sub` and
/// `client_id`, and spends DPoP `jti`s). Port: certbound's.
pub const GRPC_LISTEN: &str = "127.0.0.1:9191";
/// Loopback, next to `GRPC_LISTEN`: metrics and probes are for the pod, not the world.
pub const ADMIN_LISTEN: &str = "127.0.0.1:9192";

/// `dynamic_metadata`: every access-log field but the request and trace ids. Envoy's access log
/// prints those itself (`%REQ(X-REQUEST-ID)%`, `%TRACE_ID%`), so copying them into the metadata
/// of every answer would cost each request for nothing there; they are for consumers that read
/// only the metadata, which name them.
pub const DYNAMIC_METADATA: crate::log_fields::LogFields = crate::log_fields::LogFields::ALL
    .without(crate::log_fields::LogField::RequestId)
    .without(crate::log_fields::LogField::TraceId);
/// Bytes one compiled `[[routes]]` path regex may take (the `regex` crate's `size_limit`, and
/// its lazy DFA's cache): certbound's. A path pattern compiles to a few KiB; the crate's own
/// 10 MiB default would let a few hundred rules take gigabytes.
pub const ROUTE_REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Milliseconds for one HTTP call to the IdP: Kong's `timeout` default.
pub const TIMEOUT_MS: u64 = 10_000;
/// Verify the IdP's TLS certificate: certbound's, fail closed.
pub const SSL_VERIFY: bool = true;
/// Least seconds between JWKS fetches that unknown `kid`s trigger: Kong's default.
pub const REDISCOVERY_LIFETIME_SECS: u64 = 30;
/// Seconds between background JWKS refreshes: certbound's, well under any IdP's key rollover.
pub const JWKS_REFRESH_INTERVAL_SECS: u64 = 300;
/// Plain-http IdP URLs are refused unless a test asks: certbound's.
pub const ALLOW_INSECURE_HTTP_FOR_TESTS: bool = false;

/// `auth_methods`: certbound's; Kong enables every method, certbound only what it checks.
pub const AUTH_METHODS: &[&str] = &["bearer"];
/// Seconds of clock skew on `exp` and `nbf`: Kong's `leeway` default.
pub const LEEWAY_SECS: u64 = 0;
/// JOSE `typ` values accepted: RFC 9068's two spellings, plus `JWT` because Keycloak issues it.
pub const ACCESS_TOKEN_TYPES: &[&str] = &["at+jwt", "application/at+jwt", "JWT"];
/// `proof_of_possession_mtls`: certbound's (Kong's is `off`; certbound exists to bind).
pub const PROOF_OF_POSSESSION_MTLS: &str = "strict";
/// Kong's `proof_of_possession_auth_methods_validation` default.
pub const PROOF_OF_POSSESSION_AUTH_METHODS_VALIDATION: bool = true;
/// Kong's `hide_credentials` default.
pub const HIDE_CREDENTIALS: bool = false;
/// Kong's `scopes_claim` default (RFC 9068 §2.2.3's `scope`).
pub const SCOPES_CLAIM: &str = "scope";
/// Kong's `audience_claim` default (RFC 7519's `aud`).
pub const AUDIENCE_CLAIM: &str = "aud";
/// Kong's `introspect_jwt_tokens` default.
pub const INTROSPECT_JWT_TOKENS: bool = false;
/// Kong's `cache_introspection` default.
pub const CACHE_INTROSPECTION: bool = true;
/// Seconds an inactive introspection answer is remembered: certbound's. Short, because a token
/// the IdP has not yet activated, or whose answer was a glitch, must not stay refused for long;
/// long enough that a client retrying a dead token costs the IdP one call per period.
pub const INTROSPECTION_INACTIVE_TTL_SECS: u64 = 10;
/// Kong's `cache_tokens` default.
pub const CACHE_TOKENS: bool = true;
/// Seconds any cached result is kept at most: Kong's `cache_ttl` default.
pub const CACHE_TTL_SECS: u64 = 3600;
/// Verified tokens one policy keeps: our measurement, 12 to 56 MiB RSS (docs/benchmarks.md).
pub const TOKEN_CACHE_SIZE: u64 = 100_000;
/// Verified certificates one policy keeps: certbound's (a client reuses its certificate across
/// many tokens).
pub const CERTIFICATE_CACHE_SIZE: u64 = 10_000;

/// `proof_of_possession_dpop`: Kong's default.
pub const PROOF_OF_POSSESSION_DPOP: &str = "off";
/// Seconds a DPoP proof is accepted after its `iat`: Kong's `dpop_proof_lifetime` default.
pub const DPOP_PROOF_LIFETIME_SECS: u64 = 300;
/// Kong's `dpop_use_nonce` default.
pub const DPOP_USE_NONCE: bool = false;

/// `[dpop_replay]`: where DPoP `jti`s are remembered, shared by every policy.
pub mod dpop_replay {
    /// Per replica, no dependency: certbound's.
    pub const STORE: &str = "memory";
    /// Milliseconds for connecting to and asking Redis per check: certbound's, small against
    /// Envoy's ext_authz timeout.
    pub const TIMEOUT_MS: u64 = 200;
    /// Proofs the memory store remembers: certbound's, the token cache's size.
    pub const MAX_ENTRIES: u64 = 100_000;
}

/// `[proof_of_possession_mtls_from_header]`: a certificate passed in a header.
pub mod from_header {
    /// The header counts only from `trusted_ips`: Kong's `secure_source` default.
    pub const SECURE_SOURCE: bool = true;
    /// TLS verification of https OCSP/CRL URLs: on, as in Kong's schema.
    pub const SSL_VERIFY: bool = true;
    /// Only self-signed roots end a chain: certbound's (Kong's `allow_partial_chain` default).
    pub const ALLOW_PARTIAL_CHAIN: bool = false;
    /// One XFCC element, what Envoy's `SANITIZE_SET` writes: certbound's.
    pub const XFCC_ELEMENTS: &str = "one";
    /// Kong's `revocation_check_mode` default.
    pub const REVOCATION_CHECK_MODE: &str = "IGNORE_CA_ERROR";
    /// Milliseconds a revocation status is cached: Kong's `cert_cache_ttl` default.
    pub const CERT_CACHE_TTL_MS: u64 = 60_000;
    /// Milliseconds for one OCSP or CRL request: Kong's `http_timeout` default.
    pub const HTTP_TIMEOUT_MS: u64 = 30_000;
    /// Milliseconds a check waits for an uncached status: certbound's, well under Envoy's
    /// ext_authz timeout.
    pub const REVOCATION_WAIT_MS: u64 = 500;
    /// Seconds an OCSP answer without `nextUpdate` counts: certbound's. Such responders sign
    /// on demand, so a genuine answer is seconds old; an hour still allows one that caches.
    pub const OCSP_MAX_AGE_SECS: u64 = 3600;
}

/// `[limits]`: caps on hostile input.
pub mod limits {
    /// 32 KiB: certbound's, room for a URL-encoded PEM leaf and intermediates.
    pub const MAX_CERTIFICATE_HEADER_BYTES: usize = 32 * 1024;
    /// Leaf plus intermediates: certbound's, room for a leaf, three intermediates and a root.
    pub const MAX_CHAIN_LENGTH: usize = 5;
    /// 16 KiB: certbound's, several times a large access token.
    pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
    /// Nesting in a token's JSON: certbound's, far deeper than any issuer's claims.
    pub const MAX_JSON_DEPTH: usize = 16;
    /// Comma-separated values in `authorization`: one, RFC 6750 §2.1's single credential.
    pub const MAX_AUTHORIZATION_VALUES: usize = 1;
    /// Introspection calls outstanding, all policies together: certbound's.
    pub const MAX_INTROSPECTION_CALLS: usize = 64;
}

/// `[tracing]`: OpenTelemetry spans of checks, exported over OTLP (off without `otlp_endpoint`).
pub mod tracing {
    /// Share of checks without a sampled-or-not parent that start a trace: 1.0, the OpenTelemetry
    /// SDK's own default (`parentbased_always_on`). A check under Envoy's span follows Envoy's
    /// decision whatever this says.
    pub const SAMPLE_RATIO: f64 = 1.0;
    /// `service.name` of the exported spans.
    pub const SERVICE_NAME: &str = "certbound";
    /// Milliseconds one OTLP export may take: the OpenTelemetry SDK's `OTEL_EXPORTER_OTLP_TIMEOUT`
    /// default.
    pub const EXPORT_TIMEOUT_MS: u64 = 10_000;
}
