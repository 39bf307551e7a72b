//! OCSP (RFC 6960) for one end-entity certificate: the request `openssl ocsp` and every common
//! responder understand (one SHA-1 CertID, unsigned, no nonce), and the checks an answer must pass
//! before it counts.
//!
//! Trusts nothing in the response: it must be a successful `id-pkix-ocsp-basic` response, signed
//! by the issuer itself or by a responder certificate the issuer signed with the OCSP-signing EKU
//! (valid at `now`), carry a SingleResponse for exactly our CertID, and be current at `now`
//! (within `CLOCK_SKEW`; without `nextUpdate`, no older than the configured maximum age). Only
//! then is its good/revoked/unknown believed.

use std::time::Duration;

use const_oid::db::rfc5280::ID_AD_OCSP;
use const_oid::db::rfc5912::ID_SHA_1;
use const_oid::db::rfc6960::ID_PKIX_OCSP_BASIC;
use der::asn1::{Any, AnyRef, Null, OctetString};
use der::{Decode, Encode, Header, Reader, SliceReader, Tag};
use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_cert::ext::pkix::AuthorityInfoAccessSyntax;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus, Request,
    TbsRequest, Version,
};

/// Largest OCSP response read. Real ones are 1–4 KiB; a few embedded responder certificates fit.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Seconds of disagreement allowed between our clock and the responder's on `thisUpdate` and
/// `nextUpdate`: OpenSSL's `OCSP_check_validity` default.
pub const CLOCK_SKEW: u64 = 300;
/// Embedded certificates tried as a delegated responder: bounds the signature checks one hostile
/// response can cause.
const MAX_RESPONDER_CERTS: usize = 4;
/// id-kp-OCSPSigning (1.3.6.1.5.5.7.3.9), the DER value webpki compares EKUs with.
const OCSP_SIGNING_EKU: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x09];

/// Why an OCSP exchange gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OcspError {
    #[error("cannot build the request: {0}")]
    Request(String),
    #[error("not a DER OCSP response")]
    Malformed,
    #[error("responder answered {0:?}")]
    NotSuccessful(OcspResponseStatus),
    #[error("response is not id-pkix-ocsp-basic")]
    NotBasic,
    #[error("response is not signed by the issuer or a responder it authorised")]
    BadSignature,
    #[error("response has no answer for this certificate")]
    NoMatchingResponse,
    #[error("response is not valid yet (thisUpdate in the future)")]
    NotYetValid,
    #[error("response is stale (nextUpdate passed)")]
    Expired,
    #[error("response without nextUpdate is older than ocsp_max_age")]
    TooOld,
}

/// What a verified response says about the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OcspStatus {
    /// `nextUpdate` (seconds since the epoch), when the responder gave one: the answer may be
    /// cached until then.
    Good {
        next_update: Option<u64>,
    },
    Revoked,
    /// The responder does not know the certificate.
    Unknown,
}

/// One OCSP question: the DER request to POST and the CertID its answer must carry.
#[derive(Debug, Clone)]
pub struct OcspQuery {
    cert_id: CertId,
    body: Vec<u8>,
}

impl OcspQuery {
    /// The request for `leaf` issued by `issuer`.
    pub fn new(leaf: &Certificate, issuer: &Certificate) -> Result<Self, OcspError> {
        let cert_id = cert_id(leaf, issuer)?;
        let request = OcspRequest {
            tbs_request: TbsRequest {
                version: Version::V1,
                requestor_name: None,
                request_list: vec![Request {
                    req_cert: cert_id.clone(),
                    single_request_extensions: None,
                }],
                request_extensions: None,
            },
            optional_signature: None,
        };
        let body = request
            .to_der()
            .map_err(|e| OcspError::Request(e.to_string()))?;
        Ok(Self { cert_id, body })
    }

    /// The DER `OCSPRequest` (`application/ocsp-request`).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Verifies `response` for this question at `now` (seconds since the epoch). `issuer` is the
    /// DER certificate that issued the leaf, taken from the verified chain.
    pub fn check(
        &self,
        response: &[u8],
        issuer: &CertificateDer<'_>,
        now: u64,
        max_age: Duration,
    ) -> Result<OcspStatus, OcspError> {
        let response = OcspResponse::from_der(response).map_err(|_| OcspError::Malformed)?;
        if response.response_status != OcspResponseStatus::Successful {
            return Err(OcspError::NotSuccessful(response.response_status));
        }
        let bytes = response.response_bytes.ok_or(OcspError::Malformed)?;
        if bytes.response_type != ID_PKIX_OCSP_BASIC {
            return Err(OcspError::NotBasic);
        }
        let raw = bytes.response.as_bytes();
        let basic = BasicOcspResponse::from_der(raw).map_err(|_| OcspError::Malformed)?;
        // The signature covers the bytes as received: take them from the input rather than
        // re-encoding the decoded structure.
        let tbs = first_element(raw).map_err(|_| OcspError::Malformed)?;
        verify_response_signature(&basic, tbs, issuer, now)?;

        let single = basic
            .tbs_response_data
            .responses
            .iter()
            .find(|r| same_cert_id(&r.cert_id, &self.cert_id))
            .ok_or(OcspError::NoMatchingResponse)?;
        let this_update = unix(&single.this_update.0);
        let produced_at = unix(&basic.tbs_response_data.produced_at.0);
        if this_update.max(produced_at) > now.saturating_add(CLOCK_SKEW) {
            return Err(OcspError::NotYetValid);
        }
        let next_update = single.next_update.as_ref().map(|t| unix(&t.0));
        match next_update {
            Some(n) if n.saturating_add(CLOCK_SKEW) < now => return Err(OcspError::Expired),
            Some(_) => {}
            // No nextUpdate: nothing in the answer says when it stops holding, so a captured
            // "good" could be replayed for ever over plain HTTP. Its age is bounded instead, by
            // the older of when the status was known and when it was signed.
            None => {
                let oldest = this_update.min(produced_at);
                let limit = max_age.as_secs().saturating_add(CLOCK_SKEW);
                if now.saturating_sub(oldest) > limit {
                    return Err(OcspError::TooOld);
                }
            }
        }
        Ok(match single.cert_status {
            CertStatus::Good(_) => OcspStatus::Good { next_update },
            CertStatus::Revoked(_) => OcspStatus::Revoked,
            CertStatus::Unknown(_) => OcspStatus::Unknown,
        })
    }
}

/// The first http(s) OCSP responder in the certificate's Authority Information Access.
pub fn responder_url(cert: &Certificate) -> Option<String> {
    let (_, aia) = cert
        .tbs_certificate
        .get::<AuthorityInfoAccessSyntax>()
        .ok()
        .flatten()?;
    aia.0
        .iter()
        .filter(|d| d.access_method == ID_AD_OCSP)
        .find_map(|d| super::http_uri(&d.access_location))
}

/// The RFC 6960 CertID with SHA-1, as `openssl ocsp` indexes its answers: hashes of the issuer's
/// DER subject and of its public key bits, plus the leaf's serial.
pub fn cert_id(leaf: &Certificate, issuer: &Certificate) -> Result<CertId, OcspError> {
    let err = |e: der::Error| OcspError::Request(e.to_string());
    let name = issuer.tbs_certificate.subject.to_der().map_err(err)?;
    let key = issuer
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    Ok(CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: ID_SHA_1,
            parameters: Some(Any::from(AnyRef::from(Null))),
        },
        issuer_name_hash: OctetString::new(sha1(&name)).map_err(err)?,
        issuer_key_hash: OctetString::new(sha1(key)).map_err(err)?,
        serial_number: leaf.tbs_certificate.serial_number.clone(),
    })
}

/// SHA-1 is what RFC 6960 CertIDs use in practice; it is a lookup key here, not a signature.
fn sha1(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, data)
        .as_ref()
        .to_vec()
}

/// Parameters of the hash algorithm (NULL or absent) are not compared: both encodings occur.
fn same_cert_id(a: &CertId, b: &CertId) -> bool {
    a.hash_algorithm.oid == b.hash_algorithm.oid
        && a.issuer_name_hash == b.issuer_name_hash
        && a.issuer_key_hash == b.issuer_key_hash
        && a.serial_number == b.serial_number
}

fn unix(t: &der::asn1::GeneralizedTime) -> u64 {
    t.to_unix_duration().as_secs()
}

/// The complete first element (tag, length, value) inside a DER SEQUENCE.
fn first_element(seq: &[u8]) -> Result<&[u8], der::Error> {
    let mut outer = SliceReader::new(seq)?;
    let header = Header::decode(&mut outer)?;
    header.tag.assert_eq(Tag::Sequence)?;
    let mut inner = SliceReader::new(outer.read_slice(header.length)?)?;
    inner.tlv_bytes()
}

/// The issuer may sign its own responses; anyone else needs a certificate from the issuer with
/// the OCSP-signing EKU, valid now (RFC 6960 §4.2.2.2). Nothing else is an authorised responder.
fn verify_response_signature(
    basic: &BasicOcspResponse,
    tbs: &[u8],
    issuer: &CertificateDer<'_>,
    now: u64,
) -> Result<(), OcspError> {
    let alg = basic
        .signature_algorithm
        .to_der()
        .map_err(|_| OcspError::Malformed)?;
    let alg = AnyRef::from_der(&alg).map_err(|_| OcspError::Malformed)?;
    let signature = basic.signature.as_bytes().ok_or(OcspError::Malformed)?;
    if signed_by(issuer, alg.value(), tbs, signature) {
        return Ok(());
    }
    let Ok(issuer_anchor) = webpki::anchor_from_trusted_cert(issuer) else {
        return Err(OcspError::BadSignature);
    };
    let time = UnixTime::since_unix_epoch(Duration::from_secs(now));
    for cert in basic.certs.iter().flatten().take(MAX_RESPONDER_CERTS) {
        let Ok(der) = cert.to_der() else { continue };
        let der = CertificateDer::from(der);
        let Ok(responder) = EndEntityCert::try_from(&der) else {
            continue;
        };
        let authorised = responder
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                std::slice::from_ref(&issuer_anchor),
                &[],
                time,
                KeyUsage::required(OCSP_SIGNING_EKU),
                None,
                None,
            )
            .is_ok();
        if authorised && signed_by(&der, alg.value(), tbs, signature) {
            return Ok(());
        }
    }
    Err(OcspError::BadSignature)
}

/// Whether `signer`'s key made `signature` over `msg` with the algorithm whose AlgorithmIdentifier
/// content is `alg`. The algorithm list is webpki's (aws-lc-rs), so no weak algorithm (SHA-1
/// signatures, small RSA keys) can pass.
fn signed_by(signer: &CertificateDer<'_>, alg: &[u8], msg: &[u8], signature: &[u8]) -> bool {
    let Ok(cert) = EndEntityCert::try_from(signer) else {
        return false;
    };
    webpki::ALL_VERIFICATION_ALGS
        .iter()
        .filter(|a| a.signature_alg_id().as_ref() == alg)
        .any(|a| cert.verify_signature(*a, msg, signature).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{Ca, OcspAnswer, OcspSigner};

    const NOW: u64 = 1_800_000_000;
    const MAX_AGE: Duration = Duration::from_secs(3600);

    struct Setup {
        ca: Ca,
        leaf: crate::fixtures::Leaf,
        query: OcspQuery,
    }

    fn setup() -> Setup {
        let ca = Ca::root("ocsp test CA").unwrap();
        let leaf = ca
            .client_with_urls(
                "alice",
                NOW - 3600,
                NOW + 86_400,
                Some("http://ocsp.test/"),
                None,
            )
            .unwrap();
        let query = OcspQuery::new(&parse(&leaf.der), &parse(&ca.der)).unwrap();
        Setup { ca, leaf, query }
    }

    fn parse(der: &CertificateDer<'_>) -> Certificate {
        Certificate::from_der(der.as_ref()).unwrap()
    }

    fn answer(s: &Setup, status: CertStatus) -> OcspAnswer<'_> {
        OcspAnswer::new(&s.ca, &s.leaf, status, NOW - 60)
    }

    #[test]
    fn the_responder_url_comes_from_the_authority_information_access() {
        let s = setup();
        assert_eq!(
            responder_url(&parse(&s.leaf.der)).as_deref(),
            Some("http://ocsp.test/")
        );
        let plain = s.ca.client("plain", NOW - 60, NOW + 60).unwrap();
        assert_eq!(responder_url(&parse(&plain.der)), None);
    }

    #[test]
    fn the_request_is_one_sha1_certid_for_the_leaf_serial() {
        let s = setup();
        let req = OcspRequest::from_der(s.query.body()).unwrap();
        assert!(req.optional_signature.is_none());
        let [one] = req.tbs_request.request_list.as_slice() else {
            panic!("one request expected")
        };
        assert_eq!(one.req_cert.hash_algorithm.oid, ID_SHA_1);
        assert_eq!(one.req_cert.issuer_name_hash.as_bytes().len(), 20);
        assert_eq!(
            one.req_cert.serial_number,
            parse(&s.leaf.der).tbs_certificate.serial_number
        );
    }

    #[test]
    fn good_revoked_and_unknown_answers_signed_by_the_issuer_are_believed() {
        let s = setup();
        let good = answer(&s, CertStatus::good())
            .next_update(NOW + 3600)
            .der()
            .unwrap();
        assert_eq!(
            s.query.check(&good, &s.ca.der, NOW, MAX_AGE),
            Ok(OcspStatus::Good {
                next_update: Some(NOW + 3600)
            })
        );
        let revoked = answer(&s, crate::fixtures::revoked_status(NOW - 7200).unwrap())
            .der()
            .unwrap();
        assert_eq!(
            s.query.check(&revoked, &s.ca.der, NOW, MAX_AGE),
            Ok(OcspStatus::Revoked)
        );
        let unknown = answer(&s, CertStatus::unknown()).der().unwrap();
        assert_eq!(
            s.query.check(&unknown, &s.ca.der, NOW, MAX_AGE),
            Ok(OcspStatus::Unknown)
        );
    }

    #[test]
    fn a_delegated_responder_needs_the_ocsp_signing_eku_from_the_issuer() {
        let s = setup();
        let responder = s.ca.ocsp_responder("responder", true).unwrap();
        let ok = answer(&s, CertStatus::good())
            .signer(OcspSigner::Delegated(&responder))
            .der()
            .unwrap();
        assert!(matches!(
            s.query.check(&ok, &s.ca.der, NOW, MAX_AGE),
            Ok(OcspStatus::Good { .. })
        ));
        let no_eku = s.ca.ocsp_responder("not a responder", false).unwrap();
        let forged = answer(&s, CertStatus::good())
            .signer(OcspSigner::Delegated(&no_eku))
            .der()
            .unwrap();
        assert_eq!(
            s.query.check(&forged, &s.ca.der, NOW, MAX_AGE),
            Err(OcspError::BadSignature)
        );
    }

    #[test]
    fn a_responder_from_another_ca_or_a_stranger_key_is_refused() {
        let s = setup();
        let other = Ca::root("other CA").unwrap();
        let foreign = other.ocsp_responder("foreign responder", true).unwrap();
        let r = answer(&s, CertStatus::good())
            .signer(OcspSigner::Delegated(&foreign))
            .der()
            .unwrap();
        assert_eq!(
            s.query.check(&r, &s.ca.der, NOW, MAX_AGE),
            Err(OcspError::BadSignature)
        );
        let r = answer(&s, CertStatus::good())
            .signer(OcspSigner::Other(&other))
            .der()
            .unwrap();
        assert_eq!(
            s.query.check(&r, &s.ca.der, NOW, MAX_AGE),
            Err(OcspError::BadSignature)
        );
    }

    #[test]
    fn a_tampered_response_fails_its_signature() {
        let s = setup();
        let mut der = answer(&s, CertStatus::good()).der().unwrap();
        // A time inside the signed data: change one digit without breaking the DER.
        let time = der::asn1::GeneralizedTime::from_unix_duration(Duration::from_secs(NOW - 60))
            .unwrap()
            .to_der()
            .unwrap();
        let at = der.windows(time.len()).position(|w| w == time).unwrap() + 5;
        der[at] = if der[at] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            s.query.check(&der, &s.ca.der, NOW, MAX_AGE),
            Err(OcspError::BadSignature)
        );
    }

    #[test]
    fn an_answer_about_another_certificate_does_not_count() {
        let s = setup();
        let bob =
            s.ca.client_with_urls(
                "bob",
                NOW - 3600,
                NOW + 86_400,
                Some("http://ocsp.test/"),
                None,
            )
            .unwrap();
        let r = OcspAnswer::new(&s.ca, &bob, CertStatus::good(), NOW - 60)
            .der()
            .unwrap();
        assert_eq!(
            s.query.check(&r, &s.ca.der, NOW, MAX_AGE),
            Err(OcspError::NoMatchingResponse)
        );
    }

    #[test]
    fn stale_and_future_answers_are_refused_at_the_injected_time() {
        let s = setup();
        let stale = OcspAnswer::new(&s.ca, &s.leaf, CertStatus::good(), NOW - 7200)
            .next_update(NOW - CLOCK_SKEW - 1)
            .der()
            .unwrap();
        assert_eq!(
            s.query.check(&stale, &s.ca.der, NOW, MAX_AGE),
            Err(OcspError::Expired)
        );
        let future = OcspAnswer::new(&s.ca, &s.leaf, CertStatus::good(), NOW + CLOCK_SKEW + 60)
            .der()
            .unwrap();
        assert_eq!(
            s.query.check(&future, &s.ca.der, NOW, MAX_AGE),
            Err(OcspError::NotYetValid)
        );
        // Within the allowed skew both are fine.
        let near = OcspAnswer::new(&s.ca, &s.leaf, CertStatus::good(), NOW + 60)
            .next_update(NOW - 60)
            .der()
            .unwrap();
        assert!(s.query.check(&near, &s.ca.der, NOW, MAX_AGE).is_ok());
    }

    #[test]
    fn error_statuses_and_garbage_are_not_answers() {
        let s = setup();
        let try_later = OcspResponse::try_later().to_der().unwrap();
        assert_eq!(
            s.query.check(&try_later, &s.ca.der, NOW, MAX_AGE),
            Err(OcspError::NotSuccessful(OcspResponseStatus::TryLater))
        );
        assert_eq!(
            s.query.check(b"<html>", &s.ca.der, NOW, MAX_AGE),
            Err(OcspError::Malformed)
        );
        assert_eq!(
            s.query.check(&[], &s.ca.der, NOW, MAX_AGE),
            Err(OcspError::Malformed)
        );
    }

    #[test]
    fn an_answer_without_next_update_is_refused_once_older_than_the_max_age() {
        // Without nextUpdate nothing says when a signed "good" stops being true: an on-path
        // attacker could replay one captured long ago over plain HTTP. Its age is bounded.
        let s = setup();
        let max = MAX_AGE.as_secs();
        let replayed = OcspAnswer::new(&s.ca, &s.leaf, CertStatus::good(), NOW - 30 * 86_400)
            .der()
            .unwrap();
        assert_eq!(
            s.query.check(&replayed, &s.ca.der, NOW, MAX_AGE),
            Err(OcspError::TooOld)
        );
        let just_past = OcspAnswer::new(
            &s.ca,
            &s.leaf,
            CertStatus::good(),
            NOW - max - CLOCK_SKEW - 1,
        )
        .der()
        .unwrap();
        assert_eq!(
            s.query.check(&just_past, &s.ca.der, NOW, MAX_AGE),
            Err(OcspError::TooOld)
        );
        let recent = OcspAnswer::new(&s.ca, &s.leaf, CertStatus::good(), NOW - max + 60)
            .der()
            .unwrap();
        assert!(s.query.check(&recent, &s.ca.der, NOW, MAX_AGE).is_ok());
        // A recent thisUpdate does not rescue a response signed long ago.
        let old_signature = OcspAnswer::new(&s.ca, &s.leaf, CertStatus::good(), NOW - 60)
            .produced_at(NOW - 30 * 86_400)
            .der()
            .unwrap();
        assert_eq!(
            s.query.check(&old_signature, &s.ca.der, NOW, MAX_AGE),
            Err(OcspError::TooOld)
        );
        // With nextUpdate the responder said how long the answer holds; that decides.
        let scheduled = OcspAnswer::new(&s.ca, &s.leaf, CertStatus::good(), NOW - 3 * 86_400)
            .next_update(NOW + 86_400)
            .der()
            .unwrap();
        assert!(s.query.check(&scheduled, &s.ca.der, NOW, MAX_AGE).is_ok());
    }

    #[test]
    fn an_answer_produced_in_the_future_is_refused() {
        let s = setup();
        let r = OcspAnswer::new(&s.ca, &s.leaf, CertStatus::good(), NOW - 60)
            .next_update(NOW + 3600)
            .produced_at(NOW + CLOCK_SKEW + 60)
            .der()
            .unwrap();
        assert_eq!(
            s.query.check(&r, &s.ca.der, NOW, MAX_AGE),
            Err(OcspError::NotYetValid)
        );
    }
}
