//! SPIFFE IDs (`spiffe://<trust domain>/<path>`) and the patterns `allowed_spiffe_ids` lists.
//!
//! A mesh peer's ID arrives as an XFCC `URI` value, which Envoy copies from the certificate
//! without quoting or escaping. Before it is compared it must be a valid SPIFFE ID as the SPIFFE
//! standard defines one (trust domain of `[a-z0-9.-_]`, path segments of `[A-Za-z0-9.-_]`, no
//! empty, `.` or `..` segment, no trailing `/`, no percent-encoding, query or fragment, at most
//! 2048 bytes), so that a pattern ending in `/` can only ever match whole segments: the pattern
//! `spiffe://td/ns/shop/` matches `spiffe://td/ns/shop/sa/a` but never `spiffe://td/ns/shopping`
//! nor `spiffe://td/ns/shop/../admin`.

const SCHEME: &str = "spiffe://";
/// The SPIFFE standard's limit on a whole ID.
const MAX_LEN: usize = 2048;

/// Why a configured pattern is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeError {
    #[error("must start with `spiffe://`")]
    Scheme,
    #[error("the trust domain must be non-empty lower-case letters, digits, `.`, `-` or `_`")]
    TrustDomain,
    #[error(
        "path segments must be non-empty letters, digits, `.`, `-` or `_`, and not `.` or `..`"
    )]
    Path,
    #[error("longer than the SPIFFE limit of 2048 bytes")]
    TooLong,
}

/// One `allowed_spiffe_ids` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpiffePattern {
    /// Exactly this ID.
    Exact(String),
    /// Every ID below this one (kept with its trailing `/`): a trust domain
    /// (`spiffe://td/`) or a path prefix (`spiffe://td/ns/shop/`).
    Under(String),
}

impl std::str::FromStr for SpiffePattern {
    type Err = SpiffeError;

    /// An ID is exact; an ID followed by `/` covers every ID below it.
    fn from_str(s: &str) -> Result<Self, SpiffeError> {
        let rest = s.strip_prefix(SCHEME).ok_or(SpiffeError::Scheme)?;
        match rest.strip_suffix('/').map(|_| &s[..s.len() - 1]) {
            Some(id) => {
                validate(id)?;
                Ok(Self::Under(s.to_string()))
            }
            None => {
                validate(s)?;
                Ok(Self::Exact(s.to_string()))
            }
        }
    }
}

impl SpiffePattern {
    /// Whether `id`, a valid SPIFFE ID, is allowed by this pattern.
    fn matches(&self, id: &str) -> bool {
        match self {
            Self::Exact(want) => id == want,
            Self::Under(prefix) => id.starts_with(prefix.as_str()),
        }
    }

    /// Whether the peer's URI SANs name one valid SPIFFE ID that a pattern allows. An SVID
    /// carries exactly one URI SAN; a second value (or a `;` in a SAN that made one) is refused.
    pub fn allows(patterns: &[SpiffePattern], uris: &[String]) -> bool {
        match uris {
            [id] => validate(id).is_ok() && patterns.iter().any(|p| p.matches(id)),
            _ => false,
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Exact(s) | Self::Under(s) => s,
        }
    }
}

/// A SPIFFE ID per the SPIFFE standard (see the module comment).
fn validate(id: &str) -> Result<(), SpiffeError> {
    if id.len() > MAX_LEN {
        return Err(SpiffeError::TooLong);
    }
    let rest = id.strip_prefix(SCHEME).ok_or(SpiffeError::Scheme)?;
    let (domain, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let domain_ok = !domain.is_empty()
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !domain_ok {
        return Err(SpiffeError::TrustDomain);
    }
    if path.is_empty() {
        return Ok(());
    }
    let segments_ok = path[1..].split('/').all(|seg| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    });
    if segments_ok {
        Ok(())
    } else {
        Err(SpiffeError::Path)
    }
}

#[cfg(test)]
mod tests {
    use super::{SpiffeError, SpiffePattern};

    fn patterns(list: &[&str]) -> Vec<SpiffePattern> {
        list.iter().map(|p| p.parse().unwrap()).collect()
    }

    fn allows(list: &[&str], uris: &[&str]) -> bool {
        let uris: Vec<String> = uris.iter().map(|u| u.to_string()).collect();
        SpiffePattern::allows(&patterns(list), &uris)
    }

    #[test]
    fn spiffe_an_exact_id_allows_that_id_alone() {
        let list = ["spiffe://cluster.local/ns/shop/sa/checkout"];
        assert!(allows(
            &list,
            &["spiffe://cluster.local/ns/shop/sa/checkout"]
        ));
        for other in [
            "spiffe://cluster.local/ns/shop/sa/checkout2",
            "spiffe://cluster.local/ns/shop/sa/checkout/x",
            "spiffe://cluster.local/ns/shop/sa",
            "spiffe://other.local/ns/shop/sa/checkout",
        ] {
            assert!(!allows(&list, &[other]), "{other}");
        }
    }

    #[test]
    fn spiffe_a_prefix_pattern_allows_whole_segments_below_it_only() {
        let list = ["spiffe://cluster.local/ns/shop/"];
        assert!(allows(&list, &["spiffe://cluster.local/ns/shop/sa/a"]));
        for other in [
            "spiffe://cluster.local/ns/shopping/sa/a",
            "spiffe://cluster.local/ns/shop",
            "spiffe://cluster.local/ns/shop/../admin",
            "spiffe://cluster.local/ns/shop/./sa",
            "spiffe://cluster.local/ns/shop//sa",
            "spiffe://cluster.local/ns/shop/sa/a,By=x",
            "spiffe://cluster.local/ns/shop/sa/%61",
        ] {
            assert!(!allows(&list, &[other]), "{other}");
        }
        let domain = ["spiffe://cluster.local/"];
        assert!(allows(&domain, &["spiffe://cluster.local/ns/a/sa/b"]));
        assert!(!allows(&domain, &["spiffe://cluster.local.evil/ns/a/sa/b"]));
    }

    #[test]
    fn spiffe_a_peer_with_no_or_several_uri_sans_is_never_allowed() {
        let list = ["spiffe://cluster.local/"];
        assert!(!allows(&list, &[]));
        assert!(!allows(
            &list,
            &[
                "spiffe://cluster.local/ns/a/sa/b",
                "spiffe://cluster.local/ns/c/sa/d"
            ]
        ));
    }

    #[test]
    fn spiffe_patterns_that_are_not_ids_are_refused_with_the_rule_they_break() {
        for (bad, why) in [
            ("https://cluster.local/ns/a", SpiffeError::Scheme),
            ("spiffe://", SpiffeError::TrustDomain),
            ("spiffe:///ns/a", SpiffeError::TrustDomain),
            ("spiffe://Cluster.Local/ns/a", SpiffeError::TrustDomain),
            ("spiffe://cluster.local/ns//a", SpiffeError::Path),
            ("spiffe://cluster.local/ns/../a", SpiffeError::Path),
            ("spiffe://cluster.local/ns/a//", SpiffeError::Path),
            ("spiffe://cluster.local/ns/a;b", SpiffeError::Path),
        ] {
            assert_eq!(bad.parse::<SpiffePattern>().unwrap_err(), why, "{bad}");
        }
        let long = format!("spiffe://td/{}", "a".repeat(2048));
        assert_eq!(
            long.parse::<SpiffePattern>().unwrap_err(),
            SpiffeError::TooLong
        );
    }
}
