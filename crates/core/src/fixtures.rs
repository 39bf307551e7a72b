//! Throw-away PKI, signing keys and tokens for the demo, the tests and the benchmarks.
//! Everything is generated in memory on each run; nothing here is a secret worth keeping.
//!
//! What `certbound demo` needs is always built; the helpers only tests, benchmarks and fuzzing
//! use (OCSP answers, CRLs, every header encoding of a chain, per-format policies) are in
//! `test_util`, compiled with the `test-util` feature only, so they never ship in the binary.

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

#[cfg(any(test, feature = "test-util"))]
mod test_util;
#[cfg(any(test, feature = "test-util"))]
pub use test_util::*;
