//! Fetching signing keys: OpenID discovery, the JWKS itself, background refresh and the
//! rate-limited refresh a check asks for when it meets an unknown `kid`.
//!
//! Guarantees: keys only ever come from the configured issuer's discovery document (whose
//! `issuer` must equal the configured one) or the configured `jwks_uri`; bodies are capped; a
//! failed fetch keeps the keys already loaded, so an IdP outage does not stop verification.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::watch;

use certbound_core::policy::KeySource;
use certbound_core::token::{KeySet, KeyStore};

use super::http::{error_chain, read_capped};

/// Largest discovery or JWKS body read.
pub const MAX_BODY_BYTES: usize = 512 * 1024;
/// Retry pace while no keys were ever loaded.
const INITIAL_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot build the HTTPS client: {0}")]
    Client(String),
    #[error("GET {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("discovery document at {url} says issuer `{found}`, expected `{expected}`")]
    IssuerMismatch {
        url: String,
        found: String,
        expected: String,
    },
    #[error("JWKS from {url}: {reason}")]
    Keys { url: String, reason: String },
}

/// One issuer's key store and how to fill it.
#[derive(Clone)]
pub struct KeyFetch {
    pub store: Arc<KeyStore>,
    pub source: KeySource,
    /// Kong's `rediscovery_lifetime`: the least time between two fetches.
    pub min_interval: Duration,
    /// Periodic refresh, so rotations are seen even without an unknown `kid`.
    pub refresh_interval: Duration,
}

/// Told the result of every fetch (the service counts them).
pub trait FetchObserver: Send + Sync {
    fn fetched(&self, ok: bool);
}

/// `url` may be fetched on behalf of `issuer`: an https issuer's documents never point to a
/// plain-http URL (a downgrade any on-path attacker could use to supply the keys).
pub fn no_downgrade(issuer: &str, url: &str) -> Result<(), String> {
    if is_https(issuer) && !is_https(url) {
        return Err(format!(
            "`{url}` is not an https URL, but the issuer `{issuer}` is"
        ));
    }
    Ok(())
}

fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// Fetches the current key set for `source` once.
pub async fn fetch(client: &reqwest::Client, source: &KeySource) -> Result<KeySet, JwksError> {
    let jwks_uri = match source {
        KeySource::Uri(uri) => uri.clone(),
        KeySource::File { path, .. } => {
            return Err(JwksError::Fetch {
                url: path.display().to_string(),
                reason: "static files are loaded at start, not fetched".into(),
            })
        }
        KeySource::Discovery { issuer } => {
            let url = discovery_url(issuer);
            let body = get(client, &url).await?;
            let doc: Discovery = serde_json::from_slice(&body).map_err(|e| JwksError::Fetch {
                url: url.clone(),
                reason: format!("not a discovery document: {e}"),
            })?;
            if doc.issuer != *issuer {
                return Err(JwksError::IssuerMismatch {
                    url,
                    found: doc.issuer,
                    expected: issuer.clone(),
                });
            }
            no_downgrade(issuer, &doc.jwks_uri).map_err(|reason| JwksError::Fetch {
                url: url.clone(),
                reason: format!("discovery's jwks_uri: {reason}"),
            })?;
            doc.jwks_uri
        }
    };
    let body = get(client, &jwks_uri).await?;
    KeySet::from_jwks_json(&body).map_err(|e| JwksError::Keys {
        url: jwks_uri,
        reason: e.to_string(),
    })
}

/// OpenID Connect Discovery §4: the document lives at the issuer plus
/// `/.well-known/openid-configuration`, with a trailing `/` of the issuer removed first so no
/// `//` is built. Only the URL is built that way: the document's `issuer`, and every token's
/// `iss`, must equal the configured issuer exactly.
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.strip_suffix('/').unwrap_or(issuer)
    )
}

async fn get(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, JwksError> {
    send_capped(
        client.get(url).header("accept", "application/json"),
        url,
        MAX_BODY_BYTES,
    )
    .await
}

/// Sends `req` and reads a successful response's body, refusing more than `max` bytes.
pub async fn send_capped(
    req: reqwest::RequestBuilder,
    url: &str,
    max: usize,
) -> Result<Vec<u8>, JwksError> {
    let err = |reason: String| JwksError::Fetch {
        url: url.to_string(),
        reason,
    };
    let resp = req.send().await.map_err(|e| err(error_chain(&e)))?;
    read_capped(resp, max).await.map_err(err)
}

/// Keeps one issuer's key store filled until `shutdown` turns true.
///
/// Fetches at once, retries with backoff until keys load, then refreshes every
/// `refresh_interval` and whenever a check asks (unknown `kid`), but never more often than
/// `min_interval` (Kong's `rediscovery_lifetime`).
pub async fn run(
    fetch_cfg: KeyFetch,
    client: reqwest::Client,
    observer: Arc<dyn FetchObserver>,
    mut shutdown: watch::Receiver<bool>,
) {
    let store = fetch_cfg.store.clone();
    let mut retry = INITIAL_RETRY;
    loop {
        match fetch(&client, &fetch_cfg.source).await {
            Ok(keys) => {
                observer.fetched(true);
                tracing::info!(keys = keys.len(), "signing keys loaded");
                store.publish(keys);
                retry = INITIAL_RETRY;
            }
            Err(e) => {
                observer.fetched(false);
                tracing::warn!(error = %e, ready = store.is_ready(), "signing key refresh failed; keeping current keys");
                store.attempt_done();
            }
        }
        let last_fetch = Instant::now();
        // Wait for the next due fetch: periodic, a retry, or a check's request (rate-limited).
        loop {
            let wait = if store.is_ready() {
                fetch_cfg.refresh_interval
            } else {
                retry
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {
                    if !store.is_ready() {
                        retry = (retry * 2).min(MAX_RETRY);
                    }
                    break;
                }
                _ = store.refresh_requested() => {
                    if last_fetch.elapsed() >= fetch_cfg.min_interval {
                        break;
                    }
                    // Too soon: tell the waiting check there is nothing new.
                    store.attempt_done();
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::discovery_url;

    #[test]
    fn the_discovery_url_of_an_issuer_ending_in_a_slash_has_no_double_slash() {
        assert_eq!(
            discovery_url("https://tenant.auth0.com/"),
            "https://tenant.auth0.com/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://idp.test/realms/a"),
            "https://idp.test/realms/a/.well-known/openid-configuration"
        );
    }
}
