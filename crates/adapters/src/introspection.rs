//! RFC 7662 introspection over HTTPS: the endpoint from configuration or discovery, client
//! authentication, one bounded POST per call. The core's `Introspector` judges and caches the
//! answers.
//!
//! Guarantees: the token and the client credentials go only to the configured endpoint or the
//! one the issuer's own discovery document names (never to a plain-http URL for an https
//! issuer); no redirect is followed; bodies are capped.

use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use certbound_core::introspection::{
    ClientAuth, Introspect, IntrospectError, IntrospectFuture, Settings,
};

use super::jwks::{discovery_url, no_downgrade, send_capped};

/// Largest introspection response read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

struct Endpoint {
    url: String,
    auth: ClientAuth,
}

#[derive(serde::Deserialize)]
struct Discovery {
    issuer: String,
    introspection_endpoint: Option<String>,
    #[serde(default)]
    introspection_endpoint_auth_methods_supported: Vec<String>,
}

/// One policy's introspection endpoint, reached with `client` (which must follow no redirect:
/// see `http::Redirects::Never`).
pub struct HttpIntrospection {
    settings: Settings,
    client: reqwest::Client,
    endpoint: OnceCell<Endpoint>,
}

impl HttpIntrospection {
    pub fn new(settings: Settings, client: reqwest::Client) -> Self {
        Self {
            settings,
            client,
            endpoint: OnceCell::new(),
        }
    }

    async fn call(&self, token: &str) -> Result<Map<String, Value>, IntrospectError> {
        let endpoint = self
            .endpoint
            .get_or_try_init(|| self.resolve_endpoint())
            .await?;
        let mut form = vec![("token", token), ("token_type_hint", "access_token")];
        let mut req = self
            .client
            .post(&endpoint.url)
            .header("accept", "application/json");
        match endpoint.auth {
            // RFC 6749 §2.3.1: the credentials are form-urlencoded before base64.
            ClientAuth::Basic => {
                let enc = |s: &str| {
                    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                        .to_string()
                };
                req = req.basic_auth(
                    enc(&self.settings.client_id),
                    Some(enc(&self.settings.client_secret)),
                );
            }
            ClientAuth::Post => {
                form.push(("client_id", &self.settings.client_id));
                form.push(("client_secret", &self.settings.client_secret));
            }
        }
        let body = send_capped(req.form(&form), &endpoint.url, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| IntrospectError::Unavailable(e.to_string()))?;
        serde_json::from_slice(&body)
            .map_err(|e| IntrospectError::Unavailable(format!("not a JSON object: {e}")))
    }

    async fn resolve_endpoint(&self) -> Result<Endpoint, IntrospectError> {
        if let (Some(url), Some(auth)) = (&self.settings.endpoint, self.settings.auth) {
            return Ok(Endpoint {
                url: url.clone(),
                auth,
            });
        }
        let url = discovery_url(&self.settings.issuer);
        let body = send_capped(self.client.get(&url), &url, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| IntrospectError::Unavailable(e.to_string()))?;
        let doc: Discovery = serde_json::from_slice(&body)
            .map_err(|e| IntrospectError::Unavailable(format!("discovery: {e}")))?;
        if doc.issuer != self.settings.issuer {
            return Err(IntrospectError::Unavailable(format!(
                "discovery says issuer `{}`, expected `{}`",
                doc.issuer, self.settings.issuer
            )));
        }
        let url = match (&self.settings.endpoint, doc.introspection_endpoint) {
            (Some(configured), _) => configured.clone(),
            (None, Some(found)) => found,
            (None, None) => {
                return Err(IntrospectError::Unavailable(
                    "the IdP advertises no introspection_endpoint".into(),
                ))
            }
        };
        no_downgrade(&self.settings.issuer, &url).map_err(|reason| {
            IntrospectError::Unavailable(format!("discovery's introspection_endpoint: {reason}"))
        })?;
        let advertised = |m: &str| {
            doc.introspection_endpoint_auth_methods_supported
                .iter()
                .any(|a| a == m)
        };
        let auth = self.settings.auth.unwrap_or(
            if !advertised("client_secret_basic") && advertised("client_secret_post") {
                ClientAuth::Post
            } else {
                ClientAuth::Basic
            },
        );
        Ok(Endpoint { url, auth })
    }
}

impl Introspect for HttpIntrospection {
    fn introspect<'a>(&'a self, token: &'a str) -> IntrospectFuture<'a> {
        Box::pin(self.call(token))
    }
}
