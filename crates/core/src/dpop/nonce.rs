//! Server-issued DPoP nonces (RFC 9449 §8) without per-client state: a nonce is the HMAC-SHA256
//! of the current time window under a secret every replica shares, so any replica can check a
//! nonce another one issued. A nonce is accepted in the window it was issued in and the next,
//! so one issued at the end of a window does not expire at once.

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use subtle::ConstantTimeEq;

/// Seconds one nonce window lasts: a nonce lives between one and two windows.
pub const NONCE_WINDOW: u64 = 60;
/// The shortest `dpop_nonce_secret` accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

pub struct NonceIssuer {
    key: hmac::Key,
}

impl std::fmt::Debug for NonceIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceIssuer")
    }
}

impl NonceIssuer {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The nonce to hand out at `now`.
    pub fn issue(&self, now: u64) -> String {
        self.for_window(now / NONCE_WINDOW)
    }

    /// Whether `nonce` was issued in this window or the one before.
    pub fn accepts(&self, nonce: &str, now: u64) -> bool {
        let window = now / NONCE_WINDOW;
        [window, window.saturating_sub(1)]
            .iter()
            .any(|w| bool::from(self.for_window(*w).as_bytes().ct_eq(nonce.as_bytes())))
    }

    fn for_window(&self, window: u64) -> String {
        let tag = hmac::sign(&self.key, &window.to_be_bytes());
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn a_nonce_is_accepted_in_its_window_and_the_next_only() {
        let n = NonceIssuer::new(&[1u8; 32]);
        let nonce = n.issue(NOW);
        assert!(n.accepts(&nonce, NOW));
        assert!(n.accepts(&nonce, NOW + NONCE_WINDOW));
        assert!(!n.accepts(&nonce, NOW + 2 * NONCE_WINDOW));
        assert!(!n.accepts(&nonce, NOW - NONCE_WINDOW));
    }

    #[test]
    fn replicas_sharing_the_secret_accept_each_others_nonces() {
        let a = NonceIssuer::new(b"0123456789abcdef0123456789abcdef");
        let b = NonceIssuer::new(b"0123456789abcdef0123456789abcdef");
        let other = NonceIssuer::new(b"another secret, another deploymnt");
        assert!(b.accepts(&a.issue(NOW), NOW));
        assert!(!other.accepts(&a.issue(NOW), NOW));
        assert!(!a.accepts("", NOW));
        assert!(!a.accepts("not-a-nonce", NOW));
    }
}
