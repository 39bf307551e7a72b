//! certbound as an Envoy HTTP-filter dynamic module (`libcertbound_envoy.so`, `filter_name: certbound`).
//!
//! # Layout
//! - `abi`: the C ABI of Envoy 1.40 (declarations, safe handles, the exported hooks); the only
//!   module with `unsafe`, every hook behind `catch_unwind`.
//! - `certbound`: the filter: certbound's configuration, pipeline and answers over those
//!   handles (tests/e2e/test_envoy_module.py proves it through Envoy 1.40).
//!
//! `Module` below is the one filter the library exports: the hooks in `abi` call it, so swapping
//! the implementation is a change of this line, not of the ABI layer.

pub mod abi;
pub mod certbound;

/// The filter the exported hooks drive.
pub type Module = certbound::Certbound;
