"""The two pieces of a Hugging Face causal LM the selective loss needs: the final hidden states
(after the last norm) and the LM head weight."""

from __future__ import annotations

import torch

from .errors import RhoSelectError


def lm_head_weight(model) -> torch.Tensor:
    """The ``[vocab, hidden]`` output projection, after checking the logits are a plain linear
    map of the final hidden states (no bias, no scale or soft-capping)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or not isinstance(getattr(head, "weight", None), torch.Tensor):
        raise RhoSelectError(f"{type(model).__name__} has no output embedding (LM head) weight")
    if getattr(head, "bias", None) is not None:
        raise RhoSelectError(f"{type(model).__name__}: an LM head with a bias is not supported")
    config = getattr(model, "config", None)
    for key in ("final_logit_softcapping", "logit_scale", "output_multiplier_scale"):
        value = getattr(config, key, None)
        if value not in (None, 1, 1.0):
            raise RhoSelectError(
                f"{type(model).__name__}: logits are transformed ({key}={value}); the selective "
                "loss supports plain linear LM heads only"
            )
    return head.weight


def decoder(model) -> torch.nn.Module:
    """The base model whose ``last_hidden_state`` feeds the LM head."""
    get = getattr(model, "get_decoder", None)
    base = get() if callable(get) else None
    if not isinstance(base, torch.nn.Module):
        raise RhoSelectError(f"{type(model).__name__} has no get_decoder(): not a causal LM?")
    return base


def final_hidden_states(model, input_ids, attention_mask=None, **kwargs) -> torch.Tensor:
    """``[batch, seq, hidden]`` final hidden states, through the model's own forward (so DDP and
    FSDP wrappers see a normal call) with the LM head applied to one position only."""
    captured = {}
    base = decoder(_unwrap(model))

    def keep(_module, _args, output):
        captured["h"] = (
            output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        )

    handle = base.register_forward_hook(keep)
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=1, **kwargs)
    finally:
        handle.remove()
    if "h" not in captured:
        raise RhoSelectError(f"{type(model).__name__}: the decoder did not run in forward")
    return captured["h"]


def _unwrap(model):
    """The module inside DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner
