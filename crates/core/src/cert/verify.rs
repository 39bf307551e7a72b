//! Chain verification with rustls-webpki: path building from the leaf through any intermediates
//! (sent with the leaf or configured) to a trust anchor, validity windows at the injected time,
//! and client-auth extended key usage where the extension is present.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{
    CertRevocationList, EndEntityCert, ExpirationPolicy, KeyUsage, RevocationCheckDepth,
    RevocationOptions, RevocationOptionsBuilder, UnknownStatusPolicy, VerifiedPath,
};

use super::CertError;

/// Why a trust store could not be built. Start-up only.
#[derive(Debug, thiserror::Error)]
pub enum TrustStoreError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path} holds no PEM certificate")]
    Empty { path: String },
    #[error("{path}: certificate {index} is not a usable trust anchor: {reason}")]
    BadAnchor {
        path: String,
        index: usize,
        reason: String,
    },
    #[error("no self-signed root among the CA certificates; set allow_partial_chain = true to anchor on an intermediate")]
    NoRoot,
}

/// The configured CA certificates, ready for path building.
#[derive(Debug)]
pub struct TrustStore {
    anchors: Vec<TrustAnchor<'static>>,
    /// The certificates the anchors came from, same order: revocation needs the leaf's issuer as
    /// a whole certificate, which a `TrustAnchor` no longer is.
    anchor_certs: Vec<CertificateDer<'static>>,
    /// Configured CA certificates that are not anchors (intermediates when partial chains are
    /// off): usable to complete a path, never to end one.
    intermediates: Vec<CertificateDer<'static>>,
}

impl TrustStore {
    /// Loads PEM files. With `allow_partial_chain = false` only self-signed certificates are
    /// anchors, the others only help build paths, as OpenSSL does without `X509_V_FLAG_PARTIAL_CHAIN`.
    /// With `true`, every configured certificate is an anchor, so a configured intermediate can
    /// end the chain.
    pub fn from_pem_files<P: AsRef<Path>>(
        paths: &[P],
        allow_partial_chain: bool,
    ) -> Result<Self, TrustStoreError> {
        let mut certs = Vec::new();
        for path in paths {
            let path = path.as_ref();
            let shown = path.display().to_string();
            let mut found = 0;
            for cert in
                CertificateDer::pem_file_iter(path).map_err(|source| TrustStoreError::Read {
                    path: shown.clone(),
                    source,
                })?
            {
                let cert = cert.map_err(|source| TrustStoreError::Read {
                    path: shown.clone(),
                    source,
                })?;
                certs.push((shown.clone(), found, cert));
                found += 1;
            }
            if found == 0 {
                return Err(TrustStoreError::Empty { path: shown });
            }
        }
        Self::from_certs(certs, allow_partial_chain)
    }

    /// Builds a store from DER certificates (tests and the demo).
    pub fn from_der(
        certs: Vec<CertificateDer<'static>>,
        allow_partial_chain: bool,
    ) -> Result<Self, TrustStoreError> {
        let certs = certs
            .into_iter()
            .enumerate()
            .map(|(i, c)| ("<memory>".to_string(), i, c))
            .collect();
        Self::from_certs(certs, allow_partial_chain)
    }

    fn from_certs(
        certs: Vec<(String, usize, CertificateDer<'static>)>,
        allow_partial_chain: bool,
    ) -> Result<Self, TrustStoreError> {
        let mut anchors = Vec::new();
        let mut anchor_certs = Vec::new();
        let mut intermediates = Vec::new();
        for (path, index, cert) in certs {
            let self_signed =
                is_self_signed(&cert).map_err(|reason| TrustStoreError::BadAnchor {
                    path: path.clone(),
                    index,
                    reason,
                })?;
            if allow_partial_chain || self_signed {
                let anchor = webpki::anchor_from_trusted_cert(&cert)
                    .map_err(|e| TrustStoreError::BadAnchor {
                        path: path.clone(),
                        index,
                        reason: e.to_string(),
                    })?
                    .to_owned();
                anchors.push(anchor);
                anchor_certs.push(cert);
            } else {
                intermediates.push(cert);
            }
        }
        if anchors.is_empty() {
            return Err(TrustStoreError::NoRoot);
        }
        Ok(Self {
            anchors,
            anchor_certs,
            intermediates,
        })
    }

    /// Verifies `chain` (leaf first) at `now` seconds since the epoch.
    pub fn verify(&self, chain: &[CertificateDer<'_>], now: u64) -> Result<(), CertError> {
        self.verify_path(chain, now).map(|_| ())
    }

    /// Like [`TrustStore::verify`], and says which certificate issued the leaf on the path that
    /// verified (for revocation checks).
    pub fn verify_path(
        &self,
        chain: &[CertificateDer<'_>],
        now: u64,
    ) -> Result<IssuerRef, CertError> {
        self.verify_path_validity(chain, now)
            .map(|(issuer, _)| issuer)
    }

    /// Like [`TrustStore::verify_path`], and also says when the verified path is valid: the
    /// intersection of the validity windows of the leaf and the intermediates on the path (the
    /// anchor's own dates are not checked, as in path building).
    pub fn verify_path_validity(
        &self,
        chain: &[CertificateDer<'_>],
        now: u64,
    ) -> Result<(IssuerRef, Validity), CertError> {
        let (leaf, sent) = chain.split_first().ok_or(CertError::Malformed)?;
        let ee = EndEntityCert::try_from(leaf).map_err(|_| CertError::Malformed)?;
        self.build(&ee, sent, now, None).map_err(map_webpki_error)
    }

    /// Verifies `chain` again with `crl` consulted for the leaf. The CRL must be authoritative
    /// for the leaf and current at `now`; `CertRevoked`, `UnknownRevocationStatus` (the CRL does
    /// not cover the leaf) and `CrlExpired` are the answers that matter to the caller.
    pub fn verify_with_crl(
        &self,
        chain: &[CertificateDer<'_>],
        now: u64,
        crl: &CertRevocationList<'_>,
    ) -> Result<(), webpki::Error> {
        let crls = [crl];
        let options = RevocationOptionsBuilder::new(&crls)
            .map_err(|_| webpki::Error::UnknownRevocationStatus)?
            .with_depth(RevocationCheckDepth::EndEntity)
            .with_status_policy(UnknownStatusPolicy::Deny)
            .with_expiration_policy(ExpirationPolicy::Enforce)
            .build();
        let (leaf, sent) = chain.split_first().ok_or(webpki::Error::BadDer)?;
        let ee = EndEntityCert::try_from(leaf)?;
        self.build(&ee, sent, now, Some(options)).map(|_| ())
    }

    /// The DER certificate `issuer` points at: one of `chain` (the one that verified) or a
    /// configured CA certificate.
    pub fn issuer_der<'a>(
        &'a self,
        chain: &'a [CertificateDer<'a>],
        issuer: IssuerRef,
    ) -> Option<&'a CertificateDer<'a>> {
        match issuer {
            IssuerRef::Presented(i) => chain.get(i),
            IssuerRef::Intermediate(i) => self.intermediates.get(i),
            IssuerRef::Anchor(i) => self.anchor_certs.get(i),
        }
    }

    fn build(
        &self,
        ee: &EndEntityCert<'_>,
        sent: &[CertificateDer<'_>],
        now: u64,
        revocation: Option<RevocationOptions<'_>>,
    ) -> Result<(IssuerRef, Validity), webpki::Error> {
        let mut intermediates: Vec<CertificateDer<'_>> =
            Vec::with_capacity(sent.len() + self.intermediates.len());
        intermediates.extend(sent.iter().map(|c| CertificateDer::from(c.as_ref())));
        intermediates.extend(
            self.intermediates
                .iter()
                .map(|c| CertificateDer::from(c.as_ref())),
        );
        let issuer = std::cell::Cell::new(None);
        let validity = std::cell::Cell::new(None);
        // webpki hands the verified path to this callback; the path borrows our own slices, so
        // the issuer is identified by address, never by (forgeable) names.
        let record = |path: &VerifiedPath<'_>| {
            issuer.set(self.issuer_of(path, sent));
            validity.set(path_validity(path));
            Ok(())
        };
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            &intermediates,
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(now)),
            KeyUsage::client_auth(),
            revocation,
            Some(&record),
        )?;
        // A verified path always has an issuer and dates that parse; not finding them is a bug,
        // refused all the same.
        Ok((
            issuer.get().ok_or(webpki::Error::UnknownIssuer)?,
            validity.get().ok_or(webpki::Error::BadDerTime)?,
        ))
    }

    fn issuer_of(&self, path: &VerifiedPath<'_>, sent: &[CertificateDer<'_>]) -> Option<IssuerRef> {
        let same = |a: &[u8], b: &[u8]| a.as_ptr() == b.as_ptr() && a.len() == b.len();
        match path.intermediate_certificates().next() {
            Some(cert) => {
                let der = cert.der();
                if let Some(i) = sent.iter().position(|c| same(c, &der)) {
                    return Some(IssuerRef::Presented(i + 1));
                }
                self.intermediates
                    .iter()
                    .position(|c| same(c, &der))
                    .map(IssuerRef::Intermediate)
            }
            None => {
                let anchor = path.anchor();
                self.anchors
                    .iter()
                    .position(|a| std::ptr::eq(a, anchor))
                    .map(IssuerRef::Anchor)
            }
        }
    }
}

/// When a verified result may be reused: `not_before..=not_after`, seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: u64,
    pub not_after: u64,
}

impl Validity {
    /// No dates were checked (no trust store: the chain was verified elsewhere).
    pub const ALWAYS: Validity = Validity {
        not_before: 0,
        not_after: u64::MAX,
    };

    pub fn contains(&self, now: u64) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// The window in which every certificate on the path (leaf and intermediates) is valid.
fn path_validity(path: &VerifiedPath<'_>) -> Option<Validity> {
    let mut window = Validity::ALWAYS;
    let certs = std::iter::once(path.end_entity().der())
        .chain(path.intermediate_certificates().map(|c| c.der()));
    for der in certs {
        let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        let v = parsed.validity();
        let from = u64::try_from(v.not_before.timestamp()).unwrap_or(0);
        let to = u64::try_from(v.not_after.timestamp()).ok()?;
        window.not_before = window.not_before.max(from);
        window.not_after = window.not_after.min(to);
    }
    Some(window)
}

/// Which certificate issued the leaf on a verified path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerRef {
    /// Index into the presented chain (leaf = 0).
    Presented(usize),
    /// A configured CA certificate that is not an anchor.
    Intermediate(usize),
    /// A configured trust anchor.
    Anchor(usize),
}

fn is_self_signed(cert: &CertificateDer<'_>) -> Result<bool, String> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| e.to_string())?;
    Ok(parsed.subject().as_raw() == parsed.issuer().as_raw())
}

fn map_webpki_error(e: webpki::Error) -> CertError {
    use webpki::Error as E;
    match e {
        E::CertExpired { .. } => CertError::Expired,
        E::CertNotValidYet { .. } => CertError::NotYetValid,
        E::UnknownIssuer => CertError::Untrusted,
        E::RequiredEkuNotFoundContext(_) | E::CaUsedAsEndEntity | E::EmptyEkuExtension => {
            CertError::NotForClientAuth
        }
        E::BadDer | E::BadDerTime | E::TrailingData(_) => CertError::Malformed,
        _ => CertError::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    const DAY: u64 = 86_400;

    struct Ca {
        key: KeyPair,
        params: CertificateParams,
        der: CertificateDer<'static>,
    }

    fn params(cn: &str, ca: bool, from: u64, to: u64) -> CertificateParams {
        let mut p = CertificateParams::new(vec![format!("{cn}.test")]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.not_before = rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(from);
        p.not_after = rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(to);
        if ca {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        }
        p
    }

    fn root(cn: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let params = params(cn, true, 0, 4_000_000_000);
        let der = params.clone().self_signed(&key).unwrap().der().clone();
        Ca { key, params, der }
    }

    fn child_ca(cn: &str, parent: &Ca) -> Ca {
        let key = KeyPair::generate().unwrap();
        let params = params(cn, true, 0, 4_000_000_000);
        let issuer = Issuer::from_params(&parent.params, &parent.key);
        let der = params
            .clone()
            .signed_by(&key, &issuer)
            .unwrap()
            .der()
            .clone();
        Ca { key, params, der }
    }

    fn leaf(
        parent: &Ca,
        eku: Option<ExtendedKeyUsagePurpose>,
        from: u64,
        to: u64,
    ) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut p = params("client", false, from, to);
        if let Some(eku) = eku {
            p.extended_key_usages = vec![eku];
        }
        let issuer = Issuer::from_params(&parent.params, &parent.key);
        p.signed_by(&key, &issuer).unwrap().der().clone()
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn leaf_signed_by_root_is_trusted() {
        let ca = root("root");
        let store = TrustStore::from_der(vec![ca.der.clone()], false).unwrap();
        let l = leaf(
            &ca,
            Some(ExtendedKeyUsagePurpose::ClientAuth),
            0,
            4_000_000_000,
        );
        assert_eq!(store.verify(&[l], NOW), Ok(()));
    }

    #[test]
    fn intermediate_sent_with_the_leaf_completes_the_path() {
        let ca = root("root");
        let inter = child_ca("inter", &ca);
        let store = TrustStore::from_der(vec![ca.der.clone()], false).unwrap();
        let l = leaf(&inter, None, 0, 4_000_000_000);
        assert_eq!(
            store.verify(std::slice::from_ref(&l), NOW),
            Err(CertError::Untrusted)
        );
        assert_eq!(store.verify(&[l, inter.der.clone()], NOW), Ok(()));
    }

    #[test]
    fn configured_intermediate_needs_its_root_unless_partial_chain_is_allowed() {
        let ca = root("root");
        let inter = child_ca("inter", &ca);
        let l = leaf(&inter, None, 0, 4_000_000_000);
        assert!(matches!(
            TrustStore::from_der(vec![inter.der.clone()], false),
            Err(TrustStoreError::NoRoot)
        ));
        let partial = TrustStore::from_der(vec![inter.der.clone()], true).unwrap();
        assert_eq!(partial.verify(std::slice::from_ref(&l), NOW), Ok(()));
        let full = TrustStore::from_der(vec![ca.der.clone(), inter.der.clone()], false).unwrap();
        assert_eq!(full.verify(&[l], NOW), Ok(()));
    }

    #[test]
    fn the_leafs_issuer_on_the_verified_path_is_reported() {
        let ca = root("root");
        let inter = child_ca("inter", &ca);
        let store = TrustStore::from_der(vec![ca.der.clone()], false).unwrap();
        let direct = leaf(&ca, None, 0, 4_000_000_000);
        let chain = [direct];
        let issuer = store.verify_path(&chain, NOW).unwrap();
        assert_eq!(issuer, IssuerRef::Anchor(0));
        assert_eq!(store.issuer_der(&chain, issuer), Some(&ca.der));

        let l = leaf(&inter, None, 0, 4_000_000_000);
        let chain = [l.clone(), inter.der.clone()];
        let issuer = store.verify_path(&chain, NOW).unwrap();
        assert_eq!(issuer, IssuerRef::Presented(1));
        assert_eq!(store.issuer_der(&chain, issuer), Some(&inter.der));

        let full = TrustStore::from_der(vec![ca.der.clone(), inter.der.clone()], false).unwrap();
        let chain = [l];
        let issuer = full.verify_path(&chain, NOW).unwrap();
        assert_eq!(issuer, IssuerRef::Intermediate(0));
        assert_eq!(full.issuer_der(&chain, issuer), Some(&inter.der));
    }

    #[test]
    fn leaf_from_another_ca_is_untrusted() {
        let ca = root("root");
        let other = root("other");
        let store = TrustStore::from_der(vec![ca.der.clone()], false).unwrap();
        let l = leaf(&other, None, 0, 4_000_000_000);
        assert_eq!(store.verify(&[l], NOW), Err(CertError::Untrusted));
    }

    #[test]
    fn expired_and_not_yet_valid_leaves_are_refused_at_the_injected_time() {
        let ca = root("root");
        let store = TrustStore::from_der(vec![ca.der.clone()], false).unwrap();
        let l = leaf(&ca, None, NOW - 10 * DAY, NOW - DAY);
        assert_eq!(
            store.verify(std::slice::from_ref(&l), NOW),
            Err(CertError::Expired)
        );
        assert_eq!(store.verify(&[l], NOW - 5 * DAY), Ok(()));
        let future = leaf(&ca, None, NOW + DAY, NOW + 10 * DAY);
        assert_eq!(store.verify(&[future], NOW), Err(CertError::NotYetValid));
    }

    #[test]
    fn server_only_eku_is_not_for_client_auth() {
        let ca = root("root");
        let store = TrustStore::from_der(vec![ca.der.clone()], false).unwrap();
        let l = leaf(
            &ca,
            Some(ExtendedKeyUsagePurpose::ServerAuth),
            0,
            4_000_000_000,
        );
        assert_eq!(store.verify(&[l], NOW), Err(CertError::NotForClientAuth));
    }

    #[test]
    fn a_ca_certificate_is_not_accepted_as_the_leaf() {
        let ca = root("root");
        let inter = child_ca("inter", &ca);
        let store = TrustStore::from_der(vec![ca.der.clone()], false).unwrap();
        assert!(store.verify(std::slice::from_ref(&inter.der), NOW).is_err());
    }

    #[test]
    fn the_trust_anchor_itself_is_not_a_client_certificate() {
        let ca = root("root");
        let store = TrustStore::from_der(vec![ca.der.clone()], false).unwrap();
        assert!(store.verify(std::slice::from_ref(&ca.der), NOW).is_err());
    }
}
