//! The simulated site: a stand-in for the Greengrass nucleus that runs
//! components from their real recipes.
//!
//! # Layout
//! - [`recipe`]: recipe parsing, validation, platform selection, variables, dependency order
//!   (the `greengrass-recipe` crate, re-exported).
//! - [`core`]: the simulated nucleus: shared types, and its pieces in submodules.
//! - [`launcher`]: the core's launcher (the nucleus's `loader`): installed versions side by side,
//!   restarts into an update, rollback when the new version does not prove itself.
//! - [`dataset`]: labeled feature windows from simulated plant runs, for the analyzer's model.

pub mod core;
pub mod dataset;
pub mod launcher;
pub mod plant;
/// The recipe engine, its own crate ([`greengrass_recipe`]) so the local cloud validates recipes
/// with the same rules; re-exported so the core keeps its `crate::recipe` paths.
pub use greengrass_recipe as recipe;
