//! Greengrass components from source tree to service: `build` writes the GDK CLI's layout
//! (`greengrass-build/recipes/{Name}-{Version}.yaml`, `greengrass-build/artifacts/{Name}/{Version}/{file}`,
//! the `custom` build system: the caller builds the binaries), `publish` uploads the artifacts to
//! `s3://{bucket}/{Name}/{Version}/{file}` with `aws-sdk-s3`, rewrites the recipe's URIs and calls
//! CreateComponentVersion with `aws-sdk-greengrassv2`.
//!
//! Follows the GDK CLI's documented conventions (`gdk component build` / `publish`) and the
//! Greengrass V2 API Reference (CreateComponentVersion, GetComponent, DescribeComponent). A
//! version already in the service is never replaced: with the same digests publishing is a no-op,
//! with others it is an error naming the artifact, and nothing is uploaded (the stored version
//! keeps pointing at unchanged objects).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_greengrassv2::primitives::Blob;
use aws_sdk_greengrassv2::types::{CloudComponentState, ComponentVisibilityScope, RecipeOutputFormat};
use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::error::{ProvisionError, aws, is_code};

/// The pump's components, as directories under `components/`: what `build` takes by default.
pub const PUMP_COMPONENTS: [&str; 4] = ["sensor", "analyzer", "controller", "model"];

/// The GDK's output directory under the project (or `--out`).
pub const BUILD_DIR: &str = "greengrass-build";

/// Above this size an artifact goes up as a multipart upload (the default).
pub const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;

/// The part size of a multipart upload (the default; S3's minimum is 5 MiB, except for the last part).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// What to build: component directories (each with a `recipe.yaml`), where the binaries are.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// Component directories; each holds `recipe.yaml` and may hold non-binary artifacts.
    pub component_dirs: Vec<PathBuf>,
    /// Where the caller's build put the component binaries (e.g. `target/release`).
    pub bin_dir: PathBuf,
    /// The directory that receives `greengrass-build/`.
    pub out: PathBuf,
}

/// One artifact in the build output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltArtifact {
    /// The file name, the last segment of the recipe's URI.
    pub file_name: String,
    /// The file under `greengrass-build/artifacts/{Name}/{Version}/`.
    pub path: PathBuf,
    /// Base64 SHA-256 of the content, as recipes carry it.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

/// One component in the build output.
#[derive(Debug, Clone)]
pub struct BuiltComponent {
    /// `ComponentName`.
    pub name: String,
    /// `ComponentVersion`.
    pub version: String,
    /// `greengrass-build/recipes/{Name}-{Version}.yaml`.
    pub recipe_path: PathBuf,
    /// The recipe, with each artifact's `Digest` and `Algorithm`.
    pub recipe: Value,
    /// Its `s3://` artifacts, in recipe order.
    pub artifacts: Vec<BuiltArtifact>,
}

/// Builds each component of `spec` into `{out}/greengrass-build`.
pub fn build_components(spec: &BuildSpec) -> Result<Vec<BuiltComponent>, ProvisionError> {
    let root = spec.out.join(BUILD_DIR);
    spec.component_dirs.iter().map(|dir| build_component(dir, &spec.bin_dir, &root)).collect()
}

fn build_component(dir: &Path, bin_dir: &Path, root: &Path) -> Result<BuiltComponent, ProvisionError> {
    let recipe_file = dir.join("recipe.yaml");
    let text = std::fs::read_to_string(&recipe_file).map_err(ProvisionError::file(&recipe_file))?;
    let mut recipe = parse_recipe(&text, &recipe_file)?;
    let (name, version) = identity(&recipe, &recipe_file)?;
    let artifact_dir = root.join("artifacts").join(&name).join(&version);
    std::fs::create_dir_all(&artifact_dir).map_err(ProvisionError::file(&artifact_dir))?;
    let mut artifacts = Vec::new();
    for uri in artifact_uris(&recipe) {
        let file_name = file_name_of(&uri, &recipe_file)?;
        // A Rust component's binary comes from the caller's build; other files (a model) live
        // beside the recipe.
        let candidates = [bin_dir.join(&file_name), dir.join(&file_name)];
        let Some(source) = candidates.iter().find(|p| p.is_file()) else {
            return Err(ProvisionError::ArtifactNotFound {
                component: name.clone(),
                artifact: file_name,
                searched: candidates.to_vec(),
            });
        };
        let path = artifact_dir.join(&file_name);
        copy_atomic(source, &path)?;
        let (digest, size) = digest_file(&path)?;
        artifacts.push(BuiltArtifact { file_name, path, digest, size });
    }
    for_each_s3_artifact(&mut recipe, |file_name, artifact| {
        if let Some(built) = artifacts.iter().find(|a| a.file_name == file_name) {
            set_key(artifact, "Digest", Value::String(built.digest.clone()));
            set_key(artifact, "Algorithm", Value::String("SHA-256".into()));
        }
    });
    let recipes = root.join("recipes");
    std::fs::create_dir_all(&recipes).map_err(ProvisionError::file(&recipes))?;
    let recipe_path = recipes.join(format!("{name}-{version}.yaml"));
    let yaml = serde_yaml_ng::to_string(&recipe)
        .map_err(|e| ProvisionError::BadFile { path: recipe_path.clone(), reason: e.to_string() })?;
    crate::output::write_atomic(&recipe_path, yaml.as_bytes(), 0o644)?;
    Ok(BuiltComponent { name, version, recipe_path, recipe, artifacts })
}

/// Reads every component of a build output (`{dir}/recipes/*.yaml` and its artifacts), with
/// the digests of the files as they are now.
pub fn read_build(dir: &Path) -> Result<Vec<BuiltComponent>, ProvisionError> {
    let recipes = dir.join("recipes");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&recipes)
        .map_err(ProvisionError::file(&recipes))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(ProvisionError::InvalidInput(format!(
            "{} holds no recipe: run `provision component build` first",
            recipes.display()
        )));
    }
    let mut built = Vec::new();
    for recipe_path in paths {
        let text = std::fs::read_to_string(&recipe_path).map_err(ProvisionError::file(&recipe_path))?;
        let recipe = parse_recipe(&text, &recipe_path)?;
        let (name, version) = identity(&recipe, &recipe_path)?;
        let mut artifacts = Vec::new();
        for uri in artifact_uris(&recipe) {
            let file_name = file_name_of(&uri, &recipe_path)?;
            let path = dir.join("artifacts").join(&name).join(&version).join(&file_name);
            if !path.is_file() {
                return Err(ProvisionError::ArtifactNotFound {
                    component: name.clone(),
                    artifact: file_name,
                    searched: vec![path],
                });
            }
            let (digest, size) = digest_file(&path)?;
            artifacts.push(BuiltArtifact { file_name, path, digest, size });
        }
        built.push(BuiltComponent { name, version, recipe_path, recipe, artifacts });
    }
    Ok(built)
}

/// A recipe in YAML or JSON (JSON is YAML), as a JSON value.
fn parse_recipe(text: &str, path: &Path) -> Result<Value, ProvisionError> {
    let value: Value = serde_yaml_ng::from_str(text).map_err(|e| ProvisionError::BadFile {
        path: path.to_path_buf(),
        reason: format!("the recipe does not parse as YAML or JSON: {e}"),
    })?;
    if !value.is_object() {
        return Err(ProvisionError::BadFile { path: path.to_path_buf(), reason: "the recipe is not a mapping".into() });
    }
    Ok(value)
}

fn identity(recipe: &Value, path: &Path) -> Result<(String, String), ProvisionError> {
    let field = |key: &str| {
        get_key(recipe, key).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| ProvisionError::BadFile {
            path: path.to_path_buf(),
            reason: format!("the recipe has no {key}"),
        })
    };
    Ok((field("ComponentName")?, field("ComponentVersion")?))
}

/// Recipe keys are case-insensitive (the GDK lower-cases them).
fn get_key<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

fn get_key_mut<'a>(value: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let object = value.as_object_mut()?;
    let name = object.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned()?;
    object.get_mut(&name)
}

fn set_key(value: &mut Value, key: &str, new: Value) {
    if let Some(object) = value.as_object_mut() {
        let existing = object.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned();
        object.insert(existing.unwrap_or_else(|| key.to_owned()), new);
    }
}

/// Calls `f` with each `s3://` artifact of every manifest, and its file name.
fn for_each_s3_artifact(recipe: &mut Value, mut f: impl FnMut(&str, &mut Value)) {
    let Some(manifests) = get_key_mut(recipe, "Manifests").and_then(Value::as_array_mut) else { return };
    for manifest in manifests {
        let Some(artifacts) = get_key_mut(manifest, "Artifacts").and_then(Value::as_array_mut) else { continue };
        for artifact in artifacts {
            let Some(uri) = get_key(artifact, "URI").and_then(Value::as_str).map(str::to_owned) else { continue };
            if let Some(name) = uri.strip_prefix("s3://").and_then(|rest| rest.rsplit('/').next()) {
                f(name, artifact);
            }
        }
    }
}

/// The distinct `s3://` artifact URIs of every manifest, in order.
fn artifact_uris(recipe: &Value) -> Vec<String> {
    let mut uris = Vec::new();
    for manifest in get_key(recipe, "Manifests").and_then(Value::as_array).into_iter().flatten() {
        for artifact in get_key(manifest, "Artifacts").and_then(Value::as_array).into_iter().flatten() {
            if let Some(uri) = get_key(artifact, "URI").and_then(Value::as_str)
                && uri.starts_with("s3://")
                && !uris.iter().any(|u| u == uri)
            {
                uris.push(uri.to_owned());
            }
        }
    }
    uris
}

/// The digests an (already stored) recipe names, by artifact file name.
fn recipe_digests(recipe: &Value) -> BTreeMap<String, String> {
    let mut digests = BTreeMap::new();
    let mut recipe = recipe.clone();
    for_each_s3_artifact(&mut recipe, |name, artifact| {
        if let Some(d) = get_key(artifact, "Digest").and_then(Value::as_str) {
            digests.insert(name.to_owned(), d.to_owned());
        }
    });
    digests
}

fn file_name_of(uri: &str, recipe: &Path) -> Result<String, ProvisionError> {
    match uri.strip_prefix("s3://").and_then(|rest| rest.split_once('/')).and_then(|(_, key)| key.rsplit('/').next()) {
        Some(name) if !name.is_empty() => Ok(name.to_owned()),
        _ => Err(ProvisionError::BadFile {
            path: recipe.to_path_buf(),
            reason: format!("artifact URI {uri:?} names no file (expected s3://bucket/key/file)"),
        }),
    }
}

fn copy_atomic(from: &Path, to: &Path) -> Result<(), ProvisionError> {
    let tmp = to.with_file_name(format!(
        ".{}.tmp-{}",
        to.file_name().and_then(|n| n.to_str()).unwrap_or("artifact"),
        std::process::id()
    ));
    let result = (|| {
        std::fs::copy(from, &tmp)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, to)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ProvisionError::file(from)(e)
    })
}

/// Base64 SHA-256 and size of a file, read in blocks.
pub fn digest_file(path: &Path) -> Result<(String, u64), ProvisionError> {
    let mut file = std::fs::File::open(path).map_err(ProvisionError::file(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(ProvisionError::file(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((base64::engine::general_purpose::STANDARD.encode(hasher.finalize()), size))
}

/// How to publish.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// The S3 bucket for the artifacts (created when absent).
    pub bucket: String,
    /// How long to wait for a new version to become DEPLOYABLE.
    pub wait: Duration,
    /// How often to ask DescribeComponent meanwhile.
    pub poll: Duration,
    /// Artifacts larger than this go up as multipart uploads.
    pub multipart_threshold: u64,
    /// The part size of those uploads.
    pub part_size: usize,
}

impl PublishOptions {
    /// Publishing into `bucket`, waiting up to 5 minutes, asking every 2 s, multipart above 16 MiB
    /// in 8 MiB parts.
    pub fn new(bucket: impl Into<String>) -> PublishOptions {
        PublishOptions {
            bucket: bucket.into(),
            wait: Duration::from_secs(300),
            poll: Duration::from_secs(2),
            multipart_threshold: MULTIPART_THRESHOLD,
            part_size: PART_SIZE,
        }
    }
}

/// What publishing one component did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOutcome {
    /// A new DEPLOYABLE version; the S3 keys uploaded.
    Created {
        /// The uploaded objects' keys.
        uploaded: Vec<String>,
    },
    /// The version was already there with the same digests: nothing was done.
    AlreadyPublished,
}

/// One published component.
#[derive(Debug, Clone)]
pub struct PublishedComponent {
    /// `ComponentName`.
    pub name: String,
    /// `ComponentVersion`.
    pub version: String,
    /// The component version's ARN.
    pub arn: String,
    /// Created or already there.
    pub outcome: PublishOutcome,
}

/// Publishes every component of a build output directory (`greengrass-build`).
pub async fn publish_build(
    gg: &aws_sdk_greengrassv2::Client,
    s3: &aws_sdk_s3::Client,
    build_dir: &Path,
    options: &PublishOptions,
) -> Result<Vec<PublishedComponent>, ProvisionError> {
    let built = read_build(build_dir)?;
    let mut published = Vec::new();
    for component in &built {
        published.push(publish_component(gg, s3, component, options).await?);
    }
    Ok(published)
}

/// Publishes one built component: compares with a stored version first, then uploads, rewrites
/// the URIs, creates the version and waits for it to become DEPLOYABLE.
pub async fn publish_component(
    gg: &aws_sdk_greengrassv2::Client,
    s3: &aws_sdk_s3::Client,
    component: &BuiltComponent,
    options: &PublishOptions,
) -> Result<PublishedComponent, ProvisionError> {
    let (name, version) = (&component.name, &component.version);
    if let Some(component_arn) = component_arn(gg, name, ComponentVisibilityScope::Private).await? {
        let arn = format!("{component_arn}:versions:{version}");
        let stored = gg.get_component().arn(&arn).recipe_output_format(RecipeOutputFormat::Json).send().await;
        let stored = stored.map_err(aws("GetComponent"));
        if !is_code(&stored, "ResourceNotFoundException") {
            let stored = stored?;
            let recipe: Value = serde_json::from_slice(stored.recipe().as_ref()).map_err(|e| {
                ProvisionError::unexpected("GetComponent", format!("the stored recipe is not JSON: {e}"))
            })?;
            let digests = recipe_digests(&recipe);
            for artifact in &component.artifacts {
                if digests.get(&artifact.file_name) != Some(&artifact.digest) {
                    return Err(ProvisionError::DigestMismatch {
                        component: name.clone(),
                        version: version.clone(),
                        artifact: artifact.file_name.clone(),
                        stored: digests.get(&artifact.file_name).cloned(),
                        local: artifact.digest.clone(),
                    });
                }
            }
            wait_deployable(gg, &arn, name, version, options).await?;
            return Ok(PublishedComponent {
                name: name.clone(),
                version: version.clone(),
                arn,
                outcome: PublishOutcome::AlreadyPublished,
            });
        }
    }

    let mut recipe = component.recipe.clone();
    let mut uploaded = Vec::new();
    if !component.artifacts.is_empty() {
        ensure_bucket(s3, &options.bucket).await?;
    }
    for artifact in &component.artifacts {
        let key = format!("{name}/{version}/{}", artifact.file_name);
        upload(s3, options, &key, artifact).await?;
        uploaded.push(key);
    }
    let bucket = &options.bucket;
    for_each_s3_artifact(&mut recipe, |file_name, entry| {
        if let Some(built) = component.artifacts.iter().find(|a| a.file_name == file_name) {
            set_key(entry, "URI", Value::String(format!("s3://{bucket}/{name}/{version}/{file_name}")));
            set_key(entry, "Digest", Value::String(built.digest.clone()));
            set_key(entry, "Algorithm", Value::String("SHA-256".into()));
        }
    });
    let body = serde_json::to_vec(&recipe).map_err(|e| ProvisionError::InvalidInput(e.to_string()))?;
    let created = gg
        .create_component_version()
        .inline_recipe(Blob::new(body))
        .send()
        .await
        .map_err(aws("CreateComponentVersion"))?;
    let arn = created
        .arn()
        .map(str::to_owned)
        .ok_or_else(|| ProvisionError::unexpected("CreateComponentVersion", "no arn in the answer"))?;
    wait_deployable(gg, &arn, name, version, options).await?;
    Ok(PublishedComponent {
        name: name.clone(),
        version: version.clone(),
        arn,
        outcome: PublishOutcome::Created { uploaded },
    })
}

/// The ARN of the component `name` (without version) among the account's own (`Private`) or
/// AWS's (`Public`, such as `aws.greengrass.Nucleus`), if it is there.
pub async fn component_arn(
    gg: &aws_sdk_greengrassv2::Client,
    name: &str,
    scope: ComponentVisibilityScope,
) -> Result<Option<String>, ProvisionError> {
    let mut pages = gg.list_components().scope(scope).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(aws("ListComponents"))?;
        if let Some(found) = page.components().iter().find(|c| c.component_name() == Some(name)) {
            return Ok(found.arn().map(str::to_owned));
        }
    }
    Ok(None)
}

/// The ARN of `name` at `version`, which must exist: otherwise an input error naming both.
pub async fn component_version_arn(
    gg: &aws_sdk_greengrassv2::Client,
    name: &str,
    version: &str,
) -> Result<String, ProvisionError> {
    let missing = || ProvisionError::InvalidInput(format!("component {name} version {version} is not published"));
    let mut found = component_arn(gg, name, ComponentVisibilityScope::Private).await?;
    if found.is_none() {
        // A deployment may name AWS's components too (the nucleus, the CLI, …).
        found = component_arn(gg, name, ComponentVisibilityScope::Public).await?;
    }
    let Some(component) = found else { return Err(missing()) };
    let arn = format!("{component}:versions:{version}");
    let described = gg.describe_component().arn(&arn).send().await.map_err(aws("DescribeComponent"));
    if is_code(&described, "ResourceNotFoundException") {
        return Err(missing());
    }
    described?;
    Ok(arn)
}

async fn wait_deployable(
    gg: &aws_sdk_greengrassv2::Client,
    arn: &str,
    name: &str,
    version: &str,
    options: &PublishOptions,
) -> Result<(), ProvisionError> {
    let deadline = tokio::time::Instant::now() + options.wait;
    loop {
        let described = gg.describe_component().arn(arn).send().await.map_err(aws("DescribeComponent"))?;
        let status = described.status();
        match status.and_then(|s| s.component_state()) {
            Some(CloudComponentState::Deployable) => return Ok(()),
            Some(CloudComponentState::Failed) => {
                let errors: BTreeMap<String, String> =
                    status.and_then(|s| s.errors()).map(|e| e.clone().into_iter().collect()).unwrap_or_default();
                return Err(ProvisionError::ComponentFailed {
                    component: name.to_owned(),
                    version: version.to_owned(),
                    message: status.and_then(|s| s.message()).unwrap_or_default().to_owned(),
                    errors,
                });
            }
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ProvisionError::unexpected(
                "DescribeComponent",
                format!("{name} {version} did not become DEPLOYABLE within {:?}", options.wait),
            ));
        }
        tokio::time::sleep(options.poll).await;
    }
}

/// Creates `bucket` unless it exists (in the client's region); whether it was created.
pub(crate) async fn ensure_bucket(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<bool, ProvisionError> {
    match s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => return Ok(false),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {}
        Err(e) => return Err(aws("HeadBucket")(e)),
    }
    let mut create = s3.create_bucket().bucket(bucket);
    let region = s3.config().region().map(|r| r.as_ref().to_owned());
    // us-east-1 is the one region that takes no location constraint.
    if let Some(region) = region.filter(|r| r != "us-east-1") {
        use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region.as_str()))
                .build(),
        );
    }
    match create.send().await {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_bucket_already_owned_by_you()) => Ok(false),
        Err(e) => Err(aws("CreateBucket")(e)),
    }
}

/// Uploads one artifact: PutObject with its SHA-256 checksum (S3 verifies it), or a multipart
/// upload above the threshold, aborted when a part fails.
async fn upload(
    s3: &aws_sdk_s3::Client,
    options: &PublishOptions,
    key: &str,
    artifact: &BuiltArtifact,
) -> Result<(), ProvisionError> {
    use aws_sdk_s3::primitives::ByteStream;
    let bucket = options.bucket.as_str();
    if artifact.size <= options.multipart_threshold {
        let body = ByteStream::from_path(&artifact.path)
            .await
            .map_err(|e| ProvisionError::File { path: artifact.path.clone(), source: std::io::Error::other(e) })?;
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .body(body)
            .checksum_sha256(&artifact.digest)
            .send()
            .await
            .map_err(aws("PutObject"))?;
        return Ok(());
    }
    let started =
        s3.create_multipart_upload().bucket(bucket).key(key).send().await.map_err(aws("CreateMultipartUpload"))?;
    let upload_id = started
        .upload_id()
        .map(str::to_owned)
        .ok_or_else(|| ProvisionError::unexpected("CreateMultipartUpload", "no upload id"))?;
    let result = upload_parts(s3, bucket, key, &upload_id, &artifact.path, options.part_size).await;
    match result {
        Ok(parts) => {
            let done = aws_sdk_s3::types::CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
            s3.complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(done)
                .send()
                .await
                .map_err(aws("CompleteMultipartUpload"))?;
            Ok(())
        }
        Err(e) => {
            let _ = s3.abort_multipart_upload().bucket(bucket).key(key).upload_id(&upload_id).send().await;
            Err(e)
        }
    }
}

async fn upload_parts(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    path: &Path,
    part_size: usize,
) -> Result<Vec<aws_sdk_s3::types::CompletedPart>, ProvisionError> {
    use tokio::io::AsyncReadExt as _;
    let mut file = tokio::fs::File::open(path).await.map_err(ProvisionError::file(path))?;
    let mut parts = Vec::new();
    for number in 1.. {
        let mut buf = Vec::with_capacity(part_size);
        (&mut file).take(part_size as u64).read_to_end(&mut buf).await.map_err(ProvisionError::file(path))?;
        if buf.is_empty() {
            break;
        }
        let part = s3
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(buf.into())
            .send()
            .await
            .map_err(aws("UploadPart"))?;
        parts.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(number)
                .set_e_tag(part.e_tag().map(str::to_owned))
                .set_checksum_crc32(part.checksum_crc32().map(str::to_owned))
                .build(),
        );
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECIPE: &str = r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.example.Thing
componentversion: "1.2.3"
Manifests:
  - Platform: {os: linux}
    artifacts:
      - Uri: s3://DOC-EXAMPLE-BUCKET/artifacts/com.example.Thing/1.2.3/thing
      - URI: docker:example/image
    Lifecycle: {Run: "{artifacts:path}/thing"}
  - Platform: {os: darwin}
    Artifacts:
      - URI: s3://DOC-EXAMPLE-BUCKET/artifacts/com.example.Thing/1.2.3/thing
"#;

    #[test]
    fn recipe_keys_are_read_case_insensitively_and_only_s3_artifacts_count() {
        let recipe = parse_recipe(RECIPE, Path::new("r.yaml")).unwrap();
        assert_eq!(identity(&recipe, Path::new("r.yaml")).unwrap(), ("com.example.Thing".into(), "1.2.3".into()));
        assert_eq!(artifact_uris(&recipe), vec!["s3://DOC-EXAMPLE-BUCKET/artifacts/com.example.Thing/1.2.3/thing"]);
    }

    #[test]
    fn build_copies_artifacts_and_writes_their_digests_into_every_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let component = dir.path().join("thing");
        std::fs::create_dir_all(&component).unwrap();
        std::fs::write(component.join("recipe.yaml"), RECIPE).unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("thing"), b"abc").unwrap();
        let spec = BuildSpec { component_dirs: vec![component], bin_dir: bin, out: dir.path().join("out") };
        let built = build_components(&spec).unwrap();
        // SHA-256("abc"), base64.
        let digest = "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=";
        assert_eq!(built[0].artifacts[0].digest, digest);
        let root = dir.path().join("out/greengrass-build");
        assert_eq!(std::fs::read(root.join("artifacts/com.example.Thing/1.2.3/thing")).unwrap(), b"abc");
        let written = std::fs::read_to_string(root.join("recipes/com.example.Thing-1.2.3.yaml")).unwrap();
        let recipe: Value = serde_yaml_ng::from_str(&written).unwrap();
        assert_eq!(recipe_digests(&recipe), BTreeMap::from([("thing".to_owned(), digest.to_owned())]));
        assert_eq!(recipe["Manifests"][1]["Artifacts"][0]["Algorithm"], "SHA-256");
        assert_eq!(recipe["Manifests"][0]["artifacts"][0]["Digest"], digest);
        let again = read_build(&root).unwrap();
        assert_eq!(again[0].artifacts, built[0].artifacts);
    }

    #[test]
    fn a_missing_binary_or_a_broken_recipe_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let component = dir.path().join("thing");
        std::fs::create_dir_all(&component).unwrap();
        std::fs::write(component.join("recipe.yaml"), RECIPE).unwrap();
        let spec = BuildSpec {
            component_dirs: vec![component.clone()],
            bin_dir: dir.path().join("bin"),
            out: dir.path().into(),
        };
        let err = build_components(&spec).unwrap_err();
        assert!(matches!(err, ProvisionError::ArtifactNotFound { .. }), "{err}");
        assert!(err.to_string().contains("thing") && err.to_string().contains("com.example.Thing"), "{err}");
        assert!(err.is_configuration());

        std::fs::write(component.join("recipe.yaml"), "ComponentName: [unclosed").unwrap();
        let err = build_components(&spec).unwrap_err();
        assert!(err.to_string().contains("does not parse") && err.to_string().contains("recipe.yaml"), "{err}");
    }
}
