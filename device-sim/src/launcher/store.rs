//! The alts directory on disk: its links read into an [`Alts`] view, and each [`Change`] made
//! durable. A link is replaced by creating the new one under a temporary name and renaming it
//! over the old (atomic on POSIX), then syncing the directory; a core binary is copied to a
//! temporary file, synced and renamed into place. So a crash leaves either the old or the new
//! link, never none, and [`super::alts::prepare`] finishes what was started.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use super::alts::{Alts, Change, Link, LinkName};

/// The alts directory's name under the core's root (`{root}/alts`).
pub const ALTS_DIR: &str = "alts";
/// The core binary's path in a version directory (`alts/{version}/bin/device-sim`).
pub const CORE_BINARY: &str = "bin/device-sim";

/// A file operation on the alts directory failed. Retrying may help (a full disk, a
/// permission fixed); the path says where to look.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub struct AltsError {
    /// What was being done ("read the link", "install the core binary as", …).
    pub action: &'static str,
    /// The file it was done to.
    pub path: PathBuf,
    /// Why it failed.
    #[source]
    pub source: io::Error,
}

/// Whether `name` can be a version directory of the alts directory: one plain file name that is
/// neither a link's name nor hidden (temporary files start with a dot).
pub fn is_version_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!((components.next(), components.next()), (Some(Component::Normal(_)), None))
        && !name.starts_with('.')
        && !name.contains('/')
        && !LinkName::ALL.iter().any(|l| l.file_name() == name)
}

/// The alts directory of one core root.
#[derive(Debug, Clone)]
pub struct AltsDir {
    dir: PathBuf,
}

impl AltsDir {
    /// The alts directory of the core rooted at `root`.
    pub fn new(root: &Path) -> Self {
        Self { dir: root.join(ALTS_DIR) }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A link's path.
    pub fn link_path(&self, link: LinkName) -> PathBuf {
        self.dir.join(link.file_name())
    }

    /// The core binary of an installed version.
    pub fn binary(&self, version: &str) -> PathBuf {
        self.dir.join(version).join(CORE_BINARY)
    }

    /// What a link leads to.
    pub fn read(&self, link: LinkName) -> Result<Link, AltsError> {
        let path = self.link_path(link);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Link::Absent),
            Err(e) => return Err(failed("read the link", &path)(e)),
        };
        if !meta.file_type().is_symlink() {
            return Ok(Link::Dangling);
        }
        let target = fs::read_link(&path).map_err(failed("read the link", &path))?;
        Ok(match target.to_str() {
            Some(name) if is_version_name(name) && self.binary(name).is_file() => Link::To(name.to_owned()),
            _ => Link::Dangling,
        })
    }

    /// Every link.
    pub fn observe(&self) -> Result<Alts, AltsError> {
        Ok(Alts {
            current: self.read(LinkName::Current)?,
            old: self.read(LinkName::Old)?,
            new: self.read(LinkName::New)?,
            broken: self.read(LinkName::Broken)?,
        })
    }

    /// Makes one change durable; `running` is the executable `InstallRunning` installs.
    pub fn apply(&self, change: &Change, running: &Path) -> Result<(), AltsError> {
        match change {
            Change::InstallRunning { version } => self.install(version, running),
            Change::Point { link, version } => self.point(*link, version),
            Change::Remove(link) => self.remove(*link),
        }
    }

    /// Points `link` at the version directory `version` (a relative link, so the root may move).
    pub fn point(&self, link: LinkName, version: &str) -> Result<(), AltsError> {
        let path = self.link_path(link);
        let temporary = self.dir.join(format!(".{}.tmp", link.file_name()));
        fs::create_dir_all(&self.dir).map_err(failed("create", &self.dir))?;
        remove_if_present(&temporary).map_err(failed("remove the leftover", &temporary))?;
        std::os::unix::fs::symlink(version, &temporary).map_err(failed("create the link", &temporary))?;
        fs::rename(&temporary, &path).map_err(failed("replace the link", &path))?;
        sync_dir(&self.dir).map_err(failed("sync", &self.dir))
    }

    /// Removes `link` (nothing to do when it is not there).
    pub fn remove(&self, link: LinkName) -> Result<(), AltsError> {
        let path = self.link_path(link);
        remove_if_present(&path).map_err(failed("remove the link", &path))?;
        sync_dir(&self.dir).map_err(failed("sync", &self.dir))
    }

    /// Installs `source` as the core binary of `version` (`alts/{version}/bin/device-sim`,
    /// executable), replacing one that is there; durable when it returns.
    pub fn install(&self, version: &str, source: &Path) -> Result<(), AltsError> {
        let binary = self.binary(version);
        let bin = binary.parent().unwrap_or(&self.dir).to_owned();
        let temporary = bin.join(".device-sim.tmp");
        fs::create_dir_all(&bin).map_err(failed("create", &bin))?;
        fs::copy(source, &temporary).map_err(failed("copy the core binary to", &temporary))?;
        fs::set_permissions(&temporary, fs::Permissions::from_mode(0o755))
            .map_err(failed("make executable", &temporary))?;
        File::open(&temporary).and_then(|f| f.sync_all()).map_err(failed("sync", &temporary))?;
        fs::rename(&temporary, &binary).map_err(failed("install the core binary as", &binary))?;
        for dir in [bin.as_path(), &self.dir.join(version), &self.dir] {
            sync_dir(dir).map_err(failed("sync", dir))?;
        }
        Ok(())
    }

    /// Deletes the directory of `version` unless a link still leads to it (the nucleus cleans
    /// up a launch directory once its update is settled).
    pub fn remove_unreferenced(&self, version: &str) -> Result<(), AltsError> {
        if !is_version_name(version) || self.observe()?.references(version) {
            return Ok(());
        }
        let dir = self.dir.join(version);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(failed("remove the version directory", &dir)(e)),
            _ => Ok(()),
        }
    }
}

/// The error of `action` on `path`, for `map_err`.
fn failed(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AltsError {
    let path = path.to_owned();
    move |source| AltsError { action, path, source }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes a directory's entries (a rename, a new or removed file) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn installed(alts: &AltsDir, version: &str) {
        let source = alts.path().parent().unwrap().join("core-binary");
        fs::write(&source, "#!/bin/sh\n").unwrap();
        alts.install(version, &source).unwrap();
    }

    #[test]
    fn links_read_as_absent_dangling_or_an_installed_version() {
        let dir = tempfile::tempdir().unwrap();
        let alts = AltsDir::new(dir.path());
        assert_eq!(alts.observe().unwrap(), Alts::default());
        installed(&alts, "1.0.0");
        let mode = fs::metadata(alts.binary("1.0.0")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        alts.point(LinkName::Current, "1.0.0").unwrap();
        alts.point(LinkName::Old, "2.0.0").unwrap();
        fs::create_dir_all(alts.path().join("3.0.0")).unwrap();
        alts.point(LinkName::New, "3.0.0").unwrap();
        fs::write(alts.link_path(LinkName::Broken), "").unwrap();
        let view = alts.observe().unwrap();
        assert_eq!(view.current, Link::To("1.0.0".into()));
        assert_eq!(view.old, Link::Dangling, "target missing");
        assert_eq!(view.new, Link::Dangling, "no core binary");
        assert_eq!(view.broken, Link::Dangling, "not a link");
        std::os::unix::fs::symlink(alts.path().join("1.0.0"), alts.link_path(LinkName::Old).with_extension("x"))
            .unwrap();
        fs::rename(alts.link_path(LinkName::Old).with_extension("x"), alts.link_path(LinkName::Old)).unwrap();
        assert_eq!(alts.read(LinkName::Old).unwrap(), Link::Dangling, "absolute targets are not ours");
    }

    #[test]
    fn point_replaces_a_link_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let alts = AltsDir::new(dir.path());
        installed(&alts, "1.0.0");
        installed(&alts, "2.0.0");
        alts.point(LinkName::Current, "1.0.0").unwrap();
        // A temporary link left by a launcher killed mid-change is replaced.
        std::os::unix::fs::symlink("junk", alts.path().join(".current.tmp")).unwrap();
        alts.point(LinkName::Current, "2.0.0").unwrap();
        assert_eq!(alts.read(LinkName::Current).unwrap(), Link::To("2.0.0".into()));
        let mut names: Vec<_> = fs::read_dir(alts.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["1.0.0", "2.0.0", "current"]);
        alts.remove(LinkName::Current).unwrap();
        alts.remove(LinkName::Current).unwrap();
        assert_eq!(alts.read(LinkName::Current).unwrap(), Link::Absent);
    }

    #[test]
    fn a_version_directory_goes_only_when_no_link_leads_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let alts = AltsDir::new(dir.path());
        installed(&alts, "1.0.0");
        alts.point(LinkName::Broken, "1.0.0").unwrap();
        alts.remove_unreferenced("1.0.0").unwrap();
        assert!(alts.binary("1.0.0").exists());
        alts.remove(LinkName::Broken).unwrap();
        alts.remove_unreferenced("1.0.0").unwrap();
        assert!(!alts.path().join("1.0.0").exists());
        alts.remove_unreferenced("1.0.0").unwrap();
    }

    #[test]
    fn version_names_are_plain_file_names() {
        for good in ["2.14.0", "1.0.0-rc.1+build"] {
            assert!(is_version_name(good), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "/abs", ".hidden", "current", "old", "new", "broken"] {
            assert!(!is_version_name(bad), "{bad}");
        }
    }
}
