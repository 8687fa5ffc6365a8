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
import sys

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
    member's src. Pyright resolves imports from this venv: every member with every extra."""
    uv_sync(session, "--all-packages", "--all-extras", "--group", "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("pyright", "--pythonpath", os.path.join(session.bin, "python"))


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
