//! Noticing a new model version without a restart.
//!
//! The model component's Install points the link `{work:path}/current` at the artifacts of the
//! version being installed, with one atomic rename (`components/model/recipe.yaml`). The
//! analyzer is started with that link as its `--model-dir` and depends on the model SOFTly, so a
//! deployment of a new model version does not restart it: the analyzer has to notice the change
//! itself. [`ModelWatch`] does, by polling a cheap [`Fingerprint`] of what the link names.
//!
//! A fingerprint is the directory the link resolves to plus a SHA-256 of the card and of the
//! model file it names. Length and modification time are not enough: a rewrite in place with a
//! file of the same size within one tick of the file system's clock changes neither. The files
//! are small (the shipped model is about 300 KB), so hashing them once per check costs well under
//! a millisecond. Loading is done from the resolved directory, never
//! through the link, so a model and a card always come from one version even when the link
//! moves during the load; a load whose directory was replaced meanwhile is simply followed by
//! another, because the fingerprint changed again.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::model::CARD_FILE;

/// What identifies the files a model directory holds: where they are and what they contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// The directory the watched path resolves to (through the `current` link).
    pub dir: PathBuf,
    /// The files' `(name, SHA-256 of the content)`: the card, then the model file it names.
    files: Vec<(String, [u8; 32])>,
}

/// Takes the fingerprint of `dir`; `None` when it does not resolve (no model installed yet) or
/// its card cannot be read.
pub fn fingerprint(dir: &Path) -> Option<Fingerprint> {
    let resolved = std::fs::canonicalize(dir).ok()?;
    let mut files = vec![stat(&resolved, CARD_FILE)?];
    // The card names the model file; a card that does not parse still gets a fingerprint, so
    // that fixing it is noticed (the load reports what is wrong with it).
    if let Some(file) = std::fs::read(resolved.join(CARD_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|card| card.pointer("/model/file").and_then(|f| f.as_str()).map(str::to_owned))
        .filter(|f| !f.is_empty() && !f.contains(['/', '\\']) && f != "." && f != "..")
    {
        files.extend(stat(&resolved, &file));
    }
    Some(Fingerprint { dir: resolved, files })
}

fn stat(dir: &Path, name: &str) -> Option<(String, [u8; 32])> {
    let mut file = std::fs::File::open(dir.join(name)).ok()?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).ok()?;
    Some((name.to_owned(), hasher.finalize().into()))
}

/// The watched model directory and the fingerprint of what was last loaded (or refused) from it.
#[derive(Debug)]
pub struct ModelWatch {
    path: PathBuf,
    seen: Option<Fingerprint>,
}

impl ModelWatch {
    /// Watches `path` (the `--model-dir`, normally the model component's `current` link);
    /// `seen` is what the component started with.
    pub fn new(path: PathBuf, seen: Option<Fingerprint>) -> Self {
        ModelWatch { path, seen }
    }

    /// The watched path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks the path: `Some(fingerprint)` when it names other files than last time, with the
    /// resolved directory to load from; the new fingerprint counts as seen, so a refused model is
    /// tried once, not on every poll. A path that stopped resolving is not a change: the model
    /// that runs keeps running (a removal of the model component does not unload it).
    pub fn poll(&mut self) -> Option<Fingerprint> {
        let now = fingerprint(&self.path)?;
        if self.seen.as_ref() == Some(&now) {
            return None;
        }
        self.seen = Some(now.clone());
        Some(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn version(root: &Path, name: &str, model: &[u8]) -> PathBuf {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(CARD_FILE), br#"{"model": {"file": "model.onnx"}}"#).unwrap();
        fs::write(dir.join("model.onnx"), model).unwrap();
        dir
    }

    /// Repoints `link` the way the model component's Install does: a new link, then a rename.
    fn repoint(link: &Path, target: &Path) {
        let next = link.with_extension("next");
        let _ = fs::remove_file(&next);
        symlink(target, &next).unwrap();
        fs::rename(&next, link).unwrap();
    }

    /// Versions 1.0.0 and 1.1.0, the link at 1.0.0, and a watch that started there.
    struct Installed {
        _root: tempfile::TempDir,
        link: PathBuf,
        v2: PathBuf,
        watch: ModelWatch,
    }

    fn installed() -> Installed {
        let root = tempfile::tempdir().unwrap();
        let v1 = version(root.path(), "1.0.0", b"one");
        let v2 = version(root.path(), "1.1.0", b"two");
        let link = root.path().join("current");
        repoint(&link, &v1);
        let watch = ModelWatch::new(link.clone(), fingerprint(&link));
        Installed { _root: root, link, v2, watch }
    }

    #[test]
    fn a_repointed_link_is_a_change_and_names_the_new_directory() {
        let Installed { _root, link, v2, mut watch } = installed();
        assert_eq!(watch.poll(), None, "nothing changed since the start");

        repoint(&link, &v2);
        let change = watch.poll().expect("the link now names another version");
        assert_eq!(change.dir, fs::canonicalize(&v2).unwrap());
        assert_eq!(watch.poll(), None, "a change is reported once");
    }

    #[test]
    fn a_rewritten_model_file_is_a_change() {
        let root = tempfile::tempdir().unwrap();
        let v1 = version(root.path(), "1.0.0", b"one");
        let mut watch = ModelWatch::new(v1.clone(), fingerprint(&v1));
        fs::write(v1.join("model.onnx"), b"a longer model").unwrap();
        assert!(watch.poll().is_some());
    }

    #[test]
    fn a_same_size_rewrite_within_one_clock_tick_is_a_change() {
        let root = tempfile::tempdir().unwrap();
        let v1 = version(root.path(), "1.0.0", b"one");
        let model = v1.join("model.onnx");
        let before = fs::metadata(&model).unwrap();
        let mut watch = ModelWatch::new(v1.clone(), fingerprint(&v1));
        // Rewritten in place with as many bytes, and stamped with the old modification time, as a
        // write within the same tick of a coarse file system clock leaves it.
        fs::write(&model, b"two").unwrap();
        fs::File::options().write(true).open(&model).unwrap().set_modified(before.modified().unwrap()).unwrap();
        let after = fs::metadata(&model).unwrap();
        assert_eq!((after.len(), after.modified().unwrap()), (before.len(), before.modified().unwrap()));
        assert!(watch.poll().is_some(), "new content under the same size and time");
        assert_eq!(watch.poll(), None);
    }

    #[test]
    fn a_link_that_appears_after_the_start_is_a_change() {
        let root = tempfile::tempdir().unwrap();
        let link = root.path().join("current");
        let mut watch = ModelWatch::new(link.clone(), fingerprint(&link));
        assert_eq!(watch.poll(), None, "no model installed yet");
        let v1 = version(root.path(), "1.0.0", b"one");
        repoint(&link, &v1);
        assert_eq!(watch.poll().map(|f| f.dir), Some(fs::canonicalize(&v1).unwrap()));
    }

    #[test]
    fn a_vanished_link_is_not_a_change_and_its_return_is() {
        let Installed { _root, link, v2, mut watch } = installed();
        fs::remove_file(&link).unwrap();
        assert_eq!(watch.poll(), None, "the running model stays");
        repoint(&link, &v2);
        assert!(watch.poll().is_some());
    }

    #[test]
    fn a_card_that_does_not_parse_still_has_a_fingerprint_so_its_repair_is_noticed() {
        let root = tempfile::tempdir().unwrap();
        let v1 = version(root.path(), "1.0.0", b"one");
        fs::write(v1.join(CARD_FILE), b"{not json").unwrap();
        let mut watch = ModelWatch::new(v1.clone(), None);
        assert!(watch.poll().is_some(), "the broken card is offered once, to be refused with its reason");
        assert_eq!(watch.poll(), None);
        fs::write(v1.join(CARD_FILE), br#"{"model": {"file": "model.onnx"}}"#).unwrap();
        assert!(watch.poll().is_some());
    }
}
