//! certbound, the ext_authz service: Envoy's `Authorization/Check` over gRPC, answered by
//! `certbound-core`'s pipeline.
//!
//! # Layout
//!
//! - `config` (the `certbound-config` crate, shared with the Envoy module): the configuration in
//!   three steps: raw (serde, unknown keys refused) -> `Config` (validated plain data; the
//!   core's `Policy` values) -> `Config::build` (the only place that makes clients, stores and
//!   fetchers; `certbound-adapters` supplies them).
//! - `grpc`: the ext_authz v3 service: CheckRequest in, the core's decision out as a
//!   CheckResponse (never a gRPC error: a failure is a deny).
//! - `server`: the listeners, key fetchers and configuration reloads, stopped by one signal.
//! - `admin`: `/metrics`, `/healthz`, `/readyz`; `metrics`: the Prometheus registry.
//! - `otel`: `[tracing]`, one OpenTelemetry span per check, exported over OTLP.
//! - `kong`: `import-kong`, decK files to a certbound configuration and Envoy routes.
//! - `demo`: the self-contained demo (`certbound demo`).
#![forbid(unsafe_code)]

pub use certbound_config as config;

pub mod admin;
pub mod demo;
pub mod grpc;
pub mod kong;
pub mod metrics;
pub mod otel;
pub mod server;
