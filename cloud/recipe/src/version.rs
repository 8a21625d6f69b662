//! Component versions and npm-style version requirements.
//!
//! `ComponentVersion` is strict Semantic Versioning 2.0 (`MAJOR.MINOR.PATCH[-pre][+build]`),
//! with the limits of the Greengrass component model (aws-greengrass-component-common,
//! `ComponentRecipe`): at most 64 characters, and major, minor and patch at most 999999.
//!
//! `VersionRequirement` is an npm semver range, as the recipe reference specifies ("the
//! npm-style semantic version constraint") and as the nucleus evaluates it
//! (`Requirement.buildNPM` of semver4j): `>=1.0.0 <2.0.0`, `^1.2.0`, `~1.2.0`, `1.x`,
//! `1.0.0 - 2.0.0`, `^1.0.0 || ^2.0.0`, and a bare `1.2.3` meaning exactly that version.
//! We evaluate ranges with `nodejs-semver`, a port of npm's own `node-semver`. The `semver`
//! crate does not fit: it reads a bare `1.2.3` as `^1.2.3`, and has no space-separated
//! comparator sets, `||` or hyphen ranges. A pre-release version satisfies a range only if a
//! comparator of the range names a pre-release of the same `MAJOR.MINOR.PATCH` (npm's rule).

use std::cmp::Ordering;
use std::fmt;

/// Longest component version the Greengrass component model accepts.
pub const MAX_VERSION_LEN: usize = 64;
/// Largest major, minor or patch number the Greengrass component model accepts.
pub const MAX_VERSION_NUMBER: u64 = 999_999;

/// Why a version or a version requirement is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Not `MAJOR.MINOR.PATCH[-pre][+build]` per Semantic Versioning 2.0.
    #[error("{0:?} is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.0.0)")]
    NotSemver(String),
    /// Longer than [`MAX_VERSION_LEN`].
    #[error("version {0:?} is longer than {MAX_VERSION_LEN} characters")]
    TooLong(String),
    /// A number above [`MAX_VERSION_NUMBER`].
    #[error("version {0:?} has a major, minor or patch number above {MAX_VERSION_NUMBER}")]
    NumberTooLarge(String),
    /// Not an npm-style range.
    #[error("{0:?} is not an npm-style version range (e.g. \">=1.0.0 <2.0.0\", \"^1.2.0\", \"~1.2.0\", \"1.0.0\")")]
    NotRange(String),
}

/// A component's version: strict SemVer 2.0 within Greengrass's limits.
#[derive(Clone)]
pub struct ComponentVersion {
    text: String,
    version: nodejs_semver::Version,
}

impl ComponentVersion {
    /// Parses a component version.
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        if text.len() > MAX_VERSION_LEN {
            return Err(VersionError::TooLong(text.to_owned()));
        }
        let numbers = strict_semver_numbers(text).ok_or_else(|| VersionError::NotSemver(text.to_owned()))?;
        if numbers.iter().any(|n| *n > MAX_VERSION_NUMBER) {
            return Err(VersionError::NumberTooLarge(text.to_owned()));
        }
        let version = nodejs_semver::Version::parse(text).map_err(|_| VersionError::NotSemver(text.to_owned()))?;
        Ok(Self { text: text.to_owned(), version })
    }

    /// The version as written in the recipe.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for ComponentVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for ComponentVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ComponentVersion({})", self.text)
    }
}

// Semver precedence ignores build metadata; two versions that differ only in build metadata
// compare equal but are still different recipes, so equality keeps the text as a tie-breaker.
impl PartialEq for ComponentVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ComponentVersion {}

impl PartialOrd for ComponentVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ComponentVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.version.cmp(&other.version).then_with(|| self.text.cmp(&other.text))
    }
}

/// An npm-style version range from `ComponentDependencies.*.VersionRequirement`, or the exact
/// version a deployment asks for.
#[derive(Clone)]
pub struct VersionRequirement {
    text: String,
    range: nodejs_semver::Range,
}

impl VersionRequirement {
    /// Parses an npm-style range. An empty string matches every version, as in npm.
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        let range = nodejs_semver::Range::parse(text).map_err(|_| VersionError::NotRange(text.to_owned()))?;
        Ok(Self { text: text.to_owned(), range })
    }

    /// The requirement that only `version` satisfies (what `--merge NAME=VERSION` asks for).
    pub fn exact(version: &ComponentVersion) -> Self {
        // A strict semver always parses as an npm range meaning "exactly this version".
        let range = nodejs_semver::Range::parse(format!("={}", version.as_str()))
            .unwrap_or_else(|_| nodejs_semver::Range::any());
        Self { text: version.as_str().to_owned(), range }
    }

    /// Whether `version` satisfies this requirement.
    pub fn matches(&self, version: &ComponentVersion) -> bool {
        self.range.satisfies(&version.version)
    }

    /// The requirement as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for VersionRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for VersionRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VersionRequirement({:?})", self.text)
    }
}

/// Checks SemVer 2.0 syntax and returns major, minor and patch (saturating on overflow).
fn strict_semver_numbers(text: &str) -> Option<[u64; 3]> {
    let (rest, build) = match text.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (text, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() != 3 || !parts.iter().all(|p| is_numeric_identifier(p)) {
        return None;
    }
    if let Some(pre) = pre {
        let ok = pre
            .split('.')
            .all(|id| is_identifier(id) && (!id.bytes().all(|b| b.is_ascii_digit()) || is_numeric_identifier(id)));
        if !ok {
            return None;
        }
    }
    if let Some(build) = build
        && !build.split('.').all(is_identifier)
    {
        return None;
    }
    let number = |p: &str| p.parse::<u64>().unwrap_or(u64::MAX);
    Some([number(parts[0]), number(parts[1]), number(parts[2])])
}

/// `0`, or digits without a leading zero.
fn is_numeric_identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
}

/// Non-empty `[0-9A-Za-z-]+`.
fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> ComponentVersion {
        ComponentVersion::parse(text).unwrap()
    }

    #[test]
    fn component_versions_must_be_strict_semver_within_greengrass_limits() {
        let cases: &[(&str, bool)] = &[
            ("1.0.0", true),
            ("0.0.1", true),
            ("1.0.0-alpha.1", true),
            ("1.0.0-rc.1+build.5", true),
            ("999999.999999.999999", true),
            ("1.0", false),
            ("1", false),
            ("v1.0.0", false),
            ("01.0.0", false),
            ("1.0.0-01", false),
            ("1.0.0-", false),
            ("1.0.0+", false),
            ("1.0.0 ", false),
            ("1000000.0.0", false),
            ("", false),
        ];
        for (text, ok) in cases {
            assert_eq!(ComponentVersion::parse(text).is_ok(), *ok, "{text}");
        }
        let long = format!("1.0.0-{}", "a".repeat(60));
        assert_eq!(ComponentVersion::parse(&long).unwrap_err(), VersionError::TooLong(long.clone()));
    }

    #[test]
    fn versions_order_by_semver_precedence() {
        assert!(v("1.10.0") > v("1.9.0"));
        assert!(v("2.0.0") > v("2.0.0-rc.1"));
        assert!(v("2.0.0-rc.2") > v("2.0.0-rc.1"));
        assert_eq!(v("1.0.0"), v("1.0.0"));
    }

    #[test]
    fn npm_style_requirements_match_as_npm_does() {
        let cases: &[(&str, &str, bool)] = &[
            (">=1.0.0 <2.0.0", "1.5.3", true),
            (">=1.0.0 <2.0.0", "2.0.0", false),
            ("^1.2.0", "1.9.9", true),
            ("^1.2.0", "2.0.0", false),
            ("^0.2.0", "0.3.0", false),
            ("~1.2.0", "1.2.9", true),
            ("~1.2.0", "1.3.0", false),
            ("1.0.0", "1.0.0", true),
            ("1.0.0", "1.0.1", false),
            ("=1.0.0", "1.0.0", true),
            ("1.x", "1.4.0", true),
            ("1.0.0 - 2.0.0", "2.0.0", true),
            ("^1.0.0 || ^3.0.0", "3.1.0", true),
            ("^1.0.0 || ^3.0.0", "2.1.0", false),
            (">0.0.0", "0.0.1", true),
            ("*", "7.0.0", true),
            ("", "7.0.0", true),
            // npm excludes pre-releases unless the range names one on the same version tuple.
            (">=1.0.0 <2.0.0", "1.5.0-beta", false),
            (">=1.5.0-alpha <2.0.0", "1.5.0-beta", true),
        ];
        for (range, version, expected) in cases {
            let req = VersionRequirement::parse(range).unwrap();
            assert_eq!(req.matches(&v(version)), *expected, "{range} vs {version}");
        }
    }

    #[test]
    fn malformed_requirements_are_rejected() {
        for bad in ["not a range", ">=>1.0.0", "^^1"] {
            assert!(VersionRequirement::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exact_requirement_matches_only_that_version() {
        let req = VersionRequirement::exact(&v("1.2.3"));
        assert!(req.matches(&v("1.2.3")));
        assert!(!req.matches(&v("1.2.4")));
        assert_eq!(req.as_str(), "1.2.3");
    }
}
