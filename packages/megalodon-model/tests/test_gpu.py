"""On CUDA: the Triton kernels against the float64 recurrence / the reference at realistic sizes,
bf16 included, and the model on its Triton backends against its reference backends.

    python tools/gpu.py megalodon-model
"""

from __future__ import annotations

import pytest
import torch
from megalodon_model.ops.cema import cases, cema
from megalodon_model.ops.timestep_norm import timestep_norm
from megalodon_testlib import tiny_model

from tensor_utils_dev.testing import poison_allocations

pytestmark = pytest.mark.gpu


def _rel(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("length", [1, 100, 4099])
def test_cema_triton_against_float64(dtype, length):
    dim, n_dim = 96, 16
    gen = torch.Generator().manual_seed(length)
    x = torch.randn(2, length, dim, generator=gen).to(dtype)
    p, q, eta = cases.random_coefficients(dim, n_dim, 1)
    h0 = torch.randn(2, dim, n_dim, 2, generator=gen)
    y64, h64 = cema(*(t.double() for t in (x, p, q, eta, h0)), backend="reference")
    dev = [t.cuda() for t in (x, p, q, eta, h0)]
    with poison_allocations():
        y, h = cema(*dev, backend="triton")
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    assert _rel(y.cpu(), y64) < tol
    assert _rel(h.cpu(), h64) < 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cema_triton_backward_against_chunked(dtype):
    dim, n_dim, length = 64, 16, 3001
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, length, dim, generator=gen).to(dtype).cuda()
    p, q, eta = (t.cuda() for t in cases.random_coefficients(dim, n_dim, 2))
    h0 = torch.randn(2, dim, n_dim, 2, generator=gen).cuda()

    def grads(backend):
        leaves = [t.clone().requires_grad_(True) for t in (x, p, q, eta, h0)]
        y, h = cema(*leaves, backend=backend)
        (y.float().sin().sum() + h.cos().sum()).backward()
        return [leaf.grad for leaf in leaves]

    with poison_allocations():
        got = grads("triton")
    want = grads("chunked")
    for g, w in zip(got, want, strict=True):
        assert _rel(g, w) < (1e-3 if dtype == torch.float32 else 2e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("padded", [False, True])
def test_timestep_norm_triton_against_reference(dtype, padded):
    batch, length, groups, dim = 2, 5000, 16, 1024
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(batch, length, dim, generator=gen) + 2).to(dtype).cuda()
    count = torch.tensor([0, 7]).cuda()
    mean, var = torch.randn(batch, groups).cuda(), torch.rand(batch, groups).cuda() + 0.5
    w = (torch.randn(dim, generator=gen) * 0.2 + 1).to(dtype).cuda()
    b = torch.randn(dim, generator=gen).to(dtype).cuda()
    pad = (torch.rand(batch, length, generator=gen) < 0.1).cuda() if padded else None

    def run(backend):
        leaves = [t.clone().requires_grad_(True) for t in (x, mean, var, w, b)]
        y, _c, m, v = timestep_norm(leaves[0], count, *leaves[1:], pad, 1e-5, backend=backend)
        (y.float().square().mean() + m.sum() + v.sum()).backward()
        return [y, m, v] + [leaf.grad for leaf in leaves]

    with poison_allocations():
        got = run("triton")
    want = run("reference")
    for g, wv in zip(got, want, strict=True):
        assert _rel(g, wv) < (1e-4 if dtype == torch.float32 else 2e-2)


def test_model_on_triton_backends_matches_reference_backends():
    ids = torch.randint(0, 97, (2, 45)).cuda()
    fast = tiny_model().cuda()  # pyright: ignore[reportCallIssue]  (transformers types .cuda() wrongly)
    slow = tiny_model(cema_backend="reference", norm_backend="reference").cuda()  # pyright: ignore[reportCallIssue]  (as above)
    with torch.no_grad():
        a = fast(ids, use_cache=False).logits
        b = slow(ids, use_cache=False).logits
        out = fast.generate(ids[:, :5], max_new_tokens=30, do_sample=False)
        x = ids[:, :5]
        for _ in range(30):
            x = torch.cat([x, fast(x, use_cache=False).logits[:, -1:].argmax(-1)], 1)
    assert _rel(a, b) < 1e-4
    assert torch.equal(out, x)


def test_model_trains_in_bf16_on_triton_backends():
    model = tiny_model().cuda().to(torch.bfloat16).train()  # pyright: ignore[reportCallIssue]  (transformers types .cuda() wrongly)
    ids = torch.arange(64).remainder(7)[None].repeat(4, 1).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
