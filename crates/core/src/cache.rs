//! Result caches on the request path: tokens whose signature and claims verified, and client
//! certificates whose chain verified, so signature and chain checks run once per distinct
//! credential instead of once per request.
//!
//! Each policy owns its caches: they are built with the policy and replaced with it on reload.
//! A result proven under one policy's issuer, keys, trust anchors and rules is therefore never
//! reused under another, and a reload (new trust anchors, new rules) starts from empty caches.
//!
//! Guarantees:
//! - only verified credentials are cached; a failed verification is redone every time;
//! - a cached token is re-checked against `exp` and `nbf` (with `leeway`) at the injected time
//!   on every use, and leaves memory by its `exp` (and `cache_ttl`) at the latest;
//! - a cached token names the JWKS document that verified it: once the issuer's key set
//!   changes, the token is verified again against the new set (a removed key stops it);
//! - a cached certificate is reused only inside the validity window of the path that verified
//!   and for at most `cache_ttl`; revocation still runs on every request;
//! - keys are SHA-256 digests: memory per entry does not grow with the credential, and making
//!   two credentials share an entry is as hard as a SHA-256 collision.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::cert::{IssuerRef, Thumbprint, Validity};
use crate::decision::{DenyReason, UpstreamHeader};
use crate::dpop::Jkt;
use crate::token::Binding;

/// A cache key: the SHA-256 of what was presented.
pub type Key = [u8; 32];

/// Sizes and lifetime (`cache_tokens`, `token_cache_size`, `certificate_cache_size`,
/// `cache_ttl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Most verified tokens kept; 0 turns the token cache off.
    pub tokens: u64,
    /// Most verified certificates kept (per layer); 0 turns the certificate cache off.
    pub certificates: u64,
    /// The longest any result is kept, whatever its own expiry.
    pub ttl: Duration,
}

impl Settings {
    pub const DEFAULT_TOKENS: u64 = crate::defaults::TOKEN_CACHE_SIZE;
    pub const DEFAULT_CERTIFICATES: u64 = crate::defaults::CERTIFICATE_CACHE_SIZE;
    pub const OFF: Settings = Settings {
        tokens: 0,
        certificates: 0,
        ttl: Duration::ZERO,
    };
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            tokens: Self::DEFAULT_TOKENS,
            certificates: Self::DEFAULT_CERTIFICATES,
            ttl: Duration::from_secs(crate::defaults::CACHE_TTL_SECS),
        }
    }
}

/// What a check needs from a verified token, under the policy that verified it. Kept small on
/// purpose (the claims themselves are not kept): 100 000 entries fit in a few tens of MiB.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenFacts {
    pub binding: Binding,
    /// `cnf.jkt`, for the DPoP step (which runs on every request: a proof is never cached).
    pub jkt: Jkt,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    /// The policy's `claims_forbidden`/`audience_required`/`scopes_required` verdict.
    pub authorized: Result<(), DenyReason>,
    /// Upstream headers to set and to remove on allow (from claims).
    pub headers: Vec<UpstreamHeader>,
    pub remove: Vec<String>,
    pub exp: u64,
    pub nbf: Option<u64>,
    /// `KeySet::fingerprint` of the keys that verified the signature.
    pub keys: [u8; 32],
}

impl TokenFacts {
    /// The time rules `token::verify` applied, at `now`.
    pub fn check_time(&self, leeway: u64, now: u64) -> Result<(), DenyReason> {
        if now > self.exp.saturating_add(leeway) {
            return Err(DenyReason::TokenExpired);
        }
        if self.nbf.is_some_and(|nbf| now.saturating_add(leeway) < nbf) {
            return Err(DenyReason::TokenNotYetValid);
        }
        Ok(())
    }
}

/// A client certificate that was presented and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    pub thumbprint: Thumbprint,
    /// The leaf's issuer on the verified path; `None` when no trust store verified the chain.
    pub issuer: Option<IssuerRef>,
    /// As decoded, leaf first, for the revocation check; empty when the policy checks none.
    pub chain: Vec<CertificateDer<'static>>,
    pub validity: Validity,
    /// When the chain was verified: `cache_ttl` counts from here, whichever layer keeps it.
    pub verified_at: u64,
}

/// Whether a lookup found a usable entry (metrics, tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    Miss,
}

impl Lookup {
    pub fn found(hit: bool) -> Self {
        if hit {
            Self::Hit
        } else {
            Self::Miss
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
        }
    }
}

/// The cache lookups one check made; `None` where it made none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lookups {
    pub token: Option<Lookup>,
    /// Keyed by the raw certificate header value(s).
    pub certificate: Option<Lookup>,
    /// Keyed by the decoded DER chain, after a miss on the raw value.
    pub certificate_der: Option<Lookup>,
}

/// One entry and the time (seconds since the epoch, as the checks see it) from which it must
/// not be used any more.
struct Entry<T> {
    value: Arc<T>,
    until: u64,
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Self {
            value: self.value.clone(),
            until: self.until,
        }
    }
}

/// quick_cache rather than moka (used for the introspection and DPoP replay caches, which need
/// its per-entry expiry and single-flight loading): far less bookkeeping per entry, which is
/// what 100 000 cached tokens cost in memory, and no read buffers to drain on the request path
/// (docs/benchmarks.md). Without per-entry expiry, every entry carries its own deadline and is
/// checked against it on every read.
type Store<T> = quick_cache::sync::Cache<Key, Entry<T>>;

fn store<T>(capacity: u64) -> Option<Store<T>> {
    (capacity > 0).then(|| Store::new(usize::try_from(capacity).unwrap_or(usize::MAX)))
}

/// The entry under `key`, unless its deadline has passed at `now` (it is then dropped).
fn fresh<T>(cache: &Store<T>, key: &Key, now: u64) -> Option<Arc<T>> {
    let entry = cache.get(key)?;
    if now < entry.until {
        Some(entry.value)
    } else {
        cache.remove(key);
        None
    }
}

/// One policy's caches.
pub struct Caches {
    tokens: Option<Store<TokenFacts>>,
    certs_by_header: Option<Store<CertFacts>>,
    certs_by_der: Option<Store<CertFacts>>,
    ttl: Duration,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches")
            .field("tokens", &self.tokens.is_some())
            .field("certificates", &self.certs_by_header.is_some())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl Caches {
    pub fn new(settings: Settings) -> Self {
        let ttl = settings.ttl;
        let (tokens, certs) = if ttl.is_zero() {
            (0, 0)
        } else {
            (settings.tokens, settings.certificates)
        };
        Self {
            tokens: store(tokens),
            certs_by_header: store(certs),
            certs_by_der: store(certs),
            ttl,
        }
    }

    /// No caching at all: every check verifies everything.
    pub fn off() -> Self {
        Self::new(Settings::OFF)
    }

    pub fn caches_tokens(&self) -> bool {
        self.tokens.is_some()
    }

    pub fn caches_certificates(&self) -> bool {
        self.certs_by_header.is_some()
    }

    /// A verified token, unless it has been kept `cache_ttl` or past its `exp` (+ `leeway`) at
    /// `now`. The caller still applies the time rules to it (`TokenFacts::check_time`).
    pub fn token(&self, key: &Key, now: u64) -> Option<Arc<TokenFacts>> {
        fresh(self.tokens.as_ref()?, key, now)
    }

    /// Keeps `facts` until the token expires (`exp` + `leeway`, as seen at `now`), at most
    /// `cache_ttl`.
    pub fn put_token(&self, key: Key, facts: Arc<TokenFacts>, leeway: u64, now: u64) {
        let Some(cache) = &self.tokens else { return };
        let left = facts.exp.saturating_add(leeway).saturating_sub(now);
        if left == 0 {
            return;
        }
        // `exp` + `leeway` is the last second the token is accepted.
        let until = now.saturating_add(left.saturating_add(1).min(self.ttl.as_secs()));
        cache.insert(
            key,
            Entry {
                value: facts,
                until,
            },
        );
    }

    /// A certificate by the raw header value(s) it arrived in, if still valid at `now`.
    pub fn cert_by_header(&self, key: &Key, now: u64) -> Option<Arc<CertFacts>> {
        Self::valid(fresh(self.certs_by_header.as_ref()?, key, now)?, now)
    }

    /// A certificate by its decoded DER chain, if still valid at `now`.
    pub fn cert_by_der(&self, key: &Key, now: u64) -> Option<Arc<CertFacts>> {
        Self::valid(fresh(self.certs_by_der.as_ref()?, key, now)?, now)
    }

    fn valid(facts: Arc<CertFacts>, now: u64) -> Option<Arc<CertFacts>> {
        facts.validity.contains(now).then_some(facts)
    }

    /// Keeps a verified certificate under both keys until its path stops being valid, at most
    /// `cache_ttl`. `der_key` is `None` where there is no verification to skip by DER.
    pub fn put_cert(&self, header_key: Key, der_key: Option<Key>, facts: Arc<CertFacts>, now: u64) {
        // `not_after` is the last valid second.
        let until = facts
            .validity
            .not_after
            .saturating_add(1)
            .min(facts.verified_at.saturating_add(self.ttl.as_secs()));
        if now >= until || !facts.validity.contains(now) {
            return;
        }
        let entry = Entry {
            until,
            value: facts,
        };
        if let (Some(cache), Some(key)) = (&self.certs_by_der, der_key) {
            cache.insert(key, entry.clone());
        }
        if let Some(cache) = &self.certs_by_header {
            cache.insert(header_key, entry);
        }
    }

    /// Entries currently held (tests).
    pub fn token_count(&self) -> u64 {
        self.tokens.as_ref().map_or(0, |c| c.len() as u64)
    }
}

/// The key for a token: the SHA-256 of its bytes.
pub fn token_key(token: &str) -> Key {
    Sha256::digest(token.as_bytes()).into()
}

/// The key for one or more header values. Each value is length-prefixed so that moving bytes
/// from one header to the other never gives the same key.
pub fn header_key(values: &[&str]) -> Key {
    let mut h = Sha256::new();
    for v in values {
        h.update((v.len() as u64).to_be_bytes());
        h.update(v.as_bytes());
    }
    h.finalize().into()
}

/// The key for a decoded chain (leaf first), length-prefixed like `header_key`.
pub fn der_key<'a>(chain: impl IntoIterator<Item = &'a CertificateDer<'a>>) -> Key {
    let mut h = Sha256::new();
    for c in chain {
        h.update((c.len() as u64).to_be_bytes());
        h.update(c.as_ref());
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(exp: u64, nbf: Option<u64>) -> TokenFacts {
        TokenFacts {
            binding: Binding::Unbound,
            jkt: Jkt::Unbound,
            subject: None,
            client_id: None,
            authorized: Ok(()),
            headers: Vec::new(),
            remove: Vec::new(),
            exp,
            nbf,
            keys: [0; 32],
        }
    }

    #[test]
    fn a_cached_token_expires_at_exp_plus_leeway_and_not_before() {
        let f = facts(1000, None);
        assert_eq!(f.check_time(0, 1000), Ok(()));
        assert_eq!(f.check_time(0, 1001), Err(DenyReason::TokenExpired));
        assert_eq!(f.check_time(5, 1005), Ok(()));
        assert_eq!(f.check_time(5, 1006), Err(DenyReason::TokenExpired));
    }

    #[test]
    fn a_cached_token_is_not_valid_before_nbf() {
        let f = facts(2000, Some(1000));
        assert_eq!(f.check_time(0, 999), Err(DenyReason::TokenNotYetValid));
        assert_eq!(f.check_time(1, 999), Ok(()));
    }

    #[test]
    fn an_expired_token_is_not_stored() {
        let c = Caches::new(Settings::default());
        c.put_token([1; 32], Arc::new(facts(1000, None)), 0, 1000);
        assert!(c.token(&[1; 32], 1000).is_none());
        c.put_token([2; 32], Arc::new(facts(1001, None)), 0, 1000);
        assert!(c.token(&[2; 32], 1000).is_some());
        assert!(c.token(&[2; 32], 1001).is_some());
        assert!(c.token(&[2; 32], 1002).is_none());
    }

    #[test]
    fn a_certificate_is_served_only_inside_its_validity() {
        let c = Caches::new(Settings::default());
        let cert = Arc::new(CertFacts {
            thumbprint: [7; 32],
            issuer: None,
            chain: Vec::new(),
            validity: Validity {
                not_before: 100,
                not_after: 200,
            },
            verified_at: 150,
        });
        c.put_cert([1; 32], Some([2; 32]), cert, 150);
        assert!(c.cert_by_header(&[1; 32], 150).is_some());
        assert!(c.cert_by_der(&[2; 32], 200).is_some());
        assert!(c.cert_by_header(&[1; 32], 201).is_none());
        assert!(c.cert_by_der(&[2; 32], 99).is_none());
    }

    #[test]
    fn nothing_is_served_after_cache_ttl() {
        let c = Caches::new(Settings {
            ttl: Duration::from_secs(60),
            ..Settings::default()
        });
        c.put_token([1; 32], Arc::new(facts(10_000, None)), 0, 1000);
        assert!(c.token(&[1; 32], 1059).is_some());
        assert!(c.token(&[1; 32], 1060).is_none());
        assert_eq!(
            c.token_count(),
            0,
            "an entry past its deadline is dropped when met"
        );
        let cert = Arc::new(CertFacts {
            thumbprint: [7; 32],
            issuer: None,
            chain: Vec::new(),
            validity: Validity {
                not_before: 0,
                not_after: 10_000,
            },
            verified_at: 1000,
        });
        c.put_cert([2; 32], Some([3; 32]), cert, 1030);
        assert!(c.cert_by_header(&[2; 32], 1059).is_some());
        assert!(c.cert_by_header(&[2; 32], 1060).is_none());
        assert!(c.cert_by_der(&[3; 32], 1060).is_none());
    }

    #[test]
    fn zero_sizes_turn_the_caches_off() {
        let c = Caches::new(Settings {
            tokens: 0,
            certificates: 0,
            ttl: Duration::from_secs(60),
        });
        c.put_token([1; 32], Arc::new(facts(u64::MAX, None)), 0, 0);
        assert!(c.token(&[1; 32], 0).is_none());
        assert!(!c.caches_tokens() && !c.caches_certificates());
    }

    #[test]
    fn bytes_moved_between_header_values_change_the_key() {
        assert_ne!(header_key(&["ab", "c"]), header_key(&["a", "bc"]));
        assert_ne!(header_key(&["abc"]), header_key(&["abc", ""]));
    }
}
