//! Policies in force: each plain-data `Policy` paired with the live services its checks use
//! (key store, introspector, revocation checker, replay store, result caches). The service's
//! `build` step makes them from a validated configuration; the pipeline reads them.
//!
//! Guarantees: a policy's caches are its own (a cache shared between policies could hand one
//! policy's verdict to another); services reach the network only through the traits the core
//! defines (`revocation::Fetch`, `introspection::Introspect`, `dpop::ReplayBackend`) and the key
//! store an adapter fills.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cache::Caches;
use crate::dpop::ReplayStore;
use crate::introspection::Introspector;
use crate::log_fields::LogFields;
use crate::policy::Policy;
use crate::resource::{Metadata, WELL_KNOWN};
use crate::revocation::Checker;
use crate::routes::Routes;
use crate::token::KeyStore;

/// The live services one policy's checks use.
#[derive(Clone)]
pub struct Services {
    /// The issuer's signing keys (shared by every policy with the same key source).
    pub keys: Arc<KeyStore>,
    /// Set when `auth_methods` contains `introspection`.
    pub introspector: Option<Arc<Introspector>>,
    /// Set when the certificate header is checked for revocation.
    pub revocation: Option<Arc<Checker>>,
    /// DPoP `jti`s seen (shared by every policy of one configuration).
    pub replay: Arc<ReplayStore>,
    /// Verified tokens and certificates: this policy's alone.
    pub caches: Arc<Caches>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("keys_ready", &self.keys.is_ready())
            .field("introspection", &self.introspector.is_some())
            .field("revocation", &self.revocation.is_some())
            .field("replay", &self.replay)
            .finish_non_exhaustive()
    }
}

/// One policy in force.
#[derive(Debug, Clone)]
pub struct Active {
    pub policy: Arc<Policy>,
    pub services: Services,
}

impl Active {
    /// `policy` with services that never leave the process: JWTs verified with `keys` (filled
    /// by the caller), its own caches sized by `policy.cache`, an in-memory replay store, no
    /// introspection and no revocation check. For tests, benchmarks and embedders that bring
    /// their own keys.
    pub fn in_memory(policy: Policy, keys: Arc<KeyStore>) -> Self {
        Self {
            services: Services {
                keys,
                introspector: None,
                revocation: None,
                replay: Arc::new(ReplayStore::memory(IN_MEMORY_REPLAY_ENTRIES)),
                caches: Arc::new(Caches::new(policy.cache)),
            },
            policy: Arc::new(policy),
        }
    }
}

/// Proofs remembered by [`Active::in_memory`]'s replay store.
const IN_MEMORY_REPLAY_ENTRIES: u64 = 100_000;

/// The default policy plus the named ones, each with its services. A request gets the one its
/// Envoy route names (`context_extensions: {policy: NAME}`, the module's per-route config), else
/// the one `routes` selects by host, path and method.
#[derive(Debug, Clone)]
pub struct Engine {
    pub default: Arc<Active>,
    pub named: HashMap<String, Arc<Active>>,
    /// What every answer tells the access log (`dynamic_metadata`).
    pub log_fields: LogFields,
    /// `[[routes]]`: the policy by host, path and method where the route names none.
    pub routes: Arc<Routes>,
}

impl Engine {
    /// One policy as the default.
    pub fn single(active: Active) -> Self {
        Self {
            default: Arc::new(active),
            named: HashMap::new(),
            log_fields: crate::defaults::DYNAMIC_METADATA,
            routes: Arc::default(),
        }
    }

    /// The policy for a request: the named one, or the default when the route names none.
    /// A name that does not exist is `None`: the caller denies (fail closed).
    pub fn select(&self, name: Option<&str>) -> Option<&Arc<Active>> {
        match name {
            None => Some(&self.default),
            Some(n) => self.named.get(n),
        }
    }

    /// The RFC 9728 metadata a request asks for: a `GET` of a policy's well-known path (query
    /// ignored). Where policies publish at the same path for different hosts, the request's
    /// `:authority` picks; a path no host settles (different documents, none for this host)
    /// is `None`, and the request is checked like any other.
    pub fn published(&self, headers: &HashMap<String, String>) -> Option<&Metadata> {
        let path = headers.get(":path")?;
        let path = path.split('?').next().unwrap_or_default();
        if !path.starts_with(WELL_KNOWN)
            || headers.get(":method").map(String::as_str) != Some("GET")
        {
            return None;
        }
        let found: Vec<&Metadata> = self
            .iter()
            .filter_map(|a| a.policy.metadata.as_deref())
            .filter(|m| m.path == path)
            .collect();
        let host = crate::extract::host(headers).unwrap_or_default();
        if let Some(m) = found.iter().find(|m| m.resource.has_authority(host)) {
            return Some(m);
        }
        match found.split_first() {
            Some((first, rest)) if rest.iter().all(|m| m.document == first.document) => Some(first),
            _ => None,
        }
    }

    /// Whether any policy publishes RFC 9728 metadata (a face then reads `:method` and `:path`
    /// of every request).
    pub fn publishes(&self) -> bool {
        self.iter().any(|a| a.policy.metadata.is_some())
    }

    /// Every policy in force, the default first.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Active>> {
        std::iter::once(&self.default).chain(self.named.values())
    }

    /// Every distinct key store a policy verifies JWTs with (readiness: all must be loaded).
    pub fn key_stores(&self) -> Vec<Arc<KeyStore>> {
        let mut stores: Vec<Arc<KeyStore>> = Vec::new();
        for a in self.iter() {
            let keys = &a.services.keys;
            if a.policy.bearer && !stores.iter().any(|s| Arc::ptr_eq(s, keys)) {
                stores.push(keys.clone());
            }
        }
        stores
    }

    /// Every distinct revocation checker (metrics are attached to each at start).
    pub fn revocation_checkers(&self) -> Vec<Arc<Checker>> {
        let mut checkers: Vec<Arc<Checker>> = Vec::new();
        for a in self.iter() {
            if let Some(c) = &a.services.revocation {
                if !checkers.iter().any(|x| Arc::ptr_eq(x, c)) {
                    checkers.push(c.clone());
                }
            }
        }
        checkers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publishing(name: &str, resource: &str, issuer: &str) -> Arc<Active> {
        let mut p = Policy::new(name, issuer);
        p.publish(resource.parse().unwrap());
        Arc::new(Active::in_memory(p, Arc::new(KeyStore::new())))
    }

    fn request(method: &str, path: &str, host: &str) -> HashMap<String, String> {
        [(":method", method), (":path", path), (":authority", host)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn engine(default: Arc<Active>, named: &[Arc<Active>]) -> Engine {
        Engine {
            default,
            named: named
                .iter()
                .map(|a| (a.policy.name.clone(), a.clone()))
                .collect(),
            routes: Arc::default(),
            log_fields: crate::defaults::DYNAMIC_METADATA,
        }
    }

    fn issuer_of(m: Option<&Metadata>) -> Option<String> {
        let doc: serde_json::Value = serde_json::from_str(&m?.document).ok()?;
        Some(doc["authorization_servers"][0].as_str()?.to_string())
    }

    #[test]
    fn a_get_of_a_policys_well_known_path_is_its_document_whatever_the_query() {
        let e = engine(
            publishing("default", "https://api.test/v1", "https://idp-a.test"),
            &[publishing("b", "https://api.test/v2", "https://idp-b.test")],
        );
        let get = |path: &str| issuer_of(e.published(&request("GET", path, "api.test")));
        assert_eq!(
            get("/.well-known/oauth-protected-resource/v1").as_deref(),
            Some("https://idp-a.test")
        );
        assert_eq!(
            get("/.well-known/oauth-protected-resource/v2?x=1").as_deref(),
            Some("https://idp-b.test")
        );
        assert_eq!(get("/.well-known/oauth-protected-resource"), None);
        assert_eq!(get("/.well-known/oauth-protected-resource/v1/more"), None);
        assert_eq!(get("/v1"), None);
        let post = request(
            "POST",
            "/.well-known/oauth-protected-resource/v1",
            "api.test",
        );
        assert!(e.published(&post).is_none());
    }

    #[test]
    fn the_host_picks_between_policies_publishing_at_the_same_path() {
        let e = engine(
            publishing("default", "https://a.test", "https://idp-a.test"),
            &[publishing("b", "https://b.test", "https://idp-b.test")],
        );
        let at = |host: &str| {
            issuer_of(e.published(&request(
                "GET",
                "/.well-known/oauth-protected-resource",
                host,
            )))
        };
        assert_eq!(at("a.test").as_deref(), Some("https://idp-a.test"));
        assert_eq!(at("B.test:443").as_deref(), Some("https://idp-b.test"));
        // Neither host, different documents: nothing is served rather than a guess.
        assert_eq!(at("c.test"), None);
    }

    #[test]
    fn one_document_is_served_whatever_the_host_the_proxy_saw() {
        let e = engine(
            publishing("default", "https://api.test/v1", "https://idp.test"),
            &[],
        );
        let m = e.published(&request(
            "GET",
            "/.well-known/oauth-protected-resource/v1",
            "localhost:10000",
        ));
        assert_eq!(issuer_of(m).as_deref(), Some("https://idp.test"));
        assert!(e.publishes());
        let quiet = Engine::single(Active::in_memory(
            Policy::new("default", "https://idp.test"),
            Arc::new(KeyStore::new()),
        ));
        assert!(!quiet.publishes());
        assert!(quiet
            .published(&request(
                "GET",
                "/.well-known/oauth-protected-resource",
                "a"
            ))
            .is_none());
    }
}
