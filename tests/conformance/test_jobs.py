"""IoT Jobs' control plane with boto3's `iot` client, as the AWS IoT Developer
Guide's "Create and manage jobs" and the API reference describe it: CreateJob
for things and thing groups (inline `document` or `documentSource` in S3),
DescribeJob echoing the configurations, GetJobDocument, ListJobs with filters
read through boto3's paginator, the execution listings, CancelJob with and
without `force`, CancelJobExecution with `expectedVersion`, DeleteJob, and
the typed exceptions AWS documents."""

import json

import pytest

from support import unique_name


def _error(excinfo) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture
def things(iot, endpoints):
    """Two registered things, by ARN."""
    names = [unique_name("jobs-thing") for _ in range(2)]
    for name in names:
        iot.create_thing(thingName=name)
    return [endpoints.arn(f"thing/{name}") for name in names]


def test_a_job_for_things_is_described_listed_cancelled_and_deleted(iot, endpoints, things):
    job_id = unique_name("job")
    created = iot.create_job(
        jobId=job_id,
        targets=things,
        document=json.dumps({"operation": "reboot"}),
        description="reboot the pumps",
        timeoutConfig={"inProgressTimeoutInMinutes": 15},
        jobExecutionsRolloutConfig={"maximumPerMinute": 20},
        abortConfig={
            "criteriaList": [
                {"failureType": "FAILED", "action": "CANCEL", "thresholdPercentage": 10.0, "minNumberOfExecutedThings": 1}
            ]
        },
        jobExecutionsRetryConfig={"criteriaList": [{"failureType": "TIMED_OUT", "numberOfRetries": 1}]},
    )
    assert created["jobArn"] == endpoints.arn(f"job/{job_id}")
    assert created["description"] == "reboot the pumps"

    job = iot.describe_job(jobId=job_id)["job"]
    assert job["status"] == "IN_PROGRESS" and job["targetSelection"] == "SNAPSHOT"
    assert job["targets"] == things
    assert job["timeoutConfig"] == {"inProgressTimeoutInMinutes": 15}
    assert job["jobExecutionsRolloutConfig"] == {"maximumPerMinute": 20}
    assert job["abortConfig"]["criteriaList"][0]["thresholdPercentage"] == 10.0
    assert job["jobExecutionsRetryConfig"]["criteriaList"][0]["numberOfRetries"] == 1
    assert job["jobProcessDetails"]["numberOfQueuedThings"] == 2
    assert job["createdAt"].year >= 2024  # a datetime: epoch seconds on the wire
    assert json.loads(iot.get_job_document(jobId=job_id)["document"]) == {"operation": "reboot"}

    thing_name = things[0].split("/")[-1]
    execution = iot.describe_job_execution(jobId=job_id, thingName=thing_name)["execution"]
    assert (execution["status"], execution["versionNumber"], execution["thingArn"]) == ("QUEUED", 1, things[0])
    summaries = iot.list_job_executions_for_job(jobId=job_id, status="QUEUED")["executionSummaries"]
    assert sorted(s["thingArn"] for s in summaries) == sorted(things)
    for_thing = iot.list_job_executions_for_thing(thingName=thing_name)["executionSummaries"]
    assert [s["jobId"] for s in for_thing] == [job_id]

    with pytest.raises(iot.exceptions.VersionConflictException) as stale:
        iot.cancel_job_execution(jobId=job_id, thingName=thing_name, expectedVersion=7)
    assert _error(stale) == ("VersionConflictException", 409)
    iot.cancel_job_execution(jobId=job_id, thingName=thing_name, expectedVersion=1)
    assert iot.describe_job_execution(jobId=job_id, thingName=thing_name)["execution"]["status"] == "CANCELED"
    with pytest.raises(iot.exceptions.InvalidStateTransitionException):
        iot.cancel_job_execution(jobId=job_id, thingName=thing_name)

    with pytest.raises(iot.exceptions.InvalidStateTransitionException) as running:
        iot.delete_job(jobId=job_id)
    assert _error(running) == ("InvalidStateTransitionException", 409)
    cancelled = iot.cancel_job(jobId=job_id, reasonCode="NOT_NEEDED", comment="pumps were rebooted by hand")
    assert cancelled["jobId"] == job_id
    job = iot.describe_job(jobId=job_id)["job"]
    assert (job["status"], job["reasonCode"], job["forceCanceled"]) == ("CANCELED", "NOT_NEEDED", False)
    assert job["jobProcessDetails"]["numberOfCanceledThings"] == 2
    iot.delete_job(jobId=job_id)
    with pytest.raises(iot.exceptions.ResourceNotFoundException) as gone:
        iot.describe_job(jobId=job_id)
    assert _error(gone) == ("ResourceNotFoundException", 404)


def test_list_jobs_filters_and_pages_with_the_boto3_paginator(iot, endpoints, things):
    group = unique_name("jobs-group")
    iot.create_thing_group(thingGroupName=group)
    iot.add_thing_to_thing_group(thingGroupName=group, thingArn=things[0])
    prefix = unique_name("listed")
    ids = [f"{prefix}-{i}" for i in range(3)]
    for i, job_id in enumerate(ids):
        extra = {"namespaceId": "aws-gg-deployment"} if i == 2 else {}
        iot.create_job(
            jobId=job_id,
            targets=[endpoints.arn(f"thinggroup/{group}")],
            document="{}",
            targetSelection="CONTINUOUS" if i == 0 else "SNAPSHOT",
            **extra,
        )
    paginator = iot.get_paginator("list_jobs")
    pages = list(paginator.paginate(thingGroupName=group, PaginationConfig={"PageSize": 2}))
    assert [len(p["jobs"]) for p in pages] == [2, 1]
    assert [j["jobId"] for p in pages for j in p["jobs"]] == ids
    assert "nextToken" not in pages[-1]
    continuous = iot.list_jobs(thingGroupName=group, targetSelection="CONTINUOUS")["jobs"]
    assert [j["jobId"] for j in continuous] == ids[:1]
    namespaced = iot.list_jobs(namespaceId="aws-gg-deployment")["jobs"]
    assert ids[2] in [j["jobId"] for j in namespaced] and ids[0] not in [j["jobId"] for j in namespaced]
    thing_name = things[0].split("/")[-1]
    executions = iot.list_job_executions_for_thing(thingName=thing_name, namespaceId="aws-gg-deployment")
    assert [s["jobId"] for s in executions["executionSummaries"]] == [ids[2]]


def test_a_job_document_can_come_from_s3(iot, s3, endpoints, things):
    bucket = unique_name("jobdocs")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="jobs/reboot.json", Body=b'{"operation":"reboot"}')
    job_id = unique_name("from-s3")
    source = f"https://s3.us-east-1.amazonaws.com/{bucket}/jobs/reboot.json"
    iot.create_job(jobId=job_id, targets=things[:1], documentSource=source)
    assert iot.describe_job(jobId=job_id)["documentSource"] == source
    assert iot.get_job_document(jobId=job_id)["document"] == '{"operation":"reboot"}'
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.create_job(
            jobId=unique_name("from-s3"), targets=things[:1], documentSource=f"https://s3.amazonaws.com/{bucket}/missing"
        )


def test_errors_are_the_exceptions_aws_documents(iot, endpoints, things):
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_job(jobId="no-such-job")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.cancel_job(jobId="no-such-job")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.list_job_executions_for_job(jobId="no-such-job")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.create_job(jobId=unique_name("j"), targets=[endpoints.arn("thing/no-such-thing")], document="{}")
    with pytest.raises(iot.exceptions.InvalidRequestException) as bad:
        iot.create_job(jobId=unique_name("j"), targets=things, document="not json")
    assert _error(bad) == ("InvalidRequestException", 400)
    job_id = unique_name("dup")
    iot.create_job(jobId=job_id, targets=things, document="{}")
    with pytest.raises(iot.exceptions.ResourceAlreadyExistsException) as exists:
        iot.create_job(jobId=job_id, targets=things, document="{}")
    assert _error(exists) == ("ResourceAlreadyExistsException", 409)
    assert exists.value.response["resourceArn"] == endpoints.arn(f"job/{job_id}")
    iot.cancel_job(jobId=job_id, force=True)
    iot.delete_job(jobId=job_id, force=True)
