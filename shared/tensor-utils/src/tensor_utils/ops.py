"""The op layer: one registry of ops, each a reference plus any number of named backends.

An op is declared once, in its package's ``ops/<op>/__init__.py``::

    from tensor_utils.ops import Backend, Op

    extrapolate = Op(
        "expo_merge::extrapolate",
        reference=naive.extrapolate,                     # plain PyTorch: the spec
        backends=[Backend("triton", "expo_merge.ops.extrapolate.triton:extrapolate")],
        cases="expo_merge.ops.extrapolate.cases:cases",  # hypothesis strategy, test-only
    )
    out = extrapolate(sft, aligned, 0.5)                 # the chosen backend runs
    out = extrapolate(sft, aligned, 0.5, backend="reference")

Which backend runs (first match wins):

1. the call's ``backend=`` argument (``"auto"``, ``"reference"`` or a backend's name);
2. the process-wide override: :func:`set_backend_override`, else the ``TENSOR_UTILS_BACKEND``
   environment variable (read once, on the first call that needs it). A name the op does not
   have means its reference (an op without a Triton kernel runs its reference under
   ``TENSOR_UTILS_BACKEND=triton``); a backend the op has but cannot run there is an error;
3. ``auto``: the first listed backend that supports the device type and dtype of the call's
   dispatch tensor (the first tensor argument unless ``dispatch_arg`` says otherwise) and whose
   requirement imports; else the reference. ``auto`` never picks a backend on the CPU that runs
   there only through ``TRITON_INTERPRET=1``: that is for tests, and it is slow.

Resolution happens once per (device type, dtype) and is cached on the op, so an eager call
costs one dict lookup on top of the backend itself (``benchmarks/bench_dispatch.py``).

Every op is also registered with ``torch.library`` as the custom op ``<namespace>::<name>``
(schema inferred from the reference's annotations, fake implementation = the reference unless
``fake=`` is given, autograd from ``autograd=``). Under ``torch.compile`` a call goes through that
custom op, so the compiler sees one opaque node whose eager implementation is the same cached
dispatch; eager calls skip it. Where the public signature is no schema (an ``out=`` argument
that is also returned, an optional tensor result, say), ``schema=`` gives the schema-typed
signature the custom op takes (backends are called with those arguments; also the default fake
implementation), ``to_schema(result)`` maps a backend's result onto the schema's return, and
``compiled_call(custom_op, *args, **kwargs)`` maps a public call onto the custom op under the
compiler. ``library=False`` opts out for ops whose results
the schema language cannot express; the compiler then traces the Python dispatch itself.

Test hooks (``cases``, ``check``) and Triton ahead-of-time compile specs (``Backend.aot``) are
``"module:attribute"`` strings, imported only when a test asks: hypothesis and the development
helpers are not runtime dependencies.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

ENV_VAR = "TENSOR_UTILS_BACKEND"
# Bound once (a module attribute lookup per call is measurable at this scale); the compiler
# recognises the function object itself and folds it to True while tracing.
_is_compiling = torch.compiler.is_compiling
AUTO, REFERENCE = "auto", "reference"

__all__ = [
    "AUTO",
    "ENV_VAR",
    "REFERENCE",
    "Backend",
    "KernelLaunch",
    "Op",
    "backend_override",
    "get_op",
    "load",
    "registry",
    "set_backend_override",
    "triton_available",
    "triton_interpreting",
]


# ---------------------------------------------------------------------------------------------
# Environment facts


@functools.cache
def module_available(name: str) -> bool:
    """True when ``import name`` works (cached: an import attempt costs milliseconds)."""
    try:
        importlib.import_module(name)
    except Exception:  # ImportError, or a broken install raising something else
        return False
    return True


def triton_available() -> bool:
    """True when ``import triton`` works (it needs no GPU to import)."""
    return module_available("triton")


def triton_interpreting() -> bool:
    """True under ``TRITON_INTERPRET=1``: Triton kernels then run on CPU tensors, slowly."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def load(target: Any) -> Any:
    """Resolve a ``"module:attribute"`` string (dotted attributes allowed); pass anything else."""
    if not isinstance(target, str):
        return target
    module, sep, attr = target.partition(":")
    if not sep:
        raise ValueError(f"expected 'module:attribute', got {target!r}")
    value: Any = importlib.import_module(module)
    for part in attr.split("."):
        value = getattr(value, part)
    return value


# ---------------------------------------------------------------------------------------------
# Process-wide override


_override_lock = threading.Lock()
_override: str | None = None
_override_read = False
_ops: dict[str, Op] = {}


def _read_override() -> str | None:
    global _override, _override_read
    if _override_read:  # lock-free once read (torch.compile traces this path too)
        return _override
    with _override_lock:
        if not _override_read:
            value = os.environ.get(ENV_VAR, "").strip().lower()
            _override = value if value and value != AUTO else None
            _override_read = True
        return _override


def set_backend_override(name: str | None) -> None:
    """Force a backend for every op in this process (``None`` or ``"auto"``: back to the rule).

    Takes precedence over ``TENSOR_UTILS_BACKEND``; clears every op's resolution cache.
    """
    global _override, _override_read
    with _override_lock:
        _override = None if name in (None, AUTO) else str(name).lower()
        _override_read = True
    for op in _ops.values():
        op.clear_cache()


def backend_override() -> str | None:
    """The process-wide override in force (``None`` for the automatic rule)."""
    return _read_override()


def _reset_override_from_env() -> None:
    """Forget the override so the environment variable is read again (tests use this)."""
    global _override_read
    with _override_lock:
        _override_read = False
    for op in _ops.values():
        op.clear_cache()


# ---------------------------------------------------------------------------------------------
# Declarations


@dataclass(frozen=True)
class Backend:
    """One implementation of an op besides its reference.

    ``impl``: the function (or ``"module:function"``, imported on first use, so CPU-only
    installs never import a kernel module). ``device_types``: where ``auto`` may pick it.
    ``dtypes``: the dispatch tensor dtypes it supports (``None``: all). ``requires``: modules
    that must import (``("triton",)`` for Triton kernels). ``interpretable``: may be forced onto
    CPU tensors under ``TRITON_INTERPRET=1``. ``aot``: ``"module:function"`` returning the
    kernel launches to compile ahead of time for the H100 (see ``tensor_utils_dev.aot``).
    ``auto``: ``False`` for a backend that runs only when named (``backend=`` or the override),
    e.g. one with input restrictions the reference does not have.
    """

    name: str
    impl: Callable[..., Any] | str
    device_types: tuple[str, ...] = ("cuda",)
    dtypes: frozenset[torch.dtype] | None = None
    requires: tuple[str, ...] = ("triton",)
    interpretable: bool = True
    aot: str | None = None
    auto: bool = True

    def __post_init__(self) -> None:
        if self.name in (AUTO, REFERENCE):
            raise ValueError(f"backend name {self.name!r} is reserved")
        if self.dtypes is not None and not isinstance(self.dtypes, frozenset):
            object.__setattr__(self, "dtypes", frozenset(self.dtypes))

    @property
    def module(self) -> str | None:
        """The module that holds the implementation (the disk check maps files to backends)."""
        if isinstance(self.impl, str):
            return self.impl.partition(":")[0]
        return getattr(self.impl, "__module__", None)

    def importable(self) -> bool:
        return all(module_available(m) for m in self.requires)

    def runs_on(self, device_type: str, dtype: torch.dtype | None, *, forced: bool) -> bool:
        if self.dtypes is not None and dtype is not None and dtype not in self.dtypes:
            return False
        if device_type in self.device_types:
            return True
        return forced and self.interpretable and device_type == "cpu" and triton_interpreting()

    @functools.cached_property
    def function(self) -> Callable[..., Any]:
        return load(self.impl)


@dataclass(frozen=True)
class KernelLaunch:
    """One Triton kernel at one launch configuration, for ahead-of-time compile checks.

    A backend's ``aot`` function returns these for every configuration it can launch with.
    ``signature`` maps each runtime argument to Triton's type string (``"*fp16"``, ``"i32"``,
    ``"fp32"``); ``constexprs`` gives every ``tl.constexpr`` argument its value.
    """

    kernel: Any  # a triton.JITFunction (typed loosely: triton is optional at runtime)
    signature: dict[str, str]
    constexprs: dict[str, Any]
    num_warps: int = 4
    num_stages: int = 3
    label: str = ""


def _qualified(name: str) -> tuple[str, str]:
    namespace, sep, short = name.partition("::")
    if not sep or not namespace.isidentifier() or not short.isidentifier():
        raise ValueError(f"op name must be 'namespace::name' (identifiers), got {name!r}")
    return namespace, short


class Op:
    """A registered op: call it like its reference, plus ``backend=``.

    Attributes: ``name`` (``"namespace::name"``), ``reference``, ``backends`` (name ->
    :class:`Backend`), ``library_op`` (the ``torch.library`` custom op, or ``None``).
    """

    __name__: str  # the reference's, copied by functools.update_wrapper

    def __init__(
        self,
        name: str,
        *,
        reference: Callable[..., Any],
        backends: Sequence[Backend] = (),
        cases: str | Callable[[], Any] | None = None,
        check: str | Callable[..., None] | None = None,
        aliases: dict[str, str] | None = None,
        dispatch_arg: int | str = 0,
        library: bool = True,
        mutates_args: Iterable[str] = (),
        fake: Callable[..., Any] | None = None,
        autograd: tuple[Callable[..., Any], Callable[..., Any]] | None = None,
        schema: Callable[..., Any] | None = None,
        to_schema: Callable[[Any], Any] | None = None,
        compiled_call: Callable[..., Any] | None = None,
        doc: str | None = None,
    ) -> None:
        self.namespace, self.short_name = _qualified(name)
        self.name = name
        self.reference = reference
        self.backends: dict[str, Backend] = {}
        for b in backends:
            if b.name in self.backends:
                raise ValueError(f"{name}: backend {b.name!r} listed twice")
            self.backends[b.name] = b
        self.aliases = dict(aliases or {})
        self._cases = cases
        self._check = check
        self.dispatch_arg = dispatch_arg
        self.mutates_args = tuple(mutates_args)
        self._schema = schema
        self._to_schema = to_schema
        self._compiled_call = compiled_call
        self._cache: dict[tuple[torch.dtype, bool, bool], Callable[..., Any]] = {}
        self._first_arg = dispatch_arg == 0
        functools.update_wrapper(self, reference)  # type: ignore[arg-type]
        self.__doc__ = doc or reference.__doc__
        self.library_op = self._register_library(fake, autograd) if library else None
        self._library_call = self.library_op
        _ops[name] = self

    # -- resolution -------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Accepted ``backend=`` values."""
        return [AUTO, REFERENCE, *self.backends, *self.aliases]

    def _dispatch_tensor(self, args: tuple, kwargs: dict) -> torch.Tensor | None:
        pos = self.dispatch_arg
        if isinstance(pos, int):
            if pos < len(args):
                value = args[pos]
                return value if isinstance(value, torch.Tensor) else None
        elif pos in kwargs:
            value = kwargs[pos]
            return value if isinstance(value, torch.Tensor) else None
        for value in (*args, *kwargs.values()):
            if isinstance(value, torch.Tensor):
                return value
        return None

    def select(
        self, device_type: str, dtype: torch.dtype | None, backend: str | None = None
    ) -> str:
        """The backend name a call on this device type and dtype runs (``reference`` or a key of
        ``backends``). Raises ``ValueError``/``RuntimeError`` with one line on a bad request."""
        requested = (backend or "").strip().lower() or None
        from_env = requested in (None, AUTO)
        if from_env:
            requested = _read_override() or AUTO
        requested = self.aliases.get(requested, requested)
        if requested == REFERENCE:
            return REFERENCE
        if requested == AUTO:
            for b in self.backends.values():
                if b.auto and b.runs_on(device_type, dtype, forced=False) and b.importable():
                    return b.name
            return REFERENCE
        b = self.backends.get(requested)
        if b is None:
            if from_env:  # a process-wide override names a backend this op lacks
                return REFERENCE
            raise ValueError(
                f"{self.name}: unknown backend {requested!r} (choose from {', '.join(self.names())})"
            )
        where = "" if not from_env else f" (from {ENV_VAR} / set_backend_override)"
        if not b.importable():
            raise RuntimeError(
                f"{self.name}: backend {b.name!r}{where} needs {', '.join(b.requires)}, "
                "which does not import here"
            )
        if not b.runs_on(device_type, dtype, forced=True):
            hint = (
                "; set TRITON_INTERPRET=1 to run it on the CPU"
                if b.interpretable and device_type == "cpu"
                else ""
            )
            raise RuntimeError(
                f"{self.name}: backend {b.name!r}{where} does not run on {device_type} "
                f"tensors of dtype {dtype}{hint}"
            )
        return b.name

    def implementation(self, name: str) -> Callable[..., Any]:
        """The callable behind a backend name (``reference`` included)."""
        if name == REFERENCE:
            return self.reference
        return self.backends[self.aliases.get(name, name)].function

    def _resolve(self, t: torch.Tensor) -> Callable[..., Any]:
        impl = self.implementation(self.select(t.device.type, t.dtype))
        if t.is_cuda or t.is_cpu:  # other device types share a key, so they are not cached
            self._cache[(t.dtype, t.is_cuda, t.is_cpu)] = impl
        return impl

    def clear_cache(self) -> None:
        self._cache.clear()

    # -- calls ------------------------------------------------------------------------------

    def __call__(self, *args: Any, backend: str | None = None, **kwargs: Any) -> Any:
        if backend is None:
            if _is_compiling():
                return self._compiling(args, kwargs)
            # Fast path: one dict lookup keyed by three tensor getters (building a torch.device
            # costs 0.4 us). A missing key, or a dispatch value that is no tensor, takes the slow
            # path; a try costs nothing when nothing is raised.
            t = args[0] if self._first_arg and args else self._dispatch_tensor(args, kwargs)
            try:
                impl = self._cache[t.dtype, t.is_cuda, t.is_cpu]  # pyright: ignore[reportOptionalMemberAccess]
            except (KeyError, AttributeError):
                impl = self._resolve_value(t)
            return impl(*args, **kwargs)
        t = self._dispatch_tensor(args, kwargs)
        key = (t.device.type, t.dtype) if t is not None else ("cpu", None)
        return self.implementation(self.select(*key, backend=backend))(*args, **kwargs)

    def _compiling(self, args: tuple, kwargs: dict) -> Any:
        """A call under ``torch.compile``: through the custom op, so the compiler sees one node;
        ops without one (``library=False``) are traced through their dispatch."""
        if self._library_call is None:
            return self._eager(*args, **kwargs)
        if self._compiled_call is not None:
            return self._compiled_call(self._library_call, *args, **kwargs)
        return self._library_call(*args, **kwargs)

    def _resolve_value(self, value: Any) -> Callable[..., Any]:
        if isinstance(value, torch.Tensor):
            return self._resolve(value)
        return self.implementation(self.select("cpu", None))

    def _eager(self, *args: Any, **kwargs: Any) -> Any:
        """The automatic dispatch without the compile check (the custom op's implementation, and
        what the compiler traces for ``library=False`` ops: no try/except for it to follow)."""
        t = self._dispatch_tensor(args, kwargs)
        if t is None:
            return self.implementation(self.select("cpu", None))(*args, **kwargs)
        impl = self._cache.get((t.dtype, t.is_cuda, t.is_cpu))
        if impl is None:
            impl = self._resolve(t)
        return impl(*args, **kwargs)

    # -- torch.library ----------------------------------------------------------------------

    def _register_library(self, fake, autograd):
        name, table = self.name, _ops  # closure cells: the clone below runs in another module
        signature = self._schema or self.reference
        to_schema = self._to_schema
        existing = getattr(getattr(torch.ops, self.namespace), self.short_name, None)

        # The registered implementation looks the op up by name at call time, so a module
        # imported twice (pytest's importlib mode can) reuses the custom op it registered first.
        def implementation(*args, **kwargs):
            result = table[name]._eager(*args, **kwargs)
            return result if to_schema is None else to_schema(result)

        if existing is not None:
            return _LibraryHandle(existing)
        try:
            custom = torch.library.custom_op(
                name,
                mutates_args=self.mutates_args,
                schema=None,
            )(_with_globals(implementation, signature))
        except Exception as exc:  # schema inference failed: say which op and why, in one line
            raise TypeError(
                f"{name}: cannot register with torch.library ({exc}); annotate the reference "
                "with schema types or pass library=False"
            ) from exc
        custom.register_fake(fake or signature)
        if autograd is not None:
            backward, setup_context = autograd
            custom.register_autograd(backward, setup_context=setup_context)
        return _LibraryHandle(getattr(getattr(torch.ops, self.namespace), self.short_name))

    # -- test hooks -------------------------------------------------------------------------

    def cases(self) -> Any:
        """The hypothesis strategy drawing ``(args, kwargs)`` on which every backend must agree
        with the reference (``None`` when the op publishes none)."""
        if self._cases is None:
            return None
        value = load(self._cases)
        return value() if callable(value) and not hasattr(value, "example") else value

    @property
    def has_cases(self) -> bool:
        return self._cases is not None

    def check(self) -> Callable[..., None] | None:
        """Custom comparison ``check(actual, expected)`` over flattened outputs, or ``None``."""
        return None if self._check is None else load(self._check)

    def with_backend(self, name: str, impl: Callable[..., Any]) -> Op:
        """An unregistered copy whose backend ``name`` runs ``impl`` (mutation tests use this)."""
        clone = object.__new__(Op)
        clone.__dict__.update(self.__dict__)
        clone.backends = dict(self.backends)
        base = self.backends[name]
        clone.backends[name] = dataclasses.replace(base, impl=impl)
        clone._cache = {}
        clone.library_op = clone._library_call = None
        return clone

    def __repr__(self) -> str:
        return f"Op({self.name!r}, backends={list(self.backends)})"


@dataclass(frozen=True)
class _LibraryHandle:
    """The custom op as ``torch.ops.<namespace>.<name>`` (called with the op's own arguments)."""

    overload: Any

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.overload(*args, **kwargs)


def _with_globals(fn: Callable[..., Any], like: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` whose string annotations resolve in ``like``'s module (schema inference evaluates
    them there)."""
    import types

    clone = types.FunctionType(
        fn.__code__, like.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )
    clone.__signature__ = inspect.signature(like)  # type: ignore[attr-defined]
    clone.__annotations__ = dict(getattr(like, "__annotations__", {}))
    clone.__module__ = like.__module__
    clone.__qualname__ = like.__qualname__
    return clone


# ---------------------------------------------------------------------------------------------
# Registry


def registry() -> dict[str, Op]:
    """Every op registered so far, by name (import a package's ``ops`` to register its ops)."""
    return dict(_ops)


def get_op(name: str) -> Op:
    try:
        return _ops[name]
    except KeyError:
        raise KeyError(f"no op named {name!r} is registered") from None
