//! Dependency resolution and start order.
//!
//! Given the recipes available on the device (a [`Catalog`]: name → versions) and a
//! deployment's root components (`--merge NAME=VERSION`), pick one version of every component
//! reachable from the roots such that every `VersionRequirement` on it holds, then order them
//! dependencies first.
//!
//! Like the nucleus (`DependencyResolver`), resolution walks the graph breadth-first, keeps every
//! dependent's requirement on each component, picks a version satisfying all of them and, when
//! a component's pick changes, drops the requirements its old version made. It does not
//! backtrack: if no version satisfies the requirements gathered, resolution fails and says which
//! requirement came from whom. Where the nucleus prefers the version already running, we pick
//! the highest satisfying version (there is no running state here).
//!
//! `DependencyType` does not change the order: a component starts after all its dependencies,
//! HARD or SOFT; HARD only means it restarts when the dependency changes state.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;

use super::model::{DependencyType, Recipe};
use super::version::{ComponentVersion, VersionError, VersionRequirement};

/// Who asked for a version of a component.
const DEPLOYMENT: &str = "";

/// The components a device can install: recipes, and components the core provides itself.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    components: BTreeMap<String, BTreeMap<ComponentVersion, Option<Recipe>>>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a recipe; returns the recipe it replaces (same name and version), if any.
    pub fn add(&mut self, recipe: Recipe) -> Option<Recipe> {
        self.components.entry(recipe.name.clone()).or_default().insert(recipe.version.clone(), Some(recipe)).flatten()
    }

    /// Declares a component the core provides without a recipe (the nucleus itself, say), so
    /// that dependencies on it resolve. It has no dependencies.
    pub fn add_builtin(&mut self, name: &str, version: ComponentVersion) {
        self.components.entry(name.to_owned()).or_default().insert(version, None);
    }

    /// The versions known for `name`, lowest first.
    pub fn versions(&self, name: &str) -> Vec<&ComponentVersion> {
        self.components.get(name).map(|v| v.keys().collect()).unwrap_or_default()
    }

    /// The recipe of `name` at `version` (`None` for unknown or built-in components).
    pub fn recipe(&self, name: &str, version: &ComponentVersion) -> Option<&Recipe> {
        self.components.get(name)?.get(version)?.as_ref()
    }

    fn dependencies(&self, name: &str, version: &ComponentVersion) -> &[super::model::Dependency] {
        self.recipe(name, version).map(|r| r.dependencies.as_slice()).unwrap_or(&[])
    }
}

/// A root component of a deployment and the version it must have.
#[derive(Debug, Clone)]
pub struct RootRequirement {
    /// The component name.
    pub name: String,
    /// The version required.
    pub requirement: VersionRequirement,
}

impl RootRequirement {
    /// Reads the local deployment form `NAME=VERSION` (Greengrass CLI `--merge`).
    pub fn parse_merge(text: &str) -> Result<Self, ResolveError> {
        let bad = |why: String| ResolveError::BadRoot { text: text.to_owned(), why };
        let (name, version) = text.split_once('=').ok_or_else(|| bad("expected NAME=VERSION".to_owned()))?;
        let (name, version) = (name.trim(), version.trim());
        if name.is_empty() {
            return Err(bad("the component name is empty".to_owned()));
        }
        let version = ComponentVersion::parse(version).map_err(|e: VersionError| bad(e.to_string()))?;
        Ok(Self { name: name.to_owned(), requirement: VersionRequirement::exact(&version) })
    }
}

/// One component of a resolved deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedComponent {
    /// Its name.
    pub name: String,
    /// The version picked.
    pub version: ComponentVersion,
    /// Its direct dependencies, in recipe order.
    pub dependencies: Vec<(String, DependencyType)>,
    /// True for a component the core provides itself (no recipe).
    pub builtin: bool,
}

/// A resolved deployment: every component with its version, in start order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Dependencies before dependents; roots and dependencies in the order given.
    pub components: Vec<ResolvedComponent>,
}

impl Resolution {
    /// Names in start order (dependencies first).
    pub fn start_order(&self) -> Vec<&str> {
        self.components.iter().map(|c| c.name.as_str()).collect()
    }

    /// Names in stop order (dependents first).
    pub fn stop_order(&self) -> Vec<&str> {
        self.components.iter().rev().map(|c| c.name.as_str()).collect()
    }

    /// The resolved component named `name`.
    pub fn get(&self, name: &str) -> Option<&ResolvedComponent> {
        self.components.iter().find(|c| c.name == name)
    }

    /// Components with a HARD dependency on `name`: they restart when it changes state.
    pub fn hard_dependents(&self, name: &str) -> Vec<&str> {
        self.components
            .iter()
            .filter(|c| c.dependencies.iter().any(|(d, kind)| d == name && *kind == DependencyType::Hard))
            .map(|c| c.name.as_str())
            .collect()
    }
}

/// A requirement on a component and who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredBy {
    /// `NAME VERSION` of the dependent, or `the deployment`.
    pub by: String,
    /// The version requirement.
    pub requirement: String,
}

impl fmt::Display for RequiredBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} from {}", self.requirement, self.by)
    }
}

/// Why a deployment cannot be resolved. All are input problems: change the deployment or add
/// the recipes it needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// A root is not `NAME=VERSION`.
    #[error("root component {text:?}: {why}")]
    BadRoot {
        /// The text given.
        text: String,
        /// What is wrong with it.
        why: String,
    },
    /// No recipe of the component exists.
    #[error("component {name} has no recipe (required: {})", list(.required_by))]
    Missing {
        /// The component.
        name: String,
        /// Who requires it.
        required_by: Vec<RequiredBy>,
    },
    /// Recipes exist but none satisfies every requirement.
    #[error("no version of {name} satisfies every requirement ({}); available: {}", list(.required_by), .available.join(", "))]
    NoSatisfyingVersion {
        /// The component.
        name: String,
        /// The requirements that must all hold.
        required_by: Vec<RequiredBy>,
        /// The versions that exist.
        available: Vec<String>,
    },
    /// Components depend on each other in a circle.
    #[error("dependency cycle: {}", .cycle.join(" -> "))]
    Cycle {
        /// The components on the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
    /// Picks kept changing (requirements that contradict each other across versions).
    #[error("dependency resolution does not settle on a version of {name}")]
    Unsettled {
        /// The component whose pick kept changing.
        name: String,
    },
}

fn list(items: &[RequiredBy]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Resolves the roots against the catalog and orders the result.
pub fn resolve(catalog: &Catalog, roots: &[RootRequirement]) -> Result<Resolution, ResolveError> {
    let mut constraints: BTreeMap<String, BTreeMap<String, VersionRequirement>> = BTreeMap::new();
    let mut picked: BTreeMap<String, ComponentVersion> = BTreeMap::new();
    let mut queue: VecDeque<String> = VecDeque::new();
    for root in roots {
        constraints.entry(root.name.clone()).or_default().insert(DEPLOYMENT.to_owned(), root.requirement.clone());
        queue.push_back(root.name.clone());
    }
    // Each pick can only change when a requirement is added; bound the walk generously.
    let limit = 64 + 16 * catalog.components.values().map(BTreeMap::len).sum::<usize>();
    let mut steps = 0;
    while let Some(name) = queue.pop_front() {
        steps += 1;
        if steps > limit {
            return Err(ResolveError::Unsettled { name });
        }
        let reqs = constraints.get(&name).cloned().unwrap_or_default();
        let version = pick(catalog, &name, &reqs, &picked)?;
        let previous = picked.insert(name.clone(), version.clone());
        if previous.as_ref() == Some(&version) {
            continue;
        }
        if let Some(previous) = previous {
            for dep in catalog.dependencies(&name, &previous) {
                if let Some(c) = constraints.get_mut(&dep.name) {
                    c.remove(&name);
                }
            }
        }
        for dep in catalog.dependencies(&name, &version) {
            constraints.entry(dep.name.clone()).or_default().insert(name.clone(), dep.requirement.clone());
            queue.push_back(dep.name.clone());
        }
    }
    order(catalog, roots, &picked)
}

fn describe_requirements(
    reqs: &BTreeMap<String, VersionRequirement>,
    picked: &BTreeMap<String, ComponentVersion>,
) -> Vec<RequiredBy> {
    reqs.iter()
        .map(|(by, req)| RequiredBy {
            by: if by == DEPLOYMENT {
                "the deployment".to_owned()
            } else {
                picked.get(by).map(|v| format!("{by} {v}")).unwrap_or_else(|| by.clone())
            },
            requirement: req.as_str().to_owned(),
        })
        .collect()
}

fn pick(
    catalog: &Catalog,
    name: &str,
    reqs: &BTreeMap<String, VersionRequirement>,
    picked: &BTreeMap<String, ComponentVersion>,
) -> Result<ComponentVersion, ResolveError> {
    let versions = catalog.versions(name);
    if versions.is_empty() {
        return Err(ResolveError::Missing { name: name.to_owned(), required_by: describe_requirements(reqs, picked) });
    }
    versions.iter().rev().find(|v| reqs.values().all(|r| r.matches(v))).map(|v| (*v).clone()).ok_or_else(|| {
        ResolveError::NoSatisfyingVersion {
            name: name.to_owned(),
            required_by: describe_requirements(reqs, picked),
            available: versions.iter().map(ToString::to_string).collect(),
        }
    })
}

/// Depth-first from the roots, dependencies in recipe order, emitting each component after its
/// dependencies; a component met again while still open closes a cycle.
fn order(
    catalog: &Catalog,
    roots: &[RootRequirement],
    picked: &BTreeMap<String, ComponentVersion>,
) -> Result<Resolution, ResolveError> {
    struct Walk<'a> {
        catalog: &'a Catalog,
        picked: &'a BTreeMap<String, ComponentVersion>,
        done: HashSet<String>,
        open: Vec<String>,
        out: Vec<ResolvedComponent>,
    }
    impl Walk<'_> {
        fn visit(&mut self, name: &str) -> Result<(), ResolveError> {
            if self.done.contains(name) {
                return Ok(());
            }
            if let Some(at) = self.open.iter().position(|n| n == name) {
                let mut cycle = self.open[at..].to_vec();
                cycle.push(name.to_owned());
                return Err(ResolveError::Cycle { cycle });
            }
            let Some(version) = self.picked.get(name) else { return Ok(()) };
            self.open.push(name.to_owned());
            let recipe = self.catalog.recipe(name, version);
            let deps: Vec<(String, DependencyType)> =
                recipe.map(|r| r.dependencies.iter().map(|d| (d.name.clone(), d.kind)).collect()).unwrap_or_default();
            for (dep, _) in &deps {
                self.visit(dep)?;
            }
            self.open.pop();
            self.done.insert(name.to_owned());
            self.out.push(ResolvedComponent {
                name: name.to_owned(),
                version: version.clone(),
                dependencies: deps,
                builtin: recipe.is_none(),
            });
            Ok(())
        }
    }
    let mut walk = Walk { catalog, picked, done: HashSet::new(), open: Vec::new(), out: Vec::new() };
    for root in roots {
        walk.visit(&root.name)?;
    }
    Ok(Resolution { components: walk.out })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ComponentType, Dependency, Manifest};
    use crate::platform::PlatformRequirement;

    fn recipe(name: &str, version: &str, deps: &[(&str, &str, DependencyType)]) -> Recipe {
        Recipe {
            format_version: "2020-01-25".into(),
            name: name.into(),
            version: ComponentVersion::parse(version).unwrap(),
            description: None,
            publisher: None,
            component_type: ComponentType::Generic,
            source: None,
            default_configuration: Default::default(),
            dependencies: deps
                .iter()
                .map(|(n, r, k)| Dependency {
                    name: n.to_string(),
                    requirement: VersionRequirement::parse(r).unwrap(),
                    kind: *k,
                })
                .collect(),
            manifests: vec![Manifest {
                name: None,
                platform: PlatformRequirement::default(),
                selections: vec![],
                lifecycle: Default::default(),
                artifacts: vec![],
            }],
        }
    }

    use DependencyType::{Hard, Soft};

    fn catalog(recipes: Vec<Recipe>) -> Catalog {
        let mut c = Catalog::new();
        for r in recipes {
            c.add(r);
        }
        c
    }

    fn roots(items: &[&str]) -> Vec<RootRequirement> {
        items.iter().map(|s| RootRequirement::parse_merge(s).unwrap()).collect()
    }

    fn versions(res: &Resolution) -> Vec<String> {
        res.components.iter().map(|c| format!("{}@{}", c.name, c.version)).collect()
    }

    #[test]
    fn dependencies_start_before_dependents() {
        let c = catalog(vec![
            recipe("App", "1.0.0", &[("Lib", "^1.0.0", Hard), ("Log", ">=1.0.0", Soft)]),
            recipe("Lib", "1.2.0", &[("Log", "^1.0.0", Hard)]),
            recipe("Log", "1.0.0", &[]),
        ]);
        let res = resolve(&c, &roots(&["App=1.0.0"])).unwrap();
        assert_eq!(res.start_order(), ["Log", "Lib", "App"]);
        assert_eq!(res.stop_order(), ["App", "Lib", "Log"]);
        assert_eq!(res.hard_dependents("Log"), ["Lib"]);
        assert_eq!(res.hard_dependents("Lib"), ["App"]);
    }

    #[test]
    fn soft_dependencies_order_the_same_as_hard() {
        let c = catalog(vec![recipe("App", "1.0.0", &[("Db", "*", Soft)]), recipe("Db", "1.0.0", &[])]);
        assert_eq!(resolve(&c, &roots(&["App=1.0.0"])).unwrap().start_order(), ["Db", "App"]);
    }

    #[test]
    fn version_ranges_pick_the_highest_version_satisfying_all() {
        let base = || {
            vec![
                recipe("Lib", "1.0.0", &[]),
                recipe("Lib", "1.4.0", &[]),
                recipe("Lib", "1.9.0", &[]),
                recipe("Lib", "2.0.0", &[]),
            ]
        };
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("A", "^1.0.0")], "Lib@1.9.0"),
            (&[("A", ">=1.0.0 <2.0.0")], "Lib@1.9.0"),
            (&[("A", "~1.4.0")], "Lib@1.4.0"),
            (&[("A", "*")], "Lib@2.0.0"),
            (&[("A", "^1.0.0"), ("B", "<1.5.0")], "Lib@1.4.0"),
            (&[("A", ">=1.4.0"), ("B", "<=1.4.0")], "Lib@1.4.0"),
        ];
        for (requirers, expected) in cases {
            let mut recipes = base();
            let mut root_list = Vec::new();
            for (name, req) in *requirers {
                recipes.push(recipe(name, "1.0.0", &[("Lib", req, Hard)]));
                root_list.push(format!("{name}=1.0.0"));
            }
            let root_refs: Vec<&str> = root_list.iter().map(String::as_str).collect();
            let res = resolve(&catalog(recipes), &roots(&root_refs)).unwrap();
            let lib = res.get("Lib").unwrap();
            assert_eq!(format!("Lib@{}", lib.version), *expected, "{requirers:?}");
        }
    }

    #[test]
    fn root_version_is_exact() {
        let c = catalog(vec![recipe("App", "1.0.0", &[]), recipe("App", "1.1.0", &[])]);
        assert_eq!(versions(&resolve(&c, &roots(&["App=1.0.0"])).unwrap()), ["App@1.0.0"]);
        let err = resolve(&c, &roots(&["App=2.0.0"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no version of App satisfies every requirement (\"2.0.0\" from the deployment); available: 1.0.0, 1.1.0"
        );
    }

    #[test]
    fn changing_a_pick_drops_the_old_versions_requirements() {
        // A alone lets Lib be 2.0.0, which pulls Old. B's requirement (through Mid) arrives
        // later and forces Lib 1.x: Lib is picked again, and Old, needed only by Lib 2.0.0, goes.
        let c = catalog(vec![
            recipe("A", "1.0.0", &[("Lib", ">=1.0.0", Hard)]),
            recipe("B", "1.0.0", &[("Mid", "*", Hard)]),
            recipe("Mid", "1.0.0", &[("Lib", "^1.0.0", Hard)]),
            recipe("Lib", "1.0.0", &[]),
            recipe("Lib", "2.0.0", &[("Old", "^9.0.0", Hard)]),
            recipe("Old", "9.0.0", &[]),
        ]);
        let res = resolve(&c, &roots(&["A=1.0.0", "B=1.0.0"])).unwrap();
        assert_eq!(versions(&res), ["Lib@1.0.0", "A@1.0.0", "Mid@1.0.0", "B@1.0.0"]);
    }

    #[test]
    fn conflicting_requirements_name_who_asked_for_what() {
        let c = catalog(vec![
            recipe("A", "1.0.0", &[("Lib", "^1.0.0", Hard)]),
            recipe("B", "1.0.0", &[("Lib", "^2.0.0", Hard)]),
            recipe("Lib", "1.0.0", &[]),
            recipe("Lib", "2.0.0", &[]),
        ]);
        let err = resolve(&c, &roots(&["A=1.0.0", "B=1.0.0"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no version of Lib satisfies every requirement (\"^1.0.0\" from A 1.0.0, \"^2.0.0\" from B 1.0.0); available: 1.0.0, 2.0.0"
        );
    }

    #[test]
    fn missing_dependency_is_a_clear_error() {
        let c = catalog(vec![recipe("App", "1.0.0", &[("Lib", ">=1.0.0 <2.0.0", Hard)])]);
        let err = resolve(&c, &roots(&["App=1.0.0"])).unwrap_err();
        assert_eq!(err.to_string(), "component Lib has no recipe (required: \">=1.0.0 <2.0.0\" from App 1.0.0)");
        let err = resolve(&c, &roots(&["Nope=1.0.0"])).unwrap_err();
        assert_eq!(err.to_string(), "component Nope has no recipe (required: \"1.0.0\" from the deployment)");
    }

    #[test]
    fn builtin_components_satisfy_dependencies() {
        let mut c = catalog(vec![recipe("App", "1.0.0", &[("aws.greengrass.Nucleus", ">=2.0.0 <3.0.0", Soft)])]);
        c.add_builtin("aws.greengrass.Nucleus", ComponentVersion::parse("2.12.0").unwrap());
        let res = resolve(&c, &roots(&["App=1.0.0"])).unwrap();
        assert_eq!(versions(&res), ["aws.greengrass.Nucleus@2.12.0", "App@1.0.0"]);
        assert!(res.get("aws.greengrass.Nucleus").unwrap().builtin);
    }

    #[test]
    fn cycles_are_reported_with_their_path() {
        let cases: &[(Vec<Recipe>, &str)] = &[
            (
                vec![
                    recipe("A", "1.0.0", &[("B", "*", Hard)]),
                    recipe("B", "1.0.0", &[("C", "*", Soft)]),
                    recipe("C", "1.0.0", &[("A", "*", Hard)]),
                ],
                "dependency cycle: A -> B -> C -> A",
            ),
            (vec![recipe("A", "1.0.0", &[("A", "*", Hard)])], "dependency cycle: A -> A"),
            (
                vec![
                    recipe("A", "1.0.0", &[("B", "*", Hard)]),
                    recipe("B", "1.0.0", &[("C", "*", Hard)]),
                    recipe("C", "1.0.0", &[("B", "*", Hard)]),
                ],
                "dependency cycle: B -> C -> B",
            ),
        ];
        for (recipes, expected) in cases {
            let err = resolve(&catalog(recipes.clone()), &roots(&["A=1.0.0"])).unwrap_err();
            assert_eq!(err.to_string(), *expected);
        }
    }

    #[test]
    fn shared_dependencies_appear_once() {
        let c = catalog(vec![
            recipe("A", "1.0.0", &[("Log", "*", Hard)]),
            recipe("B", "1.0.0", &[("Log", "*", Hard), ("A", "*", Hard)]),
            recipe("Log", "1.0.0", &[]),
        ]);
        assert_eq!(resolve(&c, &roots(&["B=1.0.0", "A=1.0.0"])).unwrap().start_order(), ["Log", "A", "B"]);
    }

    #[test]
    fn merge_roots_must_be_name_equals_version() {
        for bad in ["App", "=1.0.0", "App=1.0", "App=latest"] {
            assert!(matches!(RootRequirement::parse_merge(bad), Err(ResolveError::BadRoot { .. })), "{bad}");
        }
        let root = RootRequirement::parse_merge("com.example.App=1.2.3").unwrap();
        assert_eq!((root.name.as_str(), root.requirement.as_str()), ("com.example.App", "1.2.3"));
    }
}
