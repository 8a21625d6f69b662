"""Provisioning a device with boto3's `iot` client, as the AWS IoT Developer
Guide's "create AWS IoT resources" walk-through does, and finding the data
endpoint with DescribeEndpoint."""

import json

import pytest

from support import (
    ConnectionEvents,
    Device,
    assert_connect_not_authorized,
    connack_return_code,
    connect_device,
    thing_policy_document,
    unique_name,
)


def test_boto3_provisions_a_thing_certificate_and_thing_scoped_policy(iot, endpoints, tmp_path):
    thing_name = unique_name("prov-thing")
    policy_name = unique_name("prov-policy")

    thing = iot.create_thing(thingName=thing_name)
    assert thing["thingName"] == thing_name
    assert thing["thingArn"] == endpoints.arn(f"thing/{thing_name}")
    assert thing["thingId"]

    keys = iot.create_keys_and_certificate(setAsActive=True)
    cert_id = keys["certificateId"]
    assert len(cert_id) == 64 and all(c in "0123456789abcdef" for c in cert_id), cert_id
    assert keys["certificateArn"] == endpoints.arn(f"cert/{cert_id}")
    assert keys["certificatePem"].startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY-----" in keys["keyPair"]["PrivateKey"]
    assert "PUBLIC KEY-----" in keys["keyPair"]["PublicKey"]
    assert iot.describe_certificate(certificateId=cert_id)["certificateDescription"]["status"] == "ACTIVE"

    document = thing_policy_document(endpoints)
    policy = iot.create_policy(policyName=policy_name, policyDocument=document)
    assert policy["policyName"] == policy_name
    assert policy["policyArn"] == endpoints.arn(f"policy/{policy_name}")
    assert json.loads(policy["policyDocument"]) == json.loads(document)
    assert policy["policyVersionId"] == "1"

    iot.attach_policy(policyName=policy_name, target=keys["certificateArn"])
    iot.attach_thing_principal(thingName=thing_name, principal=keys["certificateArn"])

    attached = iot.list_attached_policies(target=keys["certificateArn"])["policies"]
    assert [p["policyName"] for p in attached] == [policy_name]
    assert iot.list_thing_principals(thingName=thing_name)["principals"] == [keys["certificateArn"]]

    endpoint = iot.describe_endpoint(endpointType="iot:Data-ATS")
    # AWS returns the host only; the local cloud's broker host is loopback.
    assert endpoint["endpointAddress"] == endpoints.mqtt_host

    # The provisioned identity is usable: the SDK connects with client id = thing name.
    cert_path = tmp_path / "cert.pem"
    key_path = tmp_path / "key.pem"
    cert_path.write_text(keys["certificatePem"])
    key_path.write_text(keys["keyPair"]["PrivateKey"])
    device = Device(
        thing_name=thing_name,
        thing_arn=thing["thingArn"],
        certificate_id=cert_id,
        certificate_arn=keys["certificateArn"],
        cert_path=str(cert_path),
        key_path=str(key_path),
        policy_name=policy_name,
    )
    connection = connect_device(endpoints, device, ConnectionEvents())
    connection.disconnect().result(timeout=5)


def test_thing_scoped_policy_refuses_a_client_id_other_than_the_thing_name(device, endpoints):
    # `client/${iot:Connection.Thing.ThingName}` only matches when the client
    # id is the name of a thing attached to the certificate.
    other = f"{device.thing_name}-other"
    with pytest.raises(Exception) as refused:
        connect_device(endpoints, device, ConnectionEvents(), client_id=other)
    assert_connect_not_authorized(refused.value)
    # On the wire: CONNACK 5, not authorized.
    assert connack_return_code(endpoints, device, client_id=other) == 5
    assert connack_return_code(endpoints, device) == 0

