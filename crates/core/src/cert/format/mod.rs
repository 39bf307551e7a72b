//! One small decoder per certificate header format. Each turns a header value into what the
//! client presented: its chain as DER (leaf first) and/or, for Envoy's XFCC, the SHA-256 of the
//! leaf alone.
//!
//! | format | who sends it | value |
//! |---|---|---|
//! | `base64_encoded` (Kong) | Kong's tutorial, HAProxy `ssl_c_der,base64`, F5 `[b64encode [SSL::cert 0]]` | base64 of the DER, no armour; intermediates as further concatenated DER |
//! | `url_encoded` (Kong) | nginx `$ssl_client_escaped_cert`, AWS ALB `X-Amzn-Mtls-Clientcert(-Leaf)`, Envoy's peer certificate | PEM, armour included, percent-encoded (RFC 3986; `+` stays `+`) |
//! | `pem` | Apache `%{SSL_CLIENT_CERT}s`, legacy nginx `$ssl_client_cert` | PEM whose line breaks were folded into spaces or tabs |
//! | `rfc9440` | Cloudflare, Google Cloud LB, RFC 9440 terminators | `Client-Cert: :<base64 DER>:` (chain in `Client-Cert-Chain`) |
//! | `xfcc` | Envoy / Istio `x-forwarded-client-cert` | `Key=Value;...` per hop, `,` between hops; the last hop's `Cert`/`Chain` (URL-encoded PEM) and `Hash` (hex SHA-256) |
//! | `traefik` | Traefik `X-Forwarded-Tls-Client-Cert` | base64 DER per certificate, `,` between them, URL-escaped (v2) |
//! | `auto` | operators who do not know | sniffed per value; never the default |
//!
//! Envoy joins a header sent twice with `,`. Where a format has no comma of its own, a comma
//! means "sent twice" and is refused. `xfcc` refuses a second element unless `xfcc_elements =
//! "last"` (see xfcc.rs); `traefik` uses commas between certificates, so there the terminator
//! must strip client-sent copies (docs/certificate-headers.md, "Trusting the header"). `auto`
//! cannot tell a separator from a joined duplicate, so it refuses every comma outside an XFCC
//! quoted value.

mod der;
mod pem;
mod rfc9440;
mod xfcc;

pub use xfcc::{MeshPeer, XfccElements};

use rustls_pki_types::CertificateDer;

use super::{CertError, Thumbprint};
use crate::names::UnknownName;

/// The most certificates a decoder parses from one value, whatever the configured limit: it
/// bounds the parsing work before any limit is applied.
pub const CHAIN_LEN_CEILING: usize = 10;

/// How the certificate is carried in the header (Kong's `certificate_header_format`, plus the
/// formats other terminators use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderFormat {
    Base64Encoded,
    UrlEncoded,
    Pem,
    Rfc9440,
    Xfcc,
    Traefik,
    Auto,
}

impl HeaderFormat {
    /// Every format, for tests and fuzzing that must cover them all.
    pub const ALL: [HeaderFormat; 7] = [
        Self::Base64Encoded,
        Self::UrlEncoded,
        Self::Pem,
        Self::Rfc9440,
        Self::Xfcc,
        Self::Traefik,
        Self::Auto,
    ];

    /// The spellings of `ALL`, in its order.
    pub const NAMES: [&'static str; 7] = [
        Self::Base64Encoded.as_str(),
        Self::UrlEncoded.as_str(),
        Self::Pem.as_str(),
        Self::Rfc9440.as_str(),
        Self::Xfcc.as_str(),
        Self::Traefik.as_str(),
        Self::Auto.as_str(),
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Base64Encoded => "base64_encoded",
            Self::UrlEncoded => "url_encoded",
            Self::Pem => "pem",
            Self::Rfc9440 => "rfc9440",
            Self::Xfcc => "xfcc",
            Self::Traefik => "traefik",
            Self::Auto => "auto",
        }
    }

    /// Other terminators' names for formats that really are the same decoder: `haproxy` and
    /// `f5` send base64 DER; `aws_alb` sends URL-encoded PEM; `apache` sends PEM.
    pub const ALIASES: [(&'static str, HeaderFormat); 4] = [
        ("haproxy", Self::Base64Encoded),
        ("f5", Self::Base64Encoded),
        ("aws_alb", Self::UrlEncoded),
        ("apache", Self::Pem),
    ];
    const ALIAS_NAMES: [&'static str; 4] = [
        Self::ALIASES[0].0,
        Self::ALIASES[1].0,
        Self::ALIASES[2].0,
        Self::ALIASES[3].0,
    ];

    /// What `certificate_header_format` accepts, for messages.
    pub fn expected() -> String {
        crate::names::list(&Self::NAMES, &Self::ALIAS_NAMES)
    }
}

impl std::str::FromStr for HeaderFormat {
    type Err = UnknownName;

    /// The config value: a format's name or one of its `ALIASES`.
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .or_else(|| Self::ALIASES.iter().find(|(a, _)| *a == s).map(|(_, f)| *f))
            .ok_or_else(|| UnknownName::new(s, &Self::NAMES).with_aliases(&Self::ALIAS_NAMES))
    }
}

/// What a header value carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    /// Leaf first. Empty only when an XFCC element carried a `Hash` and no `Cert`.
    pub chain: Vec<CertificateDer<'static>>,
    /// SHA-256 of the leaf as the sender stated it (XFCC `Hash`). When `chain` is not empty it
    /// has been checked against the leaf.
    pub hash: Option<Thumbprint>,
}

impl Presented {
    fn chain(chain: Vec<CertificateDer<'static>>) -> Self {
        Self { chain, hash: None }
    }
}

/// Decodes a header value, leaf first; an XFCC value must hold exactly one element.
pub fn decode(value: &str, format: HeaderFormat) -> Result<Presented, CertError> {
    decode_with(value, format, XfccElements::One)
}

/// Decodes a header value, leaf first, reading `xfcc` values as `elements` says. `auto` always
/// reads XFCC as one element: sniffing is no place to accept what was not asked for.
pub fn decode_with(
    value: &str,
    format: HeaderFormat,
    elements: XfccElements,
) -> Result<Presented, CertError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(CertError::Malformed);
    }
    let (format, elements) = match format {
        HeaderFormat::Auto => {
            let sniffed = sniff(value);
            if sniffed == HeaderFormat::Traefik {
                // A comma-joined Traefik chain and a joined duplicate look alike: refused, as
                // in the formats without commas.
                single(value)?;
            }
            (sniffed, XfccElements::One)
        }
        f => (f, elements),
    };
    match format {
        HeaderFormat::Base64Encoded => single(value)
            .and_then(der::decode_base64)
            .map(Presented::chain),
        HeaderFormat::UrlEncoded => single(value)
            .and_then(pem::decode_url_encoded)
            .map(Presented::chain),
        HeaderFormat::Pem => single(value)
            .and_then(|v| pem::decode_folded(v.as_bytes()))
            .map(Presented::chain),
        HeaderFormat::Rfc9440 => single(value)
            .and_then(rfc9440::decode_item)
            .map(|der| Presented::chain(vec![der])),
        HeaderFormat::Traefik => der::decode_traefik(value).map(Presented::chain),
        HeaderFormat::Xfcc => xfcc::decode(value, elements),
        // `sniff` never answers Auto.
        HeaderFormat::Auto => Err(CertError::Malformed),
    }
}

/// Reads the element the local inbound mesh sidecar appended to `x-forwarded-client-cert`
/// (`APPEND_FORWARD`); `local` is the local workload's SPIFFE ID, which the element's `By` must
/// name. See `xfcc::decode_mesh` for how the element is told from what the caller sent.
pub fn decode_mesh(value: &str, local: Option<&str>) -> Result<MeshPeer, CertError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(CertError::Malformed);
    }
    xfcc::decode_mesh(value, local)
}

/// Decodes a separate chain header (`certificate_chain_header_name`): intermediates only, in
/// the same format as the certificate header. For `rfc9440` that is `Client-Cert-Chain`, a
/// structured-field list, so commas separate entries there.
pub fn decode_chain(
    value: &str,
    format: HeaderFormat,
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let value = value.trim();
    let sniffed = match format {
        HeaderFormat::Auto => sniff(value),
        f => f,
    };
    match sniffed {
        HeaderFormat::Rfc9440 => rfc9440::decode_list(value),
        HeaderFormat::Xfcc => Err(CertError::Malformed),
        // `auto` keeps its own guards (a comma-joined value is a duplicate).
        _ if format == HeaderFormat::Auto => decode(value, HeaderFormat::Auto).map(|p| p.chain),
        f => decode(value, f).map(|p| p.chain),
    }
}

/// One well-formed certificate, nothing after it. Every decoder ends here, whatever encoding
/// carried the DER.
fn check_der(der: &[u8]) -> Result<(), CertError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], _)) => Ok(()),
        _ => Err(CertError::Malformed),
    }
}

/// A format whose values never contain a comma: a comma means the header arrived twice.
fn single(value: &str) -> Result<&str, CertError> {
    if value.contains(',') {
        Err(CertError::Duplicate)
    } else {
        Ok(value)
    }
}

/// Picks the format from the value's shape.
fn sniff(value: &str) -> HeaderFormat {
    let looks_xfcc = value.split([';', ',']).any(|kv| {
        let key = kv.split('=').next().unwrap_or("").trim();
        ["Hash", "Cert", "Chain", "By", "Subject", "URI", "DNS"]
            .iter()
            .any(|k| k.eq_ignore_ascii_case(key) && kv.contains('='))
    });
    if value.starts_with(':') {
        HeaderFormat::Rfc9440
    } else if value.starts_with("-----BEGIN%20")
        || value
            .get(..3)
            .is_some_and(|p| p.eq_ignore_ascii_case("%2D"))
    {
        HeaderFormat::UrlEncoded
    } else if value.starts_with("-----BEGIN") {
        HeaderFormat::Pem
    } else if looks_xfcc {
        HeaderFormat::Xfcc
    } else if value.contains(',') || value.contains('%') {
        HeaderFormat::Traefik
    } else {
        HeaderFormat::Base64Encoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::{thumbprint, x5t_s256};

    use base64::Engine;

    /// The chain a value decodes to.
    fn dec(value: &str, format: HeaderFormat) -> Result<Vec<CertificateDer<'static>>, CertError> {
        decode(value, format).map(|p| p.chain)
    }
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
        let chain = dec(&nginx_escape(&pem), HeaderFormat::UrlEncoded).unwrap();
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
        let chain = dec(&value, HeaderFormat::UrlEncoded).unwrap();
        assert_eq!(chain[0].as_ref(), der.as_slice());
    }

    #[test]
    fn url_encoded_decodes_the_envoy_1_40_sample() {
        let value = "-----BEGIN%20CERTIFICATE-----%0AMIICEzCCAbmgAwIBAgIUc%2B7DmF%2BCl5UszY8QTH6oGG0%2BA%2FcwCgYIKoZIzj0EAwIw%0ATzEaMBgGA1UECgwRY2VydGJvdW5kIGhhcm5lc3MxMTAvBgNVBAMMKGNlcnRib3Vu%0AZCBoYXJuZXNzIGNsaWVudCBpbnRlcm1lZGlhdGUgQ0EwHhcNMjYxMTI4MDEyMjEx%0AWhcNMjYxMjI4MDEyMjExWjAsMRowGAYDVQQKDBFjZXJ0Ym91bmQgaGFybmVzczEO%0AMAwGA1UEAwwFYWxpY2UwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQnErGEcET7%0AOJOTVgGnVMFAw2JR0TL4OfGc4z%2F4XFjL%2FkmrI7RUIVdLJpV5VKlX7o%2BkKydZZkVQ%0AZxnfWIg%2BQDpQo4GVMIGSMAwGA1UdEwEB%2FwQCMAAwDgYDVR0PAQH%2FBAQDAgeAMBMG%0AA1UdJQQMMAoGCCsGAQUFBwMCMB0GA1UdEQQWMBSCEmFsaWNlLmNsaWVudHMudGVz%0AdDAfBgNVHSMEGDAWgBRTPerL2c7U8uZBoQqB6XtKlgm0KDAdBgNVHQ4EFgQU5TTT%0AhatPL5sDLPhzVXht3j%2F6LNkwCgYIKoZIzj0EAwIDSAAwRQIhAOuGFIresCOqirgD%0AuuG6F8qtQatqpNpvLpIF8BCySkPDAiBL5i2XIjy%2BRUCwP2upYaC2UbhhPr4ELSXm%0Augn6d9NJRA%3D%3D%0A-----END%20CERTIFICATE-----%0A";
        let chain = dec(value, HeaderFormat::UrlEncoded).unwrap();
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
        let chain = dec(&nginx_escape(&(leaf + &inter)), HeaderFormat::UrlEncoded).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0].as_ref(), leaf_der.as_slice());
        assert_eq!(chain[1].as_ref(), inter_der.as_slice());
    }

    #[test]
    fn url_encoded_refuses_a_private_key_section() {
        let (pem, _) = cert_pem();
        let key = KeyPair::generate().unwrap().serialize_pem();
        let err = dec(&nginx_escape(&(pem + &key)), HeaderFormat::UrlEncoded).unwrap_err();
        assert_eq!(err, CertError::Malformed);
    }

    #[test]
    fn base64_encoded_decodes_kong_tutorial_form() {
        use base64::engine::general_purpose::STANDARD;
        let (_, der) = cert_pem();
        let value = STANDARD.encode(&der);
        let chain = dec(&value, HeaderFormat::Base64Encoded).unwrap();
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
        let chain = dec(&folded, HeaderFormat::Base64Encoded).unwrap();
        assert_eq!(chain[0].as_ref(), der.as_slice());
    }

    #[test]
    fn base64_encoded_accepts_base64_of_pem() {
        use base64::engine::general_purpose::STANDARD;
        let (pem, der) = cert_pem();
        let chain = dec(&STANDARD.encode(pem), HeaderFormat::Base64Encoded).unwrap();
        assert_eq!(chain[0].as_ref(), der.as_slice());
    }

    #[test]
    fn base64_encoded_carries_intermediates_as_concatenated_der() {
        use base64::engine::general_purpose::STANDARD;
        let (_, a) = cert_pem();
        let (_, b) = cert_pem();
        let chain = dec(
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
            dec(&value, HeaderFormat::Base64Encoded).unwrap_err(),
            CertError::Malformed
        );
    }

    #[test]
    fn chains_longer_than_the_cap_are_refused() {
        let (pem, _) = cert_pem();
        let long = pem.repeat(CHAIN_LEN_CEILING + 1);
        assert_eq!(
            dec(&nginx_escape(&long), HeaderFormat::UrlEncoded).unwrap_err(),
            CertError::ChainTooLong
        );
    }

    fn hex(t: &[u8]) -> String {
        t.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn b64(der: &[u8]) -> String {
        use base64::engine::general_purpose::STANDARD;
        use base64::Engine;
        STANDARD.encode(der)
    }

    #[test]
    fn rfc9440_decodes_a_byte_sequence_and_its_chain_list() {
        let (_, leaf) = cert_pem();
        let (_, inter) = cert_pem();
        let chain = dec(&format!(":{}:", b64(&leaf)), HeaderFormat::Rfc9440).unwrap();
        assert_eq!(chain, vec![CertificateDer::from(leaf.clone())]);
        let list = decode_chain(
            &format!(":{}:, :{}:", b64(&inter), b64(&leaf)),
            HeaderFormat::Rfc9440,
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].as_ref(), inter.as_slice());
    }

    #[test]
    fn rfc9440_is_strict_about_colons_padding_and_duplicates() {
        let (_, leaf) = cert_pem();
        let b = b64(&leaf);
        for bad in [
            b.clone(),
            format!(":{b}"),
            format!(":{}:", b.trim_end_matches('=')),
            format!(":{}:", b.replace('+', "-")),
        ] {
            if bad == format!(":{b}:") {
                continue;
            }
            assert!(dec(&bad, HeaderFormat::Rfc9440).is_err(), "{bad}");
        }
        assert_eq!(
            dec(&format!(":{b}:, :{b}:"), HeaderFormat::Rfc9440).unwrap_err(),
            CertError::Duplicate
        );
    }

    #[test]
    fn pem_with_line_breaks_folded_into_spaces_or_tabs_decodes() {
        let (pem, der) = cert_pem();
        // Apache's mod_headers turns newlines into spaces.
        let apache = pem.trim_end().replace('\n', " ");
        assert_eq!(
            dec(&apache, HeaderFormat::Pem).unwrap()[0].as_ref(),
            der.as_slice()
        );
        // Legacy nginx $ssl_client_cert: every line after the first starts with a tab.
        let nginx = pem.trim_end().replace('\n', "\n\t");
        assert_eq!(
            dec(&nginx, HeaderFormat::Pem).unwrap()[0].as_ref(),
            der.as_slice()
        );
        // A real multi-line PEM works too.
        assert_eq!(
            dec(&pem, HeaderFormat::Pem).unwrap()[0].as_ref(),
            der.as_slice()
        );
        assert_eq!(
            dec(&format!("junk {apache}"), HeaderFormat::Pem).unwrap_err(),
            CertError::Malformed
        );
    }

    #[test]
    fn xfcc_uses_the_last_elements_cert_and_checks_its_hash() {
        let (pem, der) = cert_pem();
        let (other_pem, _) = cert_pem();
        let first = format!(
            "By=spiffe://a;Hash={};Cert=\"{}\";Subject=\"CN=x,O=y\"",
            hex(&[0u8; 32]),
            nginx_escape(&other_pem),
        );
        let last = format!(
            "By=spiffe://b;Hash={};Cert=\"{}\";Subject=\"O=\\\"q\\\",CN=z\"",
            hex(&thumbprint(&der)),
            nginx_escape(&pem)
        );
        let value = format!("{first},{last}");
        let p = decode_with(&value, HeaderFormat::Xfcc, XfccElements::Last).unwrap();
        assert_eq!(p.chain[0].as_ref(), der.as_slice());
        assert_eq!(p.hash, Some(thumbprint(&der)));
        // Not asked for: two elements are a duplicate.
        assert_eq!(
            decode(&value, HeaderFormat::Xfcc).unwrap_err(),
            CertError::Duplicate
        );
        // A boundary right after an unquoted SAN could be the SAN's own comma.
        let ambiguous = format!("{first};URI=spiffe://c,{last}");
        assert_eq!(
            decode_with(&ambiguous, HeaderFormat::Xfcc, XfccElements::Last).unwrap_err(),
            CertError::Malformed
        );
    }

    #[test]
    fn xfcc_hash_alone_is_enough_for_the_binding_and_a_wrong_hash_is_refused() {
        let (pem, der) = cert_pem();
        // Istio sidecars' default: no Cert.
        let p = decode(&format!("By=spiffe://cluster.local/ns/a/sa/b;Hash={};Subject=\"\";URI=spiffe://cluster.local/ns/c/sa/d", hex(&thumbprint(&der))), HeaderFormat::Xfcc).unwrap();
        assert!(p.chain.is_empty());
        assert_eq!(p.hash, Some(thumbprint(&der)));
        let lying = format!("Hash={};Cert=\"{}\"", hex(&[1u8; 32]), nginx_escape(&pem));
        assert_eq!(
            decode(&lying, HeaderFormat::Xfcc).unwrap_err(),
            CertError::Malformed
        );
        assert_eq!(
            decode("By=spiffe://a;Subject=\"CN=x\"", HeaderFormat::Xfcc).unwrap_err(),
            CertError::Malformed
        );
        assert_eq!(
            decode(
                &format!("Hash={0};Hash={0}", hex(&[1u8; 32])),
                HeaderFormat::Xfcc
            )
            .unwrap_err(),
            CertError::Malformed
        );
    }

    #[test]
    fn xfcc_chain_key_carries_the_intermediates() {
        let (leaf, leaf_der) = cert_pem();
        let (inter, _) = cert_pem();
        let p = decode(
            &format!("Chain=\"{}\"", nginx_escape(&(leaf + &inter))),
            HeaderFormat::Xfcc,
        )
        .unwrap();
        assert_eq!(p.chain.len(), 2);
        assert_eq!(p.chain[0].as_ref(), leaf_der.as_slice());
    }

    #[test]
    fn traefik_decodes_an_escaped_comma_joined_chain() {
        let (_, leaf) = cert_pem();
        let (_, inter) = cert_pem();
        // Traefik v2 URL-escapes the value; v1 did not.
        let raw = format!("{},{}", b64(&leaf), b64(&inter));
        let escaped = raw
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
            .replace(',', "%2C");
        for v in [raw, escaped] {
            let chain = dec(&v, HeaderFormat::Traefik).unwrap();
            assert_eq!(chain.len(), 2);
            assert_eq!(chain[0].as_ref(), leaf.as_slice());
        }
    }

    #[test]
    fn aliases_name_the_same_decoders() {
        let parse = |s: &str| s.parse::<HeaderFormat>().ok();
        assert_eq!(parse("haproxy"), Some(HeaderFormat::Base64Encoded));
        assert_eq!(parse("f5"), Some(HeaderFormat::Base64Encoded));
        assert_eq!(parse("aws_alb"), Some(HeaderFormat::UrlEncoded));
        assert_eq!(parse("apache"), Some(HeaderFormat::Pem));
        assert_eq!(parse("der"), None);
        for f in HeaderFormat::ALL {
            assert_eq!(parse(f.as_str()), Some(f));
        }
    }

    #[test]
    fn names_follow_all_and_an_unknown_format_lists_names_and_aliases() {
        for (f, name) in HeaderFormat::ALL.into_iter().zip(HeaderFormat::NAMES) {
            assert_eq!(f.as_str(), name);
        }
        assert_eq!(
            "der".parse::<HeaderFormat>().unwrap_err().to_string(),
            "`der` is not one of base64_encoded, url_encoded, pem, rfc9440, xfcc, traefik, auto (aliases: haproxy, f5, aws_alb, apache)"
        );
    }

    #[test]
    fn auto_sniffs_every_format_to_the_same_certificate() {
        let (pem, der) = cert_pem();
        let values = [
            b64(&der),
            nginx_escape(&pem),
            alb_escape(&pem),
            pem.trim_end().replace('\n', " "),
            format!(":{}:", b64(&der)),
            format!(
                "By=spiffe://x;Hash={};Cert=\"{}\"",
                hex(&thumbprint(&der)),
                nginx_escape(&pem)
            ),
            b64(&der).replace('+', "%2B").replace('/', "%2F"),
        ];
        for v in values {
            let p = decode(&v, HeaderFormat::Auto).unwrap_or_else(|e| panic!("{e:?} for {v}"));
            assert_eq!(p.chain[0].as_ref(), der.as_slice(), "{v}");
        }
    }

    #[test]
    fn a_comma_is_a_duplicate_in_every_format_without_commas_of_its_own() {
        let (pem, der) = cert_pem();
        let cases = [
            (HeaderFormat::Base64Encoded, b64(&der)),
            (HeaderFormat::UrlEncoded, nginx_escape(&pem)),
            (HeaderFormat::Pem, pem.trim_end().replace('\n', " ")),
            (HeaderFormat::Rfc9440, format!(":{}:", b64(&der))),
        ];
        for (f, v) in cases {
            assert_eq!(
                decode(&format!("{v},{v}"), f).unwrap_err(),
                CertError::Duplicate,
                "{f:?}"
            );
        }
    }

    #[test]
    fn base64_encoded_accepts_the_url_safe_alphabet() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (_, der) = loop {
            let (p, d) = cert_pem();
            if b64(&d).contains(['+', '/']) {
                break (p, d);
            }
        };
        assert_eq!(
            dec(&URL_SAFE_NO_PAD.encode(&der), HeaderFormat::Base64Encoded).unwrap()[0].as_ref(),
            der.as_slice()
        );
    }

    #[test]
    fn xfcc_keys_are_case_insensitive_and_empty_values_allowed() {
        let (pem, der) = cert_pem();
        let v = format!("by=spiffe://cluster.local/ns/istio-system/sa/gw;hash={};cert=\"{}\";subject=\"CN=api-client\";URI=", hex(&thumbprint(&der)), nginx_escape(&pem));
        assert_eq!(
            decode(&v, HeaderFormat::Xfcc).unwrap().chain[0].as_ref(),
            der.as_slice()
        );
    }

    #[test]
    fn auto_recognises_pem_with_escaped_dashes() {
        let (pem, der) = cert_pem();
        let all_escaped: String = pem.bytes().map(|b| format!("%{b:02X}")).collect();
        assert_eq!(
            dec(&all_escaped, HeaderFormat::Auto).unwrap()[0].as_ref(),
            der.as_slice()
        );
    }
}
