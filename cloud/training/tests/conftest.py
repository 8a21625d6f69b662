"""Fixtures: a small dataset from the built `device-sim dataset` binary, and models trained on it.

The binary comes from `DEVICE_SIM_BIN` (default `target/debug/device-sim`, built by
`cargo build -p device-sim`). A missing binary fails the tests: the pipeline must not rot
silently.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TRAINING_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = TRAINING_DIR.parents[1]
sys.path.insert(0, str(TRAINING_DIR))

# Small and quick: 15 runs of one simulated minute, 20-reading windows, a small forest.
DATASET_FLAGS = ["--seed", "3", "--hours", "0.25", "--run-minutes", "1", "--window", "20", "--stride", "2"]
SMALL_HPS = ["--n-estimators", "20", "--max-depth", "8", "--test-vectors-per-class", "6"]
TIMEOUT_S = 300


def device_sim_bin() -> Path:
    path = Path(os.environ.get("DEVICE_SIM_BIN", REPO_ROOT / "target" / "debug" / "device-sim"))
    if not path.is_file():
        pytest.fail(f"device-sim binary not found at {path}: run `cargo build -p device-sim` or set DEVICE_SIM_BIN")
    return path


def pump_analyzer_bin() -> Path:
    """The analyzer (`PUMP_ANALYZER_BIN`, default `target/debug/pump-analyzer`): its
    `verify-model` loads a model with tract and every check the component makes."""
    path = Path(os.environ.get("PUMP_ANALYZER_BIN", REPO_ROOT / "target" / "debug" / "pump-analyzer"))
    if not path.is_file():
        pytest.fail(f"pump-analyzer binary not found at {path}: run `cargo build -p pump-analyzer` or set PUMP_ANALYZER_BIN")
    return path


def run_train(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Runs train.py in a child process, as SageMaker or a developer would."""
    return subprocess.run(
        [sys.executable, str(TRAINING_DIR / "train.py"), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=env,
        check=False,
    )


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dataset") / "ds"
    done = subprocess.run(
        [str(device_sim_bin()), "dataset", "--out", str(out), *DATASET_FLAGS],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="session")
def manifest(dataset: Path) -> dict:
    return json.loads((dataset / "manifest.json").read_text())


def train_small(dataset: Path, model_dir: Path, *extra: str) -> None:
    """Trains the small model on `dataset` (with its manifest) into `model_dir`; `extra` adds
    or overrides arguments. Fails the test when train.py fails."""
    done = run_train(
        [
            "--train", str(dataset / "train"),
            "--validation", str(dataset / "validation"),
            "--manifest", str(dataset / "manifest.json"),
            "--model-dir", str(model_dir),
            *SMALL_HPS,
            *extra,
        ]
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="session")
def trained(dataset: Path, tmp_path_factory) -> Path:
    model_dir = tmp_path_factory.mktemp("model")
    train_small(dataset, model_dir)
    return model_dir
