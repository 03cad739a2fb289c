#!/usr/bin/env bash
# Install everything the tests need and run the whole suite plus the contract checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt
# Third-party clients for the simulator's compatibility tests, without their dependencies (see the file).
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/compat.txt
export DJANGO_SETTINGS_MODULE=ibkrgw.settings
.venv/bin/ruff check .
.venv/bin/ruff format --check .
scripts/typecheck.sh
.venv/bin/python manage.py makemigrations --check --dry-run
.venv/bin/python manage.py check --fail-level WARNING
.venv/bin/python manage.py spectacular --validate --fail-on-warn --file /dev/null
# Two worker processes by default (each test has its own database, ports and simulator); TEST_WORKERS=0 runs
# the suite in this process, as does `-n 0` among the arguments.
.venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" "$@"
