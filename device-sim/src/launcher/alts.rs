//! The alts directory as the launcher sees it, and every decision over it; no I/O here (the
//! shell reads the links into an [`Alts`] view and carries out the [`Change`]s, see
//! [`super::store`]).
//!
//! Facts taken from the nucleus (`KernelAlternatives`, the `loader` script): `current` is what
//! runs; `new` is a staged version waiting for a restart; `old` is the previous version while the
//! new one is on probation; `broken` is a version that was rolled back from. The flip on
//! restart is "old = current (unless old is there already), current = new, remove new"; a
//! rollback is "broken = current, current = old, remove old". Every step is one atomic link
//! change, so a launcher killed between two steps finds a state that [`prepare`] completes to
//! the same end as the uninterrupted sequence (tested below for every prefix).

/// One of the links of the alts directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkName {
    /// The version that runs.
    Current,
    /// The previous version, kept while the current one is on probation.
    Old,
    /// A staged version, to run at the next restart.
    New,
    /// The version rolled back from, until the core has reported the rollback.
    Broken,
}

impl LinkName {
    /// Every link.
    pub const ALL: [LinkName; 4] = [LinkName::Current, LinkName::Old, LinkName::New, LinkName::Broken];

    /// The link's file name in the alts directory.
    pub fn file_name(self) -> &'static str {
        match self {
            LinkName::Current => "current",
            LinkName::Old => "old",
            LinkName::New => "new",
            LinkName::Broken => "broken",
        }
    }
}

/// What one link leads to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Link {
    /// There is no link.
    #[default]
    Absent,
    /// There is something that does not lead to an installed version (a missing target, a
    /// target without a core binary, a file instead of a link).
    Dangling,
    /// A link to the installed version of this name (`alts/{version}/bin/device-sim`).
    To(String),
}

/// The links of the alts directory at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alts {
    /// `current`.
    pub current: Link,
    /// `old`.
    pub old: Link,
    /// `new`.
    pub new: Link,
    /// `broken`.
    pub broken: Link,
}

/// One durable change of the alts directory; the shell makes each one atomic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Install the running executable as this version (the first start, or `current` lost).
    InstallRunning {
        /// The version to install it as.
        version: String,
    },
    /// Point a link at an installed version (a link under a temporary name, renamed over).
    Point {
        /// The link.
        link: LinkName,
        /// The version directory it leads to.
        version: String,
    },
    /// Remove a link.
    Remove(LinkName),
}

/// What to launch, and how to get the alts directory there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The changes to make first, in order.
    pub changes: Vec<Change>,
    /// The version to launch (`current` after the changes).
    pub launch: String,
    /// The version to go back to when the launched one is on probation (`old`).
    pub probation: Option<String>,
}

impl Alts {
    /// One link.
    pub fn get(&self, name: LinkName) -> &Link {
        match name {
            LinkName::Current => &self.current,
            LinkName::Old => &self.old,
            LinkName::New => &self.new,
            LinkName::Broken => &self.broken,
        }
    }

    fn get_mut(&mut self, name: LinkName) -> &mut Link {
        match name {
            LinkName::Current => &mut self.current,
            LinkName::Old => &mut self.old,
            LinkName::New => &mut self.new,
            LinkName::Broken => &mut self.broken,
        }
    }

    /// The version a link leads to, if it leads to one.
    pub fn version(&self, name: LinkName) -> Option<&str> {
        match self.get(name) {
            Link::To(v) => Some(v),
            _ => None,
        }
    }

    /// Whether any link leads to `version` (its directory must stay).
    pub fn references(&self, version: &str) -> bool {
        LinkName::ALL.iter().any(|&l| self.version(l) == Some(version))
    }

    /// The view after `change`, as the shell would leave the directory.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::InstallRunning { .. } => {}
            Change::Point { link, version } => *self.get_mut(*link) = Link::To(version.clone()),
            Change::Remove(link) => *self.get_mut(*link) = Link::Absent,
        }
    }

    fn push(&mut self, changes: &mut Vec<Change>, change: Change) {
        self.apply(&change);
        changes.push(change);
    }
}

/// What to do before launching, from whatever state the directory is in: finish an
/// interrupted flip or rollback, flip to a staged `new`, or install `running` (the launcher's own
/// executable, claiming that version) when there is no usable `current`. The rules, in order:
///
/// 1. a dangling `new`, `old` or `broken` leads nowhere: removed;
/// 2. `new` set: `broken` removed (a fresh update replaces an old report, as the nucleus's
///    `cleanupLaunchDirectoryLinks`), `old` = `current` unless `old` is set already (a flip
///    that stopped after that step), `current` = `new`, `new` removed;
/// 3. `broken` and `old` both set: a rollback stopped halfway; `current` = `old`, `old`
///    removed;
/// 4. `old` set and no usable `current`: `current` = `old`, `old` removed (the loader's rule);
/// 5. no usable `current`: `running` installed and `current` pointed at it.
///
/// The launched version is on probation when `old` is still set afterwards.
pub fn prepare(alts: &Alts, running: &str) -> Prepared {
    let mut view = alts.clone();
    let mut changes = Vec::new();
    for link in [LinkName::New, LinkName::Old, LinkName::Broken] {
        if *view.get(link) == Link::Dangling {
            view.push(&mut changes, Change::Remove(link));
        }
    }
    if let Some(new) = view.version(LinkName::New).map(str::to_owned) {
        if view.broken != Link::Absent {
            view.push(&mut changes, Change::Remove(LinkName::Broken));
        }
        if view.version(LinkName::Current) != Some(&new) {
            if let (Link::Absent, Some(current)) = (&view.old, view.version(LinkName::Current)) {
                let current = current.to_owned();
                view.push(&mut changes, Change::Point { link: LinkName::Old, version: current });
            }
            view.push(&mut changes, Change::Point { link: LinkName::Current, version: new });
        }
        view.push(&mut changes, Change::Remove(LinkName::New));
    }
    let usable_current = matches!(view.current, Link::To(_));
    let rollback_unfinished = view.broken != Link::Absent;
    if let Some(old) = view.version(LinkName::Old).map(str::to_owned)
        && (rollback_unfinished || !usable_current)
    {
        view.push(&mut changes, Change::Point { link: LinkName::Current, version: old });
        view.push(&mut changes, Change::Remove(LinkName::Old));
    }
    let launch = match view.version(LinkName::Current) {
        Some(current) => current.to_owned(),
        None => {
            view.push(&mut changes, Change::InstallRunning { version: running.to_owned() });
            view.push(&mut changes, Change::Point { link: LinkName::Current, version: running.to_owned() });
            running.to_owned()
        }
    };
    Prepared { changes, launch, probation: view.version(LinkName::Old).map(str::to_owned) }
}

/// The changes that roll the core on probation back: `broken` = `current`, `current` = `old`,
/// `old` removed (the nucleus's `prepareRollback`). `None` when there is nothing to go back to.
pub fn rollback(alts: &Alts) -> Option<Vec<Change>> {
    let (current, old) = (alts.version(LinkName::Current)?, alts.version(LinkName::Old)?);
    Some(vec![
        Change::Point { link: LinkName::Broken, version: current.to_owned() },
        Change::Point { link: LinkName::Current, version: old.to_owned() },
        Change::Remove(LinkName::Old),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(v: &str) -> Link {
        Link::To(v.to_owned())
    }

    /// `[current, old, new, broken]`; `""` absent, `"?"` dangling, else a version.
    fn alts(links: [&str; 4]) -> Alts {
        let link = |s: &str| match s {
            "" => Link::Absent,
            "?" => Link::Dangling,
            v => to(v),
        };
        Alts { current: link(links[0]), old: link(links[1]), new: link(links[2]), broken: link(links[3]) }
    }

    fn after(start: &Alts, changes: &[Change]) -> Alts {
        let mut view = start.clone();
        for c in changes {
            view.apply(c);
        }
        view
    }

    /// (start, expected links afterwards, launched, on probation from)
    type Row = ([&'static str; 4], [&'static str; 4], &'static str, Option<&'static str>);

    #[test]
    fn prepare_launches_what_the_links_say_after_finishing_any_pending_change() {
        let table: &[Row] = &[
            // Nothing yet: the running executable becomes the first version.
            (["", "", "", ""], ["0.9", "", "", ""], "0.9", None),
            // Steady state.
            (["1", "", "", ""], ["1", "", "", ""], "1", None),
            // A staged update: flip, the new one is on probation.
            (["1", "", "2", ""], ["2", "1", "", ""], "2", Some("1")),
            // Flip stopped after old = current.
            (["1", "1", "2", ""], ["2", "1", "", ""], "2", Some("1")),
            // Flip stopped after current = new.
            (["2", "1", "2", ""], ["2", "1", "", ""], "2", Some("1")),
            // On probation: stays so.
            (["2", "1", "", ""], ["2", "1", "", ""], "2", Some("1")),
            // Rolled back, not yet reported: broken stays for the core to see.
            (["1", "", "", "2"], ["1", "", "", "2"], "1", None),
            // Rollback stopped after broken = current.
            (["2", "1", "", "2"], ["1", "", "", "2"], "1", None),
            // Rollback stopped after current = old.
            (["1", "1", "", "2"], ["1", "", "", "2"], "1", None),
            // The new version's directory is gone: back to old (the loader's rule).
            (["?", "1", "", ""], ["1", "", "", ""], "1", None),
            (["", "1", "", ""], ["1", "", "", ""], "1", None),
            // A staged install that is not complete: dropped.
            (["1", "", "?", ""], ["1", "", "", ""], "1", None),
            // A dangling old: nothing to go back to, so no probation.
            (["2", "?", "", ""], ["2", "", "", ""], "2", None),
            // current lost and nothing to go back to: reinstall the running executable.
            (["?", "", "", ""], ["0.9", "", "", ""], "0.9", None),
            // A new update while an old rollback is unreported: the report is dropped.
            (["1", "", "3", "2"], ["3", "1", "", ""], "3", Some("1")),
            // Staged while on probation (the loader keeps the first old).
            (["2", "1", "3", ""], ["3", "1", "", ""], "3", Some("1")),
        ];
        for (start, end, launch, probation) in table {
            let start = alts(*start);
            let prepared = prepare(&start, "0.9");
            assert_eq!(after(&start, &prepared.changes), alts(*end), "links from {start:?}");
            assert_eq!(prepared.launch, *launch, "launched from {start:?}");
            assert_eq!(prepared.probation.as_deref(), *probation, "probation from {start:?}");
            // Preparing again changes nothing: the state is consistent.
            let again = prepare(&after(&start, &prepared.changes), "0.9");
            assert_eq!(again.changes, [], "second prepare from {start:?}");
        }
    }

    #[test]
    fn prepare_installs_the_running_executable_only_without_a_usable_current() {
        let first = prepare(&Alts::default(), "2.14.0");
        assert_eq!(
            first.changes,
            [
                Change::InstallRunning { version: "2.14.0".into() },
                Change::Point { link: LinkName::Current, version: "2.14.0".into() }
            ]
        );
        assert!(
            !prepare(&alts(["1", "", "", ""]), "2.14.0")
                .changes
                .iter()
                .any(|c| matches!(c, Change::InstallRunning { .. }))
        );
    }

    /// A launcher killed after any prefix of a flip or a rollback comes back, through
    /// [`prepare`], to the state the whole sequence leads to.
    #[test]
    fn an_interrupted_flip_or_rollback_is_completed_by_the_next_prepare() {
        let staged = alts(["1", "", "2", ""]);
        let flip = prepare(&staged, "0.9");
        let probation = alts(["2", "1", "", ""]);
        let back = rollback(&probation).unwrap();
        // A flip starts from the staged state prepare sees; a rollback from a decision the
        // launcher makes, so only its started prefixes count.
        for (start, changes, first) in [(&staged, &flip.changes, 0), (&probation, &back, 1)] {
            let end = after(start, changes);
            let expected = prepare(&end, "0.9");
            for cut in first..=changes.len() {
                let interrupted = after(start, &changes[..cut]);
                let recovered = prepare(&interrupted, "0.9");
                assert_eq!(after(&interrupted, &recovered.changes), end, "cut after {cut} of {changes:?}");
                assert_eq!(recovered.launch, expected.launch, "cut after {cut}");
                assert_eq!(recovered.probation, expected.probation, "cut after {cut}");
            }
        }
    }

    #[test]
    fn rollback_marks_current_broken_and_returns_to_old() {
        let back = rollback(&alts(["2", "1", "", ""])).unwrap();
        assert_eq!(after(&alts(["2", "1", "", ""]), &back), alts(["1", "", "", "2"]));
        assert_eq!(rollback(&alts(["2", "", "", ""])), None, "nothing to go back to");
        assert_eq!(rollback(&alts(["?", "1", "", ""])), None, "no current to mark broken");
    }

    #[test]
    fn a_version_directory_is_referenced_while_any_link_leads_to_it() {
        let view = alts(["2", "1", "", "3"]);
        assert!(view.references("1") && view.references("2") && view.references("3"));
        assert!(!view.references("4"));
    }
}
