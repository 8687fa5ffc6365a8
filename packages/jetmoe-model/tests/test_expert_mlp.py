"""The fused SwiGLU expert MLP (Triton) and the fused MoE layer path against the loop
reference: values, all three gradients, NaN-poisoned outputs, odd sizes, empty experts, TMA
descriptors on and off, and which load path the dispatch picks.

On the CPU these run in Triton's interpreter (TRITON_INTERPRET=1): tiny shapes, fp32/fp16.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jetmoe_model import JetMoEConfig
from jetmoe_model.modeling import JetMoEMoE
from jetmoe_model.ops.expert_mlp import expert_mlp
from jetmoe_model.ops.experts import triton as kernels
from jetmoe_model.ops.experts.cases import random_expert_index
from jetmoe_model.ops.options import kernel_options
from jetmoe_model.routing import sort_by_expert
from jetmoe_testlib import (
    TINY,
    randomize_,
    route_node_path,
    set_kernel_options,
    set_kernel_override,
)

from tensor_utils_dev.testing import assert_close, poison_allocations
from tensor_utils_dev.testing.strategies import random_tensor, seeds

pytestmark = pytest.mark.triton


def _device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def _straddling_experts(device):
    """Expert row counts 0, 5, 16, 23 (an empty expert, tails, a whole 16-row block), their
    int32 end offsets and the pair count."""
    counts = [0, 5, 16, 23]
    offsets = torch.tensor(counts, device=device).cumsum(0).to(torch.int32)
    return counts, offsets, sum(counts)


def check_mlp(tokens, experts, top_k, d, f, dtype, seed):
    device = _device()
    routing = sort_by_expert(random_expert_index(tokens, experts, top_k, seed).to(device), experts)
    x = random_tensor((tokens, d), dtype, seed + 1, device=device)
    w_in = random_tensor((experts, 2 * f, d), dtype, seed + 2, scale=0.5, device=device)
    w_out = random_tensor((experts, d, f), dtype, seed + 3, scale=0.5, device=device)
    g = random_tensor((tokens * top_k, d), dtype, seed + 4, device=device)
    results = {}
    for backend in ("reference", "triton"):
        ins = [t.clone().requires_grad_() for t in (x, w_in, w_out)]
        with poison_allocations():
            y = expert_mlp(*ins, routing.sorted_pair, routing.expert_offsets, backend=backend)
            grads = torch.autograd.grad(y, ins, g)
        results[backend] = (y, *grads)
    ref_dtype = dtype if device == "cuda" or dtype != torch.float16 else torch.float32
    # two chained matmuls; the fused SwiGLU (and its backward) rounds once where autograd rounds
    # per op: a few fp32 ulps of the largest sums. fp16: dx sums 2f products of separately
    # rounded factors, so its error scales with the largest |dx| (~6 fp16 ulps of it: 9 tokens,
    # 2 experts, d 21, f 19, seed 113 is off by 0.0195 at max |dx| ~ 7.4, at HEAD as well)
    tol = 1e-4 if dtype == torch.float32 else 8e-3
    for name, got, want in zip(
        ("y", "dx", "dw_in", "dw_out"), results["triton"], results["reference"], strict=True
    ):
        assert got.dtype == want.dtype
        atol = tol
        if dtype == torch.float16 and want.numel():
            atol = 6e-3 * max(1.0, want.float().abs().max().item())
        assert_close(got, want, dtype=ref_dtype, atol=atol, rtol=tol, msg=f"{name}: ")


@settings(deadline=None, max_examples=8)
@example(tokens=9, experts=1, top_k=1, d=21, f=19, dtype=torch.float16, seed=0)
@example(tokens=9, experts=2, top_k=2, d=21, f=19, dtype=torch.float16, seed=113)
@given(
    tokens=st.integers(0, 11),
    experts=st.integers(1, 5),
    top_k=st.integers(1, 3),
    d=st.integers(1, 21),
    f=st.integers(1, 19),
    dtype=st.sampled_from([torch.float32, torch.float16]),
    seed=seeds(),
)
def test_fused_mlp_equals_loop_for_random_routings(tokens, experts, top_k, d, f, dtype, seed):
    check_mlp(tokens, experts, min(top_k, experts), d, f, dtype, seed)


@pytest.mark.parametrize("tma", [True, False])
def test_fused_mlp_tma_and_pointer_paths(tma, monkeypatch):
    # d, f multiples of 4 (fp32): the TMA descriptors are eligible; 40 tokens straddle tiles
    set_kernel_options(monkeypatch, use_tma=tma, tma_min_pairs=0)  # TMA at test sizes too
    check_mlp(40, 6, 2, 32, 24, torch.float32, seed=5)


def test_dispatch_picks_tma_only_for_aligned_contiguous_operands(monkeypatch):
    set_kernel_options(monkeypatch, use_tma=True)
    device = _device()
    aligned = torch.zeros(4, 24, 32, device=device)
    assert kernels._tma_ok(aligned) == (
        device == "cpu" or torch.cuda.get_device_capability()[0] >= 9
    )
    assert not kernels._tma_ok(torch.zeros(4, 24, 33, device=device))  # 132-byte rows
    assert not kernels._tma_ok(aligned.transpose(1, 2))  # not row-major
    # small batches keep pointer loads (descriptor encoding costs more than it saves there)
    min_pairs = kernel_options().tma_min_pairs
    assert not kernels._tma_ok(aligned, min_pairs)
    assert kernels._tma_ok(aligned, min_pairs + 1) == kernels._tma_ok(aligned)
    set_kernel_options(monkeypatch, use_tma=False)
    assert not kernels._tma_ok(aligned)


@pytest.mark.parametrize("tokens", [1, 3, 13, 40])  # GEMV, tiled; one and several route blocks
def test_triton_inference_layer_paths(tokens):
    device = _device()
    cfg = JetMoEConfig(**{**TINY, "expert_backend": "reference"})
    layer = randomize_(JetMoEMoE(cfg)).to(device)
    x = torch.randn(2, tokens, TINY["hidden_size"], device=device)
    with torch.no_grad():
        ref, ref_route = layer(x)
        layer.input_linear.config.expert_backend = "triton"
        with poison_allocations():
            out, route = layer(x)
    assert route.routing.pair_position is not None  # the Triton routing ran
    assert_close(out, ref)
    assert_close(route.gates, ref_route.gates)
    assert torch.equal(route.expert_index, ref_route.expert_index)
    assert torch.equal(route.routing.sorted_pair, ref_route.routing.sorted_pair)
    assert_close(route.logits, ref_route.logits)


def test_inference_forward_keeps_no_pre_activation(monkeypatch):
    # under no_grad the GLU GEMM must not write h (a wasted [P, 2F] store); x alone needing a
    # gradient must still save it
    calls = []
    real = kernels.gather_gemm_scatter

    def spy(*args, **kwargs):
        calls.append(kwargs.get("save_h", False))
        return real(*args, **kwargs)

    from jetmoe_model.ops.expert_mlp import triton as mlp_kernels

    monkeypatch.setattr(mlp_kernels, "gather_gemm_scatter", spy)
    device = _device()
    routing = sort_by_expert(random_expert_index(12, 4, 2, 0).to(device), 4)
    x = torch.randn(12, 8, device=device)
    w_in = torch.randn(4, 10, 8, device=device, requires_grad=True)
    w_out = torch.randn(4, 8, 5, device=device, requires_grad=True)
    args = (routing.sorted_pair, routing.expert_offsets)
    with torch.no_grad():
        expert_mlp(x, w_in, w_out, *args, backend="triton")
    assert calls[0] is False
    calls.clear()
    xg = x.clone().requires_grad_()
    y = expert_mlp(xg, w_in.detach(), w_out.detach(), *args, backend="triton")
    assert calls[0] is True
    (dx,) = torch.autograd.grad(y, [xg], torch.ones_like(y))
    ref = expert_mlp(xg, w_in.detach(), w_out.detach(), *args, backend="reference")
    (dx_ref,) = torch.autograd.grad(ref, [xg], torch.ones_like(ref))
    assert_close(dx, dx_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_combine_and_its_gradients(dtype):
    from jetmoe_model.ops.expert_mlp.naive import combine as torch_combine
    from jetmoe_model.ops.expert_mlp.triton import combine

    device = _device()
    y = random_tensor((7 * 3, 20), dtype, 1, device=device)
    gates = random_tensor((7, 3), dtype, 2, device=device).softmax(-1)
    bias = random_tensor((20,), dtype, 3, device=device)
    dout = random_tensor((7, 20), dtype, 4, device=device)
    results = []
    for fn in (lambda a, b, c: torch_combine(a, b) + c, combine):
        ins = [t.clone().requires_grad_() for t in (y, gates, bias)]
        with poison_allocations():
            out = fn(*ins)
            grads = torch.autograd.grad(out, ins, dout)
        results.append((out, *grads))
    ref_dtype = dtype if device == "cuda" or dtype != torch.float16 else torch.float32
    tol = None if dtype == torch.float32 else 4e-3
    for name, got, want in zip(
        ("out", "dy", "dgates", "dbias"), results[1], results[0], strict=True
    ):
        assert got.dtype == want.dtype
        assert_close(got, want, dtype=ref_dtype, atol=tol, rtol=tol, msg=f"{name}: ")


@pytest.mark.parametrize("tma", [True, False])
def test_xty_tma_path_with_partial_row_blocks(tma, monkeypatch):
    # sorted operands, 16-row blocks: experts of 0, 5, 16, 23 rows (tails and whole blocks)
    set_kernel_options(monkeypatch, use_tma=tma, tma_min_pairs=0)  # TMA at test sizes too
    device = _device()
    counts, offsets, pairs = _straddling_experts(device)
    x = torch.randn(pairs, 32, device=device)
    dy = torch.randn(pairs, 24, device=device)
    with poison_allocations():
        dw = kernels.grouped_xty(x, dy, offsets, None, 1, None, torch.Size([4, 24, 32]), pairs)
    start = 0
    for e, c in enumerate(counts):
        want = dy[start : start + c].T @ x[start : start + c]
        assert_close(dw[e], want, atol=1e-4, rtol=1e-4)
        start += c


def _large_size_path(monkeypatch):
    """What the layer runs above 4,096 pairs, at test sizes: persistent grids for every GEMM kind
    (loop flattening and warp specialization are compiler hints the interpreter ignores), dh as
    a plain GEMM + the elementwise SwiGLU backward."""

    opts = kernel_options()
    overrides = {**opts.config_overrides, **opts.persistent_large}
    set_kernel_options(monkeypatch, config_overrides=overrides, dh_split_min_pairs=0)


@pytest.mark.parametrize("fuse_route", [True, False])
@pytest.mark.parametrize(
    ("gather_x", "tma", "large"),
    [(True, True, True), (True, True, False), (False, True, False), (False, False, False)],
)
@pytest.mark.parametrize("tokens", [5, 40])
def test_moe_layer_training_gradients_match_reference(tokens, gather_x, tma, large, fuse_route,
                                                      monkeypatch):  # fmt: skip
    # the whole layer: Triton routing (in the layer's node, its backward in the combine's, or
    # its own node), fused MLP + combine node (x gathered into sorted order first, or inside
    # the GEMM with dW_in reading a sorted copy (TMA) or gathering rows; the large-size path:
    # persistent GEMMs, split dh); every gradient

    set_kernel_options(
        monkeypatch,
        gather_x_min_pairs=0 if gather_x else 1 << 30,
        tma_min_pairs=0 if tma else 1 << 30,
    )
    if large:
        _large_size_path(monkeypatch)
    device = _device()
    cfg = JetMoEConfig(**{**TINY, "expert_backend": "reference"})
    layer = randomize_(JetMoEMoE(cfg)).to(device)
    route_node_path()(layer, not fuse_route)  # False: the two-node path (benchmarks/)
    x = torch.randn(1, tokens, TINY["hidden_size"], device=device, requires_grad=True)
    g = torch.randn(1, tokens, TINY["hidden_size"], device=device)
    results = {}
    for backend in ("reference", "triton"):
        layer.input_linear.config.expert_backend = backend
        with poison_allocations():
            out, _ = layer(x)
            grads = torch.autograd.grad(out, [x, *layer.parameters()], g)
        results[backend] = (out, *grads)
    names = ["out", "x", *(n for n, _ in layer.named_parameters())]
    for name, got, want in zip(names, results["triton"], results["reference"], strict=True):
        assert_close(got, want, atol=1e-4, rtol=1e-4, msg=f"{name}: ")


@pytest.mark.parametrize("tma", [True, False])
def test_dh_epilogue_with_early_and_late_h_loads_and_split(tma, monkeypatch):
    # the dh GEMM (glu_bwd epilogue over sorted rows) with the h loads issued before and after
    # the K loop, and split (plain GEMM + elementwise SwiGLU backward, persistent grid); experts
    # of 0, 5, 16, 23 rows (an empty expert, tiles straddling experts)
    from jetmoe_model.ops.expert_mlp import triton as mlp_kernels

    set_kernel_options(monkeypatch, use_tma=tma, tma_min_pairs=0)
    device = _device()
    _, offsets, pairs = _straddling_experts(device)
    dy = torch.randn(pairs, 32, device=device)
    w_out = torch.randn(4, 32, 24, device=device)
    h = torch.randn(pairs, 48, device=device)
    got = {}
    for h_early in (True, False):
        set_kernel_override(monkeypatch, "glu_bwd", {"H_EARLY": int(h_early)})
        with poison_allocations():
            got[h_early], _ = kernels.gather_gemm_scatter(dy, w_out, offsets, None, 1, None, pairs,
                                                          transpose_weight=True, allow_gemv=False,
                                                          epilogue="glu_bwd", h=h)  # fmt: skip
    set_kernel_override(monkeypatch, "glu_bwd", None)
    _large_size_path(monkeypatch)
    with poison_allocations():
        got["split"] = mlp_kernels._dh(dy, w_out, offsets, h, pairs)
    assert_close(got[True], got[False], atol=1e-5, rtol=1e-5)
    # and against the SwiGLU backward in PyTorch
    g, u = h.chunk(2, dim=-1)
    act_grad = torch.cat([dy[:5] @ w_out[1], dy[5:21] @ w_out[2], dy[21:] @ w_out[3]])
    sig = torch.sigmoid(g)
    ref = torch.cat([act_grad * u * sig * (1 + g * (1 - sig)), act_grad * g * sig], dim=-1)
    for path, dh in got.items():
        assert_close(dh, ref, atol=1e-4, rtol=1e-4, msg=f"dh {path}: ")


@pytest.mark.parametrize(
    ("epilogue", "transpose", "scatter"),
    [
        ("plain", False, True),
        ("plain", True, False),
        ("glu", False, False),
        ("glu_bwd", True, False),
    ],
)
def test_persistent_grid_equals_one_program_per_tile(epilogue, transpose, scatter, monkeypatch):
    # the same tiles walked by 3 looping programs (the interpreter's persistent grid) or one
    # program each: bit-identical outputs; experts of 0, 5, 16, 23 rows, 16-row tiles
    set_kernel_options(monkeypatch, tma_min_pairs=0)
    device = _device()
    _, offsets, pairs = _straddling_experts(device)
    x = torch.randn(pairs, 32, device=device)
    w = (
        torch.randn(4, 32, 48, device=device)
        if transpose
        else torch.randn(4, 48, 32, device=device)
    )
    h = torch.randn(pairs, 96, device=device) if epilogue == "glu_bwd" else None
    dst = torch.randperm(pairs, device=device, dtype=torch.int32) if scatter else None
    key = kernels.config_key(epilogue, transpose)
    got = []
    for persistent in (0, 1):
        set_kernel_override(monkeypatch, key, {"PERSISTENT": persistent})
        with poison_allocations():
            y, h_out = kernels.gather_gemm_scatter(
                x, w, offsets, None, 1, dst, pairs, transpose_weight=transpose, allow_gemv=False,
                epilogue=epilogue, h=h, save_h=epilogue == "glu",
            )  # fmt: skip
        got.append((y, h_out))
    assert torch.equal(got[0][0], got[1][0])
    if epilogue == "glu":
        assert torch.equal(got[0][1], got[1][1])


@pytest.mark.parametrize("sorted_rows", [True, False])
def test_persistent_weight_gradient_equals_one_program_per_tile(sorted_rows, monkeypatch):
    # dW = dy^T x per expert, tiles walked by 3 looping programs or one program each: identical;
    # sorted operands (TMA row blocks + masked tail) or gathered rows; experts of 0, 5, 16, 23
    set_kernel_options(monkeypatch, tma_min_pairs=0)
    device = _device()
    _, offsets, pairs = _straddling_experts(device)
    x = torch.randn(pairs, 40, device=device)
    dy = torch.randn(pairs, 24, device=device)
    src = None if sorted_rows else torch.randperm(pairs, device=device, dtype=torch.int32)
    got = []
    for persistent in (0, 1):
        set_kernel_override(monkeypatch, "xty", {"PERSISTENT": persistent})
        with poison_allocations():
            got.append(kernels.grouped_xty(x, dy, offsets, src, 1, src, torch.Size([4, 24, 40]),
                                           pairs))  # fmt: skip
    assert torch.equal(got[0], got[1])


def test_swiglu_backward_matches_autograd():
    # the elementwise dh pass against autograd of silu(g) * u, odd sizes, float32 and float16
    from jetmoe_model.ops.expert_mlp import triton as mlp_kernels

    device = _device()
    for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 2e-3)):
        h = torch.randn(7, 2 * 37, device=device, dtype=dtype)
        d_act = torch.randn(7, 37, device=device, dtype=dtype)
        h_req = h.float().requires_grad_()
        g, u = h_req.chunk(2, dim=-1)
        (torch.nn.functional.silu(g) * u).backward(d_act.float())
        with poison_allocations():
            got = mlp_kernels.swiglu_backward(d_act, h)
        assert got.dtype == dtype
        assert h_req.grad is not None
        assert_close(got.float(), h_req.grad, atol=tol, rtol=tol, msg=f"{dtype}: ")


def test_fused_route_layer_returns_the_routing_and_differentiates_through_logits():
    # route.logits is the router's output (gradient from the layer node and from aux losses)
    device = _device()
    cfg = JetMoEConfig(**{**TINY, "expert_backend": "triton"})
    layer = randomize_(JetMoEMoE(cfg)).to(device)
    x = torch.randn(1, 9, TINY["hidden_size"], device=device)
    out, route = layer(x)
    assert route.routing.pair_position is not None
    assert route.logits.requires_grad and route.gates.grad_fn is None
    ref_layer = randomize_(JetMoEMoE(JetMoEConfig(**{**TINY, "expert_backend": "reference"})))
    ref_out, ref_route = ref_layer.to(device)(x)
    assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    assert torch.equal(route.expert_index, ref_route.expert_index)
    assert_close(route.gates, ref_route.gates)
    # z-loss through route.logits plus the layer output: the router gets both gradients
    for r, o in ((route, out), (ref_route, ref_out)):
        loss = o.square().sum() + torch.logsumexp(r.logits.float(), -1).square().mean()
        loss.backward()
    # gradients of size ~1e2 summed in another order (Triton's interpreter runs on NumPy): the
    # rounding error scales with the largest entry, so small entries get an absolute slack of
    # 1e-5 of it (a fixed 1e-4 failed for one entry of 0.03 in one draw of 128)
    grad, ref_grad = layer.router.layer.weight.grad, ref_layer.router.layer.weight.grad
    assert grad is not None and ref_grad is not None
    scale = ref_grad.abs().max().item()
    assert_close(grad, ref_grad, atol=max(1e-4, 1e-5 * scale), rtol=1e-3)
