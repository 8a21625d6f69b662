//! The simulated Greengrass core: the pieces a nucleus provides to the
//! components it runs. This module holds the types the pieces share; each
//! piece lives in its own submodule.

pub mod access;
pub mod artifact_download;
pub mod bridge;
pub mod claim;
pub mod cli;
pub mod cloud_deployments;
pub mod config_store;
pub mod deployment;
pub mod deployment_listeners;
pub mod error;
pub mod fleet_status;
pub mod greengrass_client;
pub mod identity;
pub mod ipc_server;
pub mod key_store;
pub mod layout;
pub mod local_shadow;
pub mod log_manager;
pub mod nucleus_update;
pub mod options;
pub mod pubsub;
pub mod recipe_store;
pub mod rotation;
pub mod runtime;
pub mod services;
pub mod shadow_manager;
pub mod shadow_store;
pub mod shadow_sync;
pub mod supervisor;
pub mod telemetry;
pub mod token_exchange;
pub mod update_gate;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A component's lifecycle state, as the nucleus names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ComponentState {
    /// Known, nothing run yet.
    New,
    /// Install step done.
    Installed,
    /// Startup running (or Run just started).
    Starting,
    /// Running (Run started, or Startup reported RUNNING).
    Running,
    /// Shutdown in progress.
    Stopping,
    /// Exited successfully.
    Finished,
    /// Failed; will be retried.
    Errored,
    /// Failed three times; not retried until redeployed.
    Broken,
}

impl ComponentState {
    /// The nucleus's name (`RUNNING`, `BROKEN`, …), as fleet status reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentState::New => "NEW",
            ComponentState::Installed => "INSTALLED",
            ComponentState::Starting => "STARTING",
            ComponentState::Running => "RUNNING",
            ComponentState::Stopping => "STOPPING",
            ComponentState::Finished => "FINISHED",
            ComponentState::Errored => "ERRORED",
            ComponentState::Broken => "BROKEN",
        }
    }
}

/// A state a component reports about itself over IPC (UpdateState).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportedState {
    /// `RUNNING`
    Running,
    /// `ERRORED`
    Errored,
}

/// Why a lifecycle request from IPC could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No such component on this core.
    #[error("component {0} not found")]
    NotFound(String),
    /// The request is not valid now.
    #[error("{0}")]
    Invalid(String),
}

/// What the IPC server asks of the lifecycle supervisor. Implemented by the supervisor.
pub trait LifecycleControl: Send + Sync {
    /// A component reported its state (UpdateState).
    fn report_state(&self, component: &str, state: ReportedState);
    /// RestartComponent.
    fn restart(&self, component: &str) -> Result<(), ControlError>;
    /// StopComponent.
    fn stop(&self, component: &str) -> Result<(), ControlError>;
    /// The current state of a component, `None` if unknown.
    fn state(&self, component: &str) -> Option<ComponentState>;
}

/// IPC auth tokens (`SVCUID`) handed to components, and whose they are.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_token: Arc<RwLock<HashMap<String, String>>>,
}

impl Tokens {
    /// A fresh random token for `component`; any older token of it stops working.
    pub fn issue(&self, component: &str) -> String {
        let token = random_token();
        let mut map = self.by_token.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, c| c != component);
        map.insert(token.clone(), component.to_string());
        token
    }

    /// The component a token belongs to.
    pub fn component(&self, token: &str) -> Option<String> {
        self.by_token.read().unwrap_or_else(|e| e.into_inner()).get(token).cloned()
    }

    /// Invalidates a component's token.
    pub fn revoke(&self, component: &str) {
        self.by_token.write().unwrap_or_else(|e| e.into_inner()).retain(|_, c| c != component);
    }
}

/// 16 random bytes as 32 lowercase hex digits.
pub(crate) fn random_token() -> String {
    use std::fmt::Write;
    let mut bytes = [0u8; 16];
    // /dev/urandom is always there on the Linux hosts the simulated core runs on;
    // fall back to time and address entropy if it is not.
    if std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes)).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        bytes.copy_from_slice(&t.to_le_bytes());
    }
    bytes.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_are_the_serialized_names() {
        use ComponentState::*;
        for state in [New, Installed, Starting, Running, Stopping, Finished, Errored, Broken] {
            assert_eq!(serde_json::to_value(state).unwrap(), serde_json::Value::String(state.as_str().into()));
        }
    }

    #[test]
    fn a_new_token_replaces_the_old_one() {
        let tokens = Tokens::default();
        let first = tokens.issue("com.example.A");
        let second = tokens.issue("com.example.A");
        assert_ne!(first, second);
        assert_eq!(tokens.component(&first), None);
        assert_eq!(tokens.component(&second).as_deref(), Some("com.example.A"));
        tokens.revoke("com.example.A");
        assert_eq!(tokens.component(&second), None);
    }

    /// The core's modules, each with the core modules it refers to (`use super::…`,
    /// `crate::core::…` and inline paths, comments left out); a submodule folder counts as its
    /// parent module.
    fn core_imports() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
        use std::collections::{BTreeMap, BTreeSet};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                let module = path.file_name().unwrap().to_str().unwrap().to_owned();
                for sub in std::fs::read_dir(&path).unwrap() {
                    let sub = sub.unwrap().path();
                    let nested = sub.file_stem().is_some_and(|s| s != "mod");
                    files.push((module.clone(), nested, std::fs::read_to_string(sub).unwrap()));
                }
            } else if path.file_stem().is_some_and(|s| s != "mod") {
                let module = path.file_stem().unwrap().to_str().unwrap().to_owned();
                files.push((module, false, std::fs::read_to_string(path).unwrap()));
            }
        }
        let modules: BTreeSet<String> = files.iter().map(|(m, _, _)| m.clone()).collect();
        let path = regex::Regex::new(r"\b(crate::core|super::super|super)::(\{[^}]*\}|\w+)").unwrap();
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (module, nested, text) in &files {
            let edges = graph.entry(module.clone()).or_default();
            for line in text.lines() {
                let code = line.split("//").next().unwrap_or_default();
                for m in path.captures_iter(code) {
                    // In a nested file, `super::x` is a sibling inside the same folder.
                    if *nested && &m[1] == "super" {
                        continue;
                    }
                    let names = m[2].trim_matches(|c| c == '{' || c == '}');
                    for name in names.split(',').map(|n| n.trim().split("::").next().unwrap_or_default()) {
                        if modules.contains(name) && name != module {
                            edges.insert(name.to_owned());
                        }
                    }
                }
            }
        }
        graph
    }

    #[test]
    fn core_modules_import_each_other_without_a_cycle() {
        let graph = core_imports();
        assert!(graph.get("runtime").is_some_and(|e| e.contains("supervisor")), "the scan sees imports: {graph:?}");
        // Depth-first search; a module met again while still on the path closes a cycle.
        fn visit<'a>(
            graph: &'a std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
            module: &'a str,
            path: &mut Vec<&'a str>,
            done: &mut std::collections::BTreeSet<&'a str>,
        ) {
            if let Some(at) = path.iter().position(|m| *m == module) {
                panic!("import cycle among core modules: {} -> {module}", path[at..].join(" -> "));
            }
            if !done.insert(module) {
                return;
            }
            path.push(module);
            for next in graph.get(module).into_iter().flatten() {
                visit(graph, next, path, done);
            }
            path.pop();
        }
        let mut done = std::collections::BTreeSet::new();
        for module in graph.keys() {
            visit(&graph, module, &mut Vec::new(), &mut done);
        }
        let above_root: Vec<&String> = graph.iter().filter(|(_, e)| e.contains("runtime")).map(|(m, _)| m).collect();
        assert!(above_root.is_empty(), "only the composition root may be on top: {above_root:?} import runtime");
    }
}
