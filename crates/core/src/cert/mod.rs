//! Client certificates: decoding from a header or Envoy's peer-certificate attribute, chain
//! verification against configured trust anchors, and the RFC 8705 thumbprint.
//!
//! Trusts nothing it is given: every value here comes from the network. Guarantees: a
//! `VerifiedCert` only exists for a leaf that decoded cleanly and, where a trust store is
//! configured, chained to it at the injected time with client-auth usage.

mod format;
mod spiffe;
mod verify;

pub use format::{
    decode, decode_chain, decode_mesh, decode_with, HeaderFormat, MeshPeer, Presented,
    XfccElements, CHAIN_LEN_CEILING,
};
pub use spiffe::{SpiffeError, SpiffePattern};
pub use verify::{IssuerRef, TrustStore, TrustStoreError, Validity};

use rustls_pki_types::CertificateDer;
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
    #[error("certificate chain is longer than allowed")]
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
    #[error("only a hash of the certificate was sent, but its chain must be verified")]
    Unverifiable,
    #[error("the XFCC element read was not written by the local mesh sidecar")]
    NotLocalHop,
}

/// A certificate that passed every check the policy asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedCert {
    pub thumbprint: Thumbprint,
    /// The leaf's issuer on the verified path (for revocation checks); `None` when no trust
    /// store verified the chain.
    pub issuer: Option<IssuerRef>,
    /// When this result holds: the verified path's dates, or `Validity::ALWAYS` when no trust
    /// store verified the chain.
    pub validity: Validity,
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

/// Verifies what a header presented: with a trust store, the chain (plus `intermediates` from
/// a separate chain header, `max_chain` certificates in all) must verify at `now` (seconds since
/// the epoch). Without one (Envoy
/// verified the peer certificate in its own handshake, or an XFCC hop did) only the thumbprint
/// is taken: from the leaf, or from XFCC's `Hash` when no certificate was sent.
pub fn verify(
    presented: &Presented,
    intermediates: &[CertificateDer<'static>],
    trust: Option<&TrustStore>,
    max_chain: usize,
    now: u64,
) -> Result<VerifiedCert, CertError> {
    if presented.chain.len() + intermediates.len() > max_chain {
        return Err(CertError::ChainTooLong);
    }
    let (thumbprint, issuer, validity) = match (presented.chain.first(), trust) {
        (Some(leaf), Some(trust)) => {
            let (issuer, validity) = if intermediates.is_empty() {
                trust.verify_path_validity(&presented.chain, now)?
            } else {
                let full: Vec<CertificateDer<'static>> = presented
                    .chain
                    .iter()
                    .chain(intermediates)
                    .cloned()
                    .collect();
                trust.verify_path_validity(&full, now)?
            };
            (thumbprint(leaf.as_ref()), Some(issuer), validity)
        }
        (Some(leaf), None) => (thumbprint(leaf.as_ref()), None, Validity::ALWAYS),
        (None, Some(_)) => return Err(CertError::Unverifiable),
        (None, None) => (
            presented.hash.ok_or(CertError::Malformed)?,
            None,
            Validity::ALWAYS,
        ),
    };
    Ok(VerifiedCert {
        thumbprint,
        issuer,
        validity,
    })
}
