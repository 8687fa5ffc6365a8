"""Workspace rules every member must keep (see docs/architecture.md)."""

from __future__ import annotations

import ast
import re
import tomllib

import pytest

from tools.workspace import ROOT, members

MEMBERS = members()
PACKAGES = [m for m in MEMBERS if m.is_package]
OUR_MODULES = {m.module for m in MEMBERS}
OUR_DISTS = {m.name for m in MEMBERS}


def pyproject(m):
    return tomllib.loads((m.path / "pyproject.toml").read_text())


def requirement_name(req: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_root_is_a_virtual_workspace():
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "project" not in root
    assert root["tool"]["uv"]["workspace"]["members"] == ["shared/*", "packages/*"]
    assert (ROOT / "uv.lock").exists()
    assert any(m.name == "tensor-utils" for m in MEMBERS)


@pytest.mark.parametrize("m", MEMBERS, ids=lambda m: m.name)
def test_member_layout(m):
    project = pyproject(m)["project"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"]), "static X.Y.Z version"
    assert project["requires-python"] == ">=3.11"
    assert (m.path / "README.md").exists()
    assert (m.src / m.module / "__init__.py").exists(), "src layout, import name = dist name with _"
    assert m.tests.is_dir()
    assert "test" in pyproject(m).get("dependency-groups", {}), "a `test` group for the nox session"
    if m.is_package:
        assert m.benchmarks.is_dir()


@pytest.mark.parametrize("m", PACKAGES, ids=lambda m: m.name)
def test_packages_depend_on_tensor_utils_and_no_sibling(m):
    data = pyproject(m)
    deps = {requirement_name(r) for r in data["project"].get("dependencies", [])}
    extras = {
        requirement_name(r)
        for reqs in data["project"].get("optional-dependencies", {}).values()
        for r in reqs
    }
    assert "tensor-utils" in deps
    assert (deps | extras) & OUR_DISTS <= {"tensor-utils"}, (
        "a package may depend only on tensor-utils"
    )
    assert data["tool"]["uv"]["sources"]["tensor-utils"] == {"workspace": True}


@pytest.mark.parametrize("m", PACKAGES, ids=lambda m: m.name)
def test_packages_import_no_sibling(m):
    allowed = {m.module, "tensor_utils"}
    for path in m.src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert not (top in OUR_MODULES and top not in allowed), f"{path}: imports {name}"


@pytest.mark.parametrize("m", MEMBERS, ids=lambda m: m.name)
def test_op_folders_follow_the_convention(m):
    """`ops/<op>/naive.py` is the reference every op must have; `triton.py` is optional."""
    ops = m.src / m.module / "ops"
    if not ops.is_dir():
        pytest.skip("no ops folder")
    for op in (p for p in ops.iterdir() if p.is_dir() and not p.name.startswith("__")):
        assert (op / "naive.py").exists(), f"{op}: missing naive.py reference"
        assert (op / "__init__.py").exists(), (
            f"{op}: missing __init__.py with the dispatching function"
        )
