//! `device-sim fleet --sites 3 --rotation-campaign` against a real local cloud on loopback:
//! three cores onboard by claim as distinct things in the one thing group, each takes the group's
//! deployment of the pump's components, one rotation job to the group gives each a new
//! certificate (the old ones deleted) under the shipped policies, each sends telemetry from its
//! own plant; Ctrl-C stops it all and leaves no process behind.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cloud_api::jobs::JobExecutionStatus;
use site_testkit::cloud::Cloud;
use tokio::io::AsyncBufReadExt as _;

const GROUP: &str = "fleet-test";
const SITES: usize = 3;
/// Onboarding three cores and deploying four components to each, on a shared 2-core machine.
const FLEET_WAIT: Duration = Duration::from_secs(240);

/// The component binaries, next to this package's binary; built when missing (as the demo does
/// under cargo), since `cargo test -p device-sim` does not build other packages' binaries.
fn component_bins() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_device-sim")).parent().unwrap().to_owned();
    let wanted = ["pump-sensor", "pump-analyzer", "pump-controller"];
    if wanted.iter().any(|b| !dir.join(b).is_file()) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "pump-sensor", "-p", "pump-analyzer", "-p", "pump-controller", "--bins"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the component binaries");
    }
    dir
}

/// Reads the fleet's stdout until a line starts with `prefix`; returns every line read.
async fn read_until(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    prefix: &str,
    printed: &mut Vec<String>,
) {
    let found = tokio::time::timeout(FLEET_WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push(line.clone());
            if line.starts_with(prefix) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "the fleet never printed {prefix:?}; it printed {printed:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_three_onboards_by_claim_into_one_group_takes_the_deployment_rotates_sends_telemetry_and_stops_clean()
 {
    let bins = component_bins();
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path(), "unused-core", site_testkit::ALLOW_ALL).await;
    let endpoints = dir.path().join("endpoints.json");
    std::fs::write(&endpoints, serde_json::to_vec(cloud.endpoints()).unwrap()).unwrap();

    let mut fleet = tokio::process::Command::new(env!("CARGO_BIN_EXE_device-sim"))
        .args([
            "fleet",
            "--sites",
            "3",
            "--seed",
            "7",
            "--group",
            GROUP,
            "--faults-per-hour",
            "0",
            "--rotation-campaign",
            "--keep-running",
        ])
        .arg("--cloud")
        .arg(&endpoints)
        .arg("--data-dir")
        .arg(dir.path().join("fleet"))
        .arg("--component-bins")
        .arg(&bins)
        .args(["--wait-secs", &FLEET_WAIT.as_secs().to_string()])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("fleet.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let fleet_pid = fleet.id().unwrap();
    let mut lines = tokio::io::BufReader::new(fleet.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    read_until(&mut lines, "the fleet runs", &mut printed).await;
    // Subscribed once the rotation is over: what it hears came over the new certificates.
    let mut telemetry = cloud.observer(&["dt/pump/+/telemetry"]).await;

    // Three distinct things in the one group, each with its own certificate (made from a key
    // of its own), none of them the claim's.
    let local = cloud.local();
    let things: Vec<String> = local.registry.things_in_thing_group(GROUP, false).unwrap().into_iter().collect();
    let wanted: Vec<String> = (0..SITES).map(|i| format!("{GROUP}-site-{i:04}")).collect();
    assert_eq!(things, wanted, "printed: {printed:#?}");
    // One rotation job to the group: each core committed a new certificate, which is now its
    // only one, and the certificates it onboarded with are gone.
    let all = local.jobs.list_jobs(&local_cloud::jobs::JobFilter::default());
    let rotations: Vec<String> =
        all.iter().map(|j| j.0.spec.job_id.clone()).filter(|id| id.starts_with("rotate-")).collect();
    assert_eq!(rotations.len(), 1, "one rotation job: {rotations:?}");
    for thing in &things {
        let execution = local.jobs.describe_execution(&rotations[0], thing).unwrap();
        assert_eq!(execution.status, JobExecutionStatus::Succeeded, "{thing}: {execution:?}");
        let new_id = execution.status_details.get("newCertificateId").expect("the core reported its new certificate");
        let principals = local.registry.list_thing_principals(thing).unwrap();
        assert!(
            principals.len() == 1 && principals[0].ends_with(&format!("cert/{new_id}")),
            "{thing} has only its new certificate {new_id}: {principals:?}"
        );
    }
    // Every certificate made for a site's key names the site (the CSR's subject): only the new
    // ones are left.
    let of_sites: Vec<(String, String)> = local
        .registry
        .list_certificates()
        .into_iter()
        .filter(|c| c.subject.values().any(|v| v.starts_with(&format!("{GROUP}-site-"))))
        .map(|c| (c.id, format!("{:?}", c.status)))
        .collect();
    assert_eq!(of_sites.len(), SITES, "only the sites' new certificates are left: {of_sites:?}");
    assert!(
        printed.iter().any(|l| l.starts_with("rotation campaign:")
            && l.contains(&format!("{SITES}/{SITES} cores (SUCCEEDED {SITES})"))),
        "{printed:#?}"
    );

    let certificates: BTreeSet<String> = things
        .iter()
        .flat_map(|t| {
            let principals = local.registry.list_thing_principals(t).unwrap();
            assert_eq!(principals.len(), 1, "{t}: {principals:?}");
            principals
        })
        .collect();
    assert_eq!(certificates.len(), SITES, "each core has its own certificate: {certificates:?}");

    // The group's deployment reached each core, and each reported it SUCCEEDED.
    let filter = local_cloud::jobs::JobFilter { thing_group_name: Some(GROUP.into()), ..Default::default() };
    let jobs: Vec<_> =
        local.jobs.list_jobs(&filter).into_iter().filter(|j| !j.0.spec.job_id.starts_with("rotate-")).collect();
    assert_eq!(jobs.len(), 1, "one group deployment: {jobs:?}");
    let job = &jobs[0].0.spec.job_id;
    for thing in &things {
        let execution = local.jobs.describe_execution(job, thing).unwrap();
        assert_eq!(execution.status, JobExecutionStatus::Succeeded, "{thing}: {execution:?}");
    }
    assert!(printed.iter().any(|l| l.contains(&format!("{SITES}/{SITES} cores (SUCCEEDED {SITES})"))), "{printed:#?}");

    // Each core's sensor sends telemetry from its own plant (after the rotation: over its new
    // certificate).
    let mut heard = BTreeSet::new();
    while heard.len() < SITES {
        let m = telemetry.wait_for("telemetry from every site", |m| m.topic.starts_with("dt/pump/")).await;
        let thing = m.topic.split('/').nth(2).unwrap().to_owned();
        assert!(wanted.contains(&thing), "{thing} is not a site of the fleet");
        assert_eq!(m.json()["v"], 1, "a versioned batch");
        heard.insert(thing);
    }

    // Ctrl-C: every core stops its components, the fleet exits 0, nothing is left running.
    let mut processes = bench_common::machine::descendants(fleet_pid);
    processes.sort_unstable();
    assert!(processes.len() > SITES * 3, "cores and their components run: {processes:?}");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(fleet_pid as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(90), fleet.wait()).await.expect("the fleet stops").unwrap();
    let log = std::fs::read_to_string(dir.path().join("fleet.log")).unwrap_or_default();
    assert!(status.success(), "{status}; log:\n{log}");
    assert!(log.contains("every core and component has exited"), "{log}");
    let alive: Vec<u32> = processes.into_iter().filter(|p| Path::new(&format!("/proc/{p}")).exists()).collect();
    assert!(alive.is_empty(), "left running: {alive:?}");
    drop(telemetry);
    cloud.shutdown().await;
}
