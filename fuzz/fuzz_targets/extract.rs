//! Arbitrary bytes as limits (the first two bytes) and a header map (`name: value` lines; a
//! repeated name is joined with `,` as Envoy does), through `extract::bearer_token`,
//! `cert_header` and `host`. Never panics; what comes out respects the limits and is a
//! well-formed piece of what went in.
#![no_main]

use std::collections::HashMap;

use certbound_core::extract;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&[values, bytes], rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let max_values = usize::from(values % 8) + 1;
    let max_bytes = usize::from(bytes) * 16;
    let text = String::from_utf8_lossy(rest);
    let mut headers: HashMap<String, String> = HashMap::new();
    for line in text.split('\n') {
        let Some((name, value)) = line.split_once(": ") else {
            continue;
        };
        headers
            .entry(name.to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(value);
            })
            .or_insert_with(|| value.to_string());
    }
    if let Ok(token) = extract::bearer_token(&headers, max_values) {
        let raw = &headers["authorization"];
        assert!(
            raw.split(',').count() <= max_values,
            "more Authorization values than the limit were accepted"
        );
        assert!(!token.is_empty() && raw.contains(token));
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b)));
    }
    if let Ok(Some(cert)) = extract::cert_header(&headers, "x-client-cert", max_bytes) {
        assert!(!cert.is_empty() && cert.trim() == cert);
        assert!(cert.len() <= max_bytes, "an oversized header was accepted");
        assert!(headers["x-client-cert"].contains(cert));
    }
    let _ = extract::host(&headers);
});
