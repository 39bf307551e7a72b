//! The core's connections to the outside world: JWKS discovery and fetching into the core's key
//! stores, introspection over HTTPS, OCSP/CRL fetching, the Redis replay store, and the one HTTP
//! client builder they all use.

pub mod http;
pub mod introspection;
pub mod jwks;
pub mod replay;
