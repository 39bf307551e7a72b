//! DPoP (RFC 9449): proof-of-possession with a key the client holds, beside mTLS binding.
//!
//! `proof` parses and verifies one proof (pure, fuzzable); `nonce` issues and checks stateless
//! server nonces; `replay` remembers `jti`s. `check` is the pipeline step: given the scheme the
//! token came with, the token's `cnf.jkt` and the mTLS step's result, it decides whether the DPoP
//! rules of the policy hold.
//!
//! Trusts nothing in the request: the proof's key is only as good as the token's `cnf.jkt` it
//! must equal; `htu` is compared with the URL the deployment says it is reached at
//! (`dpop_htu_base_url`) or, without one, `https://` and the `:authority` Envoy routed on.
//! Forwarded headers (`x-forwarded-proto`/`-host`) are never read: any client can send them.

mod nonce;
mod proof;
mod replay;

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::decision::{AllowReason, DenyReason};
use crate::names::spelled;
pub use nonce::{NonceIssuer, MIN_SECRET_BYTES, NONCE_WINDOW};
pub use proof::{
    access_token_hash, normalize_htu, parse, verify, Expected, Proof, MAX_JTI_BYTES,
    MAX_PROOF_BYTES,
};
pub use replay::{FirstUseFuture, ReplayBackend, ReplayError, ReplayStore};

spelled! {
    /// Kong's `proof_of_possession_dpop`.
    pub enum DpopMode {
        /// No DPoP: the `DPoP` scheme is not accepted, and a token bound with `cnf.jkt` is
        /// refused unless its certificate binding was proven.
        Off = "off",
        /// Tokens bound with `cnf.jkt` must come with a valid proof; unbound tokens pass.
        Optional = "optional",
        /// Every token must be bound with `cnf.jkt` and come with a valid proof.
        Strict = "strict",
    }
}

/// The asymmetric algorithms a proof may use unless `dpop_signing_alg_values` narrows them.
pub const DEFAULT_ALGS: &[Algorithm] = &[
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::EdDSA,
];

/// A policy's DPoP settings.
#[derive(Debug, Clone)]
pub struct DpopPolicy {
    pub mode: DpopMode,
    /// `dpop_proof_lifetime`, seconds.
    pub lifetime: u64,
    pub algs: Vec<Algorithm>,
    /// Set when `dpop_use_nonce = true`.
    pub nonce: Option<Arc<NonceIssuer>>,
    /// `dpop_htu_base_url` without a trailing `/`: the scheme and authority clients address.
    pub base_url: Option<String>,
}

impl DpopPolicy {
    /// DPoP off.
    pub fn off() -> Self {
        Self {
            mode: DpopMode::Off,
            lifetime: crate::defaults::DPOP_PROOF_LIFETIME_SECS,
            algs: DEFAULT_ALGS.to_vec(),
            nonce: None,
            base_url: None,
        }
    }

    /// `algs="ES256 RS256 ..."` of the challenge.
    pub fn algs_str(&self) -> String {
        self.algs
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Why a proof was not accepted. Its deny reason is chosen in `pipeline::deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    #[error("proof exceeds the size or nesting limit")]
    TooLarge,
    #[error("proof is not a well-formed JWS with the required claims")]
    Malformed,
    #[error("proof typ is not dpop+jwt")]
    WrongType,
    #[error("proof algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("proof jwk missing, private, or unfit for the algorithm")]
    BadKey,
    #[error("proof signature does not verify")]
    SignatureInvalid,
    #[error("htm does not match the request method")]
    MethodMismatch,
    #[error("htu does not match the request URI")]
    UriMismatch,
    #[error("iat outside the proof lifetime")]
    Stale,
    #[error("ath does not match the access token")]
    TokenHashMismatch,
    #[error("proof key does not match cnf.jkt")]
    KeyMismatch,
}

pub use crate::extract::Scheme;

/// What a token says about its DPoP binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jkt {
    Unbound,
    Bound(String),
    /// `cnf.jkt` present but not a string.
    Malformed,
}

/// `cnf.jkt` of verified claims (a JWT's or an introspection response's).
pub fn token_jkt(claims: &Map<String, Value>) -> Jkt {
    match claims.get("cnf").and_then(|c| c.as_object()?.get("jkt")) {
        None => Jkt::Unbound,
        Some(Value::String(s)) => Jkt::Bound(s.clone()),
        Some(_) => Jkt::Malformed,
    }
}

/// One request as the DPoP step sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub headers: &'a HashMap<String, String>,
    pub scheme: Scheme,
    pub token: &'a str,
    /// The token's `cnf.jkt` ([`token_jkt`]).
    pub jkt: &'a Jkt,
    /// The mTLS step's verdict: `Bound` when the token's certificate binding was proven.
    pub mtls: AllowReason,
    pub max_json_depth: usize,
    pub leeway: u64,
    pub now: u64,
    /// Where proofs already seen are recorded.
    pub replay: &'a ReplayStore,
}

/// Applies the policy's DPoP rules. Returns the allow reason for the whole check (the mTLS one,
/// or a DPoP one when a proof was verified).
pub async fn check(policy: &DpopPolicy, req: &Request<'_>) -> Result<AllowReason, DenyReason> {
    let jkt = match req.jkt {
        Jkt::Malformed => return Err(DenyReason::BindingMalformed),
        Jkt::Bound(j) => Some(j.as_str()),
        Jkt::Unbound => None,
    };
    match (policy.mode, req.scheme) {
        (DpopMode::Off, _) => {
            // The token names a key the request cannot prove: not a bearer token (RFC 9449
            // §7.2), unless its certificate binding was proven instead.
            return match jkt {
                Some(_) if req.mtls != AllowReason::Bound => Err(DenyReason::DpopBearerDowngrade),
                _ => Ok(req.mtls),
            };
        }
        (_, Scheme::Bearer) if jkt.is_some() => return Err(DenyReason::DpopBearerDowngrade),
        (DpopMode::Strict, Scheme::Bearer) => return Err(DenyReason::DpopProofMissing),
        (DpopMode::Optional, Scheme::Bearer) => return Ok(req.mtls),
        (DpopMode::Strict, Scheme::Dpop) if jkt.is_none() => {
            return Err(DenyReason::DpopTokenNotBound)
        }
        (_, Scheme::Dpop) => {}
    }
    let value = match req.headers.get("dpop").map(|v| v.trim()) {
        None | Some("") => return Err(DenyReason::DpopProofMissing),
        // Envoy joins repeated headers with `,`, which a compact JWS never contains: RFC 9449
        // §4.3 allows exactly one proof.
        Some(v) if v.contains(',') => return Err(DenyReason::DpopProofInvalid),
        Some(v) => v,
    };
    let proof = parse(value, &policy.algs, req.max_json_depth)?;
    let uri = request_uri(req.headers, policy.base_url.as_deref()).ok_or(DpopError::UriMismatch)?;
    verify(
        &proof,
        &Expected {
            method: req.headers.get(":method").map_or("", String::as_str),
            uri: &uri,
            token: req.token,
            jkt,
            lifetime: policy.lifetime,
            leeway: req.leeway,
            now: req.now,
        },
    )?;
    if let Some(issuer) = &policy.nonce {
        if !proof
            .nonce
            .as_deref()
            .is_some_and(|n| issuer.accepts(n, req.now))
        {
            return Err(DenyReason::DpopNonceRequired);
        }
    }
    // Last: only proofs that passed every other check take a place in the cache. Kept until the
    // proof's `iat` can no longer pass (lifetime plus leeway on both sides).
    let ttl = policy
        .lifetime
        .saturating_add(req.leeway.saturating_mul(2))
        .saturating_add(1);
    match req.replay.first_use(&proof.jkt, &proof.jti, ttl).await {
        // An unbound token with a proof (`optional`): the proof binds nothing.
        Ok(true) if jkt.is_none() => Ok(req.mtls),
        Ok(true) if req.mtls == AllowReason::Bound => Ok(AllowReason::BoundMtlsDpop),
        Ok(true) => Ok(AllowReason::DpopBound),
        Ok(false) => Err(DenyReason::DpopReplayed),
        Err(e) => {
            tracing::warn!(error = %e, "dpop replay store");
            Err(DenyReason::DpopReplayStoreUnavailable)
        }
    }
}

/// The URI the client addressed, without query or fragment: `base_url` (or `https://` and the
/// `:authority`) followed by the request path.
pub fn request_uri(headers: &HashMap<String, String>, base_url: Option<&str>) -> Option<String> {
    let path = headers.get(":path")?;
    let path = path.split(['?', '#']).next().unwrap_or("");
    match base_url {
        Some(base) => Some(format!("{base}{path}")),
        None => {
            let host = crate::extract::host(headers)?;
            Some(format!("https://{host}{path}"))
        }
    }
}

/// What a DPoP-enabled policy adds to a 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub mode: DpopMode,
    /// `algs="..."`.
    pub algs: String,
    /// A fresh nonce for `DPoP-Nonce`, when the policy uses nonces.
    pub nonce: Option<String>,
}

/// The `DPoP` challenge (RFC 9449 §7.1) for a deny. DPoP reasons carry their own error; in
/// `strict` mode, where this is the only challenge, other reasons carry their RFC 6750 error.
pub fn challenge(c: &Challenge, reason: DenyReason) -> String {
    let mut s = format!("DPoP algs=\"{}\"", c.algs);
    let error = match (reason.dpop_error(), c.mode) {
        (Some(e), _) => Some(e),
        (None, DpopMode::Strict) => reason.rfc6750_error().map(|e| e.as_str()),
        (None, _) => None,
    };
    if let Some(e) = error {
        s.push_str(&format!(
            ", error=\"{e}\", error_description=\"{}\"",
            reason.description()
        ));
    }
    s
}

#[cfg(test)]
mod tests;
