//! `device-sim`: the simulated site.
//!
//! `device-sim core` runs a simulated Greengrass core: it starts the components of a local
//! deployment from their recipes and serves Greengrass IPC until SIGINT or SIGTERM, then stops
//! them (Shutdown steps included) and exits.
//!
//! `device-sim deployment create|status|list` are the Greengrass CLI's local deployment
//! commands against a running core: they read `{root}/cli_ipc_info/` and call
//! CreateLocalDeployment, GetLocalDeploymentStatus, ListLocalDeployments over its IPC socket.
//!
//! `device-sim fleet --cloud E --sites N` runs N sites on this machine, each onboarded by claim
//! into one thing group ([`device_sim::fleet`]).
//!
//! `device-sim launcher --root R -- <core args>` runs the core as the nucleus's loader does:
//! from the versions installed under `{R}/alts`, restarting it into a staged update and rolling
//! back an update that does not prove itself ([`device_sim::launcher`]).
//!
//! Exit codes: 0 after a clean shutdown; 64 (`EX_USAGE`) for bad command-line syntax; 78
//! (`EX_CONFIG`) when the input is at fault (recipes, artifacts, merges, unsupported flags),
//! so a process supervisor can stop restarting; 100 when the core asks its launcher for a
//! restart (a nucleus update); 1 for anything else. The launcher ends with its core's code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::collections::HashMap;

use cloud_api::ipc::model::{
    CreateLocalDeploymentRequest, FailureHandlingPolicy, GetLocalDeploymentStatusRequest, ListLocalDeploymentsRequest,
    LocalDeployment,
};
use cloud_api::ipc::operation as op;
use device_sim::core::claim;
use device_sim::core::cli::{self, CliClient};
use device_sim::core::key_store::{KeyRef, KeyStore, KeyStoreError, Pkcs11Config};
use device_sim::core::options::{FreezePoint, RotationOptions};
use device_sim::core::runtime::{CloudOptions, Core, CoreError, CoreOptions, parse_update_config};
use device_sim::core::supervisor::GGC_VERSION;
use device_sim::launcher::machine::REQUEST_RESTART;
use device_sim::recipe::ConfigurationUpdate;
use device_sim::recipe::{ComponentVersion, DevicePlatform};

/// How long components get to stop (Shutdown has 15 s by default, then a kill grace).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Parser)]
#[command(
    name = "device-sim",
    version,
    about = "The simulated site: a stand-in Greengrass core and (later) the plant."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a simulated Greengrass core with the components of a local deployment.
    Core(Box<CoreArgs>),
    /// Serves the simulated pump plant over Modbus TCP, with an HTTP control interface for faults.
    Plant(device_sim::plant::PlantArgs),
    /// Generates a labeled dataset of feature windows from simulated plant runs (schema: --help).
    Dataset(device_sim::dataset::DatasetArgs),
    /// Turns a copy of the landing bucket and the incidents table into labelled feature rows in
    /// the dataset's schema (the retraining pipeline's processing step).
    LandingRows(device_sim::dataset::landing::LandingRowsArgs),
    /// Writes a dataset plan's runs as a fleet's landing bucket holds them, with the truth.
    LandingSample(device_sim::dataset::landing::LandingSampleArgs),
    /// Local deployments on a running core, as the Greengrass CLI's `deployment` commands.
    #[command(subcommand)]
    Deployment(DeploymentCommand),
    /// Runs the core from the versions installed under `{root}/alts`, as the nucleus's loader:
    /// restarts it into a staged update and rolls back an update that does not prove itself.
    Launcher(LauncherArgs),
    /// Runs N simulated sites (plant, core onboarded by claim into one thing group, the pump's
    /// components from a group deployment) until Ctrl-C, or measures what each site costs.
    Fleet(Box<device_sim::fleet::FleetArgs>),
}

#[derive(Debug, clap::Args)]
struct LauncherArgs {
    /// The core's root directory; the versions live in `{DIR}/alts`, and the core gets
    /// `--root DIR`.
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// How long a new version has to prove itself (remove `alts/old`) before it is rolled back.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    health_deadline_secs: u64,
    /// The arguments of `device-sim core`, except `--root` and `--nucleus-version`.
    #[arg(last = true, value_name = "CORE_ARGS")]
    core_args: Vec<std::ffi::OsString>,
}

#[derive(Debug, Subcommand)]
enum DeploymentCommand {
    /// Queues a local deployment (CreateLocalDeployment) and prints its id.
    Create(CreateArgs),
    /// Prints a local deployment's status (GetLocalDeploymentStatus).
    Status(StatusArgs),
    /// Lists the core's local deployments (ListLocalDeployments).
    List(RootArg),
}

#[derive(Debug, clap::Args)]
struct RootArg {
    /// The running core's root directory (its `--root`).
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
}

#[derive(Debug, clap::Args)]
struct CreateArgs {
    /// The running core's root directory (its `--root`).
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// Directory of recipes to add to the core's recipe store (`--recipeDir`).
    #[arg(long, value_name = "DIR")]
    recipe_dir: Option<PathBuf>,
    /// Directory of artifacts, laid out `{DIR}/{ComponentName}/{ComponentVersion}/` (`--artifactDir`).
    #[arg(long, value_name = "DIR")]
    artifact_dir: Option<PathBuf>,
    /// A root component to add or change the version of; repeat for several (`--merge`).
    #[arg(long = "merge", value_name = "NAME=VERSION")]
    merges: Vec<String>,
    /// A root component to remove; repeat for several (`--remove`).
    #[arg(long = "remove", value_name = "NAME")]
    removes: Vec<String>,
    /// Configuration updates `{"Name": {"MERGE": {…}, "RESET": ["/pointer"]}}`, or `@FILE` (`--update-config`).
    #[arg(long, value_name = "JSON|@FILE")]
    update_config: Option<String>,
    /// What to do when the deployment fails (`--failure-handling-policy`).
    #[arg(long, value_name = "POLICY", value_parser = ["ROLLBACK", "DO_NOTHING"])]
    failure_handling_policy: Option<String>,
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// The running core's root directory (its `--root`).
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// The deployment id `create` printed.
    #[arg(value_name = "DEPLOYMENT_ID")]
    id: String,
}

#[derive(Debug, clap::Args)]
struct CoreArgs {
    /// The core's root directory (`{kernel:rootPath}`); created if missing.
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// The core device's thing name (with --provision-by-claim: the one the template registers).
    #[arg(
        long,
        value_name = "NAME",
        required_unless_present = "provision_by_claim",
        conflicts_with = "provision_by_claim"
    )]
    thing: Option<String>,
    /// Directory of component recipes (YAML or JSON), as the Greengrass CLI's `--recipeDir`.
    #[arg(long, value_name = "DIR", required_unless_present = "cloud_deployments")]
    recipe_dir: Option<PathBuf>,
    /// Directory of artifacts, laid out `{DIR}/{ComponentName}/{ComponentVersion}/`.
    #[arg(long, value_name = "DIR", required_unless_present = "cloud_deployments")]
    artifact_dir: Option<PathBuf>,
    /// A root component of the deployment; repeat for several. A core that takes cloud
    /// deployments may start with none and wait for its first deployment.
    #[arg(long = "merge", value_name = "NAME=VERSION", required_unless_present = "cloud_deployments")]
    merges: Vec<String>,
    /// The AWS Region given to components (`AWS_REGION`).
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// The root CA file given to components (`GG_ROOT_CA_PATH`).
    #[arg(long, value_name = "PEM")]
    root_ca: Option<PathBuf>,
    /// Configuration updates, as the Greengrass CLI's `--update-config`: JSON
    /// `{"Name": {"MERGE": {…}, "RESET": ["/pointer"]}}`, or `@FILE` to read it from a file.
    /// `aws.greengrass.ShadowManager` takes its `synchronize` and `strategy` this way.
    #[arg(long, value_name = "JSON|@FILE")]
    update_config: Option<String>,
    /// `endpoints.json` of the IoT Core endpoint (the local cloud's, or one written by
    /// `provision` for AWS): turns on the IoT Core bridge. Needs --cert and --key.
    #[arg(long, value_name = "ENDPOINTS_JSON")]
    cloud: Option<PathBuf>,
    /// Onboard by claim before the first start, with the `aws.greengrass.FleetProvisioningByClaim`
    /// plugin's configuration keys (JSON or YAML: provisioningTemplate, claimCertificatePath,
    /// claimCertificatePrivateKeyPath, templateParameters, deviceId, csrPath): the key pair is
    /// made here, the identity kept under `{root}/identity` and used from then on. Needs --cloud;
    /// replaces --thing, --cert and --key.
    #[arg(long, value_name = "FILE", requires = "cloud", conflicts_with_all = ["cert", "key"])]
    provision_by_claim: Option<PathBuf>,
    /// The core device's certificate (PEM).
    #[arg(long, value_name = "PEM", requires = "cloud")]
    cert: Option<PathBuf>,
    /// The core device's private key, as the nucleus's `privateKeyPath`: a PEM file, or with
    /// --pkcs11 a key in the token, `pkcs11:object=LABEL;type=private` (RFC 7512).
    #[arg(long, value_name = "PEM|URI", requires = "cloud")]
    key: Option<PathBuf>,
    /// Keep the core's private key in a PKCS#11 token, with the
    /// `aws.greengrass.crypto.Pkcs11Provider` component's configuration keys (JSON or YAML:
    /// name, library, slot, userPin). With --provision-by-claim the key is generated in the
    /// token; with --key it names the token's key.
    #[arg(long, value_name = "FILE", requires = "cloud")]
    pkcs11: Option<PathBuf>,
    /// How often the core reports its components' status to the cloud (fleet status, the
    /// nucleus's `periodicUpdateIntervalSec`); it also reports on connect, on a component
    /// error and after a deployment. 0 turns reporting off.
    #[arg(long, value_name = "SECONDS", default_value_t = 86_400)]
    fleet_status_interval_secs: u64,
    /// The telemetry agent's aggregation and publish intervals in seconds, past the nucleus
    /// configuration's minimums (as the nucleus's test parameters allow): for load runs
    /// (`device-sim fleet --telemetry-interval-secs`).
    #[arg(long, hide = true, value_name = "AGGREGATE,PUBLISH", value_parser = parse_telemetry_intervals)]
    telemetry_intervals: Option<device_sim::core::telemetry::Intervals>,
    /// Take deployments from the cloud: thing-group deployments (IoT jobs in the
    /// `aws-gg-deployment` namespace) and thing deployments (the deployment shadow), with
    /// components fetched through the Greengrass data plane. The device's IoT policy must allow
    /// what `greengrass-core-deployments.json` allows.
    #[arg(long, requires = "cloud")]
    cloud_deployments: bool,
    /// Rotate the core's certificate on rotation jobs (`{"operation": "ROTATE_CERTIFICATE"}`),
    /// with new keys made in the core's key store (`--pkcs11`, else `{root}/identity`): the
    /// built-in plugin component `com.example.CertificateRotator`, configured with
    /// `--update-config` (`proofDeadlineSeconds`, `attachTimeoutSeconds`).
    #[arg(long, requires = "cloud")]
    certificate_rotation: bool,
    /// Fault injection for the kill test: the rotation hangs right after its N-th record write.
    #[arg(long, hide = true, value_name = "N", requires = "certificate_rotation")]
    rotation_freeze_after_writes: Option<usize>,
    /// The MQTT version of the IoT Core connection, as the nucleus's `mqtt.version`:
    /// `mqtt5` (the default) or `mqtt3` (MQTT 3.1.1, which drops PublishToIoTCore's MQTT 5
    /// properties).
    #[arg(long, value_name = "mqtt5|mqtt3", default_value = "mqtt5")]
    mqtt_version: device_sim::core::options::MqttVersion,
    /// The nucleus version this core claims (`GGC_VERSION`, fleet status, the built-in
    /// `aws.greengrass.Nucleus`); the launcher passes the version it installed the core as.
    #[arg(long, value_name = "VERSION", default_value = GGC_VERSION, value_parser = parse_version)]
    nucleus_version: ComponentVersion,
}

fn parse_telemetry_intervals(text: &str) -> Result<device_sim::core::telemetry::Intervals, String> {
    let secs = |s: &str| s.trim().parse::<u64>().ok().filter(|n| *n > 0).map(Duration::from_secs);
    match text.split_once(',').map(|(a, p)| (secs(a), secs(p))) {
        Some((Some(aggregate), Some(publish))) => Ok(device_sim::core::telemetry::Intervals { aggregate, publish }),
        _ => Err(format!("{text:?}: expected AGGREGATE,PUBLISH in whole seconds above 0")),
    }
}

fn parse_version(text: &str) -> Result<ComponentVersion, String> {
    ComponentVersion::parse(text).map_err(|e| e.to_string())
}

/// Reads `--update-config` (inline JSON or `@FILE`).
fn read_update_config(arg: Option<&str>) -> anyhow::Result<HashMap<String, ConfigurationUpdate>> {
    let Some(doc) = read_update_config_doc(arg)? else { return Ok(HashMap::new()) };
    Ok(parse_update_config(&doc).map_err(|e| ConfigFault(format!("--update-config: {e}")))?)
}

/// Reads `--update-config` as JSON (inline or `@FILE`), checked for the CLI's shape.
fn read_update_config_doc(arg: Option<&str>) -> anyhow::Result<Option<serde_json::Value>> {
    let Some(arg) = arg else { return Ok(None) };
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| ConfigFault(format!("cannot read the configuration update file {path}: {e}")))?,
        None => arg.to_owned(),
    };
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ConfigFault(format!("--update-config is not valid JSON: {e}")))?;
    parse_update_config(&doc).map_err(|e| ConfigFault(format!("--update-config: {e}")))?;
    Ok(Some(doc))
}

/// The core's identity and cloud connection: `--thing` with `--cloud`, `--cert` and `--key`; or,
/// with `--provision-by-claim`, the identity kept from an earlier onboarding, else a new one
/// onboarded by claim now.
async fn identity(args: &CoreArgs) -> anyhow::Result<(String, Option<CloudOptions>)> {
    let Some(path) = &args.cloud else {
        return Ok((args.thing.clone().unwrap_or_default(), None));
    };
    let text = std::fs::read(path)
        .map_err(|e| ConfigFault(format!("cannot read the endpoints file {}: {e}", path.display())))?;
    let endpoints: cloud_api::endpoints::Endpoints = serde_json::from_slice(&text)
        .map_err(|e| ConfigFault(format!("{} is not an endpoints.json: {e}", path.display())))?;
    let keys = match &args.pkcs11 {
        Some(path) => KeyStore::open(&Pkcs11Config::from_file(path)?)?,
        None => KeyStore::files(claim::identity_dir(&args.root)),
    };
    let (thing, cert_file, key_file) = match (&args.provision_by_claim, &args.thing, &args.cert, &args.key) {
        (Some(claim), ..) => {
            let identity = match claim::provisioned(&args.root)? {
                Some(identity) => identity,
                None => claim::onboard(&claim::ClaimConfig::from_file(claim)?, &endpoints, &args.root, &keys).await?,
            };
            (identity.thing_name, identity.cert_file, identity.key_file)
        }
        (None, Some(thing), Some(cert), Some(key)) => (thing.clone(), cert.clone(), key.clone()),
        _ => return Err(ConfigFault("--cloud needs --cert and --key, or --provision-by-claim".into()).into()),
    };
    let key = keys.key(&KeyRef::from_path(&key_file)?)?;
    let fleet_status =
        (args.fleet_status_interval_secs > 0).then(|| std::time::Duration::from_secs(args.fleet_status_interval_secs));
    let cloud = CloudOptions {
        endpoints,
        cert_file,
        key,
        fleet_status,
        telemetry_intervals: args.telemetry_intervals,
        cloud_deployments: args.cloud_deployments,
        mqtt_version: args.mqtt_version,
        certificate_rotation: args.certificate_rotation.then(|| RotationOptions {
            freeze: args.rotation_freeze_after_writes.map(FreezePoint::after_writes),
            ..RotationOptions::new(keys.clone())
        }),
    };
    Ok((thing, Some(cloud)))
}

/// An input fault: exit with `EX_CONFIG`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ConfigFault(String);

fn main() -> ExitCode {
    let cli = match cli_shell::parse_args::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    cli_shell::init_logging("info");
    let result = cli_shell::block_on(async {
        match cli.command {
            Command::Core(args) => run_core(*args).await,
            Command::Launcher(args) => run_launcher(args).await.map(ExitCode::from).map(Some),
            Command::Plant(args) => device_sim::plant::run(args).await.map(|()| None),
            Command::Dataset(args) => device_sim::dataset::run(args).map(|()| None),
            Command::LandingRows(args) => device_sim::dataset::landing::run_rows(args).map(|()| None),
            Command::LandingSample(args) => device_sim::dataset::landing::run_sample(args).map(|()| None),
            Command::Deployment(command) => run_deployment(command).await.map(|()| None),
            Command::Fleet(args) => device_sim::fleet::run(*args).await.map(|()| None),
        }
    });
    match result {
        Ok(Some(code)) => code,
        other => cli_shell::exit_code("device-sim", other.map(|_| ()), is_configuration),
    }
}

/// `device-sim launcher`: the core's arguments are checked here, the rest is the launcher's.
async fn run_launcher(args: LauncherArgs) -> anyhow::Result<u8> {
    for arg in &args.core_args {
        let arg = arg.to_string_lossy();
        if ["--root", "--nucleus-version"].iter().any(|f| arg == *f || arg.starts_with(&format!("{f}="))) {
            return Err(ConfigFault(format!("{arg}: the launcher sets it; give --root before `--`")).into());
        }
    }
    let options = device_sim::launcher::LauncherOptions {
        root: std::path::absolute(&args.root)
            .with_context(|| format!("cannot make {} absolute", args.root.display()))?,
        health_deadline: Duration::from_secs(args.health_deadline_secs),
        core_args: args.core_args,
        initial_version: GGC_VERSION.to_owned(),
    };
    device_sim::launcher::run(options).await
}

fn is_configuration(e: &anyhow::Error) -> bool {
    cli_shell::caused_by::<ConfigFault>(e, |_| true)
        || cli_shell::caused_by(e, CoreError::is_configuration)
        || cli_shell::caused_by(e, claim::ClaimError::is_configuration)
        || cli_shell::caused_by(e, KeyStoreError::is_configuration)
        || cli_shell::caused_by(e, device_sim::plant::ServeError::is_configuration)
        || cli_shell::caused_by(e, device_sim::dataset::DatasetError::is_configuration)
        || cli_shell::caused_by(e, device_sim::dataset::landing::LandingError::is_configuration)
        || cli_shell::caused_by(e, device_sim::fleet::FleetError::is_configuration)
}

/// How long a CLI call waits for the core.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// The CreateLocalDeployment request for `deployment create`'s flags.
fn create_request(args: &CreateArgs) -> anyhow::Result<CreateLocalDeploymentRequest> {
    let absolute = |p: &Option<PathBuf>| -> anyhow::Result<Option<String>> {
        p.as_ref()
            .map(|p| {
                std::path::absolute(p)
                    .map(|a| a.display().to_string())
                    .with_context(|| format!("cannot make {} absolute", p.display()))
            })
            .transpose()
    };
    let mut add = std::collections::BTreeMap::new();
    for m in &args.merges {
        let (name, version) =
            m.split_once('=').ok_or_else(|| ConfigFault(format!("--merge {m:?}: expected NAME=VERSION")))?;
        add.insert(name.trim().to_owned(), version.trim().to_owned());
    }
    let configuration = read_update_config_doc(args.update_config.as_deref())?
        .and_then(|doc| doc.as_object().cloned())
        .map(|m| m.into_iter().collect());
    let policy = match args.failure_handling_policy.as_deref() {
        Some("DO_NOTHING") => Some(FailureHandlingPolicy::DoNothing),
        Some(_) => Some(FailureHandlingPolicy::Rollback),
        None => None,
    };
    Ok(CreateLocalDeploymentRequest {
        root_component_versions_to_add: (!add.is_empty()).then_some(add),
        root_components_to_remove: (!args.removes.is_empty()).then(|| args.removes.clone()),
        component_to_configuration: configuration,
        recipe_directory_path: absolute(&args.recipe_dir)?,
        artifacts_directory_path: absolute(&args.artifact_dir)?,
        failure_handling_policy: policy,
        ..Default::default()
    })
}

async fn connect_cli(root: &std::path::Path) -> anyhow::Result<CliClient> {
    let info = cli::read_ipc_info(root)?;
    Ok(CliClient::connect(&info, CLI_TIMEOUT).await?)
}

fn print_deployment(d: &LocalDeployment) {
    println!("{}: {}", d.deployment_id, serde_json::to_value(d.status).unwrap_or_default().as_str().unwrap_or("?"));
    if let Some(created) = &d.created_on {
        println!("  Created on: {created}");
    }
    if let Some(details) = &d.deployment_status_details {
        let detailed = serde_json::to_value(details.detailed_deployment_status).unwrap_or_default();
        println!("  Detailed Status: {}", detailed.as_str().unwrap_or("?"));
        if let Some(stack) = &details.deployment_error_stack {
            println!("  Deployment Error Stack: {}", stack.join(", "));
        }
        if let Some(cause) = &details.deployment_failure_cause {
            println!("  Failure Cause: {cause}");
        }
    }
}

async fn run_deployment(command: DeploymentCommand) -> anyhow::Result<()> {
    match command {
        DeploymentCommand::Create(args) => {
            let request = create_request(&args)?;
            let mut client = connect_cli(&args.root).await?;
            let response = client.call::<op::CreateLocalDeployment>(&request).await?;
            println!("Local deployment submitted! Deployment Id: {}", response.deployment_id);
        }
        DeploymentCommand::Status(args) => {
            let mut client = connect_cli(&args.root).await?;
            let request = GetLocalDeploymentStatusRequest { deployment_id: args.id };
            let response = client.call::<op::GetLocalDeploymentStatus>(&request).await?;
            print_deployment(&response.deployment);
        }
        DeploymentCommand::List(args) => {
            let mut client = connect_cli(&args.root).await?;
            let response = client.call::<op::ListLocalDeployments>(&ListLocalDeploymentsRequest {}).await?;
            for d in &response.local_deployments {
                print_deployment(d);
            }
        }
    }
    Ok(())
}

/// Runs the core until a stop signal (`None`: exit 0) or a restart request (exit 100).
async fn run_core(args: CoreArgs) -> anyhow::Result<Option<ExitCode>> {
    let update_config = read_update_config(args.update_config.as_deref())?;
    let (thing, cloud) = identity(&args).await?;
    let stop = cli_shell::shutdown_signal()?;

    let core = Core::start(CoreOptions {
        root: args.root.clone(),
        thing,
        recipe_dir: args.recipe_dir.unwrap_or_default(),
        artifact_dir: args.artifact_dir.unwrap_or_default(),
        merges: args.merges,
        region: args.region,
        root_ca_path: args.root_ca,
        platform: DevicePlatform::current(),
        update_config,
        cloud,
        nucleus_version: args.nucleus_version,
    })
    .await
    .with_context(|| format!("cannot start the simulated core in {}", args.root.display()))?;

    // The supervisor logs every state change; here we only wait for the signal or a restart.
    let exit = tokio::select! {
        signal = stop => {
            tracing::info!("{signal} received; stopping components");
            None
        }
        () = core.restart_requested() => {
            tracing::info!("restart requested; stopping components, then exiting with {REQUEST_RESTART}");
            Some(ExitCode::from(REQUEST_RESTART as u8))
        }
    };
    let pending = core.shutdown(SHUTDOWN_TIMEOUT).await;
    if !pending.is_empty() {
        tracing::warn!(components = ?pending, "killed after {SHUTDOWN_TIMEOUT:?}");
    }
    Ok(exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("device-sim").chain(args.iter().copied()))
    }

    const BASE: &[&str] =
        &["core", "--root", "/r", "--thing", "t", "--recipe-dir", "/rd", "--artifact-dir", "/ad", "--merge", "A=1.0.0"];

    #[test]
    fn core_flags_parse_with_defaults_and_repeated_merges() {
        let mut args = BASE.to_vec();
        args.extend(["--merge", "B=2.0.0"]);
        let Command::Core(core) = parse(&args).unwrap().command else { unreachable!() };
        assert_eq!(core.merges, ["A=1.0.0", "B=2.0.0"]);
        assert_eq!(core.region, "us-east-1");
        assert!(core.cloud.is_none() && core.cert.is_none() && core.key.is_none());
    }

    #[test]
    fn provisioning_by_claim_replaces_the_thing_and_the_identity_flags_and_needs_the_cloud() {
        let claim =
            ["core", "--root", "/r", "--cloud-deployments", "--cloud", "/e.json", "--provision-by-claim", "/c.yaml"];
        let Command::Core(core) = parse(&claim).unwrap().command else { unreachable!() };
        assert_eq!((core.thing, core.provision_by_claim.as_deref()), (None, Some(std::path::Path::new("/c.yaml"))));
        assert!(parse(&claim[..5]).is_err(), "without a claim the thing is required");
        let with_thing = [&claim[..], &["--thing", "t"]].concat();
        assert!(parse(&with_thing).is_err(), "the template names the thing");
        let with_cert = [&claim[..], &["--cert", "/c.pem"]].concat();
        assert!(parse(&with_cert).is_err(), "the claim makes the identity");
        let no_cloud = ["core", "--root", "/r", "--cloud-deployments", "--provision-by-claim", "/c.yaml"];
        assert!(parse(&no_cloud).is_err());
    }

    #[tokio::test]
    async fn a_cloud_without_an_identity_is_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let endpoints = dir.path().join("endpoints.json");
        std::fs::write(&endpoints, r#"{"mqtt": "127.0.0.1:1", "http": "http://127.0.0.1:1", "caFile": "/ca.pem", "region": "us-east-1", "accountId": "000000000000"}"#).unwrap();
        let e = endpoints.to_str().unwrap();
        let args = ["core", "--root", "/r", "--thing", "t", "--cloud-deployments", "--cloud", e];
        let Command::Core(core) = parse(&args).unwrap().command else { unreachable!() };
        let err = identity(&core).await.unwrap_err();
        assert!(is_configuration(&err) && err.to_string().contains("--cert and --key"), "{err:#}");
    }

    #[test]
    fn the_nucleus_version_defaults_to_ggc_version_and_must_be_a_version() {
        let Command::Core(core) = parse(BASE).unwrap().command else { unreachable!() };
        assert_eq!(core.nucleus_version.to_string(), GGC_VERSION);
        let mut args = BASE.to_vec();
        args.extend(["--nucleus-version", "2.15.0"]);
        let Command::Core(core) = parse(&args).unwrap().command else { unreachable!() };
        assert_eq!(core.nucleus_version.to_string(), "2.15.0");
        let mut args = BASE.to_vec();
        args.extend(["--nucleus-version", "two"]);
        assert!(parse(&args).unwrap_err().use_stderr());
    }

    #[tokio::test]
    async fn launcher_flags_parse_and_the_core_args_may_not_set_what_the_launcher_sets() {
        let args = ["launcher", "--root", "/r", "--", "--thing", "t", "--merge", "A=1.0.0"];
        let Command::Launcher(launcher) = parse(&args).unwrap().command else { unreachable!() };
        assert_eq!(launcher.health_deadline_secs, 120);
        assert_eq!(launcher.core_args, ["--thing", "t", "--merge", "A=1.0.0"]);
        for forbidden in [&["--root", "/x"][..], &["--nucleus-version=2.0.0"]] {
            let args = ["launcher", "--root", "/r", "--"].iter().chain(forbidden).copied().collect::<Vec<_>>();
            let Command::Launcher(launcher) = parse(&args).unwrap().command else { unreachable!() };
            let err = run_launcher(launcher).await.unwrap_err();
            assert!(is_configuration(&err), "{err:#}");
        }
    }

    #[test]
    fn the_mqtt_version_defaults_to_mqtt5_as_the_nucleus_and_takes_mqtt3() {
        use device_sim::core::options::MqttVersion;
        let Command::Core(core) = parse(BASE).unwrap().command else { unreachable!() };
        assert_eq!(core.mqtt_version, MqttVersion::Mqtt5);
        let mut args = BASE.to_vec();
        args.extend(["--mqtt-version", "mqtt3"]);
        let Command::Core(core) = parse(&args).unwrap().command else { unreachable!() };
        assert_eq!(core.mqtt_version, MqttVersion::Mqtt311);
        let mut args = BASE.to_vec();
        args.extend(["--mqtt-version", "mqtt4"]);
        assert!(parse(&args).unwrap_err().use_stderr());
    }

    #[test]
    fn a_merge_is_required_and_usage_errors_are_not_configuration_errors() {
        let err = parse(&BASE[..BASE.len() - 2]).unwrap_err();
        assert!(err.use_stderr(), "{err}");
    }

    #[test]
    fn the_identity_flags_need_the_cloud() {
        // `--cloud` alone parses: its identity comes from --cert/--key or a claim, checked when
        // it starts (`a_cloud_without_an_identity_is_a_configuration_error`).
        let mut args = BASE.to_vec();
        args.extend(["--cert", "/c.pem", "--key", "/k.pem"]);
        assert!(parse(&args).unwrap_err().use_stderr());
    }

    #[tokio::test]
    async fn a_token_key_without_a_provider_and_an_unreadable_provider_file_are_configuration_errors() {
        let dir = tempfile::tempdir().unwrap();
        let endpoints = dir.path().join("endpoints.json");
        let json = r#"{"mqtt": "127.0.0.1:1", "http": "http://127.0.0.1:1", "caFile": "/nonexistent/ca.pem",
            "region": "us-east-1", "accountId": "000000000000"}"#;
        std::fs::write(&endpoints, json).unwrap();
        let mut args = BASE.to_vec();
        args.extend([
            "--cloud",
            endpoints.to_str().unwrap(),
            "--cert",
            "/c.pem",
            "--key",
            "pkcs11:object=k;type=private",
        ]);
        let Command::Core(core) = parse(&args).unwrap().command else { unreachable!() };
        let err = run_core(*core).await.unwrap_err();
        assert!(format!("{err:#}").contains("no PKCS#11 provider is configured (--pkcs11)"), "{err:#}");
        assert!(is_configuration(&err));
        args.extend(["--pkcs11", "/nonexistent/pkcs11.yaml"]);
        let Command::Core(core) = parse(&args).unwrap().command else { unreachable!() };
        let err = run_core(*core).await.unwrap_err();
        assert!(format!("{err:#}").contains("cannot read /nonexistent/pkcs11.yaml"), "{err:#}");
        assert!(is_configuration(&err));
    }

    #[tokio::test]
    async fn unreadable_endpoints_and_bad_update_config_are_configuration_errors() {
        let mut args = BASE.to_vec();
        args.extend(["--cloud", "/nonexistent/e.json", "--cert", "/c.pem", "--key", "/k.pem"]);
        let Command::Core(core) = parse(&args).unwrap().command else { unreachable!() };
        let err = run_core(*core).await.unwrap_err();
        assert!(format!("{err:#}").contains("cannot read the endpoints file"), "{err:#}");
        assert!(is_configuration(&err));
        let mut args = BASE.to_vec();
        args.extend(["--update-config", "{not json"]);
        let Command::Core(core) = parse(&args).unwrap().command else { unreachable!() };
        let err = run_core(*core).await.unwrap_err();
        assert!(format!("{err:#}").contains("--update-config is not valid JSON"), "{err:#}");
        assert!(is_configuration(&err));
    }

    #[test]
    fn deployment_create_flags_become_the_cli_request() {
        let args = [
            "deployment",
            "create",
            "--root",
            "/r",
            "--recipe-dir",
            "/rd",
            "--artifact-dir",
            "/ad",
            "--merge",
            "A=1.1.0",
            "--remove",
            "B",
            "--update-config",
            r#"{"A": {"MERGE": {"x": 1}}}"#,
        ];
        let Command::Deployment(DeploymentCommand::Create(create)) = parse(&args).unwrap().command else {
            unreachable!()
        };
        let request = create_request(&create).unwrap();
        assert_eq!(request.root_component_versions_to_add.unwrap()["A"], "1.1.0");
        assert_eq!(request.root_components_to_remove.unwrap(), ["B"]);
        assert_eq!(request.recipe_directory_path.as_deref(), Some("/rd"));
        assert_eq!(request.artifacts_directory_path.as_deref(), Some("/ad"));
        assert_eq!(request.component_to_configuration.unwrap()["A"]["MERGE"]["x"], 1);
        assert_eq!(request.failure_handling_policy, None);
        let Command::Deployment(DeploymentCommand::Status(status)) =
            parse(&["deployment", "status", "--root", "/r", "some-id"]).unwrap().command
        else {
            unreachable!()
        };
        assert_eq!(status.id, "some-id");
        let bad = parse(&["deployment", "create", "--root", "/r", "--update-config", "[1]"]).unwrap();
        let Command::Deployment(DeploymentCommand::Create(create)) = bad.command else { unreachable!() };
        assert!(is_configuration(&create_request(&create).unwrap_err()));
    }

    #[tokio::test]
    async fn deployment_commands_without_a_running_core_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = connect_cli(dir.path()).await.unwrap_err();
        assert!(format!("{err:#}").contains("is the core running"), "{err:#}");
    }

    #[test]
    fn telemetry_intervals_take_two_whole_seconds_above_zero() {
        let mut args = BASE.to_vec();
        args.extend(["--telemetry-intervals", "10,60"]);
        let Command::Core(core) = parse(&args).unwrap().command else { unreachable!() };
        let intervals = core.telemetry_intervals.unwrap();
        assert_eq!((intervals.aggregate.as_secs(), intervals.publish.as_secs()), (10, 60));
        for bad in ["0,60", "10", "ten,60", "10,"] {
            let mut args = BASE.to_vec();
            args.extend(["--telemetry-intervals", bad]);
            assert!(parse(&args).unwrap_err().to_string().contains("AGGREGATE,PUBLISH"), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_fleet_without_sites_or_without_its_endpoints_file_is_a_configuration_error() {
        let cases: [(&[&str], &str); 3] = [
            (&["--sites", "0"], "--sites 0: a fleet has 1 to"),
            (&["--sites", "2", "--group", "no spaces"], "--group \"no spaces\""),
            (&["--sites", "2"], "cannot read the endpoints file /nonexistent/e.json"),
        ];
        for (flags, wanted) in cases {
            let args = [&["fleet", "--cloud", "/nonexistent/e.json"][..], flags].concat();
            let Command::Fleet(fleet) = parse(&args).unwrap().command else { unreachable!() };
            let err = device_sim::fleet::run(*fleet).await.unwrap_err();
            assert!(is_configuration(&err) && format!("{err:#}").contains(wanted), "{flags:?}: {err:#}");
        }
        assert!(parse(&["fleet", "--sites", "2"]).unwrap_err().use_stderr(), "the endpoints file is required");
        assert!(parse(&["fleet", "--cloud", "e.json", "--components", "some"]).unwrap_err().use_stderr());
    }

    #[test]
    fn core_errors_keep_their_kind_through_context() {
        let err = anyhow::Error::new(CoreError::NothingToRun).context("cannot start");
        assert!(is_configuration(&err));
        let io = std::io::Error::other("boom");
        let err = anyhow::Error::new(CoreError::Bind { path: "/s".into(), source: io }).context("cannot start");
        assert!(!is_configuration(&err));
        assert!(format!("{err:#}").contains("boom"), "the cause chain is printed");
    }
}
