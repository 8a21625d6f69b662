//! The rotation as a durable state machine: pure, no I/O. The shell feeds it [`Event`]s, writes
//! the [`Record`] it returns ([`super::record`]) and only then takes the [`Step`]s — so what is
//! on disk always names every effect that may have happened.
//!
//! ```text
//! Idle ──Requested──▶ KeyMade ──CertificateIssued──▶ CertIssued ──Attached──▶ Switched ──Proven──▶ Committed ──ReportAccepted──▶ Idle
//!                        │                              │                       │                    │
//!                        └──────────── Failed ──────────┴───────────────────────┘           ReportRejected (job ended)
//!                                        ▼                                                           ▼
//!                                   RollingBack ─────────────── ReportAccepted / job ended ─────▶ Idle
//! ```
//!
//! `Committed` is the one point of no return: written (with the new certificate as the core's
//! current identity) only after the new connection has proven itself. Before it, the old
//! certificate is the core's identity on disk and stays ACTIVE in the cloud (the cloud retires
//! it only once the job is SUCCEEDED), so a kill anywhere before it rolls back to a certificate
//! that works; after it, the new one is proven and the SUCCEEDED report is sent until the cloud
//! takes it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A certificate with its key, as the core presents it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Certificate {
    /// AWS IoT's certificate id.
    pub certificate_id: String,
    /// The certificate (PEM file).
    pub cert_file: PathBuf,
    /// Its key as the nucleus's `privateKeyPath`: a PEM file, or a `pkcs11:` URI.
    pub key_file: PathBuf,
}

/// What asked for the rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase", tag = "type")]
pub enum Trigger {
    /// An IoT job whose document says `{"operation": "ROTATE_CERTIFICATE"}`.
    Job {
        /// The job's id.
        job_id: String,
    },
}

/// Where a rotation stands. Each stage is written before the effect that follows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase", tag = "stage")]
pub enum Stage {
    /// A key is being made under `new_key` (it may or may not exist yet); then the CSR is sent.
    KeyMade {
        /// The new key (`privateKeyPath` form).
        new_key: PathBuf,
    },
    /// The cloud issued the new certificate (its file written); the core waits for the cloud to
    /// attach it to the thing and the policies.
    CertIssued {
        /// The new certificate.
        new: Certificate,
    },
    /// The bridge presents (or is about to present) the new certificate; the proof runs.
    Switched {
        /// The new certificate.
        new: Certificate,
    },
    /// Proven and committed: the new certificate is the core's identity; the job's SUCCEEDED
    /// report goes out until the cloud takes it, then the old key is deleted.
    Committed {
        /// The new certificate (also [`Record::current`]).
        new: Certificate,
    },
    /// Given up: the core is back on the old certificate; the new key is deleted and the job's
    /// FAILED report (with the reason) goes out.
    RollingBack {
        /// Why.
        reason: String,
        /// The new key to delete, if one may have been made.
        new_key: Option<PathBuf>,
        /// The new certificate's id, if the cloud issued one (the cloud deletes it).
        new_certificate_id: Option<String>,
        /// Whether the job still needs its FAILED report.
        report: bool,
    },
}

/// A rotation under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// What asked for it.
    pub trigger: Trigger,
    /// The certificate the core had when it began (what a rollback returns to).
    pub old: Certificate,
    /// [`Record::current`] when it began (restored if a commit is undone).
    #[serde(default)]
    pub previous: Option<Certificate>,
    /// Where it stands.
    pub stage: Stage,
}

/// What is kept on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The core's identity after its last committed rotation; `None`: the one it was started
    /// with (`--cert`/`--key`, or the identity onboarding by claim kept).
    pub current: Option<Certificate>,
    /// The rotation under way, if any.
    pub rotation: Option<Rotation>,
}

/// A job status the core reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// The rotation is under way (with its stage in the status details).
    InProgress,
    /// Committed.
    Succeeded,
    /// Rolled back.
    Failed,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Something asked for a rotation; `current` is the identity the core presents now.
    Requested {
        /// What asked.
        trigger: Trigger,
        /// The identity in use.
        current: Certificate,
        /// Where the key store puts the key of [`key_label`] (recorded before it is made, so a
        /// kill while it is being made still deletes it).
        new_key: PathBuf,
    },
    /// CreateCertificateFromCsr answered with the new certificate (its file written).
    CertificateIssued(Certificate),
    /// The cloud attached the new certificate to the thing and its policies.
    Attached,
    /// The connection with the new certificate subscribed, published and got the shadow within
    /// the deadline.
    Proven,
    /// A step failed or ran out of time (the reason goes into the job's status details).
    Failed(String),
    /// The cloud took the job report the core sent.
    ReportAccepted,
    /// The cloud refused the job report (Jobs error code and message).
    ReportRejected {
        /// Jobs `code` (`RequestThrottled`, `TerminalStateReached`, …).
        code: String,
        /// Its message.
        message: String,
    },
}

/// What the shell does next, after writing the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Make a new key in the core's key store under this label.
    GenerateKey {
        /// The key's label (file name without extension, or `CKA_LABEL`).
        label: String,
    },
    /// Send a CSR for the new key (CreateCertificateFromCsr) and write the certificate.
    RequestCertificate {
        /// The new key.
        key: PathBuf,
    },
    /// Wait for the cloud to attach the new certificate (it learns of it from the report).
    AwaitAttach {
        /// The new certificate's id.
        certificate_id: String,
    },
    /// Move the bridge to this certificate.
    Switch(Certificate),
    /// Prove the connection: subscribe, publish, shadow get, within the deadline.
    Prove,
    /// Report the job's status, with these details.
    Report {
        /// The job.
        job_id: String,
        /// Its status.
        status: JobStatus,
        /// `statusDetails` (keys `[a-zA-Z0-9:_-]`, values ≤ 1024 characters).
        details: Vec<(String, String)>,
    },
    /// Send the last report again later (the cloud throttled it or failed inside).
    RetryReport,
    /// Delete a key the rotation made (or the old one, after a commit).
    DeleteKey(PathBuf),
}

/// The label of a rotation's new key: unique per job, never an existing key's.
pub fn key_label(trigger: &Trigger) -> String {
    match trigger {
        Trigger::Job { job_id } => format!("rotated-{job_id}"),
    }
}

/// Jobs error codes after which the same report may be sent again.
fn retryable(code: &str) -> bool {
    matches!(code, "RequestThrottled" | "InternalError" | "ServiceUnavailable")
}

/// The longest `statusDetails` value.
const MAX_DETAIL: usize = 1024;

fn detail(key: &str, value: &str) -> (String, String) {
    let mut value = value.to_owned();
    if value.len() > MAX_DETAIL {
        let mut end = MAX_DETAIL;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
    }
    (key.to_owned(), value)
}

fn job_id(rotation: &Rotation) -> &str {
    match &rotation.trigger {
        Trigger::Job { job_id } => job_id,
    }
}

fn progress(rotation: &Rotation, stage: &str, extra: Option<(&str, &str)>) -> Step {
    let mut details = vec![detail("stage", stage)];
    if let Some((k, v)) = extra {
        details.push(detail(k, v));
    }
    Step::Report { job_id: job_id(rotation).to_owned(), status: JobStatus::InProgress, details }
}

/// The steps that finish a rollback: switch back (when the bridge may be on the new
/// certificate), delete the new key, report FAILED.
fn rollback_steps(rotation: &Rotation, switched: bool) -> Vec<Step> {
    let Stage::RollingBack { reason, new_key, new_certificate_id, report } = &rotation.stage else {
        return Vec::new();
    };
    let mut steps = Vec::new();
    if switched {
        steps.push(Step::Switch(rotation.old.clone()));
    }
    if let Some(key) = new_key {
        steps.push(Step::DeleteKey(key.clone()));
    }
    if *report {
        let mut details = vec![detail("stage", "rolledBack"), detail("reason", reason)];
        if let Some(id) = new_certificate_id {
            details.push(detail("newCertificateId", id));
        }
        steps.push(Step::Report { job_id: job_id(rotation).to_owned(), status: JobStatus::Failed, details });
    }
    steps
}

fn new_key(stage: &Stage) -> Option<PathBuf> {
    match stage {
        Stage::KeyMade { new_key } => Some(new_key.clone()),
        Stage::CertIssued { new } | Stage::Switched { new } | Stage::Committed { new } => Some(new.key_file.clone()),
        Stage::RollingBack { new_key, .. } => new_key.clone(),
    }
}

fn new_certificate_id(stage: &Stage) -> Option<String> {
    match stage {
        Stage::CertIssued { new } | Stage::Switched { new } | Stage::Committed { new } => {
            Some(new.certificate_id.clone())
        }
        Stage::RollingBack { new_certificate_id, .. } => new_certificate_id.clone(),
        Stage::KeyMade { .. } => None,
    }
}

/// Moves `rotation` to RollingBack for `reason`; `report` unless the job has ended.
fn roll_back(mut record: Record, reason: String, report: bool) -> (Record, Vec<Step>) {
    let Some(rotation) = record.rotation.as_mut() else { return (record, Vec::new()) };
    let switched = matches!(rotation.stage, Stage::Switched { .. } | Stage::Committed { .. });
    if matches!(rotation.stage, Stage::Committed { .. }) {
        // The job ended before the commit reached the cloud: the cloud keeps the old
        // certificate and deletes the new one, so the core goes back to the old one.
        record.current = rotation.previous.clone();
    }
    rotation.stage = Stage::RollingBack {
        reason,
        new_key: new_key(&rotation.stage),
        new_certificate_id: new_certificate_id(&rotation.stage),
        report,
    };
    let steps = rollback_steps(rotation, switched);
    (record, steps)
}

/// The next record and steps after `event`.
pub fn on(record: Record, event: Event) -> (Record, Vec<Step>) {
    let mut record = record;
    let Some(rotation) = record.rotation.as_mut() else {
        return match event {
            Event::Requested { trigger, current, new_key } => {
                let label = key_label(&trigger);
                let rotation = Rotation {
                    old: current,
                    previous: record.current.clone(),
                    stage: Stage::KeyMade { new_key },
                    trigger,
                };
                let steps = vec![progress(&rotation, "keyMade", None), Step::GenerateKey { label }];
                record.rotation = Some(rotation);
                (record, steps)
            }
            // Nothing under way: late answers are of no use.
            _ => (record, Vec::new()),
        };
    };
    match (rotation.stage.clone(), event) {
        // One rotation at a time; a second request waits for the job to be offered again.
        (_, Event::Requested { .. }) => (record, Vec::new()),
        (Stage::KeyMade { .. }, Event::CertificateIssued(new)) => {
            let steps = vec![
                progress(rotation, "certIssued", Some(("newCertificateId", &new.certificate_id))),
                Step::AwaitAttach { certificate_id: new.certificate_id.clone() },
            ];
            rotation.stage = Stage::CertIssued { new };
            (record, steps)
        }
        (Stage::CertIssued { new }, Event::Attached) => {
            rotation.stage = Stage::Switched { new: new.clone() };
            (record, vec![Step::Switch(new), Step::Prove])
        }
        (Stage::Switched { new }, Event::Proven) => {
            rotation.stage = Stage::Committed { new: new.clone() };
            let steps = vec![Step::Report {
                job_id: job_id(rotation).to_owned(),
                status: JobStatus::Succeeded,
                details: vec![detail("stage", "committed"), detail("newCertificateId", &new.certificate_id)],
            }];
            record.current = Some(new);
            (record, steps)
        }
        (Stage::Committed { .. } | Stage::RollingBack { .. }, Event::Failed(_)) => (record, Vec::new()),
        (_, Event::Failed(reason)) => roll_back(record, reason, true),
        (Stage::Committed { new }, Event::ReportAccepted) => {
            // The report may have gone over the old certificate (the new one not reachable after
            // a restart): the cloud now retires the old one, so the bridge must be on the new.
            let old = rotation.old.key_file.clone();
            let mut steps = vec![Step::Switch(new)];
            if is_rotation_key(&old) {
                steps.push(Step::DeleteKey(old));
            }
            record.rotation = None;
            (record, steps)
        }
        (Stage::RollingBack { .. }, Event::ReportAccepted) => {
            record.rotation = None;
            (record, Vec::new())
        }
        // A throttle or a failure inside the service: the same report goes again later (the
        // old certificate stays ACTIVE until the cloud sees SUCCEEDED, so waiting is safe).
        (_, Event::ReportRejected { code, .. }) if retryable(&code) => (record, vec![Step::RetryReport]),
        (Stage::Committed { .. }, Event::ReportRejected { code, message }) => {
            roll_back(record, format!("the job refused the commit ({code}: {message})"), false)
        }
        (Stage::RollingBack { .. }, Event::ReportRejected { .. }) => {
            // The job has ended (cancelled, timed out, removed): nothing more to tell it.
            record.rotation = None;
            (record, Vec::new())
        }
        // IN_PROGRESS reports: a refusal other than a throttle means the job is gone.
        (_, Event::ReportRejected { code, message }) => {
            roll_back(record, format!("the job refused a progress report ({code}: {message})"), false)
        }
        // Anything else is late or out of order (a duplicate answer): no effect.
        _ => (record, Vec::new()),
    }
}

/// Whether the rotation made this key (so it may delete it): the keys it names
/// `rotated-{job}`. A key the core was started with (`--key`) is the operator's and is kept.
pub fn is_rotation_key(key: &std::path::Path) -> bool {
    let text = key.to_string_lossy();
    let label = text
        .strip_prefix("pkcs11:object=")
        .map(|rest| rest.split(';').next().unwrap_or_default().to_owned())
        .or_else(|| key.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    label.starts_with("rotated-")
}

/// The key the shell made for [`Step::GenerateKey`]: recorded before the CSR goes out.
pub fn key_generated(mut record: Record, key: PathBuf) -> (Record, Vec<Step>) {
    if let Some(Rotation { stage: Stage::KeyMade { new_key }, .. }) = record.rotation.as_mut() {
        *new_key = key.clone();
        return (record, vec![Step::RequestCertificate { key }]);
    }
    (record, Vec::new())
}

/// At the core's start, before the bridge connects: the identity to connect with (`None`: the
/// one it was started with) and the record and steps that finish what a kill interrupted.
/// Before `Committed` everything rolls back (the old certificate is still ACTIVE); `Committed`
/// resends its SUCCEEDED report; `RollingBack` finishes.
pub fn on_start(record: Record) -> (Option<Certificate>, Record, Vec<Step>) {
    let current = record.current.clone();
    let Some(rotation) = &record.rotation else { return (current, record, Vec::new()) };
    match &rotation.stage {
        Stage::Committed { new } => {
            let steps = vec![Step::Report {
                job_id: job_id(rotation).to_owned(),
                status: JobStatus::Succeeded,
                details: vec![detail("stage", "committed"), detail("newCertificateId", &new.certificate_id)],
            }];
            (current, record, steps)
        }
        Stage::RollingBack { .. } => {
            // Connects with the old certificate (`current` was never moved, or was moved back).
            let steps = rollback_steps(rotation, false);
            (current, record, steps)
        }
        stage => {
            let reason = match stage {
                Stage::KeyMade { .. } => "the core stopped while making the key or asking for the certificate",
                Stage::CertIssued { .. } => "the core stopped while waiting for the cloud to attach the certificate",
                _ => "the core stopped before the new certificate had proven itself",
            };
            let (record, steps) = roll_back(record, reason.to_owned(), true);
            // The bridge starts on the old certificate: no switch back needed.
            let steps = steps.into_iter().filter(|s| !matches!(s, Step::Switch(_))).collect();
            (current, record, steps)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(id: &str) -> Certificate {
        Certificate {
            certificate_id: id.into(),
            cert_file: format!("/r/identity/{id}.crt").into(),
            key_file: format!("/r/identity/{id}.key").into(),
        }
    }

    fn job() -> Trigger {
        Trigger::Job { job_id: "rot-1".into() }
    }

    fn key() -> PathBuf {
        "/r/identity/rotated-rot-1.key".into()
    }

    fn new_cert() -> Certificate {
        Certificate { certificate_id: "new".into(), cert_file: "/r/identity/new.crt".into(), key_file: key() }
    }

    fn at(stage: Stage) -> Record {
        Record { current: None, rotation: Some(Rotation { trigger: job(), old: cert("old"), previous: None, stage }) }
    }

    fn stage(r: &Record) -> &Stage {
        &r.rotation.as_ref().expect("a rotation").stage
    }

    fn failed_report(steps: &[Step]) -> Option<String> {
        steps.iter().find_map(|s| match s {
            Step::Report { status: JobStatus::Failed, details, .. } => {
                details.iter().find(|(k, _)| k == "reason").map(|(_, v)| v.clone())
            }
            _ => None,
        })
    }

    /// Every stage a rotation can be in, in order.
    fn every_stage() -> Vec<Stage> {
        vec![
            Stage::KeyMade { new_key: key() },
            Stage::CertIssued { new: new_cert() },
            Stage::Switched { new: new_cert() },
            Stage::Committed { new: new_cert() },
            Stage::RollingBack { reason: "r".into(), new_key: Some(key()), new_certificate_id: None, report: true },
        ]
    }

    #[test]
    fn a_request_makes_a_key_under_a_label_of_its_own_and_reports_in_progress() {
        let (r, steps) =
            on(Record::default(), Event::Requested { trigger: job(), current: cert("old"), new_key: key() });
        assert_eq!(stage(&r), &Stage::KeyMade { new_key: key() }, "the key is named before it is made");
        assert_eq!(r.rotation.as_ref().unwrap().old, cert("old"));
        assert!(matches!(&steps[0], Step::Report { status: JobStatus::InProgress, .. }));
        assert_eq!(steps[1], Step::GenerateKey { label: "rotated-rot-1".into() });
        let (r, steps) = key_generated(r, key());
        assert_eq!(stage(&r), &Stage::KeyMade { new_key: key() });
        assert_eq!(steps, [Step::RequestCertificate { key: key() }]);
    }

    #[test]
    fn a_second_request_while_one_is_under_way_changes_nothing() {
        let r = at(Stage::CertIssued { new: new_cert() });
        let (after, steps) = on(r.clone(), Event::Requested { trigger: job(), current: cert("x"), new_key: key() });
        assert_eq!((after, steps), (r, vec![]));
    }

    #[test]
    fn an_issued_certificate_is_reported_so_the_cloud_attaches_it() {
        let (r, steps) = on(at(Stage::KeyMade { new_key: key() }), Event::CertificateIssued(new_cert()));
        assert_eq!(stage(&r), &Stage::CertIssued { new: new_cert() });
        match &steps[0] {
            Step::Report { status: JobStatus::InProgress, details, .. } => {
                assert!(details.contains(&("newCertificateId".into(), "new".into())));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(steps[1], Step::AwaitAttach { certificate_id: "new".into() });
    }

    #[test]
    fn the_switch_is_recorded_before_the_bridge_moves_and_then_proven() {
        let (r, steps) = on(at(Stage::CertIssued { new: new_cert() }), Event::Attached);
        assert_eq!(stage(&r), &Stage::Switched { new: new_cert() });
        assert_eq!(steps, [Step::Switch(new_cert()), Step::Prove]);
    }

    #[test]
    fn proof_commits_the_new_certificate_as_the_cores_identity_and_reports_succeeded() {
        let (r, steps) = on(at(Stage::Switched { new: new_cert() }), Event::Proven);
        assert_eq!(stage(&r), &Stage::Committed { new: new_cert() });
        assert_eq!(r.current, Some(new_cert()));
        assert!(matches!(&steps[..], [Step::Report { status: JobStatus::Succeeded, .. }]));
    }

    #[test]
    fn an_accepted_commit_ends_the_rotation_and_deletes_only_a_key_the_rotation_made() {
        let (r, steps) = on(at(Stage::Committed { new: new_cert() }), Event::ReportAccepted);
        assert_eq!(r.rotation, None);
        assert_eq!(steps, [Step::Switch(new_cert())], "on the new certificate; the operator's --key stays");
        let mut earlier = at(Stage::Committed { new: new_cert() });
        earlier.rotation.as_mut().unwrap().old.key_file = "pkcs11:object=rotated-rot-0;type=private".into();
        let (_, steps) = on(earlier, Event::ReportAccepted);
        assert_eq!(
            steps,
            [Step::Switch(new_cert()), Step::DeleteKey("pkcs11:object=rotated-rot-0;type=private".into())]
        );
    }

    #[test]
    fn a_throttled_or_failed_commit_report_is_sent_again_and_the_old_certificate_is_kept_meanwhile() {
        for code in ["RequestThrottled", "InternalError"] {
            let r = at(Stage::Committed { new: new_cert() });
            let (after, steps) =
                on(r.clone(), Event::ReportRejected { code: code.into(), message: "slow down".into() });
            assert_eq!((after, steps), (r, vec![Step::RetryReport]), "{code}");
        }
    }

    #[test]
    fn a_job_that_ended_before_the_commit_reached_it_rolls_the_core_back_to_the_old_certificate() {
        let mut r = at(Stage::Committed { new: new_cert() });
        r.current = Some(new_cert());
        let (r, steps) =
            on(r, Event::ReportRejected { code: "TerminalStateReached".into(), message: "canceled".into() });
        assert_eq!(r.current, None, "back to the identity the core was started with");
        assert!(matches!(stage(&r), Stage::RollingBack { report: false, .. }));
        assert_eq!(steps, [Step::Switch(cert("old")), Step::DeleteKey(key())]);
        // After an earlier rotation the old certificate is itself a committed one.
        let mut r = at(Stage::Committed { new: new_cert() });
        r.current = Some(new_cert());
        r.rotation.as_mut().unwrap().old = cert("older");
        r.rotation.as_mut().unwrap().previous = Some(cert("older"));
        let (r, _) = on(r, Event::ReportRejected { code: "ResourceNotFound".into(), message: "gone".into() });
        assert_eq!(r.current, Some(cert("older")));
    }

    #[test]
    fn a_failure_at_each_stage_before_the_commit_rolls_back_and_reports_the_reason() {
        for (stage_before, switched, cert_id) in [
            (Stage::KeyMade { new_key: key() }, false, None),
            (Stage::CertIssued { new: new_cert() }, false, Some("new")),
            (Stage::Switched { new: new_cert() }, true, Some("new")),
        ] {
            let (r, steps) = on(at(stage_before.clone()), Event::Failed("not authorized".into()));
            match stage(&r) {
                Stage::RollingBack { reason, new_key, new_certificate_id, report } => {
                    assert_eq!(reason, "not authorized");
                    assert_eq!(new_key.as_deref(), Some(key().as_path()));
                    assert_eq!(new_certificate_id.as_deref(), cert_id);
                    assert!(report);
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(steps.contains(&Step::Switch(cert("old"))), switched, "{stage_before:?}");
            assert!(steps.contains(&Step::DeleteKey(key())));
            assert_eq!(failed_report(&steps).as_deref(), Some("not authorized"));
            assert_eq!(r.current, None);
        }
    }

    #[test]
    fn a_failure_reason_longer_than_a_status_detail_is_cut_to_fit() {
        let (_, steps) = on(at(Stage::KeyMade { new_key: key() }), Event::Failed("é".repeat(700)));
        assert!(failed_report(&steps).unwrap().len() <= MAX_DETAIL);
    }

    #[test]
    fn a_rollback_ends_when_its_report_is_taken_or_the_job_has_ended_and_retries_a_throttle() {
        let rolling =
            at(Stage::RollingBack { reason: "r".into(), new_key: None, new_certificate_id: None, report: true });
        assert_eq!(on(rolling.clone(), Event::ReportAccepted).0.rotation, None);
        let throttled = Event::ReportRejected { code: "RequestThrottled".into(), message: String::new() };
        assert_eq!(on(rolling.clone(), throttled).1, [Step::RetryReport]);
        let ended = Event::ReportRejected { code: "TerminalStateReached".into(), message: String::new() };
        assert_eq!(on(rolling, ended).0.rotation, None);
    }

    #[test]
    fn a_progress_report_refused_because_the_job_is_gone_rolls_back_without_reporting() {
        let gone = Event::ReportRejected { code: "ResourceNotFound".into(), message: "removed".into() };
        let (r, steps) = on(at(Stage::CertIssued { new: new_cert() }), gone);
        assert!(matches!(stage(&r), Stage::RollingBack { report: false, .. }));
        assert_eq!(steps, [Step::DeleteKey(key())]);
        let throttled = Event::ReportRejected { code: "RequestThrottled".into(), message: String::new() };
        assert_eq!(on(at(Stage::CertIssued { new: new_cert() }), throttled).1, [Step::RetryReport]);
    }

    #[test]
    fn late_or_out_of_order_answers_change_nothing() {
        for stage_now in every_stage() {
            for event in [Event::Attached, Event::Proven, Event::CertificateIssued(cert("late"))] {
                let expected_change = matches!(
                    (&stage_now, &event),
                    (Stage::KeyMade { .. }, Event::CertificateIssued(_))
                        | (Stage::CertIssued { .. }, Event::Attached)
                        | (Stage::Switched { .. }, Event::Proven)
                );
                if !expected_change {
                    let r = at(stage_now.clone());
                    assert_eq!(on(r.clone(), event.clone()), (r, vec![]), "{stage_now:?} {event:?}");
                }
            }
        }
        assert_eq!(on(Record::default(), Event::Proven), (Record::default(), vec![]));
        let committed = at(Stage::Committed { new: new_cert() });
        assert_eq!(on(committed.clone(), Event::Failed("late".into())), (committed, vec![]));
    }

    #[test]
    fn a_core_killed_before_the_commit_starts_on_the_old_certificate_and_rolls_back() {
        for stage_killed in every_stage().into_iter().take(3) {
            let (identity, r, steps) = on_start(at(stage_killed.clone()));
            assert_eq!(identity, None, "{stage_killed:?}: the identity the core was started with");
            assert!(matches!(stage(&r), Stage::RollingBack { report: true, .. }), "{stage_killed:?}");
            assert!(!steps.iter().any(|s| matches!(s, Step::Switch(_))), "the bridge starts on the old one");
            assert!(steps.contains(&Step::DeleteKey(key())), "{stage_killed:?}");
            assert!(failed_report(&steps).unwrap().contains("the core stopped"), "{stage_killed:?}");
        }
    }

    #[test]
    fn a_core_killed_after_the_commit_starts_on_the_new_certificate_and_reports_succeeded_again() {
        let mut r = at(Stage::Committed { new: new_cert() });
        r.current = Some(new_cert());
        let (identity, after, steps) = on_start(r.clone());
        assert_eq!(identity, Some(new_cert()));
        assert_eq!(after, r);
        assert!(matches!(&steps[..], [Step::Report { status: JobStatus::Succeeded, .. }]));
    }

    #[test]
    fn a_core_killed_while_rolling_back_finishes_the_rollback_on_the_old_certificate() {
        let r = at(Stage::RollingBack {
            reason: "proof timed out".into(),
            new_key: Some(key()),
            new_certificate_id: Some("new".into()),
            report: true,
        });
        let (identity, after, steps) = on_start(r.clone());
        assert_eq!((identity, after), (None, r));
        assert_eq!(steps[0], Step::DeleteKey(key()));
        assert_eq!(failed_report(&steps).as_deref(), Some("proof timed out"));
    }

    #[test]
    fn a_core_with_no_rotation_starts_on_its_last_committed_certificate() {
        let r = Record { current: Some(new_cert()), rotation: None };
        assert_eq!(on_start(r.clone()), (Some(new_cert()), r, vec![]));
        assert_eq!(on_start(Record::default()), (None, Record::default(), vec![]));
    }

    #[test]
    fn keys_the_rotation_made_are_told_from_the_operators() {
        assert!(is_rotation_key(std::path::Path::new("/r/identity/rotated-j.key")));
        assert!(is_rotation_key(std::path::Path::new("pkcs11:object=rotated-j;type=private")));
        assert!(!is_rotation_key(std::path::Path::new("/r/identity/privKey.key")));
        assert!(!is_rotation_key(std::path::Path::new("pkcs11:object=privKey;type=private")));
    }
}
