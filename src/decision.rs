//! The outcome of a check. Deny reasons are data: `as_str()` is the metric label and the log
//! field, `http_status()` and `rfc6750_error()` shape the answer, `description()` is the only
//! text a client ever sees (static, no internals).

/// Why a request was allowed. Feeds the `reason` label of allow decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllowReason {
    /// The token carried `cnf.x5t#S256` and it matched the presented certificate.
    Bound,
    /// `proof_of_possession_mtls = "optional"` and the token carried no binding.
    UnboundOptional,
    /// `proof_of_possession_mtls = "off"`.
    PopOff,
    /// A DPoP proof matched the token's `cnf.jkt` (no certificate binding).
    DpopBound,
    /// Both the certificate and a DPoP proof matched the token's `cnf`.
    BoundMtlsDpop,
}

impl AllowReason {
    pub const ALL: [AllowReason; 5] = [
        Self::Bound,
        Self::UnboundOptional,
        Self::PopOff,
        Self::DpopBound,
        Self::BoundMtlsDpop,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bound => "bound",
            Self::UnboundOptional => "unbound_optional",
            Self::PopOff => "pop_off",
            Self::DpopBound => "dpop_bound",
            Self::BoundMtlsDpop => "bound_mtls_dpop",
        }
    }
}

/// Why a request was denied. Every failure path in the pipeline ends in exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// No `Authorization: Bearer` credential at all.
    MissingToken,
    /// The Authorization header is present but unusable (two values, empty token, spaces).
    MalformedAuthorization,
    /// `context_extensions.policy` names a policy this deployment does not have.
    UnknownPolicy,
    /// The issuer's signing keys have never been loaded; nothing can be verified.
    KeysUnavailable,
    TokenTooLarge,
    TokenMalformed,
    TokenUnknownKey,
    TokenAlgorithmNotAllowed,
    TokenSignatureInvalid,
    TokenExpired,
    TokenNotYetValid,
    TokenIssuerMismatch,
    TokenAudienceMismatch,
    TokenMissingClaim,
    TokenTypeNotAllowed,
    CertMissing,
    CertHeaderDuplicate,
    CertHeaderTooLarge,
    CertMalformed,
    CertChainTooLong,
    CertUntrusted,
    CertExpired,
    CertNotYetValid,
    CertNotForClientAuth,
    CertInvalid,
    CertUnverifiable,
    /// OCSP or the CRL says the client certificate is revoked.
    CertRevoked,
    /// `revocation_check_mode = "STRICT"` and the revocation status could not be determined.
    CertRevocationUnknown,
    TokenNotBound,
    BindingMalformed,
    BindingMismatch,
    /// Introspection answered `active` other than `true`.
    TokenInactive,
    /// The introspection endpoint could not be reached or answered nonsense.
    IntrospectionUnavailable,
    /// `claims_forbidden`: the token carries a claim the policy refuses.
    ForbiddenClaim,
    /// `audience_required` not met.
    AudienceNotAllowed,
    /// `scopes_required` not met.
    InsufficientScope,
    /// DPoP required and no `DPoP` header (or the token came as `DPoP` without one).
    DpopProofMissing,
    /// The proof is not one well-formed `dpop+jwt` with a public `jwk`, or is too large.
    DpopProofInvalid,
    DpopAlgorithmNotAllowed,
    DpopSignatureInvalid,
    DpopMethodMismatch,
    DpopUriMismatch,
    DpopStale,
    DpopTokenHashMismatch,
    /// The proof's `jti` was seen before within its lifetime.
    DpopReplayed,
    /// `dpop_use_nonce` and the proof carries no current server nonce.
    DpopNonceRequired,
    /// The proof's key is not the one the token's `cnf.jkt` names.
    DpopKeyMismatch,
    /// `proof_of_possession_dpop = "strict"` and the token has no `cnf.jkt`.
    DpopTokenNotBound,
    /// A token bound with `cnf.jkt` sent without DPoP (RFC 9449 §7.2: no downgrade).
    DpopBearerDowngrade,
    /// The shared replay store (Redis) could not be asked: the proof's freshness is unproven.
    DpopReplayStoreUnavailable,
    /// The CheckRequest is larger than certbound reads (`server::MAX_CHECK_REQUEST_BYTES`).
    RequestTooLarge,
    /// The check panicked: a bug in certbound, answered with a deny instead of a gRPC error.
    InternalError,
}

/// The RFC 6750 `error` code carried in `WWW-Authenticate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rfc6750Error {
    InvalidRequest,
    InvalidToken,
    InsufficientScope,
}

impl Rfc6750Error {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
        }
    }
}

impl DenyReason {
    pub const ALL: [DenyReason; 52] = [
        Self::MissingToken,
        Self::MalformedAuthorization,
        Self::UnknownPolicy,
        Self::KeysUnavailable,
        Self::TokenTooLarge,
        Self::TokenMalformed,
        Self::TokenUnknownKey,
        Self::TokenAlgorithmNotAllowed,
        Self::TokenSignatureInvalid,
        Self::TokenExpired,
        Self::TokenNotYetValid,
        Self::TokenIssuerMismatch,
        Self::TokenAudienceMismatch,
        Self::TokenMissingClaim,
        Self::TokenTypeNotAllowed,
        Self::CertMissing,
        Self::CertHeaderDuplicate,
        Self::CertHeaderTooLarge,
        Self::CertMalformed,
        Self::CertChainTooLong,
        Self::CertUntrusted,
        Self::CertExpired,
        Self::CertNotYetValid,
        Self::CertNotForClientAuth,
        Self::CertInvalid,
        Self::CertUnverifiable,
        Self::CertRevoked,
        Self::CertRevocationUnknown,
        Self::TokenNotBound,
        Self::BindingMalformed,
        Self::BindingMismatch,
        Self::TokenInactive,
        Self::IntrospectionUnavailable,
        Self::ForbiddenClaim,
        Self::AudienceNotAllowed,
        Self::InsufficientScope,
        Self::DpopProofMissing,
        Self::DpopProofInvalid,
        Self::DpopAlgorithmNotAllowed,
        Self::DpopSignatureInvalid,
        Self::DpopMethodMismatch,
        Self::DpopUriMismatch,
        Self::DpopStale,
        Self::DpopTokenHashMismatch,
        Self::DpopReplayed,
        Self::DpopNonceRequired,
        Self::DpopKeyMismatch,
        Self::DpopTokenNotBound,
        Self::DpopBearerDowngrade,
        Self::DpopReplayStoreUnavailable,
        Self::RequestTooLarge,
        Self::InternalError,
    ];

    /// Metric label and log field. Stable: dashboards and alerts key on these.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::MalformedAuthorization => "malformed_authorization",
            Self::UnknownPolicy => "unknown_policy",
            Self::KeysUnavailable => "keys_unavailable",
            Self::TokenTooLarge => "token_too_large",
            Self::TokenMalformed => "token_malformed",
            Self::TokenUnknownKey => "token_unknown_key",
            Self::TokenAlgorithmNotAllowed => "token_algorithm_not_allowed",
            Self::TokenSignatureInvalid => "token_signature_invalid",
            Self::TokenExpired => "token_expired",
            Self::TokenNotYetValid => "token_not_yet_valid",
            Self::TokenIssuerMismatch => "token_issuer_mismatch",
            Self::TokenAudienceMismatch => "token_audience_mismatch",
            Self::TokenMissingClaim => "token_missing_claim",
            Self::TokenTypeNotAllowed => "token_type_not_allowed",
            Self::CertMissing => "cert_missing",
            Self::CertHeaderDuplicate => "cert_header_duplicate",
            Self::CertHeaderTooLarge => "cert_header_too_large",
            Self::CertMalformed => "cert_malformed",
            Self::CertChainTooLong => "cert_chain_too_long",
            Self::CertUntrusted => "cert_untrusted",
            Self::CertExpired => "cert_expired",
            Self::CertNotYetValid => "cert_not_yet_valid",
            Self::CertNotForClientAuth => "cert_not_for_client_auth",
            Self::CertInvalid => "cert_invalid",
            Self::CertUnverifiable => "cert_unverifiable",
            Self::CertRevoked => "cert_revoked",
            Self::CertRevocationUnknown => "cert_revocation_unknown",
            Self::TokenNotBound => "token_not_bound",
            Self::BindingMalformed => "binding_malformed",
            Self::BindingMismatch => "binding_mismatch",
            Self::TokenInactive => "token_inactive",
            Self::IntrospectionUnavailable => "introspection_unavailable",
            Self::ForbiddenClaim => "forbidden_claim",
            Self::AudienceNotAllowed => "audience_not_allowed",
            Self::InsufficientScope => "insufficient_scope",
            Self::DpopProofMissing => "dpop_proof_missing",
            Self::DpopProofInvalid => "dpop_proof_invalid",
            Self::DpopAlgorithmNotAllowed => "dpop_algorithm_not_allowed",
            Self::DpopSignatureInvalid => "dpop_signature_invalid",
            Self::DpopMethodMismatch => "dpop_htm_mismatch",
            Self::DpopUriMismatch => "dpop_htu_mismatch",
            Self::DpopStale => "dpop_iat_invalid",
            Self::DpopTokenHashMismatch => "dpop_ath_mismatch",
            Self::DpopReplayed => "dpop_replayed",
            Self::DpopNonceRequired => "dpop_nonce_required",
            Self::DpopKeyMismatch => "dpop_key_mismatch",
            Self::DpopTokenNotBound => "dpop_token_not_bound",
            Self::DpopBearerDowngrade => "dpop_bearer_downgrade",
            Self::DpopReplayStoreUnavailable => "dpop_replay_store_unavailable",
            Self::RequestTooLarge => "request_too_large",
            Self::InternalError => "internal_error",
        }
    }

    /// HTTP status Envoy sends to the client.
    ///
    /// One rule for malformed requests: an Authorization header that cannot be read as one
    /// bearer credential is 400 `invalid_request` (RFC 6750 §3.1). Everything about the token or
    /// the certificate it is bound to is 401 `invalid_token`. A deployment fault (unknown policy,
    /// keys never loaded) is not the client's fault: 403 / 503 without a bearer error code.
    pub fn http_status(self) -> u16 {
        match self {
            Self::MalformedAuthorization => 400,
            Self::UnknownPolicy
            | Self::ForbiddenClaim
            | Self::AudienceNotAllowed
            | Self::InsufficientScope => 403,
            Self::KeysUnavailable
            | Self::IntrospectionUnavailable
            | Self::DpopReplayStoreUnavailable => 503,
            Self::RequestTooLarge => 413,
            Self::InternalError => 500,
            _ => 401,
        }
    }

    /// The RFC 6750 error code, if the challenge carries one. No credentials at all carries none
    /// (RFC 6750 §3.1: "the resource server SHOULD NOT include an error code").
    pub fn rfc6750_error(self) -> Option<Rfc6750Error> {
        match self {
            Self::MissingToken
            | Self::UnknownPolicy
            | Self::KeysUnavailable
            | Self::IntrospectionUnavailable
            | Self::DpopReplayStoreUnavailable
            | Self::RequestTooLarge
            | Self::InternalError => None,
            Self::MalformedAuthorization => Some(Rfc6750Error::InvalidRequest),
            Self::ForbiddenClaim | Self::AudienceNotAllowed | Self::InsufficientScope => {
                Some(Rfc6750Error::InsufficientScope)
            }
            _ => Some(Rfc6750Error::InvalidToken),
        }
    }

    /// Whether the answer carries a `WWW-Authenticate: Bearer` challenge at all.
    pub fn has_challenge(self) -> bool {
        !matches!(
            self,
            Self::UnknownPolicy
                | Self::KeysUnavailable
                | Self::IntrospectionUnavailable
                | Self::DpopReplayStoreUnavailable
                | Self::RequestTooLarge
                | Self::InternalError
        )
    }

    /// The error of the `DPoP` challenge (RFC 9449 §7.1, §8) for the reasons that are about
    /// DPoP; `None` for every other reason.
    pub fn dpop_error(self) -> Option<&'static str> {
        match self {
            Self::DpopProofMissing => Some("invalid_dpop_proof"),
            Self::DpopProofInvalid => Some("invalid_dpop_proof"),
            Self::DpopAlgorithmNotAllowed => Some("invalid_dpop_proof"),
            Self::DpopSignatureInvalid => Some("invalid_dpop_proof"),
            Self::DpopMethodMismatch => Some("invalid_dpop_proof"),
            Self::DpopUriMismatch => Some("invalid_dpop_proof"),
            Self::DpopStale => Some("invalid_dpop_proof"),
            Self::DpopTokenHashMismatch => Some("invalid_dpop_proof"),
            Self::DpopReplayed => Some("invalid_dpop_proof"),
            Self::DpopNonceRequired => Some("use_dpop_nonce"),
            Self::DpopKeyMismatch => Some("invalid_token"),
            Self::DpopTokenNotBound => Some("invalid_token"),
            Self::DpopBearerDowngrade => Some("invalid_token"),
            _ => None,
        }
    }

    /// `error_description`: short and static, safe to show to anyone.
    pub fn description(self) -> &'static str {
        match self {
            Self::MissingToken => "",
            Self::MalformedAuthorization => "malformed authorization header",
            Self::UnknownPolicy => "",
            Self::KeysUnavailable => "",
            Self::TokenTooLarge => "access token too large",
            Self::TokenMalformed => "malformed access token",
            Self::TokenUnknownKey => "unknown signing key",
            Self::TokenAlgorithmNotAllowed => "signing algorithm not allowed",
            Self::TokenSignatureInvalid => "invalid signature",
            Self::TokenExpired => "access token expired",
            Self::TokenNotYetValid => "access token not yet valid",
            Self::TokenIssuerMismatch => "wrong issuer",
            Self::TokenAudienceMismatch => "wrong audience",
            Self::TokenMissingClaim => "required claim missing",
            Self::TokenTypeNotAllowed => "access token type not allowed",
            Self::CertMissing => "client certificate required",
            Self::CertHeaderDuplicate => "client certificate sent more than once",
            Self::CertHeaderTooLarge => "client certificate too large",
            Self::CertMalformed => "malformed client certificate",
            Self::CertChainTooLong => "client certificate chain too long",
            Self::CertUntrusted => "client certificate not trusted",
            Self::CertExpired => "client certificate expired",
            Self::CertNotYetValid => "client certificate not yet valid",
            Self::CertNotForClientAuth => "client certificate not valid for client auth",
            Self::CertInvalid => "client certificate failed verification",
            Self::CertUnverifiable => "client certificate chain cannot be verified",
            Self::CertRevoked => "client certificate revoked",
            Self::CertRevocationUnknown => "client certificate revocation status unknown",
            Self::TokenNotBound => "access token is not certificate-bound",
            Self::BindingMalformed => "malformed certificate binding",
            Self::BindingMismatch => "certificate does not match access token",
            Self::TokenInactive => "access token is not active",
            Self::IntrospectionUnavailable => "",
            Self::ForbiddenClaim => "access token carries a forbidden claim",
            Self::AudienceNotAllowed => "access token audience not allowed here",
            Self::InsufficientScope => "access token lacks the required scope",
            Self::DpopProofMissing => "DPoP proof required",
            Self::DpopProofInvalid => "malformed DPoP proof",
            Self::DpopAlgorithmNotAllowed => "DPoP proof algorithm not allowed",
            Self::DpopSignatureInvalid => "invalid DPoP proof signature",
            Self::DpopMethodMismatch => "DPoP proof htm does not match",
            Self::DpopUriMismatch => "DPoP proof htu does not match",
            Self::DpopStale => "DPoP proof iat outside its lifetime",
            Self::DpopTokenHashMismatch => "DPoP proof ath does not match the access token",
            Self::DpopReplayed => "DPoP proof already used",
            Self::DpopNonceRequired => "DPoP nonce required",
            Self::DpopKeyMismatch => "DPoP proof key does not match access token",
            Self::DpopTokenNotBound => "access token is not DPoP-bound",
            Self::DpopBearerDowngrade => "DPoP-bound access token sent as a bearer token",
            Self::DpopReplayStoreUnavailable => "",
            Self::RequestTooLarge => "",
            Self::InternalError => "",
        }
    }

    /// Body message, as Kong answers (`{"message":"Unauthorized"}`).
    pub fn body_message(self) -> &'static str {
        match self.http_status() {
            400 => "Bad Request",
            403 => "Forbidden",
            413 => "Content Too Large",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "Unauthorized",
        }
    }
}

/// A header the upstream receives on allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamHeader {
    pub name: String,
    pub value: String,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow {
        reason: AllowReason,
        /// Headers set on the upstream request, overwriting client-sent copies.
        headers: Vec<UpstreamHeader>,
        /// Configured claim headers with no value to set: removed so a client cannot supply them.
        remove: Vec<String>,
    },
    Deny(DenyReason),
}

impl Default for Decision {
    /// Fail closed: a decision nobody made is a deny.
    fn default() -> Self {
        Decision::Deny(DenyReason::MissingToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_deny_reason_has_a_unique_label() {
        let labels: HashSet<_> = DenyReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), DenyReason::ALL.len());
    }

    #[test]
    fn missing_token_challenge_has_no_error_code() {
        assert_eq!(DenyReason::MissingToken.http_status(), 401);
        assert_eq!(DenyReason::MissingToken.rfc6750_error(), None);
        assert!(DenyReason::MissingToken.has_challenge());
    }

    #[test]
    fn malformed_authorization_is_400_invalid_request() {
        let r = DenyReason::MalformedAuthorization;
        assert_eq!(r.http_status(), 400);
        assert_eq!(r.rfc6750_error(), Some(Rfc6750Error::InvalidRequest));
        assert_eq!(r.body_message(), "Bad Request");
    }

    #[test]
    fn token_and_binding_failures_are_401_invalid_token() {
        for r in DenyReason::ALL {
            if matches!(
                r,
                DenyReason::MissingToken
                    | DenyReason::MalformedAuthorization
                    | DenyReason::UnknownPolicy
                    | DenyReason::KeysUnavailable
                    | DenyReason::IntrospectionUnavailable
                    | DenyReason::DpopReplayStoreUnavailable
                    | DenyReason::RequestTooLarge
                    | DenyReason::InternalError
                    | DenyReason::ForbiddenClaim
                    | DenyReason::AudienceNotAllowed
                    | DenyReason::InsufficientScope
            ) {
                continue;
            }
            assert_eq!(r.http_status(), 401, "{r:?}");
            assert_eq!(r.rfc6750_error(), Some(Rfc6750Error::InvalidToken), "{r:?}");
            assert!(!r.description().is_empty(), "{r:?}");
            assert_eq!(r.body_message(), "Unauthorized");
        }
    }

    #[test]
    fn authorization_failures_are_403_insufficient_scope() {
        for r in [
            DenyReason::ForbiddenClaim,
            DenyReason::AudienceNotAllowed,
            DenyReason::InsufficientScope,
        ] {
            assert_eq!(r.http_status(), 403);
            assert_eq!(r.rfc6750_error(), Some(Rfc6750Error::InsufficientScope));
            assert!(r.has_challenge());
            assert_eq!(r.body_message(), "Forbidden");
        }
    }
}
