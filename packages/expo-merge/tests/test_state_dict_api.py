"""``extrapolate_state_dict``: names, shapes, ties, filters, non-float tensors and errors."""

from __future__ import annotations

import pytest
import torch
from expo_helpers import model_pair
from expo_merge import (
    MismatchError,
    QuantizedCheckpointError,
    VocabSizeMismatchError,
    extrapolate_state_dict,
)
from hypothesis import given
from hypothesis import strategies as st

from tensor_utils_dev.testing import assert_matches_float64
from tensor_utils_dev.testing.strategies import random_tensor, seeds, state_dicts

alphas = st.floats(min_value=-5, max_value=5, allow_nan=False, allow_infinity=False)


def perturbed(state, seed):
    out = {}
    for i, (k, v) in enumerate(state.items()):
        if v.is_floating_point() and v.dtype != torch.float64:
            noise = random_tensor(tuple(v.shape), torch.float32, seed + i, scale=0.05)
            out[k] = (v.float() + noise).to(v.dtype)
        else:
            out[k] = v.clone()
    return out


@given(aligned=state_dicts(max_size=5), seed=seeds(), alpha=alphas)
def test_names_shapes_dtypes_preserved(aligned, seed, alpha):
    sft = perturbed(aligned, seed)
    out = extrapolate_state_dict(sft, aligned, alpha)
    assert list(out) == list(aligned)
    for k, v in aligned.items():
        assert out[k].shape == v.shape and out[k].dtype == v.dtype
        if not v.is_floating_point():
            assert torch.equal(out[k], v)  # non-float: copied from ALIGNED


@given(aligned=state_dicts(max_size=5), seed=seeds())
def test_alpha_zero_is_aligned_and_minus_one_is_sft(aligned, seed):
    sft = perturbed(aligned, seed)
    zero = extrapolate_state_dict(sft, aligned, 0.0)
    back = extrapolate_state_dict(sft, aligned, -1.0)
    for k, v in aligned.items():
        assert torch.equal(zero[k], v)
        if v.is_floating_point() and v.dtype != torch.float64 and v.dtype != torch.float32:
            assert torch.equal(back[k], sft[k])
        elif v.is_floating_point():
            torch.testing.assert_close(back[k], sft[k])


@given(seed=seeds(), alpha=alphas, dtype=st.sampled_from(["bf16", "fp16", "fp32", "keep"]))
def test_within_one_rounding_of_float64(seed, alpha, dtype):
    sft, aligned = model_pair(seed % 1000)
    out = extrapolate_state_dict(sft, aligned, alpha, dtype=dtype)
    for k, v in aligned.items():
        if v.is_floating_point():
            assert_matches_float64(out[k], lambda s, a: a + alpha * (a - s), sft[k], v)


def test_tied_weights_computed_once_and_stay_tied():
    sft, aligned = model_pair(1, tied=True)
    out = extrapolate_state_dict(sft, aligned, 0.3)
    assert out["lm_head.weight"] is out["model.embed_tokens.weight"]


def test_include_exclude_and_dtype():
    sft, aligned = model_pair(2)
    out = extrapolate_state_dict(
        sft, aligned, 0.5, include=["model.layers.*"], exclude=["*norm*"], dtype="fp32"
    )
    assert torch.equal(
        out["model.embed_tokens.weight"], aligned["model.embed_tokens.weight"].float()
    )
    assert torch.equal(
        out["model.layers.0.input_layernorm.weight"],
        aligned["model.layers.0.input_layernorm.weight"].float(),
    )
    q = "model.layers.0.self_attn.q_proj.weight"
    assert out[q].dtype == torch.float32 and not torch.equal(out[q], aligned[q].float())
    assert out["model.rotary.position_ids"].dtype == torch.int64


def test_out_dtype_rounds_once():
    sft, aligned = model_pair(3, dtype=torch.float32, sigma=1e-4)
    out = extrapolate_state_dict(sft, aligned, 0.1, dtype="bf16")
    k = "model.embed_tokens.weight"
    exact = (aligned[k].double() * 1.1 - 0.1 * sft[k].double()).to(torch.bfloat16)
    assert (out[k] != exact).float().mean() < 1e-3  # double rounding ties only


def test_errors_are_one_line():
    sft, aligned = model_pair(4)
    cases = [
        (
            {k: v for k, v in sft.items() if k != "model.norm.weight"},
            aligned,
            MismatchError,
            "missing from SFT",
        ),
        ({**sft, "extra.weight": torch.zeros(2)}, aligned, MismatchError, "not in ALIGNED"),
        (
            {**sft, "model.norm.weight": torch.zeros(3, dtype=torch.bfloat16)},
            aligned,
            MismatchError,
            "shape mismatch",
        ),
        (
            {**sft, "model.norm.weight": sft["model.norm.weight"].float()},
            aligned,
            MismatchError,
            "dtype mismatch",
        ),
        (
            {**sft, "model.embed_tokens.weight": torch.zeros(49, 12, dtype=torch.bfloat16)},
            aligned,
            VocabSizeMismatchError,
            "SFT has 49 tokens, ALIGNED has 50",
        ),
        (
            {**sft, "x.qweight": torch.zeros(2, dtype=torch.int32)},
            {**aligned, "x.qweight": torch.zeros(2, dtype=torch.int32)},
            QuantizedCheckpointError,
            "quantized",
        ),
    ]
    for s, a, err, text in cases:
        with pytest.raises(err, match=text) as info:
            extrapolate_state_dict(s, a, 0.3)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="finite"):
        extrapolate_state_dict(sft, aligned, float("nan"))
