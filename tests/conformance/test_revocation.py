"""A certificate that leaves ACTIVE loses its live MQTT connections (AWS does
this within minutes; the local cloud at once), and cannot connect again."""

import time

import pytest

from support import ConnectionEvents, assert_connect_not_authorized, connack_return_code, connect_device

DROP_DEADLINE_S = 5.0


def test_deactivated_certificate_loses_its_live_connection(device, connect, iot, endpoints):
    events = ConnectionEvents()
    connect(device, events)
    assert not events.dropped()

    iot.update_certificate(certificateId=device.certificate_id, newStatus="INACTIVE")
    started = time.monotonic()
    dropped = events.interrupted.wait(DROP_DEADLINE_S) or events.closed.is_set()
    elapsed = time.monotonic() - started
    assert dropped, f"connection still up {DROP_DEADLINE_S:.0f} s after the certificate was set INACTIVE"
    assert elapsed <= DROP_DEADLINE_S
    status = iot.describe_certificate(certificateId=device.certificate_id)["certificateDescription"]["status"]
    assert status == "INACTIVE"

    # A new connection with the same certificate is refused: the TLS handshake succeeds (the
    # certificate is still signed by the CA) and the CONNECT gets CONNACK 5, not authorized.
    with pytest.raises(Exception) as refused:
        connect_device(endpoints, device, ConnectionEvents())
    assert_connect_not_authorized(refused.value)
    assert connack_return_code(endpoints, device) == 5
