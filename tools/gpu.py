"""Run the gpu- and triton-marked tests on CUDA with whatever interpreter runs this script.

No installs: our code comes from the src folders on PYTHONPATH, so this works on a machine with
torch/triton/transformers/pytest/hypothesis preinstalled and no package registry:

    python tools/gpu.py                      # every member
    python tools/gpu.py expo-merge -- -x     # one member, extra pytest args after --
"""

from __future__ import annotations

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools.workspace import ROOT, members, pythonpath


def main(argv: list[str]) -> int:
    names, extra = argv, []
    if "--" in argv:
        names, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    chosen = [m for m in members() if not names or m.name in names]
    unknown = set(names) - {m.name for m in members()}
    if unknown:
        print(f"gpu: unknown member(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": pythonpath() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("TRITON_INTERPRET", None)
    code = 0
    for m in chosen:
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            str(m.tests),
            "-m",
            "gpu or triton",
            "-p",
            "no:cacheprovider",
            *extra,
        ]
        print("+", " ".join(cmd), flush=True)
        rc = subprocess.call(cmd, cwd=ROOT, env=env)
        code = code or (0 if rc in (0, 5) else rc)  # 5: this member has no GPU tests
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
