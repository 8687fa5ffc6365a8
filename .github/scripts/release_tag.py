"""Resolve a release tag ``<distribution>-vX.Y.Z`` to the workspace member it releases.

    python .github/scripts/release_tag.py llm-efficiency-tensor-utils-v0.2.0 >> "$GITHUB_OUTPUT"

prints ``dist=``, ``module=`` and ``version=`` lines, or exits 1 with one line when the tag is
malformed, names no member, names a private member (tensor-utils-dev) or disagrees with the
member's pyproject version. Distribution names contain dashes, so the version is the part after
the last ``-v``. Stdlib only: it runs before anything is installed.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tools.workspace import members

TAG = re.compile(r"(?P<dist>[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)-v(?P<version>\d+\.\d+\.\d+)")


class ReleaseError(Exception):
    pass


def resolve(tag: str) -> dict[str, str]:
    match = TAG.fullmatch(tag)
    if not match:
        raise ReleaseError(f"tag {tag!r} is not <distribution>-vX.Y.Z")
    dist, version = match["dist"], match["version"]
    found = {m.name: m for m in members()}
    if dist not in found:
        raise ReleaseError(f"tag {tag!r}: no workspace member is named {dist!r}")
    m = found[dist]
    if not m.published:
        raise ReleaseError(f"tag {tag!r}: {dist} is private (Private :: Do Not Upload)")
    have = tomllib.loads((m.path / "pyproject.toml").read_text())["project"]["version"]
    if have != version:
        raise ReleaseError(f"tag {tag!r} says {version} but {dist} is at {have}")
    return {"dist": dist, "module": m.module, "version": version}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: release_tag.py <distribution>-vX.Y.Z", file=sys.stderr)
        return 2
    try:
        facts = resolve(argv[0])
    except ReleaseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for key, value in facts.items():
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
