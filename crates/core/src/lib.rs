//! certbound's core: the request path of an authorizer for RFC 8705 certificate-bound and
//! RFC 9449 DPoP-bound access tokens, over plain data. It reads no configuration file, opens no
//! socket and knows no RPC framework: callers (the ext_authz service, the Envoy module) hand it
//! a policy and a request, and it answers a decision.
//!
//! # Layout
//!
//! One check, in the order `pipeline::check` runs it:
//!
//! - `engine`: the policies in force, each a plain-data `policy::Policy` paired with its live
//!   services; picks the policy a request names, or the one `routes` selects by host, path and
//!   method (Kong's router precedence, which the Kong importer reuses).
//! - `extract`: the access token (Bearer or DPoP scheme) and the certificate header from the
//!   request's headers.
//! - `cert`: decodes the certificate header (one file per format under `cert/format`) and
//!   verifies the chain against the policy's trust store; for a mesh policy, reads the element
//!   the local sidecar appended to XFCC and matches the peer's SPIFFE ID (`cert/spiffe`).
//! - `token`: verifies a JWT against the issuer's key set (`token/keys`: the key store an
//!   adapter fills), or the claims of an introspection answer (`introspection`).
//! - `bind`: `cnf.x5t#S256` against the certificate's thumbprint.
//! - `dpop`: the proof (`dpop/proof`), server nonces (`dpop/nonce`), the `jti` replay store
//!   (`dpop/replay`), and DPoP's rules.
//! - `revocation`: OCSP and CRL status of the client certificate (`revocation/ocsp`,
//!   `revocation/crl`), asked last.
//! - `decision`: allow or deny, each deny reason with all its facts in one table;
//!   `pipeline/deny` converts every layer's error into a reason.
//! - `answer`: what the client and the upstream see of a decision (status, challenges, body,
//!   upstream headers, access-log fields), the same for every face; `log_fields` names the
//!   access-log fields (`dynamic_metadata`); `correlation` reads the request and trace ids
//!   they carry, only when well formed.
//! - `cache`: verified tokens and certificates, per policy.
//! - `resource`: RFC 9728 protected-resource metadata, published per policy and answered by
//!   the faces before any check.
//!
//! Ground floor: `policy` (with `defaults`, one constant per configuration key, and `names`, the
//! error of an unknown mode spelling) and `clock`. The outside world is reached only through
//! traits defined here: `introspection::Introspect`, `revocation::Fetch`,
//! `dpop::ReplayBackend`, and the `token::KeyStore` an adapter publishes keys into.
//! `fixtures` holds the demo's throw-away PKI, and with the `test-util` feature the helpers of
//! the tests, benchmarks and fuzz targets.

pub mod answer;
pub mod bind;
pub mod cache;
pub mod cert;
pub mod clock;
pub mod correlation;
pub mod decision;
pub mod defaults;
pub mod dpop;
pub mod engine;
pub mod extract;
pub mod fixtures;
pub mod introspection;
pub mod log_fields;
pub mod names;
pub mod pipeline;
pub mod policy;
pub mod resource;
pub mod revocation;
pub mod routes;
pub mod token;
