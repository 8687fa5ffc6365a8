"""The tour part runs on the real SmolLM2 (slow: converts/loads the model)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest


@pytest.mark.slow
def test_demo_part_runs(tmp_path):
    from tensor_utils_dev.models import smollm2_dir

    path = Path(__file__).parents[1] / "demo.py"
    spec = importlib.util.spec_from_file_location("rho_select_demo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines = module.run(SimpleNamespace(model_dir=smollm2_dir(), workdir=tmp_path, device="cpu"))
    assert len(lines) == 4
    assert "selected 60%" in lines[3]
