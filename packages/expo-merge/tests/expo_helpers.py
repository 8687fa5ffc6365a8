"""Build small synthetic SFT/ALIGNED checkpoint pairs in every supported layout."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tensor_utils.checkpoint import save_safetensors

FORMATS = ("safetensors", "pt", "dir", "dir-sharded", "bin-dir")


def model_pair(
    seed: int = 0,
    *,
    dtype: torch.dtype = torch.bfloat16,
    vocab: int = 50,
    hidden: int = 12,
    sigma: float = 1e-2,
    tied: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A tiny Llama-shaped (sft, aligned) pair: aligned = sft + N(0, sigma), an int buffer."""
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "model.embed_tokens.weight": (vocab, hidden),
        "model.layers.0.self_attn.q_proj.weight": (hidden, hidden),
        "model.layers.0.mlp.up_proj.weight": (2 * hidden + 1, hidden),
        "model.layers.0.input_layernorm.weight": (hidden,),
        "model.norm.weight": (hidden,),
    }
    sft = {k: (0.05 * torch.randn(s, generator=g)).to(dtype) for k, s in shapes.items()}
    sft["model.rotary.position_ids"] = torch.arange(7)
    aligned = {}
    for k, v in sft.items():
        if v.is_floating_point():
            aligned[k] = (v.float() + sigma * torch.randn(v.shape, generator=g)).to(dtype)
        else:
            aligned[k] = v.clone()
    if tied:
        sft["lm_head.weight"] = sft["model.embed_tokens.weight"]
        aligned["lm_head.weight"] = aligned["model.embed_tokens.weight"]
    else:
        sft["lm_head.weight"] = (0.05 * torch.randn(vocab, hidden, generator=g)).to(dtype)
        aligned["lm_head.weight"] = (
            sft["lm_head.weight"].float() + sigma * torch.randn(vocab, hidden, generator=g)
        ).to(dtype)
    return sft, aligned


SIDE_FILES = {
    "config.json": None,  # filled per side
    "generation_config.json": {"do_sample": False, "max_new_tokens": 8},
    "tokenizer.json": {"model": {"type": "BPE"}},
    "tokenizer_config.json": {"chat_template": "{{ messages }}"},
    "special_tokens_map.json": {"eos_token": "<eos>"},
}


def write_checkpoint(
    state: dict[str, torch.Tensor],
    path: Path,
    fmt: str,
    *,
    label: str = "model",
    vocab: int | None = None,
) -> Path:
    """Write ``state`` as ``fmt``; directories get config/tokenizer files tagged with ``label``."""
    if fmt == "safetensors":
        path = path.with_suffix(".safetensors")
        save_safetensors(_untied(state), path)
        return path
    if fmt == "pt":
        path = path.with_suffix(".pt")
        torch.save(state, path)
        return path
    path.mkdir(parents=True)
    if fmt == "dir":
        save_safetensors(_untied(state), path / "model.safetensors")
    elif fmt == "dir-sharded":
        untied = _untied(state)
        total = sum(t.numel() * t.element_size() for t in untied.values())
        tmp = path.parent / f"{path.name}.shards"
        save_safetensors(untied, tmp, max_shard_size=total // 3 + 1)
        for f in tmp.iterdir():
            f.rename(path / f.name)
        tmp.rmdir()
    elif fmt == "bin-dir":
        torch.save(state, path / "pytorch_model.bin")
    else:
        raise ValueError(fmt)
    emb = state["model.embed_tokens.weight"]
    config = {
        "label": label,
        "vocab_size": vocab or emb.shape[0],
        "tie_word_embeddings": "lm_head.weight" not in _untied(state),
    }
    (path / "config.json").write_text(json.dumps(config))
    for name, content in SIDE_FILES.items():
        if content is not None:
            (path / name).write_text(json.dumps({**content, "label": label}))
    return path


def _untied(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop names that share storage with an earlier tensor (safetensors stores a tie once)."""
    seen, out = set(), {}
    for k, v in state.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        if v.numel() and key in seen:
            continue
        seen.add(key)
        out[k] = v
    return out


def listing(root: Path) -> set[str]:
    """Every path under ``root`` (to check that nothing was left behind)."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}
