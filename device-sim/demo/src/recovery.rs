//! Recovery from a hardware failure: the site's core device dies with its disk while the pump
//! runs, and a replacement takes its place under the same thing name.
//!
//! 1. Before the failure the operator has fleet provisioning ready ([`provision::fleet`]): a
//!    provisioning role, and a template that registers a core under the thing name it is given,
//!    in the thing group of the pump sites, with the core's IoT policies on its certificate.
//! 2. The core device loses power ([`Site::power_off`]: its launcher, core and components killed
//!    where they stand) and its disk is gone (the core's root is deleted). What was on that disk
//!    is counted first, only to say in the report what was lost.
//! 3. While the site is dead the operator sets a new desired speed: only the cloud has it.
//! 4. The operator replaces the device ([`provision::replace_device`]: its certificates revoked
//!    and detached, the thing kept) and revises the thing's group deployments
//!    ([`provision::deploy::revise_group_deployments`]), as `provision replace --redeploy` does.
//! 5. The replacement, with a new empty disk, gets a claim from the template
//!    (CreateProvisioningClaim, valid minutes: handed to whoever installs it) and the thing name
//!    as the template's parameter; its core onboards by claim with a key it makes itself,
//!    receives the group's deployment again (the components, the model and the nucleus version
//!    the group runs) and its controller drives the plant to the `pump` shadow's desired state.
//!
//! The step then checks, where an operator would, what was kept (thing, groups, shadow,
//! deployments, S3 objects, published components, job history) and measures failure → pump under
//! control again (the plant's setpoint register over Modbus) and → telemetry flowing.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};

use crate::observer::{self, Observer};
use crate::rollout::{self, THING_GROUP, Timeline};
use crate::site::{ModbusProbe, PlantState, ROLE_ALIAS, Site, THING};

/// The fleet's provisioning template.
pub const TEMPLATE: &str = "PumpStationCores";
/// The role AWS IoT assumes to register a device from a claim.
pub const PROVISIONING_ROLE: &str = "PumpStationProvisioning";
/// The desired speed the operator sets while the site is dead.
pub const DESIRED_WHILE_DEAD_RPM: f64 = 2350.0;
/// How long the replacement may take from its start to the end of the group's deployment
/// (a first launch, onboarding, every artifact and a nucleus update downloaded).
const CONVERGE_WITHIN: Duration = Duration::from_secs(180);

/// One moment of the recovery, in milliseconds after the failure.
#[derive(Debug, Clone, Serialize)]
pub struct Milestone {
    /// What happened.
    pub what: String,
    /// Milliseconds after the power went off.
    pub at_ms: u64,
}

/// One thing lost with the device, or kept by the cloud.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// What it is.
    pub what: String,
    /// What was observed of it.
    pub detail: String,
}

/// The recovery as the report shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Recovery {
    /// The thing the replacement took over.
    pub thing: String,
    /// The failed device's certificates (revoked).
    pub failed_certificates: Vec<String>,
    /// The replacement's certificate (for a key it made itself).
    pub replacement_certificate: String,
    /// The desired speed the operator set while the site was dead.
    pub desired_speed_rpm: f64,
    /// Processes that died with the power.
    pub processes_killed: usize,
    /// What happened when.
    pub timeline: Vec<Milestone>,
    /// Power off → the plant runs at the shadow's desired speed again, under the new controller.
    pub to_control_ms: u64,
    /// Power off → the first telemetry batch from the replacement in the cloud.
    pub to_telemetry_ms: u64,
    /// The last reading the cloud had from the failed device → the replacement's first one.
    pub telemetry_gap_ms: u64,
    /// What had not left the device, and was lost with it.
    pub lost: Vec<Item>,
    /// What the cloud kept, and the replacement came back to.
    pub kept: Vec<Item>,
}

impl Recovery {
    fn mark(&mut self, failed: Instant, what: impl Into<String>) {
        self.timeline.push(Milestone { what: what.into(), at_ms: failed.elapsed().as_millis() as u64 });
    }

    /// The report's section.
    pub fn markdown(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "The core device of `{}` lost power with its disk while the pump ran; a replacement onboarded by claim under the same thing name. Power off → pump under control again (the plant's setpoint register at the shadow's desired {:.0} rpm, set while the site was dead): **{:.1} s**; → telemetry in the cloud again: **{:.1} s**. These figures leave out the hardware swap itself: the replacement starts as soon as the operator has replaced the device in the cloud.\n",
            self.thing,
            self.desired_speed_rpm,
            self.to_control_ms as f64 / 1000.0,
            self.to_telemetry_ms as f64 / 1000.0
        );
        let _ = writeln!(s, "| after power off, ms | what |\n| ---: | --- |");
        for m in &self.timeline {
            let _ = writeln!(s, "| {} | {} |", m.at_ms, m.what.replace('|', "\\|"));
        }
        for (title, items) in [
            ("Lost with the device (it had not left it)", &self.lost),
            ("Kept by the cloud (the replacement came back to it)", &self.kept),
        ] {
            let _ = writeln!(s, "\n**{title}**\n\n| what | observed |\n| --- | --- |");
            for i in items {
                let _ = writeln!(s, "| {} | {} |", i.what, i.detail.replace('|', "\\|"));
            }
        }
        s
    }
}

/// Files and bytes under `path` (0, 0 when absent).
fn usage(path: &Path) -> (u64, u64) {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return (0, 0) };
    if !meta.is_dir() {
        return (1, meta.len());
    }
    let Ok(entries) = std::fs::read_dir(path) else { return (0, 0) };
    entries.filter_map(Result::ok).map(|e| usage(&e.path())).fold((0, 0), |(f, b), (f2, b2)| (f + f2, b + b2))
}

/// Entries and telemetry readings in the outboxes of the components' work directories under
/// `work`: what was stored to be sent and never was.
fn outboxes(work: &Path) -> Vec<(String, u64, u64)> {
    let mut found = Vec::new();
    let Ok(components) = std::fs::read_dir(work) else { return found };
    for component in components.filter_map(Result::ok) {
        let Ok(files) = std::fs::read_dir(component.path()) else { continue };
        for file in files.filter_map(Result::ok) {
            let name = file.file_name().to_string_lossy().into_owned();
            if !(name.contains("outbox") && name.ends_with(".sqlite")) {
                continue;
            }
            let Ok(outbox) = kit::outbox::Outbox::open(file.path(), kit::outbox::OutboxConfig::default()) else {
                continue;
            };
            let entries = outbox.peek(usize::MAX).unwrap_or_default();
            let readings = entries
                .iter()
                .filter_map(|e| serde_json::from_slice::<Value>(&e.payload).ok())
                .map(|doc| doc["readings"].as_array().map_or(0, |r| r.len() as u64))
                .sum();
            found.push((format!("{}/{name}", component.file_name().to_string_lossy()), entries.len() as u64, readings));
        }
    }
    found
}

/// What was on the dead disk and is lost with it (counted before the disk is wiped), and how
/// long the cloud had not heard from the device.
fn inventory(root: &Path, last_reading_ms: u64, failed_ms: u64) -> Vec<Item> {
    let mut lost = Vec::new();
    let stored: Vec<String> = outboxes(&root.join("work"))
        .into_iter()
        .map(|(name, entries, readings)| format!("{name}: {entries} messages ({readings} readings)"))
        .collect();
    lost.push(Item {
        what: "telemetry and events not yet sent".into(),
        detail: format!(
            "the cloud's last reading from the failed device was taken {} ms before the power went off: the readings after it were in the sensor's current batch (memory) or its outbox on the disk; outboxes on the dead disk: {}",
            failed_ms.saturating_sub(last_reading_ms),
            if stored.is_empty() { "none".to_owned() } else { stored.join("; ") }
        ),
    });
    let area = |what: &str, sub: &str, note: &str| {
        let (files, bytes) = usage(&root.join(sub));
        Item { what: what.into(), detail: format!("`{sub}/`: {files} files, {bytes} bytes; {note}") }
    };
    lost.push(area("logs", "logs", "the core's and every component's log"));
    lost.push(area(
        "local state",
        "work",
        "the components' work directories (outboxes, stats), the ShadowManager's local shadows and sync base, the fleet status sequence",
    ));
    let identity = if usage(&root.join("identity")).0 > 0 {
        area(
            "the device's identity",
            "identity",
            "its private key, which never left the device; its certificate is REVOKED in the cloud",
        )
    } else {
        Item {
            what: "the device's identity".into(),
            detail: "not on this disk: the failed device was provisioned by the operator (`provision core`), its key kept in the run's `device/` beside the core's root; its certificate is REVOKED, so that key opens nothing any more".into(),
        }
    };
    lost.push(identity);
    lost
}

/// The failure and the replacement; returns the step's detail, the revised deployment's
/// timeline, the plant after recovery, and the recovery for the report.
pub async fn run(
    site: &mut Site,
    obs: &Observer,
    telemetry: &str,
    components: Vec<(String, String)>,
    wait: Duration,
) -> anyhow::Result<(String, Timeline, PlantState, Recovery)> {
    let (iot, gg) = {
        let (operator, _) = site.rollout()?;
        (operator.iot.clone(), operator.gg.clone())
    };
    let iam = site.operator.as_ref().context("the site has not started")?.iam.clone();
    // The operator's fleet provisioning, ready before anything fails.
    let spec = provision::fleet::TemplateSpec {
        template_name: TEMPLATE.into(),
        role_name: PROVISIONING_ROLE.into(),
        thing_groups: vec![THING_GROUP.into()],
        policies: vec![
            site.device.record.policy_name.clone(),
            provision::DEFAULT_DEPLOYMENTS_POLICY_NAME.into(),
            format!("{ROLE_ALIAS}Policy"),
            provision::DEFAULT_ROTATION_POLICY_NAME.into(),
        ],
    };
    provision::fleet::ensure_template(&iot, &iam, &spec).await.context("the provisioning template")?;

    // What the cloud holds before the failure.
    let thing_before = iot.describe_thing().thing_name(THING).send().await.context("DescribeThing")?;
    let failed_certificates = certificates(&iot).await?;
    let windows_before = site.anomaly_windows().await?.len();
    let shadow_before = site.cloud_shadow().await?.context("no pump shadow in the cloud")?;
    let group_deployments_before = group_deployments(&gg).await?;
    let jobs_before = job_history(&iot).await?;
    let telemetry_before = obs.count(telemetry);

    // The power goes off and the disk is gone.
    let failed = Instant::now();
    let failed_ms = crate::demo::epoch_ms();
    let processes_killed = site.power_off().await?;
    let mut recovery = Recovery {
        thing: THING.into(),
        failed_certificates: failed_certificates.clone(),
        desired_speed_rpm: DESIRED_WHILE_DEAD_RPM,
        processes_killed,
        ..Recovery::default()
    };
    recovery.mark(failed, format!("power off: {processes_killed} processes (launcher, core, components) killed"));
    let last_reading_ms = last_reading_ms(&obs.messages(telemetry));
    let root = site.dir.join("core");
    recovery.lost = inventory(&root, last_reading_ms, failed_ms);
    std::fs::remove_dir_all(&root).with_context(|| format!("wiping {}", root.display()))?;
    recovery.mark(failed, "the disk is gone (the core's root deleted)");

    // The operator acts while the site is dead.
    let desired_version = site.set_desired(json!({"speedRpm": DESIRED_WHILE_DEAD_RPM as i64, "mode": "auto"})).await?;
    recovery.mark(
        failed,
        format!("desired speed {DESIRED_WHILE_DEAD_RPM:.0} rpm set in the cloud (shadow version {desired_version})"),
    );
    let changes = provision::replace_device(&iot, THING).await.context("replacing the device")?;
    recovery.mark(
        failed,
        format!("replaced in the cloud: {}", changes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
    );
    let revised = provision::deploy::revise_group_deployments(&iot, &gg, THING)
        .await
        .context("revising the group deployments")?;
    let [created] = <[_; 1]>::try_from(revised)
        .map_err(|r| anyhow::anyhow!("expected one group deployment to revise, got {r:?}"))?;
    let revised_at = (time::OffsetDateTime::now_utc(), Instant::now());
    recovery.mark(failed, format!("group deployment revised: {}", created.deployment_id));

    // The replacement: a claim for its installer, a new disk, the same thing name.
    let factory = site.dir.join("replacement");
    let claim = provision::fleet::create_claim(&iot, TEMPLATE, &factory).await.context("CreateProvisioningClaim")?;
    let claim_file = factory.join("claim.json");
    let config = json!({
        "provisioningTemplate": TEMPLATE,
        "claimCertificatePath": claim.certificate,
        "claimCertificatePrivateKeyPath": claim.private_key,
        "templateParameters": {provision::fleet::THING_NAME_PARAMETER: THING},
    });
    std::fs::write(&claim_file, serde_json::to_vec_pretty(&config)?).context("writing the claim configuration")?;
    let mut rx = obs.subscribe();
    let started_ms = crate::demo::epoch_ms();
    site.start_replacement(&claim_file)?;
    recovery.mark(failed, "the replacement starts (launcher and core on the new disk, claim and thing name)");

    let (operator, _) = site.rollout()?;
    let purpose = "the replacement converges to its group's deployment";
    let timeline = rollout::follow(operator, purpose, created, components, revised_at, CONVERGE_WITHIN).await?;
    let identity =
        device_sim::core::claim::provisioned(&root).map_err(|e| anyhow::anyhow!("{e}"))?.with_context(|| {
            format!("the replacement did not onboard (see {})", site.dir.join("replacement-launcher.log").display())
        })?;
    if let Some(onboarded) = modified_ms(&device_sim::core::claim::identity_dir(&root).join("identity.json")) {
        recovery.timeline.push(Milestone {
            what: format!("onboarded by claim as {} (certificate {})", identity.thing_name, identity.certificate_id),
            at_ms: onboarded.saturating_sub(failed_ms),
        });
    }
    if !timeline.succeeded {
        bail!(
            "the revised deployment {} did not succeed on the replacement: {:?} (see {})",
            timeline.deployment_id,
            timeline.last_status(THING),
            site.dir.join("replacement-launcher.log").display()
        );
    }
    recovery.mark(
        failed,
        format!(
            "the group's deployment SUCCEEDED on the replacement ({} ms after the revision)",
            timeline.converged_ms.unwrap_or_default()
        ),
    );
    if identity.thing_name != THING || failed_certificates.contains(&identity.certificate_id) {
        bail!(
            "the replacement onboarded as {} with certificate {}, not as a new certificate of {THING}",
            identity.thing_name,
            identity.certificate_id
        );
    }
    recovery.replacement_certificate = identity.certificate_id.clone();

    // The pump under control again: the new controller drives the plant to the desired speed.
    let mut probe = ModbusProbe::connect(site.plant().modbus_addr()).await?;
    let speed = DESIRED_WHILE_DEAD_RPM;
    let state = probe
        .wait_for(&format!("running at the desired {speed} rpm"), wait, |s| {
            (s.setpoint_rpm - speed).abs() < 0.5 && s.run
        })
        .await?;
    recovery.to_control_ms = failed.elapsed().as_millis() as u64;
    recovery.mark(
        failed,
        format!("pump under control: setpoint {:.0} rpm, run {} (Modbus)", state.setpoint_rpm, state.run),
    );
    let doc = site
        .wait_cloud_shadow("the replacement's reported speed", wait, |d| {
            d.pointer("/state/reported/speedRpm").and_then(Value::as_f64).is_some_and(|r| (r - speed).abs() < 0.5)
                && d.pointer("/state/reported/protection/active") != Some(&json!(true))
        })
        .await?;
    recovery.mark(failed, format!("the cloud shadow reports {speed:.0} rpm (version {})", doc["version"]));
    let batch = observer::wait_for(&mut rx, "telemetry from the replacement", wait, |m| {
        m.topic == telemetry
            && m.doc["readings"]
                .as_array()
                .and_then(|r| r.first())
                .and_then(|r| r["ts"].as_u64())
                .is_some_and(|ts| ts > started_ms)
    })
    .await?;
    recovery.to_telemetry_ms = failed.elapsed().as_millis() as u64;
    let first_new = batch.doc["readings"][0]["ts"].as_u64().unwrap_or(started_ms);
    recovery.telemetry_gap_ms = first_new.saturating_sub(last_reading_ms);
    recovery.mark(failed, "telemetry from the replacement in the cloud");
    recovery.lost.push(Item {
        what: "readings while the site was dead".into(),
        detail: format!(
            "{} ms without readings in the cloud (the last one from the failed device → the replacement's first)",
            recovery.telemetry_gap_ms
        ),
    });

    // What the cloud kept.
    let thing_after = iot.describe_thing().thing_name(THING).send().await.context("DescribeThing")?;
    if thing_after.thing_id() != thing_before.thing_id() {
        bail!("the thing was made again: id {:?} → {:?}", thing_before.thing_id(), thing_after.thing_id());
    }
    let groups = iot.list_thing_groups_for_thing().thing_name(THING).send().await.context("ListThingGroupsForThing")?;
    let groups: Vec<&str> = groups.thing_groups().iter().filter_map(|g| g.group_name()).collect();
    if !groups.contains(&THING_GROUP) {
        bail!("the thing left its group: {groups:?}");
    }
    let now = certificates(&iot).await?;
    if now != [identity.certificate_id.clone()] {
        bail!("the thing's certificates are {now:?}, not only the replacement's");
    }
    for old in &failed_certificates {
        let status = iot.describe_certificate().certificate_id(old).send().await.context("DescribeCertificate")?;
        let status = status.certificate_description().and_then(|d| d.status()).map(|s| s.as_str().to_owned());
        if status.as_deref() != Some("REVOKED") {
            bail!("the failed device's certificate {old} is {status:?}, not REVOKED");
        }
    }
    let windows_after = site.anomaly_windows().await?.len();
    if windows_after < windows_before {
        bail!("anomaly windows in S3: {windows_before} before, {windows_after} after");
    }
    let jobs_after = job_history(&iot).await?;
    let group_deployments_after = group_deployments(&gg).await?;
    let shadow_version = |d: &Value| d["version"].as_u64().unwrap_or(0);
    let kept = [
        (
            "the thing",
            format!(
                "`{THING}` (thing id {}) with its attributes; now only the replacement's certificate {}, the failed device's {} REVOKED",
                thing_after.thing_id().unwrap_or_default(),
                identity.certificate_id,
                failed_certificates.join(", ")
            ),
        ),
        ("its thing groups", format!("{}: their deployments reached the replacement", groups.join(", "))),
        (
            "the `pump` shadow",
            format!(
                "version {} before the failure, {} after: the desired state set while the site was dead reached the replacement, and its history continues",
                shadow_version(&shadow_before),
                shadow_version(&doc)
            ),
        ),
        (
            "deployments",
            format!(
                "{group_deployments_before} deployments of {THING_GROUP} before, {group_deployments_after} after (the revision): the same components, configuration and nucleus version"
            ),
        ),
        ("S3 data", format!("{windows_before} anomaly windows before, {windows_after} after")),
        (
            "telemetry in the cloud",
            format!(
                "{telemetry_before} batches the cloud had received before the failure (its subscriber's count): what left the device is not lost with it"
            ),
        ),
        ("cloud records", format!("job executions of the thing: {jobs_before} before, {jobs_after} after")),
    ];
    recovery.kept = kept.into_iter().map(|(what, detail)| Item { what: what.into(), detail }).collect();
    let detail = format!(
        "power off ({processes_killed} processes) and the disk wiped; the operator revoked {} and revised deployment {}; the replacement onboarded by claim as {THING} with certificate {}, the group's deployment SUCCEEDED, the pump runs at the desired {speed:.0} rpm {:.1} s after the failure and telemetry flows again after {:.1} s",
        failed_certificates.join(", "),
        timeline.deployment_id,
        identity.certificate_id,
        recovery.to_control_ms as f64 / 1000.0,
        recovery.to_telemetry_ms as f64 / 1000.0
    );
    Ok((detail, timeline, state, recovery))
}

/// The certificate ids attached to the thing.
async fn certificates(iot: &aws_sdk_iot::Client) -> anyhow::Result<Vec<String>> {
    let out = iot.list_thing_principals().thing_name(THING).send().await.context("ListThingPrincipals")?;
    Ok(out.principals().iter().filter_map(|p| p.rsplit_once(":cert/").map(|(_, id)| id.to_owned())).collect())
}

/// How many Greengrass deployments target the thing group (ListDeployments, all revisions).
async fn group_deployments(gg: &aws_sdk_greengrassv2::Client) -> anyhow::Result<usize> {
    let out = gg
        .list_deployments()
        .history_filter(aws_sdk_greengrassv2::types::DeploymentHistoryFilter::All)
        .send()
        .await
        .context("ListDeployments")?;
    Ok(out
        .deployments()
        .iter()
        .filter(|d| d.target_arn().is_some_and(|a| a.ends_with(&format!("thinggroup/{THING_GROUP}"))))
        .count())
}

/// How many job executions the thing has (ListJobExecutionsForThing).
async fn job_history(iot: &aws_sdk_iot::Client) -> anyhow::Result<usize> {
    let out =
        iot.list_job_executions_for_thing().thing_name(THING).send().await.context("ListJobExecutionsForThing")?;
    Ok(out.execution_summaries().len())
}

/// The newest reading's `ts` over telemetry batches.
fn last_reading_ms(batches: &[Value]) -> u64 {
    batches
        .iter()
        .filter_map(|b| b["readings"].as_array())
        .flatten()
        .filter_map(|r| r["ts"].as_u64())
        .max()
        .unwrap_or(0)
}

/// A file's modification time, milliseconds since the Unix epoch.
fn modified_ms(path: &Path) -> Option<u64> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(modified.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dead_disk_is_counted_by_area_and_its_outboxes_by_message_and_reading() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("logs")).unwrap();
        std::fs::write(root.join("logs/greengrass.log"), b"0123456789").unwrap();
        let work = root.join("work/com.example.pump.Sensor");
        std::fs::create_dir_all(&work).unwrap();
        let outbox =
            kit::outbox::Outbox::open(work.join("telemetry-outbox.sqlite"), kit::outbox::OutboxConfig::default())
                .unwrap();
        let batch = |n: usize| json!({"readings": vec![json!({"seq": 1}); n]}).to_string();
        outbox.append("dt/pump/x/telemetry", batch(3).as_bytes()).unwrap();
        outbox.append("dt/pump/x/telemetry", batch(2).as_bytes()).unwrap();
        drop(outbox);
        let lost = inventory(root, 1_000, 1_750);
        assert!(lost[0].detail.contains("750 ms"), "{lost:?}");
        assert!(
            lost[0].detail.contains("com.example.pump.Sensor/telemetry-outbox.sqlite: 2 messages (5 readings)"),
            "{lost:?}"
        );
        assert!(lost[1].detail.contains("1 files, 10 bytes"), "{lost:?}");
        assert!(lost[3].detail.contains("not on this disk"), "{lost:?}");
        std::fs::create_dir_all(root.join("identity")).unwrap();
        std::fs::write(root.join("identity/privKey.key"), b"key").unwrap();
        let lost = inventory(root, 1_000, 1_750);
        assert!(lost[3].detail.contains("`identity/`: 1 files, 3 bytes"), "{lost:?}");
        assert_eq!(
            last_reading_ms(&[json!({"readings": [{"ts": 5}, {"ts": 9}]}), json!({"readings": [{"ts": 7}]})]),
            9
        );
    }
}
