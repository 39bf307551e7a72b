//! The outcome of a check. Deny reasons are data: one table below gives each reason every fact
//! about it (metric label and log field, HTTP status, `Bearer` challenge, `DPoP` challenge
//! error, `error_description`), and the only text a client ever sees is that table's static
//! description, never an inner error.
//!
//! The tables are macros so that the enum, its `ALL` list and its facts come from one list: a
//! reason cannot be added without choosing each fact, nor left out of `ALL` (and so out of the
//! metrics, which pre-register every label). How layer errors become reasons is the pipeline's
//! business (`pipeline::deny`): this module sits below the layers and imports none of them.

/// Defines `AllowReason` and its `ALL` from one list of `Variant = "label";` rows.
macro_rules! allow_reasons {
    ($(#[$meta:meta])* pub enum $ty:ident { $($(#[$doc:meta])* $name:ident = $label:literal;)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $ty {
            $($(#[$doc])* $name,)*
        }

        impl $ty {
            /// Every reason, in declaration order: `ALL[r.index()] == r`.
            pub const ALL: [$ty; [$($label),*].len()] = [$(Self::$name),*];

            /// Metric label and log field. Stable: dashboards and alerts key on these.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$name => $label,)*
                }
            }

            /// Position in [`Self::ALL`].
            pub const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

/// Defines `DenyReason`, its `ALL` and its facts table from one list of rows
/// `Variant = "label", status, bearer challenge, DPoP flavour, "description";` where the three
/// middle columns name variants of [`HttpStatus`], [`BearerChallenge`] and [`DpopFlavour`].
macro_rules! deny_reasons {
    ($(#[$meta:meta])* pub enum $ty:ident {
        $($(#[$doc:meta])* $name:ident = $label:literal, $status:ident, $bearer:ident,
            $dpop:ident, $description:literal;)*
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $ty {
            $($(#[$doc])* $name,)*
        }

        impl $ty {
            /// Every reason, in declaration order: `ALL[r.index()] == r`.
            pub const ALL: [$ty; [$($label),*].len()] = [$(Self::$name),*];

            /// Everything a reason decides about the answer.
            pub const fn facts(self) -> Facts {
                match self {
                    $(Self::$name => Facts {
                        label: $label,
                        status: HttpStatus::$status,
                        bearer: BearerChallenge::$bearer,
                        dpop: DpopFlavour::$dpop,
                        description: $description,
                    },)*
                }
            }
        }
    };
}

allow_reasons! {
    /// Why a request was allowed. Feeds the `reason` label of allow decisions.
    pub enum AllowReason {
        /// The token carried `cnf.x5t#S256` and it matched the presented certificate.
        Bound = "bound";
        /// `proof_of_possession_mtls = "optional"` and the token carried no binding.
        UnboundOptional = "unbound_optional";
        /// `proof_of_possession_mtls = "off"`.
        PopOff = "pop_off";
        /// A DPoP proof matched the token's `cnf.jkt` (no certificate binding).
        DpopBound = "dpop_bound";
        /// Both the certificate and a DPoP proof matched the token's `cnf`.
        BoundMtlsDpop = "bound_mtls_dpop";
        /// A `[[routes]]` rule with `authenticate = false` won: nothing was checked.
        Unauthenticated = "unauthenticated";
    }
}

// One rule for the status and the challenge: an Authorization header that cannot be read as one
// bearer credential is 400 `invalid_request` (RFC 6750 §3.1). Everything about the token or the
// certificate it is bound to is 401 `invalid_token`; no credentials at all is a 401 whose
// challenge carries no error code (§3.1: "SHOULD NOT include an error code"). Authorization
// rules not met are 403 `insufficient_scope`. A deployment fault (unknown policy, keys never
// loaded, a dependency down) is not the client's fault: 403 / 503 without a challenge.
deny_reasons! {
    /// Why a request was denied. Every failure path in the pipeline ends in exactly one of these.
    pub enum DenyReason {
        /// No `Authorization: Bearer` credential at all.
        MissingToken = "missing_token", Unauthorized, RealmOnly, NotDpop,
            "";
        /// The Authorization header is present but unusable (two values, empty token, spaces).
        MalformedAuthorization = "malformed_authorization", BadRequest, InvalidRequest, NotDpop,
            "malformed authorization header";
        /// `context_extensions.policy` names a policy this deployment does not have.
        UnknownPolicy = "unknown_policy", Forbidden, Absent, NotDpop,
            "";
        /// No `[[routes]]` rule matched and `unmatched_route = "deny"`.
        NoMatchingRoute = "no_matching_route", Forbidden, Absent, NotDpop,
            "";
        /// The issuer's signing keys have never been loaded; nothing can be verified.
        KeysUnavailable = "keys_unavailable", ServiceUnavailable, Absent, NotDpop,
            "";
        TokenTooLarge = "token_too_large", Unauthorized, InvalidToken, NotDpop,
            "access token too large";
        TokenMalformed = "token_malformed", Unauthorized, InvalidToken, NotDpop,
            "malformed access token";
        TokenUnknownKey = "token_unknown_key", Unauthorized, InvalidToken, NotDpop,
            "unknown signing key";
        TokenAlgorithmNotAllowed = "token_algorithm_not_allowed", Unauthorized, InvalidToken,
            NotDpop, "signing algorithm not allowed";
        TokenSignatureInvalid = "token_signature_invalid", Unauthorized, InvalidToken, NotDpop,
            "invalid signature";
        TokenExpired = "token_expired", Unauthorized, InvalidToken, NotDpop,
            "access token expired";
        TokenNotYetValid = "token_not_yet_valid", Unauthorized, InvalidToken, NotDpop,
            "access token not yet valid";
        TokenIssuerMismatch = "token_issuer_mismatch", Unauthorized, InvalidToken, NotDpop,
            "wrong issuer";
        TokenAudienceMismatch = "token_audience_mismatch", Unauthorized, InvalidToken, NotDpop,
            "wrong audience";
        TokenMissingClaim = "token_missing_claim", Unauthorized, InvalidToken, NotDpop,
            "required claim missing";
        TokenTypeNotAllowed = "token_type_not_allowed", Unauthorized, InvalidToken, NotDpop,
            "access token type not allowed";
        CertMissing = "cert_missing", Unauthorized, InvalidToken, NotDpop,
            "client certificate required";
        CertHeaderDuplicate = "cert_header_duplicate", Unauthorized, InvalidToken, NotDpop,
            "client certificate sent more than once";
        CertHeaderTooLarge = "cert_header_too_large", Unauthorized, InvalidToken, NotDpop,
            "client certificate too large";
        CertMalformed = "cert_malformed", Unauthorized, InvalidToken, NotDpop,
            "malformed client certificate";
        CertChainTooLong = "cert_chain_too_long", Unauthorized, InvalidToken, NotDpop,
            "client certificate chain too long";
        CertUntrusted = "cert_untrusted", Unauthorized, InvalidToken, NotDpop,
            "client certificate not trusted";
        CertExpired = "cert_expired", Unauthorized, InvalidToken, NotDpop,
            "client certificate expired";
        CertNotYetValid = "cert_not_yet_valid", Unauthorized, InvalidToken, NotDpop,
            "client certificate not yet valid";
        CertNotForClientAuth = "cert_not_for_client_auth", Unauthorized, InvalidToken, NotDpop,
            "client certificate not valid for client auth";
        CertInvalid = "cert_invalid", Unauthorized, InvalidToken, NotDpop,
            "client certificate failed verification";
        CertUnverifiable = "cert_unverifiable", Unauthorized, InvalidToken, NotDpop,
            "client certificate chain cannot be verified";
        /// `proof_of_possession_mtls_from_mesh`: the last XFCC element does not name the local
        /// workload in `By` (or an earlier element does too): not the local sidecar's account.
        MeshElementNotLocal = "mesh_element_not_local", Unauthorized, InvalidToken, NotDpop,
            "client certificate not attested by the local sidecar";
        /// `allowed_spiffe_ids`: the mesh peer's SPIFFE ID is not on the list (or the element
        /// does not carry exactly one valid SPIFFE ID).
        MeshIdentityNotAllowed = "mesh_identity_not_allowed", Forbidden, Absent, NotDpop,
            "";
        /// OCSP or the CRL says the client certificate is revoked.
        CertRevoked = "cert_revoked", Unauthorized, InvalidToken, NotDpop,
            "client certificate revoked";
        /// `revocation_check_mode = "STRICT"` and the revocation status could not be determined.
        CertRevocationUnknown = "cert_revocation_unknown", Unauthorized, InvalidToken, NotDpop,
            "client certificate revocation status unknown";
        TokenNotBound = "token_not_bound", Unauthorized, InvalidToken, NotDpop,
            "access token is not certificate-bound";
        BindingMalformed = "binding_malformed", Unauthorized, InvalidToken, NotDpop,
            "malformed certificate binding";
        BindingMismatch = "binding_mismatch", Unauthorized, InvalidToken, NotDpop,
            "certificate does not match access token";
        /// Introspection answered `active` other than `true`.
        TokenInactive = "token_inactive", Unauthorized, InvalidToken, NotDpop,
            "access token is not active";
        /// The introspection endpoint could not be reached or answered nonsense.
        IntrospectionUnavailable = "introspection_unavailable", ServiceUnavailable, Absent,
            NotDpop, "";
        /// `claims_forbidden`: the token carries a claim the policy refuses.
        ForbiddenClaim = "forbidden_claim", Forbidden, InsufficientScope, NotDpop,
            "access token carries a forbidden claim";
        /// `audience_required` not met.
        AudienceNotAllowed = "audience_not_allowed", Forbidden, InsufficientScope, NotDpop,
            "access token audience not allowed here";
        /// `scopes_required` not met.
        InsufficientScope = "insufficient_scope", Forbidden, InsufficientScope, NotDpop,
            "access token lacks the required scope";
        /// DPoP required and no `DPoP` header (or the token came as `DPoP` without one).
        DpopProofMissing = "dpop_proof_missing", Unauthorized, InvalidToken, InvalidDpopProof,
            "DPoP proof required";
        /// The proof is not one well-formed `dpop+jwt` with a public `jwk`, or is too large.
        DpopProofInvalid = "dpop_proof_invalid", Unauthorized, InvalidToken, InvalidDpopProof,
            "malformed DPoP proof";
        DpopAlgorithmNotAllowed = "dpop_algorithm_not_allowed", Unauthorized, InvalidToken,
            InvalidDpopProof, "DPoP proof algorithm not allowed";
        DpopSignatureInvalid = "dpop_signature_invalid", Unauthorized, InvalidToken,
            InvalidDpopProof, "invalid DPoP proof signature";
        DpopMethodMismatch = "dpop_htm_mismatch", Unauthorized, InvalidToken, InvalidDpopProof,
            "DPoP proof htm does not match";
        DpopUriMismatch = "dpop_htu_mismatch", Unauthorized, InvalidToken, InvalidDpopProof,
            "DPoP proof htu does not match";
        DpopStale = "dpop_iat_invalid", Unauthorized, InvalidToken, InvalidDpopProof,
            "DPoP proof iat outside its lifetime";
        DpopTokenHashMismatch = "dpop_ath_mismatch", Unauthorized, InvalidToken,
            InvalidDpopProof, "DPoP proof ath does not match the access token";
        /// The proof's `jti` was seen before within its lifetime.
        DpopReplayed = "dpop_replayed", Unauthorized, InvalidToken, InvalidDpopProof,
            "DPoP proof already used";
        /// `dpop_use_nonce` and the proof carries no current server nonce.
        DpopNonceRequired = "dpop_nonce_required", Unauthorized, InvalidToken, UseDpopNonce,
            "DPoP nonce required";
        /// The proof's key is not the one the token's `cnf.jkt` names.
        DpopKeyMismatch = "dpop_key_mismatch", Unauthorized, InvalidToken, InvalidToken,
            "DPoP proof key does not match access token";
        /// `proof_of_possession_dpop = "strict"` and the token has no `cnf.jkt`.
        DpopTokenNotBound = "dpop_token_not_bound", Unauthorized, InvalidToken, InvalidToken,
            "access token is not DPoP-bound";
        /// A token bound with `cnf.jkt` sent without DPoP (RFC 9449 §7.2: no downgrade).
        DpopBearerDowngrade = "dpop_bearer_downgrade", Unauthorized, InvalidToken, InvalidToken,
            "DPoP-bound access token sent as a bearer token";
        /// The shared replay store (Redis) could not be asked: the proof's freshness is unproven.
        DpopReplayStoreUnavailable = "dpop_replay_store_unavailable", ServiceUnavailable,
            Absent, NotDpop, "";
        /// The CheckRequest is larger than certbound reads (`server::MAX_CHECK_REQUEST_BYTES`).
        RequestTooLarge = "request_too_large", ContentTooLarge, Absent, NotDpop,
            "";
        /// The check panicked: a bug in certbound, answered with a deny instead of a gRPC error.
        InternalError = "internal_error", InternalServerError, Absent, NotDpop,
            "";
    }
}

/// What one deny reason decides about the answer: a row of the `DenyReason` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// Metric label and log field.
    pub label: &'static str,
    pub status: HttpStatus,
    pub bearer: BearerChallenge,
    pub dpop: DpopFlavour,
    /// `error_description`: short and static, safe to show to anyone.
    pub description: &'static str,
}

/// The HTTP statuses a denial can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpStatus {
    BadRequest,
    Unauthorized,
    Forbidden,
    ContentTooLarge,
    InternalServerError,
    ServiceUnavailable,
}

impl HttpStatus {
    pub const fn code(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::ContentTooLarge => 413,
            Self::InternalServerError => 500,
            Self::ServiceUnavailable => 503,
        }
    }

    /// The reason phrase, which is also the body message (as Kong answers:
    /// `{"message":"Unauthorized"}`).
    pub const fn phrase(self) -> &'static str {
        match self {
            Self::BadRequest => "Bad Request",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::ContentTooLarge => "Content Too Large",
            Self::InternalServerError => "Internal Server Error",
            Self::ServiceUnavailable => "Service Unavailable",
        }
    }
}

/// What a denial's `WWW-Authenticate: Bearer` challenge says (RFC 6750 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerChallenge {
    /// No challenge: the denial says nothing about the credentials.
    Absent,
    /// `Bearer realm="..."` with no error code.
    RealmOnly,
    InvalidRequest,
    InvalidToken,
    InsufficientScope,
}

impl BearerChallenge {
    pub const fn error(self) -> Option<Rfc6750Error> {
        match self {
            Self::Absent | Self::RealmOnly => None,
            Self::InvalidRequest => Some(Rfc6750Error::InvalidRequest),
            Self::InvalidToken => Some(Rfc6750Error::InvalidToken),
            Self::InsufficientScope => Some(Rfc6750Error::InsufficientScope),
        }
    }
}

/// The RFC 6750 `error` code carried in `WWW-Authenticate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rfc6750Error {
    InvalidRequest,
    InvalidToken,
    InsufficientScope,
}

impl Rfc6750Error {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
        }
    }
}

/// Whether a reason is about DPoP, and if so the error of the `DPoP` challenge (RFC 9449 §7.1,
/// §8). A reason that is not (even a DPoP policy's replay store being down) gets the policy's
/// plain challenges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpopFlavour {
    NotDpop,
    InvalidDpopProof,
    UseDpopNonce,
    /// The proof may be fine; the token does not go with it.
    InvalidToken,
}

impl DpopFlavour {
    pub const fn error(self) -> Option<&'static str> {
        match self {
            Self::NotDpop => None,
            Self::InvalidDpopProof => Some("invalid_dpop_proof"),
            Self::UseDpopNonce => Some("use_dpop_nonce"),
            Self::InvalidToken => Some("invalid_token"),
        }
    }
}

impl DenyReason {
    /// Metric label and log field. Stable: dashboards and alerts key on these.
    pub const fn as_str(self) -> &'static str {
        self.facts().label
    }

    /// HTTP status Envoy sends to the client.
    pub const fn http_status(self) -> u16 {
        self.facts().status.code()
    }

    /// The RFC 6750 error code, if the challenge carries one.
    pub const fn rfc6750_error(self) -> Option<Rfc6750Error> {
        self.facts().bearer.error()
    }

    /// Whether the answer carries a `WWW-Authenticate: Bearer` challenge at all.
    pub const fn has_challenge(self) -> bool {
        !matches!(self.facts().bearer, BearerChallenge::Absent)
    }

    /// The error of the `DPoP` challenge for the reasons that are about DPoP; `None` for every
    /// other reason.
    pub const fn dpop_error(self) -> Option<&'static str> {
        self.facts().dpop.error()
    }

    /// `error_description`: short and static, safe to show to anyone.
    pub const fn description(self) -> &'static str {
        self.facts().description
    }

    /// Body message, as Kong answers (`{"message":"Unauthorized"}`).
    pub const fn body_message(self) -> &'static str {
        self.facts().status.phrase()
    }

    /// Position in [`Self::ALL`].
    pub const fn index(self) -> usize {
        self as usize
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
    fn every_allow_reason_has_a_unique_label() {
        let labels: HashSet<_> = AllowReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), AllowReason::ALL.len());
    }

    #[test]
    fn all_lists_every_reason_at_its_index() {
        for (i, r) in DenyReason::ALL.into_iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        for (i, r) in AllowReason::ALL.into_iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
    }

    #[test]
    fn labels_are_metric_label_values() {
        for label in DenyReason::ALL
            .map(DenyReason::as_str)
            .into_iter()
            .chain(AllowReason::ALL.map(AllowReason::as_str))
        {
            assert!(
                !label.is_empty() && label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{label:?}"
            );
        }
    }

    #[test]
    fn challenges_follow_the_status() {
        for r in DenyReason::ALL {
            let f = r.facts();
            // A 401 always invites the client to authenticate; a deployment fault never does.
            match f.status {
                HttpStatus::Unauthorized => assert!(r.has_challenge(), "{r:?}"),
                HttpStatus::ServiceUnavailable
                | HttpStatus::ContentTooLarge
                | HttpStatus::InternalServerError => assert!(!r.has_challenge(), "{r:?}"),
                HttpStatus::BadRequest | HttpStatus::Forbidden => {}
            }
            // Only a reason with an error code has a description to show, and vice versa.
            assert_eq!(
                r.rfc6750_error().is_some(),
                !r.description().is_empty(),
                "{r:?}"
            );
            if f.dpop != DpopFlavour::NotDpop {
                assert_eq!(f.status, HttpStatus::Unauthorized, "{r:?}");
            }
        }
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
                    | DenyReason::NoMatchingRoute
                    | DenyReason::KeysUnavailable
                    | DenyReason::IntrospectionUnavailable
                    | DenyReason::DpopReplayStoreUnavailable
                    | DenyReason::RequestTooLarge
                    | DenyReason::InternalError
                    | DenyReason::ForbiddenClaim
                    | DenyReason::AudienceNotAllowed
                    | DenyReason::InsufficientScope
                    | DenyReason::MeshIdentityNotAllowed
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

    #[test]
    fn a_mesh_caller_outside_the_allow_list_is_403_without_a_challenge() {
        // The token may be fine: the calling workload is not allowed here.
        let r = DenyReason::MeshIdentityNotAllowed;
        assert_eq!(r.http_status(), 403);
        assert_eq!(r.rfc6750_error(), None);
        assert!(!r.has_challenge());
        assert_eq!(r.body_message(), "Forbidden");
    }
}
