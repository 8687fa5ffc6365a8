from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tensor_utils_dev.testing import (
    assert_close,
    assert_matches_float64,
    poison_allocations,
    poisoned_empty,
    tolerance,
)
from tensor_utils_dev.testing.strategies import random_tensor, shapes, state_dicts, tensors


def test_tolerances_tighten_with_precision():
    order = [torch.bfloat16, torch.float16, torch.float32, torch.float64]
    atols = [tolerance(d).atol for d in order]
    assert atols == sorted(atols, reverse=True)
    assert tolerance(torch.int32).atol == 0 == tolerance(torch.bool).rtol


def test_assert_close_catches_unwritten_elements():
    expected = torch.ones(4)
    actual = poisoned_empty(4)
    actual[:3] = 1
    with pytest.raises(AssertionError, match="NaN outputs"):
        assert_close(actual, expected)
    actual[3] = 1
    assert_close(actual, expected)


def test_assert_close_uses_the_dtype_tolerance():
    x = torch.tensor([1.0, 2.0])
    assert_close((x + 5e-3).bfloat16(), x, dtype=torch.bfloat16)
    with pytest.raises(AssertionError):
        assert_close(x + 5e-3, x)


def test_float64_reference_comparison():
    a, b = torch.randn(100), torch.randn(100)
    exact = (a.double() * 3 - b.double()).float()  # correctly rounded
    assert_matches_float64(exact, lambda a, b: a * 3 - b, a, b)
    with pytest.raises(AssertionError):
        assert_matches_float64(exact + 1e-3, lambda a, b: a * 3 - b, a, b)


def test_poison_allocations_fills_empty():
    with poison_allocations():
        f = torch.empty(3)
        i = torch.empty(2, dtype=torch.int32)
        g = torch.empty_like(f)
        h = f.new_empty(2)
    assert torch.isnan(f).all() and torch.isnan(g).all() and torch.isnan(h).all()
    assert (i == torch.iinfo(torch.int32).max).all()
    assert torch.empty is not None and not torch.isnan(torch.zeros(1)).any()


@given(shape=shapes(max_dims=4, max_side=9), seed=st.integers(0, 2**31 - 1))
def test_random_tensor_is_deterministic(shape, seed):
    for dtype in (torch.float32, torch.bfloat16, torch.int8, torch.bool):
        a = random_tensor(shape, dtype, seed)
        assert a.shape == shape and a.dtype == dtype
        assert torch.equal(a, random_tensor(shape, dtype, seed))


@given(t=tensors(dtype=torch.float16, shape=(3, 5)))
def test_tensors_strategy_respects_arguments(t):
    assert t.dtype == torch.float16 and t.shape == (3, 5) and torch.isfinite(t).all()


@given(sd=state_dicts(min_size=1, max_size=4))
def test_state_dicts_strategy(sd):
    assert 1 <= len(sd) <= 4
    assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items())
    assert all(math.prod(v.shape) == v.numel() for v in sd.values())
