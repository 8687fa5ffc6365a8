"""CUDA checks: bf16 kernels against the fp32 loop, the model on the GPU, and no host sync in
the routing + grouped expert hot path."""

from __future__ import annotations

import pytest
import torch
from jetmoe_model import JetMoEConfig, JetMoEForCausalLM
from jetmoe_model.modeling import JetMoEMoE
from jetmoe_model.ops.expert_mlp import expert_mlp
from jetmoe_model.ops.experts import expert_linear, naive
from jetmoe_model.ops.options import kernel_options
from jetmoe_model.routing import top_k_route
from jetmoe_testlib import (
    TINY,
    randomize_,
    route_node_path,
    set_kernel_options,
    transformers_twin,
)

from tensor_utils_dev.testing import assert_close, poison_allocations

pytestmark = pytest.mark.gpu


@pytest.mark.triton
@pytest.mark.parametrize("tokens", [1, 5, 333, 2048])
@pytest.mark.parametrize("input_order", naive.INPUT_ORDERS)
def test_bf16_kernels_against_fp32_loop(tokens, input_order):
    torch.manual_seed(tokens)
    experts, top_k, n_in, n_out = 8, 2, 264, 392
    logits = torch.randn(tokens, experts, device="cuda")
    logits[:, 0] += 2.0  # skewed, expert 7 often empty at small sizes
    route = top_k_route(logits, top_k, torch.bfloat16).routing
    rows = tokens if input_order == "token" else tokens * top_k
    x = torch.randn(rows, n_in, device="cuda", dtype=torch.bfloat16)
    w = (torch.randn(experts, n_out, n_in, device="cuda") / n_in**0.5).bfloat16()
    g = torch.randn(tokens * top_k, n_out, device="cuda", dtype=torch.bfloat16)
    for output_order in naive.OUTPUT_ORDERS:
        kw = dict(input_order=input_order, output_order=output_order)
        x32, w32 = x.float().requires_grad_(), w.float().requires_grad_()
        ref = expert_linear(
            x32, w32, route.sorted_pair, route.expert_offsets, backend="reference", **kw
        )
        dx_ref, dw_ref = torch.autograd.grad(ref, (x32, w32), g.float())
        xb, wb = x.clone().requires_grad_(), w.clone().requires_grad_()
        with poison_allocations():
            y = expert_linear(
                xb, wb, route.sorted_pair, route.expert_offsets, backend="triton", **kw
            )
            dx, dw = torch.autograd.grad(y, (xb, wb), g)
        assert_close(y, ref, dtype=torch.bfloat16)
        assert_close(dx, dx_ref, dtype=torch.bfloat16, atol=3e-2, rtol=2e-2)
        # dW sums over up to `tokens` rows: scale the absolute tolerance with the sum's size
        assert_close(
            dw,
            dw_ref,
            dtype=torch.bfloat16,
            atol=2e-2 * max(1.0, (tokens / 64) ** 0.5),
            rtol=2e-2,
        )


@pytest.mark.triton
@pytest.mark.parametrize("tokens", [5, 4099])  # small and large tile configs
@pytest.mark.parametrize(
    ("d", "f", "tma"), [(264, 200, True), (264, 200, False), (130, 75, True)]
)  # TMA descriptors, pointer loads forced, pointer loads because rows are not 16-byte aligned
def test_bf16_fused_swiglu_mlp_against_fp32_loop(tokens, d, f, tma, monkeypatch):
    set_kernel_options(monkeypatch, use_tma=tma, tma_min_pairs=0)  # TMA at test sizes too
    torch.manual_seed(tokens + d)
    experts, top_k = 8, 2
    logits = torch.randn(tokens, experts, device="cuda")
    logits[:, 0] += 2.0  # skewed: some experts often empty at small sizes
    route = top_k_route(logits, top_k, torch.bfloat16).routing
    x = torch.randn(tokens, d, device="cuda", dtype=torch.bfloat16)
    w_in = (torch.randn(experts, 2 * f, d, device="cuda") / d**0.5).bfloat16()
    w_out = (torch.randn(experts, d, f, device="cuda") / f**0.5).bfloat16()
    g = torch.randn(tokens * top_k, d, device="cuda", dtype=torch.bfloat16)
    args = (route.sorted_pair, route.expert_offsets)
    ref_in = [t.float().requires_grad_() for t in (x, w_in, w_out)]
    ref = expert_mlp(*ref_in, *args, backend="reference")
    ref_grads = torch.autograd.grad(ref, ref_in, g.float())
    ins = [t.clone().requires_grad_() for t in (x, w_in, w_out)]
    with poison_allocations():
        y = expert_mlp(*ins, *args, backend="triton")
        grads = torch.autograd.grad(y, ins, g)
    assert_close(y, ref, dtype=torch.bfloat16, atol=2e-2, rtol=2e-2)
    # dW sums dh x over an expert's rows, and dh is rounded to bf16 once (as autograd's bf16
    # SwiGLU backward rounds it): the absolute error grows like sqrt(rows) * |dh x|, so the
    # elementwise bound scales with sqrt(rows per expert) and the norm error stays ~bf16
    rows = max(1.0, tokens * top_k / experts)
    for name, got, want in zip(("dx", "dw_in", "dw_out"), grads, ref_grads, strict=True):
        scale = rows**0.5 if name != "dx" else 1.0
        assert_close(got, want, dtype=torch.bfloat16, atol=4e-2 * scale, rtol=3e-2, msg=name)
        rel = (got.float() - want).norm() / want.norm().clamp_min(1e-12)
        assert rel < 1e-2, f"{name}: relative error {rel:.2e}"


def tie_free_router_(layer, x):
    """Router logits = x[:, e] exactly, with x's first E columns a per-token permutation of
    0, 0.25, ..., (E-1)/4 (exact in bf16): no two logits of a token tie, so every backend picks
    the same experts (bf16 logits of a random router tie often, and ties may break differently)."""
    experts = layer.router.layer.weight.shape[0]
    with torch.no_grad():
        layer.router.layer.weight.zero_()
        layer.router.layer.weight[:, :experts] = torch.eye(experts)
        perm = torch.rand(x.shape[0], experts, device=x.device).argsort(-1)
        x[:, :experts] = (perm * 0.25).to(x.dtype)


def check_bf16_layer_gradients(tokens, device, monkeypatch, fuse_route):
    cfg = JetMoEConfig(**{**TINY, "hidden_size": 256, "intermediate_size": 192,
                          "num_local_experts": 8})  # fmt: skip
    torch.manual_seed(tokens)
    layer = randomize_(JetMoEMoE(cfg), scale=0.05).to(device).bfloat16()
    route_node_path()(layer, not fuse_route)  # False: the two-node path (benchmarks/)
    x = torch.randn(tokens, 256, device=device, dtype=torch.bfloat16)
    tie_free_router_(layer, x)
    x = x.view(1, tokens, 256).requires_grad_()
    g = torch.randn(1, tokens, 256, device=device, dtype=torch.bfloat16)
    results = {}
    for backend in ("reference", "triton"):
        layer.input_linear.config.expert_backend = backend
        with poison_allocations():
            out, route = layer(x)
            grads = torch.autograd.grad(out, [x, *layer.parameters()], g)
        results[backend] = (route.expert_index, out, *grads)
    assert torch.equal(results["triton"][0], results["reference"][0])
    names = ["out", "x", *(n for n, _ in layer.named_parameters())]
    for name, got, want in zip(names, results["triton"][1:], results["reference"][1:],
                               strict=True):  # fmt: skip
        rel = (got.float() - want.float()).norm() / want.float().norm().clamp_min(1e-12)
        assert rel < 2e-2, f"{name}: relative error {rel:.2e}"


@pytest.mark.triton
@pytest.mark.parametrize("fuse_route", [True, False])
def test_bf16_layer_gradients_above_the_large_tile_threshold(fuse_route, monkeypatch):
    # 2,100 tokens x top-2 = 4,200 pairs: the large tiles, TMA, x gathered to sorted order in
    # the forward, dy written through pair_position, the routing's backward (fused into the
    # combine's or its own node); every gradient against the loop backend in bf16 on the same
    # routing, by relative norm error
    opts = kernel_options()
    assert max(opts.gather_x_min_pairs, opts.tma_min_pairs) < 2100 * 2
    check_bf16_layer_gradients(2100, "cuda", monkeypatch, fuse_route)


@pytest.mark.triton
@pytest.mark.parametrize("tokens", [1, 4, 16, 32])
def test_small_batch_layer_matches_reference_and_captures_in_a_graph(tokens):
    cfg = JetMoEConfig(**{**TINY, "hidden_size": 256, "intermediate_size": 192})
    layer = randomize_(JetMoEMoE(cfg), scale=0.05).cuda().bfloat16()
    x = torch.randn(1, tokens, 256, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        layer.input_linear.config.expert_backend = "reference"
        ref, ref_route = layer(x)
        layer.input_linear.config.expert_backend = "triton"
        out, route = layer(x)
        assert route.routing.pair_position is not None  # the Triton routing ran
        assert_close(out, ref, dtype=torch.bfloat16, atol=2e-2, rtol=2e-2)
        assert torch.equal(
            route.expert_index.sort(-1).values, ref_route.expert_index.sort(-1).values
        )
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured, _ = layer(x)
        x.copy_(torch.randn_like(x))
        graph.replay()
        fresh, _ = layer(x)
        assert torch.equal(captured, fresh)


@pytest.mark.triton
@pytest.mark.parametrize("backend", ["triton", "grouped_mm"])
def test_no_host_sync_in_the_moe_hot_path(backend):
    cfg = JetMoEConfig(
        **{
            **TINY,
            "hidden_size": 64,
            "intermediate_size": 64,
            "expert_backend": backend,
        }
    )
    layer = randomize_(JetMoEMoE(cfg)).cuda().bfloat16()
    x = torch.randn(4, 33, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    layer(x)[0].sum().backward()  # warm-up (compiles kernels, allocator)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out, _ = layer(x)
        torch.autograd.grad(out, [x, *layer.parameters()], torch.ones_like(out))
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("backend", ["triton", "grouped_mm", "reference"])
def test_model_on_cuda_matches_transformers_float32(backend):
    torch.manual_seed(0)
    ours = randomize_(JetMoEForCausalLM(JetMoEConfig(**{**TINY, "expert_backend": backend})))
    ours.to("cuda").eval()  # pyright: ignore[reportArgumentType]  (transformers' to() stub)
    theirs = transformers_twin(ours)
    theirs.to("cuda")  # pyright: ignore[reportArgumentType]  (transformers' to() stub)
    x = torch.randint(0, TINY["vocab_size"], (2, 37), device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(ours(x).logits, theirs(x).logits, atol=1e-4, rtol=1e-4)
    prompt = x[:, :6]
    kw = dict(
        max_new_tokens=12,
        do_sample=False,
        attention_mask=torch.ones_like(prompt),
        pad_token_id=0,
    )
    mine = ours.generate(prompt, **kw)  # pyright: ignore[reportAttributeAccessIssue]  (generate()'s self-type in transformers)
    reference = theirs.generate(prompt, **kw)  # pyright: ignore[reportAttributeAccessIssue]  (generate()'s self-type in transformers)
    assert mine.tolist() == reference.tolist()


def test_bf16_training_step_on_cuda():
    torch.manual_seed(0)
    model = JetMoEForCausalLM(JetMoEConfig(**{**TINY, "expert_backend": "auto"}))
    model.to("cuda", torch.bfloat16).train()  # pyright: ignore[reportArgumentType]  (to() stub)
    model.gradient_checkpointing_enable()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randint(0, TINY["vocab_size"], (4, 64), device="cuda")
    first: float | None = None
    last = float("inf")
    for _ in range(10):
        loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
        last = loss.item()
    assert first is not None and last < first
