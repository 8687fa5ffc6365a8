"""Selection: the count rule, -100 never counts, permutation invariance, ties, modes."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from rho_select import RhoSelectError, select_tokens, selected_count

from tensor_utils_dev.testing.strategies import seeds

ratios = st.floats(min_value=1e-3, max_value=1.0, allow_nan=False)


@st.composite
def batches(draw, max_rows=6, max_len=17, ties=False):
    rows, length = draw(st.integers(1, max_rows)), draw(st.integers(1, max_len))
    gen = torch.Generator().manual_seed(draw(seeds()))
    if ties:  # few distinct values: many exact ties
        excess = torch.randint(0, 3, (rows, length), generator=gen).float()
    else:
        excess = torch.randn(rows, length, generator=gen)
    valid = torch.rand(rows, length, generator=gen) >= draw(st.sampled_from([0.0, 0.3, 0.9]))
    return excess, valid


@given(batch=batches(ties=True), ratio=ratios)
def test_batch_count_follows_the_rule(batch, ratio):
    excess, valid = batch
    sel = select_tokens(excess, valid, ratio, mode="batch")
    n = int(valid.sum())
    expected = 0 if n == 0 else max(1, math.floor(ratio * n + 0.5))
    assert int(sel.mask.sum()) == expected == selected_count(n, ratio) == int(sel.selected)
    assert not bool((sel.mask & ~valid).any()), "an ignored token was selected"


@given(batch=batches(ties=True), ratio=ratios)
def test_sequence_count_follows_the_rule_per_row(batch, ratio):
    excess, valid = batch
    sel = select_tokens(excess, valid, ratio, mode="sequence")
    for row in range(excess.shape[0]):
        assert int(sel.mask[row].sum()) == selected_count(int(valid[row].sum()), ratio)
    assert not bool((sel.mask & ~valid).any())


@given(batch=batches(), ratio=ratios)
def test_selected_outrank_unselected(batch, ratio):
    excess, valid = batch
    mask = select_tokens(excess, valid, ratio).mask
    unselected = valid & ~mask
    if mask.any() and unselected.any():
        assert excess[mask].min() >= excess[unselected].max()


@given(
    batch=batches(ties=True),
    ratio=ratios,
    seed=seeds(),
    mode=st.sampled_from(["batch", "sequence"]),
)
def test_selection_is_invariant_to_permuting_the_batch(batch, ratio, seed, mode):
    excess, valid = batch
    perm = torch.randperm(excess.shape[0], generator=torch.Generator().manual_seed(seed))
    a = select_tokens(excess, valid, ratio, mode=mode).mask
    b = select_tokens(excess[perm], valid[perm], ratio, mode=mode).mask
    # the selected scores are the same multiset even with ties ...
    assert torch.equal(excess[a].sort().values, excess[perm][b].sort().values)
    # ... and the same tokens when scores are distinct
    distinct = excess + torch.arange(excess.numel()).view(excess.shape) * 1e-3
    a = select_tokens(distinct, valid, ratio, mode=mode).mask
    b = select_tokens(distinct[perm], valid[perm], ratio, mode=mode).mask
    assert torch.equal(a[perm], b)


def test_ties_go_to_the_earlier_token():
    excess = torch.zeros(2, 5)
    valid = torch.ones(2, 5, dtype=torch.bool)
    valid[0, 1] = False
    mask = select_tokens(excess, valid, 0.5).mask  # 9 labelled -> k = 5 (4.5 rounds up)
    expected = torch.tensor([[1, 0, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(mask, expected)


@given(batch=batches(), threshold=st.floats(-2, 2))
def test_threshold_mode(batch, threshold):
    excess, valid = batch
    sel = select_tokens(excess, valid, mode="threshold", threshold=threshold)
    assert torch.equal(sel.mask, valid & (excess > threshold))


@given(batch=batches(), ratio=ratios, seed=seeds())
def test_random_mode_counts_and_is_seeded(batch, ratio, seed):
    excess, valid = batch
    a = select_tokens(
        excess, valid, ratio, mode="random", generator=torch.Generator().manual_seed(seed)
    )
    b = select_tokens(
        excess, valid, ratio, mode="random", generator=torch.Generator().manual_seed(seed)
    )
    assert torch.equal(a.mask, b.mask)
    assert int(a.mask.sum()) == selected_count(int(valid.sum()), ratio)


def test_ratio_one_selects_every_labelled_token():
    excess, valid = torch.randn(3, 7), torch.rand(3, 7) > 0.3
    assert torch.equal(select_tokens(excess, valid, 1.0).mask, valid)


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.01, float("nan")])
def test_ratio_outside_range_is_one_line(ratio):
    with pytest.raises(RhoSelectError, match=r"^ratio must be in \(0, 1\]") as err:
        select_tokens(torch.zeros(4), torch.ones(4, dtype=torch.bool), ratio)
    assert "\n" not in str(err.value)


def test_bad_mode_and_shapes_are_one_line():
    with pytest.raises(RhoSelectError, match="disagree"):
        select_tokens(torch.zeros(4), torch.ones(5, dtype=torch.bool))
    with pytest.raises(RhoSelectError, match="mode must be one of"):
        select_tokens(torch.zeros(4), torch.ones(4, dtype=torch.bool), mode="best")
    with pytest.raises(RhoSelectError, match="needs \\[batch, seq\\]"):
        select_tokens(torch.zeros(4), torch.ones(4, dtype=torch.bool), mode="sequence")
    with pytest.raises(RhoSelectError, match="finite threshold"):
        select_tokens(torch.zeros(4), torch.ones(4, dtype=torch.bool), mode="threshold")
