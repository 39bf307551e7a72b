//! Envoy's `x-forwarded-client-cert`: one element per hop, separated by `,`; each element is
//! `Key=Value` pairs separated by `;`. The nearest hop appends its element last, so the last
//! element describes the client that connected to it.
//!
//! `Cert` is the URL-encoded PEM leaf, `Chain` the URL-encoded PEM chain (leaf included), `Hash`
//! the hex SHA-256 of the leaf's DER. Istio sidecars send `Hash` without `Cert` by default: the
//! binding can be checked from `Hash` alone, but not the chain.
//!
//! The grammar is Envoy's own output, read strictly, because the header is not a safe format:
//! Envoy double-quotes `Cert`, `Chain` and `Subject` (`Subject` escapes `"` and `\` per RFC
//! 2253), but writes `By`, `URI` and `DNS` values (SANs, chosen by whoever got the certificate
//! issued) unquoted. A SAN such as `urn:x,Chain=<another PEM>` or `urn:x;Hash=<another hash>`
//! would otherwise be read as structure. So:
//! - keys come in the order Envoy writes them (`By`*, `Hash`, `Cert`, `Chain`, `Subject`, `URI`*,
//!   `DNS`*); only `By`, `URI` and `DNS` repeat; any other key is refused. After the client's
//!   own `URI`/`DNS` values, nothing but more `URI`/`DNS` pairs or an element boundary can follow;
//! - a quote or backslash inside an unquoted value, or a quoted value not followed by `;`, `,`
//!   or the end, is refused;
//! - by default ([`XfccElements::One`], what `SANITIZE_SET` writes) a second element is a
//!   duplicate; with [`XfccElements::Last`] the header is refused when an element boundary
//!   directly follows a `By`, `URI` or `DNS` value, where the comma could belong to a SAN;
//! - `Hash`, `Cert` and `Chain`'s leaf, where present, must name the same certificate.
//!
//! [`decode_mesh`] reads the element an inbound mesh sidecar appended (`APPEND_FORWARD`): see
//! its comment for how it tells that element from anything the caller sent before it.

use super::{pem, Presented};
use crate::cert::{thumbprint, CertError, Thumbprint};

crate::names::spelled! {
    /// How many XFCC elements a header may carry (`xfcc_elements`).
    #[derive(Default)]
    pub enum XfccElements {
        /// Exactly one, as Envoy's `SANITIZE_SET` writes: a second element means the header was
        /// appended to or sent twice, and is refused as a duplicate.
        #[default]
        One = "one",
        /// Any number (`APPEND_FORWARD` hops); the last one, written by the nearest hop,
        /// counts. Refused where an element boundary could lie inside an unquoted SAN.
        Last = "last",
    }
}

/// The keys Envoy writes, in the order it writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    By,
    Hash,
    Cert,
    Chain,
    Subject,
    Uri,
    Dns,
}

impl Key {
    fn parse(key: &str) -> Result<Self, CertError> {
        const KEYS: [(&str, Key); 7] = [
            ("by", Key::By),
            ("hash", Key::Hash),
            ("cert", Key::Cert),
            ("chain", Key::Chain),
            ("subject", Key::Subject),
            ("uri", Key::Uri),
            ("dns", Key::Dns),
        ];
        KEYS.iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|&(_, k)| k)
            .ok_or(CertError::Malformed)
    }

    /// Envoy writes one pair per SAN for these; the others at most once per element.
    fn repeats(self) -> bool {
        matches!(self, Key::By | Key::Uri | Key::Dns)
    }

    /// Envoy always double-quotes these values.
    fn quoted(self) -> bool {
        matches!(self, Key::Cert | Key::Chain | Key::Subject)
    }
}

/// What one element says about the certificate and the hop (`Subject` and `DNS` are not used).
#[derive(Default)]
struct Element {
    /// The URI SANs of the certificate of the hop that wrote the element.
    by: Vec<String>,
    hash: Option<Thumbprint>,
    cert: Option<String>,
    chain: Option<String>,
    /// The URI SANs of the client's certificate.
    uris: Vec<String>,
    last_key: Option<Key>,
}

/// The peer an inbound mesh sidecar describes in the element it appended: the certificate's
/// SHA-256 (the binding's input) and its URI SANs (a SPIFFE ID for mesh workloads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshPeer {
    pub hash: Thumbprint,
    pub uris: Vec<String>,
}

/// The element the local inbound sidecar appended to `x-forwarded-client-cert`.
///
/// An Istio inbound sidecar (`APPEND_FORWARD`, `{subject, uri, dns}`) appends
/// `By=<its own URI SAN>;Hash=<peer>;Subject="…";URI=<peer SAN>…` after whatever the header
/// already held, and removes the header on connections without a client certificate. So the
/// element is the last one, and everything before it may have been written by the caller. The
/// caller's text cannot follow the element, but two things could still make another element
/// look last: the whole header must parse strictly (a quote left open by the caller fails here),
/// and a peer SAN holding `,` could end the real element early and start a forged one. The
/// forged one cannot come without a boundary right after a `URI`/`DNS` value, and must begin
/// with `By` (required below) while the real element's `By` stands before it. Hence:
/// - the last element must name its hop with `By` and carry `Hash`;
/// - with `local` (the local workload's SPIFFE ID): the last element's `By` must include it and
///   no earlier element may (a forged element would need it while the real one already has
///   it), so headers that came through a gateway, whose element ends in `URI`/`DNS`, are read;
/// - without it: the boundary before the last element must not follow a `By`, `URI` or `DNS`
///   value, which also refuses such honest headers.
///
/// The peer's chain is not in the element (`cert` is off in Istio) and is not verified here:
/// the sidecar verified it against the mesh CA, which is the trust anchor of this reading.
pub(super) fn decode_mesh(value: &str, local: Option<&str>) -> Result<MeshPeer, CertError> {
    let mut parsed = parse(value)?;
    let mut element = parsed.pop().ok_or(CertError::Malformed)?;
    if element.by.is_empty() {
        return Err(CertError::NotLocalHop);
    }
    match local {
        Some(local) => {
            let names_local = |e: &Element| e.by.iter().any(|b| b == local);
            if !names_local(&element) || parsed.iter().any(names_local) {
                return Err(CertError::NotLocalHop);
            }
        }
        None => {
            if parsed
                .last()
                .is_some_and(|e| e.last_key.is_some_and(Key::repeats))
            {
                return Err(CertError::Malformed);
            }
        }
    }
    let uris = std::mem::take(&mut element.uris);
    let presented = presented(element)?;
    Ok(MeshPeer {
        hash: presented.hash.ok_or(CertError::Malformed)?,
        uris,
    })
}

pub(super) fn decode(value: &str, elements: XfccElements) -> Result<Presented, CertError> {
    let mut parsed = parse(value)?;
    if parsed.len() > 1 {
        match elements {
            XfccElements::One => return Err(CertError::Duplicate),
            XfccElements::Last => {
                // `…;URI=urn:x,Hash=…`: the comma may be the SAN's, not a boundary.
                let ambiguous = parsed[..parsed.len() - 1]
                    .iter()
                    .any(|e| e.last_key.is_some_and(Key::repeats));
                if ambiguous {
                    return Err(CertError::Malformed);
                }
            }
        }
    }
    let element = parsed.pop().ok_or(CertError::Malformed)?;
    presented(element)
}

/// The certificate one element names: `Cert`, `Chain` and `Hash` where present, agreeing.
fn presented(element: Element) -> Result<Presented, CertError> {
    let cert = element
        .cert
        .map(|c| pem::decode_url_encoded(&c))
        .transpose()?;
    let chain = element
        .chain
        .map(|c| pem::decode_url_encoded(&c))
        .transpose()?;
    let chain = match (chain, cert) {
        (Some(chain), Some(cert)) => {
            // Two statements of the leaf: they must agree (and `Cert` is the leaf alone).
            if cert.len() != 1 || chain.first() != cert.first() {
                return Err(CertError::Malformed);
            }
            chain
        }
        (Some(chain), None) => chain,
        (None, Some(cert)) => cert,
        (None, None) => Vec::new(),
    };
    match (chain.first(), element.hash) {
        (None, None) => Err(CertError::Malformed),
        (Some(leaf), Some(h)) if thumbprint(leaf.as_ref()) != h => Err(CertError::Malformed),
        _ => Ok(Presented {
            chain,
            hash: element.hash,
        }),
    }
}

/// Every element, strictly per Envoy's grammar (see the module comment).
fn parse(value: &str) -> Result<Vec<Element>, CertError> {
    let mut elements = Vec::new();
    let mut element = Element::default();
    let mut rest = value;
    loop {
        let eq = rest
            .find(['=', ';', ',', '"', '\\'])
            .filter(|&i| rest.as_bytes()[i] == b'=')
            .ok_or(CertError::Malformed)?;
        let key = Key::parse(&rest[..eq])?;
        if let Some(last) = element.last_key {
            if key < last || (key == last && !key.repeats()) {
                return Err(CertError::Malformed);
            }
        }
        element.last_key = Some(key);
        rest = &rest[eq + 1..];
        let raw;
        if let Some(quoted) = rest.strip_prefix('"') {
            let (inner, after) = split_quoted(quoted)?;
            raw = unescape(inner)?;
            rest = after;
        } else {
            if key.quoted() {
                return Err(CertError::Malformed);
            }
            let end = rest.find([';', ',', '"', '\\']).unwrap_or(rest.len());
            if rest[end..].starts_with(['"', '\\']) {
                return Err(CertError::Malformed);
            }
            raw = rest[..end].to_string();
            rest = &rest[end..];
        }
        match key {
            Key::Hash => element.hash = Some(parse_hex(&raw)?),
            Key::Cert => element.cert = Some(raw),
            Key::Chain => element.chain = Some(raw),
            Key::By => element.by.push(raw),
            Key::Uri => element.uris.push(raw),
            Key::Subject | Key::Dns => {}
        }
        match rest.as_bytes().first() {
            None => {
                elements.push(element);
                return Ok(elements);
            }
            Some(b';') => rest = &rest[1..],
            Some(b',') => {
                elements.push(std::mem::take(&mut element));
                // Envoy joins a repeated header with `,` and may add a space.
                rest = rest[1..].trim_start_matches([' ', '\t']);
            }
            // A quoted value must end where the pair does.
            Some(_) => return Err(CertError::Malformed),
        }
    }
}

/// The inside of a quoted value (up to the closing unescaped `"`) and what follows it.
fn split_quoted(s: &str) -> Result<(&str, &str), CertError> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Ok((&s[..i], &s[i + 1..])),
            _ => {}
        }
    }
    Err(CertError::Malformed)
}

fn unescape(inner: &str) -> Result<String, CertError> {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next().ok_or(CertError::Malformed)?);
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

fn parse_hex(h: &str) -> Result<Thumbprint, CertError> {
    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CertError::Malformed);
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).map_err(|_| CertError::Malformed)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::cert::{decode, thumbprint, CertError, HeaderFormat};
    use rcgen::{CertificateParams, KeyPair};

    /// A self-signed leaf: its PEM and DER.
    fn leaf(name: &str) -> (String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), cert.der().to_vec())
    }

    /// Envoy's URL encoding of a PEM (`Cert`, `Chain`).
    fn url(pem: &str) -> String {
        percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    fn hex(der: &[u8]) -> String {
        thumbprint(der).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// What Envoy 1.40 writes with `SANITIZE_SET` and `{subject, cert, uri, dns}` for a client
    /// whose certificate carries `uri` and `dns` as SANs: URI and DNS values are not quoted.
    fn envoy_element(pem: &str, der: &[u8], uri: &str, dns: &str) -> String {
        format!(
            "Hash={};Cert=\"{}\";Subject=\"CN=mallory,O=e2e\";URI={uri};DNS={dns}",
            hex(der),
            url(pem)
        )
    }

    #[test]
    fn xfcc_a_uri_san_forging_a_chain_element_never_yields_the_victims_certificate() {
        let (m_pem, m_der) = leaf("mallory.test");
        let (v_pem, v_der) = leaf("victim.test");
        for forged in [
            format!("urn:x,Chain={}", url(&v_pem)),
            format!("urn:x,Chain=\"{}\"", url(&v_pem)),
            format!("urn:x,Cert=\"{}\"", url(&v_pem)),
            format!("urn:x,Hash={};Cert=\"{}\"", hex(&v_der), url(&v_pem)),
        ] {
            let value = envoy_element(&m_pem, &m_der, &forged, "m.test");
            for format in [HeaderFormat::Xfcc, HeaderFormat::Auto] {
                let got = decode(&value, format);
                assert!(got.is_err(), "{format:?} read {value} as {got:?}");
            }
        }
    }

    #[test]
    fn xfcc_a_uri_or_dns_san_forging_a_hash_never_yields_the_victims_hash() {
        let (m_pem, m_der) = leaf("mallory.test");
        let (_, v_der) = leaf("victim.test");
        let v = hex(&v_der);
        let hash_only =
            |uri: &str, dns: &str| format!("Hash={};Subject=\"\";URI={uri};DNS={dns}", hex(&m_der));
        let cases = [
            hash_only(&format!("urn:x,Hash={v}"), "m.test"),
            hash_only(&format!("urn:x;Hash={v}"), "m.test"),
            hash_only("urn:x", &format!("m.test,Hash={v}")),
            hash_only("urn:x", &format!("m.test;Hash={v}")),
            envoy_element(&m_pem, &m_der, &format!("urn:x,Hash={v}"), "m.test"),
        ];
        for value in cases {
            for format in [HeaderFormat::Xfcc, HeaderFormat::Auto] {
                let got = decode(&value, format);
                assert!(got.is_err(), "{format:?} read {value} as {got:?}");
            }
        }
    }

    #[test]
    fn xfcc_a_quote_in_an_unquoted_value_is_refused() {
        let (_, m_der) = leaf("mallory.test");
        let (_, v_der) = leaf("victim.test");
        // The quote swallows the element a later hop appends: the reader would stop at the
        // attacker's element.
        let value = format!(
            "Hash={};URI=urn:x;DNS=a\",By=spiffe://gw;Hash={};URI=",
            hex(&v_der),
            hex(&m_der)
        );
        assert!(decode(&value, HeaderFormat::Xfcc).is_err());
        let unbalanced = format!("Hash={};Subject=\"CN=x", hex(&v_der));
        assert!(decode(&unbalanced, HeaderFormat::Xfcc).is_err());
    }

    #[test]
    fn xfcc_by_default_a_second_element_is_a_duplicate() {
        let (pem, der) = leaf("a.test");
        let one = envoy_element(&pem, &der, "spiffe://a", "a.test");
        assert_eq!(
            decode(&format!("{one},{one}"), HeaderFormat::Xfcc).unwrap_err(),
            CertError::Duplicate
        );
    }

    #[test]
    fn xfcc_unknown_keys_and_keys_out_of_envoys_order_are_refused() {
        let (pem, der) = leaf("a.test");
        let h = hex(&der);
        let c = url(&pem);
        for bad in [
            format!("Hash={h};Cert=\"{c}\";Foo=bar"),
            format!("Cert=\"{c}\";Hash={h}"),
            format!("Hash={h};URI=urn:a;Subject=\"CN=a\""),
            format!("Hash={h};DNS=a;URI=urn:a"),
            format!("Hash={h};Cert=\"{c}\";Subject=\"\";Subject=\"\""),
            format!("Hash={h};;URI="),
            format!("Hash={h};URI"),
        ] {
            assert!(decode(&bad, HeaderFormat::Xfcc).is_err(), "{bad}");
        }
    }

    #[test]
    fn xfcc_cert_and_chain_must_name_the_same_leaf() {
        let (a_pem, a_der) = leaf("a.test");
        let (b_pem, _) = leaf("b.test");
        let value = format!(
            "Cert=\"{}\";Chain=\"{}\"",
            url(&a_pem),
            url(&(b_pem + &a_pem))
        );
        assert!(decode(&value, HeaderFormat::Xfcc).is_err());
        let agree = format!(
            "Hash={};Cert=\"{}\";Chain=\"{}\"",
            hex(&a_der),
            url(&a_pem),
            url(&a_pem)
        );
        assert_eq!(
            decode(&agree, HeaderFormat::Xfcc).unwrap().chain[0].as_ref(),
            a_der.as_slice()
        );
    }

    #[test]
    fn xfcc_envoys_own_element_with_several_uri_and_dns_sans_is_read() {
        let (pem, der) = leaf("a.test");
        let value = format!(
            "By=spiffe://gw;Hash={};Cert=\"{}\";Subject=\"O=\\\"q\\\",CN=a\";URI=spiffe://a;URI=urn:b=c;DNS=a.test;DNS=b.test",
            hex(&der),
            url(&pem)
        );
        for format in [HeaderFormat::Xfcc, HeaderFormat::Auto] {
            let p = decode(&value, format).unwrap();
            assert_eq!(p.chain[0].as_ref(), der.as_slice());
            assert_eq!(p.hash, Some(thumbprint(&der)));
        }
    }

    #[test]
    fn auto_keeps_the_duplicate_guard_of_the_fixed_formats() {
        use base64::{engine::general_purpose::STANDARD, Engine};
        let (m_pem, m_der) = leaf("mallory.test");
        let (v_pem, v_der) = leaf("victim.test");
        // A terminator that appends to a client-sent copy: the client's copy names the victim.
        for value in [
            format!("{},Hash={}", STANDARD.encode(&m_der), hex(&v_der)),
            format!("{},Chain=\"{}\"", STANDARD.encode(&m_der), url(&v_pem)),
            format!("Hash={},{}", hex(&v_der), url(&m_pem)),
        ] {
            let got = decode(&value, HeaderFormat::Auto);
            assert!(got.is_err(), "{value} read as {got:?}");
        }
        // The chain header too: two base64 values joined are not a Traefik list.
        assert_eq!(
            crate::cert::decode_chain(
                &format!("{},{}", STANDARD.encode(&v_der), STANDARD.encode(&m_der)),
                HeaderFormat::Auto
            )
            .unwrap_err(),
            CertError::Duplicate
        );
        // Two base64 certificates look like a Traefik chain: refused as the duplicate it may be.
        let joined = format!("{},{}", STANDARD.encode(&v_der), STANDARD.encode(&m_der));
        assert_eq!(
            decode(&joined, HeaderFormat::Auto).unwrap_err(),
            CertError::Duplicate
        );
    }

    const LOCAL: &str = "spiffe://cluster.local/ns/api/sa/api";

    /// What an Istio inbound sidecar appends (`APPEND_FORWARD`, `{subject, uri, dns}`; `Hash`
    /// always, no `Cert`) for a peer whose certificate has `uri` as its URI SAN.
    fn sidecar_element(der: &[u8], uri: &str) -> String {
        format!("By={LOCAL};Hash={};Subject=\"\";URI={uri}", hex(der))
    }

    fn mesh(value: &str, local: Option<&str>) -> Result<super::MeshPeer, CertError> {
        crate::cert::decode_mesh(value, local)
    }

    #[test]
    fn mesh_reads_the_hash_and_uri_of_the_element_the_local_sidecar_appended() {
        let (_, a_der) = leaf("a.test");
        let a = sidecar_element(&a_der, "spiffe://cluster.local/ns/shop/sa/a");
        for local in [Some(LOCAL), None] {
            let peer = mesh(&a, local).unwrap();
            assert_eq!(peer.hash, thumbprint(&a_der));
            assert_eq!(peer.uris, ["spiffe://cluster.local/ns/shop/sa/a"]);
        }
    }

    #[test]
    fn mesh_elements_the_caller_sent_before_the_sidecars_never_count() {
        let (_, a_der) = leaf("a.test");
        let (_, v_der) = leaf("victim.test");
        let a = sidecar_element(&a_der, "spiffe://cluster.local/ns/shop/sa/a");
        // Whatever the caller put in the header comes first; the sidecar's element is last.
        for forged in [
            format!("Hash={}", hex(&v_der)),
            format!("By={LOCAL};Hash={}", hex(&v_der)),
            format!("Hash={};Subject=\"\"", hex(&v_der)),
        ] {
            let value = format!("{forged},{a}");
            match mesh(&value, Some(LOCAL)) {
                Ok(peer) => assert_eq!(peer.hash, thumbprint(&a_der), "{value}"),
                Err(e) => assert_eq!(e, CertError::NotLocalHop, "{value}"),
            }
            if let Ok(peer) = mesh(&value, None) {
                assert_eq!(peer.hash, thumbprint(&a_der), "{value}");
            }
        }
        // A quote the caller leaves open, to swallow the sidecar's element: never parses.
        let open = format!("Hash={};Subject=\"x,{a}", hex(&v_der));
        assert!(mesh(&open, Some(LOCAL)).is_err());
        assert!(mesh(&open, None).is_err());
    }

    #[test]
    fn mesh_a_peer_san_forging_an_element_after_the_sidecars_never_yields_the_victims_hash() {
        let (_, m_der) = leaf("mallory.test");
        let (_, v_der) = leaf("victim.test");
        let v = hex(&v_der);
        for san in [
            format!("urn:x,By={LOCAL};Hash={v}"),
            format!("urn:x,By=spiffe://elsewhere/x;Hash={v}"),
            format!("urn:x,Hash={v}"),
            format!("urn:x;Hash={v}"),
            format!("urn:x\",By={LOCAL};Hash={v}"),
        ] {
            let value = sidecar_element(&m_der, &san);
            for local in [Some(LOCAL), None] {
                let got = mesh(&value, local);
                assert!(got.is_err(), "{local:?} read {value} as {got:?}");
            }
        }
        // The same through a DNS SAN.
        let value = format!(
            "By={LOCAL};Hash={};Subject=\"\";URI=spiffe://cluster.local/ns/m/sa/m;DNS=m.test,By={LOCAL};Hash={v}",
            hex(&m_der)
        );
        assert!(mesh(&value, Some(LOCAL)).is_err());
        assert!(mesh(&value, None).is_err());
    }

    #[test]
    fn mesh_a_gateways_element_before_the_sidecars_is_read_only_when_the_local_id_is_known() {
        let (gw_pem, gw_client) = leaf("client.test");
        let (_, gw_der) = leaf("gateway.test");
        // The ingress gateway's SANITIZE_SET element, ending in URI/DNS, then the sidecar's.
        let value = format!(
            "{},{}",
            envoy_element(&gw_pem, &gw_client, "spiffe://client", "client.test"),
            sidecar_element(&gw_der, "spiffe://cluster.local/ns/istio-system/sa/gw")
        );
        assert_eq!(mesh(&value, Some(LOCAL)).unwrap().hash, thumbprint(&gw_der));
        // Without the local ID the boundary after a URI/DNS value may be a SAN's comma.
        assert_eq!(mesh(&value, None).unwrap_err(), CertError::Malformed);
    }

    #[test]
    fn mesh_an_element_not_naming_the_local_workload_is_refused() {
        let (_, a_der) = leaf("a.test");
        let a = sidecar_element(&a_der, "spiffe://cluster.local/ns/shop/sa/a");
        // Another workload's sidecar wrote it (the header was forwarded, not appended here).
        assert_eq!(
            mesh(&a, Some("spiffe://cluster.local/ns/other/sa/other")).unwrap_err(),
            CertError::NotLocalHop
        );
        // No `By` at all: no sidecar with a mesh identity wrote it.
        let bare = format!("Hash={};Subject=\"\";URI=spiffe://x/y", hex(&a_der));
        assert_eq!(mesh(&bare, None).unwrap_err(), CertError::NotLocalHop);
        // The local ID twice: a loop through this workload, or a forgery.
        let twice = format!("{a},{a}");
        assert_eq!(
            mesh(&twice, Some(LOCAL)).unwrap_err(),
            CertError::NotLocalHop
        );
        // `By` without `Hash`: not what Envoy writes.
        let no_hash = format!("By={LOCAL};Subject=\"\";URI=spiffe://x/y");
        assert_eq!(
            mesh(&no_hash, Some(LOCAL)).unwrap_err(),
            CertError::Malformed
        );
    }

    #[test]
    fn mesh_a_cert_in_the_element_must_agree_with_its_hash() {
        let (a_pem, a_der) = leaf("a.test");
        let (b_pem, _) = leaf("b.test");
        let with = |pem: &str| {
            format!(
                "By={LOCAL};Hash={};Cert=\"{}\";Subject=\"\";URI=spiffe://x/a",
                hex(&a_der),
                url(pem)
            )
        };
        assert_eq!(
            mesh(&with(&a_pem), Some(LOCAL)).unwrap().hash,
            thumbprint(&a_der)
        );
        assert!(mesh(&with(&b_pem), Some(LOCAL)).is_err());
    }

    #[test]
    fn elements_parse_from_their_names_and_the_default_is_the_configured_one() {
        use super::XfccElements;
        for (e, name) in XfccElements::ALL.into_iter().zip(XfccElements::NAMES) {
            assert_eq!(name.parse(), Ok(e));
            assert_eq!(e.as_str(), name);
        }
        assert_eq!(
            "all".parse::<XfccElements>().unwrap_err().to_string(),
            "`all` is not one of one, last"
        );
        assert_eq!(
            XfccElements::default().as_str(),
            crate::defaults::from_header::XFCC_ELEMENTS
        );
    }
}
