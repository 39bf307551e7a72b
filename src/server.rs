//! Serving: the gRPC listener (ext_authz + gRPC health), the admin listener, and the key
//! fetchers, all stopped by one shutdown signal. Listeners are bound by the caller, so tests
//! bind port 0 and run in parallel.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use std::path::{Path, PathBuf};
use tokio::net::TcpListener;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic_health::ServingStatus;

use crate::admin::{self, AdminState};
use crate::config::{Config, ConfigError, GrpcTls};
use crate::grpc::AuthzService;
use crate::metrics::Metrics;
use certbound_adapters::http::IdpClient;
use certbound_adapters::jwks::{self, KeyFetch};
use certbound_core::engine::Engine;
use certbound_core::policy::KeySource;
use certbound_core::token::KeyStore;

pub use crate::grpc::{MAX_CHECK_REQUEST_BYTES, MAX_DECODED_CHECK_REQUEST_BYTES};
const AUTHZ_SERVICE_NAME: &str = "envoy.service.auth.v3.Authorization";
/// HTTP/2 streams one connection may have open at once (checks in flight from one Envoy).
const MAX_STREAMS_PER_CONNECTION: u32 = 1024;
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Jwks(#[from] jwks::JwksError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("admin server: {0}")]
    Admin(std::io::Error),
}

pub struct Listeners {
    pub grpc: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(grpc: SocketAddr, admin: SocketAddr) -> Result<Self, ServeError> {
        let bind = |what, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { what, addr, source })
        };
        Ok(Self {
            grpc: bind("grpc_listen", grpc).await?,
            admin: bind("admin_listen", admin).await?,
        })
    }
}

/// Where a running server reloads its configuration from.
pub struct Reload {
    /// The config file (`serve --config`).
    pub path: PathBuf,
    /// Poll the config and every file it names this often; `None`: only on `trigger`.
    pub poll_interval: Option<Duration>,
    /// SIGHUP, or a test, asks for a reload.
    pub trigger: mpsc::UnboundedReceiver<()>,
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight checks finish and
/// returns.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with_reload(config, listeners, shutdown, None).await
}

/// `serve`, reloading the configuration when `reload` says so.
pub async fn serve_with_reload(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reload: Option<Reload>,
) -> Result<(), ServeError> {
    let metrics = Arc::new(Metrics::new()?);
    let (stop_tx, stop_rx) = watch::channel(false);
    let grpc_tls = config.grpc_tls.clone();
    let client = config
        .idp_client
        .keys_client()
        .map_err(jwks::JwksError::Client)?;
    let built = config.build(&|_| None)?;
    metrics.reload_last_ok.set(1);
    let mut fetchers = Fetchers {
        running: Vec::new(),
        client,
        idp: config.idp_client.clone(),
        metrics: metrics.clone(),
        stop: stop_rx.clone(),
    };
    for fetch in built.key_fetches {
        fetchers.start(fetch);
    }
    for checker in built.engine.revocation_checkers() {
        checker.observe(metrics.clone());
    }
    let engine = Arc::new(ArcSwap::from_pointee(built.engine));

    let admin_state = AdminState {
        metrics: metrics.clone(),
        engine: engine.clone(),
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(track_readiness(
        health,
        admin_state.clone(),
        stop_rx.clone(),
    ));
    if let Some(reload) = reload {
        let listen = (config.grpc_listen, config.admin_listen);
        tokio::spawn(reload_loop(
            reload,
            config.files,
            listen,
            grpc_tls.clone(),
            engine.clone(),
            fetchers,
            stop_rx.clone(),
        ));
    }

    let authz = AuthorizationServer::new(AuthzService::new(engine, metrics))
        .max_decoding_message_size(MAX_DECODED_CHECK_REQUEST_BYTES);

    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let mut grpc = grpc_builder();
    if let Some(tls) = &grpc_tls {
        grpc = grpc.tls_config(tls_config(tls))?;
    }
    let grpc = grpc
        .add_service(health_service)
        .add_service(authz)
        .serve_with_incoming_shutdown(incoming(listeners.grpc), stopped(stop_rx.clone()));
    let admin = axum::serve(listeners.admin, admin::router(admin_state))
        .with_graceful_shutdown(stopped(stop_rx.clone()));

    let (grpc, admin) = tokio::join!(grpc, async { admin.await.map_err(ServeError::Admin) });
    grpc?;
    admin?;
    Ok(())
}

/// tonic's server TLS settings for `[grpc_tls]`: this identity and, with `client_ca_pem`, a
/// required client certificate (a handshake without one, or with one from another CA, fails).
fn tls_config(tls: &GrpcTls) -> tonic::transport::ServerTlsConfig {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let config = ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
    match &tls.client_ca_pem {
        Some(ca) => config.client_ca_root(Certificate::from_pem(ca)),
        None => config,
    }
}

/// The gRPC server settings (also used by the always-allow baseline server of the
/// benchmarks, so the two are compared on equal terms). Envoy multiplexes every check of a
/// worker thread over one or a few HTTP/2 connections: many concurrent streams per connection,
/// and windows large enough that flow control never stalls a burst of small CheckRequests.
pub fn grpc_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
}

/// Accepted connections, with TCP_NODELAY: tonic sets it only on listeners it binds itself,
/// and a check's response is one small write that must not wait for Nagle.
pub fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    TcpListenerStream::new(listener).map(|conn| {
        if let Ok(c) = &conn {
            let _ = c.set_nodelay(true);
        }
        conn
    })
}

/// The running key fetchers, one per key source, kept across reloads so a reload never empties
/// a key store that is in use, and stopped when a reload drops their key source.
struct Fetchers {
    running: Vec<Running>,
    /// Built from `idp`; a reload that changes `idp` builds a new one.
    client: reqwest::Client,
    idp: IdpClient,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
}

struct Running {
    source: KeySource,
    store: Arc<KeyStore>,
    task: tokio::task::AbortHandle,
}

impl Fetchers {
    fn start(&mut self, fetch: KeyFetch) {
        let client = self.client.clone();
        self.start_with(fetch, client);
    }

    fn start_with(&mut self, fetch: KeyFetch, client: reqwest::Client) {
        let source = fetch.source.clone();
        let store = fetch.store.clone();
        let task = tokio::spawn(jwks::run(
            fetch,
            client,
            self.metrics.clone(),
            self.stop.clone(),
        ));
        self.running.push(Running {
            source,
            store,
            task: task.abort_handle(),
        });
    }

    /// The running store for `source`, if any.
    fn existing(&self, source: &KeySource) -> Option<Arc<KeyStore>> {
        self.running
            .iter()
            .find(|r| r.source == *source)
            .map(|r| r.store.clone())
    }

    /// The key sources being fetched.
    fn sources(&self) -> Vec<KeySource> {
        self.running.iter().map(|r| r.source.clone()).collect()
    }

    /// Replaces the running fetcher of `fetch.source` by one using `client`, keeping its store
    /// (and so its keys): a new client must not cost the keys fetched with the old one.
    fn restart(&mut self, fetch: KeyFetch, client: reqwest::Client) {
        self.running.retain(|r| {
            let same = r.source == fetch.source;
            if same {
                r.task.abort();
            }
            !same
        });
        self.start_with(fetch, client);
    }

    /// Stops every fetcher whose source is not in `keep`. A check still holding an older
    /// snapshot keeps its store's keys; they are just no longer refreshed.
    fn retain(&mut self, keep: &[KeySource]) {
        self.running.retain(|r| {
            let kept = keep.contains(&r.source);
            if !kept {
                r.task.abort();
            }
            kept
        });
    }
}

/// How long a reload waits for a new issuer's keys before giving up on that reload.
const NEW_KEYS_WAIT: Duration = Duration::from_secs(10);

async fn reload_loop(
    mut reload: Reload,
    mut files: Vec<PathBuf>,
    listen: (SocketAddr, SocketAddr),
    grpc_tls: Option<GrpcTls>,
    engine: Arc<ArcSwap<Engine>>,
    mut fetchers: Fetchers,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen = fingerprint(&files);
    let poll = reload
        .poll_interval
        .unwrap_or(Duration::from_secs(3600 * 24 * 365));
    loop {
        tokio::select! {
            got = reload.trigger.recv() => {
                if got.is_none() {
                    // Nobody can trigger any more; keep polling.
                    reload.trigger = mpsc::unbounded_channel().1;
                    if reload.poll_interval.is_none() {
                        return;
                    }
                    continue;
                }
            }
            _ = tokio::time::sleep(poll) => {
                let now = fingerprint(&files);
                if now == seen {
                    continue;
                }
            }
            _ = stop.changed() => return,
        }
        match apply(&reload.path, listen, &grpc_tls, &engine, &mut fetchers).await {
            Ok(new_files) => {
                fetchers.metrics.reload_ok.inc();
                fetchers.metrics.reload_last_ok.set(1);
                files = new_files;
                tracing::info!(path = %reload.path.display(), "configuration reloaded");
            }
            Err(e) => {
                fetchers.metrics.reload_error.inc();
                fetchers.metrics.reload_last_ok.set(0);
                // A file deleted to stop trusting what it held (a CA, say) is still in force
                // until the configuration stops naming it: say so, naming the file.
                for gone in files.iter().filter(|f| !f.exists()) {
                    tracing::error!(
                        file = %gone.display(),
                        "the configuration names a file that is gone; the reload is refused and the previous configuration keeps serving, so what the file held (a CA is still trusted) stays in force: remove the file from the configuration first, then delete it"
                    );
                }
                tracing::error!(path = %reload.path.display(), error = %e, "configuration reload refused; the previous configuration keeps serving");
            }
        }
        seen = fingerprint(&files);
    }
}

/// Loads, validates and swaps in a new configuration, or changes nothing.
async fn apply(
    path: &Path,
    listen: (SocketAddr, SocketAddr),
    grpc_tls: &Option<GrpcTls>,
    engine: &ArcSwap<Engine>,
    fetchers: &mut Fetchers,
) -> Result<Vec<PathBuf>, String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    config.log_warnings();
    if (config.grpc_listen, config.admin_listen) != listen {
        tracing::warn!("grpc_listen / admin_listen changed: restart certbound to apply them");
    }
    if config.grpc_tls != *grpc_tls {
        tracing::warn!("[grpc_tls] or its files changed: restart certbound to apply them");
    }
    // `ssl_verify`, `idp_ca_certificates` or `timeout` changed: every key fetch, new or
    // running, must use a client built from the new settings, or turning verification back
    // on (or dropping an IdP CA) would silently not apply.
    let new_client = if config.idp_client == fetchers.idp {
        None
    } else {
        Some(config.idp_client.keys_client()?)
    };
    let client = new_client
        .clone()
        .unwrap_or_else(|| fetchers.client.clone());
    // Key sources already fetched keep their stores (and the keys in them); new ones start empty
    // and must load before the configuration is swapped in.
    let built = config
        .build(&|source| fetchers.existing(source))
        .map_err(|e| e.to_string())?;
    let serving = fetchers.sources();
    let wanted: Vec<KeySource> = built.key_fetches.iter().map(|f| f.source.clone()).collect();
    let mut restart: Vec<KeyFetch> = Vec::new();
    for fetch in built.key_fetches {
        if fetchers.existing(&fetch.source).is_some() {
            restart.push(fetch);
            continue;
        }
        let store = fetch.store.clone();
        fetchers.start_with(fetch, client.clone());
        let deadline = tokio::time::Instant::now() + NEW_KEYS_WAIT;
        while !store.is_ready() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !store.is_ready() {
            // The refused configuration's new fetchers must not outlive it.
            fetchers.retain(&serving);
            return Err("a new issuer's signing keys could not be loaded".into());
        }
    }
    for checker in built.engine.revocation_checkers() {
        checker.observe(fetchers.metrics.clone());
    }
    engine.store(Arc::new(built.engine));
    fetchers.retain(&wanted);
    if let Some(client) = new_client {
        for fetch in restart {
            fetchers.restart(fetch, client.clone());
        }
        fetchers.client = client;
        fetchers.idp = config.idp_client;
        tracing::info!("IdP TLS settings (ssl_verify, idp_ca_certificates, timeout) changed: key fetches use them from now on");
    }
    Ok(config.files)
}

/// Modification time and length of every file, to notice edits (and Kubernetes ConfigMap
/// symlink swaps) without a file-system watcher.
fn fingerprint(files: &[PathBuf]) -> Vec<Option<(std::time::SystemTime, u64)>> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Mirrors `/readyz` into gRPC health: NOT_SERVING until every issuer's keys are loaded.
async fn track_readiness(
    health: tonic_health::server::HealthReporter,
    state: AdminState,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = None;
    loop {
        let status = if state.is_ready() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        // Summed over every issuer, static JWKS files included (they are never fetched).
        let keys: usize = state.key_stores().iter().map(|s| s.current().len()).sum();
        state.metrics.jwks_keys.set(keys as i64);
        if last != Some(status) {
            health.set_service_status("", status).await;
            health.set_service_status(AUTHZ_SERVICE_NAME, status).await;
            last = Some(status);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use certbound_core::fixtures::{jwks as jwks_json, Ca, SigningKey};

    fn write_config(dir: &Path, keys: &str) -> PathBuf {
        std::fs::write(dir.join("client-ca.pem"), Ca::root("ca").unwrap().pem).unwrap();
        let key = SigningKey::es256("k").unwrap();
        std::fs::write(dir.join("jwks.json"), jwks_json(&[&key]).to_string()).unwrap();
        let path = dir.join("certbound.toml");
        std::fs::write(
            &path,
            format!(
                "grpc_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nissuer = \"https://idp.test\"\n{keys}\ntrusted_ips = [\"127.0.0.1\"]\n[proof_of_possession_mtls_from_header]\ncertificate_header_name = \"x-client-cert\"\ncertificate_header_format = \"url_encoded\"\nca_certificates = [\"client-ca.pem\"]\n"
            ),
        )
        .unwrap();
        path
    }

    #[tokio::test]
    async fn a_reload_stops_the_key_fetcher_of_an_issuer_it_removed() {
        let dir = tempfile::tempdir().unwrap();
        // Port 9 (discard) refuses connections: the fetcher keeps retrying until it is stopped.
        let path = write_config(dir.path(), "jwks_uri = \"https://127.0.0.1:9/jwks\"");
        let first = Config::load(&path).unwrap();
        let listen = (first.grpc_listen, first.admin_listen);
        let (_stop_tx, stop) = watch::channel(false);
        let mut fetchers = Fetchers {
            running: Vec::new(),
            client: reqwest::Client::new(),
            idp: first.idp_client.clone(),
            metrics: Arc::new(Metrics::new().unwrap()),
            stop,
        };
        let built = first.build(&|_| None).unwrap();
        for fetch in built.key_fetches {
            fetchers.start(fetch);
        }
        assert_eq!(fetchers.running.len(), 1);
        let removed = fetchers.running[0].task.clone();
        let policies = ArcSwap::from_pointee(built.engine);

        // Same file, reloaded: the fetcher is kept.
        apply(&path, listen, &None, &policies, &mut fetchers)
            .await
            .unwrap();
        assert_eq!(fetchers.running.len(), 1);
        assert!(!removed.is_finished());

        // The issuer's keys now come from a static file: nothing to fetch, the task stops.
        write_config(dir.path(), "jwks_file = \"jwks.json\"");
        apply(&path, listen, &None, &policies, &mut fetchers)
            .await
            .unwrap();
        assert!(fetchers.running.is_empty());
        tokio::time::timeout(Duration::from_secs(30), async {
            while !removed.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the removed issuer's fetcher is still running");
    }
}
