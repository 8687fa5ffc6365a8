"""The README's Python examples run as written, in order, in a scratch directory (later
examples reuse names from earlier ones, as a reader would in one session)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def test_readme_examples_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md[{i}]", "exec"), namespace)
    printed = capsys.readouterr().out
    assert printed.count("selected 6") == 4  # the loop's four steps, 60% selected
    assert "rho/selected_fraction" in printed
