//! The `jti` replay cache (RFC 9449 §11.1). A proof is accepted once: its key (the proof key's
//! thumbprint and its `jti`, hashed) is recorded for as long as the proof could still pass the
//! `iat` check, and a second sighting within that time is a replay.
//!
//! - `Memory`: per replica, bounded, least recently used entries evicted first. Replicas do not
//!   see each other's entries: a proof can be replayed once against each other replica within its
//!   lifetime.
//! - `Shared`: one store for every replica behind the `ReplayBackend` trait (the adapters
//!   implement it on Redis). An unreachable or failing store is an error, which the pipeline
//!   turns into a deny: a replay check that did not run never passes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::policy::EvictionPolicy;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("replay store unavailable: {0}")]
    Unavailable(String),
}

/// What recording one proof yields: `Ok(true)` the first time the key is seen.
pub type FirstUseFuture<'a> = Pin<Box<dyn Future<Output = Result<bool, ReplayError>> + Send + 'a>>;

/// A replay store shared by every replica. `first_use` must be atomic across replicas (record
/// the key for `ttl` seconds unless present) and bounded in time: a call that cannot complete
/// is an error.
pub trait ReplayBackend: Send + Sync {
    fn first_use<'a>(&'a self, key: &'a [u8; 32], ttl: u64) -> FirstUseFuture<'a>;
}

pub enum ReplayStore {
    Memory(Cache<[u8; 32], u64>),
    Shared(Arc<dyn ReplayBackend>),
}

impl std::fmt::Debug for ReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory(_) => f.write_str("ReplayStore::Memory"),
            Self::Shared(_) => f.write_str("ReplayStore::Shared"),
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

    /// Records the proof `(jkt, jti)` for `ttl` seconds. `Ok(true)` the first time it is seen,
    /// `Ok(false)` for a replay.
    pub async fn first_use(&self, jkt: &str, jti: &str, ttl: u64) -> Result<bool, ReplayError> {
        let key = entry_key(jkt, jti);
        let ttl = ttl.max(1);
        match self {
            Self::Memory(cache) => Ok(cache.entry(key).or_insert(ttl).await.is_fresh()),
            Self::Shared(backend) => backend.first_use(&key, ttl).await,
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
}
