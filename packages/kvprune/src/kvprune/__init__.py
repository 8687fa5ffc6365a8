"""kvprune: KV-cache compression with a genuinely ragged per-head cache (FastGen and more).

from kvprune import HybridFastGen, KVPruneCache
cache = KVPruneCache(model, HybridFastGen(kept_fraction=0.5), tokenizer)
out = model.generate(**inputs, cache=cache, max_new_tokens=64)
print(cache.report().summary())
"""

from tensor_utils.version import package_version

from .cache import KVPruneCache
from .errors import UnsupportedError
from .generate import generate
from .model_check import check_model
from .policies import (
    H2O,
    TOVA,
    AdaptiveFastGen,
    FastGen,
    Full,
    HybridFastGen,
    Policy,
    SnapKV,
    StreamingLLM,
)
from .report import Report

__version__ = package_version("kvprune", __file__)

__all__ = [
    "H2O",
    "TOVA",
    "AdaptiveFastGen",
    "FastGen",
    "Full",
    "HybridFastGen",
    "KVPruneCache",
    "Policy",
    "Report",
    "SnapKV",
    "StreamingLLM",
    "UnsupportedError",
    "check_model",
    "generate",
]
