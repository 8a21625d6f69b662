#!/usr/bin/env python3
"""The retraining pipeline: processing → training → evaluation → registration, from the fleet's data.

It runs offline against any S3 and DynamoDB endpoint (the local cloud, or AWS) with boto3, and
writes for every step the exact SageMaker request that would run it there:

1. **processing** (``CreateProcessingJob``): the landing bucket's raw telemetry batches
   (``telemetry/date=YYYY-MM-DD/thing={thing}/…json``) and the analyzers' anomaly windows
   (``{thing}/anomalies/{day}/{event}.json``) are downloaded, the incidents table is scanned, and
   ``device-sim landing-rows`` (the analyzer's own feature code, ``pump-features``) turns them into
   labelled rows in the dataset's schema, split by time;
2. **training** (``CreateTrainingJob``, ``launch.build_request``): ``train.py`` on those rows;
3. **evaluation** (a second ``CreateProcessingJob``): the candidate and the baseline (the latest
   approved package of the group, else the current model directory) are scored with onnxruntime on
   the same held-out test split: macro F1 and false raises in normal stretches;
4. **registration** (``CreateModelPackageGroup``, ``CreateModelPackage`` with
   ``ModelApprovalStatus``): only a candidate that beats the baseline is registered, in a local
   directory that mirrors a model package group. Otherwise the pipeline says why and registers
   nothing.

``pipeline.py approve`` sets a package's approval (``UpdateModelPackage``). The registry's
layout, the label and split rules, and the gate are in ``cloud/training/README.md`` and the
project's ``docs/ml.md`` ("Retraining from the fleet's data").
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import launch

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
DEFAULT_GROUP = "pump-fault-classifier"
DEFAULT_INCIDENTS_TABLE = "pump-incidents"
TELEMETRY_PREFIX = "telemetry/"
# The analyzer's default raiseAfter: consecutive anomalous assessments before a raise.
RAISE_AFTER = 3
APPROVALS = ("Approved", "Rejected", "PendingManualApproval")
PROCESSING_ROOT = "/opt/ml/processing"
# The processing image holds the device-sim binary (a container the project does not build yet).
PROCESSING_IMAGE = "{account}.dkr.ecr.{region}.amazonaws.com/pump-processing:latest"


class PipelineError(Exception):
    """Bad input or a failed step: the message says which and what to do; nothing is registered."""


def log(step: str, message: str) -> None:
    print(f"pipeline: {step}: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- download


def plain(value: Any) -> Any:
    """A DynamoDB item as boto3's resource layer gives it, made JSON-ready (Decimal → int/float)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, set)):
        return [plain(v) for v in value]
    return value


def is_input_key(key: str) -> bool:
    """A telemetry batch or an anomaly window, by the keys the rule and the analyzer write."""
    parts = key.split("/")
    if ".." in parts or "" in parts or not key.endswith(".json"):
        return False
    return key.startswith(TELEMETRY_PREFIX) or (len(parts) == 4 and parts[1] == "anomalies")


def download(session, endpoint_url: str | None, bucket: str, table: str, work: Path) -> dict[str, Any]:
    """Copies the landing objects to ``work/landing`` and the incidents to ``work/incidents.json``."""
    s3 = session.client("s3", endpoint_url=endpoint_url)
    landing = work / "landing"
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            if is_input_key(obj["Key"]):
                keys.append(obj["Key"])
    if not any(k.startswith(TELEMETRY_PREFIX) for k in keys):
        raise PipelineError(
            f"the landing bucket {bucket} holds no telemetry batch under {TELEMETRY_PREFIX}: nothing to learn from "
            "(is the pump_telemetry rule's S3 action writing there?)"
        )
    for key in keys:
        path = landing / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    items: list[dict[str, Any]] = []
    dynamodb = session.resource("dynamodb", endpoint_url=endpoint_url)
    scan: dict[str, Any] = {}
    while True:
        page = dynamodb.Table(table).scan(**scan)
        items.extend(plain(i) for i in page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            break
        scan["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    (work / "incidents.json").write_text(json.dumps(items, indent=1, sort_keys=True))
    return {"objects": keys, "incidents": len(items)}


# -------------------------------------------------------------------------------------- processing


def processing_bin(given: str | None) -> Path:
    path = Path(given or os.environ.get("DEVICE_SIM_BIN") or REPO_ROOT / "target" / "debug" / "device-sim")
    if not path.is_file():
        raise PipelineError(f"device-sim not found at {path}: build it (cargo build -p device-sim) or pass --device-sim")
    return path


def processing_args(args: argparse.Namespace) -> list[str]:
    return [
        "--window", str(args.window), "--poll-ms", str(args.poll_ms), "--stride", str(args.stride),
        "--test-fraction", str(args.test_fraction), "--validation-fraction", str(args.validation_fraction),
        "--guard-s", str(args.guard_s),
    ]


def run_processing(binary: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    done = subprocess.run(
        [str(binary), "landing-rows", "--landing", str(work / "landing"), "--incidents", str(work / "incidents.json"),
         "--out", str(work / "dataset"), *processing_args(args)],
        capture_output=True, text=True, timeout=args.step_timeout_s, check=False,
    )
    if done.returncode != 0:
        raise PipelineError(f"processing failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


# ---------------------------------------------------------------------------------------- training


def run_training(work: Path, hps: dict[str, Any], timeout_s: int) -> dict[str, Any]:
    ds = work / "dataset"
    flags: list[str] = []
    for name, value in hps.items():
        flags += [f"--{name}", str(value)]
    done = subprocess.run(
        [sys.executable, str(HERE / "train.py"), "--train", str(ds / "train"), "--validation", str(ds / "validation"),
         "--manifest", str(ds / "manifest.json"), "--model-dir", str(work / "candidate"),
         "--output-data-dir", str(work / "training-output"), *flags],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )
    if done.returncode != 0:
        raise PipelineError(f"training failed: {done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------------------- evaluation


def read_rows(path: Path) -> tuple[list[str], list[int], list[float], list[str], list[list[float]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        segments, times, labels, x = [], [], [], []
        for row in reader:
            segments.append(int(row[0]))
            times.append(float(row[1]))
            labels.append(row[2])
            x.append([float(v) for v in row[3:]])
    return header[3:], segments, times, labels, x


def false_raises(segments: list[int], times: list[float], truth: list[str], predicted: list[str]) -> int:
    """Stretches of normal rows, within one segment and in time order, where the model predicts the
    same fault on ``RAISE_AFTER`` rows in a row: each would make the analyzer raise a healthy pump."""
    count = 0
    order = sorted(range(len(truth)), key=lambda i: (segments[i], times[i]))
    streak_kind, streak, last_segment = None, 0, None
    for i in order:
        if segments[i] != last_segment or truth[i] != "normal" or predicted[i] == "normal":
            streak_kind, streak = None, 0
            last_segment = segments[i]
            if truth[i] != "normal" or predicted[i] == "normal":
                continue
        if predicted[i] == streak_kind:
            streak += 1
        else:
            streak_kind, streak = predicted[i], 1
        if streak == RAISE_AFTER:
            count += 1
    return count


def macro_f1(truth: list[str], predicted: list[str], classes: list[str]) -> tuple[float, dict[str, float]]:
    """Unweighted mean F1 over the classes with test rows (a class absent from the test split
    cannot be scored on it)."""
    per_class = {}
    for c in classes:
        tp = sum(1 for t, p in zip(truth, predicted) if t == c and p == c)
        support = sum(1 for t in truth if t == c)
        called = sum(1 for p in predicted if p == c)
        if support == 0:
            continue
        precision = tp / called if called else 0.0
        recall = tp / support
        per_class[c] = 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)
    return (sum(per_class.values()) / len(per_class) if per_class else 0.0), per_class


def compatible(card: dict[str, Any], manifest: dict[str, Any]) -> str | None:
    """Why a model cannot be scored on the processed rows (None when it can)."""
    schema = card.get("input", {})
    if schema.get("features") != manifest["schema"]["features"]:
        return "its input features differ from the rows' (another Features::vector())"
    for key, ours in (("window_samples", manifest["window_samples"]), ("poll_period_ms", manifest["poll_period_ms"])):
        if schema.get(key) != ours:
            return f"its {key} is {schema.get(key)}, the rows' {ours}"
    unknown = set(card.get("output", {}).get("classes", [])) - set(manifest["schema"]["classes"])
    if unknown:
        return f"its classes {sorted(unknown)} are not the rows'"
    return None


def score(model_dir: Path, dataset: Path) -> dict[str, Any]:
    """The model's metrics on the test split: onnxruntime runs the file the analyzer runs."""
    import numpy as np
    import onnxruntime as ort

    card = json.loads((model_dir / "model-card.json").read_text())
    manifest = json.loads((dataset / "manifest.json").read_text())
    why = compatible(card, manifest)
    if why:
        raise PipelineError(f"the model in {model_dir} cannot be scored on the same held-out rows: {why}")
    _, segments, times, truth, x = read_rows(dataset / "test" / "test.csv")
    if not truth:
        raise PipelineError("the test split holds no row: process a longer period or raise --test-fraction")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
    labels = session.run(["label"], {card["input"]["name"]: np.asarray(x, dtype=np.float32)})[0]
    classes = card["output"]["classes"]
    predicted = [classes[int(i)] for i in labels]
    macro, per_class = macro_f1(truth, predicted, manifest["schema"]["classes"])
    return {
        "model": {"name": card.get("name"), "version": card.get("version"), "sha256": card["model"]["sha256"]},
        "rows": len(truth),
        "macro_f1": round(macro, 6),
        "f1": {c: round(v, 6) for c, v in per_class.items()},
        "accuracy": round(sum(1 for t, p in zip(truth, predicted) if t == p) / len(truth), 6),
        "false_raises": false_raises(segments, times, truth, predicted),
        "normal_stretches_rule": f"{RAISE_AFTER} normal rows in a row of one segment predicted as one fault",
    }


def gate(candidate: dict[str, Any], baseline: dict[str, Any], min_gain: float) -> tuple[bool, str]:
    if candidate["false_raises"] > baseline["false_raises"]:
        return False, (f"the candidate raises healthy pumps {candidate['false_raises']} times on the held-out rows, "
                       f"the baseline {baseline['false_raises']}")
    if candidate["macro_f1"] <= baseline["macro_f1"] + min_gain:
        return False, (f"the candidate's macro F1 {candidate['macro_f1']:.4f} does not beat the baseline's "
                       f"{baseline['macro_f1']:.4f} by more than {min_gain}")
    return True, (f"macro F1 {candidate['macro_f1']:.4f} against {baseline['macro_f1']:.4f}, false raises "
                  f"{candidate['false_raises']} against {baseline['false_raises']}")


def verify_with_analyzer(analyzer: str | None, model_dir: Path) -> dict[str, Any] | None:
    """The analyzer's own checks and tract's parity on the test vectors (`pump-analyzer verify-model`)."""
    if not analyzer:
        return None
    done = subprocess.run([analyzer, "verify-model", str(model_dir), "--runs", "50"],
                          capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise PipelineError(f"the analyzer refuses the candidate: {done.stdout.strip()} {done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------------------- registry


def group_dir(registry: Path, group: str) -> Path:
    return registry / group


def packages(registry: Path, group: str) -> list[dict[str, Any]]:
    """The group's packages, oldest first."""
    out = []
    base = group_dir(registry, group)
    if base.is_dir():
        for d in base.iterdir():
            if d.is_dir() and d.name.isdigit() and (d / "package.json").is_file():
                out.append(json.loads((d / "package.json").read_text()))
    return sorted(out, key=lambda p: p["ModelPackageVersion"])


def latest_approved(registry: Path, group: str) -> tuple[Path, dict[str, Any]] | None:
    approved = [p for p in packages(registry, group) if p["ModelApprovalStatus"] == "Approved"]
    if not approved:
        return None
    p = approved[-1]
    return group_dir(registry, group) / str(p["ModelPackageVersion"]) / "model", p


def write_json_atomically(path: Path, doc: Any) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def register(registry: Path, group: str, group_request: dict[str, Any], package_request: dict[str, Any],
             candidate: Path, evaluation: dict[str, Any], arn_prefix: str) -> dict[str, Any]:
    """Adds the next version of ``group``: its files are complete before its directory appears."""
    base = group_dir(registry, group)
    base.mkdir(parents=True, exist_ok=True)
    if not (base / "group.json").is_file():
        write_json_atomically(base / "group.json", {"request": group_request, "created": int(time.time() * 1000)})
    version = max([p["ModelPackageVersion"] for p in packages(registry, group)] or [0]) + 1
    staging = base / f".{version}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "model").mkdir(parents=True)
    for name in ("model.onnx", "model-card.json", "test-vectors.json"):
        shutil.copy2(candidate / name, staging / "model" / name)
    package = {
        "ModelPackageGroupName": group,
        "ModelPackageVersion": version,
        "ModelPackageArn": f"{arn_prefix}:model-package/{group}/{version}",
        "ModelApprovalStatus": package_request["ModelApprovalStatus"],
        "created": int(time.time() * 1000),
        "request": package_request,
        "evaluation": evaluation,
    }
    write_json_atomically(staging / "package.json", package)
    os.rename(staging, base / str(version))
    return package


def set_approval(registry: Path, group: str, version: int, status: str, description: str | None) -> dict[str, Any]:
    if status not in APPROVALS:
        raise PipelineError(f"approval {status!r}: one of {', '.join(APPROVALS)}")
    path = group_dir(registry, group) / str(version) / "package.json"
    if not path.is_file():
        raise PipelineError(f"no package {group}/{version} in {registry}")
    package = json.loads(path.read_text())
    package["ModelApprovalStatus"] = status
    request = {"ModelPackageArn": package["ModelPackageArn"], "ModelApprovalStatus": status}
    if description:
        request["ApprovalDescription"] = description
    package.setdefault("approvals", []).append({"request": request, "at": int(time.time() * 1000)})
    write_json_atomically(path, package)
    return request


# -------------------------------------------------------------------------------------- requests


def processing_request(*, name: str, role_arn: str, image: str, inputs: list[dict[str, Any]],
                       outputs: list[dict[str, Any]], entrypoint: list[str], arguments: list[str],
                       instance_type: str) -> dict[str, Any]:
    """A ``CreateProcessingJob`` request (SageMaker API Reference)."""
    if not launch.JOB_NAME_PATTERN.match(name):
        raise PipelineError(f"job name {name!r}: 1-63 letters, digits and hyphens")
    return {
        "ProcessingJobName": name,
        "ProcessingInputs": inputs,
        "ProcessingOutputConfig": {"Outputs": outputs},
        "ProcessingResources": {
            "ClusterConfig": {"InstanceCount": 1, "InstanceType": instance_type, "VolumeSizeInGB": 10}
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "AppSpecification": {"ImageUri": image, "ContainerEntrypoint": entrypoint, "ContainerArguments": arguments},
        "RoleArn": role_arn,
        "Tags": [{"Key": "project", "Value": "pump-station"}],
    }


def s3_input(name: str, uri: str, local: str, data_type: str = "S3Prefix") -> dict[str, Any]:
    return {
        "InputName": name,
        "S3Input": {"S3Uri": uri, "LocalPath": f"{PROCESSING_ROOT}/{local}", "S3DataType": data_type,
                    "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated"},
    }


def s3_output(name: str, uri: str, local: str) -> dict[str, Any]:
    return {"OutputName": name, "S3Output": {"S3Uri": uri, "LocalPath": f"{PROCESSING_ROOT}/{local}",
                                             "S3UploadMode": "EndOfJob"}}


def build_requests(args: argparse.Namespace, execution: str, hps: dict[str, Any],
                   evaluation: dict[str, Any] | None, approval: str) -> dict[str, dict[str, Any]]:
    """The SageMaker requests of one execution, each as boto3's ``sagemaker`` client takes it."""
    prefix = f"s3://{args.bucket}/pipeline/{execution}"
    account = args.role_arn.split(":")[4]
    processing_image = args.processing_image or PROCESSING_IMAGE.format(account=account, region=args.region)
    sklearn_image = launch.image_uri(args.region, launch.DEFAULT_FRAMEWORK_VERSION)
    name = f"pump-retrain-{execution}"
    processing = processing_request(
        name=f"{name}-processing", role_arn=args.role_arn, image=processing_image, instance_type="ml.t3.medium",
        inputs=[
            # Exactly the objects read: a manifest of the bucket's keys.
            s3_input("landing", f"{prefix}/inputs/landing.manifest", "input/landing", "ManifestFile"),
            s3_input("incidents", f"{prefix}/inputs/incidents.json", "input/incidents"),
        ],
        outputs=[s3_output("dataset", f"{prefix}/dataset", "output/dataset")],
        entrypoint=["device-sim", "landing-rows"],
        arguments=["--landing", f"{PROCESSING_ROOT}/input/landing", "--incidents",
                   f"{PROCESSING_ROOT}/input/incidents/incidents.json", "--out", f"{PROCESSING_ROOT}/output/dataset",
                   *processing_args(args)],
    )
    training = launch.build_request(
        job_name=f"{name}-training", region=args.region, role_arn=args.role_arn,
        train_uri=f"{prefix}/dataset/train/", validation_uri=f"{prefix}/dataset/validation/",
        manifest_uri=f"{prefix}/dataset/manifest.json", output_uri=f"{prefix}/training/",
        code_uri=f"{prefix}/code/sourcedir.tar.gz", hyperparameters=hps,
    )
    model_data = f"{prefix}/training/{name}-training/output/model.tar.gz"
    evaluation_job = processing_request(
        name=f"{name}-evaluation", role_arn=args.role_arn, image=sklearn_image, instance_type="ml.t3.medium",
        inputs=[
            s3_input("dataset", f"{prefix}/dataset/", "input/dataset"),
            s3_input("candidate", model_data, "input/candidate"),
            s3_input("baseline", f"{prefix}/baseline/", "input/baseline"),
            s3_input("code", f"{prefix}/code/pipeline.py", "input/code"),
        ],
        outputs=[s3_output("evaluation", f"{prefix}/evaluation", "output/evaluation")],
        entrypoint=["python3", f"{PROCESSING_ROOT}/input/code/pipeline.py", "evaluate"],
        arguments=["--dataset", f"{PROCESSING_ROOT}/input/dataset", "--candidate", f"{PROCESSING_ROOT}/input/candidate",
                   "--baseline", f"{PROCESSING_ROOT}/input/baseline", "--out",
                   f"{PROCESSING_ROOT}/output/evaluation/evaluation.json"],
    )
    group = {"ModelPackageGroupName": args.group,
             "ModelPackageGroupDescription": "The pump fault classifier the analyzer runs at the edge",
             "Tags": [{"Key": "project", "Value": "pump-station"}]}
    package: dict[str, Any] = {
        "ModelPackageGroupName": args.group,
        "ModelPackageDescription": f"Retrained from the fleet's data, execution {execution}",
        "ModelApprovalStatus": approval,
        "InferenceSpecification": {
            "Containers": [{"Image": sklearn_image, "ModelDataUrl": model_data}],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        "ModelMetrics": {"ModelQuality": {"Statistics": {
            "ContentType": "application/json", "S3Uri": f"{prefix}/evaluation/evaluation.json"}}},
        "CustomerMetadataProperties": {"execution": execution},
    }
    if evaluation:
        package["CustomerMetadataProperties"].update({
            "macro_f1": str(evaluation["candidate"]["macro_f1"]),
            "baseline_macro_f1": str(evaluation["baseline"]["macro_f1"]),
            "false_raises": str(evaluation["candidate"]["false_raises"]),
        })
    return {"processing": processing, "training": training, "evaluation": evaluation_job,
            "model_package_group": group, "model_package": package}


# -------------------------------------------------------------------------------------- commands


def model_tarball(model_dir: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("model.onnx", "model-card.json", "test-vectors.json"):
            tar.add(model_dir / name, arcname=name)
    return buf.getvalue()


def evaluate(dataset: Path, candidate: Path, baseline: Path, min_gain: float) -> dict[str, Any]:
    cand = score(candidate, dataset)
    base = score(baseline, dataset)
    passed, reason = gate(cand, base, min_gain)
    return {"candidate": cand, "baseline": base, "baseline_dir": str(baseline), "passed": passed, "reason": reason,
            "metric": "macro F1 on the test split, and no more false raises than the baseline"}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import boto3

    started = time.monotonic()
    timings: dict[str, float] = {}
    execution = args.execution_id or time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    work = Path(args.work)
    if work.exists() and any(work.iterdir()):
        raise PipelineError(f"the work directory {work} is not empty; choose a new one")
    work.mkdir(parents=True, exist_ok=True)
    hps = launch.parse_hp(args.hp)
    registry = Path(args.registry)
    session = boto3.session.Session(region_name=args.region)
    binary = processing_bin(args.device_sim)

    t = time.monotonic()
    log("processing", f"reading s3://{args.bucket} and table {args.incidents_table}")
    got = download(session, args.endpoint_url, args.bucket, args.incidents_table, work)
    processed = run_processing(binary, work, args)
    timings["processing"] = time.monotonic() - t
    log("processing", f"{processed['rows']} rows from {processed['readings']} readings of {processed['things']} things")

    t = time.monotonic()
    trained = run_training(work, hps, args.step_timeout_s)
    timings["training"] = time.monotonic() - t
    log("training", f"validation macro F1 {trained.get('validation_macro_f1')}")

    t = time.monotonic()
    approved = latest_approved(registry, args.group)
    baseline = approved[0] if approved else Path(args.current_model_dir)
    evaluation = evaluate(work / "dataset", work / "candidate", baseline, args.min_gain)
    evaluation["analyzer"] = verify_with_analyzer(args.analyzer, work / "candidate") if evaluation["passed"] else None
    write_json_atomically(work / "evaluation.json", evaluation)
    timings["evaluation"] = time.monotonic() - t
    log("evaluation", ("passed: " if evaluation["passed"] else "refused: ") + evaluation["reason"])

    requests = build_requests(args, execution, hps, evaluation, args.approval_status)
    requests_dir = work / "requests"
    requests_dir.mkdir()
    for step, request in requests.items():
        write_json_atomically(requests_dir / f"{step}.json", request)

    # What the requests point at, put where they say (the dataset, the inputs, the artifacts).
    s3 = session.client("s3", endpoint_url=args.endpoint_url)
    prefix = f"pipeline/{execution}"
    manifest = [{"prefix": f"s3://{args.bucket}/"}, *got["objects"]]
    s3.put_object(Bucket=args.bucket, Key=f"{prefix}/inputs/landing.manifest", Body=json.dumps(manifest).encode())
    s3.put_object(Bucket=args.bucket, Key=f"{prefix}/inputs/incidents.json", Body=(work / "incidents.json").read_bytes())
    for path in sorted((work / "dataset").rglob("*")):
        if path.is_file():
            s3.put_object(Bucket=args.bucket, Key=f"{prefix}/dataset/{path.relative_to(work / 'dataset').as_posix()}",
                          Body=path.read_bytes())
    s3.put_object(Bucket=args.bucket, Key=f"{prefix}/evaluation/evaluation.json",
                  Body=(work / "evaluation.json").read_bytes())
    for name in ("model.onnx", "model-card.json"):
        s3.put_object(Bucket=args.bucket, Key=f"{prefix}/baseline/{name}", Body=(baseline / name).read_bytes())
    s3.put_object(Bucket=args.bucket, Key=f"{prefix}/code/pipeline.py", Body=(HERE / "pipeline.py").read_bytes())

    t = time.monotonic()
    package = None
    if evaluation["passed"]:
        s3.put_object(Bucket=args.bucket, Key=f"{prefix}/training/pump-retrain-{execution}-training/output/model.tar.gz",
                      Body=model_tarball(work / "candidate"))
        package = register(registry, args.group, requests["model_package_group"], requests["model_package"],
                           work / "candidate", evaluation,
                           f"arn:aws:sagemaker:{args.region}:{args.role_arn.split(':')[4]}")
        log("registration", f"{args.group} version {package['ModelPackageVersion']} ({package['ModelApprovalStatus']})")
    else:
        log("registration", "nothing registered")
    timings["registration"] = time.monotonic() - t
    timings["total"] = time.monotonic() - started
    report = {
        "execution": execution,
        "processing": processed,
        "training": trained,
        "evaluation": {k: evaluation[k] for k in ("passed", "reason", "candidate", "baseline", "baseline_dir")},
        "registered": None if package is None else {
            "group": args.group, "version": package["ModelPackageVersion"],
            "approval": package["ModelApprovalStatus"]},
        "requests": str(requests_dir),
        "seconds": {k: round(v, 2) for k, v in timings.items()},
    }
    write_json_atomically(work / "report.json", report)
    return report


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="The retraining pipeline from the fleet's data (offline; SageMaker requests).")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="processing, training, evaluation, registration")
    r.add_argument("--endpoint-url", help="S3 and DynamoDB endpoint (the local cloud's http); default AWS's")
    r.add_argument("--bucket", required=True, help="the landing bucket (provision app --bucket)")
    r.add_argument("--incidents-table", default=DEFAULT_INCIDENTS_TABLE)
    r.add_argument("--work", required=True, help="a new or empty directory for this execution's files")
    r.add_argument("--registry", required=True, help="the model registry directory")
    r.add_argument("--group", default=DEFAULT_GROUP, help="the model package group")
    r.add_argument("--current-model-dir", default=str(REPO_ROOT / "components" / "model"),
                   help="the baseline while the group has no approved package")
    r.add_argument("--approval-status", default="PendingManualApproval", choices=APPROVALS[::2])
    r.add_argument("--min-gain", type=float, default=0.0, help="macro F1 the candidate must add to the baseline's")
    r.add_argument("--device-sim", help="the device-sim binary (default DEVICE_SIM_BIN, then target/debug)")
    r.add_argument("--analyzer", help="pump-analyzer: verify-model checks a passing candidate as the device will")
    r.add_argument("--window", type=int, default=60)
    r.add_argument("--poll-ms", type=int, default=1000)
    r.add_argument("--stride", type=int, default=2)
    r.add_argument("--test-fraction", type=float, default=0.2)
    r.add_argument("--validation-fraction", type=float, default=0.2)
    r.add_argument("--guard-s", type=int, default=60)
    r.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE", help="a train.py hyperparameter; repeat")
    r.add_argument("--region", default=launch.DEFAULT_REGION)
    r.add_argument("--role-arn", default="arn:aws:iam::000000000000:role/pump-sagemaker-pipeline")
    r.add_argument("--processing-image", help="the image holding device-sim (default: pump-processing in the account)")
    r.add_argument("--execution-id", help="default: UTC YYYYmmdd-HHMMSS")
    r.add_argument("--step-timeout-s", type=int, default=1800)
    e = sub.add_parser("evaluate", help="the evaluation step alone (what its processing job runs)")
    e.add_argument("--dataset", required=True)
    e.add_argument("--candidate", required=True)
    e.add_argument("--baseline", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--min-gain", type=float, default=0.0)
    a = sub.add_parser("approve", help="set a package's approval (UpdateModelPackage)")
    a.add_argument("--registry", required=True)
    a.add_argument("--group", default=DEFAULT_GROUP)
    a.add_argument("--version", type=int, required=True)
    a.add_argument("--status", default="Approved", choices=APPROVALS)
    a.add_argument("--description")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "run":
            out = run(args)
        elif args.command == "evaluate":
            out = evaluate(Path(args.dataset), Path(args.candidate), Path(args.baseline), args.min_gain)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            write_json_atomically(Path(args.out), out)
        else:
            out = set_approval(Path(args.registry), args.group, args.version, args.status, args.description)
    except (PipelineError, launch.LaunchError) as e:
        print(f"pipeline.py: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the AWS SDK's errors (no such bucket or table, denied, unreachable)
        if type(e).__module__.split(".")[0] not in ("botocore", "boto3"):
            raise
        print(f"pipeline.py: error: the AWS request failed: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    # A candidate the gate refused: nothing registered, the report says why.
    return 3 if args.command == "run" and out["registered"] is None else 0


if __name__ == "__main__":
    sys.exit(main())
