//! Access-token verification: signing keys (`keys`), JWT signature and header rules (`jwt`),
//! and the registered claims checked at an injected time (`claims`).
//!
//! Trusts only keys that came from the configured issuer's JWKS. The algorithm always comes from
//! the key, never from the token alone; symmetric keys are never loaded, so HMAC-with-a-public-key
//! confusion and `alg: none` cannot verify.

mod claims;
mod jwt;
mod keys;

pub use claims::Binding;
pub(crate) use jwt::json_depth;
pub(crate) use jwt::signature_only;
pub use jwt::{verify, verify_introspected, TokenRules, VerifiedToken};
pub use keys::{KeySet, KeySetError, KeyStore, MAX_KEYS};

/// Why a token was not accepted. Each variant maps to its own deny reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token exceeds the size limit")]
    TooLarge,
    #[error("token JSON nests deeper than the limit")]
    TooDeep,
    #[error("token is not a well-formed JWS")]
    Malformed,
    #[error("no signing key matches the token's kid")]
    UnknownKey,
    #[error("algorithm not allowed for the signing key")]
    AlgorithmNotAllowed,
    #[error("signature does not verify")]
    SignatureInvalid,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("issuer does not match")]
    IssuerMismatch,
    #[error("audience does not match")]
    AudienceMismatch,
    #[error("required claim `{0}` missing or malformed")]
    MissingClaim(&'static str),
    #[error("token type not allowed")]
    TypeNotAllowed,
}
