//! Arbitrary bytes decoded as an ext_authz `CheckRequest`, through the real
//! `AuthzService::check` (fixture config: trusted_ips, limits, a named policy with Kong's
//! authorization rules, plus one policy per header format and one for the peer certificate,
//! picked by `context_extensions.policy`). The handler always answers `Ok`, and a
//! deny is never an OK status: a gRPC error would hand the decision to Envoy's
//! `failure_mode_allow`.
#![no_main]

use std::sync::LazyLock;

use certbound_fuzz::{runtime, SERVICE};
use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, HttpResponse};
use libfuzzer_sys::fuzz_target;
use prost::Message;

static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(runtime);

fuzz_target!(|data: &[u8]| {
    let Ok(req) = CheckRequest::decode(data) else {
        return;
    };
    let resp = RT
        .block_on(SERVICE.check(tonic::Request::new(req)))
        .expect("check never returns a gRPC error")
        .into_inner();
    let code = resp.status.expect("every answer carries a status").code;
    match resp.http_response {
        Some(HttpResponse::OkResponse(_)) => assert_eq!(code, 0, "an allow is OK"),
        Some(HttpResponse::DeniedResponse(denied)) => {
            assert_ne!(code, 0, "a deny is never an OK status");
            let http = denied.status.expect("a deny carries an HTTP status").code;
            assert!((400..600).contains(&http), "deny with HTTP {http}");
        }
        other => panic!("neither allow nor deny: {other:?}"),
    }
});
