"""One source for every member's version: its ``pyproject.toml``, read through the installed
distribution's metadata, or straight from the source tree when running from a checkout via
``PYTHONPATH`` (as the GPU runner does)."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def package_version(distribution: str, module_file: str) -> str:
    """``__version__`` for a package: ``package_version("expo-merge", __file__)``."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        pass
    for folder in Path(module_file).resolve().parents:
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            project = tomllib.loads(pyproject.read_text()).get("project", {})
            if project.get("name") == distribution:
                return str(project.get("version", "0+unknown"))
            break
    return "0+unknown"
