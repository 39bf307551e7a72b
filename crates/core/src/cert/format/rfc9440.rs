//! RFC 9440: `Client-Cert` is a structured-field byte sequence (RFC 8941 §3.3.5), `:` + standard
//! base64 with padding of the DER + `:`; `Client-Cert-Chain` is a list of them, excluding the
//! leaf, in the order received.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rustls_pki_types::CertificateDer;

use super::{check_der, CHAIN_LEN_CEILING};
use crate::cert::CertError;

/// One `:base64:` item, strictly: the colons, the standard alphabet, padding.
pub(super) fn decode_item(item: &str) -> Result<CertificateDer<'static>, CertError> {
    let b64 = item
        .strip_prefix(':')
        .and_then(|s| s.strip_suffix(':'))
        .ok_or(CertError::Malformed)?;
    let der = STANDARD.decode(b64).map_err(|_| CertError::Malformed)?;
    check_der(&der)?;
    Ok(CertificateDer::from(der))
}

/// A `Client-Cert-Chain` list: items separated by `,` with optional spaces. Parameters on
/// items are not used by RFC 9440 and are refused.
pub(super) fn decode_list(value: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let mut chain = Vec::new();
    for item in value.split(',') {
        if chain.len() == CHAIN_LEN_CEILING {
            return Err(CertError::ChainTooLong);
        }
        chain.push(decode_item(item.trim_matches([' ', '\t']))?);
    }
    Ok(chain)
}
