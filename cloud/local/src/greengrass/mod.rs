//! AWS IoT Greengrass V2: the control plane's component, deployment and core-device operations
//! on the shared HTTP endpoint (signed for `greengrass`, restJson1), and the data plane for core
//! devices on its own mutual-TLS listener.
//!
//! Follows the Smithy model `greengrassv2` (API 2020-11-30, service `GreengrassV2`, SigV4 name
//! `greengrass`), the AWS IoT Greengrass V2 API Reference and Developer Guide ("Device
//! authentication and authorization", "Publish components to deploy to your core devices"), and
//! for the data plane the calls of the open-source nucleus (`ComponentServiceHelper`,
//! `GreengrassRepositoryDownloader`).
//!
//! # Layout
//! - [`components`]: component versions: create (recipe checks with `greengrass-recipe`,
//!   artifacts in S3, digests), lookups, persistence; [`components::ComponentCatalog`] is the
//!   interface deployments will use.
//! - [`http`]: the control-plane routes (CreateComponentVersion, DescribeComponent,
//!   GetComponent, ListComponents, ListComponentVersions, DeleteComponent).
//! - [`dataplane`]: the mTLS listener and its routes (ResolveComponentCandidates,
//!   GetComponentVersionArtifact), authorized by the certificate's `greengrass:*` policy actions.
//! - [`deployments`]: deployments (revisions per target; thing groups through namespaced IoT
//!   jobs, things through the `AWSManagedGreengrassV2Deployment` shadow) and core devices, built
//!   only from what cores report (fleet status, job executions, the deployment shadow).
//! - [`deployments_http`]: the deployment and core-device routes.
//! - [`resolve`]: the pure version choice of ResolveComponentCandidates.
//! - [`arn`]: component and component-version ARNs.
//! - [`error`]: Greengrass exceptions on the wire.
//!
//! Not here (yet): Lambda-function components, public (AWS) components, tags operations,
//! GetDeploymentConfiguration and ListThingGroupsForCoreDevice.

pub mod arn;
pub mod components;
pub mod dataplane;
pub mod deployments;
pub mod deployments_http;
pub mod error;
pub mod http;
pub mod resolve;

use std::sync::Arc;

use greengrass_recipe::RecipeLoader;

use crate::registry::Registry;
use crate::s3::ObjectStore;
use crate::store::Store;
use crate::time::SharedClock;
pub use components::{ComponentCatalog, Components};
pub use error::GreengrassError;

/// The Greengrass service: its component store and what it needs from the other services.
#[derive(Clone, Debug)]
pub struct Greengrass {
    /// The component versions.
    pub components: Components,
    registry: Arc<Registry>,
    objects: Arc<dyn ObjectStore>,
}

impl Greengrass {
    /// Opens the component store in `store`. Recipes are checked with the GDK schema when
    /// [`RecipeLoader::discover`] finds it (else with the typed checks only, and a warning);
    /// artifacts are looked up in `objects`; data-plane callers are authorized by `registry`.
    pub fn open(
        store: Store,
        objects: Arc<dyn ObjectStore>,
        registry: Arc<Registry>,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let loader = RecipeLoader::discover(None)?;
        if let Some(warning) = loader.schema_warning() {
            tracing::warn!(%warning, "Greengrass: recipes are checked without the GDK schema");
        }
        let components =
            Components::open(store, objects.clone(), loader, clock, registry.region(), registry.account_id())?;
        Ok(Greengrass { components, registry, objects })
    }

    /// The component store as deployments see it.
    pub fn catalog(&self) -> Arc<dyn ComponentCatalog> {
        Arc::new(self.components.clone())
    }

    /// The control-plane routes, to mount on the shared HTTP endpoint.
    pub fn control_plane(&self) -> axum::Router {
        http::routes(self.clone())
    }
}
