"""The C kernels behind the ``native`` backends of ``gather_cols``, ``threshold_cols`` and
``gather_rows``: equal to
the reference on odd sizes, float32 and bfloat16, batch 1-16, empty / full / repeated / unsorted
selections, thresholds keeping nothing or everything, NaN inputs, strided weight rows and several
threads, with NaN-poisoned allocations; out-of-range indices are one line; and without a C
compiler the backends warn once and run the plain PyTorch path."""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch
from dejavu_sparse.fallback import set_dense_fallback
from dejavu_sparse.ops import _compile, gather_cols, gather_rows, threshold_cols
from dejavu_sparse.ops.gather_cols import fallback_key, native
from dejavu_sparse.ops.gather_rows import native as rows_native
from dejavu_sparse.ops.gather_rows.cases import selections
from dejavu_sparse.ops.threshold_cols import native as threshold_native
from hypothesis import given, settings
from hypothesis import strategies as st

from tensor_utils_dev.testing import assert_close, assert_matches_float64, poison_allocations
from tensor_utils_dev.testing.opcheck import check_backend
from tensor_utils_dev.testing.strategies import random_tensor, seeds

needs_kernel = pytest.mark.skipif(not native.available(), reason="no C compiler here")


@contextlib.contextmanager
def no_fallback():
    """The gathered kernel at every density (no dense fallback)."""
    set_dense_fallback("cpu", {1: 1.0})
    try:
        yield
    finally:
        set_dense_fallback("cpu", None)


@pytest.fixture
def gathered():
    with no_fallback():
        yield


def test_native_backend_on_the_op_cases(gathered):
    """The ops' own cases (float32 and float16, which hands off to the PyTorch backend)."""
    check_backend(gather_cols, "native", max_examples=25, device="cpu")
    check_backend(threshold_cols, "native", max_examples=25, device="cpu")
    check_backend(gather_rows, "native", max_examples=25, device="cpu")


@pytest.mark.parametrize("backend", ["reference", "native", "gathered"])
def test_threshold_must_be_one_number(backend):
    """A per-channel threshold tensor is refused in one line by every backend (the C call
    would otherwise fail deep in ctypes); a one-element tensor is one number."""
    x, wt = torch.randn(2, 8), torch.randn(8, 5)
    with pytest.raises(ValueError, match="threshold must be one number"):
        threshold_cols(x, wt, torch.full((8,), 0.5), backend=backend)
    with pytest.raises(ValueError, match="threshold must be a number"):
        threshold_cols(x, wt, "0.5", backend=backend)  # type: ignore[arg-type]
    out, kept = threshold_cols(x, wt, torch.tensor(0.5), backend=backend)
    expected, expected_kept = threshold_cols(x, wt, 0.5, backend="reference")
    torch.testing.assert_close(out, expected)
    assert int(kept) == int(expected_kept)


@needs_kernel
@settings(max_examples=40, deadline=None)
@given(
    b=st.sampled_from([1, 2, 3, 4, 16]),
    n=st.integers(1, 90),
    kdim=st.sampled_from([1, 7, 63, 64, 65, 130, 4097]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    pad=st.sampled_from([0, 3]),
    seed=seeds(),
    data=st.data(),
)
def test_rows_kernel_matches_reference(b, n, kdim, dtype, pad, seed, data):
    """Odd row lengths (the 64-lane tail), strided rows, repeated and empty selections."""
    idx = data.draw(selections(n))
    if idx.numel() and data.draw(st.booleans()):
        idx = torch.cat((idx, idx.flip(0)))
    x = random_tensor((b, kdim), dtype, seed)
    w = random_tensor((n, kdim + pad), dtype, seed + 1, scale=0.2)[:, :kdim]
    with no_fallback(), poison_allocations():
        out = gather_rows(x, w, idx, backend="native")
    assert out.dtype == dtype and out.shape == (b, idx.numel())
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    assert_close(out, gather_rows(x, w, idx, backend="reference"), atol=tol, rtol=tol)


@pytest.mark.parametrize("density", [1.0, 0.0])
def test_threshold_gathered_backend_on_the_op_cases(density):
    """The plain PyTorch backend, gathered (fallback density 1) and masked dense (0)."""
    set_dense_fallback("cpu", {1: density})
    try:
        check_backend(threshold_cols, "gathered", max_examples=20, device="cpu")
    finally:
        set_dense_fallback("cpu", None)


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 16), n=st.integers(1, 40), m=st.integers(1, 40), seed=seeds(),
       t=st.sampled_from([-1.0, 0.0, 0.5, 10.0]))  # fmt: skip
def test_threshold_reference_matches_float64(b, n, m, seed, t):
    x = random_tensor((b, n), torch.float32, seed)
    wt = random_tensor((n, m), torch.float32, seed + 1)

    def f64(x, wt):
        return torch.where(x.abs() > t, x, 0) @ wt

    out, kept = threshold_cols(x, wt, t, backend="reference")
    assert_matches_float64(out, f64, x, wt, roundings=8 * n)
    assert int(kept) == int((x.abs() > t).any(0).sum())


@needs_kernel
@settings(max_examples=40, deadline=None)
@given(
    b=st.sampled_from([1, 2, 3, 4, 16]),
    n=st.integers(1, 90),
    m=st.integers(1, 150),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    pad=st.sampled_from([0, 3]),
    seed=seeds(),
    data=st.data(),
)
def test_kernel_matches_reference(b, n, m, dtype, pad, seed, data):
    idx = data.draw(selections(n))
    if idx.numel() and data.draw(st.booleans()):  # repeated rows
        idx = torch.cat((idx, idx.flip(0)))
    x = random_tensor((b, idx.numel()), dtype, seed)
    wt = random_tensor((n, m + pad), dtype, seed + 1, scale=0.2)[:, :m]  # rows strided by m+pad
    with no_fallback(), poison_allocations():
        out = gather_cols(x, wt, idx, backend="native")
    assert out.dtype == dtype and out.shape == (b, m)
    expected = gather_cols(x, wt, idx, backend="reference")
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert_close(out, expected, atol=tol, rtol=tol)


@needs_kernel
@settings(max_examples=40, deadline=None)
@given(
    b=st.sampled_from([1, 2, 3, 4, 16]),
    n=st.integers(1, 90),
    m=st.integers(1, 150),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    pad=st.sampled_from([0, 3]),
    t=st.sampled_from([-1.0, 0.0, 0.4, 1.0, 100.0]),
    density=st.sampled_from([1.0, 0.5, 0.0]),
    nan=st.booleans(),
    seed=seeds(),
)
def test_threshold_kernel_matches_reference(b, n, m, dtype, pad, t, density, nan, seed):
    """Gathered and in-order (above the fallback density) paths of the one-call kernel."""
    x = random_tensor((b, n + pad), dtype, seed)[:, :n]  # batch rows strided by n+pad
    if nan:
        x[0, n // 2] = float("nan")  # dropped, as by the reference's where(|x| > t)
    wt = random_tensor((n, m + pad), dtype, seed + 1, scale=0.2)[:, :m]
    set_dense_fallback("cpu", {1: density})
    try:
        with poison_allocations():
            out, kept = threshold_cols(x, wt, t, backend="native")
    finally:
        set_dense_fallback("cpu", None)
    expected, expected_kept = threshold_cols(x, wt, t, backend="reference")
    assert out.dtype == dtype and out.shape == (b, m) and int(kept) == int(expected_kept)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert_close(out, expected, atol=tol, rtol=tol)


@needs_kernel
def test_kernel_threads_and_dense_fallback():
    """Sizes large enough for two threads (the output columns split), the dense fallback above
    its density, and a selection left of it: all equal the reference."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        g = torch.Generator().manual_seed(0)
        wt = torch.randn(1501, 1001, generator=g)
        for sel in (1500, 1501, 700):
            idx = torch.randperm(1501, generator=g)[:sel]
            x = torch.randn(1, sel, generator=g)
            with poison_allocations():
                out = gather_cols(x, wt, idx, backend="native")
                rows = gather_rows(wt[:1].clone(), wt, idx, backend="native")
            assert_close(out, gather_cols(x, wt, idx, backend="reference"), atol=1e-4, rtol=1e-4)
            expected = gather_rows(wt[:1].clone(), wt, idx, backend="reference")
            assert_close(rows, expected, atol=1e-4, rtol=1e-4)
    finally:
        torch.set_num_threads(before)


@needs_kernel
def test_out_of_range_index_is_one_line(gathered):
    for bad in ([0, 5], [-1]):
        with pytest.raises(ValueError, match=r"outside \[0, 5\)") as err:
            gather_cols(torch.ones(1, len(bad)), torch.ones(5, 3), torch.tensor(bad),
                        backend="native")  # fmt: skip
        assert "\n" not in str(err.value)
        with pytest.raises(ValueError, match=r"outside \[0, 5\)") as err:
            gather_rows(torch.ones(1, 3), torch.ones(5, 3), torch.tensor(bad), backend="native")
        assert "\n" not in str(err.value)


def test_auto_picks_native_on_the_cpu():
    assert gather_cols.select("cpu", torch.float32) == "native"
    assert gather_cols.select("cpu", torch.bfloat16) == "native"
    key = fallback_key(torch.ones(1, 4), torch.ones(4, 4))
    assert key == ("cols_native" if native.available() else "cols")
    assert fallback_key(torch.ones(1, 4).half(), torch.ones(4, 4).half()) == "cols"
    bf16 = fallback_key(torch.ones(1, 4).bfloat16(), torch.ones(4, 4).bfloat16())
    assert bf16 == ("cols_native_bf16" if native.available() else "cols")


def test_without_a_compiler_warns_once_and_still_computes(monkeypatch, tmp_path):
    """No compiler on PATH and none in $CC: one RuntimeWarning, then the plain PyTorch path."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv(_compile.ENV_CACHE, str(tmp_path / "cache"))
    _compile.forget()
    native.kernel.cache_clear()
    threshold_native.kernel.cache_clear()
    rows_native.kernel.cache_clear()
    try:
        x, wt, idx = torch.randn(1, 3), torch.randn(7, 5), torch.tensor([6, 0, 2])
        with pytest.warns(RuntimeWarning, match="could not be built"):
            out = gather_cols(x, wt, idx, backend="native")
        assert_close(out, gather_cols(x, wt, idx, backend="reference"))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no second warning, from either op
            gather_cols(x, wt, idx, backend="native")
            out, kept = threshold_cols(wt.t(), wt, 0.5, backend="native")
            rows = gather_rows(wt[:1, :5], wt, idx, backend="native")
        assert_close(rows, gather_rows(wt[:1, :5], wt, idx, backend="reference"))
        expected, expected_kept = threshold_cols(wt.t(), wt, 0.5, backend="reference")
        assert_close(out, expected)
        assert int(kept) == int(expected_kept)
        assert not native.available()
        assert not list((tmp_path / "cache").glob("*.tmp"))  # no half-written library left
    finally:
        monkeypatch.undo()
        _compile.forget()
        native.kernel.cache_clear()
        threshold_native.kernel.cache_clear()
        rows_native.kernel.cache_clear()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("b", [1, 4])
def test_threshold_cols_on_cuda(dtype, b):
    """On CUDA ``auto`` runs the ``gathered`` backend (the Triton ``gather_cols`` kernel)."""
    assert threshold_cols.select("cuda", dtype) == "gathered"
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(b, 4096, device="cuda", generator=g).to(dtype)
    wt = (torch.randn(4096, 1000, device="cuda", generator=g) * 0.02).to(dtype)
    for density in (1.0, 0.0):  # gathered, and the masked dense fallback
        set_dense_fallback("cuda", {1: density})
        try:
            with poison_allocations():
                out, kept = threshold_cols(x, wt, 0.7)
        finally:
            set_dense_fallback("cuda", None)
        expected, expected_kept = threshold_cols(x, wt, 0.7, backend="reference")
        assert int(kept) == int(expected_kept)
        assert_close(out, expected, atol=2e-2, rtol=2e-2)


def test_library_hash_covers_included_sources():
    """threshold_cols' kernel includes gather_cols' source: a change there must rebuild it."""
    text = _compile._source_text(threshold_native.SOURCE)
    assert native.SOURCE.read_bytes() in text
