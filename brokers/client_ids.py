"""A free IB client id for each process on this machine that opens its own connection.

IB allows one connection per client id; a second one is refused with error 326. Claude Desktop
and an editor started with the same configuration each run `manage.py mcp`, so each process
claims the first id from `first` on that no other process here holds, by taking an exclusive
`flock` on a small file per (gateway, id). The kernel drops the lock when the process ends, even
when it is killed, so nothing ever needs cleaning up.

An id can still be in use by a connection this machine cannot see (another host, a TWS session):
then IB answers 326 and the caller asks for the next one with `ClientIdClaim.next()`.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; every process uses `first` as before
    fcntl = None  # type: ignore[assignment]

LOCK_DIR_NAME = "ibkr-gateway-client-ids"


class NoFreeClientId(RuntimeError):
    pass


class ClientIdClaim:
    """One claimed client id; held until `release()` or the end of the process."""

    def __init__(self, *, gateway: str, client_id: int, last: int, fd: int | None) -> None:
        self.gateway, self.client_id, self.last, self._fd = gateway, client_id, last, fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the lock
            self._fd = None

    def next(self) -> ClientIdClaim:
        """Release this id (IB refused it) and claim the next free one."""
        self.release()
        return client_id_claim(gateway=self.gateway, first=self.client_id + 1, last=self.last)

    def __repr__(self) -> str:
        return f"ClientIdClaim({self.gateway}, {self.client_id})"


def lock_dir() -> Path:
    path = Path(tempfile.gettempdir()) / LOCK_DIR_NAME
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def client_id_claim(*, gateway: str, first: int, last: int) -> ClientIdClaim:
    """Claim the lowest client id in `first..last` that no other process here holds for `gateway`.

    Raises NoFreeClientId when every id in the range is held.
    """
    if fcntl is None:
        return ClientIdClaim(gateway=gateway, client_id=first, last=last, fd=None)
    safe_gateway = re.sub(r"[^A-Za-z0-9.-]", "_", gateway)
    for client_id in range(first, last + 1):
        fd = os.open(lock_dir() / f"{safe_gateway}-{client_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return ClientIdClaim(gateway=gateway, client_id=client_id, last=last, fd=fd)
    raise NoFreeClientId(
        f"Every IB client id from {first} to {last} is held by another process on this machine for {gateway}."
    )
