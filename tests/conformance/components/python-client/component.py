"""A Greengrass component written on AWS's Python IPC client (awsiotsdk,
`awsiot.greengrasscoreipc.clientv2.GreengrassCoreIPCClientV2`), for the
simulated core's conformance tests.

Started by a core from its recipe, it connects with the environment the core
gives (`SVCUID`, `AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT`),
performs the IPC operations listed in the README, and writes what it saw as a
JSON report (temporary file, then rename). A failing step is recorded and the
next one still runs. Exits 0 once the report is written, 1 if it cannot be.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import sys
import threading
import time
import uuid
from typing import Any, Callable

from awsiot.greengrasscoreipc import model
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--denied-topic", required=True)
    p.add_argument("--shadow", required=True)
    p.add_argument("--denied-shadow", required=True)
    p.add_argument("--iot-topic", required=True)
    p.add_argument("--receive-timeout-ms", type=int, default=10_000)
    return p.parse_args()


def describe_error(e: BaseException) -> dict:
    """The exception as the SDK raised it: its class (the error shape the SDK
    mapped the answer to) and whether it is one of the service's modelled errors."""
    modelled = isinstance(e, model.GreengrassCoreIPCError)
    return {
        "type": type(e).__name__,
        "ipcError": modelled,
        # A modelled error carries the payload's `message` field; other exceptions their text.
        "message": getattr(e, "message", None) if modelled else str(e),
    }


class Report:
    def __init__(self) -> None:
        self.steps: dict[str, Any] = {}

    def step(self, name: str, call: Callable[[], Any]) -> Any:
        """Runs `call`, records `{ok, value}` or `{ok: false, error}`; returns the value or None."""
        try:
            value = call()
        except Exception as e:  # every outcome is data for the test
            self.steps[name] = {"ok": False, "error": describe_error(e)}
            return None
        self.steps[name] = {"ok": True, "value": value}
        return value

    def record(self, name: str, value: Any) -> None:
        self.steps[name] = value


class Inbox:
    """Stream events, collected for a waiter with a deadline."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.errors: list[dict] = []
        self.cond = threading.Condition()

    def on_event(self, item: Any) -> None:
        with self.cond:
            self.items.append(item)
            self.cond.notify_all()

    def on_error(self, error: Exception) -> bool:
        with self.cond:
            self.errors.append(describe_error(error))
            self.cond.notify_all()
        return True  # close the stream

    def wait_for(self, count: int, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while len(self.items) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    received = list(self.items)
                    return {"ok": False, "error": "timed out", "received": received, "streamErrors": self.errors}
                self.cond.wait(left)
            return {"ok": True, "value": list(self.items[:count]), "streamErrors": self.errors}


def message_event(event: model.SubscriptionResponseMessage) -> dict:
    if event.json_message is not None:
        return {"topic": event.json_message.context.topic, "json": event.json_message.message}
    if event.binary_message is not None:
        return {"topic": event.binary_message.context.topic, "binaryHex": bytes(event.binary_message.message).hex()}
    return {"unknown": repr(event)}


def document(payload: bytes | None) -> Any:
    """A shadow response payload as JSON (or its text, so the test shows it)."""
    if payload is None:
        return None
    try:
        return json.loads(payload)
    except ValueError as e:
        return {"unparsable": bytes(payload).decode(errors="replace"), "error": str(e)}


def run_steps(ipc: GreengrassCoreIPCClientV2, args: argparse.Namespace, report: Report) -> None:
    thing = os.environ.get("AWS_IOT_THING_NAME", "")
    timeout_s = args.receive_timeout_ms / 1000
    nonce = uuid.uuid4().hex

    report.step("UpdateState", lambda: then(ipc.update_state(state=model.ReportedLifecycleState.RUNNING)))

    def get_configuration(key_path):
        response = ipc.get_configuration(key_path=key_path)
        return {"componentName": response.component_name, "value": response.value}

    report.step("GetConfiguration.greeting", lambda: get_configuration(["greeting"]))
    report.step("GetConfiguration.nested", lambda: get_configuration(["nested"]))
    report.step("GetConfiguration.missing", lambda: get_configuration(["noSuchKey"]))
    # Only there when the deployment merged it (`--update-config` of the core).
    report.step("GetConfiguration.deployed", lambda: get_configuration(["deployed"]))

    # UpdateConfiguration, seen both by a read and by a configuration-update subscriber.
    config_events = Inbox()
    report.step(
        "SubscribeToConfigurationUpdate",
        lambda: keep(ipc.subscribe_to_configuration_update(
            key_path=["counter"],
            on_stream_event=lambda e: config_events.on_event(
                {
                    "componentName": e.configuration_update_event.component_name,
                    "keyPath": e.configuration_update_event.key_path,
                }
            ),
            on_stream_error=config_events.on_error,
        )),
    )
    report.step(
        "UpdateConfiguration",
        # keyPath names the container to merge into (here the root), valueToMerge the object.
        lambda: then(ipc.update_configuration(
            key_path=[],
            timestamp=datetime.datetime.now(datetime.timezone.utc),
            value_to_merge={"counter": 42},
        ), None),
    )
    report.step("GetConfiguration.counter", lambda: get_configuration(["counter"]))
    if "error" not in report.steps["SubscribeToConfigurationUpdate"]:
        report.record("ConfigurationUpdateEvent", config_events.wait_for(1, timeout_s))

    # Local pub/sub: one subscription that receives everything, one that receives only
    # messages from other components; JSON and binary messages.
    everything, from_others = Inbox(), Inbox()
    for name, inbox, mode in [
        ("SubscribeToTopic", everything, model.ReceiveMode.RECEIVE_ALL_MESSAGES),
        ("SubscribeToTopic.fromOthers", from_others, model.ReceiveMode.RECEIVE_MESSAGES_FROM_OTHERS),
    ]:
        report.step(
            name,
            lambda inbox=inbox, mode=mode: keep(
                ipc.subscribe_to_topic(
                    topic=args.topic,
                    receive_mode=mode,
                    on_stream_event=lambda e, inbox=inbox: inbox.on_event(message_event(e)),
                    on_stream_error=inbox.on_error,
                )
            ),
        )
    json_message = {"nonce": nonce, "client": "python"}
    binary = bytes([0x00, 0xFF, 0x10, 0x80]) + b"py"
    report.step(
        "PublishToTopic.json",
        lambda: then(ipc.publish_to_topic(
            topic=args.topic, publish_message=model.PublishMessage(json_message=model.JsonMessage(message=json_message))
        ), json_message),
    )
    report.step(
        "PublishToTopic.binary",
        lambda: then(ipc.publish_to_topic(
            topic=args.topic, publish_message=model.PublishMessage(binary_message=model.BinaryMessage(message=binary))
        ), binary.hex()),
    )
    if "error" not in report.steps["SubscribeToTopic"]:
        report.record("ReceivedMessages", everything.wait_for(2, timeout_s))
        # A request/response after both deliveries: frames on this connection arrive in order,
        # so a message wrongly sent to the from-others subscription before this answer is seen.
        report.step("Fence", lambda: then(get_configuration(["greeting"]), None))
        with from_others.cond:
            report.record("ReceivedFromOthers", {"ok": True, "value": list(from_others.items)})

    # Local shadow: two updates, a read, the list, a delete, a read of the deleted shadow.
    for name, status in [("UpdateThingShadow.first", "starting"), ("UpdateThingShadow.second", "ok")]:
        doc = {"state": {"reported": {"nonce": nonce, "status": status}}}
        report.step(
            name,
            lambda doc=doc: document(
                ipc.update_thing_shadow(
                    thing_name=thing, shadow_name=args.shadow, payload=json.dumps(doc).encode()
                ).payload
            ),
        )
    report.step(
        "GetThingShadow",
        lambda: document(ipc.get_thing_shadow(thing_name=thing, shadow_name=args.shadow).payload),
    )
    report.step("ListNamedShadowsForThing", lambda: ipc.list_named_shadows_for_thing(thing_name=thing).results)
    report.step(
        "DeleteThingShadow",
        lambda: bytes(ipc.delete_thing_shadow(thing_name=thing, shadow_name=args.shadow).payload or b"").hex(),
    )
    report.step(
        "GetThingShadow.deleted",
        lambda: document(ipc.get_thing_shadow(thing_name=thing, shadow_name=args.shadow).payload),
    )

    # IoT Core: answered by the core's bridge (or its absence).
    iot_payload = json.dumps({"nonce": nonce, "client": "python"})
    report.step(
        "PublishToIoTCore",
        lambda: then(ipc.publish_to_iot_core(
            topic_name=args.iot_topic, qos=model.QOS.AT_LEAST_ONCE, payload=iot_payload.encode()
        ), iot_payload),
    )
    # The same with the MQTT 5 members of PublishToIoTCoreRequest (awsiotsdk >= 1.15): the
    # core's MQTT 5 bridge puts them into the PUBLISH.
    report.step(
        "PublishToIoTCore.mqtt5",
        lambda: then(ipc.publish_to_iot_core(
            topic_name=f"{args.iot_topic}-mqtt5",
            qos=model.QOS.AT_LEAST_ONCE,
            payload=iot_payload.encode(),
            user_properties=[
                model.UserProperty(key="client", value="python"),
                model.UserProperty(key="nonce", value=nonce),
            ],
            message_expiry_interval_seconds=120,
            correlation_data=f"corr-{nonce}".encode(),
            response_topic=f"{args.iot_topic}-reply",
            payload_format=model.PayloadFormat.UTF8,
            content_type="application/json",
        ), iot_payload),
    )
    # A payload that says UTF-8 and is not: refused before anything is sent.
    report.step(
        "PublishToIoTCore.mqtt5.notUtf8",
        lambda: then(ipc.publish_to_iot_core(
            topic_name=f"{args.iot_topic}-mqtt5",
            qos=model.QOS.AT_LEAST_ONCE,
            payload=b"\xff\xfe",
            payload_format=model.PayloadFormat.UTF8,
        ), None),
    )

    # Denied by accessControl: the SDK raises the error shape named by the answer.
    report.step(
        "Denied.PublishToTopic",
        lambda: then(ipc.publish_to_topic(
            topic=args.denied_topic,
            publish_message=model.PublishMessage(json_message=model.JsonMessage(message=json_message)),
        ), None),
    )
    report.step(
        "Denied.SubscribeToTopic",
        lambda: keep(ipc.subscribe_to_topic(topic=args.denied_topic, on_stream_event=lambda e: None)),
    )
    report.step(
        "Denied.UpdateThingShadow",
        lambda: then(ipc.update_thing_shadow(
            thing_name=thing, shadow_name=args.denied_shadow, payload=json.dumps({"state": {"reported": {}}}).encode()
        ), None),
    )
    report.step(
        "GetConfiguration.otherComponent",
        lambda: then(ipc.get_configuration(component_name="com.example.conformance.NotInstalled", key_path=["x"])),
    )


def then(_response: Any, value: Any = None) -> Any:
    """What a step records after a call whose response has nothing to check."""
    return value


_STREAMS: list[Any] = []


def keep(subscription: tuple) -> None:
    """Holds a (response, operation) pair from a subscribe call so its stream stays open."""
    _STREAMS.append(subscription)


def write_atomically(path: str, doc: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main() -> int:
    args = parse_args()
    report = Report()
    # executor=None: stream callbacks run on the connection's thread, in the order frames
    # arrive (they only append to an Inbox, so they cannot block it).
    ipc = report.step("Connect", lambda: GreengrassCoreIPCClientV2(executor=None))
    if ipc is not None:
        report.steps["Connect"]["value"] = None
        try:
            run_steps(ipc, args, report)
        finally:
            ipc.close()
    doc = {
        "client": "awsiotsdk greengrasscoreipc.clientv2",
        "sdkVersion": importlib.metadata.version("awsiotsdk"),
        "thingName": os.environ.get("AWS_IOT_THING_NAME", ""),
        "steps": report.steps,
        "complete": True,
    }
    try:
        write_atomically(args.report, doc)
    except OSError as e:
        print(f"component.py: cannot write the report {args.report}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
