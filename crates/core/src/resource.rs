//! RFC 9728 protected-resource metadata: the resource identifier a policy protects, the URL its
//! metadata is published at (§3.1), and the document itself (§2), generated once from the
//! configuration.
//!
//! Trusts only the configuration. A `Resource` holds nothing but printable ASCII without `"`,
//! `\` or spaces, so its URL can be written into a quoted challenge parameter as it is.

/// The well-known path segment of RFC 9728 §3.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// Why a configured resource identifier was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("is not an https URL (RFC 9728 §1.2)")]
    NotHttps,
    #[error("has no host")]
    NoHost,
    #[error("has a fragment, which a resource identifier must not have (RFC 9728 §1.2)")]
    Fragment,
    #[error("has a query; certbound publishes metadata only for identifiers without one")]
    Query,
    #[error("has user information before the host")]
    UserInfo,
    #[error("contains a space, a quote, a backslash or a character outside printable ASCII")]
    Character,
}

/// An `https` resource identifier, split into what the metadata URL is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// As configured: the document's `resource` member, which clients compare.
    identifier: String,
    /// `host[:port]`, lower case.
    authority: String,
    /// Empty or starting with `/`.
    path: String,
}

impl std::str::FromStr for Resource {
    type Err = ResourceError;

    fn from_str(s: &str) -> Result<Self, ResourceError> {
        if !s
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            return Err(ResourceError::Character);
        }
        let rest = match s.get(..8) {
            Some(scheme) if scheme.eq_ignore_ascii_case("https://") => &s[8..],
            _ => return Err(ResourceError::NotHttps),
        };
        if rest.contains('#') {
            return Err(ResourceError::Fragment);
        }
        if rest.contains('?') {
            return Err(ResourceError::Query);
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.contains('@') {
            return Err(ResourceError::UserInfo);
        }
        if authority.is_empty() || authority.starts_with(':') {
            return Err(ResourceError::NoHost);
        }
        Ok(Resource {
            identifier: s.to_string(),
            authority: authority.to_ascii_lowercase(),
            path: path.to_string(),
        })
    }
}

impl Resource {
    pub fn identifier(&self) -> &str {
        &self.identifier
    }

    /// The path the metadata is served at: the well-known segment inserted between the host
    /// and the identifier's path (§3.1), which keeps a trailing `/`; a root identifier has no
    /// suffix.
    pub fn metadata_path(&self) -> String {
        match self.path.as_str() {
            "" | "/" => WELL_KNOWN.to_string(),
            p => format!("{WELL_KNOWN}{p}"),
        }
    }

    /// The metadata URL clients are pointed at (`resource_metadata`, §5.1).
    pub fn metadata_url(&self) -> String {
        format!("https://{}{}", self.authority, self.metadata_path())
    }

    /// Whether a request's `:authority` names this resource's host (a default `:443` on either
    /// side is the same authority).
    pub fn has_authority(&self, authority: &str) -> bool {
        let strip = |a: &str| -> String {
            let a = a.to_ascii_lowercase();
            match a.strip_suffix(":443") {
                Some(h) => h.to_string(),
                None => a,
            }
        };
        strip(&self.authority) == strip(authority)
    }
}

/// What a policy tells clients about itself (the members RFC 9728 §2 defines that certbound
/// knows from its configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts<'a> {
    pub issuer: &'a str,
    /// `proof_of_possession_mtls` is `strict` or `optional`.
    pub mtls_bound: bool,
    /// `proof_of_possession_dpop` is `strict`.
    pub dpop_required: bool,
    /// The DPoP algorithms, when DPoP is on.
    pub dpop_algs: Option<Vec<String>>,
    /// `scopes_required`, every alternative.
    pub scopes: &'a [Vec<String>],
}

/// One policy's published metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub resource: Resource,
    /// `resource.metadata_path()`, kept for the per-request comparison.
    pub path: String,
    /// `resource.metadata_url()`, written into every challenge.
    pub url: String,
    /// The JSON document.
    pub document: String,
}

impl Metadata {
    pub fn new(resource: Resource, facts: &Facts<'_>) -> Self {
        Metadata {
            path: resource.metadata_path(),
            url: resource.metadata_url(),
            document: document(&resource, facts),
            resource,
        }
    }
}

/// The RFC 9728 §2 document: the issuer as the one authorization server, the binding methods,
/// and every scope `scopes_required` names (first seen first).
fn document(resource: &Resource, facts: &Facts<'_>) -> String {
    let mut doc = serde_json::Map::new();
    doc.insert("resource".into(), resource.identifier.clone().into());
    doc.insert("authorization_servers".into(), vec![facts.issuer].into());
    doc.insert("bearer_methods_supported".into(), vec!["header"].into());
    doc.insert(
        "tls_client_certificate_bound_access_tokens".into(),
        facts.mtls_bound.into(),
    );
    doc.insert(
        "dpop_bound_access_tokens_required".into(),
        facts.dpop_required.into(),
    );
    if let Some(algs) = &facts.dpop_algs {
        doc.insert(
            "dpop_signing_alg_values_supported".into(),
            algs.clone().into(),
        );
    }
    let mut scopes: Vec<&str> = Vec::new();
    for s in facts.scopes.iter().flatten() {
        if !scopes.contains(&s.as_str()) {
            scopes.push(s);
        }
    }
    if !scopes.is_empty() {
        doc.insert("scopes_supported".into(), scopes.into());
    }
    serde_json::Value::Object(doc).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Resource {
        s.parse().unwrap()
    }

    #[test]
    fn metadata_url_inserts_the_well_known_segment_between_host_and_path() {
        let cases = [
            (
                "https://api.example.com",
                "https://api.example.com/.well-known/oauth-protected-resource",
            ),
            (
                "https://api.example.com/",
                "https://api.example.com/.well-known/oauth-protected-resource",
            ),
            (
                "https://API.example.com:8443/v1/orders",
                "https://api.example.com:8443/.well-known/oauth-protected-resource/v1/orders",
            ),
            (
                "https://api.example.com/v1/",
                "https://api.example.com/.well-known/oauth-protected-resource/v1/",
            ),
        ];
        for (resource, url) in cases {
            assert_eq!(r(resource).metadata_url(), url, "{resource}");
        }
        assert_eq!(
            r("https://api.example.com/mcp").metadata_path(),
            "/.well-known/oauth-protected-resource/mcp"
        );
    }

    #[test]
    fn only_https_identifiers_without_fragment_query_or_unsafe_characters_parse() {
        let cases = [
            ("http://api.example.com", ResourceError::NotHttps),
            ("api.example.com", ResourceError::NotHttps),
            ("https://api.example.com/#x", ResourceError::Fragment),
            ("https://api.example.com/?a=b", ResourceError::Query),
            ("https://", ResourceError::NoHost),
            ("https:///path", ResourceError::NoHost),
            ("https://user@api.example.com", ResourceError::UserInfo),
            ("https://api.example.com/a\"b", ResourceError::Character),
            ("https://api.example.com/a b", ResourceError::Character),
            ("https://api.example.com/a\\b", ResourceError::Character),
            ("https://api.example.com/é", ResourceError::Character),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<Resource>(), Err(want), "{s}");
        }
        assert_eq!(
            r("HTTPS://api.example.com").identifier(),
            "HTTPS://api.example.com"
        );
    }

    #[test]
    fn authority_matches_case_insensitively_and_with_the_default_port() {
        let res = r("https://api.example.com/v1");
        assert!(res.has_authority("API.example.com"));
        assert!(res.has_authority("api.example.com:443"));
        assert!(!res.has_authority("api.example.com:8443"));
        assert!(!res.has_authority("other.example.com"));
        assert!(r("https://api.example.com:443").has_authority("api.example.com"));
    }

    fn doc(facts: &Facts<'_>) -> serde_json::Value {
        let m = Metadata::new(r("https://api.example.com/v1"), facts);
        serde_json::from_str(&m.document).unwrap()
    }

    #[test]
    fn document_of_a_certificate_bound_policy_names_the_issuer_and_the_scopes_once() {
        let scopes = vec![
            vec!["read".to_string(), "write".to_string()],
            vec!["admin".to_string(), "read".to_string()],
        ];
        let d = doc(&Facts {
            issuer: "https://idp.example.com",
            mtls_bound: true,
            dpop_required: false,
            dpop_algs: None,
            scopes: &scopes,
        });
        assert_eq!(
            d,
            serde_json::json!({
                "resource": "https://api.example.com/v1",
                "authorization_servers": ["https://idp.example.com"],
                "bearer_methods_supported": ["header"],
                "tls_client_certificate_bound_access_tokens": true,
                "dpop_bound_access_tokens_required": false,
                "scopes_supported": ["read", "write", "admin"],
            })
        );
    }

    #[test]
    fn document_of_a_dpop_policy_lists_its_algorithms_and_no_scopes_when_none_are_required() {
        let d = doc(&Facts {
            issuer: "https://idp.example.com/",
            mtls_bound: false,
            dpop_required: true,
            dpop_algs: Some(vec!["ES256".into(), "EdDSA".into()]),
            scopes: &[],
        });
        assert_eq!(d["dpop_bound_access_tokens_required"], true);
        assert_eq!(d["tls_client_certificate_bound_access_tokens"], false);
        assert_eq!(
            d["dpop_signing_alg_values_supported"],
            serde_json::json!(["ES256", "EdDSA"])
        );
        assert_eq!(
            d["authorization_servers"],
            serde_json::json!(["https://idp.example.com/"])
        );
        assert!(d.get("scopes_supported").is_none());
    }
}
