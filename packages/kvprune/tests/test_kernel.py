"""The Triton ragged decode kernel against the PyTorch reference, and both against dense
attention with the pruned keys masked."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kv_helpers import tiny_model, token_table
from kvprune import FastGen, KVPruneCache
from kvprune.generate import cache_kwarg
from kvprune.ops.ragged_decode import naive, ragged_decode_attention
from kvprune.ops.ragged_decode.cases import cases, random_ragged_case

from tensor_utils_dev.testing import assert_close, poison_allocations

triton_mod = pytest.importorskip("kvprune.ops.ragged_decode.triton")


def dense_masked(q, keys, values, keep, scale):
    """q [B, Hq, D], keys/values [B, H, n, D], keep [B, H, n] -> (out [B, Hq, D], probs [B, Hq, n])."""
    g = q.shape[1] // keys.shape[1]
    k = keys.repeat_interleave(g, 1).double()
    v = values.repeat_interleave(g, 1).double()
    logits = torch.einsum("bhd,bhnd->bhn", q.double(), k) * scale
    logits = logits.masked_fill(~keep.repeat_interleave(g, 1), float("-inf"))
    probs = torch.softmax(logits, -1)
    return torch.einsum("bhn,bhnd->bhd", probs, v), probs


def ragged_from_dense(keys, values, keep, slack):
    b, h, _n, d = keys.shape
    counts = keep.sum(-1).reshape(-1)
    cap = counts + slack
    offsets = cap.cumsum(0) - cap
    dest = (offsets.view(b, h, 1) + keep.long().cumsum(-1) - 1)[keep]
    k_pool = torch.full((int(cap.sum()), d), 1e4, dtype=keys.dtype)
    v_pool = torch.full_like(k_pool, 1e4)
    k_pool[dest] = keys[keep]
    v_pool[dest] = values[keep]
    return k_pool, v_pool, offsets, counts, dest


@st.composite
def pruned_dense(draw):
    b, h, g = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    n, d = draw(st.integers(1, 37)), draw(st.sampled_from([4, 7, 16]))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    keys = torch.randn(b, h, n, d, generator=gen)
    values = torch.randn(b, h, n, d, generator=gen)
    keep = torch.rand(b, h, n, generator=gen) < draw(st.floats(0.1, 1.0))
    keep[..., -1] = True  # the current token is always attended
    q = torch.randn(b, h * g, d, generator=gen)
    return q, keys, values, keep, draw(st.integers(0, 3))


@pytest.mark.parametrize("backend", ["reference", pytest.param("triton", marks=pytest.mark.triton)])
@settings(max_examples=15, deadline=None)
@given(case=pruned_dense())
def test_pruning_equals_masking_dense_attention(backend, case, device):
    q, keys, values, keep, slack = case
    b, h, n, d = keys.shape
    g = q.shape[1] // h
    scale = d**-0.5
    k_pool, v_pool, offsets, lengths, dest = ragged_from_dense(keys, values, keep, slack)
    # The kernel runs where kernels run (CUDA, or the CPU interpreter); compared on the CPU.
    inputs = [t.to(device) for t in (q.view(b * h, g, d), k_pool, v_pool, offsets, lengths)]
    with poison_allocations():
        out, weights = ragged_decode_attention(*inputs, scale, backend=backend)
    out, weights = out.cpu(), weights.cpu()
    ref_out, ref_probs = dense_masked(q, keys, values, keep, scale)
    assert_close(out.view(b, h * g, d), ref_out.float())
    # weights: row `dest` of the pool holds the probability of the kept key it stores
    kept_probs = ref_probs.view(b, h, g, n).permute(0, 1, 3, 2)[keep]  # [nnz, G]
    assert_close(weights[dest], kept_probs.float())
    free = torch.ones(k_pool.shape[0], dtype=torch.bool)
    free[dest] = False
    assert bool((weights[free] == 0).all())


def _on(device, args):
    return [a.to(device) if isinstance(a, torch.Tensor) else a for a in args]


@pytest.mark.triton
@settings(max_examples=25, deadline=None)
@given(
    case=cases(),
    splits=st.sampled_from([None, 1, 2, 4]),
    need_weights=st.booleans(),
    merge_block_d=st.sampled_from([None, 16]),
)
def test_kernel_matches_reference_with_poisoned_outputs(
    case, splits, need_weights, merge_block_d, device
):
    args, kwargs = case
    expected = naive.ragged_decode_attention(*args, **kwargs)
    with poison_allocations():
        out, weights = triton_mod.ragged_decode_attention(
            *_on(device, args),
            **kwargs,
            need_weights=need_weights,
            num_splits=splits,
            block_n=16,
            merge_block_d=merge_block_d,
        )
    assert out.dtype == args[0].dtype
    assert_close(out.cpu(), expected[0])
    if need_weights:
        assert weights is not None and expected[1] is not None
        assert weights.dtype == torch.float32
        assert_close(weights.cpu(), expected[1])
    else:
        assert weights is None


@pytest.mark.triton
def test_kernel_many_splits_and_tiles_odd_sizes(device):
    q, k, v, o, lens = random_ragged_case(
        3, [97, 1, 0, 64, 33], [2, 0, 5, 1, 0], 5, 17, torch.float32
    )
    expected = naive.ragged_decode_attention(q, k, v, o, lens, 0.3)
    for splits in (1, 2, 8):
        for need_weights, merge_block_d in (
            (True, None),
            (True, 16),  # two merge programs per query head (17 of 32 columns real)
            (False, 16),
            (False, None),
        ):
            with poison_allocations():
                out, weights = triton_mod.ragged_decode_attention(
                    *_on(device, (q, k, v, o, lens)),
                    0.3,
                    need_weights=need_weights,
                    num_splits=splits,
                    block_n=16,
                    merge_block_d=merge_block_d,
                )
            assert_close(out.cpu(), expected[0])
            if need_weights:
                assert weights is not None and expected[1] is not None
                assert_close(weights.cpu(), expected[1])
            else:
                assert weights is None


def test_reference_without_weights_gives_same_output():
    q, k, v, o, lens = random_ragged_case(5, [9, 0, 4], [1, 2, 0], 3, 8, torch.float32)
    out, weights = naive.ragged_decode_attention(q, k, v, o, lens, 0.5)
    out2, none = naive.ragged_decode_attention(q, k, v, o, lens, 0.5, need_weights=False)
    assert none is None and weights is not None
    assert torch.equal(out, out2)
    assert weights.shape == (k.shape[0], 3)


def test_bad_arguments_raise():
    q, k, v, o, lens = random_ragged_case(0, [3, 4], [0, 0], 2, 8, torch.float32)
    with pytest.raises(ValueError, match="head_dim mismatch"):
        naive.ragged_decode_attention(q[..., :4], k, v, o, lens, 1.0)
    with pytest.raises(ValueError, match="one per segment"):
        naive.ragged_decode_attention(q, k, v, o[:1], lens, 1.0)
    with pytest.raises(ValueError, match="share a dtype"):
        naive.ragged_decode_attention(q.half(), k, v, o, lens, 1.0)


@pytest.mark.triton
def test_bad_launch_overrides_raise_before_any_launch(device):
    args = _on(device, random_ragged_case(0, [3, 4], [0, 0], 2, 8, torch.float32))
    with pytest.raises(ValueError, match="num_splits must be a power of two"):
        triton_mod.ragged_decode_attention(*args, 1.0, num_splits=3)
    with pytest.raises(ValueError, match="merge_block_d must be a power of two"):
        triton_mod.ragged_decode_attention(*args, 1.0, merge_block_d=24)


@pytest.mark.triton
def test_generation_with_kernel_matches_reference_backend():
    model = tiny_model("llama", layers=2)
    ids = torch.randint(3, 101, (2, 20), generator=torch.Generator().manual_seed(0))
    if torch.cuda.is_available():  # the kernel runs compiled on the GPU, not interpreted
        model, ids = model.cuda(), ids.cuda()
    outs = []
    for backend in ("reference", "triton"):
        cache = KVPruneCache(
            model, FastGen(recovery=0.5), token_classes_table=token_table(), backend=backend
        )
        outs.append(
            model.generate(
                ids,
                max_new_tokens=6,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
                **{cache_kwarg(model): cache},
            )
        )
    assert torch.equal(outs[0].sequences, outs[1].sequences)
    for a, b in zip(outs[0].scores, outs[1].scores, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize(
    "lengths",
    [
        [4096, 1, 0, 2049],
        [32768, 16000],
        [5000, 97, 12000, 3],
        [700] * 6 + [3000, 1, 0, 4096, 2049, 65, 128],  # many segments: the other tile regime
    ],
)
def test_kernel_on_cuda_long_segments(dtype, lengths):
    q, k, v, o, lens = random_ragged_case(0, lengths, [7] * len(lengths), 4, 128, dtype, "cuda")
    expected = naive.ragged_decode_attention(q, k, v, o, lens, 128**-0.5)
    for pdl in (None, False):  # the merge launched with and without PDL
        with poison_allocations():
            out, weights = triton_mod.ragged_decode_attention(q, k, v, o, lens, 128**-0.5, pdl=pdl)
        assert_close(out, expected[0])
        assert weights is not None and expected[1] is not None
        assert_close(weights, expected[1], atol=1e-6, rtol=1e-3)
    with poison_allocations():  # the fast paths (no weights) and forced tile/split choices
        for splits, block_n, pdl, merge_block_d in (
            (None, None, None, None),  # the defaults
            (None, None, False, None),  # merge launched without PDL
            (None, None, None, 128),  # one merge program per query head
            (1, 64, True, None),
            (128, 128, False, 64),
            (16, 32, True, 16),
        ):
            fast, none = triton_mod.ragged_decode_attention(
                q,
                k,
                v,
                o,
                lens,
                128**-0.5,
                need_weights=False,
                pdl=pdl,
                num_splits=splits,
                block_n=block_n,
                merge_block_d=merge_block_d,
            )
            assert none is None
            assert_close(fast, expected[0])


@pytest.mark.gpu
def test_generation_on_cuda_uses_kernel_and_matches_reference():
    model = tiny_model("llama", layers=2).cuda().half()
    ids = torch.randint(3, 101, (3, 50), device="cuda")
    seqs = []
    for backend in ("reference", None):
        cache = KVPruneCache(
            model, FastGen(recovery=0.7), token_classes_table=token_table(), backend=backend
        )
        seqs.append(
            model.generate(ids, max_new_tokens=10, do_sample=False, **{cache_kwarg(model): cache})
        )
    assert torch.equal(seqs[0], seqs[1])


@settings(max_examples=25, deadline=None)
@given(case=cases(), need_weights=st.booleans())
def test_reference_cpu_and_device_forms_agree(case, need_weights):
    """The reference's per-segment CPU form (views of the pool) equals its gathered form."""
    args, _ = case
    q, k, v, o, lens, scale = args[:6]
    a = naive.per_segment(q, k, v, o, lens, scale, need_weights)
    b = naive.gathered(q, k, v, o, lens, scale, None, need_weights)
    assert_close(a[0], b[0])
    if need_weights:
        assert a[1] is not None and b[1] is not None
        assert_close(a[1], b[1])
    else:
        assert a[1] is None and b[1] is None
