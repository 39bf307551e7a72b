//! certbound: an Envoy ext_authz server that enforces RFC 8705 certificate-bound access tokens.
//!
//! The per-request data flow, one module per step:
//! `extract` (credentials from the CheckRequest) -> `cert` (decode + chain check) ->
//! `token` (JWT verification against the issuer's keys) -> `bind` (cnf.x5t#S256) ->
//! `decision` (allow / deny with a reason). `cache` keeps verified tokens and certificates per
//! policy. `pipeline` runs the steps over plain data; `grpc`,
//! `admin`, `metrics`, `jwks` and `server` are the adapters around it.
#![forbid(unsafe_code)]

// The adapters name the core by the crate name it will have on its own.
extern crate self as certbound_core;

pub mod adapters;
pub mod admin;
pub mod bind;
pub mod cache;
pub mod cert;
pub mod clock;
pub mod config;
pub mod decision;
pub mod defaults;
pub mod demo;
pub mod dpop;
pub mod engine;
pub mod extract;
pub mod fixtures;
pub mod grpc;
pub mod introspection;
pub mod kong;
pub mod metrics;
pub mod names;
pub mod pipeline;
pub mod policy;
pub mod revocation;
pub mod server;
pub mod token;
