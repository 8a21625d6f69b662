"""A Greengrass component that takes part in deployments with AWS's Python IPC
client (awsiotsdk, `GreengrassCoreIPCClientV2`), for the simulated core's
conformance tests.

It subscribes to component updates and to configuration validation, then:
- answers each deployment's first preUpdateEvent with DeferComponentUpdate
  (`recheckAfterMs` 1000) and the next one with `recheckAfterMs` 0 (go ahead);
- accepts a proposed configuration whose `limit` is a number up to 100 and
  rejects any other with a reason (SendConfigurationValidityReport);
- before any deployment, records what the core answers to a deferral and to a
  validity report that nothing asked for.

Everything it sees goes to an append-only JSON-lines file, one whole line per
write, so a test can read it while the component runs.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
from typing import Any

from awsiot.greengrasscoreipc import model
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

LIMIT_MAX = 100
RECHECK_MS = 1000


def describe_error(e: BaseException) -> dict:
    """The exception as the SDK raised it: its class and the modelled error's message."""
    modelled = isinstance(e, model.GreengrassCoreIPCError)
    return {"type": type(e).__name__, "ipcError": modelled, "message": getattr(e, "message", None) if modelled else str(e)}


class Journal:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, entry: dict) -> None:
        os.write(self.fd, (json.dumps(entry, sort_keys=True) + "\n").encode())


def outcome(call) -> dict:
    try:
        call()
    except Exception as e:  # the answer is what the test checks
        return {"ok": False, "error": describe_error(e)}
    return {"ok": True}


def verdict(configuration: Any) -> tuple[Any, str]:
    limit = configuration.get("limit") if isinstance(configuration, dict) else None
    if isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit <= LIMIT_MAX:
        return model.ConfigurationValidityStatus.ACCEPTED, f"limit {limit} accepted"
    return model.ConfigurationValidityStatus.REJECTED, f"limit must be a number up to {LIMIT_MAX}, not {limit!r}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--journal", required=True)
    args = p.parse_args()
    journal = Journal(args.journal)
    ipc = GreengrassCoreIPCClientV2()
    inbox: queue.Queue = queue.Queue()
    ipc.subscribe_to_component_updates(
        on_stream_event=lambda e: inbox.put(("update", e)),
        on_stream_error=lambda e: inbox.put(("error", e)) or True,
    )
    ipc.subscribe_to_validate_configuration_updates(
        on_stream_event=lambda e: inbox.put(("validate", e)),
        on_stream_error=lambda e: inbox.put(("error", e)) or True,
    )
    unsolicited = model.ConfigurationValidityReport(
        status=model.ConfigurationValidityStatus.ACCEPTED, deployment_id="00000000-0000-0000-0000-000000000000"
    )
    journal.write(
        {
            "ready": True,
            "deferWithoutNotice": outcome(
                lambda: ipc.defer_component_update(deployment_id="00000000-0000-0000-0000-000000000000", recheck_after_ms=RECHECK_MS)
            ),
            "reportWithoutRequest": outcome(lambda: ipc.send_configuration_validity_report(configuration_validity_report=unsolicited)),
        }
    )
    deferred: set[str] = set()
    while True:
        kind, event = inbox.get()
        if kind == "error":
            journal.write({"streamError": describe_error(event)})
        elif kind == "update" and event.pre_update_event is not None:
            pre = event.pre_update_event
            first = pre.deployment_id not in deferred
            deferred.add(pre.deployment_id)
            recheck = RECHECK_MS if first else 0
            answer = outcome(
                lambda: ipc.defer_component_update(
                    deployment_id=pre.deployment_id, message="finishing a batch" if first else None, recheck_after_ms=recheck
                )
            )
            journal.write(
                {"pre": pre.deployment_id, "isGgcRestarting": pre.is_ggc_restarting, "recheckAfterMs": recheck, "answer": answer}
            )
        elif kind == "update" and event.post_update_event is not None:
            journal.write({"post": event.post_update_event.deployment_id})
        elif kind == "validate":
            proposed = event.validate_configuration_update_event
            status, message = verdict(proposed.configuration)
            report = model.ConfigurationValidityReport(status=status, deployment_id=proposed.deployment_id, message=message)
            answer = outcome(lambda: ipc.send_configuration_validity_report(configuration_validity_report=report))
            journal.write(
                {"validate": proposed.deployment_id, "configuration": proposed.configuration, "status": status, "answer": answer}
            )


if __name__ == "__main__":
    sys.exit(main())
