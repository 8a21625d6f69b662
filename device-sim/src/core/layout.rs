//! The simulated core's files under `--root`, laid out as the Greengrass nucleus lays out its
//! root (AWS-CONTRACTS §7; Greengrass V2 Developer Guide, "Greengrass nucleus" and "Component
//! recipe reference" → `Artifacts`):
//!
//! ```text
//! {root}/packages/recipes/{Component}-{Version}.recipe.{yaml|json}
//! {root}/packages/artifacts/{Component}/{Version}/{file}
//! {root}/packages/artifacts-unarchived/{Component}/{Version}/{archive name without extension}/
//! {root}/work/{Component}/
//! {root}/logs/{Component}.log
//! {root}/logs/greengrass.log
//! ```
//!
//! Artifacts come from a local deployment's artifact directory, `{artifact-dir}/{Name}/{Version}/`
//! (Greengrass CLI `--artifactDir`). Like the nucleus's local deployments
//! (`DeploymentService.copyRecipesAndArtifacts`), the whole directory is copied into the
//! component store, files the recipe does not declare included (they keep their file mode), so
//! a recipe without an `Artifacts` list can run `{artifacts:path}/script.sh`; a declared
//! artifact is checked and placed as follows. Like the nucleus (`ArtifactDownloader`,
//! `ComponentManager`):
//! a `Digest` is the standard base64 (with padding) of the digest named by `Algorithm`
//! (`SHA-256` is the only one the nucleus' Java runtime and we both support here); `Permission`
//! sets the file mode (`Read`/`Execute` `NONE|OWNER|ALL`; the owner also gets write, as the
//! nucleus does when it does not run as root); directories are `0755`; an unarchived tree gets
//! the artifact's permission on every file.
//!
//! Path computations are pure; [`stage_artifacts`] does the file work.

use std::fs;
use std::io::{self, Read};
use std::path::{Component as PathComponent, Path, PathBuf};

use base64::Engine;
use sha2::Digest;

use crate::recipe::{Artifact, ArtifactPermission, ComponentLocations, Unarchive};

/// The on-disk layout of a simulated core under its root directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory (`{kernel:rootPath}`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `packages/recipes/`.
    pub fn recipes_dir(&self) -> PathBuf {
        self.root.join("packages").join("recipes")
    }

    /// `packages/artifacts/`: the component store, laid out `{component}/{version}/`.
    pub fn artifacts_root(&self) -> PathBuf {
        self.root.join("packages").join("artifacts")
    }

    /// `packages/artifacts/{component}/{version}/` (`{artifacts:path}`).
    pub fn artifacts_dir(&self, component: &str, version: &str) -> PathBuf {
        self.artifacts_root().join(component).join(version)
    }

    /// `packages/artifacts-unarchived/{component}/{version}/` (`{artifacts:decompressedPath}`).
    pub fn unarchived_dir(&self, component: &str, version: &str) -> PathBuf {
        self.root.join("packages").join("artifacts-unarchived").join(component).join(version)
    }

    /// Where an archive is unpacked: its file name without the last extension, under
    /// [`Layout::unarchived_dir`] (`model.zip` → `…/{version}/model/`).
    pub fn unarchive_target(&self, component: &str, version: &str, archive_file: &str) -> PathBuf {
        self.unarchived_dir(component, version).join(archive_stem(archive_file))
    }

    /// `work/{component}/` (`{work:path}`, the scripts' working directory).
    pub fn work_dir(&self, component: &str) -> PathBuf {
        self.root.join("work").join(component)
    }

    /// `logs/`.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// `logs/{component}.log`.
    pub fn component_log(&self, component: &str) -> PathBuf {
        self.logs_dir().join(format!("{component}.log"))
    }

    /// `logs/greengrass.log`.
    pub fn greengrass_log(&self) -> PathBuf {
        self.logs_dir().join("greengrass.log")
    }

    /// The recipe-variable locations of a component (same paths as the methods above).
    pub fn locations(&self, component: &str, version: &str) -> ComponentLocations {
        ComponentLocations::under_root(&self.root, component, version)
    }

    /// Creates `packages/recipes`, `logs` and the component's work directory.
    pub fn prepare(&self, component: &str) -> io::Result<()> {
        fs::create_dir_all(self.recipes_dir())?;
        fs::create_dir_all(self.logs_dir())?;
        fs::create_dir_all(self.work_dir(component))
    }
}

/// An archive's name without its last extension, as the nucleus names the unarchive directory.
pub fn archive_stem(file_name: &str) -> &str {
    match file_name.rfind('.') {
        Some(i) if i > 0 => &file_name[..i],
        _ => file_name,
    }
}

/// The file mode an artifact `Permission` gives a file (owner write added, see module docs).
pub fn permission_mode(read: ArtifactPermission, execute: ArtifactPermission) -> u32 {
    let bits = |p: ArtifactPermission, owner: u32, all: u32| match p {
        ArtifactPermission::None => 0,
        ArtifactPermission::Owner => owner,
        ArtifactPermission::All => all,
    };
    0o200 | bits(read, 0o400, 0o444) | bits(execute, 0o100, 0o111)
}

/// The base64 SHA-256 digest of `bytes`, as a recipe's `Digest` writes it.
pub fn sha256_digest(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes))
}

/// Writes `bytes` to `path` durably: its directory made if missing, a temporary file written and
/// synced, renamed over `path`, the directory synced. A crash leaves the old file or the new one.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

/// The same digest of a file, read in 64 KiB pieces (a large artifact is never in memory whole).
pub fn file_digest(path: &Path) -> io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(hasher.finalize()))
}

/// A relative path inside an archive, checked: `None` if it is absolute or climbs out with `..`
/// (zip-slip).
pub fn safe_entry_path(name: &str) -> Option<PathBuf> {
    let path = Path::new(name);
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            PathComponent::Normal(p) => out.push(p),
            PathComponent::CurDir => {}
            PathComponent::ParentDir | PathComponent::RootDir | PathComponent::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Why a component's artifacts could not be put in place. Every variant is a fault of the
/// deployment's input: fix the artifact or the recipe and deploy again.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The artifact file is not in the artifact directory.
    #[error("artifact {uri} of {component}: {path} cannot be read; put it in the artifact directory")]
    Missing {
        /// Component name.
        component: String,
        /// Artifact URI from the recipe.
        uri: String,
        /// Where it was looked for.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file's digest differs from the recipe's `Digest`.
    #[error(
        "artifact {uri} of {component}: digest mismatch: recipe says {expected} ({algorithm}), file has {actual}; rebuild the recipe or the artifact"
    )]
    DigestMismatch {
        /// Component name.
        component: String,
        /// Artifact URI.
        uri: String,
        /// The algorithm.
        algorithm: String,
        /// The recipe's digest.
        expected: String,
        /// The file's digest.
        actual: String,
    },
    /// The recipe names a digest algorithm we cannot check.
    #[error("artifact {uri} of {component}: unsupported digest algorithm {algorithm:?} (only SHA-256)")]
    UnsupportedAlgorithm {
        /// Component name.
        component: String,
        /// Artifact URI.
        uri: String,
        /// The algorithm named.
        algorithm: String,
    },
    /// A ZIP archive could not be read, or an entry would land outside its directory.
    #[error("artifact {uri} of {component}: bad ZIP archive: {why}")]
    BadArchive {
        /// Component name.
        component: String,
        /// Artifact URI.
        uri: String,
        /// What is wrong.
        why: String,
    },
    /// The component's artifact directory could not be copied into the core's root.
    #[error("artifacts of {component}: cannot copy {path}: {source}")]
    Copy {
        /// Component name.
        component: String,
        /// The file or directory that could not be read or written.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Writing to the core's root failed.
    #[error("artifact {uri} of {component}: cannot write {path}: {source}")]
    Io {
        /// Component name.
        component: String,
        /// Artifact URI.
        uri: String,
        /// The path written.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// Copies a component's artifacts from `{artifact_source}/{component}/{version}/` into the
/// layout, checks digests, sets permissions and unpacks `Unarchive: ZIP` artifacts; then
/// copies the rest of that directory (files the recipe does not declare), as the nucleus
/// copies a local deployment's whole artifact directory.
pub fn stage_artifacts(
    layout: &Layout,
    artifact_source: &Path,
    component: &str,
    version: &str,
    artifacts: &[Artifact],
) -> Result<(), ArtifactError> {
    let target_dir = layout.artifacts_dir(component, version);
    for artifact in artifacts {
        let uri = artifact.uri.clone();
        let io_err = |path: &Path, source| ArtifactError::Io {
            component: component.to_owned(),
            uri: uri.clone(),
            path: path.to_owned(),
            source,
        };
        let name = artifact.file_name();
        let from = artifact_source.join(component).join(version).join(name);
        let to = target_dir.join(name);
        let missing = |source| ArtifactError::Missing {
            component: component.to_owned(),
            uri: uri.clone(),
            path: from.clone(),
            source,
        };
        let copied = if from.is_file() && same_dir(&artifact_source.join(component).join(version), &target_dir) {
            // Staging from the core's own store (a cloud deployment downloaded it there): the file
            // stays where it is; its digest is checked reading it in pieces.
            check_digest_value(component, artifact, file_digest(&from).map_err(missing)?)?;
            None
        } else {
            let bytes = fs::read(&from).map_err(missing)?;
            check_digest_value(component, artifact, sha256_digest(&bytes))?;
            fs::create_dir_all(&target_dir).map_err(|e| io_err(&target_dir, e))?;
            // A staged copy from an earlier start may be read-only: replace it, do not write into it.
            let _ = fs::remove_file(&to);
            fs::write(&to, &bytes).map_err(|e| io_err(&to, e))?;
            Some(bytes)
        };
        let mode = permission_mode(artifact.read, artifact.execute);
        set_mode(&to, mode).map_err(|e| io_err(&to, e))?;
        if artifact.unarchive == Unarchive::Zip {
            let bytes = match copied {
                Some(bytes) => bytes,
                None => fs::read(&to).map_err(|e| io_err(&to, e))?,
            };
            let dest = layout.unarchive_target(component, version, name);
            unzip(&bytes, &dest, mode).map_err(|why| match why {
                UnzipError::Bad(why) => {
                    ArtifactError::BadArchive { component: component.to_owned(), uri: uri.clone(), why }
                }
                UnzipError::Io(path, source) => io_err(&path, source),
            })?;
        }
    }
    let declared: Vec<&str> = artifacts.iter().map(Artifact::file_name).collect();
    copy_undeclared(&artifact_source.join(component).join(version), &target_dir, &declared)
        .map_err(|(path, source)| ArtifactError::Copy { component: component.to_owned(), path, source })
}

/// Copies the files and directories of `from` into `to`, except the top-level files named in
/// `declared` (staged with their recipe's permission already). Nothing to do when `from` does
/// not exist or is `to` itself (staging again from the core's own store). A symbolic link to a
/// file is copied as the file; a link to a directory is not followed, so a loop cannot recurse.
fn copy_undeclared(from: &Path, to: &Path, declared: &[&str]) -> Result<(), (PathBuf, io::Error)> {
    if !from.is_dir() || same_dir(from, to) {
        return Ok(());
    }
    copy_tree(from, to, declared)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    matches!((fs::canonicalize(a), fs::canonicalize(b)), (Ok(a), Ok(b)) if a == b)
}

fn copy_tree(from: &Path, to: &Path, skip: &[&str]) -> Result<(), (PathBuf, io::Error)> {
    let at = |p: &Path| {
        let p = p.to_owned();
        move |e| (p, e)
    };
    fs::create_dir_all(to).map_err(at(to))?;
    let mut entries = fs::read_dir(from).map_err(at(from))?.collect::<Result<Vec<_>, _>>().map_err(at(from))?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| skip.contains(&n)) {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        let kind = entry.file_type().map_err(at(&src))?;
        if kind.is_dir() {
            copy_tree(&src, &dst, &[])?;
        } else if kind.is_file() || (kind.is_symlink() && src.is_file()) {
            // A staged copy from an earlier start may be read-only: replace it, do not write into it.
            let _ = fs::remove_file(&dst);
            fs::copy(&src, &dst).map_err(at(&src))?;
        }
    }
    Ok(())
}

/// Checks `actual` (base64 SHA-256 of the artifact's bytes) against the recipe's digest.
fn check_digest_value(component: &str, artifact: &Artifact, actual: String) -> Result<(), ArtifactError> {
    let Some(expected) = &artifact.digest else {
        return Ok(());
    };
    let algorithm = artifact.algorithm.clone().unwrap_or_else(|| "SHA-256".to_owned());
    if !algorithm.eq_ignore_ascii_case("SHA-256") {
        return Err(ArtifactError::UnsupportedAlgorithm {
            component: component.to_owned(),
            uri: artifact.uri.clone(),
            algorithm,
        });
    }
    if &actual != expected {
        return Err(ArtifactError::DigestMismatch {
            component: component.to_owned(),
            uri: artifact.uri.clone(),
            algorithm,
            expected: expected.clone(),
            actual,
        });
    }
    Ok(())
}

enum UnzipError {
    Bad(String),
    Io(PathBuf, io::Error),
}

fn unzip(bytes: &[u8], dest: &Path, mode: u32) -> Result<(), UnzipError> {
    let mut archive = zip::ZipArchive::new(io::Cursor::new(bytes)).map_err(|e| UnzipError::Bad(e.to_string()))?;
    // Check every entry before writing anything, so a hostile archive leaves nothing behind.
    let mut entries = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let entry = archive.by_index_raw(i).map_err(|e| UnzipError::Bad(e.to_string()))?;
        let name = entry.name().map_err(|e| UnzipError::Bad(e.to_string()))?.into_owned();
        let Some(rel) = safe_entry_path(&name) else {
            return Err(UnzipError::Bad(format!("entry {name:?} would be written outside {}", dest.display())));
        };
        entries.push((i, rel, entry.is_dir()));
    }
    let mkdir = |p: &Path| fs::create_dir_all(p).map_err(|e| UnzipError::Io(p.to_owned(), e));
    mkdir(dest)?;
    for (i, rel, is_dir) in entries {
        let shown = rel.display().to_string();
        let path = dest.join(rel);
        if is_dir {
            mkdir(&path)?;
            continue;
        }
        if let Some(parent) = path.parent() {
            mkdir(parent)?;
        }
        let mut entry = archive.by_index(i).map_err(|e| UnzipError::Bad(e.to_string()))?;
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(|e| UnzipError::Bad(format!("entry {shown}: {e}")))?;
        let _ = fs::remove_file(&path);
        fs::write(&path, &data).map_err(|e| UnzipError::Io(path.clone(), e))?;
        set_mode(&path, mode).map_err(|e| UnzipError::Io(path.clone(), e))?;
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_nucleus_layout() {
        let l = Layout::new("/gg");
        assert_eq!(l.recipes_dir(), Path::new("/gg/packages/recipes"));
        assert_eq!(l.artifacts_dir("com.x.A", "1.0.0"), Path::new("/gg/packages/artifacts/com.x.A/1.0.0"));
        assert_eq!(
            l.unarchive_target("com.x.A", "1.0.0", "model.tar.zip"),
            Path::new("/gg/packages/artifacts-unarchived/com.x.A/1.0.0/model.tar")
        );
        assert_eq!(l.work_dir("com.x.A"), Path::new("/gg/work/com.x.A"));
        assert_eq!(l.component_log("com.x.A"), Path::new("/gg/logs/com.x.A.log"));
        assert_eq!(l.greengrass_log(), Path::new("/gg/logs/greengrass.log"));
        let loc = l.locations("com.x.A", "1.0.0");
        assert_eq!(Path::new(&loc.artifacts_path), l.artifacts_dir("com.x.A", "1.0.0"));
        assert_eq!(Path::new(&loc.artifacts_decompressed_path), l.unarchived_dir("com.x.A", "1.0.0"));
        assert_eq!(Path::new(&loc.work_path), l.work_dir("com.x.A"));
    }

    #[test]
    fn archive_directory_drops_only_the_last_extension() {
        for (file, stem) in [("a.zip", "a"), ("a.b.zip", "a.b"), ("noext", "noext"), (".zip", ".zip")] {
            assert_eq!(archive_stem(file), stem, "{file}");
        }
    }

    #[test]
    fn permission_maps_to_file_mode() {
        use ArtifactPermission::*;
        let cases = [
            (Owner, None, 0o600),
            (All, None, 0o644),
            (Owner, Owner, 0o700),
            (All, All, 0o755),
            (None, None, 0o200),
            (All, Owner, 0o744),
        ];
        for (read, exec, mode) in cases {
            assert_eq!(permission_mode(read, exec), mode, "{read:?} {exec:?}");
        }
    }

    #[test]
    fn digest_is_standard_base64_of_sha256() {
        // echo -n hello | openssl dgst -sha256 -binary | base64
        assert_eq!(sha256_digest(b"hello"), "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=");
    }

    #[test]
    fn the_whole_artifact_directory_is_copied_and_declared_files_keep_their_permission() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("artifacts");
        let version_dir = source.join("com.x.A").join("1.0.0");
        fs::create_dir_all(version_dir.join("lib/deep")).unwrap();
        fs::write(version_dir.join("probe.sh"), "echo probe\n").unwrap();
        set_mode(&version_dir.join("probe.sh"), 0o750).unwrap();
        fs::write(version_dir.join("lib/deep/data.txt"), "42").unwrap();
        fs::write(version_dir.join("model.bin"), "model").unwrap();
        let declared = Artifact {
            uri: "s3://bucket/model.bin".into(),
            unarchive: Unarchive::None,
            read: ArtifactPermission::Owner,
            execute: ArtifactPermission::None,
            digest: Some(sha256_digest(b"model")),
            algorithm: None,
        };
        let layout = Layout::new(dir.path().join("root"));

        stage_artifacts(&layout, &source, "com.x.A", "1.0.0", std::slice::from_ref(&declared)).unwrap();

        let staged = layout.artifacts_dir("com.x.A", "1.0.0");
        let mode = |p: &str| fs::metadata(staged.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(fs::read_to_string(staged.join("probe.sh")).unwrap(), "echo probe\n");
        assert_eq!(mode("probe.sh"), 0o750, "an undeclared file keeps its mode");
        assert_eq!(fs::read_to_string(staged.join("lib/deep/data.txt")).unwrap(), "42");
        assert_eq!(mode("model.bin"), 0o600, "a declared file gets its recipe's permission");
        // Staging again from the store itself (a rollback) leaves it as it is.
        let store = dir.path().join("root/packages/artifacts");
        stage_artifacts(&layout, &store, "com.x.A", "1.0.0", std::slice::from_ref(&declared)).unwrap();
        assert_eq!(fs::read_to_string(staged.join("lib/deep/data.txt")).unwrap(), "42");
        // A declared artifact is still digest-checked.
        fs::write(version_dir.join("model.bin"), "other").unwrap();
        let err = stage_artifacts(&layout, &source, "com.x.A", "1.0.0", &[declared]).unwrap_err();
        assert!(matches!(err, ArtifactError::DigestMismatch { .. }), "{err}");
    }

    #[test]
    fn zip_slip_entries_are_refused() {
        assert_eq!(safe_entry_path("a/b.txt"), Some(PathBuf::from("a/b.txt")));
        assert_eq!(safe_entry_path("./a"), Some(PathBuf::from("a")));
        for bad in ["../x", "a/../../x", "/etc/passwd", "", "."] {
            assert_eq!(safe_entry_path(bad), Option::None, "{bad}");
        }
    }
}
