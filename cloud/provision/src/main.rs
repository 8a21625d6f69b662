//! `provision`: provisions (or removes) a pump core device in AWS IoT Core, builds and publishes
//! Greengrass components and deploys them to a thing group, real AWS or local.
//!
//! Exit codes: 0 on success; 64 (`EX_USAGE`) for bad command-line syntax; 78 (`EX_CONFIG`) when
//! the configuration is at fault (names, policy file, root CA, output directory, credentials,
//! region); 1 when AWS or the network failed (the cause chain is printed, with the AWS error code
//! and message), or when a deployment failed on a core or did not finish in time; 2 when `audit`
//! found something at or above its `--fail-on` severity.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
mod audit_cmd;
mod auditors_cmd;
mod component_cmd;
mod deploy_cmd;
mod incidents_cmd;
mod model_cmd;
mod monitoring_cmd;

use provision::client::Target;
use provision::{
    ClientOptions, CoreDeviceSpec, DEFAULT_DEPLOYMENTS_POLICY_NAME, DEFAULT_MQTT_PORT, DEFAULT_POLICY_NAME,
    PolicySource, ProvisionError,
};

#[derive(Debug, Parser)]
#[command(
    name = "provision",
    version,
    about = "Provision a pump core device in AWS IoT Core (or the local cloud) through aws-sdk-iot",
    after_help = "Credentials and region come from the AWS default chain (AWS_* environment variables, \
                  AWS_PROFILE and the shared config files). The endpoint comes from --endpoint-url, else \
                  AWS_ENDPOINT_URL_IOT, AWS_ENDPOINT_URL or the profile's endpoint_url, else AWS's own."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or update the core device: thing, certificate from a local key, IoT policy, endpoints.json.
    Core(CoreArgs),
    /// Remove the core device: certificates (INACTIVE, then deleted), thing, and the policy if unused.
    Deprovision(DeprovisionArgs),
    /// Replace a failed core device: revoke and detach its certificates, keep the thing (groups,
    /// shadows, jobs) for the replacement to onboard under the same name.
    Replace(ReplaceArgs),
    /// Build components into the GDK layout, or publish a build to S3 and Greengrass.
    #[command(subcommand)]
    Component(ComponentCommand),
    /// Deploy component versions to a thing group and follow every core to the end.
    Deploy(DeployArgs),
    /// Ship a trained model: check it as the analyzer does, make it a new com.example.pump.Model
    /// version, publish it and deploy it to a thing group with rollback.
    #[command(subcommand)]
    Model(model_cmd::ModelCommand),
    /// Set up the core's token exchange role: an IAM role allowing only s3:PutObject under the
    /// thing's own prefix of the anomaly-windows bucket, its role alias, and the IoT policy that
    /// lets the thing's certificates assume it.
    TokenExchange(TokenExchangeArgs),
    /// Audit the account: overly permissive policies, expiring, shared or retired-but-attached
    /// certificates, role aliases whose role allows more than the solution needs.
    Audit(AuditArgs),
    /// Rotate a core's certificate: create the rotation job and do the cloud's part as the core reports.
    Rotate(RotateArgs),
    /// Deploy the cloud side: the incidents and hourly-aggregates tables, the raw-telemetry
    /// bucket, the anomaly handler and telemetry aggregator functions, the topic rules that invoke
    /// them, and one least-privilege role per function and rule.
    App(AppArgs),
    /// Monitor the fleet from the cloud: alarms on disconnected or unhealthy cores, telemetry
    /// gaps, rule errors, authorization failures and expiring certificates.
    #[command(subcommand)]
    Monitoring(monitoring_cmd::MonitoringCommand),
    /// Set up the auditors' sign-in for the dashboard: a Cognito user pool, an app client allowing
    /// password sign-in, and an auditor user; prints the pool and client ids as JSON.
    Auditors(auditors_cmd::AuditorsArgs),
    /// Record what operators found about raised anomalies (the retraining pipeline's labels).
    #[command(subcommand)]
    Incidents(incidents_cmd::IncidentsCommand),
}

#[derive(Debug, Args)]
struct AppArgs {
    /// Where the function binaries (anomaly-handler, telemetry-aggregator) were built
    /// (`cargo build --release -p pump-functions`; for AWS, built for Amazon Linux 2023).
    #[arg(long, value_name = "DIR", default_value = "target/release")]
    functions_dir: PathBuf,
    /// The landing bucket of the raw telemetry batches (created when absent).
    #[arg(long, value_name = "BUCKET")]
    bucket: String,
    /// Prefix of every resource's name.
    #[arg(long, value_name = "PREFIX", default_value = "pump")]
    prefix: String,
    /// Occurrences of one fault that put the pump into maintenance...
    #[arg(long, value_name = "N", default_value_t = 3)]
    maintenance_repeats: u32,
    /// ...within this many minutes.
    #[arg(long, value_name = "MINUTES", default_value_t = 10)]
    maintenance_window_minutes: u32,
    /// Each function's timeout, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    function_timeout: i32,
    /// The IoT data endpoint the anomaly handler writes shadows through (default: with an
    /// --endpoint-url, that endpoint's own resolution; on AWS, DescribeEndpoint iot:Data-ATS).
    #[arg(long, value_name = "URL")]
    iot_data_endpoint: Option<String>,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ReportFormat {
    Json,
    Markdown,
}

#[derive(Debug, Args)]
struct AuditArgs {
    /// Report format.
    #[arg(long, value_name = "FORMAT", default_value = "json")]
    format: ReportFormat,
    /// Exit with 2 when a finding is at or above this severity (default: report only).
    #[arg(long, value_name = "SEVERITY")]
    fail_on: Option<provision::audit::Severity>,
    /// Write the report to this file (atomically) instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Report active certificates that expire within this many days.
    #[arg(long, value_name = "DAYS", default_value_t = provision::audit::DEFAULT_EXPIRY_DAYS)]
    expiry_days: u32,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["thing", "expiring_within", "thing_group"])))]
struct RotateArgs {
    /// The core's thing (it must have exactly one certificate, unless a rotation job of it is
    /// unfinished: that one is followed instead).
    #[arg(long, value_name = "NAME")]
    thing: Option<String>,
    /// Rotate every thing whose active certificate expires within this many days (Device
    /// Defender's expiring-certificate check): one job per thing, unfinished ones resumed.
    #[arg(long, value_name = "DAYS", conflicts_with = "job_id")]
    expiring_within: Option<u32>,
    /// Rotate every thing of this thing group with one job targeting the group (every member
    /// must have exactly one certificate); the cloud's part runs for each core as it reports.
    #[arg(long, value_name = "NAME")]
    thing_group: Option<String>,
    /// With --expiring-within or --thing-group: how many rotations (or attach and retire steps)
    /// run at once.
    #[arg(long, value_name = "N", default_value_t = 10)]
    concurrency: usize,
    /// The job's id (default: rotate-{thing}-{unix seconds}; with --thing-group,
    /// rotate-{group}-{unix seconds}; with --expiring-within, rotate-{unix seconds}-{thing}).
    #[arg(long, value_name = "ID")]
    job_id: Option<String>,
    /// Give up following after this many seconds (the job stays as it is).
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    timeout: u64,
    /// Ask DescribeJobExecution this often, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    poll_ms: u64,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Subcommand)]
enum ComponentCommand {
    /// Write greengrass-build/recipes and greengrass-build/artifacts with each artifact's digest.
    Build(BuildArgs),
    /// Upload the artifacts, rewrite the recipes' URIs, CreateComponentVersion; wait until DEPLOYABLE.
    Publish(PublishArgs),
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// Component directories, each with a recipe.yaml (default: components/{sensor,analyzer,controller,model}).
    #[arg(value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// Where the component binaries were built (the build itself is yours: `cargo build --release`).
    #[arg(long, value_name = "DIR", default_value = "target/release")]
    bin_dir: PathBuf,
    /// Directory that receives greengrass-build/.
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct PublishArgs {
    /// The S3 bucket for the artifacts (created when absent).
    #[arg(long, value_name = "BUCKET")]
    bucket: String,
    /// The build output to publish.
    #[arg(long, value_name = "DIR", default_value = provision::component::BUILD_DIR)]
    build_dir: PathBuf,
    /// How long to wait for each new version to become DEPLOYABLE, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    wait_secs: u64,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
enum FailureHandling {
    Rollback,
    DoNothing,
}

#[derive(Debug, Args)]
struct DeployArgs {
    /// The target thing group.
    #[arg(long, value_name = "GROUP")]
    thing_group: String,
    /// Create the thing group when it does not exist.
    #[arg(long)]
    create_group: bool,
    /// A component version to deploy, NAME=VERSION (repeat).
    #[arg(long = "component", value_name = "NAME=VERSION", required = true)]
    components: Vec<String>,
    /// A configuration merge for a deployed component, NAME=JSON object (repeat).
    #[arg(long = "merge", value_name = "NAME=JSON")]
    merges: Vec<String>,
    /// The deployment's name (default: the group's).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Rollout: at most N cores start per minute.
    #[arg(long, value_name = "N")]
    rollout_max_per_minute: Option<i32>,
    /// Abort (cancel the job) once this percentage of cores failed.
    #[arg(long, value_name = "P")]
    abort_failure_percent: Option<f64>,
    /// Seconds components may take to agree to the update.
    #[arg(long, value_name = "S")]
    update_timeout_secs: Option<i32>,
    /// What a core does when the deployment fails (the service's default: ROLLBACK).
    #[arg(long, value_name = "POLICY")]
    failure_handling: Option<FailureHandling>,
    /// Tell components before updating them, so they may defer (the service's default).
    #[arg(long, conflicts_with = "skip_notify")]
    notify: bool,
    /// Update components without asking them.
    #[arg(long)]
    skip_notify: bool,
    #[command(flatten)]
    follow: FollowArgs,
    #[command(flatten)]
    target: Target,
}

/// How a command follows a deployment on the cores.
#[derive(Debug, Args)]
struct FollowArgs {
    /// Give up following after this many seconds (the deployment goes on).
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    timeout: u64,
    /// How often to ask the service for each core's status, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    poll_ms: u64,
}

#[derive(Debug, Args)]
struct CoreArgs {
    /// Thing name, also the core's MQTT client id.
    #[arg(long, value_name = "NAME")]
    thing: String,
    /// Output directory: device.pem.crt, private.pem.key, endpoints.json, provisioned.json.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// IoT policy file (default: the shipped policies/pump-core-device.json).
    #[arg(long, value_name = "FILE")]
    policy_file: Option<PathBuf>,
    /// IoT policy name.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_POLICY_NAME)]
    policy_name: String,
    /// Accept a policy the overly-permissive audit flags (the findings are printed).
    #[arg(long)]
    allow_permissive_policy: bool,
    /// Root CA PEM the device trusts for MQTT: AmazonRootCA1.pem, or the local cloud's `caFile`.
    #[arg(long, value_name = "PEM")]
    root_ca: PathBuf,
    /// MQTT port for endpoints.json (DescribeEndpoint gives the host only; the local cloud's port
    /// is the `mqtt` entry of its own endpoints.json).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_MQTT_PORT)]
    mqtt_port: u16,
    /// Data-plane base URL for endpoints.json (default: --endpoint-url if given, else https://HOST).
    #[arg(long, value_name = "URL")]
    data_url: Option<String>,
    /// Issue a new certificate even if the output directory's one is still valid; the old one is retired.
    #[arg(long)]
    rotate_certificate: bool,
    /// Also create and attach the Greengrass deployments policy (the shipped
    /// policies/greengrass-core-deployments.json) under this name, so the core takes
    /// deployments from the cloud.
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = DEFAULT_DEPLOYMENTS_POLICY_NAME)]
    deployments_policy: Option<String>,
    /// The Greengrass data plane for endpoints.json (default with --deployments-policy: AWS's
    /// https://greengrass-ats.iot.REGION.amazonaws.com:8443; the local cloud's is the
    /// `greengrassDataPlane` entry of its own endpoints.json).
    #[arg(long, value_name = "URL")]
    greengrass_data_plane_url: Option<String>,
    /// The AWS IoT credentials provider for endpoints.json (default: https:// and DescribeEndpoint
    /// iot:CredentialProvider; the local cloud's is the `credentialsProvider` entry of its own
    /// endpoints.json).
    #[arg(long, value_name = "URL")]
    credentials_provider_url: Option<String>,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
struct TokenExchangeArgs {
    /// The core device's thing (provisioned already).
    #[arg(long, value_name = "NAME")]
    thing: String,
    /// The IAM role.
    #[arg(long, value_name = "NAME", default_value = "PumpCoreTokenExchangeRole")]
    role: String,
    /// The role alias (the nucleus's `iotRoleAlias`).
    #[arg(long, value_name = "NAME", default_value = "PumpCoreTokenExchangeRoleAlias")]
    role_alias: String,
    /// The IoT policy allowing the alias (default: the alias's name followed by `Policy`).
    #[arg(long, value_name = "NAME")]
    policy_name: Option<String>,
    /// The bucket analyzers upload anomaly windows to (created when absent).
    #[arg(long, value_name = "BUCKET")]
    bucket: String,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
struct ReplaceArgs {
    /// The failed device's thing name.
    #[arg(long, value_name = "NAME")]
    thing: String,
    /// Also revise the latest Greengrass deployment of each of the thing's groups, so the
    /// replacement gets them (their earlier jobs already ended for this thing).
    #[arg(long)]
    redeploy: bool,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
struct DeprovisionArgs {
    /// Thing name.
    #[arg(long, value_name = "NAME")]
    thing: String,
    /// The policy to delete once nothing uses it (others are only detached).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_POLICY_NAME)]
    policy_name: String,
    #[command(flatten)]
    target: Target,
}

fn main() -> ExitCode {
    let cli = match cli_shell::parse_args::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    cli_shell::init_logging("warn");
    let result = cli_shell::block_on(async {
        match cli.command {
            Command::Core(args) => run_core(args).await,
            Command::Deprovision(args) => run_deprovision(args).await,
            Command::Replace(args) => run_replace(args).await,
            Command::Component(ComponentCommand::Build(args)) => component_cmd::build(args),
            Command::Component(ComponentCommand::Publish(args)) => component_cmd::publish(args).await,
            Command::Deploy(args) => deploy_cmd::run(args).await,
            Command::Model(model_cmd::ModelCommand::Release(args)) => model_cmd::release(args).await,
            Command::Audit(args) => audit_cmd::run(args).await,
            Command::TokenExchange(args) => run_token_exchange(args).await,
            Command::Rotate(args) => run_rotate(args).await,
            Command::App(args) => run_app(args).await,
            Command::Monitoring(command) => monitoring_cmd::run(command).await,
            Command::Auditors(args) => auditors_cmd::run(args).await,
            Command::Incidents(command) => incidents_cmd::run(command).await,
        }
    });
    if let Err(e) = &result
        && let Some(failed) = e.downcast_ref::<audit_cmd::FindingsAtOrAbove>()
    {
        eprintln!("provision: {failed}");
        return ExitCode::from(audit_cmd::FINDINGS_EXIT_CODE);
    }
    if let Err(e) = &result
        && let Some(p) = e.chain().find_map(|c| c.downcast_ref::<ProvisionError>())
    {
        eprintln!("provision: next step: {:?}", p.next_step());
    }
    cli_shell::exit_code("provision", result, |e| cli_shell::caused_by(e, ProvisionError::is_configuration))
}

fn client_options(target: &Target) -> ClientOptions {
    target.options()
}

async fn run_app(args: AppArgs) -> anyhow::Result<()> {
    let options = client_options(&args.target);
    let clients = provision::app::AppClients {
        iot: provision::iot_client(&options).await,
        iam: provision::iam_client(&options).await,
        lambda: provision::lambda_client(&options).await,
        dynamodb: provision::dynamodb_client(&options).await,
        s3: provision::s3_client(&options).await,
    };
    let iot_data_endpoint = match (args.iot_data_endpoint, &options.endpoint_url) {
        (Some(url), _) => Some(url),
        (None, Some(_)) => None,
        (None, None) => {
            let endpoint = clients
                .iot
                .describe_endpoint()
                .endpoint_type("iot:Data-ATS")
                .send()
                .await
                .context("DescribeEndpoint")?;
            endpoint.endpoint_address.map(|a| format!("https://{a}"))
        }
    };
    let spec = provision::app::AppSpec {
        prefix: args.prefix,
        functions_dir: args.functions_dir,
        bucket: args.bucket,
        maintenance_repeats: args.maintenance_repeats,
        maintenance_window_minutes: args.maintenance_window_minutes,
        function_timeout_secs: args.function_timeout,
        iot_data_endpoint,
    };
    let deployed = provision::app::deploy_app(&clients, &spec).await.context("deploying the cloud side")?;
    if deployed.changes.is_empty() {
        println!("the cloud side is already deployed; nothing changed");
    }
    for change in &deployed.changes {
        println!("- {change}");
    }
    let names = &deployed.names;
    println!("tables       {} {}", names.incidents_table, names.aggregates_table);
    println!("functions    {} {}", deployed.function_arns[0], deployed.function_arns[1]);
    println!("rules        {} {}", deployed.rule_arns[0], deployed.rule_arns[1]);
    println!(
        "rule errors  {} {}",
        provision::app::error_topic(&names.anomaly_rule),
        provision::app::error_topic(&names.telemetry_rule)
    );
    Ok(())
}

async fn run_rotate(args: RotateArgs) -> anyhow::Result<()> {
    let options = client_options(&args.target);
    let iot = provision::iot_client(&options).await;
    // The data plane is the account's own endpoint on AWS; an endpoint override serves both.
    let mut data_options = options.clone();
    if data_options.endpoint_url.is_none() {
        let endpoint =
            iot.describe_endpoint().endpoint_type("iot:Data-ATS").send().await.context("DescribeEndpoint")?;
        data_options.endpoint_url = endpoint.endpoint_address.map(|a| format!("https://{a}"));
    }
    let data = provision::iot_data_client(&data_options).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let poll = std::time::Duration::from_millis(args.poll_ms);
    let timeout = std::time::Duration::from_secs(args.timeout);
    if let Some(group) = &args.thing_group {
        let job_id = args.job_id.clone().unwrap_or_else(|| format!("rotate-{group}-{now}"));
        let rotation = provision::rotate::rotate_group(&iot, &data, group, &job_id, args.concurrency, poll, timeout)
            .await
            .with_context(|| format!("rotating the certificates of thing group {group}"))?;
        return report_group(group, &rotation);
    }
    let Some(thing) = &args.thing else {
        let days = args.expiring_within.unwrap_or_default();
        let prefix = format!("rotate-{now}");
        let results = provision::rotate::rotate_expiring(&iot, &data, days, &prefix, args.concurrency, poll, timeout)
            .await
            .context("rotating the certificates that expire soon")?;
        return report_sweep(days, &results, args.timeout);
    };
    let job_id = args.job_id.clone().unwrap_or_else(|| format!("rotate-{thing}-{now}"));
    let outcome = provision::rotate::rotate(&iot, &data, thing, &job_id, poll, timeout)
        .await
        .with_context(|| format!("rotating the certificate of {thing}"))?;
    let resumed = if outcome.resumed { " (resumed)" } else { "" };
    println!("job {}{resumed}: {} (certificate {})", outcome.job_id, outcome.status, outcome.certificate_id);
    rotation_result(&outcome, args.timeout)
}

/// `Ok` for a rotation that SUCCEEDED, else why not.
fn rotation_result(outcome: &provision::rotate::RotationOutcome, timeout: u64) -> anyhow::Result<()> {
    match outcome.problem() {
        None => Ok(()),
        Some(problem) if outcome.timed_out => anyhow::bail!("{problem} ({timeout}s)"),
        Some(problem) => anyhow::bail!("{problem}"),
    }
}

/// One line per member of a group rotation; `Err` if any was not rotated.
fn report_group(group: &str, rotation: &provision::rotate::GroupRotation) -> anyhow::Result<()> {
    let mut failed = 0;
    for member in &rotation.members {
        let took = member.took.as_secs_f64();
        match member.outcome.as_ref().map(|o| (o, o.problem())) {
            Ok((outcome, None)) => {
                println!("{}: SUCCEEDED in {took:.1} s (certificate {})", member.thing, outcome.certificate_id)
            }
            Ok((_, Some(problem))) => {
                failed += 1;
                println!("{}: {problem}", member.thing);
            }
            Err(e) => {
                failed += 1;
                println!("{}: {e}", member.thing);
            }
        }
    }
    println!(
        "job {}: {} of {} cores of {group} rotated",
        rotation.job_id,
        rotation.members.len() - failed,
        rotation.members.len()
    );
    match failed {
        0 => Ok(()),
        n => anyhow::bail!("{n} of the {} cores of {group} were not rotated", rotation.members.len()),
    }
}

/// One line per thing the sweep found; `Err` if any was not rotated.
fn report_sweep(days: u32, results: &[provision::rotate::SweepResult], timeout: u64) -> anyhow::Result<()> {
    use provision::rotate::Expiry;
    if results.is_empty() {
        println!("no active certificate expires within {days} days");
        return Ok(());
    }
    let mut failed = 0;
    for result in results {
        match (&result.expiry, &result.rotation) {
            (Expiry::Replace { thing, certificate_id, reason }, _) => {
                failed += 1;
                println!("{thing}: certificate {certificate_id}: {reason}; replace the device (provision replace)");
            }
            (Expiry::Rotate { thing, .. }, Some(Ok(outcome))) => {
                let resumed = if outcome.resumed { " (resumed)" } else { "" };
                match rotation_result(outcome, timeout) {
                    Ok(()) => println!(
                        "{thing}: job {}{resumed}: SUCCEEDED (certificate {})",
                        outcome.job_id, outcome.certificate_id
                    ),
                    Err(e) => {
                        failed += 1;
                        println!("{thing}: job {}{resumed}: {e:#}", outcome.job_id);
                    }
                }
            }
            (Expiry::Rotate { thing, .. }, Some(Err(e))) => {
                failed += 1;
                println!("{thing}: {e}");
            }
            (Expiry::Rotate { thing, .. }, None) => {
                failed += 1;
                println!("{thing}: not rotated");
            }
        }
    }
    match failed {
        0 => Ok(()),
        n => anyhow::bail!(
            "{n} of {} things whose certificate expires within {days} days were not rotated",
            results.len()
        ),
    }
}

async fn run_core(args: CoreArgs) -> anyhow::Result<()> {
    let policy = match &args.policy_file {
        Some(path) => PolicySource::read(path)?,
        None => PolicySource::shipped(),
    };
    let spec = CoreDeviceSpec {
        thing_name: args.thing.clone(),
        out_dir: args.out.clone(),
        policy_name: args.policy_name.clone(),
        policy,
        allow_permissive_policy: args.allow_permissive_policy,
        root_ca: args.root_ca.clone(),
        mqtt_port: args.mqtt_port,
        data_plane_url: args.data_url.clone().or_else(|| args.target.endpoint_url.clone()),
        rotate_certificate: args.rotate_certificate,
        deployments_policy: args.deployments_policy.clone(),
        greengrass_data_plane_url: args.greengrass_data_plane_url.clone(),
        credentials_provider_url: args.credentials_provider_url.clone(),
    };
    let client = provision::iot_client(&client_options(&args.target)).await;
    let device = provision::provision_core_device(&client, &spec)
        .await
        .with_context(|| format!("provisioning core device {}", args.thing))?;
    for finding in &device.policy_findings {
        println!("warning: policy allowed although overly permissive: {finding}");
    }
    if device.changes.is_empty() {
        println!("core device {} is already provisioned; nothing changed", device.record.thing_name);
    } else {
        for change in &device.changes {
            println!("- {change}");
        }
    }
    println!("thing        {}", device.record.thing_arn);
    println!("certificate  {}", device.record.certificate_id);
    println!("policy       {} (version {})", device.record.policy_name, device.record.policy_version_id);
    println!("mqtt         {}", device.endpoints.mqtt);
    println!("files        {}", device.files.dir.display());
    Ok(())
}

async fn run_token_exchange(args: TokenExchangeArgs) -> anyhow::Result<()> {
    let options = client_options(&args.target);
    let spec = provision::token_exchange::TokenExchangeSpec {
        thing_name: args.thing.clone(),
        role_name: args.role,
        policy_name: args.policy_name.unwrap_or_else(|| format!("{}Policy", args.role_alias)),
        role_alias: args.role_alias,
        bucket: args.bucket,
    };
    let (iot, iam, s3) = (
        provision::iot_client(&options).await,
        provision::iam_client(&options).await,
        provision::s3_client(&options).await,
    );
    let setup = provision::token_exchange::provision_token_exchange(&iot, &iam, &s3, &spec)
        .await
        .with_context(|| format!("setting up the token exchange role of {}", args.thing))?;
    if setup.changes.is_empty() {
        println!("the token exchange role of {} is already set up; nothing changed", args.thing);
    }
    for change in &setup.changes {
        println!("- {change}");
    }
    println!("role         {}", setup.role_arn);
    println!("role alias   {}", setup.role_alias_arn);
    println!(
        "core         --update-config '{{\"aws.greengrass.Nucleus\": {{\"MERGE\": {{\"iotRoleAlias\": \"{}\"}}}}}}'",
        spec.role_alias
    );
    Ok(())
}

async fn run_replace(args: ReplaceArgs) -> anyhow::Result<()> {
    let client = provision::iot_client(&client_options(&args.target)).await;
    let changes = provision::replace_device(&client, &args.thing)
        .await
        .with_context(|| format!("replacing core device {}", args.thing))?;
    if changes.is_empty() {
        println!("thing {} has no certificate: nothing to revoke", args.thing);
    }
    for change in &changes {
        println!("- {change}");
    }
    if args.redeploy {
        let gg = provision::greengrass_client(&client_options(&args.target)).await;
        let revised = provision::deploy::revise_group_deployments(&client, &gg, &args.thing)
            .await
            .with_context(|| format!("revising the group deployments of {}", args.thing))?;
        for d in &revised {
            println!("- revised the deployment of {}: {}", d.target_arn, d.deployment_id);
        }
    }
    println!("thing {} kept (groups, shadows, jobs): onboard the replacement under this name", args.thing);
    Ok(())
}

async fn run_deprovision(args: DeprovisionArgs) -> anyhow::Result<()> {
    let client = provision::iot_client(&client_options(&args.target)).await;
    let done = provision::deprovision(&client, &args.thing, &args.policy_name)
        .await
        .with_context(|| format!("deprovisioning core device {}", args.thing))?;
    if !done.thing_existed {
        println!("thing {} does not exist", args.thing);
    }
    for change in &done.changes {
        println!("- {change}");
    }
    Ok(())
}
