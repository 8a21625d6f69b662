//! The simulated site: a stand-in for the Greengrass nucleus that runs
//! components from their real recipes.
//!
//! # Layout
//! - [`recipe`]: recipe parsing, validation, platform selection, variables, dependency order.
//! - [`core`]: the simulated nucleus: shared types, and its pieces in submodules.
//! - [`dataset`]: labeled feature windows from simulated plant runs, for the analyzer's model.

pub mod core;
pub mod dataset;
pub mod plant;
pub mod recipe;
