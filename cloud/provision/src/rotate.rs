//! Certificate rotation, the cloud's part (the core's part is `device-sim`'s `core::rotation`).
//! A device may not activate, attach, deactivate or delete certificates, so this step does it
//! with the operator's rights: it creates the rotation job (`{"operation":"ROTATE_CERTIFICATE"}`)
//! for one thing and follows its execution with DescribeJobExecution — polling, so it works with
//! job events switched off (a failure mode of AWS's own rotator) — and acts on what the device
//! reports:
//! - `statusDetails.newCertificateId` (IN_PROGRESS): activate that certificate, attach the old
//!   certificate's policies and the thing to it, and tell the device on
//!   `cmd/{thing}/certificate-rotation` (`{"certificateId", "attached": true}`, IoT data plane
//!   Publish, QoS 1);
//! - SUCCEEDED: deactivate, detach and delete the old certificate;
//! - any other end (FAILED, TIMED_OUT, CANCELED, …): the same for the new one, if there is one.
//!
//! [`next_action`] is the pure decision; [`rotate`] the shell around it.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_iot::types::{CertificateStatus, JobExecutionStatus};

use crate::audit::CertificateSnapshot;
use crate::device::{certificate_id, list_attached_policies, list_thing_principals, retire_certificate};
use crate::error::{ProvisionError, aws};

/// The job document the core takes as a rotation.
pub const ROTATE_DOCUMENT: &str = r#"{"operation":"ROTATE_CERTIFICATE"}"#;

/// Where the device hears that its new certificate is attached.
pub fn attached_topic(thing: &str) -> String {
    format!("cmd/{thing}/certificate-rotation")
}

/// What to do next, from the execution seen and what was done already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudAction {
    /// Nothing yet: look again later.
    Wait,
    /// Activate and attach this new certificate, then tell the device.
    Attach(String),
    /// The device committed: retire the old certificate.
    RetireOld,
    /// The rotation did not happen: retire this new certificate.
    RetireNew(String),
    /// The job ended and nothing is left to do.
    Done,
}

/// The decision: `status` and `details` are the execution's, `attached` the new certificate
/// already attached (if any).
pub fn next_action(
    status: &JobExecutionStatus,
    details: &HashMap<String, String>,
    attached: Option<&str>,
) -> CloudAction {
    let named = details.get("newCertificateId").map(String::as_str);
    match status {
        JobExecutionStatus::Succeeded => CloudAction::RetireOld,
        JobExecutionStatus::Queued | JobExecutionStatus::InProgress => match named {
            Some(id) if attached != Some(id) => CloudAction::Attach(id.to_owned()),
            _ => CloudAction::Wait,
        },
        // Any other status is an end without the commit.
        _ => match attached.or(named) {
            Some(id) => CloudAction::RetireNew(id.to_owned()),
            None => CloudAction::Done,
        },
    }
}

/// How a rotation ended.
#[derive(Debug, Clone)]
pub struct RotationOutcome {
    /// The job.
    pub job_id: String,
    /// The execution's last status (`SUCCEEDED` when the device committed).
    pub status: String,
    /// The device's status details (the reason of a failure is `reason`).
    pub details: HashMap<String, String>,
    /// The certificate the thing has now.
    pub certificate_id: String,
    /// Whether the deadline passed first (the job is then left as it is).
    pub timed_out: bool,
    /// Whether an unfinished rotation job was followed instead of a new one created.
    pub resumed: bool,
}

impl RotationOutcome {
    /// `None` when the device committed its new certificate (SUCCEEDED), else why not.
    pub fn problem(&self) -> Option<String> {
        match (self.timed_out, self.status.as_str()) {
            (true, _) => Some("the core did not finish the rotation before the deadline".into()),
            (false, "SUCCEEDED") => None,
            (false, status) => Some(format!(
                "the rotation ended {status}: {}",
                self.details.get("reason").map_or("no reason given", String::as_str)
            )),
        }
    }
}

/// Rotates the certificate of `thing`: follows its unfinished rotation job if it has one (an
/// earlier run that stopped following — the step is resumable), else creates job `job_id` and
/// follows it (every `poll`, for at most `timeout`). A new rotation needs the thing to have
/// exactly one certificate (as AWS's rotator requires).
pub async fn rotate(
    iot: &aws_sdk_iot::Client,
    data: &aws_sdk_iotdataplane::Client,
    thing: &str,
    job_id: &str,
    poll: Duration,
    timeout: Duration,
) -> Result<RotationOutcome, ProvisionError> {
    if let Some((job_id, new_id)) = unfinished_rotation(iot, thing).await? {
        let old_arn = old_certificate(iot, thing, new_id.as_ref()).await?;
        let mut outcome = follow(iot, data, thing, &job_id, &old_arn, poll, timeout).await?;
        outcome.resumed = true;
        return Ok(outcome);
    }
    let principals = list_thing_principals(iot, thing).await?;
    let [old_arn] = principals.as_slice() else {
        return Err(ProvisionError::InvalidInput(format!(
            "{thing} has {} certificates; a rotation needs exactly one",
            principals.len()
        )));
    };
    let thing_arn = iot
        .describe_thing()
        .thing_name(thing)
        .send()
        .await
        .map_err(aws("DescribeThing"))?
        .thing_arn
        .ok_or_else(|| ProvisionError::unexpected("DescribeThing", "no thingArn"))?;
    create_rotation_job(iot, job_id, thing_arn, "certificate rotation".into()).await?;
    follow(iot, data, thing, job_id, old_arn, poll, timeout).await
}

/// CreateJob of a rotation ([`ROTATE_DOCUMENT`]) for a thing or a thing group.
async fn create_rotation_job(
    iot: &aws_sdk_iot::Client,
    job_id: &str,
    target_arn: String,
    description: String,
) -> Result<(), ProvisionError> {
    iot.create_job()
        .job_id(job_id)
        .targets(target_arn)
        .document(ROTATE_DOCUMENT)
        .description(description)
        .send()
        .await
        .map_err(aws("CreateJob"))?;
    Ok(())
}

/// Whether a job document asks for a rotation (`{"operation": "ROTATE_CERTIFICATE"}`).
pub fn is_rotation_document(document: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(document)
        .is_ok_and(|d| d.get("operation").and_then(|o| o.as_str()) == Some("ROTATE_CERTIFICATE"))
}

/// The thing's rotation job still QUEUED or IN_PROGRESS, if any, with the new certificate its
/// device reported (ListJobExecutionsForThing, GetJobDocument, DescribeJobExecution).
async fn unfinished_rotation(
    iot: &aws_sdk_iot::Client,
    thing: &str,
) -> Result<Option<(String, Option<String>)>, ProvisionError> {
    for status in [JobExecutionStatus::InProgress, JobExecutionStatus::Queued] {
        let mut token: Option<String> = None;
        loop {
            let page = iot
                .list_job_executions_for_thing()
                .thing_name(thing)
                .status(status.clone())
                .set_next_token(token.take())
                .send()
                .await
                .map_err(aws("ListJobExecutionsForThing"))?;
            for job_id in page.execution_summaries().iter().filter_map(|s| s.job_id()) {
                let document = iot.get_job_document().job_id(job_id).send().await.map_err(aws("GetJobDocument"))?;
                if !document.document().is_some_and(is_rotation_document) {
                    continue;
                }
                let execution = iot
                    .describe_job_execution()
                    .job_id(job_id)
                    .thing_name(thing)
                    .send()
                    .await
                    .map_err(aws("DescribeJobExecution"))?;
                let new_id =
                    execution.execution.and_then(|e| e.status_details?.details_map?.remove("newCertificateId"));
                return Ok(Some((job_id.to_owned(), new_id)));
            }
            match page.next_token {
                Some(next) => token = Some(next),
                None => break,
            }
        }
    }
    Ok(None)
}

/// One thing's rotation as the cloud follows it: the certificate it had, the new one attached.
#[derive(Debug, Clone)]
struct Follower {
    thing: String,
    job_id: String,
    old_arn: String,
    attached: Option<String>,
}

impl Follower {
    /// Acts on the execution seen ([`next_action`]); returns the outcome once the rotation ended.
    async fn step(
        &mut self,
        iot: &aws_sdk_iot::Client,
        data: &aws_sdk_iotdataplane::Client,
        status: &JobExecutionStatus,
        details: &HashMap<String, String>,
    ) -> Result<Option<RotationOutcome>, ProvisionError> {
        let outcome = |certificate_arn: &str| RotationOutcome {
            job_id: self.job_id.clone(),
            status: status.as_str().to_owned(),
            details: details.clone(),
            certificate_id: certificate_id(certificate_arn).to_owned(),
            timed_out: false,
            resumed: false,
        };
        match next_action(status, details, self.attached.as_deref()) {
            CloudAction::Wait => Ok(None),
            CloudAction::Attach(id) => {
                attach(iot, data, &self.thing, &self.old_arn, &id).await?;
                self.attached = Some(id);
                Ok(None)
            }
            CloudAction::RetireOld => {
                retire(iot, &self.thing, &self.old_arn).await?;
                let new =
                    self.attached.clone().or_else(|| details.get("newCertificateId").cloned()).unwrap_or_default();
                Ok(Some(outcome(&new)))
            }
            CloudAction::RetireNew(id) => {
                let arn = iot
                    .describe_certificate()
                    .certificate_id(&id)
                    .send()
                    .await
                    .ok()
                    .and_then(|d| d.certificate_description?.certificate_arn);
                if let Some(arn) = arn {
                    retire(iot, &self.thing, &arn).await?;
                }
                Ok(Some(outcome(&self.old_arn)))
            }
            CloudAction::Done => Ok(Some(outcome(&self.old_arn))),
        }
    }

    /// The outcome when the deadline passed first (the job is left as it is).
    fn timed_out(&self, status: &JobExecutionStatus, details: HashMap<String, String>) -> RotationOutcome {
        RotationOutcome {
            job_id: self.job_id.clone(),
            status: status.as_str().to_owned(),
            details,
            certificate_id: certificate_id(&self.old_arn).to_owned(),
            timed_out: true,
            resumed: false,
        }
    }
}

/// The execution of `job_id` on `thing`: its status and status details (DescribeJobExecution).
async fn execution(
    iot: &aws_sdk_iot::Client,
    job_id: &str,
    thing: &str,
) -> Result<(JobExecutionStatus, HashMap<String, String>), ProvisionError> {
    let execution = iot
        .describe_job_execution()
        .job_id(job_id)
        .thing_name(thing)
        .send()
        .await
        .map_err(aws("DescribeJobExecution"))?
        .execution
        .ok_or_else(|| ProvisionError::unexpected("DescribeJobExecution", "no execution"))?;
    let status = execution.status.unwrap_or(JobExecutionStatus::Queued);
    Ok((status, execution.status_details.and_then(|d| d.details_map).unwrap_or_default()))
}

/// Follows rotation job `job_id` of `thing`, whose certificate before it was `old_arn`.
async fn follow(
    iot: &aws_sdk_iot::Client,
    data: &aws_sdk_iotdataplane::Client,
    thing: &str,
    job_id: &str,
    old_arn: &str,
    poll: Duration,
    timeout: Duration,
) -> Result<RotationOutcome, ProvisionError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut follower =
        Follower { thing: thing.to_owned(), job_id: job_id.to_owned(), old_arn: old_arn.to_owned(), attached: None };
    loop {
        let (status, details) = execution(iot, job_id, thing).await?;
        let attached_before = follower.attached.clone();
        if let Some(outcome) = follower.step(iot, data, &status, &details).await? {
            return Ok(outcome);
        }
        if follower.attached != attached_before {
            continue;
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(follower.timed_out(&status, details));
        }
        tokio::time::sleep(poll).await;
    }
}

/// One thing's part of a group rotation ([`rotate_group`]).
#[derive(Debug)]
pub struct MemberRotation {
    /// The thing.
    pub thing: String,
    /// From the job's creation to the end of the cloud's part for this thing (the old
    /// certificate retired, or the failure handled).
    pub took: Duration,
    /// How it ended.
    pub outcome: Result<RotationOutcome, ProvisionError>,
}

/// A thing-group rotation: one job, many executions.
#[derive(Debug)]
pub struct GroupRotation {
    /// The job.
    pub job_id: String,
    /// Every execution the job had, in the order they ended (unfinished ones last, timed out).
    pub members: Vec<MemberRotation>,
}

/// The thing names of `group` (recursively) whose certificate count is not one, with the count.
async fn members_without_one_certificate(
    iot: &aws_sdk_iot::Client,
    group: &str,
) -> Result<(usize, Vec<(String, usize)>), ProvisionError> {
    let things = crate::device::things_in_group(iot, group).await?;
    let mut odd = Vec::new();
    for thing in &things {
        let n = list_thing_principals(iot, thing).await?.len();
        if n != 1 {
            odd.push((thing.clone(), n));
        }
    }
    Ok((things.len(), odd))
}

/// Rotates the certificate of every thing in `group` with ONE job targeting the group (as an
/// operator rolls a campaign out to a fleet): every member must have exactly one certificate
/// (refused before anything is created, naming those that do not). The cloud's part runs for
/// each execution as its device reports: ListJobExecutionsForJob every `poll` (one paged call
/// for the whole fleet, within the Jobs API's request rates), DescribeJobExecution only for an
/// execution that needs a decision, and at most `concurrency` attach or retire steps at once.
/// Gives up after `timeout`, leaving the job as it is.
pub async fn rotate_group(
    iot: &aws_sdk_iot::Client,
    data: &aws_sdk_iotdataplane::Client,
    group: &str,
    job_id: &str,
    concurrency: usize,
    poll: Duration,
    timeout: Duration,
) -> Result<GroupRotation, ProvisionError> {
    let (count, odd) = members_without_one_certificate(iot, group).await?;
    if count == 0 {
        return Err(ProvisionError::InvalidInput(format!("thing group {group} has no things to rotate")));
    }
    if !odd.is_empty() {
        let named: Vec<String> = odd.iter().take(10).map(|(t, n)| format!("{t} ({n})")).collect();
        return Err(ProvisionError::InvalidInput(format!(
            "{} of the {count} things of {group} do not have exactly one certificate, which a rotation needs: {}{}",
            odd.len(),
            named.join(", "),
            if odd.len() > named.len() { ", …" } else { "" }
        )));
    }
    let group_arn = iot
        .describe_thing_group()
        .thing_group_name(group)
        .send()
        .await
        .map_err(aws("DescribeThingGroup"))?
        .thing_group_arn
        .ok_or_else(|| ProvisionError::unexpected("DescribeThingGroup", "no thingGroupArn"))?;
    create_rotation_job(iot, job_id, group_arn, format!("certificate rotation of thing group {group}")).await?;
    let created = tokio::time::Instant::now();
    let deadline = created + timeout;
    let mut followers: std::collections::BTreeMap<String, Follower> = std::collections::BTreeMap::new();
    let mut members: Vec<MemberRotation> = Vec::new();
    loop {
        let executions: Vec<(String, JobExecutionStatus)> = iot
            .list_job_executions_for_job()
            .job_id(job_id)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(aws("ListJobExecutionsForJob"))?
            .into_iter()
            .filter_map(|e| {
                let thing = e.thing_arn?.rsplit_once(":thing/")?.1.to_owned();
                Some((thing, e.job_execution_summary?.status?))
            })
            .collect();
        let mut steps = tokio::task::JoinSet::new();
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        for (thing, status) in &executions {
            if members.iter().any(|m| &m.thing == thing) {
                continue;
            }
            let known = followers.get(thing);
            // Nothing to decide: queued, or in progress with its new certificate attached.
            if *status == JobExecutionStatus::Queued
                || (*status == JobExecutionStatus::InProgress && known.is_some_and(|f| f.attached.is_some()))
            {
                continue;
            }
            let (iot, data, permits) = (iot.clone(), data.clone(), permits.clone());
            let (thing, job_id, known) = (thing.clone(), job_id.to_owned(), known.cloned());
            steps.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let result = async {
                    let (status, details) = execution(&iot, &job_id, &thing).await?;
                    let mut follower = match known {
                        Some(f) => f,
                        None => Follower {
                            old_arn: old_certificate(&iot, &thing, details.get("newCertificateId")).await?,
                            thing: thing.clone(),
                            job_id: job_id.clone(),
                            attached: None,
                        },
                    };
                    let outcome = follower.step(&iot, &data, &status, &details).await;
                    Ok::<_, ProvisionError>((follower, outcome))
                }
                .await;
                (thing, result)
            });
        }
        while let Some(done) = steps.join_next().await {
            let (thing, result) = done.map_err(|e| ProvisionError::unexpected("rotation step", e.to_string()))?;
            let took = created.elapsed();
            match result {
                Ok((follower, Ok(None))) => {
                    followers.insert(thing, follower);
                }
                Ok((_, Ok(Some(outcome)))) => members.push(MemberRotation { thing, took, outcome: Ok(outcome) }),
                Ok((_, Err(e))) | Err(e) => members.push(MemberRotation { thing, took, outcome: Err(e) }),
            }
        }
        let open = executions.iter().filter(|(thing, _)| !members.iter().any(|m| &m.thing == thing)).count();
        if !executions.is_empty() && open == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            for (thing, status) in executions {
                if members.iter().any(|m| m.thing == thing) {
                    continue;
                }
                let follower = followers.remove(&thing);
                let outcome = match follower {
                    Some(f) => Ok(f.timed_out(&status, HashMap::new())),
                    None => Err(ProvisionError::InvalidInput(format!(
                        "the rotation of {thing} did not start within {timeout:?} (its execution is {})",
                        status.as_str()
                    ))),
                };
                members.push(MemberRotation { thing, took: created.elapsed(), outcome });
            }
            break;
        }
        tokio::time::sleep(poll).await;
    }
    Ok(GroupRotation { job_id: job_id.to_owned(), members })
}

/// The certificate `thing` had before its rotation: its one principal other than the new one.
async fn old_certificate(
    iot: &aws_sdk_iot::Client,
    thing: &str,
    new_id: Option<&String>,
) -> Result<String, ProvisionError> {
    let principals = list_thing_principals(iot, thing).await?;
    let old: Vec<&String> =
        principals.iter().filter(|arn| Some(certificate_id(arn)) != new_id.map(String::as_str)).collect();
    match old.as_slice() {
        [old] => Ok((*old).clone()),
        _ => Err(ProvisionError::InvalidInput(format!(
            "{thing} has {} certificates besides the rotation's new one; expected one",
            old.len()
        ))),
    }
}

/// Why a thing is or is not rotated by [`rotate_expiring`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expiry {
    /// Its active certificate expires within the threshold: rotate it.
    Rotate {
        /// The thing.
        thing: String,
        /// The certificate that expires.
        certificate_id: String,
        /// When, epoch seconds.
        not_after: i64,
    },
    /// Its certificate has expired (or cannot be read): it cannot connect to rotate, so it needs
    /// replacing (`provision replace`), not a rotation job.
    Replace {
        /// The thing.
        thing: String,
        /// The certificate.
        certificate_id: String,
        /// Why.
        reason: String,
    },
}

/// The things whose ACTIVE certificate expires within `days` of `now` (Device Defender's
/// DEVICE_CERTIFICATE_EXPIRING_CHECK, from the same reading as `provision audit`), one entry per
/// thing, sorted by thing. A certificate attached to several things is left alone (the audit
/// reports it as shared); one attached to none has no device to rotate it.
pub fn expiring(certificates: &[CertificateSnapshot], now: i64, days: u32) -> Vec<Expiry> {
    let mut found: Vec<Expiry> = Vec::new();
    for cert in certificates.iter().filter(|c| c.status == "ACTIVE") {
        let [thing] = cert.things.as_slice() else { continue };
        let (thing, certificate_id) = (thing.clone(), cert.id.clone());
        let entry = match crate::audit::checks::not_after(cert) {
            Err(reason) => {
                Expiry::Replace { thing, certificate_id, reason: format!("its expiry cannot be read: {reason}") }
            }
            Ok(end) if end <= now => Expiry::Replace { thing, certificate_id, reason: "it has expired".into() },
            Ok(end) if end - now <= i64::from(days) * 86_400 => {
                Expiry::Rotate { thing, certificate_id, not_after: end }
            }
            Ok(_) => continue,
        };
        found.push(entry);
    }
    let thing = |e: &Expiry| match e {
        Expiry::Rotate { thing, .. } | Expiry::Replace { thing, .. } => thing.clone(),
    };
    found.sort_by_key(thing);
    found.dedup_by_key(|e| thing(e));
    found
}

/// How the expiry sweep went for one thing.
#[derive(Debug)]
pub struct SweepResult {
    /// What the sweep found.
    pub expiry: Expiry,
    /// The rotation's outcome (`None` for a thing that needs replacing).
    pub rotation: Option<Result<RotationOutcome, ProvisionError>>,
}

/// Rotates every thing whose active certificate expires within `days` ([`expiring`]): one
/// rotation job per thing, `job_prefix-{thing}`, at most `concurrency` followed at a time, each
/// resumed if an earlier sweep left it unfinished ([`rotate`]).
pub async fn rotate_expiring(
    iot: &aws_sdk_iot::Client,
    data: &aws_sdk_iotdataplane::Client,
    days: u32,
    job_prefix: &str,
    concurrency: usize,
    poll: Duration,
    timeout: Duration,
) -> Result<Vec<SweepResult>, ProvisionError> {
    let certificates = crate::audit::read_certificates(iot).await?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let found = expiring(&certificates, now, days);
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut running = tokio::task::JoinSet::new();
    for (index, expiry) in found.iter().enumerate() {
        let Expiry::Rotate { thing, .. } = expiry else { continue };
        let (iot, data, permits) = (iot.clone(), data.clone(), permits.clone());
        let (thing, job_id) = (thing.clone(), format!("{job_prefix}-{thing}"));
        running.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (index, rotate(&iot, &data, &thing, &job_id, poll, timeout).await)
        });
    }
    let mut results: Vec<SweepResult> =
        found.into_iter().map(|expiry| SweepResult { expiry, rotation: None }).collect();
    while let Some(done) = running.join_next().await {
        let (index, outcome) = done.map_err(|e| ProvisionError::unexpected("rotation task", e.to_string()))?;
        results[index].rotation = Some(outcome);
    }
    Ok(results)
}

/// Activates the new certificate, gives it the old one's policies and the thing, tells the device.
async fn attach(
    iot: &aws_sdk_iot::Client,
    data: &aws_sdk_iotdataplane::Client,
    thing: &str,
    old_arn: &str,
    new_id: &str,
) -> Result<(), ProvisionError> {
    let new_arn = iot
        .describe_certificate()
        .certificate_id(new_id)
        .send()
        .await
        .map_err(aws("DescribeCertificate"))?
        .certificate_description
        .and_then(|d| d.certificate_arn)
        .ok_or_else(|| ProvisionError::unexpected("DescribeCertificate", "no certificateArn"))?;
    iot.update_certificate()
        .certificate_id(new_id)
        .new_status(CertificateStatus::Active)
        .send()
        .await
        .map_err(aws("UpdateCertificate"))?;
    for name in list_attached_policies(iot, old_arn).await? {
        iot.attach_policy().policy_name(name).target(&new_arn).send().await.map_err(aws("AttachPolicy"))?;
    }
    iot.attach_thing_principal()
        .thing_name(thing)
        .principal(&new_arn)
        .send()
        .await
        .map_err(aws("AttachThingPrincipal"))?;
    let notice = serde_json::json!({"certificateId": new_id, "attached": true}).to_string();
    data.publish()
        .topic(attached_topic(thing))
        .qos(1)
        .payload(aws_sdk_iotdataplane::primitives::Blob::new(notice))
        .send()
        .await
        .map_err(aws("Publish"))?;
    Ok(())
}

/// Detaches, deactivates and deletes a certificate ([`retire_certificate`], as `deprovision` does).
async fn retire(iot: &aws_sdk_iot::Client, thing: &str, arn: &str) -> Result<(), ProvisionError> {
    retire_certificate(iot, thing, arn, &mut Vec::new()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::checks::tests::cert;

    fn details(id: Option<&str>) -> HashMap<String, String> {
        id.map(|id| HashMap::from([("newCertificateId".to_owned(), id.to_owned())])).unwrap_or_default()
    }

    #[test]
    fn a_reported_new_certificate_is_attached_once() {
        let running = JobExecutionStatus::InProgress;
        assert_eq!(next_action(&running, &details(None), None), CloudAction::Wait);
        assert_eq!(next_action(&running, &details(Some("n")), None), CloudAction::Attach("n".into()));
        assert_eq!(next_action(&running, &details(Some("n")), Some("n")), CloudAction::Wait);
    }

    #[test]
    fn a_commit_retires_the_old_certificate_and_any_other_end_the_new_one() {
        assert_eq!(next_action(&JobExecutionStatus::Succeeded, &details(Some("n")), Some("n")), CloudAction::RetireOld);
        for end in [
            JobExecutionStatus::Failed,
            JobExecutionStatus::TimedOut,
            JobExecutionStatus::Canceled,
            JobExecutionStatus::Rejected,
            JobExecutionStatus::Removed,
        ] {
            assert_eq!(next_action(&end, &details(None), Some("n")), CloudAction::RetireNew("n".into()), "{end:?}");
        }
        // A device killed before it reported the certificate names it when it fails.
        assert_eq!(
            next_action(&JobExecutionStatus::Failed, &details(Some("n")), None),
            CloudAction::RetireNew("n".into())
        );
        assert_eq!(next_action(&JobExecutionStatus::Failed, &details(None), None), CloudAction::Done);
    }

    #[test]
    fn the_sweep_rotates_active_certificates_expiring_within_the_threshold_and_sends_expired_ones_to_replacement() {
        const NOW: i64 = 1_800_000_000;
        const DAY: i64 = 86_400;
        let certificates = [
            cert("soon", "ACTIVE", NOW + 10 * DAY, &["b"]),
            cert("later", "ACTIVE", NOW + 400 * DAY, &["c"]),
            cert("gone", "ACTIVE", NOW - DAY, &["a"]),
            cert("inactive", "INACTIVE", NOW + DAY, &["d"]),
            cert("shared", "ACTIVE", NOW + DAY, &["e", "f"]),
            cert("loose", "ACTIVE", NOW + DAY, &[]),
            cert("edge", "ACTIVE", NOW + 30 * DAY, &["g"]),
        ];
        let found = expiring(&certificates, NOW, 30);
        assert_eq!(
            found,
            vec![
                Expiry::Replace { thing: "a".into(), certificate_id: "gone".into(), reason: "it has expired".into() },
                Expiry::Rotate { thing: "b".into(), certificate_id: "soon".into(), not_after: NOW + 10 * DAY },
                Expiry::Rotate { thing: "g".into(), certificate_id: "edge".into(), not_after: NOW + 30 * DAY },
            ]
        );
        // A thing in the middle of a rotation has two active certificates: it is named once.
        let rotating = [cert("old", "ACTIVE", NOW + DAY, &["h"]), cert("new", "ACTIVE", NOW + 2 * DAY, &["h"])];
        assert_eq!(expiring(&rotating, NOW, 30).len(), 1);
        // Unreadable expiry: replaced, with the reason.
        let mut unreadable = cert("x", "ACTIVE", 0, &["i"]);
        unreadable.not_after = None;
        assert!(
            matches!(&expiring(&[unreadable], NOW, 30)[..], [Expiry::Replace { reason, .. }] if reason.contains("cannot be read"))
        );
    }

    #[test]
    fn only_rotation_documents_are_taken_as_rotations() {
        assert!(is_rotation_document(ROTATE_DOCUMENT));
        assert!(is_rotation_document(r#"{"operation": "ROTATE_CERTIFICATE", "note": "x"}"#));
        assert!(!is_rotation_document(r#"{"operation": "REBOOT"}"#));
        assert!(!is_rotation_document("not json"));
    }
}
