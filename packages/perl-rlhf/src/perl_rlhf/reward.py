"""Reward models: pairwise (Bradley-Terry) and pointwise binary (thumbs up/down) objectives,
their metrics, and the training loop.

The score of a (prompt, response) is the score head on the reward role's hidden state at the
response's last token (the end-of-sequence token).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from .data import encode_binary, encode_pairwise, load_rows, pad, pad_id
from .distributed import all_gather_cat, all_sum, sum_gradients, world
from .errors import PerlError
from .model import PerlModel

# ---- losses -------------------------------------------------------------------------------


def bradley_terry_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    *,
    margin: torch.Tensor | None = None,
    center_coef: float = 0.0,
) -> torch.Tensor:
    """Per-pair -log sigmoid(r_c - r_r [- margin]) + center_coef * (r_c + r_r)^2."""
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin
    loss = -F.logsigmoid(diff)
    if center_coef:
        loss = loss + center_coef * (chosen + rejected) ** 2
    return loss


def binary_loss(
    scores: torch.Tensor, labels: torch.Tensor, *, pos_weight: float | None = None
) -> torch.Tensor:
    """Per-example binary cross-entropy on logits; ``pos_weight`` scales the positive class
    (``n_negative / n_positive`` balances skewed thumbs-up/down data)."""
    w = None if pos_weight is None else torch.tensor(pos_weight, dtype=scores.dtype)
    return F.binary_cross_entropy_with_logits(
        scores, labels.to(scores.dtype), pos_weight=w, reduction="none"
    )


def balanced_pos_weight(labels: Sequence[float]) -> float:
    pos = sum(1 for y in labels if y > 0.5)
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        raise PerlError("class weighting needs both labels in the data (all rows share one label)")
    return neg / pos


# ---- metrics ------------------------------------------------------------------------------


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve = P(score of a random positive > a random negative), ties 1/2
    (the Mann-Whitney statistic, with mid-ranks)."""
    s = scores.double().cpu()
    y = labels.cpu() > 0.5
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(s)
    ranks = torch.empty_like(s)
    sorted_s = s[order]
    i = 0
    n = len(s)
    while i < n:  # mid-ranks for ties
        j = i
        while j + 1 < n and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_metrics(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy, balanced accuracy (mean of the two class recalls) and AUC; threshold 0."""
    pred = scores > 0
    y = labels > 0.5
    recalls = [float((pred[y == c] == c).float().mean()) for c in (True, False) if (y == c).any()]
    return {
        "accuracy": float((pred == y).float().mean()),
        "balanced_accuracy": sum(recalls) / len(recalls),
        "auc": roc_auc(scores, labels),
        "positive_rate": float(y.float().mean()),
    }


def pairwise_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    """Accuracy (chosen scored above rejected, ties 1/2) and the AUC of chosen vs rejected."""
    acc = (chosen > rejected).float() + 0.5 * (chosen == rejected).float()
    scores = torch.cat([chosen, rejected])
    labels = torch.cat([torch.ones_like(chosen), torch.zeros_like(rejected)])
    return {
        "accuracy": float(acc.mean()),
        "auc": roc_auc(scores, labels),
        "margin": float((chosen - rejected).mean()),
    }


# ---- training -----------------------------------------------------------------------------


@dataclass
class RewardConfig:
    """Reward-model training settings. ``class_weight``: ``None``, ``"balanced"`` or the
    positive-class weight (binary only)."""

    objective: str = "pairwise"
    lr: float = 1e-4
    epochs: int = 1
    batch_size: int = 8
    micro_batch_size: int | None = None
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    center_coef: float = 0.0
    class_weight: str | float | None = None
    max_length: int | None = None
    skip_long: bool = False
    seed: int = 0
    max_steps: int | None = None

    def __post_init__(self):
        if self.objective not in ("pairwise", "binary"):
            raise PerlError(f"objective must be 'pairwise' or 'binary', got {self.objective!r}")
        if self.batch_size < 1 or self.epochs < 1:
            raise PerlError("batch_size and epochs must be at least 1")


@dataclass
class RewardResult:
    history: list[dict] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    skipped_rows: int = 0


class _Examples:
    """Encoded rows: pairs (two id lists per item) or binary (ids, label)."""

    def __init__(self, model: PerlModel, tokenizer, rows, config: RewardConfig):
        limit = config.max_length or getattr(model.config, "max_position_embeddings", None)
        self.objective = config.objective
        if config.objective == "pairwise":
            c, r, self.skipped = encode_pairwise(
                rows, tokenizer, max_length=limit, skip_long=config.skip_long
            )
            self.items: list = list(zip(c, r, strict=True))
            self.labels: list[float] = []
        else:
            enc = encode_binary(rows, tokenizer, max_length=limit, skip_long=config.skip_long)
            self.items = list(zip(enc.ids, enc.labels, strict=True))
            self.labels = enc.labels
            self.skipped = enc.skipped

    def __len__(self) -> int:
        return len(self.items)


def _score_ids(model: PerlModel, seqs: Sequence[Sequence[int]], pad_token: int) -> torch.Tensor:
    device = next(model.heads["reward"].parameters()).device
    ids, mask = pad(seqs, pad_token)
    return model.scores(ids.to(device), mask.to(device))


def _batch_loss(
    model: PerlModel, batch: list, pad_token: int, config: RewardConfig, pos_weight, n_global
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss (summed over the batch / global count), and scores for the running metrics."""
    if config.objective == "pairwise":
        scores = _score_ids(model, [c for c, _ in batch] + [r for _, r in batch], pad_token)
        chosen, rejected = scores[: len(batch)], scores[len(batch) :]
        loss = bradley_terry_loss(chosen, rejected, center_coef=config.center_coef).sum()
        return loss / n_global, chosen.detach(), rejected.detach()
    scores = _score_ids(model, [ids for ids, _ in batch], pad_token)
    labels = torch.tensor([y for _, y in batch], dtype=torch.float32, device=scores.device)
    loss = binary_loss(scores, labels, pos_weight=pos_weight).sum()
    return loss / n_global, scores.detach(), labels


def train_reward_model(
    model: PerlModel,
    tokenizer,
    train_data,
    *,
    config: RewardConfig | None = None,
    eval_data=None,
    progress: bool = True,
    on_step: Callable[[dict], None] | None = None,
) -> RewardResult:
    """Train ``model``'s reward role on pairwise or binary data (see ``perl_rlhf.data``).

    Data parallel under ``torch.distributed``: each rank takes its share of every global batch
    of ``batch_size`` examples; the result equals one process on the whole batch."""
    config = config or RewardConfig()
    if "reward" not in model.roles:
        raise PerlError("the model has no reward role")
    model.set_trainable(("reward",))
    examples = _Examples(model, tokenizer, load_rows(train_data), config)
    pos_weight = None
    if config.objective == "binary" and config.class_weight is not None:
        pos_weight = (
            balanced_pos_weight(examples.labels)
            if config.class_weight == "balanced"
            else float(config.class_weight)
        )
    params = model.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    pad_token = pad_id(tokenizer)
    rank, size = world()
    rng = random.Random(config.seed)
    steps_per_epoch = math.ceil(len(examples) / config.batch_size)
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    result = RewardResult(config={**asdict(config), "pos_weight": pos_weight})
    result.skipped_rows = examples.skipped
    bar = _progress(total, "reward", progress and rank == 0)
    micro = config.micro_batch_size or config.batch_size
    step = 0
    model.train()
    try:
        for epoch in range(config.epochs):
            order = list(range(len(examples)))
            rng.shuffle(order)
            for start in range(0, len(order), config.batch_size):
                if step >= total:
                    break
                t0 = time.perf_counter()
                global_batch = order[start : start + config.batch_size]
                per = -(-len(global_batch) // size)
                mine = [examples.items[i] for i in global_batch[rank * per : (rank + 1) * per]]
                optimizer.zero_grad(set_to_none=True)
                loss_sum = torch.zeros(())
                outs = []
                for m in range(0, len(mine), micro):
                    loss, a, b = _batch_loss(
                        model, mine[m : m + micro], pad_token, config, pos_weight, len(global_batch)
                    )
                    loss.backward()
                    loss_sum += loss.detach().cpu()
                    outs.append((a, b))
                sum_gradients(params)
                if config.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                a = torch.cat([o[0] for o in outs]) if outs else torch.zeros(0)
                b = torch.cat([o[1] for o in outs]) if outs else torch.zeros(0)
                if config.objective == "pairwise":
                    correct = all_sum((a > b).float().sum().cpu())
                else:
                    correct = all_sum(((a > 0) == (b > 0.5)).float().sum().cpu())
                row = {
                    "step": step,
                    "epoch": epoch,
                    "loss": float(all_sum(loss_sum)),
                    "accuracy": float(correct) / len(global_batch),
                    "seconds": time.perf_counter() - t0,
                }
                result.history.append(row)
                if on_step:
                    on_step(row)
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.2f}")
                step += 1
    finally:
        bar.close()
        model.eval()
    if eval_data is not None:
        result.metrics = evaluate_reward_model(model, tokenizer, eval_data, config=config)
    return result


@torch.no_grad()
def evaluate_reward_model(
    model: PerlModel, tokenizer, data, *, config: RewardConfig | None = None, batch_size: int = 16
) -> dict[str, float]:
    """Held-out metrics: pairwise accuracy and AUC, or binary accuracy, balanced accuracy and
    AUC. Under ``torch.distributed`` each rank scores its share and the metrics cover all."""
    config = config or RewardConfig()
    examples = _Examples(model, tokenizer, load_rows(data), config)
    pad_token = pad_id(tokenizer)
    rank, size = world()
    per = -(-len(examples) // size)
    mine = examples.items[rank * per : (rank + 1) * per]
    model.eval()
    a_parts, b_parts = [], []
    for m in range(0, len(mine), batch_size):
        batch = mine[m : m + batch_size]
        if config.objective == "pairwise":
            s = _score_ids(model, [c for c, _ in batch] + [r for _, r in batch], pad_token)
            a_parts.append(s[: len(batch)].float().cpu())
            b_parts.append(s[len(batch) :].float().cpu())
        else:
            a_parts.append(_score_ids(model, [i for i, _ in batch], pad_token).float().cpu())
            b_parts.append(torch.tensor([y for _, y in batch]))
    a = all_gather_cat(torch.cat(a_parts) if a_parts else torch.zeros(0))
    b = all_gather_cat(torch.cat(b_parts) if b_parts else torch.zeros(0))
    out = pairwise_metrics(a, b) if config.objective == "pairwise" else binary_metrics(a, b)
    return {**out, "n": float(len(examples))}


@torch.no_grad()
def score(model: PerlModel, tokenizer, prompts: Sequence, completions: Sequence) -> torch.Tensor:
    """Reward scores of (prompt, completion) pairs."""
    from .data import encode_pair

    seqs = [
        encode_pair(tokenizer, p, c, f"row {i}")[0]
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True))
    ]
    return _score_ids(model, seqs, pad_id(tokenizer)).float().cpu()


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)
