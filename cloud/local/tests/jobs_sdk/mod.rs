//! IoT Jobs driven by AWS's own `aws-sdk-iot` on the control plane and a
//! device over MQTT (the shared test `Device` identity, a rumqttc client):
//! every control-plane operation and its errors, the device API's answers
//! (delivered to the asking client without a subscription), stale versions,
//! updates of ended executions, forced cancels, continuous jobs following a
//! thing group, namespaces, presigned-URL placeholders, timeouts on a stepped
//! clock, and a restart.

use std::time::Duration;

use aws_sdk_iot::types::{
    AbortAction, AbortConfig, AbortCriteria, JobExecutionFailureType, JobExecutionStatus as SdkExecutionStatus,
    JobExecutionsRetryConfig, JobExecutionsRolloutConfig, JobStatus as SdkJobStatus, PresignedUrlConfig, RetryCriteria,
    RetryableFailureType, TargetSelection, TimeoutConfig,
};
use cloud_api::jobs::JobExecutionStatus;
use local_cloud::jobs::ExecutionChange;
use local_cloud::server::{Config, LocalCloud};
use rumqttc::{Event, Incoming, QoS};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::common::{self, ALLOW_ALL, Client, Device, WAIT, failed};
use crate::thing_groups_sdk::iot;

const ARN: &str = "arn:aws:iot:us-east-1:000000000000";

fn thing_arn(thing: &str) -> String {
    format!("{ARN}:thing/{thing}")
}

/// A device's MQTT connection with the Jobs topics of its thing.
struct JobsDevice {
    thing: String,
    mqtt: Client,
}

impl JobsDevice {
    /// Connects as `device` (client id = thing name) and subscribes to `notifications`
    /// (suffixes of `$aws/things/{thing}/jobs/`). Answers need no subscription.
    async fn connect(cloud: &LocalCloud, device: &Device, notifications: &[&str]) -> JobsDevice {
        let (host, port) = cloud.endpoints.mqtt.rsplit_once(':').unwrap();
        let opts = common::mqtt_options(host, port.parse().unwrap(), &cloud.endpoints.ca_file, &device.thing, device);
        let (mut mqtt, _) = Client::connect(opts).await.expect("device connects");
        let filters: Vec<String> =
            notifications.iter().map(|n| format!("$aws/things/{}/jobs/{n}", device.thing)).collect();
        if !filters.is_empty() {
            let filters: Vec<(&str, QoS)> = filters.iter().map(|f| (f.as_str(), QoS::AtLeastOnce)).collect();
            let codes = mqtt.subscribe(&filters).await.unwrap();
            assert!(codes.iter().all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))), "{codes:?}");
        }
        JobsDevice { thing: device.thing.clone(), mqtt }
    }

    /// Publishes `payload` (with a client token) on `…/jobs/{request}` and
    /// returns the answer's last topic segment (`accepted`/`rejected`) and body.
    async fn request(&mut self, request: &str, mut payload: Value, token: &str) -> (String, Value) {
        payload["clientToken"] = json!(token);
        let topic = format!("$aws/things/{}/jobs/{request}", self.thing);
        self.mqtt.publish(&topic, QoS::AtLeastOnce, false, payload.to_string()).await.unwrap();
        let prefix = format!("{topic}/");
        self.mqtt
            .wait_for(WAIT, |ev| match ev {
                Event::Incoming(Incoming::Publish(p)) if p.topic.starts_with(&prefix) => {
                    let body: Value = serde_json::from_slice(&p.payload).unwrap();
                    (body["clientToken"] == token).then(|| (p.topic[prefix.len()..].to_owned(), body))
                }
                _ => None,
            })
            .await
            .unwrap_or_else(|e| panic!("no answer to {topic}: {e}"))
    }

    /// The next message on `…/jobs/{suffix}` whose body satisfies `pred`.
    async fn notification(&mut self, suffix: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let topic = format!("$aws/things/{}/jobs/{suffix}", self.thing);
        self.mqtt
            .wait_for(WAIT, |ev| match ev {
                Event::Incoming(Incoming::Publish(p)) if p.topic == topic => {
                    let body: Value = serde_json::from_slice(&p.payload).unwrap();
                    pred(&body).then_some(body)
                }
                _ => None,
            })
            .await
            .unwrap_or_else(|e| panic!("no matching message on {topic}: {e}"))
    }
}

fn next_is(job: &'static str) -> impl Fn(&Value) -> bool {
    move |body| body["execution"]["jobId"] == job
}

/// Waits for the broadcast change of `job` on `thing` to `status`.
async fn changed_to(
    changes: &mut broadcast::Receiver<ExecutionChange>,
    job: &str,
    thing: &str,
    status: JobExecutionStatus,
) -> ExecutionChange {
    tokio::time::timeout(WAIT, async {
        loop {
            let c = changes.recv().await.expect("execution changes keep coming");
            if c.job_id == job && c.thing_name == thing && c.status == status {
                return c;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{job} on {thing} never became {status:?}"))
}

async fn execution_status(iot: &aws_sdk_iot::Client, job: &str, thing: &str) -> (SdkExecutionStatus, i64) {
    let out = iot.describe_job_execution().job_id(job).thing_name(thing).send().await.expect("DescribeJobExecution");
    let e = out.execution().expect("execution");
    (e.status().cloned().expect("status"), e.version_number())
}

/// Retry FAILED executions `n` times.
fn retry_on_failure(n: i32) -> JobExecutionsRetryConfig {
    let criterion =
        RetryCriteria::builder().failure_type(RetryableFailureType::Failed).number_of_retries(n).build().unwrap();
    JobExecutionsRetryConfig::builder().criteria_list(criterion).build().unwrap()
}

/// Cancel the job once half the executed things failed (`failure_type`), after `min` executed.
fn abort_at_half(failure_type: JobExecutionFailureType, min: i32) -> AbortConfig {
    let criterion = AbortCriteria::builder()
        .failure_type(failure_type)
        .action(AbortAction::Cancel)
        .threshold_percentage(50.0)
        .min_number_of_executed_things(min)
        .build()
        .unwrap();
    AbortConfig::builder().criteria_list(criterion).build().unwrap()
}

async fn start(dir: &std::path::Path) -> LocalCloud {
    LocalCloud::start(Config::ephemeral(dir)).await.expect("local cloud starts")
}

#[tokio::test]
async fn every_control_plane_operation_with_a_device_working_through_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = start(dir.path()).await;
    let iot = iot(&cloud);
    let pump1 = common::create_device(&cloud.registry, "pump-1", ALLOW_ALL);
    common::create_device(&cloud.registry, "pump-2", ALLOW_ALL);
    let mut device = JobsDevice::connect(&cloud, &pump1, &["notify-next", "notify"]).await;

    let created = iot
        .create_job()
        .job_id("update-1")
        .targets(thing_arn("pump-1"))
        .targets(thing_arn("pump-2"))
        .document(r#"{"operation":"update","version":"2.0"}"#)
        .description("firmware 2.0")
        .timeout_config(TimeoutConfig::builder().in_progress_timeout_in_minutes(30).build())
        .job_executions_rollout_config(JobExecutionsRolloutConfig::builder().maximum_per_minute(10).build())
        .abort_config(abort_at_half(JobExecutionFailureType::Failed, 2))
        .job_executions_retry_config(retry_on_failure(2))
        .send()
        .await
        .expect("CreateJob");
    assert_eq!(created.job_arn(), Some(format!("{ARN}:job/update-1").as_str()));
    assert_eq!(created.description(), Some("firmware 2.0"));

    // The device hears of it, starts it, and its answers need no subscription.
    let next = device.notification("notify-next", next_is("update-1")).await;
    assert_eq!(next["execution"]["jobDocument"], json!({"operation": "update", "version": "2.0"}));
    assert_eq!(next["execution"]["versionNumber"], 1);
    let (outcome, body) = device.request("start-next", json!({"statusDetails": {"step": "download"}}), "s1").await;
    assert_eq!(outcome, "accepted", "{body}");
    assert_eq!(body["execution"]["status"], "IN_PROGRESS");
    assert!(body["execution"]["approximateSecondsBeforeTimedOut"].as_i64().is_some_and(|s| s > 1700));
    let (status, version) = execution_status(&iot, "update-1", "pump-1").await;
    assert_eq!((status, version), (SdkExecutionStatus::InProgress, 2));

    // A stale expectedVersion is a VersionMismatch carrying the current state.
    let (outcome, body) =
        device.request("update-1/update", json!({"status": "SUCCEEDED", "expectedVersion": 1}), "u1").await;
    assert_eq!((outcome.as_str(), &body["code"]), ("rejected", &json!("VersionMismatch")));
    assert_eq!(body["executionState"]["versionNumber"], 2);
    let (outcome, body) = device
        .request(
            "update-1/update",
            json!({"status": "SUCCEEDED", "expectedVersion": 2, "statusDetails": {"result": "ok"}, "includeJobExecutionState": true}),
            "u2",
        )
        .await;
    assert_eq!(outcome, "accepted", "{body}");
    assert_eq!(body["executionState"]["status"], "SUCCEEDED");
    // An ended execution cannot be updated.
    let (outcome, body) = device.request("update-1/update", json!({"status": "IN_PROGRESS"}), "u3").await;
    assert_eq!((outcome.as_str(), &body["code"]), ("rejected", &json!("InvalidStateTransition")));
    let (outcome, body) = device.request("nope/get", json!({}), "g1").await;
    assert_eq!((outcome.as_str(), &body["code"]), ("rejected", &json!("ResourceNotFound")));

    // DescribeJob echoes what was asked and counts the executions.
    let job = iot.describe_job().job_id("update-1").send().await.expect("DescribeJob");
    let job = job.job().expect("job");
    assert_eq!(job.status(), Some(&SdkJobStatus::InProgress));
    assert_eq!(job.target_selection(), Some(&TargetSelection::Snapshot));
    assert_eq!(job.targets().len(), 2);
    assert_eq!(job.timeout_config().and_then(|t| t.in_progress_timeout_in_minutes()), Some(30));
    assert_eq!(job.job_executions_rollout_config().and_then(|r| r.maximum_per_minute()), Some(10));
    assert_eq!(job.abort_config().map(|a| a.criteria_list().len()), Some(1));
    assert_eq!(job.job_executions_retry_config().map(|r| r.criteria_list()[0].number_of_retries()), Some(2));
    let details = job.job_process_details().expect("jobProcessDetails");
    assert_eq!((details.number_of_succeeded_things(), details.number_of_queued_things()), (Some(1), Some(1)));
    let document = iot.get_job_document().job_id("update-1").send().await.expect("GetJobDocument");
    assert_eq!(document.document(), Some(r#"{"operation":"update","version":"2.0"}"#));

    // DescribeJobExecution shows the control plane's shape.
    let out = iot.describe_job_execution().job_id("update-1").thing_name("pump-1").send().await.unwrap();
    let e = out.execution().unwrap();
    assert_eq!(e.thing_arn(), Some(thing_arn("pump-1").as_str()));
    let details = e.status_details().and_then(|d| d.details_map()).expect("detailsMap");
    assert_eq!(details.get("result").map(String::as_str), Some("ok"));
    assert!(e.started_at().is_some() && e.queued_at().is_some());

    // Listings and their filters.
    let for_job = iot.list_job_executions_for_job().job_id("update-1").send().await.expect("ListJobExecutionsForJob");
    assert_eq!(for_job.execution_summaries().len(), 2);
    let succeeded = iot
        .list_job_executions_for_job()
        .job_id("update-1")
        .status(SdkExecutionStatus::Succeeded)
        .send()
        .await
        .unwrap();
    assert_eq!(succeeded.execution_summaries()[0].thing_arn(), Some(thing_arn("pump-1").as_str()));
    assert_eq!(succeeded.execution_summaries().len(), 1);
    let for_thing = iot.list_job_executions_for_thing().thing_name("pump-1").send().await.unwrap();
    assert_eq!(for_thing.execution_summaries()[0].job_id(), Some("update-1"));

    // CancelJobExecution: a stale expectedVersion conflicts; then the job completes.
    assert_eq!(
        failed(iot.cancel_job_execution().job_id("update-1").thing_name("pump-2").expected_version(9).send().await),
        ("VersionConflictException".into(), 409)
    );
    iot.cancel_job_execution()
        .job_id("update-1")
        .thing_name("pump-2")
        .expected_version(1)
        .send()
        .await
        .expect("CancelJobExecution");
    assert_eq!(execution_status(&iot, "update-1", "pump-2").await.0, SdkExecutionStatus::Canceled);
    let job = iot.describe_job().job_id("update-1").send().await.unwrap();
    assert_eq!(job.job().and_then(|j| j.status()), Some(&SdkJobStatus::Completed));
    assert!(job.job().and_then(|j| j.completed_at()).is_some());

    // ListJobs: filters and pages.
    for id in ["other-1", "other-2"] {
        iot.create_job().job_id(id).targets(thing_arn("pump-2")).document("{}").send().await.unwrap();
    }
    let pages: Vec<_> =
        iot.list_jobs().into_paginator().page_size(1).send().collect::<Result<Vec<_>, _>>().await.expect("pages");
    assert_eq!(pages.len(), 3);
    let ids: Vec<_> = pages.iter().flat_map(|p| p.jobs()).filter_map(|j| j.job_id()).collect();
    assert_eq!(ids, ["other-1", "other-2", "update-1"]);
    let completed = iot.list_jobs().status(SdkJobStatus::Completed).send().await.unwrap();
    assert_eq!(completed.jobs().iter().filter_map(|j| j.job_id()).collect::<Vec<_>>(), ["update-1"]);

    // Errors with the model's shapes and statuses.
    assert_eq!(failed(iot.describe_job().job_id("unknown").send().await), ("ResourceNotFoundException".into(), 404));
    assert_eq!(
        failed(iot.get_job_document().job_id("unknown").send().await),
        ("ResourceNotFoundException".into(), 404)
    );
    assert_eq!(failed(iot.cancel_job().job_id("unknown").send().await), ("ResourceNotFoundException".into(), 404));
    assert_eq!(
        failed(iot.describe_job_execution().job_id("update-1").thing_name("pump-9").send().await),
        ("ResourceNotFoundException".into(), 404)
    );
    assert_eq!(
        failed(iot.list_job_executions_for_job().job_id("unknown").send().await),
        ("ResourceNotFoundException".into(), 404)
    );
    assert_eq!(
        failed(iot.create_job().job_id("other-1").targets(thing_arn("pump-2")).document("{}").send().await),
        ("ResourceAlreadyExistsException".into(), 409)
    );
    assert_eq!(
        failed(iot.create_job().job_id("bad").targets(thing_arn("pump-2")).document("[1]").send().await),
        ("InvalidRequestException".into(), 400)
    );
    assert_eq!(
        failed(iot.create_job().job_id("bad").targets(thing_arn("ghost")).document("{}").send().await),
        ("ResourceNotFoundException".into(), 404)
    );
    assert_eq!(
        failed(iot.cancel_job_execution().job_id("update-1").thing_name("pump-1").send().await),
        ("InvalidStateTransitionException".into(), 409),
        "an ended execution cannot be cancelled"
    );
    assert_eq!(
        failed(iot.delete_job().job_id("other-1").send().await),
        ("InvalidStateTransitionException".into(), 409),
        "an IN_PROGRESS job needs force"
    );

    // DeleteJob.
    iot.delete_job().job_id("update-1").send().await.expect("DeleteJob of a completed job");
    iot.delete_job().job_id("other-1").force(true).send().await.expect("DeleteJob with force");
    assert_eq!(failed(iot.describe_job().job_id("update-1").send().await), ("ResourceNotFoundException".into(), 404));
    let left = iot.list_job_executions_for_thing().thing_name("pump-2").send().await.unwrap();
    assert_eq!(left.execution_summaries().iter().filter_map(|s| s.job_id()).collect::<Vec<_>>(), ["other-2"]);
    device.mqtt.disconnect().await;
    cloud.shutdown().await;
}

#[tokio::test]
async fn a_forced_cancel_ends_an_in_progress_execution_and_the_device_can_no_longer_update_it() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = start(dir.path()).await;
    let iot = iot(&cloud);
    let valve = common::create_device(&cloud.registry, "valve-1", ALLOW_ALL);
    let mut device = JobsDevice::connect(&cloud, &valve, &["notify-next"]).await;
    for id in ["calibrate", "second"] {
        iot.create_job().job_id(id).targets(thing_arn("valve-1")).document("{}").send().await.unwrap();
    }
    let (outcome, _) = device.request("calibrate/update", json!({"status": "IN_PROGRESS"}), "t1").await;
    assert_eq!(outcome, "accepted");
    let (outcome, _) = device.request("second/update", json!({"status": "IN_PROGRESS"}), "t2").await;
    assert_eq!(outcome, "accepted");

    // Without force, CancelJob leaves the IN_PROGRESS execution alone.
    iot.cancel_job().job_id("calibrate").reason_code("OPERATOR").comment("wrong valve").send().await.unwrap();
    assert_eq!(execution_status(&iot, "calibrate", "valve-1").await.0, SdkExecutionStatus::InProgress);
    let job = iot.describe_job().job_id("calibrate").send().await.unwrap();
    let job = job.job().unwrap();
    assert_eq!((job.status(), job.force_canceled()), (Some(&SdkJobStatus::Canceled), Some(false)));
    assert_eq!((job.reason_code(), job.comment()), (Some("OPERATOR"), Some("wrong valve")));

    // With force it is CANCELED, and the device's update is refused.
    iot.cancel_job().job_id("calibrate").force(true).send().await.expect("CancelJob with force");
    let out = iot.describe_job_execution().job_id("calibrate").thing_name("valve-1").send().await.unwrap();
    let e = out.execution().unwrap();
    assert_eq!((e.status(), e.force_canceled()), (Some(&SdkExecutionStatus::Canceled), Some(true)));
    let next = device.notification("notify-next", next_is("second")).await;
    assert_eq!(next["execution"]["status"], "IN_PROGRESS");
    let (outcome, body) = device.request("calibrate/update", json!({"status": "SUCCEEDED"}), "t3").await;
    assert_eq!((outcome.as_str(), &body["code"]), ("rejected", &json!("TerminalStateReached")));

    // CancelJobExecution of an IN_PROGRESS execution needs force too.
    assert_eq!(
        failed(iot.cancel_job_execution().job_id("second").thing_name("valve-1").send().await),
        ("InvalidStateTransitionException".into(), 409)
    );
    iot.cancel_job_execution().job_id("second").thing_name("valve-1").force(true).send().await.unwrap();
    let out = iot.describe_job_execution().job_id("second").thing_name("valve-1").send().await.unwrap();
    assert_eq!(out.execution().and_then(|e| e.force_canceled()), Some(true));
    let empty = device.notification("notify-next", |b| b.get("execution").is_none()).await;
    assert!(empty["timestamp"].is_number());
    device.mqtt.disconnect().await;
    cloud.shutdown().await;
}

#[tokio::test]
async fn a_continuous_job_reaches_a_thing_added_to_a_child_group_later_and_removes_a_leaver() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = start(dir.path()).await;
    let iot = iot(&cloud);
    let mut changes = cloud.jobs.subscribe();
    iot.create_thing_group().thing_group_name("fleet").send().await.unwrap();
    iot.create_thing_group().thing_group_name("site").parent_group_name("fleet").send().await.unwrap();
    common::create_device(&cloud.registry, "early", ALLOW_ALL);
    let late = common::create_device(&cloud.registry, "late", ALLOW_ALL);
    iot.add_thing_to_thing_group().thing_group_name("fleet").thing_name("early").send().await.unwrap();
    for (id, selection) in [("follow", TargetSelection::Continuous), ("once", TargetSelection::Snapshot)] {
        iot.create_job()
            .job_id(id)
            .targets(format!("{ARN}:thinggroup/fleet"))
            .target_selection(selection)
            .document(r#"{"op":"configure"}"#)
            .send()
            .await
            .unwrap();
    }
    assert_eq!(execution_status(&iot, "follow", "early").await.0, SdkExecutionStatus::Queued);

    // A thing joining a child group of the target gets the continuous job only.
    let mut device = JobsDevice::connect(&cloud, &late, &["notify-next"]).await;
    iot.add_thing_to_thing_group().thing_group_name("site").thing_name("late").send().await.unwrap();
    let next = device.notification("notify-next", next_is("follow")).await;
    assert_eq!(next["execution"]["jobDocument"], json!({"op": "configure"}));
    assert_eq!(
        failed(iot.describe_job_execution().job_id("once").thing_name("late").send().await),
        ("ResourceNotFoundException".into(), 404),
        "a snapshot job does not follow the group"
    );

    // A thing leaving the group has its pending execution REMOVED.
    iot.remove_thing_from_thing_group().thing_group_name("fleet").thing_name("early").send().await.unwrap();
    let removed = changed_to(&mut changes, "follow", "early", JobExecutionStatus::Removed).await;
    assert_eq!(removed.version_number, 2);
    assert_eq!(execution_status(&iot, "once", "early").await.0, SdkExecutionStatus::Queued);
    let follow = iot.describe_job().job_id("follow").send().await.unwrap();
    assert_eq!(follow.job().and_then(|j| j.status()), Some(&SdkJobStatus::InProgress));
    let filtered = iot.list_jobs().target_selection(TargetSelection::Continuous).thing_group_name("fleet").send().await;
    assert_eq!(filtered.unwrap().jobs().iter().filter_map(|j| j.job_id()).collect::<Vec<_>>(), ["follow"]);
    device.mqtt.disconnect().await;
    cloud.shutdown().await;
}

#[tokio::test]
async fn namespaced_jobs_and_presigned_placeholders_reach_the_device_as_greengrass_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = start(dir.path()).await;
    let iot = iot(&cloud);
    let s3 = crate::s3_sdk::admin(&cloud);
    s3.create_bucket().bucket("firmware").send().await.unwrap();
    s3.put_object().bucket("firmware").key("v2.bin").body(b"firmware v2".to_vec().into()).send().await.unwrap();
    let document = r#"{"url":"${aws:iot:s3-presigned-url:https://s3.us-east-1.amazonaws.com/firmware/v2.bin}"}"#;
    s3.put_object().bucket("firmware").key("job.json").body(document.as_bytes().to_vec().into()).send().await.unwrap();
    let core = common::create_device(&cloud.registry, "core-1", ALLOW_ALL);
    let mut device = JobsDevice::connect(
        &cloud,
        &core,
        &["notify-next", "notify-namespace-aws-gg-deployment", "notify-next-namespace-aws-gg-deployment"],
    )
    .await;
    iot.create_job()
        .job_id("deployment-1")
        .targets(thing_arn("core-1"))
        .document_source("https://s3.us-east-1.amazonaws.com/firmware/job.json")
        .namespace_id("aws-gg-deployment")
        .presigned_url_config(
            PresignedUrlConfig::builder()
                .role_arn("arn:aws:iam::000000000000:role/jobs-s3")
                .expires_in_sec(300)
                .build(),
        )
        .send()
        .await
        .expect("CreateJob from documentSource");

    // Announced on the namespaced topics only (the Java nucleus reads notify, lite notify-next).
    let listed = device.notification("notify-namespace-aws-gg-deployment", |b| b["jobs"]["QUEUED"].is_array()).await;
    assert_eq!(listed["jobs"]["QUEUED"][0]["jobId"], "deployment-1");
    let next = device.notification("notify-next-namespace-aws-gg-deployment", next_is("deployment-1")).await;
    let url = next["execution"]["jobDocument"]["url"].as_str().expect("url").to_owned();
    assert!(url.starts_with(&cloud.endpoints.http) && url.contains("X-Amz-Expires=300"), "{url}");
    let (status, body) = crate::s3_sdk::http_get(&url).await;
    assert_eq!((status, body.as_slice()), (200, &b"firmware v2"[..]));
    let (outcome, body) = device.request("$next/get", json!({}), "plain").await;
    assert_eq!(outcome, "accepted");
    assert!(body.get("execution").is_none(), "a default-topic request does not see namespaced jobs: {body}");

    // The nucleus's requests: `$next` get and update on the namespaced topics.
    let (outcome, body) = device
        .request(
            "$next/namespace-aws-gg-deployment/get",
            json!({"includeJobDocument": true, "thingName": "core-1"}),
            "n1",
        )
        .await;
    assert_eq!(outcome, "accepted", "{body}");
    assert!(body["execution"]["jobDocument"]["url"].as_str().is_some_and(|u| u.contains("X-Amz-Signature=")));
    let report = json!({"status": "SUCCEEDED", "statusDetails": {"detailed-deployment-status": "SUCCESSFUL"}});
    let (outcome, _) = device.request("deployment-1/namespace-aws-gg-deployment/update", report, "n2").await;
    assert_eq!(outcome, "accepted");
    let out = cloud.jobs.describe_execution("deployment-1", "core-1").unwrap();
    assert_eq!(out.status_details.get("detailed-deployment-status").map(String::as_str), Some("SUCCESSFUL"));

    // The control plane shows the stored text, placeholders and all.
    let described = iot.describe_job().job_id("deployment-1").send().await.unwrap();
    assert_eq!(described.document_source(), Some("https://s3.us-east-1.amazonaws.com/firmware/job.json"));
    assert_eq!(described.job().and_then(|j| j.namespace_id()), Some("aws-gg-deployment"));
    let stored = iot.get_job_document().job_id("deployment-1").send().await.unwrap();
    assert_eq!(stored.document(), Some(document));
    assert_eq!(
        failed(
            iot.create_job()
                .job_id("missing-source")
                .targets(thing_arn("core-1"))
                .document_source("https://s3.us-east-1.amazonaws.com/firmware/nope.json")
                .send()
                .await
        ),
        ("InvalidRequestException".into(), 400)
    );
    device.mqtt.disconnect().await;
    cloud.shutdown().await;
}

#[tokio::test]
async fn step_and_in_progress_timers_time_executions_out_on_the_cloud_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = local_cloud::time::ManualClock::at(1_800_000_000_000);
    let cloud = LocalCloud::start_with_clock(Config::ephemeral(dir.path()), clock.clone()).await.unwrap();
    let iot = iot(&cloud);
    let mut changes = cloud.jobs.subscribe();
    let sensor = common::create_device(&cloud.registry, "sensor-1", ALLOW_ALL);
    let mut device = JobsDevice::connect(&cloud, &sensor, &["notify-next"]).await;
    iot.create_job()
        .job_id("slow")
        .targets(thing_arn("sensor-1"))
        .document("{}")
        .timeout_config(TimeoutConfig::builder().in_progress_timeout_in_minutes(10).build())
        .send()
        .await
        .unwrap();
    device.notification("notify-next", next_is("slow")).await;
    let (outcome, body) = device.request("start-next", json!({"stepTimeoutInMinutes": 2}), "s").await;
    assert_eq!(outcome, "accepted", "{body}");
    assert_eq!(body["execution"]["approximateSecondsBeforeTimedOut"], 120);

    clock.advance(Duration::from_secs(119));
    cloud.jobs.run_due_timers().unwrap();
    assert_eq!(execution_status(&iot, "slow", "sensor-1").await.0, SdkExecutionStatus::InProgress);
    clock.advance(Duration::from_secs(1));
    cloud.jobs.run_due_timers().unwrap();
    changed_to(&mut changes, "slow", "sensor-1", JobExecutionStatus::TimedOut).await;
    let empty = device.notification("notify-next", |b| b.get("execution").is_none()).await;
    assert!(empty["timestamp"].is_number());
    let (outcome, body) = device.request("slow/update", json!({"status": "SUCCEEDED"}), "late").await;
    assert_eq!((outcome.as_str(), &body["code"]), ("rejected", &json!("TerminalStateReached")));

    // A rollout of one execution a minute: the second thing waits for the next minute.
    common::create_device(&cloud.registry, "sensor-2", ALLOW_ALL);
    iot.create_job()
        .job_id("paced")
        .targets(thing_arn("sensor-1"))
        .targets(thing_arn("sensor-2"))
        .document("{}")
        .job_executions_rollout_config(JobExecutionsRolloutConfig::builder().maximum_per_minute(1).build())
        .send()
        .await
        .unwrap();
    device.notification("notify-next", next_is("paced")).await;
    assert_eq!(
        failed(iot.describe_job_execution().job_id("paced").thing_name("sensor-2").send().await),
        ("ResourceNotFoundException".into(), 404)
    );
    clock.advance(Duration::from_secs(60));
    cloud.jobs.run_due_timers().unwrap();
    changed_to(&mut changes, "paced", "sensor-2", JobExecutionStatus::Queued).await;
    device.mqtt.disconnect().await;
    cloud.shutdown().await;
}

#[tokio::test]
async fn jobs_and_executions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = start(dir.path()).await;
    let meter = common::create_device(&cloud.registry, "meter-1", ALLOW_ALL);
    let iot_client = iot(&cloud);
    for id in ["first", "second"] {
        iot_client.create_job().job_id(id).targets(thing_arn("meter-1")).document(r#"{"n":1}"#).send().await.unwrap();
    }
    let mut device = JobsDevice::connect(&cloud, &meter, &[]).await;
    let (outcome, _) = device.request("start-next", json!({"statusDetails": {"p": "1"}}), "a").await;
    assert_eq!(outcome, "accepted");
    device.mqtt.disconnect().await;
    cloud.shutdown().await;

    let cloud = start(dir.path()).await;
    let iot_client = iot(&cloud);
    assert_eq!(execution_status(&iot_client, "first", "meter-1").await, (SdkExecutionStatus::InProgress, 2));
    assert_eq!(execution_status(&iot_client, "second", "meter-1").await, (SdkExecutionStatus::Queued, 1));
    let job = iot_client.describe_job().job_id("first").send().await.unwrap();
    assert_eq!(job.job().and_then(|j| j.description()), None);
    let mut device = JobsDevice::connect(&cloud, &meter, &["notify-next"]).await;
    let (outcome, body) = device.request("$next/get", json!({}), "b").await;
    assert_eq!((outcome.as_str(), &body["execution"]["jobId"]), ("accepted", &json!("first")));
    assert_eq!(body["execution"]["statusDetails"], json!({"p": "1"}));
    let (outcome, _) = device.request("first/update", json!({"status": "SUCCEEDED", "expectedVersion": 2}), "c").await;
    assert_eq!(outcome, "accepted");
    device.notification("notify-next", next_is("second")).await;
    device.mqtt.disconnect().await;
    cloud.shutdown().await;
}

#[tokio::test]
async fn failed_executions_are_retried_and_failures_abort_the_job_as_configured() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = start(dir.path()).await;
    let iot = iot(&cloud);
    let first = common::create_device(&cloud.registry, "retry-1", ALLOW_ALL);
    common::create_device(&cloud.registry, "retry-2", ALLOW_ALL);
    let mut device = JobsDevice::connect(&cloud, &first, &["notify-next"]).await;
    iot.create_job()
        .job_id("flaky")
        .targets(thing_arn("retry-1"))
        .document("{}")
        .job_executions_retry_config(retry_on_failure(1))
        .send()
        .await
        .unwrap();

    // The first failure queues the execution again; the second is final.
    let (outcome, body) =
        device.request("flaky/update", json!({"status": "FAILED", "includeJobExecutionState": true}), "f1").await;
    assert_eq!((outcome.as_str(), &body["executionState"]["status"]), ("accepted", &json!("FAILED")));
    let retried = device.notification("notify-next", |b| b["execution"]["executionNumber"] == 2).await;
    assert_eq!(retried["execution"]["status"], "QUEUED");
    let listed = iot.list_job_executions_for_thing().thing_name("retry-1").send().await.unwrap();
    let summary = listed.execution_summaries()[0].job_execution_summary().unwrap();
    assert_eq!((summary.retry_attempt(), summary.execution_number()), (Some(1), Some(2)));
    let (outcome, _) = device.request("flaky/update", json!({"status": "FAILED"}), "f2").await;
    assert_eq!(outcome, "accepted");
    assert_eq!(execution_status(&iot, "flaky", "retry-1").await.0, SdkExecutionStatus::Failed);

    // One failure in two executed things (50 %) reaches the abort threshold: the queued one is cancelled.
    iot.create_job()
        .job_id("risky")
        .targets(thing_arn("retry-1"))
        .targets(thing_arn("retry-2"))
        .document("{}")
        .abort_config(abort_at_half(JobExecutionFailureType::All, 1))
        .send()
        .await
        .unwrap();
    let (outcome, _) = device.request("risky/update", json!({"status": "REJECTED"}), "r1").await;
    assert_eq!(outcome, "accepted");
    let job = iot.describe_job().job_id("risky").send().await.unwrap();
    assert_eq!(job.job().and_then(|j| j.status()), Some(&SdkJobStatus::Canceled));
    assert_eq!(execution_status(&iot, "risky", "retry-2").await.0, SdkExecutionStatus::Canceled);
    device.mqtt.disconnect().await;
    cloud.shutdown().await;
}

/// The next `$aws/events/job…` message the observer gets: topic and body.
async fn next_job_event(observer: &mut Client) -> (String, Value) {
    observer
        .wait_for(WAIT, |ev| match ev {
            Event::Incoming(Incoming::Publish(p)) if p.topic.starts_with("$aws/events/job") => {
                Some((p.topic.clone(), serde_json::from_slice(&p.payload).unwrap()))
            }
            _ => None,
        })
        .await
        .expect("a job event")
}

/// Runs `job` on the device to SUCCEEDED.
async fn succeed(device: &mut JobsDevice, job: &str) {
    let (outcome, body) = device.request("start-next", json!({}), &format!("{job}-s")).await;
    assert_eq!((outcome.as_str(), &body["execution"]["jobId"]), ("accepted", &json!(job)));
    let (outcome, _) = device
        .request(&format!("{job}/update"), json!({"status": "SUCCEEDED", "statusDetails": {"r": "ok"}}), job)
        .await;
    assert_eq!(outcome, "accepted");
}

#[tokio::test]
async fn job_events_are_published_only_once_enabled_and_the_setting_survives_a_restart() {
    use aws_sdk_iot::types::{Configuration, EventType};
    let dir = tempfile::tempdir().unwrap();
    let cloud = start(dir.path()).await;
    let iot_client = iot(&cloud);
    let before = iot_client.describe_event_configurations().send().await.expect("DescribeEventConfigurations");
    let configs = before.event_configurations().expect("every type listed");
    assert_eq!(configs.get(&EventType::Job).map(|c| c.enabled()), Some(false), "off by default");
    assert_eq!(configs.get(&EventType::JobExecution).map(|c| c.enabled()), Some(false));

    let valve = common::create_device(&cloud.registry, "valve-1", ALLOW_ALL);
    let watcher = common::create_device(&cloud.registry, "events-watcher", ALLOW_ALL);
    let (host, port) = cloud.endpoints.mqtt.rsplit_once(':').unwrap();
    let opts = common::mqtt_options(host, port.parse().unwrap(), &cloud.endpoints.ca_file, "events-watcher", &watcher);
    let (mut observer, _) = Client::connect(opts).await.expect("observer connects");
    observer.subscribe(&[("$aws/events/#", QoS::AtLeastOnce)]).await.unwrap();
    let mut device = JobsDevice::connect(&cloud, &valve, &[]).await;

    // Disabled: a job runs to completion without events.
    iot_client.create_job().job_id("quiet").targets(thing_arn("valve-1")).document("{}").send().await.unwrap();
    succeed(&mut device, "quiet").await;

    let on = Configuration::builder().enabled(true).build();
    iot_client
        .update_event_configurations()
        .event_configurations(EventType::Job, on.clone())
        .event_configurations(EventType::JobExecution, on)
        .send()
        .await
        .expect("UpdateEventConfigurations");
    let after = iot_client.describe_event_configurations().send().await.unwrap();
    assert_eq!(after.event_configurations().and_then(|c| c.get(&EventType::Job)).map(|c| c.enabled()), Some(true));
    assert!(after.creation_date().is_some() && after.last_modified_date().is_some());

    // Enabled: the execution's end and the job's completion are published. Events
    // reach the observer in the order they were published, so an event of the
    // quiet job would have come first.
    iot_client.create_job().job_id("loud").targets(thing_arn("valve-1")).document("{}").send().await.unwrap();
    succeed(&mut device, "loud").await;
    let (topic, execution) = next_job_event(&mut observer).await;
    assert_eq!(topic, "$aws/events/jobExecution/loud/succeeded", "{execution}");
    assert_eq!(execution["eventType"], "JOB_EXECUTION");
    assert_eq!(execution["status"], "SUCCEEDED");
    assert_eq!(execution["thingArn"], thing_arn("valve-1"));
    assert_eq!(execution["statusDetails"], json!({"r": "ok"}));
    let (topic, job) = next_job_event(&mut observer).await;
    assert_eq!(topic, "$aws/events/job/loud/completed", "{job}");
    assert_eq!(job["status"], "COMPLETED");
    assert_eq!(job["targets"], json!([thing_arn("valve-1")]));
    assert_eq!(job["jobProcessDetails"]["numberOfSucceededThings"], 1);

    iot_client.delete_job().job_id("loud").send().await.expect("DeleteJob");
    let (topic, deleted) = next_job_event(&mut observer).await;
    assert_eq!((topic.as_str(), &deleted["status"]), ("$aws/events/job/loud/deleted", &json!("DELETED")));

    let (code, status) = failed(
        iot_client
            .update_event_configurations()
            .event_configurations(EventType::from("NOT_A_TYPE"), Configuration::builder().enabled(true).build())
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("InvalidRequestException", 400));

    device.mqtt.disconnect().await;
    observer.disconnect().await;
    cloud.shutdown().await;
    let cloud = start(dir.path()).await;
    let kept = iot(&cloud).describe_event_configurations().send().await.unwrap();
    let configs = kept.event_configurations().unwrap();
    assert_eq!(configs.get(&EventType::JobExecution).map(|c| c.enabled()), Some(true), "persisted");
    cloud.shutdown().await;
}
