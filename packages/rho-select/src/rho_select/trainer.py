"""``RhoTrainer``: a ``transformers.Trainer`` whose training loss is Rho-1's selective loss.

Batches carry ``input_ids``, ``labels`` (``-100`` for padding / prompts) and ``ref_losses``
(stored reference scores, e.g. ``ReferenceScores.dataset()``); or pass ``reference_model=`` to
score each batch online with a frozen reference. The logs gain ``rho/selected_fraction``,
``rho/selected_loss`` and ``rho/unselected_loss`` (means over the steps since the last log).
Evaluation reports the plain cross entropy of all labelled tokens.

Selection is per micro-batch, global over data-parallel ranks (``mode="batch"``); with
gradient accumulation each micro-batch selects on its own.
"""

from __future__ import annotations

import math

try:  # the `hf` extra: fail here, with one line, rather than later inside Trainer
    import accelerate  # noqa: F401  (Trainer refuses to run without it)
    from transformers import Trainer
except ImportError as err:
    raise ImportError(
        f"rho_select.RhoTrainer needs the `hf` extra ({err.name} is not installed): "
        'pip install "rho-select[hf]"'
    ) from None

from .errors import RhoSelectError
from .hf import _unwrap, final_hidden_states, lm_head_weight
from .loss import selective_loss, token_cross_entropy
from .scoring import OnlineReference
from .selection import MODES

STATS = ("selected_fraction", "selected_loss", "unselected_loss")


class RhoTrainer(Trainer):
    """``Trainer`` plus ``ratio`` (top fraction kept, the paper's k: 0.6 at 1B, 0.7 at 7B),
    ``mode`` (``"batch"``, ``"sequence"``, ``"threshold"`` with ``threshold=``, ``"random"``),
    ``reference_model`` (online scoring when batches have no ``ref_losses``) and
    ``chunk_size`` (rows of logits per chunk, 0: automatic)."""

    def __init__(
        self,
        *args,
        ratio: float = 0.6,
        mode: str = "batch",
        threshold: float | None = None,
        reference_model=None,
        chunk_size: int = 0,
        **kwargs,
    ):
        if mode not in MODES:
            raise RhoSelectError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        super().__init__(*args, **kwargs)
        self.rho_ratio, self.rho_mode, self.rho_threshold = ratio, mode, threshold
        self.rho_chunk_size = chunk_size
        self.reference = OnlineReference(reference_model) if reference_model is not None else None
        self.loss_is_scaled_for_ga = False  # a per-micro-batch mean: the Trainer divides by GA
        self._rho_sums = dict.fromkeys(STATS, 0.0)
        self._rho_counts = dict.fromkeys(STATS, 0)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self._signature_columns is not None and "ref_losses" not in self._signature_columns:
            self._signature_columns.append("ref_losses")  # keep the column for compute_loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        input_ids = inputs["input_ids"]
        labels = inputs.pop("labels", None)
        labels = input_ids if labels is None else labels
        ref_losses = inputs.pop("ref_losses", None)
        hidden = final_hidden_states(model, **inputs)
        weight = lm_head_weight(_unwrap(model))
        if not model.training:  # evaluation: plain cross entropy of every labelled token
            tokens = token_cross_entropy(
                hidden[:, :-1].reshape(-1, hidden.shape[-1]),
                weight,
                labels[:, 1:].reshape(-1),
                chunk_size=self.rho_chunk_size,
            )
            valid = labels[:, 1:].reshape(-1) != -100
            loss = (tokens * valid).sum() / valid.sum().clamp(min=1)
            return (loss, {"loss": loss}) if return_outputs else loss
        if ref_losses is None:
            if self.reference is None:
                raise RhoSelectError(
                    "the batch has no 'ref_losses' and RhoTrainer has no reference_model"
                )
            ref_losses = self.reference(input_ids, inputs.get("attention_mask"))
        out = selective_loss(
            hidden,
            weight,
            labels,
            ref_losses.to(hidden.device),
            self.rho_ratio,
            mode=self.rho_mode,
            threshold=self.rho_threshold,
            shift=True,
            chunk_size=self.rho_chunk_size,
        )
        for name in STATS:
            value = float(getattr(out, name))
            if math.isfinite(value):
                self._rho_sums[name] += value
                self._rho_counts[name] += 1
        return (out.loss, {"loss": out.loss}) if return_outputs else out.loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:  # a training log: add the selection statistics since the last one
            for name in STATS:
                if self._rho_counts[name]:
                    logs[f"rho/{name}"] = self._rho_sums[name] / self._rho_counts[name]
                self._rho_sums[name], self._rho_counts[name] = 0.0, 0
        super().log(logs, *args, **kwargs)
