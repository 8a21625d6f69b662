"""boto3 against the local cloud's Lambda (botocore's `lambda` model): a function on the
`provided.al2023` runtime whose bootstrap is a Python runtime that itself uses boto3 inside the
function, reaching the local cloud through `AWS_ENDPOINT_URL` with its execution role's
credentials (publish allowed by the role's policy, ListThings not)."""

from __future__ import annotations

import io
import json
import sys
import zipfile

import pytest
from botocore.exceptions import ClientError

from support import boto_client, unique_name

TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}

# The runtime loop, with boto3 in the handler. Standard library and boto3 only; it runs with the
# interpreter running the tests, which has boto3 (the local cloud passes its own PATH on, which
# need not lead to it).
BOOTSTRAP = f"#!{sys.executable}\n" + """
import json, os, urllib.request
import boto3
from botocore.exceptions import ClientError

API = "http://%s/2018-06-01/runtime" % os.environ["AWS_LAMBDA_RUNTIME_API"]
while True:
    with urllib.request.urlopen(API + "/invocation/next") as r:
        request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read())
    result = {"greeting": os.environ.get("GREETING"), "event": event}
    data = boto3.client("iot-data")
    data.publish(topic="lambda/conformance", payload=json.dumps(event).encode())
    result["published"] = True
    try:
        boto3.client("iot").list_things()
        result["list_things"] = "allowed"
    except ClientError as e:
        result["list_things"] = e.response["Error"]["Code"]
    body = json.dumps(result).encode()
    urllib.request.urlopen(urllib.request.Request(API + "/invocation/%s/response" % request_id, data=body, method="POST")).read()
"""


def _package(files: dict[str, tuple[int, str]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, (mode, text) in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16
            archive.writestr(info, text)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def role_arn(endpoints) -> str:
    iam = boto_client(endpoints, "iam")
    name = unique_name("fn-role")
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]["Arn"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "iot:Publish",
                "Resource": f"arn:aws:iot:{endpoints.region}:{endpoints.account_id}:topic/lambda/*",
            }
        ],
    }
    iam.put_role_policy(RoleName=name, PolicyName="publish", PolicyDocument=json.dumps(policy))
    return arn


def test_a_custom_runtime_function_uses_boto3_with_its_role_inside_the_local_cloud(endpoints, role_arn):
    lam = boto_client(endpoints, "lambda")
    name = unique_name("fn")
    created = lam.create_function(
        FunctionName=name,
        Runtime="provided.al2023",
        Role=role_arn,
        Handler="handler",
        Timeout=30,
        Environment={"Variables": {"GREETING": "hello"}},
        Code={"ZipFile": _package({"bootstrap": (0o755, BOOTSTRAP)})},
    )
    assert created["State"] == "Active" and created["Version"] == "$LATEST"
    out = lam.invoke(FunctionName=name, Payload=json.dumps({"pump": "p-1"}).encode())
    body = json.loads(out["Payload"].read())
    assert out["StatusCode"] == 200 and "FunctionError" not in out, body
    assert body == {"greeting": "hello", "event": {"pump": "p-1"}, "published": True, "list_things": "AccessDeniedException"}
    event = lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")
    assert event["StatusCode"] == 202
    lam.delete_function(FunctionName=name)
    with pytest.raises(ClientError) as excinfo:
        lam.get_function(FunctionName=name)
    assert excinfo.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_packages_without_bootstrap_and_managed_runtimes_are_refused(endpoints, role_arn):
    lam = boto_client(endpoints, "lambda")
    for runtime, files in [
        ("provided.al2023", {"main.py": (0o755, "print(1)")}),
        ("python3.12", {"bootstrap": (0o755, BOOTSTRAP)}),
    ]:
        with pytest.raises(ClientError) as excinfo:
            lam.create_function(
                FunctionName=unique_name("refused"),
                Runtime=runtime,
                Role=role_arn,
                Handler="h",
                Code={"ZipFile": _package(files)},
            )
        response = excinfo.value.response
        assert (response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]) == (
            "InvalidParameterValueException",
            400,
        )
