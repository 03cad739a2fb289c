"""A minimal real websocket client (RFC 6455 over asyncio streams) for tests against a running daphne.

No new dependency: autobahn's asyncio client cannot share a process with Channels' test tools (txaio is
already bound to Twisted there). Enough of the protocol for our streams: text frames, close, ping.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import struct

from tests.ws.conftest import TIMEOUT

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frames: asyncio.Queue[dict] = asyncio.Queue()
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._pump = asyncio.get_running_loop().create_task(self._read_frames())

    async def send(self, message: dict) -> None:
        self._write(TEXT, json.dumps(message).encode())
        await self.writer.drain()

    async def send_raw(self, opcode: int, payload: bytes, *, length: int | None = None) -> None:
        """One frame as given (text that is not UTF-8, say); with `length`, a header declaring that many
        payload bytes followed by `payload` only: the start of a frame too large to send whole."""
        self._write(opcode, payload, length=length)
        await self.writer.drain()

    async def receive(self, timeout: float = TIMEOUT) -> dict:
        return await asyncio.wait_for(self.frames.get(), timeout)

    async def receive_until(self, predicate, timeout: float = TIMEOUT) -> dict:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.receive(max(0.01, deadline - loop.time()))
            if predicate(frame):
                return frame

    async def close_code(self, timeout: float = TIMEOUT) -> int | None:
        return await asyncio.wait_for(asyncio.shield(self.closed), timeout)

    def stop_reading(self) -> None:
        """Behave like a client that never reads: the kernel buffers fill, the server must buffer or wait."""
        self._pump.cancel()
        self.writer.transport.pause_reading()

    def close(self) -> None:
        self._pump.cancel()
        self.writer.close()

    def _write(self, opcode: int, payload: bytes, *, length: int | None = None) -> None:
        mask = os.urandom(4)  # clients must mask every frame
        n = len(payload) if length is None else length
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        size = len(payload)  # masked as one big integer: fast enough for megabytes
        key = (mask * (size // 4 + 1))[:size]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")
        self.writer.write(header + mask + masked)

    async def _read_frames(self) -> None:
        try:
            while True:
                first, second = await self.reader.readexactly(2)
                opcode, n = first & 0x0F, second & 0x7F
                if n == 126:
                    (n,) = struct.unpack("!H", await self.reader.readexactly(2))
                elif n == 127:
                    (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
                payload = await self.reader.readexactly(n)  # servers never mask
                if opcode == TEXT:
                    self.frames.put_nowait(json.loads(payload))
                elif opcode == PING:
                    self._write(PONG, payload)
                elif opcode == CLOSE:
                    self.closed.set_result(struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None)
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            if not self.closed.done():
                self.closed.set_result(None)


async def connect(port: int, path: str, *, key: str | None = None) -> Client:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    nonce = base64.b64encode(os.urandom(16))
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {nonce.decode()}",
        "Sec-WebSocket-Version: 13",
        f"Origin: http://127.0.0.1:{port}",
    ]
    if key:
        lines.append(f"Authorization: Api-Key {key}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    status = head.split(b"\r\n", 1)[0]
    assert b" 101 " in status, status
    accept = base64.b64encode(hashlib.sha1(nonce + _GUID).digest())  # noqa: S324 - the protocol's own hash
    assert accept in head, "bad Sec-WebSocket-Accept"
    return Client(reader, writer)
