//! Every CheckRequest certbound can receive is answered with a CheckResponse: a gRPC error
//! would let Envoy's `failure_mode_allow: true` turn it into an allow.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use certbound::server::MAX_CHECK_REQUEST_BYTES;
use certbound_core::clock::now_unix;
use certbound_core::fixtures::{jwks, SigningKey};
use support::{Certbound, Pki, Req, TestIdp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_request_above_the_limit_is_a_counted_deny_not_a_grpc_error() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(now_unix());
    pki.write_root(dir.path());
    let key = SigningKey::es256("k").unwrap();
    let idp = TestIdp::start(dir.path(), jwks(&[&key])).await;
    let toml = format!(
        "issuer = \"{}\"\nidp_ca_certificates = [\"{}\"]\nproof_of_possession_mtls = \"off\"\n",
        idp.issuer,
        idp.ca_path.display()
    );
    let cb = Certbound::start(&toml, dir.path()).await;
    cb.wait_ready().await;
    // As Envoy sends a large buffered body (`with_request_body`) or raised header limits.
    for size in [MAX_CHECK_REQUEST_BYTES + 1, 8 * MAX_CHECK_REQUEST_BYTES] {
        let req = Req::new()
            .bearer("whatever")
            .header("x-padding", &"a".repeat(size));
        // `check` panics on a gRPC error.
        let a = cb.check(&req).await;
        assert!(!a.allowed(), "{size}: {a:?}");
        assert_eq!(a.reason, "request_too_large", "{size}");
        assert_eq!(a.http_status, 413, "{size}");
        assert_eq!(a.body, "{\"message\":\"Content Too Large\"}");
    }
    assert_eq!(cb.decisions("deny", "request_too_large").await, 2);
    // Just below the limit, the request is checked as usual.
    let req = Req::new()
        .bearer("whatever")
        .header("x-padding", &"a".repeat(MAX_CHECK_REQUEST_BYTES / 2));
    assert_eq!(cb.check(&req).await.reason, "token_malformed");
    cb.stop().await.unwrap();
}
