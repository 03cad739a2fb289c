"""`scripts/serve.sh` gives a new install a SECRET_KEY of its own (so its ledger seal key is not the public
default), once, and never changes the key of an install that already has one or already has a database."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "first_run_key.sh"


def run(install: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DATABASE_URL")}
    return subprocess.run(
        [str(install / "scripts" / "first_run_key.sh")],
        env={**clean, "PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


def install_dir(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, tmp_path / "scripts" / "first_run_key.sh")
    return tmp_path


def secret_of(install: Path) -> str | None:
    if not (install / ".env").exists():
        return None
    return _read(install / ".env").get("SECRET_KEY")


def _read(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            name, value = line.split("=", 1)
            values[name.strip()] = value.strip()
    return values


def test_a_new_install_gets_a_long_random_key_readable_by_its_owner_only(tmp_path):
    first, second = install_dir(tmp_path / "a"), install_dir(tmp_path / "b")
    run(first)
    run(second)
    key = secret_of(first)
    assert key is not None and len(key) >= 50
    assert key != secret_of(second)
    assert stat.S_IMODE((first / ".env").stat().st_mode) == 0o600


def test_the_key_is_made_once_and_the_rest_of_env_is_kept(tmp_path):
    install = install_dir(tmp_path)
    (install / ".env").write_text("ORDERS_ENABLED=false\n")
    run(install)
    key = secret_of(install)
    run(install)
    assert secret_of(install) == key
    assert _read(install / ".env")["ORDERS_ENABLED"] == "false"


def test_an_install_with_a_key_or_a_database_is_left_alone(tmp_path):
    with_db = install_dir(tmp_path / "db")
    (with_db / "db.sqlite3").write_bytes(b"")  # seals already made with whatever key it had
    run(with_db)
    assert not (with_db / ".env").exists()
    in_env = install_dir(tmp_path / "env")
    run(in_env, SECRET_KEY="x" * 60)
    assert not (in_env / ".env").exists()
    elsewhere = install_dir(tmp_path / "pg")
    run(elsewhere, DATABASE_URL="postgres://db/ibkrgw")
    assert not (elsewhere / ".env").exists()
    own = install_dir(tmp_path / "own")
    (own / ".env").write_text("export SECRET_KEY=mine\n")
    run(own)
    assert (own / ".env").read_text() == "export SECRET_KEY=mine\n"
