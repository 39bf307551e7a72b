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
