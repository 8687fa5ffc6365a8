"""Run every package's benchmarks (`packages/*/benchmarks/bench_*.py`), each writing its CSV
under that package's `benchmarks/results/`.

    python tools/bench.py                 # all packages
    python tools/bench.py expo-merge      # one package
"""

from __future__ import annotations

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools.workspace import ROOT, members


def main(argv: list[str]) -> int:
    chosen = [m for m in members() if m.benchmarks.is_dir() and (not argv or m.name in argv)]
    failed = []
    for m in chosen:
        for script in sorted(m.benchmarks.glob("bench_*.py")):
            print(f"== {m.name}: {script.name}", flush=True)
            if subprocess.call([sys.executable, str(script)], cwd=ROOT) != 0:
                failed.append(f"{m.name}/{script.name}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
