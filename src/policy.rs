//! The validated, plain-data policy the request path reads. Built once by `config`; the
//! pipeline never sees raw configuration.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use crate::bind::PopMode;
use crate::cert::{HeaderFormat, TrustStore};
use crate::revocation::Checker;
use crate::token::KeyStore;

/// Where the client certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// Envoy terminated mTLS and verified the chain: `attributes.source.certificate`
    /// (URL-encoded PEM, sent with `include_peer_certificate: true`).
    Peer,
    /// A TLS terminator in front of Envoy passes the certificate in a header
    /// (Kong's `proof_of_possession_mtls_from_header`).
    Header(HeaderSource),
}

#[derive(Debug, Clone)]
pub struct HeaderSource {
    /// Lower-case, as Envoy forwards header names.
    pub name: String,
    pub format: HeaderFormat,
    pub trust: Arc<TrustStore>,
    /// `None` when `revocation_check_mode = "SKIP"`.
    pub revocation: Option<Arc<Checker>>,
}

/// One claim copied to one upstream request header on allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHeader {
    pub claim: String,
    /// Lower-case header name.
    pub header: String,
}

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
    pub keys: Arc<KeyStore>,
    /// How long a check may wait for a JWKS refresh after meeting an unknown `kid`.
    pub unknown_kid_wait: Duration,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("pop_mode", &self.pop_mode)
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

impl Policies {
    pub fn single(policy: Policy) -> Self {
        Self {
            default: Arc::new(policy),
            named: HashMap::new(),
        }
    }

    /// The policy for a request: the named one, or the default when the route names none.
    /// A name that does not exist is `None`: the caller denies (fail closed).
    pub fn select(&self, name: Option<&str>) -> Option<&Arc<Policy>> {
        match name {
            None => Some(&self.default),
            Some(n) => self.named.get(n),
        }
    }

    /// Every distinct key store (readiness: all must be loaded).
    pub fn key_stores(&self) -> Vec<Arc<KeyStore>> {
        let mut stores: Vec<Arc<KeyStore>> = vec![self.default.keys.clone()];
        for p in self.named.values() {
            if !stores.iter().any(|s| Arc::ptr_eq(s, &p.keys)) {
                stores.push(p.keys.clone());
            }
        }
        stores
    }

    /// Every distinct revocation checker (metrics are attached to each at start).
    pub fn revocation_checkers(&self) -> Vec<Arc<Checker>> {
        let mut checkers: Vec<Arc<Checker>> = Vec::new();
        for p in std::iter::once(&self.default).chain(self.named.values()) {
            if let CertSource::Header(HeaderSource {
                revocation: Some(c),
                ..
            }) = &p.cert_source
            {
                if !checkers.iter().any(|x| Arc::ptr_eq(x, c)) {
                    checkers.push(c.clone());
                }
            }
        }
        checkers
    }
}
