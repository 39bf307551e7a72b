//! Reloading from a Kubernetes ConfigMap volume: the kubelet never rewrites a mounted file, it
//! writes a new timestamped folder and renames a symlink over `..data`, which every mounted name
//! (`certbound.toml -> ..data/certbound.toml`) points through. These tests perform that swap on a
//! real certbound server polling its files, as `certbound serve` does.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use certbound_core::clock::now_unix;
use certbound_core::fixtures::{bound_claims, jwks, SigningKey};
use support::{Certbound, Pki, Req};

const AUD: &str = "https://api.test";
const ISSUER: &str = "https://idp.test";
const OK: &str = "certbound_config_reloads_total{result=\"ok\"}";
const ERROR: &str = "certbound_config_reloads_total{result=\"error\"}";
const LAST_OK: &str = "certbound_config_last_reload_successful";

/// A ConfigMap (or Secret) volume laid out as the kubelet's atomic writer lays it out.
struct Volume {
    dir: PathBuf,
    version: u32,
}

impl Volume {
    /// The first version of `files`, each mounted name a symlink through `..data`.
    fn new(dir: &Path, files: &[(&str, String)]) -> Self {
        let mut volume = Self {
            dir: dir.to_path_buf(),
            version: 0,
        };
        volume.swap(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        volume
    }

    /// What the kubelet does on a ConfigMap update: write every file into a new timestamped
    /// folder, point a temporary symlink at it, rename that over `..data` (the one atomic step),
    /// then remove the previous folder.
    fn swap(&mut self, files: &[(&str, String)]) {
        self.version += 1;
        let folder = format!("..2026_12_06_15_00_{:02}.{}", self.version, self.version);
        std::fs::create_dir(self.dir.join(&folder)).unwrap();
        for (name, content) in files {
            std::fs::write(self.dir.join(&folder).join(name), content).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&folder, &tmp).unwrap();
        let previous = std::fs::read_link(self.dir.join("..data")).ok();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if let Some(previous) = previous {
            std::fs::remove_dir_all(self.dir.join(previous)).unwrap();
        }
    }
}

/// Header mode with static keys and the client CA, both files of the same ConfigMap.
fn config(upstream_header: &str, format: &str) -> String {
    format!(
        r#"
issuer = "{ISSUER}"
jwks_file = "jwks.json"
audience = ["{AUD}"]
auth_methods = ["bearer"]
proof_of_possession_mtls = "strict"
upstream_headers_claims = ["sub"]
upstream_headers_names = ["{upstream_header}"]
trusted_ips = ["127.0.0.1/32", "::1"]
[proof_of_possession_mtls_from_header]
certificate_header_name = "x-client-cert"
certificate_header_format = "{format}"
ca_certificates = ["client-ca.pem"]
"#
    )
}

/// Waits (bounded) until `series` reads `want`.
async fn wait_for_metric(cb: &Certbound, series: &str, want: u64) {
    for _ in 0..500 {
        if cb.metric(series).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{series} never reached {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_data_swap_reloads_config_keys_and_ca_once_and_a_bad_swap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix();
    let (pki1, pki2) = (Pki::new(now), Pki::new(now));
    let (k1, k2) = (
        SigningKey::es256("k1").unwrap(),
        SigningKey::es256("k2").unwrap(),
    );
    let mut volume = Volume::new(
        dir.path(),
        &[
            ("certbound.toml", config("x-consumer-sub", "url_encoded")),
            ("jwks.json", jwks(&[&k1]).to_string()),
            ("client-ca.pem", pki1.root.pem.clone()),
        ],
    );
    let path = dir.path().join("certbound.toml");
    let (cb, _trigger) = Certbound::start_watching(&path, Some(Duration::from_millis(50))).await;
    cb.wait_ready().await;
    let request = |key: &SigningKey, pki: &Pki| {
        let claims = bound_claims(ISSUER, AUD, "alice-app", &pki.alice, now);
        Req::new()
            .bearer(&key.sign("at+jwt", &claims).unwrap())
            .cert(&pki.chain_header(&pki.alice))
    };
    let first = cb.check(&request(&k1, &pki1)).await;
    assert!(first.allowed(), "{first:?}");
    assert!(first.upstream.contains_key("x-consumer-sub"));

    // The ConfigMap is updated: another upstream header, another signing key, another client CA.
    volume.swap(&[
        ("certbound.toml", config("x-sub-v2", "url_encoded")),
        ("jwks.json", jwks(&[&k2]).to_string()),
        ("client-ca.pem", pki2.root.pem.clone()),
    ]);
    wait_for_metric(&cb, OK, 1).await;
    let swapped = cb.check(&request(&k2, &pki2)).await;
    assert!(swapped.allowed(), "{swapped:?}");
    assert!(swapped.upstream.contains_key("x-sub-v2"), "{swapped:?}");
    assert!(!swapped.upstream.contains_key("x-consumer-sub"));
    let old_key = cb.check(&request(&k1, &pki2)).await;
    assert_eq!(old_key.reason, "token_unknown_key", "{old_key:?}");
    let old_ca = cb.check(&request(&k2, &pki1)).await;
    assert!(!old_ca.allowed(), "the replaced CA is not trusted any more");

    // An update that does not validate is refused and logged; the swapped-in version keeps serving.
    volume.swap(&[
        ("certbound.toml", config("x-sub-v3", "carrier_pigeon")),
        ("jwks.json", jwks(&[&k1]).to_string()),
        ("client-ca.pem", pki1.root.pem.clone()),
    ]);
    wait_for_metric(&cb, ERROR, 1).await;
    assert_eq!(cb.metric(LAST_OK).await, 0);
    let kept = cb.check(&request(&k2, &pki2)).await;
    assert!(kept.allowed(), "{kept:?}");
    assert!(kept.upstream.contains_key("x-sub-v2"));
    // One swap, one reload: the valid one was applied once, the invalid one refused once.
    assert_eq!(cb.metric(OK).await, 1);
    assert_eq!(cb.metric(ERROR).await, 1);
    cb.stop().await.unwrap();
}
