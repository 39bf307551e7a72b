//! The DPoP replay store on a real Redis (Debian's `redis-server`, installed by
//! scripts/e2e-install.sh): two replicas share it, and a Redis that goes away is an error (which
//! the pipeline denies), never a first use; the store recovers when Redis is back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use certbound::dpop::{ReplayError, ReplayStore};

const TIMEOUT: Duration = Duration::from_millis(500);

/// A redis-server on a free loopback port, ended by PID when dropped.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start_on(port: u16) -> Self {
        let bin = ["/usr/bin/redis-server", "/usr/sbin/redis-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("redis-server not installed: run `bash scripts/e2e-install.sh`");
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(bin)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn a_proof_seen_by_one_replica_is_a_replay_at_another() {
    let redis = Redis::start();
    let a = ReplayStore::redis(&redis.url(), TIMEOUT).unwrap();
    let b = ReplayStore::redis(&redis.url(), TIMEOUT).unwrap();
    assert_eq!(a.first_use("jkt-1", "jti-1", 60).await, Ok(true));
    assert_eq!(b.first_use("jkt-1", "jti-1", 60).await, Ok(false));
    assert_eq!(a.first_use("jkt-1", "jti-1", 60).await, Ok(false));
    assert_eq!(b.first_use("jkt-1", "jti-2", 60).await, Ok(true));
    assert_eq!(a.first_use("jkt-2", "jti-1", 60).await, Ok(true));
}

#[tokio::test]
async fn redis_going_away_is_an_error_and_the_store_recovers_when_it_is_back() {
    let mut redis = Redis::start();
    let port = redis.port;
    let store = ReplayStore::redis(&redis.url(), TIMEOUT).unwrap();
    assert_eq!(store.first_use("k", "before", 60).await, Ok(true));

    redis.stop();
    for jti in ["down-1", "down-2"] {
        assert!(
            matches!(
                store.first_use("k", jti, 60).await,
                Err(ReplayError::Unavailable(_))
            ),
            "a store that cannot be asked must not report a first use"
        );
    }

    let _back = Redis::start_on(port);
    // The connection is re-established in the background: bounded retries, each an error until then.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.first_use("k", "after", 60).await {
            Ok(first) => {
                assert!(first);
                break;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("store did not recover: {e}"),
        }
    }
    assert_eq!(store.first_use("k", "after", 60).await, Ok(false));
}

#[tokio::test]
async fn a_redis_that_never_answered_denies_from_the_first_check() {
    // A port nothing listens on: the listener that found it is already closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = ReplayStore::redis(&format!("redis://127.0.0.1:{port}/0"), TIMEOUT).unwrap();
    assert!(matches!(
        store.first_use("k", "j", 60).await,
        Err(ReplayError::Unavailable(_))
    ));
}
