"""The Triton backend against the reference (CUDA, or the CPU under TRITON_INTERPRET=1):
NaN-poisoned allocations, vocabularies that are not a multiple of the vocabulary tile, chunks
without a selected row; and the ahead-of-time compile of every launch for the H100."""

from __future__ import annotations

import pytest
import torch
from rho_select import selective_loss
from rho_select.ops.selective_loss import (
    cases,
    naive,
    selective_loss_backward,
    selective_loss_forward,
)
from rho_select.ops.selective_loss import triton as kernels
from rho_testlib import problem

from tensor_utils_dev.testing import assert_close, poison_allocations
from tensor_utils_dev.testing.opcheck import check_backend

pytestmark = pytest.mark.triton


@pytest.mark.parametrize(
    "op", [selective_loss_forward, selective_loss_backward], ids=lambda o: o.name
)
def test_backend_matches_reference_on_cases(op, device):
    check_backend(op, "triton", max_examples=15, device=device)


# 513 and 1100: one tile of 512 plus a ragged remainder; 9000: the 4096-wide tile, ragged too.
@pytest.mark.parametrize("vocab", [5, 513, 1100, 9000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_forward_and_backward_odd_sizes(device, vocab, dtype):
    rows, hidden = 13, 24 if vocab < 9000 else 8
    h, w, labels = (t.to(device) for t in cases.problem(vocab, rows, hidden, vocab, dtype, 0.25))
    with poison_allocations():
        loss, lse = selective_loss_forward(h, w, labels, 4, -100, backend="triton")
    ref_loss, ref_lse = naive.selective_loss_forward(h, w, labels, 4, -100)
    assert_close(loss, ref_loss, dtype=dtype)
    assert_close(lse, ref_lse, dtype=dtype)
    # rows 0-7 unselected: with 3-row chunks the first two chunks of rows hold no selected row
    scale = torch.zeros(rows, device=device)
    scale[8:] = 0.1
    scale[labels == -100] = 0
    safe = labels.clamp(min=0)
    with poison_allocations():
        gh, gw = selective_loss_backward(h, w, safe, ref_lse, scale, 3, True, backend="triton")
    eh, ew = naive.selective_loss_backward(h, w, safe, ref_lse, scale, 3, True)
    assert torch.count_nonzero(gh[:8]) == 0
    assert_close(gh, eh, dtype=dtype)
    assert_close(gw, ew, dtype=dtype)


def test_no_selected_row_gives_zero_gradients(device):
    h, w, labels = (t.to(device) for t in cases.problem(1, 10, 8, 37, torch.float32, 0.0))
    lse = torch.zeros(10, device=device)
    with poison_allocations():
        gh, gw = selective_loss_backward(
            h, w, labels, lse, torch.zeros(10, device=device), 2, True, backend="triton"
        )
    assert torch.count_nonzero(gh) == 0 and torch.count_nonzero(gw) == 0


def test_selective_loss_end_to_end(device):
    h, w, labels, ref = (t.to(device) for t in problem(11, (3, 9), 16, 600))
    h, w = h.detach().requires_grad_(), w.detach().requires_grad_()
    a = selective_loss(h, w, labels, ref, 0.6, chunk_size=4, backend="triton")
    ga = torch.autograd.grad(a.loss, (h, w))
    b = selective_loss(h, w, labels, ref, 0.6, chunk_size=4, backend="reference")
    gb = torch.autograd.grad(b.loss, (h, w))
    assert torch.equal(a.selected_mask, b.selected_mask)
    assert_close(a.loss, b.loss)
    for x, y in zip(ga, gb, strict=True):
        assert_close(x, y)


def test_every_launch_compiles_for_the_h100():
    """Every configuration of both kernels compiles to sm_90 within the shared-memory limit (in a
    subprocess without TRITON_INTERPRET, which replaces kernels by Python functions)."""
    from tensor_utils_dev.aot import compile_ops_in_subprocess

    records = compile_ops_in_subprocess(["rho_select.ops"], full=True)
    assert len(records) == len(list(kernels.aot_launches())) == 12
    errors = [f"{r['kernel']}[{r['label']}]: {r['error']}" for r in records if "error" in r]
    assert not errors, errors
