"""Build and load the C kernels of the CPU ``native`` backends, once per machine.

A kernel's C source ships beside its op (``ops/<op>/native.c``; what the kernels share is in
``ops/native_common.h``). On first use it is compiled
with the system C compiler (``$CC``, else ``cc`` / ``gcc`` / ``clang``) at ``-O3 -march=native``
into a shared library cached under ``$DEJAVU_SPARSE_CACHE`` (default
``~/.cache/dejavu-sparse``), named by a hash of the source (with the files it includes), the
flags and the CPU, and loaded
with ``ctypes`` (a call releases the GIL). Writes go to a temporary file renamed into place, so
an interrupted or concurrent build never leaves a half-written library. Where no compiler
works, or ``DEJAVU_SPARSE_NATIVE=0``, :func:`load` returns ``None`` (with one warning per
process) and the backends run their plain PyTorch paths instead.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import torch

ENV_DISABLE = "DEJAVU_SPARSE_NATIVE"
ENV_CACHE = "DEJAVU_SPARSE_CACHE"
FLAG_SETS = (
    ["-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC", "-pthread"],
    ["-O3", "-fno-math-errno", "-shared", "-fPIC", "-pthread"],  # compilers without -march=native
)
# The weight dtype codes every kernel takes (0 float32, 1 bfloat16), ctypes argument types.
DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1}
POINTER, INT64 = ctypes.c_void_p, ctypes.c_int64
BYTES_PER_THREAD = 1 << 20  # one thread per MiB of weight a call reads, at most
_lock = threading.Lock()
_warned = False


def threads_for(weight_bytes: int) -> int:
    """Threads for a call reading ``weight_bytes`` of weight: ``torch.get_num_threads()``, but
    no more than one per ``BYTES_PER_THREAD`` (small calls do not pay for a thread's start)."""
    return max(1, min(torch.get_num_threads(), weight_bytes // BYTES_PER_THREAD))


class NativeUnavailable(RuntimeError):
    """No C compiler produced a loadable library (the message says why, in one line)."""


def _compilers() -> list[str]:
    named = os.environ.get("CC", "").strip()
    found = [named] if named else []
    found += [c for c in ("cc", "gcc", "clang") if shutil.which(c)]
    return list(dict.fromkeys(found))


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU's model and feature flags."""
    text = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features")):
                    text += line
                if line.strip() == "":  # the first processor is enough
                    break
    except OSError:
        text += platform.processor()
    return text


def cache_dir() -> Path:
    root = os.environ.get(ENV_CACHE) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "dejavu-sparse"
    )
    return Path(root)


def _source_text(source: Path) -> bytes:
    """The source with every file it ``#include "..."``s (so a change there rebuilds)."""
    text = source.read_bytes()
    for name in re.findall(rb'^#include "([^"]+)"', text, re.M):
        text += _source_text(source.parent / name.decode())
    return text


def _build(source: Path, out_dir: Path) -> Path:
    text = _source_text(source)
    errors = []
    for cc in _compilers():
        for flags in FLAG_SETS:
            key = hashlib.sha256(
                text + " ".join([cc, *flags]).encode() + _cpu_signature().encode()
            ).hexdigest()[:16]
            lib = out_dir / f"{source.parent.name}-{source.stem}-{key}.so"
            if lib.exists():
                return lib
            out_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=lib.stem, suffix=".so.tmp", dir=out_dir)
            os.close(fd)
            try:
                run = subprocess.run(
                    [cc, *flags, "-o", tmp, str(source)],
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                if run.returncode == 0:
                    os.replace(tmp, lib)
                    return lib
                last = (run.stderr.strip().splitlines() or ["failed"])[-1]
                errors.append(f"{cc} {' '.join(flags[:2])}: {last}")
            except FileNotFoundError:
                errors.append(f"{cc}: not found")
                break  # no such compiler: its other flag sets cannot work either
            except (OSError, subprocess.SubprocessError) as exc:
                errors.append(f"{cc}: {exc}")
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    raise NativeUnavailable("; ".join(errors) or "no C compiler found (set CC)")


@functools.cache
def _load(source: str) -> ctypes.CDLL | None:
    if os.environ.get(ENV_DISABLE, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    path = Path(source)
    try:
        try:
            lib = _build(path, cache_dir())
        except PermissionError:  # an unwritable cache: a private temporary one
            lib = _build(path, Path(tempfile.gettempdir()) / f"dejavu-sparse-{os.getuid()}")
        return ctypes.CDLL(str(lib))
    except (NativeUnavailable, OSError) as exc:
        global _warned
        if not _warned:  # one warning per process, whichever kernel fails first
            _warned = True
            warnings.warn(
                f"dejavu-sparse: the native CPU kernels could not be built ({exc}); "
                "using the plain PyTorch paths instead",
                RuntimeWarning,
                stacklevel=3,
            )
        return None


def load(source: Path) -> ctypes.CDLL | None:
    """The compiled library of ``source`` (built on first use), or ``None`` (warned once)."""
    with _lock:
        return _load(str(source))


def function(source: Path, name: str, restype: Any, argtypes: list[Any]) -> Any:
    """The C function ``name`` of ``source``'s library with its ctypes signature, or ``None``
    where the library cannot be built (warned once)."""
    lib = load(source)
    if lib is None:
        return None
    fn = getattr(lib, name)
    fn.restype, fn.argtypes = restype, argtypes
    return fn


def forget() -> None:
    """Drop loaded libraries so the next :func:`load` builds or loads again, and warns again
    (tests)."""
    global _warned
    with _lock:
        _load.cache_clear()
        _warned = False
