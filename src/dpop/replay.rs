//! The `jti` replay cache (RFC 9449 §11.1). A proof is accepted once: its key (the proof key's
//! thumbprint and its `jti`, hashed) is recorded for as long as the proof could still pass the
//! `iat` check, and a second sighting within that time is a replay.
//!
//! - `Memory`: per replica, bounded, least recently used entries evicted first. Replicas do not
//!   see each other's entries: a proof can be replayed once against each other replica within its
//!   lifetime.
//! - `Redis`: one store for every replica (`SET key 1 NX EX ttl`, atomic in Redis). Every call is
//!   bounded by a timeout; an unreachable or failing Redis is an error, which the pipeline turns
//!   into a deny: a replay check that did not run never passes.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use moka::future::Cache;
use moka::policy::EvictionPolicy;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("replay store unavailable: {0}")]
    Unavailable(String),
}

pub enum ReplayStore {
    Memory(Cache<[u8; 32], u64>),
    Redis(RedisStore),
}

impl std::fmt::Debug for ReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory(_) => f.write_str("ReplayStore::Memory"),
            Self::Redis(_) => f.write_str("ReplayStore::Redis"),
        }
    }
}

/// Each entry lives for the seconds it was stored with.
struct PerEntryTtl;

impl moka::Expiry<[u8; 32], u64> for PerEntryTtl {
    fn expire_after_create(&self, _: &[u8; 32], ttl: &u64, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(*ttl))
    }
}

impl ReplayStore {
    /// An in-memory store holding at most `max_entries` proofs.
    pub fn memory(max_entries: u64) -> Self {
        Self::Memory(
            Cache::builder()
                .max_capacity(max_entries)
                // LRU, not moka's default TinyLFU admission: a new proof must always be recorded,
                // never refused admission for being seen once.
                .eviction_policy(EvictionPolicy::lru())
                .expire_after(PerEntryTtl)
                .build(),
        )
    }

    /// A store on Redis at `url` (`redis://` or `rediss://`); connects on first use.
    pub fn redis(url: &str, timeout: Duration) -> Result<Self, ReplayError> {
        let client =
            redis::Client::open(url).map_err(|e| ReplayError::Unavailable(e.to_string()))?;
        Ok(Self::Redis(RedisStore {
            client,
            conn: tokio::sync::OnceCell::new(),
            timeout,
        }))
    }

    /// Records the proof `(jkt, jti)` for `ttl` seconds. `Ok(true)` the first time it is seen,
    /// `Ok(false)` for a replay.
    pub async fn first_use(&self, jkt: &str, jti: &str, ttl: u64) -> Result<bool, ReplayError> {
        let key = entry_key(jkt, jti);
        let ttl = ttl.max(1);
        match self {
            Self::Memory(cache) => Ok(cache.entry(key).or_insert(ttl).await.is_fresh()),
            Self::Redis(r) => r.first_use(&key, ttl).await,
        }
    }
}

/// SHA-256 over both parts, length-prefixed so no two pairs share a key; `jti` is the client's
/// choice and only unique per key (RFC 9449 §4.2).
fn entry_key(jkt: &str, jti: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((jkt.len() as u64).to_be_bytes());
    h.update(jkt.as_bytes());
    h.update(jti.as_bytes());
    h.finalize().into()
}

pub struct RedisStore {
    client: redis::Client,
    /// One multiplexed connection shared by every check; it reconnects by itself after a failure.
    /// Empty until a first connection succeeds.
    conn: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    timeout: Duration,
}

impl RedisStore {
    async fn first_use(&self, key: &[u8; 32], ttl: u64) -> Result<bool, ReplayError> {
        let unavailable = |e: String| ReplayError::Unavailable(e);
        let work = async {
            let conn = self
                .conn
                .get_or_try_init(|| async {
                    let config = redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(self.timeout))
                        .set_response_timeout(Some(self.timeout))
                        .set_number_of_retries(1);
                    self.client.get_connection_manager_with_config(config).await
                })
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            let mut conn = conn.clone();
            let set: Option<String> = redis::cmd("SET")
                .arg(format!(
                    "certbound:dpop:jti:{}",
                    URL_SAFE_NO_PAD.encode(key)
                ))
                .arg(1)
                .arg("NX")
                .arg("EX")
                .arg(ttl)
                .query_async(&mut conn)
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            Ok(set.is_some())
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| unavailable("timed out".into()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_accepts_a_proof_once() {
        let s = ReplayStore::memory(100);
        assert_eq!(s.first_use("k", "j1", 60).await, Ok(true));
        assert_eq!(s.first_use("k", "j1", 60).await, Ok(false));
        assert_eq!(s.first_use("k", "j2", 60).await, Ok(true));
        // The same jti under another key is another proof.
        assert_eq!(s.first_use("k2", "j1", 60).await, Ok(true));
    }

    #[test]
    fn entry_keys_do_not_collide_across_the_split() {
        assert_ne!(entry_key("ab", "c"), entry_key("a", "bc"));
    }

    #[tokio::test]
    async fn unreachable_redis_is_an_error_not_a_first_use() {
        // Port 1 on loopback: nothing listens there.
        let s = ReplayStore::redis("redis://127.0.0.1:1/", Duration::from_millis(300)).unwrap();
        assert!(matches!(
            s.first_use("k", "j", 60).await,
            Err(ReplayError::Unavailable(_))
        ));
    }
}
