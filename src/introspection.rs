//! RFC 7662 token introspection for opaque access tokens: the endpoint from configuration or
//! discovery, client authentication, a bounded call, and a cache keyed by the token's SHA-256.
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

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::Expiry;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{OnceCell, Semaphore};

use crate::names::UnknownName;

/// Largest introspection response read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// How the resource server authenticates to the introspection endpoint
/// (Kong's `introspection_endpoint_auth_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Basic,
    Post,
}

impl ClientAuth {
    pub const ALL: [ClientAuth; 2] = [Self::Basic, Self::Post];
    /// The spellings of `ALL`, in its order (RFC 7591's `token_endpoint_auth_method` values).
    pub const NAMES: [&'static str; 2] = [Self::Basic.as_str(), Self::Post.as_str()];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Basic => "client_secret_basic",
            Self::Post => "client_secret_post",
        }
    }
}

impl std::str::FromStr for ClientAuth {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownName::new(s, &Self::NAMES))
    }
}

/// What configuration decides about introspection for one policy.
#[derive(Debug, Clone)]
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
struct Active {
    claims: Arc<Map<String, Value>>,
    ttl: Duration,
}

struct PerEntry;

impl Expiry<[u8; 32], Active> for PerEntry {
    fn expire_after_create(&self, _: &[u8; 32], value: &Active, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

struct Endpoint {
    url: String,
    auth: ClientAuth,
}

/// One policy's introspection client.
pub struct Introspector {
    settings: Settings,
    client: reqwest::Client,
    endpoint: OnceCell<Endpoint>,
    /// Active answers only: nothing an attacker can make up lands here.
    cache: Cache<[u8; 32], Active>,
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

#[derive(serde::Deserialize)]
struct Discovery {
    issuer: String,
    introspection_endpoint: Option<String>,
    #[serde(default)]
    introspection_endpoint_auth_methods_supported: Vec<String>,
}

impl Introspector {
    /// `calls` bounds the introspection calls outstanding at once (shared between policies).
    pub fn new(settings: Settings, client: reqwest::Client, calls: Arc<Semaphore>) -> Self {
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
            client,
            endpoint: OnceCell::new(),
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
    async fn call(&self, token: &str, now: u64) -> Result<Active, IntrospectError> {
        let _permit = self
            .calls
            .try_acquire()
            .map_err(|_| IntrospectError::Saturated)?;
        let endpoint = self
            .endpoint
            .get_or_try_init(|| self.resolve_endpoint())
            .await?;
        let mut form = vec![("token", token), ("token_type_hint", "access_token")];
        let mut req = self
            .client
            .post(&endpoint.url)
            .header("accept", "application/json");
        match endpoint.auth {
            // RFC 6749 §2.3.1: the credentials are form-urlencoded before base64.
            ClientAuth::Basic => {
                let enc = |s: &str| {
                    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                        .to_string()
                };
                req = req.basic_auth(
                    enc(&self.settings.client_id),
                    Some(enc(&self.settings.client_secret)),
                );
            }
            ClientAuth::Post => {
                form.push(("client_id", &self.settings.client_id));
                form.push(("client_secret", &self.settings.client_secret));
            }
        }
        let body = crate::jwks::send_capped(req.form(&form), &endpoint.url, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| IntrospectError::Unavailable(e.to_string()))?;
        let response: Map<String, Value> = serde_json::from_slice(&body)
            .map_err(|e| IntrospectError::Unavailable(format!("not a JSON object: {e}")))?;
        if response.get("active") != Some(&Value::Bool(true)) {
            return Err(IntrospectError::Inactive);
        }
        // Never cache beyond the token's own expiry.
        let until_exp = response
            .get("exp")
            .and_then(Value::as_u64)
            .map(|exp| Duration::from_secs(exp.saturating_sub(now)));
        let ttl = until_exp.map_or(self.settings.cache_ttl, |d| d.min(self.settings.cache_ttl));
        Ok(Active {
            claims: Arc::new(response),
            ttl,
        })
    }

    async fn resolve_endpoint(&self) -> Result<Endpoint, IntrospectError> {
        if let (Some(url), Some(auth)) = (&self.settings.endpoint, self.settings.auth) {
            return Ok(Endpoint {
                url: url.clone(),
                auth,
            });
        }
        let url = crate::jwks::discovery_url(&self.settings.issuer);
        let body = crate::jwks::send_capped(self.client.get(&url), &url, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| IntrospectError::Unavailable(e.to_string()))?;
        let doc: Discovery = serde_json::from_slice(&body)
            .map_err(|e| IntrospectError::Unavailable(format!("discovery: {e}")))?;
        if doc.issuer != self.settings.issuer {
            return Err(IntrospectError::Unavailable(format!(
                "discovery says issuer `{}`, expected `{}`",
                doc.issuer, self.settings.issuer
            )));
        }
        let url = match (&self.settings.endpoint, doc.introspection_endpoint) {
            (Some(configured), _) => configured.clone(),
            (None, Some(found)) => found,
            (None, None) => {
                return Err(IntrospectError::Unavailable(
                    "the IdP advertises no introspection_endpoint".into(),
                ))
            }
        };
        crate::jwks::no_downgrade(&self.settings.issuer, &url).map_err(|reason| {
            IntrospectError::Unavailable(format!("discovery's introspection_endpoint: {reason}"))
        })?;
        let advertised = |m: &str| {
            doc.introspection_endpoint_auth_methods_supported
                .iter()
                .any(|a| a == m)
        };
        let auth = self.settings.auth.unwrap_or(
            if !advertised("client_secret_basic") && advertised("client_secret_post") {
                ClientAuth::Post
            } else {
                ClientAuth::Basic
            },
        );
        Ok(Endpoint { url, auth })
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

    /// A plain-HTTP introspection endpoint: `active-*` tokens are active, anything else is not.
    /// Returns its URL and the number of calls it answered.
    async fn endpoint() -> (String, Arc<AtomicUsize>) {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/introspect", listener.local_addr().unwrap());
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let calls = counted.clone();
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let calls = calls.clone();
                        async move {
                            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let body = req.into_body().collect().await?.to_bytes();
                            let active = String::from_utf8_lossy(&body).contains("token=active-");
                            let answer = serde_json::json!({"active": active}).to_string();
                            Ok::<_, hyper::Error>(hyper::Response::new(http_body_util::Full::new(
                                hyper::body::Bytes::from(answer),
                            )))
                        }
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc),
                );
            }
        });
        (url, calls)
    }

    #[tokio::test]
    async fn a_flood_of_inactive_answers_never_evicts_an_active_one() {
        let (url, calls) = endpoint().await;
        let introspector = Introspector::new(
            Settings {
                issuer: "https://idp.test".into(),
                endpoint: Some(url),
                auth: Some(ClientAuth::Post),
                client_id: "rs".into(),
                client_secret: "secret".into(),
                cache: true,
                cache_ttl: Duration::from_secs(3600),
                negative_ttl: Duration::from_secs(3600),
                max_entries: 8,
                max_negative_entries: 4,
            },
            reqwest::Client::new(),
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
        let before = calls.load(Ordering::SeqCst);
        assert!(introspector.introspect("active-alice", 0).await.is_ok());
        assert_eq!(
            calls.load(Ordering::SeqCst),
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
