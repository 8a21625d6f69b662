"""boto3 against the local cloud's Greengrass V2 components (botocore's `greengrassv2`
model): the control plane on the shared HTTP endpoint, and the cores' data plane over
mutual TLS with a device certificate (botocore's `client_cert`), unsigned as the nucleus
calls it. Artifacts go to the local S3 first."""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.request

import boto3
import botocore
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from support import boto_client, provision_device, s3_client, unique_name

ARTIFACT = b"#!/bin/sh\necho hello from boto3\n"


def _error(excinfo) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def _recipe(name: str, version: str, uri: str, os: str = "linux") -> str:
    return json.dumps(
        {
            "RecipeFormatVersion": "2020-01-25",
            "ComponentName": name,
            "ComponentVersion": version,
            "ComponentPublisher": "Conformance",
            "Manifests": [
                {
                    "Platform": {"os": os},
                    "Lifecycle": {"Run": "sh {artifacts:path}/hello.sh"},
                    "Artifacts": [{"URI": uri}],
                }
            ],
        }
    )


@pytest.fixture(scope="module")
def gg(endpoints):
    """boto3 `greengrassv2` (control plane) client."""
    return boto_client(endpoints, "greengrassv2")


@pytest.fixture(scope="module")
def artifact_uri(endpoints) -> str:
    s3 = s3_client(endpoints)
    bucket = unique_name("gg-artifacts")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="hello.sh", Body=ARTIFACT)
    return f"s3://{bucket}/hello.sh"


def test_component_versions_are_created_described_listed_and_deleted(gg, artifact_uri):
    name = unique_name("com.example.Conf")
    created = gg.create_component_version(inlineRecipe=_recipe(name, "1.0.0", artifact_uri).encode())
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["status"]["componentState"] == "REQUESTED"
    arn = created["arn"]
    assert arn.endswith(f":components:{name}:versions:1.0.0")

    described = gg.describe_component(arn=arn)
    assert described["status"]["componentState"] == "DEPLOYABLE"
    assert described["platforms"][0]["attributes"] == {"os": "linux"}

    recipe = json.loads(gg.get_component(arn=arn, recipeOutputFormat="JSON")["recipe"])
    artifact = recipe["Manifests"][0]["Artifacts"][0]
    assert artifact["Digest"] == base64.b64encode(hashlib.sha256(ARTIFACT).digest()).decode()
    assert artifact["Algorithm"] == "SHA-256"
    as_yaml = gg.get_component(arn=arn, recipeOutputFormat="YAML")["recipe"].decode()
    assert f"ComponentName: {name}" in as_yaml and f"Digest: {artifact['Digest']}" in as_yaml, as_yaml

    gg.create_component_version(inlineRecipe=_recipe(name, "1.1.0", artifact_uri).encode())
    component_arn = arn.rsplit(":versions:", 1)[0]
    versions = gg.list_component_versions(arn=component_arn)["componentVersions"]
    assert [v["componentVersion"] for v in versions] == ["1.1.0", "1.0.0"]
    listed = [c for c in gg.list_components()["components"] if c["componentName"] == name]
    assert listed[0]["latestVersion"]["componentVersion"] == "1.1.0"

    with pytest.raises(ClientError) as excinfo:
        gg.create_component_version(inlineRecipe=_recipe(name, "1.0.0", artifact_uri).encode())
    assert _error(excinfo) == ("ConflictException", 409)

    gg.delete_component(arn=arn)
    with pytest.raises(ClientError) as excinfo:
        gg.describe_component(arn=arn)
    assert _error(excinfo) == ("ResourceNotFoundException", 404)


def test_bad_recipes_are_validation_errors_and_missing_artifacts_fail_the_version(gg, artifact_uri):
    for text in [b"ComponentName: [unclosed", b'{"RecipeFormatVersion": "2020-01-25"}', b'{"unclosed": ']:
        with pytest.raises(ClientError) as excinfo:
            gg.create_component_version(inlineRecipe=text)
        assert _error(excinfo) == ("ValidationException", 400)
        assert excinfo.value.response.get("reason") in ("CANNOT_PARSE", "FIELD_VALIDATION_FAILED")

    name = unique_name("com.example.Missing")
    missing = artifact_uri.rsplit("/", 1)[0] + "/missing.sh"
    arn = gg.create_component_version(inlineRecipe=_recipe(name, "1.0.0", missing).encode())["arn"]
    status = gg.describe_component(arn=arn)["status"]
    assert status["componentState"] == "FAILED"
    assert missing in status["errors"]


def test_the_data_plane_answers_a_core_over_mutual_tls_by_its_certificate_policy(
    gg, iot, endpoints, artifact_uri, local_cloud, tmp_path
):
    name = unique_name("com.example.Core")
    gg.create_component_version(inlineRecipe=_recipe(name, "1.0.0", artifact_uri).encode())
    gg.create_component_version(inlineRecipe=_recipe(name, "2.0.0", artifact_uri, os="windows").encode())
    data_plane = json.loads((local_cloud.data_dir / "endpoints.json").read_text())["greengrassDataPlane"]

    def client(device):
        session = boto3.session.Session(region_name=endpoints.region)
        config = Config(
            signature_version=botocore.UNSIGNED,
            client_cert=(device.cert_path, device.key_path),
            retries={"max_attempts": 1, "mode": "standard"},
        )
        return session.client("greengrassv2", endpoint_url=data_plane, verify=endpoints.ca_file, config=config)

    allowed = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["greengrass:*"], "Resource": "*"}],
    }
    core = client(provision_device(iot, endpoints, tmp_path / "core", "conf-core", json.dumps(allowed)))
    candidates = [{"componentName": name, "versionRequirements": {"dependent": ">=1.0.0"}}]
    platform = {"attributes": {"os": "linux", "architecture": "amd64"}}
    resolved = core.resolve_component_candidates(platform=platform, componentCandidates=candidates)
    chosen = resolved["resolvedComponentVersions"][0]
    assert chosen["componentVersion"] == "1.0.0"
    recipe = json.loads(chosen["recipe"])

    url = core.get_component_version_artifact(arn=chosen["arn"], artifactName="hello.sh")["preSignedUrl"]
    with urllib.request.urlopen(url, timeout=30) as response:
        body = response.read()
    assert base64.b64encode(hashlib.sha256(body).digest()).decode() == recipe["Manifests"][0]["Artifacts"][0]["Digest"]

    iot_only = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["iot:*"], "Resource": "*"}],
    }
    refused = client(provision_device(iot, endpoints, tmp_path / "other", "conf-core", json.dumps(iot_only)))
    with pytest.raises(ClientError) as excinfo:
        refused.resolve_component_candidates(platform=platform, componentCandidates=candidates)
    assert _error(excinfo) == ("AccessDeniedException", 403)
