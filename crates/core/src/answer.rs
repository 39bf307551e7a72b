//! What the client and the upstream see of an outcome, whatever carries it: for a deny, the
//! status, the challenge headers (RFC 6750 `Bearer`, RFC 9449 `DPoP`) and the JSON body; for an
//! allow, the headers set on and removed from the upstream request; for both, the facts an
//! access log reads. The ext_authz service turns it into a CheckResponse, the Envoy module into
//! a local reply or header changes, so both faces answer the same bytes.
//!
//! Trusts nothing from the request but the `Host` (`:authority`) it puts into `realm`, cleaned
//! so it cannot break out of the quoted string. Clients see only static text: a deny reason's
//! description, never an inner error.

use crate::correlation::Correlation;
use crate::decision::{Decision, DenyReason, UpstreamHeader};
use crate::dpop::{self, DpopMode};
pub use crate::log_fields::{LogField, LogFields};
use crate::pipeline::Outcome;
use crate::resource::Metadata;

/// One response header line. A name may repeat (one `WWW-Authenticate` line per challenge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: &'static str,
    pub value: String,
}

/// The local reply of a deny.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: DenyReason,
    pub status: u16,
    /// `content-type`, then the challenges in order, then `dpop-nonce`.
    pub headers: Vec<Header>,
    pub body: String,
}

/// What one outcome does to the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Forward upstream with these headers set (replacing any the client sent) and removed.
    Allow {
        set: Vec<UpstreamHeader>,
        remove: Vec<String>,
    },
    /// Answer the client with this reply; the upstream never sees the request.
    Deny(Denial),
}

impl Answer {
    /// The answer to `outcome`; `host` (the request's `:authority`) becomes the challenges'
    /// `realm`.
    pub fn of(outcome: &Outcome, host: Option<&str>) -> Self {
        match &outcome.decision {
            Decision::Allow {
                headers, remove, ..
            } => Self::Allow {
                set: headers.clone(),
                remove: remove.clone(),
            },
            Decision::Deny(reason) => Self::Deny(denial(
                *reason,
                host,
                outcome.scope_hint.as_deref(),
                outcome.dpop.as_ref(),
                outcome.resource_metadata.as_deref(),
            )),
        }
    }
}

/// The facts an access log reads (ext_authz dynamic metadata, the module's filter metadata),
/// those of `fields` that the outcome and the request's ids have: the policy, the decision and
/// its reason, who it was, and which request and trace, in this order.
pub fn log_fields<'a>(
    outcome: &'a Outcome,
    ids: Correlation<'a>,
    fields: LogFields,
) -> Vec<(&'static str, &'a str)> {
    let (decision, reason) = match &outcome.decision {
        Decision::Allow { reason, .. } => ("allow", reason.as_str()),
        Decision::Deny(reason) => ("deny", reason.as_str()),
    };
    let values = [
        Some(outcome.policy.as_str()),
        Some(decision),
        Some(reason),
        outcome.subject.as_deref(),
        outcome.client_id.as_deref(),
        outcome.thumbprint.as_deref(),
        ids.request_id,
        ids.trace_id,
    ];
    LogField::ALL
        .into_iter()
        .zip(values)
        .filter(|(field, _)| fields.contains(*field))
        .filter_map(|(field, value)| Some((field.as_str(), value?)))
        .collect()
}

/// A local reply that is not a decision: the RFC 9728 metadata document (§3.2), answered
/// before any check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub status: u16,
    pub headers: Vec<Header>,
    pub body: String,
}

/// The reply to a request for `metadata`: 200, JSON, nothing else.
pub fn document(metadata: &Metadata) -> Document {
    Document {
        status: 200,
        headers: vec![Header {
            name: "content-type",
            value: "application/json".into(),
        }],
        body: metadata.document.clone(),
    }
}

fn denial(
    reason: DenyReason,
    host: Option<&str>,
    scope: Option<&str>,
    dpop: Option<&dpop::Challenge>,
    resource_metadata: Option<&str>,
) -> Denial {
    let mut headers = vec![Header {
        name: "content-type",
        value: "application/json".into(),
    }];
    if let (Some(d), 401) = (dpop, reason.http_status()) {
        headers.extend(dpop_challenges(reason, host, d));
    } else if reason.has_challenge() {
        let mut c = challenge(reason, host);
        if let (DenyReason::InsufficientScope, Some(scope)) = (reason, scope) {
            // Configured scope names; keep them inside the quoted string.
            let scope: String = scope
                .chars()
                .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
                .collect();
            c.push_str(&format!(", scope=\"{scope}\""));
        }
        headers.push(Header {
            name: "www-authenticate",
            value: c,
        });
    }
    if let Some(url) = resource_metadata {
        // RFC 9728 §5.1, on every challenge (Bearer and DPoP alike) so a client that reads
        // either finds the metadata. The URL comes from the configuration, which admits no
        // character that could leave the quoted string; filtered again all the same.
        let url: String = url
            .chars()
            .filter(|c| *c != '"' && *c != '\\' && c.is_ascii_graphic())
            .collect();
        for h in headers.iter_mut().filter(|h| h.name == "www-authenticate") {
            h.value.push_str(&format!(", resource_metadata=\"{url}\""));
        }
    }
    Denial {
        reason,
        status: reason.http_status(),
        headers,
        body: format!("{{\"message\":\"{}\"}}", reason.body_message()),
    }
}

/// A 401 of a policy that takes DPoP: `strict` answers with the `DPoP` challenge alone;
/// `optional` with the `Bearer` one first (its error only for non-DPoP reasons), then `DPoP`
/// (RFC 9449 §7.1 allows both). Plus `DPoP-Nonce` when the policy uses nonces.
fn dpop_challenges(reason: DenyReason, host: Option<&str>, d: &dpop::Challenge) -> Vec<Header> {
    let mut headers = Vec::new();
    if d.mode != DpopMode::Strict {
        headers.push(Header {
            name: "www-authenticate",
            value: if reason.dpop_error().is_some() {
                challenge(DenyReason::MissingToken, host)
            } else {
                challenge(reason, host)
            },
        });
    }
    headers.push(Header {
        name: "www-authenticate",
        value: dpop::challenge(d, reason),
    });
    if let Some(nonce) = &d.nonce {
        headers.push(Header {
            name: "dpop-nonce",
            value: nonce.clone(),
        });
    }
    headers
}

/// `Bearer realm="<host>"[, error="...", error_description="..."]` (RFC 6750 §3).
pub fn challenge(reason: DenyReason, host: Option<&str>) -> String {
    let realm = realm(host);
    match reason.rfc6750_error() {
        None => format!("Bearer realm=\"{realm}\""),
        Some(e) => format!(
            "Bearer realm=\"{realm}\", error=\"{}\", error_description=\"{}\"",
            e.as_str(),
            reason.description()
        ),
    }
}

/// The client controls `Host`: keep only characters that cannot break out of the quoted
/// string, and bound the length.
fn realm(host: Option<&str>) -> String {
    let cleaned: String = host
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'))
        .take(253)
        .collect();
    if cleaned.is_empty() {
        "certbound".to_string()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed_outcome() -> Outcome {
        Outcome {
            decision: Decision::Allow {
                reason: crate::decision::AllowReason::Bound,
                headers: Vec::new(),
                remove: Vec::new(),
            },
            policy: "default".into(),
            subject: Some("alice".into()),
            client_id: None,
            thumbprint: Some("x5t-value".into()),
            ..Outcome::default()
        }
    }

    #[test]
    fn log_fields_are_the_configured_ones_the_outcome_has_in_order() {
        let o = allowed_outcome();
        let none = Correlation::default();
        assert_eq!(
            log_fields(&o, none, LogFields::ALL),
            vec![
                ("policy", "default"),
                ("decision", "allow"),
                ("reason", "bound"),
                ("sub", "alice"),
                ("x5t", "x5t-value"),
            ]
        );
        let some = LogFields::of([LogField::X5t, LogField::Reason]);
        assert_eq!(
            log_fields(&o, none, some),
            vec![("reason", "bound"), ("x5t", "x5t-value")]
        );
        assert!(log_fields(&o, none, LogFields::NONE).is_empty());
    }

    #[test]
    fn the_request_and_trace_ids_are_fields_only_when_asked_for_and_present() {
        let o = allowed_outcome();
        let ids = Correlation {
            request_id: Some("req-1"),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        };
        let fields = log_fields(&o, ids, LogFields::ALL);
        assert_eq!(
            fields[fields.len() - 2..],
            [
                ("request_id", "req-1"),
                ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")
            ]
        );
        let defaults = log_fields(&o, ids, crate::defaults::DYNAMIC_METADATA);
        assert!(
            defaults
                .iter()
                .all(|(k, _)| *k != "request_id" && *k != "trace_id"),
            "{defaults:?}"
        );
        let only_trace = Correlation {
            request_id: None,
            ..ids
        };
        assert_eq!(
            log_fields(
                &o,
                only_trace,
                LogFields::of([LogField::RequestId, LogField::TraceId])
            ),
            vec![("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")]
        );
    }

    #[test]
    fn the_default_log_fields_are_every_field_but_the_ids_envoy_logs_itself() {
        assert_eq!(LogFields::ALL, LogFields::of(LogField::ALL));
        assert_eq!(
            crate::defaults::DYNAMIC_METADATA,
            LogFields::of(
                LogField::ALL
                    .into_iter()
                    .filter(|f| !matches!(f, LogField::RequestId | LogField::TraceId))
            )
        );
        for f in LogField::ALL {
            assert!(LogFields::ALL.contains(f));
            assert!(!LogFields::NONE.contains(f));
        }
    }

    fn denied_with_metadata(reason: DenyReason, dpop: Option<dpop::Challenge>) -> Denial {
        let outcome = Outcome {
            decision: Decision::Deny(reason),
            dpop,
            resource_metadata: Some(
                "https://api.test/.well-known/oauth-protected-resource/v1".into(),
            ),
            ..Outcome::default()
        };
        match Answer::of(&outcome, Some("api.test")) {
            Answer::Deny(d) => d,
            Answer::Allow { .. } => panic!("a deny was answered as an allow"),
        }
    }

    fn challenges(d: &Denial) -> Vec<&str> {
        d.headers
            .iter()
            .filter(|h| h.name == "www-authenticate")
            .map(|h| h.value.as_str())
            .collect()
    }

    #[test]
    fn every_challenge_of_a_publishing_policy_names_its_resource_metadata() {
        let param =
            ", resource_metadata=\"https://api.test/.well-known/oauth-protected-resource/v1\"";
        let bearer = denied_with_metadata(DenyReason::MissingToken, None);
        assert_eq!(
            challenges(&bearer),
            vec![format!("Bearer realm=\"api.test\"{param}")]
        );
        let invalid = denied_with_metadata(DenyReason::BindingMismatch, None);
        assert!(challenges(&invalid)[0].ends_with(param));
        assert!(challenges(&invalid)[0].contains("error=\"invalid_token\""));

        let optional = dpop::Challenge {
            mode: DpopMode::Optional,
            algs: "ES256".into(),
            nonce: None,
        };
        let both = denied_with_metadata(DenyReason::MissingToken, Some(optional));
        let c = challenges(&both);
        assert_eq!(c.len(), 2);
        assert!(
            c[0].starts_with("Bearer ") && c[0].ends_with(param),
            "{}",
            c[0]
        );
        assert!(
            c[1].starts_with("DPoP ") && c[1].ends_with(param),
            "{}",
            c[1]
        );

        let strict = dpop::Challenge {
            mode: DpopMode::Strict,
            algs: "ES256".into(),
            nonce: None,
        };
        let only_dpop = denied_with_metadata(DenyReason::MissingToken, Some(strict));
        assert_eq!(
            challenges(&only_dpop),
            vec![format!("DPoP algs=\"ES256\"{param}")]
        );
    }

    #[test]
    fn a_policy_without_a_resource_names_no_metadata() {
        let outcome = Outcome {
            decision: Decision::Deny(DenyReason::MissingToken),
            ..Outcome::default()
        };
        let Answer::Deny(d) = Answer::of(&outcome, Some("api.test")) else {
            panic!("a deny was answered as an allow");
        };
        assert!(challenges(&d)
            .iter()
            .all(|c| !c.contains("resource_metadata")));
    }

    #[test]
    fn resource_metadata_cannot_break_out_of_its_quoted_string() {
        let outcome = Outcome {
            decision: Decision::Deny(DenyReason::MissingToken),
            resource_metadata: Some("https://a.test/x\", error=\"none\\".into()),
            ..Outcome::default()
        };
        let Answer::Deny(d) = Answer::of(&outcome, Some("a.test")) else {
            panic!("a deny was answered as an allow");
        };
        assert_eq!(
            challenges(&d),
            vec!["Bearer realm=\"a.test\", resource_metadata=\"https://a.test/x,error=none\""]
        );
    }

    #[test]
    fn the_metadata_document_is_a_200_json_reply_of_the_generated_document() {
        let m = Metadata::new(
            "https://api.test/v1".parse().unwrap(),
            &crate::resource::Facts {
                issuer: "https://idp.test",
                mtls_bound: true,
                dpop_required: false,
                dpop_algs: None,
                scopes: &[],
            },
        );
        let reply = document(&m);
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.headers,
            vec![Header {
                name: "content-type",
                value: "application/json".into()
            }]
        );
        assert_eq!(reply.body, m.document);
    }

    #[test]
    fn realm_cannot_inject_into_the_challenge() {
        let c = challenge(DenyReason::MissingToken, Some("evil\", error=\"none"));
        assert_eq!(c, "Bearer realm=\"evilerrornone\"");
        assert_eq!(
            challenge(DenyReason::MissingToken, None),
            "Bearer realm=\"certbound\""
        );
    }

    #[test]
    fn token_failures_carry_invalid_token_with_a_static_description() {
        let c = challenge(DenyReason::BindingMismatch, Some("api.test"));
        assert_eq!(
            c,
            "Bearer realm=\"api.test\", error=\"invalid_token\", error_description=\"certificate does not match access token\""
        );
    }
}
