"""Every RLHF role on one causal LM.

With LoRA (the default), one frozen base holds a peft adapter per role: ``policy``, ``value``
(+ a value head) and ``reward`` (+ a score head); the ``reference`` policy is the same base with
adapters disabled, so no second copy of the base is ever made. Without LoRA (``lora=None``,
full fine-tuning, the baseline PERL compares against), each role gets its own copy of the
weights, and the reference is a frozen copy.

Adapters and heads are saved in peft's own format (``adapter_config.json`` +
``adapter_model.safetensors``) with the head beside them (``head.safetensors``) and a small
``perl_rlhf.json`` that records which base and tokenizer they were trained on.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from .errors import PerlError
from .lora import LoraSpec

ROLES = ("policy", "value", "reward")
HEAD_ROLES = ("value", "reward")
META_FILE = "perl_rlhf.json"
HEAD_FILE = "head.safetensors"
FORMAT_VERSION = 1


def base_fingerprint(model: nn.Module) -> str:
    """Identity of a base model's weights: names, shapes and a sample of the values of the
    embedding and last parameters. Cheap, and different for any other checkpoint."""
    h = hashlib.sha256()
    params = [(n, p) for n, p in model.named_parameters() if "lora_" not in n]
    for name, p in params:
        clean = name.replace("base_model.model.", "").replace(".base_layer", "")
        h.update(f"{clean}:{tuple(p.shape)}:{p.dtype};".encode())
    for _, p in (params[0], params[-1]):
        sample = p.detach().reshape(-1)[:256].float().cpu()
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def tokenizer_fingerprint(tokenizer) -> str:
    """Identity of a tokenizer: its vocabulary and special tokens."""
    vocab = sorted(tokenizer.get_vocab().items())
    special = sorted((k, str(v)) for k, v in tokenizer.special_tokens_map.items())
    return hashlib.sha256(json.dumps([vocab, special]).encode()).hexdigest()[:16]


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip padding, as ``generate`` computes them (left or right padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last attended token of each row."""
    t = attention_mask.shape[-1]
    ar = torch.arange(t, device=attention_mask.device).expand_as(attention_mask)
    return torch.where(attention_mask.bool(), ar, -1).max(-1).values


class ScalarHead(nn.Linear):
    """hidden -> one number (value or reward score), computed in float32."""

    def __init__(self, hidden: int, *, zero: bool = False):
        super().__init__(hidden, 1, dtype=torch.float32)
        if zero:
            nn.init.zeros_(self.weight)
        else:
            nn.init.normal_(self.weight, std=1.0 / (hidden + 1) ** 0.5)
        nn.init.zeros_(self.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden.float()).squeeze(-1)


def _atomic_dir(path: Path):
    """A temporary sibling directory that replaces ``path`` only once fully written."""

    @contextlib.contextmanager
    def cm():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            yield tmp
            if path.exists():
                old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
                os.rename(path, old)
                os.rename(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    return cm()


class PerlModel(nn.Module):
    """RLHF roles over one causal LM (``transformers`` ``PreTrainedModel``).

    ``roles``: which of ``policy``, ``value``, ``reward`` exist (the reference exists whenever
    ``policy`` does). ``trainable``: the roles whose adapter (or weights) and head train.
    ``lora``: one ``LoraSpec`` for every role, a dict role -> spec, or ``None`` for full
    fine-tuning (separate weights per role). ``gradient_checkpointing``: recompute each decoder
    layer's activations in the backward pass instead of keeping them (transformers'
    ``gradient_checkpointing_enable``, non-reentrant, so it works with a frozen base): less
    peak memory for more compute, as TRL's trainers do by default.
    """

    def __init__(
        self,
        base: nn.Module,
        *,
        roles: Sequence[str] = ROLES,
        trainable: Sequence[str] | None = None,
        lora: LoraSpec | dict[str, LoraSpec] | None = None,
        tokenizer=None,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        roles = tuple(roles)
        unknown = [r for r in roles if r not in ROLES]
        if unknown or not roles:
            raise PerlError(f"unknown role(s) {unknown}; roles are {', '.join(ROLES)}")
        self.roles = roles
        self.is_lora = lora is not None
        self.trainable = tuple(r for r in (trainable if trainable is not None else roles))
        self.base_fingerprint = base_fingerprint(base)
        self.tokenizer_fingerprint = tokenizer_fingerprint(tokenizer) if tokenizer else None
        # transformers' PretrainedConfig (typed Any: its attributes depend on the model).
        self.config: Any = cast(Any, base).config
        hidden = int(self.config.hidden_size)
        device = next(base.parameters()).device
        self.heads = nn.ModuleDict(
            {r: ScalarHead(hidden, zero=(r == "value")) for r in roles if r in HEAD_ROLES}
        ).to(device)
        for p in base.parameters():
            p.requires_grad_(False)
        self.gradient_checkpointing = gradient_checkpointing
        if gradient_checkpointing:
            if not hasattr(base, "gradient_checkpointing_enable"):
                raise PerlError("gradient checkpointing needs a transformers PreTrainedModel base")
            cast(Any, base).gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        if self.is_lora:
            from peft import get_peft_model

            specs = lora if isinstance(lora, dict) else dict.fromkeys(roles, lora)
            missing = [r for r in roles if r not in specs]
            if missing:
                raise PerlError(f"no LoRA settings for role(s) {', '.join(missing)}")
            assert isinstance(specs[roles[0]], LoraSpec)
            self.lora_specs: dict[str, LoraSpec] = {r: cast(LoraSpec, specs[r]) for r in roles}
            # Resolve module names on the plain base, before peft wraps its layers.
            configs = {r: self.lora_specs[r].peft_config(base) for r in roles}
            peft = get_peft_model(cast(Any, base), configs[roles[0]], adapter_name=roles[0])
            for r in roles[1:]:
                peft.add_adapter(r, configs[r])
            self.peft = peft
            self._models = None
        else:
            self.lora_specs = {}
            self.peft = None
            # Full fine-tuning: the first role uses the given weights, the others copies, and
            # the reference a frozen copy taken before any training.
            models = {}
            for i, r in enumerate(roles):
                models[r] = base if i == 0 else copy.deepcopy(base)
            if "policy" in roles:
                models["reference"] = copy.deepcopy(base)
            self._models = nn.ModuleDict(models)
        self._active: str | None = None
        self.set_trainable(self.trainable)

    # ---- parameters -----------------------------------------------------------------------

    def role_parameters(self, role: str) -> list[nn.Parameter]:
        """The parameters a role trains: its LoRA matrices (or its weights) and its head."""
        if role not in self.roles:
            raise PerlError(f"this model has no {role!r} role (roles: {', '.join(self.roles)})")
        if self.peft is not None:
            params = [
                p
                for n, p in self.peft.named_parameters()
                if "lora_" in n and f".{role}." in f"{n}."
            ]
        else:
            assert self._models is not None
            params = list(self._models[role].parameters())
        if role in self.heads:
            params += list(self.heads[role].parameters())
        return params

    def set_trainable(self, roles: Sequence[str]) -> None:
        """Only these roles' adapters (or weights) and heads get gradients."""
        self.trainable = tuple(roles)
        self._apply_requires_grad()

    def _apply_requires_grad(self) -> None:
        for r in self.roles:
            for p in self.role_parameters(r):
                p.requires_grad_(r in self.trainable)
        if self._models is not None and "reference" in self._models:
            for p in self._models["reference"].parameters():
                p.requires_grad_(False)

    def head(self, role: str) -> ScalarHead:
        """The value or reward head."""
        if role not in self.heads:
            raise PerlError(f"this model has no {role!r} head (heads: {', '.join(self.heads)})")
        return cast(ScalarHead, self.heads[role])

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for r in self.trainable for p in self.role_parameters(r)]

    # ---- switching roles ------------------------------------------------------------------

    @contextlib.contextmanager
    def use(self, role: str) -> Iterator[Any]:
        """Context in which the underlying causal LM computes as ``role``; yields that LM.
        With LoRA: the role's adapter active, or every adapter off for ``reference``."""
        if role != "reference" and role not in self.roles:
            raise PerlError(f"this model has no {role!r} role (roles: {', '.join(self.roles)})")
        if role == "reference" and "policy" not in self.roles:
            raise PerlError("the reference policy needs a model with a policy role")
        if self.peft is None:
            assert self._models is not None
            yield cast(Any, self._models[role])
            return
        lm = self.peft.get_base_model()
        if role == "reference":
            try:
                with self.peft.disable_adapter():
                    yield lm
            finally:
                # peft flips requires_grad when it toggles adapters; keep ours.
                self._apply_requires_grad()
            return
        if self._active != role:
            self.peft.set_adapter(role)
            self._active = role
            self._apply_requires_grad()
        yield lm

    def hidden_states(
        self, role: str, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Last hidden states ``[B, T, H]`` of ``role`` (padding on either side)."""
        with self.use(role) as lm:
            out = lm.get_decoder()(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids(attention_mask),
                use_cache=False,
            )
        return out.last_hidden_state

    def lm_head(self, role: str) -> nn.Module:
        with self.use(role) as lm:
            return lm.get_output_embeddings()

    def logits(
        self, role: str, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Next-token logits ``[B, T, V]`` of ``role`` (``policy`` or ``reference``)."""
        with self.use(role) as lm:
            return lm(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids(attention_mask),
                use_cache=False,
            ).logits

    def values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Value estimates ``[B, T]``: the value head on the value role's hidden states."""
        return self.heads["value"](self.hidden_states("value", input_ids, attention_mask))

    def scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Reward scores ``[B]``: the score head on the reward role's last attended token."""
        h = self.hidden_states("reward", input_ids, attention_mask)
        last = last_token_index(attention_mask)
        return self.heads["reward"](h[torch.arange(h.shape[0], device=h.device), last])

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs):
        """Sample from the policy (``transformers`` ``generate`` arguments)."""
        with self.use("policy") as lm:
            return lm.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    # ---- saving and loading ---------------------------------------------------------------

    def _meta(self, role: str, extra: dict | None) -> dict:
        meta = {
            "format": FORMAT_VERSION,
            "role": role,
            "kind": "lora" if self.is_lora else "full",
            "base_fingerprint": self.base_fingerprint,
            "tokenizer_fingerprint": self.tokenizer_fingerprint,
            "hidden_size": int(self.config.hidden_size),
            "model_type": getattr(self.config, "model_type", None),
        }
        if self.is_lora:
            spec = self.lora_specs[role]
            meta["lora"] = {
                "rank": spec.rank,
                "alpha": spec.alpha,
                "dropout": spec.dropout,
                "targets": spec.targets,
            }
        return {**meta, **(extra or {})}

    def save(self, role: str, path: str | os.PathLike, *, extra: dict | None = None) -> Path:
        """Write ``role``'s adapter (peft format) or weights, plus its head, to ``path``.
        The directory appears only once complete."""
        from safetensors.torch import save_file

        path = Path(path)
        self.role_parameters(role)  # validates the role
        with _atomic_dir(path) as tmp:
            if self.peft is not None:
                from peft import get_peft_model_state_dict

                state = get_peft_model_state_dict(self.peft, adapter_name=role)
                save_file(
                    {k: v.detach().contiguous().cpu() for k, v in state.items()},
                    str(tmp / "adapter_model.safetensors"),
                    metadata={"format": "pt"},
                )
                self.peft.peft_config[role].save_pretrained(str(tmp))
            else:
                assert self._models is not None
                cast(Any, self._models[role]).save_pretrained(str(tmp))
            if role in self.heads:
                head = self.head(role)
                save_file(
                    {"weight": head.weight.detach().cpu(), "bias": head.bias.detach().cpu()},
                    str(tmp / HEAD_FILE),
                )
            (tmp / META_FILE).write_text(json.dumps(self._meta(role, extra), indent=1) + "\n")
        return path

    def check_compatible(self, path: str | os.PathLike) -> dict:
        """The saved metadata, after checking it was trained on this base and tokenizer."""
        path = Path(path)
        if not path.is_dir():
            raise PerlError(f"{path}: no such adapter directory")
        meta_path = path / META_FILE
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        if meta.get("kind") == "lora" and not self.is_lora:
            raise PerlError(f"{path} holds a LoRA adapter but this model is full fine-tuning")
        if meta.get("kind") == "full" and self.is_lora:
            raise PerlError(f"{path} holds full weights but this model uses LoRA adapters")
        if meta.get("base_fingerprint") not in (None, self.base_fingerprint):
            raise PerlError(
                f"{path} was trained on another base model "
                f"(fingerprint {meta['base_fingerprint']}, this base {self.base_fingerprint})"
            )
        theirs, ours = meta.get("tokenizer_fingerprint"), self.tokenizer_fingerprint
        if theirs and ours and theirs != ours:
            raise PerlError(
                f"{path} was trained with a different tokenizer than this model's "
                "(reward model and policy must share one tokenizer)"
            )
        return meta

    def load(self, role: str, path: str | os.PathLike) -> dict:
        """Load a saved adapter (or weights) and head into ``role``; returns its metadata."""
        from safetensors.torch import load_file

        path = Path(path)
        self.role_parameters(role)
        meta = self.check_compatible(path)
        if meta.get("role") not in (None, role) and not (
            meta.get("role") == "policy" and role == "policy"
        ):
            # A reward adapter is not a value adapter: heads and meaning differ.
            raise PerlError(f"{path} holds a {meta['role']} adapter, not a {role} one")
        if role in self.heads and not (path / HEAD_FILE).exists():
            raise PerlError(f"{path} has no {HEAD_FILE}: the {role} head was not saved with it")
        try:
            if self.peft is not None:
                self._load_adapter(role, path)
            else:
                assert self._models is not None
                state = {}
                for f in sorted(path.glob("*.safetensors")):
                    if f.name != HEAD_FILE:
                        state.update(load_file(str(f)))
                missing, unexpected = self._models[role].load_state_dict(state, strict=False)
                missing = [m for m in missing if not m.endswith("lm_head.weight")]
                if missing or unexpected:
                    raise PerlError(
                        f"{path} does not match this model "
                        f"({len(missing)} missing, {len(unexpected)} unexpected tensors)"
                    )
            if role in self.heads:
                head = load_file(str(path / HEAD_FILE))
                self.heads[role].load_state_dict(head)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise PerlError(f"{path} does not fit this base model: {first}") from None
        self._apply_requires_grad()
        return meta

    def _load_adapter(self, role: str, path: Path) -> None:
        from peft import LoraConfig, set_peft_model_state_dict
        from safetensors.torch import load_file

        assert self.peft is not None
        config = cast(LoraConfig, LoraConfig.from_pretrained(str(path)))
        if self._active == role:
            self._active = None
        # Replace the role's adapter with the saved one (its rank or targets may differ).
        other = next((r for r in self.roles if r != role), None)
        if other is not None:
            self.peft.set_adapter(other)
            self._active = other
            self.peft.delete_adapter(role)
        else:
            # A single-role model: load under a temporary name, then swap.
            self.peft.add_adapter("_swap", config)
            self.peft.set_adapter("_swap")
            self.peft.delete_adapter(role)
        self.peft.add_adapter(role, config)
        state = load_file(str(path / "adapter_model.safetensors"))
        result = set_peft_model_state_dict(self.peft, state, adapter_name=role)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise PerlError(f"{path}: {len(unexpected)} adapter tensors match no layer here")
        if other is None:
            self.peft.set_adapter(role)
            self.peft.delete_adapter("_swap")
        self.peft.set_adapter(role)
        self._active = role
        saved = config.target_modules
        self.lora_specs[role] = LoraSpec(
            rank=int(config.r),
            alpha=float(config.lora_alpha),
            dropout=float(config.lora_dropout),
            targets=saved if isinstance(saved, str) else tuple(sorted(saved or ())),
        )


def load_base(path: str | os.PathLike, *, dtype: torch.dtype = torch.float32, device="cpu"):
    """``(model, tokenizer)`` of a causal LM directory, with a one-line error if unusable."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").exists():
        raise PerlError(f"{path}: not a model directory (no config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = cast(nn.Module, AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype))
        model = model.to(device)
    except (OSError, ValueError) as e:
        raise PerlError(f"{path}: cannot load the model: {str(e).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer
