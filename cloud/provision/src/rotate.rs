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
}

/// Rotates the certificate of `thing`: creates job `job_id` and follows it (every `poll`, for at
/// most `timeout`). The thing must have exactly one certificate (as AWS's rotator requires).
pub async fn rotate(
    iot: &aws_sdk_iot::Client,
    data: &aws_sdk_iotdataplane::Client,
    thing: &str,
    job_id: &str,
    poll: Duration,
    timeout: Duration,
) -> Result<RotationOutcome, ProvisionError> {
    let principals = list_thing_principals(iot, thing).await?;
    let [old_arn] = principals.as_slice() else {
        return Err(ProvisionError::InvalidInput(format!(
            "{thing} has {} certificates; a rotation needs exactly one",
            principals.len()
        )));
    };
    let old_arn = old_arn.clone();
    let thing_arn = iot
        .describe_thing()
        .thing_name(thing)
        .send()
        .await
        .map_err(aws("DescribeThing"))?
        .thing_arn
        .ok_or_else(|| ProvisionError::unexpected("DescribeThing", "no thingArn"))?;
    iot.create_job()
        .job_id(job_id)
        .targets(thing_arn)
        .document(ROTATE_DOCUMENT)
        .description("certificate rotation")
        .send()
        .await
        .map_err(aws("CreateJob"))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut attached: Option<String> = None;
    loop {
        let execution = iot
            .describe_job_execution()
            .job_id(job_id)
            .thing_name(thing)
            .send()
            .await
            .map_err(aws("DescribeJobExecution"))?
            .execution
            .ok_or_else(|| ProvisionError::unexpected("DescribeJobExecution", "no execution"))?;
        let status = execution.status.clone().unwrap_or(JobExecutionStatus::Queued);
        let details = execution.status_details.and_then(|d| d.details_map).unwrap_or_default();
        let outcome = |certificate_arn: &str, timed_out| RotationOutcome {
            job_id: job_id.to_owned(),
            status: status.as_str().to_owned(),
            details: details.clone(),
            certificate_id: certificate_id(certificate_arn).to_owned(),
            timed_out,
        };
        match next_action(&status, &details, attached.as_deref()) {
            CloudAction::Wait => {}
            CloudAction::Attach(id) => {
                attach(iot, data, thing, &old_arn, &id).await?;
                attached = Some(id);
                continue;
            }
            CloudAction::RetireOld => {
                retire(iot, thing, &old_arn).await?;
                let new = attached.or_else(|| details.get("newCertificateId").cloned()).unwrap_or_default();
                return Ok(outcome(&new, false));
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
                    retire(iot, thing, &arn).await?;
                }
                return Ok(outcome(&old_arn, false));
            }
            CloudAction::Done => return Ok(outcome(&old_arn, false)),
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(outcome(&old_arn, true));
        }
        tokio::time::sleep(poll).await;
    }
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
}
