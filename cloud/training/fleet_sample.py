#!/usr/bin/env python3
"""A fleet's data in a local cloud, and the retraining pipeline's wall time on it.

The tests (``tests/test_pipeline.py``) and the benchmark share these helpers: a local cloud on
loopback ports, the landing bucket and incidents table as ``provision app`` makes them, the
batches ``device-sim landing-sample`` writes put under their keys, and incident rows as the
anomaly handler writes them, raised a few seconds after each simulated fault's onset.

As a command it measures one pipeline run on a sample of ``--hours`` simulated hours:

    target/venv/bin/python cloud/training/fleet_sample.py --hours 8 --things 4 --work DIR

(every raise confirmed with its true cause through ``provision incidents confirm``), and prints the
pipeline's report with its seconds per step.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
# The analyzer raises a few seconds after a fault's onset (docs/ml.md, detection delays).
RAISE_DELAY_MS = 5_000


def binary(env: str, name: str) -> Path:
    path = Path(os.environ.get(env, REPO_ROOT / "target" / "debug" / name))
    if not path.is_file():
        raise FileNotFoundError(f"{name} not found at {path}: build it or set {env}")
    return path


@contextlib.contextmanager
def local_cloud(data: Path, timeout_s: float = 60) -> Iterator[dict[str, Any]]:
    """A local cloud on loopback ports: its HTTP endpoint and the environment that signs for it."""
    with open(data.parent / f"{data.name}.log", "wb") as log:
        process = subprocess.Popen(
            [str(binary("LOCAL_CLOUD_BIN", "local-cloud")), "serve", "--data-dir", str(data), "--mqtt-addr",
             "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--greengrass-data-plane-addr", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + timeout_s
            endpoints = None
            while endpoints is None:
                if process.poll() is not None:
                    raise RuntimeError(f"local-cloud exited with {process.returncode} while starting")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"local-cloud wrote no endpoints.json within {timeout_s} s")
                try:
                    endpoints = json.loads((data / "endpoints.json").read_text())
                except (FileNotFoundError, ValueError):
                    time.sleep(0.05)
            creds = endpoints["credentials"]
            env = {"AWS_ACCESS_KEY_ID": creds["accessKeyId"], "AWS_SECRET_ACCESS_KEY": creds["secretAccessKey"],
                   "AWS_REGION": endpoints["region"], "AWS_DEFAULT_REGION": endpoints["region"],
                   "AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "127.0.0.1,localhost"}
            yield {"url": endpoints["http"], "env": env}
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def clients(cloud: dict[str, Any]):
    """boto3 S3 and DynamoDB clients for the local cloud, without retries."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(aws_access_key_id=cloud["env"]["AWS_ACCESS_KEY_ID"],
                                    aws_secret_access_key=cloud["env"]["AWS_SECRET_ACCESS_KEY"],
                                    region_name=cloud["env"]["AWS_REGION"])
    config = Config(retries={"max_attempts": 1})
    return (session.client("s3", endpoint_url=cloud["url"], config=config),
            session.client("dynamodb", endpoint_url=cloud["url"], config=config))


def make_app(cloud: dict[str, Any], bucket: str, table: str):
    """The landing bucket and incidents table, keyed as `provision app` makes them."""
    s3, db = clients(cloud)
    s3.create_bucket(Bucket=bucket)
    db.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                    KeySchema=[{"AttributeName": "thing", "KeyType": "HASH"},
                               {"AttributeName": "at", "KeyType": "RANGE"}],
                    AttributeDefinitions=[{"AttributeName": "thing", "AttributeType": "S"},
                                          {"AttributeName": "at", "AttributeType": "S"}])
    return s3, db


def put_incident(db, table: str, thing: str, ts: int, event_id: str, kind: str, active: bool) -> str:
    """One row as the anomaly handler writes it (cloud/functions, `incident_item`); returns its key."""
    at = f"{ts:013d}#{event_id}#{'raised' if active else 'cleared'}"
    db.put_item(TableName=table, Item={
        "thing": {"S": thing}, "at": {"S": at}, "id": {"S": event_id}, "ts": {"N": str(ts)},
        "kind": {"S": kind}, "detector": {"S": "model"}, "severity": {"N": "0.7"}, "active": {"BOOL": active},
        "clearing": {"BOOL": not active}, "reason": {"S": "simulated"}, "recordedAt": {"N": str(ts + 50)},
    })
    return at


def confirm(cloud: dict[str, Any], *args: str) -> subprocess.CompletedProcess:
    """`provision incidents confirm ARGS` against the local cloud."""
    return subprocess.run([str(binary("PROVISION_BIN", "provision")), "incidents", "confirm", *args,
                           "--endpoint-url", cloud["url"]],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **cloud["env"]}, check=False)


def landing_sample(out: Path, plan: list[str], things: int) -> list[dict[str, Any]]:
    """`device-sim landing-sample`: the batches under the rule's keys; returns the runs' truth."""
    device_sim = binary("DEVICE_SIM_BIN", "device-sim")
    done = subprocess.run([str(device_sim), "landing-sample", "--out", str(out), *plan, "--things", str(things)],
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return json.loads((out / "truth.json").read_text())["runs"]


def upload_batches(s3, bucket: str, sample: Path) -> int:
    count = 0
    for path in sorted(sample.glob("telemetry/**/*.json")):
        s3.put_object(Bucket=bucket, Key=path.relative_to(sample).as_posix(), Body=path.read_bytes())
        count += 1
    return count


def raise_faults(db, table: str, truth: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """A raise `RAISE_DELAY_MS` after every fault's onset, cleared at its run's end; returns
    each run with its raised row's key."""
    raised = []
    for run in truth:
        if run["onset_ts"] is None:
            continue
        ts = run["onset_ts"] + RAISE_DELAY_MS
        event_id = f"model-{run['class']}-{ts}-1"
        at = put_incident(db, table, run["thing"], ts, event_id, run["class"], True)
        put_incident(db, table, run["thing"], run["last_ts"], event_id, run["class"], False)
        raised.append((run, at))
    return raised


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="The retraining pipeline's wall time on a simulated fleet's data.")
    p.add_argument("--hours", type=float, required=True, help="simulated hours of the fleet (runs of 8 minutes)")
    p.add_argument("--things", type=int, default=4)
    p.add_argument("--work", required=True, help="a new directory (the local cloud's data and the pipeline's files)")
    p.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    work = Path(args.work)
    work.mkdir(parents=True)
    plan = ["--seed", "11", "--hours", str(args.hours)]
    truth = landing_sample(work / "sample", plan, args.things)
    (work / "cloud").mkdir()
    with local_cloud(work / "cloud") as cloud:
        s3, db = make_app(cloud, "pump-landing", "pump-incidents")
        batches = upload_batches(s3, "pump-landing", work / "sample")
        for run, at in raise_faults(db, "pump-incidents", truth):
            done = confirm(cloud, "--thing", run["thing"], "--at", at, "--cause", run["class"])
            if done.returncode != 0:
                raise RuntimeError(done.stderr)
        hp = [x for h in args.hp for x in ("--hp", h)]
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(HERE / "pipeline.py"), "run", "--endpoint-url", cloud["url"], "--bucket",
             "pump-landing", "--work", str(work / "pipeline"), "--registry", str(work / "registry"),
             "--current-model-dir", str(REPO_ROOT / "components" / "model"), *hp],
            capture_output=True, text=True, env={**os.environ, **cloud["env"]}, check=False,
        )
        wall = time.monotonic() - started
    if done.returncode not in (0, 3):
        print(done.stderr, file=sys.stderr)
        return 1
    report = json.loads(done.stdout)
    print(json.dumps({"hours": args.hours, "things": args.things, "batches": batches,
                      "readings": report["processing"]["readings"], "rows": report["processing"]["rows"],
                      "seconds": report["seconds"], "wall_s": round(wall, 1),
                      "registered": report["registered"], "reason": report["evaluation"]["reason"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
