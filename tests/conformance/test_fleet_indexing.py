"""boto3 and awsiotsdk against the local cloud's fleet indexing (botocore's `iot` model):
UpdateIndexingConfiguration and GetIndexingConfiguration with connectivity, a device connected
with awsiotsdk that SearchIndex finds connected and then disconnected with the lifecycle event's
reason, paging with maxResults and nextToken, GetStatistics, a fleet metric counting disconnected
things that CloudWatch receives in `IoTFleetMetrics` and an alarm on it that goes to ALARM while the
device is away and back to OK when it reconnects (conftest divides fleet-metric periods by 60 and
evaluates alarms every half second), the fleet-metric control plane, and the errors botocore raises
(InvalidQueryException, InvalidRequestException, ResourceAlreadyExistsException,
VersionConflictException, ResourceNotFoundException)."""

from __future__ import annotations

import time

import pytest
from botocore.exceptions import ClientError

from support import ConnectionEvents, boto_client, connect_device, provision_device, unique_name

DEADLINE_S = 40.0


def _error(excinfo) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def _poll(what: str, look, done):
    """Calls `look` until `done` holds for what it returns, or fails after the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        seen = look()
        if done(seen):
            return seen
        if time.monotonic() > deadline:
            pytest.fail(f"never saw {what} within {DEADLINE_S:.0f} s: last {seen!r}")
        time.sleep(0.2)


def _document(iot, thing: str) -> dict | None:
    things = iot.search_index(indexName="AWS_Things", queryString=f"thingName:{thing}")["things"]
    return things[0] if things else None


def _connectivity(iot, thing: str) -> dict:
    return (_document(iot, thing) or {}).get("connectivity", {})


@pytest.fixture(scope="module")
def indexed(iot):
    iot.update_indexing_configuration(
        thingIndexingConfiguration={"thingIndexingMode": "REGISTRY", "thingConnectivityIndexingMode": "STATUS"}
    )
    return iot


def test_indexing_configuration_round_trips_and_refuses_shadows(indexed):
    config = indexed.get_indexing_configuration()
    assert config["thingIndexingConfiguration"]["thingIndexingMode"] == "REGISTRY"
    assert config["thingIndexingConfiguration"]["thingConnectivityIndexingMode"] == "STATUS"
    with pytest.raises(ClientError) as e:
        indexed.update_indexing_configuration(thingIndexingConfiguration={"thingIndexingMode": "REGISTRY_AND_SHADOW"})
    assert _error(e) == ("InvalidRequestException", 400)
    with pytest.raises(ClientError) as e:
        indexed.update_indexing_configuration(thingIndexingConfiguration={"thingIndexingMode": "EVERYTHING"})
    assert _error(e) == ("InvalidRequestException", 400)
    assert "EVERYTHING" in e.value.response["Error"]["Message"]
    assert indexed.get_indexing_configuration()["thingIndexingConfiguration"]["thingIndexingMode"] == "REGISTRY"
    assert "AWS_Things" in indexed.list_indices()["indexNames"]
    described = indexed.describe_index(indexName="AWS_Things")
    assert (described["indexStatus"], described["schema"]) == ("ACTIVE", "REGISTRY_AND_CONNECTIVITY_STATUS")


def test_a_device_is_searched_connected_then_disconnected_and_alarmed(indexed, endpoints, tmp_path):
    iot = indexed
    device = provision_device(iot, endpoints, tmp_path / "core")
    iot.update_thing(thingName=device.thing_name, attributePayload={"attributes": {"role": "core"}})
    never = _document(iot, device.thing_name)
    assert never["thingId"] and never["attributes"] == {"role": "core"}
    assert never["connectivity"] == {"connected": False}

    connection = connect_device(endpoints, device, ConnectionEvents())
    seen = _poll("the device connected", lambda: _connectivity(iot, device.thing_name), lambda c: c.get("connected"))
    connected_at = seen["timestamp"]
    assert "disconnectReason" not in seen

    metric = unique_name("disconnected")
    created = iot.create_fleet_metric(
        metricName=metric,
        queryString=f"connectivity.connected:false AND thingName:{device.thing_name}",
        aggregationType={"name": "Statistics", "values": ["count"]},
        aggregationField="registry.version",
        period=60,
        indexName="AWS_Things",
    )
    assert created["metricArn"] == endpoints.arn(f"fleetmetric/{metric}")
    cw = boto_client(endpoints, "cloudwatch")
    alarm = unique_name("core-down")
    cw.put_metric_alarm(
        AlarmName=alarm,
        Namespace="IoTFleetMetrics",
        MetricName=metric,
        Dimensions=[{"Name": "Aggregation Type", "Value": "count"}],
        Statistic="Maximum",
        Period=10,
        EvaluationPeriods=1,
        Threshold=1.0,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )

    def state():
        return cw.describe_alarms(AlarmNames=[alarm])["MetricAlarms"][0]["StateValue"]

    _poll("the alarm OK while the device is connected", state, lambda s: s == "OK")
    connection.disconnect().result(timeout=5)
    gone = _poll("the device disconnected", lambda: _connectivity(iot, device.thing_name), lambda c: c.get("connected") is False)
    assert gone["disconnectReason"] == "CLIENT_INITIATED_DISCONNECT"
    assert gone["timestamp"] >= connected_at
    _poll("the alarm in ALARM while the device is away", state, lambda s: s == "ALARM")
    points = cw.get_metric_statistics(
        Namespace="IoTFleetMetrics",
        MetricName=metric,
        Dimensions=[{"Name": "Aggregation Type", "Value": "count"}],
        StartTime=time.time() - 300,
        EndTime=time.time() + 60,
        Period=60,
        Statistics=["Maximum", "Minimum"],
    )["Datapoints"]
    assert max(p["Maximum"] for p in points) == 1.0 and min(p["Minimum"] for p in points) == 0.0

    again = connect_device(endpoints, device, ConnectionEvents())
    try:
        _poll("the device connected again", lambda: _connectivity(iot, device.thing_name), lambda c: c.get("connected"))
        _poll("the alarm back to OK after the reconnect", state, lambda s: s == "OK")
    finally:
        again.disconnect().result(timeout=5)
        iot.delete_fleet_metric(metricName=metric)
        cw.delete_alarms(AlarmNames=[alarm])


def test_search_pages_and_statistics(indexed, endpoints, tmp_path):
    iot = indexed
    prefix = unique_name("paged")
    names = [f"{prefix}-{i}" for i in range(5)]
    for name in names:
        iot.create_thing(thingName=name, attributePayload={"attributes": {"batch": prefix}})
    seen, token, pages = [], None, 0
    while True:
        kwargs = {"indexName": "AWS_Things", "queryString": f"attributes.batch:{prefix}", "maxResults": 2}
        if token:
            kwargs["nextToken"] = token
        out = iot.search_index(**kwargs)
        seen += [t["thingName"] for t in out["things"]]
        pages += 1
        token = out.get("nextToken")
        if not token:
            break
    assert (seen, pages) == (names, 3)
    wild = iot.search_index(queryString=f"thingName:{prefix}-? AND NOT thingName:*-4")["things"]
    assert [t["thingName"] for t in wild] == names[:4]
    stats = iot.get_statistics(queryString=f"attributes.batch:{prefix}", aggregationField="registry.version")
    assert stats["statistics"]["count"] == 5


@pytest.mark.parametrize(
    "query",
    ["thingName:(", "thingName:x AND", "shadow.reported.mode:auto", "connectivity.connected:maybe", "no-field"],
)
def test_a_query_it_cannot_read_is_an_invalid_query(indexed, query):
    with pytest.raises(ClientError) as e:
        indexed.search_index(queryString=query)
    assert _error(e) == ("InvalidQueryException", 400)
    assert e.value.response["Error"]["Message"]


def test_fleet_metric_control_plane_and_errors(indexed):
    iot = indexed
    name = unique_name("fm")
    spec = dict(
        queryString="thingName:*",
        aggregationType={"name": "Statistics", "values": ["count"]},
        aggregationField="registry.version",
        period=60,
    )
    iot.create_fleet_metric(metricName=name, **spec)
    with pytest.raises(ClientError) as e:
        iot.create_fleet_metric(metricName=name, **spec)
    assert _error(e) == ("ResourceAlreadyExistsException", 409)
    with pytest.raises(ClientError) as e:
        iot.create_fleet_metric(metricName=unique_name("fm"), **{**spec, "queryString": "thingName:("})
    assert _error(e) == ("InvalidQueryException", 400)
    with pytest.raises(ClientError) as e:
        iot.create_fleet_metric(metricName=unique_name("fm"), **{**spec, "period": 90})
    assert _error(e) == ("InvalidRequestException", 400)
    with pytest.raises(ClientError) as e:
        iot.create_fleet_metric(
            metricName=unique_name("fm"), **{**spec, "aggregationType": {"name": "Cardinality", "values": ["count"]}}
        )
    assert _error(e) == ("InvalidAggregationException", 400)

    iot.update_fleet_metric(metricName=name, indexName="AWS_Things", period=120, expectedVersion=1)
    described = iot.describe_fleet_metric(metricName=name)
    assert (described["period"], described["version"], described["aggregationField"]) == (120, 2, "registry.version")
    with pytest.raises(ClientError) as e:
        iot.update_fleet_metric(metricName=name, indexName="AWS_Things", expectedVersion=1)
    assert _error(e) == ("VersionConflictException", 409)
    assert name in [m["metricName"] for m in iot.list_fleet_metrics()["fleetMetrics"]]
    iot.delete_fleet_metric(metricName=name)
    with pytest.raises(ClientError) as e:
        iot.describe_fleet_metric(metricName=name)
    assert _error(e) == ("ResourceNotFoundException", 404)
