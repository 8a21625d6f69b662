"""Fleet provisioning by claim with AWS's own clients: boto3's `iot` client manages the
template (CreateProvisioningTemplate and its versions) and makes a claim with
CreateProvisioningClaim; awsiotsdk's `IotIdentityClient` (the client the AWS IoT Device SDK's
fleet-provisioning sample uses) creates keys over MQTT and registers the thing (JSON); the
device then connects as its new thing."""

import json

import pytest
from awscrt import mqtt
from awsiot import iotidentity

from support import ConnectionEvents, Device, Mailbox, connect_device, unique_name

ROLE = "arn:aws:iam::000000000000:role/IoTProvisioning"


def _template_body(group: str) -> str:
    return json.dumps(
        {
            "Parameters": {"SerialNumber": {"Type": "String"}},
            "Resources": {
                "thing": {
                    "Type": "AWS::IoT::Thing",
                    "Properties": {
                        "ThingName": {"Fn::Join": ["", ["conf-pump-", {"Ref": "SerialNumber"}]]},
                        "AttributePayload": {"serial": {"Ref": "SerialNumber"}},
                        "ThingGroups": [group],
                    },
                },
                "certificate": {
                    "Type": "AWS::IoT::Certificate",
                    "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"},
                },
                "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "ConfFleetDevicePolicy"}},
            },
            "DeviceConfiguration": {"site": group},
        }
    )


@pytest.fixture(scope="module")
def template(iot, endpoints):
    name = unique_name("ConfFleet").replace(".", "-")[:36]
    group = unique_name("conf-site")
    iot.create_thing_group(thingGroupName=group)
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "iot:Connect", "Resource": endpoints.arn("client/${iot:Connection.Thing.ThingName}")},
                {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": endpoints.arn("topic/conf/${iot:Connection.Thing.ThingName}")},
            ],
        }
    )
    try:
        iot.create_policy(policyName="ConfFleetDevicePolicy", policyDocument=policy)
    except iot.exceptions.ResourceAlreadyExistsException:
        pass
    created = iot.create_provisioning_template(
        templateName=name, templateBody=_template_body(group), enabled=True, provisioningRoleArn=ROLE
    )
    assert created["templateName"] == name
    assert created["defaultVersionId"] == 1
    assert created["templateArn"] == endpoints.arn(f"provisioningtemplate/{name}")
    return name, group


def test_boto3_manages_templates_and_their_versions(iot, template):
    name, group = template
    described = iot.describe_provisioning_template(templateName=name)
    assert described["enabled"] is True
    assert described["provisioningRoleArn"] == ROLE
    assert json.loads(described["templateBody"])["DeviceConfiguration"] == {"site": group}
    assert any(t["templateName"] == name for t in iot.list_provisioning_templates()["templates"])

    v2 = iot.create_provisioning_template_version(templateName=name, templateBody=_template_body(group), setAsDefault=False)
    assert (v2["versionId"], v2["isDefaultVersion"]) == (2, False)
    versions = iot.list_provisioning_template_versions(templateName=name)["versions"]
    assert [(v["versionId"], v["isDefaultVersion"]) for v in versions] == [(1, True), (2, False)]
    with pytest.raises(iot.exceptions.DeleteConflictException):
        iot.delete_provisioning_template_version(templateName=name, versionId=1)
    iot.delete_provisioning_template_version(templateName=name, versionId=2)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_provisioning_template_version(templateName=name, versionId=2)
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.create_provisioning_template(
            templateName=unique_name("Bad")[:36], templateBody="{not json", provisioningRoleArn=ROLE
        )


def test_awsiotsdk_provisions_a_device_by_claim(iot, endpoints, template, tmp_path):
    name, group = template
    claim = iot.create_provisioning_claim(templateName=name)
    assert claim["expiration"], claim
    cert_path, key_path = tmp_path / "claim.pem", tmp_path / "claim.key"
    cert_path.write_text(claim["certificatePem"])
    key_path.write_text(claim["keyPair"]["PrivateKey"])
    claim_device = Device(
        thing_name=unique_name("claim"),
        thing_arn="",
        certificate_id=claim["certificateId"],
        certificate_arn="",
        cert_path=str(cert_path),
        key_path=str(key_path),
        policy_name="",
    )
    connection = connect_device(endpoints, claim_device, ConnectionEvents())
    try:
        identity = iotidentity.IotIdentityClient(connection)
        keys_ok, keys_err = Mailbox("create-keys accepted"), Mailbox("create-keys rejected")
        reg_ok, reg_err = Mailbox("register accepted"), Mailbox("register rejected")
        sub = iotidentity.CreateKeysAndCertificateSubscriptionRequest()
        identity.subscribe_to_create_keys_and_certificate_accepted(sub, mqtt.QoS.AT_LEAST_ONCE, keys_ok)[0].result(10)
        identity.subscribe_to_create_keys_and_certificate_rejected(sub, mqtt.QoS.AT_LEAST_ONCE, keys_err)[0].result(10)
        reg_sub = iotidentity.RegisterThingSubscriptionRequest(template_name=name)
        identity.subscribe_to_register_thing_accepted(reg_sub, mqtt.QoS.AT_LEAST_ONCE, reg_ok)[0].result(10)
        identity.subscribe_to_register_thing_rejected(reg_sub, mqtt.QoS.AT_LEAST_ONCE, reg_err)[0].result(10)

        identity.publish_create_keys_and_certificate(
            iotidentity.CreateKeysAndCertificateRequest(), mqtt.QoS.AT_LEAST_ONCE
        ).result(10)
        created = keys_ok.expect("the new certificate")
        assert created.certificate_pem.startswith("-----BEGIN CERTIFICATE-----")
        assert iot.describe_certificate(certificateId=created.certificate_id)["certificateDescription"]["status"] == (
            "PENDING_ACTIVATION"
        )

        # A bad token is rejected with the documented error shape.
        identity.publish_register_thing(
            iotidentity.RegisterThingRequest(
                template_name=name, certificate_ownership_token="forged", parameters={"SerialNumber": "1"}
            ),
            mqtt.QoS.AT_LEAST_ONCE,
        ).result(10)
        error = reg_err.expect("a rejection")
        assert error.status_code == 400 and error.error_code and error.error_message

        serial = unique_name("sn").replace(".", "-")
        identity.publish_register_thing(
            iotidentity.RegisterThingRequest(
                template_name=name,
                certificate_ownership_token=created.certificate_ownership_token,
                parameters={"SerialNumber": serial},
            ),
            mqtt.QoS.AT_LEAST_ONCE,
        ).result(10)
        registered = reg_ok.expect("the registered thing")
        assert registered.thing_name == f"conf-pump-{serial}"
        assert registered.device_configuration == {"site": group}
        assert keys_err.snapshot() == []
    finally:
        connection.disconnect().result(10)

    assert iot.describe_certificate(certificateId=created.certificate_id)["certificateDescription"]["status"] == "ACTIVE"
    groups = iot.list_thing_groups_for_thing(thingName=registered.thing_name)["thingGroups"]
    assert [g["groupName"] for g in groups] == [group]

    new_cert, new_key = tmp_path / "device.pem", tmp_path / "device.key"
    new_cert.write_text(created.certificate_pem)
    new_key.write_text(created.private_key)
    device = Device(
        thing_name=registered.thing_name,
        thing_arn="",
        certificate_id=created.certificate_id,
        certificate_arn="",
        cert_path=str(new_cert),
        key_path=str(new_key),
        policy_name="ConfFleetDevicePolicy",
    )
    connection = connect_device(endpoints, device, ConnectionEvents())
    connection.disconnect().result(10)
