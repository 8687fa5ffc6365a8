"""`galore_optim.hf` without its `hf` extra fails at import, with one line naming the extra."""

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize("missing", ["transformers", "accelerate"])
def test_hf_module_without_the_extra_is_one_clear_import_error(monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # `import <missing>` now raises ImportError
    monkeypatch.delitem(sys.modules, "galore_optim.hf", raising=False)
    with pytest.raises(ImportError) as info:
        importlib.import_module("galore_optim.hf")
    message = str(info.value)
    assert "\n" not in message
    assert missing in message and 'pip install "galore-optim[hf]"' in message
    assert info.value.__suppress_context__  # no chained "During handling ..." traceback


def test_hf_import_error_prints_one_line_in_a_fresh_interpreter():
    code = (
        "import sys; sys.modules['transformers'] = None\n"
        "try:\n    import galore_optim.hf\n"
        "except ImportError as e:\n    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines() == [
        "ImportError galore_optim.hf needs the `hf` extra (transformers is not installed): "
        'pip install "galore-optim[hf]"'
    ]
