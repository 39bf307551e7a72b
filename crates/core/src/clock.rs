//! The one place that reads the wall clock. Everything else takes `now` as an argument so that
//! expiry rules are tested deterministically.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch. A clock before 1970 reads as 0, which makes every
/// time-bounded credential look not-yet-valid or expired: fail closed.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
