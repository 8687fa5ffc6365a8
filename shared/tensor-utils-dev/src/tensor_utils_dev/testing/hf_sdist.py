"""pytest hooks for running transformers' own common test suites against a member's classes,
taken from the source distribution of the installed transformers version (``TRANSFORMERS_SDIST``:
the .tar.gz; ``nox -s "hf-tests(<member>)"`` downloads it into ``.nox/_cache``). A member's
``tests_hf/conftest.py`` imports the two hooks from here.

The sdist ships ``tests/*.py`` but not the sub-packages three of them import
(``tests/generation``, ``tests/exporters``, ``tests/utils``). Stand-ins are written for those:
``GenerationTesterMixin`` and ``ExportTesterMixin`` become empty mixins (so the generation and
torch.export suites do not run from here; each member covers generation in its own tests), and
``config_common_kwargs`` lists the generic config keys ``ConfigTester`` sets. The extracted tree is
imported as the package ``hf_tests`` (the workspace has its own ``tests`` package).
"""

from __future__ import annotations

import os
import sys
import tarfile
from pathlib import Path

import pytest

SHIMS = {
    "generation/__init__.py": "",
    "generation/test_utils.py": (
        '"""Stand-in: the sdist does not ship tests/generation."""\n\n\n'
        "class GenerationTesterMixin:\n    pass\n"
    ),
    "exporters/__init__.py": "",
    "exporters/test_export.py": (
        '"""Stand-in: the sdist does not ship tests/exporters."""\n\n\n'
        "class ExportTesterMixin:\n    pass\n"
    ),
    "utils/__init__.py": "",
    "utils/test_configuration_utils.py": (
        '"""Stand-in: the sdist does not ship tests/utils. Generic PreTrainedConfig keys."""\n\n'
        "config_common_kwargs = {\n"
        '    "return_dict": False,\n'
        '    "output_hidden_states": True,\n'
        '    "dtype": "float16",\n'
        '    "tie_word_embeddings": True,\n'
        '    "is_encoder_decoder": False,\n'
        '    "chunk_size_feed_forward": 5,\n'
        '    "architectures": ["BertModel"],\n'
        '    "id2label": {0: "label"},\n'
        '    "label2id": {"label": "0"},\n'
        '    "problem_type": "regression",\n'
        '    "bos_token_id": 1,\n'
        '    "eos_token_id": 2,\n'
        '    "pad_token_id": 0,\n'
        "}\n"
    ),
}


def _prepare() -> Path | None:
    sdist = os.environ.get("TRANSFORMERS_SDIST")
    if not sdist or not Path(sdist).exists():
        return None
    root = Path(sdist).with_suffix("").with_suffix("")  # .../transformers-X.Y.Z
    target = root.parent / f"{root.name}-hf_tests"
    package = target / "hf_tests"
    if not (package / "test_modeling_common.py").exists():
        package.mkdir(parents=True, exist_ok=True)
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if len(parts) == 3 and parts[1] == "tests" and parts[2].endswith(".py"):
                    data = tar.extractfile(member)
                    if data is not None:
                        (package / parts[2]).write_bytes(data.read())
        (package / "__init__.py").touch()
        for rel, text in SHIMS.items():
            path = package / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_text(text)
    return target


_ROOT = _prepare()
if _ROOT is not None:
    sys.path.insert(0, str(_ROOT))


HF_MARKERS = (
    "accelerate_tests", "flash_attn_test", "flash_attn_3_test", "flash_attn_4_test",
    "is_agent_test", "is_expert_parallel_test", "is_fsdp_test", "is_pipeline_test",
    "is_staging_test", "is_tensor_parallel_test", "is_training_test", "order",
    "torch_compile_test", "generate",
)  # fmt: skip


def pytest_configure(config):
    for name in HF_MARKERS:  # markers transformers' suites use (the workspace runs strict)
        config.addinivalue_line("markers", f"{name}: transformers test marker")


def pytest_collection_modifyitems(config, items):
    if _ROOT is None:
        skip = pytest.mark.skip(reason="set TRANSFORMERS_SDIST (nox -s hf-tests does)")
        for item in items:
            item.add_marker(skip)
