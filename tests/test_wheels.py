"""Each distribution builds to one wheel that installs and imports alone in a fresh environment,
pulling tensor-utils and nothing else of ours."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tools.workspace import ROOT, members

MEMBERS = members()
OUR_DISTS = {m.name for m in MEMBERS}
UV = shutil.which("uv")


def run(*cmd, **kw):
    result = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert result.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed:\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    assert UV, "uv must be on PATH (the nox sessions run under it)"
    out = tmp_path_factory.mktemp("dist")
    run(UV, "build", "--all-packages", "--wheel", "--no-sources", "-o", str(out), cwd=ROOT)
    return out


def test_one_wheel_per_distribution(wheelhouse):
    built = sorted(p.name.split("-")[0].replace("_", "-") for p in wheelhouse.glob("*.whl"))
    assert built == sorted(OUR_DISTS)


@pytest.mark.parametrize("m", MEMBERS, ids=lambda m: m.name)
def test_wheel_installs_and_imports_alone(m, wheelhouse, tmp_path):
    wheel = next(wheelhouse.glob(f"{m.module}-*.whl"))
    venv = tmp_path / "venv"
    run(UV, "venv", "--quiet", "--python", sys.executable, str(venv))
    python = venv / "bin" / "python"
    # --find-links supplies our own wheels; third-party dependencies come from the index.
    run(
        UV,
        "pip",
        "install",
        "--quiet",
        "--python",
        str(python),
        "--find-links",
        str(wheelhouse),
        str(wheel),
    )
    installed = {
        d["name"].lower()
        for d in json.loads(run(UV, "pip", "list", "--python", str(python), "--format", "json"))
    }
    ours = installed & OUR_DISTS
    assert ours == ({m.name} | ({"tensor-utils"} if m.name != "tensor-utils" else set()))
    code = f"import {m.module}; print({m.module}.__file__)"
    location = run(str(python), "-c", code, cwd=tmp_path)
    assert str(venv) in location, f"{m.module} imported from outside the fresh venv: {location}"
