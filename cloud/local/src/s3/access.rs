//! Who may call S3: s3s verifies the SigV4 signature (header or presigned query) with the
//! secret [`IamKeys`] finds for the access key — the administrator's, or live temporary
//! credentials' — and [`IamAccess`] then checks the session token and the caller's IAM policy
//! for the operation's action and resource (`arn:aws:s3:::bucket` or `…:bucket/key`), as the
//! Service Authorization Reference for Amazon S3 names them.

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::path::S3Path;
use s3s::{S3Result, s3_error};

use crate::iam::roles::Refusal;
use crate::iam::{Iam, actions};

/// The secrets S3 verifies signatures with.
#[derive(Debug, Clone)]
pub struct IamKeys(pub Iam);

#[async_trait::async_trait]
impl S3Auth for IamKeys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.secret_of(access_key) {
            Some(secret) => Ok(SecretKey::from(secret.as_str())),
            None => Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS access key Id you provided does not exist in our records (use the pair in endpoints.json)"
            )),
        }
    }
}

/// The IAM check of every S3 request.
#[derive(Debug, Clone)]
pub struct IamAccess(pub Iam);

/// The IAM action of an S3 operation, by the operation's name.
pub fn action_of(operation: &str) -> String {
    let action = match operation {
        "HeadObject" | "GetObjectAttributes" => "GetObject",
        "CreateMultipartUpload" | "UploadPart" | "UploadPartCopy" | "CompleteMultipartUpload" | "CopyObject" => {
            "PutObject"
        }
        "ListParts" => "ListMultipartUploadParts",
        "ListMultipartUploads" => "ListBucketMultipartUploads",
        "ListObjects" | "ListObjectsV2" | "HeadBucket" => "ListBucket",
        "ListObjectVersions" => "ListBucketVersions",
        "DeleteObjects" => "DeleteObject",
        "ListBuckets" => "ListAllMyBuckets",
        other => other,
    };
    format!("s3:{action}")
}

/// The resource ARN of a request path; a multi-object delete names its keys in the body, so
/// it is checked against every key of the bucket (`bucket/*`).
pub fn resource_of(operation: &str, path: &S3Path) -> String {
    match path {
        S3Path::Root => "*".into(),
        S3Path::Bucket { bucket } if operation == "DeleteObjects" => format!("arn:aws:s3:::{bucket}/*"),
        S3Path::Bucket { bucket } => format!("arn:aws:s3:::{bucket}"),
        S3Path::Object { bucket, key } => format!("arn:aws:s3:::{bucket}/{key}"),
    }
}

#[async_trait::async_trait]
impl S3Access for IamAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(credentials) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "Anonymous access is not allowed: sign the request"));
        };
        // Header form first, then the presigned form's query parameter.
        let token =
            cx.headers().get("x-amz-security-token").and_then(|v| v.to_str().ok()).map(str::to_owned).or_else(|| {
                form_urlencoded::parse(cx.uri().query().unwrap_or_default().as_bytes())
                    .find(|(k, _)| k == "X-Amz-Security-Token")
                    .map(|(_, v)| v.into_owned())
            });
        let principal = match self.0.principal(&credentials.access_key, token.as_deref()) {
            Ok(p) => p,
            Err(Refusal::Expired) => return Err(s3_error!(ExpiredToken, "The provided token has expired.")),
            Err(Refusal::UnknownKey | Refusal::BadToken) => {
                return Err(s3_error!(InvalidToken, "The provided token is malformed or otherwise invalid."));
            }
        };
        let operation = cx.s3_op().name();
        let action = action_of(operation);
        let resource = resource_of(operation, cx.s3_path());
        actions::authorize_named(&principal, &action, &resource).map_err(|message| s3_error!(AccessDenied, "{message}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_map_to_the_actions_and_resources_iam_names() {
        let object = S3Path::Object { bucket: "b".into(), key: "k/1".into() };
        let bucket = S3Path::Bucket { bucket: "b".into() };
        let cases = [
            ("PutObject", &object, "s3:PutObject", "arn:aws:s3:::b/k/1"),
            ("UploadPart", &object, "s3:PutObject", "arn:aws:s3:::b/k/1"),
            ("HeadObject", &object, "s3:GetObject", "arn:aws:s3:::b/k/1"),
            ("ListObjectsV2", &bucket, "s3:ListBucket", "arn:aws:s3:::b"),
            ("DeleteObjects", &bucket, "s3:DeleteObject", "arn:aws:s3:::b/*"),
            ("GetBucketLocation", &bucket, "s3:GetBucketLocation", "arn:aws:s3:::b"),
            ("ListBuckets", &S3Path::Root, "s3:ListAllMyBuckets", "*"),
        ];
        for (op, path, action, resource) in cases {
            assert_eq!((action_of(op), resource_of(op, path)), (action.to_owned(), resource.to_owned()), "{op}");
        }
    }
}
