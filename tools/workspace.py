"""Facts about the workspace layout, shared by the noxfile, tools/ scripts and tests/.

Kept dependency-free (stdlib only) so it runs on a GPU box with no package registry.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEMBER_GLOBS = ("shared/*", "packages/*")


@dataclass(frozen=True)
class Member:
    name: str  # distribution name, e.g. "expo-merge"
    path: Path  # folder holding pyproject.toml

    @property
    def module(self) -> str:
        return self.name.replace("-", "_")

    @property
    def src(self) -> Path:
        return self.path / "src"

    @property
    def tests(self) -> Path:
        return self.path / "tests"

    @property
    def benchmarks(self) -> Path:
        return self.path / "benchmarks"

    @property
    def is_package(self) -> bool:
        """A toolkit package (under packages/), as opposed to the shared helpers."""
        return self.path.parent.name == "packages"


def members() -> list[Member]:
    found = []
    for pattern in MEMBER_GLOBS:
        for pyproject in sorted(ROOT.glob(f"{pattern}/pyproject.toml")):
            project = tomllib.loads(pyproject.read_text())["project"]
            found.append(Member(project["name"], pyproject.parent))
    return found


def member(name: str) -> Member:
    for m in members():
        if m.name == name:
            return m
    raise SystemExit(f"no workspace member named {name!r}")


def pythonpath() -> str:
    """Every member's src folder, for running from a checkout without installing."""
    return ":".join(str(m.src) for m in members())
