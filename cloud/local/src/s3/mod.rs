//! Amazon S3 on the local cloud's HTTP port, through the `s3s` crate.
//!
//! s3s speaks the wire protocol (restXml, Amazon S3 API Reference 2006-03-01):
//! it routes operations, parses and writes the XML and headers, verifies SigV4
//! (header and presigned), SigV2 and aws-chunked bodies against the secrets
//! IAM knows ([`access`]: the administrator's and live temporary credentials'), and
//! turns errors into S3's XML. This module supplies the
//! rest: the operations ([`backend`]), where they keep their state
//! ([`storage`]), presigned URLs ([`presign`]), and which requests on the shared
//! port are S3's ([`route`]).
//!
//! Other services (Greengrass artifacts, Jobs presigned placeholders) use S3
//! only through [`ObjectStore`], which carries no s3s types.
//!
//! # Layout
//! - [`storage`]: buckets, objects and multipart uploads in SQLite + files.
//! - [`backend`]: `impl s3s::S3`.
//! - [`presign`]: presigned GET URLs (SigV4 query parameters, `aws-sigv4`).
//! - [`route`]: picking S3 requests out by their signature.
//! - [`access`]: the session token and the caller's IAM policy, for every request.

pub mod access;
pub mod backend;
pub mod presign;
pub mod route;
pub mod storage;

use std::path::Path;
use std::time::{Duration, SystemTime};

use s3s::service::{S3Service, S3ServiceBuilder};

use crate::credentials::AccessKeyPair;
use crate::store::Store;
pub use presign::Presigner;
pub use storage::{Checksums, ObjectMeta, ObjectStoreError, Objects};

/// What other local-cloud services may ask of S3.
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// The object's size, ETag, SHA-256 … or `None` when the key does not
    /// exist; [`ObjectStoreError::NoSuchBucket`] when the bucket does not.
    fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, ObjectStoreError>;

    /// A URL that GETs the object without credentials for `expires` (1 s to 7 days)
    /// from now. The object need not exist yet.
    fn presign_get(&self, bucket: &str, key: &str, expires: Duration) -> Result<String, ObjectStoreError>;

    /// The whole object (for small objects such as job documents: check the
    /// size with [`ObjectStore::head`] first); [`ObjectStoreError::NoSuchKey`] when absent.
    fn get(&self, bucket: &str, key: &str) -> Result<Vec<u8>, ObjectStoreError>;
}

/// The local cloud's S3: storage, the s3s service, and the presigner.
#[derive(Clone)]
pub struct LocalS3 {
    objects: Objects,
    service: S3Service,
    presigner: Presigner,
}

impl std::fmt::Debug for LocalS3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalS3").field("presigner", &self.presigner).finish_non_exhaustive()
    }
}

impl LocalS3 {
    /// Opens the storage under `data_dir/s3` and builds the service that accepts the
    /// signatures `iam` knows and allows what the caller's policy allows; presigned URLs are
    /// signed with `admin`'s pair and point at `endpoint` (`http://host:port`).
    pub fn open(
        store: Store,
        data_dir: &Path,
        region: &str,
        endpoint: &str,
        admin: AccessKeyPair,
        iam: crate::iam::Iam,
    ) -> Result<Self, ObjectStoreError> {
        let objects = Objects::open(store, &data_dir.join("s3"), region)?;
        let mut builder = S3ServiceBuilder::new(backend::Backend::new(objects.clone()));
        builder.set_auth(access::IamKeys(iam.clone()));
        builder.set_access(access::IamAccess(iam));
        let presigner = Presigner::new(endpoint, region, admin);
        Ok(LocalS3 { objects, service: builder.build(), presigner })
    }

    /// The s3s service, to mount on the HTTP endpoint ([`route`]).
    pub fn service(&self) -> S3Service {
        self.service.clone()
    }

    /// The storage, for in-process use.
    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    /// The presigner behind [`ObjectStore::presign_get`] (it also signs at a given time).
    pub fn presigner(&self) -> &Presigner {
        &self.presigner
    }
}

impl ObjectStore for LocalS3 {
    fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, ObjectStoreError> {
        self.objects.head(bucket, key)
    }

    fn presign_get(&self, bucket: &str, key: &str, expires: Duration) -> Result<String, ObjectStoreError> {
        self.presigner.presign_get_at(bucket, key, SystemTime::now(), expires)
    }

    fn get(&self, bucket: &str, key: &str) -> Result<Vec<u8>, ObjectStoreError> {
        use std::io::Read as _;
        let (_, mut file) = self.objects.open_object(bucket, key)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|source| ObjectStoreError::Io { path: format!("{bucket}/{key}").into(), source })?;
        Ok(bytes)
    }
}
