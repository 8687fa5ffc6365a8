"""Release checks on built wheels.

Each published distribution builds to one wheel (without workspace sources, as PyPI users will
resolve it) that installs and imports alone in a fresh environment, pulling the shared
llm-efficiency-tensor-utils and nothing else of ours, and whose metadata a release would accept:
Apache-2.0 license expression with the LICENSE file inside, ``py.typed``, authors, classifiers,
keywords, project URLs, and ``Requires-Dist`` naming exactly what the wheel's modules import.
The development-only tensor-utils-dev still builds, but is no release artifact and no published
wheel depends on it.

Members are found on disk (tools/workspace.py), so a new package is checked without edits here.
"""

from __future__ import annotations

import email.parser
import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tools.imports import requirement_name, third_party_imports
from tools.workspace import ROOT, members

MEMBERS = members()
PUBLISHED = [m for m in MEMBERS if m.published]
PRIVATE = [m for m in MEMBERS if not m.published]
OUR_DISTS = {m.name for m in MEMBERS}
SHARED = "llm-efficiency-tensor-utils"
DEV = "tensor-utils-dev"
REPOSITORY = "https://github.com/llm-efficiency-toolkit/llm-efficiency-toolkit"
UV = shutil.which("uv")


def run(*cmd, **kw):
    result = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert result.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed:\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def build_wheel(m, out: Path) -> str | None:
    """Build one member's wheel into ``out``; the error text if the build fails."""
    result = subprocess.run(
        [UV, "build", "--package", m.name, "--wheel", "--no-sources", "-o", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return None if result.returncode == 0 else f"{result.stdout}\n{result.stderr}"


def wheel_file(folder: Path, m) -> Path:
    found = sorted(folder.glob(f"{m.name.replace('-', '_')}-*.whl"))
    assert len(found) == 1, f"{m.name}: expected one wheel in {folder}, found {found}"
    return found[0]


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    """The published members' wheels, one folder (the release's --find-links). A member whose
    build fails is recorded, so only its own tests fail."""
    assert UV, "uv must be on PATH (the nox sessions run under it)"
    out = tmp_path_factory.mktemp("dist")
    failures = {m.name: error for m in PUBLISHED if (error := build_wheel(m, out))}
    return out, failures


def built(wheelhouse, m) -> Path:
    folder, failures = wheelhouse
    assert m.name not in failures, f"{m.name} does not build:\n{failures[m.name]}"
    return wheel_file(folder, m)


def metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.BytesParser().parsebytes(z.read(name))


def test_release_builds_exactly_the_published_members(wheelhouse):
    folder, failures = wheelhouse
    assert not failures, f"wheels that do not build: {sorted(failures)}"
    names = sorted(metadata(w)["Name"] for w in folder.glob("*.whl"))
    assert names == sorted(m.name for m in PUBLISHED)
    assert DEV not in names


@pytest.mark.parametrize("m", PRIVATE, ids=lambda m: m.name)
def test_private_member_builds_but_is_marked_private(m, tmp_path):
    assert build_wheel(m, tmp_path) is None
    meta = metadata(wheel_file(tmp_path, m))
    assert "Private :: Do Not Upload" in meta.get_all("Classifier", [])


@pytest.mark.parametrize("m", PUBLISHED, ids=lambda m: m.name)
def test_wheel_installs_and_imports_alone(m, wheelhouse, tmp_path):
    wheel = built(wheelhouse, m)
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
        str(wheelhouse[0]),
        str(wheel),
    )
    installed = {
        d["name"].lower()
        for d in json.loads(run(UV, "pip", "list", "--python", str(python), "--format", "json"))
    }
    assert installed & OUR_DISTS == {m.name, SHARED}, "ours: the package and the shared layer only"
    code = f"import {m.module}; print({m.module}.__file__, {m.module}.__version__)"
    location, version = run(str(python), "-c", code, cwd=tmp_path).split()
    assert str(venv) in location, f"{m.module} imported from outside the fresh venv: {location}"
    assert version == metadata(wheel)["Version"], "__version__ comes from the metadata"


@pytest.mark.parametrize("m", PUBLISHED, ids=lambda m: m.name)
def test_wheel_metadata_is_releasable(m, wheelhouse):
    wheel = built(wheelhouse, m)
    meta = metadata(wheel)
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        assert meta["License-Expression"] == "Apache-2.0"
        assert meta.get_all("License-File") == ["LICENSE"]
        license_text = z.read(f"{dist_info}/licenses/LICENSE").decode()
        assert "Apache License" in license_text and "Version 2.0" in license_text
        assert f"{m.module}/py.typed" in names, "PEP 561 marker in the wheel"
    assert meta["Summary"] and meta["Requires-Python"] == ">=3.11"
    assert meta["Author"] or meta["Author-email"]
    assert meta["Keywords"]
    classifiers = meta.get_all("Classifier", [])
    assert "Typing :: Typed" in classifiers
    assert "Programming Language :: Python :: 3 :: Only" in classifiers
    assert not [c for c in classifiers if c.startswith("Private ::")]
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL", []))
    assert urls.get("Homepage") == REPOSITORY
    assert urls.get("Source", "").startswith(f"{REPOSITORY}/tree/main/")
    assert urls.get("Issues") == f"{REPOSITORY}/issues"


@pytest.mark.parametrize("m", PUBLISHED, ids=lambda m: m.name)
def test_wheel_requires_exactly_what_it_imports(m, wheelhouse, tmp_path):
    """``Requires-Dist`` (extras included) names exactly the distributions the wheel's own
    modules import (AST scan, tools/imports.py: stdlib and the package itself ignored,
    ``ops/*/cases.py`` test support excluded), and never tensor-utils-dev."""
    wheel = built(wheelhouse, m)
    requires = {requirement_name(r) for r in metadata(wheel).get_all("Requires-Dist", [])}
    assert DEV not in requires, f"{m.name} must not depend on the development-only {DEV}"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp_path)
    imported = third_party_imports((tmp_path / m.module).rglob("*.py"), own=m.module)
    where = {d: sorted(str(p.relative_to(tmp_path)) for p in imported[d]) for d in imported}
    missing = {d: where[d] for d in set(imported) - requires}
    unused = sorted(requires - set(imported))
    assert not missing and not unused, (
        f"imported but not required: {missing}; required but not imported: {unused}"
    )


@pytest.mark.parametrize("m", PUBLISHED, ids=lambda m: m.name)
def test_readme_clone_install_line_works(m, tmp_path):
    """The README's install line for a clone (`uv pip install ./shared/tensor-utils
    ./packages/<name>`), run as written from the repository root into a fresh venv."""
    readme = (m.path / "README.md").read_text()
    found = re.search(r"^uv pip install (\./shared/tensor-utils[^#\n]*)", readme, flags=re.M)
    assert found, f"{m.name}/README.md has no `uv pip install ./shared/tensor-utils ...` line"
    venv = tmp_path / "venv"
    run(UV, "venv", "--quiet", "--python", sys.executable, str(venv))
    python = str(venv / "bin" / "python")
    run(UV, "pip", "install", "--quiet", "--python", python, *shlex.split(found[1]), cwd=ROOT)
    location = run(python, "-c", f"import {m.module}; print({m.module}.__file__)", cwd=tmp_path)
    assert str(venv) in location
