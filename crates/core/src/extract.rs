//! Credentials from the request as Envoy forwards it: the bearer token and the raw certificate
//! value. Pure functions over borrowed strings; no decoding beyond splitting the header.
//!
//! Envoy lower-cases header names and joins repeated headers with `,` into one value. A bearer
//! token (RFC 6750 `b64token`) never contains a raw comma, so a comma in `authorization` means
//! the header was sent more than once (or one value carried auth-params, as Digest does); how
//! many values are tolerated is `[limits] max_authorization_values`. For certificate headers that judgement belongs to each
//! format (`cert::decode`): some formats use commas themselves.

use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("no bearer token")]
    MissingToken,
    #[error("authorization header is not one bearer credential")]
    MalformedAuthorization,
    #[error("certificate header too large")]
    CertHeaderTooLarge,
}

/// The authentication scheme an access token came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    /// RFC 9449 `Authorization: DPoP <token>`.
    Dpop,
}

/// The bearer token from `authorization`: [`access_token`] with DPoP off.
pub fn bearer_token(
    headers: &HashMap<String, String>,
    max_values: usize,
) -> Result<&str, ExtractError> {
    access_token(headers, max_values, false).map(|(_, t)| t)
}

/// The access token and its scheme. `authorization` may hold at most `max_values`
/// comma-separated values (Envoy joins a repeated header with `, `; a b64token never contains a
/// comma); more than that is malformed. Within the limit exactly one value must be a credential
/// certbound takes — `Bearer`, or `DPoP` when `dpop` is on, both carrying a b64token (RFC 9449
/// §7.1). None counts as no token at all (another scheme such as Basic, as RFC 6750 §3.1 asks
/// for requests without bearer credentials); two or more is malformed, since which one the
/// client meant cannot be known.
pub fn access_token(
    headers: &HashMap<String, String>,
    max_values: usize,
    dpop: bool,
) -> Result<(Scheme, &str), ExtractError> {
    let Some(value) = headers.get("authorization") else {
        return Err(ExtractError::MissingToken);
    };
    let mut found = None;
    for (index, credential) in value.split(',').enumerate() {
        if index >= max_values {
            return Err(ExtractError::MalformedAuthorization);
        }
        let credential = credential.trim_matches([' ', '\t']);
        let (scheme, rest) = credential
            .split_once([' ', '\t'])
            .unwrap_or((credential, ""));
        let scheme = if scheme.eq_ignore_ascii_case("bearer") {
            Scheme::Bearer
        } else if dpop && scheme.eq_ignore_ascii_case("dpop") {
            Scheme::Dpop
        } else {
            continue;
        };
        if found.is_some() {
            return Err(ExtractError::MalformedAuthorization);
        }
        found = Some((scheme, rest.trim_start_matches([' ', '\t'])));
    }
    let (scheme, token) = found.ok_or(ExtractError::MissingToken)?;
    if !is_b64token(token) {
        return Err(ExtractError::MalformedAuthorization);
    }
    Ok((scheme, token))
}

/// RFC 6750 §2.1: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    // Branch-free per byte and folded without short-circuit, so the compiler checks many bytes
    // per step: tokens run to kilobytes and are checked on every request.
    !body.is_empty() && body.bytes().fold(true, |ok, b| ok & is_b64token_byte(b))
}

fn is_b64token_byte(b: u8) -> bool {
    let letter = (b | 0x20).wrapping_sub(b'a') < 26;
    let digit = b.wrapping_sub(b'0') < 10;
    letter
        | digit
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
}

/// The raw value of the certificate header `name` (lower-case), if present and non-empty, and no
/// longer than `max_bytes`.
pub fn cert_header<'a>(
    headers: &'a HashMap<String, String>,
    name: &str,
    max_bytes: usize,
) -> Result<Option<&'a str>, ExtractError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    if value.len() > max_bytes {
        return Err(ExtractError::CertHeaderTooLarge);
    }
    let value = value.trim();
    // Some terminators send the header empty when the client sent no certificate.
    Ok((!value.is_empty()).then_some(value))
}

/// The `Host` the client used, for the `realm` of the challenge.
pub fn host(headers: &HashMap<String, String>) -> Option<&str> {
    headers
        .get(":authority")
        .or_else(|| headers.get("host"))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn b64token_bytes_are_exactly_rfc_6750s() {
        for b in 0..=255u8 {
            let rfc = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
            assert_eq!(is_b64token_byte(b), rfc, "byte {b}");
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in [
            "Bearer abc.def.ghi",
            "bearer abc.def.ghi",
            "BEARER  abc.def.ghi",
            " Bearer\tabc.def.ghi ",
        ] {
            assert_eq!(
                bearer_token(&h(&[("authorization", v)]), 1),
                Ok("abc.def.ghi"),
                "{v:?}"
            );
        }
    }

    #[test]
    fn no_header_or_other_scheme_is_missing_token() {
        assert_eq!(bearer_token(&h(&[]), 1), Err(ExtractError::MissingToken));
        assert_eq!(
            bearer_token(&h(&[("authorization", "Basic dXNlcjpwYXNz")]), 1),
            Err(ExtractError::MissingToken)
        );
        assert_eq!(
            bearer_token(&h(&[("authorization", "DPoP abc")]), 1),
            Err(ExtractError::MissingToken)
        );
    }

    #[test]
    fn dpop_scheme_is_read_only_when_dpop_is_on() {
        let headers = h(&[("authorization", "DPoP abc.def.ghi")]);
        assert_eq!(
            access_token(&headers, 1, true),
            Ok((Scheme::Dpop, "abc.def.ghi"))
        );
        assert_eq!(
            access_token(&headers, 1, false),
            Err(ExtractError::MissingToken)
        );
        assert_eq!(
            access_token(&h(&[("authorization", "dpop a b")]), 1, true),
            Err(ExtractError::MalformedAuthorization)
        );
        assert_eq!(
            access_token(&h(&[("authorization", "Bearer t")]), 1, true),
            Ok((Scheme::Bearer, "t"))
        );
    }

    #[test]
    fn a_bearer_and_a_dpop_credential_together_are_malformed_when_dpop_is_on() {
        let headers = h(&[("authorization", "Bearer abc, DPoP def")]);
        assert_eq!(
            access_token(&headers, 2, true),
            Err(ExtractError::MalformedAuthorization)
        );
        assert_eq!(
            access_token(&headers, 2, false),
            Ok((Scheme::Bearer, "abc"))
        );
    }

    #[test]
    fn two_authorization_values_are_malformed() {
        // How Envoy forwards two Authorization headers.
        let v = "Bearer aaa.bbb.ccc, Bearer ddd.eee.fff";
        assert_eq!(
            bearer_token(&h(&[("authorization", v)]), 1),
            Err(ExtractError::MalformedAuthorization)
        );
    }

    #[test]
    fn more_values_than_the_limit_are_malformed_whatever_they_hold() {
        for v in [
            "Basic dXNlcjpwYXNz, Bearer aaa.bbb.ccc, DPoP x",
            "Bearer aaa.bbb.ccc,,",
            ",,,",
        ] {
            assert_eq!(
                bearer_token(&h(&[("authorization", v)]), 2),
                Err(ExtractError::MalformedAuthorization),
                "{v:?}"
            );
        }
    }

    #[test]
    fn within_the_limit_the_one_bearer_value_is_the_token() {
        for v in [
            "Basic dXNlcjpwYXNz, Bearer aaa.bbb.ccc",
            "Bearer aaa.bbb.ccc, Basic dXNlcjpwYXNz",
            "Bearer aaa.bbb.ccc",
            "bearer\taaa.bbb.ccc ,",
        ] {
            assert_eq!(
                bearer_token(&h(&[("authorization", v)]), 2),
                Ok("aaa.bbb.ccc"),
                "{v:?}"
            );
        }
    }

    #[test]
    fn within_the_limit_two_bearer_values_are_malformed_and_none_is_missing() {
        assert_eq!(
            bearer_token(
                &h(&[("authorization", "Bearer aaa.bbb.ccc, Bearer aaa.bbb.ccc")]),
                4
            ),
            Err(ExtractError::MalformedAuthorization)
        );
        assert_eq!(
            bearer_token(&h(&[("authorization", "Basic dXNlcjpwYXNz, DPoP abc")]), 4),
            Err(ExtractError::MissingToken)
        );
        assert_eq!(
            bearer_token(
                &h(&[("authorization", "Basic dXNlcjpwYXNz, Bearer a b")]),
                4
            ),
            Err(ExtractError::MalformedAuthorization)
        );
    }

    #[test]
    fn empty_or_non_b64token_bearer_is_malformed() {
        for v in [
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "Bearer a\"b",
            "Bearer ===",
        ] {
            assert_eq!(
                bearer_token(&h(&[("authorization", v)]), 1),
                Err(ExtractError::MalformedAuthorization),
                "{v:?}"
            );
        }
    }

    #[test]
    fn cert_header_absent_empty_and_oversized() {
        assert_eq!(cert_header(&h(&[]), "x-client-cert", 100), Ok(None));
        assert_eq!(
            cert_header(&h(&[("x-client-cert", "  ")]), "x-client-cert", 100),
            Ok(None)
        );
        assert_eq!(
            cert_header(&h(&[("x-client-cert", " abc ")]), "x-client-cert", 100),
            Ok(Some("abc"))
        );
        let big = "a".repeat(101);
        assert_eq!(
            cert_header(&h(&[("x-client-cert", &big)]), "x-client-cert", 100),
            Err(ExtractError::CertHeaderTooLarge)
        );
    }

    #[test]
    fn host_prefers_authority() {
        assert_eq!(
            host(&h(&[(":authority", "api.test"), ("host", "x")])),
            Some("api.test")
        );
        assert_eq!(host(&h(&[("host", "x")])), Some("x"));
        assert_eq!(host(&h(&[])), None);
    }
}
