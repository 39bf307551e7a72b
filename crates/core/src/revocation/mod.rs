//! Revocation of the client's leaf certificate (Kong's `revocation_check_mode`), asked after its
//! chain verified: OCSP first when the certificate names a responder (Authority Information
//! Access), then the CRL from its distribution point.
//!
//! Owns the per-certificate status cache and the rule that turns a status into allow/deny per
//! mode. Trusts only answers that pass `ocsp` / `crl` verification against the issuer on the
//! verified path; URLs come from certificates that already chained to a configured CA.
//!
//! Guarantees:
//! - one certificate is never being resolved twice at a time: concurrent checks share one
//!   resolution (moka's `get_with`), which runs in its own task so it outlives a request that
//!   stops waiting and still fills the cache;
//! - a request waits at most `wait` for a status that is not cached; past that the status is
//!   undetermined for this request (STRICT denies, IGNORE_CA_ERROR allows);
//! - statuses are cached per leaf (SHA-256) for `cache_ttl`, shorter when the answer's
//!   `nextUpdate` comes sooner, `RETRY_AFTER_FAILURE` when nothing could be determined; CRLs are
//!   cached per URL the same way. Both caches are bounded.
//! - a leaf once answered revoked stays revoked for the life of the process (bounded set): its
//!   status expiring never turns it back into "undetermined" or "good";
//! - intermediates are not checked for revocation, only the leaf.

pub mod crl;
pub mod ocsp;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use der::Decode;
use moka::future::Cache;
use moka::Expiry;
use rustls_pki_types::CertificateDer;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::Certificate;

use crate::cert::{IssuerRef, Thumbprint, TrustStore};
use crate::names::UnknownName;
use crl::{Crl, CrlError, CrlStatus};
use ocsp::{OcspError, OcspQuery, OcspStatus};

/// Distinct leaf certificates whose status is kept.
const MAX_CACHED_STATUSES: u64 = 100_000;
/// Total DER bytes of CRLs kept.
const MAX_CACHED_CRL_BYTES: u64 = 64 * 1024 * 1024;
/// Distinct leaf certificates remembered as revoked beyond their status's lifetime.
const MAX_REMEMBERED_REVOKED: u64 = 100_000;
/// How long "could not be determined" is kept: long enough that a responder outage does not
/// turn every request into a fetch, short enough that recovery is seen quickly.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// Kong's `revocation_check_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No revocation check.
    Skip,
    /// A definite answer counts (revoked denies); no URL, a network or responder error, or an
    /// unknown status does not stop the request.
    IgnoreCaError,
    /// Only a certificate whose status was determined to be good passes.
    Strict,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Self::Skip, Self::IgnoreCaError, Self::Strict];

    /// The spellings of `ALL`, in its order (Kong's).
    pub const NAMES: [&'static str; 3] = [
        Self::Skip.as_str(),
        Self::IgnoreCaError.as_str(),
        Self::Strict.as_str(),
    ];

    /// Kong's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "SKIP",
            Self::IgnoreCaError => "IGNORE_CA_ERROR",
            Self::Strict => "STRICT",
        }
    }

    fn decide(self, status: Status) -> Result<(), RevocationError> {
        match (self, status) {
            (Self::Skip, _) | (_, Status::Good) => Ok(()),
            (_, Status::Revoked) => Err(RevocationError::Revoked),
            (Self::Strict, Status::Undetermined) => Err(RevocationError::Unknown),
            (Self::IgnoreCaError, Status::Undetermined) => Ok(()),
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = UnknownName;

    /// Kong's spelling, or the same in lower case.
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s || m.as_str().to_ascii_lowercase() == s)
            .ok_or_else(|| UnknownName::new(s, &Self::NAMES))
    }
}

/// The validated revocation settings of one certificate source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub mode: Mode,
    /// Kong's `cert_cache_ttl`: the longest a status (or CRL) is kept.
    pub cache_ttl: Duration,
    /// Kong's `http_timeout`: bound on each OCSP or CRL request.
    pub http_timeout: Duration,
    /// How long a check waits for a status that is not cached (certbound's `revocation_wait`).
    pub wait: Duration,
    /// Oldest OCSP response (`thisUpdate`, `producedAt`) believed when it has no `nextUpdate`
    /// (certbound's `ocsp_max_age`).
    pub ocsp_max_age: Duration,
}

/// Why a certificate is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    #[error("certificate is revoked")]
    Revoked,
    #[error("certificate revocation status could not be determined")]
    Unknown,
}

/// Which source was consulted (metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Ocsp,
    Crl,
}

impl Method {
    pub const ALL: [Method; 2] = [Self::Ocsp, Self::Crl];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ocsp => "ocsp",
            Self::Crl => "crl",
        }
    }
}

/// What one consultation gave (metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckResult {
    Good,
    Revoked,
    /// A valid answer that does not know the certificate (OCSP `unknown`, a CRL not covering it).
    Unknown,
    /// No valid answer: fetch failure, bad signature, stale, malformed.
    Error,
}

impl CheckResult {
    pub const ALL: [CheckResult; 4] = [Self::Good, Self::Revoked, Self::Unknown, Self::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Revoked => "revoked",
            Self::Unknown => "unknown",
            Self::Error => "error",
        }
    }
}

/// Told about every OCSP or CRL consultation (cache hits are not consultations). The metrics
/// adapter implements it, so this module needs no metrics library.
pub trait Observer: Send + Sync {
    fn consulted(&self, method: Method, result: CheckResult);
}

/// A fetch that failed: the URL and why, for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url}: {reason}")]
pub struct FetchError {
    pub url: String,
    pub reason: String,
}

pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, FetchError>> + Send + 'a>>;

/// Network access for revocation; `http::RevocationFetcher` in production. Bodies larger than
/// `max` bytes are errors.
pub trait Fetch: Send + Sync {
    fn post<'a>(
        &'a self,
        url: &'a str,
        content_type: &'static str,
        accept: &'static str,
        body: Vec<u8>,
        max: usize,
    ) -> FetchFuture<'a>;
    fn get<'a>(&'a self, url: &'a str, max: usize) -> FetchFuture<'a>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Good,
    Revoked,
    Undetermined,
}

/// A status and how long it may be believed.
#[derive(Debug, Clone, Copy)]
struct Found {
    status: Status,
    ttl: Duration,
}

struct CachedCrl {
    crl: Crl,
    ttl: Duration,
}

/// Per-entry lifetimes: each value carries its own.
struct OwnTtl;

impl Expiry<Thumbprint, Found> for OwnTtl {
    fn expire_after_create(&self, _: &Thumbprint, v: &Found, _: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
    fn expire_after_update(
        &self,
        _: &Thumbprint,
        v: &Found,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.ttl)
    }
}

impl Expiry<String, Arc<CachedCrl>> for OwnTtl {
    fn expire_after_create(&self, _: &String, v: &Arc<CachedCrl>, _: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
    fn expire_after_update(
        &self,
        _: &String,
        v: &Arc<CachedCrl>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.ttl)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
enum SourceError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("OCSP: {0}")]
    Ocsp(#[from] OcspError),
    #[error("CRL: {0}")]
    Crl(#[from] CrlError),
}

/// Everything one resolution needs, owned so it can run in its own task.
struct Job {
    hint: String,
    chain: Vec<CertificateDer<'static>>,
    issuer: CertificateDer<'static>,
    ocsp: Option<(String, OcspQuery)>,
    crl: Option<String>,
    now: u64,
    leaf: Thumbprint,
}

/// Checks leaf certificates of one certificate source for revocation.
pub struct Checker {
    settings: Settings,
    trust: Arc<TrustStore>,
    fetch: Arc<dyn Fetch>,
    statuses: Cache<Thumbprint, Found>,
    /// Leaves a verified answer said were revoked. Revocation does not end (RFC 5280 §5.3.1;
    /// a lifted `certificateHold` is the one exception, and staying denied is the safe side),
    /// so they stay denied after their status expires, whatever a later fetch does: an error,
    /// a timeout or a replayed older "good" must not let them through again.
    revoked: Cache<Thumbprint, ()>,
    crls: Cache<String, Arc<CachedCrl>>,
    observer: OnceLock<Arc<dyn Observer>>,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Checker {
    /// `trust` is the store the chains were verified with (CRLs are checked by re-verifying).
    pub fn new(settings: Settings, trust: Arc<TrustStore>, fetch: Arc<dyn Fetch>) -> Self {
        Self {
            statuses: Cache::builder()
                .max_capacity(MAX_CACHED_STATUSES)
                .expire_after(OwnTtl)
                .build(),
            revoked: Cache::new(MAX_REMEMBERED_REVOKED),
            crls: Cache::builder()
                .max_capacity(MAX_CACHED_CRL_BYTES)
                .weigher(|_, v: &Arc<CachedCrl>| u32::try_from(v.crl.size).unwrap_or(u32::MAX))
                .expire_after(OwnTtl)
                .build(),
            settings,
            trust,
            fetch,
            observer: OnceLock::new(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Reports consultations to `observer` from now on (set once, at start-up).
    pub fn observe(&self, observer: Arc<dyn Observer>) {
        let _ = self.observer.set(observer);
    }

    /// Decides for the leaf of `chain` (verified, with `issuer` from its path) at `now`.
    pub async fn check(
        self: &Arc<Self>,
        chain: &[CertificateDer<'static>],
        issuer: IssuerRef,
        thumbprint: &Thumbprint,
        now: u64,
    ) -> Result<(), RevocationError> {
        if self.settings.mode == Mode::Skip {
            return Ok(());
        }
        if self.revoked.contains_key(thumbprint) {
            return Err(RevocationError::Revoked);
        }
        let status = match self.statuses.get(thumbprint).await {
            Some(found) => found.status,
            None => self.lookup(chain, issuer, thumbprint, now).await,
        };
        self.settings.mode.decide(status)
    }

    async fn lookup(
        self: &Arc<Self>,
        chain: &[CertificateDer<'static>],
        issuer: IssuerRef,
        thumbprint: &Thumbprint,
        now: u64,
    ) -> Status {
        let job = match self.prepare(chain, issuer, thumbprint, now) {
            Ok(job) => job,
            Err(found) => {
                self.statuses.insert(*thumbprint, found).await;
                return found.status;
            }
        };
        let key = *thumbprint;
        let hint = job.hint.clone();
        let this = Arc::clone(self);
        // Spawned: the resolution must not be cancelled when this request stops waiting, so that
        // it completes and the next request finds the answer cached.
        let resolution = tokio::spawn(async move {
            let resolve = Arc::clone(&this).resolve(job);
            this.statuses.get_with(key, resolve).await
        });
        match tokio::time::timeout(self.settings.wait, resolution).await {
            Ok(Ok(found)) => found.status,
            Ok(Err(_)) => Status::Undetermined,
            Err(_) => {
                tracing::info!(
                    cert = %hint,
                    wait_ms = self.settings.wait.as_millis() as u64,
                    "revocation status not known in time; still fetching in the background"
                );
                Status::Undetermined
            }
        }
    }

    /// Reads what the certificate says about its revocation sources. `Err` is a final answer
    /// that needs no network (no URL, or a certificate this module cannot read).
    fn prepare(
        &self,
        chain: &[CertificateDer<'static>],
        issuer: IssuerRef,
        thumbprint: &Thumbprint,
        now: u64,
    ) -> Result<Job, Found> {
        let hint = hint(thumbprint);
        let unreadable = |why: &str| {
            tracing::warn!(cert = %hint, why, "revocation status cannot be checked");
            Found {
                status: Status::Undetermined,
                ttl: self.settings.cache_ttl,
            }
        };
        let (Some(leaf_der), Some(issuer_der)) =
            (chain.first(), self.trust.issuer_der(chain, issuer))
        else {
            return Err(unreadable("no issuer on the verified path"));
        };
        let Ok(leaf) = Certificate::from_der(leaf_der.as_ref()) else {
            return Err(unreadable("leaf is not strict DER"));
        };
        let ocsp_url = ocsp::responder_url(&leaf);
        let crl_url = crl::distribution_point(&leaf);
        if ocsp_url.is_none() && crl_url.is_none() {
            // A property of the certificate, not a failure: keep it as long as anything.
            return Err(Found {
                status: Status::Undetermined,
                ttl: self.settings.cache_ttl,
            });
        }
        let ocsp = match ocsp_url {
            Some(url) => {
                let query = Certificate::from_der(issuer_der.as_ref())
                    .map_err(|e| OcspError::Request(e.to_string()))
                    .and_then(|issuer| OcspQuery::new(&leaf, &issuer));
                match query {
                    Ok(q) => Some((url, q)),
                    Err(e) => {
                        tracing::warn!(cert = %hint, error = %e, "cannot ask OCSP");
                        None
                    }
                }
            }
            None => None,
        };
        Ok(Job {
            hint,
            chain: chain.to_vec(),
            issuer: issuer_der.clone().into_owned(),
            ocsp,
            crl: crl_url,
            now,
            leaf: *thumbprint,
        })
    }

    /// Every source in order until one gives a definite answer, bounded as a whole.
    async fn resolve(self: Arc<Self>, job: Job) -> Found {
        // Each request is bounded by http_timeout; the margin covers a CRL download another
        // resolution started.
        let budget = self.settings.http_timeout * 2 + Duration::from_secs(1);
        match tokio::time::timeout(budget, self.consult(&job)).await {
            Ok(found) => {
                if found.status == Status::Revoked {
                    self.revoked.insert(job.leaf, ()).await;
                }
                found
            }
            Err(_) => {
                tracing::warn!(cert = %job.hint, "revocation check timed out");
                self.undetermined()
            }
        }
    }

    async fn consult(&self, job: &Job) -> Found {
        if let Some((url, query)) = &job.ocsp {
            let answer = self.ask_ocsp(url, query, job).await;
            let result = match &answer {
                Ok(OcspStatus::Good { .. }) => CheckResult::Good,
                Ok(OcspStatus::Revoked) => CheckResult::Revoked,
                Ok(OcspStatus::Unknown) => CheckResult::Unknown,
                Err(_) => CheckResult::Error,
            };
            self.report(Method::Ocsp, result, url, job, answer.as_ref().err());
            match answer {
                Ok(OcspStatus::Good { next_update }) => {
                    return self.found(Status::Good, next_update, job.now)
                }
                Ok(OcspStatus::Revoked) => return self.found(Status::Revoked, None, job.now),
                Ok(OcspStatus::Unknown) | Err(_) => {}
            }
        }
        if let Some(url) = &job.crl {
            let answer = self.ask_crl(url, job).await;
            let result = match &answer {
                Ok((CrlStatus::Good, _)) => CheckResult::Good,
                Ok((CrlStatus::Revoked, _)) => CheckResult::Revoked,
                Ok((CrlStatus::NotCovered, _)) => CheckResult::Unknown,
                Err(_) => CheckResult::Error,
            };
            self.report(Method::Crl, result, url, job, answer.as_ref().err());
            match answer {
                Ok((CrlStatus::Good, next_update)) => {
                    return self.found(Status::Good, next_update, job.now)
                }
                Ok((CrlStatus::Revoked, _)) => return self.found(Status::Revoked, None, job.now),
                Ok((CrlStatus::NotCovered, _)) | Err(_) => {}
            }
        }
        self.undetermined()
    }

    async fn ask_ocsp(
        &self,
        url: &str,
        query: &OcspQuery,
        job: &Job,
    ) -> Result<OcspStatus, SourceError> {
        let body = self
            .fetch
            .post(
                url,
                "application/ocsp-request",
                "application/ocsp-response",
                query.body().to_vec(),
                ocsp::MAX_RESPONSE_BYTES,
            )
            .await?;
        Ok(query.check(&body, &job.issuer, job.now, self.settings.ocsp_max_age)?)
    }

    /// The CRL comes from its own cache, fetched once for all the certificates it covers.
    async fn ask_crl(&self, url: &str, job: &Job) -> Result<(CrlStatus, Option<u64>), SourceError> {
        let cap = self.settings.cache_ttl;
        let crl = self
            .crls
            .try_get_with(url.to_string(), async {
                let body = self.fetch.get(url, crl::MAX_CRL_BYTES).await?;
                let crl = Crl::parse(&body)?;
                let ttl = ttl_until(crl.next_update, job.now, cap);
                Ok::<_, SourceError>(Arc::new(CachedCrl { crl, ttl }))
            })
            .await
            .map_err(|e| (*e).clone())?;
        let status = crl.crl.check(&self.trust, &job.chain, job.now)?;
        Ok((status, crl.crl.next_update))
    }

    fn report(
        &self,
        method: Method,
        result: CheckResult,
        url: &str,
        job: &Job,
        error: Option<&SourceError>,
    ) {
        if let Some(o) = self.observer.get() {
            o.consulted(method, result);
        }
        match error {
            Some(e) => tracing::warn!(
                method = method.as_str(),
                url,
                cert = %job.hint,
                error = %e,
                "revocation source gave no answer"
            ),
            None => tracing::debug!(
                method = method.as_str(),
                url,
                cert = %job.hint,
                result = result.as_str(),
                "revocation status"
            ),
        }
    }

    fn found(&self, status: Status, next_update: Option<u64>, now: u64) -> Found {
        Found {
            status,
            ttl: ttl_until(next_update, now, self.settings.cache_ttl),
        }
    }

    fn undetermined(&self) -> Found {
        Found {
            status: Status::Undetermined,
            ttl: RETRY_AFTER_FAILURE.min(self.settings.cache_ttl),
        }
    }
}

/// `cap`, or less when `next_update` comes sooner.
fn ttl_until(next_update: Option<u64>, now: u64, cap: Duration) -> Duration {
    match next_update {
        Some(n) => cap.min(Duration::from_secs(n.saturating_sub(now))),
        None => cap,
    }
}

/// First 8 characters of the x5t#S256, as the deny log uses.
fn hint(t: &Thumbprint) -> String {
    use base64::Engine;
    let full = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t);
    full.chars().take(8).collect()
}

/// An http:// or https:// URI from a GeneralName; other schemes (LDAP, file) are never fetched.
fn http_uri(name: &GeneralName) -> Option<String> {
    match name {
        GeneralName::UniformResourceIdentifier(uri) => {
            let uri = uri.as_str();
            let scheme = uri.get(..8).unwrap_or(uri).to_ascii_lowercase();
            (scheme.starts_with("http://") || scheme.starts_with("https://"))
                .then(|| uri.to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{revoked_status, Ca, Leaf, OcspAnswer};
    use std::collections::HashMap;
    use std::sync::Mutex;
    use x509_ocsp::CertStatus;

    const NOW: u64 = 1_800_000_000;
    const OCSP: &str = "http://ocsp.test/";
    const CRL: &str = "http://crl.test/ca.crl";

    /// Answers from memory, after an optional delay, counting every request per URL.
    #[derive(Default)]
    struct FakeFetch {
        answers: Mutex<HashMap<String, Result<Vec<u8>, String>>>,
        delay: Mutex<Duration>,
        hits: Mutex<HashMap<String, usize>>,
    }

    impl FakeFetch {
        fn answer(&self, url: &str, body: Result<Vec<u8>, &str>) {
            self.answers
                .lock()
                .unwrap()
                .insert(url.into(), body.map_err(str::to_string));
        }
        fn hits(&self, url: &str) -> usize {
            self.hits.lock().unwrap().get(url).copied().unwrap_or(0)
        }
        fn respond<'a>(&'a self, url: &'a str) -> FetchFuture<'a> {
            *self.hits.lock().unwrap().entry(url.into()).or_default() += 1;
            let delay = *self.delay.lock().unwrap();
            let answer = self.answers.lock().unwrap().get(url).cloned();
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                answer
                    .unwrap_or_else(|| Err("connection refused".into()))
                    .map_err(|reason| FetchError {
                        url: url.into(),
                        reason,
                    })
            })
        }
    }

    impl Fetch for FakeFetch {
        fn post<'a>(
            &'a self,
            url: &'a str,
            content_type: &'static str,
            _: &'static str,
            body: Vec<u8>,
            _: usize,
        ) -> FetchFuture<'a> {
            assert_eq!(content_type, "application/ocsp-request");
            assert!(x509_ocsp::OcspRequest::from_der(&body).is_ok());
            self.respond(url)
        }
        fn get<'a>(&'a self, url: &'a str, _: usize) -> FetchFuture<'a> {
            self.respond(url)
        }
    }

    #[derive(Default)]
    struct Seen(Mutex<Vec<(Method, CheckResult)>>);

    impl Observer for Seen {
        fn consulted(&self, method: Method, result: CheckResult) {
            self.0.lock().unwrap().push((method, result));
        }
    }

    struct World {
        ca: Ca,
        trust: Arc<TrustStore>,
        fetch: Arc<FakeFetch>,
    }

    impl World {
        fn new() -> Self {
            let ca = Ca::root("revocation test CA").unwrap();
            let trust = Arc::new(TrustStore::from_der(vec![ca.der.clone()], false).unwrap());
            Self {
                ca,
                trust,
                fetch: Arc::new(FakeFetch::default()),
            }
        }

        fn leaf(&self, cn: &str, ocsp: Option<&str>, crl: Option<&str>) -> Leaf {
            self.ca
                .client_with_urls(cn, NOW - 3600, NOW + 86_400, ocsp, crl)
                .unwrap()
        }

        fn checker(&self, mode: Mode, wait: Duration) -> (Arc<Checker>, Arc<Seen>) {
            self.checker_keeping(mode, wait, Duration::from_secs(60))
        }

        /// A checker whose statuses are kept `cache_ttl`.
        fn checker_keeping(
            &self,
            mode: Mode,
            wait: Duration,
            cache_ttl: Duration,
        ) -> (Arc<Checker>, Arc<Seen>) {
            let settings = Settings {
                mode,
                cache_ttl,
                http_timeout: Duration::from_secs(2),
                wait,
                ocsp_max_age: Duration::from_secs(3600),
            };
            let c = Arc::new(Checker::new(
                settings,
                self.trust.clone(),
                self.fetch.clone(),
            ));
            let seen = Arc::new(Seen::default());
            c.observe(seen.clone());
            (c, seen)
        }

        fn ocsp(&self, leaf: &Leaf, status: CertStatus) -> Vec<u8> {
            OcspAnswer::new(&self.ca, leaf, status, NOW - 60)
                .der()
                .unwrap()
        }
    }

    async fn check(
        c: &Arc<Checker>,
        trust: &TrustStore,
        leaf: &Leaf,
    ) -> Result<(), RevocationError> {
        check_der(c, trust, &leaf.der).await
    }

    async fn check_der(
        c: &Arc<Checker>,
        trust: &TrustStore,
        leaf: &CertificateDer<'static>,
    ) -> Result<(), RevocationError> {
        let chain = vec![leaf.clone()];
        let issuer = trust.verify_path(&chain, NOW).unwrap();
        c.check(&chain, issuer, &crate::cert::thumbprint(leaf.as_ref()), NOW)
            .await
    }

    const WAIT: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn a_good_ocsp_answer_passes_and_is_cached() {
        let w = World::new();
        let alice = w.leaf("alice", Some(OCSP), None);
        w.fetch.answer(OCSP, Ok(w.ocsp(&alice, CertStatus::good())));
        for mode in [Mode::IgnoreCaError, Mode::Strict] {
            let (c, seen) = w.checker(mode, WAIT);
            let before = w.fetch.hits(OCSP);
            assert_eq!(check(&c, &w.trust, &alice).await, Ok(()));
            assert_eq!(check(&c, &w.trust, &alice).await, Ok(()));
            assert_eq!(
                w.fetch.hits(OCSP),
                before + 1,
                "second check is a cache hit"
            );
            assert_eq!(
                *seen.0.lock().unwrap(),
                vec![(Method::Ocsp, CheckResult::Good)]
            );
        }
    }

    #[tokio::test]
    async fn a_revoked_answer_denies_in_every_checking_mode() {
        let w = World::new();
        let alice = w.leaf("alice", Some(OCSP), None);
        w.fetch
            .answer(OCSP, Ok(w.ocsp(&alice, revoked_status(NOW - 600).unwrap())));
        for mode in [Mode::IgnoreCaError, Mode::Strict] {
            let (c, _) = w.checker(mode, WAIT);
            assert_eq!(
                check(&c, &w.trust, &alice).await,
                Err(RevocationError::Revoked)
            );
        }
    }

    #[tokio::test]
    async fn without_any_url_strict_denies_and_ignore_ca_error_allows_without_fetching() {
        let w = World::new();
        let plain = w.ca.client("plain", NOW - 3600, NOW + 86_400).unwrap();
        let (strict, _) = w.checker(Mode::Strict, WAIT);
        let (lenient, _) = w.checker(Mode::IgnoreCaError, WAIT);
        assert_eq!(
            check(&strict, &w.trust, &plain).await,
            Err(RevocationError::Unknown)
        );
        assert_eq!(check(&lenient, &w.trust, &plain).await, Ok(()));
        assert!(w.fetch.hits.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn skip_never_looks() {
        let w = World::new();
        let alice = w.leaf("alice", Some(OCSP), Some(CRL));
        let (c, _) = w.checker(Mode::Skip, WAIT);
        assert_eq!(check(&c, &w.trust, &alice).await, Ok(()));
        assert!(w.fetch.hits.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_responder_that_is_down_is_an_error_strict_denies_and_ignore_ca_error_allows() {
        let w = World::new();
        let alice = w.leaf("alice", Some(OCSP), None);
        let (strict, seen) = w.checker(Mode::Strict, WAIT);
        let (lenient, _) = w.checker(Mode::IgnoreCaError, WAIT);
        assert_eq!(
            check(&strict, &w.trust, &alice).await,
            Err(RevocationError::Unknown)
        );
        assert_eq!(check(&lenient, &w.trust, &alice).await, Ok(()));
        assert_eq!(
            *seen.0.lock().unwrap(),
            vec![(Method::Ocsp, CheckResult::Error)]
        );
        // A garbage answer and a forged one are errors too, never a "good".
        let w = World::new();
        let alice = w.leaf("alice", Some(OCSP), None);
        let forger = Ca::root("forger").unwrap();
        w.fetch.answer(
            OCSP,
            Ok(OcspAnswer::new(&w.ca, &alice, CertStatus::good(), NOW - 60)
                .signer(crate::fixtures::OcspSigner::Other(&forger))
                .der()
                .unwrap()),
        );
        let (strict, seen) = w.checker(Mode::Strict, WAIT);
        assert_eq!(
            check(&strict, &w.trust, &alice).await,
            Err(RevocationError::Unknown)
        );
        assert_eq!(
            *seen.0.lock().unwrap(),
            vec![(Method::Ocsp, CheckResult::Error)]
        );
    }

    #[tokio::test]
    async fn ocsp_unknown_falls_back_to_the_crl() {
        let w = World::new();
        let alice = w.leaf("alice", Some(OCSP), Some(CRL));
        w.fetch
            .answer(OCSP, Ok(w.ocsp(&alice, CertStatus::unknown())));
        w.fetch
            .answer(CRL, Ok(w.ca.crl(&[&alice], NOW - 60, NOW + 3600).unwrap()));
        let (c, seen) = w.checker(Mode::IgnoreCaError, WAIT);
        assert_eq!(
            check(&c, &w.trust, &alice).await,
            Err(RevocationError::Revoked)
        );
        assert_eq!(
            *seen.0.lock().unwrap(),
            vec![
                (Method::Ocsp, CheckResult::Unknown),
                (Method::Crl, CheckResult::Revoked)
            ]
        );
    }

    #[tokio::test]
    async fn a_definite_ocsp_answer_makes_the_crl_unnecessary() {
        let w = World::new();
        let alice = w.leaf("alice", Some(OCSP), Some(CRL));
        w.fetch.answer(OCSP, Ok(w.ocsp(&alice, CertStatus::good())));
        let (c, _) = w.checker(Mode::Strict, WAIT);
        assert_eq!(check(&c, &w.trust, &alice).await, Ok(()));
        assert_eq!(w.fetch.hits(CRL), 0);
    }

    #[tokio::test]
    async fn one_crl_download_serves_every_certificate_it_covers() {
        let w = World::new();
        let alice = w.leaf("alice", None, Some(CRL));
        let bob = w.leaf("bob", None, Some(CRL));
        w.fetch
            .answer(CRL, Ok(w.ca.crl(&[&bob], NOW - 60, NOW + 3600).unwrap()));
        let (c, _) = w.checker(Mode::Strict, WAIT);
        assert_eq!(check(&c, &w.trust, &alice).await, Ok(()));
        assert_eq!(
            check(&c, &w.trust, &bob).await,
            Err(RevocationError::Revoked)
        );
        assert_eq!(w.fetch.hits(CRL), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_checks_of_one_certificate_fetch_once() {
        let w = World::new();
        let alice = w.leaf("alice", Some(OCSP), None);
        w.fetch.answer(OCSP, Ok(w.ocsp(&alice, CertStatus::good())));
        *w.fetch.delay.lock().unwrap() = Duration::from_millis(200);
        let (c, seen) = w.checker(Mode::Strict, WAIT);
        let checks: Vec<_> = (0..20)
            .map(|_| {
                let (c, trust, der) = (c.clone(), w.trust.clone(), alice.der.clone());
                tokio::spawn(async move { check_der(&c, &trust, &der).await })
            })
            .collect();
        let mut results = Vec::new();
        for h in checks {
            results.push(h.await.unwrap());
        }
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        assert_eq!(w.fetch.hits(OCSP), 1);
        assert_eq!(seen.0.lock().unwrap().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_responder_bounds_the_wait_and_the_answer_lands_in_the_cache() {
        let w = World::new();
        let alice = w.leaf("alice", Some(OCSP), None);
        w.fetch
            .answer(OCSP, Ok(w.ocsp(&alice, revoked_status(NOW - 600).unwrap())));
        *w.fetch.delay.lock().unwrap() = Duration::from_millis(400);
        let (c, _) = w.checker(Mode::IgnoreCaError, Duration::from_millis(50));
        let started = Instant::now();
        // Not known in time: IGNORE_CA_ERROR lets this one request through.
        assert_eq!(check(&c, &w.trust, &alice).await, Ok(()));
        assert!(
            started.elapsed() < Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
        // The fetch went on without the request; once it lands the answer is cached.
        let mut answer = Ok(());
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            answer = check(&c, &w.trust, &alice).await;
            if answer.is_err() {
                break;
            }
        }
        assert_eq!(answer, Err(RevocationError::Revoked));
        assert_eq!(
            w.fetch.hits(OCSP),
            1,
            "waiting requests joined the one fetch"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revoked_answer_landing_within_the_wait_denies_every_waiting_check_in_every_mode() {
        let w = World::new();
        let bob = w.leaf("bob", Some(OCSP), None);
        w.fetch
            .answer(OCSP, Ok(w.ocsp(&bob, revoked_status(NOW - 600).unwrap())));
        // Slow, but within revocation_wait: the answer decides, nothing falls open.
        *w.fetch.delay.lock().unwrap() = Duration::from_millis(300);
        for mode in [Mode::IgnoreCaError, Mode::Strict] {
            let (c, _) = w.checker(mode, Duration::from_secs(5));
            let checks: Vec<_> = (0..8)
                .map(|_| {
                    let (c, trust, der) = (c.clone(), w.trust.clone(), bob.der.clone());
                    tokio::spawn(async move { check_der(&c, &trust, &der).await })
                })
                .collect();
            for h in checks {
                assert_eq!(h.await.unwrap(), Err(RevocationError::Revoked), "{mode:?}");
            }
        }
        assert_eq!(w.fetch.hits(OCSP), 2, "one fetch per checker");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_certificate_seen_revoked_stays_revoked_when_its_status_expires_and_the_responder_fails(
    ) {
        let w = World::new();
        let bob = w.leaf("bob", Some(OCSP), None);
        w.fetch
            .answer(OCSP, Ok(w.ocsp(&bob, revoked_status(NOW - 600).unwrap())));
        let ttl = Duration::from_millis(50);
        let (c, _) = w.checker_keeping(Mode::IgnoreCaError, Duration::from_millis(200), ttl);
        assert_eq!(
            check(&c, &w.trust, &bob).await,
            Err(RevocationError::Revoked)
        );
        // The cached status expires; then the responder is down (or blocked by whoever wants
        // the revoked certificate through), or too slow for the wait.
        tokio::time::sleep(ttl * 3).await;
        w.fetch.answer(OCSP, Err("connection refused"));
        assert_eq!(
            check(&c, &w.trust, &bob).await,
            Err(RevocationError::Revoked)
        );
        tokio::time::sleep(ttl * 3).await;
        w.fetch.answer(OCSP, Ok(w.ocsp(&bob, CertStatus::good())));
        *w.fetch.delay.lock().unwrap() = Duration::from_secs(1);
        assert_eq!(
            check(&c, &w.trust, &bob).await,
            Err(RevocationError::Revoked)
        );
    }

    #[test]
    fn a_status_is_kept_no_longer_than_the_answer_is_fresh() {
        let cap = Duration::from_secs(60);
        assert_eq!(ttl_until(None, NOW, cap), cap);
        assert_eq!(ttl_until(Some(NOW + 10), NOW, cap), Duration::from_secs(10));
        assert_eq!(ttl_until(Some(NOW + 3600), NOW, cap), cap);
        assert_eq!(ttl_until(Some(NOW - 10), NOW, cap), Duration::ZERO);
    }

    #[test]
    fn modes_parse_in_kongs_spelling_or_lower_case_only() {
        let parse = |s: &str| s.parse::<Mode>().ok();
        assert_eq!(parse("IGNORE_CA_ERROR"), Some(Mode::IgnoreCaError));
        assert_eq!(parse("strict"), Some(Mode::Strict));
        assert_eq!(parse("Skip"), None);
        assert_eq!(parse("ignore"), None);
        for (m, name) in Mode::ALL.into_iter().zip(Mode::NAMES) {
            assert_eq!(name.parse(), Ok(m));
            assert_eq!(name.to_ascii_lowercase().parse(), Ok(m));
        }
        assert_eq!(
            "Skip".parse::<Mode>().unwrap_err().to_string(),
            "`Skip` is not one of SKIP, IGNORE_CA_ERROR, STRICT"
        );
    }
}
