//! `device-sim fleet`: many simulated sites on one machine, for rollouts, rotation campaigns
//! and load.
//!
//! The cloud side is prepared once, through the operator's own provisioning code
//! ([`provision`]) against the cloud `endpoints.json` names (the local cloud's, or AWS): the
//! thing group, the core policies, the fleet provisioning template that registers a core into
//! the group (AWS IoT Developer Guide, "Provisioning devices that don't have device
//! certificates using fleet provisioning"), one claim, and with `--components full` the pump's
//! components built, published and deployed to the group.
//!
//! Each site is then a plant (its own seed, faults injected at times drawn from `--seed`,
//! [`plan`]) served in this process, and a simulated core as its own process
//! (`device-sim core --provision-by-claim --cloud-deployments`) that makes its key, onboards by
//! claim under its own thing name and takes the group's deployment; the components run as the
//! core's child processes, as on a device. The plants share this process's runtime. The cores
//! are processes of their own because each site's components need their own plant address,
//! which a group deployment cannot carry: the core's environment gives it to them
//! ([`pump_types::MODBUS_ADDRESS_ENV`]), as the nucleus's `setenv` configuration would.
//!
//! `--measure SECONDS` reads `/proc` over a window once every site is up ([`measure`]) and
//! prints the figures; otherwise the fleet runs until SIGINT or SIGTERM. Either way every core
//! is stopped (its components first) and nothing is left running.

pub mod measure;
pub mod observer;
pub mod plan;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cloud_api::endpoints::Endpoints;
use provision::deploy::{CreatedDeployment, DeploySpec, FollowOptions};
use serde_json::json;

use crate::plant::{Fault, PlantConfig, PlantHandle, SharedPlant};
use plan::{FaultRate, ScheduledFault, SitePlan};

/// The bucket the fleet's component artifacts go to.
pub const BUCKET: &str = "pump-fleet-components";
/// The provisioning role AWS IoT assumes to register the fleet's things.
pub const PROVISIONING_ROLE: &str = "PumpFleetProvisioningRole";
/// How long a core gets to stop (its components' Shutdown steps included) before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(40);

/// What runs on each site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stack {
    /// The pump's components (sensor, analyzer, controller, and the model), deployed to the group.
    Full,
    /// A bare core: nothing deployed; it sends the nucleus's telemetry and fleet status only.
    None,
}

/// `device-sim fleet` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// `endpoints.json` of the cloud (the local cloud writes one in its data directory); its
    /// administrator key pair signs the operator's calls, else the default AWS credential chain.
    #[arg(long, value_name = "ENDPOINTS_JSON")]
    pub cloud: PathBuf,
    /// How many sites.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub sites: usize,
    /// The seed of the plants' noise and of the fault schedules: the same seed, the same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The thing group the cores join (and the prefix of their thing names).
    #[arg(long, value_name = "NAME", default_value = "pump-fleet")]
    pub group: String,
    /// What runs on each site: `full` (the pump's components) or `none` (a bare core, for load).
    #[arg(long, value_enum, default_value = "full")]
    pub components: Stack,
    /// Where the sites keep their cores' roots, logs and claim configuration.
    #[arg(long, value_name = "DIR", default_value = "fleet-data")]
    pub data_dir: PathBuf,
    /// Where the component binaries are (`pump-sensor`, `pump-analyzer`, `pump-controller`);
    /// default: next to this executable.
    #[arg(long, value_name = "DIR")]
    pub component_bins: Option<PathBuf>,
    /// Mean faults injected per site per hour (0: none).
    #[arg(long, value_name = "RATE", default_value_t = 2.0)]
    pub faults_per_hour: f64,
    /// How often each core reports fleet status (the nucleus's `periodicUpdateIntervalSec`).
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub fleet_status_interval_secs: u64,
    /// Each core's telemetry agent aggregates every SECONDS/6 and publishes every SECONDS,
    /// instead of the nucleus's hourly and daily (for load runs).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(6..))]
    pub telemetry_interval_secs: Option<u64>,
    /// How long onboarding and the deployment may take before the fleet gives up.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub wait_secs: u64,
    /// Once every site is up, measure memory and CPU per site over this many seconds, print the
    /// figures and stop.
    #[arg(long, value_name = "SECONDS")]
    pub measure: Option<u64>,
    /// With --measure, also measure this process over the same window (the local cloud's pid,
    /// for what the fleet costs the cloud).
    #[arg(long, value_name = "PID", requires = "measure")]
    pub measure_pid: Option<u32>,
    /// Once every site is up (and measured), deploy a new component version to the group (a
    /// recipe-only probe, `com.example.fleet.Probe`, at a version new to this run) and report
    /// how it reached the cores: per-core time to SUCCEEDED, p50/p99, failures.
    #[arg(long)]
    pub deploy_campaign: bool,
    /// The cores rotate their certificates when a rotation job asks (`core
    /// --certificate-rotation`); the template attaches the rotation policy
    /// ([`provision::DEFAULT_ROTATION_POLICY_NAME`]).
    #[arg(long)]
    pub certificate_rotation: bool,
    /// Once every site is up (after a deployment campaign, if any), rotate every core's
    /// certificate with one job targeting the group (`provision rotate --thing-group`) and report
    /// how it reached the cores: per-core time to the old certificate retired, p50/p99, failures.
    /// Implies --certificate-rotation.
    #[arg(long)]
    pub rotation_campaign: bool,
    /// After the measurement and the campaigns, keep the fleet running until SIGINT or SIGTERM
    /// instead of stopping.
    #[arg(long)]
    pub keep_running: bool,
}

impl FleetArgs {
    /// Whether the cores rotate their certificates.
    pub fn rotating(&self) -> bool {
        self.certificate_rotation || self.rotation_campaign
    }
}

/// The probe a deployment campaign deploys: a recipe without artifacts whose Run step only
/// prints, so the campaign measures the deployment path, not a download.
pub const PROBE: &str = "com.example.fleet.Probe";

/// What the fleet's input gets wrong (a configuration error: exit `EX_CONFIG`).
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The plan cannot be made from the flags.
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    /// The endpoints file is missing or not an `endpoints.json`.
    #[error("{0}")]
    Endpoints(String),
    /// A component binary is not where the fleet looks.
    #[error(
        "the component binary {0} is missing: build it (`cargo build -p pump-sensor -p pump-analyzer -p pump-controller`) or name its directory with --component-bins"
    )]
    MissingBinary(PathBuf),
}

impl FleetError {
    /// Every variant is the input's fault.
    pub fn is_configuration(&self) -> bool {
        true
    }
}

/// The operator's clients.
struct Operator {
    iot: aws_sdk_iot::Client,
    iam: aws_sdk_iam::Client,
    gg: aws_sdk_greengrassv2::Client,
    s3: aws_sdk_s3::Client,
    data: aws_sdk_iotdataplane::Client,
}

impl Operator {
    async fn new(endpoints: &Endpoints) -> Self {
        // The local cloud's endpoints.json carries its administrator key pair; on AWS the
        // default chain stands here.
        let options = provision::ClientOptions {
            endpoint_url: Some(endpoints.http.clone()),
            region: Some(endpoints.region.clone()),
            credentials: provision::client::local_cloud_credentials(endpoints).ok(),
        };
        Operator {
            iot: provision::iot_client(&options).await,
            iam: provision::iam_client(&options).await,
            gg: provision::greengrass_client(&options).await,
            s3: provision::s3_client(&options).await,
            data: provision::iot_data_client(&options).await,
        }
    }
}

/// What the cloud side holds for the fleet.
struct Prepared {
    group_arn: String,
    deployment: Option<(CreatedDeployment, Instant)>,
    claim_cert: PathBuf,
    claim_key: PathBuf,
    template: String,
}

/// One running site.
struct RunningSite {
    plan: SitePlan,
    dir: PathBuf,
    plant: Option<PlantHandle>,
    core: tokio::process::Child,
    core_pid: u32,
    faults: tokio::task::JoinHandle<()>,
}

impl RunningSite {
    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
}

/// Runs the fleet until a stop signal, or until `--measure` is done.
pub async fn run(args: FleetArgs) -> anyhow::Result<()> {
    let rate = FaultRate { per_hour: args.faults_per_hour, ..FaultRate::default() };
    let sites = plan::plan(args.sites, args.seed, &args.group, rate).map_err(FleetError::Plan)?;
    let endpoints = read_endpoints(&args.cloud)?;
    let bins = match &args.component_bins {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?.parent().context("this executable has no directory")?.to_owned(),
    };
    if args.components == Stack::Full {
        for c in crate::shipped::COMPONENTS {
            let path = bins.join(c.artifact);
            if !path.is_file() {
                return Err(FleetError::MissingBinary(path).into());
            }
        }
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create the data directory {}", args.data_dir.display()))?;
    let data_dir = std::path::absolute(&args.data_dir)?;
    let stop = cli_shell::shutdown_signal()?;
    let mut running = Vec::new();
    let outcome = tokio::select! {
        signal = stop => {
            eprintln!("{signal} received; stopping the fleet");
            Ok(())
        }
        result = drive(&args, &sites, &endpoints, &bins, &data_dir, &mut running) => result,
    };
    let left = stop_sites(running).await;
    if left.is_empty() {
        eprintln!("fleet stopped: every core and component has exited");
    } else {
        eprintln!("fleet stopped; still running: {left:?}");
    }
    outcome
}

/// Prepares the cloud, starts the sites, waits for them, and measures or waits for the stop.
async fn drive(
    args: &FleetArgs,
    sites: &[SitePlan],
    endpoints: &Endpoints,
    bins: &Path,
    data_dir: &Path,
    running: &mut Vec<RunningSite>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let operator = Operator::new(endpoints).await;
    let prepared = prepare(&operator, args, bins, data_dir).await?;
    println!(
        "cloud prepared in {:.1} s: thing group {}, template {}{}",
        started.elapsed().as_secs_f64(),
        args.group,
        prepared.template,
        prepared.deployment.as_ref().map(|(d, _)| format!(", deployment {}", d.deployment_id)).unwrap_or_default()
    );
    // With the pump's components, count what reaches the cloud.
    let observer = match args.components == Stack::Full {
        true => {
            Some(observer::Observer::start(&operator.iot, endpoints, &args.group, &data_dir.join("observer")).await?)
        }
        false => None,
    };
    let progress = indicatif::ProgressBar::new(sites.len() as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    progress.set_prefix("starting");
    let t0 = Instant::now();
    for site in sites {
        running.push(start_site(site, args, endpoints, &prepared, data_dir, t0).await?);
        progress.inc(1);
    }
    progress.set_prefix("onboarding");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait_secs);
    let onboarded = wait_onboarded(running, &progress, deadline).await?;
    progress.finish_and_clear();
    println!(
        "{} sites up, {} cores onboarded by claim in {:.1} s",
        running.len(),
        onboarded,
        t0.elapsed().as_secs_f64()
    );
    if let Some((deployment, created)) = &prepared.deployment {
        let campaign =
            follow_campaign(&operator, &prepared.group_arn, deployment, *created, sites.len(), deadline).await?;
        println!("deployment {}: {}", deployment.deployment_id, campaign.line());
    }
    if let Some(secs) = args.measure {
        let figures = measure_window(running, Duration::from_secs(secs), args.measure_pid).await;
        println!("{figures}");
        if let Some(observer) = &observer {
            println!("{}", observer.ledger().summary().line());
        }
    }
    if args.deploy_campaign {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait_secs);
        let (deployment, created, version) = deploy_probe(&operator, args, data_dir).await?;
        let campaign =
            follow_campaign(&operator, &prepared.group_arn, &deployment, created, sites.len(), deadline).await?;
        println!("campaign: {PROBE} {version} to {}: {}", args.group, campaign.line());
    }
    if args.rotation_campaign {
        let campaign = rotation_campaign(&operator, args, sites.len()).await?;
        println!("rotation campaign: {}: {}", args.group, campaign.line());
    }
    if let Some(observer) = &observer
        && (args.deploy_campaign || args.rotation_campaign)
    {
        println!("after the campaigns, {}", observer.ledger().summary().line());
    }
    let finite = args.measure.is_some() || args.deploy_campaign || args.rotation_campaign;
    match finite && !args.keep_running {
        true => Ok(()),
        false => {
            println!("the fleet runs; Ctrl-C stops it");
            std::future::pending().await
        }
    }
}

fn read_endpoints(path: &Path) -> Result<Endpoints, FleetError> {
    let text = std::fs::read(path)
        .map_err(|e| FleetError::Endpoints(format!("cannot read the endpoints file {}: {e}", path.display())))?;
    serde_json::from_slice(&text)
        .map_err(|e| FleetError::Endpoints(format!("{} is not an endpoints.json: {e}", path.display())))
}

/// The cloud side, once: the group, the policies, the template, a claim; with the pump's
/// components, their build, publication and the group deployment.
async fn prepare(operator: &Operator, args: &FleetArgs, bins: &Path, data_dir: &Path) -> anyhow::Result<Prepared> {
    let group_arn =
        provision::deploy::thing_group_arn(&operator.iot, &args.group, true).await.context("the thing group")?;
    provision::fleet::ensure_core_policies(
        &operator.iot,
        &group_arn,
        provision::DEFAULT_POLICY_NAME,
        provision::DEFAULT_DEPLOYMENTS_POLICY_NAME,
    )
    .await
    .context("the core policies")?;
    let mut policies =
        vec![provision::DEFAULT_POLICY_NAME.to_owned(), provision::DEFAULT_DEPLOYMENTS_POLICY_NAME.to_owned()];
    if args.rotating() {
        provision::fleet::ensure_rotation_policy(&operator.iot, &group_arn, provision::DEFAULT_ROTATION_POLICY_NAME)
            .await
            .context("the rotation policy")?;
        policies.push(provision::DEFAULT_ROTATION_POLICY_NAME.to_owned());
    }
    let template = format!("{}-template", args.group);
    let spec = provision::fleet::TemplateSpec {
        template_name: template.clone(),
        role_name: PROVISIONING_ROLE.into(),
        thing_groups: vec![args.group.clone()],
        policies,
    };
    provision::fleet::ensure_template(&operator.iot, &operator.iam, &spec)
        .await
        .context("the provisioning template")?;
    let claim = provision::fleet::create_claim(&operator.iot, &template, &data_dir.join("claim"))
        .await
        .context("CreateProvisioningClaim")?;
    let deployment = match args.components {
        Stack::None => None,
        Stack::Full => {
            let build_dir = data_dir.join("build");
            crate::shipped::build(&build_dir, bins)?;
            publish(operator, &build_dir.join(provision::component::BUILD_DIR)).await?;
            Some(deploy_to_group(operator, args, shipped_components(), "the pump's components").await?)
        }
    };
    Ok(Prepared { group_arn, deployment, claim_cert: claim.certificate, claim_key: claim.private_key, template })
}

/// Publishes [`PROBE`] at a version new to this run and deploys it to the group with what the
/// group already runs; returns the deployment, when it was created and the version.
async fn deploy_probe(
    operator: &Operator,
    args: &FleetArgs,
    data_dir: &Path,
) -> anyhow::Result<(CreatedDeployment, Instant, String)> {
    let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    // Greengrass caps each version number at 999999: the day, then the second of the day.
    let version = format!("1.{}.{}", epoch / 86_400, epoch % 86_400);
    let source = data_dir.join("probe").join(&version);
    std::fs::create_dir_all(&source)?;
    let recipe = json!({
        "RecipeFormatVersion": "2020-01-25", "ComponentName": PROBE, "ComponentVersion": version,
        "ComponentDescription": "The fleet's deployment campaign probe: prints its version.",
        "ComponentPublisher": "Example",
        "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": format!("echo probe {version}")}}]
    });
    std::fs::write(source.join("recipe.yaml"), recipe.to_string())?;
    let out = data_dir.join("probe-build").join(&version);
    let spec = provision::component::BuildSpec { component_dirs: vec![source], bin_dir: out.clone(), out: out.clone() };
    provision::component::build_components(&spec).context("building the probe")?;
    publish(operator, &out.join(provision::component::BUILD_DIR)).await?;
    let mut components = match args.components {
        Stack::Full => shipped_components(),
        Stack::None => Vec::new(),
    };
    components.push((PROBE.to_owned(), version.clone()));
    let (deployment, created) =
        deploy_to_group(operator, args, components, &format!("campaign {PROBE} {version}")).await?;
    Ok((deployment, created, version))
}

/// Publishes a build output (`greengrass-build`) to [`BUCKET`] and Greengrass.
async fn publish(operator: &Operator, build: &Path) -> anyhow::Result<()> {
    let mut options = provision::component::PublishOptions::new(BUCKET);
    options.poll = Duration::from_millis(200);
    provision::component::publish_build(&operator.gg, &operator.s3, build, &options)
        .await
        .context("publishing the components")?;
    Ok(())
}

/// The shipped components at their version.
fn shipped_components() -> Vec<(String, String)> {
    crate::shipped::COMPONENTS.iter().map(|c| (c.name.to_owned(), crate::shipped::VERSION.to_owned())).collect()
}

/// CreateDeployment of `components` to the group (with the group's configuration when the
/// pump's components run); returns it and when it was created.
async fn deploy_to_group(
    operator: &Operator,
    args: &FleetArgs,
    components: Vec<(String, String)>,
    purpose: &str,
) -> anyhow::Result<(CreatedDeployment, Instant)> {
    let spec = DeploySpec {
        thing_group: args.group.clone(),
        components,
        merges: if args.components == Stack::Full { group_merges() } else { Vec::new() },
        deployment_name: Some(format!("{}: {purpose}", args.group)),
        ..DeploySpec::default()
    };
    let created = Instant::now();
    let deployment = provision::deploy::create_group_deployment(&operator.iot, &operator.gg, &spec)
        .await
        .context("CreateDeployment")?;
    Ok((deployment, created))
}

/// The group deployment's configuration, the same for every site: telemetry batches at least
/// every 5 s so a short run sees them flow. Each site's plant address comes from its core's
/// environment.
pub fn group_merges() -> Vec<(String, String)> {
    vec![(pump_types::SENSOR_COMPONENT.to_owned(), json!({"telemetry": {"maxDelayMs": 5000}}).to_string())]
}

/// Starts a site: its plant in this process, its fault schedule, its core as a process.
async fn start_site(
    site: &SitePlan,
    args: &FleetArgs,
    endpoints: &Endpoints,
    prepared: &Prepared,
    data_dir: &Path,
    t0: Instant,
) -> anyhow::Result<RunningSite> {
    let dir = data_dir.join("sites").join(&site.thing);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let config = PlantConfig { modbus: loopback, control: loopback, seed: site.seed, ..PlantConfig::default() };
    // A bare core reads no plant: none is served for it.
    let plant = match args.components {
        Stack::Full => {
            Some(crate::plant::serve(config).await.with_context(|| format!("{}: starting the plant", site.thing))?)
        }
        Stack::None => None,
    };
    let claim = dir.join("claim.json");
    let claim_config = json!({
        "provisioningTemplate": prepared.template,
        "claimCertificatePath": prepared.claim_cert,
        "claimCertificatePrivateKeyPath": prepared.claim_key,
        "templateParameters": {provision::fleet::THING_NAME_PARAMETER: site.thing},
        "deviceId": site.thing,
    });
    std::fs::write(&claim, serde_json::to_vec_pretty(&claim_config)?)?;
    let log = std::fs::File::create(dir.join("core.log"))?;
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command
        .arg("core")
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--cloud")
        .arg(std::path::absolute(&args.cloud)?)
        .arg("--provision-by-claim")
        .arg(&claim)
        .arg("--cloud-deployments")
        .arg("--root-ca")
        .arg(&endpoints.ca_file)
        .args(["--region", &endpoints.region])
        .args(["--fleet-status-interval-secs", &args.fleet_status_interval_secs.to_string()])
        .args(args.telemetry_interval_secs.map(|s| format!("--telemetry-intervals={},{s}", s / 6)))
        .args(args.rotating().then_some("--certificate-rotation"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    if let Some(plant) = &plant {
        command.env(pump_types::MODBUS_ADDRESS_ENV, plant.modbus_addr().to_string());
    }
    let core = command.spawn().with_context(|| format!("{}: starting its core", site.thing))?;
    let core_pid = core.id().context("the core exited at once")?;
    let faults = match &plant {
        Some(plant) => tokio::spawn(inject_faults(plant.plant(), site.faults.clone(), t0)),
        None => tokio::spawn(async {}),
    };
    Ok(RunningSite { plan: site.clone(), dir, plant, core, core_pid, faults })
}

/// Injects each fault at its time and clears it when it has lasted.
async fn inject_faults(plant: SharedPlant, faults: Vec<ScheduledFault>, t0: Instant) {
    let mut events: Vec<(Duration, Option<Fault>, ScheduledFault)> = Vec::new();
    for f in faults {
        match Fault::new(f.kind, f.severity, None) {
            Ok(fault) => {
                events.push((f.at, Some(fault), f.clone()));
                events.push((f.at + f.lasts, None, f));
            }
            Err(e) => tracing::warn!("fault {f:?} not injected: {e}"),
        }
    }
    events.sort_by_key(|(at, ..)| *at);
    for (at, fault, scheduled) in events {
        tokio::time::sleep_until((t0 + at).into()).await;
        let mut model = crate::plant::lock(&plant);
        match fault {
            Some(fault) => model.inject(fault),
            None => {
                model.clear(scheduled.kind);
            }
        }
    }
}

/// Waits until every site's core kept an identity (onboarded by claim); fails when a core exits
/// or the deadline passes, naming its log.
async fn wait_onboarded(
    running: &mut [RunningSite],
    progress: &indicatif::ProgressBar,
    deadline: tokio::time::Instant,
) -> anyhow::Result<usize> {
    progress.set_position(0);
    loop {
        let mut done = 0;
        for site in running.iter_mut() {
            if let Some(status) = site.core.try_wait()? {
                anyhow::bail!(
                    "the core of {} exited ({status}); see {}",
                    site.plan.thing,
                    site.dir.join("core.log").display()
                );
            }
            if crate::core::claim::provisioned(&site.root()).ok().flatten().is_some() {
                done += 1;
            }
        }
        progress.set_position(done as u64);
        if done == running.len() {
            return Ok(done);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("{done} of {} cores onboarded before the deadline", running.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Follows `deployment` until `targeted` cores of the group reported a terminal status or the
/// deadline passes; each core's time counts from `created`.
async fn follow_campaign(
    operator: &Operator,
    group_arn: &str,
    deployment: &CreatedDeployment,
    created: Instant,
    targeted: usize,
    deadline: tokio::time::Instant,
) -> anyhow::Result<measure::Campaign> {
    let mut reached: BTreeMap<String, (Duration, String)> = BTreeMap::new();
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let options = FollowOptions { timeout: remaining, poll: Duration::from_millis(200) };
        let mut record = |status: &provision::deploy::CoreStatus| {
            if status.is_terminal() {
                reached.entry(status.thing.clone()).or_insert((created.elapsed(), status.status_text().to_owned()));
            }
        };
        let outcome = provision::deploy::follow_deployment(
            &operator.gg,
            group_arn,
            &deployment.deployment_id,
            options,
            &mut record,
        )
        .await
        .context("following the deployment")?;
        if reached.len() >= targeted || outcome.timed_out || remaining.is_zero() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut statuses = BTreeMap::new();
    for (_, status) in reached.values() {
        *statuses.entry(status.clone()).or_insert(0) += 1;
    }
    Ok(measure::Campaign { times: reached.values().map(|(t, _)| *t).collect(), statuses, targeted })
}

/// Rotates every core's certificate with one job targeting the group and reports, per core, the
/// time from the job's creation to the end of the cloud's part (the old certificate retired).
async fn rotation_campaign(
    operator: &Operator,
    args: &FleetArgs,
    targeted: usize,
) -> anyhow::Result<measure::Campaign> {
    let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let job_id = format!("rotate-{}-{epoch}", args.group);
    let rotation = provision::rotate::rotate_group(
        &operator.iot,
        &operator.data,
        &args.group,
        &job_id,
        32,
        Duration::from_millis(200),
        Duration::from_secs(args.wait_secs),
    )
    .await
    .context("the rotation campaign")?;
    let mut statuses = BTreeMap::new();
    let mut times = Vec::new();
    for member in &rotation.members {
        let status = match &member.outcome {
            Ok(outcome) if outcome.timed_out => "unfinished".to_owned(),
            Ok(outcome) => outcome.status.clone(),
            Err(e) => {
                eprintln!("{}: {e}", member.thing);
                "error".to_owned()
            }
        };
        if let Ok(outcome) = &member.outcome
            && let Some(problem) = outcome.problem()
        {
            eprintln!("{}: {problem}", member.thing);
        }
        if status != "unfinished" {
            times.push(member.took);
        }
        *statuses.entry(status).or_insert(0) += 1;
    }
    Ok(measure::Campaign { times, statuses, targeted })
}

/// Every process of a site: its core and the core's descendants (the components).
fn site_pids(site: &RunningSite) -> Vec<u32> {
    let mut pids = vec![site.core_pid];
    pids.extend(bench_common::machine::descendants(site.core_pid));
    pids
}

/// Reads every site's processes (and this process, which serves the plants, and `other`) at the
/// start and the end of `window`; returns the figures' lines.
async fn measure_window(running: &[RunningSite], window: Duration, other: Option<u32>) -> String {
    use bench_common::machine::{TICKS_PER_SECOND, cpu_ticks, open_fds, pss_kib, rss_kib};
    let own = std::process::id();
    let start: Vec<Vec<(u32, u64)>> =
        running.iter().map(|s| site_pids(s).into_iter().filter_map(|p| Some((p, cpu_ticks(p)?))).collect()).collect();
    let own_start = cpu_ticks(own).unwrap_or(0);
    let other_start = other.and_then(|pid| Some((pid, cpu_ticks(pid)?)));
    tokio::time::sleep(window).await;
    let mut processes = 0;
    let costs: Vec<measure::SiteCost> = start
        .iter()
        .map(|pids| {
            let readings: Vec<measure::ProcessReading> = pids
                .iter()
                .filter_map(|(pid, ticks_start)| {
                    Some(measure::ProcessReading {
                        ticks_start: *ticks_start,
                        ticks_end: cpu_ticks(*pid)?,
                        rss_kib: rss_kib(*pid)?,
                        pss_kib: pss_kib(*pid).unwrap_or(0),
                    })
                })
                .collect();
            processes += readings.len();
            measure::site_cost(&readings, window, TICKS_PER_SECOND)
        })
        .collect();
    let alone = |pid: u32, ticks_start: u64| {
        let reading = measure::ProcessReading {
            ticks_start,
            ticks_end: cpu_ticks(pid).unwrap_or(ticks_start),
            rss_kib: rss_kib(pid).unwrap_or(0),
            pss_kib: pss_kib(pid).unwrap_or(0),
        };
        measure::site_cost(&[reading], window, TICKS_PER_SECOND)
    };
    let own_cost = alone(own, own_start);
    let machine = bench_common::machine::Machine::describe();
    let mut out = format!("machine: {}\n", machine.summary());
    match measure::fleet_cost(&costs) {
        Some(c) => out.push_str(&format!(
            "per site ({} sites, {} processes, core and components, over {} s): RSS mean {:.1} MiB, max {:.1} MiB; PSS mean {:.1} MiB; CPU mean {:.2} %, max {:.2} % of one core\n",
            c.sites,
            processes,
            window.as_secs(),
            c.rss_mean_mib,
            c.rss_max_mib,
            c.pss_mean_mib,
            c.cpu_mean_percent,
            c.cpu_max_percent
        )),
        None => out.push_str("no site to measure\n"),
    }
    out.push_str(&format!(
        "the fleet process ({} plants and the orchestration): RSS {:.1} MiB, PSS {:.1} MiB, CPU {:.2} % of one core",
        running.iter().filter(|s| s.plant.is_some()).count(),
        own_cost.rss_mib,
        own_cost.pss_mib,
        own_cost.cpu_percent
    ));
    if let Some((pid, ticks_start)) = other_start {
        let cost = alone(pid, ticks_start);
        out.push_str(&format!(
            "\nprocess {pid} (--measure-pid): RSS {:.1} MiB, PSS {:.1} MiB, CPU {:.2} % of one core, {} open file descriptors",
            cost.rss_mib,
            cost.pss_mib,
            cost.cpu_percent,
            open_fds(pid).map_or("?".to_owned(), |n| n.to_string())
        ));
    }
    out
}

/// Stops every site: SIGTERM to each core (it stops its components first), a kill after
/// [`STOP_WITHIN`]; the fault schedules and the plants end. Returns the pids of this process's
/// descendants still alive afterwards (none when all went well).
async fn stop_sites(running: Vec<RunningSite>) -> Vec<u32> {
    for site in &running {
        if let Some(pid) = i32::try_from(site.core_pid).ok().and_then(rustix::process::Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    for mut site in running {
        site.faults.abort();
        if tokio::time::timeout(STOP_WITHIN, site.core.wait()).await.is_err() {
            tracing::warn!("the core of {} did not stop within {STOP_WITHIN:?}; killing it", site.plan.thing);
            let _ = site.core.kill().await;
        }
        if let Some(plant) = site.plant.take() {
            plant.shutdown().await;
        }
    }
    bench_common::machine::descendants(std::process::id())
}
