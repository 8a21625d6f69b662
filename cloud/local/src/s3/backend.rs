//! The S3 operations, as s3s hands them over: DTOs in, [`Objects`] calls,
//! DTOs out. s3s has already verified the signature and parsed the request
//! (Amazon S3 API Reference, API version 2006-03-01); errors leave as S3's own
//! codes.

use std::collections::BTreeMap;
use std::io::SeekFrom;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use s3s::dto::*;
use s3s::stream::{ByteStream, RemainingLength};
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::storage::{
    Checksums, Entry, NewObject, ObjectMeta, ObjectStoreError, Objects, PartInfo, TempBody, UploadChecksum,
};

/// Default and largest `max-keys` of ListObjectsV2 and `max-parts` of ListParts;
/// also the most keys one DeleteObjects may name.
const MAX_KEYS: i32 = 1000;
/// The owner every bucket and object reports (there is one account).
const OWNER_ID: &str = "local-cloud";

/// The `impl s3s::S3` of the local cloud.
#[derive(Debug, Clone)]
pub struct Backend {
    objects: Objects,
}

impl Backend {
    /// Serves `objects`.
    pub fn new(objects: Objects) -> Self {
        Backend { objects }
    }
}

impl From<ObjectStoreError> for S3Error {
    fn from(e: ObjectStoreError) -> Self {
        let code = match &e {
            ObjectStoreError::NoSuchBucket(_) => S3ErrorCode::NoSuchBucket,
            ObjectStoreError::NoSuchKey { .. } => S3ErrorCode::NoSuchKey,
            ObjectStoreError::NoSuchUpload(_) => S3ErrorCode::NoSuchUpload,
            ObjectStoreError::BucketAlreadyOwnedByYou(_) => S3ErrorCode::BucketAlreadyOwnedByYou,
            ObjectStoreError::BucketNotEmpty(_) => S3ErrorCode::BucketNotEmpty,
            ObjectStoreError::InvalidPart(_) => S3ErrorCode::InvalidPart,
            ObjectStoreError::InvalidPartOrder(_) => S3ErrorCode::InvalidPartOrder,
            ObjectStoreError::EntityTooSmall { .. } => S3ErrorCode::EntityTooSmall,
            ObjectStoreError::InvalidArgument(_) => S3ErrorCode::InvalidArgument,
            ObjectStoreError::BadDigest(_) => S3ErrorCode::BadDigest,
            ObjectStoreError::IncompleteBody(_) => S3ErrorCode::IncompleteBody,
            ObjectStoreError::Store(_) | ObjectStoreError::Io { .. } | ObjectStoreError::Corrupt { .. } => {
                tracing::error!(error = %e, "S3 storage failed");
                return S3Error::with_message(
                    S3ErrorCode::InternalError,
                    "the local cloud could not read or write its S3 data",
                );
            }
        };
        S3Error::with_message(code, e.to_string())
    }
}

/// `$shape { checksum_crc32: $from.checksum_crc32, … }` for the five checksum members that
/// S3's object inputs, outputs and [`Checksum`] share, the rest defaulted.
macro_rules! with_checksums {
    ($shape:ident, $from:expr) => {
        $shape {
            checksum_crc32: $from.checksum_crc32,
            checksum_crc32c: $from.checksum_crc32c,
            checksum_sha1: $from.checksum_sha1,
            checksum_sha256: $from.checksum_sha256,
            checksum_crc64nvme: $from.checksum_crc64nvme,
            ..Default::default()
        }
    };
}

fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

fn etag(meta: &ObjectMeta) -> ETag {
    ETag::Strong(meta.etag.clone())
}

fn user_metadata(metadata: Option<Metadata>) -> BTreeMap<String, String> {
    metadata.into_iter().flatten().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect()
}

fn metadata_out(meta: &ObjectMeta) -> Option<Metadata> {
    (!meta.metadata.is_empty()).then(|| meta.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// What a verified [`Checksum`] leaves in the object's record.
fn kept(c: Checksum) -> Checksums {
    Checksums {
        crc32: c.checksum_crc32,
        crc32c: c.checksum_crc32c,
        sha1: c.checksum_sha1,
        sha256: c.checksum_sha256,
        crc64nvme: c.checksum_crc64nvme,
    }
}

/// The stored checksums as response members.
fn checksum_dto(c: &Checksums) -> Checksum {
    Checksum {
        checksum_crc32: c.crc32.clone(),
        checksum_crc32c: c.crc32c.clone(),
        checksum_sha1: c.sha1.clone(),
        checksum_sha256: c.sha256.clone(),
        checksum_crc64nvme: c.crc64nvme.clone(),
        checksum_type: None,
    }
}

/// The checksums GetObject/HeadObject return: only with `x-amz-checksum-mode: ENABLED`, only for
/// a read of the whole object (a range's bytes do not match a whole-object checksum), and only
/// what was verified at upload.
fn checksums_out(meta: &ObjectMeta, mode: Option<&ChecksumMode>, whole: bool) -> Option<Checksum> {
    let enabled = mode.is_some_and(|m| m.as_str() == ChecksumMode::ENABLED);
    (enabled && whole && !meta.checksums.is_empty()).then(|| checksum_dto(&meta.checksums))
}

/// COMPOSITE for a multipart object's checksum of the parts' checksums (its value ends in
/// `-{parts}`), FULL_OBJECT for a checksum of the whole body.
fn checksum_type_of(c: &Checksums) -> ChecksumType {
    let values = [&c.crc32, &c.crc32c, &c.sha1, &c.sha256, &c.crc64nvme];
    if values.iter().any(|v| v.as_deref().is_some_and(|v| v.contains('-'))) {
        ChecksumType::from_static(ChecksumType::COMPOSITE)
    } else {
        ChecksumType::from_static(ChecksumType::FULL_OBJECT)
    }
}

/// Every checksum algorithm S3 knows, as `x-amz-checksum-algorithm` names it.
const ALGORITHMS: [&str; 5] = [
    ChecksumAlgorithm::CRC32,
    ChecksumAlgorithm::CRC32C,
    ChecksumAlgorithm::SHA1,
    ChecksumAlgorithm::SHA256,
    ChecksumAlgorithm::CRC64NVME,
];

/// The member of `c` that holds `algorithm`'s checksum.
fn member<'a>(c: &'a mut Checksum, algorithm: &str) -> Option<&'a mut Option<String>> {
    match algorithm {
        ChecksumAlgorithm::CRC32 => Some(&mut c.checksum_crc32),
        ChecksumAlgorithm::CRC32C => Some(&mut c.checksum_crc32c),
        ChecksumAlgorithm::SHA1 => Some(&mut c.checksum_sha1),
        ChecksumAlgorithm::SHA256 => Some(&mut c.checksum_sha256),
        ChecksumAlgorithm::CRC64NVME => Some(&mut c.checksum_crc64nvme),
        _ => None,
    }
}

/// `algorithm`'s checksum in `c`, if there is one.
fn checksum_of(mut c: Checksum, algorithm: &str) -> Option<String> {
    member(&mut c, algorithm).and_then(Option::take)
}

/// A [`Checksum`] with only `algorithm`'s member set.
fn only(algorithm: &str, value: Option<String>) -> Checksum {
    let mut c = Checksum::default();
    if let Some(slot) = member(&mut c, algorithm) {
        *slot = value;
    }
    c
}

/// The COMPOSITE checksum of a multipart object: the algorithm over the concatenated binary
/// checksums of the parts, base64, then `-{parts}` (Amazon S3 User Guide, "Checking object
/// integrity", multipart uploads). `None` when a part has no checksum.
fn composite(algorithm: &str, parts: &[&PartInfo]) -> Result<Option<String>, ObjectStoreError> {
    use base64::Engine as _;
    let algorithm_dto = ChecksumAlgorithm::from(algorithm.to_string());
    let mut hasher = Declared::new(Some(&algorithm_dto), Checksum::default(), None).hasher;
    for part in parts {
        let Some(value) = &part.checksum else { return Ok(None) };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|_| ObjectStoreError::InvalidArgument(format!("part {} has a malformed checksum", part.number)))?;
        hasher.update(&raw);
    }
    Ok(checksum_of(hasher.finalize(), algorithm).map(|v| format!("{v}-{}", parts.len())))
}

/// The checksums a client declared for a body, to compare with what arrived.
struct Declared {
    hasher: s3s::checksum::ChecksumHasher,
    expected: Checksum,
    content_md5: Option<String>,
}

impl Declared {
    fn new(algorithm: Option<&ChecksumAlgorithm>, expected: Checksum, content_md5: Option<String>) -> Self {
        let mut hasher = s3s::checksum::ChecksumHasher::default();
        let wanted = |present: bool, name: &str| present || algorithm.is_some_and(|a| a.as_str() == name);
        if wanted(expected.checksum_crc32.is_some(), ChecksumAlgorithm::CRC32) {
            hasher.crc32 = Some(Default::default());
        }
        if wanted(expected.checksum_crc32c.is_some(), ChecksumAlgorithm::CRC32C) {
            hasher.crc32c = Some(Default::default());
        }
        if wanted(expected.checksum_sha1.is_some(), ChecksumAlgorithm::SHA1) {
            hasher.sha1 = Some(Default::default());
        }
        if wanted(expected.checksum_sha256.is_some(), ChecksumAlgorithm::SHA256) {
            hasher.sha256 = Some(Default::default());
        }
        if wanted(expected.checksum_crc64nvme.is_some(), ChecksumAlgorithm::CRC64NVME) {
            hasher.crc64nvme = Some(Default::default());
        }
        Declared { hasher, expected, content_md5 }
    }

    /// Compares the computed digests with the declared ones (headers, or the
    /// aws-chunked trailer that arrives after the body); returns the checksums to echo.
    fn verify(self, temp: &TempBody, trailers: Option<s3s::TrailingHeaders>) -> Result<Checksum, ObjectStoreError> {
        use base64::Engine as _;
        if let Some(md5) = &self.content_md5 {
            let declared = base64::engine::general_purpose::STANDARD
                .decode(md5.trim())
                .map_err(|_| ObjectStoreError::InvalidArgument(format!("Content-MD5 {md5:?} is not base64")))?;
            if hex::encode(declared) != temp.md5 {
                return Err(ObjectStoreError::BadDigest(
                    "the Content-MD5 you specified did not match what we received".into(),
                ));
            }
        }
        let mut expected = self.expected;
        if let Some(trailers) = trailers.and_then(|t| t.take()) {
            let read = |name: &str| trailers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
            expected.checksum_crc32 = expected.checksum_crc32.or_else(|| read("x-amz-checksum-crc32"));
            expected.checksum_crc32c = expected.checksum_crc32c.or_else(|| read("x-amz-checksum-crc32c"));
            expected.checksum_sha1 = expected.checksum_sha1.or_else(|| read("x-amz-checksum-sha1"));
            expected.checksum_sha256 = expected.checksum_sha256.or_else(|| read("x-amz-checksum-sha256"));
            expected.checksum_crc64nvme = expected.checksum_crc64nvme.or_else(|| read("x-amz-checksum-crc64nvme"));
        }
        let computed = self.hasher.finalize();
        let pairs = [
            ("CRC32", &expected.checksum_crc32, &computed.checksum_crc32),
            ("CRC32C", &expected.checksum_crc32c, &computed.checksum_crc32c),
            ("SHA1", &expected.checksum_sha1, &computed.checksum_sha1),
            ("SHA256", &expected.checksum_sha256, &computed.checksum_sha256),
            ("CRC64NVME", &expected.checksum_crc64nvme, &computed.checksum_crc64nvme),
        ];
        for (name, want, got) in pairs {
            if let Some(want) = want
                && Some(want) != got.as_ref()
            {
                return Err(ObjectStoreError::BadDigest(format!(
                    "the {name} you specified did not match the calculated checksum"
                )));
            }
        }
        Ok(computed)
    }
}

/// Reads a body into a temporary file while computing the declared checksums.
async fn receive(objects: &Objects, body: Option<StreamingBlob>, declared: &mut Declared) -> S3Result<TempBody> {
    let body = body.unwrap_or_else(|| StreamingBlob::wrap(futures::stream::empty::<Result<Bytes, std::io::Error>>()));
    Ok(objects.write_temp(body, |chunk| declared.hasher.update(chunk)).await?)
}

/// A file section as a response body whose length s3s knows in advance.
struct FileBody {
    inner: ReaderStream<tokio::io::Take<tokio::fs::File>>,
    remaining: usize,
}

impl Stream for FileBody {
    type Item = Result<Bytes, s3s::StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            self.remaining = self.remaining.saturating_sub(chunk.len());
        }
        polled.map(|o| o.map(|r| r.map_err(|e| Box::new(e) as s3s::StdError)))
    }
}

impl ByteStream for FileBody {
    fn remaining_length(&self) -> RemainingLength {
        RemainingLength::new_exact(self.remaining)
    }
}

/// Where a ranged read starts, how long it is, and its `Content-Range`
/// (`None` for the whole object).
pub fn resolve_range(range: Option<&Range>, size: u64) -> S3Result<(u64, u64, Option<String>)> {
    match range {
        None => Ok((0, size, None)),
        Some(range) => {
            let span = range.check(size).map_err(|_| {
                S3Error::with_message(
                    S3ErrorCode::InvalidRange,
                    format!("the requested range is not satisfiable for an object of {size} bytes"),
                )
            })?;
            let content_range = format!("bytes {}-{}/{size}", span.start, span.end - 1);
            Ok((span.start, span.end - span.start, Some(content_range)))
        }
    }
}

fn head_output(meta: &ObjectMeta) -> HeadObjectOutput {
    HeadObjectOutput {
        accept_ranges: Some("bytes".into()),
        content_length: Some(meta.size as i64),
        content_type: Some(meta.content_type.clone()),
        e_tag: Some(etag(meta)),
        last_modified: Some(timestamp(meta.last_modified_ms)),
        metadata: metadata_out(meta),
        parts_count: meta.parts_count.map(|n| n as i32),
        ..Default::default()
    }
}

/// `If-Match` / `If-None-Match` against the stored ETag: 412, or 304 for a read.
fn check_conditions(
    meta: &ObjectMeta,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<()> {
    let current = etag(meta);
    if let Some(cond) = if_match {
        let ok = match cond {
            ETagCondition::Any => true,
            ETagCondition::ETag(e) => current.strong_cmp(e),
        };
        if !ok {
            return Err(s3_error!(PreconditionFailed, "At least one of the pre-conditions you specified did not hold"));
        }
    }
    if let Some(cond) = if_none_match {
        let hit = match cond {
            ETagCondition::Any => true,
            ETagCondition::ETag(e) => current.weak_cmp(e),
        };
        if hit {
            let mut err = S3Error::new(S3ErrorCode::NotModified);
            err.set_status_code(http::StatusCode::NOT_MODIFIED);
            return Err(err);
        }
    }
    Ok(())
}

/// Whether an `If-Match`-style condition holds for the object.
fn matches_etag(meta: &ObjectMeta, cond: &ETagCondition) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => etag(meta).strong_cmp(e),
    }
}

fn url_encode(s: String, encode: bool) -> String {
    if encode { percent_encoding::utf8_percent_encode(&s, super::presign::KEY_IN_PATH).to_string() } else { s }
}

fn continuation_token(after: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(after)
}

fn parse_continuation_token(token: &str) -> S3Result<String> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| s3_error!(InvalidArgument, "The continuation token provided is incorrect"))
}

#[async_trait::async_trait]
impl S3 for Backend {
    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let input = req.input;
        let region = input
            .create_bucket_configuration
            .and_then(|c| c.location_constraint)
            .map(|l| l.as_str().to_string())
            .filter(|l| !l.is_empty());
        self.objects.create_bucket(&input.bucket, region.as_deref())?;
        Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{}", input.bucket)) }))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        let region = self.objects.bucket_region(&req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput { bucket_region: Some(region), ..Default::default() }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let region = self.objects.bucket_region(&req.input.bucket)?;
        // us-east-1 is reported as an empty location constraint, as S3 does.
        let location_constraint = (region != "us-east-1").then(|| BucketLocationConstraint::from(region));
        Ok(S3Response::new(GetBucketLocationOutput { location_constraint }))
    }

    async fn list_buckets(&self, _req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = self
            .objects
            .list_buckets()?
            .into_iter()
            .map(|b| Bucket {
                name: Some(b.name),
                creation_date: Some(timestamp(b.created_ms)),
                bucket_region: Some(b.region),
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner { id: Some(OWNER_ID.into()), display_name: Some(OWNER_ID.into()) }),
            ..Default::default()
        }))
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.objects.delete_bucket(&req.input.bucket)?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let trailers = req.trailing_headers;
        let input = req.input;
        self.objects.bucket_region(&input.bucket)?;
        let expected = with_checksums!(Checksum, input);
        let mut declared = Declared::new(input.checksum_algorithm.as_ref(), expected, input.content_md5);
        let temp = receive(&self.objects, input.body, &mut declared).await?;
        if let Some(length) = input.content_length
            && u64::try_from(length).ok() != Some(temp.size)
        {
            return Err(s3_error!(IncompleteBody, "got {} bytes of the {length} announced", temp.size));
        }
        let checksums = declared.verify(&temp, trailers)?;
        let new = NewObject {
            content_type: input.content_type,
            metadata: user_metadata(input.metadata),
            checksums: kept(checksums.clone()),
        };
        let meta = self.objects.commit_object(&input.bucket, &input.key, temp, new).await?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&meta)),
            size: Some(meta.size as i64),
            ..with_checksums!(PutObjectOutput, checksums)
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let (meta, file) = self.objects.open_object(&input.bucket, &input.key)?;
        check_conditions(&meta, input.if_match.as_ref(), input.if_none_match.as_ref())?;
        let (start, length, content_range) = resolve_range(input.range.as_ref(), meta.size)?;
        let mut file = tokio::fs::File::from_std(file);
        if start > 0 {
            file.seek(SeekFrom::Start(start)).await.map_err(S3Error::internal_error)?;
        }
        let remaining = usize::try_from(length).map_err(S3Error::internal_error)?;
        let body = FileBody { inner: ReaderStream::with_capacity(file.take(length), 64 * 1024), remaining };
        let head = head_output(&meta);
        let checksums = checksums_out(&meta, input.checksum_mode.as_ref(), content_range.is_none());
        let checksum_type = checksums.as_ref().map(|_| checksum_type_of(&meta.checksums));
        let checksums = checksums.unwrap_or_default();
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::new(body)),
            checksum_type,
            checksum_crc32: checksums.checksum_crc32,
            checksum_crc32c: checksums.checksum_crc32c,
            checksum_sha1: checksums.checksum_sha1,
            checksum_sha256: checksums.checksum_sha256,
            checksum_crc64nvme: checksums.checksum_crc64nvme,
            accept_ranges: head.accept_ranges,
            content_length: Some(length as i64),
            content_range,
            content_type: head.content_type,
            e_tag: head.e_tag,
            last_modified: head.last_modified,
            metadata: head.metadata,
            parts_count: head.parts_count,
            ..Default::default()
        }))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let meta = self.objects.head(&input.bucket, &input.key)?.ok_or_else(|| {
            S3Error::from(ObjectStoreError::NoSuchKey { bucket: input.bucket.clone(), key: input.key.clone() })
        })?;
        check_conditions(&meta, input.if_match.as_ref(), input.if_none_match.as_ref())?;
        let mut out = head_output(&meta);
        if let Some(range) = input.range.as_ref() {
            let (_, length, content_range) = resolve_range(Some(range), meta.size)?;
            out.content_length = Some(length as i64);
            out.content_range = content_range;
        }
        let whole = out.content_range.is_none() && input.part_number.is_none();
        if let Some(c) = checksums_out(&meta, input.checksum_mode.as_ref(), whole) {
            out.checksum_crc32 = c.checksum_crc32;
            out.checksum_crc32c = c.checksum_crc32c;
            out.checksum_sha1 = c.checksum_sha1;
            out.checksum_sha256 = c.checksum_sha256;
            out.checksum_crc64nvme = c.checksum_crc64nvme;
            out.checksum_type = Some(checksum_type_of(&meta.checksums));
        }
        Ok(S3Response::new(out))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let max_keys = input.max_keys.unwrap_or(MAX_KEYS);
        if max_keys < 0 {
            return Err(s3_error!(InvalidArgument, "max-keys must be a non-negative integer"));
        }
        let after = match &input.continuation_token {
            Some(token) => Some(parse_continuation_token(token)?),
            None => input.start_after.clone(),
        };
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let page = self.objects.list(
            &input.bucket,
            &prefix,
            delimiter.as_deref(),
            after.as_deref(),
            max_keys.min(MAX_KEYS) as usize,
        )?;
        let encode = input.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
        let mut contents = Vec::new();
        let mut common_prefixes = Vec::new();
        let key_count = page.entries.len() as i32;
        for entry in page.entries {
            match entry {
                Entry::Object(key, meta) => contents.push(Object {
                    key: Some(url_encode(key, encode)),
                    e_tag: Some(etag(&meta)),
                    last_modified: Some(timestamp(meta.last_modified_ms)),
                    size: Some(meta.size as i64),
                    storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
                    owner: input
                        .fetch_owner
                        .unwrap_or(false)
                        .then(|| Owner { id: Some(OWNER_ID.into()), display_name: Some(OWNER_ID.into()) }),
                    ..Default::default()
                }),
                Entry::Prefix(p) => common_prefixes.push(CommonPrefix { prefix: Some(url_encode(p, encode)) }),
            }
        }
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(url_encode(prefix, encode)),
            delimiter: delimiter.map(|d| url_encode(d, encode)),
            max_keys: Some(max_keys),
            key_count: Some(key_count),
            is_truncated: Some(page.next_after.is_some()),
            continuation_token: input.continuation_token,
            next_continuation_token: page.next_after.as_deref().map(continuation_token),
            start_after: input.start_after.map(|s| url_encode(s, encode)),
            encoding_type: input.encoding_type,
            contents: (!contents.is_empty()).then_some(contents),
            common_prefixes: (!common_prefixes.is_empty()).then_some(common_prefixes),
            ..Default::default()
        }))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.objects.delete_object(&req.input.bucket, &req.input.key)?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        let objects = input.delete.objects;
        if objects.is_empty() || objects.len() > MAX_KEYS as usize {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema \
                 (DeleteObjects names 1 to {MAX_KEYS} keys, not {})",
                objects.len()
            ));
        }
        self.objects.bucket_region(&input.bucket)?;
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for object in objects {
            // No versioning here: only the null version exists.
            if let Some(version) = object.version_id.as_deref().filter(|v| *v != "null") {
                errors.push(Error {
                    code: Some("NoSuchVersion".into()),
                    message: Some(format!("the version {version:?} does not exist (versioning is not supported)")),
                    key: Some(object.key),
                    version_id: object.version_id,
                });
                continue;
            }
            match self.objects.delete_object(&input.bucket, &object.key) {
                Ok(()) => {
                    if !quiet {
                        deleted.push(DeletedObject {
                            key: Some(object.key),
                            version_id: object.version_id,
                            ..Default::default()
                        });
                    }
                }
                Err(e) => {
                    let e = S3Error::from(e);
                    errors.push(Error {
                        code: Some(e.code().as_str().to_string()),
                        message: e.message().map(str::to_string),
                        key: Some(object.key),
                        version_id: object.version_id,
                    });
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: (!deleted.is_empty()).then_some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        let (src_bucket, src_key) = match &input.copy_source {
            CopySource::Bucket { bucket, key, version_id } => {
                if version_id.as_deref().is_some_and(|v| v != "null") {
                    return Err(s3_error!(NoSuchVersion, "versioning is not supported: only the null version exists"));
                }
                (bucket.to_string(), key.to_string())
            }
            _ => return Err(s3_error!(NotImplemented, "copying from an access point or outpost ARN is not supported")),
        };
        let replace = match input.metadata_directive.as_ref().map(MetadataDirective::as_str) {
            None | Some(MetadataDirective::COPY) => false,
            Some(MetadataDirective::REPLACE) => true,
            Some(other) => {
                return Err(s3_error!(InvalidArgument, "Unknown metadata directive {other:?}: use COPY or REPLACE"));
            }
        };
        let (source, file) = self.objects.open_object(&src_bucket, &src_key)?;
        if let Some(cond) = input.copy_source_if_match.as_ref()
            && !matches_etag(&source, cond)
        {
            return Err(s3_error!(PreconditionFailed, "x-amz-copy-source-if-match did not hold"));
        }
        if let Some(cond) = input.copy_source_if_none_match.as_ref()
            && matches_etag(&source, cond)
        {
            return Err(s3_error!(PreconditionFailed, "x-amz-copy-source-if-none-match did not hold"));
        }
        // HTTP dates have whole seconds; a date condition yields to an ETag condition given with it.
        let modified = timestamp(source.last_modified_ms / 1000 * 1000);
        if let Some(since) = &input.copy_source_if_unmodified_since
            && input.copy_source_if_match.is_none()
            && modified > *since
        {
            return Err(s3_error!(PreconditionFailed, "x-amz-copy-source-if-unmodified-since did not hold"));
        }
        if let Some(since) = &input.copy_source_if_modified_since
            && input.copy_source_if_none_match.is_none()
            && modified <= *since
        {
            return Err(s3_error!(PreconditionFailed, "x-amz-copy-source-if-modified-since did not hold"));
        }
        if src_bucket == input.bucket && src_key == input.key && !replace && input.checksum_algorithm.is_none() {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the \
                 object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        self.objects.bucket_region(&input.bucket)?;
        // The bytes are copied (not linked) and hashed again, so the new object's ETag and
        // checksums describe what was written, as for any upload; the source's whole-body
        // checksums are expected of the copy. A COMPOSITE one is not of the body: the copy gets
        // that algorithm's whole-body checksum instead.
        let mut expected = checksum_dto(&source.checksums);
        let mut algorithm = input.checksum_algorithm.clone();
        for name in ALGORITHMS {
            if let Some(slot) = member(&mut expected, name)
                && slot.as_deref().is_some_and(|v| v.contains('-'))
            {
                *slot = None;
                algorithm.get_or_insert_with(|| ChecksumAlgorithm::from_static(name));
            }
        }
        let mut declared = Declared::new(algorithm.as_ref(), expected, None);
        let body = ReaderStream::with_capacity(tokio::fs::File::from_std(file), 64 * 1024);
        let temp = self.objects.write_temp(body, |chunk| declared.hasher.update(chunk)).await?;
        if temp.size != source.size {
            return Err(S3Error::internal_error(ObjectStoreError::IncompleteBody(format!(
                "copied {} of the source's {} bytes",
                temp.size, source.size
            ))));
        }
        let checksums = declared.verify(&temp, None).map_err(|e| {
            tracing::error!(bucket = %src_bucket, key = %src_key, error = %e, "a stored S3 object no longer matches its checksums");
            S3Error::with_message(S3ErrorCode::InternalError, "the source object's stored bytes do not match its checksums")
        })?;
        let new = if replace {
            NewObject {
                content_type: input.content_type,
                metadata: user_metadata(input.metadata),
                checksums: kept(checksums),
            }
        } else {
            NewObject {
                content_type: Some(source.content_type.clone()),
                metadata: source.metadata.clone(),
                checksums: kept(checksums),
            }
        };
        let meta = self.objects.commit_object(&input.bucket, &input.key, temp, new).await?;
        let c = checksum_dto(&meta.checksums);
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&meta)),
                last_modified: Some(timestamp(meta.last_modified_ms)),
                checksum_type: (!meta.checksums.is_empty()).then(|| checksum_type_of(&meta.checksums)),
                ..with_checksums!(CopyObjectResult, c)
            }),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        let new = NewObject {
            content_type: input.content_type,
            metadata: user_metadata(input.metadata),
            checksums: Checksums::default(),
        };
        let full_object = input.checksum_type.as_ref().is_some_and(|t| t.as_str() == ChecksumType::FULL_OBJECT);
        let checksum = input
            .checksum_algorithm
            .as_ref()
            .map(|a| UploadChecksum { algorithm: a.as_str().to_string(), full_object });
        let upload_id = self.objects.create_upload(&input.bucket, &input.key, new, checksum)?;
        let checksum_type = input.checksum_algorithm.as_ref().map(|_| {
            ChecksumType::from_static(if full_object { ChecksumType::FULL_OBJECT } else { ChecksumType::COMPOSITE })
        });
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            checksum_algorithm: input.checksum_algorithm,
            checksum_type,
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let trailers = req.trailing_headers;
        let input = req.input;
        let upload = self.objects.check_upload(&input.bucket, &input.key, &input.upload_id)?;
        let expected = with_checksums!(Checksum, input);
        // A part of an upload created with a checksum algorithm always gets that checksum, and no other.
        if let Some(upload) = &upload {
            let mut sent = expected.clone();
            let asked = input.checksum_algorithm.as_ref().map(ChecksumAlgorithm::as_str);
            let named = ALGORITHMS.into_iter().filter(|a| member(&mut sent, a).is_some_and(|v| v.is_some()));
            if let Some(other) = asked.into_iter().chain(named).find(|a| *a != upload.algorithm) {
                return Err(s3_error!(
                    InvalidRequest,
                    "Checksum Type mismatch occurred, expected checksum Type: {}, actual checksum Type: {}",
                    upload.algorithm.to_ascii_lowercase(),
                    other.to_ascii_lowercase()
                ));
            }
        }
        let algorithm = input
            .checksum_algorithm
            .clone()
            .or_else(|| upload.as_ref().map(|u| ChecksumAlgorithm::from(u.algorithm.clone())));
        let mut declared = Declared::new(algorithm.as_ref(), expected, input.content_md5);
        let temp = receive(&self.objects, input.body, &mut declared).await?;
        let checksums = declared.verify(&temp, trailers)?;
        let part_checksum = upload.as_ref().and_then(|u| checksum_of(checksums.clone(), &u.algorithm));
        let part = self
            .objects
            .commit_part(&input.bucket, &input.key, &input.upload_id, input.part_number, temp, part_checksum)
            .await?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(part.etag)),
            ..with_checksums!(UploadPartOutput, checksums)
        }))
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let max_parts = input.max_parts.unwrap_or(MAX_KEYS).clamp(0, MAX_KEYS);
        let marker = input.part_number_marker.unwrap_or(0);
        let algorithm = self.objects.check_upload(&input.bucket, &input.key, &input.upload_id)?.map(|u| u.algorithm);
        let all = self.objects.list_parts(&input.bucket, &input.key, &input.upload_id)?;
        let mut after: Vec<_> = all.into_values().filter(|p| p.number > marker).collect();
        let truncated = after.len() > max_parts as usize;
        after.truncate(max_parts as usize);
        let next = after.last().map(|p| p.number);
        let parts = after
            .into_iter()
            .map(|p| {
                let c = only(algorithm.as_deref().unwrap_or_default(), p.checksum);
                Part {
                    part_number: Some(p.number),
                    size: Some(p.size as i64),
                    e_tag: Some(ETag::Strong(p.etag)),
                    last_modified: Some(timestamp(p.last_modified_ms)),
                    ..with_checksums!(Part, c)
                }
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(max_parts),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next,
            is_truncated: Some(truncated),
            parts: Some(parts),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let mut requested = Vec::new();
        let mut listed_checksums = BTreeMap::new();
        for part in input.multipart_upload.and_then(|m| m.parts).unwrap_or_default() {
            let number = part.part_number.ok_or_else(|| s3_error!(InvalidPart, "a part has no PartNumber"))?;
            listed_checksums.insert(number, with_checksums!(Checksum, part));
            let etag = part.e_tag.map(ETag::into_value).unwrap_or_default();
            requested.push((number, etag));
        }
        // A part checksum listed here must be the one verified at UploadPart; the object then
        // gets the COMPOSITE checksum of its parts.
        let object_checksums = |upload: Option<&UploadChecksum>, parts: &[&PartInfo]| {
            let Some(upload) = upload else { return Ok(Checksums::default()) };
            for part in parts {
                let listed = listed_checksums.get(&part.number).and_then(|c| checksum_of(c.clone(), &upload.algorithm));
                if listed.is_some() && listed != part.checksum {
                    return Err(ObjectStoreError::InvalidPart(part.number));
                }
            }
            if upload.full_object {
                return Ok(Checksums::default());
            }
            Ok(kept(only(&upload.algorithm, composite(&upload.algorithm, parts)?)))
        };
        let meta = self
            .objects
            .complete_upload(&input.bucket, &input.key, &input.upload_id, &requested, object_checksums)
            .await?;
        let c = checksum_dto(&meta.checksums);
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            location: Some(super::presign::object_path(&input.bucket, &input.key)),
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(etag(&meta)),
            checksum_type: (!meta.checksums.is_empty()).then(|| checksum_type_of(&meta.checksums)),
            ..with_checksums!(CompleteMultipartUploadOutput, c)
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.objects.abort_upload(&input.bucket, &input.key, &input.upload_id)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_to_offset_length_and_content_range() {
        let r = |s: &str| Range::parse(s).unwrap();
        assert_eq!(resolve_range(None, 10).unwrap(), (0, 10, None));
        assert_eq!(resolve_range(Some(&r("bytes=0-3")), 10).unwrap(), (0, 4, Some("bytes 0-3/10".into())));
        assert_eq!(resolve_range(Some(&r("bytes=7-")), 10).unwrap(), (7, 3, Some("bytes 7-9/10".into())));
        assert_eq!(resolve_range(Some(&r("bytes=-4")), 10).unwrap(), (6, 4, Some("bytes 6-9/10".into())));
        assert_eq!(resolve_range(Some(&r("bytes=-40")), 10).unwrap(), (0, 10, Some("bytes 0-9/10".into())));
        assert_eq!(resolve_range(Some(&r("bytes=5-100")), 10).unwrap(), (5, 5, Some("bytes 5-9/10".into())));
        for bad in ["bytes=10-", "bytes=10-20", "bytes=-0"] {
            let err = resolve_range(Some(&r(bad)), 10).unwrap_err();
            assert_eq!(err.code(), &S3ErrorCode::InvalidRange, "{bad}");
        }
        assert!(resolve_range(Some(&r("bytes=0-0")), 0).is_err(), "nothing to read in an empty object");
    }

    #[test]
    fn continuation_tokens_round_trip_and_bad_ones_are_refused() {
        let token = continuation_token("logs/2024/ é");
        assert_eq!(parse_continuation_token(&token).unwrap(), "logs/2024/ é");
        assert_eq!(parse_continuation_token("!!!").unwrap_err().code(), &S3ErrorCode::InvalidArgument);
    }
}
