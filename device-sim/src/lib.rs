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
//! - [`fleet`]: many sites on one machine (`device-sim fleet`), each onboarded by claim into
//!   one thing group, with the figures of what each site costs.
//! - [`shipped`]: the pump's components as shipped, and their build for publishing.

pub mod core;
pub mod dataset;
pub mod fleet;
pub mod launcher;
pub mod plant;
pub mod shipped;
/// The recipe engine, its own crate ([`greengrass_recipe`]) so the local cloud validates recipes
/// with the same rules; re-exported so the core keeps its `crate::recipe` paths.
pub use greengrass_recipe as recipe;
