//! Greengrass v2 component recipes: the recipe engine shared by the simulated core
//! (`device-sim`) and the local cloud's Greengrass service. Pure logic, no processes: it reads
//! recipes, checks them, and answers what the nucleus would do with them.
//!
//! Follows the AWS IoT Greengrass V2 Developer Guide ("AWS IoT Greengrass component recipe
//! reference", "Update component configurations", "Greengrass nucleus") and, where the guide
//! is silent, the behaviour of the open-source nucleus and component model
//! (aws-greengrass-nucleus, aws-greengrass-component-common) and of the GDK CLI's validator.
//! Each module names the rules it follows and where we differ.
//!
//! # Layout
//! - [`parse`]: YAML/JSON text → checked [`Recipe`] ([`RecipeLoader`]); case-insensitive keys.
//! - [`schema`]: validation against the GDK recipe schema, loaded at run time.
//! - [`model`]: the typed recipe.
//! - [`platform`]: manifest selection by platform, global lifecycle selections.
//! - [`lifecycle`]: steps, default timeouts, `Skipif`.
//! - [`variables`]: `{artifacts:path}`, `{configuration:/…}` and friends.
//! - [`version`]: strict component versions, npm-style version requirements.
//! - [`deps`]: dependency resolution and start order.
//! - [`config`]: default configuration with a deployment's merge and reset.
//! - [`error`]: faults located by JSON pointer.

mod doc;

pub mod config;
pub mod deps;
pub mod error;
pub mod lifecycle;
pub mod model;
pub mod parse;
pub mod platform;
pub mod schema;
pub mod variables;
pub mod version;

pub use config::{ConfigError, ConfigurationUpdate, EffectiveConfiguration};
pub use deps::{Catalog, Resolution, ResolveError, ResolvedComponent, RootRequirement, resolve};
pub use error::{Fault, RecipeError};
pub use lifecycle::{Lifecycle, SkipCheck, SkipIf, Step, StepKind};
pub use model::{Artifact, ArtifactPermission, ComponentType, Dependency, DependencyType, Manifest, Recipe, Unarchive};
pub use parse::{LoadedRecipe, RecipeFormat, RecipeLoader};
pub use platform::{DevicePlatform, PlatformRequirement, PlatformValue};
pub use schema::{RecipeSchema, SchemaError};
pub use variables::{ComponentLocations, ComponentVariables, InterpolationContext, Scope};
pub use version::{ComponentVersion, VersionError, VersionRequirement};
