//! Arbitrary bytes as a certificate header value and, after the first newline (which no header
//! value can hold), a separate chain header value (`certificate_chain_header_name`; RFC 9440's
//! `Client-Cert-Chain`). Each goes through every decoder in `HeaderFormat::ALL` and the whole
//! certificate step (decode, then verify with and without the fixture trust store at a fixed
//! time), and the XFCC decoder once more with `xfcc_elements = "last"` and as the element a mesh
//! sidecar appended. Never panics; the steps agree with each other.
#![no_main]

use certbound_core::cert::{self, thumbprint, CertError, HeaderFormat, XfccElements};
use certbound_fuzz::{verify, TRUST};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Envoy hands header values over as proto strings: always UTF-8.
    let text = String::from_utf8_lossy(data);
    let (value, chain) = match text.split_once('\n') {
        Some((v, c)) => (v, Some(c)),
        None => (&*text, None),
    };
    for format in HeaderFormat::ALL {
        let name = format.as_str();
        let decoded = cert::decode(value, format);
        if let Ok(p) = &decoded {
            assert!(
                !p.chain.is_empty() || p.hash.is_some(),
                "{name}: decoded to nothing"
            );
            if let (Some(leaf), Some(hash)) = (p.chain.first(), p.hash) {
                assert_eq!(thumbprint(leaf), hash, "{name}: Hash disagrees with Cert");
            }
        }
        if let Some(c) = chain {
            let _ = cert::decode_chain(c, format);
        }
        let unverified = verify(value, chain, format, None);
        let verified = verify(value, chain, format, Some(&TRUST));
        match (&decoded, &unverified) {
            (Err(e), _) => assert_eq!(unverified, Err(*e), "{name}"),
            (Ok(p), Ok(v)) => {
                let expected = p.chain.first().map(|l| thumbprint(l)).or(p.hash);
                assert_eq!(
                    Some(v.thumbprint),
                    expected,
                    "{name}: the leaf's thumbprint"
                );
                assert!(
                    v.issuer.is_none(),
                    "{name}: an issuer without a trust store"
                );
            }
            (Ok(_), Err(_)) => {}
        }
        match verified {
            Ok(v) => {
                assert_eq!(
                    unverified.map(|u| u.thumbprint),
                    Ok(v.thumbprint),
                    "{name}: a trusted chain also decodes"
                );
                assert!(
                    v.issuer.is_some(),
                    "{name}: a verified path names its issuer"
                );
            }
            // Only a hash and a trust store: the chain cannot be verified.
            Err(CertError::Unverifiable) => assert!(
                decoded.is_ok_and(|p| p.chain.is_empty()),
                "{name}: unverifiable with a certificate"
            ),
            Err(_) => {}
        }
    }
    // `xfcc_elements = "last"` (hops that append): never panics, a decoded leaf agrees with its
    // `Hash`, and a header the one-element default accepts reads the same (one element is also
    // the last).
    let last = cert::decode_with(value, HeaderFormat::Xfcc, XfccElements::Last);
    if let Ok(p) = &last {
        if let (Some(leaf), Some(hash)) = (p.chain.first(), p.hash) {
            assert_eq!(thumbprint(leaf), hash, "xfcc last: Hash disagrees with Cert");
        }
    }
    if let Ok(one) = cert::decode(value, HeaderFormat::Xfcc) {
        assert_eq!(last, Ok(one), "xfcc: one element read differently as the last");
    }
    // The mesh reading (the element the local sidecar appended), with and without the local
    // workload's ID: never panics, and a one-element header both readings accept names one
    // certificate.
    for local in [Some("spiffe://cluster.local/ns/api/sa/api"), None] {
        let mesh = cert::decode_mesh(value, local);
        if let (Ok(peer), Ok(one)) = (&mesh, cert::decode(value, HeaderFormat::Xfcc)) {
            assert_eq!(one.hash, Some(peer.hash), "xfcc mesh: read another certificate");
        }
    }
});
