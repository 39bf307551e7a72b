//! A DPoP proof (RFC 9449 §4.2-4.3): `parse` checks what the proof says about itself (shape,
//! `typ`, algorithm, public key, signature, claim types); `verify` checks it against the request
//! it came with (`htm`, `htu`, `iat`, `ath`, `nonce`, the token's `cnf.jkt`). Both are pure: no
//! clock, no I/O, no replay state, so tests and the fuzz target call them directly.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::DpopError;

/// Longest proof accepted. A proof with an RSA-4096 `jwk` is about 1.5 KiB.
pub const MAX_PROOF_BYTES: usize = 8 * 1024;
/// Longest `jti` accepted (RFC 9449 asks for at least 96 bits of randomness; UUIDs are 36).
pub const MAX_JTI_BYTES: usize = 256;

/// JWK members that only a private key has (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2; `k` of
/// symmetric keys).
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// A proof whose signature verified under the public key it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub alg: Algorithm,
    /// RFC 7638 SHA-256 thumbprint of the proof's `jwk`, base64url: what `cnf.jkt` must equal.
    pub jkt: String,
    pub jti: String,
    pub htm: String,
    pub htu: String,
    pub iat: u64,
    pub ath: Option<String>,
    pub nonce: Option<String>,
}

/// Parses `proof` and verifies its signature. `algs` is the allow-list (asymmetric only: the
/// configuration refuses anything else); `max_json_depth` bounds nesting as for access tokens.
pub fn parse(proof: &str, algs: &[Algorithm], max_json_depth: usize) -> Result<Proof, DpopError> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err(DpopError::TooLarge);
    }
    let mut parts = proof.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(DpopError::Malformed);
    };
    if s.is_empty() {
        return Err(DpopError::Malformed);
    }
    let header = json_object(h, max_json_depth)?;
    let claims = json_object(c, max_json_depth)?;

    // RFC 7515 §4.1.11: certbound understands no critical extension, so any `crit` refuses.
    if header.contains_key("crit") {
        return Err(DpopError::Malformed);
    }
    let typ_ok = header
        .get("typ")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt"));
    if !typ_ok {
        return Err(DpopError::WrongType);
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(|a| a.parse::<Algorithm>().ok())
        .filter(|a| algs.contains(a))
        .ok_or(DpopError::AlgorithmNotAllowed)?;
    let raw_jwk = match header.get("jwk") {
        Some(Value::Object(o)) => o,
        _ => return Err(DpopError::BadKey),
    };
    if PRIVATE_MEMBERS.iter().any(|m| raw_jwk.contains_key(*m)) {
        return Err(DpopError::BadKey);
    }
    let jwk: Jwk =
        serde_json::from_value(Value::Object(raw_jwk.clone())).map_err(|_| DpopError::BadKey)?;
    if !key_fits(alg, &jwk) {
        return Err(DpopError::BadKey);
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| DpopError::BadKey)?;
    let jkt = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|_| DpopError::BadKey)?;

    jsonwebtoken::decode::<Map<String, Value>>(proof, &key, &crate::token::signature_only(alg))
        .map_err(|_| DpopError::SignatureInvalid)?;

    let string = |name: &str| match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        None => Ok(None),
        _ => Err(DpopError::Malformed),
    };
    let jti = string("jti")?.ok_or(DpopError::Malformed)?;
    if jti.len() > MAX_JTI_BYTES {
        return Err(DpopError::Malformed);
    }
    let htm = string("htm")?.ok_or(DpopError::Malformed)?;
    let htu = string("htu")?.ok_or(DpopError::Malformed)?;
    // RFC 9449 §4.2: `htu` is the target URI "without query and fragment parts". A proof that
    // carries them is malformed, not something to repair by stripping (the FAPI 2.0 conformance
    // suite's negative tests expect a refusal).
    if htu.contains(['?', '#']) {
        return Err(DpopError::Malformed);
    }
    let iat = claims
        .get("iat")
        .and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
        })
        .ok_or(DpopError::Malformed)?;
    Ok(Proof {
        alg,
        jkt,
        jti,
        htm,
        htu,
        iat,
        ath: string("ath")?,
        nonce: string("nonce")?,
    })
}

/// What the request says the proof must match.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The request method (`:method`).
    pub method: &'a str,
    /// The request URI as the client addressed it, without query and fragment.
    pub uri: &'a str,
    /// The access token sent with the proof.
    pub token: &'a str,
    /// The token's `cnf.jkt`, if it has one.
    pub jkt: Option<&'a str>,
    /// `dpop_proof_lifetime`.
    pub lifetime: u64,
    /// Clock skew allowed on both sides of the window.
    pub leeway: u64,
    /// Time now, seconds since the epoch.
    pub now: u64,
}

/// Checks a parsed proof against its request. The nonce and the replay cache are checked by the
/// caller (they need configuration and state).
pub fn verify(proof: &Proof, want: &Expected<'_>) -> Result<(), DpopError> {
    // RFC 9110 §9.1: methods are case-sensitive.
    if proof.htm != want.method {
        return Err(DpopError::MethodMismatch);
    }
    match normalize_htu(&proof.htu) {
        Some(htu) if Some(htu.as_str()) == normalize_htu(want.uri).as_deref() => {}
        _ => return Err(DpopError::UriMismatch),
    }
    let oldest = want
        .now
        .saturating_sub(want.lifetime.saturating_add(want.leeway));
    if proof.iat < oldest || proof.iat > want.now.saturating_add(want.leeway) {
        return Err(DpopError::Stale);
    }
    let ath = proof.ath.as_deref().ok_or(DpopError::TokenHashMismatch)?;
    if !bool::from(
        ath.as_bytes()
            .ct_eq(access_token_hash(want.token).as_bytes()),
    ) {
        return Err(DpopError::TokenHashMismatch);
    }
    if let Some(jkt) = want.jkt {
        if !bool::from(jkt.as_bytes().ct_eq(proof.jkt.as_bytes())) {
            return Err(DpopError::KeyMismatch);
        }
    }
    Ok(())
}

/// `ath`: base64url(SHA-256(ASCII access token)), RFC 9449 §4.2.
pub fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// RFC 9449 §4.3 compares `htu` after RFC 3986 §6.2.2-6.2.3 normalization: scheme and host are
/// case-insensitive, a default port is the same as none, an empty path is `/`; query and
/// fragment are not part of it. Only `http(s)` URLs with a host count.
pub fn normalize_htu(uri: &str) -> Option<String> {
    let uri = uri.split(['?', '#']).next().unwrap_or("");
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    Some(format!("{scheme}://{authority}{path}"))
}

/// The key type and curve the algorithm needs: jsonwebtoken's key from components does not
/// know its curve, so a P-384 key must not reach an ES256 check (or the reverse).
fn key_fits(alg: Algorithm, jwk: &Jwk) -> bool {
    use Algorithm::*;
    match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), RS256 | RS384 | RS512 | PS256 | PS384 | PS512) => true,
        (AlgorithmParameters::EllipticCurve(p), ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(p), ES384) => p.curve == EllipticCurve::P384,
        (AlgorithmParameters::OctetKeyPair(p), EdDSA) => p.curve == EllipticCurve::Ed25519,
        _ => false,
    }
}

/// Decodes one base64url segment to a JSON object, refusing deep nesting before parsing.
fn json_object(segment: &str, max_depth: usize) -> Result<Map<String, Value>, DpopError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| DpopError::Malformed)?;
    if crate::token::json_depth(&bytes) > max_depth {
        return Err(DpopError::TooLarge);
    }
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(o)) => Ok(o),
        _ => Err(DpopError::Malformed),
    }
}
