"""Helpers shared by the conformance tests: the running local cloud, device
provisioning through boto3, MQTT connections through awsiotsdk, and a mailbox
that turns SDK callbacks into events a test can wait on with a deadline.

Everything here talks to 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import boto3
from awscrt import mqtt
from awscrt.exceptions import AwsCrtError
from awsiot import mqtt_connection_builder
from botocore.config import Config

# How long a test waits for any one thing the local cloud should do at once.
EVENT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Endpoints:
    """The contents of `endpoints.json` written by `local-cloud serve`."""

    mqtt_host: str
    mqtt_port: int
    http: str
    ca_file: str
    region: str
    account_id: str
    # The administrator's key pair (`credentials` in endpoints.json): every HTTP API verifies signatures.
    access_key_id: str = ""
    secret_access_key: str = ""
    # The AWS IoT credentials provider's base URL (mutual TLS).
    credentials_provider: str = ""

    @classmethod
    def from_json(cls, doc: dict) -> "Endpoints":
        host, _, port = doc["mqtt"].rpartition(":")
        credentials = doc.get("credentials") or {}
        return cls(
            mqtt_host=host,
            mqtt_port=int(port),
            http=doc["http"],
            ca_file=doc["caFile"],
            region=doc["region"],
            account_id=doc["accountId"],
            access_key_id=credentials.get("accessKeyId", ""),
            secret_access_key=credentials.get("secretAccessKey", ""),
            credentials_provider=doc.get("credentialsProvider", ""),
        )

    def arn(self, resource: str) -> str:
        """An IoT ARN for a policy resource such as `client/x`."""
        return f"arn:aws:iot:{self.region}:{self.account_id}:{resource}"


def boto_client(
    endpoints: Endpoints,
    service: str,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    session_token: str | None = None,
):
    """A boto3 client for `iot`, `iot-data`, `greengrassv2`, `iam`, ... pointed at the local cloud.

    It signs with the administrator's key pair from `endpoints.json` (the local cloud
    verifies every SigV4 signature), or with the key given. Retries are off so a failing
    call reports its first error rather than a retried one.
    """
    session = boto3.session.Session(
        aws_access_key_id=access_key_id or endpoints.access_key_id,
        aws_secret_access_key=secret_access_key or endpoints.secret_access_key,
        aws_session_token=session_token,
        region_name=endpoints.region,
    )
    config = Config(
        retries={"max_attempts": 1, "mode": "standard"},
        connect_timeout=5,
        read_timeout=15,
    )
    return session.client(service, endpoint_url=endpoints.http, config=config)


def s3_client(endpoints: Endpoints, secret_access_key: str | None = None):
    """A boto3 `s3` client, path-style, signing with the administrator's key pair
    from `endpoints.json` (pass another secret to be refused)."""
    session = boto3.session.Session(
        aws_access_key_id=endpoints.access_key_id,
        aws_secret_access_key=secret_access_key or endpoints.secret_access_key,
        region_name=endpoints.region,
    )
    config = Config(
        retries={"max_attempts": 1, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        s3={"addressing_style": "path"},
        signature_version="s3v4",
    )
    return session.client("s3", endpoint_url=endpoints.http, config=config)


def unique_name(prefix: str) -> str:
    """A thing, policy or shadow name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def fetch_url(url: str) -> tuple[int, bytes]:
    """GET without credentials (a presigned URL): status and body; an error status is not an exception."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def tamper_signature(url: str, marker: str = "X-Amz-Signature=") -> str:
    """The URL with the first character of its signature (after `marker`) changed."""
    at = url.index(marker) + len(marker)
    return url[:at] + ("1" if url[at] == "0" else "0") + url[at + 1 :]


def sample_bytes(size: int, seed: int) -> bytes:
    """`size` bytes that differ per seed (for objects whose parts must differ)."""
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def thing_policy_document(endpoints: Endpoints) -> str:
    """A least-privilege policy for a device that only uses its own shadows.

    Every resource is scoped to the connecting thing through
    `${iot:Connection.Thing.ThingName}`, which is only set when the client id
    equals the name of a thing attached to the certificate.
    """
    thing = "${iot:Connection.Thing.ThingName}"
    doc = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": endpoints.arn(f"client/{thing}"),
            },
            {
                "Effect": "Allow",
                "Action": ["iot:Publish", "iot:Receive"],
                "Resource": endpoints.arn(f"topic/$aws/things/{thing}/shadow/*"),
            },
            {
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": endpoints.arn(f"topicfilter/$aws/things/{thing}/shadow/*"),
            },
        ],
    }
    return json.dumps(doc)


@dataclass(frozen=True)
class Device:
    """A thing with an ACTIVE certificate and the shadow policy attached."""

    thing_name: str
    thing_arn: str
    certificate_id: str
    certificate_arn: str
    cert_path: str
    key_path: str
    policy_name: str


def provision_device(
    iot, endpoints: Endpoints, workdir: Path, prefix: str = "conf-thing", policy_document: str | None = None
) -> Device:
    """Creates a thing, keys and certificate, and a policy (by default the
    thing-scoped one), and attaches them as the AWS IoT Developer Guide's
    provisioning walk-through does. Certificate and key are written under `workdir`."""
    thing_name = unique_name(prefix)
    policy_name = unique_name(f"{prefix}-policy")

    thing = iot.create_thing(thingName=thing_name)
    keys = iot.create_keys_and_certificate(setAsActive=True)
    iot.create_policy(policyName=policy_name, policyDocument=policy_document or thing_policy_document(endpoints))
    iot.attach_policy(policyName=policy_name, target=keys["certificateArn"])
    iot.attach_thing_principal(thingName=thing_name, principal=keys["certificateArn"])

    workdir.mkdir(parents=True, exist_ok=True)
    cert_path = workdir / f"{thing_name}.cert.pem"
    key_path = workdir / f"{thing_name}.private.key"
    cert_path.write_text(keys["certificatePem"])
    key_path.write_text(keys["keyPair"]["PrivateKey"])
    key_path.chmod(0o600)

    return Device(
        thing_name=thing_name,
        thing_arn=thing["thingArn"],
        certificate_id=keys["certificateId"],
        certificate_arn=keys["certificateArn"],
        cert_path=str(cert_path),
        key_path=str(key_path),
        policy_name=policy_name,
    )


class ConnectionEvents:
    """Lifecycle callbacks of one awscrt MQTT connection, as events."""

    def __init__(self) -> None:
        self.interrupted = threading.Event()
        self.interrupted_error: Optional[BaseException] = None
        self.closed = threading.Event()

    def on_interrupted(self, connection, error, **kwargs) -> None:
        self.interrupted_error = error
        self.interrupted.set()

    def on_closed(self, connection, callback_data, **kwargs) -> None:
        self.closed.set()

    def dropped(self) -> bool:
        return self.interrupted.is_set() or self.closed.is_set()


def connect_device(
    endpoints: Endpoints,
    device: Device,
    events: ConnectionEvents,
    client_id: Optional[str] = None,
) -> mqtt.Connection:
    """Opens the device's mTLS MQTT connection with the SDK's own builder,
    client id = thing name (unless given), clean session, and waits for CONNACK."""
    connection = mqtt_connection_builder.mtls_from_path(
        endpoint=endpoints.mqtt_host,
        port=endpoints.mqtt_port,
        cert_filepath=device.cert_path,
        pri_key_filepath=device.key_path,
        ca_filepath=endpoints.ca_file,
        client_id=client_id or device.thing_name,
        clean_session=True,
        keep_alive_secs=30,
        on_connection_interrupted=events.on_interrupted,
        on_connection_closed=events.on_closed,
        # A dropped connection should stay dropped long enough to observe.
        reconnect_min_timeout_secs=5,
        reconnect_max_timeout_secs=30,
    )
    connection.connect().result(timeout=EVENT_TIMEOUT_S)
    return connection


def assert_connect_not_authorized(error: BaseException) -> None:
    """Checks that a failed `connect()` was the broker's refusal with CONNACK return code 5
    (not authorized), which is how the local cloud, like IoT Core for MQTT 3.1.1, refuses a
    certificate or client id it does not accept. awscrt reports that CONNACK either as the
    return code itself or as AWS_ERROR_MQTT_PROTOCOL_ERROR (aws-c-mqtt's log: "invalid connect
    return code 5, disconnecting"); a hang-up, a time-out or a TLS error is not a refusal.
    Pair it with `connack_return_code`, which reads the code on the wire."""
    code = error.args[0] if error.args else None
    if isinstance(code, mqtt.ConnectReturnCode):
        assert code == mqtt.ConnectReturnCode.NOT_AUTHORIZED, f"CONNACK {code!r}, expected NOT_AUTHORIZED"
        return
    assert isinstance(error, AwsCrtError), f"unexpected {type(error).__name__}: {error}"
    assert error.name == "AWS_ERROR_MQTT_PROTOCOL_ERROR", f"{error.name}: {error.message}"


def connack_return_code(endpoints: Endpoints, device: Device, client_id: Optional[str] = None) -> Optional[int]:
    """Sends a bare MQTT 3.1.1 CONNECT over mutual TLS and returns the CONNACK
    return code, or None when the server closed the connection without one.
    The SDK does not expose the code of a refused CONNACK; this does."""
    context = ssl.create_default_context(cafile=endpoints.ca_file)
    context.load_cert_chain(device.cert_path, device.key_path)
    cid = (client_id or device.thing_name).encode()
    # Protocol "MQTT", level 4, flags: clean session, keep-alive 60 s.
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    with socket.create_connection((endpoints.mqtt_host, endpoints.mqtt_port), timeout=EVENT_TIMEOUT_S) as raw:
        with context.wrap_socket(raw, server_hostname=endpoints.mqtt_host) as tls:
            tls.sendall(bytes([0x10, len(body)]) + body)
            reply = b""
            while len(reply) < 4:
                chunk = tls.recv(4 - len(reply))
                if not chunk:
                    return None
                reply += chunk
    assert reply[:2] == b"\x20\x02", f"not a CONNACK: {reply.hex()}"
    return reply[3]


class Mailbox:
    """Collects what an SDK subscription callback receives, so a test can wait
    for a message that matches a condition, with a deadline.

    The SDK hands the callback `None` when it could not parse a payload; that
    is kept too, so a test fails with "unparsable" rather than a time-out.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._items: list[Any] = []
        self._cond = threading.Condition()

    def __call__(self, item: Any) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def expect(
        self,
        what: str,
        match: Callable[[Any], bool] = lambda _item: True,
        timeout: float = EVENT_TIMEOUT_S,
    ) -> Any:
        """Removes and returns the first item for which `match` is true."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, item in enumerate(self._items):
                    if item is None:
                        raise AssertionError(f"{self.name}: the SDK could not parse a payload (waiting for {what})")
                    if match(item):
                        return self._items.pop(i)
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [describe(item) for item in self._items]
                    raise AssertionError(f"{self.name}: no {what} within {timeout:.0f} s; received: {seen}")
                self._cond.wait(left)

    def snapshot(self) -> list[Any]:
        with self._cond:
            return list(self._items)


def describe(item: Any) -> Any:
    """A readable form of an SDK model object for assertion messages."""
    slots = getattr(type(item), "__slots__", None)
    if slots:
        return {name: describe(getattr(item, name, None)) for name in slots}
    return item


def with_token(token: str) -> Callable[[Any], bool]:
    """Matches an SDK response whose clientToken is `token`."""
    return lambda item: getattr(item, "client_token", None) == token
