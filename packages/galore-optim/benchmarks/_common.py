"""Shared helpers for the benchmark scripts (not part of the package)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import torch

from tensor_utils_dev.bench import results_dir

RESULTS = results_dir(__file__)

# GaLore's LLaMA configs (d_model, ffn, layers) from its benchmark_c4 scripts.
LLAMA = {
    "60m": (512, 1376, 8),
    "130m": (768, 2048, 12),
    "350m": (1024, 2736, 24),
    "1b": (2048, 5461, 24),
    "tiny": (64, 172, 2),  # CPU smoke tests of the scripts only
}


def layer_shapes(d: int, ffn: int) -> list[tuple[int, int]]:
    """(out, in) of one LLaMA layer's GaLore targets: q, k, v, o, gate, up, down."""
    return [(d, d)] * 4 + [(ffn, d), (ffn, d), (d, ffn)]


def galore_torch_classes():
    """``(AdamW, Adafactor)`` from galore-torch 1.0. Its package ``__init__`` imports
    bitsandbytes (for the 8-bit class); where that is missing, load the fp32 modules alone."""
    try:
        gt = importlib.import_module("galore_torch")
        return gt.GaLoreAdamW, gt.GaLoreAdafactor
    except ImportError:
        spec = importlib.util.find_spec("galore_torch")
        if spec is None or spec.submodule_search_locations is None:
            raise
        pkg = types.ModuleType("galore_torch")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["galore_torch"] = pkg
        adamw = importlib.import_module("galore_torch.adamw")
        adafactor = importlib.import_module("galore_torch.adafactor")
        return adamw.AdamW, adafactor.Adafactor


def state_bytes(optimizer) -> int:
    """Bytes of the tensors in an optimizer's state, galore-torch's projector objects included."""
    total = 0
    for s in optimizer.state.values():
        for v in s.values():
            if isinstance(v, torch.Tensor):
                total += v.numel() * v.element_size()
            elif hasattr(v, "ortho_matrix"):  # galore_torch.GaLoreProjector
                m = v.ortho_matrix
                for t in m if isinstance(m, list) else [m]:
                    total += t.numel() * t.element_size()
    return total


def analytic_galore_bytes(
    shapes, rank: int, *, moment_bytes: float = 4.0, proj_bytes: int = 4
) -> float:
    """2·max(m,n)·r moments + min(m,n)·r projector per matrix (std projection)."""
    return sum(2 * max(s) * rank * moment_bytes + min(s) * rank * proj_bytes for s in shapes)
