//! Function code: a deployment package (a .zip) checked and unpacked into the function's code
//! directory ("Deploying Lambda functions as .zip file archives" and "Lambda quotas" in the AWS
//! Lambda Developer Guide).
//!
//! A package must hold an executable `bootstrap` at its root (the `provided.al2023` and
//! `provided.al2` runtimes start it). Entries that would land outside the code directory
//! (absolute paths, `..`) and symbolic links are refused; sizes are checked against Lambda's
//! quotas — 50 MB zipped, 250 MB unzipped — on what is actually inflated, not on what the
//! archive's headers claim.

use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::Digest as _;

/// Largest deployment package, zipped (Lambda's quota for a direct upload).
pub const MAX_ZIPPED_BYTES: usize = 50 * 1024 * 1024;
/// Largest deployment package, unzipped.
pub const MAX_UNZIPPED_BYTES: u64 = 250 * 1024 * 1024;
/// Most entries a package may hold: bounds the work one upload can cause.
pub const MAX_ENTRIES: usize = 50_000;
/// The file the custom runtimes start.
pub const BOOTSTRAP: &str = "bootstrap";

/// Why a package was refused or could not be unpacked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodeError {
    /// The package is not one Lambda runs (`InvalidParameterValueException`): fix it.
    #[error("{0}")]
    Invalid(String),
    /// The code directory could not be written: retry.
    #[error("writing the function's code: {0}")]
    Io(String),
}

/// What was unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// `CodeSize`: the package's size in bytes.
    pub code_size: u64,
    /// `CodeSha256`: the package's SHA-256, base64.
    pub code_sha256: String,
}

/// One entry to unpack, as checked.
#[derive(Debug)]
struct Entry {
    index: usize,
    path: PathBuf,
    dir: bool,
    mode: u32,
}

/// Checks a package without unpacking it: entry paths, links, declared sizes, and the
/// executable `bootstrap`.
fn check(archive: &mut zip::ZipArchive<Cursor<&[u8]>>) -> Result<Vec<Entry>, CodeError> {
    if archive.len() > MAX_ENTRIES {
        return Err(CodeError::Invalid(format!(
            "the deployment package holds {} entries; at most {MAX_ENTRIES} are accepted",
            archive.len()
        )));
    }
    let mut entries = Vec::with_capacity(archive.len());
    let mut declared: u64 = 0;
    let mut bootstrap = false;
    for index in 0..archive.len() {
        let file = archive
            .by_index(index)
            .map_err(|e| CodeError::Invalid(format!("the deployment package is not a valid zip file: {e}")))?;
        let name = file
            .name()
            .map_err(|e| CodeError::Invalid(format!("the deployment package has an unreadable entry name: {e}")))?
            .into_owned();
        let Some(path) = file.enclosed_name().filter(|_| relative_path(&name)) else {
            return Err(CodeError::Invalid(format!(
                "the deployment package's entry {name:?} points outside the package (absolute or `..` path)"
            )));
        };
        if file.is_symlink() {
            return Err(CodeError::Invalid(format!(
                "the deployment package's entry {name:?} is a symbolic link, which the local cloud does not unpack"
            )));
        }
        declared = declared.saturating_add(file.size());
        let dir = file.is_dir();
        let mut mode = file.unix_mode().map_or(if dir { 0o755 } else { 0o644 }, |m| m & 0o777);
        if !dir && path == Path::new(BOOTSTRAP) {
            // A package zipped without Unix modes (on Windows) gets an executable bootstrap.
            if file.unix_mode().is_none() {
                mode = 0o755;
            }
            if mode & 0o111 == 0 {
                return Err(CodeError::Invalid(format!(
                    "the deployment package's {BOOTSTRAP} is not executable (mode {mode:o}): \
                     chmod 755 {BOOTSTRAP} before zipping"
                )));
            }
            bootstrap = true;
        }
        entries.push(Entry { index, path, dir, mode });
    }
    if declared > MAX_UNZIPPED_BYTES {
        return Err(CodeError::Invalid(format!(
            "Unzipped size must be smaller than {MAX_UNZIPPED_BYTES} bytes (the package unzips to {declared})"
        )));
    }
    if !bootstrap {
        return Err(CodeError::Invalid(format!(
            "the deployment package has no executable file named {BOOTSTRAP} at its root: the \
             provided.al2023 and provided.al2 runtimes start {BOOTSTRAP}"
        )));
    }
    Ok(entries)
}

/// Whether an entry's name stays inside the directory it is unpacked in: relative, without `..`
/// components or drive letters, whichever separator it uses.
pub fn relative_path(name: &str) -> bool {
    let absolute = name.starts_with('/') || name.starts_with('\\');
    !absolute && !name.contains('\0') && name.split(['/', '\\']).all(|c| c != ".." && !c.contains(':'))
}

/// Checks `package` and unpacks it into `dir` (created, must not exist); on any error `dir` is
/// removed again.
pub fn unpack(package: &[u8], dir: &Path) -> Result<Unpacked, CodeError> {
    if package.len() > MAX_ZIPPED_BYTES {
        return Err(CodeError::Invalid(format!(
            "the deployment package is {} bytes; at most {MAX_ZIPPED_BYTES} are accepted zipped",
            package.len()
        )));
    }
    let mut archive = zip::ZipArchive::new(Cursor::new(package))
        .map_err(|e| CodeError::Invalid(format!("Could not unzip uploaded file: {e}")))?;
    let entries = check(&mut archive)?;
    std::fs::create_dir_all(dir.parent().unwrap_or(dir)).map_err(|e| CodeError::Io(e.to_string()))?;
    std::fs::create_dir(dir).map_err(|e| CodeError::Io(format!("{}: {e}", dir.display())))?;
    let written = extract(&mut archive, &entries, dir);
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(dir);
        return Err(e);
    }
    Ok(Unpacked {
        code_size: package.len() as u64,
        code_sha256: base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(package)),
    })
}

fn extract(archive: &mut zip::ZipArchive<Cursor<&[u8]>>, entries: &[Entry], dir: &Path) -> Result<(), CodeError> {
    use std::os::unix::fs::PermissionsExt as _;
    let io = |e: std::io::Error| CodeError::Io(e.to_string());
    let mut budget = MAX_UNZIPPED_BYTES;
    for entry in entries {
        let target = dir.join(&entry.path);
        if entry.dir {
            std::fs::create_dir_all(&target).map_err(io)?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let file = archive
            .by_index(entry.index)
            .map_err(|e| CodeError::Invalid(format!("Could not unzip uploaded file: {e}")))?;
        let mut out = std::fs::File::create(&target).map_err(io)?;
        // Inflate at most what is left of the budget, plus one byte to notice going over it.
        let mut limited = file.take(budget + 1);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = limited
                .read(&mut buf)
                .map_err(|e| CodeError::Invalid(format!("Could not unzip uploaded file: {e}")))?;
            if n == 0 {
                break;
            }
            if n as u64 > budget {
                return Err(CodeError::Invalid(format!(
                    "Unzipped size must be smaller than {MAX_UNZIPPED_BYTES} bytes"
                )));
            }
            budget -= n as u64;
            out.write_all(&buf[..n]).map_err(io)?;
        }
        out.sync_all().map_err(io)?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(entry.mode)).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    /// A zip of `(name, mode, contents)`.
    pub(crate) fn package(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, mode, data) in files {
            let options = SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(*mode);
            writer.start_file(*name, options).unwrap();
            writer.write_all(data).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    #[test]
    fn a_package_with_an_executable_bootstrap_unpacks_with_its_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let zip = package(&[("bootstrap", 0o755, b"#!/bin/sh\n"), ("lib/data.txt", 0o644, b"hello")]);
        let dir = tmp.path().join("code");
        let unpacked = unpack(&zip, &dir).unwrap();
        assert_eq!(unpacked.code_size, zip.len() as u64);
        assert_eq!(std::fs::read(dir.join("lib/data.txt")).unwrap(), b"hello");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(dir.join("bootstrap")).unwrap().permissions().mode() & 0o777, 0o755);
    }

    #[test]
    fn a_package_without_bootstrap_or_with_a_plain_one_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let none = package(&[("handler.py", 0o755, b"print(1)")]);
        let e = unpack(&none, &tmp.path().join("a")).unwrap_err();
        assert!(e.to_string().contains("no executable file named bootstrap"), "{e}");
        assert!(!tmp.path().join("a").exists());
        let plain = package(&[("bootstrap", 0o644, b"#!/bin/sh\n")]);
        let e = unpack(&plain, &tmp.path().join("b")).unwrap_err();
        assert!(e.to_string().contains("not executable"), "{e}");
        let nested = package(&[("dist/bootstrap", 0o755, b"#!/bin/sh\n")]);
        assert!(unpack(&nested, &tmp.path().join("c")).is_err());
    }

    #[test]
    fn entries_escaping_the_code_directory_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["../evil", "/etc/evil", "a/../../evil"] {
            let zip = package(&[("bootstrap", 0o755, b"x"), (name, 0o644, b"x")]);
            let e = unpack(&zip, &tmp.path().join("code")).unwrap_err();
            assert!(matches!(e, CodeError::Invalid(_)), "{name}: {e}");
            assert!(!tmp.path().join("evil").exists());
        }
    }

    #[test]
    fn only_relative_names_without_parent_components_are_accepted() {
        for ok in ["bootstrap", "lib/a.so", "./x", "dir/"] {
            assert!(relative_path(ok), "{ok}");
        }
        for bad in ["../x", "/etc/x", "a/../../x", "..\\x", "\\x", "c:/x", "a\0b"] {
            assert!(!relative_path(bad), "{bad}");
        }
    }

    #[test]
    fn garbage_and_oversized_packages_are_refused_with_a_message() {
        let tmp = tempfile::tempdir().unwrap();
        let e = unpack(b"not a zip at all", &tmp.path().join("g")).unwrap_err();
        assert!(e.to_string().contains("Could not unzip"), "{e}");
        let big = vec![0u8; MAX_ZIPPED_BYTES + 1];
        assert!(unpack(&big, &tmp.path().join("h")).unwrap_err().to_string().contains("at most"));
    }
}
