//! One check, start to end, over plain data: select policy -> extract credentials -> verify the
//! token -> verify the certificate -> bind -> revocation -> decide. This is what the gRPC adapter, the tests
//! and the benchmarks call. It never returns an error: every failure is a `Decision::Deny`.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::bind::{self, BindError, PopMode};
use rustls_pki_types::CertificateDer;

use crate::cert::{self, CertError, HeaderFormat, IssuerRef, Thumbprint};
use crate::decision::{Decision, DenyReason, UpstreamHeader};
use crate::extract::{self, ExtractError};
use crate::policy::{CertSource, Policies, Policy};
use crate::revocation::RevocationError;
use crate::token::{self, TokenError, TokenRules, VerifiedToken};

/// What the pipeline reads from a CheckRequest.
#[derive(Debug, Clone, Copy)]
pub struct CheckInput<'a> {
    /// Lower-case header names, as Envoy sends them.
    pub headers: &'a HashMap<String, String>,
    /// `attributes.source.certificate`; empty when Envoy sent none.
    pub peer_certificate: &'a str,
    /// `context_extensions["policy"]`, if the route sets one.
    pub policy_name: Option<&'a str>,
}

/// The decision plus what logs and metrics need to describe it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub decision: Decision,
    /// The policy that decided, or the unknown name that was asked for.
    pub policy: String,
    /// First 8 characters of the certificate's x5t#S256, for correlating logs without
    /// logging the certificate.
    pub cert_hint: Option<String>,
}

/// Runs one check at `now` (seconds since the epoch).
pub async fn check(input: &CheckInput<'_>, policies: &Policies, now: u64) -> Outcome {
    let Some(policy) = policies.select(input.policy_name) else {
        return Outcome {
            decision: Decision::Deny(DenyReason::UnknownPolicy),
            policy: input.policy_name.unwrap_or_default().to_string(),
            cert_hint: None,
        };
    };
    let mut cert_hint = None;
    let decision = match decide(input, policy, now, &mut cert_hint).await {
        Ok(d) => d,
        Err(reason) => Decision::Deny(reason),
    };
    Outcome {
        decision,
        policy: policy.name.clone(),
        cert_hint,
    }
}

async fn decide(
    input: &CheckInput<'_>,
    policy: &Arc<Policy>,
    now: u64,
    cert_hint: &mut Option<String>,
) -> Result<Decision, DenyReason> {
    let token = extract::bearer_token(input.headers).map_err(extract_reason)?;
    let verified = verify_token(token, policy, now).await?;
    let cert = client_certificate(input, policy, now)?;
    if let Some(c) = &cert {
        *cert_hint = Some(hint(&c.thumbprint));
    }
    let reason = bind::check(
        policy.pop_mode,
        &verified.binding,
        cert.as_ref().map(|c| &c.thumbprint),
    )
    .map_err(bind_reason)?;
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
    let (headers, remove) = upstream_headers(policy, &verified);
    Ok(Decision::Allow {
        reason,
        headers,
        remove,
    })
}

async fn verify_token(token: &str, policy: &Policy, now: u64) -> Result<VerifiedToken, DenyReason> {
    let rules = TokenRules {
        issuer: &policy.issuer,
        audiences: &policy.audiences,
        leeway: policy.leeway,
        accepted_types: &policy.accepted_token_types,
    };
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
struct Presented {
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
) -> Result<Option<Presented>, DenyReason> {
    if policy.pop_mode == PopMode::Off {
        return Ok(None);
    }
    let (chain, issuer) = match &policy.cert_source {
        CertSource::Header(source) => {
            let Some(value) =
                extract::cert_header(input.headers, &source.name).map_err(extract_reason)?
            else {
                return Ok(None);
            };
            let chain = cert::decode(value, source.format).map_err(cert_reason)?;
            let issuer = source.trust.verify_path(&chain, now).map_err(cert_reason)?;
            (chain, Some(issuer))
        }
        CertSource::Peer => {
            let value = input.peer_certificate.trim();
            if value.is_empty() {
                return Ok(None);
            }
            // Envoy's TLS layer verified the chain during the handshake.
            let chain = cert::decode(value, HeaderFormat::UrlEncoded).map_err(cert_reason)?;
            (chain, None)
        }
    };
    let leaf = chain.first().ok_or(DenyReason::CertMalformed)?;
    Ok(Some(Presented {
        thumbprint: cert::thumbprint(leaf.as_ref()),
        chain,
        issuer,
    }))
}

/// Claims to upstream headers. A configured header whose claim is absent (or not representable
/// as a header value) is returned for removal, so a client-sent copy never reaches the upstream.
fn upstream_headers(policy: &Policy, token: &VerifiedToken) -> (Vec<UpstreamHeader>, Vec<String>) {
    let mut set = Vec::with_capacity(policy.upstream_headers.len());
    let mut remove = Vec::new();
    for mapping in &policy.upstream_headers {
        match token.claims.get(&mapping.claim).and_then(header_value) {
            Some(value) => set.push(UpstreamHeader {
                name: mapping.header.clone(),
                value,
            }),
            None => remove.push(mapping.header.clone()),
        }
    }
    (set, remove)
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

fn hint(t: &Thumbprint) -> String {
    use base64::Engine;
    let full = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t);
    full[..8].to_string()
}

fn extract_reason(e: ExtractError) -> DenyReason {
    match e {
        ExtractError::MissingToken => DenyReason::MissingToken,
        ExtractError::MalformedAuthorization => DenyReason::MalformedAuthorization,
        ExtractError::DuplicateCertHeader => DenyReason::CertHeaderDuplicate,
        ExtractError::CertHeaderTooLarge => DenyReason::CertHeaderTooLarge,
    }
}

fn token_reason(e: TokenError) -> DenyReason {
    match e {
        TokenError::TooLarge => DenyReason::TokenTooLarge,
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
