#!/usr/bin/env bash
# Type check with mypy (config in mypy.ini, cache in var/mypy). Errors already listed in
# mypy-baseline.txt are known debt; any other error fails. The baseline only shrinks:
#   scripts/typecheck.sh          fail on an error not in the baseline, or on a fixed one still listed
#   scripts/typecheck.sh --sync   after fixing errors: drop them from the baseline (refuses to add any)
set -euo pipefail
cd "$(dirname "$0")/.."
BASELINE=(--baseline-path mypy-baseline.txt --sort-baseline --no-colors)

status=0
report=$(.venv/bin/mypy 2>&1) || status=$?
if [ "$status" -gt 1 ]; then  # 1 is "errors found"; anything else is mypy itself failing
  printf '%s\n' "$report"
  exit "$status"
fi

if [ "${1:-}" = "--sync" ]; then
  printf '%s\n' "$report" | .venv/bin/mypy-baseline filter "${BASELINE[@]}" --allow-unsynced --hide-stats
  printf '%s\n' "$report" | .venv/bin/mypy-baseline sync "${BASELINE[@]}"
else
  printf '%s\n' "$report" | .venv/bin/mypy-baseline filter "${BASELINE[@]}"
fi
