#!/usr/bin/env bash
# Give a new install a SECRET_KEY of its own, in .env (mode 600), before its database holds anything.
# The ledger's seal key is derived from it unless LEDGER_SEAL_KEY is set: the built-in default is
# public, so seals made with it prove nothing. An install that already has a database, a SECRET_KEY
# (environment or .env) or another DATABASE_URL is left alone: changing the key under existing seals
# would make them fail verification (see docs/audit.md, "The seal key").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ -n "${SECRET_KEY:-}" ] || [ -n "${DATABASE_URL:-}" ] || [ -e db.sqlite3 ]; then
  exit 0
fi
if [ -e .env ] && grep -Eq '^[[:space:]]*(export[[:space:]]+)?(SECRET_KEY|DATABASE_URL)[[:space:]]*=' .env; then
  exit 0
fi
key="$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(50))')"
(
  umask 077
  touch .env
  printf '\n# Made on first run by scripts/first_run_key.sh: keep it, and keep it secret.\nSECRET_KEY=%s\n' "$key" >> .env
)
chmod 600 .env
echo "ibkr-gateway: a new SECRET_KEY for this install was written to .env"
