//! Envoy's `x-forwarded-client-cert`: one element per hop, separated by `,`; each element is
//! `Key=Value` pairs separated by `;`; values may be double-quoted with `\"` escapes (a quoted
//! `Subject` contains commas and semicolons). The nearest hop appends its element last, so the
//! last element describes the client that connected to it.
//!
//! `Cert` is the URL-encoded PEM leaf, `Chain` the URL-encoded PEM chain (leaf included), `Hash`
//! the hex SHA-256 of the leaf's DER. Istio sidecars send `Hash` without `Cert` by default: the
//! binding can be checked from `Hash` alone, but not the chain.

use super::{pem, Presented};
use crate::cert::{thumbprint, CertError, Thumbprint};

pub(super) fn decode(value: &str) -> Result<Presented, CertError> {
    let element = split_unquoted(value, ',')
        .into_iter()
        .map(str::trim)
        .rfind(|e| !e.is_empty())
        .ok_or(CertError::Malformed)?;
    let mut cert = None;
    let mut chain = None;
    let mut hash = None;
    for pair in split_unquoted(element, ';') {
        let (key, raw) = pair.split_once('=').ok_or(CertError::Malformed)?;
        let value = unquote(raw.trim())?;
        let slot = match key.trim().to_ascii_lowercase().as_str() {
            "cert" => &mut cert,
            "chain" => &mut chain,
            "hash" => &mut hash,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            // The same key twice in one element: which one counts is ambiguous.
            return Err(CertError::Malformed);
        }
    }
    let hash = hash.map(|h| parse_hex(&h)).transpose()?;
    let chain = match (chain, cert) {
        (Some(c), _) => pem::decode_url_encoded(&c)?,
        (None, Some(c)) => pem::decode_url_encoded(&c)?,
        (None, None) => Vec::new(),
    };
    match (chain.first(), hash) {
        (None, None) => Err(CertError::Malformed),
        (Some(leaf), Some(h)) if thumbprint(leaf.as_ref()) != h => Err(CertError::Malformed),
        _ => Ok(Presented { chain, hash }),
    }
}

/// Splits on `sep` outside double quotes (a backslash escapes the next character inside them).
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn unquote(v: &str) -> Result<String, CertError> {
    let Some(inner) = v.strip_prefix('"') else {
        return Ok(v.to_string());
    };
    let inner = inner.strip_suffix('"').ok_or(CertError::Malformed)?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next().ok_or(CertError::Malformed)?);
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

fn parse_hex(h: &str) -> Result<Thumbprint, CertError> {
    let h = h.trim();
    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CertError::Malformed);
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).map_err(|_| CertError::Malformed)?;
    }
    Ok(out)
}
