from __future__ import annotations

import asyncio
import socket
import struct

import pytest
from ib_async import IB

from .conftest import wait_until


def test_handshake_and_startup_sync(gw, connect, version):
    ib = connect(gw, client_id=7)
    assert ib.client.serverVersion() == version
    assert ib.managedAccounts() == ["DU1234567"]
    assert ib.client.getReqId() >= 1
    assert 7 in gw.connected_client_ids()
    assert ib.reqCurrentTime().year >= 2024
    assert {v.tag for v in ib.accountValues()} >= {"NetLiquidation", "TotalCashValue", "BuyingPower"}


def test_several_clients_at_once(gw, connect):
    a, b = connect(gw, client_id=1), connect(gw, client_id=2)
    assert a.isConnected() and b.isConnected()
    assert gw.connected_client_ids() == {1, 2}


def test_duplicate_client_id_is_refused_with_326(gw, connect, allow_ib_errors):
    connect(gw, client_id=5)
    ib = IB()
    errors = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append(code)
    with pytest.raises((TimeoutError, asyncio.TimeoutError, ConnectionError)):
        ib.connect("127.0.0.1", gw.port, clientId=5, timeout=1)
    ib.disconnect()
    assert 326 in errors
    assert gw.connected_client_ids() == {5}


def _frame(*fields: str) -> bytes:
    body = "".join(f + "\0" for f in fields).encode()
    return struct.pack(">I", len(body)) + body


def _handshake(port: int, versions: bytes) -> tuple[socket.socket, bytes]:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"API\0" + struct.pack(">I", len(versions)) + versions)
    return s, s.recv(4096)


@pytest.mark.parametrize(
    "offer,expected", [(b"v157..178", b"178"), (b"v100..160", b"160"), (b"v157..200 +PACEAPI", b"178")]
)
def test_version_negotiation(sim_gateway, offer, expected):
    s, reply = _handshake(sim_gateway.port, offer)
    s.close()
    (n,) = struct.unpack(">I", reply[:4])
    fields = reply[4 : 4 + n].split(b"\0")
    assert fields[0] == expected and len(fields) == 3 and fields[2] == b""


def test_too_old_client_is_closed(sim_gateway):
    s, reply = _handshake(sim_gateway.port, b"v100..150")
    assert reply == b""
    s.close()


def test_unknown_and_malformed_messages_do_not_hurt(gw, connect):
    s, _ = _handshake(gw.port, b"v157..178")
    s.sendall(_frame("71", "2", "42", ""))
    s.sendall(_frame("999", "1", "junk"))  # unknown msg id: logged and ignored
    s.sendall(_frame("9", "8"))  # too short: logged and ignored
    s.sendall(_frame("49", "1"))  # still answered afterwards
    data = b""
    while b"49\x001\x00" not in data:
        chunk = s.recv(65536)
        assert chunk, "connection closed"
        data += chunk
    s.sendall(struct.pack(">I", 0xFFFFFFF0) + b"garbage")  # broken framing: connection closed
    s.settimeout(5)
    while s.recv(65536):
        pass
    s.close()
    ib = connect(gw, client_id=43)  # the gateway is still fine
    assert ib.reqCurrentTime() is not None


def test_foreign_bytes_close_only_that_connection(gw, connect):
    ib = connect(gw, client_id=1)
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\n\r\n")
    assert s.recv(100) == b""
    s.close()
    assert ib.reqCurrentTime() is not None
    wait_until(ib, lambda: gw.connected_client_ids() == {1})


def test_req_ids_and_managed_accounts(gw, connect):
    ib = connect(gw, client_id=3)
    ib.client.reqIds(1)
    ib.client.reqManagedAccts()
    assert ib.reqCurrentTime() is not None
    assert ib.client.getReqId() >= 1
