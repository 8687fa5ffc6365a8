"""rho-select: Rho-1 selective language modeling (Lin et al., "Rho-1: Not All Tokens Are What
You Need", 2024).

- ``selective_loss(hidden_states, lm_head_weight, labels, ref_losses, ratio)``: the loss over
  the top ``ratio`` of tokens by excess loss, chunked so the full logits never exist, with
  gradients for the selected rows only (Triton on CUDA, PyTorch elsewhere).
- ``select_tokens`` / ``selected_count``: the selection modes and the count rule.
- ``score_corpus`` / ``ReferenceScores`` / ``OnlineReference``: reference losses, stored
  (safetensors shards + a manifest that catches misaligned data) or computed in the step.
- ``pack_documents``: the packing the scores are aligned to.
- ``RhoTrainer``: a ``transformers.Trainer`` that trains with the selective loss.
"""

from typing import TYPE_CHECKING

from tensor_utils.version import package_version

from .errors import ManifestMismatchError, RhoSelectError, ScoresFormatError
from .loss import SelectiveLossOutput, selective_loss, token_cross_entropy
from .selection import MODES, Selection, select_tokens, selected_count

__version__ = package_version("rho-select", __file__)

if TYPE_CHECKING:  # resolved lazily at run time (transformers is optional)
    from .packing import PackedCorpus, pack_documents
    from .scoring import OnlineReference, ReferenceScores, score_corpus, score_sequences
    from .trainer import RhoTrainer

_LAZY = {
    "OnlineReference": "scoring",
    "ReferenceScores": "scoring",
    "score_corpus": "scoring",
    "score_sequences": "scoring",
    "pack_documents": "packing",
    "PackedCorpus": "packing",
    "RhoTrainer": "trainer",
}


def __getattr__(name):
    # transformers-facing parts load on first use (transformers is an optional dependency).
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'rho_select' has no attribute {name!r}")


__all__ = [
    "MODES",
    "ManifestMismatchError",
    "OnlineReference",
    "PackedCorpus",
    "ReferenceScores",
    "RhoSelectError",
    "RhoTrainer",
    "ScoresFormatError",
    "Selection",
    "SelectiveLossOutput",
    "__version__",
    "pack_documents",
    "score_corpus",
    "score_sequences",
    "select_tokens",
    "selected_count",
    "selective_loss",
    "token_cross_entropy",
]
