"""Per-dtype tolerances and comparison helpers shared by every package's kernel tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float


# Looser than torch.testing's defaults for half types: kernels reorder reductions, and a
# fused kernel rounding once can differ from eager PyTorch rounding at every step.
TOLERANCES: dict[torch.dtype, Tolerance] = {
    torch.float64: Tolerance(atol=1e-10, rtol=1e-8),
    torch.float32: Tolerance(atol=1e-5, rtol=1.3e-5),
    torch.float16: Tolerance(atol=1e-3, rtol=1e-3),
    torch.bfloat16: Tolerance(atol=1e-2, rtol=1.6e-2),
    torch.float8_e4m3fn: Tolerance(atol=6e-2, rtol=1.25e-1),
    torch.float8_e5m2: Tolerance(atol=1.25e-1, rtol=2.5e-1),
}


def tolerance(dtype: torch.dtype) -> Tolerance:
    """Tolerance for comparing results stored in ``dtype`` (exact for integers and bool)."""
    if not dtype.is_floating_point and not dtype.is_complex:
        return Tolerance(atol=0.0, rtol=0.0)
    return TOLERANCES.get(dtype, TOLERANCES[torch.float32])


def ulp(dtype: torch.dtype) -> float:
    """Machine epsilon of a float dtype: one rounding step relative to the value."""
    return torch.finfo(dtype).eps


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    *,
    dtype: torch.dtype | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    msg: str = "",
) -> None:
    """Compare with the tolerance of ``dtype`` (default: ``actual``'s).

    NaN anywhere in ``actual`` where ``expected`` is finite fails: kernels are tested against
    NaN-poisoned output buffers, so a NaN means an element was never written.
    """
    tol = tolerance(dtype or actual.dtype)
    atol = tol.atol if atol is None else atol
    rtol = tol.rtol if rtol is None else rtol
    if actual.shape != expected.shape:
        raise AssertionError(
            f"{msg}shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
        )
    a = (
        actual.detach().to("cpu", torch.float64)
        if actual.is_floating_point()
        else actual.detach().cpu()
    )
    e = (
        expected.detach().to("cpu", torch.float64)
        if expected.is_floating_point()
        else expected.detach().cpu()
    )
    if a.is_floating_point() and e.is_floating_point():
        unwritten = torch.isnan(a) & ~torch.isnan(e)
        if unwritten.any():
            idx = tuple(int(i) for i in unwritten.nonzero()[0])
            raise AssertionError(
                f"{msg}{int(unwritten.sum())} NaN outputs where the reference is finite "
                f"(first at {idx}): element not written, or computed from garbage"
            )
    torch.testing.assert_close(
        a, e.to(a.dtype), atol=atol, rtol=rtol, equal_nan=True, msg=lambda m: msg + m
    )


def assert_matches_float64(
    actual: torch.Tensor,
    reference: Callable[..., torch.Tensor],
    *args,
    dtype: torch.dtype | None = None,
    roundings: float = 1.0,
    **kwargs,
) -> None:
    """Check ``actual`` against ``reference`` evaluated in float64 on float64 copies of the inputs.

    The allowed error is ``roundings`` units of the output dtype's rounding (relative), plus the
    dtype's absolute tolerance for values near zero.
    """

    def up(x):
        return (
            x.detach().to(torch.float64)
            if isinstance(x, torch.Tensor) and x.is_floating_point()
            else x
        )

    expected = reference(*[up(a) for a in args], **{k: up(v) for k, v in kwargs.items()})
    out_dtype = dtype or actual.dtype
    if not out_dtype.is_floating_point:
        assert_close(actual, expected)
        return
    # Half an ulp is the rounding error of a correct result; `roundings` scales that budget.
    rtol = roundings * ulp(out_dtype)
    atol = tolerance(out_dtype).atol if out_dtype in (torch.float16, torch.bfloat16) else rtol
    assert_close(actual, expected, dtype=out_dtype, atol=atol, rtol=rtol)


def nan_like(tensor: torch.Tensor) -> torch.Tensor:
    """An output buffer poisoned with NaN (or the max value for integer dtypes)."""
    if tensor.is_floating_point() or tensor.is_complex():
        return torch.full_like(tensor, float("nan"))
    if tensor.dtype == torch.bool:
        return torch.ones_like(tensor)
    return torch.full_like(tensor, torch.iinfo(tensor.dtype).max)


def poisoned_empty(*shape, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """``torch.empty`` that is filled with NaN instead of whatever memory held."""
    return nan_like(torch.empty(*shape, dtype=dtype, device=device))
