//! Verifying AWS Signature Version 4 on a request, as AWS's services do for the header form
//! (`Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`).
//!
//! Follows "Create a signed AWS API request" and "Elements of an AWS API request signature" in
//! the IAM User Guide: the canonical request (method, canonical URI, canonical query string,
//! canonical headers, signed headers, payload hash), the string to sign over the credential
//! scope, and the signing key derived from the secret, date, region and service. Services other
//! than S3 encode each path segment twice (the path as sent, percent-encoded once more); S3 is
//! verified by its own front end. Pure: the caller supplies the secret and the current time.

use std::time::{Duration, SystemTime};

use ring::hmac;

/// How far a request's `x-amz-date` may be from the server's clock (AWS: 15 minutes).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The parts of an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The access key id of the credential scope.
    pub access_key_id: String,
    /// `YYYYMMDD` of the scope.
    pub date: String,
    /// Region of the scope.
    pub region: String,
    /// Signing name of the service (`iot`, `iotdata`, `greengrass`, `iam`, …).
    pub service: String,
    /// Lower-case names of the signed headers, in the order given.
    pub signed_headers: Vec<String>,
    /// The signature, lower-case hex.
    pub signature: String,
}

/// Why a request's signature was not accepted; each maps to an AWS error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// No `Authorization` header (and no other form of authentication).
    #[error("Missing Authentication Token")]
    Missing,
    /// The header or a required part of the request is malformed (`IncompleteSignature`).
    #[error("{0}")]
    Incomplete(String),
    /// The request's time is more than 15 minutes from the server's.
    #[error("Signature expired: {request_time} is now earlier than {earliest} ({now} - 15 min.)")]
    Expired {
        /// `x-amz-date` of the request.
        request_time: String,
        /// The server's time minus the allowed skew.
        earliest: String,
        /// The server's time.
        now: String,
    },
    /// The signature does not match the one computed with the key's secret.
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
    )]
    Mismatch,
}

/// Parses an `Authorization` header of the SigV4 header form.
pub fn parse_authorization(value: &str) -> Result<Authorization, SigV4Error> {
    let rest = value
        .trim()
        .strip_prefix(ALGORITHM)
        .ok_or_else(|| SigV4Error::Incomplete(format!("Authorization header requires the {ALGORITHM} algorithm")))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let missing = |what: &str| SigV4Error::Incomplete(format!("Authorization header requires '{what}' parameter"));
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, "aws4_request"] = scope.as_slice() else {
        return Err(SigV4Error::Incomplete(format!(
            "Credential should be scoped to a valid region, service and terminated by aws4_request: {credential:?}"
        )));
    };
    if access_key_id.is_empty() || date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SigV4Error::Incomplete(format!("Credential is malformed: {credential:?}")));
    }
    let signed_headers: Vec<String> = signed.split(';').map(str::to_ascii_lowercase).collect();
    if signed_headers.iter().any(String::is_empty) || !signed_headers.iter().any(|h| h == "host") {
        return Err(SigV4Error::Incomplete("SignedHeaders must list host".into()));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SigV4Error::Incomplete("Signature must be 64 hexadecimal characters".into()));
    }
    Ok(Authorization {
        access_key_id: (*access_key_id).to_owned(),
        date: (*date).to_owned(),
        region: (*region).to_owned(),
        service: (*service).to_owned(),
        signed_headers,
        signature: signature.to_ascii_lowercase(),
    })
}

/// What a signature covers, taken from the request as it arrived.
#[derive(Debug)]
pub struct SignedRequest<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The path as sent (percent-encoded once by the client).
    pub path: &'a str,
    /// The query string as sent, without `?`.
    pub query: &'a str,
    /// Every header, names in any case.
    pub headers: &'a http::HeaderMap,
    /// The body.
    pub body: &'a [u8],
}

/// Checks `request`'s signature against `secret` at `now`; returns the parsed header.
pub fn verify(request: &SignedRequest<'_>, secret: &str, now: SystemTime) -> Result<Authorization, SigV4Error> {
    let header = request.headers.get(http::header::AUTHORIZATION).ok_or(SigV4Error::Missing)?;
    let header = header.to_str().map_err(|_| SigV4Error::Incomplete("the Authorization header is not ASCII".into()))?;
    let auth = parse_authorization(header)?;
    verify_parsed(request, &auth, secret, now)?;
    Ok(auth)
}

/// [`verify`] for an already parsed header (the caller looked the key up by its id).
pub fn verify_parsed(
    request: &SignedRequest<'_>,
    auth: &Authorization,
    secret: &str,
    now: SystemTime,
) -> Result<(), SigV4Error> {
    let amz_date = header_text(request.headers, "x-amz-date")
        .ok_or_else(|| SigV4Error::Incomplete("the request must carry X-Amz-Date".into()))?;
    let request_time = parse_amz_date(&amz_date)
        .ok_or_else(|| SigV4Error::Incomplete(format!("X-Amz-Date {amz_date:?} is not YYYYMMDD'T'HHMMSS'Z'")))?;
    if !amz_date.starts_with(&auth.date) {
        return Err(SigV4Error::Incomplete(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: {:?} != {:?}",
            auth.date,
            &amz_date[..8]
        )));
    }
    let skew = now.duration_since(request_time).or_else(|e| Ok::<_, ()>(e.duration())).unwrap_or_default();
    if skew > MAX_CLOCK_SKEW {
        return Err(SigV4Error::Expired {
            request_time: amz_date,
            earliest: format_amz_date(now - MAX_CLOCK_SKEW),
            now: format_amz_date(now),
        });
    }
    let canonical = canonical_request(request, &auth.signed_headers)?;
    let scope = format!("{}/{}/{}/aws4_request", auth.date, auth.region, auth.service);
    let string_to_sign = format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", hex::encode(sha256(canonical.as_bytes())));
    let key = signing_key(secret, &auth.date, &auth.region, &auth.service);
    let expected = hmac::sign(&key, string_to_sign.as_bytes());
    let given = hex::decode(&auth.signature).map_err(|_| SigV4Error::Mismatch)?;
    hmac::verify(&key, string_to_sign.as_bytes(), &given).map_err(|_| SigV4Error::Mismatch)?;
    debug_assert_eq!(expected.as_ref(), given.as_slice());
    Ok(())
}

/// The canonical request the signature covers.
pub fn canonical_request(request: &SignedRequest<'_>, signed_headers: &[String]) -> Result<String, SigV4Error> {
    let mut headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = request
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| collapse_spaces(&String::from_utf8_lossy(v.as_bytes())))
            .collect();
        if values.is_empty() {
            return Err(SigV4Error::Incomplete(format!("the signed header {name:?} is not in the request")));
        }
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let payload = match header_text(request.headers, "x-amz-content-sha256") {
        Some(hash) => hash,
        None => hex::encode(sha256(request.body)),
    };
    Ok(format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        canonical_uri(request.path),
        canonical_query(request.query),
        headers,
        signed_headers.join(";"),
        payload
    ))
}

/// The path with dot segments removed, encoded once more (services other than S3).
fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/').skip(1) {
        match segment {
            "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::new();
    for s in &segments {
        out.push('/');
        out.push_str(&uri_encode(s));
    }
    if out.is_empty() { "/".into() } else { out }
}

/// Query parameters decoded, encoded AWS's way, sorted by name then value.
fn canonical_query(query: &str) -> String {
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(&decode(k)), uri_encode(&decode(v)))
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// Percent-encodes everything but the unreserved characters `A-Za-z0-9-_.~`.
fn uri_encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

fn collapse_spaces(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn header_text(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_owned())
}

fn sha256(bytes: &[u8]) -> ring::digest::Digest {
    ring::digest::digest(&ring::digest::SHA256, bytes)
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Key {
    let step = |key: &[u8], data: &str| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes());
    let k_date = step(format!("AWS4{secret}").as_bytes(), date);
    let k_region = step(k_date.as_ref(), region);
    let k_service = step(k_region.as_ref(), service);
    let k_signing = step(k_service.as_ref(), "aws4_request");
    hmac::Key::new(hmac::HMAC_SHA256, k_signing.as_ref())
}

const AMZ_DATE: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");

fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let t = time::PrimitiveDateTime::parse(text, AMZ_DATE).ok()?;
    Some(t.assume_utc().into())
}

/// `YYYYMMDD'T'HHMMSS'Z'` of `t` (UTC).
pub fn format_amz_date(t: SystemTime) -> String {
    time::OffsetDateTime::from(t).format(AMZ_DATE).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4;

    /// Signs like the SDKs do (aws-sigv4), returning the headers to send.
    fn signed(
        method: &str,
        uri: &str,
        body: &[u8],
        service: &str,
        secret: &str,
        at: SystemTime,
        token: Option<&str>,
    ) -> http::HeaderMap {
        let creds = aws_credential_types::Credentials::new("AKIDEXAMPLE", secret, token.map(str::to_owned), None, "t");
        let identity = creds.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name(service)
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let base = [("host", "127.0.0.1:4566"), ("content-type", "application/json")];
        let request = SignableRequest::new(method, uri, base.into_iter(), SignableBody::Bytes(body)).unwrap();
        let (instructions, _) = sign(request, &params).unwrap().into_parts();
        let mut headers = http::HeaderMap::new();
        for (k, v) in base {
            headers.insert(k, v.parse().unwrap());
        }
        for (k, v) in instructions.headers() {
            headers.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        headers
    }

    fn request<'a>(method: &'a str, uri: &'a str, headers: &'a http::HeaderMap, body: &'a [u8]) -> SignedRequest<'a> {
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        SignedRequest { method, path, query, headers, body }
    }

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    #[test]
    fn signatures_made_by_the_sdk_signer_verify_and_any_change_breaks_them() {
        let now = SystemTime::now();
        let cases: &[(&str, &str, &[u8], &str)] = &[
            ("GET", "/things/pump-1", b"", "iot"),
            ("GET", "/things?maxResults=2&nextToken=a%2Fb%3D%3D&attributeName=site", b"", "iot"),
            ("POST", "/topics/dt%2Fpump%2Fsite-1%2Ftelemetry?qos=1", b"{\"v\":1}", "iotdata"),
            (
                "GET",
                "/greengrass/v2/components/arn%3Aaws%3Agreengrass%3Aus-east-1%3A0%3Acomponents%3Aa/versions",
                b"",
                "greengrass",
            ),
            ("POST", "/", b"Action=GetRole&RoleName=r&Version=2010-05-08", "iam"),
        ];
        for (method, uri, body, service) in cases {
            for token in [None, Some("session-token")] {
                let headers = signed(method, uri, body, service, SECRET, now, token);
                let auth = verify(&request(method, uri, &headers, body), SECRET, now)
                    .unwrap_or_else(|e| panic!("{method} {uri}: {e}"));
                assert_eq!((auth.access_key_id.as_str(), auth.service.as_str()), ("AKIDEXAMPLE", *service));
                // Another secret, body, method, path or query: refused.
                assert_eq!(verify(&request(method, uri, &headers, body), "other", now), Err(SigV4Error::Mismatch));
                assert_eq!(verify(&request(method, uri, &headers, b"x"), SECRET, now), Err(SigV4Error::Mismatch));
                assert_eq!(verify(&request("PUT", uri, &headers, body), SECRET, now), Err(SigV4Error::Mismatch));
                let other_path = format!("{uri}x");
                assert_eq!(
                    verify(&request(method, &other_path, &headers, body), SECRET, now),
                    Err(SigV4Error::Mismatch)
                );
                if token.is_some() {
                    let mut swapped = headers.clone();
                    swapped.insert("x-amz-security-token", "another".parse().unwrap());
                    assert_eq!(verify(&request(method, uri, &swapped, body), SECRET, now), Err(SigV4Error::Mismatch));
                }
            }
        }
    }

    #[test]
    fn a_request_signed_too_long_ago_or_ahead_is_expired() {
        let now = SystemTime::now();
        for offset in [Duration::from_secs(16 * 60), Duration::from_secs(3600)] {
            for at in [now - offset, now + offset] {
                let headers = signed("GET", "/things", b"", "iot", SECRET, at, None);
                let err = verify(&request("GET", "/things", &headers, b""), SECRET, now).unwrap_err();
                assert!(matches!(err, SigV4Error::Expired { .. }), "{err:?}");
                assert!(err.to_string().starts_with("Signature expired: "), "{err}");
            }
        }
        let headers = signed("GET", "/things", b"", "iot", SECRET, now - Duration::from_secs(14 * 60), None);
        verify(&request("GET", "/things", &headers, b""), SECRET, now).unwrap();
    }

    #[test]
    fn malformed_authorization_headers_are_incomplete_not_mismatched() {
        let ok = "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/iot/aws4_request, SignedHeaders=host;x-amz-date, Signature=";
        let sig = "a".repeat(64);
        parse_authorization(&format!("{ok}{sig}")).unwrap();
        for bad in [
            format!(
                "AWS4-HMAC-SHA512 Credential=AKID/20240101/us-east-1/iot/aws4_request, SignedHeaders=host, Signature={sig}"
            ),
            format!("AWS4-HMAC-SHA256 SignedHeaders=host, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/iot/aws4_request, Signature={sig}"),
            "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/iot/aws4_request, SignedHeaders=host".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKID/2024/us-east-1/iot/aws4_request, SignedHeaders=host, Signature={sig}"
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/iot/aws4, SignedHeaders=host, Signature={sig}"
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/iot/aws4_request, SignedHeaders=x-amz-date, Signature={sig}"
            ),
            format!("{ok}xyz"),
        ] {
            assert!(matches!(parse_authorization(&bad), Err(SigV4Error::Incomplete(_))), "{bad}");
        }
        let headers = http::HeaderMap::new();
        assert_eq!(verify(&request("GET", "/", &headers, b""), SECRET, SystemTime::now()), Err(SigV4Error::Missing));
    }

    #[test]
    fn canonical_parts_follow_aws_rules() {
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri("/a/./b/../c"), "/a/c");
        assert_eq!(canonical_uri("/topics/a%2Fb"), "/topics/a%252Fb", "encoded twice outside S3");
        assert_eq!(canonical_query("b=2&a=1&a=0&c"), "a=0&a=1&b=2&c=");
        assert_eq!(canonical_query("k=a%20b+c&x=%7E"), "k=a%20b%2Bc&x=~");
        assert_eq!(collapse_spaces("  a   b  "), "a b");
    }
}
