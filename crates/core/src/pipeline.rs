//! One check, start to end, over plain data: select policy -> extract credentials -> verify the
//! certificate -> verify the token -> bind -> revocation -> decide. This is what the gRPC adapter, the tests
//! and the benchmarks call. It never returns an error: every failure is a `Decision::Deny`.

mod deny;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::bind::{self, PopMode};
use crate::cache::{self, Caches, CertFacts, Lookup, Lookups, TokenFacts};
use crate::cert::{self, HeaderFormat, Thumbprint};
use crate::decision::{AllowReason, Decision, DenyReason, UpstreamHeader};
use crate::dpop::{self, DpopMode};
use crate::engine::{Engine, Services};
use crate::extract::{self, Scheme};
use crate::introspection::IntrospectError;
use crate::policy::{CertSource, MeshSource, Policy, XFCC_HEADER};
use crate::routes::{self, Selected};
use crate::token::{self, TokenError, VerifiedToken};

/// The client certificate Envoy terminated mTLS with and verified, in the form the face has it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PeerCertificate<'a> {
    /// No TLS client certificate (or Envoy sent none).
    #[default]
    None,
    /// ext_authz: `attributes.source.certificate`, the URL-encoded PEM Envoy sends with
    /// `include_peer_certificate: true`.
    UrlEncodedPem(&'a str),
    /// In-process: Envoy's SHA-256 of the DER leaf (`connection.sha256_peer_certificate_digest`),
    /// already the x5t#S256 input. Envoy checked the chain and the dates in the handshake.
    Sha256(Thumbprint),
}

impl<'a> PeerCertificate<'a> {
    /// `attributes.source.certificate` as ext_authz sends it: empty means none.
    pub fn url_encoded_pem(value: &'a str) -> Self {
        match value.trim() {
            "" => Self::None,
            v => Self::UrlEncodedPem(v),
        }
    }

    /// Envoy's hex digest attribute; anything but 64 hex digits is no certificate.
    pub fn sha256_hex(hex: &[u8]) -> Self {
        let mut t: Thumbprint = [0; 32];
        if hex.len() != 64 {
            return Self::None;
        }
        for (i, pair) in hex.chunks(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(h), Some(l)) => t[i] = (h * 16 + l) as u8,
                _ => return Self::None,
            }
        }
        Self::Sha256(t)
    }
}

/// What the pipeline reads from a CheckRequest.
#[derive(Debug, Clone, Copy)]
pub struct CheckInput<'a> {
    /// Lower-case header names, as Envoy sends them.
    pub headers: &'a HashMap<String, String>,
    /// `attributes.source.certificate`; empty when Envoy sent none.
    pub peer_certificate: PeerCertificate<'a>,
    /// `context_extensions["policy"]`, if the route sets one. It wins over `[[routes]]`, which
    /// choose by the `:authority`, `:path` and `:method` in `headers`.
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
    /// What the result caches answered.
    pub cache: Lookups,
    /// Set when the policy takes DPoP: a 401 carries the `DPoP` challenge too.
    pub dpop: Option<dpop::Challenge>,
    /// Introspection was refused because `limits.max_introspection_calls` were outstanding.
    pub introspection_saturated: bool,
    /// The policy's RFC 9728 metadata URL: every challenge names it (`resource_metadata`).
    pub resource_metadata: Option<String>,
}

/// The `policy` label metrics count a check under when no policy of the configuration decided
/// it: the route asked for a name the configuration does not know, no `[[routes]]` rule matched,
/// or the check ended before a policy was chosen. A policy name cannot hold `(`, so this value
/// never collides with one.
pub const NO_POLICY: &str = "(none)";

impl Outcome {
    /// The policy a metric counts this outcome under: the one that decided, or [`NO_POLICY`].
    /// Bounded by the configuration: a name a route asks for is never passed through.
    pub fn policy_label(&self) -> &str {
        match self.decision {
            Decision::Deny(DenyReason::UnknownPolicy) => NO_POLICY,
            _ if self.policy.is_empty() => NO_POLICY,
            _ => &self.policy,
        }
    }
}

/// Runs one check at `now` (seconds since the epoch).
pub async fn check(input: &CheckInput<'_>, engine: &Engine, now: u64) -> Outcome {
    let name = match input.policy_name {
        Some(name) => Some(name),
        None if engine.routes.is_empty() => None,
        None => {
            let header = |name: &str| input.headers.get(name).map_or("", String::as_str);
            let request = routes::Request {
                authority: header(":authority"),
                path: header(":path"),
                method: header(":method"),
            };
            match engine.routes.select(&request) {
                Selected::Policy(name) => name,
                Selected::Deny => {
                    return Outcome {
                        decision: Decision::Deny(DenyReason::NoMatchingRoute),
                        ..Outcome::default()
                    }
                }
                // As Kong serves a route no authentication plugin covers: the request goes
                // upstream as the client sent it.
                Selected::Unauthenticated => {
                    return Outcome {
                        decision: Decision::Allow {
                            reason: AllowReason::Unauthenticated,
                            headers: Vec::new(),
                            remove: Vec::new(),
                        },
                        ..Outcome::default()
                    }
                }
            }
        }
    };
    let Some(active) = engine.select(name) else {
        return Outcome {
            decision: Decision::Deny(DenyReason::UnknownPolicy),
            policy: name.unwrap_or_default().to_string(),
            ..Outcome::default()
        };
    };
    let (policy, services) = (&*active.policy, &active.services);
    let mut outcome = Outcome {
        policy: policy.name.clone(),
        dpop: (policy.dpop.mode != DpopMode::Off).then(|| dpop::Challenge {
            mode: policy.dpop.mode,
            algs: policy.dpop.algs_str(),
            nonce: policy.dpop.nonce.as_ref().map(|n| n.issue(now)),
        }),
        resource_metadata: policy.metadata.as_ref().map(|m| m.url.clone()),
        ..Outcome::default()
    };
    outcome.decision = match decide(input, policy, services, now, &mut outcome).await {
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
    policy: &Policy,
    services: &Services,
    now: u64,
    outcome: &mut Outcome,
) -> Result<Decision, DenyReason> {
    let (scheme, token) = extract::access_token(
        input.headers,
        policy.limits.max_authorization_values,
        policy.dpop.mode != DpopMode::Off,
    )?;
    if token.len() > policy.limits.max_token_bytes {
        return Err(DenyReason::TokenTooLarge);
    }
    // Every local check that can deny runs before anything that may go to the network
    // (introspection, a JWKS refetch on an unknown `kid`): without a certificate the policy
    // accepts, a made-up token costs the IdP nothing.
    let cert = client_certificate(input, policy, &services.caches, now, &mut outcome.cache)?;
    outcome.thumbprint = cert.as_ref().map(|c| x5t(&c.thumbprint));
    if policy.pop_mode == PopMode::Strict && cert.is_none() {
        // Strict binding denies every token without a certificate, bound or not.
        return Err(DenyReason::CertMissing);
    }
    let verified = token_facts(token, policy, services, now, outcome).await?;
    outcome.subject.clone_from(&verified.subject);
    outcome.client_id.clone_from(&verified.client_id);
    let reason = bind::check(
        policy.pop_mode,
        &verified.binding,
        cert.as_ref().map(|c| &c.thumbprint),
    )?;
    let reason = dpop::check(
        &policy.dpop,
        &dpop::Request {
            headers: input.headers,
            scheme,
            token,
            jkt: &verified.jkt,
            mtls: reason,
            max_json_depth: policy.limits.max_json_depth,
            leeway: policy.leeway,
            now,
            replay: &services.replay,
        },
    )
    .await?;
    verified.authorized?;
    // Revocation last: it may need network I/O, so only requests that passed every local check
    // can cause a fetch.
    if let Some(c) = &cert {
        if let (Some(checker), Some(issuer)) = (&services.revocation, c.issuer) {
            checker.check(&c.chain, issuer, &c.thumbprint, now).await?;
        }
    }
    let (mut headers, mut remove) = (verified.headers.clone(), verified.remove.clone());
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
        match &policy.cert_source {
            CertSource::Header(source) => {
                remove.push(source.name.clone());
                remove.extend(source.chain_name.clone());
            }
            CertSource::Mesh(_) => remove.push(XFCC_HEADER.to_string()),
            CertSource::Peer => {}
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
/// (unless `introspect_jwt_tokens`); anything else to introspection when it is on. JWTs go
/// through the policy's token cache; introspection results have their own cache
/// (`cache_introspection`).
async fn token_facts(
    token: &str,
    policy: &Policy,
    services: &Services,
    now: u64,
    outcome: &mut Outcome,
) -> Result<Arc<TokenFacts>, DenyReason> {
    let lookups = &mut outcome.cache;
    // Parsing the JWT header matters only when introspection could take the token instead.
    let introspect = |introspector| {
        let jwt = crate::introspection::is_jwt_shaped(token);
        (!(policy.bearer && jwt && !policy.introspect_jwt_tokens)).then_some(introspector)
    };
    match services.introspector.as_ref().and_then(introspect) {
        Some(introspector) => {
            let response = introspector.introspect(token, now).await.inspect_err(|e| {
                outcome.introspection_saturated |= matches!(e, IntrospectError::Saturated);
            })?;
            let verified = token::verify_introspected(&response, &policy.token_rules(), now)?;
            Ok(Arc::new(facts(policy, verified, [0; 32])))
        }
        _ if !services.caches.caches_tokens() => {
            let (verified, keys) = verify_jwt(token, policy, services, now).await?;
            Ok(Arc::new(facts(policy, verified, keys)))
        }
        _ => {
            let key = cache::token_key(token);
            if let Some(hit) = services.caches.token(&key, now) {
                // Proven with the keys the issuer publishes now: only the clock can change the
                // answer. A changed key set sends the token back to full verification.
                if hit.keys == services.keys.fingerprint() {
                    lookups.token = Some(Lookup::Hit);
                    hit.check_time(policy.leeway, now)?;
                    return Ok(hit);
                }
            }
            lookups.token = Some(Lookup::Miss);
            let (verified, keys) = verify_jwt(token, policy, services, now).await?;
            let f = Arc::new(facts(policy, verified, keys));
            services
                .caches
                .put_token(key, f.clone(), policy.leeway, now);
            Ok(f)
        }
    }
}

/// What the rest of the check needs from a verified token, decided once per token and policy.
fn facts(policy: &Policy, verified: VerifiedToken, keys: [u8; 32]) -> TokenFacts {
    let text = |name: &str| {
        verified
            .claims
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let (headers, remove) = upstream_headers(policy, &verified);
    TokenFacts {
        subject: text("sub"),
        client_id: text("client_id"),
        authorized: authorize(policy, &verified.claims),
        jkt: dpop::token_jkt(&verified.claims),
        headers,
        remove,
        exp: verified.exp,
        nbf: verified.nbf,
        keys,
        binding: verified.binding,
    }
}

/// Verifies a JWT; also returns the fingerprint of the key set that verified it.
async fn verify_jwt(
    token: &str,
    policy: &Policy,
    services: &Services,
    now: u64,
) -> Result<(VerifiedToken, [u8; 32]), DenyReason> {
    let rules = policy.token_rules();
    let mut keys = services.keys.current();
    if !keys.is_loaded() {
        keys = services.keys.refresh(policy.unknown_kid_wait).await;
        if !keys.is_loaded() {
            return Err(DenyReason::KeysUnavailable);
        }
    }
    match token::verify(token, &keys, &rules, now) {
        Err(TokenError::UnknownKey) => {
            // The IdP may have rotated its keys: ask for a (rate-limited) refresh, once.
            let keys = services.keys.refresh(policy.unknown_kid_wait).await;
            token::verify(token, &keys, &rules, now)
                .map(|v| (v, keys.fingerprint()))
                .map_err(DenyReason::from)
        }
        other => other
            .map(|v| (v, keys.fingerprint()))
            .map_err(DenyReason::from),
    }
}

/// The client certificate, if one was presented and verified. With PoP off nothing is read. A
/// certificate that is present but fails is always a deny, whatever the mode.
fn client_certificate(
    input: &CheckInput<'_>,
    policy: &Policy,
    caches: &Caches,
    now: u64,
    lookups: &mut Lookups,
) -> Result<Option<Arc<CertFacts>>, DenyReason> {
    if policy.pop_mode == PopMode::Off {
        return Ok(None);
    }
    let max_bytes = policy.limits.max_certificate_header_bytes;
    match &policy.cert_source {
        CertSource::Header(source) => {
            if source.secure_source && !from_trusted_hop(input.source_ip, &policy.trusted_ips) {
                // Anyone can copy a certificate into a header: from an untrusted hop the header
                // is treated as absent (Kong's secure_source).
                return Ok(None);
            }
            let Some(value) = extract::cert_header(input.headers, &source.name, max_bytes)? else {
                return Ok(None);
            };
            let chain_value = match &source.chain_name {
                Some(name) => extract::cert_header(input.headers, name, max_bytes)?,
                None => None,
            };
            let header_key = caches.caches_certificates().then(|| match chain_value {
                Some(v) => cache::header_key(&[value, v]),
                None => cache::header_key(&[value]),
            });
            if let Some(key) = &header_key {
                let hit = caches.cert_by_header(key, now);
                lookups.certificate = Some(Lookup::found(hit.is_some()));
                if hit.is_some() {
                    return Ok(hit);
                }
            }
            let mut presented = cert::decode_with(value, source.format, source.xfcc_elements)?;
            if let Some(v) = chain_value {
                // Intermediates from their own header extend the chain (the revocation check
                // reads the issuer from the same list).
                presented
                    .chain
                    .extend(cert::decode_chain(v, source.format)?);
            }
            // The same chain in another encoding (line breaks, escaping) was verified already.
            let der_key = (header_key.is_some() && !presented.chain.is_empty())
                .then(|| cache::der_key(&presented.chain));
            if let Some(key) = &der_key {
                let hit = caches.cert_by_der(key, now);
                lookups.certificate_der = Some(Lookup::found(hit.is_some()));
                if let (Some(hit), Some(header_key)) = (hit, header_key) {
                    caches.put_cert(header_key, None, hit.clone(), now);
                    return Ok(Some(hit));
                }
            }
            let verified = cert::verify(
                &presented,
                &[],
                source.trust.as_deref(),
                policy.limits.max_chain_length,
                now,
            )?;
            let facts = Arc::new(CertFacts {
                thumbprint: verified.thumbprint,
                issuer: verified.issuer,
                // Only the revocation check reads the chain: not kept in memory otherwise.
                chain: if source.revocation.is_some() {
                    presented.chain
                } else {
                    Vec::new()
                },
                validity: verified.validity,
                verified_at: now,
            });
            if let Some(key) = header_key {
                caches.put_cert(key, der_key, facts.clone(), now);
            }
            Ok(Some(facts))
        }
        CertSource::Mesh(mesh) => mesh_peer(input, mesh, max_bytes, now),
        CertSource::Peer => {
            let value = match input.peer_certificate {
                PeerCertificate::None => return Ok(None),
                PeerCertificate::Sha256(thumbprint) => {
                    // Envoy verified the chain and its dates in the handshake; the digest is all
                    // the binding needs.
                    return Ok(Some(Arc::new(CertFacts {
                        thumbprint,
                        issuer: None,
                        chain: Vec::new(),
                        validity: cert::Validity::ALWAYS,
                        verified_at: now,
                    })));
                }
                PeerCertificate::UrlEncodedPem(value) => value,
            };
            let key = caches
                .caches_certificates()
                .then(|| cache::header_key(&[value]));
            if let Some(key) = &key {
                let hit = caches.cert_by_header(key, now);
                lookups.certificate = Some(Lookup::found(hit.is_some()));
                if hit.is_some() {
                    return Ok(hit);
                }
            }
            // Envoy's TLS layer verified the chain during the handshake.
            let presented = cert::decode(value, HeaderFormat::UrlEncoded)?;
            let verified =
                cert::verify(&presented, &[], None, policy.limits.max_chain_length, now)?;
            let facts = Arc::new(CertFacts {
                thumbprint: verified.thumbprint,
                issuer: verified.issuer,
                chain: Vec::new(),
                validity: verified.validity,
                verified_at: now,
            });
            if let Some(key) = key {
                caches.put_cert(key, None, facts.clone(), now);
            }
            Ok(Some(facts))
        }
    }
}

/// The mesh peer the local sidecar attests: its `Hash` is the certificate to bind to. Nothing is
/// cached: there is no chain to verify, and reading the element is cheaper than a lookup.
fn mesh_peer(
    input: &CheckInput<'_>,
    mesh: &MeshSource,
    max_bytes: usize,
    now: u64,
) -> Result<Option<Arc<CertFacts>>, DenyReason> {
    let Some(value) = extract::cert_header(input.headers, XFCC_HEADER, max_bytes)? else {
        // An allow-list is a promise about every caller: a request the sidecar did not attest
        // (no client certificate, or no sidecar) is not let through by an optional binding.
        if mesh.allowed_spiffe_ids.is_empty() {
            return Ok(None);
        }
        return Err(DenyReason::CertMissing);
    };
    let peer = cert::decode_mesh(value, mesh.local_spiffe_id.as_deref())?;
    if !mesh.allowed_spiffe_ids.is_empty()
        && !cert::SpiffePattern::allows(&mesh.allowed_spiffe_ids, &peer.uris)
    {
        return Err(DenyReason::MeshIdentityNotAllowed);
    }
    Ok(Some(Arc::new(CertFacts {
        thumbprint: peer.hash,
        issuer: None,
        chain: Vec::new(),
        validity: cert::Validity::ALWAYS,
        verified_at: now,
    })))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Active;
    use crate::policy::Policy;
    use crate::token::KeyStore;

    async fn outcome_of(named: &[&str], asked: Option<&str>) -> Outcome {
        let active = |name: &str| {
            Arc::new(Active::in_memory(
                Policy::new(name, "https://idp.test"),
                Arc::new(KeyStore::new()),
            ))
        };
        let mut engine = Engine::single(Active::in_memory(
            Policy::new("default", "https://idp.test"),
            Arc::new(KeyStore::new()),
        ));
        engine.named = named.iter().map(|n| (n.to_string(), active(n))).collect();
        let headers = HashMap::new();
        let input = CheckInput {
            headers: &headers,
            peer_certificate: PeerCertificate::None,
            policy_name: asked,
            source_ip: None,
        };
        check(&input, &engine, 1_700_000_000).await
    }

    #[tokio::test]
    async fn the_policy_label_is_the_deciding_policy_and_one_fixed_value_for_unknown_names() {
        let strict = outcome_of(&["strict"], Some("strict")).await;
        assert_eq!(strict.decision, Decision::Deny(DenyReason::MissingToken));
        assert_eq!(strict.policy_label(), "strict");
        assert_eq!(
            outcome_of(&["strict"], None).await.policy_label(),
            "default"
        );
        for asked in ["nope", "other", "default"] {
            let unknown = outcome_of(&["strict"], Some(asked)).await;
            assert_eq!(unknown.decision, Decision::Deny(DenyReason::UnknownPolicy));
            assert_eq!(
                unknown.policy, asked,
                "the log still names what was asked for"
            );
            assert_eq!(unknown.policy_label(), NO_POLICY, "{asked}");
        }
        let undecided = Outcome {
            decision: Decision::Deny(DenyReason::RequestTooLarge),
            ..Outcome::default()
        };
        assert_eq!(undecided.policy_label(), NO_POLICY);
    }

    #[test]
    fn envoys_peer_digest_is_read_as_the_thumbprint_and_anything_else_as_no_certificate() {
        let hex = "00ff10a0".repeat(8);
        let mut want = [0u8; 32];
        for chunk in want.chunks_mut(4) {
            chunk.copy_from_slice(&[0x00, 0xff, 0x10, 0xa0]);
        }
        assert_eq!(
            PeerCertificate::sha256_hex(hex.as_bytes()),
            PeerCertificate::Sha256(want)
        );
        for bad in [&b""[..], &hex.as_bytes()[..62], b"zz".repeat(32).as_slice()] {
            assert_eq!(PeerCertificate::sha256_hex(bad), PeerCertificate::None);
        }
        assert_eq!(
            PeerCertificate::url_encoded_pem("  "),
            PeerCertificate::None
        );
    }
}
