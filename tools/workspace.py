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
    module: str  # import name: `[tool.uv.build-backend] module-name`, else the name with `_`

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
    def published(self) -> bool:
        """False for development-only members (classifier ``Private :: Do Not Upload``)."""
        data = tomllib.loads((self.path / "pyproject.toml").read_text())
        return "Private :: Do Not Upload" not in data["project"].get("classifiers", [])

    @property
    def is_package(self) -> bool:
        """A toolkit package (under packages/), as opposed to the shared helpers."""
        return self.path.parent.name == "packages"


def members() -> list[Member]:
    found = []
    for pattern in MEMBER_GLOBS:
        for pyproject in sorted(ROOT.glob(f"{pattern}/pyproject.toml")):
            data = tomllib.loads(pyproject.read_text())
            name = data["project"]["name"]
            backend = data.get("tool", {}).get("uv", {}).get("build-backend", {})
            module = backend.get("module-name", name.replace("-", "_"))
            found.append(Member(name, pyproject.parent, module))
    return found


def member(name: str) -> Member:
    for m in members():
        if m.name == name:
            return m
    raise SystemExit(f"no workspace member named {name!r}")


def pythonpath() -> str:
    """Every member's src folder, for running from a checkout without installing."""
    return ":".join(str(m.src) for m in members())
