"""The simulated core's token exchange service judged by AWS's own Python SDK.

A component started by `device-sim core` from its recipe takes credentials with botocore's
`ContainerProvider` (AWS_CONTAINER_CREDENTIALS_FULL_URI and AWS_CONTAINER_AUTHORIZATION_TOKEN,
as on a Greengrass core); the core got them from the local cloud's AWS IoT credentials provider
for the role behind its `iotRoleAlias`. With them, boto3's S3 client may put objects under the
thing's own prefix and nothing else: another thing's prefix, another bucket, a read, a list are
refused with S3's AccessDenied.
"""

import json

from simcore import COMPONENTS_DIR, CloudLink, Component
from support import boto_client, provision_device, unique_name

CLIENT = "com.example.conformance.PythonTesClient"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "credentials.iot.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}


def test_botocore_gets_role_credentials_from_the_core_and_they_hold_only_for_the_things_prefix(
    iot, s3, endpoints, local_cloud, simulated_core, tmp_path
):
    bucket, other_bucket = unique_name("tes-windows"), unique_name("tes-other")
    for b in (bucket, other_bucket):
        s3.create_bucket(Bucket=b)
    iam = boto_client(endpoints, "iam")
    role = unique_name("tes-role")
    arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]["Arn"]
    scope = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": f"arn:aws:s3:::{bucket}/${{credentials-iot:ThingName}}/*",
            }
        ],
    }
    iam.put_role_policy(RoleName=role, PolicyName="uploads", PolicyDocument=json.dumps(scope))
    alias = unique_name("tes-alias")
    iot.create_role_alias(roleAlias=alias, roleArn=arn)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": endpoints.arn("client/${iot:Connection.Thing.ThingName}")},
            {"Effect": "Allow", "Action": "iot:AssumeRoleWithCertificate", "Resource": endpoints.arn(f"rolealias/{alias}")},
        ],
    }
    device = provision_device(iot, endpoints, tmp_path, prefix="tes-core", policy_document=json.dumps(policy))
    link = CloudLink(str(local_cloud.data_dir / "endpoints.json"), device.cert_path, device.key_path, endpoints.ca_file)
    d = COMPONENTS_DIR / "python-tes"
    component = Component(CLIENT, "1.0.0", d / "recipe.yaml", (d / "component.py",))
    config = {
        "aws.greengrass.Nucleus": {"MERGE": {"iotRoleAlias": alias}},
        CLIENT: {"MERGE": {"bucket": bucket, "otherBucket": other_bucket, "s3Endpoint": endpoints.http}},
    }
    core = simulated_core(device.thing_name, [component], link, update_config=config)
    report = core.wait_for_report(CLIENT)
    steps = report["steps"]

    assert report["env"] == {"AWS_CONTAINER_CREDENTIALS_FULL_URI": True, "AWS_CONTAINER_AUTHORIZATION_TOKEN": True}
    assert steps["ContainerProvider"] == {"ok": True, "value": {"accessKeyPrefix": "ASIA", "hasToken": True}}, steps
    assert steps["PutObject.own"]["ok"] is True, steps
    stored = s3.get_object(Bucket=bucket, Key=f"{device.thing_name}/anomalies/conformance.json")
    assert stored["Body"].read() == b"{}"
    for refused in ("PutObject.otherThing", "PutObject.otherBucket", "GetObject.own", "ListBuckets"):
        assert steps[refused]["ok"] is False, (refused, steps)
        assert (steps[refused]["code"], steps[refused]["status"]) == ("AccessDenied", 403), (refused, steps)
