"""The demo contribution on the real SmolLM2-135M (slow: loads the model, trains on the CPU)."""

from pathlib import Path
from types import SimpleNamespace

import pytest


@pytest.mark.slow
def test_demo_runs_on_real_smollm2(tmp_path):
    models = pytest.importorskip("tensor_utils_dev.models")
    try:
        model_dir = models.smollm2_dir()
    except models.ModelUnavailableError as exc:
        pytest.skip(str(exc))
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location(
        "galore_demo", Path(__file__).parents[1] / "demo.py"
    )
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    lines = demo.run(SimpleNamespace(model_dir=model_dir, workdir=tmp_path, device="cpu"))
    assert any("GaLoreAdamW" in line and "AdamW" in line for line in lines)
    result = json.loads((tmp_path / "galore_demo.json").read_text())
    assert result["galore_state_bytes"] < 0.5 * result["adamw_state_bytes"]
    assert result["loss_after"] == result["loss_after"]  # finite, not NaN
