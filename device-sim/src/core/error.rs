//! Why the simulated core could not start: the errors of the services it builds, each
//! told apart as the input's fault or the host's ([`CoreError::is_configuration`]).

use std::path::PathBuf;

use super::bridge::BridgeSetupError;
use super::recipe_store::RecipeStoreError;
use super::supervisor::SupervisorError;
use crate::recipe::ResolveError;

/// The longest Unix socket path Linux accepts (`sun_path` is 108 bytes with its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Why the core could not start.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The recipe directory or a recipe in it cannot be loaded.
    #[error(transparent)]
    Recipes(#[from] RecipeStoreError),
    /// No `--merge` was given.
    #[error("nothing to run: give at least one --merge NAME=VERSION")]
    NothingToRun,
    /// A `--merge` is malformed, or the deployment cannot be resolved.
    #[error("cannot resolve the deployment")]
    Resolve(#[source] ResolveError),
    /// A component cannot be set up (no manifest for this platform, missing or bad artifact).
    #[error("cannot set up the components")]
    Supervisor(#[source] SupervisorError),
    /// The socket path is too long for a Unix socket.
    #[error("the IPC socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter --root", path.display())]
    SocketPathTooLong {
        /// The path.
        path: PathBuf,
    },
    /// The core's root could not be created.
    #[error("cannot create the core root {}", path.display())]
    Root {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A configuration update is invalid or names a component that is not deployed.
    #[error("invalid configuration update: {0}")]
    UpdateConfig(String),
    /// The IoT Core bridge cannot be set up (endpoints, certificate or key).
    #[error("cannot set up the IoT Core connection")]
    Bridge(#[source] BridgeSetupError),
    /// The token exchange service cannot start (its configuration, its port).
    #[error("cannot start the token exchange service")]
    TokenExchange(#[source] super::token_exchange::TesError),
    /// The Greengrass data-plane client cannot be set up (no `greengrassDataPlane` in
    /// `endpoints.json`, unreadable certificate or key).
    #[error("cannot set up the Greengrass data-plane client: {0}")]
    Greengrass(String),
    /// What cloud deployments left before a restart cannot be read or does not resolve.
    #[error("cannot restore the cloud deployments kept under the core's root: {0}")]
    KeptDeployments(String),
    /// The local shadow store cannot be opened.
    #[error("cannot open the local shadow store: {0}")]
    ShadowStore(String),
    /// The IPC socket could not be bound.
    #[error("cannot bind the IPC socket {}", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl CoreError {
    /// True when the input (recipes, artifacts, flags) is at fault: starting again without
    /// changing it fails the same way. `device-sim` exits with `EX_CONFIG` (78) for these.
    pub fn is_configuration(&self) -> bool {
        match self {
            Self::Recipes(_)
            | Self::NothingToRun
            | Self::Resolve(_)
            | Self::Supervisor(_)
            | Self::SocketPathTooLong { .. }
            | Self::UpdateConfig(_)
            | Self::Bridge(_)
            | Self::Greengrass(_)
            | Self::KeptDeployments(_)
            | Self::ShadowStore(_)
            | Self::TokenExchange(super::token_exchange::TesError::Config(_)) => true,
            Self::Root { .. }
            | Self::Bind { .. }
            | Self::TokenExchange(super::token_exchange::TesError::Bind { .. }) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_errors_are_told_apart() {
        assert!(CoreError::NothingToRun.is_configuration());
        let io = || std::io::Error::other("x");
        assert!(!CoreError::Bind { path: "/s".into(), source: io() }.is_configuration());
        let dir = RecipeStoreError::RecipeDir { path: "/r".into(), source: io() };
        assert!(CoreError::from(dir).is_configuration());
    }
}
