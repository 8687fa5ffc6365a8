"""Run the gpu- and triton-marked tests on CUDA with whatever interpreter runs this script.

No installs: our code comes from the src folders on PYTHONPATH, so this works on a machine with
torch/triton/transformers/pytest/hypothesis preinstalled and no package registry:

    python tools/gpu.py                      # every member, then the cross-package suite
    python tools/gpu.py expo-merge -- -x     # one member, extra pytest args after --
    python tools/gpu.py props                # only the cross-package op suite

The cross-package suite (``tests/test_props_ops.py``, ``tests/test_mutations.py``) checks every
registered backend against its reference on CUDA (bf16 cases included) and that a broken kernel
is caught there too.
"""

from __future__ import annotations

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools.workspace import ROOT, members, pythonpath

PROPS = "props"
CROSS_PACKAGE = ("tests/test_props_ops.py", "tests/test_mutations.py")


def main(argv: list[str]) -> int:
    names, extra = argv, []
    if "--" in argv:
        names, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    props = not names or PROPS in names
    only_props = names == [PROPS]  # `gpu.py props`: the cross-package suite alone
    names = [n for n in names if n != PROPS]
    chosen = [] if only_props else [m for m in members() if not names or m.name in names]
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
    if props:
        cmd = [sys.executable, "-m", "pytest", *CROSS_PACKAGE, "-p", "no:cacheprovider", *extra]
        print("+", " ".join(cmd), flush=True)
        rc = subprocess.call(cmd, cwd=ROOT, env=env)
        code = code or rc
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
