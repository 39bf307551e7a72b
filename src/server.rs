//! Serving: the gRPC listener (ext_authz + gRPC health), the admin listener, and the key
//! fetchers, all stopped by one shutdown signal. Listeners are bound by the caller, so tests
//! bind port 0 and run in parallel.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::grpc::AuthzService;
use crate::jwks;
use crate::metrics::Metrics;

/// Largest CheckRequest accepted. Headers are capped far below this; the cap bounds memory
/// before any of our own checks run.
pub const MAX_CHECK_REQUEST_BYTES: usize = 1024 * 1024;
const AUTHZ_SERVICE_NAME: &str = "envoy.service.auth.v3.Authorization";

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

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight checks finish and
/// returns.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let metrics = Arc::new(Metrics::new()?);
    let policies = Arc::new(config.policies);
    for checker in policies.revocation_checkers() {
        checker.observe(metrics.clone());
    }
    let (stop_tx, stop_rx) = watch::channel(false);

    if !config.key_fetches.is_empty() {
        let client = jwks::http_client(&config.idp_client)?;
        for fetch in config.key_fetches {
            tokio::spawn(jwks::run(
                fetch,
                client.clone(),
                metrics.clone(),
                stop_rx.clone(),
            ));
        }
    }

    let admin_state = AdminState {
        metrics: metrics.clone(),
        key_stores: policies.key_stores(),
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(track_readiness(
        health,
        admin_state.clone(),
        stop_rx.clone(),
    ));

    let authz = AuthorizationServer::new(AuthzService::new(policies, metrics))
        .max_decoding_message_size(MAX_CHECK_REQUEST_BYTES);

    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let grpc = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(authz)
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(listeners.grpc),
            stopped(stop_rx.clone()),
        );
    let admin = axum::serve(listeners.admin, admin::router(admin_state))
        .with_graceful_shutdown(stopped(stop_rx.clone()));

    let (grpc, admin) = tokio::join!(grpc, async { admin.await.map_err(ServeError::Admin) });
    grpc?;
    admin?;
    Ok(())
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
