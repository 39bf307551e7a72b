//! Throw-away PKI, signing keys and tokens for the demo, the tests and the benchmarks.
//! Everything is generated in memory on each run; nothing here is a secret worth keeping.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use rustls_pki_types::CertificateDer;
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("token signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    #[error("public key cannot be expressed as a JWK")]
    Jwk,
    #[error("DER encoding failed: {0}")]
    Der(#[from] der::Error),
    #[error("OCSP: {0}")]
    Ocsp(String),
}

type Result<T> = std::result::Result<T, FixtureError>;

/// A certificate authority that can issue intermediates, client and server certificates.
pub struct Ca {
    key: KeyPair,
    params: CertificateParams,
    pub pem: String,
    pub der: CertificateDer<'static>,
}

/// An issued end-entity certificate with its key.
pub struct Leaf {
    pub pem: String,
    pub der: CertificateDer<'static>,
    pub key_pem: String,
}

impl Ca {
    /// A self-signed root.
    pub fn root(cn: &str) -> Result<Self> {
        let key = KeyPair::generate()?;
        let params = ca_params(cn)?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            pem: cert.pem(),
            der: cert.der().clone(),
            key,
            params,
        })
    }

    /// A CA signed by this one.
    pub fn intermediate(&self, cn: &str) -> Result<Self> {
        let key = KeyPair::generate()?;
        let params = ca_params(cn)?;
        let cert = params.signed_by(&key, &Issuer::from_params(&self.params, &self.key))?;
        Ok(Self {
            pem: cert.pem(),
            der: cert.der().clone(),
            key,
            params,
        })
    }

    /// A client certificate (EKU clientAuth) valid from `not_before` to `not_after` (Unix seconds).
    pub fn client(&self, cn: &str, not_before: u64, not_after: u64) -> Result<Leaf> {
        self.issue(client_params(cn, not_before, not_after)?)
    }

    /// A client certificate like [`Ca::client`] that names where its revocation status is
    /// published: an OCSP responder in its Authority Information Access extension and a CRL
    /// distribution point.
    pub fn client_with_urls(
        &self,
        cn: &str,
        not_before: u64,
        not_after: u64,
        ocsp: Option<&str>,
        crl: Option<&str>,
    ) -> Result<Leaf> {
        let mut p = client_params(cn, not_before, not_after)?;
        if let Some(url) = ocsp {
            p.custom_extensions.push(aia_ocsp(url)?);
        }
        if let Some(url) = crl {
            p.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                uris: vec![url.to_string()],
            }];
        }
        self.issue(p)
    }

    /// A certificate for signing OCSP responses on this CA's behalf; `ocsp_signing` adds the
    /// id-kp-OCSPSigning EKU that makes it an authorised (delegated) responder.
    pub fn ocsp_responder(&self, cn: &str, ocsp_signing: bool) -> Result<Responder> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = if ocsp_signing {
            vec![ExtendedKeyUsagePurpose::OcspSigning]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &Issuer::from_params(&self.params, &self.key))?;
        Ok(Responder {
            der: cert.der().clone(),
            key,
        })
    }

    /// A CRL signed by this CA listing `revoked`, valid from `this_update` to `next_update`.
    pub fn crl(&self, revoked: &[&Leaf], this_update: u64, next_update: u64) -> Result<Vec<u8>> {
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        let mut revoked_certs = Vec::new();
        for leaf in revoked {
            revoked_certs.push(rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(&leaf.serial()?),
                revocation_time: epoch + Duration::from_secs(this_update),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            });
        }
        let params = rcgen::CertificateRevocationListParams {
            this_update: epoch + Duration::from_secs(this_update),
            next_update: epoch + Duration::from_secs(next_update),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&Issuer::from_params(&self.params, &self.key))?;
        Ok(crl.der().as_ref().to_vec())
    }

    /// A TLS server certificate for the given DNS names / IP addresses.
    pub fn server(&self, names: &[&str]) -> Result<Leaf> {
        let mut p =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        p.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("server"),
        );
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(p)
    }

    fn issue(&self, params: CertificateParams) -> Result<Leaf> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &Issuer::from_params(&self.params, &self.key))?;
        Ok(Leaf {
            pem: cert.pem(),
            der: cert.der().clone(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn client_params(cn: &str, not_before: u64, not_after: u64) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(vec![format!("{cn}.clients.test")])?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    p.not_before = epoch + Duration::from_secs(not_before);
    p.not_after = epoch + Duration::from_secs(not_after);
    Ok(p)
}

/// Authority Information Access with one id-ad-ocsp URI (rcgen has no field for it).
fn aia_ocsp(url: &str) -> Result<rcgen::CustomExtension> {
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};
    let aia = AuthorityInfoAccessSyntax(vec![AccessDescription {
        access_method: const_oid::db::rfc5280::ID_AD_OCSP,
        access_location: GeneralName::UniformResourceIdentifier(der::asn1::Ia5String::new(url)?),
    }]);
    Ok(rcgen::CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 5, 5, 7, 1, 1],
        der::Encode::to_der(&aia)?,
    ))
}

fn ca_params(cn: &str) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(p)
}

impl Leaf {
    /// The serial number's DER value bytes.
    pub fn serial(&self) -> Result<Vec<u8>> {
        let cert = <x509_cert::Certificate as der::Decode>::from_der(self.der.as_ref())?;
        Ok(cert.tbs_certificate.serial_number.as_bytes().to_vec())
    }

    /// RFC 8705 `x5t#S256`.
    pub fn x5t(&self) -> String {
        crate::cert::x5t_s256(self.der.as_ref())
    }

    /// As nginx `$ssl_client_escaped_cert` sends it (`url_encoded`).
    pub fn url_encoded(&self) -> String {
        url_encode_pem(&self.pem)
    }

    /// As Kong's tutorial builds it (`base64_encoded`): base64 of the DER, one line.
    pub fn base64_der(&self) -> String {
        STANDARD.encode(self.der.as_ref())
    }
}

/// Percent-encodes PEM the way nginx does: everything but unreserved characters.
pub fn url_encode_pem(pem: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(pem, SET).to_string()
}

/// A token signing key with its public JWK.
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    pub jwk: Value,
}

impl SigningKey {
    pub fn es256(kid: &str) -> Result<Self> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let raw = key.public_key_raw();
        let jwk = json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65])});
        Ok(Self {
            kid: kid.into(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_pem(key.serialize_pem().as_bytes())?,
            jwk,
        })
    }

    pub fn rs256(kid: &str) -> Result<Self> {
        Self::rsa(kid, Algorithm::RS256)
    }

    /// An RSA key for one of RS256/384/512 or PS256/384/512.
    pub fn rsa(kid: &str, alg: Algorithm) -> Result<Self> {
        let key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)?;
        let spki = key.subject_public_key_info();
        use x509_parser::prelude::FromDer;
        let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki)
            .map_err(|_| FixtureError::Jwk)?;
        let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = info.parsed() else {
            return Err(FixtureError::Jwk);
        };
        let trim = |b: &[u8]| -> Vec<u8> {
            let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
            b[start..].to_vec()
        };
        let jwk = json!({"kty": "RSA", "use": "sig", "alg": format!("{alg:?}"), "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(trim(rsa.modulus)), "e": URL_SAFE_NO_PAD.encode(trim(rsa.exponent))});
        Ok(Self {
            kid: kid.into(),
            alg,
            encoding: EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes())?,
            jwk,
        })
    }

    pub fn es384(kid: &str) -> Result<Self> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
        let raw = key.public_key_raw();
        let jwk = json!({"kty": "EC", "crv": "P-384", "use": "sig", "alg": "ES384", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&raw[1..49]), "y": URL_SAFE_NO_PAD.encode(&raw[49..97])});
        Ok(Self {
            kid: kid.into(),
            alg: Algorithm::ES384,
            encoding: EncodingKey::from_ec_pem(key.serialize_pem().as_bytes())?,
            jwk,
        })
    }

    pub fn ed25519(kid: &str) -> Result<Self> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(key.public_key_raw())});
        Ok(Self {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_pem(key.serialize_pem().as_bytes())?,
            jwk,
        })
    }

    /// Signs `claims` with this key, `kid` and the given `typ`.
    pub fn sign(&self, typ: &str, claims: &Value) -> Result<String> {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        h.typ = Some(typ.into());
        Ok(jsonwebtoken::encode(&h, claims, &self.encoding)?)
    }

    /// A DPoP proof (RFC 9449 §4.2): `typ` `dpop+jwt`, this key's public JWK in the header, no
    /// `kid`.
    pub fn dpop_proof(&self, claims: &Value) -> Result<String> {
        let mut h = Header::new(self.alg);
        h.typ = Some("dpop+jwt".into());
        h.jwk = Some(serde_json::from_value(self.jwk.clone()).map_err(|_| FixtureError::Jwk)?);
        Ok(jsonwebtoken::encode(&h, claims, &self.encoding)?)
    }
}

/// A JWKS document of the given keys' public halves.
pub fn jwks(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}

/// Access-token claims bound to `cert` (RFC 8705), valid for an hour from `now`.
pub fn bound_claims(issuer: &str, audience: &str, sub: &str, cert: &Leaf, now: u64) -> Value {
    json!({
        "iss": issuer, "aud": audience, "sub": sub, "client_id": sub,
        "iat": now, "exp": now + 3600, "jti": format!("{sub}-{now}"),
        "cnf": { "x5t#S256": cert.x5t() },
    })
}

/// How a terminator happens to lay out an encoding: where base64 is wrapped, line ends,
/// padding, whitespace around the value. `Layout::default()` is the common one-line form.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Columns at which bare base64 is wrapped; 0 keeps it on one line.
    pub wrap: usize,
    /// What a wrapped base64 line ends with (`base64` without `tr -d '\n'`, or folded).
    pub wrap_with: &'static str,
    pub strip_padding: bool,
    /// PEM line end and width, as the terminator's TLS library writes them.
    pub pem_line_end: &'static str,
    pub pem_width: usize,
    pub lead: &'static str,
    pub trail: &'static str,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            wrap: 0,
            wrap_with: "\n",
            strip_padding: false,
            pem_line_end: "\n",
            pem_width: 64,
            lead: "",
            trail: "",
        }
    }
}

/// One way a terminator carries a certificate chain in one header value.
#[derive(Debug, Clone)]
pub struct HeaderEncoding {
    /// Who sends it this way.
    pub shape: &'static str,
    pub value: String,
    /// The chain the value carries, leaf first, as a decoder must return it (RFC 9440's
    /// `Client-Cert` carries the leaf only).
    pub chain: Vec<Vec<u8>>,
}

fn wrap(s: &str, width: usize, with: &str) -> String {
    if width == 0 {
        return s.to_string();
    }
    s.as_bytes()
        .chunks(width)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(with)
}

/// PEM text of a chain, leaf first.
pub fn pem_text(chain: &[&[u8]], layout: &Layout) -> String {
    let le = layout.pem_line_end;
    chain
        .iter()
        .map(|der| {
            let body = wrap(&STANDARD.encode(der), layout.pem_width, le);
            format!("-----BEGIN CERTIFICATE-----{le}{body}{le}-----END CERTIFICATE-----{le}")
        })
        .collect()
}

/// Every way a terminator is known to put a certificate chain (leaf first) into one header
/// value. The list is by sender, not by `HeaderFormat`: a format is covered when one of these
/// decodes under it (see `encode_for`), so tests and fuzz seeds pick up new formats unchanged.
pub fn header_encodings(chain: &[&[u8]], layout: &Layout) -> Vec<HeaderEncoding> {
    let all: Vec<Vec<u8>> = chain.iter().map(|c| c.to_vec()).collect();
    let Some(leaf) = chain.first().copied() else {
        return Vec::new();
    };
    let pem = pem_text(chain, layout);
    let around = |v: String| format!("{}{v}{}", layout.lead, layout.trail);
    let b64 = |bytes: &[u8]| {
        let s = if layout.strip_padding {
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
        } else {
            STANDARD.encode(bytes)
        };
        wrap(&s, layout.wrap, layout.wrap_with)
    };
    let hex: String = crate::cert::thumbprint(leaf)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let traefik = chain
        .iter()
        .map(|c| STANDARD.encode(c))
        .collect::<Vec<_>>()
        .join(",");
    let enc = |shape, value, chain: &Vec<Vec<u8>>| HeaderEncoding {
        shape,
        value,
        chain: chain.clone(),
    };
    vec![
        enc(
            "base64 of the DER (Kong, HAProxy, F5)",
            around(b64(&chain.concat())),
            &all,
        ),
        enc("base64 of the PEM text", around(b64(pem.as_bytes())), &all),
        enc("nginx $ssl_client_escaped_cert", url_encode_pem(&pem), &all),
        enc(
            "AWS ALB (+, = and / left raw)",
            pem.replace(' ', "%20")
                .replace('\n', "%0A")
                .replace('\r', "%0D"),
            &all,
        ),
        enc(
            "PEM with line breaks folded into spaces (Apache)",
            around(pem.replace("\r\n", " ").replace('\n', " ")),
            &all,
        ),
        enc(
            "RFC 9440 Client-Cert",
            format!(":{}:", STANDARD.encode(leaf)),
            &vec![leaf.to_vec()],
        ),
        enc(
            "Envoy x-forwarded-client-cert",
            format!(
                "By=spiffe://proxy.test;Hash={hex};Cert=\"{}\";Chain=\"{}\";Subject=\"CN=client\";URI=;DNS=client.test",
                url_encode_pem(&pem_text(&chain[..1], layout)),
                url_encode_pem(&pem)
            ),
            &all,
        ),
        enc(
            "Traefik (base64 DER per certificate, escaped)",
            url_encode_pem(&traefik),
            &all,
        ),
    ]
}

/// The chain a header value decodes to in `format`, as plain bytes. The one place that knows
/// what `cert::decode` returns.
pub fn decoded_chain(
    value: &str,
    format: crate::cert::HeaderFormat,
) -> std::result::Result<Vec<Vec<u8>>, crate::cert::CertError> {
    crate::cert::decode(value, format).map(|p| p.chain.iter().map(|c| c.to_vec()).collect())
}

/// An encoding of `chain` that `format` decodes back to exactly what it carries, if any known
/// one does; the whole chain when possible, else the leaf alone (RFC 9440 sends intermediates
/// in a header of their own).
pub fn encode_for(
    format: crate::cert::HeaderFormat,
    chain: &[&[u8]],
    layout: &Layout,
) -> Option<HeaderEncoding> {
    header_encodings(chain, layout)
        .into_iter()
        .filter(|e| decoded_chain(&e.value, format).as_ref() == Ok(&e.chain))
        .min_by_key(|e| chain.len() - e.chain.len())
}

/// A delegated OCSP responder: its certificate and key.
pub struct Responder {
    pub der: CertificateDer<'static>,
    key: KeyPair,
}

/// Who signs a fixture OCSP response.
#[derive(Clone, Copy)]
pub enum OcspSigner<'a> {
    /// The CA that issued the certificate.
    Issuer,
    /// A responder certificate, embedded in the response.
    Delegated(&'a Responder),
    /// Some other CA's key (a forgery).
    Other(&'a Ca),
}

/// A signed OCSP response about one certificate, for tests of the verifier and for local
/// responders.
pub struct OcspAnswer<'a> {
    issuer: &'a Ca,
    leaf: &'a Leaf,
    status: x509_ocsp::CertStatus,
    this_update: u64,
    next_update: Option<u64>,
    /// `producedAt`; `this_update` unless set.
    produced_at: Option<u64>,
    signer: OcspSigner<'a>,
}

/// `revoked` status with the given revocation time.
pub fn revoked_status(at: u64) -> Result<x509_ocsp::CertStatus> {
    Ok(x509_ocsp::CertStatus::Revoked(x509_ocsp::RevokedInfo {
        revocation_time: x509_ocsp::OcspGeneralizedTime(gtime(at)?),
        revocation_reason: None,
    }))
}

fn gtime(t: u64) -> Result<der::asn1::GeneralizedTime> {
    Ok(der::asn1::GeneralizedTime::from_unix_duration(
        Duration::from_secs(t),
    )?)
}

impl<'a> OcspAnswer<'a> {
    /// Signed by the issuer, without nextUpdate (as `openssl ocsp` answers without `-nmin`).
    pub fn new(
        issuer: &'a Ca,
        leaf: &'a Leaf,
        status: x509_ocsp::CertStatus,
        this_update: u64,
    ) -> Self {
        Self {
            issuer,
            leaf,
            status,
            this_update,
            next_update: None,
            produced_at: None,
            signer: OcspSigner::Issuer,
        }
    }

    pub fn produced_at(mut self, t: u64) -> Self {
        self.produced_at = Some(t);
        self
    }

    pub fn next_update(mut self, t: u64) -> Self {
        self.next_update = Some(t);
        self
    }

    pub fn signer(mut self, signer: OcspSigner<'a>) -> Self {
        self.signer = signer;
        self
    }

    /// The DER OCSPResponse.
    pub fn der(&self) -> Result<Vec<u8>> {
        use der::{Decode, Encode};
        use x509_ocsp::{
            BasicOcspResponse, OcspGeneralizedTime, OcspResponse, ResponderId, ResponseData,
            SingleResponse, Version,
        };
        let parse = |d: &CertificateDer<'_>| x509_cert::Certificate::from_der(d.as_ref());
        let cert_id =
            crate::revocation::ocsp::cert_id(&parse(&self.leaf.der)?, &parse(&self.issuer.der)?)
                .map_err(|e| FixtureError::Ocsp(e.to_string()))?;
        let (key, certs): (&KeyPair, _) = match self.signer {
            OcspSigner::Issuer => (&self.issuer.key, None),
            OcspSigner::Delegated(r) => (&r.key, Some(vec![parse(&r.der)?])),
            OcspSigner::Other(ca) => (&ca.key, None),
        };
        let key_hash = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            key.public_key_raw(),
        );
        let data = ResponseData {
            version: Version::V1,
            responder_id: ResponderId::ByKey(der::asn1::OctetString::new(key_hash.as_ref())?),
            produced_at: OcspGeneralizedTime(gtime(self.produced_at.unwrap_or(self.this_update))?),
            responses: vec![SingleResponse {
                cert_id,
                cert_status: self.status,
                this_update: OcspGeneralizedTime(gtime(self.this_update)?),
                next_update: match self.next_update {
                    Some(t) => Some(OcspGeneralizedTime(gtime(t)?)),
                    None => None,
                },
                single_extensions: None,
            }],
            response_extensions: None,
        };
        let signature = rcgen::SigningKey::sign(key, &data.to_der()?)?;
        let basic = BasicOcspResponse {
            tbs_response_data: data,
            // KeyPair::generate() keys are ECDSA P-256.
            signature_algorithm: x509_cert::spki::AlgorithmIdentifierOwned {
                oid: const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
                parameters: None,
            },
            signature: der::asn1::BitString::from_bytes(&signature)?,
            certs,
        };
        Ok(OcspResponse::successful(basic)?.to_der()?)
    }
}

/// The policy name `per_cert_source` gives Envoy's peer certificate.
pub const PEER_POLICY: &str = "peer";

/// `policies` plus one named copy of the default policy per certificate source: each header
/// format of `HeaderFormat::ALL` (named by its `as_str()`) and Envoy's peer certificate
/// (`PEER_POLICY`). A CheckRequest picks one with `context_extensions: {policy: NAME}`, so one
/// server covers every format (property tests, fuzzing).
pub fn per_cert_source(mut policies: crate::policy::Policies) -> crate::policy::Policies {
    use crate::policy::CertSource;
    let base = (*policies.default).clone();
    let mut copies = Vec::new();
    for format in crate::cert::HeaderFormat::ALL {
        let mut p = base.clone();
        p.name = format.as_str().to_string();
        if let CertSource::Header(h) = &mut p.cert_source {
            h.format = format;
        }
        copies.push(p);
    }
    let mut peer = base;
    peer.name = PEER_POLICY.to_string();
    peer.cert_source = CertSource::Peer;
    copies.push(peer);
    for p in copies {
        policies
            .named
            .insert(p.name.clone(), std::sync::Arc::new(p));
    }
    policies
}
