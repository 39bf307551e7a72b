//! Client certificates: decoding from a header or Envoy's peer-certificate attribute, chain
//! verification against configured trust anchors, and the RFC 8705 thumbprint.
//!
//! Trusts nothing it is given: every value here comes from the network. Guarantees: a
//! `VerifiedCert` only exists for a leaf that decoded cleanly and, where a trust store is
//! configured, chained to it at the injected time with client-auth usage.

mod format;
mod verify;

pub use format::{decode, HeaderFormat, MAX_CHAIN_LEN};
pub use verify::{IssuerRef, TrustStore, TrustStoreError};

use sha2::{Digest, Sha256};

/// A SHA-256 thumbprint of a certificate's DER (the RFC 8705 `x5t#S256` before base64url).
pub type Thumbprint = [u8; 32];

/// Why a certificate was not accepted. Each variant maps to its own deny reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("certificate header is present more than once")]
    Duplicate,
    #[error("certificate header exceeds the size limit")]
    TooLarge,
    #[error("certificate value cannot be decoded")]
    Malformed,
    #[error("certificate chain is longer than {MAX_CHAIN_LEN}")]
    ChainTooLong,
    #[error("certificate does not chain to a trusted CA")]
    Untrusted,
    #[error("certificate expired")]
    Expired,
    #[error("certificate not yet valid")]
    NotYetValid,
    #[error("certificate not valid for TLS client authentication")]
    NotForClientAuth,
    #[error("certificate failed verification")]
    Invalid,
}

/// A certificate that passed every check the policy asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedCert {
    pub thumbprint: Thumbprint,
}

/// SHA-256 of a DER certificate.
pub fn thumbprint(der: &[u8]) -> Thumbprint {
    Sha256::digest(der).into()
}

/// The RFC 8705 `x5t#S256` string: base64url without padding of the SHA-256 of the DER.
pub fn x5t_s256(der: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(thumbprint(der))
}

/// Decodes `value` in `format` and, if a trust store is given, verifies the chain at `now`
/// (seconds since the epoch). Without a trust store (Envoy already verified the peer certificate
/// during its own TLS handshake) only the decoding and thumbprint are done.
pub fn verify(
    value: &str,
    format: HeaderFormat,
    trust: Option<&TrustStore>,
    now: u64,
) -> Result<VerifiedCert, CertError> {
    let chain = decode(value, format)?;
    let leaf = chain.first().ok_or(CertError::Malformed)?;
    if let Some(trust) = trust {
        trust.verify(&chain, now)?;
    }
    Ok(VerifiedCert {
        thumbprint: thumbprint(leaf.as_ref()),
    })
}
