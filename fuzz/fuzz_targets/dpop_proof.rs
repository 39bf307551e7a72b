//! Arbitrary bytes as a `DPoP` header value, through `dpop::parse` with every asymmetric
//! algorithm allowed and the default nesting limit, then `dpop::verify` against the fixed
//! request the seeds were made for (`GET https://api.fuzz.test/orders` with the token
//! `fuzz-access-token`) at the targets' fixed time. Never panics; a proof that parses is within
//! the size limit, one compact JWS and names a 43-character thumbprint, and one that verifies
//! carries the request's method and token hash and a fresh `iat`.
#![no_main]

use certbound_core::dpop::{self, Expected};
use certbound_fuzz::NOW;
use libfuzzer_sys::fuzz_target;

const URI: &str = "https://api.fuzz.test/orders";
const TOKEN: &str = "fuzz-access-token";
const LIFETIME: u64 = 300;
const LEEWAY: u64 = 60;

fuzz_target!(|data: &[u8]| {
    let proof = String::from_utf8_lossy(data);
    let _ = dpop::normalize_htu(&proof);
    let Ok(p) = dpop::parse(&proof, dpop::DEFAULT_ALGS, 16) else {
        return;
    };
    assert!(proof.len() <= dpop::MAX_PROOF_BYTES, "oversized proof parsed");
    assert_eq!(proof.split('.').count(), 3, "a JWS has three segments");
    assert_eq!(p.jkt.len(), 43, "an RFC 7638 SHA-256 thumbprint");
    let want = Expected {
        method: "GET",
        uri: URI,
        token: TOKEN,
        jkt: None,
        lifetime: LIFETIME,
        leeway: LEEWAY,
        now: NOW,
    };
    if dpop::verify(&p, &want).is_ok() {
        assert_eq!(p.htm, "GET");
        assert!(p.iat + LIFETIME + LEEWAY >= NOW && p.iat <= NOW + LEEWAY, "stale proof verified");
        assert_eq!(p.ath, Some(dpop::access_token_hash(TOKEN)));
    }
});
