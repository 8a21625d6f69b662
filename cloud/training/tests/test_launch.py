"""launch.py: the CreateTrainingJob request it builds, checked against AWS's own service model."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile

import pytest

import launch
from conftest import TRAINING_DIR

ARGS = dict(
    job_name="pump-fault-classifier-test",
    region="eu-west-1",
    role_arn="arn:aws:iam::123456789012:role/training",
    train_uri="s3://bucket/ds/train/",
    validation_uri="s3://bucket/ds/validation/",
    manifest_uri="s3://bucket/ds/manifest.json",
    output_uri="s3://bucket/models/",
    code_uri="s3://bucket/models/code/sourcedir.tar.gz",
)


def test_request_has_the_documented_shape():
    request = launch.build_request(**ARGS, hyperparameters={"n_estimators": 300})
    assert request["TrainingJobName"] == "pump-fault-classifier-test"
    assert request["RoleArn"] == ARGS["role_arn"]
    algo = request["AlgorithmSpecification"]
    assert algo["TrainingImage"] == "141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
    assert algo["TrainingInputMode"] == "File"
    channels = {c["ChannelName"]: c for c in request["InputDataConfig"]}
    assert list(channels) == ["train", "validation", "manifest"]
    for name, uri in (("train", ARGS["train_uri"]), ("validation", ARGS["validation_uri"])):
        s3 = channels[name]["DataSource"]["S3DataSource"]
        assert (s3["S3DataType"], s3["S3Uri"], s3["S3DataDistributionType"]) == ("S3Prefix", uri, "FullyReplicated")
        assert channels[name]["ContentType"] == "text/csv"
    hps = request["HyperParameters"]
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in hps.items()), hps
    assert hps["n_estimators"] == "300", "an override"
    assert hps["estimator"] == '"random_forest"', "strings are JSON-encoded as the SageMaker SDK does"
    assert json.loads(hps["sagemaker_program"]) == "train.py"
    assert json.loads(hps["sagemaker_submit_directory"]) == ARGS["code_uri"]
    assert json.loads(hps["sagemaker_region"]) == "eu-west-1"
    # Every train.py hyperparameter the job sets is one train.py knows.
    import train

    assert {k for k in hps if not k.startswith("sagemaker_")} <= set(train.HYPERPARAMETERS)
    assert request["OutputDataConfig"] == {"S3OutputPath": "s3://bucket/models/"}
    assert request["ResourceConfig"] == {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10}
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600}


def test_request_is_valid_for_the_sagemaker_service_model():
    # botocore's copy of the SageMaker API model: required members, types, enums, minimums.
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.operation_model("CreateTrainingJob").input_shape
    request = launch.build_request(**ARGS)
    report = ParamValidator().validate(request, shape)
    assert not report.has_errors(), report.generate_report()
    # What the validator leaves to the service: patterns and maximum lengths.
    assert launch.JOB_NAME_PATTERN.match(request["TrainingJobName"])
    assert all(len(v) <= 2500 and len(k) <= 256 for k, v in request["HyperParameters"].items())
    assert len(request["HyperParameters"]) <= 100


def test_offline_it_prints_the_request_and_derives_channels_from_the_dataset():
    done = subprocess.run(
        [sys.executable, str(TRAINING_DIR / "launch.py"), "--dataset-uri", "s3://b/ds", "--output-uri", "s3://b/out/",
         "--job-name", "j1", "--hp", "n_estimators=50", "--hp", "estimator=gradient_boosting"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    request = json.loads(done.stdout)
    uris = [c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]]
    assert uris == ["s3://b/ds/train/", "s3://b/ds/validation/", "s3://b/ds/manifest.json"]
    assert request["HyperParameters"]["n_estimators"] == "50"
    assert request["HyperParameters"]["estimator"] == '"gradient_boosting"'
    assert json.loads(request["HyperParameters"]["sagemaker_submit_directory"]) == "s3://b/out/code/sourcedir.tar.gz"
    assert request["AlgorithmSpecification"]["TrainingImage"].startswith("683313688378.dkr.ecr.us-east-1.")


def test_submit_without_credentials_is_refused_before_any_request(tmp_path):
    # No credentials anywhere, and no instance metadata lookup (that would leave loopback).
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    done = subprocess.run(
        [sys.executable, str(TRAINING_DIR / "launch.py"), "--dataset-uri", "s3://b/ds", "--output-uri", "s3://b/out",
         "--submit"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )
    assert done.returncode == 2
    assert "--submit needs AWS credentials" in done.stderr or "--submit needs boto3" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("change", "want"),
    [
        ({"job_name": "bad_name!"}, "job name 'bad_name!'"),
        ({"role_arn": "role"}, "is not an IAM role ARN"),
        ({"train_uri": "/local/dir"}, "train URI '/local/dir' is not an s3://"),
        ({"region": "xx-nowhere-1"}, "no scikit-learn image registry known for region 'xx-nowhere-1'"),
        ({"instance_type": "m5.large"}, "start with 'ml.'"),
        ({"hyperparameters": {"sagemaker_program": "x.py"}}, "reserved for SageMaker"),
        ({"hyperparameters": {"notes": "x" * 3000}}, "is too long"),
    ],
)
def test_bad_arguments_are_refused_with_what_to_fix(change, want):
    with pytest.raises(launch.LaunchError, match=None) as err:
        launch.build_request(**{**ARGS, **change})
    assert want in str(err.value)


def test_the_code_bundle_holds_the_entry_point_and_is_reproducible():
    first, second = launch.source_bundle(), launch.source_bundle()
    assert first == second
    with tarfile.open(fileobj=io.BytesIO(first), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["requirements.txt", "train.py"]
        assert tar.extractfile("train.py").read() == (TRAINING_DIR / "train.py").read_bytes()
