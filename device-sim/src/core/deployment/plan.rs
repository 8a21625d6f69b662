//! What a deployment does to the running components: pure, no processes.
//!
//! Follows the nucleus's deployment merge (`DeploymentConfigMerger`, `KernelConfigResolver`,
//! `GenericExternalService`'s reaction to configuration changes):
//! - a component that is new is installed and started; one no longer in the resolved set is
//!   stopped (Shutdown) and forgotten;
//! - a component whose **version** changed, or whose resolved recipe changed at the same
//!   version (its lifecycle with every recipe variable expanded, its artifacts, its
//!   dependencies), is stopped, installed again (a fresh lifecycle: Install runs) and
//!   started. Interpolation makes this transitive the nucleus's way: a dependent whose
//!   lifecycle reads `{Dep:artifacts:path}` changes with the dependency's version, one that
//!   reads `{Dep:work:path}` or `{Dep:configuration:/…}` of unchanged values does not;
//! - a component with a **HARD** dependency on a component that is replaced or restarted is
//!   restarted (Shutdown, then Startup/Run again; no new Install), dependencies first; a
//!   **SOFT** dependent is left running;
//! - a component whose only change is configuration the lifecycle does not read keeps
//!   running: the configuration store notifies its SubscribeToConfigurationUpdate streams;
//! - a component that is BROKEN gets a fresh lifecycle and is started again (a deployment is
//!   what takes a component out of BROKEN).

use std::collections::{BTreeMap, BTreeSet};

use crate::recipe::{Artifact, DependencyType, Lifecycle};

/// What the planner needs to know about one component of a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentFacts {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its direct dependencies.
    pub dependencies: Vec<(String, DependencyType)>,
    /// Its lifecycle with every recipe variable expanded.
    pub lifecycle: Lifecycle,
    /// Its artifacts (URIs, digests, unarchive, permissions).
    pub artifacts: Vec<Artifact>,
}

/// Why a component is touched (or not) by a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Not running before: install and start.
    Added,
    /// Not in the new set: stop and forget.
    Removed,
    /// Another version: stop, install the new one, start.
    NewVersion {
        /// The version running before.
        from: String,
        /// The version deployed.
        to: String,
    },
    /// Same version, different resolved recipe: stop, install again, start.
    RecipeChanged,
    /// It was BROKEN: install again and start.
    WasBroken,
    /// A HARD dependency is replaced or restarted: restart it.
    HardDependencyRestarted {
        /// The dependency that causes it.
        dependency: String,
    },
    /// Keeps running.
    Unchanged,
}

impl Change {
    /// True when the component gets a new lifecycle (Install runs again).
    pub fn reinstalls(&self) -> bool {
        matches!(self, Change::Added | Change::NewVersion { .. } | Change::RecipeChanged | Change::WasBroken)
    }

    /// True when the component stops running as it is (replaced, restarted or removed).
    fn interrupts(&self) -> bool {
        matches!(
            self,
            Change::Removed
                | Change::NewVersion { .. }
                | Change::RecipeChanged
                | Change::HardDependencyRestarted { .. }
        )
    }
}

/// The steps of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Every component of either set and what happens to it.
    pub changes: BTreeMap<String, Change>,
    /// Components to stop first, dependents before their dependencies.
    pub stop: Vec<String>,
    /// Components that get a fresh lifecycle (NEW), so their Install runs.
    pub fresh: Vec<String>,
    /// Components to start afterwards, dependencies before their dependents.
    pub start: Vec<String>,
}

impl Plan {
    /// True when the deployment changes no component's running state.
    pub fn is_noop(&self) -> bool {
        self.stop.is_empty() && self.start.is_empty()
    }
}

/// Plans going from `current` to `target` (each in start order: dependencies first);
/// `broken` names the components of `current` that are BROKEN.
pub fn plan(current: &[ComponentFacts], target: &[ComponentFacts], broken: &BTreeSet<String>) -> Plan {
    let before: BTreeMap<&str, &ComponentFacts> = current.iter().map(|c| (c.name.as_str(), c)).collect();
    let after: BTreeSet<&str> = target.iter().map(|c| c.name.as_str()).collect();
    let mut changes = BTreeMap::new();
    // Target is in start order, so a dependency's change is known before its dependents'.
    for t in target {
        let change = match before.get(t.name.as_str()) {
            None => Change::Added,
            Some(c) if c.version != t.version => Change::NewVersion { from: c.version.clone(), to: t.version.clone() },
            Some(c) if c.lifecycle != t.lifecycle || c.artifacts != t.artifacts || c.dependencies != t.dependencies => {
                Change::RecipeChanged
            }
            Some(_) if broken.contains(&t.name) => Change::WasBroken,
            Some(_) => t
                .dependencies
                .iter()
                .filter(|(_, kind)| *kind == DependencyType::Hard)
                .find(|(d, _)| changes.get(d).is_some_and(Change::interrupts))
                .map_or(Change::Unchanged, |(d, _)| Change::HardDependencyRestarted { dependency: d.clone() }),
        };
        changes.insert(t.name.clone(), change);
    }
    for c in current.iter().filter(|c| !after.contains(c.name.as_str())) {
        changes.insert(c.name.clone(), Change::Removed);
    }
    let stop = current.iter().rev().map(|c| &c.name).filter(|n| changes[*n].interrupts()).cloned().collect();
    let fresh = target.iter().map(|t| &t.name).filter(|n| changes[*n].reinstalls()).cloned().collect();
    let start = target.iter().map(|t| &t.name).filter(|n| changes[*n] != Change::Unchanged).cloned().collect();
    Plan { changes, stop, fresh, start }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::{Step, StepKind};
    use DependencyType::{Hard, Soft};

    fn facts(name: &str, version: &str, deps: &[(&str, DependencyType)], run: &str) -> ComponentFacts {
        let step = Step {
            kind: StepKind::Run,
            script: run.to_owned(),
            requires_privilege: false,
            skip_if: None,
            timeout: None,
            setenv: Vec::new(),
        };
        ComponentFacts {
            name: name.into(),
            version: version.into(),
            dependencies: deps.iter().map(|(d, k)| ((*d).to_owned(), *k)).collect(),
            lifecycle: Lifecycle { setenv: Vec::new(), steps: vec![step] },
            artifacts: Vec::new(),
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_new_version_is_replaced_and_only_its_hard_dependents_restart() {
        let current = [
            facts("Model", "1.0.0", &[], "m"),
            facts("Analyzer", "1.0.0", &[("Model", Soft)], "a {work}"),
            facts("Gate", "1.0.0", &[("Model", Hard)], "g"),
            facts("Other", "1.0.0", &[], "o"),
        ];
        let mut target = current.clone();
        target[0] = facts("Model", "1.1.0", &[], "m");
        let plan = plan(&current, &target, &BTreeSet::new());
        assert_eq!(plan.changes["Model"], Change::NewVersion { from: "1.0.0".into(), to: "1.1.0".into() });
        assert_eq!(plan.changes["Analyzer"], Change::Unchanged);
        assert_eq!(plan.changes["Gate"], Change::HardDependencyRestarted { dependency: "Model".into() });
        assert_eq!(plan.changes["Other"], Change::Unchanged);
        assert_eq!(plan.stop, names(&["Gate", "Model"]), "dependents stop first");
        assert_eq!(plan.fresh, names(&["Model"]), "only the new version installs again");
        assert_eq!(plan.start, names(&["Model", "Gate"]), "dependencies start first");
    }

    #[test]
    fn hard_restarts_carry_through_chains_but_stop_at_soft_links() {
        let current = [
            facts("A", "1.0.0", &[], "a"),
            facts("B", "1.0.0", &[("A", Hard)], "b"),
            facts("C", "1.0.0", &[("B", Hard)], "c"),
            facts("D", "1.0.0", &[("C", Soft)], "d"),
        ];
        let mut target = current.clone();
        target[0] = facts("A", "1.0.0", &[], "a --changed");
        let plan = plan(&current, &target, &BTreeSet::new());
        assert_eq!(plan.changes["A"], Change::RecipeChanged);
        assert_eq!(plan.changes["B"], Change::HardDependencyRestarted { dependency: "A".into() });
        assert_eq!(plan.changes["C"], Change::HardDependencyRestarted { dependency: "B".into() });
        assert_eq!(plan.changes["D"], Change::Unchanged);
        assert_eq!(plan.stop, names(&["C", "B", "A"]));
        assert_eq!(plan.start, names(&["A", "B", "C"]));
    }

    #[test]
    fn a_dependent_whose_expanded_lifecycle_changes_is_reinstalled() {
        // The dependent reads {Model:artifacts:path}, which holds the version.
        let current = [facts("Model", "1.0.0", &[], "m"), facts("App", "1.0.0", &[("Model", Soft)], "run /a/1.0.0")];
        let target = [facts("Model", "2.0.0", &[], "m"), facts("App", "1.0.0", &[("Model", Soft)], "run /a/2.0.0")];
        let plan = plan(&current, &target, &BTreeSet::new());
        assert_eq!(plan.changes["App"], Change::RecipeChanged);
        assert_eq!(plan.fresh, names(&["Model", "App"]));
    }

    #[test]
    fn added_removed_broken_and_unchanged_components_are_told_apart() {
        let current =
            [facts("Keep", "1.0.0", &[], "k"), facts("Gone", "1.0.0", &[], "g"), facts("Sick", "1.0.0", &[], "s")];
        let target =
            [facts("Keep", "1.0.0", &[], "k"), facts("Sick", "1.0.0", &[], "s"), facts("New", "1.0.0", &[], "n")];
        let broken = BTreeSet::from(["Sick".to_owned()]);
        let plan = plan(&current, &target, &broken);
        assert_eq!(plan.changes["Keep"], Change::Unchanged);
        assert_eq!(plan.changes["Gone"], Change::Removed);
        assert_eq!(plan.changes["Sick"], Change::WasBroken);
        assert_eq!(plan.changes["New"], Change::Added);
        assert_eq!(plan.stop, names(&["Gone"]));
        assert_eq!(plan.fresh, names(&["Sick", "New"]));
        assert_eq!(plan.start, names(&["Sick", "New"]));
    }

    #[test]
    fn the_same_set_is_a_noop_and_a_changed_dependency_list_is_a_recipe_change() {
        let current = [facts("A", "1.0.0", &[], "a"), facts("B", "1.0.0", &[("A", Soft)], "b")];
        let same = plan(&current, &current, &BTreeSet::new());
        assert!(same.is_noop(), "{same:?}");
        let mut target = current.clone();
        target[1].dependencies = vec![("A".into(), Hard)];
        let plan = plan(&current, &target, &BTreeSet::new());
        assert_eq!(plan.changes["B"], Change::RecipeChanged);
        assert_eq!(plan.changes["A"], Change::Unchanged);
    }
}
