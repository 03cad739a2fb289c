"""Connection handling: handshake, startApi, framing, dispatch of requests to their handlers."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from . import messages as M
from .protocol import MIN_SERVER_VERSION, Cursor, ProtocolError, parse_version_range, read_frame
from .session import Session

if TYPE_CHECKING:  # pragma: no cover
    from .faults import Faults

log = logging.getLogger("brokers.sim")

# Where the request id sits in requests that carry one (after a version field for the older messages),
# so a malformed request can be answered against its id.
REQ_ID_FIELD = {1: 2, 2: 2, 3: 1, 4: 2, 9: 2, 10: 2, 11: 2, 20: 1, 25: 2, 50: 2, 51: 2, 52: 2, 53: 2, 54: 2, 55: 2}
# The loop notes every HEARTBEAT_S that it is free; when it has not for STALL_S it was stalled, and what it
# reads then may have arrived at any time during the stall.
HEARTBEAT_S = 0.05
STALL_S = 0.25
REQ_ID_FIELD |= {62: 2, 63: 2, 74: 2, 76: 2, 78: 1, 81: 1, 83: 1, 87: 1, 88: 1, 92: 1, 94: 1, 96: 1, 97: 1, 104: 1}


def request_id(msg_id: int, fields: list[str]) -> int:
    pos = REQ_ID_FIELD.get(msg_id)
    try:
        return int(fields[pos]) if pos is not None else -1
    except (IndexError, ValueError):
        return -1


class Connections:
    faults: Faults  # the gateway's (SimGateway)
    managed_accounts: tuple[str, ...]
    _loop_free_at = 0.0  # monotonic time the loop last got round to its heartbeat

    async def _heartbeat(self) -> None:
        while True:
            self._loop_free_at = time.monotonic()
            await asyncio.sleep(HEARTBEAT_S)

    # fault plumbing (called on the loop by Faults)
    def _drop_all(self) -> None:
        for s in list(self.sessions):
            s.close()

    def _pause_listening(self, seconds: float) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

        async def reopen() -> None:
            await asyncio.sleep(seconds)
            for _ in range(100):
                try:
                    await self._listen()
                    return
                except OSError:
                    await asyncio.sleep(0.05)
            log.error("ibsim could not listen again on port %s", self.port)

        self._spawn(reopen())

    # ------------------------------------------------------------ connection handling
    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername"))
        s = Session(writer=writer, peer=peer)
        if self.faults.refusing():
            s.close()
            return
        self.sessions.add(s)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await asyncio.wait_for(self._handshake(s, reader), 10)
            while not s.closed:
                fields = await read_frame(reader)
                if not fields:
                    continue
                try:
                    msg_id = int(fields[0])
                except ValueError as exc:
                    raise ProtocolError(f"bad msgId {fields[0]!r}") from exc
                if msg_id == 71:
                    await self._start_api(s, fields)
                elif s.client_id is None:
                    log.warning("%s: message %s before startApi ignored", peer, msg_id)
                else:
                    if self.ib_limits and not await self._within_message_rate(s):
                        break
                    self._dispatch(s, msg_id, fields)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        except (TimeoutError, ProtocolError) as exc:
            log.warning("%s: closing connection: %s", peer, exc)
        except Exception:  # noqa: BLE001 - one bad client must not take the gateway down
            log.exception("%s: unexpected error, closing connection", peer)
        finally:
            s.close()
            self.sessions.discard(s)
            if task is not None:
                self._tasks.discard(task)
            log.info("%s: client %s disconnected", peer, s.client_id)

    async def _within_message_rate(self, s: Session) -> bool:
        """IB's API message rate limit: more than ``max_messages_per_second`` in one second is answered
        with error 100 and the connection is closed, unless the client connected with +PACEAPI, in
        which case its requests are paced (delayed) instead. Messages count by when they were read, except
        those read while the loop catches up after a stall, which are not counted."""
        limit = self.max_messages_per_second
        now = time.monotonic()
        if now - self._loop_free_at > STALL_S:
            # Read after the loop was stalled (a busy gateway, not the client): when this message arrived
            # is unknown, so a backlog read all at once is not counted against the client.
            return True
        while s.msg_times and now - s.msg_times[0] >= 1.0:
            s.msg_times.popleft()
        if len(s.msg_times) >= limit:
            if s.pace_api:
                await asyncio.sleep(1.0 - (now - s.msg_times[0]))
                s.msg_times.popleft()
                now = time.monotonic()
            else:
                # IB error list, 100: "Max rate of messages per second has been exceeded."
                s.send(
                    M.error(
                        s.version,
                        -1,
                        100,
                        f"Max rate of messages per second has been exceeded:max={limit} rec={limit + 1} (1)",
                    )
                )
                await asyncio.sleep(0.05)  # let the error reach the client before closing
                s.close()
                return False
        s.msg_times.append(now)
        return True

    async def _handshake(self, s: Session, reader: asyncio.StreamReader) -> None:
        prefix = await reader.readexactly(4)
        if prefix != b"API\0":
            raise ProtocolError(f"bad prefix {prefix!r}")
        fields = await read_frame(reader, terminated=False)
        lo, hi = parse_version_range(fields[0] if fields else "")
        s.pace_api = "+PACEAPI" in (fields[0] if fields else "")
        version = min(hi, self.server_version)
        if version < lo or version < MIN_SERVER_VERSION:
            raise ProtocolError(f"client versions {lo}..{hi} not supported")
        s.version = version
        now = datetime.now(UTC).strftime("%Y%m%d %H:%M:%S")
        s.send([version, f"{now} UTC"])

    async def _start_api(self, s: Session, fields: list[str]) -> None:
        c = Cursor(fields)
        c.skip(1)
        client_id = c.int()
        # A reconnecting client may beat the close of its previous socket; give it a moment.
        for _ in range(50):
            if not any(o.client_id == client_id and not o.closed for o in self.sessions if o is not s):
                break
            await asyncio.sleep(0.01)
        else:
            s.send(
                M.error(
                    s.version,
                    -1,
                    326,
                    "Unable to connect as the client id is already in use. Retry with a unique client id.",
                )
            )
            await asyncio.sleep(0.05)  # let the error reach the client before closing
            s.close()
            return
        s.client_id = client_id
        s.send([15, 1, ",".join(self.managed_accounts)])
        s.send([9, 1, self.engine.next_valid_id(client_id)])
        for code, text in (
            (2104, "Market data farm connection is OK:usfarm"),
            (2106, "HMDS data farm connection is OK:ushmds"),
            (2158, "Sec-def data farm connection is OK:secdefnj"),
        ):
            s.send(M.error(s.version, -1, code, text))
        log.info("%s: client %s connected (v%s)", s.peer, client_id, s.version)

    def _dispatch(self, s: Session, msg_id: int, fields: list[str]) -> None:
        if self.faults.swallows(msg_id):
            return
        delay = self.faults.delay_for(msg_id)
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._handle, s, msg_id, fields)
        else:
            self._handle(s, msg_id, fields)

    def _handle(self, s: Session, msg_id: int, fields: list[str]) -> None:
        if s.closed:
            return
        handler = self._handlers.get(msg_id)
        if handler is None:
            # IB error list, 320: the server could not read the request; the client is never left waiting.
            log.info("client %s: unsupported message id %s", s.client_id, msg_id)
            s.send(M.error(s.version, -1, 320, f"Error reading request. Unsupported message id {msg_id}."))
            return
        try:
            handler(s, Cursor(fields))
            if self.faults.drops_after(msg_id):
                self._drop_all()
        except ProtocolError as exc:
            log.warning("client %s: malformed message %s: %s", s.client_id, msg_id, exc)
            s.send(
                M.error(
                    s.version, request_id(msg_id, fields), 320, f"Error reading request. Unable to parse data. {exc}"
                )
            )
        except Exception:  # noqa: BLE001
            log.exception("client %s: error handling message %s", s.client_id, msg_id)
            s.send(M.error(s.version, request_id(msg_id, fields), 321, "Error validating request."))
