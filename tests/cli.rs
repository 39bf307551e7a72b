//! The `certbound` binary as an operator runs it: exit codes, messages, signals, logs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use certbound_core::clock::now_unix;
use certbound_core::fixtures::{bound_claims, jwks, Ca, SigningKey};

const BIN: &str = env!("CARGO_BIN_EXE_certbound");

fn certbound() -> Command {
    let mut c = Command::new(BIN);
    // The tests set exactly the environment they mean to test.
    for (k, _) in std::env::vars() {
        if k.starts_with("CERTBOUND_") {
            c.env_remove(k);
        }
    }
    c
}

fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let ca = Ca::root("cli test CA").unwrap();
    std::fs::write(dir.join("client-ca.pem"), &ca.pem).unwrap();
    let key = SigningKey::es256("k").unwrap();
    std::fs::write(dir.join("jwks.json"), jwks(&[&key]).to_string()).unwrap();
    let path = dir.join("certbound.toml");
    std::fs::write(
        &path,
        format!(
            "grpc_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nissuer = \"https://idp.test\"\njwks_file = \"jwks.json\"\ntrusted_ips = [\"127.0.0.1\"]\n{extra}\n[proof_of_possession_mtls_from_header]\ncertificate_header_name = \"x-client-cert\"\ncertificate_header_format = \"url_encoded\"\nca_certificates = [\"client-ca.pem\"]\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn check_config_accepts_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    let out = certbound()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_names_the_offending_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "proof_of_possession_mtls = \"sometimes\"");
    let out = certbound()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("proof_of_possession_mtls"), "{err}");

    let path = write_config(dir.path(), "leewy = 5");
    let out = certbound()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("leewy"));
}

#[test]
fn check_config_and_serve_warn_about_permissive_token_defaults_naming_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    // No `audience`, default `access_token_types`: valid (Kong's defaults) but permissive.
    let path = write_config(dir.path(), "");
    let out = certbound()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning: `audience`"), "{err}");
    assert!(err.contains("warning: `access_token_types`"), "{err}");
    assert!(err.contains("RFC 8725"), "{err}");

    let (_child, logs, _) = serve(&path, &[]);
    let logged = logs.lock().unwrap().clone();
    assert!(logged.contains("key=audience"), "{logged}");
    assert!(logged.contains("key=access_token_types"), "{logged}");

    // Both set deliberately: nothing to say.
    let path = write_config(
        dir.path(),
        "audience = [\"https://api.test\"]\naccess_token_types = [\"at+jwt\"]",
    );
    let out = certbound()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}

#[test]
fn environment_overrides_reach_nested_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    let out = certbound()
        .args(["check-config", "--config"])
        .arg(&path)
        .env(
            "CERTBOUND_PROOF_OF_POSSESSION_MTLS_FROM_HEADER__CERTIFICATE_HEADER_FORMAT",
            "pem_please",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("proof_of_possession_mtls_from_header.certificate_header_format"),
        "{err}"
    );

    // CERTBOUND_CONFIG and CERTBOUND_LOG_FORMAT belong to the command line, not the config.
    let out = certbound()
        .arg("check-config")
        .env("CERTBOUND_CONFIG", &path)
        .env("CERTBOUND_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--version` names the commit the binary was built from (build.rs): the checkout's HEAD, the
/// `BUILD_GIT_COMMIT` a container build passes, or `unknown` without git.
#[test]
fn version_names_the_crate_version_and_the_commit_it_was_built_from() {
    let expected = std::env::var("BUILD_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short", "HEAD"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let out = certbound().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("certbound {} ({expected})", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn thumbprint_prints_x5t_s256_of_pem_and_der() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix();
    let leaf = Ca::root("ca")
        .unwrap()
        .client("alice", now - 60, now + 3600)
        .unwrap();
    std::fs::write(dir.path().join("c.pem"), &leaf.pem).unwrap();
    std::fs::write(dir.path().join("c.der"), leaf.der.as_ref()).unwrap();
    for f in ["c.pem", "c.der"] {
        let out = certbound()
            .arg("thumbprint")
            .arg(dir.path().join(f))
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            leaf.x5t(),
            "{f}"
        );
    }
    std::fs::write(dir.path().join("junk"), "not a certificate").unwrap();
    let out = certbound()
        .arg("thumbprint")
        .arg(dir.path().join("junk"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// Reads the child's stderr in the background into a shared buffer.
fn capture_stderr(child: &mut Child) -> std::sync::Arc<std::sync::Mutex<String>> {
    let buf = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut err = child.stderr.take().unwrap();
    let sink = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = err.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    buf
}

fn wait_for(buf: &std::sync::Mutex<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let s = buf.lock().unwrap().clone();
        if s.contains(needle) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("`{needle}` never appeared in:\n{}", buf.lock().unwrap());
}

/// Kills the child if a test fails before it could stop it, so no server outlives its test.
/// Starts `certbound serve --config PATH` with extra environment variables and waits for its
/// "certbound serving" line; returns the process (killed on drop), its captured stderr and
/// that line.
fn serve(
    path: &Path,
    env: &[(&str, &str)],
) -> (Reap, std::sync::Arc<std::sync::Mutex<String>>, String) {
    let mut child = certbound()
        .args(["serve", "--config"])
        .arg(path)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = capture_stderr(&mut child);
    let child = Reap(child);
    let started = wait_for(&logs, "certbound serving");
    (child, logs, started)
}

struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_logs_denies_without_secrets_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    let (mut child, logs, started) = serve(&path, &[]);
    let grpc: std::net::SocketAddr = started
        .split("grpc=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();

    // A token signed by a key the server does not know, with a certificate from a CA it does not
    // trust: both must stay out of the logs.
    let now = now_unix();
    let leaf = Ca::root("other")
        .unwrap()
        .client("alice", now - 60, now + 3600)
        .unwrap();
    let token = SigningKey::es256("k")
        .unwrap()
        .sign(
            "at+jwt",
            &bound_claims("https://idp.test", "a", "alice", &leaf, now),
        )
        .unwrap();
    let header = leaf.url_encoded();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answer = rt
        .block_on(certbound::demo::check(
            grpc,
            &[
                ("authorization", &format!("Bearer {token}")),
                ("x-client-cert", &header),
            ],
        ))
        .unwrap();
    assert!(!answer.allowed);
    let logged = wait_for(&logs, "deny");
    // The certificate (from a CA the config does not trust) is checked before the token.
    assert!(
        logged.contains("reason=\"cert_untrusted\"") || logged.contains("reason=cert_untrusted"),
        "{logged}"
    );
    for secret in [
        token.as_str(),
        token.split('.').nth(1).unwrap(),
        token.split('.').nth(2).unwrap(),
        &header[40..80],
    ] {
        assert!(
            !logged.contains(secret),
            "a secret reached the logs:\n{logged}"
        );
    }

    sigterm(&child.0);
    let status = wait_exit(&mut child.0);
    assert_eq!(status.code(), Some(0), "{}", logs.lock().unwrap());
}

#[test]
fn demo_answers_allow_for_the_bound_pair_and_deny_for_a_swapped_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = certbound()
        .args([
            "demo",
            "--grpc-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut child = Reap(child);
    let mut seen = Vec::new();
    while let Some(Ok(line)) = lines.next() {
        let done = line.starts_with("2.");
        seen.push(line);
        if done {
            break;
        }
    }
    let text = seen.join("\n");
    assert!(
        text.contains("1. alice's token with alice's certificate: ALLOW (HTTP 200)"),
        "{text}"
    );
    assert!(text.contains("x-consumer-sub"), "{text}");
    assert!(
        text.contains("2. alice's token replayed with bob's certificate: DENY (HTTP 401)"),
        "{text}"
    );
    sigterm(&child.0);
    assert_eq!(wait_exit(&mut child.0).code(), Some(0));
    assert!(dir.path().join("certbound.toml").is_file());
}

#[test]
fn serve_reloads_on_sighup_and_when_the_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    let original = std::fs::read_to_string(&path).unwrap();
    let (mut child, logs, _) = serve(&path, &[]);

    std::fs::write(
        &path,
        original.replace("[proof_of", "leeway = 5\n[proof_of"),
    )
    .unwrap();
    let ok = Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    wait_for(&logs, "configuration reloaded");

    // No signal: the file changes and the poll notices (every 2 s).
    let reloaded_once = logs
        .lock()
        .unwrap()
        .matches("configuration reloaded")
        .count();
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(
        &path,
        original.replace("[proof_of", "leeway = 7\n[proof_of"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while logs
        .lock()
        .unwrap()
        .matches("configuration reloaded")
        .count()
        == reloaded_once
    {
        assert!(
            Instant::now() < deadline,
            "file change not picked up:\n{}",
            logs.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A broken file is refused and logged; the server keeps running.
    std::fs::write(&path, "issuer = 42\n").unwrap();
    wait_for(&logs, "reload refused");
    assert!(child.0.try_wait().unwrap().is_none(), "still serving");
}

/// Writes `write_config`'s files into a new timestamped folder of `dir` and points `..data` at
/// it with one rename, as the kubelet updates a ConfigMap volume; returns the folder.
#[cfg(unix)]
fn kubelet_update(dir: &Path, version: u32, extra: &str) -> std::path::PathBuf {
    let folder = dir.join(format!("..2026_12_06_15_00_0{version}.{version}"));
    std::fs::create_dir(&folder).unwrap();
    write_config(&folder, extra);
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(folder.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    folder
}

#[cfg(unix)]
#[test]
fn serve_reloads_once_when_a_configmap_volume_swaps_its_data_link() {
    let dir = tempfile::tempdir().unwrap();
    let first = kubelet_update(dir.path(), 1, "");
    for name in ["certbound.toml", "client-ca.pem", "jwks.json"] {
        std::os::unix::fs::symlink(format!("..data/{name}"), dir.path().join(name)).unwrap();
    }
    let (mut child, logs, _) = serve(&dir.path().join("certbound.toml"), &[]);
    let reloads = || {
        logs.lock()
            .unwrap()
            .matches("configuration reloaded")
            .count()
    };

    // No signal: the 2 s poll finds the swap.
    kubelet_update(dir.path(), 2, "leeway = 7");
    std::fs::remove_dir_all(&first).unwrap();
    wait_for(&logs, "configuration reloaded");
    // A swap to a version that does not validate is refused; the server keeps running, and the
    // earlier swap was reloaded once, not on every poll since.
    kubelet_update(dir.path(), 3, "leeway = \"soon\"");
    wait_for(&logs, "reload refused");
    assert_eq!(reloads(), 1, "{}", logs.lock().unwrap());
    assert!(child.0.try_wait().unwrap().is_none(), "still serving");
}

#[test]
fn deleting_a_trusted_ca_file_refuses_the_reload_and_the_log_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    let (mut child, logs, _) = serve(&path, &[]);
    // The reload poll starts just after that line, from the files as it first sees them.
    std::thread::sleep(Duration::from_millis(500));
    // The operator deletes the CA file to stop trusting the CA; the config still names it.
    std::fs::remove_file(dir.path().join("client-ca.pem")).unwrap();
    let logged = wait_for(&logs, "configuration names a file that is gone");
    let line = logged
        .lines()
        .find(|l| l.contains("configuration names a file that is gone"))
        .unwrap();
    assert!(line.contains("client-ca.pem"), "{line}");
    assert!(line.contains("still trusted"), "{line}");
    assert!(child.0.try_wait().unwrap().is_none(), "still serving");
}

/// `import-kong` on a decK file of Kong's documented examples, with its `DECK_*` placeholders
/// set the way decK reads them.
fn import_kong(dir: &Path, file: &str, extra: &[&str]) -> std::process::Output {
    let ca = Ca::root("kong import CA").unwrap();
    certbound()
        .arg("import-kong")
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/kong")
                .join(file),
        )
        .arg("--out")
        .arg(dir)
        .args(extra)
        .env("DECK_ISSUER", "https://idp.test/realms/master")
        .env("DECK_CLIENT_ID", "kong")
        .env("DECK_CLIENT_SECRET", "s3cret")
        .env("DECK_CA_CERT_ID", "0b8c6e2a-7c1f-4f6e-9d6b-2f0f5b3c1a11")
        .env("DECK_CA_CERT_PEM", &ca.pem)
        .env("DECK_CACHE_TTL", "120")
        .output()
        .unwrap()
}

fn check(path: &Path) -> std::process::Output {
    certbound()
        .args(["check-config", "--config"])
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn imported_kong_examples_pass_check_config() {
    for file in [
        "mtls-pop-from-header.yaml",
        "services-and-routes.yaml",
        "route-precedence.yaml",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = import_kong(dir.path(), file, &["--trusted-ip", "10.0.0.0/8"]);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for written in ["certbound.toml", "envoy-routes.yaml", "import-report.txt"] {
            assert!(dir.path().join(written).is_file(), "{file}: {written}");
        }
        let checked = check(&dir.path().join("certbound.toml"));
        assert!(
            checked.status.success(),
            "{file}: {}\n{}",
            String::from_utf8_lossy(&checked.stderr),
            std::fs::read_to_string(dir.path().join("certbound.toml")).unwrap()
        );
    }
}

#[test]
fn imported_config_without_trusted_proxies_is_refused_by_check_config() {
    // Kong keeps trusted_ips in kong.conf; with secure_source on, certbound must not start
    // until they are set, and the report says so.
    let dir = tempfile::tempdir().unwrap();
    let out = import_kong(dir.path(), "mtls-pop-from-header.yaml", &[]);
    assert!(out.status.success());
    let report = std::fs::read_to_string(dir.path().join("import-report.txt")).unwrap();
    assert!(report.contains("trusted_ips"), "{report}");
    let checked = check(&dir.path().join("certbound.toml"));
    assert_eq!(checked.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&checked.stderr).contains("trusted_ips"));
}

/// `import-kong FILE --out OUT` with no `DECK_*` variables but `env`.
fn import_deck(deck: &Path, out: &Path, env: &[(&str, &str)]) -> std::process::Output {
    certbound()
        .arg("import-kong")
        .arg(deck)
        .arg("--out")
        .arg(out)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn import_kong_refuses_rules_it_cannot_enforce_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let deck = dir.path().join("kong.yaml");
    std::fs::write(
        &deck,
        "_format_version: \"3.0\"\nplugins:\n  - name: openid-connect\n    config:\n      issuer: https://idp.test\n      groups_required: [admins]\n",
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let out = import_deck(&deck, &out_dir, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("groups_required"));
    assert!(!out_dir.exists());
}

#[test]
fn import_kong_exits_2_naming_a_protected_route_its_rules_cannot_express() {
    // Two routes on one path, one protected, told apart only by a header Kong matches on and
    // certbound's rules do not: without the header the protected route's rule would take the
    // open route's requests, or the other way round.
    let dir = tempfile::tempdir().unwrap();
    let deck = dir.path().join("kong.yaml");
    std::fs::write(
        &deck,
        "_format_version: \"3.0\"\nservices:\n  - name: api\n    routes:\n      - { name: open-v1, paths: [/v] }\n      - name: guarded-v2\n        paths: [/v]\n        headers: { x-version: [\"2\"] }\n        plugins:\n          - name: openid-connect\n            config: { issuer: \"https://idp.test\" }\n",
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let out = import_deck(&deck, &out_dir, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("route guarded-v2") && stderr.contains("headers"),
        "{stderr}"
    );
    assert!(!out_dir.exists());
}

#[test]
fn import_kong_and_check_config_name_every_rule_that_does_not_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    let out = import_kong(dir.path(), "route-precedence.yaml", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    let checked = check(&dir.path().join("certbound.toml"));
    assert!(checked.status.success());
    let warnings = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    for open in ["docs", "items-read", "public-site", "reports-index"] {
        assert!(
            report.contains(&format!("route {open}: no openid-connect plugin")),
            "{open}: {report}"
        );
        assert!(
            warnings.contains(&format!("({open})")) && warnings.contains("authenticate = false"),
            "{open}: {warnings}"
        );
    }
    assert_eq!(
        warnings.matches("authenticate = false").count(),
        4,
        "{warnings}"
    );
}

/// Every value planted in a secret-bearing key must stay out of `text`.
fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "{what} shows the secret {s}:\n{text}");
    }
}

#[test]
fn check_config_names_mistyped_secret_keys_without_their_values() {
    // (file addition, CERTBOUND_* variables, the key the message must name)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        ("client_secret = \"file-secret-1\"", &[], "client_secret"),
        (
            "dpop_nonce_secret = [\"file-secret-2\"]",
            &[],
            "dpop_nonce_secret",
        ),
        (
            "[dpop_replay]\nredis_url = [\"redis://u:file-secret-3@h\"]",
            &[],
            "redis_url",
        ),
        // A TOML syntax error on the line of a secret.
        ("client_secret = [\"file-secret-4", &[], "line"),
        (
            "",
            &[("CERTBOUND_CLIENT_SECRET", "env-secret-1")],
            "client_secret",
        ),
        (
            "",
            &[("CERTBOUND_DPOP_NONCE_SECRET", "[env-secret-2]")],
            "dpop_nonce_secret",
        ),
        (
            "[policies.p]\nleeway = 1",
            &[("CERTBOUND_POLICIES__P__CLIENT_SECRET", "env-secret-3")],
            "client_secret",
        ),
    ];
    let secrets = [
        "file-secret-1",
        "file-secret-2",
        "file-secret-3",
        "file-secret-4",
        "env-secret-1",
        "env-secret-2",
        "env-secret-3",
    ];
    for (extra, env, key) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), "");
        // Before any table, so the key lands where it is meant to.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace("[proof_of", &format!("{extra}\n[proof_of")),
        )
        .unwrap();
        let out = certbound()
            .args(["check-config", "--config"])
            .arg(&path)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(2), "{extra} {env:?}: {all}");
        assert!(all.contains(key), "{extra} {env:?}: {all}");
        assert_no_secret(
            &format!("check-config with {extra} {env:?}"),
            &all,
            &secrets,
        );
    }
}

#[test]
fn a_refused_reload_does_not_log_secret_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    let original = std::fs::read_to_string(&path).unwrap();
    let (child, logs, _) = serve(&path, &[("RUST_LOG", "trace")]);
    std::fs::write(
        &path,
        original.replace(
            "[proof_of",
            "client_secret = \"reload-secret-1\"\n[proof_of",
        ),
    )
    .unwrap();
    let ok = Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let seen = wait_for(&logs, "reload refused");
    assert!(seen.contains("client_secret"), "{seen}");
    std::fs::write(&path, "client_secret = [\"reload-secret-2\n").unwrap();
    let ok = Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while logs.lock().unwrap().matches("reload refused").count() < 2 {
        assert!(Instant::now() < deadline, "{}", logs.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_no_secret(
        "serve's log",
        &logs.lock().unwrap(),
        &["reload-secret-1", "reload-secret-2"],
    );
}

#[test]
fn import_kong_names_secret_fields_without_their_values() {
    let secrets = [
        "kong-secret-1",
        "kong-secret-2",
        "kong-secret-3",
        "kong-secret-4",
        "kong-secret-5",
        "kong-secret-6",
        "kong-secret-7",
        "kong-secret-8",
    ];
    let dir = tempfile::tempdir().unwrap();
    let deck = dir.path().join("kong.yaml");
    std::fs::write(
        &deck,
        "_format_version: \"3.0\"\nplugins:\n  - name: openid-connect\n    config:\n      issuer: https://idp.test\n      session_secret: ${{ env \"DECK_SESSION_SECRET\" }}\n      client_jwk: [{ kty: RSA, n: abc, e: AQAB, d: kong-secret-2 }]\n      session_redis_password: kong-secret-3\n      token_headers_values: [kong-secret-4]\n      redis: { host: redis.internal, password: kong-secret-5 }\n      http_proxy_authorization: Basic kong-secret-6\n      introspection_post_args_values: [kong-secret-7]\n      proof_of_possession_mtls_from_header:\n        certificate_header_name: x-client-cert\n        certificate_header_format: base64_encoded\n        secure_source: false\n        https_proxy_authorization: Basic kong-secret-8\n",
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let out = import_deck(&deck, &out_dir, &[("DECK_SESSION_SECRET", "kong-secret-1")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for field in [
        "session_secret",
        "client_jwk",
        "session_redis_password",
        "redis",
    ] {
        assert!(stdout.contains(&format!("`{field}`")), "{field}: {stdout}");
    }
    assert_no_secret("stdout", &stdout, &secrets);
    assert_no_secret("stderr", &String::from_utf8_lossy(&out.stderr), &secrets);
    for file in std::fs::read_dir(&out_dir).unwrap() {
        let file = file.unwrap().path();
        let text = std::fs::read_to_string(&file).unwrap();
        assert_no_secret(&file.display().to_string(), &text, &secrets);
    }

    // A secret of the wrong type refuses the import; the refusal names the key only.
    std::fs::write(
        &deck,
        "_format_version: \"3.0\"\nplugins:\n  - name: openid-connect\n    config:\n      issuer: https://idp.test\n      client_secret: { value: kong-secret-1 }\n",
    )
    .unwrap();
    let out = import_deck(&deck, &out_dir, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("client_secret"), "{stderr}");
    assert_no_secret("the refusal", &stderr, &secrets);
}

#[test]
fn check_config_warns_about_routes_that_never_match_and_refuses_conflicting_ones() {
    let dir = tempfile::tempdir().unwrap();
    let rule = |hosts: &str, policy: &str| {
        format!("[[routes]]\nhosts = [{hosts}]\npaths = [\"/api\"]\npolicy = \"{policy}\"\n")
    };
    let shadowed = format!(
        "{}{}",
        rule("\"api.test\"", "default"),
        rule("\"api.test\"", "default")
    );
    let path = write_config(dir.path(), &shadowed);
    let out = certbound()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: `routes[1]`: can never match: routes[0] matches first"),
        "{err}"
    );

    let conflicting = format!(
        "[policies.strict]\nleeway = 0\n{}{}",
        rule("\"*.test\"", "default"),
        rule("\"api.*\"", "strict")
    );
    let path = write_config(dir.path(), &conflicting);
    let out = certbound()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`routes`: routes[0] and routes[1] can match the same request"),
        "{err}"
    );
}

#[test]
fn config_schema_prints_a_json_schema_and_with_markdown_the_committed_reference() {
    let out = certbound().arg("config-schema").output().unwrap();
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["properties"]["timeout"]["x-unit"], "milliseconds");

    // The command docs/contributing.md gives regenerates the page as committed.
    let out = certbound()
        .args(["config-schema", "--markdown"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let page = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
    )
    .unwrap();
    assert!(
        String::from_utf8(out.stdout).unwrap() == page,
        "docs/configuration.md differs from `certbound config-schema --markdown`"
    );
}
