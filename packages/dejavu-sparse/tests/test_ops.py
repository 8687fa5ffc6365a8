"""The sparse GEMV/GEMM ops: reference vs float64, every backend vs the reference (NaN-poisoned
outputs, odd sizes, empty and full selections, batch 1-16), bad input, sm_90 compile."""

from __future__ import annotations

import pytest
import torch
from dejavu_sparse.fallback import dense_fallback_density, set_dense_fallback, use_dense
from dejavu_sparse.ops import gather_blocks, gather_cols, gather_rows
from dejavu_sparse.ops.gather_rows.cases import selections
from hypothesis import given, settings
from hypothesis import strategies as st

from tensor_utils_dev.testing import assert_close, assert_matches_float64, poison_allocations
from tensor_utils_dev.testing.opcheck import check_backend
from tensor_utils_dev.testing.strategies import random_tensor, seeds


def rows_f64(x, w, idx):
    return x @ w[idx.long()].t()


def cols_f64(x, wt, idx):
    return x @ wt[idx.long()]


@settings(max_examples=30)
@given(
    b=st.integers(1, 16), n=st.integers(1, 40), k=st.integers(1, 40), seed=seeds(), data=st.data()
)
def test_references_match_float64(b, n, k, seed, data):
    idx = data.draw(selections(n))
    x = random_tensor((b, k), torch.float32, seed)
    w = random_tensor((n, k), torch.float32, seed + 1)
    assert_matches_float64(gather_rows(x, w, idx, backend="reference"), rows_f64, x, w, idx,
                           roundings=8 * k)  # fmt: skip
    xs = random_tensor((b, idx.numel()), torch.float32, seed + 2)
    wt = random_tensor((n, k), torch.float32, seed + 3)
    assert_matches_float64(gather_cols(xs, wt, idx, backend="reference"), cols_f64, xs, wt, idx,
                           roundings=8 * max(1, idx.numel()))  # fmt: skip


@pytest.mark.parametrize("op", [gather_rows, gather_cols], ids=lambda o: o.short_name)
def test_chunked_backend_matches_reference(op):
    check_backend(op, "chunked", max_examples=25, device="cpu")


def test_inplace_rows_backend_matches_reference():
    """The in-place batch-1 path (and its hand-offs to ``chunked``) on the op's cases."""
    set_dense_fallback("cpu", {1: 1.0})  # the in-place product itself at every density
    try:
        check_backend(gather_rows, "inplace", max_examples=30, device="cpu")
    finally:
        set_dense_fallback("cpu", None)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 300), k=st.integers(1, 70), seed=seeds(), data=st.data())
def test_inplace_rows_batch1_float32(n, k, seed, data):
    """Batch-1 float32 (what the in-place kernel serves): unsorted, repeated, empty and full
    selections equal the reference, gathered and dense-fallback paths alike."""
    idx = data.draw(selections(n))
    if idx.numel() and data.draw(st.booleans()):  # repeated rows
        idx = torch.cat((idx, idx.flip(0)))
    x = random_tensor((1, k), torch.float32, seed)
    w = random_tensor((n, k), torch.float32, seed + 1)
    expected = gather_rows(x, w, idx, backend="reference")
    for density in (1.0, 0.0):
        set_dense_fallback("cpu:rows_inplace", {1: density})
        try:
            with poison_allocations():
                out = gather_rows(x, w, idx, backend="inplace")
        finally:
            set_dense_fallback("cpu", None)
        assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("density", [0.0, 1.0])
@pytest.mark.parametrize("op", [gather_rows, gather_cols], ids=lambda o: o.short_name)
def test_chunked_gathered_and_dense_paths(op, density):
    """Force the gathered path (fallback density 1) and the dense path (0) on sizes that span
    several chunks; both equal the reference, selected rows only."""
    set_dense_fallback("cpu", {1: density})
    try:
        for b, n, k, sel in ((1, 3001, 700, 1777), (5, 1000, 333, 1), (16, 257, 65, 257)):
            idx = torch.randperm(n, generator=torch.Generator().manual_seed(n))[:sel]
            if op is gather_rows:
                args = (
                    random_tensor((b, k), torch.float32, 1),
                    random_tensor((n, k), torch.float32, 2),
                    idx,
                )
            else:
                args = (
                    random_tensor((b, sel), torch.float32, 1),
                    random_tensor((n, k), torch.float32, 2),
                    idx,
                )
            with poison_allocations():
                out = op(*args, backend="chunked")
            assert_close(out, op(*args, backend="reference"), atol=1e-4, rtol=1e-4)
    finally:
        set_dense_fallback("cpu", None)


@pytest.mark.triton
@pytest.mark.parametrize("op", [gather_rows, gather_cols], ids=lambda o: o.short_name)
def test_triton_backend_matches_reference(op):
    check_backend(op, "triton", max_examples=12)


@pytest.mark.triton
@pytest.mark.parametrize(
    "b,n,k,sel", [(1, 67, 129, 0), (3, 67, 129, 67), (16, 130, 33, 65), (17, 5, 7, 3)]
)
def test_triton_odd_sizes_empty_full(device, b, n, k, sel):
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(k))[:sel].to(device)
    x = random_tensor((b, k), torch.float16, 1, device=device)
    w = random_tensor((n, k), torch.float16, 2, scale=0.1, device=device)
    with poison_allocations():
        out = gather_rows(x, w, idx, backend="triton")
    assert out.shape == (b, sel)
    assert_close(out, gather_rows(x, w, idx, backend="reference"))
    xs = random_tensor((b, sel), torch.float16, 3, device=device)
    with poison_allocations():
        out = gather_cols(xs, w, idx, backend="triton")
    assert_close(out, gather_cols(xs, w, idx, backend="reference"))
    if sel == 0:
        assert torch.count_nonzero(out) == 0


_AOT_SCRIPT = """
from tensor_utils_dev.aot import check_fits_h100, compile_for_h100, launches
from dejavu_sparse.ops import gather_cols, gather_rows
found = launches(gather_rows) + launches(gather_cols)
assert len(found) == 12, len(found)
for _, launch in found:
    c = compile_for_h100(launch)
    check_fits_h100(c)
    print(c.kernel, c.label, c.shared_bytes)
"""


def test_aot_launches_compile_for_h100():
    """Every launch configuration compiles for sm_90 within the H100's shared memory (in a
    subprocess: under TRITON_INTERPRET=1 the kernels are interpreted functions)."""
    pytest.importorskip("triton")
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", _AOT_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(res.stdout.strip().splitlines()) == 12


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: gather_rows(torch.ones(3), torch.ones(2, 3), torch.tensor([0])), "must be 2-D"),
        (lambda: gather_rows(torch.ones(1, 3), torch.ones(2, 4), torch.tensor([0])), "features"),
        (
            lambda: gather_rows(torch.ones(1, 3), torch.ones(2, 3), torch.tensor([0.0])),
            "int32/int64",
        ),
        (lambda: gather_cols(torch.ones(1, 2), torch.ones(4, 3), torch.tensor([0])), "columns"),
        (
            lambda: gather_cols(torch.ones(1, 1).half(), torch.ones(4, 3), torch.tensor([0])),
            "is torch",
        ),
    ],
)
def test_bad_input_is_one_line(call, message):
    for backend in ("reference", "chunked"):
        with pytest.raises(ValueError, match=message) as err:
            call.__call__() if backend == "reference" else call()
        assert "\n" not in str(err.value)


def test_fallback_table():
    assert dense_fallback_density("cpu", 16, "cols") <= dense_fallback_density("cpu", 1, "cols")
    assert dense_fallback_density("cuda", 16) <= dense_fallback_density("cuda", 1)
    assert use_dense("cpu", 1, 100, 100, "rows") and not use_dense("cpu", 1, 10, 100, "rows")
    set_dense_fallback("cpu", {1: 1.0})
    assert not use_dense("cpu", 16, 99, 100, "cols")
    set_dense_fallback("cpu", None)
    assert dense_fallback_density("cpu", 1, "rows") == 0.40
    with pytest.raises(ValueError):
        set_dense_fallback("cpu", {1: 1.5})


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("b", [1, 4, 16])
def test_gpu_llama8b_shapes(dtype, b):
    set_dense_fallback("cuda", {1: 1.0})
    try:
        n, k = 14336, 4096
        idx = torch.randperm(n, device="cuda")[: n // 2]
        x = torch.randn(b, k, device="cuda", dtype=dtype)
        w = torch.randn(n, k, device="cuda", dtype=dtype) * 0.02
        with poison_allocations():
            out = gather_rows(x, w, idx, backend="triton")
        assert_close(out, gather_rows(x, w, idx, backend="reference"))
        xs = torch.randn(b, n // 2, device="cuda", dtype=dtype)
        with poison_allocations():
            out = gather_cols(xs, w, idx, backend="triton")
        assert_close(out, gather_cols(xs, w, idx, backend="reference"), atol=2e-2, rtol=2e-2)
    finally:
        set_dense_fallback("cuda", None)


# -- gathered channel blocks (TEAL's block option) ---------------------------------------------


def blocks_f64(x, wt, keep, block):
    return (x * keep.repeat_interleave(block)[: wt.shape[0]]) @ wt


@settings(max_examples=30)
@given(data=st.data())
def test_blocks_reference_matches_float64(data):
    (x, wt, keep, block), _ = data.draw(gather_blocks.cases())
    x, wt = x.float(), wt.float()
    assert_matches_float64(gather_blocks(x, wt, keep, block, backend="reference"), blocks_f64,
                           x, wt, keep, block, roundings=8 * wt.shape[0])  # fmt: skip


@pytest.mark.parametrize("density", [1.0, 0.0])
@pytest.mark.parametrize("backend", ["runs", "expanded"])
def test_blocks_backends_match_reference(backend, density):
    """Both CPU backends on the op's cases (odd sizes, a short last block, no / every / one
    block kept, batch 1-16), gathered (fallback density 1) and as the masked dense product (0)."""
    set_dense_fallback("cpu", {1: density})
    try:
        check_backend(gather_blocks, backend, max_examples=25, device="cpu")
    finally:
        set_dense_fallback("cpu", None)


@pytest.mark.parametrize("b,n,m,block", [(1, 4096, 96, 16), (1, 1000, 33, 64), (3, 77, 5, 8)])
def test_blocks_runs_ignore_skipped_inputs(b, n, m, block):
    """Skipped blocks are never read: NaN in their inputs and weight rows leaves the result
    finite and equal to the reference on clean data."""
    gen = torch.Generator().manual_seed(n)
    keep = torch.rand(-(-n // block), generator=gen) < 0.5
    x = random_tensor((b, n), torch.float32, 1)
    wt = random_tensor((n, m), torch.float32, 2)
    expected = gather_blocks(x, wt, keep, block, backend="reference")
    skipped = ~keep.repeat_interleave(block)[:n]
    x[:, skipped] = float("nan")
    wt[skipped] = float("nan")
    set_dense_fallback("cpu", {1: 1.0})
    try:
        with poison_allocations():
            out = gather_blocks(x, wt, keep, block, backend="runs")
    finally:
        set_dense_fallback("cpu", None)
    assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_blocks_bad_input_is_one_line():
    x, wt = torch.ones(1, 10), torch.ones(10, 3)
    for call, message in (
        (lambda: gather_blocks(x, wt, torch.ones(2, dtype=torch.bool), 4), "3 blocks"),
        (lambda: gather_blocks(x, wt, torch.ones(3), 4), "bool"),
        (lambda: gather_blocks(x, wt, torch.ones(1, dtype=torch.bool), 0), "block_size"),
        (lambda: gather_blocks(torch.ones(1, 9), wt, torch.ones(3, dtype=torch.bool), 4), "rows"),
    ):
        for backend in ("reference", "runs", "expanded"):
            with pytest.raises(ValueError, match=message) as err:
                call.__call__() if backend == "reference" else call()
            assert "\n" not in str(err.value)


@pytest.mark.triton
@pytest.mark.parametrize("b,n,m,block", [(1, 67, 129, 16), (3, 130, 33, 8), (16, 64, 20, 64)])
def test_blocks_expanded_through_the_triton_kernel(device, b, n, m, block):
    """The CUDA route of the block option: ``expanded`` hands the block-expanded indices to
    ``gather_cols``' Triton kernel (forced here, interpreted on the CPU), NaN-poisoned."""
    from tensor_utils.ops import set_backend_override

    keep = torch.arange(-(-n // block), device=device) % 3 != 1
    x = random_tensor((b, n), torch.float16, 1, device=device)
    wt = random_tensor((n, m), torch.float16, 2, scale=0.1, device=device)
    set_backend_override("triton")  # gather_cols inside `expanded` runs its Triton kernel
    try:
        with poison_allocations():
            out = gather_blocks(x, wt, keep, block, backend="expanded")
    finally:
        set_backend_override(None)
    assert_close(out, gather_blocks(x, wt, keep, block, backend="reference"))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("b", [1, 4, 16])
def test_gpu_blocks_llama8b_shapes(dtype, b):
    """On CUDA the block option runs the gathered-column Triton kernel over block-expanded
    indices (the ``expanded`` backend, chosen by ``auto``)."""
    set_dense_fallback("cuda", {1: 1.0})
    try:
        n, m = 14336, 4096
        keep = torch.rand(n // 16, device="cuda") < 0.5
        x = torch.randn(b, n, device="cuda", dtype=dtype)
        wt = torch.randn(n, m, device="cuda", dtype=dtype) * 0.02
        with poison_allocations():
            out = gather_blocks(x, wt, keep, 16)
        ref = gather_blocks(x, wt, keep, 16, backend="reference")
        assert_close(out, ref, atol=2e-2, rtol=2e-2)
    finally:
        set_dense_fallback("cuda", None)
