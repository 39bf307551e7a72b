//! One check, start to end, over plain data: select policy -> extract credentials -> verify the
//! token -> verify the certificate -> bind -> revocation -> decide. This is what the gRPC adapter, the tests
//! and the benchmarks call. It never returns an error: every failure is a `Decision::Deny`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::bind::{self, BindError, PopMode};
use rustls_pki_types::CertificateDer;

use crate::cert::{self, CertError, HeaderFormat, IssuerRef, Thumbprint};
use crate::decision::{Decision, DenyReason, UpstreamHeader};
use crate::dpop::{self, DpopMode};
use crate::extract::{self, ExtractError, Scheme};
use crate::introspection::IntrospectError;
use crate::policy::{CertSource, Policies, Policy};
use crate::revocation::RevocationError;
use crate::token::{self, TokenError, VerifiedToken};

/// What the pipeline reads from a CheckRequest.
#[derive(Debug, Clone, Copy)]
pub struct CheckInput<'a> {
    /// Lower-case header names, as Envoy sends them.
    pub headers: &'a HashMap<String, String>,
    /// `attributes.source.certificate`; empty when Envoy sent none.
    pub peer_certificate: &'a str,
    /// `context_extensions["policy"]`, if the route sets one.
    pub policy_name: Option<&'a str>,
    /// `attributes.source.address`: the hop that connected to Envoy.
    pub source_ip: Option<IpAddr>,
}

/// The decision plus what logs, metrics and Envoy's dynamic metadata need to describe it.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub decision: Decision,
    /// The policy that decided, or the unknown name that was asked for.
    pub policy: String,
    /// The certificate's x5t#S256, when one was presented and verified. Public data (a hash of
    /// a public certificate); logs print only its first 8 characters.
    pub thumbprint: Option<String>,
    /// `sub` and `client_id` of a verified token.
    pub subject: Option<String>,
    pub client_id: Option<String>,
    /// For `insufficient_scope`: the scopes of the policy's first alternative.
    pub scope_hint: Option<String>,
    /// Set when the policy takes DPoP: a 401 carries the `DPoP` challenge too.
    pub dpop: Option<dpop::Challenge>,
}

/// Runs one check at `now` (seconds since the epoch).
pub async fn check(input: &CheckInput<'_>, policies: &Policies, now: u64) -> Outcome {
    let Some(policy) = policies.select(input.policy_name) else {
        return Outcome {
            decision: Decision::Deny(DenyReason::UnknownPolicy),
            policy: input.policy_name.unwrap_or_default().to_string(),
            ..Outcome::default()
        };
    };
    let mut outcome = Outcome {
        policy: policy.name.clone(),
        dpop: (policy.dpop.mode != DpopMode::Off).then(|| dpop::Challenge {
            mode: policy.dpop.mode,
            algs: policy.dpop.algs_str(),
            nonce: policy.dpop.nonce.as_ref().map(|n| n.issue(now)),
        }),
        ..Outcome::default()
    };
    outcome.decision = match decide(input, policy, now, &mut outcome).await {
        Ok(d) => d,
        Err(reason) => {
            if reason == DenyReason::InsufficientScope {
                outcome.scope_hint = policy.scopes_required.first().map(|alt| alt.join(" "));
            }
            Decision::Deny(reason)
        }
    };
    outcome
}

async fn decide(
    input: &CheckInput<'_>,
    policy: &Arc<Policy>,
    now: u64,
    outcome: &mut Outcome,
) -> Result<Decision, DenyReason> {
    let (scheme, token) = extract::access_token(
        input.headers,
        policy.limits.max_authorization_values,
        policy.dpop.mode != DpopMode::Off,
    )
    .map_err(extract_reason)?;
    let verified = verify_token(token, policy, now).await?;
    outcome.subject = verified
        .claims
        .get("sub")
        .and_then(Value::as_str)
        .map(str::to_string);
    outcome.client_id = verified
        .claims
        .get("client_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let cert = client_certificate(input, policy, now)?;
    outcome.thumbprint = cert.as_ref().map(|c| x5t(&c.thumbprint));
    let reason = bind::check(
        policy.pop_mode,
        &verified.binding,
        cert.as_ref().map(|c| &c.thumbprint),
    )
    .map_err(bind_reason)?;
    let reason = dpop::check(
        &policy.dpop,
        &dpop::Request {
            headers: input.headers,
            scheme,
            token,
            jkt: &dpop::token_jkt(&verified.claims),
            mtls: reason,
            max_json_depth: policy.limits.max_json_depth,
            leeway: policy.leeway,
            now,
        },
    )
    .await?;
    authorize(policy, &verified.claims)?;
    // Revocation last: it may need network I/O, so only requests that passed every local check
    // can cause a fetch.
    if let (Some(c), CertSource::Header(source)) = (&cert, &policy.cert_source) {
        if let (Some(checker), Some(issuer)) = (&source.revocation, c.issuer) {
            checker
                .check(&c.chain, issuer, &c.thumbprint, now)
                .await
                .map_err(revocation_reason)?;
        }
    }
    let (mut headers, mut remove) = upstream_headers(policy, &verified);
    if let Some(name) = &policy.upstream_thumbprint_header {
        match &outcome.thumbprint {
            Some(t) => headers.push(UpstreamHeader {
                name: name.clone(),
                value: t.clone(),
            }),
            None => remove.push(name.clone()),
        }
    }
    if policy.dpop.mode != DpopMode::Off {
        // As Kong does: the upstream sees a plain bearer request, never the proof.
        remove.push("dpop".to_string());
        if scheme == Scheme::Dpop && !policy.hide_credentials {
            headers.push(UpstreamHeader {
                name: "authorization".to_string(),
                value: format!("Bearer {token}"),
            });
        }
    }
    if policy.hide_credentials {
        remove.push("authorization".to_string());
        if let CertSource::Header(source) = &policy.cert_source {
            remove.push(source.name.clone());
            remove.extend(source.chain_name.clone());
        }
    }
    Ok(Decision::Allow {
        reason,
        headers,
        remove,
    })
}

/// Kong's authorization rules, checked once the token is proven: `claims_forbidden`, then
/// `audience_required`, then `scopes_required` (each alternative is a set of values all
/// required; any one alternative suffices).
fn authorize(policy: &Policy, claims: &Map<String, Value>) -> Result<(), DenyReason> {
    if policy
        .claims_forbidden
        .iter()
        .any(|c| claims.contains_key(c))
    {
        return Err(DenyReason::ForbiddenClaim);
    }
    if !satisfies(
        &policy.audience_required,
        claim_at(claims, &policy.audience_claim),
    ) {
        return Err(DenyReason::AudienceNotAllowed);
    }
    if !satisfies(
        &policy.scopes_required,
        claim_at(claims, &policy.scopes_claim),
    ) {
        return Err(DenyReason::InsufficientScope);
    }
    Ok(())
}

fn satisfies(alternatives: &[Vec<String>], claim: Option<&Value>) -> bool {
    if alternatives.is_empty() {
        return true;
    }
    // A space-separated string (OAuth `scope`) or an array of strings (`aud`, `scp`, roles).
    let have: Vec<&str> = match claim {
        Some(Value::String(s)) => s.split_whitespace().collect(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => return false,
    };
    alternatives
        .iter()
        .any(|alt| alt.iter().all(|want| have.contains(&want.as_str())))
}

/// Follows a path of object keys into the claims.
fn claim_at<'c>(claims: &'c Map<String, Value>, path: &[String]) -> Option<&'c Value> {
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(claims.get(first)?, |v, key| v.get(key))
}

/// Kong's routing between the methods: a JWT-shaped token goes to `bearer` when it is on
/// (unless `introspect_jwt_tokens`); anything else to introspection when it is on.
async fn verify_token(token: &str, policy: &Policy, now: u64) -> Result<VerifiedToken, DenyReason> {
    let jwt = crate::introspection::is_jwt_shaped(token);
    match &policy.introspection {
        Some(introspector) if !(policy.bearer && jwt && !policy.introspect_jwt_tokens) => {
            if token.len() > policy.limits.max_token_bytes {
                return Err(DenyReason::TokenTooLarge);
            }
            let response = introspector
                .introspect(token, now)
                .await
                .map_err(|e| match e {
                    IntrospectError::Inactive => DenyReason::TokenInactive,
                    IntrospectError::Unavailable(_) => DenyReason::IntrospectionUnavailable,
                })?;
            token::verify_introspected(&response, &policy.token_rules(), now).map_err(token_reason)
        }
        _ => verify_jwt(token, policy, now).await,
    }
}

async fn verify_jwt(token: &str, policy: &Policy, now: u64) -> Result<VerifiedToken, DenyReason> {
    let rules = policy.token_rules();
    let mut keys = policy.keys.current();
    if !keys.is_loaded() {
        keys = policy.keys.refresh(policy.unknown_kid_wait).await;
        if !keys.is_loaded() {
            return Err(DenyReason::KeysUnavailable);
        }
    }
    match token::verify(token, &keys, &rules, now) {
        Err(TokenError::UnknownKey) => {
            // The IdP may have rotated its keys: ask for a (rate-limited) refresh, once.
            let keys = policy.keys.refresh(policy.unknown_kid_wait).await;
            token::verify(token, &keys, &rules, now).map_err(token_reason)
        }
        other => other.map_err(token_reason),
    }
}

/// A client certificate that was presented and verified.
struct ClientCert {
    thumbprint: Thumbprint,
    /// As decoded, leaf first; kept for the revocation check.
    chain: Vec<CertificateDer<'static>>,
    /// The leaf's issuer on the verified path; `None` when Envoy verified the chain.
    issuer: Option<IssuerRef>,
}

/// The client certificate, if one was presented and verified. With PoP off nothing is read. A
/// certificate that is present but fails is always a deny, whatever the mode.
fn client_certificate(
    input: &CheckInput<'_>,
    policy: &Policy,
    now: u64,
) -> Result<Option<ClientCert>, DenyReason> {
    if policy.pop_mode == PopMode::Off {
        return Ok(None);
    }
    let (chain, verified) = match &policy.cert_source {
        CertSource::Header(source) => {
            if source.secure_source && !from_trusted_hop(input.source_ip, &policy.trusted_ips) {
                // Anyone can copy a certificate into a header: from an untrusted hop the header
                // is treated as absent (Kong's secure_source).
                return Ok(None);
            }
            let Some(value) = extract::cert_header(
                input.headers,
                &source.name,
                policy.limits.max_certificate_header_bytes,
            )
            .map_err(extract_reason)?
            else {
                return Ok(None);
            };
            let mut presented = cert::decode(value, source.format).map_err(cert_reason)?;
            if let Some(name) = &source.chain_name {
                if let Some(v) = extract::cert_header(
                    input.headers,
                    name,
                    policy.limits.max_certificate_header_bytes,
                )
                .map_err(extract_reason)?
                {
                    // Intermediates from their own header extend the chain (the revocation
                    // check reads the issuer from the same list).
                    presented
                        .chain
                        .extend(cert::decode_chain(v, source.format).map_err(cert_reason)?);
                }
            }
            let verified = cert::verify(
                &presented,
                &[],
                source.trust.as_deref(),
                policy.limits.max_chain_length,
                now,
            )
            .map_err(cert_reason)?;
            (presented.chain, verified)
        }
        CertSource::Peer => {
            let value = input.peer_certificate.trim();
            if value.is_empty() {
                return Ok(None);
            }
            // Envoy's TLS layer verified the chain during the handshake.
            let presented = cert::decode(value, HeaderFormat::UrlEncoded).map_err(cert_reason)?;
            let verified = cert::verify(&presented, &[], None, policy.limits.max_chain_length, now)
                .map_err(cert_reason)?;
            (presented.chain, verified)
        }
    };
    Ok(Some(ClientCert {
        thumbprint: verified.thumbprint,
        chain,
        issuer: verified.issuer,
    }))
}

fn from_trusted_hop(source: Option<IpAddr>, trusted: &[ipnet::IpNet]) -> bool {
    source.is_some_and(|ip| {
        let ip = match ip {
            // An IPv4 peer on a dual-stack listener arrives as ::ffff:a.b.c.d.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        trusted.iter().any(|net| net.contains(&ip))
    })
}

/// Claims to upstream headers. A configured header whose claim is absent (or not representable
/// as a header value) is returned for removal, so a client-sent copy never reaches the upstream.
fn upstream_headers(policy: &Policy, token: &VerifiedToken) -> (Vec<UpstreamHeader>, Vec<String>) {
    let mut set = Vec::with_capacity(policy.upstream_headers.len());
    let mut remove = Vec::new();
    for mapping in &policy.upstream_headers {
        match claim_by_name(&token.claims, &mapping.claim).and_then(header_value) {
            Some(value) => set.push(UpstreamHeader {
                name: mapping.header.clone(),
                value,
            }),
            None => remove.push(mapping.header.clone()),
        }
    }
    (set, remove)
}

/// A claim by its exact name, or else by a dotted path into nested objects
/// (`realm_access.roles`); exact names win because claim names may contain dots (URLs).
fn claim_by_name<'c>(claims: &'c Map<String, Value>, name: &str) -> Option<&'c Value> {
    claims.get(name).or_else(|| {
        let path: Vec<String> = name.split('.').map(str::to_string).collect();
        (path.len() > 1).then(|| claim_at(claims, &path)).flatten()
    })
}

/// Strings as they are; numbers and booleans in JSON form; arrays of scalars joined with `,`;
/// objects as compact JSON. Values with control characters are not representable.
fn header_value(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(_) | Value::Bool(_) => v.to_string(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Number(_) | Value::Bool(_) => Some(i.to_string()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?
            .join(","),
        Value::Object(_) => v.to_string(),
        Value::Null => return None,
    };
    (!s.chars().any(char::is_control)).then_some(s)
}

fn x5t(t: &Thumbprint) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t)
}

fn extract_reason(e: ExtractError) -> DenyReason {
    match e {
        ExtractError::MissingToken => DenyReason::MissingToken,
        ExtractError::MalformedAuthorization => DenyReason::MalformedAuthorization,
        ExtractError::CertHeaderTooLarge => DenyReason::CertHeaderTooLarge,
    }
}

fn token_reason(e: TokenError) -> DenyReason {
    match e {
        TokenError::TooLarge | TokenError::TooDeep => DenyReason::TokenTooLarge,
        TokenError::Malformed => DenyReason::TokenMalformed,
        TokenError::UnknownKey => DenyReason::TokenUnknownKey,
        TokenError::AlgorithmNotAllowed => DenyReason::TokenAlgorithmNotAllowed,
        TokenError::SignatureInvalid => DenyReason::TokenSignatureInvalid,
        TokenError::Expired => DenyReason::TokenExpired,
        TokenError::NotYetValid => DenyReason::TokenNotYetValid,
        TokenError::IssuerMismatch => DenyReason::TokenIssuerMismatch,
        TokenError::AudienceMismatch => DenyReason::TokenAudienceMismatch,
        TokenError::MissingClaim(_) => DenyReason::TokenMissingClaim,
        TokenError::TypeNotAllowed => DenyReason::TokenTypeNotAllowed,
    }
}

fn cert_reason(e: CertError) -> DenyReason {
    match e {
        CertError::Duplicate => DenyReason::CertHeaderDuplicate,
        CertError::TooLarge => DenyReason::CertHeaderTooLarge,
        CertError::Malformed => DenyReason::CertMalformed,
        CertError::ChainTooLong => DenyReason::CertChainTooLong,
        CertError::Untrusted => DenyReason::CertUntrusted,
        CertError::Expired => DenyReason::CertExpired,
        CertError::NotYetValid => DenyReason::CertNotYetValid,
        CertError::NotForClientAuth => DenyReason::CertNotForClientAuth,
        CertError::Invalid => DenyReason::CertInvalid,
        CertError::Unverifiable => DenyReason::CertUnverifiable,
    }
}

fn revocation_reason(e: RevocationError) -> DenyReason {
    match e {
        RevocationError::Revoked => DenyReason::CertRevoked,
        RevocationError::Unknown => DenyReason::CertRevocationUnknown,
    }
}

fn bind_reason(e: BindError) -> DenyReason {
    match e {
        BindError::NotBound => DenyReason::TokenNotBound,
        BindError::CertMissing => DenyReason::CertMissing,
        BindError::Malformed => DenyReason::BindingMalformed,
        BindError::Mismatch => DenyReason::BindingMismatch,
    }
}
