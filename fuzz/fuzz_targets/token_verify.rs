//! Arbitrary bytes as a bearer token, through `token::verify` with the fixture issuer's keys
//! and the default policy's rules (size and JSON nesting limits included) at a fixed time.
//! Never panics; whatever verifies is unexpired, within the limits and a three-part JWS.
#![no_main]

use certbound_core::token;
use certbound_fuzz::{token_rules, KEYS, NOW};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    let rules = token_rules();
    if let Ok(verified) = token::verify(&token, &KEYS, &rules, NOW) {
        assert!(
            NOW <= verified.exp.saturating_add(rules.leeway),
            "expired token verified"
        );
        assert!(token.len() <= rules.max_bytes, "oversized token verified");
        assert_eq!(token.split('.').count(), 3, "a JWS has three segments");
    }
});
