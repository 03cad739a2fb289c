#!/usr/bin/env bash
# Mutation testing of the safety-critical modules (configured in setup.cfg, [mutmut]); see docs/testing.md.
#   scripts/mutation.sh                      every module, 4 workers, from scratch
#   MUTATION_JOBS=4 scripts/mutation.sh 'orders.gates.*' 'audit.*'   only these mutants (fnmatch on their names)
# Results accumulate in mutants/ (MUTATION_FRESH=0 keeps earlier results). Prints the score over every
# mutant checked so far and exits non-zero below MUTATION_MIN_SCORE (default 90).
set -euo pipefail
cd "$(dirname "$0")/.."
log="${TMPDIR:-/tmp}/mutmut-run.log"
if [ "${MUTATION_FRESH:-1}" = "1" ]; then
  rm -rf mutants  # results of an older tree never count
fi
.venv/bin/mutmut run --max-children "${MUTATION_JOBS:-4}" "$@" >"$log" 2>&1 || { tail -n 40 "$log"; exit 1; }
.venv/bin/python scripts/mutation_score.py "${MUTATION_MIN_SCORE:-90}"
