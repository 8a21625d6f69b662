//! SigV4 `Authorization` headers and signed requests, through the local cloud's verifier
//! (`local_cloud::iam::sigv4`), which every non-S3 HTTP request meets first.

use std::time::SystemTime;

use local_cloud::iam::sigv4::{self, SignedRequest};

use crate::{Outcome, split_nul};

/// `header\0target\0body`: `header` to [`sigv4::parse_authorization`], then the whole request
/// (`target` = `path?query`, method POST, `x-amz-date` now) to [`sigv4::verify`] with a secret
/// no input was signed with.
///
/// Checks: an accepted header has a non-empty key id, an 8-digit date, lower-case signed header
/// names that include `host`, and a 64-character lower-case hex signature; verification never
/// accepts a request (a signature made without the secret never matches), and its refusal
/// prints a message.
pub fn sigv4_request(data: &[u8]) -> Outcome {
    let (header, rest) = split_nul(data);
    let header = String::from_utf8_lossy(header);
    let parsed = sigv4::parse_authorization(&header);
    if let Ok(auth) = &parsed {
        assert!(!auth.access_key_id.is_empty(), "{auth:?}");
        assert!(auth.date.len() == 8 && auth.date.bytes().all(|b| b.is_ascii_digit()), "{auth:?}");
        assert!(auth.signed_headers.iter().any(|h| h == "host"), "{auth:?}");
        assert!(auth.signed_headers.iter().all(|h| !h.is_empty() && *h == h.to_ascii_lowercase()), "{auth:?}");
        assert!(
            auth.signature.len() == 64
                && auth.signature.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{auth:?}"
        );
    }
    let (target, body) = split_nul(rest.unwrap_or_default());
    let target = String::from_utf8_lossy(target);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let now = SystemTime::now();
    let mut headers = http::HeaderMap::new();
    if let Ok(value) = http::HeaderValue::from_str(&header) {
        headers.insert(http::header::AUTHORIZATION, value);
    }
    headers.insert("host", http::HeaderValue::from_static("127.0.0.1:4566"));
    if let Ok(date) = http::HeaderValue::from_str(&sigv4::format_amz_date(now)) {
        headers.insert("x-amz-date", date);
    }
    let request = SignedRequest { method: "POST", path, query, headers: &headers, body: body.unwrap_or_default() };
    match sigv4::verify(&request, "a secret no fuzz input was signed with", now) {
        Ok(auth) => panic!("a request nobody signed was accepted: {auth:?}"),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    Outcome::of(parsed.is_ok())
}
