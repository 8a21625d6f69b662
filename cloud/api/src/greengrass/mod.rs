//! AWS IoT Greengrass v2 fleet contracts between the cloud and its cores: the
//! deployment document a core receives, what the core reports back (job status
//! details, the deployment shadow's reported state, fleet status), and the pure
//! projection that turns those reports into what `GetCoreDevice`,
//! `ListInstalledComponents` and `ListEffectiveDeployments` answer.
//!
//! # Layout
//! - [`deployment`]: `CreateDeployment`'s request shapes, the deployment
//!   document the nucleus parses (built from a request), deployment targets and
//!   configuration ARNs, the `AWSManagedGreengrassV2Deployment` shadow's desired
//!   and reported states, and the job status details a core sends.
//! - [`fleet_status`]: the fleet status message a core publishes on
//!   `$aws/things/{thing}/greengrassv2/health/json`.
//! - [`telemetry`]: the telemetry agent's metrics a core publishes on
//!   `$aws/things/{thing}/greengrass/health/json`.
//! - [`core_device`]: a core device as the cloud knows it, built only from what
//!   the core reported (fleet status, job executions, the deployment shadow).
//!
//! # Sources
//! The `greengrassv2` service model (control-plane shapes); the open-source
//! nucleus (`aws-greengrass-nucleus`: `DeploymentDocumentConverter`,
//! `IotJobsHelper`, `ShadowDeploymentListener`, `FleetStatusService` and its
//! `status/model` classes, `TelemetryAgent` and `MetricsAggregator`) and
//! `aws-greengrass-component-common` (`Configuration`, the job document model),
//! because the document and the reports are not in any public service model; the
//! Greengrass v2 developer guide ("Check deployment status", "Deploy components to
//! devices", "Gather system health telemetry data").

pub mod core_device;
pub mod deployment;
pub mod fleet_status;
pub mod telemetry;

pub use core_device::{CoreDevice, EffectiveStatus, ExecutionStatus, InstalledComponent, ReportOutcome};
pub use deployment::{
    CreateDeploymentRequest, DeploymentDocument, DeploymentError, DeploymentTarget, DetailedDeploymentStatus,
    JobStatusDetails, ShadowDeploymentDesired, ShadowDeploymentReported,
};
pub use fleet_status::{FleetStatus, Trigger};

/// The IoT Jobs namespace of thing-group deployments.
pub const DEPLOYMENT_JOB_NAMESPACE: &str = "aws-gg-deployment";

/// The named shadow of a core thing that carries thing deployments.
pub const DEPLOYMENT_SHADOW_NAME: &str = "AWSManagedGreengrassV2Deployment";
