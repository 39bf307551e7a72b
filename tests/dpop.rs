//! DPoP against a real Redis (Debian's `redis-server`, installed by scripts/e2e-install.sh): the
//! replay store shared by two replicas, a Redis that goes away (an error, never a first use; the
//! store recovers when it is back), and two real certbound servers answering Check calls with
//! DPoP proofs over one Redis.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use certbound_adapters::replay::RedisStore;
use certbound_core::clock::now_unix;
use certbound_core::dpop::{access_token_hash, ReplayError, ReplayStore};
use certbound_core::fixtures::{jwks, SigningKey};
use serde_json::json;
use support::{Certbound, Req, TestIdp};

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

/// A replay store on the Redis at `url`, as `[dpop_replay] store = "redis"` builds it.
fn redis_store(url: &str) -> ReplayStore {
    ReplayStore::Shared(std::sync::Arc::new(RedisStore::new(url, TIMEOUT).unwrap()))
}

#[tokio::test]
async fn a_proof_seen_by_one_replica_is_a_replay_at_another() {
    let redis = Redis::start();
    let a = redis_store(&redis.url());
    let b = redis_store(&redis.url());
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
    let store = redis_store(&redis.url());
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
    let store = redis_store(&format!("redis://127.0.0.1:{port}/0"));
    assert!(matches!(
        store.first_use("k", "j", 60).await,
        Err(ReplayError::Unavailable(_))
    ));
}

const AUD: &str = "https://api.test";

fn dpop_config(idp: &TestIdp, redis: &Redis) -> String {
    format!(
        r#"
issuer = "{iss}"
idp_ca_certificates = ["{ca}"]
audience = ["{AUD}"]
auth_methods = ["bearer"]
proof_of_possession_mtls = "optional"
proof_of_possession_dpop = "strict"
upstream_headers_claims = ["sub"]
upstream_headers_names  = ["x-consumer-sub"]
[dpop_replay]
store = "redis"
redis_url = "{url}"
timeout = 500
"#,
        iss = idp.issuer,
        ca = idp.ca_path.display(),
        url = redis.url()
    )
}

/// A request as Envoy forwards it: `GET https://api.test/accounts?x=1` with the token under the
/// DPoP scheme and `proof` in the DPoP header.
fn dpop_request(token: &str, proof: &str) -> Req {
    Req::new()
        .header(":method", "GET")
        .header(":path", "/accounts?x=1")
        .header("authorization", &format!("DPoP {token}"))
        .header("dpop", proof)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_sharing_redis_accept_a_proof_once_and_deny_when_redis_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix();
    let issuer_key = SigningKey::es256("k").unwrap();
    let idp = TestIdp::start(dir.path(), jwks(&[&issuer_key])).await;
    let mut redis = Redis::start();
    let a = Certbound::start(&dpop_config(&idp, &redis), dir.path()).await;
    let b = Certbound::start(&dpop_config(&idp, &redis), dir.path()).await;
    a.wait_ready().await;
    b.wait_ready().await;

    let client = SigningKey::es256("client").unwrap();
    // RFC 7638 over the client's public key: what the IdP puts in cnf.jkt.
    let jkt = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(client.jwk.clone())
        .unwrap()
        .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
        .unwrap();
    let token = issuer_key
        .sign(
            "at+jwt",
            &json!({"iss": idp.issuer, "aud": AUD, "sub": "spa", "exp": now + 600,
                    "cnf": {"jkt": jkt}}),
        )
        .unwrap();
    let proof = |jti: &str| {
        client
            .dpop_proof(
                &json!({"jti": jti, "htm": "GET", "htu": "https://api.test/accounts",
                                "iat": now, "ath": access_token_hash(&token)}),
            )
            .unwrap()
    };

    let first = a.check(&dpop_request(&token, &proof("one"))).await;
    assert!(first.allowed(), "{first:?}");
    assert_eq!(
        first.upstream.get("authorization"),
        Some(&format!("Bearer {token}"))
    );
    assert_eq!(
        first.upstream.get("x-consumer-sub").map(String::as_str),
        Some("spa")
    );
    assert!(
        first.upstream_removed.contains(&"dpop".to_string()),
        "{first:?}"
    );
    assert_eq!(a.decisions("allow", "dpop_bound").await, 1);

    let replay = b.check(&dpop_request(&token, &proof("one"))).await;
    assert_eq!(
        (replay.http_status, replay.reason.as_str()),
        (401, "dpop_replayed")
    );
    let www = replay.www_authenticate.unwrap();
    assert!(www.starts_with("DPoP algs=\""), "{www}");
    assert!(www.contains("error=\"invalid_dpop_proof\""), "{www}");

    let downgrade = a
        .check(
            &Req::new()
                .header(":method", "GET")
                .header(":path", "/accounts")
                .bearer(&token),
        )
        .await;
    assert_eq!(downgrade.reason, "dpop_bearer_downgrade");

    redis.stop();
    let gone = a.check(&dpop_request(&token, &proof("two"))).await;
    assert_eq!(
        (gone.http_status, gone.reason.as_str()),
        (503, "dpop_replay_store_unavailable")
    );
    assert!(!gone.allowed());
    assert_eq!(
        a.decisions("deny", "dpop_replay_store_unavailable").await,
        1
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
