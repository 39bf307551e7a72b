//! How each layer's error becomes the reason a check is denied: one `From` per error type, all
//! here. The layers only know their own errors, and `decision` knows only the reasons; this module
//! sits above both, so neither has to import the other (no cycle between `decision` and the
//! layers that return an `AllowReason` or a `DenyReason`). `?` on a layer's error inside a
//! function returning `Result<_, DenyReason>` (the pipeline, `dpop::check`) goes through these.
//!
//! Several errors may share a reason (the label set is what dashboards key on); an error never
//! reaches the client, only its reason's static description does.

use crate::bind::BindError;
use crate::cert::CertError;
use crate::decision::DenyReason;
use crate::dpop::DpopError;
use crate::extract::ExtractError;
use crate::introspection::IntrospectError;
use crate::revocation::RevocationError;
use crate::token::TokenError;

impl From<ExtractError> for DenyReason {
    fn from(e: ExtractError) -> Self {
        match e {
            ExtractError::MissingToken => Self::MissingToken,
            ExtractError::MalformedAuthorization => Self::MalformedAuthorization,
            ExtractError::CertHeaderTooLarge => Self::CertHeaderTooLarge,
        }
    }
}

impl From<TokenError> for DenyReason {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::TooLarge | TokenError::TooDeep => Self::TokenTooLarge,
            TokenError::Malformed => Self::TokenMalformed,
            TokenError::UnknownKey => Self::TokenUnknownKey,
            TokenError::AlgorithmNotAllowed => Self::TokenAlgorithmNotAllowed,
            TokenError::SignatureInvalid => Self::TokenSignatureInvalid,
            TokenError::Expired => Self::TokenExpired,
            TokenError::NotYetValid => Self::TokenNotYetValid,
            TokenError::IssuerMismatch => Self::TokenIssuerMismatch,
            TokenError::AudienceMismatch => Self::TokenAudienceMismatch,
            TokenError::MissingClaim(_) => Self::TokenMissingClaim,
            TokenError::TypeNotAllowed => Self::TokenTypeNotAllowed,
        }
    }
}

impl From<CertError> for DenyReason {
    fn from(e: CertError) -> Self {
        match e {
            CertError::Duplicate => Self::CertHeaderDuplicate,
            CertError::TooLarge => Self::CertHeaderTooLarge,
            CertError::Malformed => Self::CertMalformed,
            CertError::ChainTooLong => Self::CertChainTooLong,
            CertError::Untrusted => Self::CertUntrusted,
            CertError::Expired => Self::CertExpired,
            CertError::NotYetValid => Self::CertNotYetValid,
            CertError::NotForClientAuth => Self::CertNotForClientAuth,
            CertError::Invalid => Self::CertInvalid,
            CertError::Unverifiable => Self::CertUnverifiable,
            CertError::NotLocalHop => Self::MeshElementNotLocal,
        }
    }
}

impl From<BindError> for DenyReason {
    fn from(e: BindError) -> Self {
        match e {
            BindError::NotBound => Self::TokenNotBound,
            BindError::CertMissing => Self::CertMissing,
            BindError::Malformed => Self::BindingMalformed,
            BindError::Mismatch => Self::BindingMismatch,
        }
    }
}

impl From<DpopError> for DenyReason {
    fn from(e: DpopError) -> Self {
        match e {
            DpopError::TooLarge
            | DpopError::Malformed
            | DpopError::WrongType
            | DpopError::BadKey => Self::DpopProofInvalid,
            DpopError::AlgorithmNotAllowed => Self::DpopAlgorithmNotAllowed,
            DpopError::SignatureInvalid => Self::DpopSignatureInvalid,
            DpopError::MethodMismatch => Self::DpopMethodMismatch,
            DpopError::UriMismatch => Self::DpopUriMismatch,
            DpopError::Stale => Self::DpopStale,
            DpopError::TokenHashMismatch => Self::DpopTokenHashMismatch,
            DpopError::KeyMismatch => Self::DpopKeyMismatch,
        }
    }
}

impl From<IntrospectError> for DenyReason {
    /// A saturated introspector is unavailable to this check like an unreachable one; the
    /// pipeline notes the saturation separately (its own metric).
    fn from(e: IntrospectError) -> Self {
        match e {
            IntrospectError::Inactive => Self::TokenInactive,
            IntrospectError::Unavailable(_) | IntrospectError::Saturated => {
                Self::IntrospectionUnavailable
            }
        }
    }
}

impl From<RevocationError> for DenyReason {
    fn from(e: RevocationError) -> Self {
        match e {
            RevocationError::Revoked => Self::CertRevoked,
            RevocationError::Unknown => Self::CertRevocationUnknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Rfc6750Error;

    #[test]
    fn request_errors_keep_their_own_status() {
        assert_eq!(
            DenyReason::from(ExtractError::MissingToken).rfc6750_error(),
            None
        );
        assert_eq!(
            DenyReason::from(ExtractError::MalformedAuthorization).http_status(),
            400
        );
        assert_eq!(
            DenyReason::from(IntrospectError::Saturated),
            DenyReason::from(IntrospectError::Unavailable("timeout".into()))
        );
        assert_eq!(
            DenyReason::from(IntrospectError::Saturated).http_status(),
            503
        );
    }

    #[test]
    fn credential_errors_are_401_invalid_token() {
        let reasons = [
            DenyReason::from(ExtractError::CertHeaderTooLarge),
            DenyReason::from(TokenError::TooDeep),
            DenyReason::from(TokenError::MissingClaim("exp")),
            DenyReason::from(CertError::Unverifiable),
            DenyReason::from(BindError::CertMissing),
            DenyReason::from(DpopError::WrongType),
            DenyReason::from(IntrospectError::Inactive),
            DenyReason::from(RevocationError::Unknown),
        ];
        for r in reasons {
            assert_eq!(r.http_status(), 401, "{r:?}");
            assert_eq!(r.rfc6750_error(), Some(Rfc6750Error::InvalidToken), "{r:?}");
        }
    }

    #[test]
    fn errors_map_to_their_labels() {
        for (reason, label) in [
            (DenyReason::from(TokenError::TooDeep), "token_too_large"),
            (
                DenyReason::from(CertError::Duplicate),
                "cert_header_duplicate",
            ),
            (
                DenyReason::from(CertError::TooLarge),
                "cert_header_too_large",
            ),
            (DenyReason::from(BindError::NotBound), "token_not_bound"),
            (DenyReason::from(BindError::CertMissing), "cert_missing"),
            (DenyReason::from(DpopError::BadKey), "dpop_proof_invalid"),
            (DenyReason::from(DpopError::Stale), "dpop_iat_invalid"),
            (
                DenyReason::from(DpopError::KeyMismatch),
                "dpop_key_mismatch",
            ),
            (
                DenyReason::from(IntrospectError::Inactive),
                "token_inactive",
            ),
            (DenyReason::from(RevocationError::Revoked), "cert_revoked"),
        ] {
            assert_eq!(reason.as_str(), label);
        }
    }
}
