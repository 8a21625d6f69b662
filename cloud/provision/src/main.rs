//! `provision`: provisions (or removes) a pump core device in AWS IoT Core, real or local.
//!
//! Exit codes: 0 on success; 64 (`EX_USAGE`) for bad command-line syntax; 78 (`EX_CONFIG`) when
//! the configuration is at fault (names, policy file, root CA, output directory, credentials,
//! region); 1 when AWS or the network failed (the cause chain is printed, with the AWS error code
//! and message).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use provision::{ClientOptions, CoreDeviceSpec, DEFAULT_MQTT_PORT, DEFAULT_POLICY_NAME, PolicySource, ProvisionError};

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
}

#[derive(Debug, Args)]
struct Target {
    /// Endpoint of the IoT control plane (e.g. the local cloud's `http`), as the AWS CLI's --endpoint-url.
    #[arg(long, value_name = "URL")]
    endpoint_url: Option<String>,
    /// Region (overrides AWS_REGION and the profile).
    #[arg(long, value_name = "REGION")]
    region: Option<String>,
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
        }
    });
    if let Err(e) = &result
        && let Some(p) = e.chain().find_map(|c| c.downcast_ref::<ProvisionError>())
    {
        eprintln!("provision: next step: {:?}", p.next_step());
    }
    cli_shell::exit_code("provision", result, |e| cli_shell::caused_by(e, ProvisionError::is_configuration))
}

fn client_options(target: &Target) -> ClientOptions {
    ClientOptions { endpoint_url: target.endpoint_url.clone(), region: target.region.clone(), credentials: None }
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
