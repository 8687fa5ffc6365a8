from __future__ import annotations

import pytest
import torch

from tensor_utils import dispatch
from tensor_utils.dispatch import dispatched, select_backend


def ref(x, scale=1.0):
    return ("reference", x * scale)


def fast(x, scale=1.0):
    return ("triton", x * scale)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv("TENSOR_UTILS_BACKEND", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def test_cpu_tensors_use_reference():
    op = dispatched("op", reference=ref, triton=fast)
    assert op(torch.ones(2))[0] == "reference"
    assert op.__name__ == "op" and op.reference is ref


def test_env_override_to_reference(monkeypatch):
    monkeypatch.setenv("TENSOR_UTILS_BACKEND", "reference")
    assert select_backend([torch.ones(1)]) == "reference"


def test_forcing_triton_on_cpu_needs_interpreter(monkeypatch):
    op = dispatched("op", reference=ref, triton=fast)
    if not dispatch.triton_available():
        pytest.skip("triton not installed")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        op(torch.ones(2), backend="triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert op(torch.ones(2), backend="triton")[0] == "triton"
    monkeypatch.setenv("TENSOR_UTILS_BACKEND", "triton")
    assert op(torch.ones(2), scale=2.0)[1].sum() == 4


def test_unknown_backend_is_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        select_backend([], "cuda")
    monkeypatch.setenv("TENSOR_UTILS_BACKEND", "fast")
    with pytest.raises(ValueError, match="TENSOR_UTILS_BACKEND"):
        select_backend([])


def test_lazy_string_target_is_imported_on_use(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(dispatch, "triton_available", lambda: True)
    op = dispatched("op", reference=ref, triton="math:fabs")
    assert op(-3.0, backend="triton") == 3.0  # no tensors: nothing blocks the forced backend


def test_triton_missing_gives_clear_error(monkeypatch):
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)
    with pytest.raises(RuntimeError, match="not installed"):
        select_backend([torch.ones(1)], "triton")


def test_op_without_kernel(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(dispatch, "triton_available", lambda: True)
    op = dispatched("op", reference=ref)
    with pytest.raises(RuntimeError, match="no Triton implementation"):
        op(torch.ones(1), backend="triton")


@pytest.mark.gpu
def test_cuda_tensors_pick_triton():
    assert select_backend([torch.ones(1, device="cuda")]) == (
        "triton" if dispatch.triton_available() else "reference"
    )
    assert select_backend([torch.ones(1, device="cuda"), torch.ones(1)]) == "reference"
