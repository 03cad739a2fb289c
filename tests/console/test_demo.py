"""`manage.py demo` runs end to end on its own simulated gateway and a fresh database."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

pytestmark = pytest.mark.slow


def test_demo_command_runs_the_tour_and_exits_0(tmp_path: Path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        "TRADING_MODE": "paper",
        "ORDERS_ENABLED": "false",
        "LOG_FORMAT": "text",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "demo"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "== Migrating the database" in out  # a fresh database is migrated first
    for step in ("1. Health", "2. Contract resolution", "3. Quote", "4. Daily bars", "5. Preview", "8. Audit trail"):
        assert step in out
    assert "simulated; the gateway received no order." in out
    assert "ORDERS_ENABLED=True in this process only" in out
    assert "order.submitted" in out and "fill.recorded" in out
    assert "Demo finished: every step worked." in out


def test_demo_refuses_live_mode(tmp_path: Path):
    # A live configuration that passes the system checks: the demo still refuses to run.
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        "TRADING_MODE": "live",
        "IB_GATEWAY": "127.0.0.1:4002",
        "SECRET_KEY": "a-live-looking-secret-key-only-for-this-test-0123456789",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "demo"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "The demo runs in paper mode only" in result.stderr


def _fingerprint(path: Path) -> dict[str, str]:
    """The database's files, byte for byte (the main file and its WAL, when there is one)."""
    files = [path, path.with_name(path.name + "-wal")]
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.exists()}


def test_demo_leaves_the_configured_database_unchanged(tmp_path: Path):
    configured = tmp_path / "configured.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{configured}", "TRADING_MODE": "paper", "LOG_FORMAT": "text"}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=settings.BASE_DIR, env=env, check=True
    )
    with sqlite3.connect(configured) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = _fingerprint(configured)

    result = subprocess.run(
        [sys.executable, "manage.py", "demo"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Using a throwaway database" in result.stdout
    assert "order.submitted" in result.stdout  # the tour really placed orders, elsewhere
    assert _fingerprint(configured) == before
    with sqlite3.connect(configured) as db:
        for table in ("orders_order", "orders_fill", "audit_auditentry"):
            assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (0,), table  # noqa: S608
