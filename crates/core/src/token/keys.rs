//! Signing keys from a JWKS, and the shared store the request path reads them from.
//!
//! `KeySet` is immutable; `KeyStore` swaps whole sets atomically so a check never sees a half
//! update and never takes a lock. A check that meets an unknown `kid` asks the store for a
//! refresh and waits a bounded time; the fetcher (in `jwks`) decides whether a fetch is due.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use sha2::Digest;
use tokio::sync::{watch, Notify};

/// Most keys accepted from one JWKS: more is a misconfiguration or an attack on memory.
pub const MAX_KEYS: usize = 64;

/// Why a JWKS document was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    #[error("JWKS is not valid JSON with a `keys` array: {0}")]
    Json(String),
    #[error("JWKS holds {0} keys, more than {MAX_KEYS}")]
    TooManyKeys(usize),
    #[error("JWKS holds no usable signing key")]
    NoUsableKey,
}

pub(crate) struct SigningKey {
    pub(crate) key: DecodingKey,
    /// The algorithms this key may verify: exactly its JWK `alg`, or the asymmetric algorithms
    /// of its key type when the JWK has no `alg`.
    pub(crate) algorithms: Vec<Algorithm>,
}

/// An immutable set of verification keys.
#[derive(Default)]
pub struct KeySet {
    by_kid: HashMap<String, usize>,
    keys: Vec<SigningKey>,
    loaded: bool,
    /// SHA-256 of the JWKS document: cached verifications name the key set that proved them,
    /// so a changed set (a key removed) sends every cached token back to full verification,
    /// while a periodic refresh that fetched the same document keeps them.
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.by_kid.keys().collect::<Vec<_>>())
            .field("keys", &self.keys.len())
            .finish()
    }
}

#[derive(serde::Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// Parses a JWKS document. Keys that cannot sign access tokens for us (encryption keys,
    /// symmetric keys, unsupported curves) are skipped, not fatal: IdPs publish those too.
    pub fn from_jwks_json(body: &[u8]) -> Result<Self, KeySetError> {
        let raw: RawJwks =
            serde_json::from_slice(body).map_err(|e| KeySetError::Json(e.to_string()))?;
        if raw.keys.len() > MAX_KEYS {
            return Err(KeySetError::TooManyKeys(raw.keys.len()));
        }
        let mut set = KeySet {
            loaded: true,
            fingerprint: sha2::Sha256::digest(body).into(),
            ..KeySet::default()
        };
        for value in raw.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                continue;
            };
            let Some(key) = signing_key(&jwk) else {
                continue;
            };
            if let Some(kid) = &jwk.common.key_id {
                if set.by_kid.contains_key(kid) {
                    // Two keys under one kid: which one a token means is ambiguous; use neither.
                    let idx = set.by_kid[kid];
                    set.keys[idx].algorithms.clear();
                    continue;
                }
                set.by_kid.insert(kid.clone(), set.keys.len());
            }
            set.keys.push(key);
        }
        if set.keys.iter().all(|k| k.algorithms.is_empty()) {
            return Err(KeySetError::NoUsableKey);
        }
        Ok(set)
    }

    /// True once a JWKS has been loaded (an empty default set means "never loaded").
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Identifies the JWKS document this set was read from.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key a token names. A token without `kid` is only matched when the set holds exactly
    /// one key, so it can never make us try every key.
    pub(crate) fn find(&self, kid: Option<&str>) -> Option<&SigningKey> {
        match kid {
            Some(kid) => self.by_kid.get(kid).map(|&i| &self.keys[i]),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
    }
}

fn signing_key(jwk: &Jwk) -> Option<SigningKey> {
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            _ => return None,
        },
        // Symmetric and unknown key types are never verification keys here.
        _ => return None,
    };
    let algorithms = match jwk.common.key_algorithm {
        None => family,
        Some(declared) => {
            let alg = key_algorithm(declared)?;
            if !family.contains(&alg) {
                return None;
            }
            vec![alg]
        }
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(SigningKey { key, algorithms })
}

fn key_algorithm(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The current keys of one issuer, shared between the fetcher and every check.
pub struct KeyStore {
    current: ArcSwap<KeySet>,
    ready: AtomicBool,
    refresh_wanted: Notify,
    /// Bumped after every fetch attempt, successful or not, so waiting checks wake up.
    attempts: watch::Sender<u64>,
}

impl Default for KeyStore {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyStore {
    /// An empty store: not ready until a fetcher publishes keys.
    pub fn new() -> Self {
        Self {
            current: ArcSwap::from_pointee(KeySet::default()),
            ready: AtomicBool::new(false),
            refresh_wanted: Notify::new(),
            attempts: watch::Sender::new(0),
        }
    }

    /// A store holding a fixed key set (static `jwks_file`, tests).
    pub fn with_keys(keys: KeySet) -> Self {
        Self::with_shared(Arc::new(keys))
    }

    /// A store holding a fixed key set already shared (a validated `jwks_file`).
    pub fn with_shared(keys: Arc<KeySet>) -> Self {
        let store = Self::new();
        store.publish_shared(keys);
        store
    }

    pub fn current(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// The current set's fingerprint, read without taking a reference (the cached path).
    pub fn fingerprint(&self) -> [u8; 32] {
        self.current.load().fingerprint
    }

    /// Whether keys have ever been loaded (readiness).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Replaces the key set and wakes checks waiting for a refresh.
    pub fn publish(&self, keys: KeySet) {
        self.publish_shared(Arc::new(keys));
    }

    /// As [`KeyStore::publish`], for a key set already behind an `Arc`.
    pub fn publish_shared(&self, keys: Arc<KeySet>) {
        self.current.store(keys);
        self.ready.store(true, Ordering::Release);
        self.attempt_done();
    }

    /// Records a fetch attempt that produced nothing new, so waiters stop waiting.
    pub fn attempt_done(&self) {
        self.attempts.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Asks the fetcher for fresh keys (unknown `kid`) and waits at most `wait` for the next
    /// attempt to finish. Returns whatever keys are current then.
    pub async fn refresh(&self, wait: Duration) -> Arc<KeySet> {
        let mut rx = self.attempts.subscribe();
        self.refresh_wanted.notify_one();
        let _ = tokio::time::timeout(wait, rx.changed()).await;
        self.current()
    }

    /// Resolves when a check has asked for a refresh (the fetcher's side of `refresh`).
    pub async fn refresh_requested(&self) {
        self.refresh_wanted.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ec_jwk(kid: &str, alg: Option<&str>) -> serde_json::Value {
        let key = rcgen::KeyPair::generate().unwrap();
        let raw = key.public_key_raw();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut v = serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": b64.encode(&raw[1..33]), "y": b64.encode(&raw[33..65]),
        });
        if let Some(alg) = alg {
            v["alg"] = alg.into();
        }
        v
    }

    fn jwks(keys: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()
    }

    #[test]
    fn ec_key_without_alg_verifies_only_es256() {
        let set = KeySet::from_jwks_json(&jwks(vec![ec_jwk("a", None)])).unwrap();
        assert_eq!(
            set.find(Some("a")).unwrap().algorithms,
            vec![Algorithm::ES256]
        );
    }

    #[test]
    fn symmetric_and_encryption_keys_are_skipped() {
        let oct = serde_json::json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0", "alg": "HS256"});
        let mut enc = ec_jwk("e", None);
        enc["use"] = "enc".into();
        let set = KeySet::from_jwks_json(&jwks(vec![oct, enc, ec_jwk("s", None)])).unwrap();
        assert!(set.find(Some("h")).is_none());
        assert!(set.find(Some("e")).is_none());
        assert!(set.find(Some("s")).is_some());
    }

    #[test]
    fn a_jwks_with_only_hmac_keys_is_refused() {
        let oct = serde_json::json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"});
        assert!(matches!(
            KeySet::from_jwks_json(&jwks(vec![oct])),
            Err(KeySetError::NoUsableKey)
        ));
    }

    #[test]
    fn declared_alg_that_does_not_fit_the_key_type_drops_the_key() {
        let set =
            KeySet::from_jwks_json(&jwks(vec![ec_jwk("x", Some("RS256")), ec_jwk("y", None)]))
                .unwrap();
        assert!(set.find(Some("x")).is_none());
    }

    #[test]
    fn duplicate_kids_make_the_kid_unusable() {
        let set = KeySet::from_jwks_json(&jwks(vec![
            ec_jwk("d", None),
            ec_jwk("d", None),
            ec_jwk("ok", None),
        ]))
        .unwrap();
        assert!(set.find(Some("d")).unwrap().algorithms.is_empty());
    }

    #[test]
    fn token_without_kid_matches_only_a_single_key_set() {
        let one = KeySet::from_jwks_json(&jwks(vec![ec_jwk("a", None)])).unwrap();
        assert!(one.find(None).is_some());
        let two =
            KeySet::from_jwks_json(&jwks(vec![ec_jwk("a", None), ec_jwk("b", None)])).unwrap();
        assert!(two.find(None).is_none());
    }

    #[test]
    fn too_many_keys_are_refused() {
        let keys = (0..=MAX_KEYS)
            .map(|i| serde_json::json!({"kty": "oct", "kid": i.to_string(), "k": "AA"}))
            .collect();
        assert!(matches!(
            KeySet::from_jwks_json(&jwks(keys)),
            Err(KeySetError::TooManyKeys(_))
        ));
    }

    #[test]
    fn garbage_jwks_is_an_error() {
        assert!(KeySet::from_jwks_json(b"{\"keys\": 3}").is_err());
        assert!(KeySet::from_jwks_json(b"<html>").is_err());
    }

    #[tokio::test]
    async fn refresh_waits_for_the_next_attempt_and_no_longer() {
        let store = Arc::new(KeyStore::new());
        assert!(!store.is_ready());
        // Nobody fetches: the wait is bounded.
        let keys = store.refresh(Duration::from_millis(20)).await;
        assert!(!keys.is_loaded());
        // A fetcher that answers the request.
        let fetcher = {
            let store = store.clone();
            tokio::spawn(async move {
                store.refresh_requested().await;
                store.publish(KeySet::from_jwks_json(&jwks(vec![ec_jwk("new", None)])).unwrap());
            })
        };
        let keys = store.refresh(Duration::from_secs(5)).await;
        assert!(keys.find(Some("new")).is_some());
        assert!(store.is_ready());
        fetcher.await.unwrap();
    }
}
