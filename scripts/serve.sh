#!/usr/bin/env bash
# Install and start ibkr-gateway at http://127.0.0.1:8000 on the built-in simulated IB Gateway.
# Safe to run again: it reuses the virtualenv, migrates, and only creates first-run users once.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/base.txt
.venv/bin/python manage.py migrate --noinput
.venv/bin/python manage.py collectstatic --noinput --verbosity 0
.venv/bin/python manage.py bootstrap
echo "ibkr-gateway: http://127.0.0.1:8000/api/v1/  docs: http://127.0.0.1:8000/api/docs/  admin: http://127.0.0.1:8000/admin/"
exec .venv/bin/python -m ibkrgw.serve --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}"
