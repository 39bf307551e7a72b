//! The last configuration step, and the only place that constructs clients and stores: a
//! validated `Config` becomes the `Engine` the pipeline runs (key stores, introspectors,
//! revocation checkers, the replay store, each policy's caches) and the key fetches that fill
//! the stores. Nothing here touches the network: clients connect on first use.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::{Config, ConfigError, Issue, ReplaySettings};
use certbound_adapters::http::RevocationFetcher;
use certbound_adapters::introspection::HttpIntrospection;
use certbound_adapters::jwks::KeyFetch;
use certbound_adapters::replay::RedisStore;
use certbound_core::cache::Caches;
use certbound_core::dpop::ReplayStore;
use certbound_core::engine::{Active, Engine, Services};
use certbound_core::introspection::Introspector;
use certbound_core::policy::{CertSource, KeySource, Policy};
use certbound_core::revocation::Checker;
use certbound_core::token::KeyStore;

/// A configuration's running services.
pub struct Built {
    pub engine: Engine,
    /// One per fetched key source (static JWKS files are not fetched).
    pub key_fetches: Vec<KeyFetch>,
}

impl Config {
    /// Makes the running services. `running` offers the store already filled for a key source
    /// (a reload keeps serving the keys it has); every other source gets a new, empty store.
    pub fn build(
        &self,
        running: &dyn Fn(&KeySource) -> Option<Arc<KeyStore>>,
    ) -> Result<Built, ConfigError> {
        let mut b = Builder {
            config: self,
            issues: Vec::new(),
            stores: Vec::new(),
            introspection_client: None,
            // `limits.max_introspection_calls`, shared by every policy's introspector.
            introspection_calls: Arc::new(Semaphore::new(
                self.policies.default.limits.max_introspection_calls,
            )),
            running,
        };
        let replay = Arc::new(match &self.replay {
            ReplaySettings::Memory { max_entries } => ReplayStore::memory(*max_entries),
            ReplaySettings::Redis { url, timeout } => match RedisStore::new(url, *timeout) {
                Ok(store) => ReplayStore::Shared(Arc::new(store)),
                Err(_) => {
                    // The URL may carry a password: never echo it (or the error quoting it).
                    b.issue(
                        "dpop_replay.redis_url",
                        "is not a redis:// or rediss:// URL",
                    );
                    ReplayStore::memory(1)
                }
            },
        });
        let default = b.active("", &self.policies.default, &replay);
        let named = self
            .policies
            .named
            .iter()
            .map(|(name, p)| {
                (
                    name.clone(),
                    b.active(&format!("policies.{name}."), p, &replay),
                )
            })
            .collect::<Vec<_>>();
        if !b.issues.is_empty() {
            return Err(ConfigError::Invalid(b.issues));
        }
        let key_fetches = b
            .stores
            .into_iter()
            .filter(|(source, _)| source.is_fetched())
            .map(|(source, store)| KeyFetch {
                store,
                source,
                min_interval: self.key_refresh.min_interval,
                refresh_interval: self.key_refresh.refresh_interval,
            })
            .collect();
        Ok(Built {
            engine: Engine {
                default: Arc::new(default),
                named: named
                    .into_iter()
                    .map(|(name, a)| (name, Arc::new(a)))
                    .collect(),
                log_fields: self.dynamic_metadata,
                routes: self.routes.clone(),
            },
            key_fetches,
        })
    }
}

struct Builder<'a> {
    config: &'a Config,
    issues: Vec<Issue>,
    /// Policies with the same key source share one store and one fetcher.
    stores: Vec<(KeySource, Arc<KeyStore>)>,
    introspection_client: Option<reqwest::Client>,
    introspection_calls: Arc<Semaphore>,
    running: &'a dyn Fn(&KeySource) -> Option<Arc<KeyStore>>,
}

impl Builder<'_> {
    fn issue(&mut self, key: &str, message: impl Into<String>) {
        self.issues.push(Issue {
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn active(&mut self, scope: &str, policy: &Arc<Policy>, replay: &Arc<ReplayStore>) -> Active {
        let services = Services {
            keys: self.key_store(&policy.keys),
            introspector: policy
                .introspection
                .as_ref()
                .and_then(|settings| self.introspector(settings)),
            revocation: self.revocation(scope, policy),
            replay: replay.clone(),
            // This policy's alone: a cache shared between policies could hand one policy's
            // verdict to another.
            caches: Arc::new(Caches::new(policy.cache)),
        };
        Active {
            policy: policy.clone(),
            services,
        }
    }

    fn key_store(&mut self, source: &KeySource) -> Arc<KeyStore> {
        if let Some((_, store)) = self.stores.iter().find(|(s, _)| s == source) {
            return store.clone();
        }
        let store = match (self.running)(source) {
            Some(running) => running,
            None => match source {
                KeySource::File { keys, .. } => Arc::new(KeyStore::with_shared(keys.clone())),
                _ => Arc::new(KeyStore::new()),
            },
        };
        self.stores.push((source.clone(), store.clone()));
        store
    }

    fn introspector(
        &mut self,
        settings: &certbound_core::introspection::Settings,
    ) -> Option<Arc<Introspector>> {
        let client = match &self.introspection_client {
            Some(c) => c.clone(),
            None => match self.config.idp_client.introspection_client() {
                Ok(c) => {
                    self.introspection_client = Some(c.clone());
                    c
                }
                Err(e) => {
                    self.issue("idp_ca_certificates", e);
                    return None;
                }
            },
        };
        Some(Arc::new(Introspector::new(
            settings.clone(),
            Arc::new(HttpIntrospection::new(settings.clone(), client)),
            self.introspection_calls.clone(),
        )))
    }

    fn revocation(&mut self, scope: &str, policy: &Policy) -> Option<Arc<Checker>> {
        let CertSource::Header(source) = &policy.cert_source else {
            return None;
        };
        let (Some(settings), Some(trust)) = (&source.revocation, &source.trust) else {
            return None;
        };
        match RevocationFetcher::new(settings.http_timeout, source.revocation_tls_verify) {
            Ok(fetch) => Some(Arc::new(Checker::new(
                settings.clone(),
                trust.clone(),
                Arc::new(fetch),
            ))),
            Err(e) => {
                self.issue(
                    &format!("{scope}proof_of_possession_mtls_from_header.ssl_verify"),
                    format!("cannot build the OCSP/CRL HTTP client: {e}"),
                );
                None
            }
        }
    }
}
