//! The shell that runs [`super::machine`] inside the core: it takes rotation jobs from the Jobs
//! MQTT API (`$aws/things/{thing}/jobs/notify-next`, `$next/get` on every connection), writes
//! the record before each step, and does the steps over the core's one connection — the CSR
//! exchange (CreateCertificateFromCsr), the job reports, the wait for the cloud's attach notice
//! on [`attached_topic`], the switch of the bridge and the proof (a classic-shadow `get`
//! answered on the new connection within [`RotationOptions::proof_deadline`]).
//!
//! Jobs whose document is not `{"operation": "ROTATE_CERTIFICATE"}` are left alone; deployment
//! jobs live in the `aws-gg-deployment` namespace and never reach these topics.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cloud_api::ipc::model::{MqttMessage, Qos};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::machine::{self, Certificate, Event, JobStatus, Record, Stage, Step, Trigger};
use super::record;
use crate::core::bridge::{BridgeIdentity, BridgeSetupError, MqttBridge};
use crate::core::key_store::KeyRef;
use crate::core::options::{CoreOptions, RotationOptions};
use crate::core::services::IotCoreBridge;

/// The job document's `operation` that asks for a rotation (AWS's rotator's convention).
pub const ROTATE_OPERATION: &str = "ROTATE_CERTIFICATE";

/// How long a request (a CSR, a job report) may go unanswered before it is sent again.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// The wait before a throttled report goes again.
const RETRY_DELAY: Duration = Duration::from_secs(2);

/// Where the cloud-side step says the new certificate is attached:
/// `{"certificateId": "…", "attached": true}` (or `false` with a `reason`).
pub fn attached_topic(thing: &str) -> String {
    format!("cmd/{thing}/certificate-rotation")
}

/// How the rotation runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The core's thing (its client id and the CSR's common name).
    pub thing: String,
    /// The core's root (the record and the new certificates go under `{root}/identity`).
    pub root: PathBuf,
    /// The key store and the deadlines.
    pub options: RotationOptions,
}

/// At the core's start, before the bridge exists: the record (finished by [`run`]) and the
/// identity to connect with, if a committed rotation replaced the one the core was started with.
pub fn at_start(settings: &Settings) -> Result<(Option<BridgeIdentity>, Record, Vec<Step>), record::RecordError> {
    let (current, record, steps) = machine::on_start(record::load(&settings.root)?);
    let identity = match current {
        Some(cert) => match settings.options.keys.key(&KeyRef::from_path(&cert.key_file).map_err(key_fault)?) {
            Ok(key) => Some(BridgeIdentity { cert_file: cert.cert_file, key }),
            Err(e) => return Err(key_fault(e)),
        },
        None => None,
    };
    Ok((identity, record, steps))
}

fn key_fault(e: crate::core::key_store::KeyStoreError) -> record::RecordError {
    record::RecordError::Damaged { path: PathBuf::from("the rotated key"), reason: e.to_string() }
}

/// With rotation on ([`crate::core::options::CloudOptions::certificate_rotation`]): the settings,
/// and the record and steps [`at_start`] left; `options`' identity becomes the one a committed
/// rotation made, if any (the bridge and the Greengrass data plane then present it).
pub fn from_options(options: &mut CoreOptions) -> Result<Option<(Settings, Record, Vec<Step>)>, BridgeSetupError> {
    let Some(cloud) = options.cloud.as_mut() else { return Ok(None) };
    let Some(rotation) = cloud.certificate_rotation.clone() else { return Ok(None) };
    let settings = Settings { thing: options.thing.clone(), root: options.root.clone(), options: rotation };
    let (identity, record, steps) = at_start(&settings).map_err(|e| BridgeSetupError(e.to_string()))?;
    if let Some(identity) = identity {
        tracing::info!(certificate = %identity.cert_file.display(), "using the certificate of the last rotation");
        cloud.cert_file = identity.cert_file;
        cloud.key = identity.key;
    }
    Ok(Some((settings, record, steps)))
}

/// A job offered to the core, if it asks for a rotation.
fn rotation_job(topic: &str, payload: &[u8]) -> Option<String> {
    if !(topic.ends_with("/jobs/notify-next") || topic.ends_with("/jobs/$next/get/accepted")) {
        return None;
    }
    let v: Value = serde_json::from_slice(payload).ok()?;
    let execution = v.get("execution")?;
    let document = execution.get("jobDocument")?;
    (document.get("operation")?.as_str()? == ROTATE_OPERATION).then_some(())?;
    matches!(execution.get("status")?.as_str()?, "QUEUED" | "IN_PROGRESS")
        .then(|| execution.get("jobId")?.as_str().map(str::to_owned))?
}

/// Runs rotations until the bridge goes away: first `steps` (what [`at_start`] left), then each
/// rotation job as it is offered.
pub async fn run(settings: Settings, bridge: Arc<MqttBridge>, record: Record, steps: Vec<Step>) {
    let thing = settings.thing.clone();
    let jobs = format!("$aws/things/{thing}/jobs");
    let filters = [
        format!("{jobs}/notify-next"),
        format!("{jobs}/$next/get/accepted"),
        format!("{jobs}/+/update/accepted"),
        format!("{jobs}/+/update/rejected"),
        "$aws/certificates/create-from-csr/json/accepted".to_owned(),
        "$aws/certificates/create-from-csr/json/rejected".to_owned(),
        format!("$aws/things/{thing}/shadow/get/accepted"),
        format!("$aws/things/{thing}/shadow/get/rejected"),
        attached_topic(&thing),
    ];
    let (tx, inbox) = mpsc::channel(64);
    for filter in &filters {
        match bridge.subscribe(filter, Qos::AtLeastOnce).await {
            Ok(mut rx) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while let Some(m) = rx.recv().await {
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(%filter, error = %e, "certificate rotation cannot subscribe"),
        }
    }
    drop(tx);
    let mut shell = Shell { settings, bridge, record, inbox, notices: VecDeque::new(), last_report: None };
    // What the start decided (a rollback begun) is written before its steps, as every change is.
    if !steps.is_empty() && !shell.store(&shell.record.clone()).await {
        return;
    }
    shell.execute(steps).await;
    let mut connection = shell.bridge.connection();
    // Connected already: ask now (the bridge writes the SUBSCRIBEs above before this publish),
    // or a job queued before the subscriptions reached IoT Core would wait for a reconnect.
    if *connection.borrow_and_update() {
        shell.ask_next().await;
    }
    loop {
        tokio::select! {
            changed = connection.changed() => {
                if changed.is_err() {
                    return;
                }
                if *connection.borrow_and_update() {
                    shell.ask_next().await;
                }
            }
            message = shell.inbox.recv() => {
                let Some(m) = message else { return };
                let Some(job_id) = rotation_job(&m.topic_name, m.payload.as_bytes()) else { continue };
                let Some(current) = shell.current_certificate() else { continue };
                let trigger = Trigger::Job { job_id };
                let keys = &shell.settings.options.keys;
                let new_key = keys.named(&machine::key_label(&trigger)).to_path();
                shell.feed(Event::Requested { trigger, current, new_key }).await;
                if shell.record.rotation.is_none() {
                    shell.ask_next().await;
                }
            }
        }
    }
}

struct Shell {
    settings: Settings,
    bridge: Arc<MqttBridge>,
    record: Record,
    inbox: mpsc::Receiver<MqttMessage>,
    /// Attach notices that came while another step waited (the cloud may answer the IN_PROGRESS
    /// report before the core hears the report was accepted).
    notices: VecDeque<MqttMessage>,
    /// The last report sent (a [`Step::Report`]), for [`Step::RetryReport`].
    last_report: Option<Step>,
}

impl Shell {
    async fn ask_next(&self) {
        let topic = format!("$aws/things/{}/jobs/$next/get", self.settings.thing);
        let _ = self.bridge.publish(&topic, Qos::AtLeastOnce, b"{}".to_vec(), false).await;
    }

    /// The certificate the bridge presents now.
    fn current_certificate(&self) -> Option<Certificate> {
        let identity = self.bridge.identity();
        let pem = std::fs::read(&identity.cert_file).ok()?;
        Some(Certificate {
            certificate_id: certificate_id(&pem).unwrap_or_default(),
            cert_file: identity.cert_file,
            key_file: identity.key.key_ref().to_path(),
        })
    }

    async fn store(&self, record: &Record) -> bool {
        if let Err(e) = record::store(&self.settings.root, record) {
            tracing::error!(error = %e, "certificate rotation cannot write its record; stopping here");
            return false;
        }
        if let Some(freeze) = &self.settings.options.freeze
            && freeze.wrote()
        {
            tracing::warn!("certificate rotation frozen after a record write (fault injection)");
            std::future::pending::<()>().await;
        }
        true
    }

    /// Feeds an event to the machine, writes its record, then takes its steps.
    async fn feed(&mut self, event: Event) {
        let (record, steps) = machine::on(self.record.clone(), event);
        self.adopt(record, steps).await;
    }

    async fn adopt(&mut self, record: Record, steps: Vec<Step>) {
        if record != self.record {
            if !self.store(&record).await {
                return;
            }
            self.record = record;
        }
        self.execute(steps).await;
    }

    /// Takes steps in order; a step that yields an event feeds it, and a changed stage replaces
    /// the steps still waiting with the machine's new ones.
    async fn execute(&mut self, steps: Vec<Step>) {
        let mut queue: VecDeque<Step> = steps.into();
        while let Some(step) = queue.pop_front() {
            let outcome = self.step(step).await;
            let (record, steps) = match outcome {
                Outcome::Event(event) => machine::on(self.record.clone(), event),
                Outcome::KeyMade(key) => machine::key_generated(self.record.clone(), key),
                Outcome::Done => continue,
            };
            let stage_changed = stage(&record) != stage(&self.record);
            if record != self.record {
                if !self.store(&record).await {
                    return;
                }
                self.record = record;
            }
            if stage_changed || !steps.is_empty() {
                queue = steps.into();
            }
        }
    }

    async fn step(&mut self, step: Step) -> Outcome {
        match step {
            Step::GenerateKey { label } => {
                let keys = &self.settings.options.keys;
                // A key left by an earlier try of the same job is never reused.
                let _ = keys.delete(&keys.named(&label));
                match keys.generate(&label) {
                    Ok(key) => Outcome::KeyMade(key.key_ref().to_path()),
                    Err(e) => Outcome::Event(Event::Failed(format!("cannot make the new key: {e}"))),
                }
            }
            Step::RequestCertificate { key } => Outcome::Event(self.request_certificate(&key).await),
            Step::AwaitAttach { certificate_id } => Outcome::Event(self.await_attach(&certificate_id).await),
            Step::Switch(cert) if self.bridge.identity().cert_file == cert.cert_file => Outcome::Done,
            Step::Switch(cert) => {
                let key = KeyRef::from_path(&cert.key_file).and_then(|k| self.settings.options.keys.key(&k));
                let result = match key {
                    Ok(key) => self
                        .bridge
                        .switch_identity(BridgeIdentity { cert_file: cert.cert_file.clone(), key })
                        .await
                        .map_err(|e| e.0),
                    Err(e) => Err(e.to_string()),
                };
                match result {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Event(Event::Failed(format!("cannot present the new certificate: {e}"))),
                }
            }
            Step::Prove => Outcome::Event(self.prove().await),
            Step::Report { job_id, status, details } => {
                self.reach_cloud().await;
                let event = self.report(&job_id, status, &details).await;
                self.last_report = Some(Step::Report { job_id, status, details });
                Outcome::Event(event)
            }
            Step::RetryReport => {
                tokio::time::sleep(RETRY_DELAY).await;
                match self.last_report.clone() {
                    Some(Step::Report { job_id, status, details }) => {
                        Outcome::Event(self.report(&job_id, status, &details).await)
                    }
                    _ => Outcome::Done,
                }
            }
            Step::DeleteKey(key) => {
                if let Err(e) = KeyRef::from_path(&key).and_then(|k| self.settings.options.keys.delete(&k)) {
                    tracing::warn!(key = %key.display(), error = %e, "cannot delete a rotation key");
                }
                Outcome::Done
            }
        }
    }

    /// The next message `pick` accepts, within `within`: a kept attach notice first, then what
    /// arrives. Attach notices `pick` passes over are kept for a later step.
    async fn wait_for<T>(&mut self, within: Duration, mut pick: impl FnMut(&str, &[u8]) -> Option<T>) -> Option<T> {
        if let Some(i) = self.notices.iter().position(|m| pick(&m.topic_name, m.payload.as_bytes()).is_some()) {
            let m = self.notices.remove(i)?;
            return pick(&m.topic_name, m.payload.as_bytes());
        }
        let deadline = tokio::time::Instant::now() + within;
        let notice_topic = attached_topic(&self.settings.thing);
        loop {
            let m = tokio::time::timeout_at(deadline, self.inbox.recv()).await.ok()??;
            if let Some(t) = pick(&m.topic_name, m.payload.as_bytes()) {
                return Some(t);
            }
            if m.topic_name == notice_topic {
                if self.notices.len() >= 8 {
                    self.notices.pop_front();
                }
                self.notices.push_back(m);
            }
        }
    }

    async fn request_certificate(&mut self, key: &Path) -> Event {
        let device_key = match KeyRef::from_path(key).and_then(|k| self.settings.options.keys.key(&k)) {
            Ok(k) => k,
            Err(e) => return Event::Failed(format!("the new key is gone: {e}")),
        };
        let csr = match device_key.csr(&self.settings.thing) {
            Ok(csr) => csr,
            Err(e) => return Event::Failed(e.to_string()),
        };
        let topic = "$aws/certificates/create-from-csr/json";
        let request = serde_json::to_vec(&json!({"certificateSigningRequest": csr})).expect("JSON");
        if let Err(e) = self.bridge.publish(topic, Qos::AtLeastOnce, request, false).await {
            return Event::Failed(format!("cannot send the CSR: {e}"));
        }
        let answer = self
            .wait_for(ANSWER_TIMEOUT, |t, p| {
                t.starts_with(topic).then(|| (t.ends_with("/accepted"), serde_json::from_slice::<Value>(p).ok()))
            })
            .await;
        let body = match answer {
            Some((true, Some(body))) => body,
            Some((_, body)) => {
                let body = body.unwrap_or_default();
                return Event::Failed(format!(
                    "CreateCertificateFromCsr rejected: {} {}",
                    body["errorCode"].as_str().unwrap_or("?"),
                    body["errorMessage"].as_str().unwrap_or("")
                ));
            }
            None => return Event::Failed(format!("CreateCertificateFromCsr unanswered within {ANSWER_TIMEOUT:?}")),
        };
        let (Some(id), Some(pem)) = (body["certificateId"].as_str(), body["certificatePem"].as_str()) else {
            return Event::Failed("CreateCertificateFromCsr answered without a certificate".into());
        };
        let stem = key.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| id.to_owned());
        let stem = stem.trim_start_matches("pkcs11:object=").split(';').next().unwrap_or(id).to_owned();
        let cert_file = crate::core::claim::identity_dir(&self.settings.root).join(format!("{stem}.crt"));
        if let Err(e) = crate::core::layout::write_durably(&cert_file, pem.as_bytes()) {
            return Event::Failed(format!("cannot keep the new certificate in {}: {e}", cert_file.display()));
        }
        Event::CertificateIssued(Certificate { certificate_id: id.to_owned(), cert_file, key_file: key.to_owned() })
    }

    async fn await_attach(&mut self, certificate_id: &str) -> Event {
        let topic = attached_topic(&self.settings.thing);
        let within = self.settings.options.attach_timeout;
        let answer = self
            .wait_for(within, |t, p| {
                let v: Value = serde_json::from_slice(p).ok()?;
                (t == topic && v["certificateId"] == certificate_id).then_some(v)
            })
            .await;
        match answer {
            Some(v) if v["attached"] == true => Event::Attached,
            Some(v) => Event::Failed(format!(
                "the cloud did not attach the new certificate: {}",
                v["reason"].as_str().unwrap_or("no reason given")
            )),
            None => Event::Failed(format!("the cloud did not attach the new certificate within {within:?}")),
        }
    }

    /// The new connection comes up, and a shadow `get` published on it is answered (accepted,
    /// or rejected 404 for a thing without a classic shadow: either way the broker let the core
    /// in, took its SUBSCRIBE and its PUBLISH, and delivered to it).
    async fn prove(&mut self) -> Event {
        let deadline = self.settings.options.proof_deadline;
        let mut connection = self.bridge.connection();
        let up = tokio::time::timeout(deadline, connection.wait_for(|up| *up)).await.is_ok_and(|r| r.is_ok());
        if !up {
            let why = self.bridge.connect_error().borrow().clone().unwrap_or_else(|| "no answer".into());
            return Event::Failed(format!("the new certificate did not connect within {deadline:?}: {why}"));
        }
        let thing = self.settings.thing.clone();
        let topic = format!("$aws/things/{thing}/shadow/get");
        let token = format!("rotation-proof-{}", std::process::id());
        let request = serde_json::to_vec(&json!({ "clientToken": token })).expect("JSON");
        if let Err(e) = self.bridge.publish(&topic, Qos::AtLeastOnce, request, false).await {
            return Event::Failed(format!("the proof could not publish: {e}"));
        }
        let answered = self
            .wait_for(deadline, |t, p| {
                let v: Value = serde_json::from_slice(p).ok()?;
                (t.starts_with(&topic) && v["clientToken"] == token.as_str()).then_some(())
            })
            .await;
        match answered {
            Some(()) => Event::Proven,
            None => {
                Event::Failed(format!("the shadow get on the new certificate was not answered within {deadline:?}"))
            }
        }
    }

    /// After a commit, the new certificate may not get in (the cloud retired it because the
    /// job ended while the core was down): then the report goes over the old certificate, which
    /// the cloud keeps until it sees SUCCEEDED. The machine moves the bridge to where the
    /// answer says it belongs.
    async fn reach_cloud(&mut self) {
        let Some(rotation) = &self.record.rotation else { return };
        if !matches!(rotation.stage, Stage::Committed { .. }) {
            return;
        }
        let old = rotation.old.clone();
        let deadline = self.settings.options.proof_deadline;
        let mut connection = self.bridge.connection();
        let up = tokio::time::timeout(deadline, connection.wait_for(|up| *up)).await.is_ok_and(|r| r.is_ok());
        if up || self.bridge.identity().cert_file == old.cert_file {
            return;
        }
        tracing::warn!("the committed certificate does not connect; reporting over the previous one");
        let key = KeyRef::from_path(&old.key_file).and_then(|k| self.settings.options.keys.key(&k));
        if let Ok(key) = key {
            let _ = self.bridge.switch_identity(BridgeIdentity { cert_file: old.cert_file, key }).await;
        }
    }

    async fn report(&mut self, job_id: &str, status: JobStatus, details: &[(String, String)]) -> Event {
        let thing = self.settings.thing.clone();
        let topic = format!("$aws/things/{thing}/jobs/{job_id}/update");
        let status = match status {
            JobStatus::InProgress => "IN_PROGRESS",
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::Failed => "FAILED",
        };
        let details: serde_json::Map<String, Value> =
            details.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        let request = serde_json::to_vec(&json!({"status": status, "statusDetails": details})).expect("JSON");
        loop {
            if let Err(e) = self.bridge.publish(&topic, Qos::AtLeastOnce, request.clone(), false).await {
                return Event::ReportRejected { code: "InternalError".into(), message: e.to_string() };
            }
            let answer = self
                .wait_for(ANSWER_TIMEOUT, |t, p| {
                    let accepted = t == format!("{topic}/accepted");
                    (accepted || t == format!("{topic}/rejected"))
                        .then(|| (accepted, serde_json::from_slice::<Value>(p).unwrap_or_default()))
                })
                .await;
            match answer {
                Some((true, _)) => return Event::ReportAccepted,
                Some((false, v)) => {
                    return Event::ReportRejected {
                        code: v["code"].as_str().unwrap_or("InternalError").to_owned(),
                        message: v["message"].as_str().unwrap_or_default().to_owned(),
                    };
                }
                // Unanswered (the connection may have dropped): the same report goes again.
                None => continue,
            }
        }
    }
}

fn stage(record: &Record) -> Option<&Stage> {
    record.rotation.as_ref().map(|r| &r.stage)
}

/// What a step gave.
enum Outcome {
    Event(Event),
    KeyMade(PathBuf),
    Done,
}

/// AWS IoT's certificate id: the hex SHA-256 of the certificate's DER.
fn certificate_id(pem: &[u8]) -> Option<String> {
    use sha2::Digest as _;
    let der = rustls_pemfile::certs(&mut &pem[..]).next()?.ok()?;
    Some(sha2::Sha256::digest(der.as_ref()).iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_queued_or_running_rotation_jobs_are_taken() {
        let offer = |status: &str, operation: &str| {
            json!({"execution": {"jobId": "j1", "status": status, "jobDocument": {"operation": operation}}}).to_string()
        };
        let next = "$aws/things/t/jobs/notify-next";
        assert_eq!(rotation_job(next, offer("QUEUED", ROTATE_OPERATION).as_bytes()), Some("j1".into()));
        assert_eq!(
            rotation_job("$aws/things/t/jobs/$next/get/accepted", offer("IN_PROGRESS", ROTATE_OPERATION).as_bytes()),
            Some("j1".into())
        );
        assert_eq!(rotation_job(next, offer("QUEUED", "DEPLOY").as_bytes()), None);
        assert_eq!(rotation_job(next, b"{}"), None, "an empty notification: nothing queued");
        assert_eq!(rotation_job("cmd/t/x", offer("QUEUED", ROTATE_OPERATION).as_bytes()), None);
    }
}
