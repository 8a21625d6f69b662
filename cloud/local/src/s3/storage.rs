//! Where S3 keeps its state: bucket, object and multipart records in the
//! shared SQLite [`Store`], object bytes in files under `DATA_DIR/s3/`.
//!
//! Every object body is written to `s3/tmp/` first, fsynced, and renamed into
//! `s3/objects/{uuid}` only after its digests were checked; the metadata record
//! that points at the file is written after the rename, in one transaction, so
//! a crash leaves either the old object or the new one (at worst an orphan
//! file, swept at the next start). Parts of multipart uploads live in
//! `s3/parts/{uploadId}/{partNumber}` until the upload completes or is aborted.
//!
//! Record kinds (keys in brackets): `s3_bucket` [bucket], `s3_object`
//! [bucket `\n` key], `s3_upload` [uploadId], `s3_part` [uploadId `\n` 5-digit part number].
//! A bucket name never holds `\n`, so a bucket's objects are one key range.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use s3s::crypto::{Checksum as _, Md5, Sha256};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::store::{Op, Store, StoreError};

const BUCKETS: &str = "s3_bucket";
const OBJECTS: &str = "s3_object";
const UPLOADS: &str = "s3_upload";
const PARTS: &str = "s3_part";

/// Smallest part S3 accepts in a completed multipart upload, except the last.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Highest part number S3 accepts.
pub const MAX_PART_NUMBER: i32 = 10_000;
/// Content type of an object stored without one (what S3 reports too).
pub const DEFAULT_CONTENT_TYPE: &str = "binary/octet-stream";

/// What the S3 storage refuses or fails at. Each variant is one S3 error code.
#[derive(Debug, thiserror::Error)]
pub enum ObjectStoreError {
    /// The bucket does not exist: create it first.
    #[error("the specified bucket {0:?} does not exist")]
    NoSuchBucket(String),
    /// The key does not exist in the bucket.
    #[error("the specified key {key:?} does not exist in bucket {bucket:?}")]
    NoSuchKey {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// The upload id is unknown (never created, completed or aborted).
    #[error("the specified multipart upload {0:?} does not exist; it may have been completed or aborted")]
    NoSuchUpload(String),
    /// CreateBucket of a bucket that already exists (there is one owner here).
    #[error("the bucket {0:?} already exists and is owned by you")]
    BucketAlreadyOwnedByYou(String),
    /// DeleteBucket of a bucket that still holds objects: delete them first.
    #[error("the bucket {0:?} is not empty; delete its objects first")]
    BucketNotEmpty(String),
    /// A listed part was not uploaded, or its ETag differs from the uploaded one.
    #[error("part {0} was not uploaded or its ETag does not match the uploaded part")]
    InvalidPart(i32),
    /// The parts of CompleteMultipartUpload are not in ascending part-number order.
    #[error("the list of parts was not in ascending order by part number (part {0} follows a part not lower)")]
    InvalidPartOrder(i32),
    /// A part other than the last is under 5 MiB.
    #[error("part {number} is {size} bytes; every part except the last must be at least 5 MiB")]
    EntityTooSmall {
        /// Part number.
        number: i32,
        /// Its size.
        size: u64,
    },
    /// Bad input that S3 calls `InvalidArgument` or `InvalidRequest` (the message says which field).
    #[error("{0}")]
    InvalidArgument(String),
    /// The body's digest differs from the one the client declared (`Content-MD5`, `x-amz-checksum-*`).
    #[error("{0}")]
    BadDigest(String),
    /// The request body could not be read to its end (client went away): retry the upload.
    #[error("reading the request body: {0}")]
    IncompleteBody(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file under `DATA_DIR/s3` could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A stored record does not parse: the database was changed by hand.
    #[error("corrupt S3 record {kind}/{key}: {source}")]
    Corrupt {
        /// Record kind.
        kind: &'static str,
        /// Record key.
        key: String,
        /// The cause.
        source: serde_json::Error,
    },
}

/// What other services learn about an object (no s3s types: this is the
/// interface below Greengrass and Jobs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Size in bytes.
    pub size: u64,
    /// The ETag without quotes: hex MD5 of the body, or for a multipart object
    /// hex MD5 of the concatenated part MD5s followed by `-{number of parts}`.
    pub etag: String,
    /// Lower-case hex SHA-256 of the whole body (Greengrass artifact digests).
    pub sha256: String,
    /// `Content-Type` given at upload ([`DEFAULT_CONTENT_TYPE`] when none).
    pub content_type: String,
    /// User metadata (`x-amz-meta-*`, names lower-cased, without the prefix).
    pub metadata: BTreeMap<String, String>,
    /// Last modified, milliseconds since the Unix epoch.
    pub last_modified_ms: u64,
    /// Number of parts for a multipart object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts_count: Option<u32>,
    /// The checksums verified at upload, of the whole body; for a multipart object the
    /// COMPOSITE checksum of its parts (records written before they were kept have none).
    #[serde(default, skip_serializing_if = "Checksums::is_empty")]
    pub checksums: Checksums,
}

/// Base64 checksums of an object, as S3's `x-amz-checksum-*` headers carry them; a COMPOSITE
/// one (of a multipart object's part checksums) ends in `-{parts}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checksums {
    /// CRC32 (big-endian, base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32: Option<String>,
    /// CRC32C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<String>,
    /// SHA-1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    /// SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// CRC64NVME.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc64nvme: Option<String>,
}

impl Checksums {
    /// No checksum at all.
    pub fn is_empty(&self) -> bool {
        self == &Checksums::default()
    }
}

impl ObjectMeta {
    /// [`ObjectMeta::last_modified_ms`] as a time.
    pub fn last_modified(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.last_modified_ms)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BucketRecord {
    created_ms: u64,
    region: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRecord {
    #[serde(flatten)]
    meta: ObjectMeta,
    /// File name under `s3/objects/`.
    file: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UploadRecord {
    bucket: String,
    key: String,
    created_ms: u64,
    content_type: String,
    metadata: BTreeMap<String, String>,
    /// How the parts' checksums make the object's (records without it have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checksum: Option<UploadChecksum>,
}

/// The checksum a multipart upload was created with (`x-amz-checksum-algorithm`,
/// `x-amz-checksum-type`): every part gets one of this algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadChecksum {
    /// `CRC32`, `CRC32C`, `SHA1`, `SHA256` or `CRC64NVME`.
    pub algorithm: String,
    /// `FULL_OBJECT` was asked for: the object then keeps no checksum (only COMPOSITE is made here).
    #[serde(default)]
    pub full_object: bool,
}

/// One uploaded part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartInfo {
    /// Part number, 1–10000.
    pub number: i32,
    /// Size in bytes.
    pub size: u64,
    /// Hex MD5 of the part (its ETag without quotes).
    pub etag: String,
    /// When it was uploaded, milliseconds since the Unix epoch.
    pub last_modified_ms: u64,
    /// The part's verified base64 checksum of its upload's algorithm ([`UploadChecksum`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// A bucket as ListBuckets shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketInfo {
    /// Name.
    pub name: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Region it was created in.
    pub region: String,
}

/// What a new object is stored with besides its bytes.
#[derive(Debug, Clone, Default)]
pub struct NewObject {
    /// `Content-Type`, if the client sent one.
    pub content_type: Option<String>,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// Verified whole-object checksums to keep and return with `x-amz-checksum-mode: ENABLED`.
    pub checksums: Checksums,
}

/// One entry of a listing page: an object, or a common prefix that stands for
/// every key under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<T> {
    /// An object and what is known about it.
    Object(String, T),
    /// A common prefix (ends with the delimiter).
    Prefix(String),
}

/// One page of ListObjectsV2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// Objects and common prefixes in key order.
    pub entries: Vec<Entry<T>>,
    /// The name of the last entry, when more entries follow.
    pub next_after: Option<String>,
}

/// The listing rule of ListObjectsV2 over keys that all start with `prefix`,
/// in ascending byte order: with a delimiter, keys that hold it after the
/// prefix fold into one common prefix (up to and including the delimiter);
/// entries whose name sorts at or before `after` are skipped (the start-after
/// key or the continuation point); at most `max` entries, keys and common
/// prefixes counted alike.
pub fn paginate<T>(
    items: impl IntoIterator<Item = (String, T)>,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<&str>,
    max: usize,
) -> Page<T> {
    let mut entries: Vec<Entry<T>> = Vec::new();
    let mut last: Option<String> = None;
    let mut truncated = false;
    for (key, value) in items {
        let folded = delimiter.filter(|d| !d.is_empty()).and_then(|d| {
            let rest = key.get(prefix.len()..)?;
            rest.find(d).map(|i| key[..prefix.len() + i + d.len()].to_string())
        });
        let name = folded.as_deref().unwrap_or(&key);
        if after.is_some_and(|a| name <= a) || last.as_deref() == Some(name) {
            continue;
        }
        if entries.len() >= max {
            truncated = true;
            break;
        }
        last = Some(name.to_string());
        entries.push(match folded {
            Some(p) => Entry::Prefix(p),
            None => Entry::Object(key, value),
        });
    }
    Page { entries, next_after: if truncated { last } else { None } }
}

/// The ETag of a multipart object: hex MD5 of the concatenated binary MD5s of
/// the parts, then `-` and the number of parts.
pub fn multipart_etag<'a>(part_md5s: impl IntoIterator<Item = &'a str>) -> Result<String, ObjectStoreError> {
    let mut md5 = Md5::new();
    let mut count = 0usize;
    for hex_md5 in part_md5s {
        let bytes = hex::decode(hex_md5)
            .map_err(|_| ObjectStoreError::InvalidArgument(format!("part ETag {hex_md5:?} is not an MD5")))?;
        md5.update(&bytes);
        count += 1;
    }
    Ok(format!("{}-{count}", hex::encode(md5.finalize())))
}

/// Checks a CompleteMultipartUpload part list against the uploaded parts and
/// returns the uploaded parts in the order given: parts must ascend by number,
/// exist with the same ETag, and be at least [`MIN_PART_SIZE`] except the last.
pub fn check_completion<'a>(
    requested: &[(i32, String)],
    uploaded: &'a BTreeMap<i32, PartInfo>,
) -> Result<Vec<&'a PartInfo>, ObjectStoreError> {
    if requested.is_empty() {
        return Err(ObjectStoreError::InvalidArgument("you must specify at least one part".into()));
    }
    let mut chosen = Vec::with_capacity(requested.len());
    let mut previous = 0;
    for (number, etag) in requested {
        if *number <= previous {
            return Err(ObjectStoreError::InvalidPartOrder(*number));
        }
        previous = *number;
        let part = uploaded.get(number).ok_or(ObjectStoreError::InvalidPart(*number))?;
        if !part.etag.eq_ignore_ascii_case(etag.trim_matches('"')) {
            return Err(ObjectStoreError::InvalidPart(*number));
        }
        chosen.push(part);
    }
    for part in &chosen[..chosen.len() - 1] {
        if part.size < MIN_PART_SIZE {
            return Err(ObjectStoreError::EntityTooSmall { number: part.number, size: part.size });
        }
    }
    Ok(chosen)
}

/// A body written to `s3/tmp/` and fsynced, not yet an object or part.
/// Dropping it removes the file.
#[derive(Debug)]
pub struct TempBody {
    path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Hex MD5.
    pub md5: String,
    /// Hex SHA-256.
    pub sha256: String,
}

impl TempBody {
    fn take_path(&mut self) -> PathBuf {
        std::mem::take(&mut self.path)
    }
}

impl Drop for TempBody {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The S3 storage; cheap to clone.
#[derive(Clone, Debug)]
pub struct Objects {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    root: PathBuf,
    region: String,
    /// Serializes the changes that swap files and records (commit, delete,
    /// open), so a reader never gets a record whose file was just replaced.
    commit: Mutex<()>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn object_key(bucket: &str, key: &str) -> String {
    format!("{bucket}\n{key}")
}

fn part_key(upload_id: &str, number: i32) -> String {
    format!("{upload_id}\n{number:05}")
}

fn decode<T: serde::de::DeserializeOwned>(kind: &'static str, key: &str, json: &str) -> Result<T, ObjectStoreError> {
    serde_json::from_str(json).map_err(|source| ObjectStoreError::Corrupt { kind, key: key.to_string(), source })
}

fn encode<T: Serialize>(value: &T) -> String {
    // Plain structs of strings and numbers always serialize.
    serde_json::to_string(value).expect("S3 records serialize")
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ObjectStoreError + '_ {
    move |source| ObjectStoreError::Io { path: path.to_path_buf(), source }
}

/// Upload ids are ours (UUIDs in hex); anything else is unknown, and never a path.
fn check_upload_id(upload_id: &str) -> Result<(), ObjectStoreError> {
    if upload_id.len() == 32 && upload_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(ObjectStoreError::NoSuchUpload(upload_id.to_string()))
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ObjectStoreError> + Send + 'static,
) -> Result<T, ObjectStoreError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ObjectStoreError::Io { path: PathBuf::new(), source: std::io::Error::other(e.to_string()) })
    })
}

impl Objects {
    /// Opens the storage under `root` (`DATA_DIR/s3`), creating its folders and
    /// removing leftovers of interrupted writes. `region` is what new buckets report.
    pub fn open(store: Store, root: &Path, region: &str) -> Result<Self, ObjectStoreError> {
        for dir in ["objects", "parts", "tmp"] {
            let path = root.join(dir);
            std::fs::create_dir_all(&path).map_err(io_error(&path))?;
        }
        let objects = Objects {
            inner: Arc::new(Inner {
                store,
                root: root.to_path_buf(),
                region: region.to_string(),
                commit: Mutex::new(()),
            }),
        };
        objects.sweep()?;
        Ok(objects)
    }

    /// Removes temporary files and object files no record points at (left by a crash).
    fn sweep(&self) -> Result<(), ObjectStoreError> {
        let tmp = self.inner.root.join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(io_error(&tmp))?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        let live: std::collections::HashSet<String> = self
            .inner
            .store
            .all(OBJECTS)?
            .iter()
            .map(|(k, v)| decode::<ObjectRecord>(OBJECTS, k, v).map(|r| r.file))
            .collect::<Result<_, _>>()?;
        let dir = self.inner.root.join("objects");
        for entry in std::fs::read_dir(&dir).map_err(io_error(&dir))?.flatten() {
            if !live.contains(entry.file_name().to_string_lossy().as_ref()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    fn object_path(&self, file: &str) -> PathBuf {
        self.inner.root.join("objects").join(file)
    }

    fn parts_dir(&self, upload_id: &str) -> PathBuf {
        self.inner.root.join("parts").join(upload_id)
    }

    fn bucket(&self, bucket: &str) -> Result<BucketRecord, ObjectStoreError> {
        match self.inner.store.get(BUCKETS, bucket)? {
            Some(json) => decode(BUCKETS, bucket, &json),
            None => Err(ObjectStoreError::NoSuchBucket(bucket.to_string())),
        }
    }

    /// CreateBucket; `region` is the requested location constraint (else this cloud's region).
    pub fn create_bucket(&self, bucket: &str, region: Option<&str>) -> Result<(), ObjectStoreError> {
        let _guard = self.inner.commit.lock().unwrap_or_else(|e| e.into_inner());
        if self.inner.store.get(BUCKETS, bucket)?.is_some() {
            return Err(ObjectStoreError::BucketAlreadyOwnedByYou(bucket.to_string()));
        }
        let record = BucketRecord { created_ms: now_ms(), region: region.unwrap_or(&self.inner.region).to_string() };
        self.inner.store.put(BUCKETS, bucket, &encode(&record))?;
        Ok(())
    }

    /// HeadBucket / GetBucketLocation: the bucket's region.
    pub fn bucket_region(&self, bucket: &str) -> Result<String, ObjectStoreError> {
        Ok(self.bucket(bucket)?.region)
    }

    /// ListBuckets, by name.
    pub fn list_buckets(&self) -> Result<Vec<BucketInfo>, ObjectStoreError> {
        self.inner
            .store
            .all(BUCKETS)?
            .into_iter()
            .map(|(name, json)| {
                let r: BucketRecord = decode(BUCKETS, &name, &json)?;
                Ok(BucketInfo { name, created_ms: r.created_ms, region: r.region })
            })
            .collect()
    }

    /// DeleteBucket: only an empty bucket; its unfinished multipart uploads go with it.
    pub fn delete_bucket(&self, bucket: &str) -> Result<(), ObjectStoreError> {
        let _guard = self.inner.commit.lock().unwrap_or_else(|e| e.into_inner());
        self.bucket(bucket)?;
        if !self.inner.store.with_prefix(OBJECTS, &object_key(bucket, ""))?.is_empty() {
            return Err(ObjectStoreError::BucketNotEmpty(bucket.to_string()));
        }
        let mut ops = vec![Op::Delete { kind: BUCKETS, key: bucket.to_string() }];
        let mut dirs = Vec::new();
        for (id, json) in self.inner.store.all(UPLOADS)? {
            let upload: UploadRecord = decode(UPLOADS, &id, &json)?;
            if upload.bucket == bucket {
                ops.extend(self.part_deletes(&id)?);
                ops.push(Op::Delete { kind: UPLOADS, key: id.clone() });
                dirs.push(self.parts_dir(&id));
            }
        }
        self.inner.store.apply(&ops)?;
        for dir in dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(())
    }

    /// HeadObject: the object's metadata, or `None`.
    pub fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, ObjectStoreError> {
        Ok(self.record(bucket, key)?.map(|r| r.meta))
    }

    fn record(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, ObjectStoreError> {
        let id = object_key(bucket, key);
        match self.inner.store.get(OBJECTS, &id)? {
            Some(json) => Ok(Some(decode(OBJECTS, &id, &json)?)),
            None => {
                self.bucket(bucket)?;
                Ok(None)
            }
        }
    }

    /// The object's metadata and its file opened for reading (the file stays
    /// readable even if the object is replaced meanwhile).
    pub fn open_object(&self, bucket: &str, key: &str) -> Result<(ObjectMeta, std::fs::File), ObjectStoreError> {
        let _guard = self.inner.commit.lock().unwrap_or_else(|e| e.into_inner());
        let record = self
            .record(bucket, key)?
            .ok_or_else(|| ObjectStoreError::NoSuchKey { bucket: bucket.to_string(), key: key.to_string() })?;
        let path = self.object_path(&record.file);
        let file = std::fs::File::open(&path).map_err(io_error(&path))?;
        Ok((record.meta, file))
    }

    /// ListObjectsV2 over the keys under `prefix` (see [`paginate`]).
    pub fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&str>,
        max: usize,
    ) -> Result<Page<ObjectMeta>, ObjectStoreError> {
        self.bucket(bucket)?;
        let base = object_key(bucket, "");
        let rows = self.inner.store.with_prefix(OBJECTS, &object_key(bucket, prefix))?;
        let mut items = Vec::with_capacity(rows.len());
        for (id, json) in rows {
            let record: ObjectRecord = decode(OBJECTS, &id, &json)?;
            items.push((id[base.len()..].to_string(), record.meta));
        }
        Ok(paginate(items, prefix, delimiter, after, max))
    }

    /// DeleteObject; deleting a missing key succeeds, as in S3.
    pub fn delete_object(&self, bucket: &str, key: &str) -> Result<(), ObjectStoreError> {
        let _guard = self.inner.commit.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(record) = self.record(bucket, key)? {
            self.inner.store.delete(OBJECTS, &object_key(bucket, key))?;
            let _ = std::fs::remove_file(self.object_path(&record.file));
        }
        Ok(())
    }

    /// Streams a request body into `s3/tmp/`, hashing it (MD5, SHA-256, and
    /// whatever `also` computes), then fsyncs the file.
    pub async fn write_temp<S, E>(&self, body: S, mut also: impl FnMut(&[u8])) -> Result<TempBody, ObjectStoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let path = self.inner.root.join("tmp").join(uuid::Uuid::new_v4().simple().to_string());
        let mut temp = TempBody { path: path.clone(), size: 0, md5: String::new(), sha256: String::new() };
        let mut file = tokio::fs::File::create(&path).await.map_err(io_error(&path))?;
        let (mut md5, mut sha256) = (Md5::new(), Sha256::new());
        let mut body = body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ObjectStoreError::IncompleteBody(e.to_string()))?;
            md5.update(&chunk);
            sha256.update(&chunk);
            also(&chunk);
            file.write_all(&chunk).await.map_err(io_error(&path))?;
            temp.size += chunk.len() as u64;
        }
        file.sync_all().await.map_err(io_error(&path))?;
        temp.md5 = hex::encode(md5.finalize());
        temp.sha256 = hex::encode(sha256.finalize());
        Ok(temp)
    }

    /// Makes a checked temporary body the object `bucket`/`key`, replacing any
    /// previous one.
    pub async fn commit_object(
        &self,
        bucket: &str,
        key: &str,
        mut temp: TempBody,
        new: NewObject,
    ) -> Result<ObjectMeta, ObjectStoreError> {
        let meta = ObjectMeta {
            size: temp.size,
            etag: temp.md5.clone(),
            sha256: temp.sha256.clone(),
            content_type: new.content_type.unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string()),
            metadata: new.metadata,
            last_modified_ms: now_ms(),
            parts_count: None,
            checksums: new.checksums,
        };
        let this = self.clone();
        let (bucket, key) = (bucket.to_string(), key.to_string());
        let tmp_path = temp.take_path();
        blocking(move || this.install(&bucket, &key, &tmp_path, meta, Vec::new())).await
    }

    /// Renames `tmp_path` into `objects/`, writes the record (and `extra`
    /// changes) in one transaction, and removes the file it replaced.
    fn install(
        &self,
        bucket: &str,
        key: &str,
        tmp_path: &Path,
        meta: ObjectMeta,
        extra: Vec<Op>,
    ) -> Result<ObjectMeta, ObjectStoreError> {
        let _guard = self.inner.commit.lock().unwrap_or_else(|e| e.into_inner());
        let removed = |e| {
            let _ = std::fs::remove_file(tmp_path);
            e
        };
        let previous = self.record(bucket, key).map_err(removed)?;
        let file = uuid::Uuid::new_v4().simple().to_string();
        let path = self.object_path(&file);
        std::fs::rename(tmp_path, &path).map_err(io_error(&path)).map_err(removed)?;
        sync_dir(&self.inner.root.join("objects"));
        let record = ObjectRecord { meta: meta.clone(), file };
        let mut ops = vec![Op::Put { kind: OBJECTS, key: object_key(bucket, key), value: encode(&record) }];
        ops.extend(extra);
        if let Err(e) = self.inner.store.apply(&ops) {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
        if let Some(old) = previous {
            let _ = std::fs::remove_file(self.object_path(&old.file));
        }
        Ok(meta)
    }

    /// CreateMultipartUpload: a new upload id.
    pub fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        new: NewObject,
        checksum: Option<UploadChecksum>,
    ) -> Result<String, ObjectStoreError> {
        self.bucket(bucket)?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let record = UploadRecord {
            bucket: bucket.to_string(),
            key: key.to_string(),
            created_ms: now_ms(),
            content_type: new.content_type.unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string()),
            metadata: new.metadata,
            checksum,
        };
        self.inner.store.put(UPLOADS, &id, &encode(&record))?;
        Ok(id)
    }

    fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<UploadRecord, ObjectStoreError> {
        check_upload_id(upload_id)?;
        let record: UploadRecord = match self.inner.store.get(UPLOADS, upload_id)? {
            Some(json) => decode(UPLOADS, upload_id, &json)?,
            None => return Err(ObjectStoreError::NoSuchUpload(upload_id.to_string())),
        };
        if record.bucket != bucket || record.key != key {
            return Err(ObjectStoreError::NoSuchUpload(upload_id.to_string()));
        }
        Ok(record)
    }

    /// Checks that an upload exists before its part's body is read; its checksum, if it has one.
    pub fn check_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<UploadChecksum>, ObjectStoreError> {
        self.upload(bucket, key, upload_id).map(|u| u.checksum)
    }

    /// UploadPart: keeps a checked temporary body as part `number`, replacing an earlier upload of it.
    pub async fn commit_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        mut temp: TempBody,
        checksum: Option<String>,
    ) -> Result<PartInfo, ObjectStoreError> {
        if !(1..=MAX_PART_NUMBER).contains(&number) {
            return Err(ObjectStoreError::InvalidArgument(format!(
                "part number {number} must be an integer between 1 and {MAX_PART_NUMBER}, inclusive"
            )));
        }
        let part = PartInfo { number, size: temp.size, etag: temp.md5.clone(), last_modified_ms: now_ms(), checksum };
        let this = self.clone();
        let (bucket, key, upload_id) = (bucket.to_string(), key.to_string(), upload_id.to_string());
        let tmp_path = temp.take_path();
        blocking(move || {
            let _guard = this.inner.commit.lock().unwrap_or_else(|e| e.into_inner());
            let cleanup = |e| {
                let _ = std::fs::remove_file(&tmp_path);
                e
            };
            this.upload(&bucket, &key, &upload_id).map_err(cleanup)?;
            let dir = this.parts_dir(&upload_id);
            std::fs::create_dir_all(&dir).map_err(io_error(&dir)).map_err(cleanup)?;
            let path = dir.join(number.to_string());
            std::fs::rename(&tmp_path, &path).map_err(io_error(&path)).map_err(cleanup)?;
            sync_dir(&dir);
            this.inner.store.put(PARTS, &part_key(&upload_id, number), &encode(&part))?;
            Ok(part)
        })
        .await
    }

    /// ListParts: the uploaded parts by number.
    pub fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<BTreeMap<i32, PartInfo>, ObjectStoreError> {
        self.upload(bucket, key, upload_id)?;
        self.parts(upload_id)
    }

    fn parts(&self, upload_id: &str) -> Result<BTreeMap<i32, PartInfo>, ObjectStoreError> {
        let mut parts = BTreeMap::new();
        for (id, json) in self.inner.store.with_prefix(PARTS, &format!("{upload_id}\n"))? {
            let part: PartInfo = decode(PARTS, &id, &json)?;
            parts.insert(part.number, part);
        }
        Ok(parts)
    }

    fn part_deletes(&self, upload_id: &str) -> Result<Vec<Op>, ObjectStoreError> {
        Ok(self
            .inner
            .store
            .with_prefix(PARTS, &format!("{upload_id}\n"))?
            .into_iter()
            .map(|(key, _)| Op::Delete { kind: PARTS, key })
            .collect())
    }

    /// AbortMultipartUpload: forgets the upload and its parts.
    pub fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), ObjectStoreError> {
        let _guard = self.inner.commit.lock().unwrap_or_else(|e| e.into_inner());
        self.upload(bucket, key, upload_id)?;
        let mut ops = self.part_deletes(upload_id)?;
        ops.push(Op::Delete { kind: UPLOADS, key: upload_id.to_string() });
        self.inner.store.apply(&ops)?;
        let _ = std::fs::remove_dir_all(self.parts_dir(upload_id));
        Ok(())
    }

    /// CompleteMultipartUpload: checks the part list ([`check_completion`]),
    /// concatenates the parts into the object, and forgets the upload. `checksums` makes the
    /// object's checksums from the upload's checksum and the chosen parts (it may refuse them).
    pub async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        requested: &[(i32, String)],
        checksums: impl FnOnce(Option<&UploadChecksum>, &[&PartInfo]) -> Result<Checksums, ObjectStoreError>,
    ) -> Result<ObjectMeta, ObjectStoreError> {
        let upload = self.upload(bucket, key, upload_id)?;
        let uploaded = self.parts(upload_id)?;
        let chosen = check_completion(requested, &uploaded)?;
        let checksums = checksums(upload.checksum.as_ref(), &chosen)?;
        let etag = multipart_etag(chosen.iter().map(|p| p.etag.as_str()))?;
        let dir = self.parts_dir(upload_id);

        let tmp_path = self.inner.root.join("tmp").join(uuid::Uuid::new_v4().simple().to_string());
        let mut temp = TempBody { path: tmp_path.clone(), size: 0, md5: String::new(), sha256: String::new() };
        let mut out = tokio::fs::File::create(&tmp_path).await.map_err(io_error(&tmp_path))?;
        let mut sha256 = Sha256::new();
        let mut buf = vec![0u8; 1024 * 1024];
        for part in &chosen {
            let path = dir.join(part.number.to_string());
            let mut input = tokio::fs::File::open(&path).await.map_err(io_error(&path))?;
            loop {
                let n = input.read(&mut buf).await.map_err(io_error(&path))?;
                if n == 0 {
                    break;
                }
                sha256.update(&buf[..n]);
                out.write_all(&buf[..n]).await.map_err(io_error(&tmp_path))?;
                temp.size += n as u64;
            }
        }
        out.sync_all().await.map_err(io_error(&tmp_path))?;
        drop(out);

        let meta = ObjectMeta {
            size: temp.size,
            etag,
            sha256: hex::encode(sha256.finalize()),
            content_type: upload.content_type,
            metadata: upload.metadata,
            last_modified_ms: now_ms(),
            parts_count: Some(chosen.len() as u32),
            checksums,
        };
        let mut extra = self.part_deletes(upload_id)?;
        extra.push(Op::Delete { kind: UPLOADS, key: upload_id.to_string() });
        let this = self.clone();
        let (bucket, key) = (bucket.to_string(), key.to_string());
        let tmp_path = temp.take_path();
        let meta = blocking(move || this.install(&bucket, &key, &tmp_path, meta, extra)).await?;
        let _ = std::fs::remove_dir_all(dir);
        Ok(meta)
    }

    /// Writes a whole object from memory (for in-process callers and tests).
    pub async fn put_bytes(
        &self,
        bucket: &str,
        key: &str,
        bytes: Bytes,
        new: NewObject,
    ) -> Result<ObjectMeta, ObjectStoreError> {
        self.bucket(bucket)?;
        let body = futures::stream::iter([Ok::<_, std::convert::Infallible>(bytes)]);
        let temp = self.write_temp(body, |_| ()).await?;
        self.commit_object(bucket, key, temp, new).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(page: &Page<()>) -> Vec<String> {
        page.entries
            .iter()
            .map(|e| match e {
                Entry::Object(k, ()) => k.clone(),
                Entry::Prefix(p) => format!("{p}*"),
            })
            .collect()
    }

    fn items(keys: &[&str]) -> Vec<(String, ())> {
        keys.iter().map(|k| (k.to_string(), ())).collect()
    }

    #[test]
    fn delimiter_folds_keys_into_common_prefixes_after_the_prefix() {
        let all = items(&["a.txt", "logs/2024/1", "logs/2024/2", "logs/2025/1", "logs/x", "z"]);
        let page = paginate(all.clone(), "", Some("/"), None, 1000);
        assert_eq!(keys(&page), ["a.txt", "logs/*", "z"]);
        assert_eq!(page.next_after, None);
        let under: Vec<_> = all.into_iter().filter(|(k, _)| k.starts_with("logs/")).collect();
        let page = paginate(under, "logs/", Some("/"), None, 1000);
        assert_eq!(keys(&page), ["logs/2024/*", "logs/2025/*", "logs/x"]);
    }

    #[test]
    fn pages_continue_after_the_last_entry_without_repeating_a_common_prefix() {
        let all = items(&["a", "b/1", "b/2", "b/3", "c", "d"]);
        let first = paginate(all.clone(), "", Some("/"), None, 2);
        assert_eq!(keys(&first), ["a", "b/*"]);
        assert_eq!(first.next_after.as_deref(), Some("b/"));
        let second = paginate(all.clone(), "", Some("/"), first.next_after.as_deref(), 2);
        assert_eq!(keys(&second), ["c", "d"]);
        assert_eq!(second.next_after, None, "nothing after d");
        let flat = paginate(all.clone(), "", None, Some("b/1"), 3);
        assert_eq!(keys(&flat), ["b/2", "b/3", "c"]);
        assert_eq!(flat.next_after.as_deref(), Some("c"));
        assert_eq!(keys(&paginate(all, "", None, Some("d"), 3)), Vec::<String>::new());
    }

    #[test]
    fn multipart_etag_is_the_md5_of_the_part_md5s_with_the_part_count() {
        // Two parts "hello " and "world": MD5s of each, concatenated, hashed.
        let parts = [hex::encode(Md5::checksum(b"hello ")), hex::encode(Md5::checksum(b"world"))];
        let mut joined = Vec::new();
        for p in &parts {
            joined.extend(hex::decode(p).unwrap());
        }
        let expected = format!("{}-2", hex::encode(Md5::checksum(&joined)));
        assert_eq!(multipart_etag(parts.iter().map(String::as_str)).unwrap(), expected);
        assert_ne!(expected, format!("{}-2", hex::encode(Md5::checksum(b"hello world"))));
        assert!(multipart_etag(["not-hex"]).is_err());
    }

    fn part(number: i32, size: u64, etag: &str) -> (i32, PartInfo) {
        (number, PartInfo { number, size, etag: etag.into(), last_modified_ms: 0, checksum: None })
    }

    #[test]
    fn completion_checks_order_etags_and_part_sizes() {
        let uploaded: BTreeMap<i32, PartInfo> =
            [part(1, MIN_PART_SIZE, "aa"), part(2, 10, "bb"), part(3, 10, "cc")].into_iter().collect();
        let ok = check_completion(&[(1, "\"aa\"".into()), (2, "BB".into())], &uploaded).unwrap();
        assert_eq!(ok.iter().map(|p| p.number).collect::<Vec<_>>(), [1, 2]);
        assert!(matches!(
            check_completion(&[(2, "bb".into()), (1, "aa".into())], &uploaded),
            Err(ObjectStoreError::InvalidPartOrder(1))
        ));
        assert!(matches!(
            check_completion(&[(1, "aa".into()), (1, "aa".into())], &uploaded),
            Err(ObjectStoreError::InvalidPartOrder(1))
        ));
        assert!(matches!(
            check_completion(&[(1, "aa".into()), (2, "xx".into())], &uploaded),
            Err(ObjectStoreError::InvalidPart(2))
        ));
        assert!(matches!(check_completion(&[(4, "dd".into())], &uploaded), Err(ObjectStoreError::InvalidPart(4))));
        assert!(matches!(
            check_completion(&[(2, "bb".into()), (3, "cc".into())], &uploaded),
            Err(ObjectStoreError::EntityTooSmall { number: 2, size: 10 })
        ));
        assert!(matches!(check_completion(&[], &uploaded), Err(ObjectStoreError::InvalidArgument(_))));
    }

    #[tokio::test]
    async fn objects_and_uploads_survive_reopening_and_orphans_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.sqlite");
        let root = dir.path().join("s3");
        {
            let objects = Objects::open(Store::open(&db).unwrap(), &root, "us-east-1").unwrap();
            objects.create_bucket("b", None).unwrap();
            assert!(matches!(objects.create_bucket("b", None), Err(ObjectStoreError::BucketAlreadyOwnedByYou(_))));
            let meta = objects.put_bytes("b", "k", Bytes::from_static(b"abc"), NewObject::default()).await.unwrap();
            assert_eq!(meta.etag, "900150983cd24fb0d6963f7d28e17f72");
            assert_eq!(meta.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
            objects.put_bytes("b", "k", Bytes::from_static(b"abcd"), NewObject::default()).await.unwrap();
            std::fs::write(root.join("objects").join("orphan"), b"x").unwrap();
            std::fs::write(root.join("tmp").join("half"), b"x").unwrap();
            assert!(matches!(objects.delete_bucket("b"), Err(ObjectStoreError::BucketNotEmpty(_))));
        }
        let objects = Objects::open(Store::open(&db).unwrap(), &root, "us-east-1").unwrap();
        let meta = objects.head("b", "k").unwrap().unwrap();
        assert_eq!((meta.size, meta.content_type.as_str()), (4, DEFAULT_CONTENT_TYPE));
        assert_eq!(std::fs::read_dir(root.join("objects")).unwrap().count(), 1, "only the live file is left");
        assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
        assert!(matches!(objects.head("nope", "k"), Err(ObjectStoreError::NoSuchBucket(_))));
        assert_eq!(objects.head("b", "other").unwrap(), None);
        objects.delete_object("b", "k").unwrap();
        objects.delete_bucket("b").unwrap();
        assert!(objects.list_buckets().unwrap().is_empty());
    }

    #[test]
    fn checksums_are_kept_in_the_record_and_older_records_without_them_still_read() {
        let old = r#"{"size":3,"etag":"e","sha256":"s","contentType":"t","metadata":{},"lastModifiedMs":1,"file":"f"}"#;
        let record: ObjectRecord = decode(OBJECTS, "b\nk", old).unwrap();
        assert!(record.meta.checksums.is_empty());
        assert_eq!(encode(&record), old, "no checksum, no field");
        let mut record = record;
        record.meta.checksums.crc32 = Some("NSRBwg==".into());
        let json = encode(&record);
        assert!(json.contains(r#""checksums":{"crc32":"NSRBwg=="}"#), "{json}");
        let back: ObjectRecord = decode(OBJECTS, "b\nk", &json).unwrap();
        assert_eq!(back.meta, record.meta);
    }

    #[test]
    fn upload_ids_that_are_not_ours_are_unknown_never_paths() {
        assert!(check_upload_id("0123456789abcdef0123456789abcdef").is_ok());
        for bad in ["../../etc", "", "0123456789abcdef0123456789abcdeg"] {
            assert!(matches!(check_upload_id(bad), Err(ObjectStoreError::NoSuchUpload(_))), "{bad}");
        }
    }
}
