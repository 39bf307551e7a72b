//! certbound as an Envoy HTTP-filter dynamic module (`libcertbound_envoy.so`, `filter_name: certbound`).
//!
//! # Layout
//! - `abi`: the C ABI of Envoy 1.40 (declarations, safe handles, the exported hooks); the only
//!   module with `unsafe`, every hook behind `catch_unwind`.
//! - `filter`: what the filter does with those handles. For now a spike that proves each
//!   callback end to end (tests/e2e/test_envoy_module.py); certbound's pipeline replaces it.
//!
//! `Module` below is the one filter the library exports: the hooks in `abi` call it, so swapping
//! the implementation is a change of this line, not of the ABI layer.

pub mod abi;
pub mod filter;

/// The filter the exported hooks drive.
pub type Module = filter::Spike;
