"""Scoped credentials as AWS's own clients see them: IAM roles and inline policies through
boto3's `iam` client (awsQuery), role aliases through boto3's `iot`, the AWS IoT credentials
provider called over mutual TLS as a device calls it, and botocore's SigV4 against the
local cloud's verifier (the administrator's key accepted, a wrong secret or key refused with
AWS's error codes, temporary credentials refused outside their role's scope)."""

import json
import ssl
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

from support import boto_client, provision_device, s3_client, unique_name

TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "credentials.iot.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}


def _code(error: ClientError) -> str:
    return error.response["Error"]["Code"]


@pytest.fixture(scope="module")
def iam(endpoints):
    return boto_client(endpoints, "iam")


def test_iam_roles_and_inline_policies_round_trip_through_boto3(iam):
    name = unique_name("conf-role")
    created = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST), Description="conformance")
    assert created["Role"]["Arn"].endswith(f":role/{name}")
    # botocore decodes the URL-encoded document IAM sends back into a dict.
    assert iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"] == TRUST
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:PutObject", "Resource": "*"}]}
    iam.put_role_policy(RoleName=name, PolicyName="put", PolicyDocument=json.dumps(policy))
    assert iam.list_role_policies(RoleName=name)["PolicyNames"] == ["put"]
    assert iam.get_role_policy(RoleName=name, PolicyName="put")["PolicyDocument"] == policy
    assert any(r["RoleName"] == name for r in iam.list_roles()["Roles"])

    with pytest.raises(ClientError) as refused:
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST))
    assert _code(refused.value) == "EntityAlreadyExists"
    with pytest.raises(ClientError) as refused:
        iam.put_role_policy(RoleName=name, PolicyName="bad", PolicyDocument="{not json")
    assert _code(refused.value) == "MalformedPolicyDocument"
    with pytest.raises(ClientError) as refused:
        iam.delete_role(RoleName=name)
    assert _code(refused.value) == "DeleteConflict"
    iam.delete_role_policy(RoleName=name, PolicyName="put")
    iam.delete_role(RoleName=name)
    with pytest.raises(ClientError) as refused:
        iam.get_role(RoleName=name)
    assert _code(refused.value) == "NoSuchEntity"


def test_botocore_signatures_are_verified_and_bad_ones_refused_with_aws_codes(endpoints):
    # The administrator's pair works for every service; a wrong secret or unknown key does not.
    boto_client(endpoints, "iot").list_things()
    boto_client(endpoints, "greengrassv2").list_components()
    cases = [
        ("iot", lambda c: c.list_things(), {"wrong": "InvalidSignatureException", "unknown": "UnrecognizedClientException"}),
        ("iot-data", lambda c: c.get_thing_shadow(thingName="x"), {"wrong": "InvalidSignatureException", "unknown": "UnrecognizedClientException"}),
        ("greengrassv2", lambda c: c.list_components(), {"wrong": "InvalidSignatureException", "unknown": "UnrecognizedClientException"}),
        ("iam", lambda c: c.list_roles(), {"wrong": "SignatureDoesNotMatch", "unknown": "InvalidClientTokenId"}),
    ]
    for service, call, codes in cases:
        for kind, (key, secret) in {
            "wrong": (endpoints.access_key_id, "not-the-secret"),
            "unknown": ("AKIAUNKNOWNKEY000000", endpoints.secret_access_key),
        }.items():
            with pytest.raises(ClientError) as refused:
                call(boto_client(endpoints, service, access_key_id=key, secret_access_key=secret))
            assert _code(refused.value) == codes[kind], (service, kind, refused.value.response)
            assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403, (service, kind)
    with pytest.raises(ClientError) as refused:
        s3_client(endpoints, secret_access_key="not-the-secret").list_buckets()
    assert _code(refused.value) == "SignatureDoesNotMatch"


def _credentials(endpoints, device, alias: str, thing: str | None):
    """GET /role-aliases/{alias}/credentials over mutual TLS: status and parsed body."""
    context = ssl.create_default_context(cafile=endpoints.ca_file)
    context.load_cert_chain(device.cert_path, device.key_path)
    request = urllib.request.Request(f"{endpoints.credentials_provider}/role-aliases/{alias}/credentials")
    if thing:
        request.add_header("x-amzn-iot-thingname", thing)
    try:
        with urllib.request.urlopen(request, context=context, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_device_trades_its_certificate_for_credentials_scoped_by_its_role(iam, iot, endpoints, s3, tmp_path):
    bucket = unique_name("conf-uploads")
    s3.create_bucket(Bucket=bucket)
    role_name, alias = unique_name("conf-analyzer-role"), unique_name("conf-alias")
    role = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]
    scoped = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": f"arn:aws:s3:::{bucket}/anomalies/${{credentials-iot:ThingName}}/*",
            }
        ],
    }
    iam.put_role_policy(RoleName=role_name, PolicyName="uploads", PolicyDocument=json.dumps(scoped))
    created = iot.create_role_alias(roleAlias=alias, roleArn=role["Arn"], credentialDurationSeconds=900)
    assert created["roleAliasArn"] == endpoints.arn(f"rolealias/{alias}")
    assert iot.describe_role_alias(roleAlias=alias)["roleAliasDescription"]["roleArn"] == role["Arn"]
    assert alias in iot.list_role_aliases()["roleAliases"]
    assert iot.describe_endpoint(endpointType="iot:CredentialProvider")["endpointAddress"]

    assume = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:AssumeRoleWithCertificate", "Resource": endpoints.arn(f"rolealias/{alias}")}
        ],
    }
    device = provision_device(iot, endpoints, tmp_path / "site", "conf-site", json.dumps(assume))
    other = provision_device(iot, endpoints, tmp_path / "other", "conf-other")

    status, body = _credentials(endpoints, other, alias, other.thing_name)
    assert status == 403, body
    status, body = _credentials(endpoints, device, alias, other.thing_name)
    assert status == 403, body
    status, body = _credentials(endpoints, device, alias, device.thing_name)
    assert status == 200, body
    credentials = body["credentials"]
    assert credentials["accessKeyId"].startswith("ASIA") and credentials["expiration"].endswith("Z")

    session = dict(
        access_key_id=credentials["accessKeyId"],
        secret_access_key=credentials["secretAccessKey"],
        session_token=credentials["sessionToken"],
    )
    uploads = boto_client(endpoints, "s3", **session)
    uploads.put_object(Bucket=bucket, Key=f"anomalies/{device.thing_name}/window.json", Body=b"{}")
    for refused_call in (
        lambda: uploads.put_object(Bucket=bucket, Key=f"anomalies/{other.thing_name}/window.json", Body=b"{}"),
        lambda: uploads.get_object(Bucket=bucket, Key=f"anomalies/{device.thing_name}/window.json"),
    ):
        with pytest.raises(ClientError) as refused:
            refused_call()
        assert _code(refused.value) == "AccessDenied"
    with pytest.raises(ClientError) as refused:
        boto_client(endpoints, "iot", **session).list_things()
    assert _code(refused.value) == "AccessDeniedException"
    with pytest.raises(ClientError) as refused:
        boto_client(endpoints, "iam", **session).list_roles()
    assert _code(refused.value) == "AccessDenied"
