"""FSDP2 (``megalodon_model.distributed.shard_model``) on two gloo CPU processes equals one
process on the whole batch: losses and parameters after three steps, with activation
checkpointing on; a bf16 ``MixedPrecisionPolicy`` is applied on request."""

import pytest
import torch
from megalodon_fsdp_lib import STEPS, batches, optimizer, step, tiny_model, worker
from megalodon_model.distributed import enable_checkpointing

from tensor_utils_dev.testing.distributed import fully_shard_available, spawn_ranks

pytestmark = pytest.mark.skipif(not fully_shard_available(), reason="no FSDP2 / gloo")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return spawn_ranks(worker, tmp_path_factory.mktemp("fsdp"))


@pytest.fixture(scope="module")
def one_process():
    model = tiny_model()
    enable_checkpointing(model)
    opt = optimizer(model)
    losses = [step(model, opt, ids) for ids in batches()]
    return losses, [p.detach().clone() for p in model.parameters()]


def test_shard_model_needs_a_process_group():
    from megalodon_model.distributed import shard_model

    if torch.distributed.is_initialized():
        pytest.skip("a process group is already initialized")
    with pytest.raises(RuntimeError, match="init_process_group"):
        shard_model(tiny_model())


def test_two_ranks_train_like_one_process(two_ranks, one_process):
    single_losses, single_params = one_process
    per_rank = two_ranks["losses"]
    assert len(per_rank) == 2 and all(len(r) == STEPS for r in per_rank)
    # equal shards: the mean of the ranks' token-mean losses is the whole batch's loss
    for s, (a, b) in enumerate(zip(*per_rank, strict=True)):
        assert abs((a + b) / 2 - single_losses[s]) < 1e-5, (s, a, b, single_losses[s])
    for a, b in zip(two_ranks["params"], single_params, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
    init = list(tiny_model().parameters())
    moved = zip(two_ranks["params"], init, strict=True)
    assert max((a - b).abs().max().item() for a, b in moved) > 1e-3


def test_activation_checkpointing_recomputes_blocks(two_ranks):
    assert two_ranks["block_calls"] == 2  # forward, then recomputed in backward


def test_mixed_precision_policy_is_applied(two_ranks):
    mp_ = two_ranks["mp"]
    assert ("block", torch.bfloat16) in mp_["seen"] and ("root", torch.bfloat16) in mp_["seen"]
    assert mp_["logits"] == torch.bfloat16
    assert mp_["sharded"] == {torch.float32}  # the optimizer's copy stays float32
    assert mp_["grads"] == {torch.float32}  # gradients reduced into float32 shards
    assert mp_["finite"]
