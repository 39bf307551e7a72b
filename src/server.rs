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
    #[error(transparent)]
    Tracing(#[from] crate::otel::TracingError),
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
    /// The files of the configuration being served, as they were when it was loaded.
    pub loaded: FileStates,
}

/// What the files a configuration was built from held when it was read; a poll that finds
/// anything else reloads.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileStates(Vec<Option<FileState>>);

impl FileStates {
    /// Take it right after `Config::load`: a change landing while the server starts (the kubelet
    /// can swap a volume at any moment) then differs from it and is reloaded at the first poll.
    pub fn of(files: &[PathBuf]) -> Self {
        Self(fingerprint(files))
    }
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
    metrics.set_policies(&built.engine);
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

    let tracing = match &config.tracing {
        Some(settings) => Some(Arc::new(crate::otel::Tracing::start(settings)?)),
        None => None,
    };
    let authz =
        AuthorizationServer::new(AuthzService::new(engine, metrics).with_tracing(tracing.clone()))
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
    if let Some(tracing) = tracing {
        // The spans of the last checks; the exporter's thread blocks, the runtime must not.
        let _ = tokio::task::spawn_blocking(move || tracing.shutdown()).await;
    }
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
    /// `rediscovery_lifetime` and `jwks_refresh_interval` the task was started with.
    intervals: (Duration, Duration),
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
        let intervals = (fetch.min_interval, fetch.refresh_interval);
        let task = tokio::spawn(jwks::run(
            fetch,
            client,
            self.metrics.clone(),
            self.stop.clone(),
        ));
        self.running.push(Running {
            source,
            store,
            intervals,
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

    /// Whether the running fetcher of `fetch.source` was started with other intervals.
    fn intervals_changed(&self, fetch: &KeyFetch) -> bool {
        self.running.iter().any(|r| {
            r.source == fetch.source && r.intervals != (fetch.min_interval, fetch.refresh_interval)
        })
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
    let mut seen = std::mem::take(&mut reload.loaded.0);
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
        // Taken before reading: a change landing while the reload runs differs from it, so the
        // next poll reloads again instead of taking the change as already applied.
        let before = fingerprint(&files);
        match apply(&reload.path, listen, &grpc_tls, &engine, &mut fetchers).await {
            Ok(new_files) => {
                fetchers.metrics.reload_ok.inc();
                fetchers.metrics.reload_last_ok.set(1);
                seen = if new_files == files {
                    before
                } else {
                    fingerprint(&new_files)
                };
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
                // Not retried until a file changes again: the same files would be refused again.
                seen = before;
            }
        }
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
    fetchers.metrics.set_policies(&built.engine);
    engine.store(Arc::new(built.engine));
    fetchers.retain(&wanted);
    // A running fetcher reads its intervals once: changed ones need a new task (same store).
    let (retimed, restart): (Vec<KeyFetch>, Vec<KeyFetch>) = restart
        .into_iter()
        .partition(|f| new_client.is_none() && fetchers.intervals_changed(f));
    for fetch in retimed {
        fetchers.restart(fetch, client.clone());
    }
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

/// What a reload poll compares, per file: the path it finally resolves to and a digest of its
/// bytes (`None`: unreadable or gone). Kubernetes updates a ConfigMap or Secret volume by writing
/// a new timestamped folder and renaming a symlink over `..data`; `certbound.toml` is itself a
/// symlink `certbound.toml -> ..data/certbound.toml` that never changes, so the link's own
/// metadata shows nothing, and the new target's size and modification time can equal the old
/// one's. The resolved path changes with every swap, the digest with every edit in place, so each
/// swap or edit is seen once and an unchanged file is never reloaded.
#[derive(Debug, PartialEq, Eq)]
struct FileState {
    target: PathBuf,
    digest: u64,
}

/// Reads every file the configuration names (the config, CA bundles, JWKS files: small files,
/// read once per poll). Polling, not a file-system watcher: a watch on the named path sees only
/// the symlink, which the kubelet never touches; one would be needed on every folder of every
/// symlink chain, re-armed after each swap.
fn fingerprint(files: &[PathBuf]) -> Vec<Option<FileState>> {
    use std::hash::{Hash, Hasher};
    files
        .iter()
        .map(|f| {
            let target = std::fs::canonicalize(f).ok()?;
            let bytes = std::fs::read(&target).ok()?;
            // Not a security boundary: whoever can write these files configures certbound anyway;
            // the digest only tells one version of a file from the next.
            let mut hasher = std::hash::DefaultHasher::new();
            bytes.hash(&mut hasher);
            Some(FileState {
                target,
                digest: hasher.finish(),
            })
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

    /// Writes `content` as `certbound.toml` of a new timestamped folder and points `..data` at it
    /// with one rename, as the kubelet updates a ConfigMap volume; returns the written file.
    #[cfg(unix)]
    fn kubelet_volume(dir: &Path, version: &str, content: &str) -> PathBuf {
        let folder = dir.join(format!("..2026_12_06_15_00_00.{version}"));
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("certbound.toml"), content).unwrap();
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(folder.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
        folder.join("certbound.toml")
    }

    #[cfg(unix)]
    #[test]
    fn a_kubelet_data_swap_is_a_change_even_when_size_and_modification_time_match() {
        let dir = tempfile::tempdir().unwrap();
        let first = kubelet_volume(dir.path(), "1", "leeway = 5\n");
        let link = dir.path().join("certbound.toml");
        std::os::unix::fs::symlink("..data/certbound.toml", &link).unwrap();
        let files = vec![link.clone()];
        let before = fingerprint(&files);
        assert!(before[0].is_some());
        assert_eq!(
            fingerprint(&files),
            before,
            "nothing changed, nothing to reload"
        );

        let link_meta = std::fs::symlink_metadata(&link).unwrap();
        let old = std::fs::metadata(&first).unwrap();
        let second = kubelet_volume(dir.path(), "2", "leeway = 7\n");
        std::fs::File::options()
            .write(true)
            .open(&second)
            .unwrap()
            .set_modified(old.modified().unwrap())
            .unwrap();
        std::fs::remove_dir_all(first.parent().unwrap()).unwrap();
        // Neither the link nor its new target tells the versions apart by metadata...
        let new = std::fs::metadata(&link).unwrap();
        assert_eq!(
            (new.len(), new.modified().unwrap()),
            (old.len(), old.modified().unwrap())
        );
        let link_now = std::fs::symlink_metadata(&link).unwrap();
        assert_eq!(link_now.modified().unwrap(), link_meta.modified().unwrap());
        // ...the fingerprint does, once.
        let after = fingerprint(&files);
        assert_ne!(after, before);
        assert_eq!(fingerprint(&files), after);

        // An edit in place that keeps size and modification time is seen too.
        std::fs::write(&second, "leeway = 9\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&second)
            .unwrap()
            .set_modified(old.modified().unwrap())
            .unwrap();
        assert_ne!(fingerprint(&files), after);
    }

    /// What `serve` starts with for `config`: the policies in force, their key fetchers, and
    /// the sender that would stop the fetchers.
    fn fetchers_of(config: &Config) -> (watch::Sender<bool>, Fetchers, Engine) {
        let (stop_tx, stop) = watch::channel(false);
        let mut fetchers = Fetchers {
            running: Vec::new(),
            client: reqwest::Client::new(),
            idp: config.idp_client.clone(),
            metrics: Arc::new(Metrics::new().unwrap()),
            stop,
        };
        let built = config.build(&|_| None).unwrap();
        for fetch in built.key_fetches {
            fetchers.start(fetch);
        }
        (stop_tx, fetchers, built.engine)
    }

    #[tokio::test]
    async fn a_reload_that_changes_the_jwks_intervals_restarts_the_fetcher_with_them_and_keeps_its_keys(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let uri = "jwks_uri = \"https://127.0.0.1:9/jwks\"";
        let path = write_config(dir.path(), uri);
        let first = Config::load(&path).unwrap();
        let listen = (first.grpc_listen, first.admin_listen);
        let (_stop_tx, mut fetchers, engine) = fetchers_of(&first);
        let (old_task, store) = (
            fetchers.running[0].task.clone(),
            fetchers.running[0].store.clone(),
        );
        let policies = ArcSwap::from_pointee(engine);

        write_config(
            dir.path(),
            &format!("{uri}\nrediscovery_lifetime = 7\njwks_refresh_interval = 60"),
        );
        apply(&path, listen, &None, &policies, &mut fetchers)
            .await
            .unwrap();
        assert_eq!(fetchers.running.len(), 1);
        assert_eq!(
            fetchers.running[0].intervals,
            (Duration::from_secs(7), Duration::from_secs(60))
        );
        assert!(Arc::ptr_eq(&fetchers.running[0].store, &store));
        tokio::time::timeout(Duration::from_secs(30), async {
            while !old_task.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the fetcher with the old intervals is still running");
    }

    #[tokio::test]
    async fn a_reload_stops_the_key_fetcher_of_an_issuer_it_removed() {
        let dir = tempfile::tempdir().unwrap();
        // Port 9 (discard) refuses connections: the fetcher keeps retrying until it is stopped.
        let path = write_config(dir.path(), "jwks_uri = \"https://127.0.0.1:9/jwks\"");
        let first = Config::load(&path).unwrap();
        let listen = (first.grpc_listen, first.admin_listen);
        let (_stop_tx, mut fetchers, engine) = fetchers_of(&first);
        assert_eq!(fetchers.running.len(), 1);
        let removed = fetchers.running[0].task.clone();
        let policies = ArcSwap::from_pointee(engine);

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
