"""Sessions: `uv run nox` runs the default ones (tests per member, props, lint).

    uv run nox -s tests            # every member's CPU tests (Triton under TRITON_INTERPRET=1)
    uv run nox -s "tests(tensor-utils)"
    uv run nox -s props lint
    uv run nox -s demo             # the tour on the real SmolLM2 model
    uv run nox -s bench            # every package's benchmarks -> CSV
    uv run nox -s gpu              # on a CUDA machine; uses the current interpreter, no installs

Each `tests` venv holds one member and its own test group only, so a package that forgets to
declare a dependency fails here rather than working by accident.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib

import nox

sys.path.insert(0, os.path.dirname(__file__))
from tools.workspace import members, pythonpath

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests", "props", "lint"]

MEMBERS = {m.name: m for m in members()}
PACKAGES = [m.name for m in MEMBERS.values() if m.is_package]
CPU_TEST_ENV = {
    "TRITON_INTERPRET": "1",
    "HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "ci"),
}


def uv_sync(session: nox.Session, *args: str) -> None:
    """Install from the lock file (never re-resolving) into this session's venv."""
    session.run_install(
        "uv",
        "sync",
        "--locked",
        "--no-default-groups",
        *args,
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
        silent=True,
    )


@nox.session
@nox.parametrize("member", [nox.param(name, id=name) for name in MEMBERS])
def tests(session: nox.Session, member: str) -> None:
    """One member's CPU test suite in an environment holding only that member."""
    m = MEMBERS[member]
    uv_sync(session, "--package", member, "--group", "test")
    session.run("pytest", str(m.tests), *session.posargs, env=CPU_TEST_ENV)


@nox.session
def props(session: nox.Session) -> None:
    """Cross-package suite: layout rules, import isolation, wheels that install alone."""
    uv_sync(session, "--all-packages", "--group", "dev")
    session.run("pytest", "tests", *session.posargs, env=CPU_TEST_ENV)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, then pyright (basic mode, `[tool.pyright]` in the root pyproject) over every
    member (sources, tests, benchmarks). Pyright resolves imports from this venv: every member
    with every extra, and the lint group."""
    uv_sync(session, "--all-packages", "--all-extras", "--group", "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # -p: this repository's [tool.pyright], never a pyrightconfig.json in a folder above it
    session.run(
        "pyright", "-p", os.path.dirname(os.path.abspath(__file__)),
        "--pythonpath", os.path.join(session.bin, "python"),
    )  # fmt: skip


def floor_pins(requirements: list[str]) -> list[str]:
    """``name>=X`` -> ``name==X`` (markers kept); our own members and unbounded ones dropped."""
    pins = []
    for req in requirements:
        spec, _, marker = req.partition(";")
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*>=\s*([\w.]+)\s*(,.*)?", spec)
        if match and match[1] not in MEMBERS:
            pin = f"{match[1]}{match[2] or ''}=={match[3]}"
            pins.append(f"{pin}; {marker.strip()}" if marker.strip() else pin)
    return pins


FLOOR_MEMBERS = [m.name for m in MEMBERS.values() if m.published]


@nox.session(default=False)
@nox.parametrize("member", [nox.param(name, id=name) for name in FLOOR_MEMBERS])
def floors(session: nox.Session, member: str) -> None:
    """A published member at the lowest versions its pyproject allows: every `>=` floor of the
    member, its extras and the shared package pinned exactly, installed from the folders as a
    user of a clone would (`uv pip install`, no lock), then every module imported and the
    member's CPU tests run. Extra index options for the install (e.g. PyTorch's CPU wheels:
    `FLOORS_INDEX="--index-url https://download.pytorch.org/whl/cpu --extra-index-url
    https://pypi.org/simple"`) come from the FLOORS_INDEX environment variable."""
    m, shared = MEMBERS[member], MEMBERS["llm-efficiency-tensor-utils"]
    requirements = []
    for each in {m.name: m, shared.name: shared}.values():
        project = tomllib.loads((each.path / "pyproject.toml").read_text())["project"]
        requirements += project.get("dependencies", [])
        for extra in project.get("optional-dependencies", {}).values():
            requirements += extra
    groups = tomllib.loads((m.path / "pyproject.toml").read_text()).get("dependency-groups", {})
    test_group = [r for r in groups.get("test", []) if isinstance(r, str)]
    extras = tomllib.loads((m.path / "pyproject.toml").read_text())["project"].get(
        "optional-dependencies", {}
    )
    target = f"{m.path}[{','.join(extras)}]" if extras else str(m.path)
    # The CPU tests run kernels in Triton's interpreter; Triton 3.6's converts one-element arrays
    # with int(), which NumPy 2.4 refuses (a test-environment limit, not the package's).
    pins = [*floor_pins(requirements + test_group), "numpy<2.4"]
    session.log("floor pins: " + " ".join(pins))
    index = os.environ.get("FLOORS_INDEX", "").split()
    session.run_install(
        "uv",
        "pip",
        "install",
        "--python",
        os.path.join(session.bin, "python"),
        *index,
        str(shared.path),
        str(MEMBERS["tensor-utils-dev"].path),
        target,
        *[r for r in test_group if r.split("[")[0] not in MEMBERS],
        *pins,
        silent=False,
    )
    session.run("uv", "pip", "list", "--python", os.path.join(session.bin, "python"), silent=False)
    modules = [
        ".".join(p.relative_to(m.src).with_suffix("").parts).removesuffix(".__init__")
        for p in sorted((m.src / m.module).rglob("*.py"))
        if not (p.name == "cases.py" and p.parent.parent.name == "ops")
    ]
    session.run(
        "python", "-c", f"import importlib; [importlib.import_module(n) for n in {modules!r}]"
    )
    session.run("pytest", str(m.tests), "-x", "-q", *session.posargs, env=CPU_TEST_ENV)


@nox.session(default=False)
def demo(session: nox.Session) -> None:
    """The tour: each package's headline feature on the real SmolLM2 model."""
    uv_sync(session, "--all-packages", "--all-extras")
    session.run("python", "tools/tour.py", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Every package's benchmarks (or those named: `nox -s bench -- expo-merge`), writing CSV."""
    uv_sync(session, "--all-packages", "--all-extras", "--all-groups")
    session.run("python", "tools/bench.py", *session.posargs)


HF_TEST_MEMBERS = [name for name, m in MEMBERS.items() if (m.path / "tests_hf").is_dir()]


@nox.session(name="hf-tests", default=False)
@nox.parametrize("member", [nox.param(name, id=name) for name in HF_TEST_MEMBERS])
def hf_tests(session: nox.Session, member: str) -> None:
    """transformers' common test mixins, from the source distribution of the locked transformers
    version (downloaded once into .nox/_cache), on a member's classes (its tests_hf/ folder)."""
    m = MEMBERS[member]
    uv_sync(session, "--package", member, "--group", "hf-tests")
    version = session.run(
        "python", "-c", "import transformers; print(transformers.__version__)", silent=True
    )
    version = str(version).strip().splitlines()[-1]
    cache = os.path.join(os.path.dirname(__file__), ".nox", "_cache")
    sdist = os.path.join(cache, f"transformers-{version}.tar.gz")
    if not os.path.exists(sdist):
        session.run(
            "uvx", "pip", "download", "--no-deps", "--no-binary", ":all:",
            f"transformers=={version}", "-d", cache, external=True,
        )  # fmt: skip
    session.run(
        "pytest", str(m.path / "tests_hf"), *session.posargs, env={"TRANSFORMERS_SDIST": sdist}
    )


@nox.session(default=False, python=False)
def gpu(session: nox.Session) -> None:
    """gpu- and triton-marked tests on CUDA with the interpreter already there (no installs):
    works on a machine with torch/triton/transformers preinstalled and no package registry."""
    session.run(sys.executable, "tools/gpu.py", *session.posargs, env={"PYTHONPATH": pythonpath()})
