//! One benchmark command's section of a Markdown file (`docs/benchmarks.md`): the lines between
//! `<!-- {command}:begin … -->` and `<!-- {command}:end -->`. A re-run replaces its own section
//! and leaves everything else in the file, other commands' sections included, byte for byte.

use std::path::Path;

/// What a new file starts with.
const NEW_FILE: &str =
    "# Benchmarks\n\nResults of the project's benchmark commands; each section names the command that produced it.\n";

/// The begin and end markers of one command's section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Markers {
    /// What every begin line of this command starts with (`<!-- {command}:begin`).
    begin_tag: String,
    /// The whole begin line written by this version.
    pub begin: String,
    /// The end line.
    pub end: String,
}

impl Markers {
    /// The markers of `command`'s section (`broker-bench`, `ipc-bench`).
    pub fn new(command: &str) -> Markers {
        Markers {
            begin_tag: format!("<!-- {command}:begin"),
            begin: format!(
                "<!-- {command}:begin (generated; re-running the command it names replaces this section) -->"
            ),
            end: format!("<!-- {command}:end -->"),
        }
    }
}

/// Why a section could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SectionError {
    /// The file has this command's begin marker but no end marker after it: replacing would
    /// lose or duplicate text, so the file must be fixed by hand.
    #[error("{path}: `{begin}` has no `{end}` after it; fix the file by hand and re-run")]
    Unterminated {
        /// The file.
        path: String,
        /// The begin marker found.
        begin: String,
        /// The end marker missing.
        end: String,
    },
    /// The section given does not start and end with the markers.
    #[error("the section must start with `{begin}` and end with `{end}`")]
    NotMarked {
        /// The begin marker expected.
        begin: String,
        /// The end marker expected.
        end: String,
    },
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// `old` with `markers`' section replaced by `section`, or `section` appended after a blank line
/// when `old` has none. `None` when `old` has a begin marker without an end marker after it.
pub fn splice(old: &str, section: &str, markers: &Markers) -> Option<String> {
    let Some(start) = old.find(&markers.begin_tag) else {
        let mut s = old.trim_end().to_owned();
        s.push_str("\n\n");
        s.push_str(section);
        return Some(s);
    };
    let end = start + old[start..].find(&markers.end)? + markers.end.len();
    let rest = old[end..].strip_prefix('\n').unwrap_or(&old[end..]);
    Some(format!("{}{}{}", &old[..start], section, rest))
}

/// Puts `section` (which starts with `markers.begin` and ends with `markers.end`, plus an optional
/// newline) into the file at `path`: replaces the previous section if there is one, appends
/// otherwise, creates the file (and its directory) if missing. Written to a temporary file and
/// renamed, so a failure never leaves half a file.
pub fn write_section(path: &Path, section: &str, markers: &Markers) -> Result<(), SectionError> {
    let io = |source| SectionError::Io { path: path.display().to_string(), source };
    if !section.starts_with(&markers.begin) || !section.trim_end().ends_with(&markers.end) {
        return Err(SectionError::NotMarked { begin: markers.begin.clone(), end: markers.end.clone() });
    }
    let old = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => NEW_FILE.to_owned(),
        Err(e) => return Err(io(e)),
    };
    let new = splice(&old, section, markers).ok_or_else(|| SectionError::Unterminated {
        path: path.display().to_string(),
        begin: markers.begin_tag.clone(),
        end: markers.end.clone(),
    })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, new).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(m: &Markers, body: &str) -> String {
        format!("{}\n{body}\n{}\n", m.begin, m.end)
    }

    #[test]
    fn a_new_section_is_appended_and_a_rerun_replaces_only_it() {
        let m = Markers::new("x-bench");
        let first = splice("# Benchmarks\n\nintro\n", &section(&m, "run 1"), &m).unwrap();
        assert_eq!(first, format!("# Benchmarks\n\nintro\n\n{}", section(&m, "run 1")));
        let with_more = format!("{first}\n## Other\n");
        let second = splice(&with_more, &section(&m, "run 2"), &m).unwrap();
        assert_eq!(second, format!("# Benchmarks\n\nintro\n\n{}\n## Other\n", section(&m, "run 2")));
    }

    #[test]
    fn another_commands_section_is_kept_byte_for_byte() {
        let (a, b) = (Markers::new("broker-bench"), Markers::new("ipc-bench"));
        let doc = format!("# B\n\n{}\n{}", section(&a, "broker figures"), section(&b, "old ipc figures"));
        let new = splice(&doc, &section(&b, "new ipc figures"), &b).unwrap();
        assert_eq!(new, format!("# B\n\n{}\n{}", section(&a, "broker figures"), section(&b, "new ipc figures")));
        // And the other way round: replacing the first section keeps the second.
        let again = splice(&new, &section(&a, "broker 2"), &a).unwrap();
        assert!(again.contains("new ipc figures") && again.contains("broker 2") && !again.contains("broker figures"));
    }

    #[test]
    fn a_begin_marker_written_with_other_words_is_still_replaced() {
        let m = Markers::new("ipc-bench");
        let doc = "intro\n<!-- ipc-bench:begin (older wording) -->\nold\n<!-- ipc-bench:end -->\ntail\n";
        let new = splice(doc, &section(&m, "new"), &m).unwrap();
        assert_eq!(new, format!("intro\n{}tail\n", section(&m, "new")));
    }

    #[test]
    fn a_begin_marker_without_end_is_refused_and_the_file_left_alone() {
        let m = Markers::new("ipc-bench");
        assert_eq!(splice("<!-- ipc-bench:begin -->\nhalf", &section(&m, "x"), &m), None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.md");
        std::fs::write(&path, "keep\n<!-- ipc-bench:begin -->\nhalf\n").unwrap();
        let err = write_section(&path, &section(&m, "x"), &m).unwrap_err();
        assert!(matches!(err, SectionError::Unterminated { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep\n<!-- ipc-bench:begin -->\nhalf\n");
    }

    #[test]
    fn an_unmarked_section_is_refused() {
        let m = Markers::new("ipc-bench");
        let dir = tempfile::tempdir().unwrap();
        let err = write_section(&dir.path().join("b.md"), "no markers", &m).unwrap_err();
        assert!(matches!(err, SectionError::NotMarked { .. }), "{err}");
        assert!(!dir.path().join("b.md").exists());
    }

    #[test]
    fn a_missing_file_is_created_with_a_title() {
        let m = Markers::new("ipc-bench");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docs").join("benchmarks.md");
        write_section(&path, &section(&m, "figures"), &m).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Benchmarks\n"));
        assert!(text.ends_with(&section(&m, "figures")));
    }
}
