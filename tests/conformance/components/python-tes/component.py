"""Conformance component for the token exchange service.

Gets credentials with botocore's `ContainerProvider` (which reads
AWS_CONTAINER_CREDENTIALS_FULL_URI and AWS_CONTAINER_AUTHORIZATION_TOKEN, as on a
Greengrass core), then calls S3 with them: a PutObject under the thing's own prefix,
and calls the role does not allow. Writes {"steps": {name: {"ok": bool, ...}}}.
"""

import argparse
import json
import os

import boto3
from botocore.credentials import ContainerProvider
from botocore.exceptions import ClientError


def main() -> None:
    parser = argparse.ArgumentParser()
    for flag in ("--report", "--thing", "--bucket", "--other-bucket", "--s3-endpoint"):
        parser.add_argument(flag, required=True)
    args = parser.parse_args()
    steps: dict = {}
    report = {"steps": steps, "env": {k: bool(os.environ.get(k)) for k in (
        "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN")}}

    def step(name, call):
        try:
            steps[name] = {"ok": True, "value": call()}
        except ClientError as e:
            steps[name] = {"ok": False, "code": e.response["Error"]["Code"],
                           "status": e.response["ResponseMetadata"]["HTTPStatusCode"]}
        except Exception as e:  # the report says what went wrong, whatever it was
            steps[name] = {"ok": False, "code": type(e).__name__, "message": str(e)}

    creds = ContainerProvider().load()
    if creds is None:
        steps["ContainerProvider"] = {"ok": False, "code": "NoCredentials"}
    else:
        frozen = creds.get_frozen_credentials()
        steps["ContainerProvider"] = {"ok": True, "value": {
            "accessKeyPrefix": frozen.access_key[:4], "hasToken": bool(frozen.token)}}
        s3 = boto3.client(
            "s3",
            region_name=os.environ.get("AWS_REGION", "us-east-1"),
            endpoint_url=args.s3_endpoint,
            aws_access_key_id=frozen.access_key,
            aws_secret_access_key=frozen.secret_key,
            aws_session_token=frozen.token,
            config=boto3.session.Config(s3={"addressing_style": "path"}),
        )
        own = f"{args.thing}/anomalies/conformance.json"
        step("PutObject.own", lambda: s3.put_object(Bucket=args.bucket, Key=own, Body=b"{}")["ETag"])
        step("PutObject.otherThing", lambda: s3.put_object(Bucket=args.bucket, Key="another-thing/x.json", Body=b"{}"))
        step("PutObject.otherBucket", lambda: s3.put_object(Bucket=args.other_bucket, Key=own, Body=b"{}"))
        step("GetObject.own", lambda: s3.get_object(Bucket=args.bucket, Key=own)["ContentLength"])
        step("ListBuckets", lambda: len(s3.list_buckets()["Buckets"]))
    tmp = args.report + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f)
    os.replace(tmp, args.report)


if __name__ == "__main__":
    main()
