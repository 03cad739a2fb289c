#!/usr/bin/env bash
# Mutation testing of the safety-critical modules (configured in setup.cfg, [mutmut]).
# Prints the score; exits non-zero below MUTATION_MIN_SCORE (default 90). Usage: scripts/mutation.sh [jobs]
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="${1:-2}"
rm -rf mutants  # a fresh run: results of an older tree never count
.venv/bin/mutmut run --max-children "$jobs" >"${TMPDIR:-/tmp}/mutmut-run.log" 2>&1 || { tail -n 40 "${TMPDIR:-/tmp}/mutmut-run.log"; exit 1; }
.venv/bin/mutmut export-cicd-stats >/dev/null
.venv/bin/python - "${MUTATION_MIN_SCORE:-90}" <<'PY'
import json
import subprocess
import sys

stats = json.load(open("mutants/mutmut-cicd-stats.json"))
killed = stats["killed"] + stats["timeout"]
total = stats["total"] - stats["skipped"]
score = 100 * killed / total if total else 0.0
print(
    f"mutation score: {killed} killed of {total} mutants = {score:.1f}% "
    f"(survived {stats['survived']}, no test {stats['no_tests']}, suspicious {stats['suspicious']})"
)
results = subprocess.run([".venv/bin/mutmut", "results"], capture_output=True, text=True).stdout
left = [line.strip() for line in results.splitlines() if line.strip().endswith(("survived", "no tests"))]
if left:
    print("not killed (see docs/mutation-survivors.md):")
    print("\n".join(f"  {line}" for line in left))
sys.exit(0 if score >= float(sys.argv[1]) else 1)
PY
