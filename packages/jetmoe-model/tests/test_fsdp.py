"""FSDP2 (``jetmoe_model.distributed.shard_model``) on two gloo CPU processes equals one process
on the whole batch: losses (router losses aggregated over the ranks) and parameters after three
steps, with activation checkpointing on; a bf16 ``MixedPrecisionPolicy`` is applied on request."""

import pytest
import torch
from jetmoe_fsdp_lib import (
    STEPS,
    batches,
    optimizer,
    padded_batch,
    router_losses_on,
    step,
    tiny_model,
    worker,
)
from jetmoe_model.distributed import enable_checkpointing

from tensor_utils_dev.testing.distributed import fully_shard_available, spawn_ranks


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return spawn_ranks(worker, tmp_path_factory.mktemp("fsdp"))


@pytest.fixture(scope="module")
def one_process():
    model = tiny_model()
    enable_checkpointing(model)
    opt = optimizer(model)
    history = [step(model, opt, ids) for ids in batches()]
    return (
        history,
        [p.detach().clone() for p in model.parameters()],
        router_losses_on(model, *padded_batch()),
    )


pytestmark = pytest.mark.skipif(not fully_shard_available(), reason="no FSDP2 / gloo")


def test_router_losses_are_the_global_batch_losses(two_ranks, one_process):
    single, _, _ = one_process
    for got, want, local in zip(two_ranks["history"], single, two_ranks["local_aux"], strict=True):
        torch.testing.assert_close(got["aux_loss"], want["aux_loss"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got["z_loss"], want["z_loss"], atol=1e-5, rtol=1e-5)
        # the shard's own routers balance differently: aggregation is what makes them equal
        assert abs(local - want["aux_loss"]) > 1e-4


def test_router_losses_with_unequal_padding_per_rank(two_ranks, one_process):
    # token counts differ between the ranks (16 vs 8 real tokens): the summed statistics still
    # give the whole batch's masked losses
    want = one_process[2]
    torch.testing.assert_close(two_ranks["padded"], want, atol=1e-5, rtol=1e-5)


def test_shard_model_needs_a_process_group():
    from jetmoe_model.distributed import shard_model

    if torch.distributed.is_initialized():
        pytest.skip("a process group is already initialized")
    with pytest.raises(RuntimeError, match="init_process_group"):
        shard_model(tiny_model())


def test_two_ranks_train_like_one_process(two_ranks, one_process):
    single, single_params, _ = one_process
    assert len(two_ranks["history"]) == STEPS
    # equal shards: the mean of the ranks' LM losses is the whole batch's; the router losses
    # are already global, so the total equals one process's total
    for s, (a, b) in enumerate(zip(*two_ranks["lm_losses"], strict=True)):
        lm = (a + b) / 2
        assert abs(lm - single[s]["lm_loss"]) < 1e-5, (s, a, b, single[s]["lm_loss"])
        got = two_ranks["history"][s]
        total = lm + got["aux_loss"] + 0.1 * got["z_loss"]  # COEFS
        assert abs(total - single[s]["loss"]) < 1e-4
    for a, b in zip(two_ranks["params"], single_params, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
    # parameters moved (three AdamW steps at lr 1e-2), so equality is not trivially the init
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
