"""Fixtures: one local cloud process for the session, boto3 clients pointed at
it, provisioned devices, and awsiotsdk MQTT connections that are closed after
each test.

The local cloud binary comes from `LOCAL_CLOUD_BIN` (default
`target/debug/local-cloud`, built by `cargo build -p local-cloud`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from simcore import core_set
from support import (
    ConnectionEvents,
    Endpoints,
    boto_client,
    connect_device,
    provision_device,
    s3_client,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 60.0
SHUTDOWN_TIMEOUT_S = 20.0
LOG_TAIL_LINES = 60

# Loopback only: never let a proxy setting send test traffic elsewhere.
for var in ("NO_PROXY", "no_proxy"):
    os.environ[var] = ",".join(filter(None, [os.environ.get(var), "127.0.0.1", "localhost"]))


class LocalCloud:
    """A running `local-cloud serve` process and what it announced."""

    def __init__(self, process: subprocess.Popen, data_dir: Path, log_path: Path, endpoints: Endpoints):
        self.process = process
        self.data_dir = data_dir
        self.log_path = log_path
        self.endpoints = endpoints
        # Where the dashboard's checklist panel reads the audit's checklist (absent until written).
        self.checklist: Path | None = None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"(no log: {e})"
        return "\n".join(text.splitlines()[-lines:])


def _local_cloud_bin() -> Path:
    configured = os.environ.get("LOCAL_CLOUD_BIN")
    path = Path(configured) if configured else REPO_ROOT / "target" / "debug" / "local-cloud"
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"local-cloud binary not found at {path}: run `cargo build -p local-cloud` "
            "(or set LOCAL_CLOUD_BIN to the binary)",
            pytrace=False,
        )
    return path


def _wait_for_endpoints(process: subprocess.Popen, path: Path, log_path: Path) -> Endpoints:
    """Polls for endpoints.json until it parses, the process dies, or the
    deadline passes. The file appears once both listeners accept."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last_error = "not written yet"
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            tail = log_path.read_text(errors="replace")[-4000:]
            pytest.fail(f"local-cloud exited with {code} before writing {path}:\n{tail}", pytrace=False)
        try:
            return Endpoints.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            pass
        except (ValueError, KeyError) as e:  # a half-written file parses on a later look
            last_error = f"{type(e).__name__}: {e}"
        time.sleep(0.05)
    process.kill()
    process.wait()
    tail = log_path.read_text(errors="replace")[-4000:]
    pytest.fail(f"{path} not usable within {STARTUP_TIMEOUT_S:.0f} s ({last_error}):\n{tail}", pytrace=False)


@pytest.fixture(scope="session")
def local_cloud(tmp_path_factory) -> LocalCloud:
    binary = _local_cloud_bin()
    data_dir = tmp_path_factory.mktemp("local-cloud")
    log_path = data_dir.parent / f"{data_dir.name}.log"
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info")
    env["NO_COLOR"] = "1"  # plain log text in failure reports
    # CloudWatch evaluates alarms every half second, so alarm tests wait seconds, not minutes.
    env.setdefault("LOCAL_CLOUD_ALARM_EVALUATION_INTERVAL_MS", "500")
    # Fleet metrics of 60 s are published every second, so a fleet-metric alarm moves in seconds.
    env.setdefault("LOCAL_CLOUD_FLEET_METRIC_PERIOD_DIVISOR", "60")
    # IoT Core writes its AWS/IoT metrics every half second (AWS: every minute), for the same reason.
    env.setdefault("LOCAL_CLOUD_IOT_METRICS_INTERVAL_MS", "500")
    # The dashboard's checklist panel reads the audit's checklist here; the dashboard test writes it.
    checklist = data_dir.parent / f"{data_dir.name}-audit" / "checklist.json"
    env["LOCAL_CLOUD_DASHBOARD_CHECKLIST"] = str(checklist)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                str(binary),
                "serve",
                "--data-dir",
                str(data_dir),
                "--mqtt-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
                "--greengrass-data-plane-addr",
                "127.0.0.1:0",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        endpoints = _wait_for_endpoints(process, data_dir / "endpoints.json", log_path)
        assert endpoints.mqtt_host == "127.0.0.1", endpoints
        cloud = LocalCloud(process, data_dir, log_path, endpoints)
        cloud.checklist = checklist
        _CURRENT.append(cloud)
        yield cloud
    finally:
        _CURRENT.clear()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                pytest.fail(f"local-cloud did not exit within {SHUTDOWN_TIMEOUT_S:.0f} s of SIGTERM", pytrace=False)
    tail = log_path.read_text(errors="replace")[-4000:]
    assert process.returncode == 0, f"local-cloud exited with {process.returncode} after SIGTERM:\n{tail}"


# The running cloud, for the failure report hook below.
_CURRENT: list[LocalCloud] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and _CURRENT:
        report.sections.append(("local-cloud log (tail)", _CURRENT[0].log_tail()))
    return report


@pytest.fixture(scope="session")
def endpoints(local_cloud) -> Endpoints:
    return local_cloud.endpoints


@pytest.fixture(scope="session")
def s3(endpoints):
    """boto3 `s3` client (path-style, the administrator's key pair)."""
    return s3_client(endpoints)


@pytest.fixture(scope="session")
def iot(endpoints):
    """boto3 `iot` (control plane) client."""
    return boto_client(endpoints, "iot")


@pytest.fixture(scope="session")
def iot_data(endpoints):
    """boto3 `iot-data` (data plane) client."""
    return boto_client(endpoints, "iot-data")


@pytest.fixture
def device(iot, endpoints, tmp_path):
    """A freshly provisioned device (thing, ACTIVE certificate, shadow policy)."""
    return provision_device(iot, endpoints, tmp_path / "device")


@pytest.fixture
def connect(endpoints):
    """Opens device connections; each is disconnected when the test ends."""
    opened = []

    def _connect(device, events: ConnectionEvents | None = None):
        events = events or ConnectionEvents()
        connection = connect_device(endpoints, device, events)
        opened.append(connection)
        return connection

    yield _connect
    for connection in opened:
        try:
            connection.disconnect().result(timeout=5)
        except Exception:  # already dropped by the broker: nothing to close
            pass


@pytest.fixture
def simulated_core():
    """Starts `device-sim core` processes (`simcore.SimulatedCore`) for one test; each is
    stopped with SIGTERM at the end, must exit 0, and its directories are removed."""
    with core_set() as start:
        yield start


@pytest.fixture(scope="class")
def class_simulated_core():
    """`simulated_core` shared by the tests of a class (one component run, several checks)."""
    with core_set() as start:
        yield start
