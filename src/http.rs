//! Outbound HTTP shared by the adapters: bounded body reads and readable error chains (used by
//! `jwks`), and the client that fetches OCSP answers and CRLs for `revocation`.
//!
//! Guarantees: no body larger than the caller's cap is ever held in memory; every request has a
//! timeout; TLS certificate verification is only off when configured off.

use std::time::Duration;

use rustls_pki_types::CertificateDer;

use crate::revocation::{Fetch, FetchError, FetchFuture};

/// An outbound client with certbound's common settings: `timeout` bounds connect and the whole
/// request, at most three redirects, `extra_roots` on top of the system roots, and certificate
/// verification off only when `verify_tls` (Kong's `ssl_verify`) is false.
pub fn client(
    timeout: Duration,
    verify_tls: bool,
    extra_roots: &[CertificateDer<'static>],
) -> Result<reqwest::Client, String> {
    let roots = extra_roots
        .iter()
        .map(|der| reqwest::Certificate::from_der(der.as_ref()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error_chain(&e))?;
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::limited(3))
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
        client(timeout, verify_tls, &[]).map(|client| Self { client })
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
