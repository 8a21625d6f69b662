"""Greengrass deployments with boto3's `greengrassv2` client: CreateDeployment to
a thing and to a thing group, GetDeployment with the policies' defaults filled
in, ListDeployments with its history filter, CancelDeployment and
DeleteDeployment with the ConflictException AWS documents ("to delete an
active deployment, you must first cancel it"), and the ResourceNotFound and
Validation exceptions of unknown deployments, cores and targets and of a merge
that is not a JSON object; and GetCoreDevice, ListCoreDevices,
ListInstalledComponents and ListEffectiveDeployments after a core (awsiotsdk
over MQTT) published its fleet status. The whole deployment conversation of a
core is played with the Rust SDK (cloud/local/tests/deployments_sdk)."""

import json
import time

import pytest
from awscrt import mqtt
from botocore.exceptions import ClientError

from support import EVENT_TIMEOUT_S, boto_client, provision_device, unique_name


def _error(excinfo) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture(scope="module")
def gg(endpoints):
    return boto_client(endpoints, "greengrassv2")


@pytest.fixture
def component(gg):
    """A deployable component version with no artifacts."""
    name = f"com.example.{unique_name('deploy')}"
    recipe = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": "1.0.0",
        "ComponentPublisher": "Example",
        "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "true"}}],
    }
    gg.create_component_version(inlineRecipe=json.dumps(recipe).encode())
    return name


@pytest.fixture
def targets(iot, endpoints):
    thing, group = unique_name("core"), unique_name("cores")
    iot.create_thing(thingName=thing)
    iot.create_thing_group(thingGroupName=group)
    iot.add_thing_to_thing_group(thingGroupName=group, thingName=thing)
    return endpoints.arn(f"thing/{thing}"), endpoints.arn(f"thinggroup/{group}")


def test_a_group_deployment_gets_a_job_and_a_new_revision_replaces_it(gg, component, targets):
    _, group_arn = targets
    spec = {component: {"componentVersion": "1.0.0", "configurationUpdate": {"merge": '{"pollMs": 500}'}}}
    first = gg.create_deployment(targetArn=group_arn, deploymentName="first", components=spec)
    assert first["iotJobId"] and first["iotJobArn"].endswith(f"job/{first['iotJobId']}")

    got = gg.get_deployment(deploymentId=first["deploymentId"])
    assert got["targetArn"] == group_arn
    assert got["revisionId"] == "1"
    assert got["deploymentStatus"] == "ACTIVE"
    assert got["isLatestForTarget"] is True
    assert got["components"][component]["configurationUpdate"]["merge"] == '{"pollMs": 500}'
    assert got["deploymentPolicies"] == {
        "failureHandlingPolicy": "ROLLBACK",
        "componentUpdatePolicy": {"timeoutInSeconds": 60, "action": "NOTIFY_COMPONENTS"},
        "configurationValidationPolicy": {"timeoutInSeconds": 30},
    }

    second = gg.create_deployment(
        targetArn=group_arn,
        deploymentName="second",
        components={component: {"componentVersion": "1.0.0"}},
        deploymentPolicies={"failureHandlingPolicy": "DO_NOTHING"},
    )
    old = gg.get_deployment(deploymentId=first["deploymentId"])
    assert (old["deploymentStatus"], old["isLatestForTarget"]) == ("INACTIVE", False)
    latest = gg.list_deployments(targetArn=group_arn)["deployments"]
    assert [d["deploymentId"] for d in latest] == [second["deploymentId"]]
    history = gg.list_deployments(targetArn=group_arn, historyFilter="ALL")["deployments"]
    assert [d["revisionId"] for d in history] == ["1", "2"]


def test_cancel_then_delete_and_the_documented_conflicts(gg, component, targets):
    thing_arn, _ = targets
    created = gg.create_deployment(targetArn=thing_arn, components={component: {"componentVersion": "1.0.0"}})
    deployment_id = created["deploymentId"]
    assert "iotJobId" not in created

    with pytest.raises(ClientError) as active:
        gg.delete_deployment(deploymentId=deployment_id)
    assert _error(active) == ("ConflictException", 409)

    gg.cancel_deployment(deploymentId=deployment_id)
    assert gg.get_deployment(deploymentId=deployment_id)["deploymentStatus"] == "CANCELED"
    with pytest.raises(ClientError) as twice:
        gg.cancel_deployment(deploymentId=deployment_id)
    assert _error(twice) == ("ConflictException", 409)

    gg.delete_deployment(deploymentId=deployment_id)
    with pytest.raises(ClientError) as gone:
        gg.get_deployment(deploymentId=deployment_id)
    assert _error(gone) == ("ResourceNotFoundException", 404)


def test_unknown_resources_and_bad_requests_are_refused(gg, component, targets, endpoints):
    thing_arn, _ = targets
    with pytest.raises(ClientError) as unknown:
        gg.get_deployment(deploymentId="1f2e3d4c-0000-4000-8000-000000000000")
    assert _error(unknown) == ("ResourceNotFoundException", 404)

    with pytest.raises(ClientError) as no_core:
        gg.get_core_device(coreDeviceThingName=unique_name("never-reported"))
    assert _error(no_core) == ("ResourceNotFoundException", 404)

    with pytest.raises(ClientError) as no_target:
        gg.create_deployment(
            targetArn=endpoints.arn(f"thinggroup/{unique_name('nope')}"),
            components={component: {"componentVersion": "1.0.0"}},
        )
    assert _error(no_target) == ("ResourceNotFoundException", 404)

    with pytest.raises(ClientError) as bad_merge:
        gg.create_deployment(
            targetArn=thing_arn,
            components={component: {"componentVersion": "1.0.0", "configurationUpdate": {"merge": "[1, 2]"}}},
        )
    assert _error(bad_merge) == ("ValidationException", 400)
    assert bad_merge.value.response["reason"] == "FIELD_VALIDATION_FAILED"

    with pytest.raises(ClientError) as bad_filter:
        gg.list_installed_components(coreDeviceThingName="x", topologyFilter="SOME")
    assert _error(bad_filter)[1] == 400
    assert gg.list_deployments(targetArn=thing_arn)["deployments"] == []


def _core_policy(endpoints) -> str:
    """Connect as the thing and publish its fleet status (as AWS's minimal core policy allows)."""
    thing = "${iot:Connection.Thing.ThingName}"
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "iot:Connect", "Resource": endpoints.arn(f"client/{thing}")},
                {
                    "Effect": "Allow",
                    "Action": "iot:Publish",
                    "Resource": endpoints.arn(f"topic/$aws/things/{thing}/greengrassv2/health/json"),
                },
            ],
        }
    )


def test_core_device_operations_show_what_a_core_reported(gg, iot, endpoints, component, connect, tmp_path):
    core = provision_device(iot, endpoints, tmp_path, prefix="gg-core", policy_document=_core_policy(endpoints))
    group = unique_name("cores")
    iot.create_thing_group(thingGroupName=group)
    iot.add_thing_to_thing_group(thingGroupName=group, thingName=core.thing_name)
    created = gg.create_deployment(
        targetArn=endpoints.arn(f"thinggroup/{group}"), components={component: {"componentVersion": "1.0.0"}}
    )
    status = {
        "ggcVersion": "2.14.0",
        "platform": "linux",
        "architecture": "amd64",
        "thing": core.thing_name,
        "overallDeviceStatus": "HEALTHY",
        "sequenceNumber": 1,
        "timestamp": int(time.time() * 1000),
        "messageType": "PARTIAL",
        "trigger": "THING_GROUP_DEPLOYMENT",
        "components": [
            {"componentName": component, "version": "1.0.0", "status": "RUNNING", "isRoot": True, "fleetConfigArns": []}
        ],
        "deploymentInformation": {"status": "SUCCEEDED", "deploymentId": created["deploymentId"]},
    }
    connection = connect(core)
    published, _ = connection.publish(
        topic=f"$aws/things/{core.thing_name}/greengrassv2/health/json",
        payload=json.dumps(status),
        qos=mqtt.QoS.AT_LEAST_ONCE,
    )
    published.result(timeout=EVENT_TIMEOUT_S)

    # The service applies reports in order off the broker: wait until the core shows.
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while True:
        try:
            device = gg.get_core_device(coreDeviceThingName=core.thing_name)
            break
        except ClientError as e:
            assert e.response["Error"]["Code"] == "ResourceNotFoundException", e.response
            assert time.monotonic() < deadline, "the core's report never showed"
            time.sleep(0.02)
    assert (device["coreVersion"], device["status"], device["platform"]) == ("2.14.0", "HEALTHY", "linux")
    listed = gg.list_core_devices(thingGroupArn=endpoints.arn(f"thinggroup/{group}"))["coreDevices"]
    assert [d["coreDeviceThingName"] for d in listed] == [core.thing_name]
    installed = gg.list_installed_components(coreDeviceThingName=core.thing_name)["installedComponents"]
    assert [(c["componentName"], c["lifecycleState"], c["lastInstallationSource"]) for c in installed] == [
        (component, "RUNNING", created["deploymentId"])
    ]
    effective = gg.list_effective_deployments(coreDeviceThingName=core.thing_name)["effectiveDeployments"]
    assert [e["deploymentId"] for e in effective] == [created["deploymentId"]], effective
    assert effective[0]["coreDeviceExecutionStatus"] == "QUEUED", "the core reported no job status yet"
