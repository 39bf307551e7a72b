//! Base64 of DER: Kong's `base64_encoded` (also HAProxy, F5) and Traefik's comma-separated list.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use rustls_pki_types::CertificateDer;

use super::{pem, CHAIN_LEN_CEILING};
use crate::cert::CertError;

const STANDARD_INDIFFERENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Base64 with whitespace and missing padding tolerated (`base64` wraps at 76 columns unless
/// `tr -d '\n'` follows). Base64 of a whole PEM text, seen in the wild, is accepted too.
pub(super) fn decode_base64(value: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let bytes = base64_bytes(value)?;
    if bytes.starts_with(b"-----BEGIN") {
        return pem::decode_strict(&bytes);
    }
    split_der(&bytes)
}

const URL_SAFE_INDIFFERENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Standard alphabet, or the URL-safe one some terminators use; never a mix of both.
fn base64_bytes(value: &str) -> Result<Vec<u8>, CertError> {
    let compact: Vec<u8> = value.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    STANDARD_INDIFFERENT
        .decode(&compact)
        .or_else(|_| URL_SAFE_INDIFFERENT.decode(&compact))
        .map_err(|_| CertError::Malformed)
}

/// Traefik: `X-Forwarded-Tls-Client-Cert` is base64 DER per certificate (no armour), the chain
/// joined with `,`; Traefik v2 URL-escapes the value.
pub(super) fn decode_traefik(value: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let unescaped: String = percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .map_err(|_| CertError::Malformed)?
        .into_owned();
    let mut chain = Vec::new();
    for part in unescaped.split(',') {
        if chain.len() == CHAIN_LEN_CEILING {
            return Err(CertError::ChainTooLong);
        }
        let der = split_der(&base64_bytes(part)?)?;
        if der.len() != 1 {
            return Err(CertError::Malformed);
        }
        chain.extend(der);
    }
    Ok(chain)
}

/// Splits concatenated DER certificates.
pub(super) fn split_der(mut bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let mut chain = Vec::new();
    while !bytes.is_empty() {
        if chain.len() == CHAIN_LEN_CEILING {
            return Err(CertError::ChainTooLong);
        }
        let (rest, _) =
            x509_parser::parse_x509_certificate(bytes).map_err(|_| CertError::Malformed)?;
        let used = bytes.len() - rest.len();
        chain.push(CertificateDer::from(bytes[..used].to_vec()));
        bytes = rest;
    }
    if chain.is_empty() {
        return Err(CertError::Malformed);
    }
    Ok(chain)
}
