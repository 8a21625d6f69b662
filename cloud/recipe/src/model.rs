//! The typed recipe: what a component recipe says once parsed and checked.
//!
//! Recipe keys are case-insensitive (the Greengrass component model reads them with Jackson's
//! `ACCEPT_CASE_INSENSITIVE_PROPERTIES`, and the nucleus keeps lifecycle and configuration in a
//! configuration tree whose keys compare case-insensitively). Values are kept exactly as written:
//! configuration keys and values, environment variable names, scripts, platform attributes.

use serde_json::{Map, Value};

use super::lifecycle::Lifecycle;
use super::platform::{DevicePlatform, PlatformRequirement};
use super::version::{ComponentVersion, VersionRequirement};

/// The only recipe format version Greengrass defines.
pub const RECIPE_FORMAT_VERSION: &str = "2020-01-25";

/// Prefix reserved for AWS-provided components.
pub const RESERVED_NAME_PREFIX: &str = "aws.greengrass.";

/// A parsed, checked component recipe.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// `RecipeFormatVersion`; always [`RECIPE_FORMAT_VERSION`].
    pub format_version: String,
    /// `ComponentName`.
    pub name: String,
    /// `ComponentVersion`.
    pub version: ComponentVersion,
    /// `ComponentDescription`.
    pub description: Option<String>,
    /// `ComponentPublisher`.
    pub publisher: Option<String>,
    /// `ComponentType`; [`ComponentType::Generic`] when absent.
    pub component_type: ComponentType,
    /// `ComponentSource` (the Lambda function ARN of a Lambda component).
    pub source: Option<String>,
    /// `ComponentConfiguration.DefaultConfiguration`: keys and values exactly as written.
    pub default_configuration: Map<String, Value>,
    /// `ComponentDependencies`, in recipe order.
    pub dependencies: Vec<Dependency>,
    /// `Manifests`, in recipe order (the first that matches the device wins).
    pub manifests: Vec<Manifest>,
}

impl Recipe {
    /// The first manifest whose platform requirement the device meets (recipe reference:
    /// "The core device uses the first manifest with platform requirements that the device
    /// meets"). `None` means the component cannot be installed on this device.
    pub fn select_manifest(&self, device: &DevicePlatform) -> Option<&Manifest> {
        self.manifests.iter().find(|m| m.platform.matches(device))
    }

    /// The dependency named `name`, if this recipe declares it.
    pub fn dependency(&self, name: &str) -> Option<&Dependency> {
        self.dependencies.iter().find(|d| d.name == name)
    }
}

/// `ComponentType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ComponentType {
    /// `aws.greengrass.generic`: runs commands or provides artifacts.
    #[default]
    Generic,
    /// `aws.greengrass.lambda`: runs a Lambda function through the Lambda launcher.
    Lambda,
    /// `aws.greengrass.plugin`: runs inside the nucleus JVM.
    Plugin,
    /// `aws.greengrass.nucleus`: the nucleus itself.
    Nucleus,
}

impl ComponentType {
    /// Reads a type name, case-insensitively as the schema and Jackson do.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "aws.greengrass.generic" => Some(Self::Generic),
            "aws.greengrass.lambda" => Some(Self::Lambda),
            "aws.greengrass.plugin" => Some(Self::Plugin),
            "aws.greengrass.nucleus" => Some(Self::Nucleus),
            _ => None,
        }
    }
}

/// One entry of `ComponentDependencies`.
#[derive(Debug, Clone)]
pub struct Dependency {
    /// The name of the component depended on (case-sensitive).
    pub name: String,
    /// `VersionRequirement`.
    pub requirement: VersionRequirement,
    /// `DependencyType`; [`DependencyType::Hard`] when absent.
    pub kind: DependencyType,
}

/// `DependencyType`. It decides restarts, not start order: a component waits for all its
/// dependencies to start either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DependencyType {
    /// The component restarts when the dependency changes state (the default).
    #[default]
    Hard,
    /// The component does not restart when the dependency changes state.
    Soft,
}

impl DependencyType {
    /// Reads `HARD` or `SOFT`, case-insensitively (the component model's enum reader upper-cases).
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_uppercase().as_str() {
            "HARD" => Some(Self::Hard),
            "SOFT" => Some(Self::Soft),
            _ => None,
        }
    }
}

/// One entry of `Manifests`.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// `Name`: a friendly name for the platform.
    pub name: Option<String>,
    /// `Platform`; an absent or empty platform matches every device.
    pub platform: PlatformRequirement,
    /// `Selections`: keys into the recipe's global `Lifecycle`.
    pub selections: Vec<String>,
    /// The lifecycle this manifest runs: its own `Lifecycle` when that is present and non-empty,
    /// otherwise the sections of the global `Lifecycle` picked by `Selections` (or by `all`).
    pub lifecycle: Lifecycle,
    /// `Artifacts`.
    pub artifacts: Vec<Artifact>,
}

/// One entry of a manifest's `Artifacts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// `URI`.
    pub uri: String,
    /// `Unarchive`; [`Unarchive::None`] when absent.
    pub unarchive: Unarchive,
    /// `Permission.Read`; [`ArtifactPermission::Owner`] when absent.
    pub read: ArtifactPermission,
    /// `Permission.Execute`; [`ArtifactPermission::None`] when absent.
    pub execute: ArtifactPermission,
    /// `Digest` (set by the cloud service).
    pub digest: Option<String>,
    /// `Algorithm` (set by the cloud service).
    pub algorithm: Option<String>,
}

impl Artifact {
    /// The artifact's file name: the last segment of its URI.
    pub fn file_name(&self) -> &str {
        self.uri.rsplit('/').next().unwrap_or(&self.uri)
    }
}

/// `Unarchive`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unarchive {
    /// Not an archive (the default).
    #[default]
    None,
    /// A ZIP archive, extracted under `{artifacts:decompressedPath}/<file name without extension>`.
    Zip,
}

impl Unarchive {
    /// Reads `NONE` or `ZIP`, case-insensitively.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_uppercase().as_str() {
            "NONE" => Some(Self::None),
            "ZIP" => Some(Self::Zip),
            _ => None,
        }
    }
}

/// An artifact's `Permission.Read` or `Permission.Execute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactPermission {
    /// Nobody.
    None,
    /// The system user the component runs as.
    Owner,
    /// Every user.
    All,
}

impl ArtifactPermission {
    /// Reads `NONE`, `OWNER` or `ALL`, case-insensitively.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_uppercase().as_str() {
            "NONE" => Some(Self::None),
            "OWNER" => Some(Self::Owner),
            "ALL" => Some(Self::All),
            _ => None,
        }
    }
}
