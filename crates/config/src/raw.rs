//! The first step: whatever figment holds (file, then environment) into raw serde structs that
//! refuse unknown keys. The default policy is the top level; each `[policies.NAME]` table is
//! merged over it key by key. Every table that does not fit is reported, not just the first.
//!
//! These structs are also the configuration's schema (`schema`): a field's `///` comment is the
//! key's description in `certbound config-schema` and docs/configuration.md, and its
//! `#[schemars(extend(...))]` gives the default (from `certbound_core::defaults`), the unit of a
//! duration (`x-unit`: seconds or milliseconds; say it in the comment too), allowed values and
//! range. A new key is a documented field (a process-wide one also in `GLOBAL_KEYS`), then
//! `cargo run -- config-schema --markdown > docs/configuration.md`.

use std::path::PathBuf;

use figment::providers::Serialized;
use figment::value::{Dict, Value};
use figment::Figment;
use schemars::JsonSchema;
use serde::Deserialize;

use certbound_core::cert::XfccElements;
use certbound_core::defaults;
use certbound_core::dpop::DpopMode;
use certbound_core::log_fields::LogField;
use certbound_core::policy::{AuthMethod, Limits, PopMode};

use super::{kind_message, ConfigError, Issue};

/// `CERTBOUND_*` variables that belong to the command line, not to the configuration.
pub(super) const NON_CONFIG_ENV: &[&str] = &["config", "log_format"];

/// Keys that apply to the whole process. Everything else at the top level is the default
/// policy, which `[policies.NAME]` tables override key by key.
pub(super) const GLOBAL_KEYS: &[&str] = &[
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

/// The process-wide keys: listeners, the IdP client, limits, the replay store, routing.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGlobal {
    /// Address (`IP:PORT`) of ext_authz (`envoy.service.auth.v3.Authorization`) and
    /// `grpc.health.v1.Health`. Loopback by default: whoever reaches it can ask for decisions
    /// (and learn `sub`/`client_id`), so a deployment where Envoy runs elsewhere sets it (the
    /// shipped manifests do), keeps it on a private network and can add `[grpc_tls]`. A change
    /// needs a restart (a reload logs that).
    #[schemars(extend("default" = defaults::GRPC_LISTEN))]
    pub(super) grpc_listen: Option<String>,
    /// Address (`IP:PORT`) of `/metrics`, `/healthz` (alive) and `/readyz` (signing keys
    /// loaded), plaintext. Loopback by default (Kubernetes probes and Prometheus need it on the
    /// pod address: the manifests set `0.0.0.0:9192`). Must differ from `grpc_listen`. A change
    /// needs a restart (a reload logs that).
    #[schemars(extend("default" = defaults::ADMIN_LISTEN))]
    pub(super) admin_listen: Option<String>,
    /// PEM files of extra roots for HTTPS to the IdP, added to the system's. A reload that
    /// changes them applies to every key fetch from then on.
    #[schemars(extend("default" = []))]
    pub(super) idp_ca_certificates: Option<Vec<PathBuf>>,
    /// Verify the IdP's TLS certificate. A reload that changes it applies to every key fetch
    /// from then on.
    #[schemars(extend("default" = defaults::SSL_VERIFY))]
    pub(super) ssl_verify: Option<bool>,
    /// **Milliseconds** (Kong's `timeout`) for one HTTP call to the IdP: discovery, JWKS,
    /// introspection. More than 0.
    #[schemars(extend(
        "default" = defaults::TIMEOUT_MS,
        "x-unit" = "milliseconds",
        "minimum" = 1
    ))]
    pub(super) timeout: Option<u64>,
    /// Seconds (Kong's name): the least time between two JWKS fetches triggered by unknown
    /// `kid`s. At least `1`: `0` would let every token with an unknown `kid` cause a fetch, and
    /// is refused.
    #[schemars(extend(
        "default" = defaults::REDISCOVERY_LIFETIME_SECS,
        "x-unit" = "seconds",
        "minimum" = 1
    ))]
    pub(super) rediscovery_lifetime: Option<u64>,
    /// Seconds between background JWKS refreshes, so key rotations are seen even without an
    /// unknown `kid`. More than 0.
    #[schemars(extend(
        "default" = defaults::JWKS_REFRESH_INTERVAL_SECS,
        "x-unit" = "seconds",
        "minimum" = 1
    ))]
    pub(super) jwks_refresh_interval: Option<u64>,
    /// Kong's `trusted_ips`: addresses or CIDR ranges of the proxies allowed to set the
    /// certificate header, matched against the address Envoy saw the request come from
    /// (`attributes.source.address`; IPv4-mapped IPv6 counts as IPv4).
    #[schemars(extend("default" = []))]
    pub(super) trusted_ips: Option<Vec<String>>,
    /// Caps on hostile input, each at least 1 and at most its ceiling (the schema's `maximum`).
    pub(super) limits: Option<RawLimits>,
    /// Where DPoP proofs' `jti`s are remembered so a proof is accepted once, shared by every
    /// policy.
    pub(super) dpop_replay: Option<RawReplay>,
    /// `true` accepts `http://` for `issuer`, `jwks_uri` and `introspection_endpoint` (anyone on
    /// the path could then supply the signing keys or read the introspection credentials). For
    /// local tests only; certbound logs a warning at every start and reload. Redirects to
    /// `http://` are never followed.
    #[schemars(extend("default" = defaults::ALLOW_INSECURE_HTTP_FOR_TESTS))]
    pub(super) allow_insecure_http_for_tests: Option<bool>,
    /// TLS on the gRPC listener, with optional client-certificate authentication. Without it,
    /// plaintext gRPC. Read once at start: a change (or a renewed certificate) needs a restart
    /// (a reload logs that).
    pub(super) grpc_tls: Option<RawGrpcTls>,
    /// The access-log fields every answer carries as Envoy dynamic metadata, any of `policy`,
    /// `decision`, `reason`, `sub`, `client_id`, `x5t`. Each costs Envoy a little per request;
    /// `[]` sends none.
    #[schemars(extend(
        "x-default" = "all six",
        "items" = { "type": "string", "enum": LogField::NAMES }
    ))]
    pub(super) dynamic_metadata: Option<Vec<String>>,
    /// Rules that pick a policy by the request's host, path and method, with Kong's precedence
    /// (see [Per-route policies](policies.md#per-route-policies-and-authorization)). A route's
    /// `context_extensions: {policy}` still wins where an Envoy route sets it.
    pub(super) routes: Option<Vec<RawRoute>>,
    /// What a request no `[[routes]]` rule matches gets: `"default"` (the default policy) or
    /// `"deny"` (`403`, `no_matching_route`).
    #[schemars(extend("default" = "default", "enum" = ["default", "deny"]))]
    pub(super) unmatched_route: Option<String>,
    /// `[tracing]`: OpenTelemetry spans of checks; off when absent.
    pub(super) tracing: Option<RawTracing>,
}

/// One `[[routes]]` rule: which requests (Kong's route fields) get which policy.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Route")]
pub(super) struct RawRoute {
    /// A label, only for messages (`check-config` names rules by it).
    pub(super) name: Option<String>,
    /// Exact names (case-insensitive, any port; `name:PORT` only that port), or one `*` as the
    /// whole first (`*.example.com`: any subdomain) or last (`example.*`) label. None: any host.
    pub(super) hosts: Option<Vec<String>>,
    /// A prefix (`/api`), or `~REGEX` (Kong 3's spelling) anchored at the start only: an exact
    /// path is `~/payments$`. Matched after normalization (no query; `%XX` of unreserved
    /// characters decoded; `.`/`..` segments and repeated `/` removed). Each regex compiles at
    /// load within 256 KiB. None: any path.
    pub(super) paths: Option<Vec<String>>,
    /// Upper-case methods (`GET`, `POST`). None: any method.
    pub(super) methods: Option<Vec<String>>,
    /// Ranks regex paths among themselves, as in Kong: the higher wins.
    #[schemars(extend("default" = 0))]
    pub(super) regex_priority: Option<i64>,
    /// Required: the name of a `[policies.NAME]` table, or `"default"`. An unknown name is a
    /// start-up error.
    pub(super) policy: Option<String>,
    /// `false`: the requests this rule wins pass unchecked (what Kong does on a route no
    /// authentication plugin covers).
    pub(super) authenticate: Option<bool>,
}

/// `[grpc_tls]`: TLS on the gRPC listener, with optional client-certificate authentication.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "GrpcTls")]
pub(super) struct RawGrpcTls {
    /// Required with `[grpc_tls]`: the listener's PEM certificate chain. The listener then
    /// speaks TLS only (ALPN `h2`).
    pub(super) cert_file: Option<PathBuf>,
    /// Required with `[grpc_tls]`: the PEM private key of `cert_file`. Never printed.
    pub(super) key_file: Option<PathBuf>,
    /// PEM roots: every gRPC client must present a certificate that chains to one of them
    /// (Envoy's cluster: an `UpstreamTlsContext` with `tls_certificates`); a handshake without
    /// one, or with one from another CA, is refused. Without it: no client authentication.
    pub(super) client_ca_file: Option<PathBuf>,
}

/// The DPoP `jti` replay store, shared by every policy.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "DpopReplay")]
pub(super) struct RawReplay {
    /// `memory`: per replica. `redis`: shared by every replica (needed when a load balancer
    /// spreads one client's requests over several).
    #[schemars(extend(
        "default" = defaults::dpop_replay::STORE,
        "enum" = ["memory", "redis"]
    ))]
    pub(super) store: Option<String>,
    /// Required with `store = "redis"`: `redis://host:6379/0` or `rediss://…` (credentials in
    /// the URL; never logged).
    pub(super) redis_url: Option<String>,
    /// **Milliseconds** for connecting to and asking Redis, per check. More than 0.
    #[schemars(extend(
        "default" = defaults::dpop_replay::TIMEOUT_MS,
        "x-unit" = "milliseconds",
        "minimum" = 1
    ))]
    pub(super) timeout: Option<u64>,
    /// `memory` only: proofs remembered; past it the least recently used go first. At least 1.
    #[schemars(extend("default" = defaults::dpop_replay::MAX_ENTRIES, "minimum" = 1))]
    pub(super) max_entries: Option<u64>,
}

/// The keys one policy can set (top level for the default policy, `[policies.NAME]` for the
/// others).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Policy")]
pub(super) struct RawPolicy {
    /// Required (at the top level): the exact `iss` tokens must carry, an `https://` URL
    /// compared byte for byte: a trailing `/` is kept (Auth0's issuers end in one), so write it
    /// exactly as the IdP's `iss`. Without `jwks_uri`/`jwks_file`, discovery at
    /// `{issuer}/.well-known/openid-configuration` (a trailing `/` of the issuer is dropped
    /// when building that URL, OpenID Discovery §4), whose `issuer` must equal this value; the
    /// `jwks_uri` and `introspection_endpoint` it names must be `https://` too.
    #[schemars(extend("x-default" = "required"))]
    pub(super) issuer: Option<String>,
    /// Fetch keys from here (`https://`) instead of discovery. Redirects are followed only to
    /// `https://` URLs (at most 3). Exclusive with `jwks_file`.
    #[schemars(extend("x-default" = "discovery's"))]
    pub(super) jwks_uri: Option<String>,
    /// A static JWKS file, loaded at start (offline setups). Exclusive with `jwks_uri`.
    pub(super) jwks_file: Option<PathBuf>,
    /// The resource server's client ids, an array as in Kong. Introspection authenticates with
    /// the first (with `client_secret[0]`); `bearer` does not use them.
    #[schemars(extend("default" = []))]
    pub(super) client_id: Option<Vec<String>>,
    /// The secrets of `client_id`, in its order (no more entries than it). Never logged, and
    /// never quoted in a configuration error.
    #[schemars(extend("default" = []))]
    pub(super) client_secret: Option<Vec<String>>,
    /// When set, `aud` is required and must contain one of these; otherwise `aud` is not
    /// checked, so **a token the issuer minted for any other service is accepted here** (RFC
    /// 8725 §3.11). Kong's default, kept; `check-config` and start-up warn, naming the key. Set
    /// it.
    #[schemars(extend("default" = []))]
    pub(super) audience: Option<Vec<String>>,
    /// `bearer`: a JWT verified with the issuer's JWKS; `introspection`: RFC 7662 (see
    /// [Opaque tokens](#opaque-tokens-introspection)). Kong's other method names are known but
    /// refused at start, naming the key: certbound never silently ignores a method.
    #[schemars(extend(
        "default" = defaults::AUTH_METHODS,
        "items" = { "type": "string", "enum": AuthMethod::NAMES }
    ))]
    pub(super) auth_methods: Option<Vec<String>>,
    /// Seconds of clock skew allowed on `exp` and `nbf` (and on a DPoP proof's `iat`).
    #[schemars(extend("default" = defaults::LEEWAY_SECS, "x-unit" = "seconds"))]
    pub(super) leeway: Option<u64>,
    /// Accepted JOSE `typ` values (case-insensitive). Keycloak issues `JWT`; set
    /// `["at+jwt", "application/at+jwt"]` to require RFC 9068 tokens. A token without `typ` is
    /// refused. **The default lets any `typ: JWT` token of the issuer through the type check,
    /// ID tokens included** (RFC 9068 §4, RFC 8725 §3.11): when the key is not set,
    /// `check-config` and start-up warn, naming it. A token whose header has `crit` is refused
    /// (RFC 7515 §4.1.11: certbound understands no extension), and so is a DPoP proof.
    #[schemars(extend("default" = defaults::ACCESS_TOKEN_TYPES))]
    pub(super) access_token_types: Option<Vec<String>>,
    /// `strict`: every token must carry `cnf.x5t#S256` matching the client certificate.
    /// `optional`: tokens that carry it must match; unbound tokens pass. `off`: no binding check
    /// (the token is still verified). Kong's default is `off`; certbound exists to bind, so it
    /// defaults to `strict`.
    #[schemars(extend(
        "default" = defaults::PROOF_OF_POSSESSION_MTLS,
        "enum" = PopMode::NAMES
    ))]
    pub(super) proof_of_possession_mtls: Option<String>,
    /// With certificate binding on and `true`, an auth method that cannot carry a binding is a
    /// start-up error that lists the compatible ones (`bearer`, `introspection`, `session`).
    #[schemars(extend("default" = defaults::PROOF_OF_POSSESSION_AUTH_METHODS_VALIDATION))]
    pub(super) proof_of_possession_auth_methods_validation: Option<bool>,
    /// Claims sent upstream on allow, parallel to `upstream_headers_names`: claim *i* goes in
    /// header *i*, overwriting any copy the client sent; a claim the token lacks removes the
    /// header. Strings as they are, numbers and booleans as JSON, arrays of scalars joined with
    /// `,`, objects as compact JSON.
    #[schemars(extend("default" = []))]
    pub(super) upstream_headers_claims: Option<Vec<String>>,
    /// The header names of `upstream_headers_claims`, as many entries as it has.
    #[schemars(extend("default" = []))]
    pub(super) upstream_headers_names: Option<Vec<String>>,
    /// Send the client certificate's `x5t#S256` upstream in this header. None: not sent.
    pub(super) upstream_thumbprint_header: Option<String>,
    /// Remove `authorization` and the certificate (and chain) header before the upstream.
    #[schemars(extend("default" = defaults::HIDE_CREDENTIALS))]
    pub(super) hide_credentials: Option<bool>,
    /// Kong's AND/OR encoding: each entry is an alternative; the space-separated words in one
    /// entry are all required. Fails with `403`, `WWW-Authenticate: Bearer …,
    /// error="insufficient_scope", …, scope="<first alternative>"` (`insufficient_scope`).
    #[schemars(extend("default" = []))]
    pub(super) scopes_required: Option<Vec<String>>,
    /// Path to the scopes claim (nested object keys); the claim is a space-separated string or
    /// an array.
    #[schemars(extend("default" = [defaults::SCOPES_CLAIM]))]
    pub(super) scopes_claim: Option<Vec<String>>,
    /// `scopes_required`'s encoding over the audience claim; fails `403 insufficient_scope`
    /// (`audience_not_allowed`).
    #[schemars(extend("default" = []))]
    pub(super) audience_required: Option<Vec<String>>,
    /// Path to the claim `audience_required` reads (nested object keys).
    #[schemars(extend("default" = [defaults::AUDIENCE_CLAIM]))]
    pub(super) audience_claim: Option<Vec<String>>,
    /// A token carrying any of these claims is refused `403 insufficient_scope`
    /// (`forbidden_claim`).
    #[schemars(extend("default" = []))]
    pub(super) claims_forbidden: Option<Vec<String>>,
    /// The RFC 7662 endpoint, `https://`. Redirects from it are not followed (a 307/308 would
    /// re-send the token and the client credentials): a 3xx answer is
    /// `introspection_unavailable`.
    #[schemars(extend("x-default" = "discovery's"))]
    pub(super) introspection_endpoint: Option<String>,
    /// How introspection authenticates with `client_id[0]`/`client_secret[0]`. None: what the
    /// IdP advertises (`client_secret_basic` unless it only lists `client_secret_post`).
    #[schemars(extend(
        "x-default" = "the IdP's",
        "enum" = certbound_core::introspection::ClientAuth::NAMES
    ))]
    pub(super) introspection_endpoint_auth_method: Option<String>,
    /// Introspect JWT-shaped tokens too, instead of verifying them with `bearer`.
    #[schemars(extend("default" = defaults::INTROSPECT_JWT_TOKENS))]
    pub(super) introspect_jwt_tokens: Option<bool>,
    /// Cache introspection results by the token's SHA-256 (active ones up to `cache_ttl`).
    #[schemars(extend("default" = defaults::CACHE_INTROSPECTION))]
    pub(super) cache_introspection: Option<bool>,
    /// Seconds an inactive introspection result is remembered (1 to `cache_ttl`), in a separate
    /// cache (10 000 entries) so inactive results never evict active ones.
    #[schemars(extend(
        "default" = defaults::INTROSPECTION_INACTIVE_TTL_SECS,
        "x-unit" = "seconds",
        "minimum" = 1
    ))]
    pub(super) introspection_inactive_ttl: Option<u64>,
    /// Kong's key, in **seconds** (unlike `cert_cache_ttl`, milliseconds): the longest any
    /// cached result (verified token, verified certificate, active introspection answer) is
    /// kept; a token never beyond its `exp`, a certificate never beyond its chain's `notAfter`.
    /// `0` turns the token and certificate caches off (and is refused with introspection).
    #[schemars(extend("default" = defaults::CACHE_TTL_SECS, "x-unit" = "seconds"))]
    pub(super) cache_ttl: Option<u64>,
    /// Keep verified tokens so a token's signature and claims are checked once, not per request
    /// (Kong's key name). See [Caches](operations.md#caches).
    #[schemars(extend("default" = defaults::CACHE_TOKENS))]
    pub(super) cache_tokens: Option<bool>,
    /// certbound's own key: most verified tokens one policy keeps (100 000 took certbound from
    /// 12 to 56 MiB RSS in [the benchmarks](benchmarks.md)); `0` is the same as
    /// `cache_tokens = false`.
    #[schemars(extend("default" = defaults::TOKEN_CACHE_SIZE))]
    pub(super) token_cache_size: Option<u64>,
    /// certbound's own key: most verified client certificates one policy keeps; `0` turns the
    /// certificate cache off.
    #[schemars(extend("default" = defaults::CERTIFICATE_CACHE_SIZE))]
    pub(super) certificate_cache_size: Option<u64>,
    /// Read the client certificate from a header a TLS terminator sets, instead of Envoy's
    /// peer certificate (leave the table out for the latter). In `[policies.NAME]` it merges
    /// key by key over the top level's table.
    pub(super) proof_of_possession_mtls_from_header: Option<RawFromHeader>,
    /// `strict`: every token must carry `cnf.jkt` and come with a valid DPoP proof. `optional`:
    /// tokens with `cnf.jkt` must come with a valid proof; unbound tokens pass. `off`: the
    /// `DPoP` scheme is not accepted. See [DPoP](dpop.md#dpop-rfc-9449).
    #[schemars(extend(
        "default" = defaults::PROOF_OF_POSSESSION_DPOP,
        "enum" = DpopMode::NAMES
    ))]
    pub(super) proof_of_possession_dpop: Option<String>,
    /// Seconds a DPoP proof is accepted after its `iat` (plus `leeway` on both sides). More than
    /// 0.
    #[schemars(extend(
        "default" = defaults::DPOP_PROOF_LIFETIME_SECS,
        "x-unit" = "seconds",
        "minimum" = 1
    ))]
    pub(super) dpop_proof_lifetime: Option<u64>,
    /// Require a server nonce in every DPoP proof (needs `dpop_nonce_secret`).
    #[schemars(extend("default" = defaults::DPOP_USE_NONCE))]
    pub(super) dpop_use_nonce: Option<bool>,
    /// certbound's own key, required with `dpop_use_nonce`: at least 32 bytes, **the same on
    /// every replica**. Set it from the environment (`CERTBOUND_DPOP_NONCE_SECRET`, or
    /// `CERTBOUND_POLICIES__<NAME>__DPOP_NONCE_SECRET` for a named policy), not the file.
    pub(super) dpop_nonce_secret: Option<String>,
    /// The DPoP proof algorithms accepted (asymmetric only; anything else is a start-up error),
    /// announced in the challenge's `algs`.
    #[schemars(extend("x-default" = "ES256, ES384, RS256/384/512, PS256/384/512, EdDSA"))]
    pub(super) dpop_signing_alg_values: Option<Vec<String>>,
    /// certbound's own key: the scheme and authority clients address
    /// (`https://api.example`), followed by the request path to give the `htu` a proof must
    /// carry. Without it: `https://` and the `:authority` Envoy routed on.
    pub(super) dpop_htu_base_url: Option<String>,
    /// certbound's own key: the RFC 9728 resource identifier of this policy's API, an
    /// `https://` URL without fragment or query (`https://api.example/orders`). certbound then
    /// publishes this policy's [protected-resource metadata](resource-metadata.md) and every
    /// challenge of the policy names it. A named policy inherits the top level's `resource`;
    /// two policies publishing different documents at one URL is a start-up error. None: no
    /// metadata.
    pub(super) resource: Option<String>,
    /// Binds tokens to the mesh peer's certificate as the local inbound sidecar attests it in
    /// `x-forwarded-client-cert` (Istio's `APPEND_FORWARD`). Not set by default. A policy takes
    /// its certificate from one place: this table, `proof_of_possession_mtls_from_header`, or
    /// (neither set) Envoy's peer certificate.
    pub(super) proof_of_possession_mtls_from_mesh: Option<RawFromMesh>,
}

/// `proof_of_possession_mtls_from_mesh`: the certificate is the one the local inbound sidecar
/// verified in its mTLS handshake and described in the element it appended to
/// `x-forwarded-client-cert`. Only that element's `Hash` (hex SHA-256 of the peer's DER) is
/// read, compared with the token's `cnf.x5t#S256`; there is no chain to verify, so the mesh's CA
/// is the trust anchor.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CertificateFromMesh")]
pub(super) struct RawFromMesh {
    /// The SPIFFE ID of the workload certbound protects (its sidecar writes it as the element's
    /// `By`), e.g. `"spiffe://cluster.local/ns/orders/sa/orders"`. When set, the element read
    /// must name it and no earlier element may, which keeps reading requests that came through
    /// a gateway or another appending hop. Not set by default: then a header whose last element
    /// follows a `URI` or `DNS` value (every request through such a hop) is refused as
    /// ambiguous.
    pub(super) local_spiffe_id: Option<String>,
    /// SPIFFE IDs allowed to call, matched against the element's one `URI` value: exact IDs, or
    /// an ID ending in `/` for every ID below it (`"spiffe://cluster.local/ns/shop/"`; whole
    /// path segments only). Default: empty, every peer the mesh lets through. When not empty, a
    /// request without the element is denied `cert_missing` in every binding mode.
    #[schemars(extend("default" = []))]
    pub(super) allowed_spiffe_ids: Option<Vec<String>>,
}

/// `[limits]`: caps on hostile input.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Limits")]
pub(super) struct RawLimits {
    /// Bytes of the certificate header (and chain header); over it: `cert_header_too_large`.
    #[schemars(extend(
        "default" = defaults::limits::MAX_CERTIFICATE_HEADER_BYTES,
        "x-unit" = "bytes",
        "minimum" = 1,
        "maximum" = Limits::CEILING.max_certificate_header_bytes
    ))]
    pub(super) max_certificate_header_bytes: Option<usize>,
    /// Certificates in a presented chain, leaf and intermediates, both headers together; over
    /// it: `cert_chain_too_long`.
    #[schemars(extend(
        "default" = defaults::limits::MAX_CHAIN_LENGTH,
        "minimum" = 1,
        "maximum" = Limits::CEILING.max_chain_length
    ))]
    pub(super) max_chain_length: Option<usize>,
    /// Bytes of an access token; over it: `token_too_large`.
    #[schemars(extend(
        "default" = defaults::limits::MAX_TOKEN_BYTES,
        "x-unit" = "bytes",
        "minimum" = 1,
        "maximum" = Limits::CEILING.max_token_bytes
    ))]
    pub(super) max_token_bytes: Option<usize>,
    /// Nesting in the token's header and claims, checked before parsing; over it:
    /// `token_too_large`.
    #[schemars(extend(
        "default" = defaults::limits::MAX_JSON_DEPTH,
        "minimum" = 1,
        "maximum" = Limits::CEILING.max_json_depth
    ))]
    pub(super) max_json_depth: Option<usize>,
    /// Comma-separated values in `Authorization`; over it: `malformed_authorization` (see
    /// [Limits](#limits)).
    #[schemars(extend(
        "default" = defaults::limits::MAX_AUTHORIZATION_VALUES,
        "minimum" = 1,
        "maximum" = Limits::CEILING.max_authorization_values
    ))]
    pub(super) max_authorization_values: Option<usize>,
    /// Introspection calls outstanding at once, all policies together; a check that would
    /// exceed it is denied at once with `503` (`introspection_unavailable`).
    #[schemars(extend(
        "default" = defaults::limits::MAX_INTROSPECTION_CALLS,
        "minimum" = 1,
        "maximum" = Limits::CEILING.max_introspection_calls
    ))]
    pub(super) max_introspection_calls: Option<usize>,
}

/// `[proof_of_possession_mtls_from_header]`: the client certificate from a header.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CertificateFromHeader")]
pub(super) struct RawFromHeader {
    /// Required: the header the TLS terminator sets.
    #[schemars(extend("x-default" = "required"))]
    pub(super) certificate_header_name: Option<String>,
    /// A separate header carrying the intermediates (RFC 9440's `Client-Cert-Chain`, or any
    /// terminator that sends the chain apart), in the same format. Not for `xfcc`, which
    /// carries its chain itself.
    pub(super) certificate_chain_header_name: Option<String>,
    /// Kong's `secure_source`: the header counts only when the request reached Envoy from one
    /// of `trusted_ips`; from anyone else it is treated as absent (so `strict` denies
    /// `cert_missing`). `true` with no `trusted_ips` is a start-up error that says what to set.
    #[schemars(extend("default" = defaults::from_header::SECURE_SOURCE))]
    pub(super) secure_source: Option<bool>,
    /// Required: how the certificate is carried, one of `base64_encoded`, `url_encoded`,
    /// `pem`, `xfcc`, … (see [Certificate header
    /// formats](certificate-headers.md#certificate-header-formats), which lists every spelling).
    #[schemars(extend("x-default" = "required"))]
    pub(super) certificate_header_format: Option<String>,
    /// certbound's own key, `xfcc` only: how many XFCC elements the header may carry. `one`:
    /// exactly the one element Envoy writes with `SANITIZE_SET`; a second element (a hop that
    /// appended, or a header sent twice) is denied `cert_header_duplicate`. `last`: hops that
    /// append (`APPEND_FORWARD`) are expected and the last element counts, but a header where
    /// an element boundary directly follows a `By`, `URI` or `DNS` value is denied
    /// `cert_malformed`, because that comma may belong to a client's SAN (so only the nearest
    /// hop may write `uri`/`dns`).
    #[schemars(extend(
        "default" = defaults::from_header::XFCC_ELEMENTS,
        "enum" = XfccElements::NAMES
    ))]
    pub(super) xfcc_elements: Option<String>,
    /// Required (except with `xfcc`): PEM files of trusted client CAs (at least one
    /// certificate). With `xfcc` it may be empty: the Envoy hop that wrote XFCC verified the
    /// client in its own handshake, and certbound binds on XFCC's `Cert` or `Hash`.
    #[schemars(extend("x-default" = "required (except xfcc)"))]
    pub(super) ca_certificates: Option<Vec<PathBuf>>,
    /// `false`: only self-signed roots end a chain; configured intermediates only help build
    /// it. `true`: any configured certificate may end the chain.
    #[schemars(extend("default" = defaults::from_header::ALLOW_PARTIAL_CHAIN))]
    pub(super) allow_partial_chain: Option<bool>,
    /// TLS verification (system roots) of `https://` OCSP responders and CRL distribution
    /// points, as in Kong's schema. Most are `http://` (the answers are signed). **Chain
    /// validation against `ca_certificates` is always on and cannot be switched off.**
    #[schemars(extend("default" = defaults::from_header::SSL_VERIFY))]
    pub(super) ssl_verify: Option<bool>,
    /// `SKIP`: no revocation check. `IGNORE_CA_ERROR` (Kong's default): a definite answer
    /// counts (revoked denies `cert_revoked`), but no OCSP/CRL URL in the certificate, a
    /// network or responder error, or an unknown status lets the request through. `STRICT`:
    /// only a certificate whose status was determined good passes; anything else is
    /// `cert_revocation_unknown`. Kong's spelling; the same in lower case is accepted. See
    /// [Revocation](revocation.md#revocation).
    #[schemars(extend("default" = defaults::from_header::REVOCATION_CHECK_MODE))]
    pub(super) revocation_check_mode: Option<String>,
    /// Kong's key, in **milliseconds** (unlike `cache_ttl`, seconds): how long a revocation
    /// status (and a CRL) is cached per certificate; shorter when the answer's `nextUpdate`
    /// comes sooner. A lookup that determined nothing (responder down, bad answer) is kept at
    /// most 5 s; a certificate that names no OCSP/CRL URL, the full TTL. More than 0.
    #[schemars(extend(
        "default" = defaults::from_header::CERT_CACHE_TTL_MS,
        "x-unit" = "milliseconds",
        "minimum" = 1
    ))]
    pub(super) cert_cache_ttl: Option<u64>,
    /// **Milliseconds** (Kong's) for one OCSP or CRL request. The request path does not wait
    /// this long (see `revocation_wait`): a slow fetch finishes in the background and fills the
    /// cache. More than 0.
    #[schemars(extend(
        "default" = defaults::from_header::HTTP_TIMEOUT_MS,
        "x-unit" = "milliseconds",
        "minimum" = 1
    ))]
    pub(super) http_timeout: Option<u64>,
    /// certbound's own key, **milliseconds**: how long a check waits for a revocation status
    /// that is not cached yet, in every mode: an answer that lands within it decides (a revoked
    /// one denies every waiting check). Past it the status counts as undetermined for that
    /// request (a timeout: `STRICT` denies, `IGNORE_CA_ERROR` allows) while the fetch goes on.
    /// Keeps a check well under Envoy's ext_authz timeout whatever `http_timeout` is. A
    /// certificate once answered revoked stays denied for the life of the process. More than 0.
    #[schemars(extend(
        "default" = defaults::from_header::REVOCATION_WAIT_MS,
        "x-unit" = "milliseconds",
        "minimum" = 1
    ))]
    pub(super) revocation_wait: Option<u64>,
    /// certbound's own key, seconds: an OCSP answer without `nextUpdate` counts only while its
    /// `thisUpdate` and `producedAt` are at most this old (plus 5 minutes of skew); otherwise
    /// an old signed "good", replayed over plain HTTP, would count for ever. Answers with
    /// `nextUpdate` are bounded by it; a `producedAt` in the future is refused. More than 0.
    #[schemars(extend(
        "default" = defaults::from_header::OCSP_MAX_AGE_SECS,
        "x-unit" = "seconds",
        "minimum" = 1
    ))]
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
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Tracing")]
pub(super) struct RawTracing {
    /// Where spans go: an OTLP/gRPC receiver as `http://host:port` (an OpenTelemetry Collector
    /// on the node, usually `http://127.0.0.1:4317`). No default: without it nothing is traced,
    /// exported or paid for beyond one branch per check.
    pub(super) otlp_endpoint: Option<String>,
    /// Share of checks that start a trace when the request comes without a parent (Envoy sends
    /// its ext_authz span as `traceparent`, and its sampling decision then holds), 0.0 to 1.0.
    /// Default 1.0.
    #[schemars(extend(
        "default" = defaults::tracing::SAMPLE_RATIO,
        "minimum" = 0.0,
        "maximum" = 1.0
    ))]
    pub(super) sample_ratio: Option<f64>,
    /// `service.name` of the exported spans. Default `certbound`.
    #[schemars(extend("default" = defaults::tracing::SERVICE_NAME))]
    pub(super) service_name: Option<String>,
    /// Milliseconds one export may take. Default 10000.
    #[schemars(extend(
        "default" = defaults::tracing::EXPORT_TIMEOUT_MS,
        "x-unit" = "milliseconds",
        "minimum" = 1
    ))]
    pub(super) export_timeout: Option<u64>,
}
