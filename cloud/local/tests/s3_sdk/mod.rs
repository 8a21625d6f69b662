//! S3 on the local cloud, driven by AWS's own `aws-sdk-s3` (path-style, the
//! administrator's key pair from the started cloud): objects, listings, ranges,
//! multipart uploads, signatures, presigned URLs, and a restart.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use local_cloud::s3::ObjectStore;
use local_cloud::server::{Config, LocalCloud};
use s3s::crypto::{Checksum as _, Md5, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::failed;

const MIB: usize = 1024 * 1024;

fn s3_client(cloud: &LocalCloud, access_key_id: &str, secret: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(access_key_id, secret, None, None, "test"))
        .endpoint_url(&cloud.endpoints.http)
        .force_path_style(true)
        .retry_config(RetryConfig::disabled())
        .http_client(crate::common::sdk_http_client())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A client signing with the key pair the cloud advertises in `endpoints.json`.
pub(crate) fn admin(cloud: &LocalCloud) -> aws_sdk_s3::Client {
    let pair = cloud.endpoints.credentials.as_ref().expect("endpoints carry the administrator's key pair");
    s3_client(cloud, &pair.access_key_id, &pair.secret_access_key)
}

async fn body(out: aws_sdk_s3::operation::get_object::GetObjectOutput) -> Vec<u8> {
    out.body.collect().await.expect("object body").into_bytes().to_vec()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 24) as u8 ^ seed).collect()
}

/// One plain HTTP GET of a URL on loopback: status and body.
pub(crate) async fn http_get(url: &str) -> (u16, Vec<u8>) {
    http_get_with(url, "").await
}

/// [`http_get`] with extra header lines (each ending in `\r\n`).
async fn http_get_with(url: &str, headers: &str) -> (u16, Vec<u8>) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (addr, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("response head");
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    (status, response[split + 4..].to_vec())
}

async fn start(dir: &std::path::Path) -> LocalCloud {
    LocalCloud::start(Config::ephemeral(dir)).await.expect("local cloud starts")
}

/// A started cloud (in a fresh data directory) with one bucket, and an administrator's client.
async fn with_bucket(bucket: &str) -> (tempfile::TempDir, LocalCloud, aws_sdk_s3::Client) {
    let dir = tempfile::tempdir().unwrap();
    let cloud = start(dir.path()).await;
    let s3 = admin(&cloud);
    s3.create_bucket().bucket(bucket).send().await.expect("CreateBucket");
    (dir, cloud, s3)
}

#[tokio::test]
async fn s3_buckets_and_objects_round_trip_with_the_rust_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = start(dir.path()).await;
    let s3 = admin(&cloud);
    let on_disk = local_cloud::server::read_endpoints(dir.path()).unwrap();
    assert_eq!(on_disk.credentials, cloud.endpoints.credentials, "endpoints.json advertises the pair");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("endpoints.json")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "endpoints.json carries a secret");

    s3.create_bucket().bucket("artifacts").send().await.expect("CreateBucket");
    let again = failed(s3.create_bucket().bucket("artifacts").send().await);
    assert_eq!(again, ("BucketAlreadyOwnedByYou".into(), 409));
    s3.head_bucket().bucket("artifacts").send().await.expect("HeadBucket");
    assert_eq!(failed(s3.head_bucket().bucket("missing").send().await).1, 404);
    let location = s3.get_bucket_location().bucket("artifacts").send().await.expect("GetBucketLocation");
    assert_eq!(location.location_constraint().map_or("", |l| l.as_str()), "", "us-east-1 is the empty constraint");

    let put = s3
        .put_object()
        .bucket("artifacts")
        .key("com.example/1.0.0/model.onnx")
        .content_type("application/octet-stream")
        .metadata("build", "42")
        .body(ByteStream::from_static(b"model bytes"))
        .send()
        .await
        .expect("PutObject");
    let md5 = hex::encode(Md5::checksum(b"model bytes"));
    assert_eq!(put.e_tag(), Some(format!("\"{md5}\"").as_str()));

    let got = s3.get_object().bucket("artifacts").key("com.example/1.0.0/model.onnx").send().await.expect("GetObject");
    assert_eq!(got.content_type(), Some("application/octet-stream"));
    assert_eq!(got.metadata().and_then(|m| m.get("build")).map(String::as_str), Some("42"));
    assert_eq!(got.content_length(), Some(11));
    assert_eq!(body(got).await, b"model bytes");
    let head = s3.head_object().bucket("artifacts").key("com.example/1.0.0/model.onnx").send().await.expect("Head");
    assert_eq!((head.content_length(), head.e_tag()), (Some(11), Some(format!("\"{md5}\"").as_str())));

    // The same object through the in-process interface other services use.
    let meta = cloud.s3.head("artifacts", "com.example/1.0.0/model.onnx").unwrap().expect("object");
    assert_eq!((meta.size, meta.etag.as_str()), (11, md5.as_str()));
    assert_eq!(meta.sha256, hex::encode(Sha256::checksum(b"model bytes")));

    let (code, status) = failed(s3.get_object().bucket("artifacts").key("nope").send().await);
    assert_eq!((code.as_str(), status), ("NoSuchKey", 404));
    let (code, status) = failed(s3.get_object().bucket("missing").key("k").send().await);
    assert_eq!((code.as_str(), status), ("NoSuchBucket", 404));

    let buckets = s3.list_buckets().send().await.expect("ListBuckets");
    assert_eq!(buckets.buckets().iter().filter_map(|b| b.name()).collect::<Vec<_>>(), ["artifacts"]);

    let (code, status) = failed(s3.delete_bucket().bucket("artifacts").send().await);
    assert_eq!((code.as_str(), status), ("BucketNotEmpty", 409));
    s3.delete_object().bucket("artifacts").key("com.example/1.0.0/model.onnx").send().await.expect("DeleteObject");
    assert_eq!(failed(s3.get_object().bucket("artifacts").key("com.example/1.0.0/model.onnx").send().await).1, 404);
    s3.delete_bucket().bucket("artifacts").send().await.expect("DeleteBucket");
    assert!(s3.list_buckets().send().await.unwrap().buckets().is_empty());
    cloud.shutdown().await;
}

#[tokio::test]
async fn buckets_named_like_iot_routes_are_s3s_when_signed_for_s3() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = start(dir.path()).await;
    let s3 = admin(&cloud);
    // `PUT /things` and `GET /things` are IoT routes too; the signature decides.
    s3.create_bucket().bucket("things").send().await.expect("CreateBucket things");
    s3.put_object().bucket("things").key("shadow").body(ByteStream::from_static(b"x")).send().await.unwrap();
    let listed = s3.list_objects_v2().bucket("things").send().await.expect("ListObjectsV2 on /things");
    assert_eq!(listed.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(), ["shadow"]);
    let got = s3.get_object().bucket("things").key("shadow").send().await.expect("GetObject /things/shadow");
    assert_eq!(body(got).await, b"x");
    cloud.shutdown().await;
}

#[tokio::test]
async fn listings_follow_prefix_delimiter_and_pagination() {
    let (_dir, cloud, s3) = with_bucket("logs").await;
    for key in ["a.txt", "2024/01/x", "2024/01/y", "2024/02/z", "2025/01/x", "b c+d.txt", "z"] {
        s3.put_object().bucket("logs").key(key).body(ByteStream::from_static(b"1")).send().await.unwrap();
    }
    let top = s3.list_objects_v2().bucket("logs").delimiter("/").send().await.unwrap();
    assert_eq!(top.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(), ["a.txt", "b c+d.txt", "z"]);
    assert_eq!(top.common_prefixes().iter().filter_map(|p| p.prefix()).collect::<Vec<_>>(), ["2024/", "2025/"]);
    assert_eq!(top.key_count(), Some(5));

    let months = s3.list_objects_v2().bucket("logs").prefix("2024/").delimiter("/").send().await.unwrap();
    assert!(months.contents().is_empty());
    assert_eq!(
        months.common_prefixes().iter().filter_map(|p| p.prefix()).collect::<Vec<_>>(),
        ["2024/01/", "2024/02/"]
    );

    // Pages of two, keys in byte order, until no token is left.
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let page =
            s3.list_objects_v2().bucket("logs").max_keys(2).set_continuation_token(token.clone()).send().await.unwrap();
        pages += 1;
        keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        assert_eq!(page.is_truncated(), Some(page.next_continuation_token().is_some()));
        token = page.next_continuation_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(keys, ["2024/01/x", "2024/01/y", "2024/02/z", "2025/01/x", "a.txt", "b c+d.txt", "z"]);

    let after = s3.list_objects_v2().bucket("logs").start_after("2025/01/x").send().await.unwrap();
    assert_eq!(after.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(), ["a.txt", "b c+d.txt", "z"]);
    let (code, status) = failed(s3.list_objects_v2().bucket("nope").send().await);
    assert_eq!((code.as_str(), status), ("NoSuchBucket", 404));
    cloud.shutdown().await;
}

#[tokio::test]
async fn ranged_gets_return_206_with_content_range_and_416_when_unsatisfiable() {
    let (_dir, cloud, s3) = with_bucket("bin").await;
    let data = pattern(3 * MIB + 17, 1);
    s3.put_object().bucket("bin").key("big").body(ByteStream::from(data.clone())).send().await.expect("3 MiB put");

    let first = s3.get_object().bucket("bin").key("big").range("bytes=0-9").send().await.unwrap();
    assert_eq!(first.content_range(), Some(format!("bytes 0-9/{}", data.len()).as_str()));
    assert_eq!(body(first).await, &data[..10]);
    let suffix = s3.get_object().bucket("bin").key("big").range("bytes=-5").send().await.unwrap();
    assert_eq!(body(suffix).await, &data[data.len() - 5..]);
    let middle = s3.get_object().bucket("bin").key("big").range(format!("bytes={}-", 2 * MIB)).send().await.unwrap();
    assert_eq!(middle.content_length(), Some((data.len() - 2 * MIB) as i64));
    assert_eq!(body(middle).await, &data[2 * MIB..]);

    let (code, status) =
        failed(s3.get_object().bucket("bin").key("big").range(format!("bytes={}-", data.len())).send().await);
    assert_eq!((code.as_str(), status), ("InvalidRange", 416));

    let url = cloud.s3.presign_get("bin", "big", Duration::from_secs(60)).unwrap();
    let (status, _) = http_get(&url).await;
    assert_eq!(status, 200);
    cloud.shutdown().await;
}

#[tokio::test]
async fn multipart_uploads_check_their_parts_and_take_the_multipart_etag() {
    let (_dir, cloud, s3) = with_bucket("bin").await;
    let parts = [pattern(5 * MIB, 1), pattern(5 * MIB, 2), pattern(MIB + 3, 3)];

    let upload = s3
        .create_multipart_upload()
        .bucket("bin")
        .key("firmware.bin")
        .content_type("application/x-fw")
        .send()
        .await
        .unwrap();
    let id = upload.upload_id().expect("UploadId").to_string();
    let mut etags = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let out = s3
            .upload_part()
            .bucket("bin")
            .key("firmware.bin")
            .upload_id(&id)
            .part_number(i as i32 + 1)
            .body(ByteStream::from(part.clone()))
            .send()
            .await
            .expect("UploadPart");
        let etag = out.e_tag().expect("part ETag").to_string();
        assert_eq!(etag, format!("\"{}\"", hex::encode(Md5::checksum(part))));
        etags.push(etag);
    }
    let listed = s3.list_parts().bucket("bin").key("firmware.bin").upload_id(&id).send().await.unwrap();
    assert_eq!(
        listed.parts().iter().map(|p| (p.part_number(), p.size())).collect::<Vec<_>>(),
        [(Some(1), Some(5 * MIB as i64)), (Some(2), Some(5 * MIB as i64)), (Some(3), Some(MIB as i64 + 3))]
    );

    let completed = |list: &[(i32, &str)]| {
        CompletedMultipartUpload::builder()
            .set_parts(Some(
                list.iter().map(|(n, e)| CompletedPart::builder().part_number(*n).e_tag(*e).build()).collect(),
            ))
            .build()
    };
    let complete = |list: CompletedMultipartUpload| {
        s3.complete_multipart_upload().bucket("bin").key("firmware.bin").upload_id(&id).multipart_upload(list).send()
    };
    let (code, status) = failed(complete(completed(&[(2, &etags[1]), (1, &etags[0])])).await);
    assert_eq!((code.as_str(), status), ("InvalidPartOrder", 400));
    let (code, status) = failed(complete(completed(&[(1, &etags[1]), (2, &etags[1])])).await);
    assert_eq!((code.as_str(), status), ("InvalidPart", 400));
    let (code, _) = failed(complete(completed(&[(3, &etags[2]), (4, &etags[2])])).await);
    assert_eq!(code, "InvalidPart");

    let done = complete(completed(&[(1, &etags[0]), (2, &etags[1]), (3, &etags[2])])).await.expect("Complete");
    let mut md5s = Vec::new();
    for part in &parts {
        md5s.extend(Md5::checksum(part));
    }
    let expected = format!("\"{}-3\"", hex::encode(Md5::checksum(&md5s)));
    assert_eq!(done.e_tag(), Some(expected.as_str()));

    let whole: Vec<u8> = parts.concat();
    let got = s3.get_object().bucket("bin").key("firmware.bin").send().await.unwrap();
    assert_eq!((got.e_tag(), got.content_type()), (Some(expected.as_str()), Some("application/x-fw")));
    assert!(body(got).await == whole, "the object is the parts in order");
    let meta = cloud.s3.head("bin", "firmware.bin").unwrap().unwrap();
    assert_eq!((meta.size, meta.parts_count), (whole.len() as u64, Some(3)));
    let (code, status) = failed(s3.list_parts().bucket("bin").key("firmware.bin").upload_id(&id).send().await);
    assert_eq!((code.as_str(), status), ("NoSuchUpload", 404), "a completed upload is gone");

    // A small first part is refused at completion; an aborted upload is gone.
    let small = s3.create_multipart_upload().bucket("bin").key("small").send().await.unwrap();
    let small_id = small.upload_id().unwrap().to_string();
    let mut small_etags = Vec::new();
    for n in 1..=2 {
        let out = s3
            .upload_part()
            .bucket("bin")
            .key("small")
            .upload_id(&small_id)
            .part_number(n)
            .body(ByteStream::from_static(b"tiny"))
            .send()
            .await
            .unwrap();
        small_etags.push(out.e_tag().unwrap().to_string());
    }
    let list = CompletedMultipartUpload::builder()
        .set_parts(Some(
            (1..=2)
                .map(|n| CompletedPart::builder().part_number(n).e_tag(&small_etags[n as usize - 1]).build())
                .collect(),
        ))
        .build();
    let (code, status) = failed(
        s3.complete_multipart_upload()
            .bucket("bin")
            .key("small")
            .upload_id(&small_id)
            .multipart_upload(list)
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("EntityTooSmall", 400));
    s3.abort_multipart_upload().bucket("bin").key("small").upload_id(&small_id).send().await.expect("Abort");
    let (code, _) = failed(s3.abort_multipart_upload().bucket("bin").key("small").upload_id(&small_id).send().await);
    assert_eq!(code, "NoSuchUpload");
    cloud.shutdown().await;
}

#[tokio::test]
async fn a_large_put_object_is_not_capped_by_the_http_body_limit() {
    let (_dir, cloud, s3) = with_bucket("bin").await;
    let data = pattern(12 * MIB + 5, 9);
    assert!(data.len() > local_cloud::http::MAX_REQUEST_BYTES * 20);
    let put =
        s3.put_object().bucket("bin").key("big").body(ByteStream::from(data.clone())).send().await.expect("12 MiB put");
    assert_eq!(put.e_tag(), Some(format!("\"{}\"", hex::encode(Md5::checksum(&data))).as_str()));
    let tail = s3.get_object().bucket("bin").key("big").range("bytes=-1024").send().await.unwrap();
    assert_eq!(body(tail).await, &data[data.len() - 1024..]);
    cloud.shutdown().await;
}

#[tokio::test]
async fn streamed_bodies_and_declared_digests_are_checked() {
    let (dir, cloud, s3) = with_bucket("bin").await;
    // A body from a file goes out aws-chunked with a CRC32 trailer.
    let data = pattern(6 * MIB + 1, 4);
    let path = dir.path().join("upload.bin");
    std::fs::write(&path, &data).unwrap();
    let put = s3
        .put_object()
        .bucket("bin")
        .key("streamed")
        .body(ByteStream::from_path(&path).await.unwrap())
        .send()
        .await
        .expect("streamed put");
    assert!(put.checksum_crc32().is_some(), "the CRC32 the client declared is echoed");
    assert_eq!(cloud.s3.head("bin", "streamed").unwrap().unwrap().size, data.len() as u64);
    let got = s3.get_object().bucket("bin").key("streamed").send().await.unwrap();
    assert!(body(got).await == data);

    // A wrong CRC32 header, then the MD5 of the empty body for "x".
    let put = || s3.put_object().bucket("bin").key("bad").body(ByteStream::from_static(b"x"));
    for wrong in [put().checksum_crc32("AAAAAA=="), put().content_md5("1B2M2Y8AsgTpgAmY7PhCfg==")] {
        let (code, status) = failed(wrong.send().await);
        assert_eq!((code.as_str(), status), ("BadDigest", 400));
    }
    assert_eq!(cloud.s3.head("bin", "bad").unwrap(), None, "a refused body is not stored");
    cloud.shutdown().await;
}

#[tokio::test]
async fn wrong_credentials_get_403_and_other_services_keep_their_requests() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = start(dir.path()).await;
    let pair = cloud.endpoints.credentials.clone().unwrap();
    let wrong_secret = s3_client(&cloud, &pair.access_key_id, "not-the-secret");
    let (code, status) = failed(wrong_secret.list_buckets().send().await);
    assert_eq!((code.as_str(), status), ("SignatureDoesNotMatch", 403));
    let unknown = s3_client(&cloud, "AKIDUNKNOWN", &pair.secret_access_key);
    let (code, status) = failed(unknown.create_bucket().bucket("bin").send().await);
    assert_eq!((code.as_str(), status), ("InvalidAccessKeyId", 403));
    let (status, body) = http_get(&format!("{}/bin?list-type=2", cloud.endpoints.http)).await;
    assert_eq!(status, 403, "an unsigned S3 request is refused");
    assert!(String::from_utf8_lossy(&body).contains("AccessDenied"));

    // A path no IoT route has, signed for IoT, stays IoT's answer (here: its signature is
    // refused the way IoT refuses it); unsigned, it is S3's.
    let iot = "Authorization: AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/iot/aws4_request, \
               SignedHeaders=host, Signature=00\r\n";
    let (status, body) = http_get_with(&format!("{}/no-such-route/operation", cloud.endpoints.http), iot).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("IncompleteSignatureException"));
    let (status, body) = http_get(&format!("{}/no-such-route/operation", cloud.endpoints.http)).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("AccessDenied"));
    cloud.shutdown().await;
}

/// Changes one character of the `X-Amz-Signature` value.
fn tamper_signature(url: &str) -> String {
    let at = url.find("X-Amz-Signature=").expect("signature") + "X-Amz-Signature=".len();
    let mut bytes = url.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn presigned_gets_work_until_tampered_or_expired() {
    let (_dir, cloud, s3) = with_bucket("bin").await;
    for key in ["artifact.zip", "other.zip"] {
        s3.put_object().bucket("bin").key(key).body(ByteStream::from_static(b"artifact")).send().await.unwrap();
    }

    // Ours, through the interface Greengrass and Jobs will use.
    let url = cloud.s3.presign_get("bin", "artifact.zip", Duration::from_secs(300)).unwrap();
    assert_eq!(http_get(&url).await, (200, b"artifact".to_vec()));
    let (status, body) = http_get(&tamper_signature(&url)).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("SignatureDoesNotMatch"), "{}", String::from_utf8_lossy(&body));
    let (status, body) = http_get(&url.replace("artifact.zip", "other.zip")).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("SignatureDoesNotMatch"));
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let expired =
        cloud.s3.presigner().presign_get_at("bin", "artifact.zip", an_hour_ago, Duration::from_secs(60)).unwrap();
    let (status, body) = http_get(&expired).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("AccessDenied"), "{}", String::from_utf8_lossy(&body));

    // The SDK's presigner agrees with the server.
    let presigned = s3
        .get_object()
        .bucket("bin")
        .key("artifact.zip")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    assert_eq!(http_get(presigned.uri()).await, (200, b"artifact".to_vec()));
    assert_eq!(http_get(&tamper_signature(presigned.uri())).await.0, 403);
    let old = PresigningConfig::builder().start_time(an_hour_ago).expires_in(Duration::from_secs(60)).build().unwrap();
    let expired = s3.get_object().bucket("bin").key("artifact.zip").presigned(old).await.unwrap();
    let (status, body) = http_get(expired.uri()).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("AccessDenied"));
    cloud.shutdown().await;
}

#[tokio::test]
async fn a_restart_keeps_buckets_objects_and_the_key_pair() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = start(dir.path()).await;
    let pair = cloud.endpoints.credentials.clone().unwrap();
    let s3 = admin(&cloud);
    s3.create_bucket().bucket("keep").send().await.unwrap();
    s3.put_object()
        .bucket("keep")
        .key("a/b")
        .metadata("k", "v")
        .body(ByteStream::from_static(b"kept"))
        .send()
        .await
        .unwrap();
    cloud.shutdown().await;

    let cloud = start(dir.path()).await;
    assert_eq!(cloud.endpoints.credentials.as_ref(), Some(&pair), "the generated pair is kept");
    let s3 = admin(&cloud);
    let got = s3.get_object().bucket("keep").key("a/b").send().await.expect("object after restart");
    assert_eq!(got.metadata().and_then(|m| m.get("k")).map(String::as_str), Some("v"));
    assert_eq!(body(got).await, b"kept");
    let buckets = s3.list_buckets().send().await.unwrap();
    assert_eq!(buckets.buckets().iter().filter_map(|b| b.name()).collect::<Vec<_>>(), ["keep"]);
    cloud.shutdown().await;
}

/// `bucket/key` as `x-amz-copy-source` wants it: the key URL-encoded, slashes kept.
fn copy_source(bucket: &str, key: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');
    format!("{bucket}/{}", percent_encoding::utf8_percent_encode(key, KEEP))
}

#[tokio::test]
async fn copy_object_copies_within_and_across_buckets_keeping_or_replacing_metadata() {
    let (_dir, cloud, s3) = with_bucket("src").await;
    s3.create_bucket().bucket("dst").send().await.unwrap();
    let key = "dir/a b+c é.txt";
    s3.put_object()
        .bucket("src")
        .key(key)
        .content_type("text/plain")
        .metadata("build", "7")
        .body(ByteStream::from_static(b"artifact v1"))
        .send()
        .await
        .unwrap();
    let md5 = format!("\"{}\"", hex::encode(Md5::checksum(b"artifact v1")));

    // Same bucket, metadata copied (the default directive).
    let out = s3.copy_object().bucket("src").key("copy 1").copy_source(copy_source("src", key)).send().await;
    let result = out.expect("CopyObject in one bucket").copy_object_result.expect("CopyObjectResult");
    assert_eq!(result.e_tag(), Some(md5.as_str()));
    assert!(result.last_modified().is_some());
    let got = s3.get_object().bucket("src").key("copy 1").send().await.unwrap();
    assert_eq!(got.content_type(), Some("text/plain"));
    assert_eq!(got.metadata().and_then(|m| m.get("build")).map(String::as_str), Some("7"));
    assert_eq!(body(got).await, b"artifact v1");

    // Across buckets, metadata replaced.
    s3.copy_object()
        .bucket("dst")
        .key("released/a.txt")
        .copy_source(copy_source("src", key))
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        .content_type("application/x-artifact")
        .metadata("stage", "released")
        .send()
        .await
        .expect("CopyObject across buckets");
    let got = s3.get_object().bucket("dst").key("released/a.txt").send().await.unwrap();
    assert_eq!(got.content_type(), Some("application/x-artifact"));
    assert_eq!(
        got.metadata().cloned().unwrap_or_default().into_iter().collect::<Vec<_>>(),
        [("stage".to_string(), "released".to_string())]
    );
    assert_eq!(body(got).await, b"artifact v1");
    assert_eq!(
        cloud.s3.head("dst", "released/a.txt").unwrap().unwrap().sha256,
        hex::encode(Sha256::checksum(b"artifact v1"))
    );
    // The source is untouched; the copy is its own object.
    s3.delete_object().bucket("src").key(key).send().await.unwrap();
    assert_eq!(body(s3.get_object().bucket("dst").key("released/a.txt").send().await.unwrap()).await, b"artifact v1");

    // A missing source: NoSuchKey, and the target keeps what it had.
    let (code, status) =
        failed(s3.copy_object().bucket("dst").key("released/a.txt").copy_source(copy_source("src", key)).send().await);
    assert_eq!((code.as_str(), status), ("NoSuchKey", 404));
    assert_eq!(body(s3.get_object().bucket("dst").key("released/a.txt").send().await.unwrap()).await, b"artifact v1");
    let (code, status) =
        failed(s3.copy_object().bucket("dst").key("x").copy_source(copy_source("nope", "k")).send().await);
    assert_eq!((code.as_str(), status), ("NoSuchBucket", 404));
    let (code, status) =
        failed(s3.copy_object().bucket("nope").key("x").copy_source(copy_source("src", "copy 1")).send().await);
    assert_eq!((code.as_str(), status), ("NoSuchBucket", 404));

    // Onto itself only when something changes.
    let (code, status) =
        failed(s3.copy_object().bucket("src").key("copy 1").copy_source(copy_source("src", "copy 1")).send().await);
    assert_eq!((code.as_str(), status), ("InvalidRequest", 400));
    s3.copy_object()
        .bucket("src")
        .key("copy 1")
        .copy_source(copy_source("src", "copy 1"))
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        .metadata("build", "8")
        .send()
        .await
        .expect("a copy onto itself that replaces the metadata");
    let head = s3.head_object().bucket("src").key("copy 1").send().await.unwrap();
    assert_eq!(head.metadata().and_then(|m| m.get("build")).map(String::as_str), Some("8"));
    assert_eq!(head.content_type(), Some(local_cloud::s3::storage::DEFAULT_CONTENT_TYPE), "REPLACE drops the old type");
    assert_eq!(body(s3.get_object().bucket("src").key("copy 1").send().await.unwrap()).await, b"artifact v1");

    // Conditions on the source.
    let (code, status) = failed(
        s3.copy_object()
            .bucket("dst")
            .key("cond")
            .copy_source(copy_source("src", "copy 1"))
            .copy_source_if_match("\"0123\"")
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("PreconditionFailed", 412));
    s3.copy_object()
        .bucket("dst")
        .key("cond")
        .copy_source(copy_source("src", "copy 1"))
        .copy_source_if_match(&md5)
        .send()
        .await
        .expect("the source's ETag matches");
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (an_hour_ago, in_an_hour) =
        (aws_smithy_types::DateTime::from_secs(now - 3600), aws_smithy_types::DateTime::from_secs(now + 3600));
    let copy = || s3.copy_object().bucket("dst").key("cond").copy_source(copy_source("src", "copy 1"));
    let (code, status) = failed(copy().copy_source_if_unmodified_since(an_hour_ago).send().await);
    assert_eq!((code.as_str(), status), ("PreconditionFailed", 412), "changed since an hour ago");
    let (code, status) = failed(copy().copy_source_if_modified_since(in_an_hour).send().await);
    assert_eq!((code.as_str(), status), ("PreconditionFailed", 412), "not changed after an hour from now");
    copy().copy_source_if_modified_since(an_hour_ago).send().await.expect("changed since an hour ago");
    copy().copy_source_if_unmodified_since(in_an_hour).send().await.expect("not changed since");
    copy()
        .copy_source_if_match(&md5)
        .copy_source_if_unmodified_since(an_hour_ago)
        .send()
        .await
        .expect("a matching ETag wins over the date");
    cloud.shutdown().await;
}

#[tokio::test]
async fn delete_objects_deletes_a_batch_reports_per_key_errors_and_refuses_malformed_xml() {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let (_dir, cloud, s3) = with_bucket("bin").await;
    for key in ["a", "b c", "d", "e", "keep"] {
        s3.put_object().bucket("bin").key(key).body(ByteStream::from_static(b"1")).send().await.unwrap();
    }
    let id = |key: &str| ObjectIdentifier::builder().key(key).build().unwrap();
    let batch = Delete::builder()
        .objects(id("a"))
        .objects(id("b c"))
        .objects(id("never-there"))
        .objects(ObjectIdentifier::builder().key("d").version_id("3HL4kqtJlcpXroDTDmJ").build().unwrap())
        .build()
        .unwrap();
    let out = s3.delete_objects().bucket("bin").delete(batch).send().await.expect("DeleteObjects");
    let mut deleted: Vec<_> = out.deleted().iter().filter_map(|d| d.key()).collect();
    deleted.sort();
    assert_eq!(deleted, ["a", "b c", "never-there"], "a missing key counts as deleted, as in S3");
    let errors: Vec<_> = out.errors().iter().map(|e| (e.key(), e.code())).collect();
    assert_eq!(errors, [(Some("d"), Some("NoSuchVersion"))], "one key's error leaves the others deleted");
    let left = s3.list_objects_v2().bucket("bin").send().await.unwrap();
    assert_eq!(left.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(), ["d", "e", "keep"]);

    let quiet = Delete::builder().objects(id("d")).quiet(true).build().unwrap();
    let out = s3.delete_objects().bucket("bin").delete(quiet).send().await.expect("quiet DeleteObjects");
    assert!(out.deleted().is_empty() && out.errors().is_empty(), "Quiet lists only errors: {out:?}");
    assert!(cloud.s3.head("bin", "d").unwrap().is_none());

    let (code, status) = failed(
        s3.delete_objects().bucket("nope").delete(Delete::builder().objects(id("e")).build().unwrap()).send().await,
    );
    assert_eq!((code.as_str(), status), ("NoSuchBucket", 404));

    // A body cut short after the SDK built it (and before it signs it): MalformedXML, nothing deleted.
    let truncated = b"<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Object><Key>e</Key>";
    let result = s3
        .delete_objects()
        .bucket("bin")
        .delete(Delete::builder().objects(id("e")).objects(id("keep")).build().unwrap())
        .customize()
        .mutate_request(move |req| {
            *req.body_mut() = aws_smithy_types::body::SdkBody::from(&truncated[..]);
            req.headers_mut().insert("content-length", truncated.len().to_string());
        })
        .send()
        .await;
    let (code, status) = failed(result);
    assert_eq!((code.as_str(), status), ("MalformedXML", 400));
    let left = s3.list_objects_v2().bucket("bin").send().await.unwrap();
    assert_eq!(left.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(), ["e", "keep"]);
    cloud.shutdown().await;
}

#[tokio::test]
async fn declared_checksums_are_verified_kept_and_returned_in_checksum_mode() {
    use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode};
    use base64::Engine as _;
    let (dir, cloud, s3) = with_bucket("bin").await;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let sha256 = b64(&Sha256::checksum(b"firmware"));

    s3.put_object()
        .bucket("bin")
        .key("fw")
        .checksum_sha256(&sha256)
        .body(ByteStream::from_static(b"firmware"))
        .send()
        .await
        .expect("a right SHA-256");
    let head = s3.head_object().bucket("bin").key("fw").checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
    assert_eq!(head.checksum_sha256(), Some(sha256.as_str()));
    assert_eq!(head.checksum_type().map(|t| t.as_str()), Some("FULL_OBJECT"));
    let plain = s3.head_object().bucket("bin").key("fw").send().await.unwrap();
    assert_eq!(plain.checksum_sha256(), None, "only in checksum mode");
    let got = s3.get_object().bucket("bin").key("fw").checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
    assert_eq!(got.checksum_sha256(), Some(sha256.as_str()));
    assert_eq!(body(got).await, b"firmware");
    let part = s3.get_object().bucket("bin").key("fw").range("bytes=0-3").checksum_mode(ChecksumMode::Enabled);
    let part = part.send().await.unwrap();
    assert_eq!(part.checksum_sha256(), None, "a range's bytes have no whole-object checksum");
    assert_eq!(body(part).await, b"firm");

    // The SDK's own default (CRC32) and a requested CRC32C, computed by the SDK and sent as a
    // header or an aws-chunked trailer; the SDK checks them again on the way back.
    let path = dir.path().join("streamed.bin");
    let data = pattern(MIB + 3, 5);
    std::fs::write(&path, &data).unwrap();
    let streamed = s3
        .put_object()
        .bucket("bin")
        .key("crc32c")
        .checksum_algorithm(ChecksumAlgorithm::Crc32C)
        .body(ByteStream::from_path(&path).await.unwrap())
        .send()
        .await
        .unwrap();
    let crc32c = streamed.checksum_crc32_c().expect("echoed CRC32C").to_string();
    let default = s3.put_object().bucket("bin").key("crc32").body(ByteStream::from_static(b"x")).send().await.unwrap();
    let crc32 = default.checksum_crc32().expect("the SDK sends CRC32 by default").to_string();
    let got = s3.get_object().bucket("bin").key("crc32c").checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
    assert_eq!(got.checksum_crc32_c(), Some(crc32c.as_str()));
    assert!(body(got).await == data);
    let got = s3.head_object().bucket("bin").key("crc32").checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
    assert_eq!(got.checksum_crc32(), Some(crc32.as_str()));

    // A copy carries the checksums, computed again from the copied bytes.
    s3.copy_object().bucket("bin").key("fw-copy").copy_source("bin/fw").send().await.unwrap();
    let head = s3.head_object().bucket("bin").key("fw-copy").checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
    assert_eq!(head.checksum_sha256(), Some(sha256.as_str()));

    // A wrong SHA-256: BadDigest, and the object under that key is still the old one.
    let (code, status) = failed(
        s3.put_object()
            .bucket("bin")
            .key("fw")
            .checksum_sha256(b64(&Sha256::checksum(b"something else")))
            .body(ByteStream::from_static(b"tampered"))
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("BadDigest", 400));
    assert_eq!(body(s3.get_object().bucket("bin").key("fw").send().await.unwrap()).await, b"firmware");

    // Kept across a restart.
    cloud.shutdown().await;
    let cloud = start(dir.path()).await;
    let s3 = admin(&cloud);
    let head = s3.head_object().bucket("bin").key("fw").checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
    assert_eq!(head.checksum_sha256(), Some(sha256.as_str()));
    cloud.shutdown().await;
}

#[tokio::test]
async fn multipart_uploads_keep_part_checksums_and_a_composite_object_checksum() {
    use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, ChecksumType};
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (_dir, cloud, s3) = with_bucket("bin").await;
    let parts = [pattern(5 * MIB, 7), pattern(1000, 8)];
    let upload = s3
        .create_multipart_upload()
        .bucket("bin")
        .key("fw")
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .send()
        .await
        .unwrap();
    assert_eq!(upload.checksum_algorithm(), Some(&ChecksumAlgorithm::Crc32));
    assert_eq!(upload.checksum_type(), Some(&ChecksumType::Composite));
    let id = upload.upload_id().unwrap().to_string();
    let mut completed = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let out = s3
            .upload_part()
            .bucket("bin")
            .key("fw")
            .upload_id(&id)
            .part_number(i as i32 + 1)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(part.clone()))
            .send()
            .await
            .unwrap();
        let crc = b64.encode(s3s::crypto::Crc32::checksum(part));
        assert_eq!(out.checksum_crc32(), Some(crc.as_str()));
        completed.push((i as i32 + 1, out.e_tag().unwrap().to_string(), crc));
    }
    let other = s3
        .upload_part()
        .bucket("bin")
        .key("fw")
        .upload_id(&id)
        .part_number(3)
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .body(ByteStream::from_static(b"other algorithm"))
        .send()
        .await;
    assert_eq!(failed(other), ("InvalidRequest".into(), 400), "a part must use the upload's algorithm");
    let listed = s3.list_parts().bucket("bin").key("fw").upload_id(&id).send().await.unwrap();
    let listed: Vec<_> = listed.parts().iter().map(|p| p.checksum_crc32().unwrap_or_default().to_string()).collect();
    assert_eq!(listed, [completed[0].2.clone(), completed[1].2.clone()], "ListParts shows each part's checksum");

    let list = |wrong: bool| {
        let parts = completed.iter().map(|(n, etag, crc)| {
            let crc = if wrong && *n == 2 { "AAAAAA==".to_string() } else { crc.clone() };
            CompletedPart::builder().part_number(*n).e_tag(etag).checksum_crc32(crc).build()
        });
        CompletedMultipartUpload::builder().set_parts(Some(parts.collect())).build()
    };
    let complete = |wrong: bool| {
        s3.complete_multipart_upload().bucket("bin").key("fw").upload_id(&id).multipart_upload(list(wrong)).send()
    };
    let (code, status) = failed(complete(true).await);
    assert_eq!((code.as_str(), status), ("InvalidPart", 400), "a listed checksum that is not the part's");
    let done = complete(false).await.expect("the upload is still there to complete");

    let mut joined = Vec::new();
    for (_, _, crc) in &completed {
        joined.extend(b64.decode(crc).unwrap());
    }
    let composite = format!("{}-2", b64.encode(s3s::crypto::Crc32::checksum(&joined)));
    assert_eq!(
        (done.checksum_crc32(), done.checksum_type()),
        (Some(composite.as_str()), Some(&ChecksumType::Composite))
    );
    let head = s3.head_object().bucket("bin").key("fw").checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
    assert_eq!(
        (head.checksum_crc32(), head.checksum_type()),
        (Some(composite.as_str()), Some(&ChecksumType::Composite))
    );
    let got = s3.get_object().bucket("bin").key("fw").checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
    assert!(body(got).await == parts.concat(), "the SDK reads a COMPOSITE object without a whole-body check");

    // A copy of it is one part: it gets the whole body's CRC32.
    s3.copy_object().bucket("bin").key("fw-copy").copy_source("bin/fw").send().await.unwrap();
    let copy = s3.head_object().bucket("bin").key("fw-copy").checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
    let whole = b64.encode(s3s::crypto::Crc32::checksum(&parts.concat()));
    assert_eq!((copy.checksum_crc32(), copy.checksum_type()), (Some(whole.as_str()), Some(&ChecksumType::FullObject)));
    cloud.shutdown().await;
}
