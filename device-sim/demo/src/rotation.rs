//! The certificate rotation step: the operator rotates the core's certificate once through a
//! rotation job, with the same library `provision rotate --thing` runs against AWS
//! ([`provision::rotate::rotate`]). The core (started with rotation on, as `device-sim core
//! --certificate-rotation`) makes a new key, asks for a certificate from its CSR, moves its MQTT
//! connection to it, proves it and commits; the cloud's part attaches the new certificate and
//! retires the old one. Checked where an operator and the device see it: the job SUCCEEDED, the
//! thing has exactly the new certificate, the old one is gone from the registry, the core's
//! connection presents the new certificate and is up, and telemetry made after the commit reaches
//! the cloud (the old certificate no longer exists, so it came over the new one).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::observer::Observer;
use crate::site::{Site, THING};

/// How often the operator's side looks at the job's execution.
const POLL: Duration = Duration::from_millis(200);

/// What the rotation did, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct CertificateRotation {
    /// The rotation job.
    pub job_id: String,
    /// The certificate the core had before.
    pub old_certificate: String,
    /// The certificate it has now, issued from the core's CSR.
    pub new_certificate: String,
    /// CreateJob → the job SUCCEEDED and the old certificate deleted, in milliseconds.
    pub rotate_ms: u64,
    /// The commit → a telemetry batch made after it reached the cloud, in milliseconds.
    pub telemetry_after_ms: u64,
}

impl CertificateRotation {
    /// The report's section.
    pub fn markdown(&self) -> String {
        format!(
            "| what | value |\n| --- | --- |\n| job | `{}` (`{}`) |\n| old certificate (deleted) | `{}` |\n| new certificate (from the core's CSR) | `{}` |\n| time to rotate (CreateJob → SUCCEEDED, old certificate deleted) | {} ms |\n| commit → telemetry over the new certificate in the cloud | {} ms |\n",
            self.job_id,
            provision::rotate::ROTATE_DOCUMENT,
            self.old_certificate,
            self.new_certificate,
            self.rotate_ms,
            self.telemetry_after_ms
        )
    }
}

/// Rotates the core's certificate once and checks the outcome; the step's detail and the record.
pub async fn run(
    site: &Site,
    obs: &Observer,
    telemetry: &str,
    wait: Duration,
) -> anyhow::Result<(String, CertificateRotation)> {
    let principals = thing_certificates(&site.iot).await?;
    let [old_arn] = principals.as_slice() else { bail!("{THING} has certificates {principals:?}, not exactly one") };
    let old = certificate_id(old_arn);
    let job_id = format!("rotate-{THING}-{}", crate::demo::epoch_ms());
    let started = Instant::now();
    let outcome = provision::rotate::rotate(&site.iot, &site.data, THING, &job_id, POLL, wait)
        .await
        .context("rotating the core's certificate")?;
    if let Some(problem) = outcome.problem() {
        bail!("rotation job {job_id}: {problem} (core logs under {})", site.dir.join("core/logs").display());
    }
    let rotate_ms = started.elapsed().as_millis() as u64;
    let committed_ms = crate::demo::epoch_ms();
    let new = outcome.certificate_id.clone();
    let now = thing_certificates(&site.iot).await?;
    if now.len() != 1 || certificate_id(&now[0]) != new || new == old {
        bail!("after the rotation {THING} has certificates {now:?}, not only the new {new}");
    }
    if site.iot.describe_certificate().certificate_id(&old).send().await.is_ok() {
        bail!("the old certificate {old} is still in the registry");
    }
    let core = site.core()?;
    let bridge = core.bridge().context("the core has no cloud connection")?;
    let mut connection = bridge.connection();
    tokio::time::timeout(wait, connection.wait_for(|up| *up))
        .await
        .context("the core's connection did not come back up")?
        .context("the core's bridge stopped")?;
    let presented = std::fs::read_to_string(&bridge.identity().cert_file).context("the core's certificate file")?;
    let issued = site.iot.describe_certificate().certificate_id(&new).send().await.context("DescribeCertificate")?;
    let issued_pem = issued.certificate_description().and_then(|d| d.certificate_pem()).unwrap_or_default();
    if presented.trim() != issued_pem.trim() {
        bail!("the core's connection does not present the new certificate {new}");
    }
    let mut rx = obs.subscribe();
    crate::demo::wait_for_telemetry_after(&mut rx, telemetry, committed_ms, "telemetry after the rotation").await?;
    let telemetry_after_ms = crate::demo::epoch_ms().saturating_sub(committed_ms);
    let record =
        CertificateRotation { job_id, old_certificate: old, new_certificate: new, rotate_ms, telemetry_after_ms };
    Ok((
        format!(
            "job {} SUCCEEDED in {} ms: the core made a new key and certificate {} from its CSR and reconnected on it; the old certificate {} was deleted; telemetry flowed {} ms after the commit",
            record.job_id,
            record.rotate_ms,
            short(&record.new_certificate),
            short(&record.old_certificate),
            record.telemetry_after_ms
        ),
        record,
    ))
}

/// The ARNs of the certificates attached to the core's thing.
async fn thing_certificates(iot: &aws_sdk_iot::Client) -> anyhow::Result<Vec<String>> {
    let out = iot.list_thing_principals().thing_name(THING).send().await.context("ListThingPrincipals")?;
    Ok(out.principals().to_vec())
}

/// The certificate id at the end of a certificate ARN.
fn certificate_id(arn: &str) -> String {
    arn.rsplit('/').next().unwrap_or(arn).to_owned()
}

/// The first 12 characters of a certificate id, for a progress line.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
