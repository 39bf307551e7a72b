//! Shared set-up for the fuzz targets: the committed fixtures in `fuzz/fixtures/` (public
//! material only, written by `cargo run --example fuzz_seeds`), loaded once per process.

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use arc_swap::ArcSwap;
use certbound_core::cert::{self, CertError, HeaderFormat, TrustStore, VerifiedCert, CHAIN_LEN_CEILING};
use certbound::config::Config;
use certbound_core::fixtures::per_cert_source;
use certbound::grpc::AuthzService;
use certbound::metrics::Metrics;
use certbound_core::token::{KeySet, TokenRules};
use figment::providers::{Format, Toml};
use figment::Figment;
use rustls_pki_types::CertificateDer;

/// The fixed time the token and certificate targets verify at (2027-01-15). Every fixture is
/// valid from 2020 to 2096, so it covers this and the wall clock the Check handler reads.
pub const NOW: u64 = 1_800_000_000;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The configuration the Check handler serves (`fixtures/certbound.toml`), read from the file
/// alone: no `CERTBOUND_*` environment overrides.
pub static CONFIG: LazyLock<Config> = LazyLock::new(load_config);

fn load_config() -> Config {
    let dir = fixtures();
    Config::from_figment(&Figment::from(Toml::file(dir.join("certbound.toml"))), &dir)
        .unwrap_or_else(|e| panic!("fuzz/fixtures/certbound.toml: {e}"))
}

/// The client root and intermediate that the fixture certificates chain to.
pub static TRUST: LazyLock<TrustStore> = LazyLock::new(|| {
    TrustStore::from_pem_files(&[fixtures().join("client-ca.pem")], false)
        .unwrap_or_else(|e| panic!("fuzz/fixtures/client-ca.pem: {e}"))
});

/// The issuer's public keys the fixture tokens are signed with.
pub static KEYS: LazyLock<KeySet> = LazyLock::new(|| {
    let body = std::fs::read(fixtures().join("jwks.json")).expect("fuzz/fixtures/jwks.json");
    KeySet::from_jwks_json(&body).expect("fuzz/fixtures/jwks.json is a usable JWKS")
});

/// The ext_authz service over the fixture config (its own named policies included), with one
/// extra named policy per header format in `HeaderFormat::ALL` (the format's name) and one
/// reading Envoy's peer certificate (`peer`): a CheckRequest picks one with
/// `context_extensions: {policy: NAME}`.
pub static SERVICE: LazyLock<AuthzService> = LazyLock::new(|| {
    let mut config = load_config();
    config.policies = per_cert_source(config.policies);
    let built = config
        .build(&|_| None)
        .unwrap_or_else(|e| panic!("fuzz/fixtures/certbound.toml: {e}"));
    let metrics = Metrics::new().expect("metrics registry");
    AuthzService::new(Arc::new(ArcSwap::from_pointee(built.engine)), Arc::new(metrics))
});

/// A current-thread runtime with a paused clock: a check that waits for a JWKS refresh (an
/// unknown `kid`; nothing fetches here) completes at once instead of after 500 ms.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("tokio runtime")
}

/// The default policy's token rules, as the pipeline builds them.
pub fn token_rules() -> TokenRules<'static> {
    CONFIG.policies.default.token_rules()
}

/// The whole certificate step on a header value and an optional chain-header value: decode
/// both, then verify (the chain check when `trust` is given) with the largest chain allowed.
pub fn verify(
    value: &str,
    chain: Option<&str>,
    format: HeaderFormat,
    trust: Option<&TrustStore>,
) -> Result<VerifiedCert, CertError> {
    let presented = cert::decode(value, format)?;
    let intermediates: Vec<CertificateDer<'static>> = match chain {
        Some(c) => cert::decode_chain(c, format)?,
        None => Vec::new(),
    };
    cert::verify(&presented, &intermediates, trust, CHAIN_LEN_CEILING, NOW)
}
