//! RFC 7662 token introspection for opaque access tokens: what an answer means, how long it
//! counts, and a cache keyed by the token's SHA-256. The call itself goes through the
//! `Introspect` trait (the adapters implement it over HTTP, with discovery and client
//! authentication).
//!
//! Guarantees: a response counts only when `active` is exactly `true`; results are cached no
//! longer than the token's `exp` (positive) or a short time (negative); concurrent checks of the
//! same token share one call (moka's `try_get_with`); failures to reach the IdP are never cached
//! and never an allow.
//!
//! Against a flood of made-up tokens: at most `limits.max_introspection_calls` calls are
//! outstanding at once, shared by every policy (the excess is answered `Saturated` at once, not
//! queued); inactive answers live in their own, smaller cache, so they can never evict an
//! active one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::Expiry;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// What one introspection call yields: the members of the IdP's JSON answer.
pub type IntrospectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Map<String, Value>, IntrospectError>> + Send + 'a>>;

/// One call to the IdP's introspection endpoint. Errors reaching the IdP or reading its answer
/// are `Unavailable`; judging the answer (`active`, `exp`) is the core's.
pub trait Introspect: Send + Sync {
    fn introspect<'a>(&'a self, token: &'a str) -> IntrospectFuture<'a>;
}

crate::names::spelled! {
    /// How the resource server authenticates to the introspection endpoint
    /// (Kong's `introspection_endpoint_auth_method`; RFC 7591's `token_endpoint_auth_method`
    /// spellings).
    pub enum ClientAuth {
        Basic = "client_secret_basic",
        Post = "client_secret_post",
    }
}

/// What configuration decides about introspection for one policy.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    pub issuer: String,
    /// `introspection_endpoint`; `None`: from the discovery document.
    pub endpoint: Option<String>,
    /// `introspection_endpoint_auth_method`; `None`: what the IdP advertises (basic if both).
    pub auth: Option<ClientAuth>,
    pub client_id: String,
    pub client_secret: String,
    /// `cache_introspection` and `cache_ttl`.
    pub cache: bool,
    pub cache_ttl: Duration,
    /// How long an inactive answer is remembered.
    pub negative_ttl: Duration,
    /// Most active answers kept.
    pub max_entries: u64,
    /// Most inactive answers kept, in a cache of their own.
    pub max_negative_entries: u64,
}

/// Never prints the client secret.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("issuer", &self.issuer)
            .field("endpoint", &self.endpoint)
            .field("auth", &self.auth)
            .field("client_id", &self.client_id)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntrospectError {
    #[error("the IdP answered active != true")]
    Inactive,
    #[error("introspection failed: {0}")]
    Unavailable(String),
    /// `limits.max_introspection_calls` calls are already outstanding.
    #[error("too many introspection calls in flight")]
    Saturated,
}

/// An active introspection result as cached: the response members and how long they count.
#[derive(Debug, Clone)]
struct Entry {
    claims: Arc<Map<String, Value>>,
    ttl: Duration,
}

struct PerEntry;

impl Expiry<[u8; 32], Entry> for PerEntry {
    fn expire_after_create(&self, _: &[u8; 32], value: &Entry, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// One policy's introspection: the call, bounded and cached.
pub struct Introspector {
    settings: Settings,
    endpoint: Arc<dyn Introspect>,
    /// Active answers only: nothing an attacker can make up lands here.
    cache: Cache<[u8; 32], Entry>,
    /// Inactive answers, smaller and separate: a flood of made-up tokens evicts only its own.
    inactive: Cache<[u8; 32], ()>,
    /// Outstanding calls to the IdP, shared by every policy of one configuration.
    calls: Arc<Semaphore>,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("issuer", &self.settings.issuer)
            .field("endpoint", &self.settings.endpoint)
            .finish_non_exhaustive()
    }
}

impl Introspector {
    /// `endpoint` makes the calls; `calls` bounds those outstanding at once (shared between
    /// policies).
    pub fn new(settings: Settings, endpoint: Arc<dyn Introspect>, calls: Arc<Semaphore>) -> Self {
        let cache = Cache::builder()
            .max_capacity(settings.max_entries)
            .expire_after(PerEntry)
            .build();
        let inactive = Cache::builder()
            .max_capacity(settings.max_negative_entries)
            .time_to_live(settings.negative_ttl)
            .build();
        Self {
            settings,
            endpoint,
            cache,
            inactive,
            calls,
        }
    }

    /// Introspects `token` at `now` (seconds since the epoch): the response members of an
    /// active token.
    pub async fn introspect(
        &self,
        token: &str,
        now: u64,
    ) -> Result<Arc<Map<String, Value>>, IntrospectError> {
        if !self.settings.cache {
            return self.call(token, now).await.map(|a| a.claims);
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if self.inactive.contains_key(&key) {
            return Err(IntrospectError::Inactive);
        }
        // An inactive answer is an error here, so it is never stored with the active ones.
        match self.cache.try_get_with(key, self.call(token, now)).await {
            Ok(active) => Ok(active.claims),
            Err(e) => {
                if *e == IntrospectError::Inactive {
                    self.inactive.insert(key, ()).await;
                }
                Err((*e).clone())
            }
        }
    }

    /// One call to the IdP, if fewer than the bound are outstanding; never waits for a slot.
    async fn call(&self, token: &str, now: u64) -> Result<Entry, IntrospectError> {
        let _permit = self
            .calls
            .try_acquire()
            .map_err(|_| IntrospectError::Saturated)?;
        let response = self.endpoint.introspect(token).await?;
        if response.get("active") != Some(&Value::Bool(true)) {
            return Err(IntrospectError::Inactive);
        }
        // Never cache beyond the token's own expiry.
        let until_exp = response
            .get("exp")
            .and_then(Value::as_u64)
            .map(|exp| Duration::from_secs(exp.saturating_sub(now)));
        let ttl = until_exp.map_or(self.settings.cache_ttl, |d| d.min(self.settings.cache_ttl));
        Ok(Entry {
            claims: Arc::new(response),
            ttl,
        })
    }
}

/// Kong's routing: a JWT-shaped token (three base64url segments whose first decodes to a JSON
/// object with `alg`) goes to `bearer` when that method is on, unless `introspect_jwt_tokens`.
pub fn is_jwt_shaped(token: &str) -> bool {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let mut parts = token.split('.');
    let (Some(head), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    URL_SAFE_NO_PAD
        .decode(head)
        .ok()
        .and_then(|h| serde_json::from_slice::<Map<String, Value>>(&h).ok())
        .is_some_and(|h| h.contains_key("alg"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An IdP whose `active-*` tokens are active and anything else is not; counts its calls.
    #[derive(Default)]
    struct CountingIdp {
        calls: AtomicUsize,
    }

    impl Introspect for CountingIdp {
        fn introspect<'a>(&'a self, token: &'a str) -> IntrospectFuture<'a> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let active = token.starts_with("active-");
            Box::pin(async move {
                let mut answer = Map::new();
                answer.insert("active".into(), Value::Bool(active));
                Ok(answer)
            })
        }
    }

    #[tokio::test]
    async fn a_flood_of_inactive_answers_never_evicts_an_active_one() {
        let idp = Arc::new(CountingIdp::default());
        let introspector = Introspector::new(
            Settings {
                issuer: "https://idp.test".into(),
                endpoint: Some("https://idp.test/introspect".into()),
                auth: Some(ClientAuth::Post),
                client_id: "rs".into(),
                client_secret: "secret".into(),
                cache: true,
                cache_ttl: Duration::from_secs(3600),
                negative_ttl: Duration::from_secs(3600),
                max_entries: 8,
                max_negative_entries: 4,
            },
            idp.clone(),
            Arc::new(Semaphore::new(4)),
        );
        assert!(introspector.introspect("active-alice", 0).await.is_ok());
        // Each made-up token asked often enough to look popular to the cache's admission.
        for i in 0..200 {
            for _ in 0..3 {
                let made_up = format!("made-up-{i}");
                assert_eq!(
                    introspector.introspect(&made_up, 0).await,
                    Err(IntrospectError::Inactive)
                );
            }
            introspector.cache.run_pending_tasks().await;
            introspector.inactive.run_pending_tasks().await;
        }
        let before = idp.calls.load(Ordering::SeqCst);
        assert!(introspector.introspect("active-alice", 0).await.is_ok());
        assert_eq!(
            idp.calls.load(Ordering::SeqCst),
            before,
            "the active answer was evicted"
        );
    }

    #[test]
    fn jwt_shape_needs_three_segments_and_a_json_header_with_alg() {
        assert!(is_jwt_shaped("eyJhbGciOiJSUzI1NiJ9.e30.c2ln"));
        assert!(!is_jwt_shaped("eyJhbGciOiJSUzI1NiJ9.e30"));
        assert!(!is_jwt_shaped("opaque-token-value"));
        assert!(!is_jwt_shaped("a.b.c"));
        assert!(!is_jwt_shaped("eyJ0eXAiOiJKV1QifQ.e30.c2ln"), "no alg");
    }

    #[test]
    fn client_auth_names_are_kongs() {
        let parse = |s: &str| s.parse::<ClientAuth>().ok();
        assert_eq!(parse("client_secret_basic"), Some(ClientAuth::Basic));
        assert_eq!(parse("client_secret_post"), Some(ClientAuth::Post));
        assert_eq!(parse("private_key_jwt"), None);
        assert_eq!(
            "private_key_jwt"
                .parse::<ClientAuth>()
                .unwrap_err()
                .to_string(),
            "`private_key_jwt` is not one of client_secret_basic, client_secret_post"
        );
    }
}
