"""The worked op example in docs/architecture.md must run as written (kernel under the interpreter)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from tools.workspace import ROOT


def test_architecture_worked_example_runs(tmp_path):
    pytest.importorskip("triton")
    text = (ROOT / "docs" / "architecture.md").read_text()
    blocks = re.findall(r"`([^`]+\.py)`:\n\n```python\n(.*?)```", text, re.S)
    assert {name for name, _ in blocks} >= {
        "src/mypkg/ops/axpby/naive.py",
        "src/mypkg/ops/axpby/triton.py",
        "src/mypkg/ops/axpby/__init__.py",
        "tests/test_axpby.py",
    }
    for name, code in blocks:
        path = tmp_path / name.removeprefix("src/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code)
    for pkg in ("mypkg", "mypkg/ops"):
        (tmp_path / pkg / "__init__.py").touch()
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b9 passed\b", result.stdout), result.stdout
