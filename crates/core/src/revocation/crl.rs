//! CRLs (RFC 5280 §5): where a certificate says its CRL is, parsing a downloaded one, and asking
//! webpki whether the leaf is on it.
//!
//! webpki does the checking: the CRL must be signed by the leaf's issuer on the verified path
//! (with the cRLSign key usage where present), be authoritative for the leaf (issuer and
//! distribution point match), and be current at `now`. certbound never reads a serial off a CRL
//! itself.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use webpki::{CertRevocationList, OwnedCertRevocationList};
use x509_cert::ext::pkix::name::DistributionPointName;
use x509_cert::ext::pkix::CrlDistributionPoints;
use x509_cert::Certificate;

use crate::cert::TrustStore;

/// Largest CRL read. Busy public CAs publish CRLs of several MiB; a private CA's are tiny.
pub const MAX_CRL_BYTES: usize = 4 * 1024 * 1024;

/// Why a CRL gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrlError {
    #[error("not a CRL webpki accepts: {0:?}")]
    Malformed(webpki::Error),
    #[error("CRL rejected: {0:?}")]
    Rejected(webpki::Error),
}

/// What a CRL says about the leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlStatus {
    Good,
    Revoked,
    /// The CRL is valid but does not cover this certificate (another issuer or scope).
    NotCovered,
}

/// A parsed CRL.
#[derive(Debug)]
pub struct Crl {
    list: CertRevocationList<'static>,
    /// `nextUpdate` in seconds since the epoch, when it could be read.
    pub next_update: Option<u64>,
    /// DER size, for weighing the cache.
    pub size: usize,
}

impl Crl {
    /// Parses a DER CRL (PEM is accepted too: some servers publish that).
    pub fn parse(body: &[u8]) -> Result<Self, CrlError> {
        let der = if body.starts_with(b"-----BEGIN") {
            CertificateRevocationListDer::from_pem_slice(body)
                .map_err(|_| CrlError::Malformed(webpki::Error::BadDer))?
                .as_ref()
                .to_vec()
        } else {
            body.to_vec()
        };
        let list = OwnedCertRevocationList::from_der(&der).map_err(CrlError::Malformed)?;
        // webpki enforces nextUpdate but does not expose it; it is read here only to bound how
        // long the CRL is cached.
        let next_update = <x509_cert::crl::CertificateList as der::Decode>::from_der(&der)
            .ok()
            .and_then(|c| c.tbs_cert_list.next_update)
            .map(|t| t.to_unix_duration().as_secs());
        Ok(Self {
            list: list.into(),
            next_update,
            size: der.len(),
        })
    }

    /// Whether the leaf of `chain` (already verified by `trust` at `now`) is on this CRL.
    pub fn check(
        &self,
        trust: &TrustStore,
        chain: &[CertificateDer<'_>],
        now: u64,
    ) -> Result<CrlStatus, CrlError> {
        match trust.verify_with_crl(chain, now, &self.list) {
            Ok(()) => Ok(CrlStatus::Good),
            Err(webpki::Error::CertRevoked) => Ok(CrlStatus::Revoked),
            Err(webpki::Error::UnknownRevocationStatus) => Ok(CrlStatus::NotCovered),
            Err(e) => Err(CrlError::Rejected(e)),
        }
    }
}

/// The first http(s) URI among the certificate's CRL distribution points. Other schemes (LDAP)
/// are not fetched.
pub fn distribution_point(cert: &Certificate) -> Option<String> {
    let (_, points) = cert
        .tbs_certificate
        .get::<CrlDistributionPoints>()
        .ok()
        .flatten()?;
    points
        .0
        .iter()
        .filter_map(|p| match &p.distribution_point {
            Some(DistributionPointName::FullName(names)) => Some(names),
            _ => None,
        })
        .flatten()
        .find_map(super::http_uri)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::Ca;
    use der::Decode;

    const NOW: u64 = 1_800_000_000;

    fn parse(der: &CertificateDer<'_>) -> Certificate {
        Certificate::from_der(der.as_ref()).unwrap()
    }

    #[test]
    fn the_http_distribution_point_is_found_and_others_are_ignored() {
        let ca = Ca::root("crl test CA").unwrap();
        let with = ca
            .client_with_urls(
                "a",
                NOW - 60,
                NOW + 60,
                None,
                Some("http://crl.test/ca.crl"),
            )
            .unwrap();
        assert_eq!(
            distribution_point(&parse(&with.der)).as_deref(),
            Some("http://crl.test/ca.crl")
        );
        let ldap = ca
            .client_with_urls("b", NOW - 60, NOW + 60, None, Some("ldap://dir.test/cn=ca"))
            .unwrap();
        assert_eq!(distribution_point(&parse(&ldap.der)), None);
        let none = ca.client("c", NOW - 60, NOW + 60).unwrap();
        assert_eq!(distribution_point(&parse(&none.der)), None);
    }

    #[test]
    fn webpki_finds_the_revoked_leaf_and_passes_the_others() {
        let root = Ca::root("crl root").unwrap();
        let inter = root.intermediate("crl intermediate").unwrap();
        let trust = TrustStore::from_der(vec![root.der.clone()], false).unwrap();
        let alice = inter.client("alice", NOW - 60, NOW + 86_400).unwrap();
        let bob = inter.client("bob", NOW - 60, NOW + 86_400).unwrap();
        let crl = Crl::parse(&inter.crl(&[&bob], NOW - 60, NOW + 3600).unwrap()).unwrap();
        assert_eq!(crl.next_update, Some(NOW + 3600));
        let chain = |leaf: &crate::fixtures::Leaf| vec![leaf.der.clone(), inter.der.clone()];
        assert_eq!(crl.check(&trust, &chain(&alice), NOW), Ok(CrlStatus::Good));
        assert_eq!(crl.check(&trust, &chain(&bob), NOW), Ok(CrlStatus::Revoked));
    }

    #[test]
    fn a_crl_from_another_issuer_does_not_cover_the_leaf() {
        let root = Ca::root("crl root").unwrap();
        let other = Ca::root("someone else").unwrap();
        let trust = TrustStore::from_der(vec![root.der.clone()], false).unwrap();
        let alice = root.client("alice", NOW - 60, NOW + 86_400).unwrap();
        let crl = Crl::parse(&other.crl(&[&alice], NOW - 60, NOW + 3600).unwrap()).unwrap();
        assert_eq!(
            crl.check(&trust, std::slice::from_ref(&alice.der), NOW),
            Ok(CrlStatus::NotCovered)
        );
    }

    #[test]
    fn an_expired_crl_is_rejected_at_the_injected_time() {
        let root = Ca::root("crl root").unwrap();
        let trust = TrustStore::from_der(vec![root.der.clone()], false).unwrap();
        let alice = root.client("alice", NOW - 86_400, NOW + 86_400).unwrap();
        let crl = Crl::parse(&root.crl(&[], NOW - 7200, NOW - 3600).unwrap()).unwrap();
        assert_eq!(
            crl.check(&trust, std::slice::from_ref(&alice.der), NOW),
            Err(CrlError::Rejected(webpki::Error::CrlExpired {
                time: rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                    NOW
                )),
                next_update: rustls_pki_types::UnixTime::since_unix_epoch(
                    std::time::Duration::from_secs(NOW - 3600)
                ),
            }))
        );
        assert_eq!(
            crl.check(&trust, std::slice::from_ref(&alice.der), NOW - 5000),
            Ok(CrlStatus::Good)
        );
    }

    #[test]
    fn garbage_is_not_a_crl() {
        assert!(matches!(Crl::parse(b"<html>"), Err(CrlError::Malformed(_))));
    }
}
