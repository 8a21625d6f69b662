"""Lifecycle events ("Lifecycle events" in the AWS IoT Core Developer Guide)
seen through AWS's own clients: an awsiotsdk MQTT 3.1.1 observer subscribed to
`$aws/events/#` watches another awsiotsdk connection (MQTT 3.1.1, then the
MQTT 5 client) come, subscribe, unsubscribe and go; boto3 `iot` switches job events on with
update_event_configurations and reads them back with
describe_event_configurations.

Every wait is on a subscription callback, with a deadline."""

from __future__ import annotations

import json

from awscrt import mqtt, mqtt5

from support import ConnectionEvents, Mailbox, connect_device, provision_device, unique_name

ALLOW_ALL = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]})


def _observer(iot, endpoints, tmp_path, connect):
    device = provision_device(iot, endpoints, tmp_path / "observer", prefix="ev-obs", policy_document=ALLOW_ALL)
    connection = connect(device)
    events = Mailbox("observer")

    def on_message(topic, payload, **kwargs):
        events((topic, json.loads(payload)))

    subscribed, _ = connection.subscribe("$aws/events/#", mqtt.QoS.AT_LEAST_ONCE, on_message)
    subscribed.result(timeout=10)
    return events


def _about(client_id: str, kind: str):
    return lambda item: item[0].endswith(f"/{kind}/{client_id}") and item[1].get("clientId") == client_id


def test_presence_and_subscription_events_follow_a_connection(iot, endpoints, tmp_path, connect):
    events = _observer(iot, endpoints, tmp_path, connect)
    device = provision_device(iot, endpoints, tmp_path / "dev", prefix="ev-dev", policy_document=ALLOW_ALL)
    client_id = unique_name("ev-client")

    connection = connect_device(endpoints, device, ConnectionEvents(), client_id=client_id)
    sub, _ = connection.subscribe("ev/topic", mqtt.QoS.AT_LEAST_ONCE, lambda **kwargs: None)
    sub.result(timeout=10)
    unsub, _ = connection.unsubscribe("ev/topic")
    unsub.result(timeout=10)
    connection.disconnect().result(timeout=10)

    topic, connected = events.expect("connected", _about(client_id, "connected"))
    assert topic == f"$aws/events/presence/connected/{client_id}"
    assert connected["eventType"] == "connected"
    assert connected["principalIdentifier"] == device.certificate_id
    assert connected["ipAddress"] == "127.0.0.1"
    assert isinstance(connected["versionNumber"], int)
    assert connected["sessionIdentifier"]

    _, subscribed = events.expect("subscribed", _about(client_id, "subscribed"))
    assert subscribed["topics"] == ["ev/topic"]
    _, unsubscribed = events.expect("unsubscribed", _about(client_id, "unsubscribed"))
    assert unsubscribed["topics"] == ["ev/topic"]

    topic, disconnected = events.expect("disconnected", _about(client_id, "disconnected"))
    assert topic == f"$aws/events/presence/disconnected/{client_id}"
    assert disconnected["disconnectReason"] == "CLIENT_INITIATED_DISCONNECT"
    assert disconnected["clientInitiatedDisconnect"] is True
    assert disconnected["versionNumber"] == connected["versionNumber"]


def test_event_configurations_are_updated_and_described_with_boto3(iot):
    described = iot.describe_event_configurations()
    assert set(described["eventConfigurations"]) >= {"JOB", "JOB_EXECUTION", "THING"}

    iot.update_event_configurations(eventConfigurations={"JOB_EXECUTION": {"Enabled": True}})
    described = iot.describe_event_configurations()
    assert described["eventConfigurations"]["JOB_EXECUTION"] == {"Enabled": True}
    assert described["lastModifiedDate"] >= described["creationDate"]

    iot.update_event_configurations(eventConfigurations={"JOB_EXECUTION": {"Enabled": False}})
    assert iot.describe_event_configurations()["eventConfigurations"]["JOB_EXECUTION"] == {"Enabled": False}


def test_an_mqtt5_client_gets_the_same_events(iot, endpoints, tmp_path, connect):
    from test_mqtt5 import Client5  # awsiotsdk's MQTT 5 client, as the MQTT 5 suite drives it

    events = _observer(iot, endpoints, tmp_path, connect)
    device = provision_device(iot, endpoints, tmp_path / "dev5", prefix="ev-dev5", policy_document=ALLOW_ALL)
    client_id = unique_name("ev-client5")
    client = Client5(endpoints, device, client_id)
    try:
        client.start()
        client.subscribe("ev5/topic")
    finally:
        # stop() alone closes the socket without DISCONNECT (that is CONNECTION_LOST).
        client.client.stop(mqtt5.DisconnectPacket())
        assert client.stopped.wait(10), "client did not stop"

    _, connected = events.expect("connected", _about(client_id, "connected"))
    _, subscribed = events.expect("subscribed", _about(client_id, "subscribed"))
    assert subscribed["topics"] == ["ev5/topic"]
    _, disconnected = events.expect("disconnected", _about(client_id, "disconnected"))
    assert disconnected["disconnectReason"] == "CLIENT_INITIATED_DISCONNECT"
    assert disconnected["versionNumber"] == connected["versionNumber"]
