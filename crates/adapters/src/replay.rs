//! The DPoP `jti` replay store on Redis, shared by every replica: `SET key 1 NX EX ttl`, atomic
//! in Redis. Every call is bounded by a timeout; an unreachable or failing Redis is an error (the
//! pipeline denies).

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use certbound_core::dpop::{FirstUseFuture, ReplayBackend, ReplayError};

/// Whether `url` is a Redis URL the client accepts, without connecting (configuration checks).
pub fn is_redis_url(url: &str) -> bool {
    redis::Client::open(url).is_ok()
}

pub struct RedisStore {
    client: redis::Client,
    /// One multiplexed connection shared by every check; it reconnects by itself after a failure.
    /// Empty until a first connection succeeds.
    conn: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    timeout: Duration,
}

impl RedisStore {
    /// A store on Redis at `url` (`redis://` or `rediss://`); connects on first use, and every
    /// call (connecting included) is bounded by `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, ReplayError> {
        let client =
            redis::Client::open(url).map_err(|e| ReplayError::Unavailable(e.to_string()))?;
        Ok(Self {
            client,
            conn: tokio::sync::OnceCell::new(),
            timeout,
        })
    }

    async fn record(&self, key: &[u8; 32], ttl: u64) -> Result<bool, ReplayError> {
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

impl ReplayBackend for RedisStore {
    fn first_use<'a>(&'a self, key: &'a [u8; 32], ttl: u64) -> FirstUseFuture<'a> {
        Box::pin(self.record(key, ttl))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use certbound_core::dpop::ReplayStore;
    use std::sync::Arc;

    #[tokio::test]
    async fn unreachable_redis_is_an_error_not_a_first_use() {
        // Port 1 on loopback: nothing listens there.
        let s = ReplayStore::Shared(Arc::new(
            RedisStore::new("redis://127.0.0.1:1/", Duration::from_millis(300)).unwrap(),
        ));
        assert!(matches!(
            s.first_use("k", "j", 60).await,
            Err(ReplayError::Unavailable(_))
        ));
    }
}
