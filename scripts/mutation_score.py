"""Print the mutation score from the results in mutants/ (see scripts/mutation.sh and docs/testing.md).

Exits non-zero when the share of killed mutants, among those checked, is below the minimum given.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter


def main(minimum: float) -> int:
    lines = subprocess.run(
        [".venv/bin/mutmut", "results", "--all", "true"], capture_output=True, text=True, check=True
    ).stdout
    status: dict[str, str] = {}
    for line in lines.splitlines():
        name, sep, outcome = line.strip().rpartition(": ")
        if sep:
            status[name] = outcome
    counts = Counter(status.values())
    checked = {n: s for n, s in status.items() if s not in ("not checked", "skipped")}
    killed = sum(1 for s in checked.values() if s in ("killed", "timeout"))
    score = 100 * killed / len(checked) if checked else 0.0
    print(
        f"mutation score: {killed} killed of {len(checked)} mutants checked = {score:.1f}% "
        f"({counts['timeout']} of them by timeout; survived {counts['survived']}, no test {counts['no tests']}, "
        f"suspicious {counts['suspicious']}; not checked {counts['not checked']})"
    )
    left = sorted(n for n, s in checked.items() if s not in ("killed", "timeout"))
    if left:
        print("not killed (each explained in docs/mutation-survivors.md):")
        print("\n".join(f"  {n}: {checked[n]}" for n in left))
    return 0 if score >= minimum else 1


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]) if len(sys.argv) > 1 else 90.0))
