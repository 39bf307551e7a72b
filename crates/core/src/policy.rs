//! The validated policy: plain data (rules, modes, limits, parsed trust stores and key sets),
//! no clients, caches or connections. The service's configuration produces it; `engine` pairs
//! each policy with the live services its checks use.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use crate::bind::PopMode;
use crate::cert::{HeaderFormat, TrustStore, XfccElements};
use crate::defaults;
use crate::names::UnknownName;
use crate::resource::{Facts, Metadata, Resource};
use crate::token::KeySet;

/// Where the client certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// Envoy terminated mTLS and verified the chain: `attributes.source.certificate`
    /// (URL-encoded PEM, sent with `include_peer_certificate: true`).
    Peer,
    /// A TLS terminator in front of Envoy passes the certificate in a header
    /// (Kong's `proof_of_possession_mtls_from_header`).
    Header(HeaderSource),
    /// The mesh peer's certificate, from the element the local inbound sidecar appended to
    /// `x-forwarded-client-cert` (`proof_of_possession_mtls_from_mesh`).
    Mesh(MeshSource),
}

/// A mesh workload's certificate as its inbound sidecar attests it. Only the element's `Hash`
/// is read: no chain to verify, so the mesh (its CA and the sidecar's handshake) is the trust
/// anchor.
#[derive(Debug, Clone, Default)]
pub struct MeshSource {
    /// The local workload's SPIFFE ID: the element read must name it in `By`, and no other
    /// element may.
    pub local_spiffe_id: Option<String>,
    /// Peers allowed to call; empty means every peer the mesh lets through. When not empty, a
    /// request without the sidecar's element is denied in every binding mode.
    pub allowed_spiffe_ids: Vec<crate::cert::SpiffePattern>,
}

/// The header Envoy writes the mesh peer into.
pub const XFCC_HEADER: &str = "x-forwarded-client-cert";

#[derive(Debug, Clone)]
pub struct HeaderSource {
    /// Lower-case, as Envoy forwards header names.
    pub name: String,
    /// A separate header with the intermediates (`certificate_chain_header_name`).
    pub chain_name: Option<String>,
    pub format: HeaderFormat,
    /// For `xfcc`: one element (the default, what `SANITIZE_SET` writes) or the last of many.
    pub xfcc_elements: XfccElements,
    /// The client CAs. `None` only for `xfcc` without `ca_certificates`: the XFCC hop verified
    /// the client in its own handshake, and the binding is checked on its `Cert` or `Hash`.
    pub trust: Option<Arc<TrustStore>>,
    /// Kong's `secure_source`: the header counts only when the request reached Envoy from one
    /// of `Policy::trusted_ips`.
    pub secure_source: bool,
    /// `None` when `revocation_check_mode = "SKIP"`, or without a trust store (the verified
    /// path's issuer is what revocation is asked about).
    pub revocation: Option<crate::revocation::Settings>,
    /// Kong's `ssl_verify` of this table: TLS verification towards OCSP and CRL endpoints
    /// (chain verification against the CAs is always on).
    pub revocation_tls_verify: bool,
}

/// Where an issuer's signing keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `{issuer}/.well-known/openid-configuration`, then its `jwks_uri`.
    Discovery { issuer: String },
    /// A JWKS URL set directly.
    Uri(String),
    /// A static JWKS file, read when the configuration was validated.
    File { path: PathBuf, keys: Arc<KeySet> },
}

impl KeySource {
    /// Fetched over the network (and refreshed), as opposed to a static file.
    pub fn is_fetched(&self) -> bool {
        !matches!(self, Self::File { .. })
    }
}

/// Two sources are the same when they fetch from the same place, or hold the same keys from
/// the same file: policies with equal sources share one key store and one fetcher.
impl PartialEq for KeySource {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Discovery { issuer: a }, Self::Discovery { issuer: b }) => a == b,
            (Self::Uri(a), Self::Uri(b)) => a == b,
            (Self::File { path: a, keys: ka }, Self::File { path: b, keys: kb }) => {
                a == b && ka.fingerprint() == kb.fingerprint()
            }
            _ => false,
        }
    }
}

impl Eq for KeySource {}

/// One claim copied to one upstream request header on allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHeader {
    pub claim: String,
    /// Lower-case header name.
    pub header: String,
}

/// Kong's `auth_methods`: every method Kong's plugin knows, so a copied Kong config gets a
/// precise error. certbound implements `IMPLEMENTED`; the others are refused, never ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Password,
    ClientCredentials,
    AuthorizationCode,
    /// A JWT verified with the issuer's keys.
    Bearer,
    /// RFC 7662, for opaque tokens.
    Introspection,
    Userinfo,
    KongOauth2,
    RefreshToken,
    Session,
}

impl AuthMethod {
    /// In Kong's order; also Kong's default `auth_methods`.
    pub const ALL: [AuthMethod; 9] = [
        Self::Password,
        Self::ClientCredentials,
        Self::AuthorizationCode,
        Self::Bearer,
        Self::Introspection,
        Self::Userinfo,
        Self::KongOauth2,
        Self::RefreshToken,
        Self::Session,
    ];
    /// The spellings of `ALL`, in its order.
    pub const NAMES: [&'static str; 9] = [
        Self::Password.as_str(),
        Self::ClientCredentials.as_str(),
        Self::AuthorizationCode.as_str(),
        Self::Bearer.as_str(),
        Self::Introspection.as_str(),
        Self::Userinfo.as_str(),
        Self::KongOauth2.as_str(),
        Self::RefreshToken.as_str(),
        Self::Session.as_str(),
    ];
    /// The methods certbound checks.
    pub const IMPLEMENTED: [AuthMethod; 2] = [Self::Bearer, Self::Introspection];
    /// The spellings of `IMPLEMENTED`, in its order.
    pub const IMPLEMENTED_NAMES: [&'static str; 2] =
        [Self::Bearer.as_str(), Self::Introspection.as_str()];
    /// The methods that can carry a certificate binding (Kong's
    /// `proof_of_possession_auth_methods_validation`).
    pub const POP_COMPATIBLE: [AuthMethod; 3] = [Self::Bearer, Self::Introspection, Self::Session];
    /// The spellings of `POP_COMPATIBLE`, in its order.
    pub const POP_COMPATIBLE_NAMES: [&'static str; 3] = [
        Self::Bearer.as_str(),
        Self::Introspection.as_str(),
        Self::Session.as_str(),
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::ClientCredentials => "client_credentials",
            Self::AuthorizationCode => "authorization_code",
            Self::Bearer => "bearer",
            Self::Introspection => "introspection",
            Self::Userinfo => "userinfo",
            Self::KongOauth2 => "kong_oauth2",
            Self::RefreshToken => "refresh_token",
            Self::Session => "session",
        }
    }

    pub fn is_implemented(self) -> bool {
        Self::IMPLEMENTED.contains(&self)
    }

    pub fn can_carry_binding(self) -> bool {
        Self::POP_COMPATIBLE.contains(&self)
    }
}

impl std::str::FromStr for AuthMethod {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownName::new(s, &Self::NAMES))
    }
}

/// Caps on hostile input (the `[limits]` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_certificate_header_bytes: usize,
    /// Leaf plus intermediates, from the certificate header and the chain header together.
    pub max_chain_length: usize,
    pub max_token_bytes: usize,
    /// Nesting of arrays and objects in a token's header and claims.
    pub max_json_depth: usize,
    /// Comma-separated values in `authorization` (Envoy joins a repeated header with `, `).
    pub max_authorization_values: usize,
    /// Introspection calls outstanding at once, all policies together; the excess is denied
    /// `introspection_unavailable` at once.
    pub max_introspection_calls: usize,
}

impl Default for Limits {
    fn default() -> Self {
        use crate::defaults::limits as d;
        Self {
            max_certificate_header_bytes: d::MAX_CERTIFICATE_HEADER_BYTES,
            max_chain_length: d::MAX_CHAIN_LENGTH,
            max_token_bytes: d::MAX_TOKEN_BYTES,
            max_json_depth: d::MAX_JSON_DEPTH,
            max_authorization_values: d::MAX_AUTHORIZATION_VALUES,
            max_introspection_calls: d::MAX_INTROSPECTION_CALLS,
        }
    }
}

impl Limits {
    /// The largest values a configuration may set: beyond them a limit stops protecting
    /// anything (the CheckRequest itself is capped at 1 MiB).
    pub const CEILING: Limits = Limits {
        max_certificate_header_bytes: 256 * 1024,
        max_chain_length: crate::cert::CHAIN_LEN_CEILING,
        max_token_bytes: 64 * 1024,
        max_json_depth: 64,
        max_authorization_values: 8,
        max_introspection_calls: 1024,
    };
}

/// The longest a check waits for a JWKS refresh after meeting an unknown `kid` (never more than
/// the IdP `timeout`): long enough for one fetch from a nearby IdP, short enough that Envoy's
/// ext_authz timeout is not spent on it.
pub const UNKNOWN_KID_WAIT: Duration = Duration::from_millis(500);

/// Everything one check needs to decide.
#[derive(Clone)]
pub struct Policy {
    pub name: String,
    pub issuer: String,
    /// Accepted `aud` values; empty means `aud` is not checked.
    pub audiences: Vec<String>,
    pub leeway: u64,
    pub accepted_token_types: Vec<String>,
    pub pop_mode: PopMode,
    pub cert_source: CertSource,
    pub upstream_headers: Vec<ClaimHeader>,
    /// Sends the certificate's x5t#S256 upstream in this header on allow.
    pub upstream_thumbprint_header: Option<String>,
    /// Kong's `hide_credentials`: the upstream gets neither the Authorization header nor the
    /// certificate headers.
    pub hide_credentials: bool,
    /// Kong's `scopes_required`: any one alternative, each a set of scopes all required.
    pub scopes_required: Vec<Vec<String>>,
    /// Path to the scopes claim (`["scope"]`).
    pub scopes_claim: Vec<String>,
    /// Kong's `audience_required`, same encoding as `scopes_required`.
    pub audience_required: Vec<Vec<String>>,
    pub audience_claim: Vec<String>,
    /// Kong's `claims_forbidden`: a token carrying any of these claims is refused.
    pub claims_forbidden: Vec<String>,
    /// Kong's `trusted_ips`: the proxies allowed to set the certificate header.
    pub trusted_ips: Vec<ipnet::IpNet>,
    pub limits: Limits,
    /// Where the issuer's signing keys come from.
    pub keys: KeySource,
    /// `auth_methods` contains `bearer`: JWTs verified with the issuer's keys.
    pub bearer: bool,
    /// `auth_methods` contains `introspection`: RFC 7662 for opaque tokens.
    pub introspection: Option<crate::introspection::Settings>,
    /// Kong's `introspect_jwt_tokens`: JWT-shaped tokens are introspected too.
    pub introspect_jwt_tokens: bool,
    /// How long a check may wait for a JWKS refresh after meeting an unknown `kid`.
    pub unknown_kid_wait: Duration,
    /// Sizes and lifetime of this policy's caches of verified tokens and certificates.
    pub cache: crate::cache::Settings,
    /// Kong's `proof_of_possession_dpop` and its settings.
    pub dpop: crate::dpop::DpopPolicy,
    /// RFC 9728 metadata, when `resource` is set: served at its well-known path and named in
    /// every challenge.
    pub metadata: Option<Arc<Metadata>>,
}

impl Policy {
    /// A policy named `name` for tokens of `issuer` with every other key at its default (keys
    /// by discovery, binding `strict` to Envoy's peer certificate, DPoP off): what a
    /// configuration naming only `issuer` gives. Tests, benchmarks and embedders set the fields
    /// they care about on top (`Policy { pop_mode: .., ..Policy::new(name, issuer) }`).
    pub fn new(name: impl Into<String>, issuer: impl Into<String>) -> Self {
        let issuer = issuer.into();
        Self {
            name: name.into(),
            keys: KeySource::Discovery {
                issuer: issuer.clone(),
            },
            issuer,
            audiences: Vec::new(),
            leeway: defaults::LEEWAY_SECS,
            accepted_token_types: defaults::ACCESS_TOKEN_TYPES
                .iter()
                .map(|t| t.to_string())
                .collect(),
            pop_mode: PopMode::Strict,
            cert_source: CertSource::Peer,
            upstream_headers: Vec::new(),
            upstream_thumbprint_header: None,
            hide_credentials: defaults::HIDE_CREDENTIALS,
            scopes_required: Vec::new(),
            scopes_claim: vec![defaults::SCOPES_CLAIM.into()],
            audience_required: Vec::new(),
            audience_claim: vec![defaults::AUDIENCE_CLAIM.into()],
            claims_forbidden: Vec::new(),
            trusted_ips: Vec::new(),
            limits: Limits::default(),
            bearer: true,
            introspection: None,
            introspect_jwt_tokens: defaults::INTROSPECT_JWT_TOKENS,
            unknown_kid_wait: UNKNOWN_KID_WAIT,
            cache: crate::cache::Settings::default(),
            dpop: crate::dpop::DpopPolicy::off(),
            metadata: None,
        }
    }

    /// Publishes RFC 9728 metadata for `resource`, generated from this policy as it stands:
    /// set it after every other field.
    pub fn publish(&mut self, resource: Resource) {
        let dpop_on = self.dpop.mode != crate::dpop::DpopMode::Off;
        let facts = Facts {
            issuer: &self.issuer,
            mtls_bound: self.pop_mode != PopMode::Off,
            dpop_required: self.dpop.mode == crate::dpop::DpopMode::Strict,
            dpop_algs: dpop_on.then(|| self.dpop.algs.iter().map(|a| format!("{a:?}")).collect()),
            scopes: &self.scopes_required,
        };
        self.metadata = Some(Arc::new(Metadata::new(resource, &facts)));
    }

    /// What a token must satisfy under this policy.
    pub fn token_rules(&self) -> crate::token::TokenRules<'_> {
        crate::token::TokenRules {
            issuer: &self.issuer,
            audiences: &self.audiences,
            leeway: self.leeway,
            accepted_types: &self.accepted_token_types,
            max_bytes: self.limits.max_token_bytes,
            max_json_depth: self.limits.max_json_depth,
        }
    }
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("pop_mode", &self.pop_mode)
            .field("dpop", &self.dpop.mode)
            .finish_non_exhaustive()
    }
}

/// The default policy plus any named ones Envoy can pick per route with
/// `context_extensions: {policy: NAME}`.
#[derive(Debug, Clone)]
pub struct Policies {
    pub default: Arc<Policy>,
    pub named: HashMap<String, Arc<Policy>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_methods_parse_from_their_names_and_an_unknown_one_lists_them() {
        for (m, name) in AuthMethod::ALL.into_iter().zip(AuthMethod::NAMES) {
            assert_eq!(name.parse(), Ok(m));
            assert_eq!(m.as_str(), name);
        }
        for (m, name) in AuthMethod::IMPLEMENTED
            .into_iter()
            .zip(AuthMethod::IMPLEMENTED_NAMES)
        {
            assert!(m.is_implemented());
            assert_eq!(m.as_str(), name);
        }
        for (m, name) in AuthMethod::POP_COMPATIBLE
            .into_iter()
            .zip(AuthMethod::POP_COMPATIBLE_NAMES)
        {
            assert!(m.can_carry_binding());
            assert_eq!(m.as_str(), name);
        }
        assert!(!AuthMethod::Session.is_implemented());
        assert_eq!(
            "jwt".parse::<AuthMethod>().unwrap_err().to_string(),
            "`jwt` is not one of password, client_credentials, authorization_code, bearer, introspection, userinfo, kong_oauth2, refresh_token, session"
        );
    }

    fn published(mut p: Policy) -> serde_json::Value {
        p.publish("https://api.example.com/orders".parse().unwrap());
        serde_json::from_str(&p.metadata.unwrap().document).unwrap()
    }

    #[test]
    fn metadata_of_each_policy_kind_states_its_binding_methods() {
        use crate::dpop::DpopMode;
        let base = || Policy::new("p", "https://idp.example.com");
        let strict_mtls = published(base());
        assert_eq!(
            strict_mtls["tls_client_certificate_bound_access_tokens"],
            true
        );
        assert_eq!(strict_mtls["dpop_bound_access_tokens_required"], false);
        assert!(strict_mtls
            .get("dpop_signing_alg_values_supported")
            .is_none());
        assert_eq!(
            strict_mtls["authorization_servers"],
            serde_json::json!(["https://idp.example.com"])
        );
        assert_eq!(strict_mtls["resource"], "https://api.example.com/orders");

        let optional_mtls = published(Policy {
            pop_mode: PopMode::Optional,
            ..base()
        });
        assert_eq!(
            optional_mtls["tls_client_certificate_bound_access_tokens"],
            true
        );

        let mut dpop_strict = Policy {
            pop_mode: PopMode::Off,
            ..base()
        };
        dpop_strict.dpop.mode = DpopMode::Strict;
        dpop_strict.dpop.algs = vec![jsonwebtoken::Algorithm::ES256];
        let dpop_strict = published(dpop_strict);
        assert_eq!(
            dpop_strict["tls_client_certificate_bound_access_tokens"],
            false
        );
        assert_eq!(dpop_strict["dpop_bound_access_tokens_required"], true);
        assert_eq!(
            dpop_strict["dpop_signing_alg_values_supported"],
            serde_json::json!(["ES256"])
        );

        let mut dpop_optional = Policy {
            scopes_required: vec![vec!["orders:read".into()]],
            ..base()
        };
        dpop_optional.dpop.mode = DpopMode::Optional;
        let dpop_optional = published(dpop_optional);
        assert_eq!(dpop_optional["dpop_bound_access_tokens_required"], false);
        assert!(dpop_optional["dpop_signing_alg_values_supported"].is_array());
        assert_eq!(
            dpop_optional["scopes_supported"],
            serde_json::json!(["orders:read"])
        );
    }

    #[test]
    fn default_limits_are_within_their_ceilings() {
        let l = Limits::default();
        assert!(l.max_certificate_header_bytes <= Limits::CEILING.max_certificate_header_bytes);
        assert!(l.max_chain_length <= Limits::CEILING.max_chain_length);
        assert!(l.max_token_bytes <= Limits::CEILING.max_token_bytes);
        assert!(l.max_json_depth <= Limits::CEILING.max_json_depth);
        assert!(l.max_authorization_values <= Limits::CEILING.max_authorization_values);
        assert!(l.max_introspection_calls <= Limits::CEILING.max_introspection_calls);
    }
}
