"""The op registry: backend resolution, the process-wide override, torch.library registration."""

from __future__ import annotations

import itertools

import pytest
import torch

from tensor_utils import ops
from tensor_utils.ops import Backend, Op

_ids = itertools.count()


def scale(x: torch.Tensor, s: float = 1.0) -> torch.Tensor:
    """x * s"""
    return x * s


def fast_scale(x, s=1.0):
    return x * s + 1000  # distinguishable from the reference


def scale_into(x: torch.Tensor, out: torch.Tensor, s: float) -> None:
    out.copy_(x * s)


def make(backends=(), **kw) -> Op:
    return Op(f"tu_test::op{next(_ids)}", reference=scale, backends=backends, **kw)


def cpu_backend(name="fast", **kw):
    return Backend(name, fast_scale, device_types=("cpu",), requires=(), **kw)


@pytest.fixture(autouse=True)
def clean_override(monkeypatch):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    ops._reset_override_from_env()
    yield
    ops.set_backend_override(None)
    ops._reset_override_from_env()


def test_auto_picks_first_supporting_backend_else_reference():
    x = torch.ones(3)
    assert make([Backend("triton", fast_scale)])(x, 2.0).tolist() == [2.0] * 3  # cuda-only
    assert make([cpu_backend()])(x, 2.0).tolist() == [1002.0] * 3
    only_fp16 = make([cpu_backend(dtypes={torch.float16})])
    assert only_fp16(x, 2.0).tolist() == [2.0] * 3
    assert only_fp16(x.half(), 2.0).tolist() == [1002.0] * 3


def test_backend_needing_a_missing_module_is_skipped_by_auto_and_refused_when_forced():
    op = make([Backend("fast", fast_scale, device_types=("cpu",), requires=("no_such_mod_x",))])
    assert op(torch.ones(2)).tolist() == [1.0, 1.0]
    with pytest.raises(RuntimeError, match="needs no_such_mod_x"):
        op(torch.ones(2), backend="fast")


def test_forcing_a_cuda_backend_on_cpu_says_how():
    op = make([Backend("triton", fast_scale, requires=())])
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        op(torch.ones(2), backend="triton")


def test_interpreter_allows_forcing_but_auto_stays_on_reference(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    op = make([Backend("triton", fast_scale, requires=())])
    assert op(torch.ones(2)).tolist() == [1.0, 1.0]
    assert op(torch.ones(2), backend="triton").tolist() == [1001.0, 1001.0]


def test_unknown_backend_is_one_line():
    with pytest.raises(ValueError, match=r"unknown backend 'nope' \(choose from auto, reference"):
        make([cpu_backend()])(torch.ones(1), backend="nope")


def test_aliases():
    op = make([cpu_backend()], aliases={"loop": "reference", "quick": "fast"})
    assert op(torch.ones(1), backend="loop").item() == 1.0
    assert op(torch.ones(1), backend="quick").item() == 1001.0


def test_env_override_is_read_once(monkeypatch):
    op = make([cpu_backend()])
    monkeypatch.setenv(ops.ENV_VAR, "reference")
    assert op(torch.ones(1)).item() == 1.0
    monkeypatch.setenv(ops.ENV_VAR, "fast")  # not re-read: the process already resolved it
    assert op(torch.ones(1)).item() == 1.0
    ops._reset_override_from_env()
    assert op(torch.ones(1)).item() == 1001.0


def test_override_naming_a_backend_the_op_lacks_means_reference(monkeypatch):
    monkeypatch.setenv(ops.ENV_VAR, "triton")
    assert make([cpu_backend()])(torch.ones(1)).item() == 1.0


def test_set_backend_override_clears_caches():
    op = make([cpu_backend()])
    assert op(torch.ones(1)).item() == 1001.0
    ops.set_backend_override("reference")
    assert op(torch.ones(1)).item() == 1.0
    ops.set_backend_override(None)
    assert op(torch.ones(1)).item() == 1001.0


def test_resolution_is_cached_per_dtype_and_device():
    op = make([cpu_backend(dtypes={torch.float32})])
    op(torch.ones(1))
    op(torch.ones(1, dtype=torch.float64))
    assert set(op._cache) == {(torch.float32, False, True), (torch.float64, False, True)}


def test_dispatch_arg_by_name_and_no_tensor():
    op = Op(
        f"tu_test::op{next(_ids)}",
        reference=scale_into,
        mutates_args=("out",),
        dispatch_arg="out",
        backends=[cpu_backend(dtypes={torch.float16})],
    )
    out = torch.empty(2)
    op(torch.ones(2, dtype=torch.float16), out=out, s=3.0)  # out is fp32: reference
    assert out.tolist() == [3.0, 3.0]


def test_registry_and_metadata():
    op = make([cpu_backend()], cases="tests_does_not:exist")
    assert ops.get_op(op.name) is op and op.name in ops.registry()
    assert op.__doc__ == "x * s" and op.__name__ == "scale"
    assert op.has_cases and op.backends["fast"].module == __name__
    with pytest.raises(KeyError, match="no op named"):
        ops.get_op("tu_test::never")
    with pytest.raises(ValueError, match="namespace::name"):
        Op("no_namespace", reference=scale)
    with pytest.raises(ValueError, match="reserved"):
        Backend("reference", fast_scale)


def test_with_backend_replaces_one_implementation_without_touching_the_registered_op():
    op = make([cpu_backend()])
    broken = op.with_backend("fast", lambda x, s=1.0: x * 0)
    assert broken(torch.ones(1)).item() == 0.0
    assert op(torch.ones(1)).item() == 1001.0
    assert ops.get_op(op.name) is op


def test_custom_op_is_registered_and_compiles_fullgraph():
    op = make([cpu_backend()])
    assert op.library_op is not None
    x = torch.arange(4.0)
    custom = getattr(getattr(torch.ops, op.namespace), op.short_name)
    assert torch.equal(custom(x, 2.0), op(x, 2.0))  # the custom op runs the same dispatch

    @torch.compile(fullgraph=True, backend="eager")
    def f(x):
        return op(x, 2.0) * 2

    assert torch.equal(f(x), (x * 2 + 1000) * 2)


def test_mutating_op_compiles():
    op = Op(f"tu_test::op{next(_ids)}", reference=scale_into, mutates_args=("out",))
    x, out = torch.arange(3.0), torch.zeros(3)

    @torch.compile(fullgraph=True, backend="eager")
    def f(x, out):
        op(x, out, 2.0)
        return out + 1

    assert f(x, out).tolist() == [1.0, 3.0, 5.0]


def test_reference_without_schema_types_is_refused_in_one_line():
    def untyped(x, s):
        return x * s

    with pytest.raises(TypeError, match=r"cannot register with torch\.library"):
        Op(f"tu_test::op{next(_ids)}", reference=untyped)
    Op(f"tu_test::op{next(_ids)}", reference=untyped, library=False)  # opting out works
