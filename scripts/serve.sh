#!/usr/bin/env bash
# Install and start ibkr-gateway at http://$HOST:$PORT (default 127.0.0.1:8000) on the built-in simulated IB Gateway.
# Safe to run again: it reuses the virtualenv, migrates, and only creates first-run users once.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/base.txt
scripts/first_run_key.sh
.venv/bin/python manage.py migrate --noinput
.venv/bin/python manage.py collectstatic --noinput --verbosity 0
.venv/bin/python manage.py bootstrap
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
url="http://${HOST}:${PORT}"
echo "ibkr-gateway: ${url}/api/v1/  docs: ${url}/api/docs/  admin: ${url}/admin/  console: ${url}/admin/dashboard/"
exec .venv/bin/python -m ibkrgw.serve --host "$HOST" --port "$PORT"
