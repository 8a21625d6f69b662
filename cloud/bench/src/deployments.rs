//! `--deployments`: Greengrass v2 thing-group deployments from the local cloud to simulated
//! cores, from CreateDeployment to every core's SUCCEEDED, with the cores' memory and their
//! artifact download rate.
//!
//! Set-up: `local-cloud serve` in its own process; `cores` core things plus one more for the
//! single-core figures, each with its own certificate and one IoT policy (the shipped
//! `greengrass-core-deployments.json`, placeholders filled, and `iot:Connect` for the thing's
//! own client id), in two thing groups (the fleet, the single core); components published with
//! `aws-sdk-s3` and `aws-sdk-greengrassv2` through `provision` (the operator's code path): one
//! whose artifact is `--artifact-mib` MiB, a tiny one and a `--download-mib` one, each with a
//! `Run` that sleeps. Then one `device-sim core --cloud-deployments` process per core; a core
//! counts as connected once the cloud has its first fleet status (`NUCLEUS_LAUNCH`), i.e. once
//! GetCoreDevice answers for it.
//!
//! Measured, each from just before the CreateDeployment request: every core's job execution
//! reaching a terminal status, as ListJobExecutionsForJob reports it (polled every
//! [`POLL`]; a core's time is the execution's own `lastUpdatedAt`, so the polling interval
//! does not add to it); then the cloud's view of every core (ListEffectiveDeployments,
//! ListInstalledComponents). The single core takes the same component first (the single-core
//! figure), then the tiny one and the large one: the download rate is the large artifact's extra
//! bytes over the extra time its deployment took. Each core's `VmRSS` is read before the
//! deployment and every [`RSS_EVERY`] during it.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use aws_credential_types::Credentials;
use aws_sdk_greengrassv2::types::{
    ComponentDeploymentSpecification, DeploymentIoTJobConfiguration, EffectiveDeploymentExecutionStatus,
    InstalledComponentLifecycleState, IoTJobExecutionsRolloutConfig,
};
use aws_sdk_iot::types::JobExecutionStatus;
use bench_common::format::mib;
use bench_common::machine::{hwm_kib, rss_kib};
use bench_common::stats::percentile;
use cloud_api::endpoints::Endpoints;
use provision::ClientOptions;
use provision::component::{BuiltArtifact, BuiltComponent, PublishOptions, digest_file, publish_component};
use provision::policy::{AccountScope, PolicySource};

use crate::child::ChildGuard;
use crate::local::{group_of_things, spawn};
use crate::pki::Identity;

/// The fleet's thing group.
const FLEET_GROUP: &str = "bench-deployments-fleet";
/// The single core's thing group.
const SINGLE_GROUP: &str = "bench-deployments-single";
/// The single core's thing name.
const SINGLE_CORE: &str = "bench-core-single";
/// The cores' IoT policy.
const POLICY: &str = "BenchGreengrassCorePolicy";
/// Where the artifacts go.
const BUCKET: &str = "bench-deployments-artifacts";
/// The component every measured deployment carries (`--artifact-mib`).
const PAYLOAD: &str = "com.example.bench.Payload";
/// The download-rate pair: a tiny artifact, and a large one (`--download-mib`).
const TINY: &str = "com.example.bench.Tiny";
const LARGE: &str = "com.example.bench.Large";
/// The measured component's version; the download pair's round `i` is `1.0.{i}`.
const VERSION: &str = "1.0.0";
/// Tiny/large deployment pairs on the single core; the download rate is their median.
const DOWNLOAD_ROUNDS: u32 = 3;
/// The tiny artifact's size.
const TINY_BYTES: u64 = 1024;
/// How often the cloud's job executions are read.
pub const POLL: Duration = Duration::from_millis(100);
/// How often the cores' `VmRSS` is read during a deployment.
pub const RSS_EVERY: Duration = Duration::from_millis(50);
/// How long the cores get to start and report their first fleet status.
const CONNECT_DEADLINE: Duration = Duration::from_secs(180);
/// How long a deployment may take beyond its rollout pacing before the run gives up on it.
const CONVERGE_SLACK: Duration = Duration::from_secs(300);
/// How long the cloud's view of the cores (fleet status after the deployment) may lag.
const VIEW_DEADLINE: Duration = Duration::from_secs(30);
/// The goal's allowance beyond the rollout pacing.
const GOAL: Duration = Duration::from_secs(60);
/// The goal's group size.
const GOAL_CORES: usize = 50;
/// The local cloud's Jobs rollout releases `maximumPerMinute` executions per window of this length.
const ROLLOUT_WINDOW: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `local-cloud` binary.
    pub local_cloud_bin: PathBuf,
    /// The `device-sim` binary.
    pub device_sim_bin: PathBuf,
    /// Cores in the fleet group.
    pub cores: usize,
    /// The job's `maximumPerMinute`.
    pub rollout_per_minute: Option<u32>,
    /// The measured component's artifact, MiB.
    pub artifact_mib: u64,
    /// The large artifact of the download-rate pair, MiB.
    pub download_mib: u64,
}

/// Resident memory of the cores (and the local cloud) around one deployment, KiB.
#[derive(Debug, Clone, Default)]
pub struct Rss {
    /// Each core just before CreateDeployment.
    pub idle: Vec<u64>,
    /// Each core's largest sample during the deployment.
    pub peak: Vec<u64>,
    /// Each core's `VmHWM` once the deployment ended: its exact peak since it started.
    pub hwm: Vec<u64>,
    /// The local cloud before and at its largest during the deployment.
    pub cloud: (u64, u64),
}

/// The cloud's view of the cores once their executions ended.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Cores whose ListEffectiveDeployments shows the deployment SUCCEEDED.
    pub effective_ok: usize,
    /// Cores whose ListInstalledComponents shows the component at its version RUNNING.
    pub installed_ok: usize,
    /// What was wrong with the others, one line per core.
    pub mismatches: Vec<String>,
    /// From the last execution's end until the view was right everywhere (`None`: never).
    pub settled_after: Option<Duration>,
}

/// One deployment to a group, measured.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// Cores in the group.
    pub cores: usize,
    /// The artifact's size, bytes.
    pub artifact_bytes: u64,
    /// The job's `maximumPerMinute`.
    pub rollout: Option<u32>,
    /// CreateDeployment's own round trip.
    pub create: Duration,
    /// From the request to each core's SUCCEEDED, ascending.
    pub succeeded: Vec<Duration>,
    /// Cores that ended otherwise, with the status.
    pub failed: Vec<(String, String)>,
    /// Cores still without a terminal status at the deadline.
    pub unfinished: usize,
    /// From the request to the last execution the rollout queued.
    pub last_queued: Option<Duration>,
    /// Each succeeded core, from its execution being queued (released by the rollout) to its
    /// SUCCEEDED, ascending.
    pub queued_to_succeeded: Vec<Duration>,
    /// The cloud's view afterwards.
    pub view: View,
    /// Memory.
    pub rss: Rss,
    /// The IoT job's id: the deployment's id on the core, which its log names.
    pub job_id: String,
}

impl Deployment {
    /// When the last core succeeded, if every core did.
    pub fn converged(&self) -> Option<Duration> {
        (self.succeeded.len() == self.cores).then(|| self.succeeded.last().copied()).flatten()
    }

    /// Whether every core's status is right in the cloud.
    pub fn cloud_view_ok(&self) -> bool {
        self.view.effective_ok == self.cores && self.view.installed_ok == self.cores
    }

    fn quantile(&self, p: f64) -> Option<Duration> {
        let ns: Vec<u64> = self.succeeded.iter().map(|d| d.as_nanos() as u64).collect();
        (!ns.is_empty()).then(|| Duration::from_nanos(percentile(&ns, p)))
    }
}

/// One tiny/large pair of deployments on the single core.
#[derive(Debug, Clone)]
pub struct DownloadRound {
    /// The tiny artifact's deployment.
    pub tiny: Duration,
    /// The large artifact's deployment.
    pub large: Duration,
    /// From the core's log, for the large deployment: the time from "deployment in progress"
    /// to "components resolved and artifacts downloaded" (ResolveComponentCandidates,
    /// GetComponentVersionArtifact, the download and its digest check), and the bytes it says it
    /// downloaded.
    pub in_core: Option<(Duration, u64)>,
    /// The core's `VmHWM` after the large deployment, KiB.
    pub large_hwm_kib: u64,
}

/// The download rate, from tiny and large deployments on the single core.
#[derive(Debug, Clone)]
pub struct Download {
    /// The large artifact's size.
    pub large_bytes: u64,
    /// Each pair.
    pub rounds: Vec<DownloadRound>,
}

impl Download {
    /// Each round's extra bytes over extra time, MiB/s.
    pub fn rates(&self) -> Vec<f64> {
        let extra_mib = (self.large_bytes - TINY_BYTES) as f64 / 1024.0 / 1024.0;
        self.rounds
            .iter()
            .filter_map(|r| r.large.checked_sub(r.tiny).map(|d| d.as_secs_f64()))
            .filter(|&extra| extra > 0.0)
            .map(|extra| extra_mib / extra)
            .collect()
    }

    /// Each round's bytes over the core's own download phase, MiB/s.
    pub fn in_core_rates(&self) -> Vec<f64> {
        self.rounds
            .iter()
            .filter_map(|r| r.in_core)
            .filter(|(d, _)| !d.is_zero())
            .map(|(d, bytes)| bytes as f64 / 1024.0 / 1024.0 / d.as_secs_f64())
            .collect()
    }
}

/// The median of `values` (the lower one of an even count).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len().saturating_sub(1) / 2).copied()
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct DeploymentsResult {
    /// Provisioning things, certificates, policy and groups.
    pub provisioned_in: Duration,
    /// Publishing the three components (S3 uploads, CreateComponentVersion, DEPLOYABLE).
    pub published_in: Duration,
    /// From starting the core processes to every core's first fleet status in the cloud.
    pub connected_in: Duration,
    /// The single core, the measured component.
    pub single: Deployment,
    /// The download-rate pair.
    pub download: Download,
    /// The fleet.
    pub fleet: Deployment,
    /// Warnings and errors the cores and the local cloud logged, summarized.
    pub log_notes: Vec<String>,
}

/// The SDK clients, through `provision`'s code path, signing with the local cloud's
/// administrator key pair (its S3 checks SigV4).
struct Clients {
    iot: aws_sdk_iot::Client,
    gg: aws_sdk_greengrassv2::Client,
    s3: aws_sdk_s3::Client,
}

impl Clients {
    async fn new(endpoints: &Endpoints) -> anyhow::Result<Clients> {
        let admin = endpoints.credentials.clone().context("endpoints.json has no administrator key pair")?;
        let options = ClientOptions {
            endpoint_url: Some(endpoints.http.clone()),
            region: Some(endpoints.region.clone()),
            credentials: Some(Credentials::new(
                admin.access_key_id,
                admin.secret_access_key,
                None,
                None,
                "broker-bench",
            )),
        };
        Ok(Clients {
            iot: provision::iot_client(&options).await,
            gg: provision::greengrass_client(&options).await,
            s3: provision::s3_client(&options).await,
        })
    }
}

/// A simulated core process.
struct Core {
    thing: String,
    log: PathBuf,
    process: ChildGuard,
}

/// Runs the benchmark in `work` (a fresh directory).
pub async fn run(options: &Options, work: &Path) -> anyhow::Result<DeploymentsResult> {
    anyhow::ensure!(options.cores > 0, "--cores must be at least 1");
    anyhow::ensure!(options.device_sim_bin.is_file(), "{} does not exist", options.device_sim_bin.display());
    let data_dir = work.join("local-cloud");
    let (cloud, endpoints, _ca) = spawn(&options.local_cloud_bin, &data_dir).await?;
    let clients = Clients::new(&endpoints).await?;

    let started = Instant::now();
    let policy = core_policy(&endpoints.region, &endpoints.account_id)?;
    clients.iot.create_policy().policy_name(POLICY).policy_document(policy).send().await.context("CreatePolicy")?;
    let fleet_names: Vec<String> = (0..options.cores).map(|i| format!("bench-core-{i}")).collect();
    let (fleet_arn, mut identities) =
        group_of_things(&clients.iot, FLEET_GROUP, fleet_names.clone(), POLICY).await.context("the fleet")?;
    let (single_arn, single) = group_of_things(&clients.iot, SINGLE_GROUP, [SINGLE_CORE.to_owned()], POLICY)
        .await
        .context("the single core")?;
    identities.extend(single);
    let provisioned_in = started.elapsed();
    eprintln!("provisioned {} cores in {:.1} s", identities.len(), provisioned_in.as_secs_f64());

    let started = Instant::now();
    let artifacts = work.join("artifacts");
    let mut to_publish = vec![(PAYLOAD, VERSION.to_owned(), options.artifact_mib * 1024 * 1024)];
    for round in 0..DOWNLOAD_ROUNDS {
        to_publish.push((TINY, format!("1.0.{round}"), TINY_BYTES));
        to_publish.push((LARGE, format!("1.0.{round}"), options.download_mib * 1024 * 1024));
    }
    for (name, version, bytes) in &to_publish {
        let component = component(&artifacts, name, version, *bytes)?;
        let mut publish = PublishOptions::new(BUCKET);
        publish.poll = POLL;
        publish_component(&clients.gg, &clients.s3, &component, &publish)
            .await
            .with_context(|| format!("publishing {name}"))?;
    }
    let published_in = started.elapsed();
    eprintln!("published {} component versions in {:.1} s", to_publish.len(), published_in.as_secs_f64());

    let started = Instant::now();
    let endpoints_file = data_dir.join("endpoints.json");
    let mut cores = Vec::new();
    for thing in fleet_names.iter().map(String::as_str).chain([SINGLE_CORE]) {
        let identity = identities.get(thing).context("a core without an identity")?;
        cores.push(start_core(&options.device_sim_bin, work, &endpoints_file, thing, identity)?);
    }
    let outcome = async {
        wait_connected(&clients.gg, &mut cores).await?;
        let connected_in = started.elapsed();
        eprintln!("{} cores connected in {:.1} s", cores.len(), connected_in.as_secs_f64());

        let (fleet, single) = cores.split_at(options.cores);
        let of_mib = |m: u64| m * 1024 * 1024;
        let single_run =
            deploy(&clients, &single_arn, (PAYLOAD, VERSION), of_mib(options.artifact_mib), None, single, cloud.pid())
                .await
                .context("the single-core deployment")?;
        report_progress("single core", &single_run);
        let mut download = Download { large_bytes: of_mib(options.download_mib), rounds: Vec::new() };
        for round in 0..DOWNLOAD_ROUNDS {
            let version = format!("1.0.{round}");
            let tiny = deploy(&clients, &single_arn, (TINY, &version), TINY_BYTES, None, single, cloud.pid()).await?;
            let large =
                deploy(&clients, &single_arn, (LARGE, &version), download.large_bytes, None, single, cloud.pid())
                    .await?;
            download.rounds.push(DownloadRound {
                tiny: tiny.converged().context("a tiny deployment did not succeed")?,
                large: large.converged().context("a large deployment did not succeed")?,
                in_core: download_phase(&single[0].log, &large.job_id),
                large_hwm_kib: large.rss.hwm.first().copied().unwrap_or(0),
            });
        }
        let fleet_run = deploy(
            &clients,
            &fleet_arn,
            (PAYLOAD, VERSION),
            of_mib(options.artifact_mib),
            options.rollout_per_minute,
            fleet,
            cloud.pid(),
        )
        .await
        .context("the fleet deployment")?;
        report_progress("fleet", &fleet_run);
        let log_notes = run_log_notes(cores.iter().map(|c| c.log.clone()).collect(), &data_dir);
        anyhow::Ok(DeploymentsResult {
            provisioned_in,
            published_in,
            connected_in,
            single: single_run,
            download,
            fleet: fleet_run,
            log_notes,
        })
    }
    .await;
    // Every core gets its SIGTERM first, so they stop side by side; dropping the guards waits.
    for core in &mut cores {
        core.process.ask_to_stop();
    }
    drop(cores);
    cloud.stop();
    outcome
}

fn report_progress(what: &str, d: &Deployment) {
    eprintln!(
        "{what}: {} of {} succeeded, last at {:.1} s; {} failed, {} unfinished",
        d.succeeded.len(),
        d.cores,
        d.succeeded.last().map_or(0.0, Duration::as_secs_f64),
        d.failed.len(),
        d.unfinished
    );
}

/// The shipped Greengrass deployments policy for this cloud's region and account, with
/// `iot:Connect` for the thing's own client id.
fn core_policy(region: &str, account: &str) -> anyhow::Result<String> {
    let scope = AccountScope { partition: "aws".into(), region: region.into(), account_id: account.into() };
    let rendered = PolicySource::greengrass_deployments().render(&scope, false)?;
    let mut doc: serde_json::Value = serde_json::from_str(&rendered.document)?;
    let statements = doc["Statement"].as_array_mut().context("the shipped policy has no Statement list")?;
    statements.push(serde_json::json!({
        "Effect": "Allow",
        "Action": "iot:Connect",
        "Resource": format!("arn:aws:iot:{region}:{account}:client/${{iot:Connection.Thing.ThingName}}"),
    }));
    Ok(doc.to_string())
}

/// A component with one `s3://` artifact of `bytes` pseudo-random bytes (nothing compresses
/// it) and a `Run` that sleeps, staged under `dir` for [`publish_component`].
fn component(dir: &Path, name: &str, version: &str, bytes: u64) -> anyhow::Result<BuiltComponent> {
    let file_name = "payload.bin";
    let folder = dir.join(name).join(version);
    std::fs::create_dir_all(&folder)?;
    let path = folder.join(file_name);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    // Seeded by name and version, so no two versions share an artifact.
    let mut state = format!("{name}-{version}")
        .bytes()
        .fold(0x9E37_79B9_7F4A_7C15_u64 ^ bytes, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3));
    let mut left = bytes;
    let mut block = vec![0u8; 1024 * 1024];
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            // xorshift64: cheap and incompressible enough for a transfer.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n])?;
        left -= n as u64;
    }
    file.flush()?;
    drop(file);
    let (digest, size) = digest_file(&path)?;
    let recipe = serde_json::json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": version,
        "ComponentDescription": format!("broker-bench --deployments: a {bytes}-byte artifact and a Run that sleeps"),
        "ComponentPublisher": "broker-bench",
        "Manifests": [{
            "Platform": { "os": "linux" },
            "Lifecycle": { "Run": "sleep 86400" },
            "Artifacts": [{ "URI": format!("s3://{BUCKET}/{name}/{version}/{file_name}") }],
        }],
    });
    Ok(BuiltComponent {
        name: name.to_owned(),
        version: version.to_owned(),
        recipe_path: folder.join("recipe.json"),
        recipe,
        artifacts: vec![BuiltArtifact { file_name: file_name.to_owned(), path, digest, size }],
    })
}

/// Starts `device-sim core` for `thing`, empty, taking deployments from the cloud.
fn start_core(bin: &Path, work: &Path, endpoints: &Path, thing: &str, identity: &Identity) -> anyhow::Result<Core> {
    let ids = work.join("ids");
    let logs = work.join("logs");
    std::fs::create_dir_all(&ids)?;
    std::fs::create_dir_all(&logs)?;
    let cert = ids.join(format!("{thing}.cert.pem"));
    let key = ids.join(format!("{thing}.key.pem"));
    std::fs::write(&cert, &identity.cert_pem)?;
    std::fs::write(&key, &identity.key_pem)?;
    let mut cmd = Command::new(bin);
    cmd.arg("core")
        .arg("--root")
        .arg(work.join("cores").join(thing))
        .args(["--thing", thing])
        .arg("--cloud")
        .arg(endpoints)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg("--cloud-deployments")
        .args(["--fleet-status-interval-secs", "86400"])
        // Info: the deployment's "components resolved and artifacts downloaded" line is read back.
        .env("RUST_LOG", "info");
    let log = logs.join(format!("{thing}.log"));
    let process = ChildGuard::spawn(thing, cmd, &log)?;
    Ok(Core { thing: thing.to_owned(), log, process })
}

/// Waits until the cloud has every core's first fleet status (GetCoreDevice answers).
async fn wait_connected(gg: &aws_sdk_greengrassv2::Client, cores: &mut [Core]) -> anyhow::Result<()> {
    let deadline = Instant::now() + CONNECT_DEADLINE;
    let mut waiting: Vec<usize> = (0..cores.len()).collect();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for i in waiting {
            let core = &mut cores[i];
            if let Some(status) = core.process.exited() {
                let log = std::fs::read_to_string(&core.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                anyhow::bail!(
                    "core {} exited ({status}): {}",
                    core.thing,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            if gg.get_core_device().core_device_thing_name(&core.thing).send().await.is_err() {
                still.push(i);
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} of {} cores sent no fleet status within {CONNECT_DEADLINE:?}",
                waiting.len(),
                cores.len()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

/// The shortest time the rollout allows: the local cloud releases `per_minute` executions per
/// [`ROLLOUT_WINDOW`], so the last of `cores` waits for `ceil(cores / per_minute) - 1` windows.
pub fn pacing_floor(cores: usize, per_minute: Option<u32>) -> Duration {
    match per_minute {
        Some(r) if r > 0 => ROLLOUT_WINDOW * (cores.div_ceil(r as usize).saturating_sub(1) as u32),
        _ => Duration::ZERO,
    }
}

/// Deploys `component` to `group_arn` and follows it on `cores`.
async fn deploy(
    clients: &Clients,
    group_arn: &str,
    (component, version): (&str, &str),
    artifact_bytes: u64,
    rollout: Option<u32>,
    cores: &[Core],
    cloud_pid: u32,
) -> anyhow::Result<Deployment> {
    let pids: Vec<u32> = cores.iter().map(|c| c.process.pid()).chain([cloud_pid]).collect();
    let idle: Vec<u64> = pids.iter().map(|&p| rss_kib(p).unwrap_or(0)).collect();
    let sampler = RssSampler::start(pids.clone());

    let mut job = DeploymentIoTJobConfiguration::builder();
    if let Some(per_minute) = rollout {
        job = job.job_executions_rollout_config(
            IoTJobExecutionsRolloutConfig::builder().maximum_per_minute(per_minute as i32).build(),
        );
    }
    let spec = ComponentDeploymentSpecification::builder().component_version(version).build()?;
    let sent_epoch = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    let sent = Instant::now();
    let created = clients
        .gg
        .create_deployment()
        .target_arn(group_arn)
        .deployment_name(format!("broker-bench {component}"))
        .components(component, spec)
        .iot_job_configuration(job.build())
        .send()
        .await
        .context("CreateDeployment")?;
    let create = sent.elapsed();
    let job_id = created.iot_job_id().context("CreateDeployment: no iotJobId")?.to_owned();
    let deployment_id = created.deployment_id().context("CreateDeployment: no deploymentId")?.to_owned();
    let since = |t: Option<&aws_sdk_iot::primitives::DateTime>| {
        t.map(|t| Duration::from_secs_f64((t.as_secs_f64() - sent_epoch).max(0.0)))
    };

    let deadline = Instant::now() + pacing_floor(cores.len(), rollout) + CONVERGE_SLACK;
    let mut ended: BTreeMap<String, (JobExecutionStatus, Duration)> = BTreeMap::new();
    let mut last_queued = None;
    let mut queued: HashMap<String, Duration> = HashMap::new();
    while ended.len() < cores.len() && Instant::now() < deadline {
        let mut pages = clients.iot.list_job_executions_for_job().job_id(&job_id).into_paginator().send();
        while let Some(page) = pages.next().await {
            for s in page.context("ListJobExecutionsForJob")?.execution_summaries() {
                let Some(thing) = s.thing_arn().and_then(|a| a.rsplit('/').next()) else { continue };
                let Some(e) = s.job_execution_summary() else { continue };
                if let Some(at) = since(e.queued_at()) {
                    last_queued = last_queued.max(Some(at));
                    queued.insert(thing.to_owned(), at);
                }
                let Some(status) = e.status() else { continue };
                if is_terminal(status) && !ended.contains_key(thing) {
                    let at = since(e.last_updated_at()).unwrap_or_else(|| sent.elapsed());
                    ended.insert(thing.to_owned(), (status.clone(), at));
                }
            }
        }
        if ended.len() < cores.len() {
            tokio::time::sleep(POLL).await;
        }
    }
    let peaks = sampler.stop().await;

    let things: Vec<&str> = cores.iter().map(|c| c.thing.as_str()).collect();
    let view = cloud_view(&clients.gg, &things, &deployment_id, (component, version)).await?;
    let hwm: Vec<u64> = pids[..cores.len()].iter().map(|&p| hwm_kib(p).unwrap_or(0)).collect();
    let mut succeeded: Vec<Duration> =
        ended.values().filter(|(s, _)| *s == JobExecutionStatus::Succeeded).map(|(_, at)| *at).collect();
    succeeded.sort_unstable();
    let mut queued_to_succeeded: Vec<Duration> = ended
        .iter()
        .filter(|(_, (s, _))| *s == JobExecutionStatus::Succeeded)
        .filter_map(|(t, (_, at))| Some(at.saturating_sub(*queued.get(t)?)))
        .collect();
    queued_to_succeeded.sort_unstable();
    let failed = ended
        .iter()
        .filter(|(_, (s, _))| *s != JobExecutionStatus::Succeeded)
        .map(|(t, (s, _))| (t.clone(), s.as_str().to_owned()))
        .collect();
    let n = cores.len();
    Ok(Deployment {
        cores: n,
        artifact_bytes,
        rollout,
        create,
        succeeded,
        failed,
        unfinished: n - ended.len(),
        last_queued,
        queued_to_succeeded,
        view,
        rss: Rss { idle: idle[..n].to_vec(), peak: peaks[..n].to_vec(), hwm, cloud: (idle[n], peaks[n]) },
        job_id,
    })
}

fn is_terminal(status: &JobExecutionStatus) -> bool {
    !matches!(status, JobExecutionStatus::Queued | JobExecutionStatus::InProgress)
}

/// Reads each core's effective deployments and installed components until every core shows
/// `deployment_id` SUCCEEDED and `component` RUNNING, or [`VIEW_DEADLINE`] passes.
async fn cloud_view(
    gg: &aws_sdk_greengrassv2::Client,
    things: &[&str],
    deployment_id: &str,
    (component, version): (&str, &str),
) -> anyhow::Result<View> {
    let started = Instant::now();
    let mut problems: HashMap<&str, String> = HashMap::new();
    let mut pending: Vec<&str> = things.to_vec();
    let (mut effective_ok, mut installed_ok) = (0, 0);
    loop {
        let mut still = Vec::new();
        for &thing in &pending {
            let deployments = gg
                .list_effective_deployments()
                .core_device_thing_name(thing)
                .send()
                .await
                .context("ListEffectiveDeployments")?;
            let status = deployments
                .effective_deployments()
                .iter()
                .find(|d| d.deployment_id() == deployment_id)
                .map(|d| d.core_device_execution_status().clone());
            let installed = gg
                .list_installed_components()
                .core_device_thing_name(thing)
                .send()
                .await
                .context("ListInstalledComponents")?;
            let state = installed
                .installed_components()
                .iter()
                .find(|c| c.component_name() == Some(component) && c.component_version() == Some(version))
                .and_then(|c| c.lifecycle_state().cloned());
            let deployment_ok = status == Some(EffectiveDeploymentExecutionStatus::Succeeded);
            let component_ok = state == Some(InstalledComponentLifecycleState::Running);
            if deployment_ok && component_ok {
                effective_ok += 1;
                installed_ok += 1;
                problems.remove(thing);
            } else {
                problems.insert(
                    thing,
                    format!(
                        "{thing}: effective deployment {}, {component} {}",
                        status.as_ref().map_or("missing", |s| s.as_str()),
                        state.as_ref().map_or("not installed", |s| s.as_str())
                    ),
                );
                still.push((thing, deployment_ok, component_ok));
            }
        }
        pending = still.iter().map(|(t, _, _)| *t).collect();
        if pending.is_empty() {
            return Ok(View {
                effective_ok,
                installed_ok,
                mismatches: Vec::new(),
                settled_after: Some(started.elapsed()),
            });
        }
        if started.elapsed() >= VIEW_DEADLINE {
            effective_ok += still.iter().filter(|(_, d, _)| *d).count();
            installed_ok += still.iter().filter(|(_, _, c)| *c).count();
            let mut mismatches: Vec<String> = problems.into_values().collect();
            mismatches.sort();
            return Ok(View { effective_ok, installed_ok, mismatches, settled_after: None });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Samples the `VmRSS` of processes every [`RSS_EVERY`] until stopped; keeps each one's largest.
struct RssSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<u64>>,
}

impl RssSampler {
    fn start(pids: Vec<u32>) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut peaks = vec![0u64; pids.len()];
            let mut tick = tokio::time::interval(RSS_EVERY);
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                for (peak, &pid) in peaks.iter_mut().zip(&pids) {
                    *peak = (*peak).max(rss_kib(pid).unwrap_or(0));
                }
            }
            peaks
        });
        RssSampler { stop, task }
    }

    async fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// [`log_problems`] of the cores' logs and of the local cloud's (in `data_dir`).
pub(crate) fn run_log_notes(core_logs: Vec<PathBuf>, data_dir: &Path) -> Vec<String> {
    [("the cores' logs", core_logs), ("the local cloud's log", vec![data_dir.join("local-cloud.log")])]
        .into_iter()
        .map(|(whose, files)| log_problems(whose, &files))
        .collect()
}

/// Lines at WARN or ERROR in `files`: how many, and the most frequent kinds (the text after the
/// level up to the first field).
fn log_problems(whose: &str, files: &[PathBuf]) -> String {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines() {
            let Some(at) = line.find(" WARN ").or_else(|| line.find(" ERROR ")) else { continue };
            let rest = line[at..].trim_start();
            let kind = rest.split(" ").take_while(|w| !w.contains('=')).collect::<Vec<_>>().join(" ");
            *kinds.entry(kind.chars().take(160).collect()).or_default() += 1;
        }
    }
    let total: usize = kinds.values().sum();
    if total == 0 {
        return format!("{whose}: no line at WARN or ERROR");
    }
    let mut common: Vec<(String, usize)> = kinds.into_iter().collect();
    common.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let shown: Vec<String> = common.iter().take(4).map(|(k, n)| format!("{n} × `{k}`")).collect();
    format!("{whose}: {total} lines at WARN or ERROR: {}", shown.join("; "))
}

/// From the core's "deployment in progress" to its "components resolved and artifacts
/// downloaded" for deployment `id`, by the log's time stamps, and that line's `bytes`.
fn download_phase(log: &Path, id: &str) -> Option<(Duration, u64)> {
    download_phase_in(&std::fs::read_to_string(log).ok()?, id)
}

fn download_phase_in(text: &str, id: &str) -> Option<(Duration, u64)> {
    let tag = format!("deployment={id}");
    let line = |message: &str| text.lines().find(|l| l.contains(message) && l.split_whitespace().any(|w| w == tag));
    let stamp = |l: &str| {
        let first = l.split_whitespace().next()?;
        time::OffsetDateTime::parse(first, &time::format_description::well_known::Rfc3339).ok()
    };
    let (start, end) = (line("deployment in progress")?, line("components resolved and artifacts downloaded")?);
    let took = Duration::try_from(stamp(end)? - stamp(start)?).ok()?;
    let bytes = end.split_whitespace().find_map(|field| field.strip_prefix("bytes="))?.parse().ok()?;
    Some((took, bytes))
}

pub(crate) fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn opt_secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "–".into(), secs)
}

/// Median and largest of KiB samples, in MiB.
fn median_max(kib: &[u64]) -> String {
    let mut v = kib.to_vec();
    v.sort_unstable();
    match v.last() {
        Some(max) => format!("{} / {}", mib(percentile(&v, 50.0)), mib(*max)),
        None => "–".into(),
    }
}

/// The goal's verdict for the fleet: converged within [`GOAL`] plus the pacing floor, every
/// core's status right in the cloud; judged only for a group of at least [`GOAL_CORES`].
pub fn goal_met(fleet: &Deployment) -> Option<bool> {
    if fleet.cores < GOAL_CORES {
        return None;
    }
    let limit = GOAL + pacing_floor(fleet.cores, fleet.rollout);
    Some(fleet.converged().is_some_and(|last| last < limit) && fleet.cloud_view_ok())
}

/// Table rows for one deployment.
fn rows(out: &mut String, group: &str, d: &Deployment) {
    let label = format!("{group}, {} MiB", d.artifact_bytes / (1024 * 1024));
    let row = |out: &mut String, figure: &str, value: String| {
        let _ = writeln!(out, "| {label} | {figure} | {value} |");
    };
    let floor = pacing_floor(d.cores, d.rollout);
    row(out, "CreateDeployment request → response, s", secs(d.create));
    row(out, "→ first core SUCCEEDED, s", opt_secs(d.succeeded.first().copied()));
    row(out, "→ last core SUCCEEDED, s", opt_secs(d.converged()));
    row(out, "p50 / p90 over the cores, s", format!("{} / {}", opt_secs(d.quantile(50.0)), opt_secs(d.quantile(90.0))));
    row(
        out,
        "rollout `maximumPerMinute` → pacing floor, s",
        format!(
            "{} → {} (last execution queued at {})",
            d.rollout.map_or_else(|| "none".into(), |r| r.to_string()),
            secs(floor),
            opt_secs(d.last_queued)
        ),
    );
    row(
        out,
        "cores SUCCEEDED / failed / unfinished",
        format!("{} / {} / {}", d.succeeded.len(), d.failed.len(), d.unfinished),
    );
    row(
        out,
        "cloud: ListEffectiveDeployments SUCCEEDED / ListInstalledComponents RUNNING",
        format!(
            "{} / {} of {}{}",
            d.view.effective_ok,
            d.view.installed_ok,
            d.cores,
            d.view.settled_after.map_or_else(|| " (not settled)".into(), |s| format!(", right {} s after", secs(s)))
        ),
    );
    let spread = |v: &[Duration]| match (v.get(v.len().saturating_sub(1) / 2), v.last()) {
        (Some(mid), Some(max)) => format!("{} / {}", secs(*mid), secs(*max)),
        _ => "–".into(),
    };
    row(out, "each core: its execution queued → SUCCEEDED, s median / max", spread(&d.queued_to_succeeded));
    // Bytes over wall time mean something only when the rollout did not hold cores back.
    if let Some(last) = d.converged().filter(|_| d.cores > 1 && floor.is_zero()) {
        let total = (d.artifact_bytes * d.cores as u64) as f64 / 1024.0 / 1024.0;
        row(
            out,
            "artifact bytes to all cores ÷ time to the last SUCCEEDED, MiB/s",
            format!("{:.1}", total / last.as_secs_f64()),
        );
    }
    row(out, "core RSS before the deployment, MiB median / max", median_max(&d.rss.idle));
    row(out, "core RSS peak during it (50 ms samples), MiB median / max", median_max(&d.rss.peak));
    row(out, "core `VmHWM` afterwards (exact peak since start), MiB median / max", median_max(&d.rss.hwm));
    row(out, "local cloud RSS before / peak, MiB", format!("{} / {}", mib(d.rss.cloud.0), mib(d.rss.cloud.1)));
}

/// The `docs/benchmarks.md` section's body.
pub fn markdown(r: &DeploymentsResult, o: &Options, command: &str, machine: &str, build: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Greengrass deployments: CreateDeployment to SUCCEEDED at {} simulated core{}\n",
        o.cores,
        if o.cores == 1 { "" } else { "s" }
    );
    run_lines(&mut out, command, machine, build, "MQTT over mTLS, HTTP, the Greengrass data plane over mTLS");
    let _ = writeln!(
        out,
        "- Set-up: {} fleet core{} in one thing group and one more core in its own group for the single-core \
         figures; each core its own thing, certificate and the IoT policy \
         `cloud/provision/policies/greengrass-core-deployments.json` plus `iot:Connect` for its own client id \
         (provisioned with `aws-sdk-iot` in {} s). Components published through `provision` (`aws-sdk-s3` \
         upload, CreateComponentVersion with an `s3://` artifact, DEPLOYABLE) in {} s: \
         `{PAYLOAD}` ({} MiB artifact) and {DOWNLOAD_ROUNDS} versions each of `{TINY}` (1 KiB) and `{LARGE}` \
         ({} MiB), each with a `Run` that sleeps. \
         Each core is `device-sim core --cloud-deployments --fleet-status-interval-secs 86400`, started empty; \
         all {} were connected (the cloud had their `NUCLEUS_LAUNCH` fleet status: GetCoreDevice answers) \
         {} s after they were started.",
        o.cores,
        if o.cores == 1 { "" } else { "s" },
        secs(r.provisioned_in),
        secs(r.published_in),
        o.artifact_mib,
        o.download_mib,
        o.cores + 1,
        secs(r.connected_in)
    );
    let _ = writeln!(
        out,
        "- Method: `aws-sdk-greengrassv2` CreateDeployment to the group (one component, \
         `iotJobConfiguration.jobExecutionsRolloutConfig.maximumPerMinute` when set); each core's time is its \
         job execution's `lastUpdatedAt` when ListJobExecutionsForJob (polled every {} ms) first shows it \
         terminal, minus the moment just before the request was sent; its execution's `queuedAt` shows when the \
         rollout released it. Then each core's ListEffectiveDeployments \
         and ListInstalledComponents are read until they show the deployment SUCCEEDED and the component \
         RUNNING (at most {} s). Each core process's `VmRSS` (`/proc/PID/status`; the sleeping component is \
         not counted) is read just before the request and every {} ms until the last execution ended, and its \
         `VmHWM` then. The download rate: the single core deploys a tiny version, then a large one (each \
         deployment replacing the previous, so each stops one sleeping component and starts another), \
         {DOWNLOAD_ROUNDS} times; the large artifact's extra bytes over the extra time its deployment took. \
         In the core: the bytes and the time between its log lines \"deployment in progress\" and \
         \"components resolved and artifacts downloaded\" for each large deployment \
         (ResolveComponentCandidates, GetComponentVersionArtifact, the download and its digest check). \
         The local cloud releases `maximumPerMinute` executions per 60 s window, so the pacing floor is \
         (⌈cores ÷ rate⌉ − 1) × 60 s.\n",
        POLL.as_millis(),
        VIEW_DEADLINE.as_secs(),
        RSS_EVERY.as_millis()
    );
    let _ = writeln!(out, "| deployment | figure | value |");
    let _ = writeln!(out, "| --- | --- | ---: |");
    rows(&mut out, "single core", &r.single);
    rows(&mut out, &format!("group of {}", r.fleet.cores), &r.fleet);
    let d = &r.download;
    let list = |values: Vec<String>| values.join("; ");
    let rate = |values: Vec<f64>| {
        let each: Vec<String> = values.iter().map(|v| format!("{v:.0}")).collect();
        format!("{} ({})", median(values).map_or_else(|| "–".into(), |v| format!("{v:.0}")), each.join(", "))
    };
    for (figure, value) in [
        (
            format!("{LARGE} ({} MiB) vs {TINY} (1 KiB): CreateDeployment → SUCCEEDED, s, per round", o.download_mib),
            list(d.rounds.iter().map(|p| format!("{} vs {}", secs(p.large), secs(p.tiny))).collect()),
        ),
        ("download rate end to end, MiB/s (extra bytes ÷ extra time): median (rounds)".to_owned(), rate(d.rates())),
        (
            format!("the core's resolve + download phase for {LARGE} (its log), s / bytes, per round"),
            list(
                d.rounds
                    .iter()
                    .map(|p| {
                        p.in_core.map_or_else(
                            || "–".into(),
                            |(t, b)| format!("{} / {}", secs(t), bench_common::format::thousands(b)),
                        )
                    })
                    .collect(),
            ),
        ),
        ("download rate in the core, MiB/s (bytes ÷ that phase): median (rounds)".to_owned(), rate(d.in_core_rates())),
        (
            format!("core `VmHWM` after the {LARGE} deployment, MiB, per round"),
            list(d.rounds.iter().map(|p| mib(p.large_hwm_kib)).collect()),
        ),
    ] {
        let _ = writeln!(out, "| single core, download | {figure} | {value} |");
    }
    let _ = writeln!(out, "\n### Goal\n");
    let limit = GOAL + pacing_floor(r.fleet.cores, r.fleet.rollout);
    let verdict = match goal_met(&r.fleet) {
        Some(true) => "**met**",
        Some(false) => "**not met**",
        None => "not judged (fewer than 50 cores in this run)",
    };
    let _ = writeln!(
        out,
        "- A group of at least {GOAL_CORES} cores converges in under {} s plus its rollout pacing ({} s here), \
         with every core's status correct in the cloud: {verdict} — last core SUCCEEDED at {} s; cloud view right \
         for {} / {} cores.",
        GOAL.as_secs(),
        secs(limit - GOAL),
        opt_secs(r.fleet.converged()),
        r.fleet.view.effective_ok.min(r.fleet.view.installed_ok),
        r.fleet.cores
    );
    let notes: Vec<String> = [&r.single, &r.fleet]
        .iter()
        .flat_map(|d| {
            d.failed
                .iter()
                .map(|(t, s)| format!("{t}: job execution {s}"))
                .chain(d.view.mismatches.iter().cloned())
                .collect::<Vec<_>>()
        })
        .chain(r.log_notes.iter().cloned())
        .collect();
    notes_section(&mut out, &notes);
    out
}

/// The lines every section of a run with the local cloud and `device-sim core` processes opens
/// with: the command, the date, the machine and the builds (`over`: what the processes speak).
pub(crate) fn run_lines(out: &mut String, command: &str, machine: &str, build: &str, over: &str) {
    let _ = writeln!(out, "- Command: `{command}`");
    let _ = writeln!(out, "- Date: {}", bench_common::format::now_utc());
    let _ = writeln!(
        out,
        "- Machine: {machine}. The machine is shared: other processes may have been running, and the local \
         cloud and every core run on its cores."
    );
    let _ = writeln!(
        out,
        "- Builds: `local-cloud serve` and `device-sim core`, {build}s, each its own process, everything on \
         127.0.0.1 ({over})."
    );
}

/// "Notes from the run", when there are any.
pub(crate) fn notes_section(out: &mut String, notes: &[String]) {
    if !notes.is_empty() {
        let _ = writeln!(out, "\n### Notes from the run\n");
        for n in notes {
            let _ = writeln!(out, "- {n}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_floor_counts_the_rollout_windows_after_the_first() {
        assert_eq!(pacing_floor(50, None), Duration::ZERO);
        assert_eq!(pacing_floor(50, Some(600)), Duration::ZERO);
        assert_eq!(pacing_floor(50, Some(50)), Duration::ZERO);
        assert_eq!(pacing_floor(50, Some(25)), Duration::from_secs(60));
        assert_eq!(pacing_floor(50, Some(20)), Duration::from_secs(120));
    }

    #[test]
    fn the_download_phase_comes_from_the_core_log_lines_of_the_deployment() {
        let log = "2026-12-07T01:37:22.914099Z  INFO device_sim::core::deployment: deployment in progress \
                   deployment=abc origin=ThingGroup\n\
                   2026-12-07T01:37:22.950000Z  INFO device_sim::core::deployment: components resolved and \
                   artifacts downloaded deployment=other components=1 bytes=1 kept=0\n\
                   2026-12-07T01:37:23.009371Z  INFO device_sim::core::deployment: components resolved and \
                   artifacts downloaded deployment=abc components=1 bytes=67108864 kept=0\n";
        assert_eq!(download_phase_in(log, "abc"), Some((Duration::from_micros(95_272), 67_108_864)));
        assert_eq!(download_phase_in(log, "missing"), None);
    }

    #[test]
    fn log_problems_counts_warnings_and_errors_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("core.log");
        std::fs::write(
            &file,
            "2026-12-07T01:00:00Z  INFO a: fine\n\
             2026-12-07T01:00:01Z  WARN a::b: retrying call=1\n\
             2026-12-07T01:00:02Z  WARN a::b: retrying call=2\n\
             2026-12-07T01:00:03Z ERROR a::c: gave up\n",
        )
        .unwrap();
        assert_eq!(
            log_problems("logs", &[file]),
            "logs: 3 lines at WARN or ERROR: 2 × `WARN a::b: retrying`; 1 × `ERROR a::c: gave up`"
        );
        assert_eq!(log_problems("none", &[]), "none: no line at WARN or ERROR");
    }

    #[test]
    fn the_shipped_policy_gets_connect_for_the_thing() {
        let doc = core_policy("us-east-1", "000000000000").unwrap();
        assert!(doc.contains("arn:aws:iot:us-east-1:000000000000:client/${iot:Connection.Thing.ThingName}"));
        assert!(doc.contains("namespace-aws-gg-deployment") && !doc.contains("{{"));
    }

    #[test]
    fn the_goal_needs_fifty_cores_in_time_and_a_right_cloud_view() {
        let d = |cores: usize, last: u64, view_ok: bool| Deployment {
            cores,
            artifact_bytes: 1,
            rollout: Some(25),
            create: Duration::ZERO,
            succeeded: vec![Duration::from_secs(last); cores],
            failed: Vec::new(),
            unfinished: 0,
            last_queued: None,
            queued_to_succeeded: Vec::new(),
            view: View {
                effective_ok: cores,
                installed_ok: if view_ok { cores } else { 0 },
                mismatches: Vec::new(),
                settled_after: None,
            },
            rss: Rss::default(),
            job_id: "j".into(),
        };
        assert_eq!(goal_met(&d(50, 119, true)), Some(true), "60 s plus one 60 s window");
        assert_eq!(goal_met(&d(50, 121, true)), Some(false));
        assert_eq!(goal_met(&d(50, 10, false)), Some(false));
        assert_eq!(goal_met(&d(1, 10, true)), None);
    }
}
