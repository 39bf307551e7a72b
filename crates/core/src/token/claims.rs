//! Registered-claim rules (RFC 7519 / RFC 9068) checked at an injected time, and the
//! confirmation (`cnf`) member the binding step reads.

use serde_json::{Map, Value};

use super::TokenError;

/// What the token says about its certificate binding (RFC 8705 §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// No `cnf.x5t#S256`.
    Unbound,
    /// The `x5t#S256` value as sent (checked for shape by `bind`).
    X5tS256(String),
    /// `cnf` or `cnf.x5t#S256` present but not of the right JSON type.
    Malformed,
}

pub(crate) fn binding(claims: &Map<String, Value>) -> Binding {
    match claims.get("cnf") {
        None => Binding::Unbound,
        Some(Value::Object(cnf)) => match cnf.get("x5t#S256") {
            None => Binding::Unbound,
            Some(Value::String(s)) => Binding::X5tS256(s.clone()),
            Some(_) => Binding::Malformed,
        },
        Some(_) => Binding::Malformed,
    }
}

/// Reads a NumericDate. Fractions are allowed by RFC 7519 and truncated.
pub(crate) fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => match v
            .as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
        {
            Some(n) => Ok(Some(n)),
            None => Err(TokenError::MissingClaim(name)),
        },
    }
}

/// Checks `iss`, `exp`, `nbf` (both with `leeway`) and, when `audiences` is not empty, that
/// `aud` contains one of them. Returns `exp`.
pub(crate) fn check(
    claims: &Map<String, Value>,
    issuer: &str,
    audiences: &[String],
    leeway: u64,
    now: u64,
) -> Result<u64, TokenError> {
    match claims.get("iss") {
        Some(Value::String(iss)) if iss == issuer => {}
        Some(Value::String(_)) => return Err(TokenError::IssuerMismatch),
        _ => return Err(TokenError::MissingClaim("iss")),
    }
    let exp = numeric_date(claims, "exp")?.ok_or(TokenError::MissingClaim("exp"))?;
    if now > exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = numeric_date(claims, "nbf")? {
        if now.saturating_add(leeway) < nbf {
            return Err(TokenError::NotYetValid);
        }
    }
    if !audiences.is_empty() {
        let matches = |a: &str| audiences.iter().any(|want| want == a);
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => matches(a),
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(matches),
            _ => return Err(TokenError::MissingClaim("aud")),
        };
        if !ok {
            return Err(TokenError::AudienceMismatch);
        }
    }
    Ok(exp)
}

/// The same rules for an RFC 7662 response, where `iss` and `exp` are optional members: checked
/// when present. Returns `exp` (or `u64::MAX` when the IdP sent none).
pub(crate) fn check_introspected(
    claims: &Map<String, Value>,
    issuer: &str,
    audiences: &[String],
    leeway: u64,
    now: u64,
) -> Result<u64, TokenError> {
    let mut with_defaults;
    let claims = if claims.contains_key("iss") && claims.contains_key("exp") {
        claims
    } else {
        with_defaults = claims.clone();
        with_defaults
            .entry("iss")
            .or_insert_with(|| Value::String(issuer.to_string()));
        with_defaults
            .entry("exp")
            .or_insert_with(|| Value::from(u64::MAX));
        &with_defaults
    };
    check(claims, issuer, audiences, leeway, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;
    const ISS: &str = "https://idp.test";

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn aud() -> Vec<String> {
        vec!["https://api.test".into()]
    }

    #[test]
    fn valid_claims_pass_and_return_exp() {
        let c = claims(json!({"iss": ISS, "exp": NOW + 60, "aud": "https://api.test"}));
        assert_eq!(check(&c, ISS, &aud(), 0, NOW), Ok(NOW + 60));
    }

    #[test]
    fn exp_and_nbf_honour_leeway() {
        let c = claims(json!({"iss": ISS, "exp": NOW - 30, "nbf": NOW + 30}));
        assert_eq!(check(&c, ISS, &[], 0, NOW), Err(TokenError::Expired));
        assert_eq!(check(&c, ISS, &[], 60, NOW), Ok(NOW - 30));
        let c = claims(json!({"iss": ISS, "exp": NOW + 100, "nbf": NOW + 30}));
        assert_eq!(check(&c, ISS, &[], 0, NOW), Err(TokenError::NotYetValid));
    }

    #[test]
    fn missing_exp_or_iss_is_refused() {
        assert_eq!(
            check(&claims(json!({"iss": ISS})), ISS, &[], 0, NOW),
            Err(TokenError::MissingClaim("exp"))
        );
        assert_eq!(
            check(&claims(json!({"exp": NOW + 1})), ISS, &[], 0, NOW),
            Err(TokenError::MissingClaim("iss"))
        );
        assert_eq!(
            check(
                &claims(json!({"iss": ISS, "exp": "tomorrow"})),
                ISS,
                &[],
                0,
                NOW
            ),
            Err(TokenError::MissingClaim("exp"))
        );
    }

    #[test]
    fn wrong_issuer_is_refused() {
        let c = claims(json!({"iss": "https://evil.test", "exp": NOW + 1}));
        assert_eq!(check(&c, ISS, &[], 0, NOW), Err(TokenError::IssuerMismatch));
    }

    #[test]
    fn audience_is_required_when_configured_and_may_be_an_array() {
        let none = claims(json!({"iss": ISS, "exp": NOW + 1}));
        assert_eq!(
            check(&none, ISS, &aud(), 0, NOW),
            Err(TokenError::MissingClaim("aud"))
        );
        assert!(check(&none, ISS, &[], 0, NOW).is_ok());
        let list = claims(json!({"iss": ISS, "exp": NOW + 1, "aud": ["x", "https://api.test"]}));
        assert!(check(&list, ISS, &aud(), 0, NOW).is_ok());
        let wrong = claims(json!({"iss": ISS, "exp": NOW + 1, "aud": ["x"]}));
        assert_eq!(
            check(&wrong, ISS, &aud(), 0, NOW),
            Err(TokenError::AudienceMismatch)
        );
    }

    #[test]
    fn introspection_responses_may_omit_iss_and_exp_but_not_lie_about_them() {
        let c = claims(json!({"active": true, "aud": "https://api.test"}));
        assert_eq!(check_introspected(&c, ISS, &aud(), 0, NOW), Ok(u64::MAX));
        let c =
            claims(json!({"active": true, "iss": "https://evil.test", "aud": "https://api.test"}));
        assert_eq!(
            check_introspected(&c, ISS, &aud(), 0, NOW),
            Err(TokenError::IssuerMismatch)
        );
        let c = claims(json!({"active": true, "exp": NOW - 1}));
        assert_eq!(
            check_introspected(&c, ISS, &[], 0, NOW),
            Err(TokenError::Expired)
        );
        let c = claims(json!({"active": true}));
        assert_eq!(
            check_introspected(&c, ISS, &aud(), 0, NOW),
            Err(TokenError::MissingClaim("aud"))
        );
    }

    #[test]
    fn binding_reads_cnf_x5t_s256() {
        assert_eq!(binding(&claims(json!({}))), Binding::Unbound);
        assert_eq!(
            binding(&claims(json!({"cnf": {"jkt": "x"}}))),
            Binding::Unbound
        );
        assert_eq!(
            binding(&claims(json!({"cnf": {"x5t#S256": "abc"}}))),
            Binding::X5tS256("abc".into())
        );
        assert_eq!(binding(&claims(json!({"cnf": "abc"}))), Binding::Malformed);
        assert_eq!(
            binding(&claims(json!({"cnf": {"x5t#S256": 5}}))),
            Binding::Malformed
        );
    }
}
