"""pipeline.py end to end against the local cloud: a fleet's landing bucket and incidents table,
processing with the analyzer's feature code, training, the gate, the registry, and the SageMaker
requests checked against botocore's model; bad input refused with nothing lost."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline
from conftest import TIMEOUT_S, TRAINING_DIR, device_sim_bin, pump_analyzer_bin, train_small
from fleet_sample import (
    RAISE_DELAY_MS,
    clients,
    confirm,
    landing_sample,
    local_cloud,
    make_app,
    put_incident,
    raise_faults,
    upload_batches,
)

# A fleet of three pumps, 30 runs of two simulated minutes (one hour), 20-reading windows.
PLAN = ["--seed", "5", "--hours", "1", "--run-minutes", "2", "--window", "20", "--stride", "2"]
ROWS = ["--window", "20", "--stride", "2", "--guard-s", "30"]
SMALL = ["--hp", "n_estimators=20", "--hp", "max_depth=8", "--hp", "test_vectors_per_class=4"]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    with local_cloud(tmp_path_factory.mktemp("local-cloud")) as c:
        yield c


def run_pipeline(cloud, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TRAINING_DIR / "pipeline.py"), *args],
        capture_output=True, text=True, timeout=TIMEOUT_S,
        env={**os.environ, **cloud["env"], "DEVICE_SIM_BIN": str(device_sim_bin())}, check=False,
    )


def readings_of(sample: Path, thing: str) -> list[dict]:
    out = []
    for path in sorted(sample.glob(f"telemetry/date=*/thing={thing}/*.json")):
        out.extend(json.loads(path.read_text())["readings"])
    return sorted(out, key=lambda r: r["ts"])


@pytest.fixture(scope="module")
def fleet(cloud, tmp_path_factory):
    """The fleet's data in the local cloud: the sample's batches under the rule's keys, two
    anomaly windows, and incidents raised a few seconds after each fault's onset and cleared at
    the run's end; every fault confirmed by `provision incidents confirm` but one, and one false
    raise on a healthy pump confirmed as a false alarm."""
    sample = tmp_path_factory.mktemp("sample") / "landing"
    os.environ.setdefault("DEVICE_SIM_BIN", str(device_sim_bin()))
    truth = landing_sample(sample, PLAN, 3)
    s3, db = make_app(cloud, "pump-landing", "pump-incidents")
    upload_batches(s3, "pump-landing", sample)
    raised = raise_faults(db, "pump-incidents", truth)
    unconfirmed = (raised[0][0], raised[0][0]["onset_ts"] + RAISE_DELAY_MS)
    raises = [(run, at, run["class"]) for run, at in raised[1:]]
    healthy = next(run for run in truth if run["onset_ts"] is None)
    ts = healthy["first_ts"] + (healthy["last_ts"] - healthy["first_ts"]) // 2
    at = put_incident(db, "pump-incidents", healthy["thing"], ts, f"model-overheating-{ts}-1", "overheating", True)
    put_incident(db, "pump-incidents", healthy["thing"], ts + 20_000, f"model-overheating-{ts}-1", "overheating", False)
    raises.append((healthy, at, "false_alarm"))
    for run, at, cause in raises:
        done = confirm(cloud, "--thing", run["thing"], "--at", at, "--cause", cause, "--by", "test")
        assert done.returncode == 0, done.stderr
    # Two raises' anomaly windows, as the analyzer uploads them: readings the batches hold too.
    for run, at, _ in raises[:2]:
        readings = [r for r in readings_of(sample, run["thing"]) if run["first_ts"] <= r["ts"] <= run["last_ts"]][:50]
        event_id = at.split("#")[1]
        doc = {"v": 1, "thing": run["thing"], "event": {"id": event_id}, "beforeSamples": 20, "readings": readings}
        s3.put_object(Bucket="pump-landing", Key=f"{run['thing']}/anomalies/2026-12-01/{event_id}.json",
                      Body=json.dumps(doc).encode())
    return {"sample": sample, "truth": truth, "raises": raises, "unconfirmed": unconfirmed, "false_alarm": (healthy, ts)}


@pytest.fixture(scope="module")
def weak_model(dataset: Path, tmp_path_factory) -> Path:
    """The current model of the first run: one stump, on the small generated dataset."""
    model = tmp_path_factory.mktemp("weak")
    train_small(dataset, model, "--n-estimators", "1", "--max-depth", "1", "--class-weight", "none")
    return model


@pytest.fixture(scope="module")
def first_run(cloud, fleet, weak_model, tmp_path_factory):
    """The pipeline with the stump as the current model: the candidate must beat it."""
    base = tmp_path_factory.mktemp("pipeline")
    work, registry = base / "work-1", base / "registry"
    done = run_pipeline(cloud, "run", "--endpoint-url", cloud["url"], "--bucket", "pump-landing", "--work", str(work),
                        "--registry", str(registry), "--current-model-dir", str(weak_model), "--execution-id", "t1",
                        "--analyzer", str(pump_analyzer_bin()), *ROWS, *SMALL)
    assert done.returncode == 0, done.stdout + done.stderr
    return {"work": work, "registry": registry, "report": json.loads(done.stdout), "base": base, "fleet": fleet}


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def split_rows(dataset: Path) -> dict[str, list[dict]]:
    return {s: rows(dataset / s / f"{s}.csv") for s in ("train", "validation", "test")}


def segment_runs(manifest: dict, truth: list[dict]) -> dict[int, dict]:
    """Each segment's run of the sample (a run's readings form one segment unless a split cuts it)."""
    out = {}
    for seg in manifest["segments"]:
        for run in truth:
            if run["thing"] == seg["thing"] and run["first_ts"] <= seg["first_ts"] <= run["last_ts"]:
                out[seg["run_id"]] = run
    return out


def test_rows_hold_the_features_device_sim_dataset_computes_for_the_same_readings(first_run, tmp_path):
    plan_ds = tmp_path / "ds"
    done = subprocess.run([str(device_sim_bin()), "dataset", "--out", str(plan_ds), *PLAN],
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    reference = {}
    for split, split_list in split_rows(plan_ds).items():
        for r in split_list:
            reference[(int(r["run_id"]), round(float(r["t_s"]), 3))] = r
    dataset = first_run["work"] / "dataset"
    manifest = json.loads((dataset / "manifest.json").read_text())
    features = manifest["schema"]["features"]
    runs = segment_runs(manifest, first_run["fleet"]["truth"])
    compared = 0
    for split_list in split_rows(dataset).values():
        for r in split_list:
            seg = manifest["segments"][int(r["run_id"])]
            run = runs[seg["run_id"]]
            if seg["first_ts"] != run["first_ts"]:
                continue  # a run cut by a split boundary starts its window again: no twin row
            # The dataset's t_s counts from the run's start, one poll before its first reading.
            ref = reference[(run["run_id"], round(float(r["t_s"]) + 1.0, 3))]
            assert [r[f] for f in features] == [ref[f] for f in features], (r["run_id"], r["t_s"])
            compared += 1
    assert compared > 500, compared


def test_labels_come_from_confirmations_and_unconfirmed_spans_are_left_out(first_run):
    dataset = first_run["work"] / "dataset"
    manifest = json.loads((dataset / "manifest.json").read_text())
    runs = segment_runs(manifest, first_run["fleet"]["truth"])
    labels = manifest["labels"]
    assert labels["confirmed_fault_rows"] > 0 and labels["false_alarm_rows"] > 0 and labels["quiet_rows"] > 0
    assert labels["unconfirmed_windows"] > 0 and labels["guard_windows"] > 0
    unconfirmed_run, unconfirmed_raise = first_run["fleet"]["unconfirmed"]
    confirmed = {run["run_id"] for run, _, cause in first_run["fleet"]["raises"] if cause != "false_alarm"}
    seen_fault = 0
    for split_list in split_rows(dataset).values():
        for r in split_list:
            seg = manifest["segments"][int(r["run_id"])]
            run = runs[seg["run_id"]]
            ts = seg["first_ts"] + round(float(r["t_s"]) * 1000)
            assert r["label"] in ("normal", run["class"]), (r["label"], run)
            if run["run_id"] == unconfirmed_run["run_id"]:
                assert ts < unconfirmed_raise, "no row under the unconfirmed raise"
            if r["label"] != "normal":
                # Only a confirmed raise's span (raise to clear) gives a fault label.
                assert run["run_id"] in confirmed and ts >= run["onset_ts"] + RAISE_DELAY_MS
                seen_fault += 1
            elif run["onset_ts"] is not None and run["run_id"] in confirmed:
                # Before the raise, and outside the guard of 30 s before it.
                assert ts < run["onset_ts"] + RAISE_DELAY_MS - 30_000
    assert seen_fault == labels["confirmed_fault_rows"]
    assert manifest["inputs"]["anomaly_windows"] == 2 and manifest["inputs"]["duplicates"] == 100


def test_splits_are_by_time_and_no_window_crosses_a_cut(first_run):
    manifest = json.loads((first_run["work"] / "dataset" / "manifest.json").read_text())
    val_from, test_from = manifest["validation_from_ms"], manifest["test_from_ms"]
    assert val_from < test_from
    for seg in manifest["segments"]:
        lo, hi = {"train": (0, val_from), "validation": (val_from, test_from), "test": (test_from, 1 << 62)}[seg["split"]]
        assert lo <= seg["first_ts"] and seg["last_ts"] < hi, seg
    for name, split in manifest["splits"].items():
        assert split["rows"] > 0, name
    assert all(n > 0 for n in manifest["splits"]["train"]["classes"].values())


def test_a_better_candidate_is_registered_with_its_artifacts_and_evaluation(first_run):
    report = first_run["report"]
    evaluation = report["evaluation"]
    assert evaluation["passed"], evaluation
    assert evaluation["candidate"]["macro_f1"] > evaluation["baseline"]["macro_f1"]
    assert evaluation["candidate"]["false_raises"] <= evaluation["baseline"]["false_raises"]
    assert evaluation["candidate"]["rows"] == evaluation["baseline"]["rows"], "the same held-out rows"
    assert report["registered"] == {"group": "pump-fault-classifier", "version": 1, "approval": "PendingManualApproval"}
    package_dir = first_run["registry"] / "pump-fault-classifier" / "1"
    package = json.loads((package_dir / "package.json").read_text())
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    assert package["evaluation"]["candidate"] == evaluation["candidate"]
    for name in ("model.onnx", "model-card.json", "test-vectors.json"):
        assert (package_dir / "model" / name).read_bytes() == (first_run["work"] / "candidate" / name).read_bytes()
    card = json.loads((package_dir / "model" / "model-card.json").read_text())
    manifest = json.loads((first_run["work"] / "dataset" / "manifest.json").read_text())
    assert card["training_data"]["digest"] == manifest["training_digest"]
    assert card["input"]["features"] == manifest["schema"]["features"]


def validate(operation: str, request: dict) -> None:
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model("sagemaker")
    report = ParamValidator().validate(request, model.operation_model(operation).input_shape)
    assert not report.has_errors(), f"{operation}: {report.generate_report()}"


def test_every_step_request_is_valid_for_the_sagemaker_service_model(cloud, first_run):
    requests = first_run["work"] / "requests"
    operations = {"processing": "CreateProcessingJob", "training": "CreateTrainingJob",
                  "evaluation": "CreateProcessingJob", "model_package_group": "CreateModelPackageGroup",
                  "model_package": "CreateModelPackage"}
    for step, operation in operations.items():
        request = json.loads((requests / f"{step}.json").read_text())
        validate(operation, request)
    processing = json.loads((requests / "processing.json").read_text())
    assert processing["AppSpecification"]["ContainerEntrypoint"] == ["device-sim", "landing-rows"]
    training = json.loads((requests / "training.json").read_text())
    assert json.loads(training["HyperParameters"]["n_estimators"]) == 20
    # What the requests point at is where they say, in the local cloud's bucket.
    s3, _ = clients(cloud)
    package = json.loads((requests / "model_package.json").read_text())
    uris = [package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"],
            package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"],
            processing["ProcessingInputs"][0]["S3Input"]["S3Uri"],
            training["InputDataConfig"][2]["DataSource"]["S3DataSource"]["S3Uri"]]
    for uri in uris:
        bucket, _, key = uri[len("s3://"):].partition("/")
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] > 0, uri
    landing = json.loads(s3.get_object(Bucket="pump-landing", Key="pipeline/t1/inputs/landing.manifest")["Body"].read())
    assert landing[0] == {"prefix": "s3://pump-landing/"} and len(landing) == 241 + 2


def test_approval_then_a_worse_candidate_is_refused_and_nothing_is_registered(cloud, first_run):
    registry = first_run["registry"]
    done = run_pipeline(cloud, "approve", "--registry", str(registry), "--version", "1")
    assert done.returncode == 0, done.stderr
    validate("UpdateModelPackage", json.loads(done.stdout))
    before = sorted(p.name for p in (registry / "pump-fault-classifier").iterdir())
    work = first_run["base"] / "work-2"
    done = run_pipeline(cloud, "run", "--endpoint-url", cloud["url"], "--bucket", "pump-landing", "--work", str(work),
                        "--registry", str(registry), "--execution-id", "t2", *ROWS,
                        "--hp", "n_estimators=1", "--hp", "max_depth=1", "--hp", "class_weight=none")
    assert done.returncode == 3, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["registered"] is None
    assert not report["evaluation"]["passed"]
    assert report["evaluation"]["baseline_dir"].endswith("pump-fault-classifier/1/model"), "the approved package"
    assert "refused" in done.stderr and report["evaluation"]["reason"] in done.stderr
    assert sorted(p.name for p in (registry / "pump-fault-classifier").iterdir()) == before


@pytest.fixture()
def small_app(cloud, fleet, request):
    """A bucket and table of their own, with one good batch."""
    name = f"bad-{request.node.name.split('[')[0][-20:].replace('_', '-')}"
    s3, db = make_app(cloud, name, name)
    return name, s3, db


def test_an_empty_landing_zone_is_refused_with_what_to_check(cloud, small_app, tmp_path):
    name, s3, db = small_app
    done = run_pipeline(cloud, "run", "--endpoint-url", cloud["url"], "--bucket", name, "--incidents-table", name,
                        "--work", str(tmp_path / "w"), "--registry", str(tmp_path / "r"), *ROWS)
    assert done.returncode == 2, done.stderr
    assert f"the landing bucket {name} holds no telemetry batch" in done.stderr
    assert not (tmp_path / "r").exists()


def test_a_missing_bucket_is_an_aws_error_not_a_crash(cloud, tmp_path):
    done = run_pipeline(cloud, "run", "--endpoint-url", cloud["url"], "--bucket", "no-such-landing",
                        "--work", str(tmp_path / "w"), "--registry", str(tmp_path / "r"), *ROWS)
    assert done.returncode == 2, done.stderr
    assert "the AWS request failed" in done.stderr and "NoSuchBucket" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_malformed_batch_is_named_and_nothing_is_lost(cloud, fleet, small_app, tmp_path):
    name, s3, db = small_app
    good = sorted(fleet["sample"].glob("telemetry/date=*/thing=pump-0/*.json"))[0]
    good_key = good.relative_to(fleet["sample"]).as_posix()
    bad_key = good_key.rsplit("/", 1)[0] + "/1796000000000-broken.json"
    s3.put_object(Bucket=name, Key=good_key, Body=good.read_bytes())
    s3.put_object(Bucket=name, Key=bad_key, Body=b'{"v":1,"thing":"pump-0","readings":[{"ts":')
    done = run_pipeline(cloud, "run", "--endpoint-url", cloud["url"], "--bucket", name, "--incidents-table", name,
                        "--work", str(tmp_path / "w"), "--registry", str(tmp_path / "r"), *ROWS)
    assert done.returncode == 2, done.stderr
    assert f"{bad_key}: not a telemetry batch" in done.stderr
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=name)["Contents"]]
    assert sorted(keys) == sorted([good_key, bad_key]), "the pipeline deletes nothing"
    assert not (tmp_path / "r").exists()


def test_an_unknown_cause_is_refused_by_the_command_and_by_the_pipeline(cloud, fleet, small_app, tmp_path):
    name, s3, db = small_app
    good = sorted(fleet["sample"].glob("telemetry/date=*/thing=pump-0/*.json"))[0]
    s3.put_object(Bucket=name, Key=good.relative_to(fleet["sample"]).as_posix(), Body=good.read_bytes())
    at = put_incident(db, name, "pump-0", 1_796_000_010_000, "model-cavitation-1", "cavitation", True)
    done = confirm(cloud, "--table", name, "--thing", "pump-0", "--at", at, "--cause", "meltdown")
    assert done.returncode == 64 and "meltdown" in done.stderr and "false_alarm" in done.stderr, done.stderr
    done = confirm(cloud, "--table", name, "--thing", "pump-9", "--at", at, "--cause", "cavitation")
    assert done.returncode == 78 and "no raised incident of pump-9" in done.stderr, done.stderr
    item = db.get_item(TableName=name, Key={"thing": {"S": "pump-0"}, "at": {"S": at}})["Item"]
    assert "confirmedCause" not in item
    # A cause written by other means than the command is refused by the processing step.
    db.update_item(TableName=name, Key={"thing": {"S": "pump-0"}, "at": {"S": at}},
                   UpdateExpression="SET confirmedCause = :c", ExpressionAttributeValues={":c": {"S": "meltdown"}})
    done = run_pipeline(cloud, "run", "--endpoint-url", cloud["url"], "--bucket", name, "--incidents-table", name,
                        "--work", str(tmp_path / "w"), "--registry", str(tmp_path / "r"), *ROWS)
    assert done.returncode == 2, done.stderr
    assert 'confirmed cause "meltdown" is not one of' in done.stderr
    assert db.get_item(TableName=name, Key={"thing": {"S": "pump-0"}, "at": {"S": at}})["Item"]["confirmedCause"]


def test_only_the_rules_and_the_analyzers_keys_are_read():
    assert pipeline.is_input_key("telemetry/date=2026-12-01/thing=pump-1/1796000000000-ab.json")
    assert pipeline.is_input_key("pump-1/anomalies/2026-12-01/model-cavitation-1-2.json")
    for key in ("pipeline/t1/inputs/incidents.json", "telemetry/date=x/thing=p/../../../etc.json",
                "/anomalies/x/y.json", "pump-1/anomalies/2026-12-01/a.txt", "pump-1/notes/2026/a.json"):
        assert not pipeline.is_input_key(key), key


def test_a_false_raise_is_three_normal_rows_in_a_row_called_one_fault():
    n, o, c = "normal", "overheating", "cavitation"
    segments = [0] * 8 + [1] * 3
    times = list(range(8)) + list(range(3))
    truth = [n] * 8 + [n] * 3
    # Three in a row once (rows 1-3), then broken by a different fault, then two: one raise;
    # segment 1 starts a new count.
    predicted = [n, o, o, o, c, o, o, n] + [o, o, o]
    assert pipeline.false_raises(segments, times, truth, predicted) == 2
    # Fault rows do not count, and a streak does not run across them.
    truth = [n, n, o, n, n, n, n, n] + [n] * 3
    predicted = [o, o, o, o, n, n, n, n] + [n] * 3
    assert pipeline.false_raises(segments, times, truth, predicted) == 0
