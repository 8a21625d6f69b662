//! `--identity`: a device's identity over its life, against the local cloud — onboarding by
//! claim, certificate rotation, and rotations interrupted by SIGKILL of the core process.
//!
//! Set-up: `local-cloud serve` in its own process; through `aws-sdk-iot` (the operator's calls):
//! the cores' IoT policy (the shipped `greengrass-core-deployments.json` with `iot:Connect` for
//! the thing's own client id, as `--deployments` uses it, plus what a rotation needs), a
//! provisioning template that registers `bench-site-{SerialNumber}` with that policy, and a
//! claim (CreateProvisioningClaim) for each onboarding batch. An observer MQTT client subscribed
//! to IoT Core's presence lifecycle events (`$aws/events/presence/+/+`) is how the benchmark
//! sees a core connect, and with which certificate.
//!
//! Measured:
//! - **onboarding**: `device-sim core --provision-by-claim` processes, one alone and then
//!   `cores` at once; each device's time is from just before its process was spawned to the
//!   broker's time stamp of the first `connected` event of its thing's client id (the claim
//!   connection has another client id), i.e. the core connected with the certificate it made
//!   its key for, as the thing the template registered;
//! - **rotation**: [`provision::rotate::rotate`] (the cloud's part, as `provision rotate` runs
//!   it: CreateJob, then following the execution, attaching the new certificate and retiring
//!   the old one), timed from the call to its return with the job SUCCEEDED and the old
//!   certificate deleted; `rotations` times one after another on the single core, then once on
//!   every fleet core at the same time;
//! - **kills**: `kills` rotations, each on a core started with the hidden
//!   `--rotation-freeze-after-writes N` (N cycling through every record write), SIGKILLed once
//!   it logs that it froze there, then started again without the flag while the rotation's cloud
//!   step runs on. A device has a working certificate when, after the job ended, its thing has
//!   exactly one certificate, ACTIVE, and the broker's last presence event for its client id is
//!   a connection after the restart presenting that certificate. At the end every ACTIVE
//!   certificate attached to no thing (other than the claims) counts as orphaned.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bench_common::stats::percentile;
use cloud_api::endpoints::Endpoints;
use provision::ClientOptions;
use tokio::sync::watch;

use crate::child::ChildGuard;
use crate::client::{Incoming, Protocol, connect};
use crate::deployments::{notes_section, run_lines, run_log_notes, secs};
use crate::local::spawn;

/// The cores' IoT policy.
const POLICY: &str = "BenchIdentityCorePolicy";
/// The provisioning template.
const TEMPLATE: &str = "BenchIdentitySites";
/// The template's role (kept by the local cloud, not assumed).
const TEMPLATE_ROLE: &str = "BenchIdentityProvisioning";
/// The observer's thing and client id.
const OBSERVER: &str = "bench-identity-observer";
/// The observer's IoT policy.
const OBSERVER_POLICY: &str = "BenchIdentityObserverPolicy";
/// The single core's serial number.
const SINGLE_SERIAL: &str = "alone";
/// Record writes of a whole rotation (`core::rotation`): the request naming the key, the
/// certificate, the switch, the commit, the end.
pub const WRITE_POINTS: usize = 5;
/// The write that commits: a kill before it ends FAILED, from it on SUCCEEDED.
pub const COMMIT_WRITE: usize = 4;
/// How often `rotate` reads the job execution.
pub const POLL: Duration = Duration::from_millis(20);
/// How long a core may take to onboard, or to connect after a start.
const CONNECT_DEADLINE: Duration = Duration::from_secs(120);
/// How long one rotation may take before the run gives up on it.
const ROTATION_DEADLINE: Duration = Duration::from_secs(120);
/// How long a frozen core may take to reach its freeze point.
const FREEZE_DEADLINE: Duration = Duration::from_secs(60);
/// How long a restarted core may take to be back on one working certificate.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(60);
/// How long a core gets to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often the benchmark reads a log file or the registry while it waits on them.
const LOOK_EVERY: Duration = Duration::from_millis(20);
/// The goals: interrupted rotations judged, and how many may leave a device without a
/// working certificate (none).
const GOAL_KILLS: usize = 50;
/// The line a core logs when its rotation froze at the injected point.
const FROZEN_LINE: &str = "certificate rotation frozen after a record write";

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `local-cloud` binary.
    pub local_cloud_bin: PathBuf,
    /// The `device-sim` binary.
    pub device_sim_bin: PathBuf,
    /// Cores onboarded at once, each rotated once at the same time; the kills go round them.
    pub cores: usize,
    /// Rotations interrupted by SIGKILL.
    pub kills: usize,
    /// Rotations one after another on the single core.
    pub rotations: usize,
}

/// Nearest-rank p50, p95 and the largest of a set of times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// Largest.
    pub max: Duration,
}

/// The [`Spread`] of `times`; `None` without any.
pub fn spread(times: &[Duration]) -> Option<Spread> {
    let mut ns: Vec<u64> = times.iter().map(|d| d.as_nanos() as u64).collect();
    ns.sort_unstable();
    let max = *ns.last()?;
    Some(Spread {
        count: ns.len(),
        p50: Duration::from_nanos(percentile(&ns, 50.0)),
        p95: Duration::from_nanos(percentile(&ns, 95.0)),
        max: Duration::from_nanos(max),
    })
}

/// One lifecycle event of IoT Core's presence topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEvent {
    /// The client id.
    pub client_id: String,
    /// `connected` (else `disconnected`).
    pub connected: bool,
    /// The certificate id the connection presented.
    pub principal: String,
    /// The broker's time stamp, ms since the epoch.
    pub timestamp_ms: u64,
    /// Increases with every connection of a client id; connect and disconnect share it.
    pub version: u64,
}

impl PresenceEvent {
    /// Parses a presence event's payload; `None` for anything else.
    pub fn parse(payload: &[u8]) -> Option<PresenceEvent> {
        let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
        Some(PresenceEvent {
            client_id: v["clientId"].as_str()?.to_owned(),
            connected: match v["eventType"].as_str()? {
                "connected" => true,
                "disconnected" => false,
                _ => return None,
            },
            principal: v["principalIdentifier"].as_str().unwrap_or_default().to_owned(),
            timestamp_ms: v["timestamp"].as_u64()?,
            version: v["versionNumber"].as_u64().unwrap_or(0),
        })
    }
}

/// The first connection of `client_id` at or after `since_ms`.
pub fn first_connection<'a>(events: &'a [PresenceEvent], client_id: &str, since_ms: u64) -> Option<&'a PresenceEvent> {
    events
        .iter()
        .filter(|e| e.client_id == client_id && e.connected && e.timestamp_ms >= since_ms)
        .min_by_key(|e| e.timestamp_ms)
}

/// Where `client_id` stands: the event of its newest connection (its disconnect, if that came).
pub fn presence<'a>(events: &'a [PresenceEvent], client_id: &str) -> Option<&'a PresenceEvent> {
    events.iter().filter(|e| e.client_id == client_id).max_by_key(|e| (e.version, !e.connected))
}

/// Whether `client_id` is connected now, since `since_ms`, presenting `certificate`.
pub fn connected_with(events: &[PresenceEvent], client_id: &str, since_ms: u64, certificate: &str) -> bool {
    presence(events, client_id).is_some_and(|e| e.connected && e.timestamp_ms >= since_ms && e.principal == certificate)
}

/// One batch of onboardings.
#[derive(Debug, Clone)]
pub struct Onboarding {
    /// Each device, from its spawn to its thing's first connection.
    pub times: Vec<Duration>,
    /// From the first spawn to the last device's connection.
    pub batch: Duration,
}

/// One interrupted rotation.
#[derive(Debug, Clone)]
pub struct Kill {
    /// The record write the core was killed after.
    pub write: usize,
    /// The job execution's end as the cloud's step saw it.
    pub status: String,
    /// Whether the device came back connected with exactly one working certificate.
    pub working: bool,
    /// When working: whether that certificate is the rotation's new one (else the one before).
    pub on_new: Option<bool>,
    /// What was wrong, when not working.
    pub problem: Option<String>,
}

impl Kill {
    /// Whether it ended as a kill at its write point should: before the commit the job FAILED
    /// and the device works on the certificate it had; from the commit on the job SUCCEEDED and
    /// the device works on the new one.
    pub fn as_expected(&self) -> bool {
        let committed = self.write >= COMMIT_WRITE;
        self.status == if committed { "SUCCEEDED" } else { "FAILED" } && self.on_new == Some(committed)
    }
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct IdentityResult {
    /// Policies, template and the observer's connection.
    pub setup_in: Duration,
    /// The single core.
    pub alone: Onboarding,
    /// The fleet, started at once.
    pub fleet: Onboarding,
    /// The single core's rotations, one after another.
    pub sequential: Vec<Duration>,
    /// One rotation on every fleet core at once.
    pub concurrent: Vec<Duration>,
    /// From the first to the last concurrent rotation's end.
    pub concurrent_batch: Duration,
    /// Rotations that did not end SUCCEEDED with the old certificate gone.
    pub rotation_failures: Vec<String>,
    /// The interrupted rotations.
    pub kills: Vec<Kill>,
    /// ACTIVE certificates attached to no thing at the end (not the claims).
    pub orphaned: Vec<String>,
    /// Bench things with other than one certificate at the end.
    pub things_not_one: Vec<String>,
    /// Warnings and errors the cores and the local cloud logged, summarized.
    pub log_notes: Vec<String>,
}

/// The SDK clients, through `provision`'s code path, signing with the administrator's key pair.
#[derive(Clone)]
struct Clients {
    options: ClientOptions,
    iot: aws_sdk_iot::Client,
    data: aws_sdk_iotdataplane::Client,
}

/// A core whose identity comes from a claim: its root keeps it across starts.
struct Core {
    thing: String,
    root: PathBuf,
    claim: PathBuf,
    logs: PathBuf,
    starts: usize,
    log: PathBuf,
    process: Option<ChildGuard>,
}

impl Core {
    /// A core with serial number `serial` that onboards with the claim in `claim_dir`: writes
    /// its plugin configuration (its `SerialNumber`, and `deviceId` as the claim's client id).
    fn new(work: &Path, serial: &str, claim_dir: &Path) -> anyhow::Result<Core> {
        let thing = thing_name(serial);
        let config = serde_json::json!({
            "provisioningTemplate": TEMPLATE,
            "claimCertificatePath": claim_dir.join("claim.pem"),
            "claimCertificatePrivateKeyPath": claim_dir.join("claim.key"),
            "templateParameters": {"SerialNumber": serial},
            "deviceId": format!("claim-{serial}"),
        });
        let claim = claim_dir.join(format!("{thing}.json"));
        std::fs::write(&claim, serde_json::to_vec_pretty(&config)?)?;
        Ok(Core {
            root: work.join("cores").join(&thing),
            logs: work.join("logs"),
            claim,
            starts: 0,
            log: PathBuf::new(),
            process: None,
            thing,
        })
    }

    /// Starts the core (each start logs to its own file); returns the moment just before the
    /// spawn, ms since the epoch.
    fn start(&mut self, bin: &Path, endpoints: &Path, freeze: Option<usize>) -> anyhow::Result<u64> {
        self.starts += 1;
        std::fs::create_dir_all(&self.logs)?;
        self.log = self.logs.join(format!("{}.{}.log", self.thing, self.starts));
        let mut cmd = Command::new(bin);
        cmd.arg("core")
            .arg("--root")
            .arg(&self.root)
            .arg("--cloud")
            .arg(endpoints)
            .arg("--provision-by-claim")
            .arg(&self.claim)
            .arg("--cloud-deployments")
            .args(["--fleet-status-interval-secs", "86400"])
            .arg("--certificate-rotation")
            // Info: the onboarding and rotation lines are read back.
            .env("RUST_LOG", "info");
        if let Some(n) = freeze {
            cmd.args(["--rotation-freeze-after-writes", &n.to_string()]);
        }
        let at = now_ms();
        self.process = Some(ChildGuard::spawn(&self.thing, cmd, &self.log)?);
        Ok(at)
    }

    /// SIGTERM, then waits (SIGKILL after [`STOP_GRACE`]).
    async fn stop(&mut self) {
        let Some(mut process) = self.process.take() else { return };
        process.ask_to_stop();
        let until = Instant::now() + STOP_GRACE;
        while process.exited().is_none() && Instant::now() < until {
            tokio::time::sleep(LOOK_EVERY).await;
        }
        process.kill();
    }

    /// SIGKILL, at once.
    fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Fails with the log's tail if the process has exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.process.as_mut().and_then(ChildGuard::exited) {
            anyhow::bail!("core {} exited ({status}):\n{}", self.thing, tail(&self.log));
        }
        Ok(())
    }
}

/// The last lines of a log.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(10).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

fn thing_name(serial: &str) -> String {
    format!("bench-site-{serial}")
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The presence events the observer has seen so far.
type Presence = watch::Receiver<Vec<PresenceEvent>>;

/// Runs the benchmark in `work` (a fresh directory).
pub async fn run(options: &Options, work: &Path) -> anyhow::Result<IdentityResult> {
    anyhow::ensure!(options.cores > 0, "--cores must be at least 1");
    anyhow::ensure!(options.rotations > 0, "--rotations must be at least 1");
    anyhow::ensure!(options.device_sim_bin.is_file(), "{} does not exist", options.device_sim_bin.display());
    let data_dir = work.join("local-cloud");
    let (cloud, endpoints, ca_pem) = spawn(&options.local_cloud_bin, &data_dir).await?;
    let endpoints_file = data_dir.join("endpoints.json");
    let client_options = ClientOptions::for_local_cloud(&endpoints)?;
    let clients = Clients {
        iot: provision::iot_client(&client_options).await,
        data: provision::iot_data_client(&client_options).await,
        options: client_options,
    };

    let started = Instant::now();
    clients
        .iot
        .create_policy()
        .policy_name(POLICY)
        .policy_document(rotating_core_policy(&endpoints.region, &endpoints.account_id)?)
        .send()
        .await
        .context("CreatePolicy (the cores')")?;
    create_template(&clients.iot, &endpoints).await?;
    let presence = observe_presence(&clients.iot, &endpoints, ca_pem, cloud.pid()).await?;
    let setup_in = started.elapsed();
    eprintln!("policies, template and observer ready in {:.2} s", setup_in.as_secs_f64());

    let mut claims = HashSet::new();
    let alone_claim = claim(&clients.iot, work, "alone", &mut claims).await?;
    let mut alone = vec![Core::new(work, SINGLE_SERIAL, &alone_claim)?];
    let fleet_claim = claim(&clients.iot, work, "fleet", &mut claims).await?;
    let mut fleet: Vec<Core> =
        (0..options.cores).map(|i| Core::new(work, &format!("{i:03}"), &fleet_claim)).collect::<Result<_, _>>()?;

    let outcome = async {
        let bin = &options.device_sim_bin;
        let alone_onboarding =
            onboard(bin, &endpoints_file, &mut alone, &presence).await.context("onboarding alone")?;
        eprintln!("onboarded 1 core in {:.2} s", alone_onboarding.batch.as_secs_f64());
        let fleet_onboarding =
            onboard(bin, &endpoints_file, &mut fleet, &presence).await.context("onboarding the fleet")?;
        eprintln!("onboarded {} cores at once in {:.2} s", fleet.len(), fleet_onboarding.batch.as_secs_f64());

        let mut rotation_failures = Vec::new();
        let mut sequential = Vec::new();
        for i in 0..options.rotations {
            let (took, problem) = timed_rotation(&clients, &alone[0].thing, &format!("rotate-alone-{i}")).await?;
            sequential.push(took);
            rotation_failures.extend(problem);
        }
        eprintln!("{} rotations one after another on one core", sequential.len());
        let batch_started = Instant::now();
        let rotations = futures::future::join_all(fleet.iter().map(|core| {
            let (clients, thing) = (&clients, core.thing.as_str());
            async move { timed_rotation(clients, thing, &format!("rotate-{thing}")).await }
        }))
        .await;
        let concurrent_batch = batch_started.elapsed();
        let mut concurrent = Vec::new();
        for r in rotations {
            let (took, problem) = r?;
            concurrent.push(took);
            rotation_failures.extend(problem);
        }
        eprintln!("{} rotations at once in {:.2} s", concurrent.len(), concurrent_batch.as_secs_f64());

        // Kill `i` goes to fleet core `i % cores`, after write `i % WRITE_POINTS + 1`.
        let mut plans: Vec<Vec<(usize, usize)>> = vec![Vec::new(); fleet.len()];
        for i in 0..options.kills {
            plans[i % fleet.len()].push((i, i % WRITE_POINTS + 1));
        }
        let per_core = futures::future::join_all(
            fleet
                .iter_mut()
                .zip(plans)
                .map(|(core, plan)| kill_rounds(bin, &endpoints_file, &clients, core, plan, &presence)),
        )
        .await;
        let mut kills = Vec::new();
        for rounds in per_core {
            kills.extend(rounds?);
        }
        kills.sort_by_key(|k| k.write);
        eprintln!(
            "{} interrupted rotations; {} left without a working certificate",
            kills.len(),
            kills.iter().filter(|k| !k.working).count()
        );

        let mut things: Vec<&str> = fleet.iter().chain(&alone).map(|c| c.thing.as_str()).collect();
        things.sort_unstable();
        let (orphaned, things_not_one) = final_check(&clients, &things, &claims).await?;
        let core_logs: Vec<PathBuf> =
            std::fs::read_dir(work.join("logs"))?.filter_map(|e| Some(e.ok()?.path())).collect();
        let log_notes = run_log_notes(core_logs, &data_dir);
        anyhow::Ok(IdentityResult {
            setup_in,
            alone: alone_onboarding,
            fleet: fleet_onboarding,
            sequential,
            concurrent,
            concurrent_batch,
            rotation_failures,
            kills,
            orphaned,
            things_not_one,
            log_notes,
        })
    }
    .await;
    for core in fleet.iter_mut().chain(alone.iter_mut()) {
        if let Some(p) = core.process.as_mut() {
            p.ask_to_stop();
        }
    }
    drop(fleet);
    drop(alone);
    cloud.stop();
    outcome
}

/// The cores' IoT policy, scoped to the thing: connect as itself; its own `$aws/things/{thing}/`
/// topics (the Greengrass deployment jobs and shadow, fleet status, the rotation's Jobs topics and
/// classic shadow `get`); CreateCertificateFromCsr; the cloud's attach notice; the Greengrass
/// data plane. The shipped `greengrass-core-deployments.json` plus the rotation's topics one by
/// one would pass IoT Core's 2,048-character limit, hence the thing-wide topic wildcard.
fn rotating_core_policy(region: &str, account: &str) -> anyhow::Result<String> {
    let arn = |resource: &str| format!("arn:aws:iot:{region}:{account}:{resource}");
    let thing = "${iot:Connection.Thing.ThingName}";
    let doc = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": arn(&format!("client/{thing}"))},
        {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": [
            arn(&format!("topic/$aws/things/{thing}/*")),
            arn("topic/$aws/certificates/create-from-csr/json*"),
            arn(&format!("topic/cmd/{thing}/certificate-rotation")),
        ]},
        {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": [
            arn(&format!("topicfilter/$aws/things/{thing}/*")),
            arn("topicfilter/$aws/certificates/create-from-csr/json/*"),
            arn(&format!("topicfilter/cmd/{thing}/certificate-rotation")),
        ]},
        {"Effect": "Allow", "Action": [
            "greengrass:GetComponentVersionArtifact",
            "greengrass:ResolveComponentCandidates",
            "greengrass:GetDeploymentConfiguration",
            "greengrass:ListThingGroupsForCoreDevice",
        ], "Resource": "*"},
    ]});
    let doc = doc.to_string();
    anyhow::ensure!(doc.len() <= 2048, "the cores' policy has {} characters, more than IoT Core's 2,048", doc.len());
    Ok(doc)
}

/// CreateProvisioningTemplate: `bench-site-{SerialNumber}`, its certificate ACTIVE, the cores' policy.
async fn create_template(iot: &aws_sdk_iot::Client, endpoints: &Endpoints) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "Parameters": {"SerialNumber": {"Type": "String"}},
        "Resources": {
            "thing": {"Type": "AWS::IoT::Thing", "Properties": {
                "ThingName": {"Fn::Join": ["", [thing_name(""), {"Ref": "SerialNumber"}]]}}},
            "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {
                "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"}},
            "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": POLICY}}
        }
    });
    iot.create_provisioning_template()
        .template_name(TEMPLATE)
        .template_body(body.to_string())
        .enabled(true)
        .provisioning_role_arn(format!("arn:aws:iam::{}:role/{TEMPLATE_ROLE}", endpoints.account_id))
        .send()
        .await
        .context("CreateProvisioningTemplate")?;
    Ok(())
}

/// CreateProvisioningClaim, its certificate and key written into a directory of their own
/// (returned); notes the claim certificate's id in `claims`.
async fn claim(
    iot: &aws_sdk_iot::Client,
    work: &Path,
    name: &str,
    claims: &mut HashSet<String>,
) -> anyhow::Result<PathBuf> {
    let got =
        iot.create_provisioning_claim().template_name(TEMPLATE).send().await.context("CreateProvisioningClaim")?;
    claims.insert(got.certificate_id().context("CreateProvisioningClaim: no certificateId")?.to_owned());
    let dir = work.join("claims").join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("claim.pem"),
        got.certificate_pem().context("CreateProvisioningClaim: no certificatePem")?,
    )?;
    let key = got.key_pair().and_then(|k| k.private_key()).context("CreateProvisioningClaim: no private key")?;
    std::fs::write(dir.join("claim.key"), key)?;
    Ok(dir)
}

/// An observer connected to the broker, subscribed to every presence event.
async fn observe_presence(
    iot: &aws_sdk_iot::Client,
    endpoints: &Endpoints,
    ca_pem: String,
    cloud_pid: u32,
) -> anyhow::Result<Presence> {
    let arn = |resource: &str| format!("arn:aws:iot:{}:{}:{resource}", endpoints.region, endpoints.account_id);
    let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": arn(&format!("client/{OBSERVER}"))},
        {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": arn("topicfilter/$aws/events/presence/*")},
        {"Effect": "Allow", "Action": "iot:Receive", "Resource": arn("topic/$aws/events/presence/*")}
    ]});
    iot.create_policy()
        .policy_name(OBSERVER_POLICY)
        .policy_document(policy.to_string())
        .send()
        .await
        .context("CreatePolicy (the observer's)")?;
    let (name, identity) = crate::local::thing(iot, OBSERVER.to_owned(), OBSERVER_POLICY).await?;
    let target =
        crate::local::target(endpoints, ca_pem, cloud_pid, HashMap::from([(name, identity.clone())]), identity)?;
    let (client, mut events) = connect(&target, OBSERVER, Protocol::V311, 10).await?;
    client.subscribe(&["$aws/events/presence/+/+".to_owned()]).await.map_err(anyhow::Error::msg)?;
    events
        .wait_for("SUBACK", |e| if let Incoming::SubAck(r) = e { Some(r) } else { None })
        .await?
        .map_err(|codes| anyhow::anyhow!("the presence subscription was refused: {codes}"))?;
    let (tx, rx) = watch::channel(Vec::new());
    tokio::spawn(async move {
        let _client = client;
        while let Ok(event) = events.poll().await {
            if let Incoming::Publish(m) = event
                && let Some(e) = PresenceEvent::parse(&m.payload)
            {
                tx.send_modify(|all| all.push(e));
            }
        }
        eprintln!("the presence observer's connection ended");
    });
    Ok(rx)
}

/// Waits until the presence events satisfy `ready` (see [`first_connection`], [`connected_with`]).
async fn wait_presence<T>(
    presence: &Presence,
    what: &str,
    deadline: Duration,
    ready: impl Fn(&[PresenceEvent]) -> Option<T>,
) -> anyhow::Result<T> {
    let mut rx = presence.clone();
    let seen = tokio::time::timeout(deadline, rx.wait_for(|events| ready(events).is_some())).await;
    match seen {
        Ok(Ok(events)) => ready(&events).context("presence changed while read"),
        Ok(Err(_)) => anyhow::bail!("{what}: the presence observer stopped"),
        Err(_) => anyhow::bail!("{what}: not within {deadline:?}"),
    }
}

/// Starts every core of `cores` at once, onboarding by claim, and waits for each one's thing to connect.
async fn onboard(bin: &Path, endpoints: &Path, cores: &mut [Core], presence: &Presence) -> anyhow::Result<Onboarding> {
    let mut spawned = Vec::new();
    for core in cores.iter_mut() {
        spawned.push(core.start(bin, endpoints, None)?);
    }
    let deadline = Instant::now() + CONNECT_DEADLINE;
    let mut times = Vec::new();
    let mut last = 0;
    for (core, &at) in cores.iter_mut().zip(&spawned) {
        let thing = core.thing.clone();
        let left = deadline.saturating_duration_since(Instant::now());
        let connected = match wait_presence(presence, &format!("{thing} to onboard and connect"), left, |events| {
            first_connection(events, &thing, at).map(|e| e.timestamp_ms)
        })
        .await
        {
            Ok(ms) => ms,
            Err(e) => {
                core.check_running()?;
                return Err(e.context(tail(&core.log)));
            }
        };
        times.push(Duration::from_millis(connected.saturating_sub(at)));
        last = last.max(connected);
    }
    let first = spawned.iter().copied().min().unwrap_or(last);
    Ok(Onboarding { times, batch: Duration::from_millis(last.saturating_sub(first)) })
}

/// The certificate ids attached to `thing`.
async fn thing_certificates(iot: &aws_sdk_iot::Client, thing: &str) -> anyhow::Result<Vec<String>> {
    let listed = iot.list_thing_principals().thing_name(thing).send().await.context("ListThingPrincipals")?;
    Ok(listed.principals().iter().map(|arn| arn.rsplit('/').next().unwrap_or(arn).to_owned()).collect())
}

/// One rotation through `provision`'s cloud step, timed from the call to its return; the
/// problem if it did not end SUCCEEDED with the old certificate deleted.
async fn timed_rotation(clients: &Clients, thing: &str, job: &str) -> anyhow::Result<(Duration, Option<String>)> {
    let old = thing_certificates(&clients.iot, thing).await?;
    let started = Instant::now();
    let outcome = provision::rotate::rotate(&clients.iot, &clients.data, thing, job, POLL, ROTATION_DEADLINE)
        .await
        .with_context(|| format!("rotating {thing}"))?;
    let took = started.elapsed();
    let gone = match old.first() {
        Some(id) => clients.iot.describe_certificate().certificate_id(id).send().await.is_err(),
        None => false,
    };
    let problem = (outcome.status != "SUCCEEDED" || outcome.timed_out || !gone).then(|| {
        format!(
            "{thing} {job}: {}{}{} {:?}",
            outcome.status,
            if outcome.timed_out { " (timed out)" } else { "" },
            if gone { "" } else { ", the old certificate still exists" },
            outcome.details
        )
    });
    Ok((took, problem))
}

/// `core`'s share of the interrupted rotations: for each `(index, write)`, started with the
/// rotation frozen after `write`, a rotation, SIGKILL when frozen, a start without the freeze,
/// and the check.
async fn kill_rounds(
    bin: &Path,
    endpoints: &Path,
    clients: &Clients,
    core: &mut Core,
    plan: Vec<(usize, usize)>,
    presence: &Presence,
) -> anyhow::Result<Vec<Kill>> {
    let mut kills = Vec::new();
    for (index, write) in plan {
        core.stop().await;
        let started = core.start(bin, endpoints, Some(write))?;
        let thing = core.thing.clone();
        let what = format!("{thing} (kill {index}) to connect");
        wait_presence(presence, &what, CONNECT_DEADLINE, |events| {
            first_connection(events, &thing, started).map(|_| ())
        })
        .await?;
        let job = format!("kill-{index}-after-{write}");
        let before = thing_certificates(&clients.iot, &thing).await?;
        let rotation = tokio::spawn({
            let clients = clients.clone();
            let (thing, job) = (thing.clone(), job.clone());
            async move {
                provision::rotate::rotate(&clients.iot, &clients.data, &thing, &job, POLL, ROTATION_DEADLINE).await
            }
        });
        let frozen_until = Instant::now() + FREEZE_DEADLINE;
        loop {
            if std::fs::read_to_string(&core.log).is_ok_and(|t| t.contains(FROZEN_LINE)) {
                break;
            }
            core.check_running()?;
            // Before the last write the core holds the job back until it is frozen; the last write
            // (the end) comes once the cloud took the SUCCEEDED report, so the job may be over.
            anyhow::ensure!(
                !rotation.is_finished() || write == WRITE_POINTS,
                "{thing}: the rotation {job} ended before the core froze after write {write}:\n{}",
                tail(&core.log)
            );
            anyhow::ensure!(
                Instant::now() < frozen_until,
                "{thing}: the rotation {job} did not freeze after write {write} within {FREEZE_DEADLINE:?}"
            );
            tokio::time::sleep(LOOK_EVERY).await;
        }
        core.kill();
        let restarted = core.start(bin, endpoints, None)?;
        let outcome = rotation.await.context("the rotation task")?.with_context(|| format!("{thing}: {job}"))?;
        let status = if outcome.timed_out { format!("{} (timed out)", outcome.status) } else { outcome.status.clone() };
        // Working: one certificate, ACTIVE, and the core connected with it since the restart.
        let recovered_until = Instant::now() + RECOVERY_DEADLINE;
        let working = loop {
            let certificates = thing_certificates(&clients.iot, &thing).await?;
            let working = match certificates.as_slice() {
                [id] => {
                    let active = clients
                        .iot
                        .describe_certificate()
                        .certificate_id(id)
                        .send()
                        .await
                        .ok()
                        .and_then(|d| d.certificate_description?.status)
                        .is_some_and(|s| s == aws_sdk_iot::types::CertificateStatus::Active);
                    if !active {
                        Err(format!("its one certificate {id} is not ACTIVE"))
                    } else if !connected_with(&presence.borrow(), &thing, restarted, id) {
                        Err(format!(
                            "not connected with its certificate {id} since the restart (last presence: {:?})",
                            crate::identity::presence(&presence.borrow(), &thing)
                        ))
                    } else {
                        Ok(id.clone())
                    }
                }
                other => Err(format!("{} certificates attached: {other:?}", other.len())),
            };
            if working.is_ok() || Instant::now() >= recovered_until {
                break working;
            }
            core.check_running()?;
            tokio::time::sleep(LOOK_EVERY.max(Duration::from_millis(100))).await;
        };
        kills.push(Kill {
            write,
            status,
            working: working.is_ok(),
            on_new: working.as_ref().ok().map(|id| !before.contains(id)),
            problem: working.err().map(|p| format!("{thing}, killed after write {write} ({job}): {p}")),
        });
    }
    Ok(kills)
}

/// At the end: ACTIVE certificates attached to no thing (the claims aside), and things with
/// other than one certificate — read as the security audit reads the account.
async fn final_check(
    clients: &Clients,
    things: &[&str],
    claims: &HashSet<String>,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let iam = provision::iam_client(&clients.options).await;
    let account = provision::audit::read_account(&clients.iot, &iam).await.context("reading the account")?;
    let orphaned = account
        .certificates
        .iter()
        .filter(|c| c.status == "ACTIVE" && c.things.is_empty() && !claims.contains(&c.id))
        .map(|c| c.id.clone())
        .collect();
    let mut not_one = Vec::new();
    for thing in things {
        let n = thing_certificates(&clients.iot, thing).await?.len();
        if n != 1 {
            not_one.push(format!("{thing}: {n} certificates"));
        }
    }
    Ok((orphaned, not_one))
}

fn spread_cells(times: &[Duration]) -> String {
    match spread(times) {
        Some(s) => format!("{} / {} / {}", secs(s.p50), secs(s.p95), secs(s.max)),
        None => "–".into(),
    }
}

/// Whether the kill goal is met: at least [`GOAL_KILLS`] interrupted rotations, none leaving
/// a device without a working certificate, and no orphaned ACTIVE certificate.
pub fn kill_goal(kills: &[Kill], orphaned: usize) -> Option<bool> {
    (kills.len() >= GOAL_KILLS).then(|| kills.iter().all(|k| k.working) && orphaned == 0)
}

/// The `docs/benchmarks.md` section's body.
pub fn markdown(r: &IdentityResult, o: &Options, command: &str, machine: &str, build: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Device identity: onboarding by claim, certificate rotation, rotations killed at every write\n"
    );
    run_lines(&mut out, command, machine, build, "MQTT over mTLS, HTTP");
    let _ = writeln!(
        out,
        "- Set-up (in {} s, `aws-sdk-iot` through `provision`'s clients): the cores' IoT policy, scoped to the \
         thing (`iot:Connect` for its own client id; its own `$aws/things/{{thing}}/*` topics, which hold the \
         Greengrass deployment and the rotation's Jobs and classic-shadow `get` topics; CreateCertificateFromCsr; \
         `cmd/{{thing}}/certificate-rotation`; the Greengrass data plane); CreateProvisioningTemplate \
         registering `bench-site-{{SerialNumber}}` with an ACTIVE certificate and that policy; one \
         CreateProvisioningClaim for the core alone and one for the fleet. Each core is \
         `device-sim core --provision-by-claim FILE --cloud-deployments --certificate-rotation` (keys as \
         files; the plugin's configuration with its own `SerialNumber` and `deviceId`), started with an empty \
         root. An observer client (MQTT 3.1.1, mTLS) is subscribed to \
         `$aws/events/presence/+/+`.",
        secs(r.setup_in)
    );
    let _ = writeln!(
        out,
        "- Method. Onboarding: from just before the process was spawned to the broker's time stamp (ms) on the \
         first `connected` lifecycle event of the thing's client id — the connection the core opens as its thing \
         with the certificate it got for the key it made (the claim's connection has the client id \
         `claim-{{serial}}`); one core alone, then {} at once. Rotation: `provision::rotate::rotate`, the cloud's \
         part that `provision rotate` runs (ListThingPrincipals, DescribeThing, CreateJob with \
         `{{\"operation\":\"ROTATE_CERTIFICATE\"}}`, then DescribeJobExecution every {} ms: activate and attach the \
         new certificate, notify the core, and on SUCCEEDED deactivate, detach and delete the old one), timed \
         from the call to its return; afterwards DescribeCertificate confirms the old certificate is gone. {} \
         rotations one after another on the core alone, then one on each of the {} fleet cores at the same \
         time. Kills: {} rotations, kill `i` on fleet core `i mod {}` started with the hidden \
         `--rotation-freeze-after-writes N`, N = `i mod {WRITE_POINTS} + 1` (every record write of a rotation: \
         the request naming the key, the certificate, the switch, the commit, the end — written once the cloud \
         took the SUCCEEDED report, so the cloud's part may be over by then); once its log says it froze, \
         SIGKILL, and the core is started again without the flag on the same root while `rotate` runs on. \
         The device has a working certificate if, after `rotate` returned, within {} s: its thing has \
         exactly one certificate, it is ACTIVE, and the broker's newest presence event for the thing's client \
         id is a connection made after the restart presenting that certificate. At the end, every ACTIVE \
         certificate of the account attached to no thing, other than the two claims, is orphaned (read as \
         `provision audit` reads the account).\n",
        o.cores,
        POLL.as_millis(),
        o.rotations,
        o.cores,
        o.kills,
        o.cores,
        RECOVERY_DEADLINE.as_secs()
    );
    let _ = writeln!(out, "| figure | value |");
    let _ = writeln!(out, "| --- | ---: |");
    let row = |out: &mut String, figure: String, value: String| {
        let _ = writeln!(out, "| {figure} | {value} |");
    };
    row(
        &mut out,
        "onboarding by claim, one core alone: spawn → connected as its thing, s".into(),
        spread_cells(&r.alone.times),
    );
    row(
        &mut out,
        format!("onboarding by claim, {} cores at once: per device p50 / p95 / max, s", r.fleet.times.len()),
        spread_cells(&r.fleet.times),
    );
    row(
        &mut out,
        format!("onboarding by claim, {} cores at once: first spawn → last connected, s", r.fleet.times.len()),
        secs(r.fleet.batch),
    );
    row(
        &mut out,
        format!("rotation, one core, {} one after another: p50 / p95 / max, s", r.sequential.len()),
        spread_cells(&r.sequential),
    );
    row(
        &mut out,
        format!("rotation, {} cores at once: p50 / p95 / max, s", r.concurrent.len()),
        spread_cells(&r.concurrent),
    );
    row(
        &mut out,
        format!("rotation, {} cores at once: first call → last return, s", r.concurrent.len()),
        secs(r.concurrent_batch),
    );
    row(
        &mut out,
        "rotations not SUCCEEDED with the old certificate deleted".into(),
        format!("{} of {}", r.rotation_failures.len(), r.sequential.len() + r.concurrent.len()),
    );
    let mut by_write: BTreeMap<usize, (usize, BTreeMap<String, usize>, usize, usize)> = BTreeMap::new();
    for k in &r.kills {
        let entry = by_write.entry(k.write).or_default();
        entry.0 += 1;
        *entry.1.entry(k.status.clone()).or_default() += 1;
        entry.2 += usize::from(k.working);
        entry.3 += usize::from(k.on_new == Some(true));
    }
    for (write, (n, statuses, working, on_new)) in &by_write {
        let ends: Vec<String> = statuses.iter().map(|(s, c)| format!("{c} {s}")).collect();
        row(
            &mut out,
            format!(
                "killed after write {write}{}: job ended / working afterwards (of them on the new certificate)",
                write_name(*write)
            ),
            format!("{} / {working} of {n} ({on_new})", ends.join(", ")),
        );
    }
    let broken = r.kills.iter().filter(|k| !k.working).count();
    row(&mut out, "devices left without a working certificate".into(), format!("{broken} of {}", r.kills.len()));
    row(&mut out, "orphaned ACTIVE certificates (attached to no thing)".into(), r.orphaned.len().to_string());
    row(&mut out, "things with other than one certificate at the end".into(), r.things_not_one.len().to_string());

    let _ = writeln!(out, "\n### Goals\n");
    let verdict = match kill_goal(&r.kills, r.orphaned.len()) {
        Some(true) => "**met**",
        Some(false) => "**not met**",
        None => "not judged (fewer than 50 interrupted rotations in this run)",
    };
    let _ = writeln!(
        out,
        "- Rotations interrupted by a kill that left a device without a working certificate: 0 of at least \
         {GOAL_KILLS}, and no orphaned ACTIVE certificate: {verdict} — {broken} of {}, {} orphaned.",
        r.kills.len(),
        r.orphaned.len()
    );
    let expected_ok = r.kills.iter().all(Kill::as_expected);
    let _ = writeln!(
        out,
        "- Kills before the commit (writes 1–{}) end FAILED on the old certificate, kills from the commit on \
         SUCCEEDED on the new one: {}.",
        COMMIT_WRITE - 1,
        if expected_ok { "**met**" } else { "**not met**" }
    );
    let notes: Vec<String> = r
        .rotation_failures
        .iter()
        .cloned()
        .chain(r.kills.iter().filter_map(|k| k.problem.clone()))
        .chain(r.orphaned.iter().map(|id| format!("orphaned ACTIVE certificate {id}")))
        .chain(r.things_not_one.iter().cloned())
        .chain(r.log_notes.iter().cloned())
        .collect();
    notes_section(&mut out, &notes);
    out
}

/// What a record write is, by its position in a rotation.
fn write_name(write: usize) -> &'static str {
    match write {
        1 => " (`keyMade`)",
        2 => " (`certIssued`)",
        3 => " (`switched`)",
        4 => " (`committed`)",
        5 => " (the end)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(client: &str, connected: bool, principal: &str, ts: u64, version: u64) -> PresenceEvent {
        PresenceEvent { client_id: client.into(), connected, principal: principal.into(), timestamp_ms: ts, version }
    }

    #[test]
    fn spread_is_nearest_rank_p50_p95_and_the_largest() {
        let times: Vec<Duration> = (1..=20).rev().map(Duration::from_millis).collect();
        let s = spread(&times).unwrap();
        assert_eq!(s.count, 20);
        assert_eq!(
            (s.p50, s.p95, s.max),
            (Duration::from_millis(10), Duration::from_millis(19), Duration::from_millis(20))
        );
        assert_eq!(spread(&[]), None);
    }

    #[test]
    fn presence_events_parse_from_the_lifecycle_payload() {
        let payload = br#"{"clientId":"bench-site-001","timestamp":1700000000123,"eventType":"connected",
            "sessionIdentifier":"s","principalIdentifier":"abc","ipAddress":"127.0.0.1","versionNumber":3}"#;
        assert_eq!(PresenceEvent::parse(payload), Some(event("bench-site-001", true, "abc", 1_700_000_000_123, 3)));
        assert_eq!(PresenceEvent::parse(br#"{"clientId":"x","eventType":"subscribed","timestamp":1}"#), None);
        assert_eq!(PresenceEvent::parse(b"not json"), None);
    }

    #[test]
    fn onboarding_ends_at_the_things_first_connection_after_the_spawn() {
        let events = [
            event("claim-001", true, "claim", 105, 1),
            event("bench-site-001", true, "old", 90, 1),
            event("bench-site-001", true, "new", 130, 2),
            event("bench-site-001", true, "newer", 150, 3),
        ];
        assert_eq!(first_connection(&events, "bench-site-001", 100).map(|e| e.timestamp_ms), Some(130));
        assert_eq!(first_connection(&events, "bench-site-002", 100), None);
    }

    #[test]
    fn a_device_works_when_its_newest_connection_since_the_restart_presents_the_certificate() {
        let mut events = vec![event("t", true, "old", 100, 1), event("t", false, "old", 200, 1)];
        assert!(!connected_with(&events, "t", 150, "old"), "disconnected");
        events.push(event("t", true, "old", 210, 2));
        assert!(connected_with(&events, "t", 150, "old"));
        assert!(!connected_with(&events, "t", 150, "new"), "another certificate");
        assert!(!connected_with(&events, "t", 300, "old"), "before the restart");
        // A switch: the old connection's disconnect may arrive after the new connection.
        events.push(event("t", true, "new", 220, 3));
        events.push(event("t", false, "old", 221, 2));
        assert!(connected_with(&events, "t", 150, "new"));
    }

    #[test]
    fn the_kill_goal_needs_fifty_kills_all_working_and_no_orphans() {
        let kill = |working| Kill { write: 1, status: "FAILED".into(), working, on_new: Some(false), problem: None };
        assert_eq!(kill_goal(&vec![kill(true); 50], 0), Some(true));
        assert_eq!(kill_goal(&vec![kill(true); 50], 1), Some(false));
        let mut one_broken = vec![kill(true); 49];
        one_broken.push(kill(false));
        assert_eq!(kill_goal(&one_broken, 0), Some(false));
        assert_eq!(kill_goal(&vec![kill(true); 10], 0), None);
    }

    #[test]
    fn a_kill_before_the_commit_fails_on_the_old_certificate_and_from_it_succeeds_on_the_new() {
        let kill =
            |write, status: &str, on_new| Kill { write, status: status.into(), working: true, on_new, problem: None };
        assert!(kill(1, "FAILED", Some(false)).as_expected());
        assert!(kill(3, "FAILED", Some(false)).as_expected());
        assert!(!kill(3, "FAILED", Some(true)).as_expected(), "on a certificate the failed rotation made");
        assert!(!kill(2, "SUCCEEDED", Some(true)).as_expected());
        assert!(kill(4, "SUCCEEDED", Some(true)).as_expected());
        assert!(kill(5, "SUCCEEDED", Some(true)).as_expected());
        assert!(!kill(5, "SUCCEEDED", Some(false)).as_expected(), "back on the deleted certificate");
        assert!(!kill(4, "SUCCEEDED", None).as_expected(), "not working");
    }

    #[test]
    fn the_cores_policy_allows_the_rotation_topics_within_the_size_limit() {
        let doc = rotating_core_policy("us-east-1", "000000000000").unwrap();
        assert!(doc.contains("topic/$aws/things/${iot:Connection.Thing.ThingName}/*"));
        assert!(doc.contains("topic/$aws/certificates/create-from-csr/json*"));
        assert!(doc.contains("topicfilter/cmd/${iot:Connection.Thing.ThingName}/certificate-rotation"));
    }
}
