//! The admin HTTP listener: `/metrics`, `/healthz` (the process answers) and `/readyz` (every
//! issuer's signing keys are loaded).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use arc_swap::ArcSwap;

use crate::metrics::Metrics;
use certbound_core::engine::Engine;
use certbound_core::token::KeyStore;

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub engine: Arc<ArcSwap<Engine>>,
}

impl AdminState {
    /// Every key store the current policies verify JWTs with.
    pub fn key_stores(&self) -> Vec<Arc<KeyStore>> {
        self.engine.load().key_stores()
    }

    pub fn is_ready(&self) -> bool {
        self.key_stores().iter().all(|s| s.is_ready())
    }
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "signing keys not loaded\n")
    }
}
