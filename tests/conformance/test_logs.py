"""boto3 against the local cloud's CloudWatch Logs (AWS JSON 1.1, `Logs_20140328.*`): log groups
and streams, PutLogEvents with AWS's batch rules (chronological order, 10,000 events,
1,048,576 bytes counted as message bytes + 26 per event, too old / too new events rejected by
index), GetLogEvents' forward and backward tokens, FilterLogEvents' patterns, boto3's
paginators, CloudWatch Logs' errors as botocore raises them, a role's scoped credentials
as a Greengrass core's log manager uses them, and the simulated core's log manager uploading a
component's lines to the log group and stream AWS names."""

from __future__ import annotations

import json
import ssl
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

from simcore import CloudLink, Component
from support import boto_client, provision_device, unique_name

DAY_MS = 24 * 60 * 60 * 1000


def _error(excinfo) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def _now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture(scope="module")
def logs(endpoints):
    return boto_client(endpoints, "logs")


def test_groups_and_streams_describe_page_and_refuse_duplicates(logs, endpoints):
    prefix = f"/conf/{unique_name('groups')}"
    names = [f"{prefix}/{i}" for i in range(3)]
    for name in names:
        logs.create_log_group(logGroupName=name)
    with pytest.raises(ClientError) as excinfo:
        logs.create_log_group(logGroupName=names[0])
    assert _error(excinfo) == ("ResourceAlreadyExistsException", 400)
    with pytest.raises(ClientError) as excinfo:
        logs.create_log_group(logGroupName="bad:name")
    assert _error(excinfo) == ("InvalidParameterException", 400)

    pages = list(logs.get_paginator("describe_log_groups").paginate(
        logGroupNamePrefix=prefix, PaginationConfig={"PageSize": 2}
    ))
    assert len(pages) == 2
    groups = [g for page in pages for g in page["logGroups"]]
    assert [g["logGroupName"] for g in groups] == names
    arn = f"arn:aws:logs:{endpoints.region}:{endpoints.account_id}:log-group:{names[0]}"
    assert groups[0]["logGroupArn"] == arn and groups[0]["arn"] == f"{arn}:*"
    named = logs.describe_log_groups(logGroupIdentifiers=[arn, names[2]])["logGroups"]
    assert [g["logGroupName"] for g in named] == [names[0], names[2]]

    logs.put_retention_policy(logGroupName=names[0], retentionInDays=7)
    described = logs.describe_log_groups(logGroupNamePrefix=names[0])["logGroups"][0]
    assert described["retentionInDays"] == 7
    with pytest.raises(ClientError) as excinfo:
        logs.put_retention_policy(logGroupName=names[0], retentionInDays=8)
    assert _error(excinfo) == ("InvalidParameterException", 400)
    logs.delete_retention_policy(logGroupName=names[0])
    assert "retentionInDays" not in logs.describe_log_groups(logGroupNamePrefix=names[0])["logGroups"][0]

    group = names[0]
    for stream in ["c", "a", "b"]:
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    with pytest.raises(ClientError) as excinfo:
        logs.create_log_stream(logGroupName=group, logStreamName="a")
    assert _error(excinfo) == ("ResourceAlreadyExistsException", 400)
    with pytest.raises(ClientError) as excinfo:
        logs.create_log_stream(logGroupName=f"{prefix}/missing", logStreamName="a")
    assert _error(excinfo) == ("ResourceNotFoundException", 400)

    now = _now_ms()
    logs.put_log_events(logGroupName=group, logStreamName="c", logEvents=[{"timestamp": now - 10, "message": "x"}])
    logs.put_log_events(logGroupName=group, logStreamName="a", logEvents=[{"timestamp": now, "message": "y"}])
    streams = logs.get_paginator("describe_log_streams").paginate(
        logGroupName=group, PaginationConfig={"PageSize": 1}
    )
    assert [s["logStreamName"] for page in streams for s in page["logStreams"]] == ["a", "b", "c"]
    by_time = logs.describe_log_streams(logGroupName=group, orderBy="LastEventTime", descending=True)["logStreams"]
    assert [s["logStreamName"] for s in by_time] == ["a", "c", "b"]
    assert by_time[0]["lastEventTimestamp"] == now
    with pytest.raises(ClientError) as excinfo:
        logs.describe_log_streams(logGroupName=group, orderBy="LastEventTime", logStreamNamePrefix="a")
    assert _error(excinfo) == ("InvalidParameterException", 400)

    logs.delete_log_stream(logGroupName=group, logStreamName="b")
    for name in names:
        logs.delete_log_group(logGroupName=name)
    assert logs.describe_log_groups(logGroupNamePrefix=prefix)["logGroups"] == []
    with pytest.raises(ClientError) as excinfo:
        logs.delete_log_group(logGroupName=names[0])
    assert _error(excinfo) == ("ResourceNotFoundException", 400)
    with pytest.raises(ClientError) as excinfo:
        logs.describe_log_streams(logGroupName=names[0])
    assert _error(excinfo) == ("ResourceNotFoundException", 400)


def test_put_log_events_follows_awss_batch_rules(logs):
    group, stream = f"/conf/{unique_name('put')}", "core"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = _now_ms()

    put = logs.put_log_events(
        logGroupName=group,
        logStreamName=stream,
        sequenceToken="ignored-as-aws-does-now",
        logEvents=[
            {"timestamp": now - 15 * DAY_MS, "message": "too old"},
            {"timestamp": now - 1000, "message": "kept 1"},
            {"timestamp": now, "message": "kept 2"},
            {"timestamp": now + 3 * 60 * 60 * 1000, "message": "too new"},
        ],
    )
    assert put["rejectedLogEventsInfo"] == {"tooOldLogEventEndIndex": 1, "tooNewLogEventStartIndex": 3}
    assert put["nextSequenceToken"]
    got = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)
    assert [e["message"] for e in got["events"]] == ["kept 1", "kept 2"]

    with pytest.raises(ClientError) as excinfo:
        logs.put_log_events(
            logGroupName=group,
            logStreamName=stream,
            logEvents=[{"timestamp": now, "message": "b"}, {"timestamp": now - 1, "message": "a"}],
        )
    assert _error(excinfo) == ("InvalidParameterException", 400)
    assert "chronological" in excinfo.value.response["Error"]["Message"]

    # 1,048,576 bytes is message bytes + 26 per event: exactly at the limit passes, one byte over fails.
    size = (1_048_576 - 4 * 26) // 4
    at_limit = [{"timestamp": now, "message": "m" * size} for _ in range(4)]
    at_limit[-1]["message"] += "m" * (1_048_576 - 4 * 26 - 4 * size)
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=at_limit)
    at_limit[-1]["message"] += "m"
    with pytest.raises(ClientError) as excinfo:
        logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=at_limit)
    assert _error(excinfo) == ("InvalidParameterException", 400)

    too_many = [{"timestamp": now, "message": "e"} for _ in range(10_001)]
    with pytest.raises(ClientError) as excinfo:
        logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=too_many)
    assert _error(excinfo) == ("InvalidParameterException", 400)
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=too_many[:10_000])

    with pytest.raises(ClientError) as excinfo:
        logs.put_log_events(logGroupName=group, logStreamName="missing", logEvents=[{"timestamp": now, "message": "x"}])
    assert _error(excinfo) == ("ResourceNotFoundException", 400)
    logs.delete_log_group(logGroupName=group)


def test_get_log_events_tokens_walk_forward_and_back(logs):
    group, stream = f"/conf/{unique_name('get')}", "core"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = _now_ms()
    events = [{"timestamp": now - 100 + i, "message": f"line {i}"} for i in range(10)]
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)

    newest = logs.get_log_events(logGroupName=group, logStreamName=stream, limit=3)
    assert [e["message"] for e in newest["events"]] == ["line 7", "line 8", "line 9"]
    assert all(e["ingestionTime"] >= now - 60_000 for e in newest["events"])
    older = logs.get_log_events(
        logGroupName=group, logStreamName=stream, limit=3, nextToken=newest["nextBackwardToken"]
    )
    assert [e["message"] for e in older["events"]] == ["line 4", "line 5", "line 6"]

    # The AWS CLI's way to read a whole stream: forward until the token comes back unchanged.
    seen, token = [], None
    while True:
        kwargs = {"nextToken": token} if token else {}
        page = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True, limit=4, **kwargs)
        seen += [e["message"] for e in page["events"]]
        if page["nextForwardToken"] == token:
            break
        token = page["nextForwardToken"]
    assert seen == [f"line {i}" for i in range(10)]

    window = logs.get_log_events(
        logGroupName=group, logStreamName=stream, startTime=now - 98, endTime=now - 95, startFromHead=True
    )
    assert [e["message"] for e in window["events"]] == ["line 2", "line 3", "line 4"]
    with pytest.raises(ClientError) as excinfo:
        logs.get_log_events(logGroupName=group, logStreamName=stream, nextToken="not-a-token")
    assert _error(excinfo) == ("InvalidParameterException", 400)
    with pytest.raises(ClientError) as excinfo:
        logs.get_log_events(logGroupName=group, logStreamName="missing")
    assert _error(excinfo) == ("ResourceNotFoundException", 400)
    logs.delete_log_group(logGroupName=group)


def test_filter_log_events_matches_terms_across_streams_and_pages(logs):
    group = f"/conf/{unique_name('filter')}"
    logs.create_log_group(logGroupName=group)
    now = _now_ms()
    lines = {
        "core-1": ["[ERROR] pump stalled", "[INFO] speed 1500 rpm", "[WARN] low pressure"],
        "core-2": ["[ERROR] valve stuck", "[ERROR] pump stalled again", "[INFO] ok"],
    }
    for stream, messages in lines.items():
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        offset = 0 if stream == "core-1" else 1
        logs.put_log_events(
            logGroupName=group,
            logStreamName=stream,
            logEvents=[{"timestamp": now - 100 + 2 * i + offset, "message": m} for i, m in enumerate(messages)],
        )

    def messages(**kwargs):
        pages = logs.get_paginator("filter_log_events").paginate(logGroupName=group, **kwargs)
        return [e["message"] for page in pages for e in page["events"]]

    assert len(messages()) == 6
    assert messages(filterPattern="ERROR") == ["[ERROR] pump stalled", "[ERROR] valve stuck", "[ERROR] pump stalled again"]
    assert messages(filterPattern="ERROR pump") == ["[ERROR] pump stalled", "[ERROR] pump stalled again"]
    assert messages(filterPattern='"stalled again"') == ["[ERROR] pump stalled again"]
    assert messages(filterPattern="?WARN ?valve") == ["[ERROR] valve stuck", "[WARN] low pressure"]
    assert messages(filterPattern="ERROR -again", logStreamNames=["core-2"]) == ["[ERROR] valve stuck"]
    assert messages(logStreamNamePrefix="core-1", startTime=now - 98, endTime=now - 96) == [
        "[INFO] speed 1500 rpm",
        "[WARN] low pressure",
    ]
    pages = list(logs.get_paginator("filter_log_events").paginate(logGroupName=group, PaginationConfig={"PageSize": 4}))
    assert [len(page["events"]) for page in pages] == [4, 2]
    first = logs.filter_log_events(logGroupName=group, limit=1)["events"][0]
    assert first["logStreamName"] == "core-1" and first["eventId"]
    newest = logs.filter_log_events(logGroupName=group, startFromHead=False, limit=2)
    assert [e["message"] for e in newest["events"]] == ["[INFO] ok", "[WARN] low pressure"]
    older = logs.filter_log_events(logGroupName=group, limit=2, nextToken=newest["nextToken"])
    assert [e["message"] for e in older["events"]] == ["[ERROR] pump stalled again", "[INFO] speed 1500 rpm"]

    with pytest.raises(ClientError) as excinfo:
        logs.filter_log_events(logGroupName=group, filterPattern='{ $.level = "error" }')
    assert _error(excinfo) == ("InvalidParameterException", 400)
    with pytest.raises(ClientError) as excinfo:
        logs.filter_log_events(logGroupName=group, logStreamNames=["core-1"], logStreamNamePrefix="core")
    assert _error(excinfo) == ("InvalidParameterException", 400)
    with pytest.raises(ClientError) as excinfo:
        logs.filter_log_events(logGroupName=f"{group}/missing")
    assert _error(excinfo) == ("ResourceNotFoundException", 400)
    logs.delete_log_group(logGroupName=group)


def test_signatures_are_verified_and_unknown_operations_refused(endpoints):
    wrong = boto_client(endpoints, "logs", secret_access_key="not-the-secret")
    with pytest.raises(ClientError) as excinfo:
        wrong.describe_log_groups()
    assert _error(excinfo) == ("InvalidSignatureException", 400)
    stranger = boto_client(endpoints, "logs", access_key_id="AKIAUNKNOWN000000000", secret_access_key="x")
    with pytest.raises(ClientError) as excinfo:
        stranger.describe_log_groups()
    assert _error(excinfo) == ("UnrecognizedClientException", 400)
    with pytest.raises(ClientError) as excinfo:
        boto_client(endpoints, "logs").start_query(
            logGroupName="/x", startTime=0, endTime=1, queryString="fields @message"
        )
    assert _error(excinfo) == ("UnknownOperationException", 400)


TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "credentials.iot.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}


# The permissions Greengrass's log manager documents, narrowed to Greengrass's log groups.
LOG_MANAGER_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            "Resource": "arn:aws:logs:*:*:log-group:/aws/greengrass/*",
        }
    ],
}


def _device_credentials(endpoints, device, alias: str) -> dict:
    """The credentials provider's answer for `device` (GET over mutual TLS, as a core's TES does)."""
    context = ssl.create_default_context(cafile=endpoints.ca_file)
    context.load_cert_chain(device.cert_path, device.key_path)
    request = urllib.request.Request(f"{endpoints.credentials_provider}/role-aliases/{alias}/credentials")
    request.add_header("x-amzn-iot-thingname", device.thing_name)
    with urllib.request.urlopen(request, context=context, timeout=15) as response:
        return json.loads(response.read())["credentials"]


def test_a_cores_role_writes_its_own_log_groups_only(endpoints, iot, tmp_path):
    iam = boto_client(endpoints, "iam")
    role_name, alias = unique_name("conf-logs-role"), unique_name("conf-logs-alias")
    role = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]
    iam.put_role_policy(RoleName=role_name, PolicyName="logs", PolicyDocument=json.dumps(LOG_MANAGER_POLICY))
    iot.create_role_alias(roleAlias=alias, roleArn=role["Arn"], credentialDurationSeconds=900)
    assume = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:AssumeRoleWithCertificate", "Resource": endpoints.arn(f"rolealias/{alias}")}
        ],
    }
    device = provision_device(iot, endpoints, tmp_path / "core", "conf-logs-core", json.dumps(assume))
    credentials = _device_credentials(endpoints, device, alias)
    core = boto_client(
        endpoints,
        "logs",
        access_key_id=credentials["accessKeyId"],
        secret_access_key=credentials["secretAccessKey"],
        session_token=credentials["sessionToken"],
    )

    group = f"/aws/greengrass/UserComponent/{endpoints.region}/{unique_name('conf.Component')}"
    core.create_log_group(logGroupName=group)
    stream = f"/2026/12/07/thing/{device.thing_name}"
    core.create_log_stream(logGroupName=group, logStreamName=stream)
    core.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[{"timestamp": _now_ms(), "message": "up"}])
    assert [s["logStreamName"] for s in core.describe_log_streams(logGroupName=group)["logStreams"]] == [stream]

    for refused in (
        lambda: core.get_log_events(logGroupName=group, logStreamName=stream),
        lambda: core.create_log_group(logGroupName=f"/conf/{unique_name('elsewhere')}"),
        lambda: core.describe_log_groups(),
    ):
        with pytest.raises(ClientError) as excinfo:
            refused()
        assert _error(excinfo) == ("AccessDeniedException", 400)
    admin = boto_client(endpoints, "logs")
    assert [e["message"] for e in admin.get_log_events(logGroupName=group, logStreamName=stream)["events"]] == ["up"]
    admin.delete_log_group(logGroupName=group)


LOG_TIMEOUT_S = 60.0


def test_the_simulated_cores_log_manager_uploads_a_components_lines_where_aws_puts_them(
    logs, iot, endpoints, local_cloud, simulated_core, tmp_path
):
    """`device-sim core` with `aws.greengrass.LogManager` deployed: the component's lines are found
    with `filter_log_events` in `/aws/greengrass/UserComponent/{region}/{component}`, stream
    `/{yyyy/MM/dd}/thing/{thing}`; a DEBUG line under the INFO minimum is not uploaded."""
    iam = boto_client(endpoints, "iam")
    role_name, alias = unique_name("conf-lm-role"), unique_name("conf-lm-alias")
    role = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]
    iam.put_role_policy(RoleName=role_name, PolicyName="logs", PolicyDocument=json.dumps(LOG_MANAGER_POLICY))
    iot.create_role_alias(roleAlias=alias, roleArn=role["Arn"])
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": endpoints.arn("client/${iot:Connection.Thing.ThingName}")},
            {"Effect": "Allow", "Action": "iot:AssumeRoleWithCertificate", "Resource": endpoints.arn(f"rolealias/{alias}")},
        ],
    }
    device = provision_device(iot, endpoints, tmp_path / "core", "conf-lm-core", json.dumps(policy))
    link = CloudLink(str(local_cloud.data_dir / "endpoints.json"), device.cert_path, device.key_path, endpoints.ca_file)
    name, marker = unique_name("com.example.conformance.LogTalker"), unique_name("marker")
    recipe = tmp_path / "talker.yaml"
    recipe.write_text(
        json.dumps(
            {
                "RecipeFormatVersion": "2020-01-25",
                "ComponentName": name,
                "ComponentVersion": "1.0.0",
                "ComponentDependencies": {
                    "aws.greengrass.LogManager": {"VersionRequirement": "^2.0.0", "DependencyType": "SOFT"}
                },
                "Manifests": [
                    {"Lifecycle": {"Run": f"echo 'shown {marker}'; echo '[DEBUG] hidden {marker}'; exec sleep 600"}}
                ],
            }
        )
    )
    config = {
        "aws.greengrass.Nucleus": {"MERGE": {"iotRoleAlias": alias}},
        "aws.greengrass.LogManager": {
            "MERGE": {
                "periodicUploadIntervalSec": 0.5,
                "logsUploaderConfiguration": {"componentLogsConfigurationMap": {name: {"minimumLogLevel": "INFO"}}},
            }
        },
    }
    core = simulated_core(device.thing_name, [Component(name, "1.0.0", recipe, ())], link, update_config=config)

    group = f"/aws/greengrass/UserComponent/{endpoints.region}/{name}"
    deadline = time.monotonic() + LOG_TIMEOUT_S
    events: list = []
    while not events:
        try:
            events = logs.filter_log_events(logGroupName=group, filterPattern=f'"shown {marker}"')["events"]
        except ClientError as e:
            if e.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
        if not events:
            assert time.monotonic() < deadline, f"no upload within {LOG_TIMEOUT_S} s:\n{core.diagnostics()}"
            time.sleep(0.2)
    assert len(events) == 1, events
    day = time.strftime("%Y/%m/%d", time.gmtime(events[0]["timestamp"] / 1000))
    assert events[0]["logStreamName"] == f"/{day}/thing/{device.thing_name}"
    assert events[0]["message"].endswith(f"shown {marker}")
    hidden = logs.filter_log_events(logGroupName=group, filterPattern=f'"hidden {marker}"')["events"]
    assert hidden == []
