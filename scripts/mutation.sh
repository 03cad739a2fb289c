#!/usr/bin/env bash
# Mutation testing of the safety-critical modules (configured in setup.cfg, [mutmut]); see docs/testing.md.
#   scripts/mutation.sh                      every module, 2 workers, from scratch
#   MUTATION_JOBS=4 scripts/mutation.sh 'orders.gates.*' 'audit.*'   only these mutants (fnmatch on their names)
# Results accumulate in mutants/ (MUTATION_FRESH=0 keeps earlier results). Prints the score over every
# mutant checked so far and exits non-zero below MUTATION_MIN_SCORE (default 90).
set -euo pipefail
cd "$(dirname "$0")/.."
log="${TMPDIR:-/tmp}/mutmut-run.log"
if [ "${MUTATION_FRESH:-1}" = "1" ]; then
  rm -rf mutants  # results of an older tree never count
fi
.venv/bin/mutmut run --max-children "${MUTATION_JOBS:-2}" "$@" >"$log" 2>&1 || { tail -n 40 "$log"; exit 1; }
.venv/bin/python - "${MUTATION_MIN_SCORE:-90}" <<'PY'
import subprocess
import sys
from collections import Counter

lines = subprocess.run([".venv/bin/mutmut", "results", "--all", "true"], capture_output=True, text=True).stdout
status = {}
for line in lines.splitlines():
    if ":" in line:
        name, _, outcome = line.strip().rpartition(": ")
        status[name] = outcome
counts = Counter(status.values())
checked = {n: s for n, s in status.items() if s not in ("not checked", "skipped")}
killed = sum(1 for s in checked.values() if s in ("killed", "timeout"))
score = 100 * killed / len(checked) if checked else 0.0
print(
    f"mutation score: {killed} killed of {len(checked)} mutants checked = {score:.1f}% "
    f"({counts['timeout']} of them by timeout; survived {counts['survived']}, no test {counts['no tests']}, "
    f"suspicious {counts['suspicious']}; not checked in this run {counts['not checked']})"
)
left = sorted(n for n, s in checked.items() if s not in ("killed", "timeout"))
if left:
    print("not killed (each explained in docs/mutation-survivors.md):")
    print("\n".join(f"  {n}: {checked[n]}" for n in left))
sys.exit(0 if score >= float(sys.argv[1]) else 1)
PY
