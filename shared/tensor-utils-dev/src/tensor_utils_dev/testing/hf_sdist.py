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

``TRANSFORMERS_TESTS_DIR`` (optional) names a transformers ``tests/`` tree, e.g. one taken from the
GitHub repository at the matching version: its files that the sdist lacks (``causal_lm_tester.py``,
``generation/test_utils.py``, ``models/<name>/test_modeling_<name>.py``, ...) are laid over the
extraction, replacing the stand-ins, in a separate folder so that runs without it stay as they were.
"""

from __future__ import annotations

import importlib.util
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
    overlay = os.environ.get("TRANSFORMERS_TESTS_DIR")
    target = root.parent / f"{root.name}-hf_tests{'-overlay' if overlay else ''}"
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
    if overlay:
        _overlay(Path(overlay), package)
    return target


def _overlay(tests: Path, package: Path) -> None:
    """Copy the ``*.py`` files of ``tests`` into ``package``; top-level files the sdist has stay."""
    if not (tests / "causal_lm_tester.py").exists() and not (tests / "generation").is_dir():
        raise pytest.UsageError(
            f"TRANSFORMERS_TESTS_DIR={tests} is not a transformers tests/ folder"
        )
    for path in sorted(tests.rglob("*.py")):
        rel = path.relative_to(tests)
        dest = package / rel
        if len(rel.parts) == 1 and dest.exists():
            continue  # the sdist's common mixins are the installed version's
        for folder in reversed(rel.parents[:-1]):  # every folder on the way is a package
            (package / folder).mkdir(parents=True, exist_ok=True)
            (package / folder / "__init__.py").touch()
        dest.write_bytes(path.read_bytes())
    # test_pipeline_mixin.py (causal_lm_tester imports it) reads at import time the hub's tiny-model
    # list (an empty stand-in: its pipeline tests need the hub and skip without RUN_PIPELINE_TESTS)
    # and ../src/transformers (the installed package)
    summary = package.parent / "tests" / "utils" / "tiny_model_summary.json"
    summary.parent.mkdir(parents=True, exist_ok=True)
    if not summary.exists():
        summary.write_text("{}")
    source = package.parent / "src" / "transformers"
    if not source.exists():
        source.parent.mkdir(parents=True, exist_ok=True)
        spec = importlib.util.find_spec("transformers")
        assert spec is not None and spec.origin is not None
        source.symlink_to(Path(spec.origin).parent, target_is_directory=True)


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
