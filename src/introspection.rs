//! RFC 7662 token introspection for opaque access tokens: the endpoint from configuration or
//! discovery, client authentication, a bounded call, and a cache keyed by the token's SHA-256.
//!
//! Guarantees: a response counts only when `active` is exactly `true`; results are cached no
//! longer than the token's `exp` (positive) or a short time (negative); concurrent checks of the
//! same token share one call (moka's `try_get_with`); failures to reach the IdP are never cached
//! and never an allow.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::Expiry;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

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
    pub fn from_config(s: &str) -> Option<Self> {
        match s {
            "client_secret_basic" => Some(Self::Basic),
            "client_secret_post" => Some(Self::Post),
            _ => None,
        }
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
    pub max_entries: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntrospectError {
    #[error("the IdP answered active != true")]
    Inactive,
    #[error("introspection failed: {0}")]
    Unavailable(String),
}

/// An introspection result as cached: the response members, or "inactive".
#[derive(Debug, Clone)]
enum Cached {
    Active {
        claims: Arc<Map<String, Value>>,
        ttl: Duration,
    },
    Inactive {
        ttl: Duration,
    },
}

struct PerEntry;

impl Expiry<[u8; 32], Cached> for PerEntry {
    fn expire_after_create(&self, _: &[u8; 32], value: &Cached, _: Instant) -> Option<Duration> {
        Some(match value {
            Cached::Active { ttl, .. } | Cached::Inactive { ttl } => *ttl,
        })
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
    cache: Cache<[u8; 32], Cached>,
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
    pub fn new(settings: Settings, client: reqwest::Client) -> Self {
        let cache = Cache::builder()
            .max_capacity(settings.max_entries)
            .expire_after(PerEntry)
            .build();
        Self {
            settings,
            client,
            endpoint: OnceCell::new(),
            cache,
        }
    }

    /// Introspects `token` at `now` (seconds since the epoch): the response members of an
    /// active token.
    pub async fn introspect(
        &self,
        token: &str,
        now: u64,
    ) -> Result<Arc<Map<String, Value>>, IntrospectError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = if self.settings.cache {
            self.cache
                .try_get_with(key, self.call(token, now))
                .await
                .map_err(|e| (*e).clone())?
        } else {
            self.call(token, now).await?
        };
        match cached {
            Cached::Active { claims, .. } => Ok(claims),
            Cached::Inactive { .. } => Err(IntrospectError::Inactive),
        }
    }

    async fn call(&self, token: &str, now: u64) -> Result<Cached, IntrospectError> {
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
            return Ok(Cached::Inactive {
                ttl: self.settings.negative_ttl,
            });
        }
        // Never cache beyond the token's own expiry.
        let until_exp = response
            .get("exp")
            .and_then(Value::as_u64)
            .map(|exp| Duration::from_secs(exp.saturating_sub(now)));
        let ttl = until_exp.map_or(self.settings.cache_ttl, |d| d.min(self.settings.cache_ttl));
        Ok(Cached::Active {
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
    use super::*;

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
        assert_eq!(
            ClientAuth::from_config("client_secret_basic"),
            Some(ClientAuth::Basic)
        );
        assert_eq!(
            ClientAuth::from_config("client_secret_post"),
            Some(ClientAuth::Post)
        );
        assert_eq!(ClientAuth::from_config("private_key_jwt"), None);
    }
}
