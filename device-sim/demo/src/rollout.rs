//! The components reach the core from the cloud, as a partner ships them: each component's own
//! binary built as its own artifact (GDK's `custom` build layout, digests in the recipes),
//! published to S3 and Greengrass (`aws-sdk-s3`, `aws-sdk-greengrassv2`), deployed to the thing
//! group that holds the core and followed until the core reports — all through the `provision`
//! library, the same code an operator runs against AWS. Each deployment's timeline goes into
//! the report.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cloud_api::endpoints::Endpoints;
use provision::ClientOptions;
use provision::component::{BuildSpec, PublishOptions, PublishedComponent};
use provision::deploy::{CoreStatus, DeploySpec, FollowOptions};
use serde::Serialize;

use crate::site::{COMPONENTS, Component};
use device_sim::core::nucleus_update::CORE_BINARY;

/// The bucket the components' artifacts go to.
pub const BUCKET: &str = "pump-station-components";
/// The thing group of the pump sites.
pub const THING_GROUP: &str = "pump-stations";

/// The operator's clients for publishing and deploying.
pub struct Operator {
    /// IoT control plane.
    pub iot: aws_sdk_iot::Client,
    /// Greengrass control plane.
    pub gg: aws_sdk_greengrassv2::Client,
    /// S3.
    pub s3: aws_sdk_s3::Client,
    /// IAM (the token exchange role, the cloud side's roles).
    pub iam: aws_sdk_iam::Client,
    /// Lambda (the cloud side's functions).
    pub lambda: aws_sdk_lambda::Client,
    /// DynamoDB (the cloud side's tables).
    pub dynamodb: aws_sdk_dynamodb::Client,
}

impl Operator {
    /// The clients for `endpoints`, signing with its administrator key pair (the local cloud
    /// checks signatures; on AWS the default credential chain stands here).
    pub async fn new(endpoints: &Endpoints) -> anyhow::Result<Self> {
        let options = ClientOptions {
            endpoint_url: Some(endpoints.http.clone()),
            region: Some(endpoints.region.clone()),
            credentials: Some(crate::site::credentials(endpoints)?),
        };
        Ok(Self {
            iot: provision::iot_client(&options).await,
            gg: provision::greengrass_client(&options).await,
            s3: provision::s3_client(&options).await,
            iam: provision::iam_client(&options).await,
            lambda: provision::lambda_client(&options).await,
            dynamodb: provision::dynamodb_client(&options).await,
        })
    }
}

/// The package of the cloud side's Lambda functions.
const FUNCTIONS_PACKAGE: &str = "pump-functions";
/// The analyzer's package, which also builds the model checker a released model runs at Install.
const ANALYZER_PACKAGE: &str = "pump-analyzer";

/// The component binaries (and the core's, which a nucleus update ships, and the cloud side's
/// Lambda functions): `explicit`, else the directory of this executable. When they are not
/// there and this runs under `cargo run`, they are built there first with the same profile, as
/// GDK's `custom` build runs the project's own build command.
pub fn component_bins(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match explicit {
        Some(dir) => dir.to_owned(),
        None => std::env::current_exe()
            .context("locating this executable")?
            .parent()
            .context("this executable has no directory")?
            .to_owned(),
    };
    // The components, the core binary a nucleus update ships, and the functions of the cloud
    // side, each with the package that builds it.
    let wanted: Vec<(&str, &str)> = COMPONENTS
        .iter()
        .map(|c| (c.artifact, c.artifact))
        .chain([
            (CORE_BINARY, CORE_BINARY),
            (provision::model_release::CHECKER, ANALYZER_PACKAGE),
            (provision::app::ANOMALY_HANDLER_BIN, FUNCTIONS_PACKAGE),
            (provision::app::TELEMETRY_AGGREGATOR_BIN, FUNCTIONS_PACKAGE),
        ])
        .collect();
    let mut packages: Vec<&str> = wanted.iter().map(|(_, package)| *package).collect();
    packages.dedup();
    let missing = |dir: &Path| wanted.iter().any(|(name, _)| !dir.join(name).is_file());
    if missing(&dir)
        && explicit.is_none()
        && let Ok(cargo) = std::env::var("CARGO")
    {
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_owned(),
            Some(other) => other.to_owned(),
            None => "dev".to_owned(),
        };
        let mut command = std::process::Command::new(cargo);
        command.args(["build", "--profile", &profile]);
        for package in &packages {
            command.args(["-p", package]);
        }
        if let Ok(manifest) = std::env::var("CARGO_MANIFEST_DIR") {
            command.current_dir(manifest);
        }
        eprintln!("building the components' own binaries: {command:?}");
        let status = command.status().context("running cargo to build the components")?;
        if !status.success() {
            bail!("building the components failed ({status})");
        }
    }
    if missing(&dir) {
        bail!(
            "the components', the core's and the functions' binaries ({}) are not in {}: build them \
             (`cargo build --release -p {}`) or name their directory with --component-bins",
            wanted.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", "),
            dir.display(),
            packages.join(" -p ")
        );
    }
    Ok(dir)
}

pub use device_sim::shipped::build;

/// A trained model directory released as an operator does with `provision model release`
/// ([`provision::model_release`]): when `check`, first the analyzer's own checks (the checker
/// in `bins`); then staged with the checker its Install runs, published, and the thing group's
/// latest deployment revised with only the model's version changed and ROLLBACK, followed like
/// any deployment. Returns the version released and the deployment's timeline.
pub async fn release_model(
    operator: &Operator,
    dir: &Path,
    model_dir: &Path,
    bins: &Path,
    check: bool,
    purpose: &str,
    timeout: Duration,
) -> anyhow::Result<(String, Timeline)> {
    use provision::model_release;
    let version = if check {
        model_release::check_model_dir(model_dir, bins, None).context("checking the model")?.version
    } else {
        // Past the release check, as a model built by hand would be: the card names its version.
        let card: serde_json::Value =
            serde_json::from_slice(&std::fs::read(model_dir.join(model_release::CARD_FILE))?)?;
        card["version"].as_str().context("the model card has no version")?.to_owned()
    };
    let out = dir.join("releases").join(format!("{}-{version}", model_release::MODEL_COMPONENT));
    let built = model_release::stage_release(model_dir, bins, &out, &version).context("staging the model release")?;
    let mut options = PublishOptions::new(BUCKET);
    options.poll = Duration::from_millis(100);
    provision::component::publish_component(&operator.gg, &operator.s3, &built, &options)
        .await
        .with_context(|| format!("publishing the model {version}"))?;
    let timeline = deploy_model(operator, &version, purpose, timeout).await?;
    Ok((version, timeline))
}

/// The thing group's latest deployment revised with model `version` (already published) and
/// ROLLBACK ([`provision::model_release::deploy_model_version`]), followed like any deployment.
pub async fn deploy_model(
    operator: &Operator,
    version: &str,
    purpose: &str,
    timeout: Duration,
) -> anyhow::Result<Timeline> {
    use provision::model_release;
    let created_at = time::OffsetDateTime::now_utc();
    let t0 = Instant::now();
    let created = model_release::deploy_model_version(&operator.iot, &operator.gg, THING_GROUP, version)
        .await
        .with_context(|| format!("deploying the model {version}"))?;
    let components = vec![(model_release::MODEL_COMPONENT.to_owned(), version.to_owned())];
    follow(operator, purpose, created, components, (created_at, t0), timeout).await
}

/// A new release of the shipped component `component` (one of [`COMPONENTS`]): its recipe at
/// `version` — `ComponentVersion` and the version in its artifact URIs changed — with `edit`
/// applied to the recipe text, built with the binaries of `bins` under `{dir}/releases/` and
/// published.
pub async fn publish_release(
    operator: &Operator,
    dir: &Path,
    component: &Component,
    version: &str,
    edit: impl Fn(String) -> String,
    bins: &Path,
) -> anyhow::Result<PublishedComponent> {
    let out = dir.join("releases").join(format!("{}-{version}", component.name));
    let source = out.join("source");
    std::fs::create_dir_all(&source)?;
    let recipe = retag(component.recipe, crate::site::VERSION, version);
    std::fs::write(source.join("recipe.yaml"), edit(recipe))?;
    let spec = BuildSpec { component_dirs: vec![source], bin_dir: bins.to_owned(), out: out.clone() };
    provision::component::build_components(&spec).context("building the release")?;
    let mut published = publish(operator, &out).await?;
    published.pop().context("nothing was published")
}

/// `recipe` (YAML) with its `ComponentVersion` and the `/{from}/` in its artifact URIs at `to`.
fn retag(recipe: &str, from: &str, to: &str) -> String {
    recipe
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("ComponentVersion:") {
                format!("ComponentVersion: \"{to}\"")
            } else if trimmed.starts_with("- URI:") || trimmed.starts_with("URI:") {
                line.replace(&format!("/{from}/"), &format!("/{to}/"))
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Publishes the build output of `dir` (artifacts to [`BUCKET`], then CreateComponentVersion).
pub async fn publish(operator: &Operator, dir: &Path) -> anyhow::Result<Vec<PublishedComponent>> {
    let mut options = PublishOptions::new(BUCKET);
    options.poll = Duration::from_millis(100);
    provision::component::publish_build(&operator.gg, &operator.s3, &dir.join("greengrass-build"), &options)
        .await
        .context("publishing the components")
}

/// One status a core reported, `at_ms` after CreateDeployment.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEvent {
    /// Milliseconds after CreateDeployment.
    pub at_ms: u64,
    /// The core.
    pub thing: String,
    /// Its status (`WAITING` before it reported).
    pub status: String,
    /// Its reason (the failure cause), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A deployment from CreateDeployment to the last core's terminal status.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    /// What the deployment was for.
    pub purpose: String,
    /// The Greengrass deployment id.
    pub deployment_id: String,
    /// Its IoT job.
    pub iot_job_id: Option<String>,
    /// The components and versions deployed.
    pub components: Vec<(String, String)>,
    /// When CreateDeployment was called (RFC 3339).
    pub created: String,
    /// Each status change.
    pub events: Vec<TimelineEvent>,
    /// Milliseconds from CreateDeployment to the last core's terminal status.
    pub converged_ms: Option<u64>,
    /// Every core succeeded.
    pub succeeded: bool,
    /// Bytes of artifacts the core downloaded for it (what it had already is not downloaded).
    pub bytes_downloaded: Option<u64>,
    /// Components that put the update off (DeferComponentUpdate), and for how long in all.
    pub deferrals: Vec<DeferralRecord>,
}

/// A component that deferred the update.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeferralRecord {
    /// The component.
    pub component: String,
    /// Milliseconds it held the update.
    pub deferred_ms: u64,
    /// Its last message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Timeline {
    /// Adds what the core recorded of the deployment: bytes downloaded and deferrals.
    pub fn with_core_view(mut self, deployments: &device_sim::core::deployment::Deployments) -> Self {
        if let Some(job) = self.iot_job_id.as_deref() {
            self.bytes_downloaded = deployments.downloaded(job);
            self.deferrals = deployments
                .deferrals(job)
                .unwrap_or_default()
                .into_iter()
                .map(|d| DeferralRecord {
                    component: d.component,
                    deferred_ms: d.deferred_for.as_millis() as u64,
                    message: d.message,
                })
                .collect();
        }
        self
    }
}

impl Timeline {
    /// The last status of `thing`.
    pub fn last_status(&self, thing: &str) -> Option<&TimelineEvent> {
        self.events.iter().rev().find(|e| e.thing == thing)
    }
}

/// Makes sure the thing group exists and holds `thing`.
pub async fn join_group(operator: &Operator, thing: &str) -> anyhow::Result<()> {
    let exists = operator.iot.describe_thing_group().thing_group_name(THING_GROUP).send().await.is_ok();
    if !exists {
        operator.iot.create_thing_group().thing_group_name(THING_GROUP).send().await.context("CreateThingGroup")?;
    }
    operator
        .iot
        .add_thing_to_thing_group()
        .thing_group_name(THING_GROUP)
        .thing_name(thing)
        .send()
        .await
        .context("AddThingToThingGroup")?;
    Ok(())
}

/// CreateDeployment of `components` (with configuration `merges`) to [`THING_GROUP`], followed
/// until every core reports a terminal status or `timeout` passes.
pub async fn deploy(
    operator: &Operator,
    purpose: &str,
    components: Vec<(String, String)>,
    merges: Vec<(String, String)>,
    timeout: Duration,
) -> anyhow::Result<Timeline> {
    let spec = DeploySpec {
        thing_group: THING_GROUP.into(),
        components: components.clone(),
        merges,
        deployment_name: Some(format!("{THING_GROUP}: {purpose}")),
        ..DeploySpec::default()
    };
    let created_at = time::OffsetDateTime::now_utc();
    let t0 = Instant::now();
    let created = provision::deploy::create_group_deployment(&operator.iot, &operator.gg, &spec)
        .await
        .context("CreateDeployment")?;
    follow(operator, purpose, created, components, (created_at, t0), timeout).await
}

/// Follows a deployment `created` at `at` (wall clock, and the instant its milliseconds count
/// from) until every core of its target reports a terminal status or `timeout` passes.
pub async fn follow(
    operator: &Operator,
    purpose: &str,
    created: provision::deploy::CreatedDeployment,
    components: Vec<(String, String)>,
    (created_at, t0): (time::OffsetDateTime, Instant),
    timeout: Duration,
) -> anyhow::Result<Timeline> {
    let mut events = Vec::new();
    let mut record = |status: &CoreStatus| {
        events.push(TimelineEvent {
            at_ms: t0.elapsed().as_millis() as u64,
            thing: status.thing.clone(),
            status: status.status_text().to_owned(),
            reason: status.reason.clone(),
        });
    };
    let options = FollowOptions { timeout, poll: Duration::from_millis(100) };
    let outcome = provision::deploy::follow_deployment(
        &operator.gg,
        &created.target_arn,
        &created.deployment_id,
        options,
        &mut record,
    )
    .await
    .context("following the deployment")?;
    let converged_ms = (!outcome.timed_out).then(|| t0.elapsed().as_millis() as u64);
    Ok(Timeline {
        purpose: purpose.to_owned(),
        deployment_id: created.deployment_id,
        iot_job_id: created.iot_job_id,
        components,
        created: created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        events,
        converged_ms,
        succeeded: outcome.succeeded(),
        bytes_downloaded: None,
        deferrals: Vec::new(),
    })
}
