#!/usr/bin/env python3
"""S3 GetObject throughput of the local cloud: one 50 MB artifact over loopback.

A benchmark command, not a test (CI never runs it). It starts the given ``local-cloud serve``
with a temporary data directory and ephemeral ports on 127.0.0.1, reads the administrator's key
pair from ``endpoints.json``, creates a bucket and uploads a 50,000,000-byte random artifact with
boto3 (multipart, 8 MiB parts, path-style), checks the stored size and ETag, then measures in
alternating rounds:

- ``urllib``: a whole-object GET through a presigned URL, read in 1 MiB chunks, SHA-256 of what
  was read checked against the uploaded bytes; time to first byte = request sent until the status
  line and headers are in;
- ``boto3``: ``get_object`` streaming the body in 1 MiB chunks, SHA-256 checked the same way;
- ``ranged``: 1 MiB ranged ``get_object`` calls at random offsets (fixed seed), each compared
  with the uploaded bytes.

It reports MB/s (10^6 bytes per second) median, min and max over the rounds, the local-cloud
process's peak RSS during the downloads (``VmHWM`` from /proc, reset through ``clear_refs`` after
the upload), and the load average at start. The server is stopped with SIGTERM and the temporary
directory removed. With ``--out`` it replaces the section between its markers in that markdown
file (``docs/benchmarks.md``), appending the section if absent; without it prints the section.

Run from the repository root::

    cargo build --release -p local-cloud
    target/venv/bin/python cloud/bench/s3_throughput.py --local-cloud target/release/local-cloud \\
        --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# One S3 client set-up and one endpoints.json reader with the conformance tests, and one
# section writer with the inference benchmark.
sys.path[:0] = [str(REPO_ROOT / "tests" / "conformance"), str(REPO_ROOT / "cloud" / "training")]
from bench_inference import replace_section  # noqa: E402
from support import Endpoints, s3_client  # noqa: E402

BEGIN = "<!-- s3-throughput:begin (generated; re-running the command it names replaces this section) -->"
END = "<!-- s3-throughput:end -->"

MIB = 1024 * 1024
OBJECT_BYTES = 50_000_000
PART_BYTES = 8 * MIB
CHUNK_BYTES = MIB
STARTUP_TIMEOUT_S = 60.0
SHUTDOWN_TIMEOUT_S = 20.0
BUCKET = "bench-artifacts"
KEY = "artifacts/bench-50mb.bin"

# Loopback only: never let a proxy setting send benchmark traffic elsewhere.
for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = ",".join(filter(None, [os.environ.get(_var), "127.0.0.1", "localhost"]))


class BenchError(Exception):
    """A failure the command reports in one line and exits non-zero for."""


# ---------------------------------------------------------------- the server


class LocalCloud:
    def __init__(self, binary: Path, startup_timeout: float):
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.tmp = Path(tempfile.mkdtemp(prefix="s3-throughput-"))
        self.data_dir = self.tmp / "data"
        self.log_path = self.tmp / "local-cloud.log"
        self.process: subprocess.Popen | None = None
        self.endpoints: Endpoints | None = None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError as e:
            return f"(no log: {e})"

    def start(self) -> Endpoints:
        env = dict(os.environ, NO_COLOR="1")
        env.setdefault("RUST_LOG", "warn")
        self.data_dir.mkdir()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(self.binary), "serve", "--data-dir", str(self.data_dir),
                 "--mqtt-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
                 "--greengrass-data-plane-addr", "127.0.0.1:0"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        path = self.data_dir / "endpoints.json"
        deadline = time.monotonic() + self.startup_timeout
        last = "not written yet"
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise BenchError(f"local-cloud exited with {code} before writing endpoints.json:\n{self.log_tail()}")
            try:
                self.endpoints = Endpoints.from_json(json.loads(path.read_text()))
                if not self.endpoints.access_key_id:
                    raise BenchError(f"{path} names no key pair (`credentials`): S3 needs one")
                if not self.endpoints.http.startswith("http://127.0.0.1:"):
                    raise BenchError(f"local-cloud announced a non-loopback endpoint: {self.endpoints.http}")
                return self.endpoints
            except FileNotFoundError:
                pass
            except (ValueError, KeyError, TypeError) as e:  # half-written; a later look parses
                last = f"{type(e).__name__}: {e}"
            time.sleep(0.05)
        raise BenchError(
            f"local-cloud did not write a usable endpoints.json within {self.startup_timeout:.0f} s ({last}):\n{self.log_tail()}"
        )

    def proc_status(self, field: str) -> int | None:
        """A `kB` field of /proc/<pid>/status, in bytes."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
        return None

    def reset_peak_rss(self) -> bool:
        """Resets VmHWM to the current RSS (Linux `clear_refs` value 5)."""
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM, wait; SIGKILL if it does not exit. Raises if the exit was not clean."""
        p = self.process
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise BenchError(f"local-cloud did not exit within {SHUTDOWN_TIMEOUT_S:.0f} s of SIGTERM")
        if p.returncode != 0:
            raise BenchError(f"local-cloud exited with {p.returncode} after SIGTERM:\n{self.log_tail()}")

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------- the measurements


def multipart_etag(data: bytes, part: int) -> str:
    digests = [hashlib.md5(data[i:i + part]).digest() for i in range(0, len(data), part)]
    return f'"{hashlib.md5(b"".join(digests)).hexdigest()}-{len(digests)}"'


def upload(s3, data: bytes) -> dict:
    from boto3.s3.transfer import TransferConfig

    s3.create_bucket(Bucket=BUCKET)
    config = TransferConfig(multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES, max_concurrency=4)
    t0 = time.perf_counter()
    s3.upload_fileobj(io.BytesIO(data), BUCKET, KEY, Config=config)
    seconds = time.perf_counter() - t0
    head = s3.head_object(Bucket=BUCKET, Key=KEY)
    expected = multipart_etag(data, PART_BYTES)
    if head["ContentLength"] != len(data):
        raise BenchError(f"stored size {head['ContentLength']} bytes, uploaded {len(data)}")
    if head["ETag"] != expected:
        raise BenchError(f"stored ETag {head['ETag']}, expected the multipart ETag {expected}")
    return {"seconds": seconds, "etag": head["ETag"], "parts": -(-len(data) // PART_BYTES)}


def get_urllib(opener, url: str, size: int, sha256: str) -> dict:
    digest = hashlib.sha256()
    n = 0
    t0 = time.perf_counter()
    with opener.open(url, timeout=60) as resp:
        ttfb = time.perf_counter() - t0
        if resp.status != 200:
            raise BenchError(f"presigned GET answered {resp.status}")
        while True:
            chunk = resp.read(CHUNK_BYTES)
            if not chunk:
                break
            digest.update(chunk)
            n += len(chunk)
    seconds = time.perf_counter() - t0
    if n != size or digest.hexdigest() != sha256:
        raise BenchError(f"presigned GET: read {n} bytes with SHA-256 {digest.hexdigest()}, expected {size} bytes with {sha256}")
    return {"mbps": n / seconds / 1e6, "ttfb_ms": ttfb * 1e3}


def get_boto3(s3, size: int, sha256: str) -> dict:
    digest = hashlib.sha256()
    n = 0
    t0 = time.perf_counter()
    body = s3.get_object(Bucket=BUCKET, Key=KEY)["Body"]
    for chunk in body.iter_chunks(CHUNK_BYTES):
        digest.update(chunk)
        n += len(chunk)
    seconds = time.perf_counter() - t0
    if n != size or digest.hexdigest() != sha256:
        raise BenchError(f"boto3 get_object: read {n} bytes with SHA-256 {digest.hexdigest()}, expected {size} bytes with {sha256}")
    return {"mbps": n / seconds / 1e6}


def get_ranges(s3, data: bytes, offsets: list[int]) -> dict:
    n = 0
    latencies = []
    t0 = time.perf_counter()
    for start in offsets:
        end = min(start + CHUNK_BYTES, len(data)) - 1
        t = time.perf_counter()
        resp = s3.get_object(Bucket=BUCKET, Key=KEY, Range=f"bytes={start}-{end}")
        got = resp["Body"].read()
        latencies.append(time.perf_counter() - t)
        if got != data[start:end + 1]:
            raise BenchError(f"ranged GET bytes={start}-{end}: {len(got)} bytes that differ from the uploaded ones")
        n += len(got)
    seconds = time.perf_counter() - t0
    return {"mbps": n / seconds / 1e6, "request_ms": statistics.median(latencies) * 1e3}


# ---------------------------------------------------------------- the report


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f", {int(line.split()[1]) / MIB:.1f} GiB RAM"
    except OSError:
        pass
    return f"{os.cpu_count()} × {cpu}{ram}, {platform.system()} {platform.release()}"


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "unknown"


def spread(values: list[float], digits: int = 0) -> tuple[str, str]:
    f = f"{{:,.{digits}f}}"
    return f.format(statistics.median(values)), f"{f.format(min(values))} / {f.format(max(values))}"


def markdown(r: dict) -> str:
    rows = [
        ("whole object, presigned URL, `urllib` (1 MiB reads, SHA-256 checked)", r["urllib"]),
        ("whole object, boto3 `get_object` streaming (1 MiB chunks, SHA-256 checked)", r["boto3"]),
        (f"{r['ranges']} × 1 MiB ranged boto3 `get_object`, one after another (bytes compared)", r["ranged"]),
    ]
    lines = [
        BEGIN,
        "## S3 GetObject throughput: local cloud, 50 MB artifact over loopback",
        "",
        f"- Command: `cargo build --release -p local-cloud`, then `{r['command']}`",
        f"- Date: {r['date']}",
        f"- Machine: {r['machine']}; load average at start `{r['loadavg']}`. The machine is shared: other processes "
        "may have been running, and the client (Python) runs on the same cores as the server.",
        f"- Local cloud: `local-cloud serve`, release build, its own process, HTTP on 127.0.0.1 (S3 through `s3s`, "
        f"signatures verified with the administrator's key pair from `endpoints.json`).{r['binary_note']}",
        f"- Object: {OBJECT_BYTES:,} random bytes, uploaded with boto3 multipart ({r['upload']['parts']} parts of 8 MiB, "
        f"path-style) in {r['upload']['seconds']:.2f} s; stored size and multipart ETag checked.",
        f"- {r['rounds']} rounds, each measuring the three ways in turn; MB/s is 10^6 bytes per second, median and "
        "min / max over the rounds. Client: Python "
        f"{platform.python_version()}, boto3 {r['boto3_version']}.",
        "",
        "| download | MB/s median | MB/s min / max |",
        "| --- | ---: | ---: |",
    ]
    for label, samples in rows:
        med, mm = spread([s["mbps"] for s in samples])
        lines.append(f"| {label} | {med} | {mm} |")
    ttfb_med, ttfb_mm = spread([s["ttfb_ms"] for s in r["urllib"]], 2)
    req_med, req_mm = spread([s["request_ms"] for s in r["ranged"]], 2)
    lines += [
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| time to first byte, presigned `urllib` GET (request → status line and headers), ms | {ttfb_med} median, {ttfb_mm} min / max |",
        f"| ranged GET, per-request time (median of each round), ms | {req_med} median, {req_mm} min / max |",
        f"| local-cloud RSS after the upload, MiB | {r['rss_before_mib']} |",
        f"| local-cloud peak RSS during the downloads (`VmHWM`{r['hwm_note']}), MiB | {r['peak_rss_mib']} |",
        "",
        "- The client hashes (SHA-256) every whole-object download while reading it, so those figures include the "
        "hashing on the same cores; they are what a client that checks an artifact's digest gets, not the server's limit.",
        "- One client connection at a time, no parallel ranged reads: a deployment downloading one artifact, "
        "not a load test.",
        END,
    ]
    return "\n".join(lines)


def command_line(binary: Path, args) -> tuple[str, str]:
    """The command as it is run from the repository root, and a note when the binary is elsewhere."""
    note = ""
    try:
        shown = str(binary.resolve().relative_to(REPO_ROOT))
    except ValueError:
        shown = "target/release/local-cloud"
        note = " The binary measured was built outside this checkout; the command names the default location."
    parts = ["target/venv/bin/python cloud/bench/s3_throughput.py", f"--local-cloud {shown}"]
    if args.rounds != 10:
        parts.append(f"--rounds {args.rounds}")
    if args.ranges != 50:
        parts.append(f"--ranges {args.ranges}")
    if args.out:
        parts.append("--out docs/benchmarks.md" if args.out.resolve() == REPO_ROOT / "docs" / "benchmarks.md" else f"--out {args.out}")
    return " ".join(parts), note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--local-cloud", type=Path, default=os.environ.get("LOCAL_CLOUD_BIN"),
        help="the local-cloud binary (default: $LOCAL_CLOUD_BIN, else target/release/local-cloud)",
    )
    parser.add_argument("--rounds", type=int, default=10, help="rounds of each download (at least 5)")
    parser.add_argument("--ranges", type=int, default=50, help="1 MiB ranged GETs per round")
    parser.add_argument("--startup-timeout", type=float, default=STARTUP_TIMEOUT_S, help="seconds to wait for endpoints.json")
    parser.add_argument("--out", type=Path, help="markdown file whose marked section is replaced (appended if absent)")
    args = parser.parse_args(argv)
    if args.rounds < 5:
        parser.error("--rounds must be at least 5")
    if args.ranges < 1:
        parser.error("--ranges must be at least 1")
    if args.startup_timeout <= 0:
        parser.error("--startup-timeout must be positive")
    binary = args.local_cloud or REPO_ROOT / "target" / "release" / "local-cloud"
    if not binary.is_absolute():
        binary = Path.cwd() / binary
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise BenchError(f"local-cloud binary not found at {binary}: run `cargo build --release -p local-cloud` "
                         "(or pass --local-cloud / set LOCAL_CLOUD_BIN)")
    try:
        import boto3
    except ImportError:
        raise BenchError("boto3 is not installed: run scripts/python-env.sh and use target/venv/bin/python") from None

    loadavg = load_average()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    data = os.urandom(OBJECT_BYTES)
    sha256 = hashlib.sha256(data).hexdigest()
    rng = random.Random(50)
    offsets = [rng.randrange(0, OBJECT_BYTES - CHUNK_BYTES) for _ in range(args.ranges)]

    cloud = LocalCloud(binary, args.startup_timeout)
    try:
        ep = cloud.start()
        s3 = s3_client(ep)
        up = upload(s3, data)
        url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": KEY}, ExpiresIn=3600)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        rss_before = cloud.proc_status("VmRSS")
        hwm_reset = cloud.reset_peak_rss()
        results: dict[str, list[dict]] = {"urllib": [], "boto3": [], "ranged": []}
        for i in range(args.rounds):
            results["urllib"].append(get_urllib(opener, url, OBJECT_BYTES, sha256))
            results["boto3"].append(get_boto3(s3, OBJECT_BYTES, sha256))
            results["ranged"].append(get_ranges(s3, data, offsets))
            print(f"round {i + 1}/{args.rounds}: " + ", ".join(
                f"{k} {v[-1]['mbps']:,.0f} MB/s" for k, v in results.items()), file=sys.stderr)
        peak = cloud.proc_status("VmHWM")
        cloud.stop()
    except BenchError:
        raise
    except Exception as e:  # a boto3/urllib failure: say what, with the server's log
        raise BenchError(f"{type(e).__name__}: {e}\nlocal-cloud log (tail):\n{cloud.log_tail()}") from e
    finally:
        cloud.cleanup()

    command, binary_note = command_line(binary, args)
    report = {
        "command": command,
        "binary_note": binary_note,
        "date": date,
        "machine": machine(),
        "loadavg": loadavg,
        "rounds": args.rounds,
        "ranges": args.ranges,
        "boto3_version": boto3.__version__,
        "upload": up,
        "rss_before_mib": f"{rss_before / MIB:.1f}" if rss_before else "unknown",
        "peak_rss_mib": f"{peak / MIB:.1f}" if peak else "unknown",
        "hwm_note": ", reset after the upload" if hwm_reset else "; could not be reset, so it includes the upload",
        **results,
    }
    section = markdown(report)
    if args.out:
        replace_section(args.out, section, BEGIN, END)
        print(f"wrote the s3-throughput section of {args.out}", file=sys.stderr)
    else:
        print(section)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"s3_throughput: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
