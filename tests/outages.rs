//! IdP outages and cancelled calls, against a real certbound server and the local HTTPS IdP of
//! `tests/support`, which can refuse every connection or hang on every request.
//!
//! The only timing assertions here are upper bounds on waits certbound itself bounds (a check
//! waits at most 500 ms for a JWKS refresh). The bound asserted is generous (`BOUND`) so a
//! loaded CI machine does not flake: it proves the wait is bounded, it is not a benchmark.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use certbound_core::clock::now_unix;
use certbound_core::fixtures::{bound_claims, jwks, SigningKey};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use support::{Answer, Certbound, IdpMode, Pki, Req, TestIdp};
use tonic_health::pb::health_check_response::ServingStatus;

const AUD: &str = "https://api.test";
/// Upper bound for a check that waits for a JWKS refresh (certbound waits at most 500 ms).
const BOUND: Duration = Duration::from_secs(3);

/// Header mode; every unknown `kid` may trigger a fetch (`rediscovery_lifetime = 1`, the least allowed: the worst
/// case for pile-ups); an IdP call may take 10 s, longer than any test here, so a hung fetch
/// stays in flight for the whole test.
fn config(idp: &TestIdp) -> String {
    format!(
        r#"
issuer = "{iss}"
idp_ca_certificates = ["{ca}"]
audience = ["{AUD}"]
rediscovery_lifetime = 1
timeout = 10000
trusted_ips = ["127.0.0.1"]
[proof_of_possession_mtls_from_header]
certificate_header_name = "x-client-cert"
certificate_header_format = "url_encoded"
ca_certificates = ["client-ca.pem"]
"#,
        iss = idp.issuer,
        ca = idp.ca_path.display()
    )
}

struct Setup {
    dir: tempfile::TempDir,
    pki: Pki,
    idp: TestIdp,
    known: SigningKey,
    /// Not in the IdP's JWKS (yet).
    unknown: SigningKey,
    now: u64,
}

impl Setup {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let now = now_unix();
        let pki = Pki::new(now);
        pki.write_root(dir.path());
        let known = SigningKey::es256("known").unwrap();
        let unknown = SigningKey::es256("rotated-in").unwrap();
        let idp = TestIdp::start(dir.path(), jwks(&[&known])).await;
        Self {
            dir,
            pki,
            idp,
            known,
            unknown,
            now,
        }
    }

    async fn certbound(&self) -> Certbound {
        Certbound::start(&config(&self.idp), self.dir.path()).await
    }

    /// alice's token signed with `key`, with alice's certificate chain.
    fn req(&self, key: &SigningKey) -> Req {
        let claims = bound_claims(
            &self.idp.issuer,
            AUD,
            "alice-app",
            &self.pki.alice,
            self.now,
        );
        Req::new()
            .bearer(&key.sign("at+jwt", &claims).unwrap())
            .cert(&self.pki.chain_header(&self.pki.alice))
    }
}

/// Ready, and `rediscovery_lifetime` (1 s) past the start-up fetch, so the next unknown `kid`
/// may ask for a refresh.
async fn ready_and_past_rediscovery_lifetime(cb: &Certbound) {
    cb.wait_ready().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

/// A check and how long it took.
async fn timed(cb: &Certbound, req: &Req) -> (Answer, Duration) {
    let started = Instant::now();
    let answer = cb.check(req).await;
    (answer, started.elapsed())
}

#[track_caller]
fn assert_denied(a: &Answer, reason: &str, status: u16) {
    assert!(!a.allowed(), "expected deny {reason}, got {a:?}");
    assert_eq!(a.reason, reason, "{a:?}");
    assert_eq!(a.http_status, status, "{a:?}");
}

/// Polls (bounded) until `f` holds.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_unreachable_at_start_means_not_ready_and_keys_unavailable_until_it_answers() {
    let s = Setup::new().await;
    s.idp.set_mode(IdpMode::Refuse);
    let cb = s.certbound().await;

    assert_eq!(cb.readyz().await, 503);
    eventually("gRPC health knows the ext_authz service", || async {
        cb.grpc_health().await.is_some()
    })
    .await;
    assert_eq!(cb.grpc_health().await, Some(ServingStatus::NotServing));
    let (a, took) = timed(&cb, &s.req(&s.known)).await;
    // A distinct reason and status: not the client's fault, and not "bad token".
    assert_denied(&a, "keys_unavailable", 503);
    assert!(a.www_authenticate.is_none(), "{a:?}");
    assert!(took < BOUND, "a check without keys took {took:?}");
    assert_eq!(cb.decisions("deny", "keys_unavailable").await, 1);

    // The IdP comes back: keys load, the server turns ready and allows.
    s.idp.set_mode(IdpMode::Up);
    eventually("a check is allowed once the IdP answers", || async {
        cb.check(&s.req(&s.known)).await.allowed()
    })
    .await;
    assert_eq!(cb.readyz().await, 200);
    eventually("gRPC health says SERVING", || async {
        cb.grpc_health().await == Some(ServingStatus::Serving)
    })
    .await;
    cb.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_down_after_keys_loaded_keeps_known_keys_and_denies_unknown_kid() {
    let s = Setup::new().await;
    let cb = s.certbound().await;
    ready_and_past_rediscovery_lifetime(&cb).await;
    assert!(cb.check(&s.req(&s.known)).await.allowed());

    s.idp.set_mode(IdpMode::Refuse);
    for _ in 0..5 {
        let (a, took) = timed(&cb, &s.req(&s.known)).await;
        assert!(a.allowed(), "known kid during the outage: {a:?}");
        assert!(took < BOUND, "{took:?}");
    }
    let errors_before = refresh_errors(&cb).await;
    let (a, took) = timed(&cb, &s.req(&s.unknown)).await;
    assert_denied(&a, "token_unknown_key", 401);
    assert!(took < BOUND, "unknown kid during the outage took {took:?}");
    assert!(
        refresh_errors(&cb).await > errors_before,
        "the unknown kid did trigger a (failed) refresh"
    );
    assert_eq!(cb.readyz().await, 200, "loaded keys keep the server ready");
    assert!(cb.check(&s.req(&s.known)).await.allowed());

    // The IdP returns with the rotated key: the unknown kid is fetched and allowed.
    s.idp.set_jwks(jwks(&[&s.known, &s.unknown]));
    s.idp.set_mode(IdpMode::Up);
    eventually("the rotated key is picked up", || async {
        cb.check(&s.req(&s.unknown)).await.allowed()
    })
    .await;
    cb.stop().await.unwrap();
}

async fn refresh_errors(cb: &Certbound) -> u64 {
    let (_, text) = cb.admin_get("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix("certbound_jwks_refresh_total{result=\"error\"} "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_idp_bounds_unknown_kid_checks_and_keeps_one_fetch_in_flight() {
    let s = Setup::new().await;
    let cb = s.certbound().await;
    ready_and_past_rediscovery_lifetime(&cb).await;
    s.idp.set_mode(IdpMode::Hang);
    s.idp.reset_max_in_flight();
    let requests_before = s.idp.key_requests();

    // Many concurrent checks naming a kid certbound has never seen, while the IdP hangs.
    let started = Instant::now();
    let checks: Vec<_> = (0..32)
        .map(|_| {
            let (grpc, req) = (cb.grpc, s.req(&s.unknown));
            tokio::spawn(async move {
                let started = Instant::now();
                let answer = support::check_at(grpc, &req).await;
                (answer, started.elapsed())
            })
        })
        .collect();
    let mut results = Vec::new();
    for c in checks {
        results.push(c.await.unwrap());
    }
    let all_took = started.elapsed();
    for (a, took) in &results {
        assert_denied(a, "token_unknown_key", 401);
        assert!(*took < BOUND, "an unknown-kid check took {took:?}");
    }
    assert!(all_took < BOUND, "32 concurrent checks took {all_took:?}");
    // Known keys do not wait for the IdP at all.
    let (a, took) = timed(&cb, &s.req(&s.known)).await;
    assert!(a.allowed(), "{a:?}");
    assert!(took < BOUND, "{took:?}");

    assert_eq!(
        s.idp.max_key_requests_in_flight(),
        1,
        "at most one JWKS fetch in flight"
    );
    assert_eq!(
        s.idp.key_requests() - requests_before,
        1,
        "no pile-up: the other checks did not start fetches of their own"
    );
    assert_eq!(
        s.idp.key_requests_in_flight(),
        1,
        "the one fetch still hangs"
    );

    s.idp.set_mode(IdpMode::Up);
    cb.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_cancelled_by_the_client_leave_the_server_serving() {
    let s = Setup::new().await;
    let cb = s.certbound().await;
    ready_and_past_rediscovery_lifetime(&cb).await;
    s.idp.set_mode(IdpMode::Hang);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cb.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let unknown = s.req(&s.unknown).to_proto();

    for _ in 0..8 {
        // As Envoy does when its ext_authz timeout fires: the stream is reset mid-check
        // (the future is dropped while certbound waits for the hung IdP).
        let mut client = AuthorizationClient::new(channel.clone());
        let dropped =
            tokio::time::timeout(Duration::from_millis(50), client.check(unknown.clone())).await;
        assert!(dropped.is_err(), "the call was cancelled before an answer");

        // With a grpc-timeout header, as Envoy sends from its ext_authz `timeout`.
        let mut req = tonic::Request::new(unknown.clone());
        req.set_timeout(Duration::from_millis(50));
        let started = Instant::now();
        let result = client.check(req).await;
        assert!(started.elapsed() < BOUND);
        if let Ok(resp) = result {
            // The deadline raced the 500 ms wait and lost: then it must be a clean deny.
            assert_ne!(resp.into_inner().status.unwrap_or_default().code, 0);
        }
    }

    // Still serving, on the same connection and on new ones.
    let mut client = AuthorizationClient::new(channel);
    let resp = client
        .check(s.req(&s.known).to_proto())
        .await
        .expect("the connection survived the cancelled calls")
        .into_inner();
    assert_eq!(resp.status.unwrap_or_default().code, 0);
    let (a, took) = timed(&cb, &s.req(&s.unknown)).await;
    assert_denied(&a, "token_unknown_key", 401);
    assert!(took < BOUND, "{took:?}");
    assert_eq!(cb.admin_get("/healthz").await.0, 200);
    assert_eq!(s.idp.max_key_requests_in_flight(), 1);

    s.idp.set_mode(IdpMode::Up);
    s.idp.set_jwks(jwks(&[&s.known, &s.unknown]));
    eventually(
        "the unknown kid is allowed once the IdP answers",
        || async { cb.check(&s.req(&s.unknown)).await.allowed() },
    )
    .await;
    cb.stop().await.unwrap();
}
