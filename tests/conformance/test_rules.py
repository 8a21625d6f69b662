"""boto3 and awsiotsdk against the local cloud's AWS IoT rules engine (botocore's `iot` model,
"Rules for AWS IoT" in the AWS IoT Core Developer Guide).

The control plane: CreateTopicRule, GetTopicRule, ListTopicRules (`topic`, `ruleDisabled`,
pages), ReplaceTopicRule, EnableTopicRule, DisableTopicRule, DeleteTopicRule, and IoT Core's
errors for them. The data path: a device publishes over mutual TLS, and the rules' SQL and
actions are observed from outside — a republished message on a topic the device subscribes to,
an item read back with boto3 `dynamodb`, a `provided.al2023` function that publishes what it was
invoked with, and the rule's error action, which republishes IoT Core's error message.

IoT Core invokes a `lambda` action's function asynchronously (Lambda's `Event` invocation): the
action fails, and the error action runs, only when the invoke itself is refused (no such
function, no permission for `iot.amazonaws.com`). A function that times out or crashes afterwards
fails its invocation inside Lambda, which reports it where it reports any failed asynchronous
invocation (on AWS the function's log and its on-failure destination; here the local cloud's log);
the rule never hears of it.

The `cloudwatchMetric` action's datapoints are read back with boto3 `cloudwatch`, a
`cloudwatchAlarm` action sets an alarm's state, and an alarm on AWS IoT's own `Failure` metric
(`AWS/IoT`, dimensions `RuleName` and `ActionType`) goes to ALARM when the rule's action fails.
"""

from __future__ import annotations

import base64
import datetime
import io
import json
import sys
import time
import uuid
import zipfile

import pytest
from awscrt import mqtt
from botocore.exceptions import ClientError

from support import EVENT_TIMEOUT_S, Mailbox, boto_client, provision_device

IOT_PRINCIPAL = "iot.amazonaws.com"


def _trust(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
        }
    )


def _rule_name(prefix: str) -> str:
    """A rule name no other test uses (rule names allow letters, digits and underscores only)."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _error(excinfo) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def _device_policy(endpoints) -> str:
    """Connect as the thing; publish and receive under `rt…` topics and publish to Basic Ingest."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "iot:Connect",
                    "Resource": endpoints.arn("client/${iot:Connection.Thing.ThingName}"),
                },
                {
                    "Effect": "Allow",
                    "Action": ["iot:Publish", "iot:Receive"],
                    "Resource": [endpoints.arn("topic/rt*"), endpoints.arn("topic/$aws/rules/*")],
                },
                {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": endpoints.arn("topicfilter/rt*")},
            ],
        }
    )


class Site:
    """A connected device: publishes JSON at QoS 1 (waiting for PUBACK) and subscribes into mailboxes."""

    def __init__(self, thing_name: str, certificate_id: str, connection: mqtt.Connection):
        self.thing_name = thing_name
        self.certificate_id = certificate_id
        self.connection = connection

    def subscribe(self, topic_filter: str) -> Mailbox:
        """A mailbox of `(topic, body)`, the body parsed as JSON when it is JSON."""
        box = Mailbox(topic_filter)

        def on_message(topic, payload, **_kwargs):
            try:
                body = json.loads(payload)
            except ValueError:
                body = bytes(payload)
            box((topic, body))

        subscribed, _ = self.connection.subscribe(topic_filter, mqtt.QoS.AT_LEAST_ONCE, on_message)
        granted = subscribed.result(timeout=EVENT_TIMEOUT_S)
        assert granted["qos"] is not None, f"SUBACK refused {topic_filter}"
        return box

    def publish(self, topic: str, body) -> bytes:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        published, _ = self.connection.publish(topic, payload, mqtt.QoS.AT_LEAST_ONCE)
        published.result(timeout=EVENT_TIMEOUT_S)
        return payload


@pytest.fixture(scope="module")
def iam(endpoints):
    return boto_client(endpoints, "iam")


@pytest.fixture(scope="module")
def lam(endpoints):
    return boto_client(endpoints, "lambda")


@pytest.fixture(scope="module")
def dynamodb(endpoints):
    return boto_client(endpoints, "dynamodb")


def _role(iam, prefix: str, trusted: str, statements: list[dict]) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=_trust(trusted))["Role"]["Arn"]
    if statements:
        document = {"Version": "2012-10-17", "Statement": statements}
        iam.put_role_policy(RoleName=name, PolicyName="actions", PolicyDocument=json.dumps(document))
    return arn


@pytest.fixture(scope="module")
def rules_role(iam, endpoints) -> str:
    """The role the rules' actions name: trusts IoT, may publish under `rt…` (and to shadows), put items
    in `rt…` tables and objects in `rt…` buckets."""
    return _role(
        iam,
        "rules-role",
        IOT_PRINCIPAL,
        [
            {
                "Effect": "Allow",
                "Action": "iot:Publish",
                "Resource": [endpoints.arn("topic/rt*"), endpoints.arn("topic/$aws/things/*/shadow/update")],
            },
            {
                "Effect": "Allow",
                "Action": "dynamodb:PutItem",
                "Resource": f"arn:aws:dynamodb:{endpoints.region}:{endpoints.account_id}:table/rt*",
            },
            {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::rt*"},
        ],
    )


@pytest.fixture(scope="module")
def function_role(iam, endpoints) -> str:
    """An execution role: the function publishes what it was invoked with under `rt…`."""
    return _role(
        iam,
        "rules-fn-role",
        "lambda.amazonaws.com",
        [{"Effect": "Allow", "Action": "iot:Publish", "Resource": endpoints.arn("topic/rt*")}],
    )


@pytest.fixture
def base() -> str:
    """A first topic level of the test's own (under the `rt…` the policies allow)."""
    return f"rt{uuid.uuid4().hex[:12]}"


@pytest.fixture
def site(iot, endpoints, tmp_path, connect) -> Site:
    policy = _device_policy(endpoints)
    device = provision_device(iot, endpoints, tmp_path / "site", prefix="rules-dev", policy_document=policy)
    return Site(device.thing_name, device.certificate_id, connect(device))


@pytest.fixture
def rules(iot):
    """Creates topic rules (`create(name, sql, actions, **payload)`); each is deleted when the test ends."""
    created: list[str] = []

    def create(name: str, sql: str, actions: list[dict], **payload) -> str:
        iot.create_topic_rule(ruleName=name, topicRulePayload={"sql": sql, "actions": actions, **payload})
        created.append(name)
        return name

    yield create
    for name in created:
        try:
            iot.delete_topic_rule(ruleName=name)
        except ClientError:  # the test deleted it
            pass


def _republish(role_arn: str, topic: str) -> dict:
    return {"republish": {"roleArn": role_arn, "topic": topic, "qos": 1}}


def _only(box: Mailbox, what: str):
    """The first item of `box`, which must be its only one."""
    item = box.expect(what)
    assert box.snapshot() == [], f"{box.name}: more than {what}"
    return item


# --- control plane -------------------------------------------------------------------------


def test_a_rule_round_trips_through_get_replace_disable_enable_and_delete(iot, endpoints, rules_role, rules, base):
    name = _rule_name("round_trip")
    sql = f"SELECT temp, topic(2) AS thing FROM '{base}/+/telemetry' WHERE temp > 50"
    actions = [_republish(rules_role, f"{base}/hot/${{topic(2)}}")]
    error_action = _republish(rules_role, f"{base}/errors")
    before = datetime.datetime.now(datetime.timezone.utc)
    rules(name, sql, actions, description="hot pumps", errorAction=error_action)

    got = iot.get_topic_rule(ruleName=name)
    assert got["ruleArn"] == endpoints.arn(f"rule/{name}")
    rule = got["rule"]
    created_at = rule.pop("createdAt")
    assert rule == {
        "ruleName": name,
        "sql": sql,
        "description": "hot pumps",
        "actions": actions,
        "errorAction": error_action,
        "ruleDisabled": False,
        "awsIotSqlVersion": "2015-10-08",  # AWS's default
    }
    assert before - datetime.timedelta(seconds=5) <= created_at <= before + datetime.timedelta(minutes=1)

    replaced_sql = f"SELECT * FROM '{base}/#'"
    iot.replace_topic_rule(
        ruleName=name,
        topicRulePayload={"sql": replaced_sql, "actions": actions, "awsIotSqlVersion": "2016-03-23"},
    )
    rule = iot.get_topic_rule(ruleName=name)["rule"]
    assert (rule["sql"], rule["awsIotSqlVersion"], rule["createdAt"]) == (replaced_sql, "2016-03-23", created_at)
    assert "errorAction" not in rule, "a replace sets the whole payload"

    iot.disable_topic_rule(ruleName=name)
    assert iot.get_topic_rule(ruleName=name)["rule"]["ruleDisabled"] is True
    iot.enable_topic_rule(ruleName=name)
    assert iot.get_topic_rule(ruleName=name)["rule"]["ruleDisabled"] is False

    iot.delete_topic_rule(ruleName=name)
    # IoT Core answers for a rule that does not exist with UnauthorizedException (the model has no not-found).
    for call in (
        lambda: iot.get_topic_rule(ruleName=name),
        lambda: iot.delete_topic_rule(ruleName=name),
        lambda: iot.enable_topic_rule(ruleName=name),
        lambda: iot.replace_topic_rule(ruleName=name, topicRulePayload={"sql": replaced_sql, "actions": []}),
    ):
        with pytest.raises(ClientError) as excinfo:
            call()
        assert _error(excinfo) == ("UnauthorizedException", 401)


def test_list_topic_rules_filters_by_topic_and_disabled_and_pages(iot, endpoints, rules_role, rules, base):
    pattern = f"{base}/+/list"
    actions = [_republish(rules_role, f"{base}/out")]
    enabled = {rules(_rule_name(f"list_{i}"), f"SELECT * FROM '{pattern}'", actions) for i in range(2)}
    disabled = rules(_rule_name("list_off"), f"SELECT * FROM '{pattern}'", actions, ruleDisabled=True)
    rules(_rule_name("list_other"), f"SELECT * FROM '{base}/other'", actions)

    listed = iot.list_topic_rules(topic=pattern)["rules"]
    assert sorted(r["ruleName"] for r in listed) == sorted(enabled | {disabled})
    for item in listed:
        assert item["ruleArn"] == endpoints.arn(f"rule/{item['ruleName']}")
        assert item["topicPattern"] == pattern
        assert isinstance(item["createdAt"], datetime.datetime)
        assert item["ruleDisabled"] is (item["ruleName"] == disabled)
    assert [r["ruleName"] for r in iot.list_topic_rules(topic=pattern, ruleDisabled=True)["rules"]] == [disabled]
    assert {r["ruleName"] for r in iot.list_topic_rules(topic=pattern, ruleDisabled=False)["rules"]} == enabled

    first = iot.list_topic_rules(topic=pattern, maxResults=1)
    assert len(first["rules"]) == 1 and first.get("nextToken")
    pages = iot.get_paginator("list_topic_rules").paginate(topic=pattern, PaginationConfig={"PageSize": 2})
    pages = [[r["ruleName"] for r in page["rules"]] for page in pages]
    assert [len(page) for page in pages] == [2, 1]
    assert sorted(sum(pages, [])) == sorted(enabled | {disabled})


def test_bad_sql_unknown_functions_bad_names_duplicates_are_refused(iot, rules_role, rules, base):
    actions = [_republish(rules_role, f"{base}/out")]
    for sql in ("SELEKT * FROM 'a/b'", f"SELECT nosuch(temp) FROM '{base}/x'", "SELECT * FROM 'a/b' WHERE"):
        with pytest.raises(ClientError) as excinfo:
            iot.create_topic_rule(ruleName=_rule_name("bad_sql"), topicRulePayload={"sql": sql, "actions": actions})
        assert _error(excinfo) == ("SqlParseException", 400), sql
    for bad_name in ("has-dash", "has space", "x" * 129):
        with pytest.raises(ClientError) as excinfo:
            iot.create_topic_rule(
                ruleName=bad_name, topicRulePayload={"sql": "SELECT * FROM 'a/b'", "actions": actions}
            )
        assert _error(excinfo) == ("InvalidRequestException", 400), bad_name

    sql = f"SELECT * FROM '{base}/x'"
    name = rules(_rule_name("dup"), sql, actions)
    with pytest.raises(ClientError) as excinfo:
        iot.create_topic_rule(ruleName=name, topicRulePayload={"sql": "SELECT * FROM 'a/b'", "actions": actions})
    assert _error(excinfo) == ("ResourceAlreadyExistsException", 409)
    with pytest.raises(ClientError) as excinfo:
        iot.replace_topic_rule(ruleName=name, topicRulePayload={"sql": "SELECT FROM", "actions": actions})
    assert _error(excinfo) == ("SqlParseException", 400)
    assert iot.get_topic_rule(ruleName=name)["rule"]["sql"] == sql, "a refused replace leaves the rule"
    with pytest.raises(ClientError) as excinfo:
        iot.get_topic_rule(ruleName=_rule_name("missing"))
    assert _error(excinfo) == ("UnauthorizedException", 401)


# --- data path -----------------------------------------------------------------------------


def test_republish_delivers_the_selected_result_only_when_where_holds(site, rules_role, rules, base):
    rules(
        _rule_name("republish"),
        f"SELECT temp * 2 AS doubled, topic(2) AS thing, clientid() AS client, principal() AS principal, "
        f"state.mode AS mode "
        f"FROM '{base}/+/telemetry' WHERE temp > 50",
        [_republish(rules_role, f"{base}/out/${{topic(2)}}")],
    )
    out = site.subscribe(f"{base}/out/#")
    topic = f"{base}/{site.thing_name}/telemetry"
    site.publish(topic, {"temp": 10, "state": {"mode": "auto"}})  # WHERE is false
    site.publish(topic, {"temp": 60, "state": {"mode": "manual"}})
    assert _only(out, "the republished reading") == (
        f"{base}/out/{site.thing_name}",
        {
            "doubled": 120,
            "thing": site.thing_name,
            "client": site.thing_name,
            "principal": site.certificate_id,
            "mode": "manual",
        },
    )


def test_a_binary_payload_passes_select_star_unchanged_and_fails_a_key_select_without_an_error_action(
    site, rules_role, rules, base
):
    errors = _republish(rules_role, f"{base}/errors")
    rules(_rule_name("raw"), f"SELECT * FROM '{base}/+/raw'", [_republish(rules_role, f"{base}/out/raw")])
    rules(
        _rule_name("keyed"),
        f"SELECT temp FROM '{base}/+/raw'",
        [_republish(rules_role, f"{base}/out/keyed")],
        errorAction=errors,
    )
    raw, keyed, failed = (site.subscribe(f"{base}/{leaf}") for leaf in ("out/raw", "out/keyed", "errors"))
    topic = f"{base}/{site.thing_name}/raw"
    binary = bytes([0x00, 0x9F, 0xFF, 0x10]) + b"not json"
    site.publish(topic, binary)
    # "Working with binary payloads": SELECT * hands the bytes on as they are ...
    assert _only(raw, "the binary payload") == (f"{base}/out/raw", binary)
    # ... and a statement that reads a key of them does not run; a SQL problem is not an action's
    # failure, so the error action stays silent too.
    site.publish(topic, {"temp": 7})
    assert _only(keyed, "the JSON message's result")[1] == {"temp": 7}
    assert failed.snapshot() == []
    assert raw.expect("the JSON message")[1] == {"temp": 7}


def test_an_http_publish_runs_the_rules_and_dollar_dollar_republishes_to_a_shadow(
    iot_data, site, rules_role, rules, base
):
    # `$$` in a republish topic stands for `$`: this rule writes the thing's classic shadow.
    rules(
        _rule_name("to_shadow"),
        f"SELECT state FROM '{base}/+/report'",
        [_republish(rules_role, "$$aws/things/${topic(2)}/shadow/update")],
    )
    rules(
        _rule_name("http_client"),
        f"SELECT clientid() AS client, state.reported.rpm AS rpm FROM '{base}/+/report'",
        [_republish(rules_role, f"{base}/out/client")],
    )
    out = site.subscribe(f"{base}/out/client")
    report = {"state": {"reported": {"rpm": 1450}}}
    iot_data.publish(topic=f"{base}/{site.thing_name}/report", qos=1, payload=json.dumps(report).encode())
    # clientid() of a message that did not come over MQTT is "n/a" (AWS IoT SQL reference).
    assert _only(out, "the HTTP message's result")[1] == {"client": "n/a", "rpm": 1450}
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while True:
        try:
            shadow = json.loads(iot_data.get_thing_shadow(thingName=site.thing_name)["payload"].read())
            break
        except ClientError as e:
            assert e.response["Error"]["Code"] == "ResourceNotFoundException", e
            assert time.monotonic() < deadline, f"no shadow for {site.thing_name} within {EVENT_TIMEOUT_S:.0f} s"
            time.sleep(0.1)
    assert shadow["state"] == {"reported": {"rpm": 1450}}


def test_basic_ingest_reaches_only_the_named_rule_with_the_prefix_left_out(site, rules_role, rules, base):
    sql = f"SELECT topic() AS topic, topic(2) AS thing, n FROM '{base}/+/ingest'"
    named = rules(_rule_name("ingest"), sql, [_republish(rules_role, f"{base}/out/named")])
    rules(_rule_name("ingest_other"), sql, [_republish(rules_role, f"{base}/out/other")])
    named_out, other_out = site.subscribe(f"{base}/out/named"), site.subscribe(f"{base}/out/other")
    topic = f"{base}/{site.thing_name}/ingest"

    site.publish(f"$aws/rules/{named}/{topic}", {"n": 1})
    assert _only(named_out, "the Basic Ingest result") == (
        f"{base}/out/named",
        {"topic": topic, "thing": site.thing_name, "n": 1},
    )
    site.publish(topic, {"n": 2})  # through the broker: every rule on the topic
    assert _only(other_out, "the broker message's result")[1]["n"] == 2, "the Basic Ingest message reached another rule"
    assert _only(named_out, "the broker message's result")[1]["n"] == 2


def test_a_disabled_rule_does_not_run(iot, site, rules_role, rules, base):
    sql = f"SELECT n FROM '{base}/+/switch'"
    switched = rules(_rule_name("switched"), sql, [_republish(rules_role, f"{base}/out/switched")], ruleDisabled=True)
    # Runs on every message: once its result is here, the engine is done with that message.
    rules(_rule_name("marker"), sql, [_republish(rules_role, f"{base}/out/marker")])
    out, marker = site.subscribe(f"{base}/out/switched"), site.subscribe(f"{base}/out/marker")
    topic = f"{base}/{site.thing_name}/switch"

    def publish_and_settle(n: int) -> None:
        site.publish(topic, {"n": n})
        assert marker.expect(f"marker {n}")[1] == {"n": n}

    publish_and_settle(1)
    iot.enable_topic_rule(ruleName=switched)
    publish_and_settle(2)
    assert _only(out, "the enabled rule's result")[1] == {"n": 2}
    iot.disable_topic_rule(ruleName=switched)
    publish_and_settle(3)
    iot.enable_topic_rule(ruleName=switched)
    publish_and_settle(4)
    assert _only(out, "the re-enabled rule's result")[1] == {"n": 4}


def test_dynamodb_v2_puts_the_rule_result_as_an_item(site, dynamodb, rules_role, rules, base):
    table = f"{base}-readings"
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "thing", "KeyType": "HASH"}, {"AttributeName": "ts", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "thing", "AttributeType": "S"},
            {"AttributeName": "ts", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    rules(
        _rule_name("ddb"),
        f"SELECT topic(2) AS thing, ts, temp, running, note, tags, limits FROM '{base}/+/ddb'",
        [{"dynamoDBv2": {"roleArn": rules_role, "putItem": {"tableName": table}}}],
    )
    site.publish(
        f"{base}/{site.thing_name}/ddb",
        {"ts": 1700000000123, "temp": 21.5, "running": True, "note": None, "tags": ["a", 1], "limits": {"max": 80}},
    )
    key = {"thing": {"S": site.thing_name}, "ts": {"N": "1700000000123"}}
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while "Item" not in (got := dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True)):
        assert time.monotonic() < deadline, f"no item {key} in {table} within {EVENT_TIMEOUT_S:.0f} s"
        time.sleep(0.1)
    assert got["Item"] == {
        **key,
        "temp": {"N": "21.5"},
        "running": {"BOOL": True},
        "note": {"NULL": True},
        "tags": {"L": [{"S": "a"}, {"N": "1"}]},
        "limits": {"M": {"max": {"N": "80"}}},
    }
    dynamodb.delete_table(TableName=table)


def test_s3_puts_the_rule_result_under_a_templated_key(s3, site, rules_role, rules, base):
    bucket = f"{base}-archive"
    s3.create_bucket(Bucket=bucket)
    rules(
        _rule_name("archive"),
        f"SELECT n, topic(2) AS thing FROM '{base}/+/archive'",
        [{"s3": {"roleArn": rules_role, "bucketName": bucket, "key": "${topic(2)}/${n}.json"}}],
    )
    site.publish(f"{base}/{site.thing_name}/archive", {"n": 7})
    key = f"{site.thing_name}/7.json"
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while True:
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            break
        except ClientError as e:
            assert e.response["Error"]["Code"] == "NoSuchKey", e
            assert time.monotonic() < deadline, f"no object {key} in {bucket} within {EVENT_TIMEOUT_S:.0f} s"
            time.sleep(0.1)
    assert json.loads(body) == {"n": 7, "thing": site.thing_name}
    s3.delete_object(Bucket=bucket, Key=key)
    s3.delete_bucket(Bucket=bucket)


def _error_fields(body: dict) -> dict:
    """IoT Core's error action message, its documented members checked; returns the body."""
    members = {"ruleName", "topic", "cloudwatchTraceId", "clientId", "base64OriginalPayload", "failures"}
    assert set(body) == members, body
    assert isinstance(body["cloudwatchTraceId"], str) and body["cloudwatchTraceId"]
    for failure in body["failures"]:
        assert set(failure) == {"failedAction", "failedResource", "errorMessage"}, failure
        assert failure["errorMessage"]
    return body


def test_failed_actions_send_one_error_message_per_rule_and_message(iam, endpoints, site, rules_role, rules, base):
    untrusting = _role(
        iam,
        "rules-untrusting",
        "lambda.amazonaws.com",
        [{"Effect": "Allow", "Action": "iot:Publish", "Resource": endpoints.arn("topic/rt*")}],
    )
    powerless = _role(iam, "rules-powerless", IOT_PRINCIPAL, [])
    missing_function = f"arn:aws:lambda:{endpoints.region}:{endpoints.account_id}:function:{base}-missing"
    name = rules(
        _rule_name("failing"),
        f"SELECT * FROM '{base}/+/fail'",
        [
            {"dynamoDBv2": {"roleArn": rules_role, "putItem": {"tableName": f"{base}-missing"}}},
            {"s3": {"roleArn": rules_role, "bucketName": f"{base}-missing", "key": "k"}},
            _republish(untrusting, f"{base}/out/untrusting"),
            _republish(powerless, f"{base}/out/powerless"),
            {"lambda": {"functionArn": missing_function}},
        ],
        errorAction=_republish(rules_role, f"{base}/errors"),
    )
    errors = site.subscribe(f"{base}/errors")
    topic = f"{base}/{site.thing_name}/fail"
    sent = [site.publish(topic, {"n": n}) for n in (1, 2)]

    # One message per rule and message, holding every failed action ("Error action message format").
    for payload in sent:
        body = _error_fields(errors.expect("an error action message")[1])
        assert base64.b64decode(body["base64OriginalPayload"]) == payload
        assert (body["ruleName"], body["topic"], body["clientId"]) == (name, topic, site.thing_name)
        failures = {(f["failedAction"], f["failedResource"]): f["errorMessage"] for f in body["failures"]}
        assert set(failures) == {
            ("DynamoDBv2Action", f"{base}-missing"),
            ("S3Action", f"{base}-missing"),
            ("RepublishAction", f"{base}/out/untrusting"),
            ("RepublishAction", f"{base}/out/powerless"),
            ("LambdaAction", missing_function),
        }, body["failures"]
        # The wording of "Error action message format"'s example.
        assert failures[("S3Action", f"{base}-missing")].startswith("Failed to put S3 object.")
        assert "assume role" in failures[("RepublishAction", f"{base}/out/untrusting")]
        assert "not authorized" in failures[("RepublishAction", f"{base}/out/powerless")]
    assert errors.snapshot() == []


# --- lambda action -------------------------------------------------------------------------

# A runtime loop on the Lambda Runtime API: {"mode": "crash"} exits the process, {"mode": "sleep"}
# outlives any short timeout; otherwise it publishes the event it got to event["reply"] with boto3
# (imported only then: a crash or a sleep must not wait for it).
BOOTSTRAP = f"#!{sys.executable}\n" + """
import json, os, time, urllib.request

API = "http://%s/2018-06-01/runtime" % os.environ["AWS_LAMBDA_RUNTIME_API"]
while True:
    with urllib.request.urlopen(API + "/invocation/next") as r:
        request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read())
    mode = event.get("mode") if isinstance(event, dict) else None
    if mode == "crash":
        os._exit(3)
    if mode == "sleep":
        time.sleep(20)
    import boto3
    boto3.client("iot-data").publish(topic=event["reply"], payload=json.dumps(event).encode())
    done = urllib.request.Request(API + "/invocation/%s/response" % request_id, data=b"{}", method="POST")
    urllib.request.urlopen(done).read()
"""


def _function(lam, role_arn: str, name: str, timeout: int) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = (0o100755) << 16
        archive.writestr(info, BOOTSTRAP)
    created = lam.create_function(
        FunctionName=name,
        Runtime="provided.al2023",
        Role=role_arn,
        Handler="handler",
        Timeout=timeout,
        Code={"ZipFile": buffer.getvalue()},
    )
    return created["FunctionArn"]


def _allow_iot(lam, endpoints, function: str, rule: str) -> None:
    lam.add_permission(
        FunctionName=function,
        StatementId="iot-rule",
        Action="lambda:InvokeFunction",
        Principal=IOT_PRINCIPAL,
        SourceArn=endpoints.arn(f"rule/{rule}"),
        SourceAccount=endpoints.account_id,
    )


def test_lambda_action_needs_the_functions_permission_for_iot(
    lam, endpoints, site, function_role, rules_role, rules, base
):
    function = f"{base}-fn"
    arn = _function(lam, function_role, function, timeout=30)
    try:
        rule = rules(
            _rule_name("to_lambda"),
            f"SELECT *, topic(2) AS thing FROM '{base}/+/lambda'",
            [{"lambda": {"functionArn": arn}}],
            errorAction=_republish(rules_role, f"{base}/errors"),
        )
        errors, replies = site.subscribe(f"{base}/errors"), site.subscribe(f"{base}/reply")
        topic = f"{base}/{site.thing_name}/lambda"

        refused = site.publish(topic, {"n": 1, "reply": f"{base}/reply"})
        body = _error_fields(_only(errors, "the refused invocation's error")[1])
        assert base64.b64decode(body["base64OriginalPayload"]) == refused
        assert [(f["failedAction"], f["failedResource"]) for f in body["failures"]] == [("LambdaAction", arn)]

        _allow_iot(lam, endpoints, function, rule)
        site.publish(topic, {"n": 2, "reply": f"{base}/reply"})
        assert _only(replies, "the function's reply")[1] == {"n": 2, "reply": f"{base}/reply", "thing": site.thing_name}
        # The engine would have sent an error before invoking; the reply came after the invoke.
        assert errors.snapshot() == []
        assert replies.snapshot() == []
    finally:
        lam.delete_function(FunctionName=function)


def _wait_for_log(local_cloud, what: str, match) -> list[str]:
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while True:
        lines = [line for line in local_cloud.log_path.read_text(errors="replace").splitlines() if match(line)]
        if lines:
            return lines
        assert time.monotonic() < deadline, f"no log line for {what} within {EVENT_TIMEOUT_S:.0f} s"
        time.sleep(0.1)


def test_a_function_that_times_out_or_crashes_does_not_reach_the_error_action(
    lam, local_cloud, endpoints, site, function_role, rules_role, rules, base
):
    function = f"{base}-fails"
    _function(lam, function_role, function, timeout=1)
    try:
        functions = f"arn:aws:lambda:{endpoints.region}:{endpoints.account_id}:function:"
        rule = rules(
            _rule_name("to_failing"),
            f"SELECT * FROM '{base}/+/invoke'",
            [{"lambda": {"functionArn": functions + "${fn}"}}],
            errorAction=_republish(rules_role, f"{base}/errors"),
        )
        _allow_iot(lam, endpoints, function, rule)
        errors = site.subscribe(f"{base}/errors")
        topic = f"{base}/{site.thing_name}/invoke"

        site.publish(topic, {"fn": function, "mode": "crash"})
        site.publish(topic, {"fn": function, "mode": "sleep"})
        # Lambda ran both Event invocations; they failed, as the local cloud's log says.
        failed = f"function={function}"
        _wait_for_log(local_cloud, "the crash", lambda line: failed in line and "Runtime.ExitError" in line)
        timed_out = "Task timed out after 1.00 seconds"
        _wait_for_log(local_cloud, "the time-out", lambda line: failed in line and timed_out in line)

        # The rule's next failure (at invoke time) is the first and only message of its error action.
        missing = site.publish(topic, {"fn": f"{base}-missing", "mode": "crash"})
        body = _error_fields(_only(errors, "the missing function's error")[1])
        assert base64.b64decode(body["base64OriginalPayload"]) == missing
        assert [(f["failedAction"], f["failedResource"]) for f in body["failures"]] == [
            ("LambdaAction", f"{functions}{base}-missing")
        ]
    finally:
        lam.delete_function(FunctionName=function)


# --- CloudWatch actions and AWS/IoT rule metrics -------------------------------------------


@pytest.fixture(scope="module")
def cloudwatch(endpoints):
    return boto_client(endpoints, "cloudwatch")


def _wait_for_alarm(cloudwatch, name: str, state: str) -> dict:
    deadline = time.monotonic() + 30.0
    while True:
        alarm = cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]
        if alarm["StateValue"] == state:
            return alarm
        if time.monotonic() > deadline:
            pytest.fail(f"alarm {name} still {alarm['StateValue']}: {alarm['StateReason']}")
        time.sleep(0.2)


def test_cloudwatch_metric_and_alarm_actions_reach_cloudwatch(iam, cloudwatch, endpoints, site, rules, base):
    role = _role(
        iam,
        "rules-cw",
        IOT_PRINCIPAL,
        [{"Effect": "Allow", "Action": ["cloudwatch:PutMetricData", "cloudwatch:SetAlarmState"], "Resource": "*"}],
    )
    namespace = f"Pump/{base}"
    alarm = f"{base}-trip"
    cloudwatch.put_metric_alarm(
        AlarmName=alarm, MetricName="never", Namespace=namespace, Statistic="Sum", Period=60,
        EvaluationPeriods=1, Threshold=1.0, ComparisonOperator="GreaterThanThreshold",
    )
    rules(
        _rule_name("cw_actions"),
        f"SELECT * FROM '{base}/+/telemetry'",
        [
            {"cloudwatchMetric": {"roleArn": role, "metricNamespace": namespace, "metricName": "${topic(2)}",
                                  "metricValue": "${speedRpm}", "metricUnit": "Count/Second",
                                  "metricTimestamp": "${ts}"}},
            {"cloudwatchAlarm": {"roleArn": role, "alarmName": alarm, "stateValue": "ALARM",
                                 "stateReason": "tripped at ${speedRpm} rpm"}},
        ],
    )
    ts = int(time.time()) - 120
    site.publish(f"{base}/{site.thing_name}/telemetry", {"speedRpm": 1450, "ts": ts})

    tripped = _wait_for_alarm(cloudwatch, alarm, "ALARM")
    assert tripped["StateReason"] == "tripped at 1450 rpm"
    stats = cloudwatch.get_metric_statistics(
        Namespace=namespace, MetricName=site.thing_name,
        StartTime=datetime.datetime.fromtimestamp(ts - 60, datetime.timezone.utc),
        EndTime=datetime.datetime.fromtimestamp(ts + 60, datetime.timezone.utc),
        Period=60, Statistics=["Sum", "SampleCount"],
    )
    assert [(p["Sum"], p["SampleCount"], p["Unit"]) for p in stats["Datapoints"]] == [(1450.0, 1.0, "Count/Second")]
    cloudwatch.delete_alarms(AlarmNames=[alarm])


def test_an_alarm_on_the_failure_metric_goes_to_alarm_when_the_action_fails(
    iam, cloudwatch, endpoints, site, rules, base
):
    powerless = _role(iam, "rules-cw-powerless", IOT_PRINCIPAL, [])
    name = rules(
        _rule_name("cw_failing"),
        f"SELECT * FROM '{base}/+/telemetry'",
        [{"cloudwatchMetric": {"roleArn": powerless, "metricNamespace": f"Pump/{base}", "metricName": "speed",
                               "metricValue": "${speedRpm}", "metricUnit": "None"}}],
    )
    alarm = f"{base}-rule-failing"
    dimensions = [{"Name": "RuleName", "Value": name}, {"Name": "ActionType", "Value": "CloudwatchMetric"}]
    cloudwatch.put_metric_alarm(
        AlarmName=alarm, Namespace="AWS/IoT", MetricName="Failure", Dimensions=dimensions, Statistic="Sum",
        Period=10, EvaluationPeriods=1, Threshold=0.0, ComparisonOperator="GreaterThanThreshold",
        TreatMissingData="notBreaching",
    )
    assert _wait_for_alarm(cloudwatch, alarm, "OK")["StateValue"] == "OK"

    site.publish(f"{base}/{site.thing_name}/telemetry", {"speedRpm": 1450})
    alarmed = _wait_for_alarm(cloudwatch, alarm, "ALARM")
    assert alarmed["StateReason"].startswith("Threshold Crossed: 1 datapoint [1.0 ("), alarmed["StateReason"]
    listed = cloudwatch.list_metrics(Namespace="AWS/IoT", MetricName="Failure", Dimensions=dimensions)["Metrics"]
    assert len(listed) == 1, listed
    cloudwatch.delete_alarms(AlarmNames=[alarm])
