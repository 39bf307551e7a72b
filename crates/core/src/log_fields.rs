//! The access-log fields an answer can carry (`dynamic_metadata`), kept apart from `answer` so
//! the defaults can name them without depending on the request path.

use crate::names::spelled;

spelled! {
    /// One access-log field of an answer (`dynamic_metadata`), in the order answers list them.
    pub enum LogField {
        Policy = "policy",
        Decision = "decision",
        Reason = "reason",
        Sub = "sub",
        ClientId = "client_id",
        X5t = "x5t",
        /// Envoy's `x-request-id`, when well formed (`correlation`).
        RequestId = "request_id",
        /// The W3C trace id of `traceparent`, when well formed (`correlation`).
        TraceId = "trace_id",
    }
}

/// The access-log fields answers carry (`dynamic_metadata`). Each field costs Envoy a little
/// per request, so a deployment whose access log reads none of them can turn them off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogFields(u16);

impl LogFields {
    pub const NONE: LogFields = LogFields(0);
    pub const ALL: LogFields = LogFields((1 << LogField::ALL.len()) - 1);

    pub fn of(fields: impl IntoIterator<Item = LogField>) -> Self {
        LogFields(fields.into_iter().fold(0, |bits, f| bits | 1 << f as u16))
    }

    /// These fields but `field`.
    pub const fn without(self, field: LogField) -> Self {
        LogFields(self.0 & !(1 << field as u16))
    }

    pub fn contains(self, field: LogField) -> bool {
        self.0 & (1 << field as u16) != 0
    }
}
