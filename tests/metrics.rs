//! `/metrics` of a running server: decisions are counted under the policy that decided them,
//! names the configuration does not hold collapse to one label value, a reload swaps the
//! per-policy series with the policies, and the build and the process describe themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use certbound_core::fixtures::{jwks, SigningKey};
use support::{Certbound, Req};

/// A static key set, no certificates: every check without a token is `missing_token`, under
/// whichever policy decides it.
fn config(named: &str) -> String {
    format!(
        r#"
issuer = "https://idp.metrics.test"
jwks_file = "jwks.json"
proof_of_possession_mtls = "off"
[policies.{named}]
"#
    )
}

fn missing_token(policy: &str) -> String {
    format!(
        "certbound_decisions_total{{decision=\"deny\",policy=\"{policy}\",reason=\"missing_token\"}}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_follow_the_policy_in_force_through_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::es256("k").unwrap();
    std::fs::write(dir.path().join("jwks.json"), jwks(&[&key]).to_string()).unwrap();
    let path = dir.path().join("certbound.toml");
    std::fs::write(&path, config("orders")).unwrap();
    let (cb, reload) = Certbound::start_reloading(&path).await;
    cb.wait_ready().await;

    assert!(!cb.check(&Req::new().policy("orders")).await.allowed());
    assert!(!cb.check(&Req::new()).await.allowed());
    for i in 0..3 {
        let a = cb.check(&Req::new().policy(&format!("asked-{i}"))).await;
        assert!(!a.allowed());
    }
    assert_eq!(cb.metric(&missing_token("orders")).await, 1);
    assert_eq!(cb.metric(&missing_token("default")).await, 1);
    let unknown =
        r#"certbound_decisions_total{decision="deny",policy="(none)",reason="unknown_policy"}"#;
    assert_eq!(cb.metric(unknown).await, 3);
    let (_, text) = cb.admin_get("/metrics").await;
    assert!(
        !text.contains("asked-"),
        "route-supplied names are no labels"
    );

    std::fs::write(&path, config("invoices")).unwrap();
    reload.send(()).unwrap();
    let reloaded = r#"certbound_config_reloads_total{result="ok"}"#;
    for _ in 0..250 {
        if cb.metric(reloaded).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cb.metric(reloaded).await, 1);
    assert!(!cb.check(&Req::new().policy("invoices")).await.allowed());
    assert_eq!(cb.metric(&missing_token("invoices")).await, 1);
    assert_eq!(cb.metric(&missing_token("default")).await, 1, "kept");
    let (_, text) = cb.admin_get("/metrics").await;
    assert!(
        !text.contains(r#"policy="orders""#),
        "the removed policy's series are gone: {text}"
    );
    // Its name is now one the configuration does not hold.
    assert!(!cb.check(&Req::new().policy("orders")).await.allowed());
    assert_eq!(cb.metric(unknown).await, 4);
    cb.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_name_the_build_and_describe_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::es256("k").unwrap();
    std::fs::write(dir.path().join("jwks.json"), jwks(&[&key]).to_string()).unwrap();
    let cb = Certbound::start(&config("orders"), dir.path()).await;
    cb.wait_ready().await;
    let build = format!(
        "certbound_build_info{{commit=\"{}\",version=\"{}\"}}",
        env!("BUILD_COMMIT"),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(cb.metric(&build).await, 1);
    if cfg!(target_os = "linux") {
        assert!(cb.metric("process_resident_memory_bytes").await > 0);
        assert!(cb.metric("process_open_fds").await > 0);
    }
    cb.stop().await.unwrap();
}
