"""The selective loss: equal to full logits + masked cross entropy, chunk-size independent,
zero gradient for unselected tokens, no gradient matmul on them, one-line errors, compiles."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from rho_select import RhoSelectError, selective_loss, token_cross_entropy
from rho_select.ops.selective_loss import naive
from rho_testlib import full_logits_loss, problem
from torch.utils._python_dispatch import TorchDispatchMode

from tensor_utils_dev.testing import assert_close
from tensor_utils_dev.testing.strategies import seeds


@st.composite
def problems(draw, ignored=None):
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 9)))
    hidden, vocab = draw(st.integers(1, 12)), draw(st.integers(1, 40))
    ignored = draw(st.sampled_from([0.0, 0.3])) if ignored is None else ignored
    h, w, labels, ref = problem(draw(seeds()), shape, hidden, vocab, ignored=ignored)
    if not (labels != -100).any():
        labels[0, 0] = 0
    return h, w, labels, ref


def grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors, allow_unused=True)


@given(p=problems(), chunk=st.integers(0, 9))
def test_ratio_one_equals_plain_cross_entropy(p, chunk):
    h, w, labels, ref = p
    out = selective_loss(h, w, labels, ref, 1.0, chunk_size=chunk)
    plain = F.cross_entropy((h @ w.t()).reshape(-1, w.shape[0]), labels.reshape(-1))
    assert_close(out.loss, plain)
    for a, b in zip(grads(out.loss, h, w), grads(plain, h, w), strict=True):
        assert_close(a, b)
    assert float(out.selected_fraction) == 1.0


@given(p=problems(), ratio=st.floats(0.05, 1.0), mode=st.sampled_from(["batch", "sequence"]))
def test_equals_full_logits_with_a_mask(p, ratio, mode):
    h, w, labels, ref = p
    out = selective_loss(h, w, labels, ref, ratio, mode=mode)
    mask = out.selected_mask
    naive_loss = full_logits_loss(h, w, labels, mask.float(), mask.sum())
    assert_close(out.loss, naive_loss)
    for a, b in zip(grads(out.loss, h, w), grads(naive_loss, h, w), strict=True):
        assert_close(a, b)
    # the selection ranks the excess loss of the current model over the reference
    excess = out.token_losses - ref
    valid = labels != -100
    if mask.any() and (valid & ~mask).any() and mode == "batch":
        assert excess[mask].min() >= excess[valid & ~mask].max()


@given(p=problems(), ratio=st.floats(0.05, 0.95))
def test_unselected_tokens_get_exactly_zero_gradient(p, ratio):
    h, w, labels, ref = p
    out = selective_loss(h, w, labels, ref, ratio)
    (gh,) = grads(out.loss, h)
    assert torch.count_nonzero(gh[~out.selected_mask]) == 0
    assert torch.equal(gh[~out.selected_mask], torch.zeros_like(gh[~out.selected_mask]))


@given(p=problems(), ratio=st.floats(0.05, 1.0))
def test_chunked_loss_equals_full_loss_at_every_chunk_size(p, ratio):
    h, w, labels, ref = p
    rows = labels.numel()
    full = selective_loss(h, w, labels, ref, ratio, chunk_size=rows)  # one chunk: the full loss
    g_full = grads(full.loss, h, w)
    for chunk in range(1, rows + 2):
        out = selective_loss(h, w, labels, ref, ratio, chunk_size=chunk)
        assert torch.equal(out.selected_mask, full.selected_mask)
        assert_close(out.loss, full.loss)
        for a, b in zip(grads(out.loss, h, w), g_full, strict=True):
            assert_close(a, b)


def test_statistics():
    h, w, labels, ref = problem(3, (4, 8), 16, 50)
    out = selective_loss(h, w, labels, ref, 0.6)
    valid = labels != -100
    tokens = F.cross_entropy(
        (h @ w.t()).reshape(-1, 50), labels.reshape(-1), reduction="none", ignore_index=-100
    ).view(labels.shape)
    mask = out.selected_mask
    assert_close(out.token_losses, tokens.detach())
    assert_close(out.selected_loss, tokens[mask].mean().detach())
    assert_close(out.unselected_loss, tokens[valid & ~mask].mean().detach())
    assert float(out.selected_fraction) == pytest.approx(int(mask.sum()) / int(valid.sum()))
    assert torch.isnan(selective_loss(h, w, labels, ref, 1.0).unselected_loss)


def test_shift_matches_manual_shift():
    h, w, labels, ref = problem(4, (2, 9), 8, 30)
    a = selective_loss(h, w, labels, ref, 0.7, shift=True)
    b = selective_loss(h[:, :-1], w, labels[:, 1:], ref[:, 1:], 0.7)
    assert_close(a.loss, b.loss)
    assert torch.equal(a.selected_mask, b.selected_mask)


def test_reference_ops_match_float64_math():
    h, w, labels, _ = problem(5, (33,), 24, 70, requires_grad=False)
    loss, lse = naive.selective_loss_forward(h, w, labels, 5, -100)
    logits = h.double() @ w.double().t()
    valid = labels != -100
    exp_lse = torch.logsumexp(logits, 1)
    exp_loss = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
    assert_close(lse[valid], exp_lse[valid].float())
    assert_close(loss[valid], exp_loss[valid].float())
    assert torch.count_nonzero(loss[~valid]) == 0
    scale = torch.rand(33, dtype=torch.float64) * valid
    hd, wd = h.double().requires_grad_(), w.double().requires_grad_()
    ce = F.cross_entropy(hd @ wd.t(), labels.clamp(min=0), reduction="none")
    exp_gh, exp_gw = torch.autograd.grad((ce * scale).sum(), (hd, wd))
    gh, gw = naive.selective_loss_backward(h, w, labels.clamp(min=0), lse, scale.float(), 4, True)
    assert_close(gh, exp_gh.float())
    assert_close(gw, exp_gw.float())


class MatmulFlops(TorchDispatchMode):
    """Counts 2*m*n*k for every matrix product (mm, addmm, addmm_, matmul lowered to mm)."""

    PRODUCTS: ClassVar[dict] = {
        torch.ops.aten.mm.default: (0, 1),
        torch.ops.aten.addmm.default: (1, 2),
        torch.ops.aten.addmm_.default: (1, 2),
    }

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.PRODUCTS:
            a, b = (args[i] for i in self.PRODUCTS[func])
            self.flops += 2 * a.shape[0] * a.shape[1] * b.shape[1]
        return func(*args, **(kwargs or {}))


def test_backward_spends_no_matmul_on_unselected_rows():
    rows, hidden, vocab = 40, 16, 64
    h, w, labels, ref = problem(6, (rows,), hidden, vocab, ignored=0.0)
    out = selective_loss(h, w, labels, ref, 0.25)
    k = int(out.selected_mask.sum())
    assert k == 10
    with MatmulFlops() as counter:
        out.loss.backward()
    # logits of the k selected rows, their hidden gradient and their weight gradient
    assert counter.flops == 3 * 2 * k * hidden * vocab


def test_token_cross_entropy_skips_rows_with_zero_gradient():
    h, w, labels, _ = problem(7, (12,), 8, 20, ignored=0.0)
    tokens = token_cross_entropy(h, w, labels, chunk_size=3)
    weights = torch.zeros(12)
    weights[[1, 7]] = torch.tensor([0.5, 2.0])
    gh, gw = grads((tokens * weights).sum(), h, w)
    ref = F.cross_entropy(h @ w.t(), labels, reduction="none")
    eh, ew = grads((ref * weights).sum(), h, w)
    assert_close(gh, eh)
    assert_close(gw, ew)


def one_line(excinfo, pattern):
    message = str(excinfo.value)
    assert "\n" not in message
    assert pattern in message, message


def test_bad_input_is_one_line():
    h, w, labels, ref = problem(8, (2, 5), 8, 20)
    with pytest.raises(RhoSelectError) as e:
        selective_loss(h, w, torch.full_like(labels, -100), ref)
    one_line(e, "no token to train on")
    for ratio in (0.0, 1.5):
        with pytest.raises(RhoSelectError) as e:
            selective_loss(h, w, labels, ref, ratio)
        one_line(e, "ratio must be in (0, 1]")
    with pytest.raises(RhoSelectError) as e:
        selective_loss(h, w, labels, ref[:, :4])
    one_line(e, "ref_losses of shape (2, 4) do not match labels of shape (2, 5)")
    with pytest.raises(RhoSelectError) as e:
        selective_loss(h, w, labels[:, :4], ref[:, :4])
    one_line(e, "labels of shape (2, 4) do not match hidden_states")
    with pytest.raises(RhoSelectError) as e:
        selective_loss(h, w[:, :7], labels, ref)
    one_line(e, "does not match hidden size 8")
    with pytest.raises(RhoSelectError) as e:
        selective_loss(h, w, labels.masked_fill(labels == -100, 20), ref)
    one_line(e, "outside the vocabulary [0, 20)")
    with pytest.raises(RhoSelectError) as e:
        selective_loss(h, w, labels, ref.masked_fill(labels != -100, float("nan")))
    one_line(e, "ref_losses are NaN or infinite")
    with pytest.raises(RhoSelectError) as e:
        selective_loss(h, w.double(), labels, ref)
    one_line(e, "dtypes differ")


def _compiled_step(backend_name):
    h, w, labels, ref = problem(9, (3, 7), 16, 37)

    def step(h, w, labels, ref):
        out = selective_loss(h, w, labels, ref, 0.6, chunk_size=5)
        return out.loss, out.selected_fraction, out.selected_loss, out.unselected_loss

    compiled = torch.compile(step, fullgraph=True, backend=backend_name)
    got = compiled(h, w, labels, ref)
    g_got = grads(got[0], h, w)
    want = step(h, w, labels, ref)
    for a, b in zip(got, want, strict=True):
        assert_close(a, b)
    for a, b in zip(g_got, grads(want[0], h, w), strict=True):
        assert_close(a, b)


def test_compiles_fullgraph_with_backward():
    """Dynamo traces the whole step, autograd included, into one graph (the custom ops are
    opaque nodes); aot_eager runs that graph without generating C++."""
    torch._dynamo.reset()
    _compiled_step("aot_eager")


@pytest.mark.slow
def test_compiles_fullgraph_with_inductor():
    torch._dynamo.reset()
    _compiled_step("inductor")
