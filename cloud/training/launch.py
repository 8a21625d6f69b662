#!/usr/bin/env python3
"""Builds the SageMaker ``CreateTrainingJob`` request that runs ``train.py`` in script mode.

Offline (the default) it prints the exact request as JSON and sends nothing. With ``--submit``
and AWS credentials it packs ``train.py`` and ``requirements.txt`` into ``sourcedir.tar.gz``,
uploads it to ``--code-uri`` and calls ``CreateTrainingJob`` with boto3.

The request follows the SageMaker API (``CreateTrainingJob`` in the SageMaker service model) and
the conventions of SageMaker's framework containers for script mode:

- ``AlgorithmSpecification.TrainingImage``: the prebuilt scikit-learn framework image of the
  region, ``{account}.dkr.ecr.{region}.amazonaws.com/sagemaker-scikit-learn:{version}-cpu-py3``;
- ``HyperParameters``: every value a string, JSON-encoded as the SageMaker Python SDK does
  (``"150"``, ``"\\"random_forest\\""``); ``sagemaker_program`` names the entry point and
  ``sagemaker_submit_directory`` the code bundle. The container passes the others to
  ``train.py`` as ``--name value`` and in ``SM_HPS``;
- ``InputDataConfig``: channels ``train`` and ``validation`` (and ``manifest``, the dataset's
  ``manifest.json``), S3 prefixes copied to ``/opt/ml/input/data/<channel>`` (``File`` mode);
- ``OutputDataConfig.S3OutputPath``: where SageMaker puts ``model.tar.gz`` (``/opt/ml/model``)
  and ``output.tar.gz`` (``/opt/ml/output/data``).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ENTRY_POINT = "train.py"
BUNDLE_FILES = ("train.py", "requirements.txt")
DEFAULT_REGION = "us-east-1"
DEFAULT_FRAMEWORK_VERSION = "1.2-1"
DEFAULT_INSTANCE_TYPE = "ml.m5.large"
# A placeholder: SageMaker needs an execution role that can read the dataset and write the output.
PLACEHOLDER_ROLE_ARN = "arn:aws:iam::000000000000:role/pump-sagemaker-training"
JOB_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
ROLE_ARN_PATTERN = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$")

# Registry accounts of SageMaker's scikit-learn framework images (training), per region, as the
# SageMaker Python SDK lists them (image_uri_config/sklearn.json). Other regions: --image-uri.
SKLEARN_REGISTRIES = {
    "us-east-1": "683313688378",
    "us-east-2": "257758044811",
    "us-west-1": "746614075791",
    "us-west-2": "246618743249",
    "ca-central-1": "341280168497",
    "eu-central-1": "492215442770",
    "eu-north-1": "662702820516",
    "eu-west-1": "141502667606",
    "eu-west-2": "764974769150",
    "eu-west-3": "659782779980",
    "ap-northeast-1": "354813040037",
    "ap-northeast-2": "366743142698",
    "ap-south-1": "720646828776",
    "ap-southeast-1": "121021644041",
    "ap-southeast-2": "783357654285",
    "sa-east-1": "737474898029",
}

# The hyperparameters train.py reads, with the values a job uses unless --hp overrides them.
DEFAULT_HYPERPARAMETERS: dict[str, Any] = {
    "estimator": "random_forest",
    "n_estimators": 150,
    "max_depth": 14,
    "min_samples_leaf": 2,
    "class_weight": "balanced",
    "seed": 1,
    "model_version": "0.1.0",
}


class LaunchError(Exception):
    """Bad arguments, or a submission that cannot be made: the message says what to fix."""


def image_uri(region: str, framework_version: str) -> str:
    account = SKLEARN_REGISTRIES.get(region)
    if account is None:
        raise LaunchError(
            f"no scikit-learn image registry known for region {region!r}; pass --image-uri "
            f"(known: {', '.join(sorted(SKLEARN_REGISTRIES))})"
        )
    return f"{account}.dkr.ecr.{region}.amazonaws.com/sagemaker-scikit-learn:{framework_version}-cpu-py3"


def s3_uri(name: str, value: str) -> str:
    if not re.match(r"^s3://[^/]+(/.*)?$", value) or len(value) > 1024:
        raise LaunchError(f"{name} {value!r} is not an s3://bucket/key URI (at most 1024 characters)")
    return value


def join_uri(prefix: str, key: str) -> str:
    return prefix.rstrip("/") + "/" + key


def parse_hp(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise LaunchError(f"--hp {item!r}: expected NAME=VALUE")
        try:
            out[name] = json.loads(raw)
        except json.JSONDecodeError:
            out[name] = raw
    return out


def encode_hyperparameters(values: dict[str, Any]) -> dict[str, str]:
    """Every value as a JSON string, as the SageMaker Python SDK sends them."""
    out = {}
    for name, value in values.items():
        text = json.dumps(value)
        if len(name) > 256 or len(text) > 2500:
            raise LaunchError(f"hyperparameter {name!r} is too long (names ≤ 256, values ≤ 2500 characters)")
        out[name] = text
    return out


def build_request(
    *,
    job_name: str,
    region: str,
    role_arn: str,
    train_uri: str,
    validation_uri: str,
    manifest_uri: str | None,
    output_uri: str,
    code_uri: str,
    instance_type: str = DEFAULT_INSTANCE_TYPE,
    instance_count: int = 1,
    volume_gb: int = 10,
    max_runtime_s: int = 3600,
    framework_version: str = DEFAULT_FRAMEWORK_VERSION,
    image: str | None = None,
    hyperparameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The CreateTrainingJob request, as boto3's ``create_training_job(**request)`` takes it."""
    if not JOB_NAME_PATTERN.match(job_name):
        raise LaunchError(f"job name {job_name!r}: 1-63 letters, digits and hyphens, starting with a letter or digit")
    if not ROLE_ARN_PATTERN.match(role_arn):
        raise LaunchError(f"role ARN {role_arn!r} is not an IAM role ARN")
    if not instance_type.startswith("ml."):
        raise LaunchError(f"instance type {instance_type!r}: SageMaker instance types start with 'ml.'")
    for name, value, low in (("instance count", instance_count, 1), ("volume size", volume_gb, 1),
                             ("max runtime", max_runtime_s, 1)):
        if value < low:
            raise LaunchError(f"{name} must be at least {low}, got {value}")
    hps = dict(DEFAULT_HYPERPARAMETERS)
    hps.update(hyperparameters or {})
    reserved = sorted(k for k in hps if k.startswith("sagemaker_"))
    if reserved:
        raise LaunchError(f"hyperparameters {reserved} are reserved for SageMaker")
    encoded = encode_hyperparameters(hps)
    encoded.update(
        encode_hyperparameters(
            {
                "sagemaker_program": ENTRY_POINT,
                "sagemaker_submit_directory": s3_uri("code URI", code_uri),
                "sagemaker_region": region,
                "sagemaker_job_name": job_name,
            }
        )
    )
    encoded["sagemaker_container_log_level"] = "20"

    def channel(name: str, uri: str) -> dict[str, Any]:
        return {
            "ChannelName": name,
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": s3_uri(f"{name} URI", uri),
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
            "ContentType": "application/json" if name == "manifest" else "text/csv",
            "CompressionType": "None",
            "InputMode": "File",
        }

    channels = [channel("train", train_uri), channel("validation", validation_uri)]
    if manifest_uri:
        channels.append(channel("manifest", manifest_uri))
    return {
        "TrainingJobName": job_name,
        "AlgorithmSpecification": {
            "TrainingImage": image or image_uri(region, framework_version),
            "TrainingInputMode": "File",
            # train.py prints its report as one JSON line; SageMaker scrapes these from the log.
            "MetricDefinitions": [
                {"Name": "validation:macro_f1", "Regex": r'"validation_macro_f1": ([0-9.]+)'},
                {"Name": "validation:accuracy", "Regex": r'"validation_accuracy": ([0-9.]+)'},
            ],
        },
        "RoleArn": role_arn,
        "HyperParameters": encoded,
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": s3_uri("output URI", output_uri)},
        "ResourceConfig": {"InstanceType": instance_type, "InstanceCount": instance_count, "VolumeSizeInGB": volume_gb},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime_s},
        "Tags": [{"Key": "project", "Value": "pump-station"}],
    }


def source_bundle() -> bytes:
    """``sourcedir.tar.gz`` with the entry point and its requirements, reproducible bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name in BUNDLE_FILES:
            data = (HERE / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def submit(request: dict[str, Any], code_uri: str, region: str) -> dict[str, Any]:
    try:
        import boto3
    except ImportError as e:
        raise LaunchError("--submit needs boto3 (pip install boto3)") from e
    session = boto3.session.Session(region_name=region)
    if session.get_credentials() is None:
        raise LaunchError("--submit needs AWS credentials (environment, profile or role); none were found")
    if request["RoleArn"] == PLACEHOLDER_ROLE_ARN:
        raise LaunchError("--submit needs --role-arn: the SageMaker execution role of your account")
    bucket, _, key = code_uri[len("s3://"):].partition("/")
    session.client("s3").put_object(Bucket=bucket, Key=key, Body=source_bundle())
    return session.client("sagemaker").create_training_job(**request)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Build (and optionally submit) the SageMaker training job request.")
    p.add_argument("--dataset-uri", required=True,
                   help="s3:// prefix of a device-sim dataset (train/, validation/, manifest.json)")
    p.add_argument("--output-uri", required=True, help="s3:// prefix for the job's model.tar.gz")
    p.add_argument("--code-uri", help="s3:// key of sourcedir.tar.gz (default: {output-uri}/code/sourcedir.tar.gz)")
    p.add_argument("--train-uri", help="override the train channel (default {dataset-uri}/train/)")
    p.add_argument("--validation-uri", help="override the validation channel (default {dataset-uri}/validation/)")
    p.add_argument("--no-manifest", action="store_true", help="leave out the manifest channel")
    p.add_argument("--region", default=DEFAULT_REGION)
    p.add_argument("--role-arn", default=PLACEHOLDER_ROLE_ARN)
    p.add_argument("--job-name", help="default: pump-fault-classifier-YYYYmmdd-HHMMSS (UTC)")
    p.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE)
    p.add_argument("--instance-count", type=int, default=1)
    p.add_argument("--volume-gb", type=int, default=10)
    p.add_argument("--max-runtime-s", type=int, default=3600)
    p.add_argument("--framework-version", default=DEFAULT_FRAMEWORK_VERSION,
                   help="scikit-learn framework image version")
    p.add_argument("--image-uri", help="a training image instead of the region's scikit-learn image")
    p.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE", help="a hyperparameter; repeat")
    p.add_argument("--submit", action="store_true", help="upload the code and create the job (needs credentials)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        dataset = s3_uri("dataset URI", args.dataset_uri)
        code_uri = args.code_uri or join_uri(args.output_uri, "code/sourcedir.tar.gz")
        request = build_request(
            job_name=args.job_name or time.strftime("pump-fault-classifier-%Y%m%d-%H%M%S", time.gmtime()),
            region=args.region,
            role_arn=args.role_arn,
            train_uri=args.train_uri or join_uri(dataset, "train/"),
            validation_uri=args.validation_uri or join_uri(dataset, "validation/"),
            manifest_uri=None if args.no_manifest else join_uri(dataset, "manifest.json"),
            output_uri=args.output_uri,
            code_uri=code_uri,
            instance_type=args.instance_type,
            instance_count=args.instance_count,
            volume_gb=args.volume_gb,
            max_runtime_s=args.max_runtime_s,
            framework_version=args.framework_version,
            image=args.image_uri,
            hyperparameters=parse_hp(args.hp),
        )
        if not args.submit:
            print(json.dumps(request, indent=2))
            return 0
        response = submit(request, code_uri, args.region)
    except LaunchError as e:
        print(f"launch.py: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"TrainingJobArn": response.get("TrainingJobArn"), "request": request}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
