"""LoRA settings and their translation to a peft ``LoraConfig``."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .errors import PerlError

# Leaf names of attention projections across common decoder families (Llama, Mistral, Qwen,
# Gemma, Phi-3, GPT-2/NeoX, Falcon). "attention" picks those that exist in the model.
ATTENTION_LEAVES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "qkv_proj",
    "query_key_value",
    "c_attn",
    "dense",
    "out_proj",
)


@dataclass(frozen=True)
class LoraSpec:
    """Rank, scale, dropout and placement of one LoRA adapter.

    ``targets``: ``"attention"`` (every attention projection: PERL's choice), ``"all-linear"``
    (every linear layer but the output head: OpenRLHF's default) or explicit module names.
    ``alpha`` defaults to twice the rank.
    """

    rank: int = 8
    alpha: float | None = None
    dropout: float = 0.0
    targets: str | tuple[str, ...] = "attention"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if int(self.rank) < 1:
            raise PerlError(f"LoRA rank must be at least 1, got {self.rank}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise PerlError(f"LoRA dropout must be in [0, 1), got {self.dropout}")

    def peft_config(self, model: nn.Module):
        from peft import LoraConfig

        return LoraConfig(
            r=int(self.rank),
            # peft annotates lora_alpha as int; it divides it by r, so a float works.
            lora_alpha=float(self.alpha if self.alpha is not None else 2 * self.rank),  # pyright: ignore[reportArgumentType]
            lora_dropout=float(self.dropout),
            target_modules=resolve_targets(model, self.targets),
            bias="none",
            **self.extra,
        )


def _attention_linears(model: nn.Module) -> list[str]:
    leaves = set()
    for name, module in model.named_modules():
        parts = name.split(".")
        in_attention = any("attn" in p or "attention" in p for p in parts[:-1])
        if isinstance(module, nn.Linear) and in_attention and parts[-1] in ATTENTION_LEAVES:
            leaves.add(parts[-1])
    return sorted(leaves)


def resolve_targets(model: nn.Module, targets: str | tuple[str, ...] | list[str]):
    """Module names for peft: a list of leaf names, or peft's own ``"all-linear"``."""
    if targets == "all-linear":
        return "all-linear"
    if targets == "attention":
        found = _attention_linears(model)
        if not found:
            raise PerlError(
                "no attention projections found for LoRA targets='attention'; "
                "pass targets='all-linear' or explicit module names"
            )
        return found
    if isinstance(targets, str):
        targets = tuple(t.strip() for t in targets.split(",") if t.strip())
    leaves = {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = [t for t in targets if t not in leaves]
    if missing or not targets:
        raise PerlError(
            f"LoRA target module(s) {', '.join(missing) or '(none)'} not in the model; "
            f"linear layers are named {', '.join(sorted(leaves))}"
        )
    return list(targets)
