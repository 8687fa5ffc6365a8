"""The README runs as written and documents every command-line option."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from expo_merge.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), re.S)


def test_options_table_lists_every_option():
    table = "\n".join(line for line in README.read_text().splitlines() if line.startswith("| `"))
    options = [s for a in build_parser()._actions for s in a.option_strings if s.startswith("--")]
    missing = [o for o in options if f"`{o}" not in table]
    assert not missing, f"README options table lacks {missing}"


def test_python_api_example_runs(tmp_path, monkeypatch):
    (code,) = [b for b in _blocks("python") if "from expo_merge import" in b]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "sweep-out" / "alpha-0.3.pt").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="bash example")
def test_command_line_example_runs(tmp_path):
    (script,) = [b for b in _blocks("bash") if "python - <<'PY'" in b]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # `python` and `expo-merge` as an installed environment provides them
    for name, command in (("python", ""), ("expo-merge", " -m expo_merge.cli")):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}"{command} "$@"\n')
        shim.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (work / "aligned-expo-0.3.pt").exists()
    assert sorted(p.name for p in (work / "sweep").iterdir()) == ["alpha-0.1.pt", "alpha-0.5.pt"]
