"""The Jobs device MQTT API driven by AWS's own `awsiot.iotjobs.IotJobsClient`
(awsiotsdk over an MQTT 3.1.1 connection) while boto3 runs the control plane,
following "Jobs device MQTT API operations" and "Jobs notifications" in the
AWS IoT Developer Guide: notify-next announces a new job, GetPending lists
it, StartNext starts it, DescribeJobExecution and UpdateJobExecution follow
it, a stale `expectedVersion` is rejected with VersionMismatch, an ended
execution cannot be updated, and notify-next announces the queue emptying."""

from __future__ import annotations

import json

import pytest
from awscrt import mqtt
from awsiot import iotjobs

from support import EVENT_TIMEOUT_S, Mailbox, describe, provision_device, with_token

QOS1 = mqtt.QoS.AT_LEAST_ONCE


def jobs_policy_document(endpoints) -> str:
    """The device's own Jobs topics only (the developer guide's example policy for jobs)."""
    thing = "${iot:Connection.Thing.ThingName}"
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "iot:Connect", "Resource": endpoints.arn(f"client/{thing}")},
                {
                    "Effect": "Allow",
                    "Action": ["iot:Publish", "iot:Receive"],
                    "Resource": endpoints.arn(f"topic/$aws/things/{thing}/jobs/*"),
                },
                {
                    "Effect": "Allow",
                    "Action": "iot:Subscribe",
                    "Resource": endpoints.arn(f"topicfilter/$aws/things/{thing}/jobs/*"),
                },
            ],
        }
    )


@pytest.fixture
def jobs_device(iot, endpoints, tmp_path):
    return provision_device(iot, endpoints, tmp_path, prefix="jobs-dev", policy_document=jobs_policy_document(endpoints))


def _subscribe(subscribe, request, mailbox: Mailbox) -> None:
    suback, topic = subscribe(request, QOS1, mailbox)
    granted = suback.result(timeout=EVENT_TIMEOUT_S)
    assert granted in (mqtt.QoS.AT_MOST_ONCE, mqtt.QoS.AT_LEAST_ONCE), f"SUBACK {granted!r} for {topic}"


def test_iotjobs_client_works_a_job_from_notify_next_to_succeeded(iot, endpoints, jobs_device, connect):
    thing = jobs_device.thing_name
    client = iotjobs.IotJobsClient(connect(jobs_device))
    mail = {
        name: Mailbox(name)
        for name in (
            "notify-next",
            "notify",
            "get/accepted",
            "start-next/accepted",
            "describe/accepted",
            "update/accepted",
            "update/rejected",
        )
    }
    job_id = f"job-{thing}"[:64]
    _subscribe(
        client.subscribe_to_next_job_execution_changed_events,
        iotjobs.NextJobExecutionChangedSubscriptionRequest(thing_name=thing),
        mail["notify-next"],
    )
    _subscribe(
        client.subscribe_to_job_executions_changed_events,
        iotjobs.JobExecutionsChangedSubscriptionRequest(thing_name=thing),
        mail["notify"],
    )
    _subscribe(
        client.subscribe_to_get_pending_job_executions_accepted,
        iotjobs.GetPendingJobExecutionsSubscriptionRequest(thing_name=thing),
        mail["get/accepted"],
    )
    _subscribe(
        client.subscribe_to_start_next_pending_job_execution_accepted,
        iotjobs.StartNextPendingJobExecutionSubscriptionRequest(thing_name=thing),
        mail["start-next/accepted"],
    )
    _subscribe(
        client.subscribe_to_describe_job_execution_accepted,
        iotjobs.DescribeJobExecutionSubscriptionRequest(thing_name=thing, job_id=job_id),
        mail["describe/accepted"],
    )
    _subscribe(
        client.subscribe_to_update_job_execution_accepted,
        iotjobs.UpdateJobExecutionSubscriptionRequest(thing_name=thing, job_id=job_id),
        mail["update/accepted"],
    )
    _subscribe(
        client.subscribe_to_update_job_execution_rejected,
        iotjobs.UpdateJobExecutionSubscriptionRequest(thing_name=thing, job_id=job_id),
        mail["update/rejected"],
    )

    iot.create_job(
        jobId=job_id,
        targets=[jobs_device.thing_arn],
        document=json.dumps({"operation": "install", "package": "pump-fw-2.1"}),
    )

    # notify-next and notify announce it.
    event = mail["notify-next"].expect("notify-next for the new job", lambda e: e.execution is not None)
    assert event.execution.job_id == job_id, describe(event)
    assert event.execution.job_document == {"operation": "install", "package": "pump-fw-2.1"}
    assert event.execution.status == "QUEUED" and event.execution.version_number == 1
    listed = mail["notify"].expect("notify listing the job", lambda e: "QUEUED" in (e.jobs or {}))
    assert [s.job_id for s in listed.jobs["QUEUED"]] == [job_id], describe(listed)

    # GetPendingJobExecutions lists it.
    client.publish_get_pending_job_executions(
        iotjobs.GetPendingJobExecutionsRequest(thing_name=thing, client_token="pending"), QOS1
    ).result(EVENT_TIMEOUT_S)
    pending = mail["get/accepted"].expect("get/accepted", with_token("pending"))
    assert [s.job_id for s in pending.queued_jobs] == [job_id] and pending.in_progress_jobs == [], describe(pending)

    # StartNextPendingJobExecution starts it.
    client.publish_start_next_pending_job_execution(
        iotjobs.StartNextPendingJobExecutionRequest(
            thing_name=thing, client_token="start", status_details={"phase": "download"}, step_timeout_in_minutes=5
        ),
        QOS1,
    ).result(EVENT_TIMEOUT_S)
    started = mail["start-next/accepted"].expect("start-next/accepted", with_token("start"))
    assert (started.execution.status, started.execution.version_number) == ("IN_PROGRESS", 2), describe(started)
    assert started.execution.status_details == {"phase": "download"}

    # DescribeJobExecution sees the same.
    client.publish_describe_job_execution(
        iotjobs.DescribeJobExecutionRequest(thing_name=thing, job_id=job_id, client_token="describe"), QOS1
    ).result(EVENT_TIMEOUT_S)
    described = mail["describe/accepted"].expect("get/accepted", with_token("describe"))
    assert described.execution.status == "IN_PROGRESS" and described.execution.job_document["operation"] == "install"

    # A stale expectedVersion is rejected with VersionMismatch and the current state.
    def update(status: str, token: str, expected_version=None) -> None:
        client.publish_update_job_execution(
            iotjobs.UpdateJobExecutionRequest(
                thing_name=thing,
                job_id=job_id,
                status=status,
                status_details={"phase": "done"},
                expected_version=expected_version,
                include_job_execution_state=True,
                client_token=token,
            ),
            QOS1,
        ).result(EVENT_TIMEOUT_S)

    update("SUCCEEDED", "stale", expected_version=1)
    rejected = mail["update/rejected"].expect("VersionMismatch", with_token("stale"))
    assert rejected.code == iotjobs.RejectedErrorCode.VERSION_MISMATCH, describe(rejected)
    assert rejected.execution_state.version_number == 2, describe(rejected)

    update("SUCCEEDED", "done", expected_version=2)
    accepted = mail["update/accepted"].expect("update/accepted", with_token("done"))
    assert accepted.execution_state.status == "SUCCEEDED", describe(accepted)
    assert accepted.execution_state.version_number == 3, describe(accepted)
    empty = mail["notify-next"].expect("notify-next with nothing left", lambda e: e.execution is None)
    assert empty.timestamp is not None

    # An ended execution cannot be updated again.
    update("IN_PROGRESS", "again")
    ended = mail["update/rejected"].expect("update of an ended execution", with_token("again"))
    assert ended.code == iotjobs.RejectedErrorCode.INVALID_STATE_TRANSITION, describe(ended)

    execution = iot.describe_job_execution(jobId=job_id, thingName=thing)["execution"]
    assert (execution["status"], execution["statusDetails"]["detailsMap"]) == ("SUCCEEDED", {"phase": "done"})
    assert iot.describe_job(jobId=job_id)["job"]["status"] == "COMPLETED"
