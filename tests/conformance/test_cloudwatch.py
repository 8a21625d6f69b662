"""boto3 against the local cloud's CloudWatch (botocore's `cloudwatch` model, which picks Smithy
RPC v2 CBOR): PutMetricData in its three forms (Value, Values with Counts, StatisticValues),
GetMetricStatistics and GetMetricData per period and statistic, ListMetrics with dimension
filters, and an alarm that PutMetricAlarm creates in INSUFFICIENT_DATA, that goes to ALARM
after breaching data and back to OK after good data (the local cloud evaluates alarms every
`LOCAL_CLOUD_ALARM_EVALUATION_INTERVAL_MS`, which conftest shortens), DescribeAlarms by state,
SetAlarmState, DescribeAlarmHistory, DeleteAlarms, and CloudWatch's query-compatible error codes
as botocore raises them.

AWS IoT's own metrics in `AWS/IoT` ("AWS IoT metrics and dimensions"), read back with
GetMetricStatistics: a publish the device's policy refuses counts in `PublishIn.AuthError`, a
certificate that fails authentication (not ACTIVE, or not issued by the CA) in
`Connection.AuthNError`, both with dimension `Protocol` = `MQTT`, and the data plane's Publish in
`PublishIn.Success` / `PublishIn.ClientError` with `Protocol` = `HTTP` (conftest shortens the flush
interval, `LOCAL_CLOUD_IOT_METRICS_INTERVAL_MS`, from AWS's minute)."""

from __future__ import annotations

import copy
import socket
import ssl
import subprocess
import time
from datetime import datetime, timedelta, timezone

import boto3
import botocore.session
import pytest
from awscrt import mqtt
from botocore.exceptions import ClientError

from support import (
    EVENT_TIMEOUT_S,
    ConnectionEvents,
    boto_client,
    connack_return_code,
    connect_device,
    provision_device,
    unique_name,
)

ALARM_DEADLINE_S = 40.0


def _error(excinfo) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def _even_minute(now: datetime) -> datetime:
    """The start of the two-minute period (periods are aligned to the epoch) holding `now`."""
    seconds = int(now.timestamp())
    return datetime.fromtimestamp(seconds - seconds % 120, timezone.utc)


def test_metric_data_comes_back_per_period_and_statistic(endpoints):
    cw = boto_client(endpoints, "cloudwatch")
    namespace = unique_name("Conformance")
    dims = [{"Name": "thing", "Value": "pump-1"}]
    base = _even_minute(datetime.now(timezone.utc)) - timedelta(minutes=10)
    cw.put_metric_data(
        Namespace=namespace,
        MetricData=[
            {"MetricName": "rpm", "Dimensions": dims, "Timestamp": base + timedelta(seconds=5), "Value": 10.0, "Unit": "Count"},
            {
                "MetricName": "rpm",
                "Dimensions": dims,
                "Timestamp": base + timedelta(seconds=30),
                "Values": [20.0, 40.0],
                "Counts": [1.0, 2.0],
                "Unit": "Count",
            },
            {
                "MetricName": "rpm",
                "Dimensions": dims,
                "Timestamp": base + timedelta(minutes=1, seconds=10),
                "StatisticValues": {"SampleCount": 4, "Sum": 400, "Minimum": 50, "Maximum": 150},
                "Unit": "Count",
            },
            {"MetricName": "temp", "Dimensions": [{"Name": "thing", "Value": "pump-2"}], "Value": 1.0},
        ],
    )

    stats = cw.get_metric_statistics(
        Namespace=namespace,
        MetricName="rpm",
        Dimensions=dims,
        StartTime=base,
        EndTime=base + timedelta(minutes=2),
        Period=60,
        Statistics=["SampleCount", "Average", "Sum", "Minimum", "Maximum"],
    )
    points = sorted(stats["Datapoints"], key=lambda p: p["Timestamp"])
    assert stats["Label"] == "rpm"
    assert [p["Timestamp"] for p in points] == [base, base + timedelta(minutes=1)]
    first, second = points
    assert (first["SampleCount"], first["Sum"], first["Minimum"], first["Maximum"]) == (4.0, 110.0, 10.0, 40.0)
    assert first["Average"] == pytest.approx(27.5)
    assert first["Unit"] == "Count"
    assert (second["SampleCount"], second["Average"], second["Maximum"]) == (4.0, 100.0, 150.0)

    data = cw.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "maxrpm",
                "MetricStat": {
                    "Metric": {"Namespace": namespace, "MetricName": "rpm", "Dimensions": dims},
                    "Period": 60,
                    "Stat": "Maximum",
                },
                "Label": "max rpm",
            },
            {
                "Id": "count",
                "MetricStat": {
                    "Metric": {"Namespace": namespace, "MetricName": "rpm", "Dimensions": dims},
                    "Period": 120,
                    "Stat": "SampleCount",
                },
            },
        ],
        StartTime=base,
        EndTime=base + timedelta(minutes=2),
        ScanBy="TimestampAscending",
    )
    by_id = {r["Id"]: r for r in data["MetricDataResults"]}
    assert by_id["maxrpm"]["Label"] == "max rpm"
    assert by_id["maxrpm"]["Timestamps"] == [base, base + timedelta(minutes=1)]
    assert by_id["maxrpm"]["Values"] == [40.0, 150.0]
    assert by_id["maxrpm"]["StatusCode"] == "Complete"
    assert by_id["count"]["Values"] == [8.0]

    listed = cw.list_metrics(Namespace=namespace)["Metrics"]
    assert sorted(m["MetricName"] for m in listed) == ["rpm", "temp"]
    filtered = cw.list_metrics(Namespace=namespace, Dimensions=[{"Name": "thing", "Value": "pump-2"}])["Metrics"]
    assert filtered == [{"Namespace": namespace, "MetricName": "temp", "Dimensions": [{"Name": "thing", "Value": "pump-2"}]}]
    pages = cw.get_paginator("list_metrics").paginate(Namespace=namespace, RecentlyActive="PT3H")
    assert sum(len(page["Metrics"]) for page in pages) == 2

    with pytest.raises(ClientError) as excinfo:
        cw.put_metric_data(Namespace=namespace, MetricData=[{"MetricName": "rpm", "Value": 1.0, "Unit": "Furlongs"}])
    assert _error(excinfo) == ("InvalidParameterValue", 400)
    with pytest.raises(ClientError) as excinfo:
        cw.put_metric_data(Namespace=namespace, MetricData=[{"MetricName": "rpm", "Value": 1.0, "Values": [1.0]}])
    assert _error(excinfo) == ("InvalidParameterCombination", 400)
    with pytest.raises(ClientError) as excinfo:
        cw.get_metric_statistics(
            Namespace=namespace, MetricName="rpm", StartTime=base, EndTime=base + timedelta(minutes=1), Period=45,
            Statistics=["Average"],
        )
    assert _error(excinfo) == ("InvalidParameterValue", 400)
    with pytest.raises(ClientError) as excinfo:
        cw.get_metric_data(
            MetricDataQueries=[{"Id": "e1", "Expression": "SUM(METRICS())"}],
            StartTime=base,
            EndTime=base + timedelta(minutes=1),
        )
    assert _error(excinfo) == ("InvalidParameterValue", 400)
    assert "expressions" in excinfo.value.response["Error"]["Message"]


def _alarm(cw, name: str) -> dict:
    alarms = cw.describe_alarms(AlarmNames=[name])["MetricAlarms"]
    assert len(alarms) == 1, alarms
    return alarms[0]


def _wait_for_state(cw, name: str, state: str, keep_putting=None) -> dict:
    """Polls the alarm until it is in `state` or the deadline passes; `keep_putting` is called
    between polls (a device that keeps reporting)."""
    deadline = time.monotonic() + ALARM_DEADLINE_S
    while True:
        alarm = _alarm(cw, name)
        if alarm["StateValue"] == state:
            return alarm
        if time.monotonic() > deadline:
            pytest.fail(f"alarm {name} still {alarm['StateValue']} ({alarm['StateReason']}) after {ALARM_DEADLINE_S:.0f} s")
        if keep_putting:
            keep_putting()
        time.sleep(0.5)


def test_an_alarm_goes_to_alarm_on_breaching_data_and_back_to_ok(endpoints):
    cw = boto_client(endpoints, "cloudwatch")
    namespace = unique_name("Conformance")
    name = unique_name("high-rpm")
    dims = [{"Name": "thing", "Value": "pump-1"}]
    topic = f"arn:aws:sns:{endpoints.region}:{endpoints.account_id}:ops"
    cw.put_metric_alarm(
        AlarmName=name,
        AlarmDescription="pump over speed",
        MetricName="rpm",
        Namespace=namespace,
        Dimensions=dims,
        Statistic="Maximum",
        Period=10,
        EvaluationPeriods=1,
        Threshold=50.0,
        ComparisonOperator="GreaterThanThreshold",
        TreatMissingData="missing",
        AlarmActions=[topic],
    )
    alarm = _alarm(cw, name)
    assert alarm["AlarmArn"] == f"arn:aws:cloudwatch:{endpoints.region}:{endpoints.account_id}:alarm:{name}"
    assert alarm["AlarmActions"] == [topic]
    assert (alarm["Period"], alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (10, 1, 1)
    assert alarm["StateValue"] == "INSUFFICIENT_DATA"
    assert isinstance(alarm["StateUpdatedTimestamp"], datetime)

    def put(value: float):
        cw.put_metric_data(Namespace=namespace, MetricData=[{"MetricName": "rpm", "Dimensions": dims, "Value": value}])

    put(90.0)
    alarmed = _wait_for_state(cw, name, "ALARM")
    assert alarmed["StateReason"].startswith("Threshold Crossed: 1 datapoint [90.0 ("), alarmed["StateReason"]
    assert alarmed["StateReason"].endswith("was greater than the threshold (50.0)."), alarmed["StateReason"]
    assert name in [a["AlarmName"] for a in cw.describe_alarms(StateValue="ALARM")["MetricAlarms"]]

    ok = _wait_for_state(cw, name, "OK", keep_putting=lambda: put(10.0))
    assert "was not greater than the threshold (50.0)" in ok["StateReason"]
    assert ok["StateUpdatedTimestamp"] >= alarmed["StateUpdatedTimestamp"]
    assert name not in [a["AlarmName"] for a in cw.describe_alarms(StateValue="ALARM")["MetricAlarms"]]

    history = cw.describe_alarm_history(AlarmName=name, HistoryItemType="StateUpdate")["AlarmHistoryItems"]
    assert [h["HistorySummary"] for h in history][:2] == ["Alarm updated from ALARM to OK", "Alarm updated from INSUFFICIENT_DATA to ALARM"]

    # Breaching data first, so the next evaluation agrees with the state set by hand and keeps it.
    put(90.0)
    cw.set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="drill")
    assert _alarm(cw, name)["StateReason"] == "drill"
    with pytest.raises(ClientError) as excinfo:
        cw.set_alarm_state(AlarmName=unique_name("missing"), StateValue="OK", StateReason="x")
    assert _error(excinfo) == ("ResourceNotFound", 404)
    with pytest.raises(ClientError) as excinfo:
        cw.put_metric_alarm(
            AlarmName=name, MetricName="rpm", Namespace=namespace, Statistic="Maximum", Period=10,
            EvaluationPeriods=1, DatapointsToAlarm=2, Threshold=1.0, ComparisonOperator="GreaterThanThreshold",
        )
    assert _error(excinfo) == ("InvalidParameterValue", 400)
    cw.delete_alarms(AlarmNames=[name])
    assert cw.describe_alarms(AlarmNames=[name])["MetricAlarms"] == []


def test_a_wrong_secret_is_refused_in_cbor(endpoints):
    cw = boto_client(endpoints, "cloudwatch", access_key_id=endpoints.access_key_id, secret_access_key="wrong")
    with pytest.raises(ClientError) as excinfo:
        cw.list_metrics()
    assert _error(excinfo) == ("SignatureDoesNotMatch", 403)


def _json_client(endpoints):
    """A boto3 `cloudwatch` client whose model offers only AWS JSON 1.0 (the model's second
    protocol), so botocore sends `X-Amz-Target` and JSON instead of CBOR."""
    session = botocore.session.get_session()
    loader = session.get_component("data_loader")
    load = loader.load_service_model

    def json_only(name, type_name, api_version=None):
        model = load(name, type_name, api_version)
        if name == "cloudwatch" and type_name == "service-2":
            model = copy.deepcopy(model)
            model["metadata"]["protocol"] = "json"
            model["metadata"]["protocols"] = ["json"]
        return model

    loader.load_service_model = json_only
    boto = boto3.session.Session(
        botocore_session=session,
        aws_access_key_id=endpoints.access_key_id,
        aws_secret_access_key=endpoints.secret_access_key,
        region_name=endpoints.region,
    )
    return boto.client("cloudwatch", endpoint_url=endpoints.http)


def test_aws_json_reaches_the_same_metrics(endpoints):
    cw_json = _json_client(endpoints)
    assert cw_json.meta.service_model.protocol == "json"
    namespace = unique_name("Conformance")
    cw_json.put_metric_data(Namespace=namespace, MetricData=[{"MetricName": "rpm", "Value": 3.0, "Unit": "Count"}])
    now = datetime.now(timezone.utc)
    window = {"StartTime": now - timedelta(minutes=5), "EndTime": now + timedelta(minutes=1)}
    cbor = boto_client(endpoints, "cloudwatch")
    for client in (cw_json, cbor):
        points = client.get_metric_statistics(
            Namespace=namespace, MetricName="rpm", Period=60, Statistics=["Sum"], **window
        )["Datapoints"]
        assert [(p["Sum"], p["Unit"]) for p in points] == [(3.0, "Count")]
    with pytest.raises(ClientError) as excinfo:
        cw_json.put_metric_data(Namespace="AWS/EC2", MetricData=[{"MetricName": "rpm", "Value": 1.0}])
    assert _error(excinfo) == ("InvalidParameterValue", 400)


# --- AWS/IoT metrics ---------------------------------------------------------------------------

METRIC_DEADLINE_S = 20.0


def _iot_sum(cw, metric: str, since: datetime, protocol: str = "MQTT") -> float:
    """The `Sum` of an `AWS/IoT` protocol metric (dimension `Protocol`) since `since`, per second."""
    stats = cw.get_metric_statistics(
        Namespace="AWS/IoT",
        MetricName=metric,
        Dimensions=[{"Name": "Protocol", "Value": protocol}],
        StartTime=since,
        EndTime=datetime.now(timezone.utc) + timedelta(minutes=1),
        Period=1,
        Statistics=["Sum"],
    )
    return sum(p["Sum"] for p in stats["Datapoints"])


def _wait_for_iot_sum(cw, metric: str, since: datetime, at_least: float, protocol: str = "MQTT") -> float:
    deadline = time.monotonic() + METRIC_DEADLINE_S
    while True:
        total = _iot_sum(cw, metric, since, protocol)
        if total >= at_least:
            return total
        if time.monotonic() > deadline:
            pytest.fail(f"AWS/IoT {metric} is {total} after {METRIC_DEADLINE_S:.0f} s, expected at least {at_least}")
        time.sleep(0.2)


def _since() -> datetime:
    """Now, to the second below (datapoints are stored with the flush's time)."""
    return datetime.fromtimestamp(int(time.time()), timezone.utc)


def test_a_publish_the_policy_refuses_counts_in_publish_in_auth_error(endpoints, iot, tmp_path):
    cw = boto_client(endpoints, "cloudwatch")
    device = provision_device(iot, endpoints, tmp_path / "refused")  # may publish to its shadow only
    since = _since()
    events = ConnectionEvents()
    connection = connect_device(endpoints, device, events)
    try:
        published, _ = connection.publish(f"dt/pump/{device.thing_name}/telemetry", b"{}", mqtt.QoS.AT_MOST_ONCE)
        published.result(timeout=EVENT_TIMEOUT_S)
        # MQTT 3.1.1 has no negative PUBACK: IoT Core closes the connection.
        assert events.interrupted.wait(EVENT_TIMEOUT_S) or events.closed.wait(EVENT_TIMEOUT_S)
    finally:
        try:
            connection.disconnect().result(timeout=5)
        except Exception:  # already dropped by the broker
            pass
    assert _wait_for_iot_sum(cw, "PublishIn.AuthError", since, 1) >= 1
    assert _iot_sum(cw, "Connect.Success", since) >= 1
    listed = cw.list_metrics(Namespace="AWS/IoT", MetricName="PublishIn.AuthError")["Metrics"]
    assert {"Name": "Protocol", "Value": "MQTT"} in listed[0]["Dimensions"]


def test_a_certificate_that_fails_authentication_counts_in_connection_authn_error(endpoints, iot, tmp_path):
    cw = boto_client(endpoints, "cloudwatch")
    device = provision_device(iot, endpoints, tmp_path / "inactive")
    iot.update_certificate(certificateId=device.certificate_id, newStatus="INACTIVE")
    since = _since()
    assert connack_return_code(endpoints, device) == 5
    assert _wait_for_iot_sum(cw, "Connection.AuthNError", since, 1) >= 1

    # A certificate the local CA did not issue fails the TLS handshake itself.
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(stranger / "key.pem"), "-out", str(stranger / "cert.pem"), "-days", "1", "-subj", "/CN=stranger"],
        check=True, capture_output=True,
    )
    before = _iot_sum(cw, "Connection.AuthNError", since)
    context = ssl.create_default_context(cafile=endpoints.ca_file)
    context.load_cert_chain(str(stranger / "cert.pem"), str(stranger / "key.pem"))
    with socket.create_connection((endpoints.mqtt_host, endpoints.mqtt_port), timeout=EVENT_TIMEOUT_S) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=endpoints.mqtt_host) as tls:
                tls.sendall(b"\x10\x00")  # TLS 1.3: the refusal arrives after the client's first write
                assert tls.recv(4) == b""
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            pass  # refused in the handshake
    assert _wait_for_iot_sum(cw, "Connection.AuthNError", since, before + 1) >= before + 1


def test_a_data_plane_publish_counts_with_protocol_http(endpoints, iot_data):
    cw = boto_client(endpoints, "cloudwatch")
    since = _since()
    iot_data.publish(topic=unique_name("dt/http"), qos=0, payload=b"{}")
    with pytest.raises(ClientError):
        iot_data.publish(topic="dt/" + "/".join(["x"] * 8), qos=0, payload=b"{}")  # more than 7 slashes
    assert _wait_for_iot_sum(cw, "PublishIn.Success", since, 1, protocol="HTTP") >= 1
    assert _wait_for_iot_sum(cw, "PublishIn.ClientError", since, 1, protocol="HTTP") >= 1
