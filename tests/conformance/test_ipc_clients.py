"""The simulated Greengrass core judged by AWS's own IPC clients.

Two components, started by `device-sim core` from their recipes like any
other, perform Greengrass IPC operations and report what they saw:

- `components/python-client`: awsiotsdk's `GreengrassCoreIPCClientV2`;
- `components/gg-sdk-client`: the Rust crate `aws-greengrass-component-sdk`
  (C underneath).

Each report is compared with what the Greengrass nucleus answers, as the
Greengrass developer guide ("Use interprocess communication") describes it and
each SDK maps it: values, shadow versions, error shapes. With the IoT Core
bridge, PublishToIoTCore from both clients must reach the local cloud, and the
MQTT 5 members of the Python client's request must reach an MQTT 5 subscriber.
"""

from __future__ import annotations

import json

import pytest
from awscrt import mqtt, mqtt5

from simcore import (
    COMPONENTS_DIR,
    REPO_ROOT,
    CloudLink,
    Component,
    binary_from_env,
)
from test_mqtt5 import Client5
from support import EVENT_TIMEOUT_S, ConnectionEvents, Device, Mailbox, provision_device, unique_name

PYTHON_CLIENT = "com.example.conformance.PythonIpcClient"
GG_SDK_CLIENT = "com.example.conformance.GgSdkClient"
VERSION = "1.0.0"
DEPLOYED_VALUE = "merged by the deployment"
# What the simulated core answers PublishToIoTCore with when it has no IoT Core bridge
# (started without `--cloud`): the modelled ServiceError, with this message.
NO_BRIDGE_MESSAGE = "no connection to AWS IoT Core is configured on this core"


def deployment_merge(name: str) -> dict:
    """The `--update-config` that merges `deployed` into `name`'s configuration."""
    return {name: {"MERGE": {"deployed": DEPLOYED_VALUE}}}


def python_component() -> Component:
    d = COMPONENTS_DIR / "python-client"
    return Component(PYTHON_CLIENT, VERSION, d / "recipe.yaml", (d / "component.py",))


def gg_sdk_component() -> Component:
    binary = binary_from_env(
        "GG_SDK_CLIENT_BIN",
        REPO_ROOT / "target" / "debug" / "gg-sdk-client",
        "build it with `cargo build --manifest-path tests/conformance/components/gg-sdk-client/Cargo.toml` "
        "(needs libclang: Debian/Ubuntu `apt-get install libclang-dev`; scripts/test.sh does both)",
    )
    d = COMPONENTS_DIR / "gg-sdk-client"
    return Component(GG_SDK_CLIENT, VERSION, d / "recipe.yaml", (binary,))


def ok(steps: dict, name: str):
    """The value of a step that must have succeeded."""
    assert name in steps, f"step {name} missing from the report: {sorted(steps)}"
    step = steps[name]
    assert step.get("ok") is True, f"{name} failed: {json.dumps(step)}"
    return step.get("value")


def failed(steps: dict, name: str) -> dict:
    """The error of a step that must have failed."""
    assert name in steps, f"step {name} missing from the report: {sorted(steps)}"
    step = steps[name]
    assert step.get("ok") is False, f"{name} should have failed: {json.dumps(step)}"
    return step["error"]


def assert_shadow_round_trip(steps: dict, shadow: str) -> None:
    """Two updates of a fresh named shadow, a get, the list, a delete, a get: the same rules
    as the Device Shadow service (version 1 then 2, reported state echoed, no delta)."""
    first = ok(steps, "UpdateThingShadow.first")
    second = ok(steps, "UpdateThingShadow.second")
    nonce = first["state"]["reported"]["nonce"]
    assert first["state"] == {"reported": {"nonce": nonce, "status": "starting"}}, first
    assert second["state"] == {"reported": {"nonce": nonce, "status": "ok"}}, second
    assert first["version"] == 1 and second["version"] == 2, (first, second)
    assert second["timestamp"] >= first["timestamp"], (first, second)
    assert set(second["metadata"]["reported"]) == {"nonce", "status"}, second

    got = ok(steps, "GetThingShadow")
    assert got["state"] == {"reported": {"nonce": nonce, "status": "ok"}}, got
    assert got["version"] == 2, got
    assert "delta" not in got["state"], got

    assert shadow in ok(steps, "ListNamedShadowsForThing")
    ok(steps, "DeleteThingShadow")


@pytest.fixture(scope="class")
def python_report(class_simulated_core):
    """The Python component's report and the core's thing name. One core per class: the
    component runs once, each test checks part of its report."""
    core = class_simulated_core(
        unique_name("gg-core"), [python_component()], update_config=deployment_merge(PYTHON_CLIENT)
    )
    return core.wait_for_report(PYTHON_CLIENT), core.thing


@pytest.fixture(scope="class")
def gg_sdk_report(class_simulated_core):
    """The Rust SDK component's report and the core's thing name."""
    core = class_simulated_core(
        unique_name("gg-core"), [gg_sdk_component()], update_config=deployment_merge(GG_SDK_CLIENT)
    )
    return core.wait_for_report(GG_SDK_CLIENT), core.thing


class TestPythonClient:
    """awsiotsdk `GreengrassCoreIPCClientV2` in a component of an offline core."""

    def test_connects_with_the_environment_the_core_gives(self, python_report):
        doc, thing = python_report
        assert doc["complete"] is True
        assert doc["thingName"] == thing
        assert ok(doc["steps"], "Connect") is None
        assert ok(doc["steps"], "UpdateState") is None

    def test_get_configuration_answers_leaves_wrapped_and_objects_bare(self, python_report):
        steps = python_report[0]["steps"]
        assert ok(steps, "GetConfiguration.greeting") == {
            "componentName": PYTHON_CLIENT,
            "value": {"greeting": "hello from the python recipe"},
        }
        assert ok(steps, "GetConfiguration.nested") == {
            "componentName": PYTHON_CLIENT,
            "value": {"answer": 42, "words": ["alpha", "beta"]},
        }

    def test_get_configuration_answers_the_value_merged_by_the_deployment(self, python_report):
        assert ok(python_report[0]["steps"], "GetConfiguration.deployed") == {
            "componentName": PYTHON_CLIENT,
            "value": {"deployed": DEPLOYED_VALUE},
        }

    def test_missing_configuration_raises_resource_not_found(self, python_report):
        steps = python_report[0]["steps"]
        for name in ("GetConfiguration.missing", "GetConfiguration.otherComponent"):
            error = failed(steps, name)
            assert error["type"] == "ResourceNotFoundError", error
            assert error["ipcError"] is True, error

    def test_update_configuration_is_read_back_and_notified(self, python_report):
        steps = python_report[0]["steps"]
        ok(steps, "SubscribeToConfigurationUpdate")
        ok(steps, "UpdateConfiguration")
        assert ok(steps, "GetConfiguration.counter") == {"componentName": PYTHON_CLIENT, "value": {"counter": 42}}
        assert ok(steps, "ConfigurationUpdateEvent") == [{"componentName": PYTHON_CLIENT, "keyPath": ["counter"]}]

    def test_own_json_and_binary_messages_come_back_only_in_receive_all_mode(self, python_report):
        steps = python_report[0]["steps"]
        ok(steps, "SubscribeToTopic")
        ok(steps, "SubscribeToTopic.fromOthers")
        sent_json = ok(steps, "PublishToTopic.json")
        sent_binary = ok(steps, "PublishToTopic.binary")
        topic = "conformance/python/echo"
        assert ok(steps, "ReceivedMessages") == [
            {"topic": topic, "json": sent_json},
            {"topic": topic, "binaryHex": sent_binary},
        ]
        ok(steps, "Fence")
        assert ok(steps, "ReceivedFromOthers") == [], "RECEIVE_MESSAGES_FROM_OTHERS delivered the component's own"

    def test_local_shadow_follows_the_shadow_service_rules(self, python_report):
        steps = python_report[0]["steps"]
        assert_shadow_round_trip(steps, "conformance-python")
        error = failed(steps, "GetThingShadow.deleted")
        assert error["type"] == "ResourceNotFoundError", error

    def test_calls_outside_access_control_raise_unauthorized_error(self, python_report):
        steps = python_report[0]["steps"]
        for name in ("Denied.PublishToTopic", "Denied.SubscribeToTopic", "Denied.UpdateThingShadow"):
            error = failed(steps, name)
            assert error["type"] == "UnauthorizedError", (name, error)
            assert error["ipcError"] is True, (name, error)
            # The SDK fills the exception from the payload's `message` field.
            assert error["message"], (name, error)

    def test_publish_to_iot_core_without_a_cloud_is_refused_with_service_error(self, python_report):
        # A core without an IoT Core bridge has nowhere to send the message (the nucleus would
        # spool it for a connection it has configured; this core has none): the SDK raises the
        # modelled ServiceError with the core's message. With a bridge, the message must reach
        # the cloud: test_publish_to_iot_core_from_both_clients_reaches_the_cloud.
        error = failed(python_report[0]["steps"], "PublishToIoTCore")
        assert error == {"type": "ServiceError", "ipcError": True, "message": NO_BRIDGE_MESSAGE}, error


class TestGgSdkClient:
    """AWS's Rust component SDK (`aws-greengrass-component-sdk`) in a component of an offline core."""

    def test_connects_with_the_environment_the_core_gives(self, gg_sdk_report):
        doc, thing = gg_sdk_report
        assert doc["complete"] is True
        assert doc["thingName"] == thing
        assert ok(doc["steps"], "Connect") is None
        assert ok(doc["steps"], "UpdateState") is None

    def test_get_configuration_unwraps_leaves_as_the_sdk_expects(self, gg_sdk_report):
        steps = gg_sdk_report[0]["steps"]
        # The SDK unwraps `{"greeting": value}` only when the nucleus wraps a leaf in its key.
        assert ok(steps, "GetConfiguration.greeting") == "hello from the gg-sdk recipe"
        assert ok(steps, "GetConfiguration.nested") == {"answer": 42, "words": ["alpha", "beta"]}
        assert failed(steps, "GetConfiguration.missing")["sdkError"] == "Noentry"

    def test_get_configuration_answers_the_value_merged_by_the_deployment(self, gg_sdk_report):
        assert ok(gg_sdk_report[0]["steps"], "GetConfiguration.deployed") == DEPLOYED_VALUE

    def test_update_configuration_is_read_back_and_notified(self, gg_sdk_report):
        steps = gg_sdk_report[0]["steps"]
        ok(steps, "SubscribeToConfigurationUpdate")
        ok(steps, "UpdateConfiguration")
        assert ok(steps, "GetConfiguration.counter") == 42
        assert ok(steps, "ConfigurationUpdateEvent") == [{"componentName": GG_SDK_CLIENT, "keyPath": ["counter"]}]

    def test_own_json_and_binary_messages_come_back(self, gg_sdk_report):
        steps = gg_sdk_report[0]["steps"]
        ok(steps, "SubscribeToTopic")
        nonce = ok(steps, "PublishToTopic.json")
        sent_binary = ok(steps, "PublishToTopic.binary")
        topic = "conformance/gg-sdk/echo"
        assert ok(steps, "ReceivedMessages") == [
            {"topic": topic, "json": {"nonce": nonce, "client": "gg-sdk"}},
            {"topic": topic, "binaryHex": sent_binary},
        ]

    def test_local_shadow_follows_the_shadow_service_rules(self, gg_sdk_report):
        steps = gg_sdk_report[0]["steps"]
        assert_shadow_round_trip(steps, "conformance-gg-sdk")
        assert failed(steps, "GetThingShadow.deleted")["sdkError"] == "Noentry"

    def test_calls_outside_access_control_are_refused_with_unauthorized_error(self, gg_sdk_report):
        steps = gg_sdk_report[0]["steps"]
        # The SDK maps UnauthorizedError to `Unsupported` for pub/sub and to `Unauthorized`
        # for shadows; the raw call shows the `_errorCode` itself.
        assert failed(steps, "Denied.PublishToTopic")["sdkError"] == "Unsupported"
        assert failed(steps, "Denied.UpdateThingShadow")["sdkError"] == "Unauthorized"
        raw = steps["Denied.PublishToTopic.raw"]
        assert raw["answer"]["ok"] is False, raw
        assert raw["answer"]["errorCode"] == "UnauthorizedError", raw
        assert raw["sdkResult"] == "Remote", raw

    def test_publish_to_iot_core_without_a_cloud_is_refused_with_service_error(self, gg_sdk_report):
        # The SDK's PublishToIoTCore maps every `_errorCode` but UnauthorizedError to `Failure`:
        # the core's ServiceError (no bridge) arrives as that, not as a broken connection.
        error = failed(gg_sdk_report[0]["steps"], "PublishToIoTCore")
        assert error["sdkError"] == "Failure", error


# --- IoT Core bridge -------------------------------------------------------------------


def core_device_policy() -> str:
    """The policy a Greengrass core device gets from the installer's provisioning
    (`GreengrassV2IoTThingPolicy`): connect, publish, subscribe and receive."""
    doc = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["iot:Connect", "iot:Publish", "iot:Subscribe", "iot:Receive"],
                "Resource": "*",
            }
        ],
    }
    return json.dumps(doc)


def observer_policy(endpoints, thing: str) -> str:
    """A cloud-side observer that may only watch the core's conformance topics."""
    doc = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": endpoints.arn("client/${iot:Connection.Thing.ThingName}"),
            },
            {
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": endpoints.arn(f"topicfilter/conformance/{thing}/*"),
            },
            {"Effect": "Allow", "Action": "iot:Receive", "Resource": endpoints.arn(f"topic/conformance/{thing}/*")},
        ],
    }
    return json.dumps(doc)


def provision(iot, endpoints, workdir, prefix: str, policy_document: str) -> Device:
    """A thing with an ACTIVE certificate and the given policy, files under `workdir`."""
    return provision_device(iot, endpoints, workdir, prefix=prefix, policy_document=policy_document)


def test_publish_to_iot_core_from_both_clients_reaches_the_cloud(
    local_cloud, iot, endpoints, connect, simulated_core, tmp_path
):
    components = [python_component(), gg_sdk_component()]
    core_device = provision(iot, endpoints, tmp_path / "core", "gg-core", core_device_policy())
    thing = core_device.thing_name
    observer = provision(iot, endpoints, tmp_path / "observer", "observer", observer_policy(endpoints, thing))

    # Subscribed before the core starts, so no publish can be missed.
    received = Mailbox("conformance topics in the cloud")
    connection = connect(observer, ConnectionEvents())
    subscribe, _ = connection.subscribe(
        topic=f"conformance/{thing}/+",
        qos=mqtt.QoS.AT_LEAST_ONCE,
        callback=lambda topic, payload, **kwargs: received({"topic": topic, "payload": json.loads(payload)}),
    )
    subscribe.result(timeout=EVENT_TIMEOUT_S)

    cloud = CloudLink(
        endpoints_json=str(local_cloud.data_dir / "endpoints.json"),
        cert_path=core_device.cert_path,
        key_path=core_device.key_path,
        root_ca=endpoints.ca_file,
    )
    core = simulated_core(thing, components, cloud)
    for name, suffix in [(PYTHON_CLIENT, "python"), (GG_SDK_CLIENT, "gg-sdk")]:
        steps = core.wait_for_report(name)["steps"]
        sent = json.loads(ok(steps, "PublishToIoTCore"))
        topic = f"conformance/{thing}/{suffix}"
        message = received.expect(f"{name}'s message on {topic}", lambda m, t=topic: m["topic"] == t)
        assert message["payload"] == sent, message


def test_publish_to_iot_core_mqtt5_members_from_awsiotsdk_reach_an_mqtt5_subscriber(
    local_cloud, iot, endpoints, simulated_core, tmp_path
):
    core_device = provision(iot, endpoints, tmp_path / "core", "gg-core", core_device_policy())
    thing = core_device.thing_name
    observer = provision(iot, endpoints, tmp_path / "observer", "observer", observer_policy(endpoints, thing))

    # awscrt's MQTT 5 client, subscribed before the core starts.
    app = Client5(endpoints, observer, observer.thing_name)
    app.start()
    try:
        codes = app.subscribe(f"conformance/{thing}/+")
        assert codes == [mqtt5.SubackReasonCode.GRANTED_QOS_1], codes
        cloud = CloudLink(
            endpoints_json=str(local_cloud.data_dir / "endpoints.json"),
            cert_path=core_device.cert_path,
            key_path=core_device.key_path,
            root_ca=endpoints.ca_file,
        )
        core = simulated_core(thing, [python_component()], cloud)
        steps = core.wait_for_report(PYTHON_CLIENT)["steps"]
        sent = json.loads(ok(steps, "PublishToIoTCore.mqtt5"))
        topic = f"conformance/{thing}/python-mqtt5"
        packet = app.received.expect(f"the MQTT 5 publish on {topic}", lambda p: p.topic == topic)
        assert json.loads(packet.payload) == sent
        users = [(u.name, u.value) for u in packet.user_properties or []]
        assert users == [("client", "python"), ("nonce", sent["nonce"])], users
        assert packet.correlation_data_bytes == f"corr-{sent['nonce']}".encode()
        assert packet.response_topic == f"conformance/{thing}/python-reply"
        assert packet.content_type == "application/json"
        assert packet.payload_format_indicator == mqtt5.PayloadFormatIndicator.AWS_MQTT5_PFI_UTF8
        assert 0 < packet.message_expiry_interval_sec <= 120, packet.message_expiry_interval_sec
        # The core refuses a payload marked UTF-8 that is not; awsiotsdk raises the answer.
        failed(steps, "PublishToIoTCore.mqtt5.notUtf8")
    finally:
        app.stop()
