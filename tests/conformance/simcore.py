"""The simulated Greengrass core (`device-sim core`) as the conformance tests
run it: stage a component's recipe and artifacts the way the Greengrass CLI
expects them (`{artifacts}/{Name}/{Version}/`), start the core, wait for the
component to finish and hand over its JSON report, stop the core with SIGTERM.

The binary comes from `DEVICE_SIM_BIN` (default `target/debug/device-sim`,
built by `cargo build -p device-sim`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPONENTS_DIR = Path(__file__).resolve().parent / "components"

# A component runs a dozen IPC calls and waits at most 10 s for each delivery.
COMPONENT_TIMEOUT_S = 90.0
SHUTDOWN_TIMEOUT_S = 40.0
LOG_TAIL_CHARS = 6000
# The core's exit code for configuration errors (EX_CONFIG).
EX_CONFIG = 78
# States after which a component does not run again by itself, from `logs/greengrass.log`
# ("<time> <component>: <old> -> <new>"); ERRORED is followed by a restart.
TERMINAL_STATES = ("Finished", "Broken")


def binary_from_env(var: str, default: Path, build_hint: str) -> Path:
    """A binary named by `var` (absolute, or relative to the repository), else `default`;
    fails the test with `build_hint` when it is not there."""
    configured = os.environ.get(var)
    path = Path(configured) if configured else default
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} not found: {build_hint} (or set {var} to the binary)", pytrace=False)
    return path


def device_sim_bin() -> Path:
    return binary_from_env(
        "DEVICE_SIM_BIN", REPO_ROOT / "target" / "debug" / "device-sim", "run `cargo build -p device-sim`"
    )


@dataclass(frozen=True)
class Component:
    """A component to deploy: its recipe and the files of its one artifact directory."""

    name: str
    version: str
    recipe: Path
    artifacts: tuple[Path, ...]


@dataclass(frozen=True)
class CloudLink:
    """What `device-sim core` needs to bridge to IoT Core."""

    endpoints_json: str
    cert_path: str
    key_path: str
    root_ca: str


class SimulatedCore:
    """One `device-sim core` process with its own root, recipe and artifact directories."""

    def __init__(
        self,
        thing: str,
        components: list[Component],
        cloud: Optional[CloudLink] = None,
        update_config: Optional[dict] = None,
        cloud_deployments: bool = False,
    ):
        self.thing = thing
        # Takes thing and thing-group deployments from the cloud (`--cloud-deployments`).
        self.cloud_deployments = cloud_deployments
        self.components = components
        self.cloud = cloud
        # The Greengrass CLI's `--update-config`: {"Name": {"MERGE": {...}, "RESET": [...]}}.
        self.update_config = update_config
        # Unix socket paths are limited to 107 bytes, so the root stays short.
        self.base = Path(tempfile.mkdtemp(prefix="simcore-"))
        self.root = self.base / "root"
        self.recipes = self.base / "recipes"
        self.artifacts = self.base / "artifacts"
        self.log_path = self.base / "core.log"
        self.process: Optional[subprocess.Popen] = None

    def stage(self) -> None:
        self.recipes.mkdir(parents=True)
        for c in self.components:
            shutil.copy(c.recipe, self.recipes / f"{c.name}-{c.version}.yaml")
            dest = self.artifacts / c.name / c.version
            dest.mkdir(parents=True)
            for artifact in c.artifacts:
                shutil.copy2(artifact, dest / artifact.name)

    def start(self) -> None:
        self.stage()
        cmd = [
            str(device_sim_bin()),
            "core",
            "--root",
            str(self.root),
            "--thing",
            self.thing,
            "--recipe-dir",
            str(self.recipes),
            "--artifact-dir",
            str(self.artifacts),
        ]
        for c in self.components:
            cmd += ["--merge", f"{c.name}={c.version}"]
        if self.update_config is not None:
            cmd += ["--update-config", json.dumps(self.update_config)]
        if self.cloud is not None:
            cmd += [
                "--cloud",
                self.cloud.endpoints_json,
                "--cert",
                self.cloud.cert_path,
                "--key",
                self.cloud.key_path,
                "--root-ca",
                self.cloud.root_ca,
            ]
            if self.cloud_deployments:
                cmd.append("--cloud-deployments")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env["NO_COLOR"] = "1"
        # The core passes its environment on to components, as the nucleus does: `python3`
        # in a recipe then finds this interpreter (the venv with awsiotsdk) first.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )

    def component_log(self, name: str) -> str:
        return _tail(self.root / "logs" / f"{name}.log")

    def diagnostics(self) -> str:
        parts = [f"--- device-sim core log ---\n{_tail(self.log_path)}"]
        parts.append(f"--- greengrass.log ---\n{_tail(self.root / 'logs' / 'greengrass.log')}")
        for c in self.components:
            parts.append(f"--- {c.name}.log ---\n{self.component_log(c.name)}")
        return "\n".join(parts)

    def terminal_state(self, name: str) -> Optional[str]:
        """The last terminal state `name` reached, from `logs/greengrass.log`."""
        try:
            text = (self.root / "logs" / "greengrass.log").read_text(errors="replace")
        except FileNotFoundError:
            return None
        pattern = re.compile(rf"^\S+ {re.escape(name)}: \w+ -> (\w+)$", re.MULTILINE)
        states = [m.group(1) for m in pattern.finditer(text)]
        return states[-1] if states and states[-1] in TERMINAL_STATES else None

    def wait_for_report(self, name: str, timeout: float = COMPONENT_TIMEOUT_S) -> dict:
        """Waits until `name` reaches a terminal state (its process exited) and returns the
        report it wrote to `{root}/work/{name}/report.json`. Fails with the logs when the
        core exits, the component fails, or the deadline passes."""
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                pytest.fail(f"device-sim core exited with {code}:\n{self.diagnostics()}", pytrace=False)
            state = self.terminal_state(name)
            if state is not None:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"{name} did not finish within {timeout:.0f} s:\n{self.diagnostics()}", pytrace=False)
        report_path = self.root / "work" / name / "report.json"
        if state != "Finished":
            pytest.fail(f"{name} ended {state}, not Finished:\n{self.diagnostics()}", pytrace=False)
        try:
            return json.loads(report_path.read_text())
        except (OSError, ValueError) as e:
            pytest.fail(f"{name} finished without a readable report ({e}):\n{self.diagnostics()}", pytrace=False)

    def stop(self) -> int:
        """SIGTERM, then the exit code (the core stops its components first)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"device-sim core ignored SIGTERM for {SHUTDOWN_TIMEOUT_S:.0f} s", pytrace=False)
        return self.process.returncode

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.base, ignore_errors=True)


@contextmanager
def core_set() -> Iterator:
    """Yields `start(thing, components, cloud=None, update_config=None, cloud_deployments=False) -> SimulatedCore`;
    on exit stops every
    core it started (each must exit 0 after SIGTERM) and removes their directories."""
    started: list[SimulatedCore] = []

    def start(
        thing: str,
        components: list[Component],
        cloud: Optional[CloudLink] = None,
        update_config: Optional[dict] = None,
        cloud_deployments: bool = False,
    ) -> SimulatedCore:
        core = SimulatedCore(thing, components, cloud, update_config, cloud_deployments)
        started.append(core)
        core.start()
        return core

    try:
        yield start
    finally:
        failures = []
        for core in started:
            try:
                code = core.stop()
                if code != 0:
                    failures.append(f"device-sim core exited with {code} after SIGTERM:\n{core.diagnostics()}")
            finally:
                core.cleanup()
        if failures:
            pytest.fail("\n".join(failures), pytrace=False)


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError as e:
        return f"(no log: {e})"
