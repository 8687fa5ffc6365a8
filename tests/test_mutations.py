"""A deliberately broken kernel in every package is caught by the property suite's check.

For one op of each package, ``op.with_backend("triton", broken)`` swaps the Triton backend for a
mutant built on the real kernel (a plausible kernel bug: swapped operands, wrong moment
coefficients, a doubled scale, the routing picking the smallest logits), and
``check_backend`` (what ``tests/test_props_ops.py`` runs for every registered backend) must
fail. The un-mutated op passes the same check, so the failure is the mutant's. Runs under
``TRITON_INTERPRET=1`` on the CPU and on CUDA through ``tools/gpu.py``.
"""

from __future__ import annotations

import importlib

import pytest

from tensor_utils.ops import get_op
from tensor_utils_dev.testing.opcheck import check_backend

for _module in (
    "expo_merge.ops",
    "galore_optim.ops",
    "kvprune.ops.ragged_decode",
    "jetmoe_model.ops.routing",
    "rho_select.ops",
    "dejavu_sparse.ops",
    "megalodon_model.ops",
):
    importlib.import_module(_module)


def _expo_swapped(real):
    # sft and aligned swapped: extrapolates away from the aligned model instead
    return lambda sft, aligned, alpha, **kw: real(aligned, sft, alpha, **kw)


def _galore_betas_swapped(real):
    # the 8-bit Adam moments updated with beta1 and beta2 exchanged
    return lambda g, mc, ma, vc, va, beta1, beta2, eps: real(g, mc, ma, vc, va, beta2, beta1, eps)


def _kvprune_scale_doubled(real):
    # softmax temperature off by 2x
    return lambda q, k, v, offsets, lengths, scale, *a, **kw: real(
        q, k, v, offsets, lengths, 2 * scale, *a, **kw
    )


def _jetmoe_smallest_logits(real):
    # top-k of the negated logits: each token goes to its k least likely experts
    def broken(logits, top_k, gate_dtype):
        return real(-logits, top_k, gate_dtype)._replace(logits=logits.float())

    return broken


def _rho_labels_shifted(real):
    # the target of each row taken from its neighbour (an off-by-one in the label load)
    def broken(hidden, weight, labels, chunk_size, ignore_index):
        return real(hidden, weight, labels.roll(1), chunk_size, ignore_index)

    return broken


def _dejavu_rows_reversed(real):
    # the gathered rows written in reverse order of the index
    return lambda x, weight, idx: real(x, weight, idx.flip(0))


def _megalodon_rotation_conjugated(real):
    # the complex decay rotating the wrong way (q is stored as (real, imag) pairs: imag negated)
    return lambda x, p, q, eta, h0=None: real(x, p, q * q.new_tensor([1.0, -1.0]), eta, h0)


MUTANTS = {
    "expo_merge::extrapolate": _expo_swapped,
    "galore_optim::adam8bit_moments": _galore_betas_swapped,
    "kvprune::ragged_decode_attention": _kvprune_scale_doubled,
    "jetmoe_model::top_k_route": _jetmoe_smallest_logits,
    "rho_select::selective_loss_forward": _rho_labels_shifted,
    "dejavu_sparse::gather_rows": _dejavu_rows_reversed,
    "megalodon_model::cema": _megalodon_rotation_conjugated,
}


@pytest.mark.triton
@pytest.mark.parametrize("name", MUTANTS)
def test_broken_kernel_fails_the_property_check(name):
    op = get_op(name)
    broken = op.with_backend("triton", MUTANTS[name](op.backends["triton"].function))
    # hypothesis re-raises the mismatch, or an ExceptionGroup when it found several distinct ones
    with pytest.raises((AssertionError, ExceptionGroup)) as caught:
        check_backend(broken, "triton", max_examples=10)
    if isinstance(caught.value, ExceptionGroup):
        assert caught.value.subgroup(AssertionError) is not None, caught.value
    assert get_op(name) is op  # the registered op is untouched


@pytest.mark.triton
@pytest.mark.parametrize("name", MUTANTS)
def test_unmutated_kernel_passes_the_same_check(name):
    check_backend(get_op(name), "triton", max_examples=10)


def test_mutants_cover_every_package_with_ops():
    from tools.workspace import members

    with_ops = {m.module for m in members() if m.is_package and (m.src / m.module / "ops").is_dir()}
    covered = {name.split("::")[0] for name in MUTANTS}
    assert with_ops <= covered, f"no mutant for {sorted(with_ops - covered)}"
    assert covered <= with_ops, f"mutants for packages without ops: {sorted(covered - with_ops)}"
