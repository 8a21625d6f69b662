"""The Device Shadow service driven by AWS's own clients: the awsiotsdk shadow
client (`awsiot.iotshadow.IotShadowClient`, its `subscribe_to_*` and
`publish_*` helpers) on the device side, boto3 `iot-data` on the application
side. Follows "Device Shadow service MQTT topics" and "Device Shadow REST API"
in the AWS IoT Core Developer Guide. Run for the classic shadow and for a named
shadow."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import pytest
from awscrt import mqtt
from awsiot import iotshadow

from support import EVENT_TIMEOUT_S, Mailbox, describe, with_token

QOS1 = mqtt.QoS.AT_LEAST_ONCE


@dataclass
class ShadowSubscriptions:
    get_accepted: Mailbox
    get_rejected: Mailbox
    update_accepted: Mailbox
    update_rejected: Mailbox
    delta: Mailbox


class DeviceShadow:
    """One shadow (classic when `shadow_name` is None) seen through the SDK's
    IotShadowClient, using the classic or the named-shadow helpers."""

    def __init__(self, connection: mqtt.Connection, thing_name: str, shadow_name: Optional[str]):
        self.client = iotshadow.IotShadowClient(connection)
        self.thing_name = thing_name
        self.shadow_name = shadow_name

    @property
    def named(self) -> bool:
        return self.shadow_name is not None

    def _names(self) -> dict:
        names = {"thing_name": self.thing_name}
        if self.named:
            names["shadow_name"] = self.shadow_name
        return names

    def subscribe(self) -> ShadowSubscriptions:
        """Subscribes to every response topic and waits for each SUBACK, so no
        reply can be missed by a request published afterwards."""
        c = self.client
        subs = ShadowSubscriptions(
            get_accepted=Mailbox("get/accepted"),
            get_rejected=Mailbox("get/rejected"),
            update_accepted=Mailbox("update/accepted"),
            update_rejected=Mailbox("update/rejected"),
            delta=Mailbox("update/delta"),
        )
        if self.named:
            get_req = iotshadow.GetNamedShadowSubscriptionRequest(**self._names())
            update_req = iotshadow.UpdateNamedShadowSubscriptionRequest(**self._names())
            delta_req = iotshadow.NamedShadowDeltaUpdatedSubscriptionRequest(**self._names())
            calls = [
                (c.subscribe_to_get_named_shadow_accepted, get_req, subs.get_accepted),
                (c.subscribe_to_get_named_shadow_rejected, get_req, subs.get_rejected),
                (c.subscribe_to_update_named_shadow_accepted, update_req, subs.update_accepted),
                (c.subscribe_to_update_named_shadow_rejected, update_req, subs.update_rejected),
                (c.subscribe_to_named_shadow_delta_updated_events, delta_req, subs.delta),
            ]
        else:
            get_req = iotshadow.GetShadowSubscriptionRequest(**self._names())
            update_req = iotshadow.UpdateShadowSubscriptionRequest(**self._names())
            delta_req = iotshadow.ShadowDeltaUpdatedSubscriptionRequest(**self._names())
            calls = [
                (c.subscribe_to_get_shadow_accepted, get_req, subs.get_accepted),
                (c.subscribe_to_get_shadow_rejected, get_req, subs.get_rejected),
                (c.subscribe_to_update_shadow_accepted, update_req, subs.update_accepted),
                (c.subscribe_to_update_shadow_rejected, update_req, subs.update_rejected),
                (c.subscribe_to_shadow_delta_updated_events, delta_req, subs.delta),
            ]
        for subscribe, request, mailbox in calls:
            suback, topic = subscribe(request, QOS1, mailbox)
            granted = suback.result(timeout=EVENT_TIMEOUT_S)
            assert granted in (mqtt.QoS.AT_MOST_ONCE, mqtt.QoS.AT_LEAST_ONCE), f"SUBACK {granted!r} for {topic}"
        return subs

    def publish_get(self, client_token: str) -> None:
        if self.named:
            request = iotshadow.GetNamedShadowRequest(client_token=client_token, **self._names())
            future = self.client.publish_get_named_shadow(request, QOS1)
        else:
            request = iotshadow.GetShadowRequest(client_token=client_token, **self._names())
            future = self.client.publish_get_shadow(request, QOS1)
        future.result(timeout=EVENT_TIMEOUT_S)

    def publish_update(self, state: iotshadow.ShadowState, client_token: str, version: Optional[int] = None) -> None:
        if self.named:
            request = iotshadow.UpdateNamedShadowRequest(
                state=state, client_token=client_token, version=version, **self._names()
            )
            future = self.client.publish_update_named_shadow(request, QOS1)
        else:
            request = iotshadow.UpdateShadowRequest(
                state=state, client_token=client_token, version=version, **self._names()
            )
            future = self.client.publish_update_shadow(request, QOS1)
        future.result(timeout=EVENT_TIMEOUT_S)


def _shadow_kwargs(thing_name: str, shadow_name: Optional[str]) -> dict:
    kwargs = {"thingName": thing_name}
    if shadow_name is not None:
        kwargs["shadowName"] = shadow_name
    return kwargs


def http_update(iot_data, thing_name: str, shadow_name: Optional[str], document: dict) -> dict:
    response = iot_data.update_thing_shadow(payload=json.dumps(document).encode(), **_shadow_kwargs(thing_name, shadow_name))
    return json.loads(response["payload"].read())


def http_get(iot_data, thing_name: str, shadow_name: Optional[str]) -> dict:
    response = iot_data.get_thing_shadow(**_shadow_kwargs(thing_name, shadow_name))
    return json.loads(response["payload"].read())


@pytest.mark.parametrize("shadow_name", [None, "pump"], ids=["classic", "named"])
def test_sdk_shadow_client_syncs_with_boto3_data_plane(device, connect, iot_data, shadow_name):
    shadow = DeviceShadow(connect(device), device.thing_name, shadow_name)
    subs = shadow.subscribe()

    # 1. No shadow yet: get is rejected with 404.
    shadow.publish_get("get-none")
    rejected = subs.get_rejected.expect("404 for the missing shadow", with_token("get-none"))
    assert rejected.code == 404, describe(rejected)
    assert rejected.message, describe(rejected)
    assert not subs.get_accepted.snapshot(), [describe(m) for m in subs.get_accepted.snapshot()]

    # 2. The application sets desired over HTTP; the device gets the delta.
    desired = {"mode": "auto", "speedRpm": 1200, "limits": {"maxTempC": 80}}
    accepted = http_update(
        iot_data, device.thing_name, shadow_name, {"state": {"desired": desired}, "clientToken": "app-desired"}
    )
    assert accepted["version"] == 1, accepted
    assert accepted["state"] == {"desired": desired}, accepted
    assert accepted["clientToken"] == "app-desired", accepted

    delta = subs.delta.expect("delta after the HTTP update", lambda d: d.version == 1)
    assert delta.state == desired, describe(delta)
    assert delta.client_token == "app-desired", describe(delta)
    # The HTTP update is announced on MQTT too.
    subs.update_accepted.expect("update/accepted for the HTTP update", with_token("app-desired"))

    # 3. The device reports what it applied.
    shadow.publish_update(iotshadow.ShadowState(reported=delta.state), "dev-report")
    reported = subs.update_accepted.expect("update/accepted for the report", with_token("dev-report"))
    assert reported.version == 2, describe(reported)
    assert reported.state.reported == desired, describe(reported.state)
    assert reported.state.desired is None, describe(reported.state)
    assert reported.metadata.reported["mode"]["timestamp"] > 0, describe(reported.metadata)

    # 4. The application reads it back: in sync, no delta, version advanced.
    document = http_get(iot_data, device.thing_name, shadow_name)
    assert document["state"]["desired"] == desired, document
    assert document["state"]["reported"] == desired, document
    assert "delta" not in document["state"], document
    assert document["version"] == 2, document
    assert "metadata" in document and "timestamp" in document, document

    # The SDK's own get agrees.
    shadow.publish_get("get-synced")
    got = subs.get_accepted.expect("get/accepted after the report", with_token("get-synced"))
    assert got.version == 2, describe(got)
    assert got.state.desired == desired and got.state.reported == desired, describe(got.state)
    assert got.state.delta is None, describe(got.state)

    # 5. An update carrying a stale version is rejected with 409.
    shadow.publish_update(iotshadow.ShadowState(reported={"mode": "manual"}), "dev-stale", version=1)
    conflict = subs.update_rejected.expect("409 for the stale version", with_token("dev-stale"))
    assert conflict.code == 409, describe(conflict)
    assert http_get(iot_data, device.thing_name, shadow_name)["version"] == 2

    # The matching version is accepted.
    shadow.publish_update(iotshadow.ShadowState(reported={"mode": "manual"}), "dev-current", version=2)
    current = subs.update_accepted.expect("update/accepted for the current version", with_token("dev-current"))
    assert current.version == 3, describe(current)
    delta = subs.delta.expect("delta once reported differs again", with_token("dev-current"))
    assert delta.state == {"mode": "auto"}, describe(delta)


def test_named_and_classic_shadows_are_separate(device, connect, iot_data):
    shadow = DeviceShadow(connect(device), device.thing_name, "pump")
    subs = shadow.subscribe()
    shadow.publish_update(iotshadow.ShadowState(reported={"running": True}), "named-only")
    accepted = subs.update_accepted.expect("update/accepted on the named shadow", with_token("named-only"))
    assert accepted.version == 1, describe(accepted)

    with pytest.raises(iot_data.exceptions.ResourceNotFoundException):
        iot_data.get_thing_shadow(thingName=device.thing_name)
    listed = iot_data.list_named_shadows_for_thing(thingName=device.thing_name)
    assert listed["results"] == ["pump"], listed
