//! One small decoder per certificate header format. Each returns the chain as DER, leaf first.
//!
//! - `base64_encoded` (Kong): base64 of the leaf's DER, no PEM armour, as built by
//!   `openssl x509 -outform DER | base64 | tr -d '\n'`. Whitespace and missing padding are
//!   tolerated. Intermediates may follow as further DER certificates in the same decoded bytes.
//!   Base64 of a whole PEM text is also seen in the wild and accepted.
//! - `url_encoded` (Kong; nginx `$ssl_client_escaped_cert`, AWS ALB, Envoy's
//!   `attributes.source.certificate`): the PEM text, armour included, percent-encoded.
//!   Decoded per RFC 3986, never as a form: ALB leaves `+`, `=` and `/` raw, and turning `+`
//!   into a space would corrupt the certificate.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::CertError;

/// The longest chain accepted in one value (leaf plus intermediates).
pub const MAX_CHAIN_LEN: usize = 5;

/// How the certificate is carried in the header (Kong's `certificate_header_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderFormat {
    Base64Encoded,
    UrlEncoded,
}

impl HeaderFormat {
    /// Every format, for tests and fuzzing that must cover them all.
    pub const ALL: [HeaderFormat; 2] = [Self::Base64Encoded, Self::UrlEncoded];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Base64Encoded => "base64_encoded",
            Self::UrlEncoded => "url_encoded",
        }
    }
}

const STANDARD_INDIFFERENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes a header value into a DER chain, leaf first.
pub fn decode(
    value: &str,
    format: HeaderFormat,
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(CertError::Malformed);
    }
    match format {
        HeaderFormat::Base64Encoded => decode_base64(value),
        HeaderFormat::UrlEncoded => decode_url_encoded(value),
    }
}

fn decode_base64(value: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let compact: Vec<u8> = value.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let bytes = STANDARD_INDIFFERENT
        .decode(&compact)
        .map_err(|_| CertError::Malformed)?;
    if bytes.starts_with(b"-----BEGIN") {
        return decode_pem(&bytes);
    }
    split_der(&bytes)
}

fn decode_url_encoded(value: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let pem: Vec<u8> = percent_encoding::percent_decode_str(value).collect();
    decode_pem(&pem)
}

/// Parses every `CERTIFICATE` block. Anything but certificates and whitespace around them is
/// refused, so a value cannot smuggle other content past the decoder.
fn decode_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let mut chain = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem) {
        let cert = item.map_err(|_| CertError::Malformed)?;
        if chain.len() == MAX_CHAIN_LEN {
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

/// Splits concatenated DER certificates.
fn split_der(mut bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let mut chain = Vec::new();
    while !bytes.is_empty() {
        if chain.len() == MAX_CHAIN_LEN {
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

/// A PEM block's body must itself be exactly one well-formed certificate.
fn check_der(der: &[u8]) -> Result<(), CertError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], _)) => Ok(()),
        _ => Err(CertError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::x5t_s256;
    use rcgen::{CertificateParams, KeyPair};

    fn cert_pem() -> (String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["client.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), cert.der().to_vec())
    }

    /// nginx `$ssl_client_escaped_cert`: spaces, newlines, `+`, `/` and `=` all escaped.
    fn nginx_escape(pem: &str) -> String {
        const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        percent_encoding::utf8_percent_encode(pem, SET).to_string()
    }

    /// AWS ALB `X-Amzn-Mtls-Clientcert`: URL-encoded PEM that leaves `+`, `=` and `/` raw.
    fn alb_escape(pem: &str) -> String {
        pem.replace(' ', "%20").replace('\n', "%0A")
    }

    #[test]
    fn url_encoded_decodes_nginx_escaped_pem() {
        let (pem, der) = cert_pem();
        let chain = decode(&nginx_escape(&pem), HeaderFormat::UrlEncoded).unwrap();
        assert_eq!(chain.len(), 1);
        assert_eq!(chain[0].as_ref(), der.as_slice());
    }

    #[test]
    fn url_encoded_keeps_raw_plus_from_alb() {
        // Generate until the base64 body contains a '+': form decoding would turn it into a
        // space and corrupt the certificate.
        let (pem, der) = loop {
            let (pem, der) = cert_pem();
            if pem.contains('+') {
                break (pem, der);
            }
        };
        let value = alb_escape(&pem);
        assert!(value.contains('+'));
        let chain = decode(&value, HeaderFormat::UrlEncoded).unwrap();
        assert_eq!(chain[0].as_ref(), der.as_slice());
    }

    #[test]
    fn url_encoded_decodes_the_envoy_1_40_sample() {
        let value = "-----BEGIN%20CERTIFICATE-----%0AMIICEzCCAbmgAwIBAgIUc%2B7DmF%2BCl5UszY8QTH6oGG0%2BA%2FcwCgYIKoZIzj0EAwIw%0ATzEaMBgGA1UECgwRY2VydGJvdW5kIGhhcm5lc3MxMTAvBgNVBAMMKGNlcnRib3Vu%0AZCBoYXJuZXNzIGNsaWVudCBpbnRlcm1lZGlhdGUgQ0EwHhcNMjYxMTI4MDEyMjEx%0AWhcNMjYxMjI4MDEyMjExWjAsMRowGAYDVQQKDBFjZXJ0Ym91bmQgaGFybmVzczEO%0AMAwGA1UEAwwFYWxpY2UwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQnErGEcET7%0AOJOTVgGnVMFAw2JR0TL4OfGc4z%2F4XFjL%2FkmrI7RUIVdLJpV5VKlX7o%2BkKydZZkVQ%0AZxnfWIg%2BQDpQo4GVMIGSMAwGA1UdEwEB%2FwQCMAAwDgYDVR0PAQH%2FBAQDAgeAMBMG%0AA1UdJQQMMAoGCCsGAQUFBwMCMB0GA1UdEQQWMBSCEmFsaWNlLmNsaWVudHMudGVz%0AdDAfBgNVHSMEGDAWgBRTPerL2c7U8uZBoQqB6XtKlgm0KDAdBgNVHQ4EFgQU5TTT%0AhatPL5sDLPhzVXht3j%2F6LNkwCgYIKoZIzj0EAwIDSAAwRQIhAOuGFIresCOqirgD%0AuuG6F8qtQatqpNpvLpIF8BCySkPDAiBL5i2XIjy%2BRUCwP2upYaC2UbhhPr4ELSXm%0Augn6d9NJRA%3D%3D%0A-----END%20CERTIFICATE-----%0A";
        let chain = decode(value, HeaderFormat::UrlEncoded).unwrap();
        // The token in the same captured request is bound to this value.
        assert_eq!(
            x5t_s256(chain[0].as_ref()),
            "hBWQVGeGj9eqCxJve2nO5qbn3BdbWN3zeB8F1ClK1p0"
        );
    }

    #[test]
    fn url_encoded_carries_intermediates_after_the_leaf() {
        let (leaf, leaf_der) = cert_pem();
        let (inter, inter_der) = cert_pem();
        let chain = decode(&nginx_escape(&(leaf + &inter)), HeaderFormat::UrlEncoded).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0].as_ref(), leaf_der.as_slice());
        assert_eq!(chain[1].as_ref(), inter_der.as_slice());
    }

    #[test]
    fn url_encoded_refuses_a_private_key_section() {
        let (pem, _) = cert_pem();
        let key = KeyPair::generate().unwrap().serialize_pem();
        let err = decode(&nginx_escape(&(pem + &key)), HeaderFormat::UrlEncoded).unwrap_err();
        assert_eq!(err, CertError::Malformed);
    }

    #[test]
    fn base64_encoded_decodes_kong_tutorial_form() {
        use base64::engine::general_purpose::STANDARD;
        let (_, der) = cert_pem();
        let value = STANDARD.encode(&der);
        let chain = decode(&value, HeaderFormat::Base64Encoded).unwrap();
        assert_eq!(chain[0].as_ref(), der.as_slice());
    }

    #[test]
    fn base64_encoded_tolerates_line_breaks_and_missing_padding() {
        use base64::engine::general_purpose::STANDARD;
        let (_, der) = loop {
            let (p, d) = cert_pem();
            if d.len() % 3 != 0 {
                break (p, d);
            }
        };
        let encoded = STANDARD.encode(&der);
        let unpadded = encoded.trim_end_matches('=');
        let folded: String = unpadded
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let chain = decode(&folded, HeaderFormat::Base64Encoded).unwrap();
        assert_eq!(chain[0].as_ref(), der.as_slice());
    }

    #[test]
    fn base64_encoded_accepts_base64_of_pem() {
        use base64::engine::general_purpose::STANDARD;
        let (pem, der) = cert_pem();
        let chain = decode(&STANDARD.encode(pem), HeaderFormat::Base64Encoded).unwrap();
        assert_eq!(chain[0].as_ref(), der.as_slice());
    }

    #[test]
    fn base64_encoded_carries_intermediates_as_concatenated_der() {
        use base64::engine::general_purpose::STANDARD;
        let (_, a) = cert_pem();
        let (_, b) = cert_pem();
        let chain = decode(
            &STANDARD.encode([a.clone(), b.clone()].concat()),
            HeaderFormat::Base64Encoded,
        )
        .unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1].as_ref(), b.as_slice());
    }

    #[test]
    fn garbage_is_malformed_in_every_format() {
        for format in [HeaderFormat::Base64Encoded, HeaderFormat::UrlEncoded] {
            for value in [
                "",
                "   ",
                "not a cert",
                "%ZZ",
                "AAAA",
                "-----BEGIN CERTIFICATE-----",
            ] {
                assert_eq!(
                    decode(value, format).unwrap_err(),
                    CertError::Malformed,
                    "{value:?}"
                );
            }
        }
    }

    #[test]
    fn truncated_der_is_malformed() {
        use base64::engine::general_purpose::STANDARD;
        let (_, der) = cert_pem();
        let value = STANDARD.encode(&der[..der.len() - 10]);
        assert_eq!(
            decode(&value, HeaderFormat::Base64Encoded).unwrap_err(),
            CertError::Malformed
        );
    }

    #[test]
    fn chains_longer_than_the_cap_are_refused() {
        let (pem, _) = cert_pem();
        let long = pem.repeat(MAX_CHAIN_LEN + 1);
        assert_eq!(
            decode(&nginx_escape(&long), HeaderFormat::UrlEncoded).unwrap_err(),
            CertError::ChainTooLong
        );
    }
}
