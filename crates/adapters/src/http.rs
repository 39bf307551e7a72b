//! Outbound HTTP shared by the adapters: the one client builder (IdP and OCSP/CRL clients are
//! all made by `client`), bounded body reads, readable error chains, and the fetcher of OCSP
//! answers and CRLs the core's revocation checker calls.
//!
//! Guarantees: no body larger than the caller's cap is ever held in memory; every request has a
//! timeout; TLS certificate verification is only off when configured off.

use std::time::Duration;

use rustls_pki_types::CertificateDer;

use certbound_core::revocation::{Fetch, FetchError, FetchFuture};

/// How to reach the IdP over HTTPS (discovery, keys, introspection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpClient {
    /// Extra roots (`idp_ca_certificates`) on top of the system's.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// `ssl_verify`: verify the IdP's certificate. Off only for throw-away setups.
    pub verify_tls: bool,
    pub timeout: Duration,
    /// `allow_insecure_http_for_tests`: `http://` issuer, `jwks_uri` and introspection
    /// endpoint are accepted. Never in production: anyone on the path could supply the keys.
    pub allow_insecure_http: bool,
}

impl IdpClient {
    /// The client for the IdP's discovery documents and keys: system roots plus
    /// `idp_ca_certificates`, redirects only to https, and https only unless
    /// `allow_insecure_http_for_tests`.
    pub fn keys_client(&self) -> Result<reqwest::Client, String> {
        self.client(Redirects::HttpsOnly)
    }

    /// The client for the introspection endpoint: as [`IdpClient::keys_client`], but it follows
    /// no redirect, so the token and the client credentials go to the configured or discovered
    /// endpoint only (a 307/308 would re-send them, body and all, to wherever it points).
    pub fn introspection_client(&self) -> Result<reqwest::Client, String> {
        self.client(Redirects::Never)
    }

    fn client(&self, redirects: Redirects) -> Result<reqwest::Client, String> {
        client(
            self.timeout,
            self.verify_tls,
            &self.extra_roots,
            redirects,
            !self.allow_insecure_http,
        )
    }
}

/// Which redirects a client follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirects {
    /// None: a 3xx answer is an error. For requests that carry credentials (introspection), so
    /// a redirect can never send them, nor the token, anywhere else.
    Never,
    /// Up to three, each to an `https://` URL: an https request is never downgraded to
    /// plain http by a redirect (the IdP's keys and documents).
    HttpsOnly,
    /// Up to three, to any http(s) URL: OCSP answers and CRLs, which are signed objects and
    /// usually served over plain http.
    Any,
}

const MAX_REDIRECTS: usize = 3;

impl Redirects {
    fn policy(self) -> reqwest::redirect::Policy {
        match self {
            Self::Never => reqwest::redirect::Policy::none(),
            Self::Any => reqwest::redirect::Policy::limited(MAX_REDIRECTS),
            Self::HttpsOnly => reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() > MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if attempt.url().scheme() != "https" {
                    attempt.error("refusing a redirect to a URL that is not https")
                } else {
                    attempt.follow()
                }
            }),
        }
    }
}

/// An outbound client with certbound's common settings: `timeout` bounds connect and the whole
/// request, `redirects` says which redirects are followed, `extra_roots` on top of the system
/// roots, and certificate verification off only when `verify_tls` (Kong's `ssl_verify`) is
/// false. `https_only` refuses every request, redirects included, to a URL that is not https.
pub fn client(
    timeout: Duration,
    verify_tls: bool,
    extra_roots: &[CertificateDer<'static>],
    redirects: Redirects,
    https_only: bool,
) -> Result<reqwest::Client, String> {
    let roots = extra_roots
        .iter()
        .map(|der| reqwest::Certificate::from_der(der.as_ref()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error_chain(&e))?;
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(redirects.policy())
        .https_only(https_only)
        .user_agent(concat!("certbound/", env!("CARGO_PKG_VERSION")));
    if !roots.is_empty() {
        builder = builder.tls_certs_merge(roots);
    }
    if !verify_tls {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| error_chain(&e))
}

/// Reads `resp`'s body, refusing it as soon as it exceeds `max` bytes (before reading it when
/// the server announces the length). Non-2xx answers are errors.
pub async fn read_capped(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(format!("body larger than {max} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| error_chain(&e))? {
        if body.len() + chunk.len() > max {
            return Err(format!("body larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error with its sources, for logs (reqwest's own `Display` hides the cause).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// Fetches OCSP answers and CRLs over plain HTTP (the usual case: both are signed objects) or
/// HTTPS, where `ssl_verify` decides whether the server certificate is verified against the
/// system roots.
pub struct RevocationFetcher {
    client: reqwest::Client,
}

impl RevocationFetcher {
    /// `timeout` bounds each whole request (Kong's `http_timeout`).
    pub fn new(timeout: Duration, verify_tls: bool) -> Result<Self, String> {
        client(timeout, verify_tls, &[], Redirects::Any, false).map(|client| Self { client })
    }

    async fn send(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
        max: usize,
    ) -> Result<Vec<u8>, FetchError> {
        let err = |reason: String| FetchError {
            url: url.to_string(),
            reason,
        };
        let resp = request.send().await.map_err(|e| err(error_chain(&e)))?;
        read_capped(resp, max).await.map_err(err)
    }
}

impl Fetch for RevocationFetcher {
    fn post<'a>(
        &'a self,
        url: &'a str,
        content_type: &'static str,
        accept: &'static str,
        body: Vec<u8>,
        max: usize,
    ) -> FetchFuture<'a> {
        let request = self
            .client
            .post(url)
            .header("content-type", content_type)
            .header("accept", accept)
            .body(body);
        Box::pin(self.send(url, request, max))
    }

    fn get<'a>(&'a self, url: &'a str, max: usize) -> FetchFuture<'a> {
        Box::pin(self.send(url, self.client.get(url), max))
    }
}
