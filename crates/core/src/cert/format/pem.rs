//! PEM text: strict (inside `url_encoded` and base64-of-PEM) and folded (`pem`: Apache and
//! legacy nginx replace line breaks with spaces or tabs, which breaks strict PEM parsers).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::{check_der, CHAIN_LEN_CEILING};
use crate::cert::CertError;

const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
const END: &[u8] = b"-----END CERTIFICATE-----";

/// Percent-decoded per RFC 3986, never as a form: AWS ALB leaves `+`, `=` and `/` raw, and
/// turning `+` into a space would corrupt the certificate.
pub(super) fn decode_url_encoded(value: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let pem: Vec<u8> = percent_encoding::percent_decode_str(value).collect();
    decode_strict(&pem)
}

/// Every `CERTIFICATE` block. Anything but certificates and whitespace around them is refused,
/// so a value cannot smuggle other content past the decoder.
pub(super) fn decode_strict(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let mut chain = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem) {
        let cert = item.map_err(|_| CertError::Malformed)?;
        if chain.len() == CHAIN_LEN_CEILING {
            return Err(CertError::ChainTooLong);
        }
        chain.push(cert);
    }
    if chain.is_empty() {
        return Err(CertError::Malformed);
    }
    let blocks = pem.windows(11).filter(|w| w == b"-----BEGIN ").count();
    if blocks != chain.len() {
        // A non-certificate PEM section (a key, a CRL) was skipped by the iterator.
        return Err(CertError::Malformed);
    }
    for cert in &chain {
        check_der(cert.as_ref())?;
    }
    Ok(chain)
}

/// PEM whose line breaks may have become spaces or tabs: the body between the armour lines is
/// base64 with any whitespace. Text outside the blocks is refused.
pub(super) fn decode_folded(mut text: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let mut chain = Vec::new();
    loop {
        text = trim_ascii(text);
        if text.is_empty() {
            break;
        }
        if chain.len() == CHAIN_LEN_CEILING {
            return Err(CertError::ChainTooLong);
        }
        let body = text.strip_prefix(BEGIN).ok_or(CertError::Malformed)?;
        let end = find(body, END).ok_or(CertError::Malformed)?;
        let b64: Vec<u8> = body[..end]
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let der = STANDARD.decode(&b64).map_err(|_| CertError::Malformed)?;
        check_der(&der)?;
        chain.push(CertificateDer::from(der));
        text = &body[end + END.len()..];
    }
    if chain.is_empty() {
        return Err(CertError::Malformed);
    }
    Ok(chain)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn trim_ascii(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}
