"""ipc-bench's Python measuring component, on AWS's own client.

Started by the simulated core from a recipe (with the SVCUID and socket path a component
gets), it connects with awsiot.greengrasscoreipc.clientv2 (package awsiotsdk), writes
ready.json, waits for the driver's go file, times sequential GetConfiguration and
PublishToTopic calls, writes result.json in the same shape as the Rust component
(ipc-bench's wire module), then stays running until the core stops it.
"""

import argparse
import json
import os
import signal
import threading
import time

from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc.model import JsonMessage, PublishMessage, ReportedLifecycleState


def status_kib(key):
    """A `... kB` line of /proc/self/status, KiB (None if missing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return int(value.split()[0])
    except OSError:
        pass
    return None


def write_json_atomic(path, value):
    """Temporary file and rename: the driver never reads half a file."""
    tmp = os.path.splitext(path)[0] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)


def ready_now():
    return {"client": "python", "pid": os.getpid(), "rss_kib": status_kib("VmRSS"), "hwm_kib": status_kib("VmHWM")}


def time_calls(warmup, calls, call):
    """(durations in ns, elapsed ns, (failed, first error) or None) of sequential calls."""
    failed = [0, None]

    def attempt(i):
        try:
            call(i)
            return True
        except Exception as e:  # noqa: BLE001 - any IPC error counts as a failed call
            failed[0] += 1
            if failed[1] is None:
                failed[1] = f"{type(e).__name__}: {e}"
            return False

    for i in range(warmup):
        attempt(i)
    samples = []
    start = time.monotonic_ns()
    for i in range(calls):
        t = time.monotonic_ns()
        if attempt(i):
            samples.append(time.monotonic_ns() - t)
    return samples, time.monotonic_ns() - start, (failed if failed[0] else None)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ready", required=True)
    parser.add_argument("--go", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--topic", required=True)
    args = parser.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    ipc = GreengrassCoreIPCClientV2()
    ipc.update_state(state=ReportedLifecycleState.RUNNING)
    write_json_atomic(args.ready, ready_now())
    while not os.path.exists(args.go) and not stop.is_set():
        time.sleep(0.005)

    result = {"client": "python", "calls": {}, "elapsed_ns": {}, "errors": {}}

    def record(op, outcome):
        samples, elapsed, failed = outcome
        result["calls"][op] = samples
        result["elapsed_ns"][op] = elapsed
        if failed:
            result["errors"][op] = f"{failed[0]} failed; first: {failed[1]}"

    record("GetConfiguration", time_calls(args.warmup, args.calls, lambda i: ipc.get_configuration(key_path=[args.key])))
    record(
        "PublishToTopic",
        time_calls(
            args.warmup,
            args.calls,
            lambda i: ipc.publish_to_topic(
                topic=args.topic, publish_message=PublishMessage(json_message=JsonMessage(message={"n": i}))
            ),
        ),
    )
    result["rss_kib"] = status_kib("VmRSS")
    result["hwm_kib"] = status_kib("VmHWM")
    write_json_atomic(args.result, result)
    # Stay RUNNING, as a long-running component does, until the core stops us.
    stop.wait()
    ipc.close()


if __name__ == "__main__":
    main()
