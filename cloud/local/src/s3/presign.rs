//! Presigned GET URLs for objects: SigV4 in the query string (AWS's "Authenticating
//! Requests: Using Query Parameters" for S3), signed with the administrator's key
//! pair by the `aws-sigv4` crate, so s3s verifies them like any client's.

use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{
    PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings, UriPathNormalizationMode,
    sign,
};
use aws_sigv4::sign::v4;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::storage::ObjectStoreError;
use crate::credentials::AccessKeyPair;

/// Longest validity S3 allows for a presigned URL: 7 days.
pub const MAX_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// SigV4's URI encoding: everything but the unreserved characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// What stays unencoded in an S3 object key in a URL path: the unreserved
/// characters and `/` (S3 signs the path encoded once, slashes kept).
pub(crate) const KEY_IN_PATH: &AsciiSet = &UNRESERVED.remove(b'/');

/// The path-style URL path of an object: `/{bucket}/{key}` with the key encoded.
pub fn object_path(bucket: &str, key: &str) -> String {
    format!("/{bucket}/{}", utf8_percent_encode(key, KEY_IN_PATH))
}

/// Signs presigned GET URLs for this local cloud's S3.
#[derive(Clone)]
pub struct Presigner {
    /// `http://host:port` of the S3 endpoint, no trailing slash.
    endpoint: String,
    region: String,
    keys: AccessKeyPair,
}

impl std::fmt::Debug for Presigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presigner").field("endpoint", &self.endpoint).field("region", &self.region).finish()
    }
}

impl Presigner {
    /// A presigner for the endpoint `http://host:port`.
    pub fn new(endpoint: &str, region: &str, keys: AccessKeyPair) -> Self {
        Presigner { endpoint: endpoint.trim_end_matches('/').to_string(), region: region.to_string(), keys }
    }

    /// A URL that GETs `bucket`/`key` without credentials from `signed_at` for `expires`
    /// (1 second to 7 days).
    pub fn presign_get_at(
        &self,
        bucket: &str,
        key: &str,
        signed_at: SystemTime,
        expires: Duration,
    ) -> Result<String, ObjectStoreError> {
        if expires < Duration::from_secs(1) || expires > MAX_EXPIRY {
            return Err(ObjectStoreError::InvalidArgument(format!(
                "a presigned URL expires after 1 to {} seconds, not {}",
                MAX_EXPIRY.as_secs(),
                expires.as_secs()
            )));
        }
        let url = format!("{}{}", self.endpoint, object_path(bucket, key));
        let identity = aws_credential_types::Credentials::new(
            &self.keys.access_key_id,
            &self.keys.secret_access_key,
            None,
            None,
            "local-cloud",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(expires);
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let signing = |e: &dyn std::fmt::Display| ObjectStoreError::InvalidArgument(format!("presigning {url}: {e}"));
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(signed_at)
            .settings(settings)
            .build()
            .map_err(|e| signing(&e))?
            .into();
        let request = SignableRequest::new("GET", url.as_str(), std::iter::empty(), SignableBody::UnsignedPayload)
            .map_err(|e| signing(&e))?;
        let (instructions, _signature) = sign(request, &params).map_err(|e| signing(&e))?.into_parts();
        let query: Vec<String> = instructions
            .params()
            .iter()
            .map(|(name, value)| format!("{name}={}", utf8_percent_encode(value, UNRESERVED)))
            .collect();
        Ok(format!("{url}?{}", query.join("&")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_slashes_and_unreserved_characters_and_encode_the_rest() {
        assert_eq!(object_path("b", "dir/file-1_2.~x"), "/b/dir/file-1_2.~x");
        assert_eq!(object_path("b", "a b+c&d%é"), "/b/a%20b%2Bc%26d%25%C3%A9");
    }

    #[test]
    fn a_presigned_url_carries_the_s3_scope_and_its_expiry() {
        let keys = AccessKeyPair { access_key_id: "AKIDEXAMPLE".into(), secret_access_key: "secret".into() };
        let p = Presigner::new("http://127.0.0.1:4566/", "us-east-1", keys);
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let url = p.presign_get_at("bucket", "a b", at, Duration::from_secs(60)).unwrap();
        assert!(url.starts_with("http://127.0.0.1:4566/bucket/a%20b?"), "{url}");
        assert!(url.contains("X-Amz-Credential=AKIDEXAMPLE%2F20231114%2Fus-east-1%2Fs3%2Faws4_request"), "{url}");
        assert!(url.contains("X-Amz-Expires=60") && url.contains("X-Amz-Signature="), "{url}");
        assert_eq!(url, p.presign_get_at("bucket", "a b", at, Duration::from_secs(60)).unwrap(), "deterministic");
        assert!(p.presign_get_at("bucket", "k", at, Duration::from_secs(0)).is_err());
        assert!(p.presign_get_at("bucket", "k", at, MAX_EXPIRY + Duration::from_secs(1)).is_err());
    }
}
