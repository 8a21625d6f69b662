"""Deployments that components take part in, judged by AWS's Python IPC client.

`components/python-updates` (awsiotsdk's `GreengrassCoreIPCClientV2`) runs on
`device-sim core`, subscribes to component updates and to configuration
validation, defers each deployment once and validates the proposed
configuration. Deployments must then go as the nucleus runs them:

- a local deployment (`device-sim deployment create`, the Greengrass CLI's) skips
  the update notices, as the nucleus's `DeploymentDocumentConverter` sets
  SKIP_NOTIFY_COMPONENTS for it, but asks for validation;
- a cloud deployment (boto3 `greengrassv2` CreateDeployment, default policies:
  NOTIFY_COMPONENTS) sends the preUpdateEvent, honours the deferral and asks again
  after `recheckAfterMs`, then asks for validation, and sends the postUpdateEvent
  once its update action ran, whatever its outcome (`UpdateSystemPolicyService`);
- a rejected configuration fails the deployment with the component's reason;
- operations out of turn get the nucleus's errors.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from simcore import COMPONENTS_DIR, REPO_ROOT, CloudLink, Component, device_sim_bin
from support import EVENT_TIMEOUT_S, boto_client, provision_device, unique_name

NAME = "com.example.conformance.PythonUpdates"
VERSION = "1.0.0"
SOURCE = COMPONENTS_DIR / "python-updates"
REJECTION = "limit must be a number up to 100"


def component() -> Component:
    return Component(NAME, VERSION, SOURCE / "recipe.yaml", (SOURCE / "component.py",))


def journal(core) -> list[dict]:
    try:
        text = (core.root / "work" / NAME / "journal.jsonl").read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def wait_until(core, what: str, probe, timeout: float = EVENT_TIMEOUT_S):
    """Polls `probe()` until it returns something truthy; fails with the logs when it does not in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if core.process.poll() is not None:
            pytest.fail(f"device-sim core exited:\n{core.diagnostics()}", pytrace=False)
        found = probe()
        if found:
            return found
        time.sleep(0.1)
    pytest.fail(f"{what} not seen; journal {journal(core)}:\n{core.diagnostics()}", pytrace=False)


def ready(core) -> dict:
    return wait_until(core, "the component's first entry", lambda: next((e for e in journal(core) if e.get("ready")), None))


def entries_of(core, *ids: str) -> list[tuple[str, dict]]:
    """The journal's entries about a deployment known by `ids`, as (kind, entry)."""
    found = []
    for e in journal(core):
        for kind in ("pre", "validate", "post"):
            if e.get(kind) in ids:
                found.append((kind, e))
    return found


# --- Local deployments ---------------------------------------------------------------


def cli(core, *args: str) -> str:
    done = subprocess.run(
        [str(device_sim_bin()), "deployment", *args, "--root", str(core.root)],
        capture_output=True,
        text=True,
        timeout=EVENT_TIMEOUT_S,
    )
    assert done.returncode == 0, f"deployment {args}: {done.stdout}{done.stderr}"
    return done.stdout


def local_deployment(core, limit) -> str:
    out = cli(core, "create", "--update-config", json.dumps({NAME: {"MERGE": {"limit": limit}}}))
    return out.strip().rsplit(" ", 1)[-1]


def local_outcome(core, deployment_id: str) -> dict:
    """`deployment status` once terminal: {status, Detailed Status, Failure Cause, …}."""

    def terminal():
        first, *rest = cli(core, "status", deployment_id).splitlines()
        status = {"status": first.split(": ", 1)[1]}
        status.update(line.strip().split(": ", 1) for line in rest if ": " in line)
        return status if status["status"] in ("SUCCEEDED", "FAILED", "CANCELED") else None

    return wait_until(core, f"the end of {deployment_id}", terminal)


def test_a_local_deployment_skips_the_notices_but_asks_the_component_to_validate(simulated_core):
    core = simulated_core(unique_name("updates"), [component()])
    first = ready(core)
    # Out of turn, the nucleus's errors: nothing to defer, nothing asked to validate.
    assert first["deferWithoutNotice"]["ok"] is False
    assert first["deferWithoutNotice"]["error"]["type"] == "ServiceError", first
    assert "PreComponentUpdateEvent" in first["deferWithoutNotice"]["error"]["message"], first
    assert first["reportWithoutRequest"]["ok"] is False
    assert first["reportWithoutRequest"]["error"]["type"] == "InvalidArgumentsError", first

    accepted = local_deployment(core, 50)
    assert local_outcome(core, accepted)["status"] == "SUCCEEDED"
    seen = entries_of(core, accepted)
    assert [kind for kind, _ in seen] == ["validate"], seen
    assert seen[0][1]["configuration"]["limit"] == 50 and seen[0][1]["status"] == "ACCEPTED", seen

    rejected = local_deployment(core, 500)
    outcome = local_outcome(core, rejected)
    assert outcome["status"] == "FAILED", outcome
    assert REJECTION in outcome.get("Failure Cause", ""), outcome
    assert [e["status"] for kind, e in entries_of(core, rejected)] == ["REJECTED"]


# --- Cloud deployments ---------------------------------------------------------------


def deployments_policy(endpoints) -> str:
    """The shipped core policy for cloud deployments, with a connection for the core."""
    text = (REPO_ROOT / "cloud" / "provision" / "policies" / "greengrass-core-deployments.json").read_text()
    text = text.replace("{{partition}}", "aws").replace("{{region}}", endpoints.region)
    doc = json.loads(text.replace("{{accountId}}", endpoints.account_id))
    doc["Statement"].append(
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": endpoints.arn("client/${iot:Connection.Thing.ThingName}")}
    )
    return json.dumps(doc)


def publish(s3, gg) -> None:
    """The component in the cloud: its artifact in S3, the recipe pointing at it."""
    bucket = unique_name("updates-artifacts").lower()
    key = f"{NAME}/{VERSION}/component.py"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=key, Body=(SOURCE / "component.py").read_bytes())
    recipe = yaml.safe_load((SOURCE / "recipe.yaml").read_text())
    recipe["Manifests"][0]["Artifacts"][0]["URI"] = f"s3://{bucket}/{key}"
    gg.create_component_version(inlineRecipe=json.dumps(recipe).encode())


def cloud_outcome(core, gg, thing: str, deployment_id: str) -> dict:
    """The core's effective deployment `deployment_id` once terminal, as the cloud shows it."""

    def terminal():
        try:
            listed = gg.list_effective_deployments(coreDeviceThingName=thing).get("effectiveDeployments", [])
        except gg.exceptions.ResourceNotFoundException:
            return None  # the core has not reported yet: the cloud knows it from its fleet status
        mine = next((d for d in listed if d["deploymentId"] == deployment_id), None)
        done = mine and mine["coreDeviceExecutionStatus"] in ("SUCCEEDED", "FAILED", "COMPLETED", "CANCELED", "REJECTED")
        return mine if done else None

    return wait_until(core, f"the end of {deployment_id} in the cloud", terminal, timeout=4 * EVENT_TIMEOUT_S)


def test_a_cloud_deployment_is_noticed_deferred_validated_and_followed_by_its_post_event(
    local_cloud, endpoints, iot, s3, simulated_core, tmp_path: Path
):
    gg = boto_client(endpoints, "greengrassv2")
    core_device = provision_device(iot, endpoints, tmp_path / "core", "updates-core", deployments_policy(endpoints))
    thing = core_device.thing_name
    publish(s3, gg)
    link = CloudLink(str(local_cloud.data_dir / "endpoints.json"), core_device.cert_path, core_device.key_path, endpoints.ca_file)
    core = simulated_core(thing, [], link, cloud_deployments=True)
    target = core_device.thing_arn

    def deploy(merge: dict | None) -> tuple[str, str]:
        """CreateDeployment; its deployment id and configuration ARN (what the core took)."""
        spec = {"componentVersion": VERSION}
        if merge is not None:
            spec["configurationUpdate"] = {"merge": json.dumps(merge)}
        deployment_id = gg.create_deployment(targetArn=target, components={NAME: spec})["deploymentId"]
        revision = gg.get_deployment(deploymentId=deployment_id)["revisionId"]
        return deployment_id, f"arn:aws:greengrass:{endpoints.region}:{endpoints.account_id}:configuration:thing/{thing}:{revision}"

    def seen_through_post(ids):
        return wait_until(core, "the postUpdateEvent", lambda: (s := entries_of(core, *ids)) and s[-1][0] == "post" and s)

    first, _ = deploy(None)
    assert cloud_outcome(core, gg, thing, first)["coreDeviceExecutionStatus"] == "SUCCEEDED"
    ready(core)

    # A configuration it accepts: noticed, deferred once, noticed again, validated, applied, post.
    # The notices name the Greengrass deployment; the validation the deployment as the core took
    # it (for a thing deployment, its configuration ARN), as the nucleus names them.
    accepted = deploy({"limit": 50})
    assert cloud_outcome(core, gg, thing, accepted[0])["coreDeviceExecutionStatus"] == "SUCCEEDED"
    seen = seen_through_post(accepted)
    assert [(kind, e[kind]) for kind, e in seen] == [
        ("pre", accepted[0]),
        ("pre", accepted[0]),
        ("validate", accepted[1]),
        ("post", accepted[0]),
    ], seen
    pre = [e for kind, e in seen if kind == "pre"]
    assert [e["recheckAfterMs"] for e in pre] == [1000, 0], pre
    assert all(e["answer"]["ok"] and e["isGgcRestarting"] is False for e in pre), pre
    validate = seen[2][1]
    assert validate["configuration"]["limit"] == 50 and validate["status"] == "ACCEPTED", validate

    # A configuration it rejects: the deployment fails with its reason; the post event still comes.
    rejected = deploy({"limit": 500})
    outcome = cloud_outcome(core, gg, thing, rejected[0])
    assert outcome["coreDeviceExecutionStatus"] == "FAILED", outcome
    assert REJECTION in outcome.get("reason", ""), outcome
    seen = seen_through_post(rejected)
    assert [(kind, e.get("status")) for kind, e in seen] == [
        ("pre", None),
        ("pre", None),
        ("validate", "REJECTED"),
        ("post", None),
    ], seen
