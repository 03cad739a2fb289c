"""Connection handling: handshake, startApi, framing, dispatch of requests to their handlers."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from . import messages as M
from .protocol import MIN_SERVER_VERSION, Cursor, ProtocolError, parse_version_range, read_frame
from .session import Session

log = logging.getLogger("brokers.sim")


class Connections:
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

    async def _handshake(self, s: Session, reader: asyncio.StreamReader) -> None:
        prefix = await reader.readexactly(4)
        if prefix != b"API\0":
            raise ProtocolError(f"bad prefix {prefix!r}")
        fields = await read_frame(reader, terminated=False)
        lo, hi = parse_version_range(fields[0] if fields else "")
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
        s.send([15, 1, self.account_code])
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
            log.info("client %s: unsupported message id %s ignored", s.client_id, msg_id)
            return
        try:
            handler(s, Cursor(fields))
        except ProtocolError as exc:
            log.warning("client %s: malformed message %s ignored: %s", s.client_id, msg_id, exc)
        except Exception:  # noqa: BLE001
            log.exception("client %s: error handling message %s", s.client_id, msg_id)
