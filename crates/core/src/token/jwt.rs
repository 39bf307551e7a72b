//! JWS verification: header rules, key lookup, signature, then the claim rules.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::claims::{self, Binding};
use super::keys::KeySet;
use super::TokenError;

/// What a token must satisfy, borrowed from the policy.
#[derive(Debug, Clone, Copy)]
pub struct TokenRules<'a> {
    pub issuer: &'a str,
    pub audiences: &'a [String],
    pub leeway: u64,
    /// Accepted JOSE `typ` values, compared case-insensitively. A token without `typ` is
    /// refused.
    pub accepted_types: &'a [String],
    /// Longest token accepted (real JWT access tokens are 1-3 KiB).
    pub max_bytes: usize,
    /// Deepest nesting of arrays/objects in the token's header or claims.
    pub max_json_depth: usize,
}

/// A token whose signature and claims verified.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    pub claims: Map<String, Value>,
    pub binding: Binding,
    pub exp: u64,
    /// `nbf`, when the token has one: a cached verification re-checks it at every use.
    pub nbf: Option<u64>,
}

/// Verifies `token` against `keys` at `now`.
pub fn verify(
    token: &str,
    keys: &KeySet,
    rules: &TokenRules<'_>,
    now: u64,
) -> Result<VerifiedToken, TokenError> {
    if token.len() > rules.max_bytes {
        return Err(TokenError::TooLarge);
    }
    check_depth(token, rules.max_json_depth)?;
    refuse_critical_extensions(token)?;
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    let typ_ok = header.typ.as_deref().is_some_and(|typ| {
        rules
            .accepted_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case(typ))
    });
    if !typ_ok {
        return Err(TokenError::TypeNotAllowed);
    }
    let key = keys
        .find(header.kid.as_deref())
        .ok_or(TokenError::UnknownKey)?;
    if !key.algorithms.contains(&header.alg) {
        return Err(TokenError::AlgorithmNotAllowed);
    }
    let data =
        jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &signature_only(header.alg))
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::SignatureInvalid,
                ErrorKind::InvalidAlgorithm => TokenError::AlgorithmNotAllowed,
                _ => TokenError::Malformed,
            })?;
    let exp = claims::check(
        &data.claims,
        rules.issuer,
        rules.audiences,
        rules.leeway,
        now,
    )?;
    let binding = claims::binding(&data.claims);
    let nbf = claims::numeric_date(&data.claims, "nbf")?;
    Ok(VerifiedToken {
        claims: data.claims,
        binding,
        exp,
        nbf,
    })
}

/// Applies the claim rules to an RFC 7662 response (already known `active: true`).
pub fn verify_introspected(
    response: &Map<String, Value>,
    rules: &TokenRules<'_>,
    now: u64,
) -> Result<VerifiedToken, TokenError> {
    let exp =
        claims::check_introspected(response, rules.issuer, rules.audiences, rules.leeway, now)?;
    Ok(VerifiedToken {
        binding: claims::binding(response),
        nbf: claims::numeric_date(response, "nbf")?,
        claims: response.clone(),
        exp,
    })
}

/// Refuses a header or claims segment nested deeper than `max`, before any JSON parser sees it.
fn check_depth(token: &str, max: usize) -> Result<(), TokenError> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    for segment in token.split('.').take(2) {
        let json = URL_SAFE_NO_PAD
            .decode(segment)
            .map_err(|_| TokenError::Malformed)?;
        if json_depth(&json) > max {
            return Err(TokenError::TooDeep);
        }
    }
    Ok(())
}

/// RFC 7515 §4.1.11: extensions listed in `crit` must be understood or the JWS rejected.
/// certbound understands none, and jsonwebtoken's `Header` drops the member silently, so the raw
/// header is read: any `crit`, whatever its value, refuses the token.
fn refuse_critical_extensions(token: &str) -> Result<(), TokenError> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let segment = token.split('.').next().unwrap_or_default();
    let json = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::Malformed)?;
    let header: Map<String, Value> =
        serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    if header.contains_key("crit") {
        return Err(TokenError::Malformed);
    }
    Ok(())
}

/// Deepest nesting of `[`/`{` outside strings.
pub(crate) fn json_depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in json {
        match b {
            _ if escaped => escaped = false,
            b'\\' if in_string => escaped = true,
            b'"' => in_string = !in_string,
            b'[' | b'{' if !in_string => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' if !in_string => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// jsonwebtoken's validation is used for the signature and the algorithm only: the one
/// algorithm the key allows (or the DPoP proof names). Time, issuer and audience are checked by
/// `claims::check` (a proof's by `dpop::verify`), which take an injected clock and report each
/// failure precisely.
pub(crate) fn signature_only(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.algorithms = vec![alg];
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.leeway = 0;
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;
    const ISS: &str = "https://idp.test";

    struct Signer {
        key: rcgen::KeyPair,
        kid: &'static str,
    }

    impl Signer {
        fn new(kid: &'static str) -> Self {
            Self {
                key: rcgen::KeyPair::generate().unwrap(),
                kid,
            }
        }
        fn jwk(&self) -> Value {
            let raw = self.key.public_key_raw();
            json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "alg": "ES256",
                   "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65])})
        }
        fn sign(&self, typ: &str, claims: &Value) -> String {
            let mut h = Header::new(Algorithm::ES256);
            h.kid = Some(self.kid.into());
            h.typ = Some(typ.into());
            let k = EncodingKey::from_ec_pem(self.key.serialize_pem().as_bytes()).unwrap();
            jsonwebtoken::encode(&h, claims, &k).unwrap()
        }
    }

    fn keyset(signers: &[&Signer]) -> KeySet {
        let keys: Vec<Value> = signers.iter().map(|s| s.jwk()).collect();
        KeySet::from_jwks_json(&serde_json::to_vec(&json!({ "keys": keys })).unwrap()).unwrap()
    }

    fn types() -> Vec<String> {
        vec!["at+jwt".into(), "application/at+jwt".into(), "JWT".into()]
    }

    fn good_claims() -> Value {
        json!({"iss": ISS, "exp": NOW + 300, "aud": "https://api.test", "sub": "alice",
               "cnf": {"x5t#S256": "hBWQVGeGj9eqCxJve2nO5qbn3BdbWN3zeB8F1ClK1p0"}})
    }

    fn run(token: &str, keys: &KeySet) -> Result<VerifiedToken, TokenError> {
        let types = types();
        let aud = vec!["https://api.test".to_string()];
        let rules = TokenRules {
            issuer: ISS,
            audiences: &aud,
            leeway: 0,
            accepted_types: &types,
            max_bytes: 16 * 1024,
            max_json_depth: 8,
        };
        verify(token, keys, &rules, NOW)
    }

    /// Builds a token by hand, for shapes jsonwebtoken refuses to produce.
    fn raw_token(header: Value, claims: &Value, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    /// Signs any header (a `crit` member, say) the way a real issuer would.
    fn sign_raw(s: &Signer, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let k = EncodingKey::from_ec_pem(s.key.serialize_pem().as_bytes()).unwrap();
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &k, Algorithm::ES256).unwrap();
        format!("{input}.{sig}")
    }

    #[test]
    fn a_token_with_a_critical_header_extension_is_refused() {
        // RFC 7515 §4.1.11: a recipient that does not understand a listed extension must reject
        // the JWS. certbound understands none, so any `crit` (even an empty or odd one) is refused.
        let s = Signer::new("k1");
        let keys = keyset(&[&s]);
        let plain = json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"});
        assert!(run(&sign_raw(&s, &plain, &good_claims()), &keys).is_ok());
        for crit in [
            json!(["exp"]),
            json!(["urn:example:policy"]),
            json!([]),
            json!("b64"),
        ] {
            let mut h = plain.clone();
            h["crit"] = crit.clone();
            h["urn:example:policy"] = json!("must-understand");
            assert_eq!(
                run(&sign_raw(&s, &h, &good_claims()), &keys),
                Err(TokenError::Malformed),
                "crit = {crit}"
            );
        }
    }

    #[test]
    fn a_valid_bound_token_verifies() {
        let s = Signer::new("k1");
        let t = run(&s.sign("at+jwt", &good_claims()), &keyset(&[&s])).unwrap();
        assert_eq!(
            t.binding,
            Binding::X5tS256("hBWQVGeGj9eqCxJve2nO5qbn3BdbWN3zeB8F1ClK1p0".into())
        );
        assert_eq!(t.claims["sub"], "alice");
    }

    #[test]
    fn keycloak_typ_jwt_is_accepted_case_insensitively() {
        let s = Signer::new("k1");
        assert!(run(&s.sign("jwt", &good_claims()), &keyset(&[&s])).is_ok());
        assert!(run(
            &s.sign("Application/AT+JWT", &good_claims()),
            &keyset(&[&s])
        )
        .is_ok());
    }

    #[test]
    fn other_or_missing_typ_is_refused() {
        let s = Signer::new("k1");
        assert_eq!(
            run(&s.sign("dpop+jwt", &good_claims()), &keyset(&[&s])),
            Err(TokenError::TypeNotAllowed)
        );
        let h = json!({"alg": "ES256", "kid": "k1"});
        assert_eq!(
            run(&raw_token(h, &good_claims(), b"x"), &keyset(&[&s])),
            Err(TokenError::TypeNotAllowed)
        );
    }

    #[test]
    fn a_token_signed_by_another_key_under_the_same_kid_fails_the_signature() {
        let real = Signer::new("k1");
        let forger = Signer::new("k1");
        assert_eq!(
            run(&forger.sign("at+jwt", &good_claims()), &keyset(&[&real])),
            Err(TokenError::SignatureInvalid)
        );
    }

    #[test]
    fn tampered_claims_fail_the_signature() {
        let s = Signer::new("k1");
        let token = s.sign("at+jwt", &good_claims());
        let parts: Vec<&str> = token.split('.').collect();
        let mut c = good_claims();
        c["sub"] = "mallory".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(c.to_string()),
            parts[2]
        );
        assert_eq!(
            run(&forged, &keyset(&[&s])),
            Err(TokenError::SignatureInvalid)
        );
    }

    #[test]
    fn unknown_kid_is_reported_so_the_caller_can_refresh() {
        let s = Signer::new("k1");
        let other = Signer::new("k2");
        assert_eq!(
            run(&other.sign("at+jwt", &good_claims()), &keyset(&[&s])),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let s = Signer::new("k1");
        let h = json!({"alg": "none", "typ": "at+jwt", "kid": "k1"});
        let t = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(h.to_string()),
            URL_SAFE_NO_PAD.encode(good_claims().to_string())
        );
        assert!(run(&t, &keyset(&[&s])).is_err());
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_refused() {
        let s = Signer::new("k1");
        let public = s.jwk().to_string();
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        h.typ = Some("at+jwt".into());
        let t = jsonwebtoken::encode(
            &h,
            &good_claims(),
            &EncodingKey::from_secret(public.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            run(&t, &keyset(&[&s])),
            Err(TokenError::AlgorithmNotAllowed)
        );
    }

    #[test]
    fn algorithm_other_than_the_keys_is_refused() {
        let s = Signer::new("k1");
        let h = json!({"alg": "ES384", "typ": "at+jwt", "kid": "k1"});
        assert_eq!(
            run(&raw_token(h, &good_claims(), &[0u8; 96]), &keyset(&[&s])),
            Err(TokenError::AlgorithmNotAllowed)
        );
    }

    #[test]
    fn missing_aud_is_refused_when_audience_is_configured() {
        let s = Signer::new("k1");
        let mut c = good_claims();
        c.as_object_mut().unwrap().remove("aud");
        assert_eq!(
            run(&s.sign("at+jwt", &c), &keyset(&[&s])),
            Err(TokenError::MissingClaim("aud"))
        );
    }

    #[test]
    fn expired_token_is_refused() {
        let s = Signer::new("k1");
        let mut c = good_claims();
        c["exp"] = (NOW - 1).into();
        assert_eq!(
            run(&s.sign("at+jwt", &c), &keyset(&[&s])),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn oversized_and_garbage_tokens_are_refused() {
        let s = Signer::new("k1");
        let keys = keyset(&[&s]);
        assert_eq!(
            run(&"a".repeat(16 * 1024 + 1), &keys),
            Err(TokenError::TooLarge)
        );
        for junk in ["", "a", "a.b", "a.b.c", "....", "eyJ9.e30.x"] {
            assert_eq!(run(junk, &keys), Err(TokenError::Malformed), "{junk:?}");
        }
    }

    #[test]
    fn eddsa_and_es384_keys_verify_their_algorithms() {
        for (alg, rc_alg) in [
            (Algorithm::EdDSA, &rcgen::PKCS_ED25519),
            (Algorithm::ES384, &rcgen::PKCS_ECDSA_P384_SHA384),
        ] {
            let key = rcgen::KeyPair::generate_for(rc_alg).unwrap();
            let raw = key.public_key_raw();
            let jwk = match alg {
                Algorithm::EdDSA => {
                    json!({"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": URL_SAFE_NO_PAD.encode(raw)})
                }
                _ => {
                    json!({"kty": "EC", "crv": "P-384", "kid": "k", "x": URL_SAFE_NO_PAD.encode(&raw[1..49]), "y": URL_SAFE_NO_PAD.encode(&raw[49..97])})
                }
            };
            let keys =
                KeySet::from_jwks_json(&serde_json::to_vec(&json!({"keys": [jwk]})).unwrap())
                    .unwrap();
            let mut h = Header::new(alg);
            h.kid = Some("k".into());
            h.typ = Some("at+jwt".into());
            let enc = match alg {
                Algorithm::EdDSA => {
                    EncodingKey::from_ed_pem(key.serialize_pem().as_bytes()).unwrap()
                }
                _ => EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
            };
            let t = jsonwebtoken::encode(&h, &good_claims(), &enc).unwrap();
            assert!(run(&t, &keys).is_ok(), "{alg:?}");
        }
    }

    #[test]
    fn claims_nested_deeper_than_the_limit_are_refused_before_parsing() {
        let s = Signer::new("k1");
        let mut c = good_claims();
        let mut deep = json!(1);
        for _ in 0..8 {
            deep = json!([deep]);
        }
        c["deep"] = deep;
        // 8 arrays inside the claims object: depth 9.
        assert_eq!(
            run(&s.sign("at+jwt", &c), &keyset(&[&s])),
            Err(TokenError::TooDeep)
        );
        c["deep"] = json!([[["not too deep"]]]);
        assert!(run(&s.sign("at+jwt", &c), &keyset(&[&s])).is_ok());
        // Brackets inside strings do not count.
        c["deep"] = json!("[[[[[[[[[[[[{{{{{{{{{{");
        assert!(run(&s.sign("at+jwt", &c), &keyset(&[&s])).is_ok());
    }
}
