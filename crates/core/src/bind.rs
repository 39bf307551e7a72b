//! The RFC 8705 §3 binding check: the token's `cnf.x5t#S256` against the SHA-256 of the
//! presented certificate's DER, compared in constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::cert::Thumbprint;
use crate::decision::AllowReason;
use crate::names::spelled;
use crate::token::Binding;

spelled! {
    /// Kong's `proof_of_possession_mtls`.
    pub enum PopMode {
        /// No binding check.
        Off = "off",
        /// Tokens carrying `cnf.x5t#S256` must match; unbound tokens pass.
        Optional = "optional",
        /// Every token must carry `cnf.x5t#S256` and match.
        Strict = "strict",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    #[error("token carries no cnf.x5t#S256")]
    NotBound,
    #[error("token is bound but no client certificate was presented")]
    CertMissing,
    #[error("cnf.x5t#S256 is not 43 characters of base64url")]
    Malformed,
    #[error("certificate thumbprint does not match cnf.x5t#S256")]
    Mismatch,
}

/// Decides the binding. `cert` is the thumbprint of the verified certificate, if one was sent.
pub fn check(
    mode: PopMode,
    binding: &Binding,
    cert: Option<&Thumbprint>,
) -> Result<AllowReason, BindError> {
    let claimed = match (mode, binding) {
        (PopMode::Off, _) => return Ok(AllowReason::PopOff),
        (PopMode::Optional, Binding::Unbound) => return Ok(AllowReason::UnboundOptional),
        (PopMode::Strict, Binding::Unbound) => return Err(BindError::NotBound),
        (_, Binding::Malformed) => return Err(BindError::Malformed),
        (_, Binding::X5tS256(v)) => v,
    };
    let expected = decode_x5t(claimed)?;
    let cert = cert.ok_or(BindError::CertMissing)?;
    if bool::from(expected.ct_eq(cert)) {
        Ok(AllowReason::Bound)
    } else {
        Err(BindError::Mismatch)
    }
}

/// Exactly 43 base64url characters without padding, decoding to 32 bytes. A 64-character hex
/// value (a known documentation mistake) is refused like any other malformed value.
fn decode_x5t(value: &str) -> Result<Thumbprint, BindError> {
    if value.len() != 43 {
        return Err(BindError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| BindError::Malformed)?;
    bytes.try_into().map_err(|_| BindError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thumbprint = [7u8; 32];

    fn bound_to(t: &Thumbprint) -> Binding {
        Binding::X5tS256(URL_SAFE_NO_PAD.encode(t))
    }

    #[test]
    fn strict_matches_the_bound_certificate() {
        assert_eq!(
            check(PopMode::Strict, &bound_to(&T), Some(&T)),
            Ok(AllowReason::Bound)
        );
    }

    #[test]
    fn strict_refuses_another_certificate() {
        assert_eq!(
            check(PopMode::Strict, &bound_to(&T), Some(&[8u8; 32])),
            Err(BindError::Mismatch)
        );
    }

    #[test]
    fn strict_refuses_unbound_tokens_and_missing_certificates() {
        assert_eq!(
            check(PopMode::Strict, &Binding::Unbound, Some(&T)),
            Err(BindError::NotBound)
        );
        assert_eq!(
            check(PopMode::Strict, &bound_to(&T), None),
            Err(BindError::CertMissing)
        );
    }

    #[test]
    fn optional_passes_unbound_and_checks_bound_tokens() {
        assert_eq!(
            check(PopMode::Optional, &Binding::Unbound, None),
            Ok(AllowReason::UnboundOptional)
        );
        assert_eq!(
            check(PopMode::Optional, &bound_to(&T), None),
            Err(BindError::CertMissing)
        );
        assert_eq!(
            check(PopMode::Optional, &bound_to(&T), Some(&[1u8; 32])),
            Err(BindError::Mismatch)
        );
        assert_eq!(
            check(PopMode::Optional, &bound_to(&T), Some(&T)),
            Ok(AllowReason::Bound)
        );
    }

    #[test]
    fn off_checks_nothing() {
        assert_eq!(
            check(PopMode::Off, &bound_to(&T), None),
            Ok(AllowReason::PopOff)
        );
    }

    #[test]
    fn hex_padded_and_short_values_are_malformed() {
        let hex = T.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let padded = format!("{}=", URL_SAFE_NO_PAD.encode(T));
        let std_alphabet = URL_SAFE_NO_PAD
            .encode([0xfbu8; 32])
            .replace('-', "+")
            .replace('_', "/");
        for v in [hex, padded, "abc".to_string(), std_alphabet] {
            assert_eq!(
                check(PopMode::Strict, &Binding::X5tS256(v.clone()), Some(&T)),
                Err(BindError::Malformed),
                "{v}"
            );
        }
        assert_eq!(
            check(PopMode::Strict, &Binding::Malformed, Some(&T)),
            Err(BindError::Malformed)
        );
    }

    #[test]
    fn every_mode_parses_from_its_name_and_an_unknown_one_lists_them() {
        for (m, name) in PopMode::ALL.into_iter().zip(PopMode::NAMES) {
            assert_eq!(name.parse(), Ok(m));
            assert_eq!(m.as_str(), name);
        }
        let e = "Strict".parse::<PopMode>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "`Strict` is not one of off, optional, strict"
        );
    }
}
