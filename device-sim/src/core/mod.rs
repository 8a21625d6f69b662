//! The simulated Greengrass core: the pieces a nucleus provides to the
//! components it runs. This module holds the types the pieces share; each
//! piece lives in its own submodule.

pub mod access;
pub mod bridge;
pub mod cli;
pub mod config_store;
pub mod deployment;
pub mod ipc_server;
pub mod layout;
pub mod local_shadow;
pub mod pubsub;
pub mod runtime;
pub mod shadow_store;
pub mod shadow_sync;
pub mod supervisor;

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
}
