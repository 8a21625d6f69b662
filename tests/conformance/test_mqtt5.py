"""AWS's MQTT 5 client (awscrt `mqtt5`, built with awsiotsdk's
`mqtt5_client_builder.mtls_from_path`) against the local cloud's broker:
CONNACK properties as IoT Core announces them, PUBLISH properties passed
through, shared subscriptions, session resumption, and the reason codes of an
unauthorized PUBLISH and SUBSCRIBE.

Every wait is on a client callback, with a deadline."""

from __future__ import annotations

import json
import threading
from concurrent.futures import Future
from typing import Optional

import pytest
from awscrt import mqtt5
from awsiot import mqtt5_client_builder

from support import EVENT_TIMEOUT_S, Endpoints, Mailbox, provision_device, unique_name


def allow_all_policy(endpoints: Endpoints) -> str:
    return json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}
    )


def restricted_policy(endpoints: Endpoints) -> str:
    """Connect anywhere; publish, subscribe and receive only under `ok/`."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
                {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": endpoints.arn("topic/ok/*")},
                {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": endpoints.arn("topicfilter/ok/*")},
            ],
        }
    )


class Client5:
    """One awscrt MQTT 5 client and what its callbacks reported."""

    def __init__(self, endpoints: Endpoints, device, client_id: str, **options) -> None:
        self.received = Mailbox(client_id)
        self.connected: Future = Future()
        self.stopped = threading.Event()
        self.disconnections: list = []
        self.client = mqtt5_client_builder.mtls_from_path(
            endpoint=endpoints.mqtt_host,
            port=endpoints.mqtt_port,
            cert_filepath=device.cert_path,
            pri_key_filepath=device.key_path,
            ca_filepath=endpoints.ca_file,
            client_id=client_id,
            on_publish_received=lambda data: self.received(data.publish_packet),
            on_lifecycle_connection_success=self._success,
            on_lifecycle_connection_failure=self._failure,
            on_lifecycle_disconnection=lambda data: self.disconnections.append(data),
            on_lifecycle_stopped=lambda data: self.stopped.set(),
            **options,
        )

    def _success(self, data) -> None:
        if not self.connected.done():
            self.connected.set_result(data.connack_packet)

    def _failure(self, data) -> None:
        if not self.connected.done():
            self.connected.set_exception(_Refused(data.connack_packet, data.exception))

    def start(self) -> mqtt5.ConnackPacket:
        self.client.start()
        return self.connected.result(timeout=EVENT_TIMEOUT_S)

    def stop(self) -> None:
        self.client.stop()
        assert self.stopped.wait(EVENT_TIMEOUT_S), "client did not stop"

    def subscribe(self, *filters: str) -> list:
        packet = mqtt5.SubscribePacket(
            subscriptions=[mqtt5.Subscription(topic_filter=f, qos=mqtt5.QoS.AT_LEAST_ONCE) for f in filters]
        )
        return list(self.client.subscribe(packet).result(timeout=EVENT_TIMEOUT_S).reason_codes)

    def publish(self, topic: str, payload: bytes, **props) -> mqtt5.PubackPacket:
        packet = mqtt5.PublishPacket(topic=topic, payload=payload, qos=mqtt5.QoS.AT_LEAST_ONCE, **props)
        return self.client.publish(packet).result(timeout=EVENT_TIMEOUT_S).puback


class _Refused(Exception):
    def __init__(self, connack: Optional[mqtt5.ConnackPacket], error) -> None:
        super().__init__(error)
        self.connack = connack


@pytest.fixture
def open_device(iot, endpoints, tmp_path):
    return provision_device(iot, endpoints, tmp_path, prefix="mqtt5", policy_document=allow_all_policy(endpoints))


@pytest.fixture
def clients():
    started: list[Client5] = []
    yield started
    for c in started:
        c.client.stop()
        c.stopped.wait(EVENT_TIMEOUT_S)


def started(clients: list, client: Client5) -> tuple[Client5, mqtt5.ConnackPacket]:
    clients.append(client)
    return client, client.start()


def test_connack_announces_iot_core_limits_and_features(endpoints, open_device, clients):
    _, connack = started(clients, Client5(endpoints, open_device, unique_name("m5-connack")))
    assert connack.reason_code == mqtt5.ConnectReasonCode.SUCCESS
    assert connack.maximum_qos == mqtt5.QoS.AT_LEAST_ONCE
    assert connack.retain_available is True
    assert connack.receive_maximum == 100
    assert connack.topic_alias_maximum == 8
    assert connack.wildcard_subscriptions_available is True
    assert connack.shared_subscription_available is True
    assert connack.subscription_identifiers_available is False
    assert connack.maximum_packet_size > 128 * 1024


def test_unauthorized_publish_and_subscribe_get_reason_codes(iot, endpoints, tmp_path, clients):
    device = provision_device(iot, endpoints, tmp_path, prefix="mqtt5-limited", policy_document=restricted_policy(endpoints))
    client, _ = started(clients, Client5(endpoints, device, unique_name("m5-limited")))
    assert client.publish("secret/x", b"no").reason_code == mqtt5.PubackReasonCode.NOT_AUTHORIZED
    assert client.publish("ok/x", b"yes").reason_code == mqtt5.PubackReasonCode.SUCCESS, "still connected"
    codes = client.subscribe("ok/a", "secret/a")
    assert codes == [mqtt5.SubackReasonCode.GRANTED_QOS_1, mqtt5.SubackReasonCode.NOT_AUTHORIZED]


def test_connect_not_allowed_by_policy_gets_connack_0x87(iot, endpoints, tmp_path, clients):
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": endpoints.arn("client/only-me")}],
        }
    )
    device = provision_device(iot, endpoints, tmp_path, prefix="mqtt5-conn", policy_document=policy)
    client = Client5(endpoints, device, unique_name("m5-someone-else"))
    clients.append(client)
    with pytest.raises(_Refused) as refused:
        client.start()
    assert refused.value.connack is not None, f"no CONNACK: {refused.value}"
    assert refused.value.connack.reason_code == mqtt5.ConnectReasonCode.NOT_AUTHORIZED


def test_publish_properties_reach_the_subscriber(endpoints, open_device, clients):
    sub, _ = started(clients, Client5(endpoints, open_device, unique_name("m5-sub")))
    pub, _ = started(clients, Client5(endpoints, open_device, unique_name("m5-pub")))
    topic = f"req/{unique_name('t')}"
    assert sub.subscribe(topic) == [mqtt5.SubackReasonCode.GRANTED_QOS_1]
    puback = pub.publish(
        topic,
        b'{"q":1}',
        payload_format_indicator=mqtt5.PayloadFormatIndicator.AWS_MQTT5_PFI_UTF8,
        message_expiry_interval_sec=600,
        response_topic="resp/1",
        correlation_data=b"corr-1",
        content_type="application/json",
        user_properties=[mqtt5.UserProperty(name="k", value="v")],
    )
    assert puback.reason_code == mqtt5.PubackReasonCode.SUCCESS
    got = sub.received.expect("the request", lambda p: p.topic == topic)
    assert got.payload == b'{"q":1}'
    assert got.payload_format_indicator == mqtt5.PayloadFormatIndicator.AWS_MQTT5_PFI_UTF8
    assert 590 <= got.message_expiry_interval_sec <= 600
    assert got.response_topic == "resp/1"
    # awscrt hands correlation data back as str or bytes depending on the version.
    assert got.correlation_data in (b"corr-1", "corr-1")
    assert got.content_type == "application/json"
    assert [(u.name, u.value) for u in got.user_properties] == [("k", "v")]


def test_shared_subscription_gives_each_message_to_one_member(endpoints, open_device, clients):
    group = unique_name("g")
    topic = f"work/{unique_name('t')}"
    members = [started(clients, Client5(endpoints, open_device, unique_name(f"m5-w{i}")))[0] for i in range(2)]
    for m in members:
        assert m.subscribe(f"$share/{group}/{topic}") == [mqtt5.SubackReasonCode.GRANTED_QOS_1]
    pub, _ = started(clients, Client5(endpoints, open_device, unique_name("m5-boss")))
    for i in range(4):
        assert pub.publish(topic, str(i).encode()).reason_code == mqtt5.PubackReasonCode.SUCCESS
    got = []
    for m in members:
        for _ in range(2):
            got.append(m.received.expect("a share of the work").payload)
    assert sorted(got) == [b"0", b"1", b"2", b"3"], "each message once, two per member"


def test_session_resumes_with_its_queued_messages(endpoints, open_device, clients):
    client_id = unique_name("m5-persistent")
    topic = f"away/{unique_name('t')}"
    persistent = dict(
        session_behavior=mqtt5.ClientSessionBehaviorType.REJOIN_ALWAYS,
        session_expiry_interval_sec=600,
    )
    first, connack = started(clients, Client5(endpoints, open_device, client_id, **persistent))
    assert connack.session_present is False
    first.subscribe(topic)
    first.stop()
    pub, _ = started(clients, Client5(endpoints, open_device, unique_name("m5-sender")))
    assert pub.publish(topic, b"kept").reason_code == mqtt5.PubackReasonCode.SUCCESS
    again, connack = started(clients, Client5(endpoints, open_device, client_id, **persistent))
    assert connack.session_present is True
    assert again.received.expect("the message queued while away").payload == b"kept"
