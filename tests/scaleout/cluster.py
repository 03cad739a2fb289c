"""Real processes for the scale-out tests and benchmark: redis-server, a throwaway PostgreSQL, daphne.

Nothing here is used by the product.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "ibkrgwci"  # initdb and postgres refuse to run as root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextmanager
def redis_server() -> Iterator[str]:
    """A private redis-server on a free port, without persistence; yields its URL."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc=proc)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def postgres_available() -> bool:
    if not (PG_BIN / "initdb").exists():
        return False
    if os.geteuid() != 0:
        return True
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        return False
    return True


def _as_pg_user(args: list[str]) -> None:
    if os.geteuid() == 0:
        args = ["su", PG_USER, "-s", "/bin/sh", "-c", subprocess.list2cmdline(args)]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


@contextmanager
def postgres_database(*, durable: bool = True) -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free port (as .ci/run starts one); yields a DATABASE_URL."""
    workdir = Path(tempfile.mkdtemp(prefix="ibkrgw-pg-"))
    if os.geteuid() == 0:
        os.chown(workdir, pwd.getpwnam(PG_USER).pw_uid, -1)
    port = free_port()
    data = workdir / "data"
    options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c max_connections=200"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off"
    _as_pg_user([str(PG_BIN / "initdb"), "-D", str(data), "-U", "ibkrgw", "--auth=trust"])
    _as_pg_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(workdir / "log"), "-w", "start"])
    try:
        subprocess.run(
            [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "ibkrgw", "ibkrgw"],
            check=True,
            timeout=60,
        )
        yield f"postgres://ibkrgw@127.0.0.1:{port}/ibkrgw"
    finally:
        _as_pg_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def sqlite_database() -> Iterator[str]:
    workdir = Path(tempfile.mkdtemp(prefix="ibkrgw-sqlite-"))
    try:
        yield f"sqlite:///{workdir / 'db.sqlite3'}"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def base_env(*, database_url: str, gateway_port: int, channel_layer_url: str | None) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ibkrgw.settings",
        "DATABASE_URL": database_url,
        "IB_GATEWAY": f"127.0.0.1:{gateway_port}",
        "TRADING_HOURS": "always",  # the simulated market never closes
        "ORDERS_ENABLED": "true",
        "IB_THROTTLE": "false",
        "LOG_LEVEL": "WARNING",
    }
    for inherited in ("CHANNEL_LAYER_URL", "IBKRGW_NO_BROKER"):  # tests/ws sets the latter for its in-process app
        env.pop(inherited, None)
    if channel_layer_url:
        env["CHANNEL_LAYER_URL"] = channel_layer_url
    return env


def manage(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=120
    ).stdout


def prepare_database(env: dict[str, str]) -> str:
    """Migrate and create a trade API key; returns the key."""
    manage(env, "migrate", "--noinput", "-v", "0")
    return manage(env, "apikey", "create", "--name", "scaleout", "--scope", "trade").strip().splitlines()[-1].strip()


def lease_holder_pid(env: dict[str, str]) -> int | None:
    """The pid in the holder id (host:pid:uuid) of the IB connection lease, None when nobody holds it."""
    out = manage(
        env,
        "shell",
        "-c",
        "from brokers.scaleout.lease import IB_CONNECTION, lease_holder; "
        "print(lease_holder(name=IB_CONNECTION) or '-')",
    ).strip()
    last = out.splitlines()[-1] if out else "-"
    return None if last == "-" else int(last.split(":")[-2])


@dataclass
class WebProcess:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def start_web(env: dict[str, str], logdir: Path, name: str) -> WebProcess:
    port = free_port()
    log = logdir / f"{name}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "ibkrgw.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return WebProcess(proc=proc, port=port, log=log)


class Api:
    """A keep-alive HTTP client for one web process."""

    def __init__(self, port: int, key: str, timeout: float = 30) -> None:
        self.port, self.timeout = port, timeout
        self.headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        payload = json.dumps(body) if body is not None else None
        try:
            self.conn.request(method, path, body=payload, headers=self.headers)
            response = self.conn.getresponse()
        except (ConnectionError, http.client.HTTPException):
            self.conn.close()  # the server closed a kept-alive connection: retry once on a new one
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            self.conn.request(method, path, body=payload, headers=self.headers)
            response = self.conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")

    def get(self, path: str) -> tuple[int, dict]:
        return self.request("GET", path)

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        return self.request("POST", path, body)


class WebSocket:
    """A blocking websocket client (RFC 6455 text frames only), enough to read quote frames in a test."""

    def __init__(self, port: int, path: str, key: str, timeout: float = 10) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        nonce = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://localhost\r\n"
                f"Authorization: Api-Key {key}\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self._read(1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket refused: {head!r}")

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("websocket closed")
            data += chunk
        return data

    def send_json(self, message: dict) -> None:
        payload, mask = json.dumps(message).encode(), os.urandom(4)  # clients mask every frame
        size = bytes([0x80 | len(payload)]) if len(payload) < 126 else bytes([0x80 | 126]) + len(payload).to_bytes(2)
        self.sock.sendall(bytes([0x81]) + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def receive_json(self) -> dict:
        while True:
            first, second = self._read(2)
            size = second & 0x7F
            if size >= 126:
                size = int.from_bytes(self._read(2 if size == 126 else 8))
            payload = self._read(size)
            if first & 0x0F == 0x1:
                return json.loads(payload)
            if first & 0x0F == 0x8:
                raise ConnectionError("websocket closed by the server")

    def close(self) -> None:
        self.sock.close()
