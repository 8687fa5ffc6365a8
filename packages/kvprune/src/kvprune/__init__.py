"""kvprune: FastGen adaptive KV-cache compression with a genuinely ragged per-head cache.

from kvprune import FastGen, KVPruneCache
cache = KVPruneCache(model, FastGen(recovery=0.95), tokenizer)
out = model.generate(**inputs, past_key_values=cache, max_new_tokens=64)
print(cache.report().summary())
"""

from .cache import KVPruneCache, check_model
from .errors import UnsupportedError
from .generate import generate
from .policies import H2O, TOVA, FastGen, Full, Policy, SnapKV, StreamingLLM
from .report import Report
from tensor_utils.version import package_version

__version__ = package_version("kvprune", __file__)

__all__ = [
    "H2O",
    "TOVA",
    "FastGen",
    "Full",
    "KVPruneCache",
    "Policy",
    "Report",
    "SnapKV",
    "StreamingLLM",
    "UnsupportedError",
    "check_model",
    "generate",
]
