//! The launcher (`device-sim launcher`): what the nucleus's `loader` script is to a Greengrass
//! core. It keeps the installed core versions side by side, starts the current one, restarts it
//! into a staged update, and goes back to the previous version when the new one does not come up
//! healthy in time.
//!
//! Followed from the open-source nucleus (facts, not code): `KernelAlternatives` (the `alts`
//! directory and its `current`, `old`, `new`, `broken` links; `prepareRollback`,
//! `activationSucceeds`, `rollbackCompletes`), the `loader` script (the flip on start, exit
//! code 100 restarts and 101 reboots), `KernelUpdateActivator` and `KernelLifecycle` /
//! `KernelCommandLine` with the deployment stages (`DeploymentStage`: a start with `old` set is
//! `KERNEL_ACTIVATION`, with `broken` set `KERNEL_ROLLBACK`). What the nucleus keeps about the
//! deployment itself across the restart (`DeploymentDirectoryManager`: the deployment document,
//! its stage, the rollback snapshot) is the deployment engine's business, not the launcher's: the
//! links alone tell a starting core which stage it is in.
//!
//! # Layout
//! - [`alts`]: the links as a view, and every decision over them ([`alts::prepare`],
//!   [`alts::rollback`]); pure, table-tested, including recovery from a launcher killed mid-flip.
//! - [`machine`]: the core's exits, its proof of health, the deadline and stop signals in;
//!   actions out; pure.
//! - [`store`]: the alts directory on disk, each change made atomic and durable.
//! - `shell`: the process loop that ties them together ([`run`]).
//!
//! The core's side (staging an update, learning at start whether it is on probation or was
//! rolled back, proving itself) is [`crate::core::nucleus_update`].

pub mod alts;
pub mod machine;
mod shell;
pub mod store;

pub use shell::{LauncherOptions, run};
