//! The ids that join one decision with the rest of its request's story: Envoy's `x-request-id`
//! (what Envoy's access log prints as `%REQ(X-REQUEST-ID)%`) and the W3C trace id of
//! `traceparent` (what a tracing backend and `%TRACE_ID%` show).
//!
//! Both arrive in headers a client can set (Envoy keeps a client's `x-request-id` on an edge
//! listener with `preserve_external_request_id`, and any hop may forward a `traceparent`), so
//! neither is copied into a log line or the dynamic metadata unless it has the shape of an id:
//! a bounded run of characters that cannot break a log format, or a `traceparent` as W3C Trace
//! Context (level 1, §3.2) defines it. Anything else reads as absent.

use std::collections::HashMap;

/// Envoy's request id header (the HTTP connection manager sets it when it is missing).
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// W3C Trace Context's header.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Longest request id copied into logs. Envoy's own is a 36-character UUID; 128 leaves room for
/// the ids other front proxies generate while bounding what a client can make certbound log.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The ids of one request, each present only when its header held a well-formed value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Correlation<'a> {
    pub request_id: Option<&'a str>,
    /// 32 lower-case hex digits, never all zeros.
    pub trace_id: Option<&'a str>,
}

impl<'a> Correlation<'a> {
    /// The ids in a request's headers (lower-case names, as Envoy sends them).
    pub fn of(headers: &'a HashMap<String, String>) -> Self {
        Self {
            request_id: headers.get(REQUEST_ID_HEADER).and_then(|v| request_id(v)),
            trace_id: headers.get(TRACEPARENT_HEADER).and_then(|v| trace_id(v)),
        }
    }
}

/// `value` when it is 1 to [`MAX_REQUEST_ID_LEN`] characters of letters, digits, `-`, `_`, `.`
/// and `:`: what UUIDs and the usual generated ids are made of, and nothing that could end a
/// log field or forge another one.
pub fn request_id(value: &str) -> Option<&str> {
    let ok = !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then_some(value)
}

/// The trace id of a `traceparent` value: `version-traceid-parentid-flags` with a two-digit
/// version other than `ff`, a 32-digit trace id and a 16-digit parent id that are not all
/// zeros, and two flag digits, all lower-case hex. Version `00` has exactly these 55
/// characters; a later version may append more after a `-`, which is ignored (W3C Trace
/// Context §3.2.4). A repeated header arrives comma-joined and is refused by its length.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let b = traceparent.as_bytes();
    let hex = |r: std::ops::Range<usize>| {
        b[r].iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    let zeros = |r: std::ops::Range<usize>| b[r].iter().all(|c| *c == b'0');
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let version_ok = hex(0..2) && &b[0..2] != b"ff";
    let length_ok = if &b[0..2] == b"00" {
        b.len() == 55
    } else {
        b.len() == 55 || b[55] == b'-'
    };
    let ok = version_ok
        && length_ok
        && hex(3..35)
        && !zeros(3..35)
        && hex(36..52)
        && !zeros(36..52)
        && hex(53..55);
    // Every byte checked above is ASCII, so 3..35 is on character boundaries.
    ok.then(|| &traceparent[3..35])
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_w3c_traceparent_gives_its_trace_id() {
        assert_eq!(trace_id(PARENT), Some(TRACE));
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
            Some(TRACE),
            "an unsampled parent still names its trace"
        );
        assert_eq!(
            trace_id("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"),
            Some(TRACE),
            "a later version may carry more fields"
        );
    }

    #[test]
    fn a_malformed_traceparent_gives_no_trace_id() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            // upper case, all-zero ids, version ff, a trailing field on version 00
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            // a repeated header, comma-joined by Envoy
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01,00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // log-line forgery and non-ASCII where the ids go
            "00-4bf92f3577b34da6a3ce929d0e\n4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0é0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(trace_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_request_id_is_bounded_and_plain() {
        let uuid = "a3b1c9e2-7f4d-4e1a-9c3b-0d2e5f6a7b8c";
        assert_eq!(request_id(uuid), Some(uuid));
        assert_eq!(request_id("req_42.a:b"), Some("req_42.a:b"));
        let longest = "r".repeat(MAX_REQUEST_ID_LEN);
        assert_eq!(request_id(&longest), Some(longest.as_str()));
        for bad in [
            String::new(),
            "r".repeat(MAX_REQUEST_ID_LEN + 1),
            "id\nreason=allow".to_string(),
            "id\" reason=\"allow".to_string(),
            "id with spaces".to_string(),
            "idé".to_string(),
        ] {
            assert_eq!(request_id(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn correlation_reads_both_headers_and_drops_bad_values() {
        let mut headers = HashMap::new();
        assert_eq!(Correlation::of(&headers), Correlation::default());
        headers.insert(REQUEST_ID_HEADER.to_string(), "req-1".to_string());
        headers.insert(TRACEPARENT_HEADER.to_string(), PARENT.to_string());
        assert_eq!(
            Correlation::of(&headers),
            Correlation {
                request_id: Some("req-1"),
                trace_id: Some(TRACE)
            }
        );
        headers.insert(REQUEST_ID_HEADER.to_string(), "x".repeat(500));
        headers.insert(TRACEPARENT_HEADER.to_string(), "garbage".to_string());
        assert_eq!(Correlation::of(&headers), Correlation::default());
    }
}
